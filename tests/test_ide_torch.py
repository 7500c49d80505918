"""IDE against PyTorch autograd (float64): the VJP step, J, and the whole implicit gradient two ways.

The golds are in refsnn.torch_golds (written from the equations, with torch's own spectral norm and batch
norm).  torch is a test-only dependency; these tests are skipped when it is not installed.
"""
import numpy as np
import pytest
from tolerances import TINY, TORCH_REL, TWIN_REL

from refsnn import ide, problems

torch = pytest.importorskip("torch", reason="the PyTorch cross-check needs torch (pip install torch, CPU build)")
golds = pytest.importorskip("refsnn.torch_golds")


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
]


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
       :func:`refsnn.torch_golds.ide_gradient_ift`.
    2. No implicit differentiation at all: autograd through K = 120 unrolled iterations a <- f(a) + r0
       from the linearisation point (:func:`refsnn.torch_golds.ide_gradient_unrolled`).  Its gradient is the
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
