"""SSNN-BP: the spiking pieces, the twins, the ANN twin, and the statistical claims of docs/ssnn_bp.md.

Every statistical test has a fixed seed and a bound derived in its docstring; ``alpha`` is the
probability that a correct implementation fails it (1e-3 unless said otherwise).
"""
import itertools
import math
from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from refsnn.checking import gradcheck
from refsnn.harness import benchmarks, problems
from refsnn import ssnn_bp as S
from tolerances import FORMULA_REL, GRAD_FD_REL, TINY, TORCH_REL, TWIN_REL, assert_close

ALPHA = 1e-3


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def problem(seed=0, sizes=(10, 8, 4), batch=3):
    return problems.ssnn_bp_problem(seed, sizes=sizes, batch=batch)


def check_rows(per, exact, n):
    """check_statistical over precomputed iid rows ``per[k][i]`` (i = 0..n-1), in order."""
    it = iter(range(n))

    def draw(rng):
        i = next(it)
        return {k: v[i] for k, v in per.items()}

    return gradcheck.check_statistical(draw, exact, n_samples=n, seed=0)


def one_sample(sizes=(6, 5, 3), seed=3, zero_input=True):
    """One input (with one pixel exactly 0 when asked) and its label, on a kink-free random net."""
    params, x, y = problems.ssnn_bp_problem(seed, sizes=sizes, batch=1)
    if zero_input:
        x = x.copy()
        x[0, 0] = 0.0
    return params, x, y


# ---------------------------------------------------------------------------
# Configuration and input errors
# ---------------------------------------------------------------------------

def test_config_validates_every_field():
    with pytest.raises(ValueError, match="T: must be >= 1"):
        S.Config(T=0)
    with pytest.raises(TypeError, match="T: expected an integer"):
        S.Config(T=2.5)
    with pytest.raises(ValueError, match="forward: unknown value 'sparse'"):
        S.Config(forward="sparse")
    with pytest.raises(ValueError, match="update_port: unknown value"):
        S.Config(update_port="shared")
    with pytest.raises(ValueError, match="counter: unknown value"):
        S.Config(counter="gpu")
    with pytest.raises(ValueError, match=r"gamma_scale: must lie in \(0.0, 1.0\]"):
        S.Config(gamma_scale=1.5)
    with pytest.raises(ValueError, match="gamma_scale"):
        S.Config(gamma_scale=0.0)
    with pytest.raises(TypeError, match="ann: expected True or False"):
        S.Config(ann="yes")
    assert S.Config(T=3).to_dict()["T"] == 3


def test_bad_inputs_raise_clear_errors():
    params, x, y = problem()
    cfg = S.Config(T=4)
    with pytest.raises(ValueError, match=r"x: values are spike probabilities and must lie in \[0, 1\].*max 1.5"):
        S.loss_and_grad(params, np.full_like(x, 1.5), y, cfg, rng=0)
    with pytest.raises(ValueError, match=r"x: .*min -0.1"):
        S.predict(params, np.full_like(x, -0.1), cfg)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, n_in\) = \(batch, 10\)"):
        S.loss_and_grad(params, x[:, :5], y, cfg, rng=0)
    with pytest.raises(ValueError, match="y: labels must lie in"):
        S.loss_and_grad(params, x, np.array([0, 1, 9]), cfg, rng=0)
    with pytest.raises(ValueError, match="params: expected keys"):
        S.loss_and_grad({"W1": params["W1"]}, x, y, cfg, rng=0)
    with pytest.raises(ValueError, match="rng: this computation is random"):
        S.loss_and_grad(params, x, y, cfg)
    with pytest.raises(ValueError, match="rng: this computation is random"):
        S.predict(params, x, S.Config(forward="spike"))
    with pytest.raises(TypeError, match="cfg: expected refsnn.ssnn_bp.Config"):
        S.loss_and_grad(params, x, y, {"T": 4}, rng=0)
    with pytest.raises(ValueError, match="features: must lie in"):
        S.encode(np.array([[0.2, 3.0]]), cfg)
    with pytest.raises(ValueError, match="at least 2 classes"):
        S.init_params([4, 3, 1], cfg, 0)
    with pytest.raises(ValueError, match="gamma: gamma \\* \\|beta\\| reaches"):
        S.gradient_units(np.array([[2.0]]), np.array([[1]]), 1.0, np.array([[0.5]]))


