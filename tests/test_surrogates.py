"""Surrogates: unit area, P' = h, stable (no NaN/inf) over a huge range, scalar forms == array forms."""
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import integrate
from tolerances import FD_PRIMITIVE_ABS, FD_PRIMITIVE_REL, FORMULA_REL, GRAD_FD_REL, QUAD_REL, TINY, TWIN_REL, assert_close

from refsnn import stbp
from refsnn.blocks import surrogates
from refsnn.checking import gradcheck
from refsnn.harness import problems

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
    assert total == pytest.approx(surrogates.area(name, a), rel=QUAD_REL)


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
    np.testing.assert_allclose(fd, surrogates.h(x, name, a), rtol=FD_PRIMITIVE_REL, atol=FD_PRIMITIVE_ABS)


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


# ---------------------------------------------------------------------------
# The official STBP code's window: grad * (|u - thresh| < lens), height 1, half-width lens
# ---------------------------------------------------------------------------

LENSES = (0.25, 0.5, 1.0)


@pytest.mark.parametrize("lens", LENSES)
def test_window_is_the_official_codes_window(lens):
    """h of "window" with width lens is the code's 0/1 test |x| < lens (strict at the edges), for every lens;
    rect of width 2 lens is that window divided by 2 lens, so the two are equal at lens 0.5 only."""
    x = np.concatenate([np.linspace(-3, 3, 601), [-lens, lens, np.nextafter(lens, 0), np.nextafter(-lens, 0)]])
    code = (np.abs(x) < lens).astype(float)
    np.testing.assert_array_equal(surrogates.h(x, "window", lens), code)
    assert surrogates.h(lens, "window", lens) == 0.0 and surrogates.h(0.0, "window", lens) == 1.0
    assert surrogates.area("window", lens) == 2 * lens and surrogates.kinks("window", lens) == (-lens, lens)
    rect = surrogates.h(x, "rect", 2 * lens)
    assert_close(rect * (2 * lens), code, FORMULA_REL, what="rect(2 lens) * 2 lens")
    if lens == 0.5:      # the code presets' rect of width 1 is this window exactly: h and P
        np.testing.assert_array_equal(rect, code)
        np.testing.assert_array_equal(surrogates.primitive(x, "rect", 1.0), surrogates.primitive(x, "window", 0.5))
    else:
        assert np.max(np.abs(rect - code)) == pytest.approx(abs(1 / (2 * lens) - 1))


@pytest.mark.parametrize("lens", LENSES)
def test_window_primitive_derivative_is_h(lens):
    """P = clip(x, -lens, lens) + lens: central differences equal h away from the kinks, P runs from 0 to 2 lens."""
    x = np.linspace(-3, 3, 1201)
    x = x[np.min(np.abs(x[:, None] - np.array([-lens, lens])[None]), axis=1) > 1e-3]
    e = 1e-6
    fd = (surrogates.primitive(x + e, "window", lens) - surrogates.primitive(x - e, "window", lens)) / (2 * e)
    np.testing.assert_allclose(fd, surrogates.h(x, "window", lens), rtol=FD_PRIMITIVE_REL, atol=FD_PRIMITIVE_ABS)
    np.testing.assert_array_equal(surrogates.primitive(x, "window", lens), np.clip(x, -lens, lens) + lens)


@pytest.mark.parametrize("lens", LENSES)
def test_window_kernel_equals_its_readable_twin(lens):
    """The numba scalar forms (compiled and as plain Python) equal the NumPy forms bit for bit, edges included."""
    x = np.concatenate([np.linspace(-3, 3, 601), [-np.inf, -lens, lens, np.inf, np.nextafter(lens, 0),
                                                  np.nextafter(lens, 2), np.nextafter(-lens, 0)]])
    k = surrogates.KIND_CODES["window"]
    for fh, fp in ((surrogates.h_scalar, surrogates.primitive_scalar),
                   (surrogates.h_scalar.py_func, surrogates.primitive_scalar.py_func)):
        np.testing.assert_array_equal(np.array([fh(k, lens, v) for v in x]), surrogates.h(x, "window", lens))
        np.testing.assert_array_equal(np.array([fp(k, lens, v) for v in x]),
                                      surrogates.primitive(x, "window", lens))


def _window_case(lens, forward, reset="zero"):
    cfg = stbp.Config(v_th=0.5, decay=0.3, surrogate="window", width=lens, reset=reset, loss="mse_mean",
                      forward=forward)
    return cfg, problems.stbp_problem(cfg, 0)


@pytest.mark.parametrize("lens", LENSES)
@pytest.mark.parametrize("forward", ["spike", "smooth"])
def test_stbp_window_fast_tier_equals_readable_twin(lens, forward):
    """STBP with the window: the numba kernels and the readable NumPy twin give the same potentials, spikes,
    loss and gradient."""
    cfg, (params, x, y) = _window_case(lens, forward)
    u1, o1 = stbp.simulate(params, x, replace(cfg, backend="numba"))
    u2, o2 = stbp.simulate(params, x, replace(cfg, backend="numpy"))
    for a, b in zip(u1 + o1, u2 + o2):
        assert_close(a, b, TWIN_REL)
    l1, g1 = stbp.loss_and_grad(params, x, y, replace(cfg, backend="numba"))
    l2, g2 = stbp.loss_and_grad(params, x, y, replace(cfg, backend="numpy"))
    assert l1 == pytest.approx(l2, rel=TWIN_REL)
    for key in g1:
        assert_close(g1[key], g2[key], TWIN_REL, what=key)


@pytest.mark.parametrize("lens", LENSES)
@pytest.mark.parametrize("forward", ["spike", "smooth"])
@pytest.mark.parametrize("reset", ["zero", "exp"])
def test_stbp_window_gradient_matches_fd_of_reference_objective(lens, forward, reset):
    """The STBP gradient with the window is the exact gradient of its reference objective (central differences),
    for the spiking network (anchored) and the smoothed one."""
    cfg, (params, x, y) = _window_case(lens, forward, reset)
    assert stbp.kink_distance(params, x, cfg) > problems.KINK_MARGIN
    _, grads = stbp.loss_and_grad(params, x, y, cfg)
    assert all(np.any(g != 0) for g in grads.values()), "the window must be open somewhere in every layer"
    report = gradcheck.check(stbp, params, x, y, cfg, tol=GRAD_FD_REL, title=f"window {lens} {forward} {reset}")
    assert report.passed, str(report)
    assert len(report.tensors) == len(params)


def test_window_matches_the_torch_gold():
    """refsnn.checking.torch_golds writes the window from the official code's formula: the same values."""
    torch = pytest.importorskip("torch", reason="the torch gold needs torch")
    from refsnn.checking import torch_golds

    x = np.linspace(-3, 3, 601)
    for lens in LENSES:
        gold = torch_golds.surrogate_torch(torch.tensor(x), "window", lens).numpy()
        np.testing.assert_array_equal(gold, surrogates.h(x, "window", lens))
