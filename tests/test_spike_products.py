"""The event-driven products (refsnn.blocks.spike_products): the index lists name exactly the ones of a spike
matrix and refuse anything else; the sums equal BLAS's products to the round-off bound of summation, add in
the documented order, and give the same bits compiled, as Python and however the rows are shared."""
import numpy as np
import pytest
from tolerances import EPS, summation_bound

from refsnn.blocks import spike_products as sp

EPS32 = float(np.finfo(np.float32).eps)


def _spikes(R, K, density, dtype, rng):
    x = (rng.random((R, K)) < density).astype(dtype)
    x[0] = 0                                   # a row without spikes
    x[-1] = 1                                  # a row of spikes only
    for m in range(min(R - 2, 10)):            # rows of exactly m spikes: every remainder of the groups of four
        x[1 + m] = 0
        x[1 + m, rng.choice(K, size=min(m, K), replace=False)] = 1
    return x


def _lists_py(x):
    """The lists built by the kernel as plain Python (the same code, run by the interpreter)."""
    R, K = x.shape
    starts, ends = np.empty(R, np.int64), np.empty(R, np.int64)
    index, bad = np.empty(R * K, np.int32), np.zeros(R, bool)
    sp._lists_kernel.py_func(x, starts, ends, index, bad, 0, R)
    return starts, ends, index, bad


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_spike_lists_name_the_ones_of_each_row_twin(dtype):
    rng = np.random.default_rng(0)
    x = _spikes(37, 23, 0.3, dtype, rng)
    lists = sp.spike_lists(x)
    assert lists is not None and lists.count == int(x.sum()) and lists.n_cols == 23
    assert lists.density == int(x.sum()) / x.size                          # the same division: exact
    for r in range(x.shape[0]):
        assert np.array_equal(lists.index[lists.starts[r]:lists.ends[r]], np.flatnonzero(x[r])), r
    starts, ends, index, bad = _lists_py(x)                                # the kernel's code as Python
    assert not bad.any() and np.array_equal(starts, lists.starts) and np.array_equal(ends, lists.ends)
    for r in range(x.shape[0]):
        assert np.array_equal(index[starts[r]:ends[r]], lists.index[starts[r]:ends[r]])
    t = sp.transposed(lists)
    assert t.n_cols == x.shape[0] and t.count == lists.count
    for k in range(x.shape[1]):                                            # the columns' rows, ascending
        assert np.array_equal(t.index[t.starts[k]:t.ends[k]], np.flatnonzero(x[:, k])), k


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 0.5, -1.0, 2.0, 1 + 2 * EPS])
@pytest.mark.parametrize("row", [0, 17, 39])
def test_spike_lists_refuse_anything_but_zero_and_one(bad, row):
    """A NaN, an infinity or any other number than 0 and 1, in the first, a middle or the last row: None (the
    caller then multiplies, and checks the input for NaN itself)."""
    x = _spikes(40, 9, 0.4, np.float64, np.random.default_rng(1))
    x[row, 4] = bad
    assert sp.spike_lists(x) is None
    assert _lists_py(x)[3].any()
    x[row, 4] = -0.0                                                       # minus zero is a zero
    assert sp.spike_lists(x) is not None


def _in_order(M, rows):
    """The documented order of a sum of the rows ``rows`` of ``M``, written with NumPy: groups of four
    ``acc + ((a + b) + (c + d))``, then single rows."""
    acc = np.zeros(M.shape[1], M.dtype)
    p = 0
    while p + 4 <= len(rows):
        a, b, c, d = (M[r] for r in rows[p:p + 4])
        acc = acc + ((a + b) + (c + d))
        p += 4
    for r in rows[p:]:
        acc = acc + M[r]
    return acc


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sum_rows_twin_adds_in_the_documented_order_on_any_share(dtype):
    """The same operations in the same order, element by element: the kernel compiled, as Python, shared among
    threads at any cut, and the order written out with NumPy give identical bits (exact equality is right:
    nothing but additions of the same numbers in the same order)."""
    rng = np.random.default_rng(2)
    x = _spikes(30, 41, 0.35, dtype, rng)
    M = rng.standard_normal((41, 13)).astype(dtype)
    lists = sp.spike_lists(x)
    out = sp.sum_rows(lists, M)
    assert out.dtype == dtype and out.shape == (30, 13)
    for q in range(30):
        assert np.array_equal(out[q], _in_order(M, lists.index[lists.starts[q]:lists.ends[q]])), q
    args = (M, lists.starts, lists.ends, lists.index)
    py = np.full_like(out, np.nan)
    sp._sum_rows_kernel.py_func(py, *args, 0, 30)
    assert np.array_equal(py, out)
    cut = np.full_like(out, np.nan)
    for lo, hi in [(11, 30), (0, 11)]:                                     # two shares, in either order
        sp._sum_rows_kernel(cut, *args, lo, hi)
    assert np.array_equal(cut, out)


