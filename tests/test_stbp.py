"""STBP: the gradient is exact for its reference objective, agrees with autograd, and both tiers agree."""
import json
import os
import subprocess
import itertools
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from tolerances import FLOAT32_REL, FORMULA_REL, GRAD_FD_REL, TINY, TORCH_REL, TWIN_REL, assert_close

from refsnn import stbp
from refsnn.blocks import surrogates
from refsnn.checking import gradcheck
from refsnn.harness import problems

ROOT = Path(__file__).resolve().parents[1]
CASES = problems.gradcheck_cases("stbp", 0)
IDS = [c.label.replace("stbp ", "") for c in CASES]


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(a), np.linalg.norm(b), TINY))


# ---------------------------------------------------------------------------
# The paper's network (the first code of the module) and the general machinery
# ---------------------------------------------------------------------------

def _paper_family_cfg(name, **changes):
    cfg = replace(stbp.PRESETS[name], T=6, **changes)
    return replace(cfg, v_th=0.5, decay=0.3) if name == "paper" else cfg   # the paper's 1.5 leaves this net silent


PAPER_FAMILY = [(name, dict(detach_reset=d, strict=s)) for name in ("paper", "code", "code_fc")
                for d, s in ((False, True), (True, True), (False, False))]
PAPER_FAMILY += [("code", dict(surrogate="atan", width=0.3, decay=(0.2, 0.6, 0.4), v_th=(0.5, 0.4, 0.6)))]
PAPER_IDS = [f"{n} {' '.join(f'{k}={v}' for k, v in ch.items())}" for n, ch in PAPER_FAMILY]


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("name, changes", PAPER_FAMILY, ids=PAPER_IDS)
def test_the_papers_network_equals_the_general_machinery(name, changes, backend):
    """stbp.paper_loss_and_grad (a dozen lines per pass) and stbp.loss_and_grad (either tier) compute the same
    network: the spikes are identical (every potential of these problems is at least KINK_MARGIN from its
    threshold, so round-off cannot flip one) and loss and gradients agree to the round-off of two orders of
    summation (TWIN_REL)."""
    cfg = _paper_family_cfg(name, backend=backend, **changes)
    params, x, y = problems.stbp_problem(cfg, 3)
    u_p, o_p = stbp.paper_forward(params, x, cfg)
    u_g, o_g = stbp.simulate(params, x, cfg)
    for n, (a, b) in enumerate(zip(o_p, o_g)):
        assert np.array_equal(a, b), f"layer {n + 1}: the paper's spikes differ from the general machinery's"
        assert_close(u_p[n], u_g[n], TWIN_REL, what=f"u of layer {n + 1}")
    loss_p, g_p = stbp.paper_loss_and_grad(params, x, y, cfg)
    loss_g, g_g = stbp.loss_and_grad(params, x, y, cfg)
    assert loss_p == pytest.approx(loss_g, rel=TWIN_REL)
    rep = gradcheck.compare(g_p, g_g, tol=TWIN_REL)
    assert rep.passed, str(rep)
    assert any(np.any(o) for o in o_p[1:]), "the comparison needs spikes beyond the first layer"


@pytest.mark.parametrize("name, changes", PAPER_FAMILY, ids=PAPER_IDS)
def test_the_papers_network_is_the_exact_gradient_of_its_reference_objective(name, changes):
    """The paper's backward on its own (not through the general machinery): central differences of
    reference_objective over every tensor agree to GRAD_FD_REL."""
    cfg = _paper_family_cfg(name, **changes)
    params, x, y = problems.stbp_problem(cfg, 3)
    _, g = stbp.paper_loss_and_grad(params, x, y, cfg)
    rep = gradcheck.check_gradients(g, stbp.reference_objective(params, x, y, cfg), params, tol=GRAD_FD_REL,
                                    title="readable form: stbp.paper_backward")
    assert rep.passed, str(rep)


@pytest.mark.parametrize("change", [dict(reset="subtract"), dict(reset_timing="delayed"), dict(synapse="current"),
                                    dict(decay_input=True), dict(learn_threshold=True), dict(forward="smooth"),
                                    dict(v_rest=0.1)], ids=lambda c: next(iter(c)))
def test_the_papers_network_names_a_setting_outside_it(change):
    cfg = replace(stbp.PRESETS["code"], T=4, **change)
    params, x, y = problems.stbp_problem(replace(stbp.PRESETS["code"], T=4), 3)
    with pytest.raises(ValueError, match=f"cfg: {next(iter(change))}="):
        stbp.paper_loss_and_grad(params, x, y, cfg)


# ---------------------------------------------------------------------------
# The contract: FD of reference_objective == loss_and_grad, every variant (refsnn.harness.problems)
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradient_matches_fd_of_reference_objective(case):
    """Spiking network: FD of the anchored smoothed network equals the STBP gradient (<= 1e-7)."""
    assert stbp.kink_distance(case.params, case.x, case.cfg) > 1e-3
    report = gradcheck.check(stbp, case.params, case.x, case.y, case.cfg, tol=GRAD_FD_REL, eps=case.eps,
                             order=case.order, title=case.label)
    assert report.passed, str(report)
    assert len(report.tensors) == len(case.params)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_readable_twin_gradient_matches_fd_of_reference_objective(case):
    """The readable NumPy twin (stbp.backward_numpy), on its own: FD of reference_objective equals its gradient
    (<= 1e-7) in every variant.  The test above runs the numba kernels; without this one a wrong line in the
    twin failed only the twin-vs-kernel comparison, which cannot say which side is wrong."""
    cfg = replace(case.cfg, backend="numpy")
    report = gradcheck.check(stbp, case.params, case.x, case.y, cfg, tol=GRAD_FD_REL, eps=case.eps,
                             order=case.order, title=f"readable twin (stbp.backward_numpy): {case.label}")
    assert report.passed, str(report)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_smooth_network_gradient_matches_fd(case):
    """forward='smooth'): the same backward is the exact gradient of the plain smoothed network."""
    cfg = replace(case.cfg, forward="smooth")
    assert stbp.kink_distance(case.params, case.x, cfg) > 1e-3
    report = gradcheck.check(stbp, case.params, case.x, case.y, cfg, tol=GRAD_FD_REL, eps=case.eps,
                             order=case.order, title=case.label)
    assert report.passed, str(report)


