r"""STBP: spatio-temporal backpropagation with a surrogate spike derivative.

Wu, Deng, Li, Zhu, Shi, "Spatio-Temporal Backpropagation for Training
High-Performance Spiking Neural Networks", Front. Neurosci. 12:331 (2018).
The derivation is written out in ``docs/stbp.md``.

The model
---------
A fully connected network of iterative LIF layers ``n = 1..N``.  At every
time step ``t`` (the paper's iterative LIF model)::

    u^{t,n} = u^{t-1,n} * f(o^{t-1,n}) + W^n o^{t,n-1} + b^n      # Eq. (u): leak and reset in f
    o^{t,n} = H(u^{t,n} - v_th)                                    # Eq. (o): spike on u > v_th (strict)

with ``u^{0,n} = 0, o^{0,n} = 0`` and ``o^{t,0} = x[t]`` the encoded input.
``f`` folds leak and reset into one factor (``Config.reset``):

* ``"paper"``: ``f(o) = tau * exp(-o / tau)`` with ``tau = decay``
  (``f(0) = tau`` is the leak, ``f(1) ~ 0`` the reset), ``f'(o) = -exp(-o/tau)``;
* ``"code"``: the official code's linearisation ``f(o) = decay * (1 - o)``,
  ``f'(o) = -decay``.

The readout is the output layer's firing rate ``obar = (1/T) sum_t o^{t,N}``
and the loss (``Config.loss``) is

* ``"mse_paper"``: ``L = 1/(2S) sum_s ||y_s - obar_s||^2`` (Eq. (L), the paper's loss);
* ``"mse_mean"``: PyTorch ``MSELoss()``, the mean of ``(obar - y)^2`` over
  batch and classes, as in the official code (``= (2/C) * mse_paper``).

The backward pass (the exact form)
----------------------------------
``H`` has no useful derivative, so ``dH/du`` is replaced by a surrogate
``h(u - v_th)`` (``refsnn.surrogates``).  Back-propagating through the
unrolled graph (BPTT) gives, with ``delta = dL/do`` and ``eps = dL/du``::

    delta^{t,N}  = (dL/dobar) / T                                   # Eq. (B1): readout
    delta^{t,n}  = (W^{n+1})^T eps^{t,n+1}                          # Eq. (B2): spatial (SD) path
    delta^{t,n} += eps^{t+1,n} * u^{t,n} * f'(o^{t,n})    (t < T)   # Eq. (B3): temporal path via the reset
    eps^{t,n}    = delta^{t,n} * h(u^{t,n} - v_th)
                 + eps^{t+1,n} * f(o^{t,n})               (t < T)   # Eq. (B4): temporal path via the leak
    dL/dW^n = sum_t eps^{t,n} (o^{t,n-1})^T,  dL/db^n = sum_t eps^{t,n}   # Eq. (B5)

``detach_reset=True`` drops Eq. (B3), as snnTorch does and spikingjelly's
``detach_reset=True``.  The paper's printed temporal term uses
``delta^{t+1}*h(u^{t+1})`` instead of ``eps^{t+1}``, which drops the
``u^{t+1} -> u^{t+2}`` path; refsnn implements the exact chain rule, which is
what autograd (and so the official code) computes (``docs/stbp.md``).

What the gradient is exactly the derivative of
----------------------------------------------
``reference_objective`` builds the *smoothed network anchored at the spikes*:
the same forward pass, but every spike is replaced by

    o^{t,n}(theta') = o0^{t,n} + P(u^{t,n}(theta') - v_th) - P(u0^{t,n} - v_th)

where ``P`` is the primitive of the surrogate (``P' = h``) and ``u0, o0`` are
the membrane potentials and spikes of the forward pass at ``params``.  At
``theta' = params`` it *is* the spiking network (same loss value); its exact
derivative there is the surrogate gradient above.  This is the construction
``o = H(u).detach() + P(u) - P(u).detach()`` that makes autograd compute a
surrogate gradient.  With ``Config(forward="smooth")`` the network itself is
the smoothed model (``o = P(u - v_th)`` everywhere) and
``reference_objective`` is that model unchanged.  With ``detach_reset`` the
reset factor is frozen at ``f(o0)`` in both.  Finite differences of it must
match ``loss_and_grad`` (``tests/test_stbp.py``); for "rect" and "triangle"
keep every ``u - v_th`` away from the kinks of ``P`` (:func:`kink_distance`).

Two tiers
---------
``backend="numpy"`` runs :func:`forward_numpy` / :func:`backward_numpy`, which
loop over time and layers exactly in the order of the equations above.
``backend="numba"`` (default) computes the same thing layer by layer: since
layer ``n`` at step ``t`` needs only layer ``n-1`` at step ``t`` and its own
step ``t-1``, all ``T`` steps of one layer can run before the next layer, so
each layer's synaptic input is one matrix product over ``T*batch`` rows and
only the element-wise time recursions (:func:`_lif_forward_kernel`,
:func:`_lif_backward_kernel`) remain, as numba kernels.  Both tiers agree to
float64 round-off (``tests/test_stbp.py``).

Notation differences from the paper
-----------------------------------
* The equation labels (u), (o), (L), (B1)-(B5) are refsnn's own.  The paper's body could
  not be checked while writing this module, so its equation numbers are not quoted;
  ``docs/stbp.md`` maps each label to the paper's and the official code's form.
* Time runs ``t = 0..T-1`` in code (``1..T`` in the paper); the first step has
  no carried potential (``u^{0} = 0``).
* ``decay`` is the paper's ``tau`` (its "decay factor"); ``v_th`` is ``V_th``;
  the surrogate width ``width`` is the paper's ``a_1..a_4``.
* Weights are stored ``(n_out, n_in)``: ``W^n`` maps layer ``n-1`` to ``n``.
  Parameter keys are ``W1, b1, ..., WN, bN``.
* Arrays carry a batch axis: ``x[t, s, j]``, ``u[n][t, s, i]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np

from refsnn import encoding, surrogates
from refsnn._checks import (
    as_generator,
    check_array,
    check_choice,
    check_config,
    check_in_range,
    check_int,
    check_labels,
    check_layers,
    check_positive,
    check_sizes,
    check_time_major,
)
from refsnn._jit import njit

__all__ = [
    "Config",
    "PRESETS",
    "init_params",
    "loss_and_grad",
    "reference_objective",
    "predict",
    "encode",
    "simulate",
    "input_gradient",
    "forward_numpy",
    "backward_numpy",
    "kink_distance",
    "leak_reset",
    "leak_reset_prime",
    "spike_rule",
    "anchored_rule",
]

RESETS = ("paper", "code")
LOSSES = ("mse_paper", "mse_mean")


@dataclass(frozen=True)
class Config:
    """Settings of an STBP network.  Every field is validated on construction.

    Parameters
    ----------
    v_th : float
        Firing threshold ``V_th`` (> 0).  A neuron spikes when ``u > v_th``.
    decay : float
        Leak factor ``tau`` in (0, 1]: the fraction of the membrane potential
        carried to the next step when the neuron did not spike.
    surrogate : {"rect", "triangle", "sigmoid", "gauss"}
        The surrogate derivative ``h`` of the spike (h1..h4 of the paper).
    width : float
        Its width ``a`` (> 0); the official code's window is rect, ``a = 1``.
    reset : {"paper", "code"}
        Leak/reset factor ``f(o)``: ``tau*exp(-o/tau)`` (paper) or
        ``decay*(1-o)`` (official code).  Same values at o in {0,1} up to
        ``tau*e^{-1/tau}``; different derivatives.
    detach_reset : bool
        Drop the gradient path through the reset factor (Eq. (B3)).  The paper
        and the official code keep it (False); snnTorch always detaches.
    loss : {"mse_paper", "mse_mean"}
        ``1/(2S) sum ||y - obar||^2`` (paper) or the mean over batch and
        classes (PyTorch ``MSELoss``, the official code).
    T : int
        Time steps produced by :func:`encode` (``loss_and_grad`` takes ``T``
        from ``x``).
    encoding : {"bernoulli", "direct"}
        How :func:`encode` presents static inputs: fresh Bernoulli spikes
        with probability = intensity at every step (paper and official conv
        code), or the analog value at every step (official FC MNIST code).
    forward : {"spike", "smooth"}
        ``"spike"`` is the spiking network.  ``"smooth"`` replaces every
        ``H`` by the surrogate's primitive: a differentiable network whose
        exact gradient the same backward pass computes.
    init : {"paper", "torch"}
        ``"paper"``: ``W ~ U[-1, 1]`` with each row scaled to unit l2 norm,
        ``b = 0``.  ``"torch"``: PyTorch's ``nn.Linear`` default,
        ``U(-1/sqrt(n_in), 1/sqrt(n_in))`` for ``W`` and ``b``.
    dtype : {"float64", "float32"}
        Precision of the simulation and gradient.
    backend : {"numba", "numpy"}
        The fast layer-major kernels or the readable step-major twin.
    """

    v_th: float = 1.5
    decay: float = 0.1
    surrogate: str = "rect"
    width: float = 1.0
    reset: str = "paper"
    detach_reset: bool = False
    loss: str = "mse_paper"
    T: int = 30
    encoding: str = "bernoulli"
    forward: str = "spike"
    init: str = "paper"
    dtype: str = "float64"
    backend: str = "numba"

    def __post_init__(self):
        object.__setattr__(self, "v_th", check_positive("v_th", self.v_th))
        object.__setattr__(self, "decay", check_in_range("decay", self.decay, 0.0, 1.0, lo_open=True))
        check_choice("surrogate", self.surrogate, surrogates.NAMES)
        object.__setattr__(self, "width", check_positive("width", self.width))
        check_choice("reset", self.reset, RESETS)
        if not isinstance(self.detach_reset, (bool, np.bool_)):
            raise TypeError(f"detach_reset: expected True or False, got {self.detach_reset!r}")
        check_choice("loss", self.loss, LOSSES)
        object.__setattr__(self, "T", check_int("T", self.T, minimum=1))
        check_choice("encoding", self.encoding, ("bernoulli", "direct"))
        check_choice("forward", self.forward, ("spike", "smooth"))
        check_choice("init", self.init, ("paper", "torch"))
        check_choice("dtype", self.dtype, ("float64", "float32"))
        check_choice("backend", self.backend, ("numba", "numpy"))

    def to_dict(self) -> dict:
        return asdict(self)


#: The two reference settings.  ``paper``: the MNIST row of the
#: paper's Table 1 (V_th 1.5, tau 0.1, T 30; recalled values), its
#: f, loss and init.  ``code``: the official PyTorch code (thresh 0.5, decay
#: 0.2, T 20, rect window lens 0.5 = width 1, MSELoss, reset not detached,
#: PyTorch default init, Bernoulli input).
PRESETS = {
    "paper": Config(v_th=1.5, decay=0.1, surrogate="rect", width=1.0, reset="paper", detach_reset=False,
                    loss="mse_paper", T=30, encoding="bernoulli", init="paper"),
    "code": Config(v_th=0.5, decay=0.2, surrogate="rect", width=1.0, reset="code", detach_reset=False,
                   loss="mse_mean", T=20, encoding="bernoulli", init="torch"),
}


# ---------------------------------------------------------------------------
# Parameters and argument checks
# ---------------------------------------------------------------------------

def init_params(sizes, cfg: Config = Config(), rng=0) -> dict:
    """Initial weights for a fully connected net ``sizes = [n_in, h1, ..., n_out]``.

    Returns ``{"W1": (h1, n_in), "b1": (h1,), ..., "WN": (n_out, h_{N-1}), "bN": (n_out,)}``
    in float64, initialised as ``cfg.init`` says.
    """
    cfg = check_config(cfg, Config)
    sizes = check_sizes(sizes)
    rng = as_generator(rng)
    params = {}
    for n, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        if cfg.init == "paper":
            W = rng.uniform(-1.0, 1.0, (n_out, n_in))
            W /= np.sqrt((W ** 2).sum(axis=1, keepdims=True))  # each row to unit norm
            b = np.zeros(n_out)
        else:
            bound = 1.0 / math.sqrt(n_in)
            W = rng.uniform(-bound, bound, (n_out, n_in))
            b = rng.uniform(-bound, bound, n_out)
        params[f"W{n}"], params[f"b{n}"] = W, b
    return params


def _layers(params, name="params"):
    """``(Ws, bs)`` of ``{W1, b1, ..., WN, bN}``, names and shapes checked."""
    return check_layers(params, name)


def _check_x(x, n_in: int) -> np.ndarray:
    x = check_array("x", x)
    check_time_major("x", x, n_in, layer="W1 has shape (h1, {n_in})")
    return x


def _prepare(params, x, cfg):
    cfg = check_config(cfg, Config)
    Ws, bs = _layers(params)
    x = _check_x(x, Ws[0].shape[1])
    dt = np.dtype(cfg.dtype)
    return [W.astype(dt, copy=False) for W in Ws], [b.astype(dt, copy=False) for b in bs], x.astype(dt, copy=False), cfg


# ---------------------------------------------------------------------------
# The neuron's pieces: leak/reset factor f and its derivative, the firing rules
# ---------------------------------------------------------------------------
# f and f' are written once, with operations that work on a number (inside the
# numba kernels) and on an array (in the readable twin) alike.

@njit
def leak_reset(o, decay, paper_reset):
    """``f(o)`` of Eq. (u): ``tau*exp(-o/tau)`` (paper, ``tau = decay``) or ``decay*(1-o)`` (code)."""
    if paper_reset:
        return decay * np.exp(-o / decay)
    return decay * (1.0 - o)


@njit
def leak_reset_prime(o, decay, paper_reset):
    """``f'(o)``, used by Eq. (B3): ``-exp(-o/tau)`` (paper) or the constant ``-decay`` (code)."""
    if paper_reset:
        return -np.exp(-o / decay)
    return 0.0 * o - decay


