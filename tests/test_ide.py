"""IDE (refsnn.ide): exact gradients, solvers, the spiking dynamics, convergence to the equilibrium, errors.

What each test proves is in its docstring.  Tolerances come from tests/tolerances.py.
"""
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
from tolerances import CONVERGED_REL, FORMULA_REL, GRAD_FD_REL, SOLVER_TWIN_REL, TINY, TWIN_REL, assert_close

from refsnn import ide
from refsnn.blocks import solvers
from refsnn.checking import gradcheck
from refsnn.harness import benchmarks, problems, recipes

CASES = problems.gradcheck_cases("ide", 0)


# ---------------------------------------------------------------------------
# An independent, deliberately naive statement of the model
# ---------------------------------------------------------------------------

def naive_f(params, a, xbar, cfg):
    """Eq. (FP) written from the paper's equation, with the spectral norm from numpy's SVD."""
    W = params["W"]
    if cfg.spectral_norm is not None:
        c = cfg.spectral_norm
        W = np.clip(float(params["g"]), -c, c) * W / np.linalg.svd(W, compute_uv=False)[0]
    h = np.clip((a @ W.T + xbar @ params["F"].T + params["b"]) / cfg.v_th, 0, 1)
    l = 2
    while f"F{l}" in params:
        h = np.clip((h @ params[f"F{l}"].T + params[f"b{l}"]) / cfg.v_th, 0, 1)
        l += 1
    return h


def naive_equilibrium(params, xbar, cfg, offset=0.0, a0=None):
    """Plain Picard iteration a <- f(a) + offset (a contraction) down to round-off.

    Iterates until successive iterates differ by <= FORMULA_REL, then 100 more times so
    that the error contracts to round-off level (iterates may then flicker by an ulp).
    """
    a = np.zeros((xbar.shape[0], params["Wo"].shape[1])) if a0 is None else a0.copy()
    for k in range(20000):
        a_new = naive_f(params, a, xbar, cfg) + offset
        done = np.max(np.abs(a_new - a)) <= FORMULA_REL
        a = a_new
        if done:
            for _ in range(100):
                a = naive_f(params, a, xbar, cfg) + offset
            return a
    raise AssertionError("Picard iteration did not settle")


def naive_loss(params, a, y):
    o = a @ params["Wo"].T + params["bo"]
    o = o - o.max(axis=1, keepdims=True)
    logp = o - np.log(np.exp(o).sum(axis=1, keepdims=True))
    return -float(np.mean(logp[np.arange(len(y)), y]))


def naive_simulate(params, x, cfg):
    """Eq. (N1)-(N4) with scalar loops over neurons: the official code's update order, nothing vectorised."""
    W = ide.feedback_weight(params, cfg)
    Fs = [params["F"]] + [params[f"F{l}"] for l in range(2, 10) if f"F{l}" in params]
    bs = [params["b"]] + [params[f"b{l}"] for l in range(2, 10) if f"b{l}" in params]
    N = len(Fs)
    B = x.shape[-2]
    out = np.zeros((B, Fs[-1].shape[0]))
    for bb in range(B):
        u = [np.zeros(F.shape[0]) for F in Fs]
        s = [np.zeros(F.shape[0]) for F in Fs]
        acc = np.zeros(Fs[-1].shape[0])
        for t in range(cfg.T):
            xt = x[bb] if x.ndim == 2 else x[t, bb]
            for l in range(N):
                for i in range(Fs[l].shape[0]):
                    if l == 0:
                        drive = np.dot(Fs[0][i], xt) + bs[0][i] + np.dot(W[i], s[N - 1])  # s^N of step t-1
                    else:
                        drive = np.dot(Fs[l][i], s[l - 1]) + bs[l][i]
                    v = cfg.leak * u[l][i] + drive
                    u[l][i] = v
                new = [1.0 if u[l][i] >= cfg.v_th else 0.0 for i in range(Fs[l].shape[0])]
                for i in range(Fs[l].shape[0]):
                    u[l][i] -= cfg.v_th * new[i]
                s[l] = np.array(new)
            acc = cfg.leak * acc + s[N - 1]
        out[bb] = acc / sum(cfg.leak ** k for k in range(cfg.T))
    return out


def fd_against(objective, params, grads, tol, eps=1e-6):
    num = gradcheck.numerical_gradient(objective, params, eps=eps)
    return gradcheck.compare(grads, num, tol=tol)


# ---------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_readable_tier_gradient_matches_fd_of_reference_objective(case):
    """The readable NumPy tier (backend="numpy": the step-by-step simulation and the NumPy adjoint solvers) on
    its own: its gradient equals central differences of reference_objective (<= GRAD_FD_REL), so that a wrong
    line in it fails a test that names it, not only the comparison with the kernels."""
    c = replace(case, cfg=replace(case.cfg, backend="numpy"), rng=case.rng)
    (_, rep), = gradcheck.run_cases(ide, [c])
    assert rep.passed, f"readable tier (ide, backend='numpy'): {case.label}\n{rep}"


@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def test_gradient_matches_fd_of_reference_objective(case):
    """loss_and_grad == central differences of reference_objective, every tensor, <= GRAD_FD_REL.

    Covers both linearisation points, every solver, IF and LIF, 1-3 layers,
    spectral norm off, exact and by power iteration, static and spike input,
    BatchNorm, dropout (the masks drawn from the case's rng, the same seed for
    both calls) and the official code's F400 setting (refsnn.harness.problems.gradcheck_cases).
    Kinks: the case was drawn with every z = pre/v_th at least 1e-3 from 0 and
    1 (asserted below; eps = 1e-6 moves z by ~1e-6); and `objective.regions`
    proves that all 4*(#entries) evaluations lay on the same linear piece of
    sigma for every unit, i.e. the finite differences are of one smooth function.
    """
    mask = ide.dropout_mask(case.params, case.x, case.cfg, case.rng) if case.cfg.dropout else None
    assert ide.kink_distance(case.params, case.x, case.cfg, dropout_mask=mask) > 1e3 * 1e-6
    loss, grads = ide.loss_and_grad(case.params, case.x, case.y, case.cfg, rng=case.rng)
    objective = ide.reference_objective(case.params, case.x, case.y, case.cfg, rng=case.rng)
    assert objective(case.params) == pytest.approx(loss, rel=TWIN_REL)
    rep = fd_against(objective, case.params, grads, GRAD_FD_REL)
    assert rep.passed, str(rep)
    assert {t.name for t in rep.tensors} == set(case.params)
    assert len(objective.regions) == 1, "an FD evaluation crossed a kink of sigma"
    # batch-statistics BN: b cancels and the running statistics are not used, exactly (both sides 0.0);
    # the power iteration's vectors are state held constant (torch's no_grad step): exactly 0 both sides
    exact_zero = {"b", "bn_mean", "bn_var"} if case.cfg.batchnorm and case.cfg.bn_mode == "batch" else set()
    exact_zero |= set(ide.state_keys(case.cfg)) - {"bn_mean", "bn_var"}
    for t in rep.tensors:
        if t.name in exact_zero:
            assert t.norm_numeric == 0.0 and t.norm_analytic == 0.0, t.name
        else:
            assert t.norm_numeric > 0, f"{t.name}: a zero gradient checks nothing"


@pytest.mark.parametrize("hidden,spectral", [((6,), None), ((6,), 1.0), ((6, 5), None), ((5, 6, 4), 1.0)])
def test_fixed_point_gradient_is_exact_gradient_of_L_of_a_star(hidden, spectral):
    """With linearize_at='fixed_point' and the dense solver, the gradient is dL(a*(theta))/dtheta.

    Independent of refsnn's own reference_objective: a* comes from the naive
    Picard iteration above and the loss from a separately written cross-entropy.
    <= GRAD_FD_REL for every tensor.  eps = 1e-5: Picard iterates flicker by an
    ulp, an FD noise of ~1e-16/eps, which at eps = 1e-6 (1e-10) is 1e-7 of the
    smallest gradient tensor here (|dL/dg| ~ 1e-3); the truncation error on a
    smooth piece, ~eps^2 times the third derivative, stays ~1e-10.
    """
    cfg = ide.Config(T=20, linearize_at="fixed_point", solver="dense", spectral_norm=spectral)
    params, x, y = problems.ide_problem(cfg, 3, hidden=hidden)
    loss, grads = ide.loss_and_grad(params, x, y, cfg)

    def objective(p):
        return naive_loss(p, naive_equilibrium(p, x, cfg), y)

    assert objective(params) == pytest.approx(loss, rel=TWIN_REL)
    rep = fd_against(objective, params, grads, GRAD_FD_REL, eps=1e-5)
    assert rep.passed, str(rep)


