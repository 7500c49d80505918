"""The PyTorch golds: independent implementations of all four algorithms' graphs, differentiated by autograd.

Importing this module needs PyTorch (``pip install torch``, CPU build).  The
algorithm modules never import it: refsnn does not depend on torch at run
time.  The tests compare refsnn's hand-written backward passes with autograd of
the graphs below (float64), and ``refsnn bench stbp`` times the STBP one.

Each gold is written from the equations, not from refsnn's code:

* STBP (:func:`stbp_loss`): the official code's ``mem``/``spike`` loop with a
  custom autograd function for the spike, generalised to refsnn's options; the
  surrogates are re-typed in torch from the paper's formulas.
* IDE (:func:`ide_fixed_point_map`, :func:`ide_gradient_ift`,
  :func:`ide_gradient_unrolled`): the fixed-point map with torch's own
  spectral norm and batch norm, and the implicit gradient computed two ways.
* ST-RSBP (:func:`st_rsbp_frozen_gradient`): the frozen-timing linearised
  network solved with torch's solver, from the frozen coefficients.
* SSNN-BP (:func:`ssnn_bp_ann_gradient`): the ANN twin, whose gradient the
  spike-coincidence update estimates.

Every ``*_gradient`` function takes refsnn's parameter dict and returns
``(loss, grads)`` with NumPy arrays under refsnn's keys.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["surrogate_torch", "stbp_loss", "stbp_family_loss", "stbp_gradient", "tensors", "ide_fixed_point_map", "ide_gradient_ift",
           "ide_gradient_unrolled", "st_rsbp_frozen_gradient", "ssnn_bp_ann_gradient"]


def surrogate_torch(x: torch.Tensor, name: str, a: float) -> torch.Tensor:
    """h1..h4 of Wu et al. (2018), the peers' atan and fast sigmoid, and the official STBP code's window, in torch.

    atan is written as snnTorch and spikingjelly write it, with ``alpha = 2 / (pi a)``; fast_sigmoid as
    snnTorch's ``1 / (slope |x| + 1)^2`` with ``slope = 1 / a``; window as the official code's
    ``abs(u - thresh) < lens`` (height 1) with ``lens = a``.  Not from refsnn.blocks.surrogates.
    """
    if name == "atan":
        alpha = 2.0 / (math.pi * a)
        return (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)
    if name == "fast_sigmoid":
        return 1.0 / ((1.0 / a) * x.abs() + 1.0) ** 2
    if name == "rect":
        return (x.abs() < a / 2).to(x.dtype) / a
    if name == "window":
        return (x.abs() < a).to(x.dtype)
    if name == "triangle":
        return torch.clamp(math.sqrt(a) / 2 - (a / 4) * x.abs(), min=0.0)
    if name == "sigmoid":
        s = torch.sigmoid(x / a)
        return s * (1 - s) / a
    if name == "gauss":
        return torch.exp(-x * x / (2 * a)) / math.sqrt(2 * math.pi * a)
    raise ValueError(f"surrogate: unknown name {name!r}")


class _Spike(torch.autograd.Function):
    """Forward: Heaviside, strict '>' (the official ``ActFun``) or '>='. Backward: the surrogate."""

    @staticmethod
    def forward(ctx, x, name, a, strict=True):
        ctx.save_for_backward(x)
        ctx.name, ctx.a = name, a
        return (x > 0).to(x.dtype) if strict else (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * surrogate_torch(x, ctx.name, ctx.a), None, None, None


def stbp_loss(Ws, bs, x, y, *, v_th, decay, surrogate="rect", width=1.0, reset="code", detach_reset=False,
              loss="mse_mean"):
    """Loss of an STBP network built from torch tensors (autograd gives the STBP gradient).

    ``Ws[n]`` is ``(n_out, n_in)``, ``x`` is ``(T, batch, n_in)``, ``y`` integer labels.
    """
    T = x.shape[0]
    N = len(Ws)
    mem = [None] * N
    spike = [None] * N
    out_sum = 0.0
    for t in range(T):
        a = x[t]
        for n in range(N):
            current = a @ Ws[n].T + bs[n]
            if t == 0:
                m = current
            else:
                s = spike[n].detach() if detach_reset else spike[n]
                factor = decay * torch.exp(-s / decay) if reset in ("paper", "exp") else decay * (1.0 - s)
                m = mem[n] * factor + current
            spike[n] = _Spike.apply(m - v_th, surrogate, width)
            mem[n] = m
            a = spike[n]
        out_sum = out_sum + a
    obar = out_sum / T
    target = torch.nn.functional.one_hot(torch.as_tensor(y), obar.shape[1]).to(obar.dtype)
    if loss == "mse_paper":
        return 0.5 * ((obar - target) ** 2).sum() / obar.shape[0]
    return torch.nn.functional.mse_loss(obar, target)


# ---------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------

def _layer_value(value, n):
    return value[n] if isinstance(value, (tuple, list)) else value


def stbp_family_loss(tp: dict, x, y, cfg):
    """The loss of an STBP network of refsnn's whole neuron family, written in torch from the equations.

    ``tp`` holds torch tensors under refsnn's keys (``W1, b1, ...`` and ``beta{n}`` / ``tau_w{n}`` /
    ``thr{n}`` when ``cfg`` learns them), ``cfg`` is a ``refsnn.stbp.Config``.  One step of layer ``n``::

        I = W o_prev + b;  j = alpha j + I (current synapse);  v = lam r + kappa j + (1 - lam) v_rest
        u = v, or the delayed reset R(v, o of the last step);  o = H(u - v_th);  r = R(u, o) (immediate) or u

    The reset sees ``o.detach()`` when ``cfg.detach_reset``; torch's clamp and sigmoid give the chain rule
    of a learned decay.  With ``cfg.arch`` the synaptic input ``I`` is torch's ``conv2d``, ``avg_pool2d``,
    ``max_pool2d`` and a flatten (:func:`_torch_synapses`).  Autograd of this is the STBP gradient.
    """
    T = x.shape[0]
    synapse = _torch_synapses(tp, cfg, x.shape[1])
    N = sum(1 for k in tp if k[:1] == "W" and k[1:].isdigit())
    delayed = cfg.reset_timing == "delayed"

    def reset(u, o, lam, thr):
        if cfg.detach_reset:
            o = o.detach()
        if cfg.reset == "exp":
            return u * torch.exp(-o / lam)
        if cfg.reset == "zero":
            return u * (1 - o)
        if cfg.reset == "v_reset":
            return u * (1 - o) + cfg.v_reset * o
        if cfg.reset == "subtract":
            return u - thr * o
        return u

    consts = []
    for n in range(1, N + 1):
        if cfg.learn_decay == "clamp":
            lam = torch.clamp(tp[f"beta{n}"], 0.0, 1.0)
        elif cfg.learn_decay == "sigmoid":
            lam = 1 - torch.sigmoid(tp[f"tau_w{n}"])
        else:
            lam = torch.tensor(float(_layer_value(cfg.decay, n - 1)), dtype=x.dtype)
        kap = 1 - lam if cfg.decay_input else 1.0
        thr = tp[f"thr{n}"] if cfg.learn_threshold else float(_layer_value(cfg.v_th, n - 1))
        consts.append((lam, kap, thr, float(_layer_value(cfg.syn_decay, n - 1))))
    r = [None] * N
    j = [None] * N
    o_prev = [None] * N
    out_sum = 0.0
    for t in range(T):
        a = x[t]
        for n in range(N):
            lam, kap, thr, alpha = consts[n]
            I = synapse[n](a)
            j[n] = alpha * j[n] + I if (cfg.synapse == "current" and t > 0) else I
            r_prev = r[n] if t > 0 else cfg.v_rest
            v = lam * r_prev + kap * j[n] + (1 - lam) * cfg.v_rest
            u = reset(v, o_prev[n], lam, thr) if (delayed and t > 0) else v
            o = _Spike.apply(u - thr, cfg.surrogate, cfg.width, cfg.strict)
            r[n] = u if delayed else reset(u, o, lam, thr)
            o_prev[n] = o
            a = o
        out_sum = out_sum + a
    obar = out_sum / T
    target = torch.nn.functional.one_hot(torch.as_tensor(y), obar.shape[1]).to(obar.dtype)
    if cfg.loss == "mse_paper":
        return 0.5 * ((obar - target) ** 2).sum() / obar.shape[0]
    return torch.nn.functional.mse_loss(obar, target)


def _torch_synapses(tp: dict, cfg, batch: int) -> list:
    """Per layer, ``a (batch, n_below) -> I (batch, n_layer)``: ``a @ W.T + b``, or for ``cfg.arch`` torch's own
    pooling and ``conv2d`` on the maps (only the layer list comes from refsnn's parser; the operations,
    their output sizes and the flatten order are torch's)."""
    import torch.nn.functional as F

    N = sum(1 for k in tp if k[:1] == "W" and k[1:].isdigit())
    if cfg.arch is None:
        return [lambda a, W=tp[f"W{n}"], b=tp[f"b{n}"]: a @ W.T + b for n in range(1, N + 1)]
    from refsnn.stbp import parse_arch
    _, specs = parse_arch(cfg.arch)

    def layer(sp, W, b):
        def I(a):
            if len(sp.below_shape) == 3:
                a = a.reshape(batch, *sp.below_shape)
            if sp.pool is not None:
                a = (F.avg_pool2d if sp.pool[0] == "avg" else F.max_pool2d)(a, sp.pool[1])
            if sp.op == "conv":
                return F.conv2d(a, W, b, stride=sp.stride, padding=sp.pad).reshape(batch, -1)
            return a.reshape(batch, -1) @ W.T + b
        return I

    return [layer(sp, tp[f"W{n}"], tp[f"b{n}"]) for n, sp in enumerate(specs, start=1)]


def tensors(params: dict, requires_grad: bool = True) -> dict:
    """float64 leaf tensors of a refsnn parameter dict (same keys, same values)."""
    return {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=requires_grad) for k, v in params.items()}