@pytest.mark.parametrize("forward", ["rate", "spike"])
def test_silent_layers_give_finite_zero_updates_not_nan(forward):
    """A hidden layer that never fires (z < 0 everywhere), a zero output crossbar (beta = 0, so the
    gain bound is 0), and an all-zero input must give finite numbers, with exact zeros where no spike
    can coincide."""
    params, x, y = problem()
    cfg = S.Config(T=8, forward=forward)
    silent = {k: v.copy() for k, v in params.items()}
    silent["b1"][:] = -50.0
    loss, g = S.loss_and_grad(silent, x, y, cfg, rng=1)
    assert math.isfinite(loss) and all(np.all(np.isfinite(v)) for v in g.values())
    assert not g["W1"].any() and not g["b1"].any() and not g["W2"].any()   # no hidden spikes, gate closed
    zero_out = {k: v.copy() for k, v in params.items()}
    zero_out["W2"][:] = 0.0
    assert S.gains(zero_out, cfg) == [1.0]
    loss, g = S.loss_and_grad(zero_out, x, y, cfg, rng=1)
    assert math.isfinite(loss) and not g["W1"].any()                      # beta = W2^T d = 0
    loss, g = S.loss_and_grad(params, np.zeros_like(x), y, cfg, rng=1)
    assert math.isfinite(loss) and not g["W1"].any()                      # no input spike ever
    assert all(np.all(np.isfinite(v)) for v in g.values())
    assert np.all(np.isfinite(S.predict(silent, x, cfg, rng=0)))


# ---------------------------------------------------------------------------
# The counters: brute force, events, matmul (twins)
# ---------------------------------------------------------------------------

def test_coincidence_counters_agree_given_the_same_spikes():
    """The readable twin (plain NumPy, a step loop), the event-driven kernel (compiled and its pure-Python
    body), the BLAS product, and Eq. (U1) as one einsum: the same integers."""
    rng = np.random.default_rng(0)
    R, n_in, n_out = 37, 9, 6
    port = rng.random((R, n_in)) < 0.4
    u = rng.random((R, n_out))
    e_plus, e_minus = u < 0.2, u > 0.75
    ref_plus = np.einsum("rj,ri->ji", e_plus.astype(int), port.astype(int))   # sum_t e+_j(t) AND v_i(t)
    ref_minus = np.einsum("rj,ri->ji", e_minus.astype(int), port.astype(int))
    results = {"loop": S.coincidences_loop(port, e_plus, e_minus),
               "events": S.coincidences(port, e_plus, e_minus, method="events"),
               "matmul": S.coincidences(port, e_plus, e_minus, method="matmul")}
    net = np.zeros((n_out, n_in))
    S._event_kernel.py_func(port, e_plus.astype(np.int8) - e_minus.astype(np.int8), net)
    for name, (c_plus, c_minus) in results.items():
        assert np.array_equal(c_plus, ref_plus), name
        assert np.array_equal(c_minus, ref_minus), name
    assert np.array_equal(net, ref_plus - ref_minus)


@pytest.mark.parametrize("forward,port", [("rate", "independent"), ("spike", "independent"), ("spike", "reuse")])
def test_training_step_is_identical_with_every_counter(forward, port):
    """Same seed, same spikes: the three counters give bit-identical gradients (integer counts, one scale)."""
    params, x, y = problem(sizes=(10, 8, 6, 4))
    grads = {}
    for counter in S.COUNTERS:
        cfg = S.Config(T=12, forward=forward, update_port=port, counter=counter)
        grads[counter] = S.loss_and_grad(params, x, y, cfg, rng=7)[1]
    for counter in ("matmul", "loop"):
        for k in params:
            assert np.array_equal(grads[counter][k], grads["events"][k]), (counter, k)


# ---------------------------------------------------------------------------
# Structure of the streams, sign, quantisation, gains
# ---------------------------------------------------------------------------