def test_reference_objective_value_is_the_spiking_loss():
    case = CASES[0]
    loss, _ = stbp.loss_and_grad(case.params, case.x, case.y, case.cfg)
    f = stbp.reference_objective(case.params, case.x, case.y, case.cfg)
    assert f(case.params) == loss
    # ... and it is the anchored model: moving the weights changes it smoothly, not by spike flips.
    p2 = {k: v + 1e-3 for k, v in case.params.items()}
    assert f(p2) != loss and abs(f(p2) - loss) < 0.1


def literal_temporal_term_gradient(params, x, y, cfg):
    """The paper's printed (B3), written independently of refsnn's backward: delta^{t+1} h(u^{t+1}) in place of
    eps^{t+1} (immediate reset, no synapse, fixed decay and threshold, fully connected)."""
    u, o = stbp.forward_numpy(params, x, cfg)
    _, g_obar = stbp._loss(o[-1].mean(axis=0), y, cfg)
    T, N = x.shape[0], len(params) // 2
    h = lambda v: surrogates.h(v - cfg.v_th, cfg.surrogate, cfg.width)  # noqa: E731
    R, lam = stbp.reset_piece(cfg), cfg.decay
    f = lambda o: lam * R.du(0.0, o, lam)                                         # noqa: E731  f(o) = decay (1 - o)
    u_fp = lambda u, o: lam * R.do(u, o, lam, cfg.v_th)                           # noqa: E731  u f'(o)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    eps_next, delta_next = [None] * N, [None] * N
    for t in reversed(range(T)):
        delta = g_obar / T
        for n in reversed(range(N)):
            a = x[t] if n == 0 else o[n - 1][t]
            if t < T - 1:  # the literal temporal term uses delta^{t+1} * h(u^{t+1})
                delta = delta + delta_next[n] * h(u[n][t + 1]) * u_fp(u[n][t], o[n][t])
            eps = delta * h(u[n][t]) + (eps_next[n] * f(o[n][t]) if t < T - 1 else 0)
            grads[f"W{n + 1}"] += eps.T @ a
            grads[f"b{n + 1}"] += eps.sum(0)
            delta_next[n] = delta
            delta = eps @ params[f"W{n + 1}"]
            eps_next[n] = eps
    return grads


def test_fd_check_detects_the_papers_literal_temporal_term():
    """A wrong backward is caught: the paper's printed form (delta^{t+1} h(u^{t+1}) in place of eps^{t+1}).

    Read literally, it drops the u^{t+1} -> u^{t+2} path (docs/stbp.md).  We re-implement that variant here
    and show the FD check rejects it.
    """
    case = next(c for c in CASES if c.cfg.surrogate == "sigmoid" and c.cfg.reset == "zero"
                and not c.cfg.detach_reset and c.cfg.loss == "mse_paper")
    cfg, params, x, y = case.cfg, case.params, case.x, case.y
    grads = literal_temporal_term_gradient(params, x, y, cfg)
    report = gradcheck.check_gradients(grads, stbp.reference_objective(params, x, y, cfg), params)
    assert not report.passed
    assert 1e-4 < report.max_rel_error < 0.2, str(report)


def test_detached_and_attached_gradients_differ():
    """detach_reset changes the gradient, so the flag matters."""
    case = CASES[0]
    _, g_att = stbp.loss_and_grad(case.params, case.x, case.y, replace(case.cfg, detach_reset=False))
    _, g_det = stbp.loss_and_grad(case.params, case.x, case.y, replace(case.cfg, detach_reset=True))
    assert rel(g_att["W1"], g_det["W1"]) > 1e-3


# ---------------------------------------------------------------------------
# Cross-check against PyTorch autograd of an independently written graph
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_torch_autograd(case):
    """Every case, every parameter tensor (learned decays and thresholds included) and dL/dx, against
    autograd of refsnn.checking.torch_golds.stbp_family_loss (the equations written again in torch)."""
    torch = pytest.importorskip("torch", reason="torch not installed: pip install torch (CPU) for the cross-check")
    from refsnn.checking import torch_golds

    tp = torch_golds.tensors(case.params)
    xt = torch.tensor(case.x, dtype=torch.float64, requires_grad=True)
    L = torch_golds.stbp_family_loss(tp, xt, case.y, case.cfg)
    L.backward()
    for backend in ("numba", "numpy"):
        c = replace(case.cfg, backend=backend)
        loss, grads = stbp.loss_and_grad(case.params, case.x, case.y, c)
        assert loss == pytest.approx(L.item(), rel=FORMULA_REL)   # the same spikes: an MSE of a few rates
        for k in case.params:
            assert rel(grads[k], tp[k].grad.numpy()) <= TORCH_REL, (backend, k)
        gx = stbp.input_gradient(case.params, case.x, case.y, c)
        assert rel(gx, xt.grad.numpy()) <= TORCH_REL, (backend, "x")