def _grads(tp: dict, params: dict) -> dict:
    """``.grad`` of each tensor as NumPy (zeros where autograd left it None)."""
    return {k: np.zeros(np.shape(params[k])) if tp[k].grad is None else tp[k].grad.numpy().copy() for k in params}


def stbp_gradient(params, x, y, cfg) -> tuple:
    """``(loss, grads)`` of :func:`stbp_family_loss` for refsnn's STBP ``params`` and ``Config``, by autograd
    (float64)."""
    tp = tensors(params)
    loss = stbp_family_loss(tp, torch.tensor(np.asarray(x, dtype=np.float64)), y, cfg)
    loss.backward()
    return float(loss.item()), _grads(tp, params)


# ---------------------------------------------------------------------------
# IDE: the fixed-point map in torch, and the implicit gradient two independent ways
# ---------------------------------------------------------------------------

def ide_fixed_point_map(tp: dict, a, xbar, cfg):
    """Eq. (FP) in torch: ``f(a)`` of a feedback block (``a``, ``xbar`` flat: (batch, n)).

    The spectral norm (Eq. (SN)) uses torch's own matrix 2-norm (an SVD that autograd differentiates):
    of the weight reshaped along dim 0 (``sn_method="exact"``; for a convolution the code's choice), or
    of the whole operation as an explicit matrix (``"operator"``).  BatchNorm (Eq. (BN)) is torch's
    ``batch_norm`` in batch mode (per channel for a convolution, as ``BatchNorm2d``), the formula with the
    running statistics as tensors in running mode (so that they get gradients too).  With ``cfg.arch``
    the operations are torch's ``conv2d`` and ``conv_transpose2d`` (only the layer list comes from
    refsnn's parser).
    """
    F_ = torch.nn.functional
    B = a.shape[0]
    if cfg.arch is None:
        ops = [lambda h, w: h @ w.T] * (1 + sum(1 for k in tp if k[:1] == "F" and k[1:].isdigit()))
        fb = lambda h, w: h @ w.T                                    # noqa: E731
        shapes = None
    else:
        from refsnn.ide import parse_arch
        _, specs, wspec, _ = parse_arch(cfg.arch)

        def op(sp):
            def apply(h, w):
                H = h.reshape(h.shape[0], *sp.in_shape)
                if sp.kind == "conv":
                    Y = F_.conv2d(H, w, stride=sp.stride, padding=sp.pad)
                elif sp.kind == "convT":
                    Y = F_.conv_transpose2d(H, w, stride=sp.stride, padding=sp.pad, output_padding=sp.out_pad)
                else:
                    Y = H @ w.T
                return Y.reshape(h.shape[0], -1)
            return apply
        ops, fb = [op(sp) for sp in specs], op(wspec)
        shapes = [sp.out_shape for sp in specs]

    def add_bias(v, b, l):
        if shapes is None or len(shapes[l]) == 1:
            return v + b
        return (v.reshape(B, *shapes[l]) + b.reshape(1, -1, 1, 1)).reshape(B, -1)

    W = tp["W"]
    if cfg.spectral_norm is not None:
        c = cfg.spectral_norm
        if cfg.sn_method == "operator":                                      # the operation as a matrix
            M = W if cfg.arch is None else fb(torch.eye(int(np.prod(wspec.in_shape)), dtype=W.dtype), W).T
            sigma = torch.linalg.matrix_norm(M, ord=2)
        else:
            sigma = torch.linalg.matrix_norm(W.reshape(W.shape[0], -1), ord=2)
        W = torch.clamp(tp["g"], -c, c) * W / sigma
    P = add_bias(ops[0](xbar, tp["F"]), tp["b"], 0)
    if cfg.batchnorm:
        Pm = P if shapes is None or len(shapes[0]) == 1 else P.reshape(B, *shapes[0])
        if cfg.bn_mode == "batch":
            Pm = F_.batch_norm(Pm, None, None, tp["bn_gamma"], tp["bn_beta"], training=True, eps=1e-5)
        else:
            view = (1, -1) + (1,) * (Pm.dim() - 2)
            Pm = ((Pm - tp["bn_mean"].reshape(view)) / torch.sqrt(tp["bn_var"].reshape(view) + 1e-5)
                  * tp["bn_gamma"].reshape(view) + tp["bn_beta"].reshape(view))
        P = Pm.reshape(B, -1)
    h = torch.clamp((fb(a, W) + P) / cfg.v_th, 0, 1)
    l = 2
    while f"F{l}" in tp:
        h = torch.clamp(add_bias(ops[l - 1](h, tp[f"F{l}"]), tp[f"b{l}"], l - 1) / cfg.v_th, 0, 1)
        l += 1
    return h


