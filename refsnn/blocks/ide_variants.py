"""The official IDE code's variants, at the door of the paper's equations.

Xiao et al.'s paper trains ``W``, ``F``, ``b`` as they are; the official code (pkuxmq/IDE-FSNN) stores other
parameters and maps them to the ones the equations use: the feedback weight through spectral normalisation
(Eq. (SN), with the code's one power-iteration step, Eq. (PI)), and the input layer with BatchNorm folded into
it (Eq. (BN)).  Each variant here is a map from the stored to the effective parameters, applied once before
:mod:`refsnn.ide`'s equations, and its pullback, applied once after them to bring the gradient back to the
stored parameters.  (Dropout, Eq. (DO), acts inside the equations: it is data they take, a mask, or 1.)
Nothing here knows the rest of IDE: the operations are passed in (anything with the ``_Op`` methods of
:mod:`refsnn.ide`: ``w``, ``wgrad``, ``scaled``, ``channel_rows``, ``spec``).
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

__all__ = ["spectral_norm", "spectral_norm_backward", "power_step", "top_singular", "normalize",
           "fold_batchnorm", "batchnorm_backward", "SN_EPS", "BN_EPS"]

SN_EPS = 1e-12                       # torch.nn.functional.normalize's eps, as the code's power step
BN_EPS = 1e-5                        # PyTorch's BatchNorm1d/2d default


# ---------------------------------------------------------------------------
# Spectral normalisation of the feedback weight, Eq. (SN), (PI)
# ---------------------------------------------------------------------------

def top_singular(W):
    """``(sigma_max, u1, v1)`` of ``W`` from the top eigenpair of ``W^T W``."""
    from scipy.linalg import eigh

    n = W.shape[1]
    lam, V = eigh(W.T @ W, subset_by_index=[n - 1, n - 1])
    sigma = math.sqrt(max(float(lam[0]), 0.0))
    v1 = V[:, 0]
    u1 = W @ v1 / sigma if sigma > 0 else np.zeros(W.shape[0])
    return sigma, u1, v1


def normalize(z):
    """``z / max(||z||, 1e-12)``: ``torch.nn.functional.normalize``, as the code's power step."""
    return z / max(float(np.linalg.norm(z)), SN_EPS)


def power_step(Wr, u):
    """One power-iteration step from ``u`` and the estimate at the updated vectors: ``(sigma, u1, v1)`` (Eq. (PI))."""
    v1 = normalize(Wr.T @ u)                                          # Eq. (PI)
    u1 = normalize(Wr @ v1)                                           # Eq. (PI)
    return float(u1 @ (Wr @ v1)), u1, v1                               # Eq. (PI): sigma = u1^T W_raw v1

def spectral_norm(raw, g: float, c: float, method: str, sn_u, sn_vectors, operator_norm, name: str = "params"):
    """The effective feedback ``W = clamp(g, -c, c) W_raw / sigma`` (Eq. (SN)) and the record its pullback needs.

    ``raw`` is the stored operation ``W_raw``; ``sigma`` its largest singular value: exactly (``"exact"``,
    of the kernel reshaped along dim 0, as the code does), by the code's one power-iteration step from the
    stored ``sn_u`` (``"power"``, Eq. (PI); with ``sn_vectors = (u1, v1)`` those vectors are held fixed
    instead), or of the operation as a map (``"operator"``, ``operator_norm(raw)``).  Returns
    ``(W, (W_raw, g, s, sigma, u1, v1, dsigma/dW_raw))``.
    """
    Wr = raw.w
    s = min(max(g, -c), c)
    W2 = Wr.reshape(Wr.shape[0], -1)                                 # the code's reshape along dim 0
    if method == "power":
        if sn_vectors is None:
            sigma, u1, v1 = power_step(W2, sn_u)                     # Eq. (PI): one step from sn_u
        else:
            u1, v1 = sn_vectors
            sigma = float(u1 @ (W2 @ v1))                            # Eq. (PI), vectors held fixed
        if not sigma > 0:
            raise ValueError(f"{name}['sn_u']: the power-iteration estimate u1^T W v1 is {sigma:g}, not > 0 "
                             f"(sn_u all zeros or orthogonal to the range of W, or W all zeros)")
        dsigma = np.outer(u1, v1).reshape(Wr.shape)
    elif method == "operator":
        sigma, u1, v1 = operator_norm(raw)                           # ||W||_2 of the map itself
        if sigma <= 0:
            raise ValueError(f"{name}['W']: spectral normalisation needs a nonzero raw W, got all zeros")
        dsigma = raw.wgrad(u1[None], v1[None])                       # d sigma / d W_raw = u1^T (dW) v1
    else:
        sigma, u1, v1 = top_singular(W2)
        if sigma <= 0:
            raise ValueError(f"{name}['W']: spectral normalisation needs a nonzero raw W, got all zeros")
        dsigma = np.outer(u1, v1).reshape(Wr.shape)
    W = replace(raw, w=(s / sigma) * Wr)                             # Eq. (SN)
    return W, (Wr, g, s, sigma, u1, v1, dsigma)


