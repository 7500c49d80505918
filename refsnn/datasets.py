"""Datasets as plain arrays: ``load(name, split) -> (X, y)``.

``"digits"`` is the embedded default: scikit-learn's bundled 8x8 handwritten
digits (1797 images, 10 classes, no download).  Its pixel values 0..16 are
rescaled to ``uint8`` 0..255 (``round(v * 255 / 16)``) so that every image
dataset in refsnn has the same range.

The split is fixed and documented: in scikit-learn's order, sample ``i`` is a
test sample iff ``i % 5 == 4``.  That gives 1438 training and 359 test images
with every class in both (the order of the bundled file is already mixed).

Loaders return ``X`` as ``uint8`` of shape ``(N, H, W)`` and ``y`` as ``int64``
of shape ``(N,)``; turning images into spikes is ``refsnn.encoding``'s job.
"""

from __future__ import annotations

import numpy as np

from refsnn._checks import check_choice, check_int

__all__ = ["load", "NAMES", "n_classes"]

NAMES = ("digits",)
_N_CLASSES = {"digits": 10}


def n_classes(name: str) -> int:
    """Number of classes of dataset ``name``."""
    check_choice("name", name, NAMES)
    return _N_CLASSES[name]


def _load_digits(split):
    from sklearn.datasets import load_digits

    d = load_digits()
    X = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    y = d.target.astype(np.int64)
    test = (np.arange(len(y)) % 5) == 4
    keep = test if split == "test" else ~test
    return X[keep], y[keep]


def load(name: str, split: str = "train", *, root=None, download: bool = False, offline=None, limit=None):
    """Load a dataset split as ``(X uint8 (N, H, W), y int64 (N,))``.

    Parameters
    ----------
    name : str
        ``"digits"``.
    split : {"train", "test"}
    root, download, offline
        Where to look for and whether to fetch files (unused for the bundled digits).
    limit : int, optional
        Keep only the first ``limit`` samples.
    """
    check_choice("name", name, NAMES)
    check_choice("split", split, ("train", "test"))
    X, y = _load_digits(split)
    if limit is not None:
        limit = check_int("limit", limit, minimum=1)
        X, y = X[:limit], y[:limit]
    return X, y