def test_streams_structure_sign_and_quantisation():
    """Deterministic facts of Eq. (W2), (G2), (U3) at every step:
    * output: +1 only at the label, and only when the label lost; -1 only at the winner; each
      active step has exactly one of each (sum_k e-_k(t) = e+_c(t));
    * hidden G+ and G- never fire together, and never through a closed gate;
    * the estimate for b2[c] is <= 0 and for b2[k != c] >= 0 in every single trial (the sign of
      dL/db = p - onehot(c)): the returned gradient is -Delta W / eta, not Delta W;
    * every entry times Gamma * T * batch is an integer: the update is a count of +-dw_min pulses."""
    params, x, y = problem(sizes=(10, 8, 6, 4))
    cfg = S.Config(T=20)
    tr = S.simulate(params, x, y, cfg, rng=3)
    e_plus, e_minus = tr.stream(3, +1), tr.stream(3, -1)
    lost = tr.winners != y[None, :]
    for b in range(len(y)):
        assert np.array_equal(e_plus[:, b, y[b]], lost[:, b])
        assert np.array_equal(e_minus[:, b].sum(axis=1), e_plus[:, b, y[b]])
        others = np.delete(np.arange(4), y[b])
        assert not e_plus[:, b, others].any() and not e_minus[:, b, y[b]].any()
        assert np.array_equal(e_minus[:, b].argmax(axis=1)[lost[:, b]], tr.winners[lost[:, b], b])
    for layer in (1, 2):
        d = tr.streams[layer - 1]
        assert set(np.unique(d)) <= {-1, 0, 1}
        closed = ~tr.gates[layer - 1][tr.rows[:, 1]]
        assert not d[closed].any()
    assert 0 < tr.max_prob <= 1.0
    for seed in range(20):
        g = S.sample_gradients(params, x, y, cfg, rng=seed)
        for b in range(len(y)):
            assert g["b3"][b, y[b]] <= 0 and np.all(np.delete(g["b3"][b], y[b]) >= 0)
    _, g = S.loss_and_grad(params, x, y, cfg, rng=4)
    for n, Gam in enumerate(tr.Gammas, start=1):
        for k in (f"W{n}", f"b{n}"):
            counts = g[k] * Gam * cfg.T * len(y)
            assert_close(counts, np.round(counts), FORMULA_REL, scale=max(1.0, float(np.abs(counts).max())), what=k)
    # One sample: the SGD step -lr * grad is dw_min times the net coincidence count, entry by entry.
    lr = 0.05
    tr1 = S.simulate(params, x[:1], y[:1], cfg, rng=9)
    _, g1 = S.loss_and_grad(params, x[:1], y[:1], cfg, rng=9)
    for n, (q, (cw, cb)) in enumerate(zip(S.dw_min(params, cfg, lr), tr1.net_counts), start=1):
        assert q == pytest.approx(lr / (tr1.Gammas[n - 1] * cfg.T), rel=FORMULA_REL)     # a few roundings
        assert_close(-lr * g1[f"W{n}"], q * cw, FORMULA_REL, what=f"W{n}")
        assert_close(-lr * g1[f"b{n}"], q * cb, FORMULA_REL, what=f"b{n}")


def test_gains_are_the_tightest_no_clip_bound():
    """Eq. (G3): gamma * max over every possible (label, winner) pair of |W_cj - W_wj| is exactly
    gamma_scale for the output-fed layer (so 1 is reached: the bound cannot be raised), and
    gamma * max_j sum_k |W_kj| = gamma_scale for a hidden-fed layer."""
    params, _, _ = problem(sizes=(7, 6, 5, 4))
    for scale in (1.0, 0.3):
        g1, g2 = S.gains(params, S.Config(gamma_scale=scale))
        W3 = params["W3"]
        worst = max(abs(W3[c, j] - W3[w, j]) for c in range(4) for w in range(4) for j in range(5))
        assert g2 * worst == pytest.approx(scale, rel=FORMULA_REL)                   # one division, one product
        assert g1 * np.abs(params["W2"]).sum(axis=0).max() == pytest.approx(scale, rel=FORMULA_REL)   # + a sum of 4
    tr = S.simulate(params, *problem(sizes=(7, 6, 5, 4))[1:], S.Config(T=200), rng=0)
    assert tr.max_prob <= 1.0 + 1e-12


# ---------------------------------------------------------------------------
# The ANN twin, the contract pieces
# ---------------------------------------------------------------------------

def test_ann_twin_matches_central_differences_and_is_what_ann_mode_returns():
    params, x, y = problem(sizes=(10, 8, 6, 4))
    loss, g = S.ann_loss_and_grad(params, x, y)
    f = S.reference_objective(params, x, y, S.Config())
    assert f(params) == pytest.approx(loss, rel=TWIN_REL)
    rep = gradcheck.check_gradients(g, f, params, tol=GRAD_FD_REL)
    assert rep.passed, str(rep)
    loss2, g2 = S.loss_and_grad(params, x, y, S.Config(ann=True))
    assert loss2 == loss and all(np.array_equal(g[k], g2[k]) for k in g)


def test_ann_twin_matches_torch_autograd():
    pytest.importorskip("torch", reason="torch not installed: pip install torch (CPU) for the cross-check")
    from refsnn.checking import torch_golds

    params, x, y = problem(sizes=(10, 8, 6, 4), batch=5)
    loss_t, ref = torch_golds.ssnn_bp_ann_gradient(params, x, y)
    loss, g = S.ann_loss_and_grad(params, x, y)
    assert loss == pytest.approx(loss_t, rel=TORCH_REL)
    scale = max(np.abs(v).max() for v in ref.values())
    for k in params:
        # TORCH_REL relative to the largest gradient entry: entries much smaller than it are round-off there.
        np.testing.assert_allclose(g[k], ref[k], rtol=TORCH_REL, atol=TORCH_REL * scale)


def test_predict_and_sample_gradients_agree_with_the_contract():
    params, x, y = problem()
    zs, _ = S.forward_rates(params, x)
    assert np.array_equal(S.predict(params, x, S.Config()), np.argmax(zs[-1], axis=1))
    assert np.array_equal(S.predict(params, x, S.Config(ann=True)), np.argmax(zs[-1], axis=1))
    # V2 readout: at large T the spiking potentials approach the exact ones (same argmax here).
    assert np.array_equal(S.predict(params, x, S.Config(T=20000, forward="spike"), rng=0), np.argmax(zs[-1], axis=1))
    cfg = S.Config(T=9, forward="spike", update_port="reuse")
    per = S.sample_gradients(params, x, y, cfg, rng=11)
    _, g = S.loss_and_grad(params, x, y, cfg, rng=11)
    for k in g:
        assert_close(per[k].mean(axis=0), g[k], TWIN_REL, what=k)
    assert S.encode(x, cfg).dtype == np.float64