def spectral_norm_backward(sn, GW, c: float, method: str) -> dict:
    """The pullback of Eq. (SN): from ``dL/dW`` (effective) to ``dL/dW_raw`` and ``dL/dg`` (``u1, v1`` held
    fixed, as torch's spectral norm does); the power iteration's vectors are state, their gradient 0."""
    Wr, g, s, sigma, u1, v1, dsigma = sn
    inner = float(np.sum(GW * Wr))
    out = {"W": (s / sigma) * (GW - (inner / sigma) * dsigma),        # Eq. (SN), chain rule, u1, v1 fixed
           "g": np.array(inner / sigma if -c <= g <= c else 0.0)}
    if method == "power":                                            # state: held constant, as torch does
        out["sn_u"], out["sn_v"] = np.zeros(u1.shape[0]), np.zeros(v1.shape[0])
    return out


# ---------------------------------------------------------------------------
# BatchNorm folded into the input layer, Eq. (BN)
# ---------------------------------------------------------------------------

def fold_batchnorm(net, xbar, mode: str):
    """Fold BatchNorm into an effective input layer: ``BN(F xbar + b) = F_e xbar + b_e`` (Eq. (BN)).

    ``r = gamma / sqrt(var + eps)``; ``F_e = diag(r) F``.  Batch mode:
    ``mean, var`` are the batch's (biased) statistics of ``F xbar`` and
    ``b_e = beta - r * mean`` (``b`` cancels exactly, as in any batch-mode
    BN).  Running mode: ``b_e = beta + r * (b - running_mean)`` with the
    running variance.  The simulation applies the same affine map to every
    step's current ``F x_t + b``; f uses it on ``xbar``.
    """
    if net.bn is None:
        return net
    gamma, beta, rmean, rvar = net.bn
    P = None
    if mode == "batch":
        P = _per_channel(net.F, net.F(xbar))                            # F xbar (b cancels), (B, C, positions)
        mean = P.mean(axis=(0, 2))                                      # per unit, or per channel (BatchNorm2d)
        var = np.mean((P - mean[None, :, None]) ** 2, axis=(0, 2))
        s = np.sqrt(var + BN_EPS)
        r = gamma / s
        b_e = beta - r * mean                                           # Eq. (BN), batch statistics
    else:
        mean, var = None, None
        s = np.sqrt(rvar + BN_EPS)
        r = gamma / s
        b_e = beta + r * (net.b - rmean)                                # Eq. (BN), running statistics
    fold = {"mode": mode, "F": net.F, "b": net.b, "r": r, "s": s, "mean": mean, "var": var, "xbar": xbar, "P": P}
    return replace(net, F=net.F.scaled(r), b=b_e, fold=fold)


def _per_channel(op, v):
    """Unit values ``v`` (B, n_out) as (B, channels, positions): one position per unit of a dense layer."""
    return v.reshape(v.shape[0], op.spec.channels, -1)


def batchnorm_backward(net, dF) -> dict:
    """Gradients of the raw ``F, b`` and of the BN parameters from ``dF`` (B, n_1), the gradient of the loss
    at the folded layer's current ``F_e xbar + b_e``.

    Batch mode: the raw weight's gradient is one product, ``(r dF + dP)^T xbar``: the folded weight's
    gradient ``dF^T xbar`` scaled by ``r`` per channel, plus the path through the batch statistics ``dP``.
    ``d/dr`` needs ``sum dF * (F xbar)``, and ``F xbar`` is the fold's ``P``: no second product."""
    fo = net.fold
    gamma, beta, rmean, rvar = net.bn
    F, r, s, xbar = fo["F"], fo["r"], fo["s"], fo["xbar"]              # F: the raw input operation
    gb = F.channel_sum(dF)                                              # dL/db_e
    out = {"bn_beta": gb}
    if fo["mode"] == "batch":
        P = fo["P"]                                                     # F xbar, (B, C, positions)
        dmean = -r * gb
        dr = F.channel_sum(dF * P.reshape(P.shape[0], -1)) - gb * fo["mean"]
        ds = -dr * gamma / s ** 2
        dvar = ds / (2 * s)
        M = P.shape[0] * P.shape[2]                                     # values per channel
        dP = dmean[None, :, None] / M + (2 * dvar)[None, :, None] * (P - fo["mean"][None, :, None]) / M
        out["F"] = F.wgrad(F.units(r)[None, :] * dF + dP.reshape(P.shape[0], -1), xbar)   # + through the stats
        out["b"] = np.zeros_like(gb)
        out["bn_mean"], out["bn_var"] = np.zeros_like(gb), np.zeros_like(gb)
    else:
        gF = F.wgrad(dF, xbar)                                          # dL/dF_e
        rows = F.channel_rows(gF * F.w)                                 # d(r F)/dr: one row per channel
        dr = rows.sum(axis=1) + gb * (fo["b"] - rmean)
        ds = -dr * gamma / s ** 2
        out["F"] = _scale_grad(F, gF, r)
        out["b"] = r * gb
        out["bn_mean"] = -r * gb
        out["bn_var"] = ds / (2 * s)
    out["bn_gamma"] = dr / s
    return out


def _scale_grad(F, gF, r):
    """The gradient of the raw weight from that of the channel-scaled one ``r F``: ``gF`` scaled per channel."""
    return replace(F, w=gF).scaled(r).w