def spike_rule(cfg: Config):
    """The firing rule of the network ``cfg`` describes: ``fire(n, t, u) -> o^{t,n}``.

    ``forward="spike"``: Eq. (o), ``H(u - v_th)`` with a strict ``>``.
    ``forward="smooth"``: ``P(u - v_th)``, the surrogate's primitive.
    """
    if cfg.forward == "smooth":
        return lambda n, t, u: surrogates.primitive(u - cfg.v_th, cfg.surrogate, cfg.width)
    return lambda n, t, u: (u > cfg.v_th).astype(u.dtype)                         # Eq. (o)


def anchored_rule(cfg: Config, u0, o0):
    """The firing rule of :func:`reference_objective`'s network, anchored at a forward pass ``(u0, o0)``.

    ``o^{t,n} = o0 + P(u - v_th) - P(u0 - v_th)``: equal to the spikes ``o0``
    at ``u = u0``, with derivative ``h(u - v_th)``.  For ``forward="smooth"``
    the network is smooth already and the rule is :func:`spike_rule`'s.
    """
    if cfg.forward == "smooth":
        return spike_rule(cfg)

    def P(v):
        return surrogates.primitive(v - cfg.v_th, cfg.surrogate, cfg.width)

    return lambda n, t, u: o0[n][t] + P(u) - P(u0[n][t])


