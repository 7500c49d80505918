"""Property-based tests of the gradient checker: a NaN or an infinity anywhere never passes.

``gradcheck.compare`` is the path every check in refsnn goes through (the contract checks, ``refsnn
verify``, ``peers.verify``, the exercises) and the one users call on their own gradients.  These tests draw
(with hypothesis, derandomised so that a run is reproducible) random shapes, dtypes and reference sizes --
exactly zero, tiny, ordinary and large -- place NaN and infinities anywhere on either side, drop keys, and
give bad tolerances; the only acceptable outcomes are a failed report that names the non-finite entry, or
an error that names the argument.  A positive control in each test (the same tensors without the defect
pass) keeps them from passing by refusing everything.
"""
import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the property tests need hypothesis (the [test] extra)")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tolerances import TINY  # noqa: E402

from refsnn.checking import gradcheck  # noqa: E402

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)

shapes = st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple)
dtypes = st.sampled_from([np.float16, np.float32, np.float64])
#: the size of the reference tensor: exactly zero (the absolute-error path), tiny, ordinary, large
magnitudes = st.sampled_from([0.0, TINY, 1e-12, 1.0, 1e6, 1e300])   # TINY: 1e-300
bad_values = st.sampled_from([math.nan, math.inf, -math.inf])


@st.composite
def gradient_pairs(draw):
    """A dict of 1-3 finite tensors (mine equal to the reference, in mine's dtype) and its reference."""
    n = draw(st.integers(1, 3))
    ref, mine = {}, {}
    for k in range(n):
        shape = draw(shapes)
        scale = draw(magnitudes)
        seed = draw(st.integers(0, 2 ** 16))
        values = np.random.default_rng(seed).standard_normal(shape) * scale
        dt = draw(dtypes)
        with np.errstate(over="ignore"):
            m = values.astype(dt)
        if not np.all(np.isfinite(m)):     # 1e300 does not fit float16/32: keep the control finite
            m = values.astype(np.float64)
        ref[f"t{k}"] = m.astype(np.float64)
        mine[f"t{k}"] = m
    return mine, ref


@given(gradient_pairs())
@SETTINGS
def test_equal_finite_gradients_pass(pair):
    """The positive control: identical finite gradients pass, whatever their size or dtype."""
    mine, ref = pair
    rep = gradcheck.compare(mine, ref, float32_hint=False)
    assert rep.passed, str(rep)


@given(gradient_pairs(), st.data(), bad_values, st.sampled_from(["mine", "reference"]))
@SETTINGS
def test_a_nan_or_infinity_on_either_side_never_passes(pair, data, bad, side):
    mine, ref = pair
    key = data.draw(st.sampled_from(sorted(ref)))
    target = {"mine": mine, "reference": ref}[side]
    arr = np.array(target[key], copy=True)
    flat = arr.reshape(-1)
    pos = data.draw(st.integers(0, flat.size - 1))
    flat[pos] = bad
    target[key] = arr
    rep = gradcheck.compare(mine, ref, float32_hint=False)
    assert not rep.passed, str(rep)
    t = rep[key]
    assert not t.passed
    kind = "NaN" if math.isnan(bad) else "infinity"
    where = tuple(int(i) for i in np.unravel_index(pos, arr.shape)) if arr.shape else ()
    assert t.nonfinite == f"{side} has 1 {kind} at {where}", t.nonfinite
    # the summary keeps it: NaN for a NaN, infinity for an infinity, and the text names it
    assert (math.isnan(rep.max_rel_error) if kind == "NaN" else rep.max_rel_error == math.inf)
    assert f"{key}: {side} has 1 {kind}" in str(rep) and "FAILED" in str(rep)
    # and the other tensors are judged as if it were not there (their scale ignores it)
    others = [k for k in ref if k != key]
    if others:
        alone = gradcheck.compare({k: mine[k] for k in others}, {k: ref[k] for k in others}, float32_hint=False)
        for k in others:
            assert rep[k].passed == alone[k].passed and rep[k].rel_error == alone[k].rel_error


