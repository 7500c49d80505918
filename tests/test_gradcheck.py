"""The gradient checker itself: exact on polynomials, catches wrong gradients, statistical test calibrated."""
import numpy as np
import pytest
from tolerances import FORMULA_REL

from refsnn.checking import gradcheck


def cubic(p):
    return float(np.sum(p["a"] ** 3) + np.sum(p["a"][:, 0] * p["b"]) + np.sin(p["b"]).sum())


def cubic_grad(p):
    ga = 3 * p["a"] ** 2
    ga[:, 0] += p["b"]
    return {"a": ga, "b": p["a"][:, 0] + np.cos(p["b"])}


P = {"a": np.array([[0.3, -1.2], [2.0, 0.5]]), "b": np.array([0.7, -0.4])}


@pytest.mark.parametrize("order", [2, 4])
def test_central_differences_are_accurate(order):
    num = gradcheck.numerical_gradient(cubic, P, eps=1e-4 if order == 4 else 1e-6, order=order)
    rep = gradcheck.compare(cubic_grad(P), num, tol=1e-9)
    assert rep.passed, str(rep)
    assert P["a"][0, 0] == 0.3  # the point is not modified


def test_order_four_beats_order_two_at_the_same_step():
    e = 1e-3
    err2 = gradcheck.compare(cubic_grad(P), gradcheck.numerical_gradient(cubic, P, eps=e, order=2)).max_rel_error
    err4 = gradcheck.compare(cubic_grad(P), gradcheck.numerical_gradient(cubic, P, eps=e, order=4)).max_rel_error
    assert err4 < err2 / 100


def test_a_wrong_gradient_fails_and_the_table_says_so():
    bad = cubic_grad(P)
    bad["b"] = bad["b"] * 1.001
    rep = gradcheck.check_gradients(bad, cubic, P, tol=1e-7)
    assert not rep.passed and rep["a"].passed and not rep["b"].passed
    assert rep["b"].rel_error == pytest.approx(1e-3, rel=0.01)
    text = str(rep)
    assert "FAILED" in text and "NO" in text


def test_sampled_entries_are_seeded_and_bounded():
    big = {"w": np.linspace(-1, 1, 200).reshape(10, 20)}
    f = lambda p: float(np.sum(p["w"] ** 2))  # noqa: E731
    n1 = gradcheck.numerical_gradient(f, big, max_entries=15, seed=3)
    n2 = gradcheck.numerical_gradient(f, big, max_entries=15, seed=3)
    assert len(n1["w"][0]) == 15 and np.array_equal(n1["w"][0], n2["w"][0])
    rep = gradcheck.compare({"w": 2 * big["w"]}, n1)
    assert rep.passed and rep["w"].n_checked == 15


def test_statistical_check_accepts_an_unbiased_estimator_and_rejects_a_biased_one():
    """Unbiased: g + N(0, 1) noise.  Biased: shift of 0.05 = 5 standard errors at N = 10^4 (sigma = 1):
    the mean's z-score for each entry is then ~ N(5, 1), far past the Bonferroni bound (~3.9 for m = 6)."""
    exact = {"w": np.array([1.0, -2.0, 0.5]), "c": np.array([0.0, 3.0, 4.0])}
    unbiased = lambda rng: {k: v + rng.normal(size=v.shape) for k, v in exact.items()}  # noqa: E731
    biased = lambda rng: {k: v + 0.05 + rng.normal(size=v.shape) for k, v in exact.items()}  # noqa: E731
    ok = gradcheck.check_statistical(unbiased, exact, n_samples=10000, seed=0)
    bad = gradcheck.check_statistical(biased, exact, n_samples=10000, seed=0)
    assert ok.passed, str(ok)
    assert not bad.passed
    assert "T2" in str(ok) and "Hotelling" in str(ok)


def test_statistical_check_is_calibrated_for_correlated_entries_and_sees_biased_contrasts():
    """Entries sharing one noise source: g = exact + xi * 1 + 0.01 * eps (xi, eps ~ N(0, 1)), m = 20.

    Unbiased: Hotelling's T^2 is exactly F-distributed for Gaussian samples, so each run fails with
    probability ~2 alpha = 2e-3 (5 seeds: ~1%).  A sum of z^2 against chi2_m would be ~ m * chi2_1 here
    (every z is dominated by the same xi-bar) and fall outside its band most of the time.
    Biased along the contrast e1 - e2 by +-0.002: each entry's z is ~0.002 / (1/sqrt(N)) = 0.2 (invisible
    to z-scores), but the contrast has variance 2e-4 per sample, so T^2 ~ N * (0.004)^2 / 2e-4 = 800 >> band.
    """
    exact = {"w": np.linspace(-1.0, 1.0, 20)}

    def unbiased(rng):
        return {"w": exact["w"] + rng.normal() + 0.01 * rng.normal(size=20)}

    shift = np.zeros(20)
    shift[0], shift[1] = 0.002, -0.002

    def biased(rng):
        return {"w": exact["w"] + shift + rng.normal() + 0.01 * rng.normal(size=20)}

    for seed in range(5):
        rep = gradcheck.check_statistical(unbiased, exact, n_samples=10000, seed=seed)
        assert rep.passed, str(rep)
        assert rep["w"].extra["dof"] == 20
    bad = gradcheck.check_statistical(biased, exact, n_samples=10000, seed=0)
    assert not bad.passed and bad["w"].extra["max_abs_z"] < bad["w"].extra["z_bound"], str(bad)


