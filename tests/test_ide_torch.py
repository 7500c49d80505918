"""IDE against PyTorch autograd (float64): the VJP step, J, and the whole implicit gradient two ways.

torch is a test-only dependency; these tests are skipped when it is not installed.
"""
import numpy as np
import pytest
from tolerances import TORCH_REL

from refsnn import ide

torch = pytest.importorskip("torch", reason="the PyTorch cross-check needs torch (pip install torch, CPU build)")


def _torch_params(params):
    return {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for k, v in params.items()}


def torch_input(tp, xbar, cfg):
    """F xbar + b, through torch's batch_norm when cfg.batchnorm (running statistics cloned: not updated)."""
    P = xbar @ tp["F"].T + tp["b"]
    if not cfg.batchnorm:
        return P
    return torch.nn.functional.batch_norm(P, tp["bn_mean"].detach().clone(), tp["bn_var"].detach().clone(),
                                          tp["bn_gamma"], tp["bn_beta"], training=cfg.bn_mode == "batch",
                                          momentum=0.1, eps=1e-5)


def torch_f(tp, a, xbar, cfg):
    """Eq. (FP) in torch; Eq. (SN) with torch's own spectral norm (an SVD, differentiated by autograd);
    Eq. (BN) with torch's batch_norm (running statistics as tensors, so eval mode differentiates them too)."""
    W = tp["W"]
    if cfg.spectral_norm is not None:
        c = cfg.spectral_norm
        W = torch.clamp(tp["g"], -c, c) * W / torch.linalg.matrix_norm(W, ord=2)
    P = xbar @ tp["F"].T + tp["b"]
    if cfg.batchnorm and cfg.bn_mode == "batch":
        P = torch.nn.functional.batch_norm(P, None, None, tp["bn_gamma"], tp["bn_beta"], training=True, eps=1e-5)
    elif cfg.batchnorm:
        P = (P - tp["bn_mean"]) / torch.sqrt(tp["bn_var"] + 1e-5) * tp["bn_gamma"] + tp["bn_beta"]
    h = torch.clamp((a @ W.T + P) / cfg.v_th, 0, 1)
    l = 2
    while f"F{l}" in tp:
        h = torch.clamp((h @ tp[f"F{l}"].T + tp[f"b{l}"]) / cfg.v_th, 0, 1)
        l += 1
    return h


def _rel(a, b):
    a, b = np.asarray(a, float), np.asarray(b, float)
    return np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-300)


def _agree(name, mine, theirs, scale):
    """Relative error <= TORCH_REL; except for a gradient that is exactly 0 in refsnn (b under
    batch-statistics BatchNorm, where it cancels analytically): torch computes it as a difference of
    terms of the size of the other gradients, so it must be round-off, <= 1e-13 * scale."""
    mine, theirs = np.asarray(mine, float), np.asarray(theirs, float)
    if not np.any(mine):
        assert np.linalg.norm(theirs) <= 1e-13 * scale, (name, np.linalg.norm(theirs))
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
]


