"""Input validation shared by every module.

Bad input must fail early with a message that names the argument, what was
expected and what was given -- never with a NumPy broadcast error from deep
inside a kernel.  These helpers are that one place.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

import numpy as np

__all__ = [
    "as_generator",
    "check_array",
    "check_labels",
    "check_spikes",
    "check_params",
    "check_layers",
    "check_positive",
    "check_in_range",
    "check_choice",
    "check_int",
    "check_config",
    "check_sizes",
]


def as_generator(rng, *, name: str = "rng", required: bool = True) -> np.random.Generator | None:
    """Turn an int seed or a ``np.random.Generator`` into a Generator.

    ``None`` is refused when ``required`` (randomness must be explicit: nothing
    in refsnn touches NumPy's global RNG) and returned as ``None`` otherwise.
    """
    if rng is None:
        if required:
            raise ValueError(f"{name}: this computation is random; pass an int seed or a numpy.random.Generator")
        return None
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (Integral, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"{name}: a seed must be >= 0, got {rng}")
        return np.random.default_rng(int(rng))
    if isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    raise TypeError(f"{name}: expected an int seed or numpy.random.Generator, got {type(rng).__name__}")


def check_positive(name: str, value, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: must be finite and {bound}, got {value}")
    return value


def check_in_range(name: str, value, lo: float, hi: float, *, lo_open=False, hi_open=False) -> float:
    """A finite real number in an interval, e.g. ``decay`` in (0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (Real, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    ok = math.isfinite(value)
    ok = ok and (value > lo if lo_open else value >= lo)
    ok = ok and (value < hi if hi_open else value <= hi)
    if not ok:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ValueError(f"{name}: must lie in {left}{lo}, {hi}{right}, got {value}")
    return value


def check_int(name: str, value, *, minimum: int | None = None) -> int:
    """An integer (not a bool, not a float) at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (Integral, np.integer)):
        raise TypeError(f"{name}: expected an integer, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: must be >= {minimum}, got {value}")
    return value


def check_choice(name: str, value, choices) -> str:
    """One of a fixed set of names."""
    if value not in choices:
        raise ValueError(f"{name}: unknown value {value!r}; expected one of {', '.join(map(repr, choices))}")
    return value


def _all_finite(arr) -> bool:
    """Whether every entry of a float array is finite, without a temporary the size of ``arr``.  First one
    pass: a sum is finite when every entry is (NaN and infinities propagate; +inf and -inf make NaN).  Only
    when it is not (a non-finite entry, or a sum that overflowed) the exact test, two passes: ``min`` and
    ``max`` propagate NaN, and an infinite entry is the minimum or the maximum."""
    if arr.size == 0:
        return True
    with np.errstate(over="ignore", invalid="ignore"):               # an overflow here is not the user's error
        if np.isfinite(np.sum(arr)):
            return True
    return bool(np.isfinite(np.min(arr)) and np.isfinite(np.max(arr)))


def check_array(name: str, x, *, ndim: int | None = None, shape: tuple | None = None,
                finite: bool = True, dtype=None, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """A numeric array of the expected rank/shape, finite, optionally within [lo, hi].

    ``shape`` entries may be ``None`` (any size).  ``dtype`` converts after the
    checks (e.g. ``np.float64``); integer and bool inputs are accepted.
    """
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise TypeError(f"{name}: could not be read as an array ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise TypeError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise TypeError(f"{name}: complex values are not supported")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {arr.shape}")
    if shape is not None:
        if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
            want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
            raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
    if finite and np.issubdtype(arr.dtype, np.floating) and not _all_finite(arr):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name}: contains {bad} NaN or infinite value(s)")
    if lo is not None or hi is not None:
        if arr.size:
            amin, amax = float(np.min(arr)), float(np.max(arr))
            if (lo is not None and amin < lo) or (hi is not None and amax > hi):
                raise ValueError(f"{name}: values must lie in [{lo}, {hi}], got min {amin:g}, max {amax:g}")
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    return arr


def check_time_major(name: str, x, n_in: int, *, min_T: int = 1, what: str = "", units: str = "input features",
                     layer: str = "W1 has shape (N1, {n_in})") -> None:
    """Raise unless ``x`` (already an array) has shape ``(T, batch, n_in)`` with ``T >= min_T``, ``batch >= 1``.

    ``what`` names the content in the message ("spike trains "), ``units`` the
    last axis, ``layer`` the parameter that fixes ``n_in``.
    """
    if x.ndim != 3:
        raise ValueError(f"{name}: expected {what}of shape (T, batch, n_in) = (T, batch, {n_in}), got {x.shape}")
    if x.shape[0] < min_T or x.shape[1] < 1:
        raise ValueError(f"{name}: need T >= {min_T} time steps and batch >= 1, got shape {x.shape}")
    if x.shape[2] != n_in:
        raise ValueError(f"{name}: expected {n_in} {units} ({layer.format(n_in=n_in)}), got shape {x.shape}")


def check_spikes(name: str, x) -> np.ndarray:
    """An array whose every entry is 0 or 1 (spikes), returned unchanged."""
    arr = check_array(name, x)
    if arr.size and not np.all((arr == 0) | (arr == 1)):
        bad = arr[(arr != 0) & (arr != 1)].flat[0]
        raise ValueError(f"{name}: spikes must be 0 or 1, found other values (e.g. {float(bad):g})")
    return arr


def check_labels(name: str, y, n_classes: int, *, batch: int | None = None) -> np.ndarray:
    """Integer class labels in ``[0, n_classes)`` of length ``batch``."""
    arr = np.asarray(y)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise TypeError(f"{name}: expected integer class labels, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of labels, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name}: labels must be whole numbers, got non-integer values")
    arr = arr.astype(np.int64)
    if batch is not None and arr.shape[0] != batch:
        raise ValueError(f"{name}: expected {batch} labels (one per sample), got {arr.shape[0]}")
    if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
        raise ValueError(f"{name}: labels must lie in [0, {n_classes - 1}], got min {arr.min()}, max {arr.max()}")
    return arr


def check_params(name: str, params, expected_keys) -> dict:
    """A dict holding exactly the expected parameter names, each a finite float array."""
    if not isinstance(params, dict):
        raise TypeError(f"{name}: expected a dict of arrays, got {type(params).__name__}")
    missing = [k for k in expected_keys if k not in params]
    extra = [k for k in params if k not in expected_keys]
    if missing or extra:
        raise ValueError(f"{name}: expected keys {list(expected_keys)}; missing {missing}, unexpected {extra}")
    out = {}
    for k in expected_keys:
        out[k] = check_array(f"{name}[{k!r}]", params[k])
        if not np.issubdtype(out[k].dtype, np.floating):
            raise TypeError(f"{name}[{k!r}]: expected a float array, got dtype {out[k].dtype}")
    return out


def check_layers(params, name: str = "params", dtype=None) -> tuple:
    """Split a fully connected net's ``{W1, b1, ..., WN, bN}`` into lists ``(Ws, bs)``.

    Checks the key names, that each ``Wn`` is 2-D ``(n_out, n_in)`` with a matching
    ``bn`` of shape ``(n_out,)``, that consecutive layers fit together, and that
    every value is finite.  ``dtype`` converts the arrays (e.g. ``np.float64``).
    """
    if not isinstance(params, dict):
        raise TypeError(f"{name}: expected a dict of arrays, got {type(params).__name__}")
    N = len(params) // 2
    want = [k for n in range(1, N + 1) for k in (f"W{n}", f"b{n}")]
    if N < 1 or sorted(params) != sorted(want):
        raise ValueError(f"{name}: expected keys W1, b1, ..., WN, bN; got {sorted(params)}")
    Ws, bs = [], []
    for n in range(1, N + 1):
        W = check_array(f"{name}['W{n}']", params[f"W{n}"], ndim=2, dtype=dtype)
        b = check_array(f"{name}['b{n}']", params[f"b{n}"], ndim=1, dtype=dtype)
        if b.shape[0] != W.shape[0]:
            raise ValueError(f"{name}['b{n}']: expected shape ({W.shape[0]},) to match W{n} {W.shape}, got {b.shape}")
        if n > 1 and W.shape[1] != Ws[-1].shape[0]:
            raise ValueError(f"{name}['W{n}']: expected {Ws[-1].shape[0]} inputs (the size of layer {n - 1}), "
                             f"got shape {W.shape}")
        Ws.append(W)
        bs.append(b)
    return Ws, bs


def check_config(cfg, cls, name: str = "cfg"):
    """``cfg`` itself if it is an instance of the algorithm's ``Config`` class ``cls``; else a TypeError.

    The message names the expected class and, for a plain dict, how to build one
    (``refsnn.stbp.Config(**d)``); a ``Config`` of another algorithm is named as such.
    """
    if isinstance(cfg, cls):
        return cfg
    want = f"{cls.__module__}.{cls.__qualname__}"
    got = type(cfg)
    got_name = f"{got.__module__}.{got.__qualname__}" if got.__module__.startswith("refsnn") else got.__name__
    hint = f"; build one with {want}(**{name})" if isinstance(cfg, dict) else ""
    raise TypeError(f"{name}: expected {want}, got {got_name}{hint}")


def check_sizes(sizes, *, minimum_layers: int = 2, example: str = "[64, 128, 10]") -> list:
    """Layer sizes ``[n_in, ..., n_out]``: a list or tuple of at least ``minimum_layers`` integers >= 1."""
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (list, tuple, np.ndarray)):
        raise TypeError(f"sizes: expected a list of layer sizes like {example}, got {sizes!r}")
    sizes = [check_int(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes)]
    if len(sizes) < minimum_layers:
        raise ValueError(f"sizes: need at least {minimum_layers} layer sizes like {example}, got {sizes}")
    return sizes
