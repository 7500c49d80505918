"""The official IDE code's F400 training step (pkuxmq/IDE-FSNN), re-typed in float64 PyTorch.

A port of another codebase, kept apart from refsnn's own PyTorch golds (``refsnn.checking.torch_golds``, written from
the equations): ``tests/test_ide_torch.py`` holds refsnn's ``PRESETS["code"]`` step equal to it, and
``refsnn bench ide`` times it beside refsnn's. Importing this module needs PyTorch.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["ide_code_power_step", "ide_code_broyden", "ide_code_training_step", "ide_code_eval_rates"]


# ---------------------------------------------------------------------------
# IDE: the official code's F400 training step (pkuxmq/IDE-FSNN), re-typed in float64 torch
# ---------------------------------------------------------------------------
#
# Written from the logic of the official code, not from refsnn: models/snn_ide_fc.py (SNNIDEFCNet: network_x
# = SNNFC(784, 400, bias, dropout, BN), network_s = SNNFC(400, 400, no bias, dropout) with _wnorm(1.)),
# modules/snn_modules.py (SNNFC.forward: fc -> BN -> drop; SNNIFFunc / SNNLIFFunc.snn_forward,
# equivalent_func), modules/optimizations.py (VariationalHidDropout2d, WeightSpectralNorm.compute_weight),
# modules/snnide_module.py (SNNIDEModule.forward with its Replace and Backward functions) and
# modules/broyden.py (broyden, with ls=False).  One training forward + backward, as fashionmnist_fc.py's
# train() runs it: model(inputs), CrossEntropyLoss, loss.backward().



def ide_code_power_step(W: torch.Tensor, u: torch.Tensor, eps: float = 1e-12):
    """``WeightSpectralNorm.compute_weight``'s power step (no_grad): ``v = normalize(W^T u)``, ``u = normalize(W v)``."""
    with torch.no_grad():
        v = torch.nn.functional.normalize(torch.mv(W.t(), u), dim=0, eps=eps)
        u = torch.nn.functional.normalize(torch.mv(W, v), dim=0, eps=eps)
    return u.clone(), v.clone()


def _code_matvec(Us, VTs, x):
    """``(-I + U V^T) x`` per sample; ``Us`` (B, n, k), ``VTs`` (B, k, n), ``x`` (B, n)."""
    if Us.numel() == 0:
        return -x
    return -x + torch.einsum("bik,bk->bi", Us, torch.einsum("bkj,bj->bk", VTs, x))


def _code_rmatvec(Us, VTs, x):
    """``x^T (-I + U V^T)`` per sample."""
    if Us.numel() == 0:
        return -x
    return -x + torch.einsum("bk,bkj->bj", torch.einsum("bi,bik->bk", x, Us), VTs)


def ide_code_broyden(g, x0: torch.Tensor, threshold: int, eps: float) -> dict:
    """The official ``broyden(g, x0, threshold, eps, ls=False)`` on ``g(x) = 0``, for (B, n) tensors.

    Inverse-Jacobian estimate ``-I + U V^T`` (Broyden's good method, one rank-one update per step, at
    most ``min(threshold, 27)`` kept in a ring); unit steps; the first step is ``-g(x0)``; stops when the
    norm of ``g`` over the *whole batch* drops below ``eps``, after ``threshold`` steps, or on the
    protective break; returns the iterate of lowest whole-batch residual.
    """
    B, n = x0.shape
    x_est = x0
    gx = g(x_est)
    nstep = 0
    L = min(threshold, 27)
    Us = torch.zeros(B, n, L, dtype=x0.dtype)
    VTs = torch.zeros(B, L, n, dtype=x0.dtype)
    update = -gx
    new_objective = init_objective = torch.norm(gx).item()
    trace = [init_objective]
    protect_thres = 1e6                     # 1e6 * n_elem, n_elem = 1 for the FC net
    lowest, lowest_xest, lowest_step = new_objective, x_est, 0
    prot_break = False
    while new_objective >= eps and nstep < threshold:
        x_new = x_est + update              # line_search(..., on=False): step 1
        gx_new = g(x_new)
        delta_x, delta_gx = x_new - x_est, gx_new - gx
        x_est, gx = x_new, gx_new
        nstep += 1
        new_objective = torch.norm(gx).item()
        trace.append(new_objective)
        if new_objective < lowest:
            lowest_xest, lowest, lowest_step = x_est.clone().detach(), new_objective, nstep
        if new_objective < eps:
            break
        if new_objective < 3 * eps and nstep > 30 and np.max(trace[-30:]) / np.min(trace[-30:]) < 1.3:
            break
        if new_objective > init_objective * protect_thres:
            prot_break = True
            break
        part_Us, part_VTs = Us[:, :, :nstep - 1], VTs[:, :nstep - 1]
        vT = _code_rmatvec(part_Us, part_VTs, delta_x)
        u = (delta_x - _code_matvec(part_Us, part_VTs, delta_gx)) / torch.einsum("bi,bi->b", vT, delta_gx)[:, None]
        vT[vT != vT] = 0
        u[u != u] = 0
        VTs[:, (nstep - 1) % L] = vT
        Us[:, :, (nstep - 1) % L] = u
        update = -_code_matvec(Us[:, :, :nstep], VTs[:, :nstep], gx)
    return {"result": lowest_xest, "nstep": nstep, "lowest_step": lowest_step, "trace": trace,
            "prot_break": prot_break}