@pytest.mark.parametrize("leak,hidden", [(1.0, (6,)), (0.9, (6,)), (1.0, (6, 5))])
def test_default_gradient_is_exact_gradient_of_anchored_equilibrium(leak, hidden):
    """The default ('simulated') gradient is the exact derivative of L(a~(theta)), Eq. (AN).

    Built independently here: a0 from the scalar-loop simulation, r0 = a0 - f(a0)
    frozen, a~ from naive Picard iteration on a = f(a) + r0.  Also: at theta0,
    a~ = a0 and the loss is the spiking network's.  eps = 1e-5 as in the test above.
    """
    cfg = ide.Config(T=20, leak=leak)
    params, x, y = problems.ide_problem(cfg, 5, hidden=hidden)
    a0 = naive_simulate(params, x, cfg)
    r0 = a0 - naive_f(params, a0, x, cfg)
    loss, grads = ide.loss_and_grad(params, x, y, cfg)
    assert loss == pytest.approx(naive_loss(params, a0, y), rel=TWIN_REL)

    def objective(p):
        return naive_loss(p, naive_equilibrium(p, x, cfg, offset=r0, a0=a0), y)

    assert objective(params) == pytest.approx(loss, rel=TWIN_REL)
    rep = fd_against(objective, params, grads, GRAD_FD_REL, eps=1e-5)
    assert rep.passed, str(rep)


def test_gradient_of_simulated_and_fixed_point_differ_at_small_T():
    """The two linearisation points are different functions (so the tests above tell them apart).

    At T = 5 the IF rate is ~1/T away from a*, so the gradients differ by far
    more than the FD tolerance; the 'simulated' gradient fails FD of L(a*).
    """
    cfg = ide.Config(T=5)
    params, x, y = problems.ide_problem(cfg, 1)
    g_sim = ide.loss_and_grad(params, x, y, cfg)[1]
    cfg_fp = replace(cfg, linearize_at="fixed_point")
    obj_fp = ide.reference_objective(params, x, y, cfg_fp)
    rep = fd_against(obj_fp, params, g_sim, 1e-3)
    assert not rep.passed


def test_spectral_norm_bound_and_gain_gradient():
    """Eq. (SN): ||W||_2 = |clamp(g, -c, c)| exactly; outside [-c, c] the gain gets no gradient."""
    cfg = ide.Config(T=10, spectral_norm=0.7)
    params, x, y = problems.ide_problem(cfg, 2)
    for g in (0.3, -0.5, 2.0, -3.0):
        p = dict(params, g=np.array(g))
        assert np.linalg.norm(ide.feedback_weight(p, cfg), 2) == pytest.approx(min(abs(g), 0.7), rel=TWIN_REL)
    p = dict(params, g=np.array(2.0))
    grads = ide.loss_and_grad(p, x, y, cfg)[1]
    assert grads["g"].shape == () and grads["g"] == 0.0
    assert np.linalg.norm(grads["W"]) > 0


# ---------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------

def _problem_at_a(cfg, seed, hidden=(30,), n_in=12, batch=6):
    params, x, y = problems.ide_problem(cfg, seed, hidden=hidden, n_in=n_in, batch=batch, margin=0.0)
    a = ide.simulate(params, x, cfg)
    g = np.random.default_rng(seed).normal(size=a.shape)
    return params, x, a, g


@pytest.mark.parametrize("solver,backend", [("fixed_point", "numba"), ("broyden", "numba"), ("broyden", "numpy")])
@pytest.mark.parametrize("hidden", [(30,), (20, 15)])
def test_iterative_solvers_match_dense_to_their_tolerance(solver, backend, hidden):
    """Broyden and beta <- J^T beta + g agree with numpy.linalg.solve within the bound their tolerance implies.

    Each stops when ||r_b|| <= tol ||g_b||, r = g - (I - J^T) beta, per sample.
    Then beta - beta* = -(I - J^T)^{-1} r and ||(I - J^T)^{-1}|| <= 1/(1 - ||J_b||_2),
    so ||beta_b - beta*_b|| <= tol ||g_b|| / (1 - ||J_b||_2)  (||J_b||_2 < 1 asserted).
    """
    cfg = ide.Config(T=15, solver=solver, tol=1e-9, max_iter=200, backend=backend)
    params, x, a, g = _problem_at_a(cfg, 4, hidden=hidden)
    beta, info = ide.adjoint(params, a, x, g, cfg)
    exact, dinfo = ide.adjoint(params, a, x, g, replace(cfg, solver="dense"))
    assert info.converged and dinfo.converged
    assert info.residuals[-1] <= cfg.tol and info.iterations >= 2
    J = ide.jacobian(params, a, x, cfg)
    Jn = np.linalg.norm(J, 2, axis=(1, 2))
    assert np.all(Jn < 1)
    err = np.linalg.norm(beta - exact, axis=1)
    bound = cfg.tol * np.linalg.norm(g, axis=1) / (1 - Jn)
    assert np.all(err <= bound * (1 + 1e-6) + FORMULA_REL * np.linalg.norm(exact, axis=1)), (err, bound)
    # and the dense solution does solve (I - J^T) beta = g
    resid = exact - np.einsum("bji,bj->bi", J, exact) - g
    assert np.max(np.abs(resid)) < 1e-13


@pytest.mark.parametrize("compiled", [True, False])
def test_broyden_kernel_twin_agree(compiled, monkeypatch):
    """The numba Broyden iteration (``_broyden_kernel``, compiled and as plain Python) and the NumPy loop take
    the same steps: the same number of iterations and the same residual trace, to a tolerance set by their
    only difference, the order of the sums in each dot product.  The trace is ||R_b|| / ||g_b||; R is
    computed from sums of ~20-30 terms of unit size, so each side carries an absolute round-off of
    ~1e-15 in it (1e-13 allows for that and its growth through the updates), and a relative one growing
    from 1e-16 (1e-8 leaves many orders of magnitude), while a wrong update changes the trace at order one.
    Several layers, 12 samples."""
    if not compiled:
        monkeypatch.setattr(solvers, "_broyden_kernel", solvers._broyden_kernel.py_func)
    cfg = ide.Config(T=15, solver="broyden", tol=1e-11, max_iter=40)
    params, x, a, g = _problem_at_a(cfg, 8, hidden=(20, 15), batch=12)
    beta, info = ide.adjoint(params, a, x, g, cfg)
    beta_np, info_np = ide.adjoint(params, a, x, g, replace(cfg, backend="numpy"))
    assert info.converged and info_np.converged and info.iterations >= 5
    assert info.iterations == info_np.iterations
    # residuals are relative to the first (1.0): the history's scale is 1, its round-off TWIN_REL of that
    assert np.allclose(info.residuals, info_np.residuals, rtol=SOLVER_TWIN_REL, atol=TWIN_REL), (info.residuals, info_np.residuals)
    scale = np.linalg.norm(beta_np)
    assert np.linalg.norm(beta - beta_np) <= SOLVER_TWIN_REL * scale


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("solver", ["fixed_point", "code_iter"])
def test_simple_iteration_kernels_take_the_numpy_steps(solver, compiled, monkeypatch):
    """``fixed_point`` and ``code_iter`` with their step kernels (``fast``, the numba backend) and as the
    NumPy loop (the numpy backend): each update is the same additions in the same order, so the iterates
    are identical bit for bit; only the residual norms (diagnostics) sum in another order, so the traces
    agree to round-off of sums of ~100 unit-sized squares (TWIN_REL) -- a wrong update differs at order one.
    Run to a fixed count (no early stop) and, for fixed_point, also stopping at a tolerance."""
    if not compiled:
        monkeypatch.setattr(solvers, "_fixed_point_kernel", solvers._fixed_point_kernel.py_func)
        monkeypatch.setattr(solvers, "_halved_kernel", solvers._halved_kernel.py_func)
    for early_stop in ([False, True] if solver == "fixed_point" else [False]):
        cfg = ide.Config(T=15, solver=solver, tol=1e-7, max_iter=25, early_stop=early_stop)
        params, x, a, g = _problem_at_a(cfg, 9, hidden=(20, 15), batch=7)
        beta, info = ide.adjoint(params, a, x, g, cfg)
        beta_np, info_np = ide.adjoint(params, a, x, g, replace(cfg, backend="numpy"))
        assert info.iterations == info_np.iterations and info.iterations >= 5
        assert np.array_equal(beta, beta_np)
        assert np.allclose(info.residuals, info_np.residuals, rtol=TWIN_REL, atol=TINY)
        assert not np.array_equal(beta, g)                   # it did move


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("hidden,dropout", [((30,), 0.0), ((30,), 0.3), ((20, 15), 0.3)])
def test_fused_adjoint_product_is_the_readable_one(hidden, dropout, compiled, monkeypatch):
    """``_JT_fast`` (the fast tier's J^T beta: each link ``mask * (d * sigma' / v_th)`` in one kernel pass) and
    ``_JT`` (``_deltas`` then ``_masked``, NumPy) do the same operations in the same order: identical bits, with
    and without dropout masks, one and two layers, compiled and as plain Python."""
    if not compiled:
        monkeypatch.setattr(ide, "_masked_delta_kernel", ide._masked_delta_kernel.py_func)
    cfg = ide.Config(T=15, dropout=dropout)
    params, x, a, g = _problem_at_a(cfg, 12, hidden=hidden, batch=9)
    mask = ide.dropout_mask(params, x, cfg, 4) if dropout else None
    net, xx, cfg = ide._prepare(params, x, cfg, dropout_mask=mask)
    lin = ide._apply_f(net, a, ide.input_average(xx, cfg), cfg.v_th)
    assert (net.drop is not None) == bool(dropout)
    if dropout:
        assert any(np.any(net.drop[k] == 0) for k in net.drop)          # the masks do drop units
    fast = ide._JT_fast(net, lin, g, cfg.v_th)
    assert np.array_equal(fast, ide._JT(net, lin, g, cfg.v_th))
    assert np.linalg.norm(fast) > 0


