"""Independent PyTorch implementations of refsnn's graphs, for cross-checks and benchmarks only.

Importing this module needs PyTorch (``pip install torch``, CPU build).  No
other part of refsnn imports it: the library never depends on torch at run
time.  The tests compare refsnn's hand-written backward passes with PyTorch
autograd of the graphs below, and ``refsnn bench stbp`` times them.

The STBP graph here is written the way the official code writes it (a
``mem``/``spike`` loop with a custom autograd function for the spike),
generalised to refsnn's options.  It shares no code with ``refsnn.stbp``: the
surrogates are re-typed in torch from the paper's formulas.
"""

from __future__ import annotations

import math

import torch

__all__ = ["surrogate_torch", "stbp_loss"]


def surrogate_torch(x: torch.Tensor, name: str, a: float) -> torch.Tensor:
    """h1..h4 of Wu et al. (2018) in torch, from the formulas (not from refsnn.surrogates)."""
    if name == "rect":
        return (x.abs() < a / 2).to(x.dtype) / a
    if name == "triangle":
        return torch.clamp(math.sqrt(a) / 2 - (a / 4) * x.abs(), min=0.0)
    if name == "sigmoid":
        s = torch.sigmoid(x / a)
        return s * (1 - s) / a
    if name == "gauss":
        return torch.exp(-x * x / (2 * a)) / math.sqrt(2 * math.pi * a)
    raise ValueError(f"surrogate: unknown name {name!r}")


class _Spike(torch.autograd.Function):
    """Forward: Heaviside with a strict '>' (the official ``ActFun``). Backward: the surrogate."""

    @staticmethod
    def forward(ctx, x, name, a):
        ctx.save_for_backward(x)
        ctx.name, ctx.a = name, a
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * surrogate_torch(x, ctx.name, ctx.a), None, None


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
                factor = decay * torch.exp(-s / decay) if reset == "paper" else decay * (1.0 - s)
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
