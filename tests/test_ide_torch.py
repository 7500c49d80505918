"""IDE against PyTorch autograd (float64): the VJP step, J, and the whole implicit gradient two ways.

The golds are in refsnn.checking.torch_golds (written from the equations, with torch's own spectral norm and batch
norm).  torch is a test-only dependency; these tests are skipped when it is not installed.
"""
import warnings
from dataclasses import replace

import numpy as np
import pytest
from tolerances import FORMULA_REL, TINY, TORCH_REL, TWIN_REL, assert_close

from refsnn import ide
from refsnn.harness import problems

torch = pytest.importorskip("torch", reason="the PyTorch cross-check needs torch (pip install torch, CPU build)")
golds = pytest.importorskip("refsnn.checking.torch_golds")
ide_port = pytest.importorskip("refsnn.checking.torch_ide_port")


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), TINY)


def _agree(name, mine, theirs, scale):
    """Relative error <= TORCH_REL; except for a gradient that is exactly 0 in refsnn (b under
    batch-statistics BatchNorm, where it cancels analytically): torch computes it as a difference of
    terms of the size of the other gradients, so it must be round-off, <= TWIN_REL * scale."""
    mine, theirs = np.asarray(mine, float), np.asarray(theirs, float)
    if not np.any(mine):
        assert np.linalg.norm(theirs) <= TWIN_REL * scale, (name, np.linalg.norm(theirs))
    else:
        assert _rel(mine, theirs) <= TORCH_REL, (name, _rel(mine, theirs))


CONFIGS = [
    ("IF one layer, spectral norm", ide.Config(T=20, solver="dense"), {}),
    ("LIF one layer, raw W", ide.Config(T=20, leak=0.9, solver="dense", spectral_norm=None), {}),
    ("IF two layers, spectral norm", ide.Config(T=20, solver="dense"), {"hidden": (6, 5)}),
    ("LIF three layers, fixed point", ide.Config(T=20, leak=0.95, solver="dense", linearize_at="fixed_point"),
     {"hidden": (5, 6, 4)}),
    ("IF spikes, spectral norm", ide.Config(T=20, solver="dense"), {"spikes": True}),
    ("BN batch statistics", ide.Config(T=20, solver="dense", batchnorm=True), {}),
    ("BN running statistics, LIF spikes", ide.Config(T=20, leak=0.9, solver="dense", batchnorm=True,
                                                     bn_mode="running"), {"spikes": True}),
] + [(f"conv: {label}", replace(cfg, solver="dense") if cfg.solver == "broyden" else cfg, kw)
     for label, cfg, kw in problems.IDE_CONV if cfg.sn_method != "power" and cfg.dropout == 0]