# ---------------------------------------------------------------------------
# Readable twin: step-major loops that follow the equations line by line
# ---------------------------------------------------------------------------

def forward_numpy(params, x, cfg: Config, *, fire=None, reset_spikes=None):
    """Simulate the network, looping over time, then layers (the paper's order).

    Parameters
    ----------
    params : dict
        ``W1, b1, ..., WN, bN``.
    x : ndarray, shape (T, batch, n_in)
        Input spikes or currents, ``o^{t,0}``.
    cfg : Config
    fire : callable, optional
        ``fire(n, t, u) -> o^{t,n}``, the firing rule of layer ``n`` at step
        ``t`` (0-based); default :func:`spike_rule` of ``cfg``.
        :func:`reference_objective` passes :func:`anchored_rule`.
    reset_spikes : list of (T, batch, n_layer) arrays, optional
        Spikes to take the reset factor ``f(o^{t-1,n})`` from instead of the
        network's own (a detached reset: :func:`reference_objective` freezes it
        at the forward pass's spikes when ``cfg.detach_reset``).

    Returns
    -------
    u, o : list of ndarray, each (T, batch, n_layer)
        Membrane potentials (before reset, the value compared with
        ``v_th``) and spikes of every layer.
    """
    Ws, bs, x, cfg = _prepare(params, x, cfg)
    fire = spike_rule(cfg) if fire is None else fire
    paper = cfg.reset == "paper"
    T, B = x.shape[:2]
    N = len(Ws)
    u = [np.zeros((T, B, W.shape[0]), x.dtype) for W in Ws]
    o = [np.zeros_like(un) for un in u]
    for t in range(T):
        a = x[t]                                                    # o^{t,0}
        for n in range(N):
            if t > 0:
                o_prev = (o if reset_spikes is None else reset_spikes)[n][t - 1]
                carry = u[n][t - 1] * leak_reset(o_prev, cfg.decay, paper)   # u^{t-1,n} f(o^{t-1,n})
            else:
                carry = 0.0                                         # u^{0,n} = 0
            u[n][t] = carry + (a @ Ws[n].T + bs[n])                 # Eq. (u)
            o[n][t] = fire(n, t, u[n][t])                           # Eq. (o), or its smoothed stand-in
            a = o[n][t]
    return u, o


