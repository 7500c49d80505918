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

Above 32 MB ``mallopt`` cannot help: such blocks always come fresh from the kernel.  The fast tier's
largest arrays (a convolutional layer's potentials, spikes and gradients for all time steps: 128 MB
each in the official conv net's float64 step) therefore come from :func:`empty`, whatever the caller
set, which keeps freed blocks in a cache and hands them out again by size in bytes.  Its cost: up to
:data:`CACHE_LIMIT` (1 GiB) of unused blocks may stay with the process (blocks of a size no step asks
for again, e.g. from a last smaller batch, wait until newer blocks push them out);
``refsnn.blocks._memory.release()`` gives them back.
"""
from __future__ import annotations

import collections
import ctypes
import ctypes.util
import os
import sys
import threading

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
#: At most this many bytes of freed blocks wait in the cache; the oldest go back to the system first.
CACHE_LIMIT = 2**30

_free: collections.deque = collections.deque()   # blocks (uint8 arrays) no array uses any more, oldest first
_cached = [0]                                     # their bytes
_returned: list = []    # blocks whose last array just died, not yet in _free (list.append is atomic)
_lock = threading.Lock()


class _Lease:
    """Owns one block for the arrays made on it.  NumPy's views keep their first non-array ``base`` alive, so
    the lease, and with it the block, ends only when the last array or view on the block is gone; then the
    block waits in the cache for the next :func:`empty` of its size."""

    __slots__ = ("block", "__array_interface__")

    def __init__(self, block, shape, dtype):
        self.block = block
        self.__array_interface__ = {"shape": tuple(shape), "typestr": dtype.str, "version": 3,
                                    "data": (block.ctypes.data, False)}

    def __del__(self):
        # only an atomic append: a lease may end in any thread, and (Python >= 3.12) the garbage collector
        # may end one in the middle of empty() in this very thread; the cache itself changes under the lock
        _returned.append(self.block)


def _take_returned():
    """Move the returned blocks into the cache, oldest first out beyond :data:`CACHE_LIMIT` (under the lock)."""
    while _returned:
        block = _returned.pop(0)
        if block.nbytes > CACHE_LIMIT:                     # it would push out everything else
            continue
        _free.append(block)
        _cached[0] += block.nbytes
        while _cached[0] > CACHE_LIMIT:                    # the oldest blocks go back to the system
            _cached[0] -= _free.popleft().nbytes


def empty(shape, dtype):
    """``np.empty(shape, dtype)``; an array of :data:`LARGE` bytes or more takes the memory of one that is no
    longer used (the same size in bytes), so that a training step does not page-fault its largest arrays in
    afresh every time: in the convolutional STBP step that cost about 9 ms per 128 MB, and now and then the
    kernel stalled for ~300 ms compacting memory into huge pages.  PyTorch's caching allocator does the same.

    The cache holds at most :data:`CACHE_LIMIT` bytes of unused blocks (:func:`cached_bytes`);
    :func:`release` gives them back to the system.
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(n) for n in np.atleast_1d(shape))
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes < LARGE:
        return np.empty(shape, dtype)
    block = None
    with _lock:
        _take_returned()
        for i in range(len(_free) - 1, -1, -1):             # the most recently freed block of this size
            if _free[i].nbytes == nbytes:
                block = _free[i]
                del _free[i]
                _cached[0] -= nbytes
                break
    if block is None:
        block = np.empty(nbytes, np.uint8)
    return np.asarray(_Lease(block, shape, dtype))


def cached_bytes() -> int:
    """Bytes of unused large blocks that :func:`empty` keeps for reuse."""
    with _lock:
        _take_returned()
        return _cached[0]


def release() -> None:
    """Give every unused cached block back to the system (arrays still in use keep theirs)."""
    with _lock:
        _returned.clear()
        _free.clear()
        _cached[0] = 0