def ide_gradient_ift(params, a0, xbar, y, cfg) -> tuple:
    """``(loss, grads)``: the implicit-function-theorem gradient at the linearisation point ``a0`` with torch's
    pieces: ``J`` from ``torch.autograd.functional.jacobian``, ``beta = solve(I - J^T, dL/da)``, then
    autograd of ``beta . f``."""
    tp = tensors(params)
    xbar = torch.tensor(np.asarray(xbar, dtype=np.float64))
    ta = torch.tensor(np.asarray(a0, dtype=np.float64), requires_grad=True)
    loss = torch.nn.functional.cross_entropy(ta @ tp["Wo"].T + tp["bo"], torch.as_tensor(y))
    dLda, gWo, gbo = torch.autograd.grad(loss, [ta, tp["Wo"], tp["bo"]])
    with torch.no_grad():
        frozen = {k: v.detach() for k, v in tp.items()}
        Jfull = torch.autograd.functional.jacobian(lambda a: ide_fixed_point_map(frozen, a, xbar, cfg), ta.detach())
        B, n = ta.shape
        J = torch.stack([Jfull[b, :, b, :] for b in range(B)])                 # samples are independent
        beta = torch.linalg.solve(torch.eye(n, dtype=torch.float64) - J.transpose(1, 2), dLda)
    out = ide_fixed_point_map(tp, ta.detach(), xbar, cfg)
    keys = [k for k in params if k not in ("Wo", "bo")]
    g = torch.autograd.grad(out, [tp[k] for k in keys], grad_outputs=beta, allow_unused=True)
    grads = {k: np.zeros(np.shape(params[k])) if v is None else v.numpy().copy() for k, v in zip(keys, g)}
    grads["Wo"], grads["bo"] = gWo.numpy().copy(), gbo.numpy().copy()
    return float(loss.item()), {k: grads[k] for k in params}