@pytest.mark.parametrize("spikes", [False, True])
def test_kernels_give_the_same_bits_on_one_thread_and_shared_over_threads(spikes, monkeypatch):
    """The simulation and Broyden kernels share the batch among Python threads (``over_batch``) when the work
    is large (here the limit is lowered so that this small problem is shared): every sample is computed by the
    same code on one thread or another, so the rates, the adjoint, the loss and every gradient are identical
    bit for bit (exact equality by construction), with dropout masks, two layers, static and spike input."""
    from refsnn.blocks import _jit

    if not _jit.JIT_ENABLED:
        pytest.skip("numba is off: the kernels run as Python on one thread")
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread on this machine")
    cfg = ide.Config(T=8, solver="broyden", tol=1e-10, max_iter=30, dropout=0.2)
    params, x, y = problems.ide_problem(cfg, 3, hidden=(20, 15), n_in=12, batch=9, spikes=spikes, margin=0.0,
                                        dropout_rng=2)
    monkeypatch.setattr(_jit, "OVER_BATCH_MIN", 0)
    shares = []
    real_submit = _jit._executor().submit
    monkeypatch.setattr(_jit._executor(), "submit", lambda *a: shares.append(a[0]) or real_submit(*a))
    outs = []
    for n in (1, 2):
        info = {}
        with _jit.limit_threads(1):         # BLAS on one thread in both runs: only the kernels' sharing differs
            numba.set_num_threads(n)         # (limit_threads restores numba's count on exit)
            loss, grads = ide.loss_and_grad(params, x, y, cfg, rng=2, info=info)
        outs.append((loss, grads, info["a"], info["beta"], info["adjoint"].iterations))
    handed = {getattr(f, "py_func", f).__name__ for f in shares}
    assert {"_simulate_kernel", "_broyden_kernel"} <= handed          # both were shared on two threads
    (l1, g1, a1, b1, k1), (l2, g2, a2, b2, k2) = outs
    assert k1 == k2 >= 3 and l1 == l2
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)
    for k in g1:
        assert np.array_equal(g1[k], g2[k]), k


def test_static_input_current_is_computed_once_and_reused_bit_for_bit(monkeypatch):
    """At a static input (xbar = x) the fast tier's simulation and f at the linearisation point need the same
    ``F x + b``: it is computed once (one call of the layer-1 current instead of two) and the gradient is
    identical, bit for bit, to the one computed with the product made twice."""
    from refsnn.blocks import _jit

    if not _jit.JIT_ENABLED:
        pytest.skip("numba is off: the readable tier simulates, and it computes the current in its own loop")
    cfg = replace(ide.PRESETS["code"], backend="numba")
    rng = np.random.default_rng(3)
    params = ide.init_params([20, 16, 4], cfg, rng)
    x = ide.encode(rng.random((6, 20)), cfg)
    y = rng.integers(0, 4, 6)
    mask = ide.dropout_mask(params, x, cfg, 1)
    assert x.ndim == 2
    calls = []
    real_current = ide._Net.current
    monkeypatch.setattr(ide._Net, "current", lambda self, l, h: calls.append(l) or real_current(self, l, h))
    loss, grads = ide.loss_and_grad(params, x, y, cfg, dropout_mask=mask)
    assert calls.count(1) == 1
    real_sim = ide._simulate_fast
    monkeypatch.setattr(ide, "_simulate_fast", lambda net, x, cfg, keep=None: real_sim(net, x, cfg))   # no reuse
    calls.clear()
    loss2, grads2 = ide.loss_and_grad(params, x, y, cfg, dropout_mask=mask)
    assert calls.count(1) == 2
    assert loss == loss2 and all(np.array_equal(grads[k], grads2[k]) for k in grads)


def test_solver_trace_and_iterations_are_recorded():
    """The diagnostics record: a decreasing-to-tolerance residual trace, iteration counts, a readable summary."""
    cfg = ide.Config(T=15, solver="fixed_point", tol=1e-12, max_iter=500)
    params, x, a, g = _problem_at_a(cfg, 6)
    _, info = ide.adjoint(params, a, x, g, cfg)
    assert len(info.residuals) == info.iterations
    assert info.residuals[-1] <= 1e-12 < info.residuals[0]
    # linear convergence: each step shrinks the residual by at most ||J|| < 1
    J = ide.jacobian(params, a, x, cfg)
    assert np.all(np.diff(np.log(info.residuals)) < 0)
    assert "converged after" in info.summary()
    _, einfo = ide.solve_equilibrium(params, x, cfg)
    assert einfo.converged and einfo.residual <= cfg.eq_tol and einfo.extra["newton_steps"] >= 1
    assert np.max(np.abs(np.linalg.norm(J, 2, axis=(1, 2)))) < 1


def test_iterations_are_the_stated_updates():
    """'fixed_point' is exactly beta_k = sum_{i<=k} (J^T)^i g (beta <- J^T beta + g from beta = g), and
    'code_iter' exactly beta <- (J^T beta + g)/2 from beta = g: three steps of each, against explicit J."""
    cfg = ide.Config(T=15, tol=TINY, max_iter=3)            # a tolerance nothing reaches: exactly 3 steps
    params, x, a, g = _problem_at_a(cfg, 10)
    JT = np.transpose(ide.jacobian(params, a, x, cfg), (0, 2, 1))
    mv = lambda M, v: np.einsum("bij,bj->bi", M, v)  # noqa: E731
    with pytest.warns(ide.ConvergenceWarning):
        beta, info = ide.adjoint(params, a, x, g, replace(cfg, solver="fixed_point"))
    expect = g.copy()
    for _ in range(3):
        expect = mv(JT, expect) + g
    assert_close(beta, expect, FORMULA_REL)          # three products with J^T, in another order
    with pytest.warns(ide.ConvergenceWarning):
        beta, _ = ide.adjoint(params, a, x, g, replace(cfg, solver="code_iter"))
    expect = g.copy()
    for _ in range(3):
        expect = 0.5 * (mv(JT, expect) + g)
    assert_close(beta, expect, FORMULA_REL)          # three products with J^T, in another order


def test_sigma_prime_convention_at_the_kinks():
    """sigma'(z) = 1 on the closed interval 0 <= z <= 1 (PyTorch's clamp backward), 0 outside.

    Units with pre-activation exactly 0 and exactly v_th pass gradient; a unit
    at -1e-300 (just below 0) and one just above v_th do not.
    """
    cfg = ide.Config(T=5, spectral_norm=None)
    W = np.zeros((4, 4))
    p = {"F": np.zeros((4, 1)), "b": np.array([0.0, 2.0, -1e-300, 2.0 + 4e-16]), "W": W,   # data, not a tolerance
         "Wo": np.zeros((2, 4)), "bo": np.zeros(2)}
    beta = np.ones((1, 4))
    grads = ide.vjp(p, np.zeros((1, 4)), np.zeros((1, 1)), beta, cfg)
    assert grads["b"].tolist() == [0.5, 0.5, 0.0, 0.0]