def test_code_preset_matches_torch_on_a_wider_net():
    """The official code's setting (thresh 0.5, decay 0.2, rect a=1, MSELoss, reset kept), 20-16-12-10, T=8."""
    torch = pytest.importorskip("torch", reason="torch not installed")
    from refsnn.checking.torch_golds import stbp_loss

    cfg = replace(stbp.PRESETS["code"], T=8)
    rng = np.random.default_rng(3)
    params = stbp.init_params([20, 16, 12, 10], cfg, rng)
    params = {k: v * (3.0 if k.startswith("W") else 1.0) for k, v in params.items()}
    x = stbp.encode(rng.random((6, 20)), cfg, rng)
    y = rng.integers(0, 10, 6)
    _, o = stbp.simulate(params, x, cfg)
    assert 0.05 < o[0].mean() < 0.95 and o[-1].sum() > 0
    Ws = [torch.tensor(params[f"W{n}"], requires_grad=True) for n in (1, 2, 3)]
    bs = [torch.tensor(params[f"b{n}"], requires_grad=True) for n in (1, 2, 3)]
    L = stbp_loss(Ws, bs, torch.tensor(x), y, v_th=0.5, decay=0.2, surrogate="rect", width=1.0, reset="code",
                  detach_reset=False, loss="mse_mean")
    L.backward()
    loss, grads = stbp.loss_and_grad(params, x, y, cfg)
    assert loss == pytest.approx(L.item(), rel=FORMULA_REL)   # the same spikes: an MSE of a few rates
    for n in (1, 2, 3):
        assert rel(grads[f"W{n}"], Ws[n - 1].grad.numpy()) <= TORCH_REL


# ---------------------------------------------------------------------------
# The two tiers: numba kernels == readable NumPy twin; JIT on == JIT off
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES[::5], ids=IDS[::5])
@pytest.mark.parametrize("forward", ["spike", "smooth"])
def test_fast_tier_equals_readable_twin(case, forward):
    cfg = replace(case.cfg, forward=forward)
    u1, o1 = stbp.simulate(case.params, case.x, replace(cfg, backend="numba"))
    u2, o2 = stbp.simulate(case.params, case.x, replace(cfg, backend="numpy"))
    for a, b in zip(u1 + o1, u2 + o2):
        assert rel(a, b) <= TWIN_REL
    l1, g1 = stbp.loss_and_grad(case.params, case.x, case.y, replace(cfg, backend="numba"))
    l2, g2 = stbp.loss_and_grad(case.params, case.x, case.y, replace(cfg, backend="numpy"))
    assert l1 == pytest.approx(l2, rel=TWIN_REL)
    for k in g1:
        assert rel(g1[k], g2[k]) <= TWIN_REL, k


@pytest.fixture
def events_everywhere(monkeypatch):
    """Every dense layer whose input is spikes adds rows (refsnn.blocks.spike_products) however small or busy it
    is; returns the list of the layers' weight gradients made that way (one entry per call)."""
    from refsnn.blocks import spike_products

    monkeypatch.setattr(spike_products, "MIN_OUT", 1)
    monkeypatch.setattr(spike_products, "MAX_DENSITY", 1.0)
    calls, weight_grad = [], spike_products.weight_grad
    monkeypatch.setattr(spike_products, "weight_grad", lambda e, lists: calls.append(e.shape) or weight_grad(e, lists))
    return calls


@pytest.mark.parametrize("case", CASES[::3], ids=IDS[::3])
def test_event_driven_products_gradient_matches_fd(case, events_everywhere):
    """The fast tier with every product of a spike input made by adding weight rows: FD of reference_objective
    equals its gradient (<= 1e-7), every parameter tensor."""
    report = gradcheck.check(stbp, case.params, case.x, case.y, case.cfg, tol=GRAD_FD_REL, eps=case.eps,
                             order=case.order, title=f"event-driven products: {case.label}")
    assert report.passed, str(report)
    assert events_everywhere, "no layer's gradient came from the event-driven sums"


@pytest.mark.parametrize("case", CASES[::5], ids=IDS[::5])
def test_event_driven_products_twin_of_readable_tier(case, events_everywhere):
    """Every layer's current by adding rows against the readable tier's matrix products: potentials, spikes,
    loss and gradients to the round-off of two orders of summation (no spike flips in these problems)."""
    fast, slow = replace(case.cfg, backend="numba"), replace(case.cfg, backend="numpy")
    u1, o1 = stbp.simulate(case.params, case.x, fast)
    u2, o2 = stbp.simulate(case.params, case.x, slow)
    for a, b in zip(o1, o2):
        assert np.array_equal(a, b)
    for a, b in zip(u1, u2):
        assert_close(a, b, TWIN_REL, what="u")
    l1, g1 = stbp.loss_and_grad(case.params, case.x, case.y, fast)
    l2, g2 = stbp.loss_and_grad(case.params, case.x, case.y, slow)
    assert l1 == pytest.approx(l2, rel=TWIN_REL)
    for k in g1:
        assert rel(g1[k], g2[k]) <= TWIN_REL, k
    specs = stbp.parse_arch(case.cfg.arch)[1] if case.cfg.arch else None
    dense = sum(k[:1] == "W" for k in case.params) if specs is None else sum(
        s.op == "dense" and s.pool is None for s in specs)
    assert len(events_everywhere) == dense                 # every dense layer without pooling added rows