@pytest.mark.parametrize("label,cfg,kw", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_vjp_and_jacobian_match_autograd(label, cfg, kw):
    """Step 3 (beta^T df/dtheta, including the spectral-norm chain rule) and J^T beta equal torch autograd."""
    params, x, _ = problems.ide_problem(cfg, 21, **kw)
    a = ide.simulate(params, x, cfg)
    xbar = ide.input_average(x, cfg)
    beta = np.random.default_rng(0).normal(size=a.shape)
    tp = golds.tensors(params)
    ta = torch.tensor(a, requires_grad=True)
    out = golds.ide_fixed_point_map(tp, ta, torch.tensor(xbar), cfg)
    # f(a) in [0, 1], from sums of a few products of order 1 (and, with BN, a mean and a variance computed
    # by two different algorithms): both sides round differently, by ~1e-15; TWIN_REL allows any order.
    np.testing.assert_allclose(out.detach().numpy(), ide.fixed_point_map(params, a, x, cfg), rtol=0, atol=TWIN_REL)
    keys = [k for k in params if k not in ("Wo", "bo")]
    tg = torch.autograd.grad(out, [tp[k] for k in keys] + [ta], grad_outputs=torch.tensor(beta), allow_unused=True)
    tg = [torch.zeros_like(tp[k]) if t is None else t for k, t in zip(keys + ["a"], tg[:-1])] + [tg[-1]]
    mine = ide.vjp(params, a, x, beta, cfg)
    scale = max(np.linalg.norm(v) for v in mine.values())
    for k, t in zip(keys, tg[:-1]):
        _agree(k, mine[k], t.numpy(), scale)
    assert _rel(ide.jacobian_T_vec(params, a, x, beta, cfg), tg[-1].numpy()) <= TORCH_REL


@pytest.mark.parametrize("label,cfg,kw", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_implicit_gradient_matches_autograd(label, cfg, kw):
    """The whole IDE gradient, computed by torch in two independent ways, equals loss_and_grad.

    1. The implicit function theorem with torch's pieces (its Jacobian, its solver, autograd of beta . f):
       :func:`refsnn.checking.torch_golds.ide_gradient_ift`.
    2. No implicit differentiation at all: autograd through K = 120 unrolled iterations a <- f(a) + r0
       from the linearisation point (:func:`refsnn.checking.torch_golds.ide_gradient_unrolled`).  Its gradient is the
       Neumann series sum_{k<K} (J^T)^k of the IFT gradient; the remainder is <= ||J||^K / (1 - ||J||)
       < 1e-30 here (||J|| < 0.9), far below round-off.
    """
    params, x, y = problems.ide_problem(cfg, 22, **kw)
    loss, grads = ide.loss_and_grad(params, x, y, cfg)
    if cfg.linearize_at == "simulated":
        a0 = ide.simulate(params, x, cfg)
    else:
        a0, _ = ide.solve_equilibrium(params, x, cfg)
    xbar = ide.input_average(x, cfg)
    scale = max(np.linalg.norm(v) for v in grads.values())

    tloss, tg = golds.ide_gradient_ift(params, a0, xbar, y, cfg)
    assert tloss == pytest.approx(loss, rel=TWIN_REL)
    for k in params:
        _agree(k, grads[k], tg[k], scale)

    _, tg = golds.ide_gradient_unrolled(params, a0, xbar, y, cfg, iterations=120)
    for k in params:
        _agree(k, grads[k], tg[k], scale)


def test_batchnorm_running_update_matches_torch():
    """One training forward of torch.nn.BatchNorm1d updates its running statistics exactly as loss_and_grad's
    info["state"] says."""
    cfg = ide.Config(T=10, batchnorm=True)
    params, x, y = problems.ide_problem(cfg, 23, batch=7)
    bn = torch.nn.BatchNorm1d(params["b"].shape[0], dtype=torch.float64)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(params["bn_mean"]))
        bn.running_var.copy_(torch.tensor(params["bn_var"]))
        bn(torch.tensor(x @ params["F"].T + params["b"]))
    info = {}
    ide.loss_and_grad(params, x, y, cfg, info=info)
    assert _rel(info["state"]["bn_mean"], bn.running_mean.numpy()) <= TORCH_REL
    assert _rel(info["state"]["bn_var"], bn.running_var.numpy()) <= TORCH_REL


# ---------------------------------------------------------------------------
# The official code's F400 training step (dropout, power-iteration spectral norm, its solvers), ported to torch
# ---------------------------------------------------------------------------

CODE_PRESETS = [("IF", "code", None), ("LIF 0.95", "code_lif", 0.95)]


def _code_problem(cfg, seed, **kw):
    params, x, y = problems.ide_problem(cfg, seed, dropout_rng=seed, **kw)
    return params, x, y, ide.dropout_mask(params, x, cfg, seed)


def _port(params, x, y, mask, cfg, leaky, **kw):
    return ide_port.ide_code_training_step(params, x, y, mask, time_step=cfg.T, vth=cfg.v_th, leaky=leaky,
                                        norm_range=cfg.spectral_norm, **kw)


def _compare_step(params, x, y, cfg, mask, port):
    """refsnn's loss, every gradient, the power-iteration state and the BN statistics against the port's."""
    info = {}
    loss, grads = ide.loss_and_grad(params, x, y, cfg, dropout_mask=mask, info=info)
    # Same masks, same spikes: the rates are the same spike sums over the norm sum_t lam^(T-t), which refsnn
    # accumulates and the code writes (1 - lam^T) / (1 - lam): equal up to a few roundings (exactly for IF).
    assert_close(info["a"], port["a"], FORMULA_REL, scale=1.0, what="a[T]")
    # Same spikes: the loss is a short formula of the same rates (a few dozen roundings).
    assert loss == pytest.approx(port["loss"], rel=FORMULA_REL)
    scale = max(np.linalg.norm(v) for v in grads.values())
    errors = {}
    for k in params:
        _agree(k, grads[k], port["grads"][k], scale)
        if np.any(grads[k]):
            errors[k] = _rel(grads[k], port["grads"][k])
    for k in ("sn_u", "sn_v"):
        assert _rel(info["state"][k], port["state"][k]) <= TORCH_REL, k
    # BatchNorm: refsnn applies the running-statistics rule once per step, the code twice (module docstring);
    # refsnn's one update is the code's first, and a second refsnn step on the same batch gives the code's.
    twice = {}
    ide.loss_and_grad(dict(params, **info["state"]), x, y, cfg, dropout_mask=mask, info=twice)
    for k in ("bn_mean", "bn_var"):
        assert _rel(info["state"][k], port["bn_first"][k]) <= TORCH_REL, k
        assert _rel(twice["state"][k], port["state"][k]) <= TORCH_REL, k
    return errors


@pytest.mark.parametrize("label,preset,leaky", CODE_PRESETS, ids=[c[0] for c in CODE_PRESETS])
def test_code_training_step_matches_the_official_port(label, preset, leaky):
    """PRESETS["code"] is the official F400 training step: refsnn's loss, gradient of every parameter, new
    sn_u, sn_v and BN statistics equal refsnn.checking.torch_ide_port.ide_code_training_step (the official
    SNNIDEFCNet forward and IDE backward re-typed in torch: SNNFC's fc -> BN -> dropout, the power step of
    WeightSpectralNorm, snn_forward, equivalent_func, the Replace/Backward autograd functions and the code's
    Broyden), given the same dropout masks, in float64, <= TORCH_REL.

    Both adjoint solves are run to round-off (the code's Broyden with an eps below reach for its 30 steps,
    refsnn's dense solve), since the two Broyden variants stop at different approximations (module
    docstring); the fixed-count 'iter' solver is compared step for step below.
    """
    cfg = ide.PRESETS[preset]
    params, x, y, mask = _code_problem(cfg, 41, hidden=(8,), n_in=6, n_classes=4, batch=5)
    assert 0 < np.mean(mask["F"] == 0) < 1 and 0 < np.mean(mask["W"] == 0) < 1, "the masks must drop something"
    port = _port(params, x, y, mask, cfg, leaky, solver="broy", threshold=30, eps=TINY)
    errors = _compare_step(params, x, y, replace(cfg, solver="dense"), mask, port)
    assert port["nstep"] <= 30 and set(errors) >= {"F", "bn_gamma", "bn_beta", "W", "g", "Wo", "bo"}
    # refsnn's own Broyden (the preset's solver), run to a round-off tolerance, reaches the same beta on this
    # 8-unit block (a linear system: Broyden's method ends in at most 2n = 16 steps)
    _, g_broyden = ide.loss_and_grad(params, x, y, replace(cfg, tol=FORMULA_REL, max_iter=60), dropout_mask=mask)
    scale = max(np.linalg.norm(v) for v in g_broyden.values())
    for k in params:
        _agree(k, g_broyden[k], port["grads"][k], scale)


@pytest.mark.parametrize("label,preset,leaky", CODE_PRESETS, ids=[c[0] for c in CODE_PRESETS])
def test_code_iter_solver_is_the_official_iter_step_for_step(label, preset, leaky):
    """solver="code_iter", early_stop=False, max_iter=30 is the official 'iter' solver: exactly 30 steps of
    beta <- (beta + g(beta)) / 2 from beta = dL/da, converged or not, so refsnn and the port agree to
    TORCH_REL although neither solves the adjoint system."""
    cfg = replace(ide.PRESETS[preset], solver="code_iter", early_stop=False, max_iter=30)
    params, x, y, mask = _code_problem(cfg, 42, hidden=(8,), n_in=6, n_classes=4, batch=5)
    port = _port(params, x, y, mask, cfg, leaky, solver="iter", threshold=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ide.ConvergenceWarning)       # 30 halving steps end above tol
        _compare_step(params, x, y, cfg, mask, port)


def test_code_training_step_at_the_f400_size():
    """The same comparison at the official size, 784-400(feedback)-10, batch 32, T = 5, with the 'iter'
    solver (30 fixed steps on both sides): every gradient and the new state within TORCH_REL.  Random
    normalised inputs; the initialisation of init_params (PRESETS["code"])."""
    cfg = replace(ide.PRESETS["code"], solver="code_iter", early_stop=False, max_iter=30)
    rng = np.random.default_rng(43)
    params = ide.init_params([784, 400, 10], cfg, rng)
    x = ide.encode(rng.random((32, 784)), cfg)
    y = rng.integers(0, 10, 32)
    mask = ide.dropout_mask(params, x, cfg, 44)
    port = _port(params, x, y, mask, cfg, None, solver="iter", threshold=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ide.ConvergenceWarning)
        errors = _compare_step(params, x, y, cfg, mask, port)
    assert 0.05 < port["a"].mean() < 0.95, "the test needs spikes"
    assert max(errors.values()) <= TORCH_REL


@pytest.mark.parametrize("label,preset,leaky", CODE_PRESETS, ids=[c[0] for c in CODE_PRESETS])
def test_code_eval_forward_matches_predict(label, preset, leaky):
    """Eval mode (the official net after model.eval()): the power step still runs, BN uses the running
    statistics, nothing is dropped; refsnn's predict and its running-mode simulation give the port's classes
    and rates."""
    cfg = ide.PRESETS[preset]
    params, x, y, _ = _code_problem(cfg, 45, hidden=(8,), n_in=6, n_classes=4, batch=5)
    port = ide_port.ide_code_eval_rates(params, x, time_step=cfg.T, vth=cfg.v_th, leaky=leaky)
    assert_close(ide.simulate(params, x, replace(cfg, bn_mode="running")), port["a"], FORMULA_REL, scale=1.0)
    np.testing.assert_array_equal(ide.predict(params, x, cfg), np.argmax(port["logits"], axis=1))