def ide_gradient_unrolled(params, a0, xbar, y, cfg, iterations: int = 120) -> tuple:
    """``(loss, grads)`` with no implicit differentiation at all: autograd through ``iterations`` steps of the
    anchored iteration ``a <- f(a) + r0`` from ``a0`` (``r0 = a0 - f(a0)``, so the value stays ``a0``).

    Its gradient is the Neumann series ``sum_{k < K} (J^T)^k`` of the implicit gradient: the remainder is at
    most ``||J||^K / (1 - ||J||)``, negligible for a contraction and enough iterations.
    """
    tp = tensors(params)
    xbar = torch.tensor(np.asarray(xbar, dtype=np.float64))
    a = torch.tensor(np.asarray(a0, dtype=np.float64))
    r0 = a - ide_fixed_point_map({k: v.detach() for k, v in tp.items()}, a, xbar, cfg)
    for _ in range(iterations):
        a = ide_fixed_point_map(tp, a, xbar, cfg) + r0
    loss = torch.nn.functional.cross_entropy(a @ tp["Wo"].T + tp["bo"], torch.as_tensor(y))
    loss.backward()
    return float(loss.item()), _grads(tp, params)


# ---------------------------------------------------------------------------
# ST-RSBP: the frozen-timing linearised network, built from its frozen coefficients
# ---------------------------------------------------------------------------