@pytest.mark.parametrize("label,cfg,kw", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_vjp_and_jacobian_match_autograd(label, cfg, kw):
    """Step 3 (beta^T df/dtheta, including the spectral-norm chain rule) and J^T beta equal torch autograd."""
    params, x, _ = ide._small_problem(cfg, 21, **kw)
    a = ide.simulate(params, x, cfg)
    xbar = ide.input_average(x, cfg)
    beta = np.random.default_rng(0).normal(size=a.shape)
    tp = _torch_params(params)
    ta = torch.tensor(a, requires_grad=True)
    out = torch_f(tp, ta, torch.tensor(xbar), cfg)
    np.testing.assert_allclose(out.detach().numpy(), ide.fixed_point_map(params, a, x, cfg), rtol=0, atol=1e-15)
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

    1. The implicit function theorem with torch's pieces: J from
       torch.autograd.functional.jacobian, beta = torch.linalg.solve(I - J^T, dL/da),
       then autograd of beta . f.
    2. No implicit differentiation at all: autograd through K = 120 unrolled
       iterations a <- f(a) + r0 started at the linearisation point a0 (where
       r0 = a0 - f(a0), so the value stays a0).  Its gradient is the Neumann
       series sum_{k<K} (J^T)^k of the IFT gradient; the remainder is
       <= ||J||^K / (1 - ||J||) < 1e-30 here (||J|| < 0.9), far below round-off.
    """
    params, x, y = ide._small_problem(cfg, 22, **kw)
    loss, grads = ide.loss_and_grad(params, x, y, cfg)
    if cfg.linearize_at == "simulated":
        a0 = ide.simulate(params, x, cfg)
    else:
        a0, _ = ide.solve_equilibrium(params, x, cfg)
    xbar = torch.tensor(ide.input_average(x, cfg))
    ty = torch.tensor(y)
    keys = list(params)

    # 1. IFT with torch's Jacobian and solver
    tp = _torch_params(params)
    ta = torch.tensor(a0, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(ta @ tp["Wo"].T + tp["bo"], ty)
    assert tloss.item() == pytest.approx(loss, rel=1e-13)
    dLda, gWo, gbo = torch.autograd.grad(tloss, [ta, tp["Wo"], tp["bo"]])
    with torch.no_grad():
        fa = lambda a: torch_f({k: v.detach() for k, v in tp.items()}, a, xbar, cfg)  # noqa: E731
        Jfull = torch.autograd.functional.jacobian(fa, ta.detach())                    # (B, n, B, n)
        B = a0.shape[0]
        J = torch.stack([Jfull[b, :, b, :] for b in range(B)])
        beta = torch.linalg.solve(torch.eye(a0.shape[1], dtype=torch.float64) - J.transpose(1, 2), dLda)
    out = torch_f(tp, ta.detach(), xbar, cfg)
    fkeys = [k for k in keys if k not in ("Wo", "bo")]
    tg = dict(zip(fkeys, torch.autograd.grad(out, [tp[k] for k in fkeys], grad_outputs=beta, allow_unused=True)))
    tg = {k: torch.zeros_like(tp[k]) if v is None else v for k, v in tg.items()}
    tg["Wo"], tg["bo"] = gWo, gbo
    scale = max(np.linalg.norm(v) for v in grads.values())
    for k in keys:
        _agree(k, grads[k], tg[k].numpy(), scale)

    # 2. Backprop through the unrolled anchored iteration
    tp = _torch_params(params)
    a = torch.tensor(a0)
    r0 = a - torch_f({k: v.detach() for k, v in tp.items()}, a, xbar, cfg)
    for _ in range(120):
        a = torch_f(tp, a, xbar, cfg) + r0
    tloss = torch.nn.functional.cross_entropy(a @ tp["Wo"].T + tp["bo"], ty)
    tloss.backward()
    for k in keys:
        _agree(k, grads[k], np.zeros(np.shape(params[k])) if tp[k].grad is None else tp[k].grad.numpy(), scale)


def test_batchnorm_running_update_matches_torch():
    """One training forward of torch.nn.BatchNorm1d updates its running statistics exactly as loss_and_grad does."""
    cfg = ide.Config(T=10, batchnorm=True)
    params, x, y = ide._small_problem(cfg, 23, batch=7)
    bn = torch.nn.BatchNorm1d(params["b"].shape[0], dtype=torch.float64)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor(params["bn_mean"]))
        bn.running_var.copy_(torch.tensor(params["bn_var"]))
        bn(torch.tensor(x @ params["F"].T + params["b"]))
    ide.loss_and_grad(params, x, y, cfg)
    assert _rel(params["bn_mean"], bn.running_mean.numpy()) <= TORCH_REL
    assert _rel(params["bn_var"], bn.running_var.numpy()) <= TORCH_REL