def backward_numpy(params, x, u, o, g_obar, cfg: Config):
    """Exact BPTT through the surrogate graph, step-major (Eq. (B1)-(B5)).

    Parameters
    ----------
    params, x, cfg
        As for :func:`forward_numpy`.
    u, o : lists of (T, batch, n_layer) arrays
        From :func:`forward_numpy`.
    g_obar : ndarray, shape (batch, n_out)
        ``dL/dobar``, the loss gradient with respect to the output rate.

    Returns
    -------
    grads : dict
        ``dL/dW^n`` and ``dL/db^n`` for every layer.
    g_x : ndarray, shape (T, batch, n_in)
        ``dL/dx``, the gradient with respect to the input.
    """
    Ws, bs, x, cfg = _prepare(params, x, cfg)
    paper = cfg.reset == "paper"
    T = x.shape[0]
    N = len(Ws)
    h = lambda v: surrogates.h(v - cfg.v_th, cfg.surrogate, cfg.width)  # noqa: E731
    gW = [np.zeros_like(W) for W in Ws]
    gb = [np.zeros_like(b) for b in bs]
    g_x = np.zeros_like(x)
    eps_next = [None] * N                                           # eps^{t+1,n}
    for t in reversed(range(T)):
        delta = g_obar / T                                          # Eq. (B1)
        for n in reversed(range(N)):
            a = x[t] if n == 0 else o[n - 1][t]                     # o^{t,n-1}
            if t < T - 1 and not cfg.detach_reset:
                delta = delta + eps_next[n] * u[n][t] * leak_reset_prime(o[n][t], cfg.decay, paper)   # Eq. (B3)
            eps = delta * h(u[n][t])                                # Eq. (B4), spatial part
            if t < T - 1:
                eps = eps + eps_next[n] * leak_reset(o[n][t], cfg.decay, paper)                       # Eq. (B4), temporal
            gW[n] += eps.T @ a                                      # Eq. (B5)
            gb[n] += eps.sum(axis=0)
            delta = eps @ Ws[n]                                     # Eq. (B2): dL/do^{t,n-1}
            eps_next[n] = eps
        g_x[t] = delta
    grads = {}
    for n in range(N):
        grads[f"W{n + 1}"], grads[f"b{n + 1}"] = gW[n], gb[n]
    return grads, g_x