def test_event_driven_products_are_used_where_they_pay(monkeypatch):
    """The fast tier adds rows for a dense layer of >= MIN_OUT neurons whose input is spikes at most MAX_DENSITY
    of the time, and multiplies otherwise (a busier or analog input, a small layer, the smooth forward's
    non-binary hidden 'spikes'); x with a NaN is refused by name on either path."""
    from refsnn.blocks import spike_products

    calls = []
    matmul = spike_products.matmul
    monkeypatch.setattr(spike_products, "matmul", lambda lists, W: calls.append(W.shape) or matmul(lists, W))
    cfg = replace(stbp.PRESETS["code"], T=3)
    rng = np.random.default_rng(4)
    sizes = [120, spike_products.MIN_OUT, spike_products.MIN_OUT, 3]
    params = stbp.init_params(sizes, cfg, rng)
    y = np.array([0, 1, 2, 0])

    def used(x, cfg=cfg, params=params):
        calls.clear()
        stbp.loss_and_grad(params, x, y, cfg)
        return calls[:]

    sparse = stbp.encode(np.full((4, 120), 0.1), cfg, rng)
    busy = stbp.encode(np.full((4, 120), 0.9), cfg, rng)
    assert used(sparse)[0] == (spike_products.MIN_OUT, 120)               # the first layer adds rows ...
    built = []
    spike_lists = spike_products.spike_lists
    monkeypatch.setattr(spike_products, "spike_lists", lambda a: built.append(a.shape) or spike_lists(a))
    assert (spike_products.MIN_OUT, 120) not in used(busy)                # ... not at 90 % spikes, where
    assert (12, 120) not in built                                         # its lists are not even built
    assert (spike_products.MIN_OUT, 120) not in used(sparse * 0.5)        # ... nor for an analog input
    monkeypatch.setattr(spike_products, "MAX_DENSITY", 1.0)               # only MIN_OUT keeps the readout out:
    assert all(shape[0] >= spike_products.MIN_OUT for shape in used(sparse))   # never the 3-neuron one
    monkeypatch.setattr(spike_products, "MAX_DENSITY", 0.25)
    assert used(sparse, replace(cfg, forward="smooth")) == [(spike_products.MIN_OUT, 120)]   # smooth hidden layers
    monkeypatch.setattr(spike_products, "MAX_DENSITY", 0.0)
    assert used(sparse) == []                                             # 0 turns the sums off
    monkeypatch.setattr(spike_products, "MAX_DENSITY", 0.25)
    bad = sparse.copy()
    bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"^x: contains 1 NaN"):
        stbp.loss_and_grad(params, bad, y, cfg)
    small = stbp.init_params([120, 5, 3], cfg, rng)                       # no lists built: x checked as before
    with pytest.raises(ValueError, match=r"^x: contains 1 NaN"):
        stbp.loss_and_grad(small, bad, y, cfg)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_x_beyond_float32s_range_is_refused_in_float32(backend):
    """A finite float64 input that overflows in the cast to float32 (cfg.dtype) is refused by both tiers,
    naming x and saying why, instead of running on infinities."""
    cfg = replace(stbp.PRESETS["code"], T=2, dtype="float32", backend=backend)
    params = stbp.init_params([6, 4, 3], cfg, 0)
    x = np.zeros((2, 2, 6))
    x[1, 0, 2] = 1e39
    with pytest.raises(ValueError, match=r"^x: contains 1 NaN or infinite value\(s\) in float32"):
        stbp.loss_and_grad(params, x, np.array([0, 1]), cfg)
    with pytest.raises(ValueError, match=r"^x: contains 1 NaN or infinite value\(s\) in float32"):
        stbp.simulate(params, x, cfg)
    x[1, 0, 2] = 3e38                                                     # within float32's range: runs
    assert np.isfinite(stbp.loss_and_grad(params, x, np.array([0, 1]), cfg)[0])