def test_code_iter_solver_converges_to_the_wrong_system():
    """The official 'iter' solver (beta <- (J^T beta + g)/2) converges to (2I - J^T)^{-1} g, not the adjoint.

    Bias bound: with beta* = (I - J^T)^{-1} g, the code's answer differs by
    (2I - J^T)^{-1} beta*  (since (I-J^T)^{-1} - (2I-J^T)^{-1} = (2I-J^T)^{-1}(I-J^T)^{-1}),
    whose norm is >= ||beta*|| / ||2I - J^T|| >= ||beta*|| / (2 + ||J||).  So the
    relative error is at least 1/(2 + ||J_b||) per sample: the gradient is biased
    by a third or more, and FD of the reference objective rejects it.
    """
    cfg = ide.Config(T=15, solver="code_iter", tol=1e-13, max_iter=400)
    params, x, a, g = _problem_at_a(cfg, 7)
    beta_code, info = ide.adjoint(params, a, x, g, cfg)
    assert info.converged
    J = ide.jacobian(params, a, x, cfg)
    JT = np.transpose(J, (0, 2, 1))
    eye = np.eye(a.shape[1])
    target = np.linalg.solve(2 * eye - JT, g[..., None])[..., 0]
    exact = np.linalg.solve(eye - JT, g[..., None])[..., 0]
    assert np.max(np.abs(beta_code - target)) <= CONVERGED_REL * np.max(np.abs(g))
    rel = np.linalg.norm(beta_code - exact, axis=1) / np.linalg.norm(exact, axis=1)
    Jn = np.linalg.norm(J, 2, axis=(1, 2))
    assert np.all(rel >= 1 / (2 + Jn) - 1e-9)
    assert info.extra["adjoint_residual"] > 0.1
    case = CASES[0]
    c = replace(case.cfg, solver="code_iter", tol=1e-12, max_iter=200)
    rep = fd_against(ide.reference_objective(case.params, case.x, case.y, c), case.params,
                     ide.loss_and_grad(case.params, case.x, case.y, c)[1], GRAD_FD_REL)
    assert not rep.passed and rep["F"].rel_error > 0.05


def test_equilibrium_is_exact_and_unique():
    """solve_equilibrium returns a* with max|f(a*) - a*| at round-off, the same from any start (contraction)."""
    cfg = ide.Config(T=10)
    params, x, _ = problems.ide_problem(cfg, 8, hidden=(25,), n_in=10, batch=5, margin=0.0)
    a1, info = ide.solve_equilibrium(params, x, cfg)
    a2, _ = ide.solve_equilibrium(params, x, cfg, a0=np.ones_like(a1))
    # f(a) sums ~35 products of order 1 (25 feedback + 10 input terms): its round-off is ~35 EPS, below
    # FORMULA_REL; two solutions at that residual differ by at most residual / (1 - ||J||) < 10 residuals.
    assert info.residual <= FORMULA_REL
    assert np.max(np.abs(ide.fixed_point_map(params, a1, x, cfg) - a1)) <= FORMULA_REL
    assert np.max(np.abs(a1 - a2)) <= 20 * FORMULA_REL
    assert np.max(np.abs(a1 - naive_equilibrium(params, x, cfg))) <= 20 * FORMULA_REL


# ---------------------------------------------------------------------------
# Non-convergence and bad input
# ---------------------------------------------------------------------------

def _expansive_problem():
    cfg = ide.Config(T=10, spectral_norm=None, solver="fixed_point", max_iter=40)
    params, x, y = problems.ide_problem(cfg, 9, hidden=(8,), margin=0.0)
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    params["W"] = 3.0 * cfg.v_th * Q                  # ||W|| / v_th = 3: not a contraction
    params["b"] = params["b"] * 0 + 0.5 * cfg.v_th    # keep units in the linear region of sigma
    params["F"] = params["F"] * 0.01
    return params, x, y, cfg


def test_nonconvergence_warns_with_diagnostics():
    """||W|| = 3 v_th: the fixed-point adjoint iteration diverges -> ConvergenceWarning naming the bound; info says so."""
    params, x, y, cfg = _expansive_problem()
    assert ide.contraction_bound(params, cfg) > 1
    with pytest.warns(ide.ConvergenceWarning, match=r"did not converge.*contraction bound .* >= 1"):
        info = {}
        ide.loss_and_grad(params, x, y, cfg, info=info)
    assert not info["adjoint"].converged and info["adjoint"].iterations > cfg.max_iter - 1
    with pytest.warns(ide.ConvergenceWarning, match="equilibrium"):
        ide.solve_equilibrium(params, x, replace(cfg, eq_max_iter=30))
    with pytest.warns(ide.ConvergenceWarning, match="broyden"):
        ide.loss_and_grad(params, x, y, replace(cfg, solver="broyden", max_iter=2))


def test_no_warning_when_converged():
    case = CASES[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ide.loss_and_grad(case.params, case.x, case.y, case.cfg)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"T": 0}, ValueError, "T"),
    ({"T": 2.5}, TypeError, "T"),
    ({"leak": 0.0}, ValueError, "leak"),
    ({"leak": 1.5}, ValueError, "leak"),
    ({"v_th": -1}, ValueError, "v_th"),
    ({"solver": "newton"}, ValueError, "solver"),
    ({"linearize_at": "a_star"}, ValueError, "linearize_at"),
    ({"spectral_norm": 0.0}, ValueError, "spectral_norm"),
    ({"tol": 0}, ValueError, "tol"),
    ({"normalize": (0.1,)}, ValueError, "normalize"),
    ({"normalize": (0.1, -1.0)}, ValueError, "normalize"),
    ({"encoding": "poisson"}, ValueError, "encoding"),
    ({"dropout": 1.0}, ValueError, "dropout"),
    ({"dropout": -0.1}, ValueError, "dropout"),
    ({"dropout": "0.2"}, TypeError, "dropout"),
    ({"sn_method": "svd"}, ValueError, "sn_method"),
    ({"sn_method": "power", "spectral_norm": None}, ValueError, "sn_method.*spectral_norm"),
    ({"early_stop": "no"}, TypeError, "early_stop"),
    ({"early_stop": False}, ValueError, "early_stop.*'broyden'"),
    ({"early_stop": False, "solver": "dense"}, ValueError, "early_stop"),
])
def test_config_rejects_bad_values(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        ide.Config(**kwargs)


def test_bad_inputs_get_clear_errors():
    """Every argument is checked up front, and the message names it, the expected shape and what was given."""
    case = CASES[0]
    p, x, y, cfg = case.params, case.x, case.y, case.cfg
    with pytest.raises(ValueError, match=r"x: expected static input of shape \(batch, 5\)"):
        ide.loss_and_grad(p, x[:, :4], y, cfg)
    with pytest.raises(ValueError, match=r"x: spike input has 3 time steps but Config.T = 20"):
        ide.loss_and_grad(p, np.zeros((3,) + x.shape), y, cfg)
    with pytest.raises(ValueError, match="x: expected"):
        ide.simulate(p, np.zeros(5), cfg)
    with pytest.raises(ValueError, match="x: contains 1 NaN"):
        ide.loss_and_grad(p, np.where(np.arange(x.size).reshape(x.shape) == 0, np.nan, x), y, cfg)
    with pytest.raises(ValueError, match=r"y: expected 4 labels"):
        ide.loss_and_grad(p, x, y[:3], cfg)
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 2\]"):
        ide.loss_and_grad(p, x, y + 5, cfg)
    with pytest.raises(ValueError, match=r"missing \['g'\].*spectral_norm is set"):
        ide.loss_and_grad({k: v for k, v in p.items() if k != "g"}, x, y, cfg)
    with pytest.raises(ValueError, match="spectral_norm is None"):
        ide.loss_and_grad(p, x, y, replace(cfg, spectral_norm=None))
    with pytest.raises(ValueError, match=r"params\['W'\]: the feedback from layer 1 to layer 1 must have shape \(6, 6\)"):
        ide.loss_and_grad(dict(p, W=np.zeros((6, 5))), x, y, cfg)
    with pytest.raises(ValueError, match=r"params\['Wo'\]"):
        ide.loss_and_grad(dict(p, Wo=np.zeros((3, 4))), x, y, cfg)
    with pytest.raises(ValueError, match=r"params\['g'\]: expected a scalar"):
        ide.loss_and_grad(dict(p, g=np.ones(2)), x, y, cfg)
    with pytest.raises(TypeError, match=r"params\['F'\]: expected a float array"):
        ide.loss_and_grad(dict(p, F=np.ones((6, 5), dtype=int)), x, y, cfg)
    with pytest.raises(TypeError, match="cfg: expected refsnn.ide.Config"):
        ide.loss_and_grad(p, x, y, {"T": 5})
    with pytest.raises(TypeError, match="params: expected a dict"):
        ide.simulate([1, 2], x, cfg)
    with pytest.raises(ValueError, match=r"a: expected the last layer's rates, shape \(4, 6\)"):
        ide.adjoint(p, np.zeros((4, 5)), x, np.zeros((4, 5)), cfg)
    with pytest.raises(ValueError, match=r"sizes: need \[n_in, n_hidden, ..., n_classes\]"):
        ide.init_params([4, 3], cfg, 0)
    with pytest.raises(ValueError, match="rng"):
        ide.init_params([4, 5, 3], cfg, None)
    with pytest.raises(ValueError, match=r"features: values must lie in \[0.0, 1.0\]"):
        ide.encode(np.full((2, 3), 2.0), cfg)


# ---------------------------------------------------------------------------
# The spiking dynamics: hand-checked traces, kernel == twin, exact identities
# ---------------------------------------------------------------------------

