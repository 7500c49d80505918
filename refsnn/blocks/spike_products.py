"""Products with a matrix of spikes that skip its zeros: each spike adds one weight row (event-driven).

When ``x`` (R, K) holds only 0 and 1, the two products a dense layer needs from it are sums of rows:

* the forward current ``x @ W.T``: row ``r`` is the sum of the columns ``W[:, k]`` of the inputs ``k`` that
  spiked in row ``r``, i.e. of the rows ``k`` of ``W.T``;
* the weight gradient ``e.T @ x``: column ``k`` is the sum of the rows ``e[r]`` of the rows ``r`` in which
  input ``k`` spiked.

A BLAS product does ``R K H`` multiply-adds whatever ``x`` holds; these sums do ``density * R K H`` additions
of contiguous rows.  Measured on the STBP benchmark's first layer (x 2000 x 784 at 20 % spikes, H 400, two
threads, this project's 2-core VM): the forward sum 6.9 ms against BLAS's 12.9 ms in float64, 3.6 against 6.4
in float32; at 40 % spikes the sums are slower than BLAS.  So refsnn's fast tier uses them where at most
:data:`MAX_DENSITY` of the inputs spike and the layer has at least :data:`MIN_OUT` neurons (shorter rows
do not pay for the index lists), and BLAS otherwise; the readable tier always multiplies.

The index lists (:class:`SpikeLists`) say, for each row, which columns hold a 1.  Building them reads ``x``
once, and that read is also its check: an entry other than 0 and 1 (a NaN included) makes
:func:`spike_lists` answer None, and the caller multiplies (and checks) as usual.

The order of the additions (it decides the last bits, not the value): each output row is the sum, in
ascending order of the listed rows, of groups of four, ``acc += (a + b) + (c + d)``, and of single rows for
the last one to three.  It does not depend on how the rows are shared among threads.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from refsnn.blocks import _memory
from refsnn.blocks._jit import njit, over_batch

__all__ = ["MAX_DENSITY", "MIN_OUT", "SpikeLists", "spike_lists", "lists_if_they_pay", "transposed", "sum_rows",
           "matmul", "weight_grad"]

#: The largest fraction of spiking inputs for which the fast tier adds rows instead of multiplying.  Where
#: the sums and BLAS cross (two threads, H 400, K 784; the forward sum alone): float64 between 30 % (sums
#: 10.6 ms, BLAS 12.6) and 40 % (13.6); float32 near 30 % (5.9 against 6.3).  Building the lists and the
#: transposes cost ~1.5 ms more per step, hence a margin.  ``0`` turns the sums off (every product by BLAS).
MAX_DENSITY = 0.25
#: The fewest output neurons for which the sums are used: at 10-64 outputs BLAS's product takes 0.3-1.1 ms
#: and building the lists of a 400-wide input about 0.45 ms (two threads), which the sums do not win back.
MIN_OUT = 64


class SpikeLists(NamedTuple):
    """For each of ``len(starts)`` rows, the columns holding a 1: ``index[starts[r]:ends[r]]``, ascending."""
    starts: np.ndarray     # (R,) int64
    ends: np.ndarray       # (R,) int64
    index: np.ndarray      # int32, the columns (the entries outside [starts[r], ends[r]) are not used)
    n_cols: int            # K, the number of columns of the spike matrix
    count: int             # the number of ones

    @property
    def density(self) -> float:
        """The fraction of entries that are 1."""
        return self.count / max(1, len(self.starts) * self.n_cols)


@njit(nogil=True)
def _lists_kernel(x, starts, ends, index, bad, first, stop):
    """Rows ``first`` to ``stop - 1`` of :func:`spike_lists`: row ``r``'s columns go to ``index[r K:]``; ``bad[r]``
    is set, and the share stops, at a row with an entry other than 0 and 1."""
    R, K = x.shape
    for r in range(first, stop):
        n = r * K
        starts[r] = n
        wrong = False
        for k in range(K):                 # without a branch on the value: the loop runs at full speed
            v = x[r, k]
            index[n] = k                   # written at every k, kept (n moves on) only where v is 1
            n += v == 1
            wrong |= (v != 0) & (v != 1)   # a NaN compares unequal to both
        ends[r] = n
        if wrong:
            bad[r] = True
            return


def spike_lists(x) -> SpikeLists | None:
    """The index lists of a 2-D array ``x`` of spikes, or None if ``x`` holds anything but 0 and 1 (NaN too).

    Rows are shared among threads (:func:`refsnn.blocks._jit.over_batch`).
    """
    R, K = x.shape
    starts, ends = np.empty(R, np.int64), np.empty(R, np.int64)
    index = _memory.empty(max(1, R * K), np.int32)
    bad = np.zeros(R, np.bool_)
    over_batch(_lists_kernel, R, x, starts, ends, index, bad)
    if bad.any():
        return None
    return SpikeLists(starts, ends, index, K, int((ends - starts).sum()))


@njit(nogil=True)
def _transpose_kernel(starts, ends, index, t_ends, t_index):
    """Column lists from row lists: column ``k``'s rows go to ``t_index[k R:]``, ascending (the rows are read
    in order); ``t_ends[k]`` (starting at ``k R``) ends them."""
    R = starts.shape[0]
    for k in range(t_ends.shape[0]):
        t_ends[k] = k * R
    for r in range(R):
        for p in range(starts[r], ends[r]):
            k = index[p]
            t_index[t_ends[k]] = r
            t_ends[k] += 1


def transposed(lists: SpikeLists) -> SpikeLists:
    """The lists of ``x.T`` (for each column of ``x``, the rows in which it holds a 1)."""
    R, K = len(lists.starts), lists.n_cols
    t_ends = np.empty(K, np.int64)
    t_index = _memory.empty(max(1, R * K), np.int32)
    _transpose_kernel(lists.starts, lists.ends, lists.index, t_ends, t_index)
    return SpikeLists(np.arange(K, dtype=np.int64) * R, t_ends, t_index, R, lists.count)


@njit(nogil=True, error_model="numpy")
def _sum_rows_kernel(out, M, starts, ends, index, first, stop):
    """``out[q] = sum of M[index[p]]`` over ``p`` in ``[starts[q], ends[q])`` for ``q`` from ``first`` to
    ``stop - 1``: four rows at a time, ``acc += (a + b) + (c + d)``, then the last ones singly."""
    H = M.shape[1]
    for q in range(first, stop):
        acc = out[q]
        for i in range(H):
            acc[i] = 0
        p, end = starts[q], ends[q]
        while p + 4 <= end:
            a, b, c, d = M[index[p]], M[index[p + 1]], M[index[p + 2]], M[index[p + 3]]
            for i in range(H):
                acc[i] += (a[i] + b[i]) + (c[i] + d[i])
            p += 4
        while p < end:
            a = M[index[p]]
            for i in range(H):
                acc[i] += a[i]
            p += 1


def sum_rows(lists: SpikeLists, M) -> np.ndarray:
    """``out`` (rows of the lists, M's columns) with ``out[q]`` the sum of the rows of ``M`` listed for ``q``:
    ``x @ M`` for the spike matrix ``x`` the lists describe, in ``M``'s dtype.  ``M`` is read row by row (C
    order); it must have one row per column of ``x`` (the kernel does not check its indices)."""
    M = np.ascontiguousarray(M)
    if M.ndim != 2 or M.shape[0] != lists.n_cols:
        raise ValueError(f"shapes {(len(lists.starts), lists.n_cols)} (spikes) and {M.shape} not aligned for a "
                         f"product: {lists.n_cols} (dim 1) != {M.shape[0] if M.ndim else None} (dim 0)")
    Q = len(lists.starts)
    out = _memory.empty((Q, M.shape[1]), M.dtype)
    # shared among threads by the work (the bytes of the rows added), not by the size of `out`
    over_batch(_sum_rows_kernel, Q, out, M, lists.starts, lists.ends, lists.index,
               work=lists.count * M.shape[1] * M.itemsize)
    return out


def lists_if_they_pay(a, n_out: int) -> SpikeLists | None:
    """The lists of ``a`` (R, K) if a dense layer of ``n_out`` neurons should add rows rather than multiply:
    ``n_out >= MIN_OUT``, ``a`` holds only 0 and 1, and at most ``MAX_DENSITY`` of it are ones; else None.

    About 64 rows spread over ``a`` are looked at first: if more than ``MAX_DENSITY`` of their entries are
    not zero, the lists are not built (a pass over ``a`` that the product would not use)."""
    if n_out < MIN_OUT or MAX_DENSITY <= 0:
        return None
    sample = a[::max(1, a.shape[0] // 64)]
    if np.count_nonzero(sample) > MAX_DENSITY * sample.size:
        return None
    lists = spike_lists(a)
    return lists if lists is not None and lists.density <= MAX_DENSITY else None


def matmul(lists: SpikeLists, W) -> np.ndarray:
    """``x @ W.T`` for the spikes ``x`` (R, K) of ``lists`` and weights ``W`` (H, K), in ``W``'s dtype: each spike
    adds a column of ``W`` (a row of ``W.T``, made contiguous first).  The readable form is the product itself."""
    return sum_rows(lists, W.T)


def weight_grad(e, lists: SpikeLists) -> np.ndarray:
    """``e.T @ x`` (H, K) for ``e`` (R, H) and the spikes ``x`` (R, K) of ``lists``: column ``k`` adds the rows
    of ``e`` in which input ``k`` spiked (lists of ``x.T``, :func:`transposed`), in ``e``'s dtype."""
    gT = sum_rows(transposed(lists), e)            # (K, H): row k = sum of e[r] over the rows r where x[r, k] = 1
    return np.ascontiguousarray(gT.T)