def st_rsbp_frozen_gradient(params, lins, y, cfg) -> tuple:
    """``(loss, grads)`` of the frozen-timing linearised network (Eq. (surrogate)) by autograd.

    ``lins[b][k-1]`` are the frozen coefficients (``E, K, D, b, o`` and, for
    recurrent or lateral layers, ``Er, Kr, Dr``) of sample ``b`` and layer ``k``,
    as :func:`refsnn.st_rsbp.linearise` returns them.  Each layer's counts
    solve ``nu o~ = sum_j W[E + K (o~prev - oprev) + D (o~ - o)] + sum_p Wr[Er +
    Kr (o~ - o) + Dr (o~ - o)] + b`` (written here from the equation, with
    torch's solver); absent recurrent synapses (zeros in ``params``) are not
    parameters; the output's lateral inhibition is ``-lateral`` between every
    pair.  No clamped ``S`` (``c = 0``) and no regulariser.
    """
    tp = tensors(params)
    T = lambda a: torch.tensor(np.asarray(a, dtype=np.float64))  # noqa: E731
    M = sum(1 for k in params if k.startswith("W") and k[1:].isdigit())
    n_out = np.shape(params[f"W{M}"])[0]
    lateral = -cfg.lateral * (torch.ones(n_out, n_out, dtype=torch.float64) - torch.eye(n_out, dtype=torch.float64))
    B = len(lins)
    total = 0.0
    for b in range(B):
        prev = torch.zeros(np.shape(params["W1"])[1], dtype=torch.float64)      # o~ - o of the layer below
        for k, lin in enumerate(lins[b], start=1):
            W = tp[f"W{k}"]
            if f"Wr{k}" in tp:
                Wr = tp[f"Wr{k}"] * T(np.asarray(params[f"Wr{k}"]) != 0)
            else:
                Wr = lateral if (k == M and cfg.lateral > 0 and n_out > 1) else None
            o = T(lin.o)
            A = lin.nu * torch.eye(len(o), dtype=torch.float64) - torch.diag((W * T(lin.D)).sum(1))
            rhs = (W * (T(lin.E) + T(lin.K) * prev[None, :] - T(lin.D) * o[:, None])).sum(1) + T(lin.b)
            if Wr is not None:
                A = A - torch.diag((Wr * T(lin.Dr)).sum(1)) - Wr * T(lin.Kr)
                rhs = rhs + (Wr * (T(lin.Er) - T(lin.Kr) * o[None, :] - T(lin.Dr) * o[:, None])).sum(1)
            o_t = torch.linalg.solve(A, rhs)
            prev = o_t - o
        Y = torch.full((n_out,), float(cfg.undesired), dtype=torch.float64)
        Y[int(y[b])] = float(cfg.desired)
        m = (torch.abs(T(lins[b][-1].o) - Y) > cfg.margin).double()            # the frozen margin mask
        total = total + 0.5 * (m * (o_t - Y) ** 2).sum()
    loss = total / B
    loss.backward()
    return float(loss.item()), _grads(tp, params)