def _one_layer(F, b, W, v_th=2.0):
    n = len(b)
    return {"F": np.asarray(F, float), "b": np.asarray(b, float), "W": np.asarray(W, float),
            "Wo": np.zeros((2, n)), "bo": np.zeros(2)}


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_neuron_rule_by_hand(backend):
    """Spike trains computed by hand from Eq. (N1)-(N4).

    IF, I = 1.5, v_th = 2: v = 1.5, 3.0 (spike, u = 1), 2.5 (spike, u = .5),
    2.0 (spike: '>=', u = 0), 1.5 -> 0,1,1,1,0, a = 3/5 (reset by subtraction).
    LIF lam = .5, leak after the reset: v = 1.5, 2.25 (spike, u = .25), 1.625,
    2.3125 (spike, u = .3125), 1.65625 -> 0,1,0,1,0; a = (8 + 2)/31.
    Feedback delay: neuron 2 gets only W_21 = 2 from neuron 1 (I_1 = 2 fires every
    step): no feedback at t = 1, so it fires at t = 2..5, a_2 = 4/5.
    """
    cfg = ide.Config(T=5, spectral_norm=None, backend=backend)
    p = _one_layer([[1.5]], [0.0], [[0.0]])
    # Exact equality by construction: every potential here (1.5, 0.25, ...) and the rate's weights
    # (powers of 1/2) are exact binary fractions, so both sides are the same correctly rounded quotient.
    assert ide.simulate(p, np.ones((1, 1)), cfg)[0, 0] == 3 / 5
    a = ide.simulate(p, np.ones((1, 1)), replace(cfg, leak=0.5))[0, 0]
    assert a == (2 ** 3 + 2 ** 1) / 31
    p = _one_layer([[2.0], [0.0]], [0.0, 0.0], [[0.0, 0.0], [2.0, 0.0]])
    assert ide.simulate(p, np.ones((1, 1)), cfg)[0].tolist() == [1.0, 0.8]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_feedforward_chain_has_no_delay(backend):
    """Layer 2 sees layer 1's spikes of the same step; the feedback W is delayed by one step.

    Layer 1 (I = 2) fires at every step; layer 2 (F2 = 2) therefore fires at
    every step from t = 1, a^2 = 1.  A third neuron in layer 1 fed only back
    from layer 2 (W = 2) starts at t = 2; a fourth layer-2 neuron copies it:
    rate 4/5.
    """
    cfg = ide.Config(T=5, spectral_norm=None, backend=backend)
    p = {"F": np.array([[2.0], [0.0]]), "b": np.zeros(2),
         "F2": np.array([[2.0, 0.0], [0.0, 2.0]]), "b2": np.zeros(2),
         "W": np.array([[0.0, 0.0], [2.0, 0.0]]), "Wo": np.zeros((2, 2)), "bo": np.zeros(2)}
    assert ide.simulate(p, np.ones((1, 1)), cfg)[0].tolist() == [1.0, 0.8]


TWIN_SETUPS = [
    (1.0, (7,), False), (0.9, (7,), False), (1.0, (6, 5), False), (0.8, (5, 6, 4), False),
    (1.0, (7,), True), (0.9, (6, 5), True),
]


@pytest.mark.parametrize("leak,hidden,spikes", TWIN_SETUPS)
def test_kernel_twin_and_naive_simulation_agree(leak, hidden, spikes):
    """Numba kernel (compiled, and as plain Python via .py_func), NumPy twin and the scalar-loop
    simulation give the same a[T] (same spikes: exactly) and u (to round-off).  Small sizes so the
    pure-Python forms stay fast, also under NUMBA_DISABLE_JIT=1."""
    cfg = ide.Config(T=12, leak=leak)
    rng = np.random.default_rng(11)
    params = ide.init_params([5, *hidden, 3], cfg, rng)
    params["b"] = params["b"] + 1.2
    for l in range(2, len(hidden) + 1):
        params[f"F{l}"] = params[f"F{l}"] * 1.5
        params[f"b{l}"] = params[f"b{l}"] + 1.0
    params["g"] = np.array(0.9)
    x = (rng.random((12, 4, 5)) < 0.5).astype(float) if spikes else rng.uniform(0, 1, (4, 5))
    twin = ide.simulate_numpy(params, x, cfg)
    fast = ide.simulate(params, x, cfg, return_state=True)
    assert 0.05 < twin["a"].mean() < 0.95, "the test needs spikes"
    assert np.array_equal(twin["a"], fast["a"])      # rates are spike counts over the same norm: equal spikes
                                                     # (no potential within round-off of v_th) give equal rates
    for u1, u2 in zip(twin["u"], fast["u"]):
        assert np.max(np.abs(u1 - u2)) <= TWIN_REL * max(1.0, np.max(np.abs(u1)))
    assert_close(naive_simulate(params, x, cfg), twin["a"], FORMULA_REL, scale=1.0)   # rates in [0, 1]
    # the uncompiled kernel (whatever NUMBA_DISABLE_JIT says)
    orig = ide._simulate_kernel
    try:
        ide._simulate_kernel = orig.py_func
        slow = ide.simulate(params, x, cfg, return_state=True)
    finally:
        ide._simulate_kernel = orig
    assert np.array_equal(slow["a"], twin["a"])


@pytest.mark.parametrize("leak", [1.0, 0.9])
@pytest.mark.parametrize("spikes", [False, True])
def test_summed_dynamics_identity(leak, spikes):
    """Eq. (ID) holds to round-off, layer by layer (it is Eq. (N1)-(N4) summed with weights lam^(T-t)).

    Layer 1:  v_th a^1 = W (a^N - s^N_T/Lam)/lam + F xbar + b - u^1_T/Lam
    Layer l:  v_th a^l = F^l a^{l-1} + b^l - u^l_T/Lam          (no delay)
    A wrong delay, reset or leak placement breaks it.
    """
    cfg = ide.Config(T=17, leak=leak, backend="numpy")
    rng = np.random.default_rng(12)
    params = ide.init_params([5, 6, 4, 3], cfg, rng)
    params["b"] = params["b"] + 1.0
    params["b2"] = params["b2"] + 0.5
    x = (rng.random((17, 3, 5)) < 0.5).astype(float) if spikes else rng.uniform(0, 1, (3, 5))
    st = ide.simulate_numpy(params, x, cfg)
    Lam = sum(leak ** k for k in range(cfg.T))
    W = ide.feedback_weight(params, cfg)
    r1, r2 = st["rates"]
    xbar = ide.input_average(x, cfg)
    lhs1 = cfg.v_th * r1
    rhs1 = (r2 - st["s"][1] / Lam) @ W.T / leak + xbar @ params["F"].T + params["b"] - st["u"][0] / Lam
    lhs2 = cfg.v_th * r2
    rhs2 = r1 @ params["F2"].T + params["b2"] - st["u"][1] / Lam
    assert np.max(np.abs(lhs1 - rhs1)) < 1e-12
    assert np.max(np.abs(lhs2 - rhs2)) < 1e-12
    assert 0.05 < r1.mean() < 0.95 and 0.05 < r2.mean() < 0.95


# ---------------------------------------------------------------------------
# Convergence of the spiking network to the equilibrium
# ---------------------------------------------------------------------------

def _convergence_problem(leak):
    cfg = ide.Config(T=10, leak=leak, backend="numpy")   # T up to 3000: the twin, fast also without the JIT
    params = ide.init_params([20, 40, 10], cfg, 1)
    params["g"] = np.array(1.0)                     # ||W|| = 1, ||J|| <= 1/v_th = 0.5
    params["b"] = params["b"] + 0.5
    x = np.random.default_rng(2).uniform(0, 1, (16, 20))
    return params, x, cfg


def _rate_error(params, x, cfg, Ts, a_star):
    return np.array([np.sqrt(np.mean(np.sum((ide.simulate(params, x, replace(cfg, T=T)) - a_star) ** 2, axis=1)))
                     for T in Ts])


def test_if_rate_converges_like_one_over_T():
    """IF: ||a[T] - a*|| = O(1/T), with the slope fitted.

    From Eq. (ID) (one layer, IF): a = z - e with z = (W a + I)/v_th and
    e = (W s_T + u_T)/(v_th T); on each piece of the clamp |sigma(z_i) - a_i| <= |e_i|
    (checked exactly below, at every T), and ||a - a*|| <= ||a - f(a)||/(1 - ||J||).
    The quantisation of a to multiples of 1/T keeps the error from falling
    faster, so the log-log slope over T = 10..3000 must be -1 (accept -1.2..-0.8,
    16 samples x 40 neurons averaged) and T * error must stay within a factor 4.
    """
    params, x, cfg = _convergence_problem(1.0)
    a_star, _ = ide.solve_equilibrium(params, x, cfg)
    assert 0.5 < np.mean((a_star > 0) & (a_star < 1)), "most units in the linear region"
    Ts = np.array([10, 30, 100, 300, 1000, 3000])
    err = _rate_error(params, x, cfg, Ts, a_star)
    slope = np.polyfit(np.log(Ts), np.log(err), 1)[0]
    assert -1.2 <= slope <= -0.8, (slope, err)
    assert (Ts * err).max() / (Ts * err).min() < 4
    W = ide.feedback_weight(params, cfg)
    for T in (10, 100, 1000):
        c = replace(cfg, T=T)
        st = ide.simulate(params, x, c, return_state=True)
        e = (st["s"][0] @ W.T + st["u"][0]) / (cfg.v_th * T)
        resid = np.abs(ide.fixed_point_map(params, st["a"], x, c) - st["a"])
        assert np.all(resid <= np.abs(e) + 1e-12)