# ---------------------------------------------------------------------------
# Fast tier: layer-major, numba kernels for the element-wise time recursions
# ---------------------------------------------------------------------------

@njit
def _lif_forward_kernel(I, v_th, decay, paper_reset, smooth, kind, width):
    """All ``T`` steps of one layer: ``u[t] = u[t-1] f(o[t-1]) + I[t]``, ``o[t] = H(u[t] - v_th)``.

    ``I`` (T, B, H) is the layer's synaptic input ``W o^{t,n-1} + b`` for all steps.
    Same arithmetic, in the same order, as :func:`forward_numpy`.
    """
    T, B, H = I.shape
    u = np.empty_like(I)
    o = np.empty_like(I)
    for s in range(B):               # the innermost loop walks contiguous memory
        for t in range(T):
            for i in range(H):
                if t == 0:
                    ut = 0.0 + I[0, s, i]
                else:
                    ut = u[t - 1, s, i] * leak_reset(o[t - 1, s, i], decay, paper_reset) + I[t, s, i]   # Eq. (u)
                u[t, s, i] = ut
                if smooth:
                    o[t, s, i] = surrogates.primitive_scalar(kind, width, ut - v_th)
                else:
                    o[t, s, i] = 1.0 * (ut > v_th)   # Eq. (o), branch-free H(u - v_th), strict '>'
    return u, o