@pytest.mark.parametrize("dtype, eps", [(np.float64, EPS), (np.float32, EPS32)])
@pytest.mark.parametrize("density", [0.05, 0.3, 0.9])
def test_event_products_equal_blas_to_the_summation_bound(dtype, eps, density):
    """``matmul`` is ``x @ W.T`` and ``weight_grad`` is ``e.T @ x``, entry by entry within the bound on two
    orders of summation (tolerances.summation_bound; the products of a spike and a weight are exact)."""
    rng = np.random.default_rng(3)
    R, K, H = 64, 150, 70
    x = _spikes(R, K, density, dtype, rng)
    W = rng.standard_normal((H, K)).astype(dtype)
    e = rng.standard_normal((R, H)).astype(dtype)
    lists = sp.spike_lists(x)
    I = sp.matmul(lists, W)
    assert I.dtype == dtype and I.flags.c_contiguous
    I_blas = x @ W.T
    assert np.all(np.abs(I - I_blas) <= summation_bound(K, x @ np.abs(W).T, eps))
    g = sp.weight_grad(e, lists)
    assert g.dtype == dtype and g.shape == (H, K) and g.flags.c_contiguous
    assert np.all(np.abs(g - e.T @ x) <= summation_bound(R, np.abs(e).T @ x, eps))
    # the bound is not vacuous: one spike more or less moves the result far beyond it
    x2 = x.copy()
    x2[5, 7] = 1 - x2[5, 7]
    assert not np.all(np.abs(sp.matmul(sp.spike_lists(x2), W) - I_blas) <= summation_bound(K, x @ np.abs(W).T, eps))


def test_empty_spike_matrix():
    """No spikes at all: zero current and zero gradient, in the input's shape."""
    x = np.zeros((5, 8))
    lists = sp.spike_lists(x)
    assert lists.count == 0 and lists.density == 0
    W, e = np.ones((3, 8)), np.ones((5, 3))
    assert np.array_equal(sp.matmul(lists, W), np.zeros((5, 3)))
    assert np.array_equal(sp.weight_grad(e, lists), np.zeros((3, 8)))


def test_sum_rows_refuses_a_matrix_of_another_width():
    """The kernel does not check its indices: a matrix with fewer (or more) rows than x has columns is refused
    before it runs, as BLAS refuses the product."""
    lists = sp.spike_lists(np.eye(5))
    with pytest.raises(ValueError, match=r"not aligned.*5 \(dim 1\) != 4 \(dim 0\)"):
        sp.matmul(lists, np.ones((3, 4)))
    with pytest.raises(ValueError, match="not aligned"):
        sp.sum_rows(lists, np.ones((6, 2)))
    with pytest.raises(ValueError, match="not aligned"):
        sp.weight_grad(np.ones((4, 3)), lists)                      # e with 4 rows, x with 5


def test_lists_and_sums_shared_over_threads_give_the_same_bits(monkeypatch):
    """Through over_batch on two threads (its size limit lowered so that this small problem is shared): the
    same lists, the same sums bit for bit as on one thread (each row is built and summed by the same code on
    one thread or the other), and a non-binary entry in the second share is still found."""
    from refsnn.blocks import _jit

    if not _jit.JIT_ENABLED:
        pytest.skip("numba is off: the kernels run as Python on one thread")
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread on this machine")
    rng = np.random.default_rng(6)
    x = _spikes(300, 90, 0.2, np.float64, rng)
    M = rng.standard_normal((90, 33))
    with _jit.limit_threads(1):
        one = sp.spike_lists(x)
        sums_one = sp.sum_rows(one, M)
    monkeypatch.setattr(_jit, "OVER_BATCH_MIN", 0)
    shares = []
    real_submit = _jit._executor().submit
    monkeypatch.setattr(_jit._executor(), "submit", lambda *a, **k: shares.append(1) or real_submit(*a, **k))
    with _jit.limit_threads(2):
        two = sp.spike_lists(x)
        sums_two = sp.sum_rows(two, M)
        assert shares, "nothing was shared out"
        for a, b in zip(one[:2], two[:2]):
            assert np.array_equal(a, b)
        assert np.array_equal(sums_one, sums_two)
        x[250, 7] = 0.5
        assert sp.spike_lists(x) is None