def test_deeper_networks_and_softmax_regression_run():
    for sizes in [(6, 3), (6, 5, 4, 4, 3)]:
        params, x, y = problem(sizes=sizes)
        for forward in ("rate", "spike"):
            loss, g = S.loss_and_grad(params, x, y, S.Config(T=6, forward=forward), rng=0)
            assert set(g) == set(params) and math.isfinite(loss)


# ---------------------------------------------------------------------------
# (a) E[update] = exact backprop
# ---------------------------------------------------------------------------

def test_every_gradcheck_case_passes(capsys):
    """`refsnn gradcheck ssnn_bp`: V1 means against central differences of the ANN loss (Bonferroni
    z-scores and Hotelling's T^2, gradcheck.check_statistical), and the ANN twin exactly."""
    from refsnn.cli import main

    assert main(["gradcheck", "ssnn_bp"]) == 0
    out = capsys.readouterr().out
    assert "5 passed, 0 failed" in out and "FAIL" not in out


@pytest.mark.parametrize("sizes", [(20, 12, 5), (20, 12, 8, 5)])
def test_v1_mean_is_the_exact_gradient_on_the_spec_network(sizes):
    """Unbiasedness on a 20-12-5 net (and with a second hidden layer), one sample, T = 32, N = 3000
    single-sample estimates against the analytic gradient (Eq. (B1)-(B3)).  Under unbiasedness each |z|
    exceeds the Bonferroni bound Phi^-1(1 - alpha/(2m)) with probability alpha/m, and Hotelling's
    T^2 (N - r)/(r (N - 1)) ~ F(r, N - r) leaves its central band with probability alpha, per tensor."""
    params, x, y = problems.ssnn_bp_problem(5, sizes=sizes, batch=1)
    _, exact = S.ann_loss_and_grad(params, x, y)
    cfg = S.Config(T=32)
    xs, ys = np.repeat(x, 3000, axis=0), np.repeat(y, 3000)
    rep = check_rows(S.sample_gradients(params, xs, ys, cfg, rng=21), exact, 3000)
    assert rep.passed, str(rep)


def test_the_statistical_check_has_power_against_v2_at_small_T():
    """The same check must *reject* V2 at T = 2 (its forward noise biases the mean): a test
    that cannot fail proves nothing."""
    params, x, y = problems.ssnn_bp_problem(5, sizes=(20, 12, 5), batch=1)
    _, exact = S.ann_loss_and_grad(params, x, y)
    per = S.sample_gradients(params, np.repeat(x, 3000, axis=0), np.repeat(y, 3000),
                             S.Config(T=2, forward="spike"), rng=22)
    assert not check_rows(per, exact, 3000).passed


# ---------------------------------------------------------------------------
# (b) Variance: closed forms and 1/T
# ---------------------------------------------------------------------------

def _step_law(params, x, c, gamma):
    """Per entry, P(X_t = +1), P(X_t = -1) of one step's coincidence X_t = v(t)(e+(t) - e-(t)) in V1.

    Derived independently of variance_v1 from Eq. (W1)-(W2), (G1)-(G2): output row k: +1 w.p.
    a_j (1 - p_c) if k = c, -1 w.p. a_j p_k otherwise; hidden row j: beta_j = W2_cj - W2_wj when the
    winner w != c, so +1 w.p. x_i g_j gamma sum_{k != c} p_k max(beta, 0) and -1 w.p. the same with
    max(-beta, 0).  Biases: the presynaptic factor is 1."""
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    z1 = W1 @ x + b1
    a1, g = np.clip(z1, 0, 1), ((z1 > 0) & (z1 < 1)).astype(float)
    p = softmax(W2 @ a1 + b2)
    K = len(p)
    qk_plus = np.where(np.arange(K) == c, 1 - p[c], 0.0)
    qk_minus = np.where(np.arange(K) == c, 0.0, p)
    beta = W2[c][None, :] - W2                                      # (K, H): winner k
    bp = (p[:, None] * np.maximum(beta, 0)).sum(axis=0)
    bm = (p[:, None] * np.maximum(-beta, 0)).sum(axis=0)
    qj_plus, qj_minus = g * gamma * bp, g * gamma * bm
    return {"W2": (np.outer(qk_plus, a1), np.outer(qk_minus, a1), 1.0), "b2": (qk_plus, qk_minus, 1.0),
            "W1": (np.outer(qj_plus, x), np.outer(qj_minus, x), gamma), "b1": (qj_plus, qj_minus, gamma)}


