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