def test_lif_rate_is_biased_and_the_bias_does_not_vanish():
    """LIF: the weighted rate does not converge to the IF fixed point a* used by f.

    From Eq. (ID) the LIF residual keeps the terms (1/lam - 1) W a and
    u_T/Lam_T -> (1 - lam) u_T, neither of which decays with T.  Measured on
    the same problem as the IF test (||W|| = 1, v_th = 2, 40 units, 16 samples),
    RMS ||a[T] - a*|| at T = 30 / 300 / 3000:
    IF 0.116 / 0.0116 / 0.0012; LIF 0.99: 0.135 / 0.034 / 0.032; LIF 0.95: 0.217 / 0.170 / 0.170.
    Asserted: the LIF error stalls (T = 3000 vs 300: ratio > 0.7, whereas IF
    gives 0.1) at a level more than 10x the IF error, and grows as lam falls.
    """
    Ts = [300, 3000]
    errs = {}
    for leak in (1.0, 0.99, 0.95):
        params, x, cfg = _convergence_problem(leak)
        a_star, _ = ide.solve_equilibrium(params, x, cfg)
        errs[leak] = _rate_error(params, x, cfg, Ts, a_star)
    assert errs[1.0][1] / errs[1.0][0] < 0.2
    for leak in (0.99, 0.95):
        assert errs[leak][1] / errs[leak][0] > 0.7
        assert errs[leak][1] > 10 * errs[1.0][1]
    assert errs[0.95][1] > 2 * errs[0.99][1]


# ---------------------------------------------------------------------------
# Memory, training, CLI
# ---------------------------------------------------------------------------

def test_simulation_and_training_step_memory_do_not_grow_with_T():
    """No per-step history: the traced peak of one training step is the same at T = 5 and T = 200.

    tracemalloc counts bytes, not time, so this is deterministic.  Ratio <= 1.1
    (the issue's bound); STBP, which stores every step for BPTT, must grow.
    """
    m5 = benchmarks.training_step_memory("ide", 5, sizes=(20, 24, 10), batch=8)
    m200 = benchmarks.training_step_memory("ide", 200, sizes=(20, 24, 10), batch=8)
    assert m200 / m5 <= 1.1, (m5, m200)
    s5 = benchmarks.training_step_memory("stbp", 5, sizes=(20, 24, 10), batch=8)
    s200 = benchmarks.training_step_memory("stbp", 200, sizes=(20, 24, 10), batch=8)
    assert s200 / s5 > 10


def test_conv_training_step_memory_does_not_grow_with_T():
    """The same for a convolutional block (the 64C5s(F64C5) shape, small): the readable twin's convolutions
    allocate per step, but nothing is kept across steps.  (The dense solver, whose memory does not depend on
    how many iterations the linearisation point needs: Broyden keeps one rank-one update per iteration.)
    A conv STBP net's grows with T."""
    conv = {"arch": "8x8x1-4c3s2p1-fbc3p1-3", "backend": "numpy", "solver": "dense"}
    m5 = benchmarks.training_step_memory("ide", 5, batch=4, config=conv)
    m100 = benchmarks.training_step_memory("ide", 100, batch=4, config=conv)
    assert m100 / m5 <= 1.1, (m5, m100)
    s5 = benchmarks.training_step_memory("stbp", 5, batch=4, config={"arch": "8x8x1-4c3p1-ap2-3"})
    s100 = benchmarks.training_step_memory("stbp", 100, batch=4, config={"arch": "8x8x1-4c3p1-ap2-3"})
    assert s100 / s5 > 5, (s5, s100)


def test_train_on_digits_reaches_90_percent():
    """`refsnn train ide` (the digits recipe) learns: >= 90 % test accuracy after 4 epochs (seeded)."""
    from refsnn.blocks._jit import JIT_ENABLED
    from refsnn.harness.train import train

    # without the JIT the kernel runs as plain Python (slow); the twin computes the same rates
    m = train("ide", "digits", seed=0, progress=False, log=None, epochs=4,
              config=None if JIT_ENABLED else {"backend": "numpy"})
    assert m["test_accuracy"] >= 0.90, m["history"]


def test_cli_gradcheck_and_bench(capsys):
    from refsnn.cli import main

    assert main(["gradcheck", "ide"]) == 0
    out = capsys.readouterr().out
    assert f"{len(CASES)} passed, 0 failed" in out
    res = benchmarks.BENCHMARKS["ide"](quick=True)
    assert res["ide_ratio_T100_over_T5"] <= 1.1 < res["stbp_ratio_T100_over_T5"]
    assert set(res["step_seconds"]) == {"broyden", "fixed_point", "dense"}
    assert set(res["conv"]["T"]) == {5, 30} and all(r["step_seconds"] > 0 for r in res["conv"]["T"].values())


def test_predict_uses_the_simulated_rate():
    case = CASES[0]
    a = ide.simulate(case.params, case.x, case.cfg)
    logits = a @ case.params["Wo"].T + case.params["bo"]
    assert np.array_equal(ide.predict(case.params, case.x, case.cfg), np.argmax(logits, axis=1))


def test_batchnorm_running_statistics_and_predict():
    """Batch mode returns the next bn_mean/bn_var (PyTorch's rule: momentum 0.1, unbiased variance of the
    batch's F xbar + b) in info["state"] and leaves params alone; they are state for the optimizer; predict
    normalises with them (eval mode)."""
    cfg = ide.Config(T=10, batchnorm=True)
    params, x, y = problems.ide_problem(cfg, 13, batch=6)
    old = {k: v.copy() for k, v in params.items()}
    P = x @ params["F"].T + params["b"]
    info = {}
    ide.loss_and_grad(params, x, y, cfg, info=info)
    assert all(np.array_equal(params[k], old[k]) for k in params), "loss_and_grad must not modify params"
    # Two ways of computing a mean and a variance of 6 numbers: round-off ~ 6 ulp of the values.
    assert_close(info["state"]["bn_mean"], 0.9 * old["bn_mean"] + 0.1 * P.mean(0), FORMULA_REL,
                 scale=np.abs(P).max())
    assert_close(info["state"]["bn_var"], 0.9 * old["bn_var"] + 0.1 * P.var(0, ddof=1), FORMULA_REL,
                 scale=np.abs(P).max() ** 2)
    assert ide.state_keys(cfg) == ("bn_mean", "bn_var") and ide.state_keys(ide.Config()) == ()
    info_run = {}
    ide.loss_and_grad(params, x, y, replace(cfg, bn_mode="running"), info=info_run)
    assert info_run["state"] == {}, "eval mode does not move the running statistics"
    params.update(info["state"])
    run = replace(cfg, bn_mode="running")
    a = ide.simulate(params, x, run)
    assert not np.array_equal(a, ide.simulate(params, x, cfg)), "the two modes must differ on this problem"
    np.testing.assert_array_equal(ide.predict(params, x, cfg),
                                  np.argmax(a @ params["Wo"].T + params["bo"], axis=1))
    with pytest.raises(ValueError, match="Config.batchnorm is set"):
        ide.loss_and_grad({k: v for k, v in params.items() if not k.startswith("bn_")}, x, y, cfg)
    with pytest.raises(ValueError, match="bn_var.*>= 0"):
        ide.loss_and_grad(dict(params, bn_var=-params["bn_var"]), x, y, run)


def test_init_params_shapes_and_seed():
    cfg = ide.Config()
    p = ide.init_params([8, 6, 5, 4, 3], cfg, 0)
    assert list(p) == ["F", "b", "F2", "b2", "F3", "b3", "W", "g", "Wo", "bo"]
    assert p["F"].shape == (6, 8) and p["F2"].shape == (5, 6) and p["F3"].shape == (4, 5)
    assert p["W"].shape == (6, 4) and p["g"].shape == () and p["Wo"].shape == (3, 4)
    np.testing.assert_allclose(np.linalg.norm(p["F"], axis=1), 1.0)
    assert float(p["g"]) == pytest.approx(np.linalg.norm(p["W"], 2))
    q = ide.init_params([8, 6, 5, 4, 3], cfg, 0)
    assert all(np.array_equal(p[k], q[k]) for k in p)
    assert "g" not in ide.init_params([8, 6, 3], ide.Config(spectral_norm=None), 0)
    assert math.isclose(recipes.recipe("ide", "fashion-mnist")[0].T, 5)
    assert recipes.recipe("ide", "fashion-mnist")[0] == ide.PRESETS["paper"]
    assert replace(ide.PRESETS["paper"], leak=0.95) == ide.PRESETS["paper_lif"]