def _moments(qp, qm, Gamma, T):
    """Variance and 4th central moment of ghat = -(1/(Gamma T)) sum_{t<T} X_t, X_t iid ternary.

    Cumulants add over the T iid steps: with m = qp - qm, q = qp + qm, kappa2(X) = q - m^2 and
    mu4(X) = E(X - m)^4 = q - 4 m^2 + 6 m^2 q - 3 m^4 (using X^3 = X, X^4 = X^2), kappa4 = mu4 - 3 kappa2^2;
    then kappa_r(S) = T kappa_r(X), mu4(S) = kappa4(S) + 3 kappa2(S)^2, and ghat scales S by 1/(Gamma T)."""
    m, q = qp - qm, qp + qm
    k2 = q - m ** 2
    mu4 = q - 4 * m ** 2 + 6 * m ** 2 * q - 3 * m ** 4
    k4 = mu4 - 3 * k2 ** 2
    s = 1.0 / (Gamma * T)
    return T * k2 * s ** 2, (T * k4 + 3 * (T * k2) ** 2) * s ** 4


def test_single_trial_variances_match_the_closed_forms():
    """Eq. (Var1)-(Var2) on a 6-5-3 net (one input pixel exactly 0) at T = 4, 16, 64.

    N = 4000 iid single-sample estimates per T.  For each entry the sample variance s^2 of N iid
    values has Var(s^2) = mu4/N - sigma^4 (N - 3)/(N (N - 1)) with mu4 the exact 4th central moment
    (_moments), and s^2 is close to Gaussian at this N, so |s^2 - sigma^2| <= z_B sd(s^2) with
    z_B = Phi^-1(1 - alpha/(2m)) over the m entries of all three T (Bonferroni: valid whatever the
    correlations).  Entries with sigma^2 = 0 (x_i = 0, closed gates) must have s^2 = 0 exactly.
    variance_v1 must equal the independent derivation _step_law/_moments to round-off."""
    params, x, y = one_sample()
    c = int(y[0])
    N = 4000
    checks, n_zero = [], 0
    for T in (4, 16, 64):
        cfg = S.Config(T=T)
        gamma = S.gains(params, cfg)[0]
        closed = S.variance_v1(params, x, y, cfg)
        per = S.sample_gradients(params, np.repeat(x, N, axis=0), np.repeat(y, N), cfg, rng=100 + T)
        for k, (qp, qm, Gam) in _step_law(params, x[0], c, gamma).items():
            var, mu4 = _moments(qp, qm, Gam, T)
            np.testing.assert_allclose(closed[k], var, rtol=TWIN_REL, atol=TINY)
            s2 = per[k].var(axis=0, ddof=1)
            zero = var <= TINY
            assert np.all(s2[zero] == 0), k
            n_zero += int(zero.sum())
            sd = np.sqrt(mu4 / N - var ** 2 * (N - 3) / (N * (N - 1)))
            checks.append(((s2 - var)[~zero] / sd[~zero], k, T))
    m = sum(z.size for z, _, _ in checks)
    zb = stats.norm.isf(ALPHA / (2 * m))
    worst = max(float(np.abs(z).max()) for z, _, _ in checks)
    assert worst <= zb, [(k, T, float(np.abs(z).max())) for z, k, T in checks]
    assert n_zero > 0 and m > 50


def test_rms_error_falls_like_one_over_sqrt_T():
    """RMSE of single-trial estimates at T = 16, 64, 256, 1024 (N = 600 each, 6-5-3 net).

    In V1 E||ghat - g||^2 = sum of per-entry variances = V/T exactly (Eq. (Var1)-(Var2)), so the log-log
    slope of RMSE is -1/2.  The estimate MSE_T (mean of N squared errors) has standard error
    se_T = sd(||ghat - g||^2)/sqrt(N); by the delta method 0.5 log MSE_T has sd 0.5 se_T/MSE_T, and the
    least-squares slope over u = log T is sum_T w_T y_T with w_T = (u_T - mean u)/sum (u - mean u)^2, so
    its sd is sqrt(sum w_T^2 (0.5 se_T/MSE_T)^2) (independent samples per T).  The slope must lie within
    z = Phi^-1(1 - alpha/2) such sd of -1/2, and that band must be inside [-0.6, -0.4] (the
    test has the resolution to tell 1/sqrt(T) from T^-0.4 or T^-0.6).  Also MSE_T * T matches V."""
    params, x, y = one_sample()
    _, exact = S.ann_loss_and_grad(params, x, y)
    Ts = np.array([16, 64, 256, 1024])
    N = 600
    mse, rel_se = [], []
    V = sum(float(v.sum()) * 16 for v in S.variance_v1(params, x, y, S.Config(T=16)).values())
    for T in Ts:
        per = S.sample_gradients(params, np.repeat(x, N, axis=0), np.repeat(y, N), S.Config(T=int(T)), rng=int(T))
        sq = sum(((per[k] - exact[k][None]) ** 2).reshape(N, -1).sum(axis=1) for k in exact)
        mse.append(sq.mean())
        rel_se.append(sq.std(ddof=1) / math.sqrt(N) / sq.mean())
    u = np.log(Ts)
    w = (u - u.mean()) / np.sum((u - u.mean()) ** 2)
    slope = float(np.sum(w * 0.5 * np.log(mse)))
    sd = math.sqrt(float(np.sum(w ** 2 * (0.5 * np.array(rel_se)) ** 2)))
    z = stats.norm.isf(ALPHA / 2)
    assert abs(slope + 0.5) <= z * sd, (slope, sd)
    assert -0.6 <= -0.5 - z * sd and -0.5 + z * sd <= -0.4, sd
    for T, m_, r in zip(Ts, mse, rel_se):
        assert abs(m_ * T / V - 1) <= z * r * 1.0 + 1e-12, (T, m_ * T / V)