def test_kernels_compiled_equal_plain_python():
    """Each kernel gives the same results compiled and as its pure-Python function (py_func), for every
    reset with each timing, synapse and detaching, and every surrogate with every reset (the surrogate
    cycles through all of them as the other switches change; the firing rule and the smooth forward pass go
    with it).  The kernels are compiled for each setting (stbp._specialised), so each case here is a
    different compiled kernel."""
    rng = np.random.default_rng(1)
    T, B, H = 6, 3, 5
    I = rng.normal(0.4, 0.6, (T, B, H))
    g = rng.normal(0, 1, (T, B, H))
    nrn = stbp._Neurons(lam=np.full(H, 0.3), kap=np.full(H, 0.7), c=np.full(H, 0.02),
                        thr=np.linspace(0.4, 0.6, H), alpha=np.full(H, 0.5))
    seen = set()
    for reset in stbp.RESETS:
        code = stbp.reset_piece(stbp.Config(reset=reset)).code
        for delayed, synapse, detach in itertools.product((False, True), repeat=3):
            sur = (delayed + 2 * synapse + 4 * detach) % len(surrogates.NAMES)   # every surrogate meets every reset
            seen.add((reset, sur))
            rule = stbp._Rule(reset=code, v_reset=-0.2, v_rest=0.1, delayed=delayed, synapse=synapse,
                              strict=bool(sur % 2), smooth=sur == 3, detach=detach, decay_input=True,
                              surrogate=sur, width=0.8)
            outs = []
            for fn in (stbp._lif_forward_kernel, stbp._lif_forward_kernel.py_func):
                v, j = np.empty((T, B, H)), np.empty((T, B, H))
                u, o = fn(I, nrn, rule, v, j)
                outs.append((u, o, v, j))
            for a, b in zip(outs[0], outs[1]):
                assert_close(a, b, FORMULA_REL)            # 6 steps of one neuron's recursion
            res = []
            for fn in (stbp._lif_backward_kernel, stbp._lif_backward_kernel.py_func):
                glam, gthr = np.zeros((B, H)), np.zeros((B, H))   # per sample
                gI = fn(g, outs[0], nrn, rule, glam, gthr)
                res.append((gI, glam, gthr))
            for a, b in zip(res[0], res[1]):
                assert_close(a, b, FORMULA_REL)
    assert len(seen) == len(stbp.RESETS) * len(surrogates.NAMES)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_kernel_twin_with_the_bias_inside_and_u_over_I(dtype):
    """The fast tier's forward: the dense layer's bias added by the kernel as it reads I, and u written over I.
    Both are the same operations as adding the bias first into a new I and writing u apart, so u and o are
    identical (exact equality by construction), compiled and as Python, and u is I's memory."""
    rng = np.random.default_rng(7)
    T, B, H = 5, 3, 6
    I = rng.normal(0.3, 0.5, (T, B, H)).astype(dtype)
    b = rng.normal(0.1, 0.2, H).astype(dtype)
    nrn = stbp._Neurons(*(np.full(H, v, dtype) for v in (0.3, 0.7, 0.02, 0.45, 0.5)))
    for reset in stbp.RESETS:
        for delayed, synapse in ((False, False), (True, True)):      # (each setting compiles its own kernel)
            rule = stbp._Rule(reset=stbp.reset_piece(stbp.Config(reset=reset)).code, v_reset=dtype(-0.2),
                              v_rest=dtype(0.1), delayed=delayed, synapse=synapse, strict=True, smooth=False,
                              detach=False, decay_input=False, surrogate=0, width=dtype(1.0))
            dummy = np.zeros((1, 1, 1), dtype)
            for fn in (stbp._lif_forward_kernel, stbp._lif_forward_kernel.py_func):
                u_ref, o_ref = fn(I + b, nrn, rule, dummy, dummy)
                Ic = I.copy()
                u, o = fn(Ic, nrn, rule, dummy, dummy, u=Ic, bias=b)
                assert np.shares_memory(u, Ic) and u.dtype == dtype
                assert np.array_equal(u, u_ref) and np.array_equal(o, o_ref), (reset, delayed, synapse, fn)
                assert 0 < o.sum() < o.size


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_backward_kernel_remakes_the_spikes_from_u(dtype):
    """For a step forward the backward kernel remakes the spikes from ``u`` (Eq. (o) with the forward's own
    ``>`` or ``>=``) instead of reading ``o``: the results are the same bit for bit as the kernel that reads
    ``o`` (exact equality by construction), also where ``u`` equals the threshold exactly (where ``>`` and
    ``>=`` differ), and ``o`` is not read (NaN there changes nothing), also with a current synapse, a learned
    decay and recurrence (whose dL/dV reads the previous step's spikes).  The smooth forward's ``o`` is read."""
    rng = np.random.default_rng(11)
    T, B, H = 6, 4, 7
    thr = dtype(0.5)
    I = rng.normal(0.4, 0.6, (T, B, H)).astype(dtype)
    I[:, :, 0] = thr                          # with kap 1, c 0, v_rest 0, a zero reset: u = thr exactly at t = 0
    g = rng.normal(0, 1, (T, B, H)).astype(dtype)
    nrn = stbp._Neurons(lam=np.full(H, 0.3, dtype), kap=np.ones(H, dtype), c=np.zeros(H, dtype),
                        thr=np.full(H, thr), alpha=np.full(H, 0.5, dtype))
    dummy = np.zeros((1, 1, 1), dtype)
    # every reset with each timing, ">" and ">=" alternating (each kernel setting compiles on its own)
    plain = [(r, bool(d), bool((k + d) % 2), False) for (k, r), d in itertools.product(enumerate(stbp.RESETS), (0, 1))]
    full = [(r, bool(d), True, True) for r, d in itertools.product(("zero", "subtract"), (0, 1))]
    settings = plain + full
    if dtype == np.float32:     # a few settings (with the exponential reset, where a float64 spike showed)
        settings = [("exp", False, False, False), ("exp", True, True, False), ("zero", True, True, True)]
    for reset, delayed, strict, extra in settings:      # extra: a current synapse, a learned decay, recurrence
        rule = stbp._Rule(reset=stbp.reset_piece(stbp.Config(reset=reset)).code, v_reset=dtype(-0.2),
                          v_rest=dtype(0), delayed=delayed, synapse=extra, strict=strict, smooth=False,
                          detach=False, decay_input=extra, surrogate=0, width=dtype(1.0))
        v = np.empty((T, B, H), dtype) if delayed else dummy
        j = np.empty((T, B, H), dtype) if extra else dummy
        V = np.full(H, 0.4, dtype) if extra else None
        u, o = stbp._lif_forward_kernel(I, nrn, rule, v, j, V)
        assert np.any(u[0, :, 0] == thr) and 0 < o.sum() < o.size
        key = (int(rule.reset), delayed, extra, False, extra, 0, extra)
        for fn in (stbp._lif_backward_kernel, stbp._lif_backward_kernel.py_func):
            out = {}
            for name, from_u, o_given in (("read", False, o), ("remade", True, np.full_like(o, np.nan))):
                kernel = stbp._specialised(stbp._compile_lif_backward, key + (from_u, strict))
                glam, gthr, gV = (np.zeros((B, H), dtype) for _ in range(3))
                gI = np.empty((T, B, H), dtype)
                args = (g, u, o_given, v, j, *(nrn.lam, nrn.kap, nrn.thr, nrn.alpha),
                        V if extra else dummy[0, 0], rule.v_reset, rule.v_rest, rule.width, glam, gthr,
                        gV if extra else dummy[0], gI, 0, B)
                (kernel.py_func if fn is stbp._lif_backward_kernel.py_func else kernel)(*args)
                out[name] = (gI, glam, gthr, gV)
            for a, b in zip(out["read"], out["remade"]):
                assert np.array_equal(a, b), (reset, delayed, strict, extra, fn)
            if extra:
                assert np.any(out["remade"][3] != 0)                          # dL/dV was summed
        glam, gthr, gV = (np.zeros((B, H), dtype) for _ in range(3))     # the public call remakes them too
        gI = stbp._lif_backward_kernel(g, (u, np.full_like(o, np.nan), v, j), nrn, rule, glam, gthr, V=V,
                                       gV=gV if extra else None)
        assert np.array_equal(gI, out["read"][0])
    smooth = stbp._Rule(reset=stbp.reset_piece(stbp.Config()).code, v_reset=dtype(0), v_rest=dtype(0),
                        delayed=False, synapse=False, strict=True, smooth=True, detach=False, decay_input=False,
                        surrogate=0, width=dtype(1.0))
    u, o = stbp._lif_forward_kernel(I, nrn, smooth, dummy, dummy)
    glam, gthr = np.zeros((B, H), dtype), np.zeros((B, H), dtype)
    gI = stbp._lif_backward_kernel(g, (u, np.full_like(o, np.nan), dummy, dummy), nrn, smooth, glam, gthr)
    assert np.isnan(gI).any()                                  # the smooth forward's spikes are read from o


