"""Keep freed memory in the process, so that large arrays are not page-faulted in afresh every step.

A training step allocates several arrays of a few MB (the membrane potentials and spikes of a
layer for all time steps, their gradients).  glibc's ``malloc`` serves blocks above its
*mmap threshold* with fresh pages from the kernel and hands them back on ``free``; the next step
then pays one page fault per 4 kB page again.  For the STBP benchmark step (784-400-10, T = 20,
batch 100) that is 14 ms of a 49 ms float64 step (``refsnn bench stbp``, measured with and
without).  PyTorch avoids it with its caching allocator.

:func:`keep_freed_memory` raises the mmap threshold to 32 MB and the trim threshold to 256 MB
(``mallopt``), so freed blocks are reused by the next step.  The ``refsnn`` command calls it;
from Python, call ``refsnn.keep_freed_memory()`` once, or set the equivalent environment
variables before starting Python: ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=268435456``.
Elsewhere than on glibc it does nothing.  The cost: up to 256 MB of freed memory may stay with
the process instead of going back to the system.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import numpy as np

_M_TRIM_THRESHOLD = -1      # <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 * 2**20


def keep_freed_memory() -> bool:
    """Tune glibc ``malloc`` as described in the module docstring; True if it was applied.

    Does nothing (returns False) off Linux, without glibc, or when the user has set
    ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_`` (their choice wins).
    """
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):        # musl and others have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


# ---------------------------------------------------------------------------
# Large arrays: a cache of freed blocks (what glibc's malloc will not keep)
# ---------------------------------------------------------------------------

#: Arrays of at least this many bytes come from :func:`empty`'s cache: glibc hands blocks above its mmap
#: threshold (32 MB at most) back to the kernel on ``free``, so each new one is page-faulted in afresh.
LARGE = MMAP_THRESHOLD
#: At most this many bytes of freed blocks wait in the cache; beyond it a freed block goes back to the system.
CACHE_LIMIT = 2 * 2**30

_free: dict = {}            # nbytes -> [blocks (uint8 arrays) no array uses any more]
_cached = [0]               # bytes waiting in _free


class _Lease:
    """Owns one block for the arrays made on it: NumPy's views keep a non-array ``base`` alive, so the block
    goes back to the cache only when the last array or view on it is gone."""

    __slots__ = ("block", "__array_interface__")

    def __init__(self, block, shape, dtype):
        self.block = block
        self.__array_interface__ = {"shape": tuple(shape), "typestr": dtype.str, "version": 3,
                                    "data": (block.ctypes.data, False)}

    def __del__(self):
        block = self.block
        if _cached[0] + block.nbytes <= CACHE_LIMIT:
            _free.setdefault(block.nbytes, []).append(block)
            _cached[0] += block.nbytes


def empty(shape, dtype):
    """``np.empty(shape, dtype)``; an array of :data:`LARGE` bytes or more reuses the memory of one that was
    freed (same size in bytes), so that a training step does not page-fault its largest arrays in afresh
    every time (in the convolutional STBP step about 9 ms per 128 MB, and the kernel's occasional
    compaction of huge pages stalls for hundreds of ms).  What it holds: :func:`cached_bytes`;
    :func:`release` gives it back."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < LARGE:
        return np.empty(shape, dtype)
    blocks = _free.get(nbytes)
    if blocks:
        block = blocks.pop()
        _cached[0] -= nbytes
    else:
        block = np.empty(nbytes, np.uint8)
    return np.asarray(_Lease(block, shape, dtype))


def cached_bytes() -> int:
    """Bytes of freed large arrays that :func:`empty` keeps for reuse."""
    return _cached[0]


def release() -> None:
    """Give every cached block back to the system."""
    _free.clear()
    _cached[0] = 0