class _CodeReplace(torch.autograd.Function):
    """``SNNIDEModule.Replace``: the value of the simulation, the gradient to both inputs."""

    @staticmethod
    def forward(ctx, z1, z1_r):
        return z1_r

    @staticmethod
    def backward(ctx, grad):
        return grad, grad


class _CodeBackward(torch.autograd.Function):
    """``SNNIDEModule.Backward``: identity forward; backward solves for ``beta`` with ``g(x) = J^T x - x + grad``
    (``J^T x`` from autograd of the frozen copy's ``f``), by the code's Broyden (``'broy'``) or by
    ``threshold`` steps of ``x <- (x + g(x)) / 2`` (any other solver name)."""

    @staticmethod
    def forward(ctx, f_copy, z1, solver, threshold, eps, record):
        ctx.save_for_backward(z1)
        ctx.f_copy, ctx.solver, ctx.threshold, ctx.eps, ctx.record = f_copy, solver, threshold, eps, record
        return z1.clone()

    @staticmethod
    def backward(ctx, grad):
        (z1,) = ctx.saved_tensors
        z = z1.clone().detach().requires_grad_()
        with torch.enable_grad():
            y = ctx.f_copy(z) - z

        def g(x):
            (gz,) = torch.autograd.grad(y, z, grad_outputs=x, retain_graph=True)
            return gz + grad

        B, n = grad.shape
        if ctx.solver == "broy":
            eps = 2e-10 * math.sqrt(B * n) if ctx.eps is None else ctx.eps
            res = ide_code_broyden(g, torch.zeros_like(grad), ctx.threshold, eps)
            beta = res["result"]
            ctx.record.update(nstep=res["nstep"], lowest_step=res["lowest_step"], trace=res["trace"])
        else:
            beta = grad
            for _ in range(ctx.threshold):
                beta = (beta + g(beta)) / 2.0
        ctx.record["beta"] = beta.detach().numpy().copy()
        return None, beta, None, None, None, None