@given(gradient_pairs(), st.data())
@SETTINGS
def test_nan_from_sampled_entries_is_found_at_its_place_in_the_tensor(pair, data):
    """The (flat_indices, values) form of numerical_gradient: a NaN among the checked entries fails, and the
    report gives its index in the full tensor."""
    mine, ref = pair
    key = sorted(ref)[0]
    size = ref[key].size
    idx = np.array(sorted(data.draw(st.sets(st.integers(0, size - 1), min_size=1, max_size=size))))
    vals = ref[key].reshape(-1)[idx].copy()
    j = data.draw(st.integers(0, idx.size - 1))
    vals[j] = math.nan
    rep = gradcheck.compare(mine, {**ref, key: (idx, vals)}, float32_hint=False)
    where = tuple(int(i) for i in np.unravel_index(int(idx[j]), ref[key].shape)) if ref[key].shape else ()
    assert not rep.passed and rep[key].nonfinite == f"reference has 1 NaN at {where}"


@given(gradient_pairs(), st.data(), st.sampled_from([1e-3, -1e-3, 0.5, 2.0]))
@SETTINGS
def test_a_real_difference_fails_at_any_magnitude(pair, data, change):
    """A relative change of 1e-3 or more in one tensor that is not ~0 fails, also when its entries are near the
    largest float64 (whose plain 2-norm overflows to inf) or near the smallest."""
    mine, ref = pair
    key = data.draw(st.sampled_from(sorted(ref)))
    if not np.any(ref[key]) or mine[key].dtype != np.float64:
        return
    big = max(float(np.max(np.abs(v))) for v in ref.values())
    if float(np.max(np.abs(ref[key]))) < 1e-6 * big:      # not a tolerance: the checker's floor, tested
        return                     # below the floor: relative to the largest tensor it is round-off
    mine = {**mine, key: ref[key] * (1 + change)}
    rep = gradcheck.compare(mine, ref, float32_hint=False)
    assert not rep.passed and not rep[key].passed and math.isfinite(rep[key].rel_error), str(rep)


@given(gradient_pairs(), st.data(), st.sampled_from(["mine", "reference"]))
@SETTINGS
def test_a_key_missing_on_either_side_is_an_error(pair, data, side):
    mine, ref = pair
    key = data.draw(st.sampled_from(sorted(ref)))
    target = {"mine": mine, "reference": ref}[side]
    del target[key]
    if not mine and not ref:
        with pytest.raises(ValueError, match="nothing to compare"):
            gradcheck.compare(mine, ref)
        return
    with pytest.raises(ValueError, match="key sets differ"):
        gradcheck.compare(mine, ref)


@given(gradient_pairs(), st.sampled_from(["tol", "floor_rel"]),
       st.sampled_from([0.0, -1e-9, -1.0, math.nan, math.inf, -math.inf]))
@SETTINGS
def test_a_bad_tolerance_is_an_error_naming_it(pair, arg, value):
    mine, ref = pair
    with pytest.raises(ValueError, match=f"^{arg}: must be finite and > 0"):
        gradcheck.compare(mine, ref, **{arg: value})


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([1 + 2j, 3j]), np.array([True, False]),
                                 np.array([object(), None], dtype=object)], ids=["str", "complex", "bool", "obj"])
@pytest.mark.parametrize("side", ["mine", "reference"])
def test_a_non_numeric_array_is_a_type_error_naming_the_side(bad, side):
    ok = {"w": np.array([1.0, 2.0])}
    mine, ref = ({"w": bad}, ok) if side == "mine" else (ok, {"w": bad})
    with pytest.raises(TypeError, match=rf"^{side}\['w'\]: expected a"):
        gradcheck.compare(mine, ref)