# ---------------------------------------------------------------------------
# SSNN-BP: the ANN twin whose gradient the spikes estimate
# ---------------------------------------------------------------------------

def ssnn_bp_ann_gradient(params, x, y) -> tuple:
    """``(loss, grads)`` of the ANN (clip activations, softmax cross-entropy, batch mean) by autograd."""
    tp = tensors(params)
    L = len(params) // 2
    a = torch.tensor(np.asarray(x, dtype=np.float64))
    for n in range(1, L):
        a = torch.clamp(a @ tp[f"W{n}"].T + tp[f"b{n}"], 0.0, 1.0)
    loss = torch.nn.functional.cross_entropy(a @ tp[f"W{L}"].T + tp[f"b{L}"], torch.as_tensor(y))
    loss.backward()
    return float(loss.item()), _grads(tp, params)


# ---------------------------------------------------------------------------
# The STBP layer stack in PyTorch autograd
# ---------------------------------------------------------------------------
#
# refsnn.stbp_layers writes a network as a list of pieces, each with a hand-written pullback.  Below, each
# piece is written again as torch operations (float64) from the equations of its docstring, not from its
# code: torch's conv2d, pooling and batch_norm, a loop over the steps for every neuron population with the
# spike as _Spike (the Heaviside forward, the surrogate backward), and the losses from torch's cross_entropy
# and mse_loss.  Autograd of the result is the gradient refsnn's Network.loss_and_grad must equal.

__all__ += ["stack_loss_and_grad"]


def _stack_rows(a):
    """(T, B, *f) -> (T * B, *f)."""
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])


def _stack_reset(reset, u, o, lam, thr):
    """``R(u, o)`` of a :class:`refsnn.stbp_layers.Reset`, from its definition."""
    from refsnn import stbp_layers as sl

    if isinstance(reset, sl.ExpReset):
        return u * torch.exp(-o / lam)
    if isinstance(reset, sl.ZeroReset):
        return u * (1 - o)
    if isinstance(reset, sl.ToValue):
        return u * (1 - o) + reset.v_reset * o
    if isinstance(reset, sl.Subtract):
        return u - thr * o
    if isinstance(reset, sl.NoReset):
        return u
    raise NotImplementedError(f"reset: no torch form of {type(reset).__name__}")


def _stack_constant(tp: dict, spec):
    """A population constant: a number, a fixed per-neuron array, or a learned parameter ``(key, transform)``."""
    if isinstance(spec, tuple):
        key, how = spec
        if how == "clamp":
            return torch.clamp(tp[key], 0.0, 1.0)
        if how == "sigmoid":
            return 1 - torch.sigmoid(tp[key])
        if how == "identity":
            return tp[key]
        raise ValueError(f"transform: expected 'clamp', 'sigmoid' or 'identity', got {how!r}")
    return torch.as_tensor(np.asarray(spec, dtype=np.float64))