@njit
def _lif_backward_kernel(g, u, o, v_th, decay, paper_reset, detach, kind, width):
    """Reverse time recursion of one layer: ``eps = dL/du`` from ``g = dL/do`` (spatial part).

    Eq. (B3)-(B4) for all steps, in the same order as :func:`backward_numpy`.
    """
    T, B, H = u.shape
    eps = np.empty_like(u)
    for s in range(B):
        for t in range(T - 1, -1, -1):
            for i in range(H):
                ut = u[t, s, i]
                ot = o[t, s, i]
                d = g[t, s, i]
                if t < T - 1:
                    e_next = eps[t + 1, s, i]                                   # eps^{t+1}
                    if not detach:
                        d = d + e_next * ut * leak_reset_prime(ot, decay, paper_reset)    # Eq. (B3)
                e = d * surrogates.h_scalar(kind, width, ut - v_th)            # Eq. (B4), spatial part
                if t < T - 1:
                    e = e + e_next * leak_reset(ot, decay, paper_reset)        # Eq. (B4), temporal part
                eps[t, s, i] = e
    return eps


def _kernel_args(cfg):
    return (cfg.v_th, cfg.decay, cfg.reset == "paper")


def _forward_fast(Ws, bs, x, cfg):
    T, B = x.shape[:2]
    u, o = [], []
    a = x
    kind = surrogates.KIND_CODES[cfg.surrogate]
    for W, b in zip(Ws, bs):
        I = (a.reshape(T * B, -1) @ W.T).reshape(T, B, -1) + b      # W o^{t,n-1} + b, every t at once
        un, on = _lif_forward_kernel(I, *_kernel_args(cfg), cfg.forward == "smooth", kind, cfg.width)
        u.append(un)
        o.append(on)
        a = on
    return u, o