def test_the_issue_example_fails_with_the_nan_named():
    """The report that used to pass: a silent 64-16-10 STBP net (every reference gradient exactly 0), one NaN
    in W1 of mine."""
    from refsnn import stbp
    from refsnn.blocks import encoding
    from refsnn.harness import datasets

    cfg = stbp.Config(T=5)
    images, y = datasets.load("digits", "train", limit=4)
    x = encoding.bernoulli(images.reshape(4, -1) / images.max(), cfg.T, 0)
    params = stbp.init_params([64, 16, 10], cfg, 0)
    params["b1"] = params["b1"] - 100.0          # layer 1 never fires, so every gradient is exactly 0
    _, g = stbp.loss_and_grad(params, x, y, cfg)
    assert all(not np.any(v) for v in g.values()), "the example needs an all-zero reference"
    m = {k: v.copy() for k, v in g.items()}
    m["W1"].flat[0] = np.nan
    rep = gradcheck.compare(m, g)
    assert not rep.passed and not rep["W1"].passed
    assert "W1: mine has 1 NaN at (0, 0)" in str(rep) and math.isnan(rep.max_rel_error)


# ---------------------------------------------------------------------------
# check_gradients and check_statistical share the path
# ---------------------------------------------------------------------------

@given(st.integers(0, 5), bad_values)
@settings(max_examples=30, deadline=None, derandomize=True)
def test_check_gradients_fails_when_the_objective_is_not_finite_near_the_point(entry, bad):
    """An objective that returns NaN or inf when one entry is perturbed gives a non-finite finite difference
    there: the check fails, naming it, even though the analytic gradient is finite."""
    p = {"w": np.linspace(0.1, 0.6, 6)}

    def f(q):
        return bad if q["w"][entry] != p["w"][entry] else float(np.sum(q["w"] ** 2))

    rep = gradcheck.check_gradients({"w": 2 * p["w"]}, f, p)
    assert not rep.passed and rep["w"].nonfinite.startswith("reference has 1 "), str(rep)
    good = gradcheck.check_gradients({"w": 2 * p["w"]}, lambda q: float(np.sum(q["w"] ** 2)), p)
    assert good.passed, str(good)


def _noisy(exact, bad_at=None, bad=math.nan):
    def sample(rng, count=[0]):      # noqa: B006 -- counts draws across calls of one check
        g = {k: v + rng.standard_normal(v.shape) for k, v in exact.items()}
        if bad_at is not None and count[0] == bad_at:
            g["w"] = g["w"].copy()
            g["w"].flat[0] = bad
        count[0] += 1
        return g
    return sample


@given(st.integers(0, 49), bad_values)
@settings(max_examples=20, deadline=None, derandomize=True)
def test_check_statistical_fails_on_a_non_finite_draw(at, bad):
    exact = {"w": np.array([1.0, -2.0, 0.5]), "c": np.array([0.3])}
    rep = gradcheck.check_statistical(_noisy(exact, at, bad), exact, n_samples=50, seed=1)
    assert not rep.passed and not rep["w"].passed and rep["c"].passed
    assert rep["w"].nonfinite.startswith(f"draw {at} has 1 ")
    assert "non-finite" in str(rep)
    control = gradcheck.check_statistical(_noisy(exact), exact, n_samples=50, seed=1)
    assert control.passed, str(control)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_check_statistical_fails_on_a_non_finite_exact_gradient(bad):
    exact = {"w": np.array([1.0, -2.0, 0.5])}
    broken = {"w": exact["w"].copy()}
    broken["w"][1] = bad
    rep = gradcheck.check_statistical(_noisy(exact), broken, n_samples=50, seed=1)
    assert not rep.passed and rep["w"].nonfinite.startswith("exact has 1 ")


@pytest.mark.parametrize("arg, value, exc", [("alpha", 0.0, ValueError), ("alpha", 1.0, ValueError),
                                             ("alpha", math.nan, ValueError), ("exact_rtol", -1e-7, ValueError),
                                             ("exact_rtol", math.inf, ValueError), ("n_samples", 2.5, TypeError),
                                             ("max_joint", 0, ValueError)])
def test_check_statistical_refuses_bad_settings_naming_them(arg, value, exc):
    exact = {"w": np.array([1.0, -2.0])}
    kw = {"n_samples": 20, **{arg: value}}
    with pytest.raises(exc, match=f"^{arg}: "):
        gradcheck.check_statistical(_noisy(exact), exact, seed=0, **kw)