@pytest.mark.parametrize("T", [1, 2])
def test_the_forward_kernel_leaves_placeholders_alone(T):
    """v and j are recorded only into arrays of the input's shape; a (1, 1, 1) placeholder is not written,
    also at T = 1, where it has as many rows as the input (an earlier kernel decided by the row count and
    wrote past the placeholder's end at T = 1)."""
    rng = np.random.default_rng(2)
    B, H = 4, 3
    I = rng.normal(0.5, 0.5, (T, B, H))
    nrn = stbp._Neurons(lam=np.full(H, 0.3), kap=np.full(H, 0.7), c=np.zeros(H), thr=np.full(H, 0.5),
                        alpha=np.zeros(H))
    rule = stbp._Rule(reset=stbp.reset_piece(stbp.Config()).code, v_reset=0.0, v_rest=0.0, delayed=True,
                      synapse=False, strict=True, smooth=False, detach=False, decay_input=False, surrogate=0,
                      width=1.0)
    sentinel = np.full((1, 1, 1), np.nan), np.full((1, 1, 1), np.nan)
    for fn in (stbp._lif_forward_kernel, stbp._lif_forward_kernel.py_func):
        v, j = (a.copy() for a in sentinel)
        fn(I, nrn, rule, v, j)
        assert np.isnan(v).all() and np.isnan(j).all()


def _returns(fn, values):
    """The dtype a kernel helper computed in for arguments of the values' kind: numba's compiled return type
    for arguments of that dtype (it hands a float32 back to Python as a float), or the dtype of the values
    when the kernels run as Python."""
    sigs = getattr(fn, "nopython_signatures", None)
    if not sigs:
        return values.dtype
    ret = {str(sig.return_type) for sig in sigs if str(sig.args[0]) == values.dtype.name}
    assert len(ret) == 1, (fn, sigs)
    return np.dtype(ret.pop())