# ---------------------------------------------------------------------------
# (c) WTA = softmax; low-noise limit = argmax
# ---------------------------------------------------------------------------

def test_wta_winner_frequencies_are_softmax():
    """M = 2e5 WTA steps at z = (0.5, -0.3, 1.2, 0, -1).  Counts are Multinomial(M, softmax(z)) under
    the Gumbel-max identity, so Pearson's X^2 = sum (n_k - M p_k)^2/(M p_k) ~ chi2_{K-1} (stay below its
    1 - alpha quantile) and each n_k ~ Binomial(M, p_k) (|n_k - M p_k| <= z_B sqrt(M p_k (1-p_k)),
    Bonferroni over K).  Hence the total-variation distance is at most (1/2) sum_k z_B sqrt(p_k(1-p_k)/M):
    checked at M = 2e3, 2e4, 2e5 (it falls like M^-1/2)."""
    z = np.array([[0.5, -0.3, 1.2, 0.0, -1.0]])
    p = softmax(z[0])
    K = len(p)
    zb = stats.norm.isf(ALPHA / (2 * K))
    w = S.wta_winners(z, 200_000, rng=0)[:, 0]
    for M in (2_000, 20_000, 200_000):
        n = np.bincount(w[:M], minlength=K)
        assert np.all(np.abs(n - M * p) <= zb * np.sqrt(M * p * (1 - p))), (M, n / M, p)
        tv = 0.5 * np.abs(n / M - p).sum()
        assert tv <= 0.5 * np.sum(zb * np.sqrt(p * (1 - p) / M))
    X2 = np.sum((n - M * p) ** 2 / (M * p))
    assert X2 <= stats.chi2.isf(ALPHA, K - 1)


def test_wta_low_noise_limit_is_argmax():
    """Logits scaled by beta: P(winner != argmax) = 1 - softmax(beta z)_max <= (K-1) exp(-beta gap).
    z has gap 0.5, beta = 60: <= 4 exp(-30) ~ 4e-13 per step, so all 1e5 steps pick the argmax
    (failure probability < 1e-7).  At beta = 1 the non-argmax frequency is 1 - p_max (binomial bound):
    the noise is real, the limit is not a tautology."""
    z = np.array([[0.5, -0.3, 1.0, 0.0, -1.0]])
    M = 100_000
    assert np.all(S.wta_winners(60 * z, M, rng=1) == 2)
    w = S.wta_winners(z, M, rng=2)
    q = 1 - softmax(z[0])[2]
    f = np.mean(w != 2)
    assert abs(f - q) <= stats.norm.isf(ALPHA / 2) * math.sqrt(q * (1 - q) / M)


def test_output_streams_carry_onehot_minus_softmax():
    """E[e+_c] = 1 - p_c and E[e-_k] = p_k (Eq. (W2)): each is a mean of M iid Bernoulli, checked with
    binomial bounds (Bonferroni over K); sum_k e-_k(t) = e+_c(t) at every step."""
    z = np.array([[0.2, 1.0, -0.5, 0.3]])
    c = 1
    p = softmax(z[0])
    M = 100_000
    e_plus, e_minus = S.output_streams(S.wta_winners(z, M, rng=3), np.array([c]), 4)
    assert np.array_equal(e_minus[:, 0].sum(axis=1), e_plus[:, 0, c])
    mean = e_minus[:, 0].mean(axis=0).astype(float)
    mean[c] = e_plus[:, 0, c].mean()
    target = p.copy()
    target[c] = 1 - p[c]
    zb = stats.norm.isf(ALPHA / (2 * 4))
    assert np.all(np.abs(mean - target) <= zb * np.sqrt(target * (1 - target) / M))


# ---------------------------------------------------------------------------
# (d) V2: exact expectation by enumeration, the reuse bias, bias ~ 1/T
# ---------------------------------------------------------------------------