def _backward_fast(Ws, x, u, o, g_obar, cfg, input_grad=False):
    """Layer-major Eq. (B1)-(B5); ``dL/dx`` (one more matrix product) only when ``input_grad``."""
    T, B = x.shape[:2]
    N = len(Ws)
    kind = surrogates.KIND_CODES[cfg.surrogate]
    grads = {}
    g = np.broadcast_to(g_obar / T, (T,) + g_obar.shape)             # Eq. (B1) at every t
    for n in reversed(range(N)):
        eps = _lif_backward_kernel(np.ascontiguousarray(g), u[n], o[n], *_kernel_args(cfg),
                                   cfg.detach_reset, kind, cfg.width)
        a = x if n == 0 else o[n - 1]
        e2 = eps.reshape(T * B, -1)
        grads[f"W{n + 1}"] = e2.T @ a.reshape(T * B, -1)             # Eq. (B5), summed over t and batch
        grads[f"b{n + 1}"] = e2.sum(axis=0)
        g = (e2 @ Ws[n]).reshape(T, B, -1) if n > 0 or input_grad else None   # Eq. (B2)
    return dict(sorted(grads.items(), key=lambda kv: (int(kv[0][1:]), kv[0][0] == "b"))), g


def _forward(Ws, bs, x, cfg, params):
    if cfg.backend == "numpy":
        return forward_numpy(params, x, cfg)
    return _forward_fast(Ws, bs, x, cfg)


# ---------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------

def _loss(obar, y, cfg):
    """Loss value and ``dL/dobar``: Eq. (L) (the paper's loss) or PyTorch's MSELoss."""
    S, C = obar.shape
    target = np.zeros_like(obar)
    target[np.arange(S), y] = 1.0
    diff = obar - target
    if cfg.loss == "mse_paper":
        return 0.5 * float(np.sum(diff * diff)) / S, diff / S         # Eq. (L) and its gradient
    return float(np.mean(diff * diff)), 2.0 * diff / (S * C)           # MSELoss(mean) = (2/C) Eq. (L)


# ---------------------------------------------------------------------------
# The algorithm contract
# ---------------------------------------------------------------------------

def loss_and_grad(params, x, y, cfg: Config = Config(), rng=None, *, info=None):
    """Loss of the network on ``(x, y)`` and its STBP gradient.

    Parameters
    ----------
    params : dict
        ``W1, b1, ..., WN, bN``, ``Wn`` of shape ``(n_out, n_in)``.
    x : ndarray, shape (T, batch, n_in)
        Input spikes or currents (see :func:`encode`).
    y : ndarray of int, shape (batch,)
        Class labels in ``[0, n_out)``.
    cfg : Config
    rng : ignored
        STBP's gradient is deterministic given ``x``; the argument exists for
        the common contract.
    info : dict, optional
        If given, filled with diagnostics: ``"pred"`` (batch,) the predicted
        classes, ``"counts"`` the spike count of every neuron over the ``T``
        steps, one (batch, n_layer) array per layer.

    Returns
    -------
    loss : float
    grads : dict
        Same keys and shapes as ``params``: the exact gradient of
        :func:`reference_objective` at ``params`` (Eq. (B1)-(B5)).
    """
    Ws, bs, xx, cfg = _prepare(params, x, cfg)
    y = check_labels("y", y, Ws[-1].shape[0], batch=xx.shape[1])
    u, o = _forward(Ws, bs, xx, cfg, params)
    loss, g_obar = _loss(o[-1].mean(axis=0), y, cfg)
    if cfg.backend == "numpy":
        grads, _ = backward_numpy(params, x, u, o, g_obar, cfg)
    else:
        grads, _ = _backward_fast(Ws, xx, u, o, g_obar, cfg)
    if info is not None:
        info["counts"] = [on.sum(axis=0) for on in o]
        info["pred"] = np.argmax(info["counts"][-1], axis=1)
    return loss, grads