def test_statistical_check_handles_exact_linear_constraints():
    """Samples that always sum to zero (like a softmax error) have a null direction; the exact value must obey
    it to exact_rtol, and Hotelling's test runs on the other m - 1 directions."""
    exact = {"w": np.array([0.3, -0.1, -0.2])}

    def constrained(rng):
        e = rng.normal(size=3)
        return {"w": exact["w"] + e - e.mean()}

    rep = gradcheck.check_statistical(constrained, exact, n_samples=4000, seed=1)
    assert rep.passed and rep["w"].extra["dof"] == 2, str(rep)
    off = {"w": exact["w"] + 1e-3}  # violates the constraint: the null direction sees the offset
    assert not gradcheck.check_statistical(constrained, off, n_samples=4000, seed=1).passed


def test_statistical_check_handles_deterministic_entries():
    exact = {"w": np.array([1.0, 2.0])}
    assert gradcheck.check_statistical(lambda rng: {"w": np.array([1.0, 2.0])}, exact, n_samples=5, seed=0).passed
    assert not gradcheck.check_statistical(lambda rng: {"w": np.array([1.0, 2.1])}, exact, n_samples=5,
                                           seed=0).passed


def test_compare_refuses_to_compare_nothing_or_mismatched_keys():
    g = cubic_grad(P)
    with pytest.raises(ValueError, match="nothing to compare"):
        gradcheck.compare(g, {}, keys=[])
    with pytest.raises(ValueError, match="key sets differ.*only in mine: \\['a'\\]"):
        gradcheck.compare(g, {"b": g["b"]})
    with pytest.raises(ValueError, match="key sets differ.*only in reference: \\['c'\\]"):
        gradcheck.compare(g, {**g, "c": np.zeros(1)})
    assert gradcheck.compare(g, {"b": g["b"]}, keys=["b"]).passed          # an explicit subset is fine
    with pytest.raises(ValueError, match="keys: \\['c'\\] missing"):
        gradcheck.compare(g, g, keys=["c"])
    # buffers (state such as BatchNorm running statistics) are ignored on both sides, even if only on one
    rep = gradcheck.compare({**g, "bn_mean": np.ones(2)}, g, buffers=["bn_mean"])
    assert rep.passed and [t.name for t in rep.tensors] == ["a", "b"]


def test_compare_judges_an_exactly_zero_reference_by_the_absolute_error():
    """Round-off of 1.9e-17 against a reference of exactly 0 passes (it is 1e-17 of the largest tensor);
    a real error there (1e-3 of the largest tensor) fails.  The old absolute floor of 1e-12 turned the first
    into a 'relative error' of 1.9e-5."""
    ref = {"W": np.array([[0.5, -1.0], [2.0, 0.1]]), "b": np.zeros(2)}
    ok = gradcheck.compare({"W": ref["W"].copy(), "b": np.array([1.9e-17, 0.0])}, ref, tol=1e-6)   # not a tolerance
    assert ok.passed and ok["b"].basis == "absolute" and ok["b"].rel_error < FORMULA_REL, str(ok)
    bad = gradcheck.compare({"W": ref["W"].copy(), "b": np.array([2.3e-3, 0.0])}, ref, tol=1e-6)
    assert not bad.passed and not bad["b"].passed and "abs" in str(bad)


def test_compare_says_when_the_error_looks_like_float32():
    ref = {"W": np.linspace(-1.0, 1.0, 12).reshape(3, 4) + 0.1}
    mine32 = {"W": ref["W"].astype(np.float32)}
    rep = gradcheck.compare(mine32, ref, tol=1e-10)
    assert not rep.passed
    assert any("float32" in n for n in rep.notes) and "note:" in str(rep)
    # the same size of error from float64 arrays: still said (e.g. a float32 constant on the other side)
    rep = gradcheck.compare({"W": ref["W"] * (1 + 3e-8)}, ref, tol=1e-10)
    assert any("float32 round-off" in n for n in rep.notes)
    # a model-sized error is not blamed on float32
    rep = gradcheck.compare({"W": ref["W"] * 1.01}, ref, tol=1e-10)
    assert not rep.passed and not rep.notes