def _v2_expectation(params, x, c, T, port):
    """Exact E[ghat] of V2 for a tiny one-hidden-layer net, by enumerating the spike counts.

    Given the window counts nx_i ~ Bin(T, x_i) (input) and, given them, nh_j ~ Bin(T, ahat_j) with
    ahat = f(zhat1), zhat1 = W1 nx/T + b1 (Eq. (S1)-(S3)), the WTA error eps = onehot(c) - softmax(zhat2),
    zhat2 = W2 nh/T + b2, is iid over the steps and independent of *which* steps spiked.  Hence, per
    forward outcome: E[ghat_b2] = -eps; E[ghat_W2] = -eps ahat^T (independent port) or -eps (nh/T)^T
    (reuse: the port spikes are the counted ones); E[ghat_b1] = -(g * W2^T eps) with g = 1[0<zhat1<1]
    (the gain cancels: Eq. (G2) and (U3)); E[ghat_W1] = -(g * W2^T eps) x^T or (nx/T)^T.  Sum over all
    (T+1)^(n0+n1) count vectors with their binomial probabilities."""
    W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
    n0, n1 = W1.shape[1], W1.shape[0]
    out = {k: np.zeros_like(v) for k, v in params.items()}
    ks = np.arange(T + 1)
    px = [stats.binom.pmf(ks, T, xi) for xi in x]
    H = np.array(list(itertools.product(range(T + 1), repeat=n1)))          # every hidden count vector
    hh = H / T
    eps = -softmax(hh @ W2.T + b2)                                           # (M, K)
    eps[:, c] += 1
    for nx in itertools.product(range(T + 1), repeat=n0):
        pr_x = np.prod([px[i][nx[i]] for i in range(n0)])
        if pr_x == 0:
            continue
        xh = np.array(nx) / T
        z1 = W1 @ xh + b1
        ah, g = np.clip(z1, 0, 1), ((z1 > 0) & (z1 < 1)).astype(float)
        pr = pr_x * np.prod([stats.binom.pmf(H[:, j], T, ah[j]) for j in range(n1)], axis=0)   # (M,)
        back = g * (eps @ W2)                                                # (M, n1)
        pe = pr @ eps
        out["b2"] -= pe
        out["W2"] -= np.outer(pe, ah) if port == "independent" else (pr[:, None] * eps).T @ hh
        pb = pr @ back
        out["b1"] -= pb
        out["W1"] -= np.outer(pb, x if port == "independent" else xh)
    return out


def _tiny():
    params, x, y = problems.ssnn_bp_problem(8, sizes=(2, 2, 3), batch=1, margin=0.05)
    return params, x, y


@pytest.mark.parametrize("T", [1, 3, 8])
def test_v2_sample_mean_is_the_enumerated_expectation_and_reuse_is_biased(T):
    """The implementation's V2 (independent and reused ports) against the exact expectation of
    _v2_expectation (z-scores and Hotelling, check_statistical, N = 20000).  The two ports' exact
    expectations differ (the reuse bias); at T <= 3 the reused-port samples are also *rejected*
    against the independent port's expectation, so the bias is detectable, not just computed."""
    params, x, y = _tiny()
    c = int(y[0])
    N = 20000
    exp = {port: _v2_expectation(params, x[0], c, T, port) for port in ("independent", "reuse")}
    diff = max(float(np.abs(exp["reuse"][k] - exp["independent"][k]).max()) for k in params)
    assert diff > 1e-3
    for port in ("independent", "reuse"):
        per = S.sample_gradients(params, np.repeat(x, N, axis=0), np.repeat(y, N),
                                 S.Config(T=T, forward="spike", update_port=port), rng=T)
        rep = check_rows(per, exp[port], N)
        assert rep.passed, (port, str(rep))
        if port == "reuse" and T <= 3:
            assert not check_rows(per, exp["independent"], N).passed


def test_v2_bias_shrinks_at_least_twofold_per_fourfold_T_exactly():
    """V2's bias without sampling noise: the exact V2 bias ||E ghat - g|| (enumeration,
    independent port) of a tiny net with every z away from the kinks, at T = 2, 8, 32: each 4x step in
    T must shrink it at least 2x (O(1/T) predicts ~4x once T is large), and V1 has no bias at all."""
    params, x, y = _tiny()
    _, exact = S.ann_loss_and_grad(params, x, y)
    bias = []
    for T in (2, 8, 32):
        e = _v2_expectation(params, x[0], int(y[0]), T, "independent")
        bias.append(math.sqrt(sum(float(np.sum((e[k] - exact[k]) ** 2)) for k in params)))
    assert bias[0] >= 2 * bias[1] and bias[1] >= 2 * bias[2], bias
    assert bias[2] > 0