def input_gradient(params, x, y, cfg: Config = Config()):
    """``dL/dx``, shape ``(T, batch, n_in)``: the surrogate gradient with respect to the input."""
    Ws, bs, xx, cfg = _prepare(params, x, cfg)
    y = check_labels("y", y, Ws[-1].shape[0], batch=xx.shape[1])
    u, o = _forward(Ws, bs, xx, cfg, params)
    _, g_obar = _loss(o[-1].mean(axis=0), y, cfg)
    if cfg.backend == "numpy":
        return backward_numpy(params, x, u, o, g_obar, cfg)[1]
    return _backward_fast(Ws, xx, u, o, g_obar, cfg, input_grad=True)[1]


def reference_objective(params, x, y, cfg: Config = Config(), rng=None):
    """The smooth function whose exact gradient at ``params`` is :func:`loss_and_grad`'s.

    Runs the forward pass at ``params`` once (float64, readable tier) to record
    the anchor ``(u0, o0)``, and returns ``objective(p)``: the loss of the
    network in which every spike is ``o0 + P(u - v_th) - P(u0 - v_th)``
    (``P`` the surrogate's primitive), or ``P(u - v_th)`` when
    ``cfg.forward == "smooth"``; with ``detach_reset`` the reset factor is
    frozen at ``f(o0)``.  ``objective(params)`` equals the network's loss.
    Always computed in float64.
    """
    cfg = replace(check_config(cfg, Config), dtype="float64", backend="numpy")
    Ws, _ = _layers(params)
    x = _check_x(x, Ws[0].shape[1]).astype(np.float64)
    y = check_labels("y", y, Ws[-1].shape[0], batch=x.shape[1])
    u0, o0 = forward_numpy(params, x, cfg)                      # the anchor: the forward pass at params
    fire = anchored_rule(cfg, u0, o0)
    reset_spikes = o0 if cfg.detach_reset else None             # a detached reset sees the anchor's spikes

    def objective(p) -> float:
        _, o = forward_numpy(p, x, cfg, fire=fire, reset_spikes=reset_spikes)
        return _loss(o[-1].mean(axis=0), y, cfg)[0]

    return objective


def kink_distance(params, x, cfg: Config = Config()) -> float:
    """Smallest distance of any ``u - v_th`` (at ``params``) to a kink of the surrogate's primitive.

    Central differences of :func:`reference_objective` are only exact when
    this is much larger than the largest change of ``u`` a perturbation of
    size ``eps`` causes.  ``inf`` for the smooth surrogates.
    """
    cfg = replace(check_config(cfg, Config), dtype="float64", backend="numpy")
    ks = surrogates.kinks(cfg.surrogate, cfg.width)
    if not ks:
        return math.inf
    u, _ = forward_numpy(params, x, cfg)
    d = math.inf
    for un in u:
        for k in ks:
            d = min(d, float(np.min(np.abs(un - cfg.v_th - k))))
    return d


def simulate(params, x, cfg: Config = Config()):
    """Run the network and return ``(u, o)``: per-layer membrane potentials and spikes, each (T, batch, n)."""
    Ws, bs, xx, cfg = _prepare(params, x, cfg)
    return _forward(Ws, bs, xx, cfg, params)


def predict(params, x, cfg: Config = Config(), rng=None) -> np.ndarray:
    """Predicted class per sample: the output neuron with the highest firing rate (first one on ties)."""
    _, o = simulate(params, x, cfg)
    return np.argmax(o[-1].sum(axis=0), axis=1)


def encode(features, cfg: Config = Config(), rng=None) -> np.ndarray:
    """Present static features in [0, 1], shape (batch, n_in), as ``cfg.T`` steps of input.

    ``"bernoulli"`` draws fresh spikes (``rng`` required); ``"direct"``
    repeats the values.  Returns ``(T, batch, n_in)`` in ``cfg.dtype``.
    """
    cfg = check_config(cfg, Config)
    if cfg.encoding == "bernoulli":
        return encoding.bernoulli(features, cfg.T, rng, dtype=np.dtype(cfg.dtype))
    features = check_array("features", features, lo=0.0, hi=1.0)
    return np.ascontiguousarray(encoding.direct(features, cfg.T, dtype=np.dtype(cfg.dtype)))