def _stack_population(piece, tp: dict, I):
    """A LIF population (or a leaky integrator) over the steps of ``I`` (T, B, *f): ``(u, o)``, ``o`` None if it
    never fires.  One step::

        I' = I + V o_prev + c (recurrent, o_prev = 0 at t = 0; c its bias, if any)
        j = alpha j + I' (synapse; else j = I')
        v = lam r + kappa j + (1 - lam) v_rest;  u = R(v, o_prev) (delayed, t >= 1) or v
        o = H(u - v_th);  r = R(u, o) (immediate) or u (delayed)

    with ``kappa = 1 - lam`` under ``decay_input`` and ``r = v_rest`` before the first step; the reset sees
    ``o.detach()`` when the neuron detaches it.
    """
    nrn = piece.neuron
    lam = _stack_constant(tp, piece.decay)
    thr = _stack_constant(tp, piece.threshold)
    alpha = None if piece.alpha is None else _stack_constant(tp, piece.alpha)
    kap = 1 - lam if nrn.decay_input else 1.0
    delayed = nrn.timing == "delayed"

    def reset(u, o):
        return _stack_reset(nrn.reset, u, o.detach() if nrn.detach else o, lam, thr)

    us, spikes = [], []
    r, j, o_prev = nrn.v_rest, None, torch.zeros_like(I[0])
    for t in range(I.shape[0]):
        inp = I[t]
        if piece.recurrent is not None:
            key, kind, bias = (*piece.recurrent, None)[:3]
            V = tp[key] * (1 - torch.eye(tp[key].shape[0], dtype=tp[key].dtype)) if kind == "all_no_autapses" else tp[key]
            inp = inp + (o_prev * V if kind == "one" else o_prev @ V.T)
            if bias is not None:
                inp = inp + tp[bias]
        j = alpha * j + inp if (alpha is not None and t > 0) else inp
        v = lam * r + kap * j + (1 - lam) * nrn.v_rest
        if not piece.spiking:                                  # a leaky integrator: no spike, no reset
            u = r = v
            us.append(u)
            continue
        u = reset(v, o_prev) if (delayed and t > 0) else v
        o = _Spike.apply(u - thr, nrn.surrogate, nrn.width, nrn.strict)
        r = u if delayed else reset(u, o)
        us.append(u)
        spikes.append(o)
        o_prev = o
    return torch.stack(us), (torch.stack(spikes) if piece.spiking else None)


def _stack_batchnorm(piece, tp: dict, buffers: dict, a):
    """torch's ``batch_norm`` over features (axis 2): ``(T, B)`` flattened into one batch (``over="time_batch"``)
    or called at every step in order (``"step"``); training statistics in ``mode="batch"`` (the running
    buffers in ``buffers`` updated in place), the buffers in ``mode="running"``."""
    def bn(z):
        return torch.nn.functional.batch_norm(z, buffers[piece.mean], buffers[piece.var], tp[piece.gamma],
                                              tp[piece.beta], training=piece.mode == "batch",
                                              momentum=piece.momentum, eps=piece.eps)
    if piece.over == "time_batch":
        return bn(_stack_rows(a)).reshape(a.shape)
    return torch.stack([bn(a[t]) for t in range(a.shape[0])])


def _stack_loss(loss, o, u, y):
    """The readout's loss, each kind written from the table of :class:`refsnn.stbp_layers.Loss`."""
    F = torch.nn.functional
    k = loss.kind
    if k == "custom":
        raise NotImplementedError("loss: a 'custom' loss has no torch form here (its gradient is the user's)")
    if k == "mse_membrane":
        return F.mse_loss(u, torch.as_tensor(np.asarray(y, dtype=np.float64)).expand_as(u))
    labels = torch.as_tensor(np.asarray(y), dtype=torch.long)
    if k == "ce_membrane_sum":
        return sum(F.cross_entropy(u[t], labels) for t in range(u.shape[0]))
    if k == "ce_membrane_max":
        return F.cross_entropy(u.max(dim=0).values, labels)
    if k == "ce_membrane_last":
        return F.cross_entropy(u[-1], labels)
    T, C = o.shape[0], o.shape[-1]
    onehot = F.one_hot(labels, C).to(o.dtype)
    obar, count = o.mean(dim=0), o.sum(dim=0)
    if k == "mse_rate_paper":
        return 0.5 * ((obar - onehot) ** 2).sum() / o.shape[1]
    if k == "mse_rate":
        return F.mse_loss(obar, onehot)
    if k == "mse_count":                       # snnTorch's mse_count_loss: targets int(T correct), int(T incorrect)
        want = int(T * loss.correct) * onehot + int(T * loss.incorrect) * (1 - onehot)
        return F.mse_loss(count, want) / T
    if k == "ce_rate":
        return F.cross_entropy(obar, labels)
    if k == "ce_count":
        return F.cross_entropy(count, labels)
    if k == "ce_per_step":
        return sum(F.cross_entropy(o[t], labels) for t in range(T)) / T
    raise ValueError(f"loss: unknown kind {k!r}")