def _laurent_massart_radius(samples, x=7.0):
    """High-probability bound on ||n|| for n = mean of N iid rows minus their expectation.

    With n ~ N(0, Sigma/N) (CLT), ||n||^2 = sum_i l_i chi2_1 with l_i the eigenvalues of Sigma/N, and
    Laurent & Massart (2000, Lemma 1) give P(||n||^2 >= sum l + 2 sqrt(x sum l^2) + 2 x max l) <= e^-x.
    x = 7: probability <= 1e-3.  Sigma is the sample covariance."""
    N = samples.shape[0]
    lam = np.clip(np.linalg.eigvalsh(np.cov(samples, rowvar=False)), 0, None) / N
    return math.sqrt(lam.sum() + 2 * math.sqrt(x * np.sum(lam ** 2)) + 2 * x * lam.max())


def test_v2_bias_shrinks_at_least_twofold_per_fourfold_T_sampled():
    """V2's bias on the implementation's own samples: the tiny net of _tiny, V2 (independent port),
    T = 8 and 32, N = 20000 single-sample estimates each.  ||mean - g|| = ||bias + n|| with ||n|| <= r
    (Laurent-Massart radius; each fails w.p. <= 1e-3), so ||bias_8|| >= ||mean_8 - g|| - r_8 and
    ||bias_32|| <= ||mean_32 - g|| + r_32: the first must be at least twice the second.

    (On bigger nets this needs far more samples: the bias sits mostly in the hidden layer, whose
    single-trial noise is larger by 1/gamma.  And it holds only once T >> (sigma_j / d_j)^2 for every
    hidden unit j, d_j the distance of z_j to a kink of the clip and sigma_j^2 = sum_i W_ji^2 x_i (1-x_i):
    before that the gate of a unit near a kink flips with probability ~Phi(-d_j sqrt(T) / sigma_j) and
    its bias plateaus; see the module docstring.)"""
    params, x, y = _tiny()
    _, exact = S.ann_loss_and_grad(params, x, y)
    g = np.concatenate([exact[k].reshape(-1) for k in exact])
    N = 20000
    out = []
    for T in (8, 32):
        per = S.sample_gradients(params, np.repeat(x, N, axis=0), np.repeat(y, N), S.Config(T=T, forward="spike"),
                                 rng=300 + T)
        flat = np.concatenate([per[k].reshape(N, -1) for k in exact], axis=1)
        out.append((float(np.linalg.norm(flat.mean(axis=0) - g)), _laurent_massart_radius(flat)))
    (d8, r8), (d32, r32) = out
    assert d8 - r8 >= 2 * (d32 + r32), out


# ---------------------------------------------------------------------------
# Training through refsnn.harness.train
# ---------------------------------------------------------------------------

def test_train_runs_for_ssnn_v1_v2_and_the_ann_twin():
    """`refsnn train ssnn_bp` machinery on 400 digits, 2 epochs: every variant learns far above chance
    (10 %)."""
    from refsnn.harness.train import train

    accs = {}
    for name, cfg in [("v1", {"T": 16}), ("v2", {"T": 16, "forward": "spike"}), ("ann", {"ann": True})]:
        m = train("ssnn_bp", "digits", seed=0, config=cfg, progress=False, log=None, epochs=2, limit_train=400,
                  limit_test=200)
        accs[name] = m["test_accuracy"]
    assert all(a > 0.5 for a in accs.values()), accs


def test_cli_train_and_quick_bench(tmp_path, capsys):
    """`refsnn train ssnn_bp` writes its metrics; the quick bench returns every counter's timing."""
    import json

    from refsnn.cli import main

    out = tmp_path / "run"
    assert main(["train", "ssnn_bp", "--epochs", "1", "--limit-train", "100", "--limit-test", "50", "--out", str(out),
                 "--no-progress", "--set", "T=8", "--set", "forward=spike"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["forward"] == "spike" and metrics["settings"]["batch_size"] == 1
    assert main(["train", "ssnn_bp", "--epochs", "1", "--limit-train", "50", "--limit-test", "20", "--out",
                 str(tmp_path / "ann"), "--no-progress", "--preset", "ann"]) == 0
    assert json.loads((tmp_path / "ann" / "metrics.json").read_text())["config"]["ann"] is True
    r = benchmarks.BENCHMARKS["ssnn_bp"](quick=True, accuracy=False, log=lambda *_: None)
    row = r["timing"]["digits"]["by_T"][16]
    for k in ("step events", "step matmul", "step loop", "count loop", "epoch s events"):
        assert row[k] > 0, k
    assert 0 < row["active fraction"] <= 1


def test_readable_counter_passes_the_statistical_check():
    """The readable twin of Eq. (U1) (counter="loop", plain NumPy) on its own: the update it counts is an
    unbiased estimate of the ANN gradient (the statistical check of the gradient-check set, first case)."""
    case = problems.gradcheck_cases("ssnn_bp", 0)[0]
    (_, rep), = gradcheck.run_cases(S, [replace(case, cfg=replace(case.cfg, counter="loop"))])
    assert rep.passed, f"readable tier (ssnn_bp, counter='loop'): {case.label}\n{rep}"
