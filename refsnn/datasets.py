"""Datasets as plain arrays: ``load(name, split) -> (X, y)``.

``"digits"`` is the embedded default: scikit-learn's bundled 8x8 handwritten
digits (1797 images, 10 classes, no download).  Its pixel values 0..16 are
rescaled to ``uint8`` 0..255 (``round(v * 255 / 16)``) so that every image
dataset in refsnn has the same range.

The split is fixed and documented: in scikit-learn's order, sample ``i`` is a
test sample iff ``i % 5 == 4``.  That gives 1438 training and 359 test images
with every class in both (the order of the bundled file is already mixed).

``"fashion-mnist"`` is read from the IDX files of Debian's
``dataset-fashion-mnist`` package (``/usr/share/datasets/fashion-mnist/``) or
from ``root`` / ``$REFSNN_DATA/fashion-mnist``.

Loaders return ``X`` as ``uint8`` of shape ``(N, H, W)`` and ``y`` as ``int64``
of shape ``(N,)``; turning images into spikes is ``refsnn.encoding``'s job.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

from refsnn._checks import check_choice, check_int

__all__ = ["load", "NAMES", "n_classes"]

NAMES = ("digits", "fashion-mnist")
_N_CLASSES = {"digits": 10, "fashion-mnist": 10}
_SYSTEM_DIRS = {"fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")]}
_IDX_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
              "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip or raw): 2 zero bytes, a type code, ndim, ndim big-endian sizes, data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        buf = f.read()
    if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {buf[:4].hex()})")
    ndim = buf[3]
    dims = [int.from_bytes(buf[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_IDX_DTYPES[buf[2]])
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(buf) - offset != expected:
        raise ValueError(f"{path}: header says {dims} x {dtype.itemsize} bytes = {expected} bytes of data, "
                         f"file has {len(buf) - offset}")
    return np.frombuffer(buf, dtype=dtype, offset=offset).reshape(dims).astype(dtype.newbyteorder("="))


def _find_dir(name, root):
    candidates = []
    if root is not None:
        candidates += [Path(root), Path(root) / name]
    if os.environ.get("REFSNN_DATA"):
        candidates.append(Path(os.environ["REFSNN_DATA"]) / name)
    candidates += _SYSTEM_DIRS.get(name, [])
    for d in candidates:
        if all((d / f).exists() for files in _IDX_FILES.values() for f in files):
            return d
    raise FileNotFoundError(f"{name}: files {[f for v in _IDX_FILES.values() for f in v]} not found in "
                            f"{[str(c) for c in candidates]}. On Debian: apt-get install dataset-fashion-mnist")


def _load_idx_dataset(name, split, root):
    d = _find_dir(name, root)
    images, labels = _IDX_FILES[split]
    return read_idx(d / images).astype(np.uint8), read_idx(d / labels).astype(np.int64)


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
    X, y = _load_digits(split) if name == "digits" else _load_idx_dataset(name, split, root)
    if limit is not None:
        limit = check_int("limit", limit, minimum=1)
        X, y = X[:limit], y[:limit]
    return X, y
