"""Surrogates: unit area, P' = h, stable (no NaN/inf) over a huge range, scalar forms == array forms."""
import math

import numpy as np
import pytest
from scipy import integrate
from tolerances import FORMULA_REL, TINY

from refsnn import surrogates

WIDTHS = [0.05, 0.3, 1.0, 4.0]


@pytest.mark.parametrize("name", surrogates.NAMES)
@pytest.mark.parametrize("a", WIDTHS)
def test_area(name, a):
    """Each h integrates to surrogates.area: 1 for the paper's four and atan (they approximate the Dirac
    delta), 2a for fast_sigmoid (peak 1, as snnTorch and norse define it).  Heavy tails: integrate to inf."""
    f = lambda v: float(surrogates.h(v, name, a))  # noqa: E731
    cuts = sorted(set(surrogates.kinks(name, a)) | {0.0})
    pieces = [(-np.inf, cuts[0])] + list(zip(cuts[:-1], cuts[1:])) + [(cuts[-1], np.inf)]
    total = sum(integrate.quad(f, lo, hi, limit=500)[0] for lo, hi in pieces)
    assert total == pytest.approx(surrogates.area(name, a), rel=1e-7)


@pytest.mark.parametrize("name", surrogates.NAMES)
@pytest.mark.parametrize("a", WIDTHS)
def test_primitive_derivative_is_h(name, a):
    """Central differences of P equal h away from the kinks."""
    x = np.linspace(-3, 3, 601) * max(a, math.sqrt(a))
    ks = surrogates.kinks(name, a)
    if ks:
        x = x[np.min(np.abs(x[:, None] - np.array(ks)[None]), axis=1) > 1e-3]
    e = 1e-6
    fd = (surrogates.primitive(x + e, name, a) - surrogates.primitive(x - e, name, a)) / (2 * e)
    np.testing.assert_allclose(fd, surrogates.h(x, name, a), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", surrogates.NAMES)
@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("a", [1e-3] + WIDTHS + [50.0])
def test_stable_over_a_wide_range(name, a):
    x = np.concatenate([[-np.inf, -1e30, -1e6], np.linspace(-100, 100, 20001), [1e6, 1e30, np.inf]])
    for dtype in (np.float64, np.float32):
        xx = x.astype(dtype)
        hv = surrogates.h(xx, name, a)
        pv = surrogates.primitive(xx, name, a)
        assert np.all(np.isfinite(hv)) and np.all(np.isfinite(pv))
        assert hv.dtype == dtype and pv.dtype == dtype
        top = surrogates.area(name, a)
        assert np.all(hv >= 0) and np.all((pv >= 0) & (pv <= top))
        assert np.all(np.diff(pv.astype(np.float64)) >= -1e-7 * top)  # monotone
    assert surrogates.primitive(-np.inf, name, a) == 0.0 and surrogates.primitive(np.inf, name, a) == top
    assert surrogates.primitive(0.0, name, a) == pytest.approx(top / 2)


def test_known_values():
    assert surrogates.h(0.0, "rect", 1.0) == 1.0 and surrogates.h(0.5, "rect", 1.0) == 0.0  # strict window
    assert surrogates.h(0.0, "triangle", 4.0) == pytest.approx(1.0)
    assert surrogates.h(0.0, "sigmoid", 0.5) == pytest.approx(0.5)
    assert surrogates.h(0.0, "gauss", 1.0) == pytest.approx(1 / math.sqrt(2 * math.pi))
    assert surrogates.primitive(0.25, "rect", 1.0) == pytest.approx(0.75)
    # the peers' defaults: snnTorch atan(alpha=2) peaks at alpha/2 = 1; norse's SuperSpike at 1
    assert surrogates.h(0.0, "atan", 2 / (math.pi * 2.0)) == pytest.approx(1.0)
    assert surrogates.h(1.0, "fast_sigmoid", 1.0) == pytest.approx(0.25)
    assert surrogates.h(0.1, "fast_sigmoid", 1 / 25) == pytest.approx(1 / (25 * 0.1 + 1) ** 2)


@pytest.mark.parametrize("name", surrogates.NAMES)
def test_scalar_forms_equal_array_forms(name):
    x = np.linspace(-4, 4, 257)
    for a in (0.3, 1.0):
        k = surrogates.KIND_CODES[name]
        hs = np.array([surrogates.h_scalar(k, a, v) for v in x])
        ps = np.array([surrogates.primitive_scalar(k, a, v) for v in x])
        # the same formula, one value at a time vs vectorised (libm vs NumPy's own exp/erfc): entry-wise
        np.testing.assert_allclose(hs, surrogates.h(x, name, a), rtol=FORMULA_REL, atol=TINY)
        np.testing.assert_allclose(ps, surrogates.primitive(x, name, a), rtol=FORMULA_REL, atol=TINY)
        hp = np.array([surrogates.h_scalar.py_func(k, a, v) for v in x])
        np.testing.assert_array_equal(hp, hs)   # compiled vs plain Python: the same operations in the same order


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="surrogate"):
        surrogates.h(0.0, "relu")
    with pytest.raises(ValueError, match="width"):
        surrogates.primitive(0.0, "rect", 0.0)
    with pytest.raises(TypeError, match="width"):
        surrogates.Surrogate("rect", "wide")
    s = surrogates.get("gauss", 0.5)
    assert s.code == 3 and s.kinks() == () and float(s.h(0.0)) == pytest.approx(1 / math.sqrt(math.pi))