def stack_forward(network, tp: dict, buffers: dict, a, y, masks=None) -> tuple:
    """The loss of :func:`stack_loss_and_grad` from tensors: ``tp`` the trainable parameters, ``buffers`` the
    BatchNorms' running statistics (updated in place in batch mode), ``a`` the input (T, batch, *features),
    ``masks`` the dropout masks.  Returns ``(loss, [(u, o) per population])``; written with torch operations
    only, so that ``torch.compile`` can take it (``refsnn bench stbp`` times it both ways)."""
    from refsnn import stbp_layers as sl

    F = torch.nn.functional
    populations = []
    for piece in network.pieces:
        T, B = a.shape[:2]
        if isinstance(piece, sl.Affine):
            a = a @ tp[piece.W].T + (tp[piece.b] if piece.b else 0.0)
        elif isinstance(piece, sl.Conv):
            out = F.conv2d(_stack_rows(a), tp[piece.W], tp[piece.b] if piece.b else None, stride=piece.stride,
                           padding=piece.pad)
            a = out.reshape(T, B, *out.shape[1:])
        elif isinstance(piece, sl.Pool):
            pool = F.max_pool2d if piece.kind == "max" else F.avg_pool2d
            out = pool(_stack_rows(a), piece.k) * (piece.k * piece.k if piece.kind == "sum" else 1)
            a = out.reshape(T, B, *out.shape[1:])
        elif isinstance(piece, sl.Flatten):
            a = a.reshape(T, B, -1)
        elif isinstance(piece, sl.Vote):                       # spikingjelly's VotingLayer: avg_pool1d over neurons
            a = F.avg_pool1d(_stack_rows(a)[:, None, :], piece.k, piece.k)[:, 0, :].reshape(T, B, -1)
        elif isinstance(piece, sl.BatchNorm):
            a = _stack_batchnorm(piece, tp, buffers, a)
        elif isinstance(piece, sl.Dropout):
            a = a * masks[piece.key]
        elif isinstance(piece, sl.LIF):
            u, o = _stack_population(piece, tp, a)
            populations.append((u, o))
            a = u if o is None else o
        else:
            raise NotImplementedError(f"pieces: no torch form of {type(piece).__name__}")
    u, o = populations[-1]
    o = a if o is not None else None                           # the spikes, or their readout (Vote, Pool)
    return _stack_loss(network.loss, o, u, y), populations


def stack_loss_and_grad(network, params, x, y, data=None, *, info=None) -> tuple:
    """``(loss, grads)`` of a :class:`refsnn.stbp_layers.Network` written again in torch, by autograd (float64).

    Every piece of ``network.pieces`` is applied to the whole sequence ``x`` (T, batch, *features): ``Affine``
    as ``a @ W.T + b``, ``Conv`` as ``conv2d``, ``Pool`` as ``avg_pool2d`` / ``max_pool2d`` (sum: the average
    times ``k^2``), ``Flatten`` as a reshape, ``BatchNorm`` as ``batch_norm``, ``Dropout`` as the product with
    ``data[key]``, ``LIF`` as the step loop of :func:`_stack_population`.  The last population's spikes and
    membrane are the readout.  ``grads`` has every key of ``params`` but the BatchNorm buffers (zeros where
    unused); ``info`` receives the updated buffers of the batch-mode BatchNorms (``"state"``) and every
    spiking population's spikes (``"spikes"``).  A ``"custom"`` loss raises NotImplementedError.
    """
    from refsnn import stbp_layers as sl

    data = data or {}
    norms = [p for p in network.pieces if isinstance(p, sl.BatchNorm)]
    buffer_keys = {k for p in norms for k in (p.mean, p.var)}
    trainable = {k: v for k, v in params.items() if k not in buffer_keys}
    tp = tensors(trainable)
    buffers = {k: torch.tensor(np.asarray(params[k], dtype=np.float64)) for k in buffer_keys}
    a = torch.tensor(np.asarray(x, dtype=np.float64))
    masks = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in data.items()}
    loss, populations = stack_forward(network, tp, buffers, a, y, masks)
    loss.backward()
    if info is not None:
        info["state"] = {k: buffers[k].numpy().copy() for p in norms if p.mode == "batch" for k in (p.mean, p.var)}
        info["spikes"] = [o.detach().numpy().copy() for _, o in populations if o is not None]
    return float(loss.item()), _grads(tp, trainable)