# ---------------------------------------------------------------------------
# The official code's training setting: dropout, power-iteration spectral norm, fixed iteration counts
# ---------------------------------------------------------------------------

def test_defaults_and_presets():
    """The new options default to the paper-correct behaviour; "paper" is unchanged; "code" is "paper" plus
    the code's dropout 0.2 and power-iteration spectral norm."""
    d = ide.Config()
    assert (d.dropout, d.sn_method, d.early_stop) == (0.0, "exact", True)
    assert ide.PRESETS["paper"] == ide.Config(T=5, v_th=2.0, leak=1.0, solver="broyden", max_iter=30, tol=1e-10,
                                              spectral_norm=1.0, batchnorm=True, normalize=(0.1307, 0.3081))
    code = ide.PRESETS["code"]
    assert replace(code, dropout=0.0, sn_method="exact") == ide.PRESETS["paper"]
    assert replace(code, leak=0.95) == ide.PRESETS["code_lif"]
    assert (code.dropout, code.sn_method, code.solver, code.max_iter, code.T, code.v_th) == \
        (0.2, "power", "broyden", 30, 5, 2.0)
    assert ide.state_keys(code) == ("bn_mean", "bn_var", "sn_u", "sn_v")
    assert ide.state_keys(ide.Config(sn_method="power")) == ("sn_u", "sn_v")


def _dropout_problem(cfg, seed=31, **kw):
    params, x, y = problems.ide_problem(cfg, seed, dropout_rng=seed, **kw)
    return params, x, y, ide.dropout_mask(params, x, cfg, seed)


def test_dropout_mask_is_drawn_reproducibly_and_reported():
    """The masks: keys F, W, F2, ...; shape (batch, n_l); entries 0 or 1/(1-p); drawn only from the rng (same
    seed, same masks), reported in info["dropout_mask"]; passing them back as dropout_mask= gives the same
    numbers bit for bit, and reference_objective sees the same masks."""
    cfg = ide.Config(T=10, dropout=0.2)
    params, x, y, mask = _dropout_problem(cfg, hidden=(6, 5))
    assert list(mask) == ide.dropout_keys(2) == ["F", "W", "F2"]
    assert mask["F"].shape == mask["W"].shape == (4, 6) and mask["F2"].shape == (4, 5)
    for m in mask.values():
        assert set(np.unique(m)) <= {0.0, 1.0 / (1.0 - 0.2)}
    again = ide.dropout_mask(params, x, cfg, np.random.default_rng(31))      # a Generator in the same state
    assert all(np.array_equal(mask[k], again[k]) for k in mask)
    info = {}
    loss, grads = ide.loss_and_grad(params, x, y, cfg, rng=31, info=info)
    assert all(np.array_equal(info["dropout_mask"][k], mask[k]) for k in mask)
    loss2, grads2 = ide.loss_and_grad(params, x, y, cfg, dropout_mask=info["dropout_mask"])
    assert loss2 == loss and all(np.array_equal(grads[k], grads2[k]) for k in grads)
    obj = ide.reference_objective(params, x, y, cfg, dropout_mask=mask)
    assert obj(params) == ide.reference_objective(params, x, y, cfg, rng=31)(params)
    assert obj(params) == pytest.approx(loss, rel=TWIN_REL)
    other = ide.loss_and_grad(params, x, y, cfg, rng=32)[0]
    assert other != loss, "another seed draws other masks"
    assert ide.loss_and_grad(params, x, y, replace(cfg, dropout=0.0))[0] != loss
    with pytest.raises(ValueError, match="rng: Config.dropout = 0.2"):
        ide.loss_and_grad(params, x, y, cfg)
    # The keep rate is 1 - p: 80000 Bernoulli draws, standard deviation sqrt(p (1 - p) / n) = 0.0014.
    big = ide.dropout_mask(ide.init_params([3, 400, 2], cfg, 0), np.zeros((100, 3)), cfg, 5)
    keep = np.mean(np.concatenate([m.ravel() for m in big.values()]) > 0)
    assert abs(keep - 0.8) < 6 * math.sqrt(0.2 * 0.8 / 80000)


def test_predict_never_drops():
    """Eval mode: predict's classes do not depend on Config.dropout (the code's VariationalHidDropout2d is the
    identity when not training), and it needs no rng."""
    cfg = ide.Config(T=10, dropout=0.5)
    params, x, y, mask = _dropout_problem(cfg)
    np.testing.assert_array_equal(ide.predict(params, x, cfg), ide.predict(params, x, replace(cfg, dropout=0.0)))
    a = ide.simulate(params, x, cfg)
    assert not np.array_equal(a, ide.simulate(params, x, cfg, dropout_mask=mask)), "the masks must matter here"


@pytest.mark.parametrize("hidden,spikes", [((6,), False), ((6,), True), ((6, 5), False), ((5, 6, 4), True)])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_dropout_is_the_network_with_scaled_rows(hidden, spikes, backend):
    """Eq. (DO) stated independently: sample b of the masked network is the unmasked network whose rows are
    scaled by that sample's masks, F -> diag(m_F) F, b -> m_F b, W -> diag(m_W) W, F^l -> diag(m_l) F^l,
    b^l -> m_l b^l (same mask at every step).  Its rates come from the scalar-loop simulation above and its
    f from naive_f; the masked simulation (kernel and twin) and fixed_point_map must agree."""
    cfg = ide.Config(T=12, leak=0.9, dropout=0.3, spectral_norm=None, backend=backend)
    params, x, y, mask = _dropout_problem(cfg, 33, hidden=hidden, spikes=spikes)
    a = ide.simulate(params, x, cfg, dropout_mask=mask)
    plain = replace(cfg, dropout=0.0)
    xbar = ide.input_average(x, cfg)
    fa = ide.fixed_point_map(params, a, x, cfg, dropout_mask=mask)
    for b in range(x.shape[-2]):
        pb = dict(params, F=mask["F"][b][:, None] * params["F"], b=mask["F"][b] * params["b"],
                  W=mask["W"][b][:, None] * params["W"])
        for l in range(2, len(hidden) + 1):
            pb[f"F{l}"] = mask[f"F{l}"][b][:, None] * params[f"F{l}"]
            pb[f"b{l}"] = mask[f"F{l}"][b] * params[f"b{l}"]
        xb = x[b:b + 1] if x.ndim == 2 else x[:, b:b + 1]
        # Same spikes (no potential within round-off of v_th): rates are the same sums of lam^(T-t) over the
        # same norm, up to the order of a few roundings.
        assert_close(a[b:b + 1], naive_simulate(pb, xb, plain), FORMULA_REL, scale=1.0)
        # f: a sum of ~10 products of order 1, rounded in another order.
        assert_close(fa[b:b + 1], naive_f(pb, a[b:b + 1], xbar[b:b + 1], plain), FORMULA_REL, scale=1.0)
    assert 0.05 < a.mean() < 0.95, "the test needs spikes"


@pytest.mark.parametrize("hidden,spikes", [((7,), False), ((7,), True), ((6, 5), True)])
def test_kernel_and_twin_agree_with_dropout(hidden, spikes):
    """With masks, the numba kernel (compiled and as plain Python) and the NumPy twin give the same spikes,
    so the same rates, and u to round-off (the kernel scales every term, the twin the sum)."""
    cfg = ide.Config(T=12, dropout=0.25)
    rng = np.random.default_rng(17)
    params = ide.init_params([5, *hidden, 3], cfg, rng)
    params["b"] = params["b"] + 1.2
    for l in range(2, len(hidden) + 1):
        params[f"F{l}"] = params[f"F{l}"] * 1.5
        params[f"b{l}"] = params[f"b{l}"] + 1.0
    params["g"] = np.array(0.9)
    x = (rng.random((12, 4, 5)) < 0.5).astype(float) if spikes else rng.uniform(0, 1, (4, 5))
    mask = ide.dropout_mask(params, x, cfg, 3)
    twin = ide.simulate_numpy(params, x, cfg, dropout_mask=mask)
    fast = ide.simulate(params, x, cfg, return_state=True, dropout_mask=mask)
    assert 0.05 < twin["a"].mean() < 0.95, "the test needs spikes"
    assert np.array_equal(twin["a"], fast["a"])
    for u1, u2 in zip(twin["u"], fast["u"]):
        assert np.max(np.abs(u1 - u2)) <= TWIN_REL * max(1.0, np.max(np.abs(u1)))
    orig = ide._simulate_kernel
    try:
        ide._simulate_kernel = orig.py_func
        slow = ide.simulate(params, x, cfg, return_state=True, dropout_mask=mask)
    finally:
        ide._simulate_kernel = orig
    assert np.array_equal(slow["a"], twin["a"])