def ide_code_training_step(params, x, y, masks, *, time_step=5, vth=2.0, leaky=None, threshold=30,
                           solver="broy", eps=None, norm_range=1.0, bn_momentum=0.1, bn_eps=1e-5) -> dict:
    """One training step of the official F400 net (``SNNIDEFCNet``, ``model.train()``), in float64.

    Parameters
    ----------
    params : dict
        refsnn's keys: ``F, b`` (``network_x.fc``), ``bn_gamma, bn_beta, bn_mean, bn_var``
        (``network_x.bn``), ``W, g, sn_u, sn_v`` (``network_s.fc``'s ``weight_w, weight_g, weight_u,
        weight_v``), ``Wo, bo`` (``classifier``).
    x : (batch, n_in) static input; ``y`` labels.
    masks : dict
        ``{"F": network_x.drop.mask, "W": network_s.drop.mask}``, each (batch, n_hidden): entries 0 or
        ``1/(1-p)`` (``VariationalHidDropout2d.reset_mask`` with ``spatial=False``).
    time_step, vth, leaky, threshold, solver, eps, norm_range :
        The code's names (``leaky=None`` is IF; ``threshold``: solver iterations; ``solver``: ``"broy"``
        or ``"iter"``; ``eps=None``: Broyden's ``2e-10 sqrt(batch n)``; ``norm_range``: the bound c).

    Returns
    -------
    dict with ``loss``; ``grads`` under refsnn's keys (zeros for the buffers); ``state``: the buffers
    after the step (``sn_u, sn_v``, and ``bn_mean, bn_var`` after the code's *two* BatchNorm updates);
    ``bn_first``: the running statistics after the first update only; ``a`` (the simulated rate);
    ``beta``; ``nstep`` (Broyden).
    """
    T = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    trainable = ["F", "b", "bn_gamma", "bn_beta", "W", "g", "Wo", "bo"]
    tp = {k: T(params[k]).requires_grad_() for k in trainable}
    running_mean, running_var = T(params["bn_mean"]).clone(), T(params["bn_var"]).clone()
    xt, yt = T(x), torch.as_tensor(np.asarray(y))
    mx, ms = T(masks["F"]), T(masks["W"])

    # _reset: WeightSpectralNorm.reset -> compute_weight (one power step on the buffers, then the weight);
    # the drop masks are given (reset_mask would draw them).
    u, v = ide_code_power_step(tp["W"].detach(), T(params["sn_u"]))
    sigma = torch.dot(u, torch.mv(tp["W"], v))
    W_eff = torch.clamp(tp["g"], -norm_range, norm_range) * tp["W"] / sigma

    def network_x(inp, W_F, b_F, gamma, beta_bn):          # SNNFC.forward: fc -> BN (train mode) -> drop
        h = inp @ W_F.T + b_F
        h = torch.nn.functional.batch_norm(h, running_mean, running_var, gamma, beta_bn, training=True,
                                           momentum=bn_momentum, eps=bn_eps)
        return mx * h

    def network_s(s, W):                                    # SNNFC.forward: fc (no bias) -> drop
        return ms * (s @ W.T)

    with torch.no_grad():                                   # SNNIDEModule.forward: snn_forward without a graph
        x1 = network_x(xt, tp["F"], tp["b"], tp["bn_gamma"], tp["bn_beta"])
        bn_first = {"bn_mean": running_mean.numpy().copy(), "bn_var": running_var.numpy().copy()}
        a = _code_snn_rates(x1, lambda s: network_s(s, W_eff), time_step, vth, leaky)

    # training branch: equivalent_func with the graph (BN statistics updated again here), Replace, Backward
    z1_out_ = torch.clamp((network_s(a, W_eff) + network_x(xt, tp["F"], tp["b"], tp["bn_gamma"],
                                                            tp["bn_beta"])) / vth, 0, 1)
    with torch.no_grad():                                   # snn_func_copy: the same weights, masks, BN batch
        W_copy = W_eff.detach().clone()                     # statistics (constant in z), no gradient
        P_copy = xt @ tp["F"].detach().T + tp["b"].detach()
        P_copy = torch.nn.functional.batch_norm(P_copy, None, None, tp["bn_gamma"].detach(),
                                                tp["bn_beta"].detach(), training=True, eps=bn_eps)

    def f_copy(z):
        return torch.clamp((ms * (z @ W_copy.T) + mx * P_copy) / vth, 0, 1)

    record = {}
    z = _CodeReplace.apply(z1_out_, a)
    z = _CodeBackward.apply(f_copy, z, solver, threshold, eps, record)
    logits = z @ tp["Wo"].T + tp["bo"]
    loss = torch.nn.functional.cross_entropy(logits, yt)
    loss.backward()
    grads = {k: np.zeros(np.shape(params[k])) for k in params}
    grads.update({k: tp[k].grad.numpy().copy() for k in trainable if tp[k].grad is not None})
    state = {"sn_u": u.numpy().copy(), "sn_v": v.numpy().copy(), "bn_mean": running_mean.numpy().copy(),
             "bn_var": running_var.numpy().copy()}
    return {"loss": float(loss.item()), "grads": grads, "state": state, "bn_first": bn_first,
            "a": a.numpy().copy(), "beta": record.get("beta"), "nstep": record.get("nstep")}


def _code_snn_rates(x1, feedback, time_step, vth, leaky):
    """The official net's ``snn_forward`` (no graph): IF (or leaky) neurons with subtract reset driven by the
    constant input current ``x1`` plus ``feedback(s)`` of the last step's spikes; returns the (weighted)
    average firing rate."""
    uu = x1
    s = (uu >= vth).to(x1.dtype)
    uu = uu - vth * s
    if leaky is not None:
        uu = uu * leaky
    acc = s
    for _ in range(time_step - 1):
        uu = uu + feedback(s) + x1
        s = (uu >= vth).to(x1.dtype)
        uu = uu - vth * s
        if leaky is not None:
            uu = uu * leaky
            acc = acc * leaky + s
        else:
            acc = acc + s
    return acc / time_step if leaky is None else acc / ((1 - leaky ** time_step) / (1 - leaky))


def ide_code_eval_rates(params, x, *, time_step=5, vth=2.0, leaky=None, norm_range=1.0, bn_eps=1e-5) -> dict:
    """The official net's eval forward (``model.eval()``): the power step still runs (``_reset``), BatchNorm
    uses the running statistics, nothing is dropped.  Returns ``{"a", "logits", "sn_u", "sn_v"}``."""
    T = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    with torch.no_grad():
        Wr = T(params["W"])
        u, v = ide_code_power_step(Wr, T(params["sn_u"]))
        W_eff = torch.clamp(T(params["g"]), -norm_range, norm_range) * Wr / torch.dot(u, torch.mv(Wr, v))
        h = T(x) @ T(params["F"]).T + T(params["b"])
        x1 = torch.nn.functional.batch_norm(h, T(params["bn_mean"]), T(params["bn_var"]), T(params["bn_gamma"]),
                                            T(params["bn_beta"]), training=False, eps=bn_eps)
        a = _code_snn_rates(x1, lambda s: s @ W_eff.T, time_step, vth, leaky)
        logits = a @ T(params["Wo"]).T + T(params["bo"])
    return {"a": a.numpy().copy(), "logits": logits.numpy().copy(), "sn_u": u.numpy().copy(),
            "sn_v": v.numpy().copy()}