@pytest.mark.parametrize("reset", stbp.RESETS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernel_reset_formulas_are_the_reset_pieces(reset, dtype):
    """The kernels read R, dR/du, dR/do from _kernel_reset_* by the piece's code; the twin and the stack call
    the Reset piece's methods.  Same formulas, same operations: equal (to one rounding, np.exp in numba vs
    NumPy) on a grid of potentials, both spike values, two decays and thresholds, and in the array's dtype."""
    cfg = stbp.Config(reset=reset, v_reset=-0.3)
    R = stbp.reset_piece(cfg, dtype)
    u = np.linspace(-2, 2, 41).astype(dtype)
    for o in (dtype(0), dtype(1)):
        for lam, thr in ((dtype(0.3), dtype(0.5)), (dtype(0.9), dtype(1.5))):
            vr = dtype(cfg.v_reset)
            one = dtype(1)
            kernel = (np.array([stbp._kernel_reset_value(ui, o, R.code, lam, thr, vr, one) for ui in u]),
                      np.array([stbp._kernel_reset_du(ui, o, R.code, lam, one) for ui in u]),
                      np.array([stbp._kernel_reset_do(ui, o, R.code, lam, thr, vr, one) for ui in u]))
            piece = (R.value(u, o, lam, thr), R.du(u, o, lam), R.do(u, o, lam, thr))
            for name, k, p in zip(("value", "du", "do"), kernel, piece):
                assert np.asarray(p).dtype == dtype, (name, np.asarray(p).dtype)
                fn = {"value": stbp._kernel_reset_value, "du": stbp._kernel_reset_du, "do": stbp._kernel_reset_do}[name]
                assert _returns(fn, u) == np.dtype(dtype), name   # the kernels' formulas keep the dtype too
                assert_close(k.astype(np.float64), np.broadcast_to(p, u.shape).astype(np.float64),
                             FLOAT32_REL if dtype == np.float32 else FORMULA_REL, what=f"{reset} {name}")


_SUBPROCESS = r"""
import sys, numpy as np
{block}
from refsnn import stbp
from refsnn.blocks import _jit
from refsnn.harness import problems
case = problems.gradcheck_cases("stbp", 0)[{i}]
loss, g = stbp.loss_and_grad(case.params, case.x, case.y, case.cfg)
np.savez(sys.argv[1], loss=loss, jit=_jit.JIT_ENABLED, **g)
"""


@pytest.mark.parametrize("mode", ["NUMBA_DISABLE_JIT=1", "numba missing"])
def test_jit_off_gives_the_same_results(tmp_path, mode):
    """The shim falls back to plain Python (env var or no numba) with the same numbers."""
    i = 7
    block = "sys.modules['numba'] = None" if mode == "numba missing" else ""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if mode.startswith("NUMBA"):
        env["NUMBA_DISABLE_JIT"] = "1"
    out = tmp_path / "g.npz"
    subprocess.run([sys.executable, "-c", _SUBPROCESS.format(block=block, i=i), str(out)], check=True, env=env,
                   cwd=tmp_path)
    z = np.load(out)
    assert not bool(z["jit"])
    case = CASES[i]
    loss, g = stbp.loss_and_grad(case.params, case.x, case.y, case.cfg)
    assert float(z["loss"]) == pytest.approx(loss, rel=FORMULA_REL)
    for k in g:
        assert rel(z[k], g[k]) <= TWIN_REL


def test_float32_close_to_float64():
    case = CASES[2]
    cfg64 = case.cfg
    cfg32 = replace(cfg64, dtype="float32")
    for backend in ("numba", "numpy"):
        _, o64 = stbp.simulate(case.params, case.x, replace(cfg64, backend=backend))
        _, o32 = stbp.simulate(case.params, case.x, replace(cfg32, backend=backend))
        assert all(np.array_equal(a, b) for a, b in zip(o64, o32)), "a spike flipped; pick another problem"
        l64, g64 = stbp.loss_and_grad(case.params, case.x, case.y, replace(cfg64, backend=backend))
        l32, g32 = stbp.loss_and_grad(case.params, case.x, case.y, replace(cfg32, backend=backend))
        assert g32["W1"].dtype == np.float32
        assert l32 == pytest.approx(l64, rel=FLOAT32_REL)
        for k in g64:
            assert rel(g32[k].astype(np.float64), g64[k]) <= FLOAT32_REL, (backend, k)


# ---------------------------------------------------------------------------
# Model details
# ---------------------------------------------------------------------------

def test_spikes_use_a_strict_threshold_and_reset():
    """u exactly at v_th does not fire; after a spike the code reset zeroes the carried potential."""
    cfg = stbp.Config(v_th=1.0, decay=0.5, reset="zero")
    params = {"W1": np.array([[1.0]]), "b1": np.array([0.0])}
    x = np.array([1.0, 0.6, 0.6, 0.0])[:, None, None]
    u, o = stbp.simulate(params, x, cfg)
    # t0: u=1.0 (== v_th, no spike); t1: 0.5*1.0+0.6=1.1 spike; t2: reset -> 0+0.6; t3: 0.3
    np.testing.assert_allclose(u[0][:, 0, 0], [1.0, 1.1, 0.6, 0.3])
    np.testing.assert_array_equal(o[0][:, 0, 0], [0, 1, 0, 0])
    u_p, o_p = stbp.simulate(params, x, replace(cfg, reset="paper"))
    # paper reset: f(1) = tau*exp(-1/tau) = 0.5*e^-2 after the spike
    assert u_p[0][2, 0, 0] == pytest.approx(1.1 * 0.5 * np.exp(-2) + 0.6)


def test_presets_follow_the_paper_and_the_code():
    code = stbp.PRESETS["code"]
    assert (code.v_th, code.decay, code.T, code.surrogate, code.width) == (0.5, 0.2, 20, "rect", 1.0)
    assert (code.reset, code.loss, code.detach_reset, code.encoding) == ("zero", "mse_mean", False, "bernoulli")
    paper = stbp.PRESETS["paper"]
    assert (paper.v_th, paper.decay, paper.T, paper.reset, paper.loss) == (1.5, 0.1, 30, "exp", "mse_paper")
    fc = stbp.PRESETS["code_fc"]          # code_mnist/mnist_model.py: thresh 0.3, decay 0.5, T 8, analog input
    assert (fc.v_th, fc.decay, fc.T, fc.encoding, fc.reset, fc.width) == (0.3, 0.5, 8, "direct", "zero", 1.0)
    assert stbp.Config(reset="paper").reset == "exp" and stbp.Config(reset="code").reset == "zero"   # old names


def test_losses_relate_as_the_code_and_the_paper_say():
    """MSELoss(mean) = (2/C) * the paper's loss."""
    case = CASES[0]
    lp, gp = stbp.loss_and_grad(case.params, case.x, case.y, replace(case.cfg, loss="mse_paper"))
    lm, gm = stbp.loss_and_grad(case.params, case.x, case.y, replace(case.cfg, loss="mse_mean"))
    C = case.params["b3"].shape[0]
    assert lm == pytest.approx(2 / C * lp, rel=FORMULA_REL)
    assert rel(gm["W1"], 2 / C * gp["W1"]) < FORMULA_REL


def test_init_params():
    p = stbp.init_params([7, 5, 3], stbp.Config(init="paper"), 0)
    np.testing.assert_allclose(np.linalg.norm(p["W1"], axis=1), 1.0)
    assert np.all(p["b1"] == 0)
    q = stbp.init_params([16, 5, 3], stbp.Config(init="torch"), 0)
    assert np.abs(q["W1"]).max() <= 0.25 and np.abs(q["b1"]).max() <= 0.25 and np.abs(q["b1"]).max() > 0
    r = stbp.init_params([16, 5, 3], stbp.Config(init="torch"), 0)
    assert all(np.array_equal(q[k], r[k]) for k in q)


def test_encode_bernoulli_rate_and_direct():
    """Bernoulli spikes have mean p: |mean - p| < 5 standard errors sqrt(p(1-p)/n) for every entry."""
    cfg = stbp.Config(T=4000, encoding="bernoulli")
    p = np.array([[0.0, 0.1, 0.5, 0.9, 1.0]])
    x = stbp.encode(p, cfg, 0)
    assert x.shape == (4000, 1, 5) and set(np.unique(x)) <= {0.0, 1.0}
    se = np.sqrt(p * (1 - p) / 4000)
    assert np.all(np.abs(x.mean(0) - p) <= 5 * se + 1e-12)
    d = stbp.encode(p, replace(cfg, T=3, encoding="direct"))
    assert d.shape == (3, 1, 5) and np.all(d == p)
    with pytest.raises(ValueError, match="rng"):
        stbp.encode(p, cfg)


def test_predict_is_argmax_of_output_counts():
    case = CASES[0]
    _, o = stbp.simulate(case.params, case.x, case.cfg)
    counts = o[-1].sum(0)
    pred = stbp.predict(case.params, case.x, case.cfg)
    assert np.all(counts[np.arange(len(pred)), pred] == counts.max(1))


# ---------------------------------------------------------------------------
# Bad input: a clear error naming the argument
# ---------------------------------------------------------------------------

BAD_CONFIGS = [
    (dict(v_th=0.0), ValueError, "v_th"),
    (dict(v_th=-1.0), ValueError, "v_th"),
    (dict(v_th=float("nan")), ValueError, "v_th"),
    (dict(decay=0.0), ValueError, "decay"),
    (dict(decay=1.5), ValueError, "decay"),
    (dict(surrogate="relu"), ValueError, "surrogate"),
    (dict(width=0.0), ValueError, "width"),
    (dict(reset="hard"), ValueError, "reset"),
    (dict(loss="ce"), ValueError, "loss"),
    (dict(detach_reset="yes"), TypeError, "detach_reset"),
    (dict(T=0), ValueError, "T"),
    (dict(T=2.5), TypeError, "T"),
    (dict(encoding="poisson"), ValueError, "encoding"),
    (dict(backend="cuda"), ValueError, "backend"),
]


@pytest.mark.parametrize("kwargs,exc,name", BAD_CONFIGS, ids=[str(k) for k, _, _ in BAD_CONFIGS])
def test_bad_config(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        stbp.Config(**kwargs)


def _bad_inputs():
    case = CASES[0]
    p, x, y = case.params, case.x, case.y
    nan_x = x.copy()
    nan_x[0, 0, 0] = np.nan
    inf_p = {k: v.copy() for k, v in p.items()}
    inf_p["W2"][0, 0] = np.inf
    missing = {k: v for k, v in p.items() if k != "b2"}
    wrong_shape = dict(p, W2=np.zeros((4, 7)))
    return [
        ("x 2-D", p, x[0], y, ValueError, "x"),
        ("x n_in", p, x[:, :, :3], y, ValueError, "x"),
        ("x T=0", p, x[:0], y, ValueError, "x"),
        ("x NaN", p, nan_x, y, ValueError, "x"),
        ("x strings", p, np.array([["a"]]), y, TypeError, "x"),
        ("params inf", inf_p, x, y, ValueError, "W2"),
        ("params missing", missing, x, y, ValueError, "params"),
        ("params shape", wrong_shape, x, y, ValueError, "W2"),
        ("params list", [1, 2], x, y, TypeError, "params"),
        ("y range", p, x, np.array([0, 1, 2, 3]), ValueError, "y"),
        ("y negative", p, x, np.array([0, -1, 2, 1]), ValueError, "y"),
        ("y length", p, x, np.array([0, 1]), ValueError, "y"),
        ("y fractional", p, x, np.array([0.5, 1, 2, 0]), ValueError, "y"),
        ("y 2-D", p, x, np.zeros((4, 3), int), ValueError, "y"),
    ]


@pytest.mark.parametrize("label,params,x,y,exc,name", _bad_inputs(), ids=[b[0] for b in _bad_inputs()])
def test_bad_input(label, params, x, y, exc, name):
    with pytest.raises(exc, match=name):
        stbp.loss_and_grad(params, x, y, CASES[0].cfg)


def test_bad_cfg_type():
    case = CASES[0]
    with pytest.raises(TypeError, match="cfg"):
        stbp.loss_and_grad(case.params, case.x, case.y, {"v_th": 1.0})


# ---------------------------------------------------------------------------
# gradcheck CLI for stbp
# ---------------------------------------------------------------------------

def test_gradcheck_cli_passes_and_prints_a_table(capsys):
    from refsnn.cli import main

    assert main(["gradcheck", "stbp"]) == 0
    out = capsys.readouterr().out
    assert f"{len(CASES)} passed, 0 failed" in out and "rect/exp/attached/mse_paper" in out and "norse" in out


def test_the_kernels_give_the_same_bits_on_one_thread_and_shared_over_threads(monkeypatch):
    """over_batch shares the batch among threads when the work is large (>= OVER_BATCH_MIN bytes; here the
    limit is lowered so that this small problem is shared): every sample is computed by the same code on one
    thread or another, so u, o, dL/dI and the per-sample dL/dlam, dL/dv_th are identical bit for bit (exact
    equality by construction, not a tolerance)."""
    from refsnn.blocks import _jit

    if not _jit.JIT_ENABLED:
        pytest.skip("numba is off: the kernels run as Python on one thread")
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread on this machine")
    rng = np.random.default_rng(5)
    T, B, H = 4, 64, 500
    monkeypatch.setattr(_jit, "OVER_BATCH_MIN", 0)
    shares = []
    real_submit = _jit._executor().submit
    monkeypatch.setattr(_jit._executor(), "submit", lambda *a: shares.append(1) or real_submit(*a))
    I = rng.normal(0.4, 0.6, (T, B, H))
    g = rng.normal(0, 1, (T, B, H))
    nrn = stbp._Neurons(lam=np.full(H, 0.3), kap=np.full(H, 0.7), c=np.zeros(H), thr=np.full(H, 0.5),
                        alpha=np.zeros(H))
    rule = stbp._Rule(reset=stbp.reset_piece(stbp.Config(reset="subtract")).code, v_reset=0.0, v_rest=0.0,
                      delayed=False, synapse=False, strict=True, smooth=False, detach=False, decay_input=False,
                      surrogate=4, width=1.0)
    dummy = np.zeros((1, 1, 1))
    outs = []
    for n in (1, 2):
        with _jit.limit_threads(n):
            u, o = stbp._lif_forward_kernel(I, nrn, rule, dummy, dummy)
            glam, gthr = np.zeros((B, H)), np.zeros((B, H))
            gI = stbp._lif_backward_kernel(g, (u, o, dummy, dummy), nrn, rule, glam, gthr)
        outs.append((u, o, gI, glam, gthr))
    assert len(shares) == 2           # two kernels, each with one share handed to the pool (one on this thread)
    for a, b in zip(*outs):
        assert np.array_equal(a, b)