def _power_step(W, u):
    """One step of torch.nn.utils.spectral_norm's power iteration, written from its definition."""
    v = W.T @ u
    v = v / max(np.linalg.norm(v), 1e-12)
    u = W @ v
    u = u / max(np.linalg.norm(u), 1e-12)
    return u, v, float(u @ W @ v)


def test_power_iteration_weight_and_state():
    """sn_method="power": W = clamp(g) W_raw / (u1^T W_raw v1) with (u1, v1) one power step from the stored
    sn_u (Eq. (PI)); loss_and_grad returns u1, v1 in info["state"] and leaves params alone; the stored sn_v
    is never read; the gradient is not the exact method's (the estimate is far from converged here); and
    writing the state back step after step converges sigma to sigma_max, ||W||_2 to |clamp(g)|."""
    cfg = ide.Config(T=10, sn_method="power")
    params, x, y = problems.ide_problem(cfg, 2)
    old = {k: v.copy() for k, v in params.items()}
    u1, v1, sigma = _power_step(params["W"], params["sn_u"])
    s = float(np.clip(params["g"], -1.0, 1.0))
    assert_close(ide.feedback_weight(params, cfg), s * params["W"] / sigma, FORMULA_REL)
    info = {}
    loss, grads = ide.loss_and_grad(params, x, y, cfg, info=info)
    assert all(np.array_equal(params[k], old[k]) for k in params), "loss_and_grad must not modify params"
    assert set(info["state"]) == {"sn_u", "sn_v"}
    assert_close(info["state"]["sn_u"], u1, FORMULA_REL)
    assert_close(info["state"]["sn_v"], v1, FORMULA_REL)
    assert np.all(grads["sn_u"] == 0) and np.all(grads["sn_v"] == 0)
    flipped = dict(params, sn_v=-params["sn_v"])
    assert ide.loss_and_grad(flipped, x, y, cfg)[0] == loss
    exact = replace(cfg, sn_method="exact")
    g_exact = ide.loss_and_grad({k: v for k, v in params.items() if not k.startswith("sn_")}, x, y, exact)[1]
    assert np.linalg.norm(grads["W"] - g_exact["W"]) > 1e-3 * np.linalg.norm(g_exact["W"])   # not a tolerance: they must differ
    sigma_max = np.linalg.norm(params["W"], 2)
    assert sigma < sigma_max * (1 - 1e-3), "the stored vectors are far from converged"
    p = dict(params)
    for _ in range(60):                    # the gap sigma_2/sigma_1 = 0.82 here: 60 steps shrink 0.82^120 ~ 1e-10
        info = {}
        ide.loss_and_grad(p, x, y, cfg, info=info)
        p.update(info["state"])
    # the error of sigma decays like (sigma_2/sigma_1)^(2k): at round-off after 60 steps
    assert abs(np.linalg.norm(ide.feedback_weight(p, cfg), 2) - s) <= TWIN_REL * s
    np.testing.assert_array_equal(ide.predict(params, x, cfg),
                                  np.argmax(ide.simulate(params, x, cfg) @ params["Wo"].T + params["bo"], axis=1))
    assert all(np.array_equal(params[k], old[k]) for k in params), "predict must not modify params"


def test_init_params_with_power_iteration():
    """init_params with sn_method="power": deterministic; every other tensor as with "exact" (the new draws
    come last); sn_u, sn_v unit vectors; g the 10-step estimate, at most sigma_max."""
    cfg = ide.Config(sn_method="power")
    p = ide.init_params([8, 6, 5, 3], cfg, 4)
    q = ide.init_params([8, 6, 5, 3], cfg, 4)
    assert list(p) == ["F", "b", "F2", "b2", "W", "g", "sn_u", "sn_v", "Wo", "bo"]
    assert all(np.array_equal(p[k], q[k]) for k in p)
    e = ide.init_params([8, 6, 5, 3], ide.Config(), 4)
    assert all(np.array_equal(p[k], e[k]) for k in e if k != "g")
    assert p["sn_u"].shape == (6,) and p["sn_v"].shape == (5,)
    assert np.linalg.norm(p["sn_u"]) == pytest.approx(1.0, rel=FORMULA_REL)
    assert np.linalg.norm(p["sn_v"]) == pytest.approx(1.0, rel=FORMULA_REL)
    assert 0.5 * float(e["g"]) < float(p["g"]) <= float(e["g"]) * (1 + FORMULA_REL)


@pytest.mark.parametrize("solver", ["code_iter", "fixed_point"])
def test_early_stop_false_runs_exactly_max_iter(solver):
    """early_stop=False: the solver runs all max_iter iterations even after reaching tol (the official 'iter'
    solver always runs threshold = 30), and the result is the 30-fold update; the default stops early."""
    cfg = ide.Config(T=15, solver=solver, tol=1e-3, max_iter=30)
    params, x, a, g = _problem_at_a(cfg, 10)
    _, early = ide.adjoint(params, a, x, g, cfg)
    assert early.converged and early.iterations < 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # the residual ends below tol: no warning
        beta, info = ide.adjoint(params, a, x, g, replace(cfg, early_stop=False))
    assert info.iterations == 31 and len(info.residuals) == 31     # 30 updates, 31 products with J^T
    JT = np.transpose(ide.jacobian(params, a, x, cfg), (0, 2, 1))
    expect = g.copy()
    for _ in range(30):
        step = np.einsum("bij,bj->bi", JT, expect) + g
        expect = 0.5 * step if solver == "code_iter" else step
    assert_close(beta, expect, TWIN_REL)       # 30 products with J^T in another order: sums of ~10^3 terms
    with pytest.warns(ide.ConvergenceWarning):
        ide.adjoint(params, a, x, g, replace(cfg, early_stop=False, tol=TINY))


def test_two_training_steps_carry_the_power_iteration_state(monkeypatch):
    """Through refsnn.harness.train (the code preset: BN, dropout, power iteration) two SGD steps (momentum, weight
    decay): step 2 starts from exactly the sn_u, sn_v, bn_mean, bn_var that step 1 returned in
    info["state"]; each returned sn_u, sn_v is one power step from that step's own sn_u and W (so the
    optimizer never touched them); W itself moves; the run ends with step 2's state."""
    from refsnn.harness.train import train

    calls = []
    original = ide.loss_and_grad

    def spy(params, x, y, cfg, rng=None, *, info=None, **kw):
        seen = {k: np.array(params[k], copy=True) for k in ("W", "sn_u", "sn_v", "bn_mean", "bn_var")}
        out = original(params, x, y, cfg, rng=rng, info=info, **kw)
        calls.append((seen, {k: np.array(v, copy=True) for k, v in info["state"].items()}))
        return out

    monkeypatch.setattr(ide, "loss_and_grad", spy)
    m = train("ide", "digits", seed=0, progress=False, log=None, epochs=1, batch_size=16, limit_train=32,
              limit_test=16, hidden=[12], optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4,
              config=replace(ide.PRESETS["code"], backend="numpy"))
    assert len(calls) == 2
    (seen1, state1), (seen2, state2) = calls
    for k in ("sn_u", "sn_v", "bn_mean", "bn_var"):
        assert np.array_equal(seen2[k], state1[k]), k           # written back as returned, untouched
        assert np.array_equal(m["params"][k], state2[k]), k
    for seen, state in calls:
        u, v, _ = _power_step(seen["W"], seen["sn_u"])
        assert_close(state["sn_u"], u, FORMULA_REL)
        assert_close(state["sn_v"], v, FORMULA_REL)
    assert not np.array_equal(seen1["W"], seen2["W"]), "the optimizer moves W"
    assert not np.array_equal(seen1["sn_u"], seen2["sn_u"]), "the state moves"


@pytest.mark.parametrize("case", [c for c in CASES if c.cfg.arch is not None], ids=lambda c: c.label)
def test_conv_fast_convolutions_and_readable_twin_agree(case):
    """A convolutional block: the im2col/BLAS convolutions (backend "numba") and the einsum twin give the same
    spikes (kink margin 1e-3 >> round-off) and the same gradient to round-off."""
    rng = case.rng
    fast = replace(case.cfg, backend="numba")
    twin = replace(case.cfg, backend="numpy")
    assert np.array_equal(ide.simulate(case.params, case.x, fast, return_state=True)["s"][0],
                          ide.simulate(case.params, case.x, twin, return_state=True)["s"][0])
    l1, g1 = ide.loss_and_grad(case.params, case.x, case.y, fast, rng=rng)
    l2, g2 = ide.loss_and_grad(case.params, case.x, case.y, twin, rng=rng)
    assert l1 == pytest.approx(l2, rel=TWIN_REL)
    for k in g1:
        assert_close(g1[k], g2[k], TWIN_REL, what=k)
