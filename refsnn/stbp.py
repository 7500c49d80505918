r"""STBP: spatio-temporal backpropagation with a surrogate spike derivative.

Wu, Deng, Li, Zhu, Shi, "Spatio-Temporal Backpropagation for Training
High-Performance Spiking Neural Networks", Front. Neurosci. 12:331 (2018).
The derivation is written out in ``docs/stbp.md``.

STBP is backpropagation through time in a network of leaky integrate-and-fire
(LIF) layers, with the spike's missing derivative replaced by a surrogate.  The
paper's neuron is one member of a family that also holds the neurons the
PyTorch SNN libraries run (snnTorch, spikingjelly, norse); refsnn implements
the whole family exactly, so that any of those models can be checked here.

The model
---------
A network of LIF layers ``n = 1..N``, fully connected or convolutional (below).  At every time step
``t = 0..T-1``, layer ``n`` (all quantities of that layer; ``o^{t,0} = x[t]``
is the encoded input)::

    I^t = W o^{t,n-1} + b                                          # Eq. (I): synaptic input
    j^t = alpha j^{t-1} + I^t    (synapse="current"; else j^t = I^t)   # Eq. (J): current-based synapse
    v^t = lam r^{t-1} + kappa j^t + (1 - lam) v_rest               # Eq. (V): leak and charge
    u^t = v^t                   (reset_timing="immediate")
    u^t = R(v^t, o^{t-1})       (reset_timing="delayed", t >= 1)    # Eq. (u)
    o^t = H(u^t - v_th)         (">" or ">=")                      # Eq. (o): fire
    r^t = R(u^t, o^t)           (immediate);   r^t = u^t (delayed)  # Eq. (R): reset

with ``r^{-1} = v_rest`` and ``j^{-1} = 0``.  ``u`` is the potential compared
with the threshold, ``r`` what is carried to the next step.  ``lam`` is
``Config.decay``, ``kappa = 1 - lam`` with ``decay_input`` (spikingjelly's
input scaling; also norse's ``dt / tau_mem``), else 1.  The reset ``R(u, o)``
(``Config.reset``)::

    "exp"       R = u exp(-o / lam)       the paper: lam R = u tau exp(-o/tau), its f(o) = tau exp(-o/tau)
    "zero"      R = u (1 - o)             the official code: mem * (1 - spike) * decay
    "v_reset"   R = u (1 - o) + v_reset o
    "subtract"  R = u - v_th o            "soft" reset
    "none"      R = u

``"paper"`` and ``"code"`` are accepted as the old names of ``"exp"`` and
``"zero"``.  ``reset_timing="delayed"`` is snnTorch's ``reset_delay=True``:
the spike of step ``t-1`` resets the potential after the charge of step ``t``,
so a subtracted threshold is not decayed first.  ``v_th``, ``decay`` and the
synapse's ``alpha`` may be one number for every layer or one per layer.

The readout is the output layer's firing rate ``obar = (1/T) sum_t o^{t,N}``
and the loss (``Config.loss``) is

* ``"mse_paper"``: ``L = 1/(2S) sum_s ||y_s - obar_s||^2`` (Eq. (L), the paper's loss);
* ``"mse_mean"``: PyTorch ``MSELoss()``, the mean of ``(obar - y)^2`` over
  batch and classes, as in the official code (``= (2/C) * mse_paper``).

Convolutional layers (``Config.arch``)
--------------------------------------
``Config.arch`` describes a convolutional net in the papers' notation, e.g. the official code's
``"28x28x1-32c3p1-ap2-32c3p1-ap2-128-10"`` (:func:`parse_arch`).  A convolution replaces Eq. (I)
by the cross-correlation of the spike maps below with ``W^n`` of shape ``(c_out, c_in, k, k)``
(PyTorch's layout), stride ``s`` and zero padding ``p``, plus one bias per output channel::

    I^t[o, y, x] = sum_{c,i,j} W[o, c, i, j] o^{t,n-1}[c, s y + i - p, s x + j - p] + b[o]   # Eq. (C)

and a pooling token (``ap{k}``, ``mp{k}``) pools the *spikes* of the layer below over
non-overlapping ``k x k`` windows before the next layer's operation (no neuron after a pooling,
as in the official code; the remainder rows are dropped, as PyTorch's)::

    p[c, y, x] = mean (or max) of o^{t,n-1}[c, k y + i, k x + j], 0 <= i, j < k                # Eq. (P)

A dense layer after convolutions sees the maps flattened in ``(C, H, W)`` order.  Neurons, their
constants and the whole time recursion are unchanged (a conv layer's ``C H W`` neurons are one flat
vector).  The backward pass transposes Eq. (C) and (P): ``dL/dW`` correlates ``g_j`` with the
input patches, ``dL/do^{t,n-1}`` is the transposed convolution of ``g_j``, average pooling spreads
each gradient ``/k^2`` over its window and max pooling sends it to the entry the forward pass took
(the first largest one in row-major order, as PyTorch's CPU kernel: with binary spikes ties are
the rule, so the choice matters).  Max pooling is not differentiable at a tie; the gradient is the
sub-gradient of that choice, and :func:`reference_objective` keeps the choice frozen.

The backward pass (the exact form)
----------------------------------
``H`` has no useful derivative, so ``dH/du`` is replaced by a surrogate
``h(u - v_th)`` (``refsnn.blocks.surrogates``).  Back-propagating through the
unrolled graph (BPTT) gives, with ``delta = dL/do``, ``eps = dL/du``,
``g_v = dL/dv``, ``g_j = dL/dj`` and ``R_u, R_o`` the partial derivatives of
the reset, from ``t = T-1`` down to 0 (terms with ``t + 1`` vanish at ``T-1``)::

    delta^{t,N}  = (dL/dobar) / T                                          # Eq. (B1): readout
    delta^{t,n}  = (W^{n+1})^T g_j^{t,n+1}                                 # Eq. (B2): spatial path
    delta^{t}   += lam g_v^{t+1} R_o(u^t, o^t)         (immediate)          # Eq. (B3): through the reset
    delta^{t}   += eps^{t+1} R_o(v^{t+1}, o^t)         (delayed)
    eps^{t}      = delta^t h(u^t - v_th) + lam g_v^{t+1} R_u(u^t, o^t)     (immediate)   # Eq. (B4)
    eps^{t}      = delta^t h(u^t - v_th) + lam g_v^{t+1}                   (delayed)
    g_v^{t}      = eps^t    (immediate);   eps^t R_u(v^t, o^{t-1})  (delayed, t >= 1)
    g_j^{t}      = kappa g_v^t + alpha g_j^{t+1}                            # Eq. (B4j)
    dL/dW^n = sum_t g_j^{t,n} (o^{t,n-1})^T,  dL/db^n = sum_t g_j^{t,n}     # Eq. (B5)

For the paper's neuron (``exp``, immediate, no synapse, ``kappa = 1``) these are
the familiar ``delta^t += eps^{t+1} u^t f'(o^t)`` and ``eps^t = delta^t h +
eps^{t+1} f(o^t)``.  ``detach_reset=True`` drops Eq. (B3) (the reset's ``o`` is
treated as a constant), as snnTorch (with its default ``reset_delay=True``) and
spikingjelly's ``detach_reset=True`` do.  The paper's printed temporal term uses
``delta^{t+1}*h(u^{t+1})`` instead of ``eps^{t+1}``, which drops the
``u^{t+1} -> u^{t+2}`` path; refsnn implements the exact chain rule, which is
what autograd (and so the official code) computes (``docs/stbp.md``).

Learnable decay and threshold (``Config.learn_decay``, ``learn_threshold``)
---------------------------------------------------------------------------
A layer's decay and threshold can be parameters with their own keys, each a
0-d array (one value for the layer) or one value per neuron:

* ``beta{n}``  (``learn_decay="clamp"``, snnTorch's ``learn_beta``): ``lam = clamp(beta, 0, 1)``;
* ``tau_w{n}`` (``learn_decay="sigmoid"``, spikingjelly's ``ParametricLIFNode.w``):
  ``1/tau = sigmoid(tau_w)``, ``lam = 1 - 1/tau`` (and ``kappa = 1/tau`` with ``decay_input``);
* ``thr{n}``   (``learn_threshold``, snnTorch's ``learn_threshold``): ``v_th``.

Their gradients follow from the same recursion: ``dL/dv_th = -sum_t delta^t
h(u^t - v_th)`` plus, for the subtract reset, ``-sum_t lam g_v^{t+1} o^t``
(immediate) or ``-sum_t eps^t o^{t-1}`` (delayed); ``dL/dlam = sum_t g_v^t
(r^{t-1} - v_rest - [decay_input] j^t)``; then the chain rule through the clamp
(which passes the gradient on ``0 <= beta <= 1``, as PyTorch's) or the sigmoid.

What the gradient is exactly the derivative of
----------------------------------------------
``reference_objective`` builds the *smoothed network anchored at the spikes*:
the same forward pass, but every spike is replaced by

    o^{t,n}(theta') = o0^{t,n} + P(u^{t,n}(theta') - v_th') - P(u0^{t,n} - v_th)

where ``P`` is the primitive of the surrogate (``P' = h``) and ``u0, o0`` are
the membrane potentials and spikes of the forward pass at ``params``.  At
``theta' = params`` it *is* the spiking network (same loss value); its exact
derivative there is the surrogate gradient above.  This is the construction
``o = H(u).detach() + P(u) - P(u).detach()`` that makes autograd compute a
surrogate gradient.  With ``Config(forward="smooth")`` the network itself is
the smoothed model (``o = P(u - v_th)`` everywhere) and
``reference_objective`` is that model unchanged.  With ``detach_reset`` the
reset sees the frozen spikes ``o0``.  Finite differences of it must match
``loss_and_grad`` (``tests/test_stbp.py``); for surrogates with kinks keep
every ``u - v_th`` away from them (:func:`kink_distance`).

Two tiers
---------
``backend="numpy"`` runs :func:`forward_numpy` / :func:`backward_numpy`, which
loop over time and layers exactly in the order of the equations above.
``backend="numba"`` (default) computes the same thing layer by layer: since
layer ``n`` at step ``t`` needs only layer ``n-1`` at step ``t`` and its own
step ``t-1``, all ``T`` steps of one layer can run before the next layer, so
each layer's synaptic input is one matrix product over ``T*batch`` rows and
only the element-wise time recursions (:func:`_lif_forward_kernel`,
:func:`_lif_backward_kernel`) remain, as numba kernels.  The reset ``R`` and
its derivatives are a named piece (:class:`Reset`: :class:`ExpReset`,
:class:`ZeroReset`, :class:`ToValue`, :class:`Subtract`, :class:`NoReset`)
that the twin and the stack of layers (:mod:`refsnn.stbp_layers`) call; the
kernels take a layer's constants and settings as two named tuples and read
the same reset formulas by the piece's code.  Both tiers agree to float64
round-off (``tests/test_stbp.py``).

Notation differences from the paper
-----------------------------------
* The equation labels (I), (C), (P), (J), (V), (u), (o), (R), (L), (B1)-(B5) are refsnn's own.
  The paper's body could not be checked while writing this module, so its equation
  numbers are not quoted; ``docs/stbp.md`` maps each label to the paper's and the
  official code's form.
* Time runs ``t = 0..T-1`` in code (``1..T`` in the paper); the first step has
  no carried potential (``r^{-1} = v_rest = 0`` for the paper).
* ``decay`` is the paper's ``tau`` (its "decay factor"), ``lam`` here; ``v_th``
  is ``V_th``; the surrogate width ``width`` is the paper's ``a_1..a_4``.  The
  paper folds leak and reset into ``f(o) = tau exp(-o/tau)``; here ``f(o) =
  lam R(1, o)``.
* Weights are stored ``(n_out, n_in)``: ``W^n`` maps layer ``n-1`` to ``n``.
  Parameter keys are ``W1, b1, ..., WN, bN`` (and ``beta{n}``, ``tau_w{n}``,
  ``thr{n}`` when learned).
* Arrays carry a batch axis: ``x[t, s, j]``, ``u[n][t, s, i]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import numpy as np

from refsnn.blocks import conv, encoding, spike_products, surrogates
from refsnn.blocks._checks import (
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
from refsnn.blocks import _memory
from refsnn.blocks._jit import njit, over_batch, over_shares, resolve_backend

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
    "paper_forward",
    "paper_backward",
    "paper_loss_and_grad",
    "forward_numpy",
    "backward_numpy",
    "Trace",
    "kink_distance",
    "Reset",
    "ExpReset",
    "ZeroReset",
    "ToValue",
    "Subtract",
    "NoReset",
    "reset_piece",
    "spike_rule",
    "anchored_rule",
    "param_keys",
    "neuron_constants",
]

#: The reset mechanisms, and the old names of two of them.
RESETS = ("exp", "zero", "v_reset", "subtract", "none")
RESET_ALIASES = {"paper": "exp", "code": "zero"}
TIMINGS = ("immediate", "delayed")
LOSSES = ("mse_paper", "mse_mean")
SYNAPSES = ("none", "current")
LEARN_DECAY = ("none", "clamp", "sigmoid")


def _per_layer(name: str, value, check):
    """A number, or a tuple of numbers (one per layer), each passed through ``check(name, v)``."""
    if isinstance(value, (list, tuple, np.ndarray)):
        if len(value) == 0:
            raise ValueError(f"{name}: expected a number or a non-empty tuple of them (one per layer), got ()")
        return tuple(check(f"{name}[{i}]", v) for i, v in enumerate(value))
    return check(name, value)


def _bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


@dataclass(frozen=True)
class Config:
    """Settings of an STBP network.  Every field is validated on construction.

    Model settings
    --------------
    v_th : float or tuple of float
        Firing threshold ``V_th`` (> 0); one per layer if a tuple.
    decay : float or tuple of float
        Leak factor ``lam`` in (0, 1] (the paper's ``tau``): the fraction of the
        reset potential carried to the next step; ``1`` is the IF neuron.
    arch : str or None
        A convolutional architecture in the papers' notation, e.g.
        ``"28x28x1-32c3p1-ap2-32c3p1-ap2-128-10"`` (:func:`parse_arch`); None for a
        fully connected net, whose sizes come from the parameters.
    surrogate : {"rect", "triangle", "sigmoid", "gauss", "atan", "fast_sigmoid", "window"}
        The surrogate derivative ``h`` of the spike (h1..h4 of the paper, the
        peers' defaults, and the official code's height-1 window;
        ``refsnn.blocks.surrogates`` maps their parameters).
    width : float
        Its width ``a`` (> 0).  The official code's window ``|u - thresh| < lens``
        is ``"window"`` with ``a = lens``; at its default ``lens = 0.5`` that is
        exactly ``"rect"`` with ``a = 1`` (the ``code`` presets).
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

    Neuron-family settings (the official code's and the peers' variants)
    --------------------------------------------------------------------
    reset : {"exp", "zero", "v_reset", "subtract", "none"}
        The reset ``R(u, o)`` (module docstring); ``"paper"`` and ``"code"``
        are the old names of ``"exp"`` and ``"zero"``.
    v_reset : float
        The potential a ``"v_reset"`` reset sets (spikingjelly's ``v_reset``,
        norse's ``v_reset``).
    reset_timing : {"immediate", "delayed"}
        ``"delayed"``: the spike of step ``t-1`` resets the potential after the
        charge of step ``t`` (snnTorch's ``reset_delay=True``).
    detach_reset : bool
        Drop the gradient path through the reset's spike (Eq. (B3)).  The paper,
        the official code, spikingjelly and norse keep it (False); snnTorch with
        ``reset_delay=True`` detaches it.
    strict : bool
        Spike when ``u > v_th`` (True: the paper, snnTorch, norse) or
        ``u >= v_th`` (False: spikingjelly).
    decay_input : bool
        Scale the input by ``1 - lam`` (spikingjelly's ``decay_input=True``;
        norse's ``dt / tau_mem``), so ``v = lam r + (1 - lam) j``.
    v_rest : float
        The potential the neuron starts at and leaks towards (norse's
        ``v_leak``; spikingjelly's ``v_reset`` for a hard reset; 0 for the
        paper and snnTorch).
    synapse : {"none", "current"}
        ``"current"``: a current-based synapse ``j = alpha j + I`` (snnTorch
        ``Synaptic``, norse ``LIFCell``).
    syn_decay : float or tuple of float
        Its ``alpha`` in [0, 1] (snnTorch's ``alpha``; norse's ``1 - dt/tau_syn``).
    learn_decay : {"none", "clamp", "sigmoid"}
        Make each layer's decay a parameter: ``beta{n}`` with ``lam =
        clamp(beta, 0, 1)`` (snnTorch ``learn_beta``) or ``tau_w{n}`` with
        ``1 - lam = sigmoid(tau_w)`` (spikingjelly ``ParametricLIFNode``).
        ``decay`` then only sets :func:`init_params`' starting value.
    learn_threshold : bool
        Make each layer's threshold a parameter ``thr{n}`` (snnTorch
        ``learn_threshold``); ``v_th`` then only sets the starting value.

    Numerical settings
    ------------------
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

    Backend settings
    ----------------
    backend : {"numba", "numpy"}
        The fast layer-major kernels or the readable step-major twin.
    """

    v_th: object = 1.5
    decay: object = 0.1
    arch: object = None
    surrogate: str = "rect"
    width: float = 1.0
    reset: str = "exp"
    v_reset: float = 0.0
    reset_timing: str = "immediate"
    detach_reset: bool = False
    strict: bool = True
    decay_input: bool = False
    v_rest: float = 0.0
    synapse: str = "none"
    syn_decay: object = 0.0
    learn_decay: str = "none"
    learn_threshold: bool = False
    loss: str = "mse_paper"
    T: int = 30
    encoding: str = "bernoulli"
    forward: str = "spike"
    init: str = "paper"
    dtype: str = "float64"
    backend: str = "numba"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if self.arch is not None:
            parse_arch(self.arch)                   # a clean error for a malformed architecture
        set_("v_th", _per_layer("v_th", self.v_th, check_positive))
        set_("decay", _per_layer("decay", self.decay,
                                 lambda n, v: check_in_range(n, v, 0.0, 1.0, lo_open=True)))
        check_choice("surrogate", self.surrogate, surrogates.NAMES)
        set_("width", check_positive("width", self.width))
        set_("reset", RESET_ALIASES.get(self.reset, self.reset))
        check_choice("reset", self.reset, RESETS + tuple(RESET_ALIASES))
        set_("v_reset", check_in_range("v_reset", self.v_reset, -1e12, 1e12))
        check_choice("reset_timing", self.reset_timing, TIMINGS)
        for name in ("detach_reset", "strict", "decay_input", "learn_threshold"):
            set_(name, _bool(name, getattr(self, name)))
        set_("v_rest", check_in_range("v_rest", self.v_rest, -1e12, 1e12))
        check_choice("synapse", self.synapse, SYNAPSES)
        set_("syn_decay", _per_layer("syn_decay", self.syn_decay, lambda n, v: check_in_range(n, v, 0.0, 1.0)))
        check_choice("learn_decay", self.learn_decay, LEARN_DECAY)
        if self.learn_decay != "none" and self.reset == "exp":
            raise ValueError("learn_decay: the 'exp' reset divides by the decay; learn it with another reset")
        check_choice("loss", self.loss, LOSSES)
        set_("T", check_int("T", self.T, minimum=1))
        check_choice("encoding", self.encoding, ("bernoulli", "direct"))
        check_choice("forward", self.forward, ("spike", "smooth"))
        check_choice("init", self.init, ("paper", "torch"))
        check_choice("dtype", self.dtype, ("float64", "float32"))
        check_choice("backend", self.backend, ("numba", "numpy"))
        object.__setattr__(self, "backend", resolve_backend(self.backend))    # numba off: the NumPy tier

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("v_th", "decay", "syn_decay"):
            if isinstance(d[k], tuple):
                d[k] = list(d[k])
        return d


# ---------------------------------------------------------------------------
# The paper's network: read this first
# ---------------------------------------------------------------------------
# Wu et al. 2018 in a few lines: fully connected LIF layers, the paper's reset ("exp") or the official
# code's ("zero") acting at once, the rate readout and its loss, and the exact backward pass through the
# surrogate graph.  Everything after this section generalises these lines (other resets and their
# timing, synapses, learned constants, convolutions, a fast tier); tests/test_stbp.py holds the general
# machinery equal to them on the paper's and the official code's presets.

def _paper_reset(name: str, lam: float):
    """The reset of the paper's family, ``R(u, o)``, and its partial derivatives ``R_u``, ``R_o``.

    The paper writes the leak and the reset together as ``u tau f(o)`` with ``f(o) = exp(-o/tau)``:
    ``lam R(u, o) = lam u exp(-o/lam)`` ("exp").  The official code writes ``mem * decay * (1 - spike)``:
    ``R(u, o) = u (1 - o)`` ("zero").
    """
    if name == "exp":
        return (lambda u, o: u * np.exp(-o / lam),               # R
                lambda u, o: np.exp(-o / lam) + 0 * u,           # dR/du
                lambda u, o: -(u / lam) * np.exp(-o / lam))      # dR/do
    return (lambda u, o: u * (1 - o), lambda u, o: (1 - o) + 0 * u, lambda u, o: -u + 0 * o)


def _paper_setting(params, x, cfg):
    """``(Ws, bs, x, [(lam, v_th, R, R_u, R_o) per layer])``, or a ValueError naming what lies outside the
    paper's family (the general :func:`loss_and_grad` computes those)."""
    cfg = check_config(cfg, Config)
    outside = {"arch": cfg.arch is not None, "reset": cfg.reset not in ("exp", "zero"),
               "reset_timing": cfg.reset_timing != "immediate", "synapse": cfg.synapse != "none",
               "decay_input": cfg.decay_input, "v_rest": cfg.v_rest != 0.0, "learn_decay": cfg.learn_decay != "none",
               "learn_threshold": cfg.learn_threshold, "forward": cfg.forward != "spike"}
    bad = [k for k, v in outside.items() if v]
    if bad:
        raise ValueError(f"cfg: {', '.join(f'{k}={getattr(cfg, k)!r}' for k in bad)} lies outside the paper's "
                         f"network; stbp.loss_and_grad computes the general one")
    Ws, bs = check_layers(params, dtype=np.float64)
    x = check_array("x", x, dtype=np.float64)
    check_time_major("x", x, Ws[0].shape[1])
    N = len(Ws)
    consts = []
    for n in range(N):
        lam, thr = _layer_value("decay", cfg.decay, n, N), _layer_value("v_th", cfg.v_th, n, N)
        consts.append((lam, thr, *_paper_reset(cfg.reset, lam)))
    return Ws, bs, x, consts


def paper_forward(params, x, cfg):
    """The paper's network, forward (Wu et al. 2018, Eq. (1)-(2)): potentials and spikes of every layer.

    ``x`` (T, batch, n_in) is ``o^{t,0}``; returns lists ``u, o`` of (T, batch, n_layer) arrays.
    """
    Ws, bs, x, consts = _paper_setting(params, x, cfg)
    T, B = x.shape[:2]
    u = [np.zeros((T, B, W.shape[0])) for W in Ws]
    o = [np.zeros((T, B, W.shape[0])) for W in Ws]
    for t in range(T):
        a = x[t]                                                           # o^{t,0}
        for n, (W, b, (lam, thr, R, _, _)) in enumerate(zip(Ws, bs, consts)):
            carried = R(u[n][t - 1], o[n][t - 1]) if t > 0 else 0.0
            u[n][t] = lam * carried + a @ W.T + b                          # Eq. (1): leak and reset, then charge
            o[n][t] = (u[n][t] - thr > 0) if cfg.strict else (u[n][t] - thr >= 0)   # Eq. (2): fire
            a = o[n][t]
    return u, o


def _loss(obar, y, cfg):
    """Loss value and ``dL/dobar`` of the rate readout: Eq. (L) (the paper's loss) or PyTorch's MSELoss."""
    S, C = obar.shape
    target = np.zeros_like(obar)
    target[np.arange(S), y] = 1.0
    diff = obar - target
    if cfg.loss == "mse_paper":
        return 0.5 * float(np.sum(diff * diff)) / S, diff / S         # Eq. (L) and its gradient
    return float(np.mean(diff * diff)), 2.0 * diff / (S * C)           # MSELoss(mean) = (2/C) Eq. (L)


def paper_backward(params, x, u, o, g_obar, cfg):
    """The paper's network, backward: exact BPTT through the surrogate graph (Eq. (B1)-(B5)).

    ``u, o`` from :func:`paper_forward`, ``g_obar = dL/dobar`` (batch, n_out).  ``delta = dL/do``,
    ``eps = dL/du``; terms with ``t + 1`` vanish at the last step.  Returns ``{W1, b1, ..., WN, bN}``.
    """
    Ws, bs, x, consts = _paper_setting(params, x, cfg)
    T, N = x.shape[0], len(Ws)
    h = lambda z: surrogates.h(z, cfg.surrogate, cfg.width)               # noqa: E731
    grads = {k: np.zeros(np.shape(v)) for k, v in params.items()}
    eps_next = [0.0] * N                                                   # eps^{t+1} of every layer
    for t in reversed(range(T)):
        delta = g_obar / T                                                 # Eq. (B1): the rate readout
        for n in reversed(range(N)):
            lam, thr, _, R_u, R_o = consts[n]
            ut, ot = u[n][t], o[n][t]
            if not cfg.detach_reset:
                delta = delta + lam * eps_next[n] * R_o(ut, ot)            # Eq. (B3): through the reset
            eps = delta * h(ut - thr) + lam * eps_next[n] * R_u(ut, ot)    # Eq. (B4): surrogate, and the leak
            a = x[t] if n == 0 else o[n - 1][t]
            grads[f"W{n + 1}"] += eps.T @ a                                # Eq. (B5)
            grads[f"b{n + 1}"] += eps.sum(axis=0)
            eps_next[n] = eps
            delta = eps @ Ws[n]                                            # Eq. (B2): to layer n - 1
    return grads


def paper_loss_and_grad(params, x, y, cfg):
    """The paper's network end to end: forward, the loss of the output rate, the exact backward.

    Equal (to round-off) to :func:`loss_and_grad` on the settings the paper's family covers (the
    ``paper``, ``code`` and ``code_fc`` presets among them); a ValueError names any other setting.
    """
    u, o = paper_forward(params, x, cfg)
    y = check_labels("y", y, o[-1].shape[2], batch=o[-1].shape[1])
    loss, g_obar = _loss(o[-1].mean(axis=0), y, cfg)                       # Eq. (L)
    return loss, paper_backward(params, x, u, o, g_obar, cfg)


# ---------------------------------------------------------------------------
# Architecture: fully connected, or convolutional in the papers' notation
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class LayerSpec:
    """One spiking layer of an architecture: its synaptic operation and what it sees.

    ``op`` is ``"dense"`` or ``"conv"``; ``below_shape`` the shape of what the layer receives (the
    network's input or the neurons of the layer below: ``(C, H, W)`` or ``(n,)``); ``pool`` the
    pooling ``("avg" | "max", k)`` applied to it before the operation, or None; ``in_shape`` what the
    operation sees after that pooling (``(n,)`` for a dense layer: the maps flattened in ``(C, H, W)``
    order), ``out_shape`` the layer's neurons ``(C, H, W)`` or ``(n,)``; ``kernel``, ``stride``,
    ``pad`` of a convolution.
    """

    op: str
    below_shape: tuple
    in_shape: tuple
    out_shape: tuple
    pool: tuple | None = None
    kernel: int = 0
    stride: int = 1
    pad: int = 0

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def pooled_shape(self) -> tuple:
        """``(C, H // k, W // k)``: the pooling's output, before a dense layer flattens it."""
        C, H, W = self.below_shape
        k = self.pool[1]
        return (C, H // k, W // k)

    @property
    def weight_shape(self) -> tuple:
        if self.op == "conv":
            return (self.out_shape[0], self.in_shape[0], self.kernel, self.kernel)   # PyTorch's (c_out, c_in, k, k)
        return (self.n_out, self.n_in)


_CONV = re.compile(r"(\d+)c(\d+)((?:[sp]\d+)*)")


def parse_arch(arch) -> tuple:
    """Read an architecture string: ``"28x28x1-32c3p1-ap2-32c3p1-ap2-128-10"`` -> ``(input_shape, [LayerSpec])``.

    Tokens, separated by ``-`` (case-insensitive): the input ``HxWxC`` (first), a convolution
    ``{c_out}c{k}`` with optional ``s{stride}`` and ``p{padding}`` (default stride 1, padding 0, as
    PyTorch's ``nn.Conv2d``), a pooling ``ap{k}`` (average) or ``mp{k}`` (max) of the spikes below
    (window and stride ``k``, the remainder dropped, as PyTorch), and a fully connected layer ``{n}``;
    the last token is the output layer.  A dense layer after convolutions sees their spikes flattened
    in ``(C, H, W)`` order (PyTorch's ``view``).  Every convolution and dense layer is a spiking layer.
    """
    if not isinstance(arch, str):
        raise TypeError(f"arch: expected a string like '28x28x1-32c3p1-ap2-128-10', got {type(arch).__name__}")
    tokens = [t.strip().lower() for t in arch.split("-")]
    if len(tokens) < 2 or any(not t for t in tokens):
        raise ValueError(f"arch: expected tokens separated by '-', like '28x28x1-32c3p1-ap2-128-10', got {arch!r}")
    shape = conv.input_shape(tokens[0])
    input_shape, layers, pool, below = shape, [], None, shape
    for t in tokens[1:]:
        m = _CONV.fullmatch(t)
        if t[:2] in ("ap", "mp") and t[2:].isdigit():
            k = int(t[2:])
            if len(shape) != 3 or pool is not None or k < 1:
                raise ValueError(f"arch: {t!r} pools a (C, H, W) map of spikes; it must follow the input or a "
                                 f"convolution, once, with k >= 1")
            if shape[1] // k < 1 or shape[2] // k < 1:
                raise ValueError(f"arch: {t!r} does not fit the {shape[1]}x{shape[2]} map it pools")
            pool = ("avg" if t[0] == "a" else "max", k)
            shape = (shape[0], shape[1] // k, shape[2] // k)
        elif m:
            if len(shape) != 3:
                raise ValueError(f"arch: the convolution {t!r} needs a (C, H, W) input, not a vector")
            c_out, k = int(m.group(1)), int(m.group(2))
            opts = dict(re.findall(r"([sp])(\d+)", m.group(3)))
            stride, pad = int(opts.get("s", 1)), int(opts.get("p", 0))
            H = (shape[1] + 2 * pad - k) // stride + 1
            W = (shape[2] + 2 * pad - k) // stride + 1
            if c_out < 1 or k < 1 or stride < 1 or H < 1 or W < 1:
                raise ValueError(f"arch: the convolution {t!r} does not fit its {shape[1]}x{shape[2]} input")
            layers.append(LayerSpec("conv", below, shape, (c_out, H, W), pool, k, stride, pad))
            shape, pool, below = (c_out, H, W), None, (c_out, H, W)
        elif t.isdigit() and int(t) > 0:
            layers.append(LayerSpec("dense", below, (int(np.prod(shape)),), (int(t),), pool))
            shape, pool, below = (int(t),), None, (int(t),)
        else:
            raise ValueError(f"arch: unknown token {t!r} (expected HxWxC, {{c}}c{{k}}[s{{s}}][p{{p}}], ap{{k}}, "
                             f"mp{{k}} or a layer size)")
    if pool is not None:
        raise ValueError(f"arch: a pooling ends the architecture {arch!r}; the last token must be the output layer")
    if not layers:
        raise ValueError(f"arch: {arch!r} has no layer after the input")
    if layers[-1].op != "dense":
        raise ValueError(f"arch: the last token of {arch!r} must be the output layer's size (a dense readout)")
    return input_shape, layers


def _specs(cfg, sizes=None):
    """The layer specs: from ``cfg.arch``, or a fully connected net ``sizes = [n_in, ..., n_out]``."""
    if cfg.arch is not None:
        return parse_arch(cfg.arch)[1]
    return [LayerSpec("dense", (a,), (a,), (b,)) for a, b in zip(sizes[:-1], sizes[1:])]


#: Reference settings.
#:
#: * ``paper``: the MNIST row of the paper's Table 1 (V_th 1.5, tau 0.1, T 30; recalled values), its
#:   exp reset, loss and init, Bernoulli input.
#: * ``code``: the official code's neuron (``spiking_model.py``, the conv MNIST net's, also used for
#:   refsnn's MLP recipes): thresh 0.5, decay 0.2, T 20, the window ``|u - thresh| < lens`` of height 1
#:   at lens 0.5, which is exactly rect of width 1 (``surrogate="window", width=lens`` for any other lens),
#:   ``mem * decay * (1 - spike)`` (the zero reset, not detached), MSELoss, PyTorch default init,
#:   Bernoulli input.
#: * ``code_conv``: ``code`` with the official code's convolutional net, ``28x28x1-32c3p1-ap2-32c3p1-ap2-128-10``
#:   (average pooling of spikes, no neuron after a pooling).
#: * ``paper_cnn``: ``paper`` with the paper's MNIST CNN ``28x28-15C5-P2-40C5-P2-300-10``; the paper does not
#:   say which pooling, average is assumed (as in the code).
#: * ``code_fc``: the official FC MNIST file (``code_mnist/mnist_model.py``, 784-512-10): thresh 0.3,
#:   decay 0.5, T 8, the same window and reset, analog ("direct") input.
#: * ``snntorch``: snnTorch's ``Leaky(beta=0.9)`` with its defaults (subtract reset, delayed and
#:   detached, ATan surrogate alpha 2 = width 1/pi, threshold 1, ``>``).
#: * ``spikingjelly``: spikingjelly's ``LIFNode()`` defaults (tau 2 = decay 0.5, decay_input, threshold
#:   1, hard reset to 0 not detached, ``>=``, Sigmoid surrogate alpha 4 = width 1/4).
#: * ``norse``: norse's ``LIFCell()`` defaults (dt 1e-3, tau_mem_inv 100, tau_syn_inv 200: decay 0.9
#:   with the input scaled by 0.1, a current synapse with alpha 0.8, threshold 1, reset to 0 not
#:   detached, ``>``, SuperSpike = fast_sigmoid of width 1).
PRESETS = {
    "paper": Config(v_th=1.5, decay=0.1, surrogate="rect", width=1.0, reset="exp", detach_reset=False,
                    loss="mse_paper", T=30, encoding="bernoulli", init="paper"),
    "code": Config(v_th=0.5, decay=0.2, surrogate="rect", width=1.0, reset="zero", detach_reset=False,
                   loss="mse_mean", T=20, encoding="bernoulli", init="torch"),
    "code_conv": Config(v_th=0.5, decay=0.2, surrogate="rect", width=1.0, reset="zero", detach_reset=False,
                        loss="mse_mean", T=20, encoding="bernoulli", init="torch",
                        arch="28x28x1-32c3p1-ap2-32c3p1-ap2-128-10"),
    "paper_cnn": Config(v_th=1.5, decay=0.1, surrogate="rect", width=1.0, reset="exp", detach_reset=False,
                        loss="mse_paper", T=30, encoding="bernoulli", init="paper",
                        arch="28x28x1-15c5-ap2-40c5-ap2-300-10"),
    "code_fc": Config(v_th=0.3, decay=0.5, surrogate="rect", width=1.0, reset="zero", detach_reset=False,
                      loss="mse_mean", T=8, encoding="direct", init="torch"),
    "snntorch": Config(v_th=1.0, decay=0.9, surrogate="atan", width=1.0 / math.pi, reset="subtract",
                       reset_timing="delayed", detach_reset=True, loss="mse_mean", T=25, init="torch"),
    "spikingjelly": Config(v_th=1.0, decay=0.5, surrogate="sigmoid", width=0.25, reset="zero", strict=False,
                           decay_input=True, loss="mse_mean", T=8, init="torch"),
    "norse": Config(v_th=1.0, decay=0.9, surrogate="fast_sigmoid", width=1.0, reset="zero", decay_input=True,
                    synapse="current", syn_decay=0.8, loss="mse_mean", T=25, init="torch"),
}


# ---------------------------------------------------------------------------
# Synaptic operations: dense, convolution, pooling -- and their transposes
# ---------------------------------------------------------------------------
# ``a`` has one row per sample (and step): (R, n_in) flat; a convolution sees it as (R, C, H, W).
# The readable twin writes the convolution as the sum it is (refsnn.blocks.conv.conv2d, an einsum over each
# output's patch); the fast tier as BLAS products over the patches of every row (refsnn.blocks.conv.*_fast).

def pool_forward(a, kind, k, select=None):
    """Pooling of (R, C, H, W) maps with window and stride ``k`` (the remainder dropped): ``(out, argmax)``.

    ``"avg"``: the window's mean (Eq. (P)).  ``"max"``: its largest entry; ``argmax`` (R, C, Ho, Wo)
    is the index of the first largest entry in row-major window order, as PyTorch's CPU kernel picks
    it, or ``select`` when given (the entry to take, whatever the values: a frozen choice).
    """
    R, C, H, W = a.shape
    Ho, Wo = H // k, W // k
    if kind == "avg":                                                       # Eq. (P): the sum of the k^2 offsets
        total = np.zeros((R, C, Ho, Wo), a.dtype)
        for i in range(k):
            for j in range(k):
                total += a[:, :, i:Ho * k:k, j:Wo * k:k]
        return total / (k * k), None
    blocks = a[:, :, :Ho * k, :Wo * k].reshape(R, C, Ho, k, Wo, k)              # window (y, x): [:, :, y, :, x, :]
    win = blocks.transpose(0, 1, 2, 4, 3, 5).reshape(R, C, Ho, Wo, k * k)   # each window's k*k entries, row-major
    idx = np.argmax(win, axis=-1) if select is None else select
    return np.take_along_axis(win, idx[..., None], axis=-1)[..., 0], idx     # Eq. (P), max


def pool_backward(g, shape, kind, k, argmax=None, out=None):
    """The transpose of :func:`pool_forward`: ``g`` (R, C, Ho, Wo) back onto the (R, C, H, W) input
    (written into ``out`` when given).

    Average pooling spreads ``g / k^2`` over each window; max pooling sends ``g`` to the selected
    entry (the sub-gradient PyTorch uses: ties go to the first largest entry).
    """
    R, C, H, W = shape
    Ho, Wo = g.shape[2], g.shape[3]
    out = np.empty(shape, g.dtype) if out is None else out
    if not (kind == "avg" and H == Ho * k and W == Wo * k):                # entries outside every window: 0
        out[...] = 0
    blocks = out[:, :, :Ho * k, :Wo * k].reshape(R, C, Ho, k, Wo, k)          # a view of out's windows
    if kind == "avg":                                                       # each of the k^2 offsets gets g / k^2
        share = g / (k * k)
        for i in range(k):
            for j in range(k):
                blocks[:, :, :, i, :, j] = share
        return out
    win = np.zeros((R, C, Ho, Wo, k * k), g.dtype)
    np.put_along_axis(win, argmax[..., None], g[..., None], axis=-1)
    blocks[...] = win.reshape(R, C, Ho, Wo, k, k).transpose(0, 1, 2, 4, 3, 5)
    return out


def _pool_forward_rows(a, kind, k, select=None):
    """:func:`pool_forward` on shares of the rows of ``a`` in threads (the fast tier): average pooling by
    :func:`_avg_pool_kernel` (one pass over ``a``), max pooling by :func:`pool_forward` on each share
    (``over_shares``).  Each row's windows are pooled alone, so the numbers are the same however the rows
    are shared out."""
    R, C, H, W = a.shape
    out = _memory.empty((R, C, H // k, W // k), a.dtype)
    if kind == "avg":
        over_batch(_avg_pool_kernel, R, a, k, out)
        return out, None
    idx = np.empty(out.shape, np.intp)

    def share(lo, hi):
        out[lo:hi], idx[lo:hi] = pool_forward(a[lo:hi], kind, k, None if select is None else select[lo:hi])

    over_shares(share, R)
    return out, idx


def _pool_backward_rows(g, shape, kind, k, argmax=None):
    """:func:`pool_backward` on shares of the rows in threads, each written straight into the result: average
    pooling by :func:`_avg_pool_transpose_kernel`, max pooling by :func:`pool_backward` on each share."""
    out = _memory.empty(shape, g.dtype)
    if kind == "avg":
        over_batch(_avg_pool_transpose_kernel, shape[0], g, k, out)
        return out
    over_shares(lambda lo, hi: pool_backward(g[lo:hi], (hi - lo,) + tuple(shape[1:]), kind, k, argmax[lo:hi],
                                             out[lo:hi]), shape[0])
    return out


@njit(nogil=True, error_model="numpy")
def _avg_pool_kernel(a, k, out, first, stop):
    """Average pooling (Eq. (P)) of the rows ``first..stop-1`` of ``a`` (R, C, H, W) into ``out`` (R, C, Ho, Wo)
    in one pass: the operations of :func:`pool_forward` in its order (0, then the ``k^2`` offsets ``(i, j)``
    added row-major, then the division), so the results are the same bit for bit."""
    Ho, Wo = out.shape[2], out.shape[3]
    kk = out.dtype.type(k * k)
    for r in range(first, stop):
        for c in range(a.shape[1]):
            for y in range(Ho):
                row = out[r, c, y]
                row[:] = 0
                for i in range(k):
                    src = a[r, c, y * k + i]
                    for x in range(Wo):
                        for j in range(k):
                            row[x] += src[x * k + j]
                for x in range(Wo):
                    row[x] = row[x] / kk


@njit(nogil=True, error_model="numpy")
def _avg_pool_transpose_kernel(g, k, out, first, stop):
    """The transpose of average pooling for the rows ``first..stop-1``: each input position of a window gets
    ``g / k^2`` (the division of :func:`pool_backward`), positions outside every window 0; one pass over ``out``."""
    Ho, Wo = g.shape[2], g.shape[3]
    kk = out.dtype.type(k * k)
    for r in range(first, stop):
        for c in range(out.shape[1]):
            for y in range(out.shape[2]):
                dst = out[r, c, y]
                if y >= Ho * k:
                    dst[:] = 0
                    continue
                src = g[r, c, y // k]
                for x in range(Wo):
                    share = src[x] / kk
                    for j in range(k):
                        dst[x * k + j] = share
                dst[Wo * k:] = 0


def _synapse(L, a, fast, select=None):
    """``I = W * pool(a) + b`` of layer ``L`` for rows ``a`` (R, n_in of the layer below): Eq. (I), (C), (P).

    Returns ``(I (R, n_out), pooled input (R, ...), argmax of a max pooling or None)``; ``select``
    imposes the max pooling's choice (the anchored network of :func:`reference_objective`).
    """
    R = a.shape[0]
    sp = L.spec
    argmax = None
    if sp.pool is not None:
        a, argmax = (_pool_forward_rows if fast else pool_forward)(a.reshape(R, *sp.below_shape), *sp.pool,
                                                                   select=select)
    if sp.op == "dense":
        ain = a.reshape(R, -1)
        return ain @ L.W.T + L.b, ain, argmax                               # Eq. (I)
    ain = a.reshape(R, *sp.in_shape)
    if fast:                                                                # Eq. (C), the bias added per block
        return conv.conv2d_fast(ain, L.W, sp.stride, sp.pad, bias=L.b).reshape(R, -1), ain, argmax
    I = conv.conv2d(ain, L.W, sp.stride, sp.pad)                            # Eq. (C)
    I += L.b[None, :, None, None]
    return I.reshape(R, -1), ain, argmax


def _synapse_backward(L, gI, ain, argmax, fast, need_input=True):
    """Transpose of :func:`_synapse`: ``gI = dL/dI`` (R, n_out) -> ``(dL/dW, dL/db, dL/d(input below) or None)``."""
    R = gI.shape[0]
    sp = L.spec
    if sp.op == "dense":
        gW, gb = gI.T @ ain, gI.sum(axis=0)                                 # Eq. (B5)
        ga = gI @ L.W if need_input else None                               # Eq. (B2)
    else:
        g4 = gI.reshape(R, *sp.out_shape)
        O, Ho, Wo = sp.out_shape
        C, H, W = sp.in_shape
        k, s, p = sp.kernel, sp.stride, sp.pad
        gb = g4.sum(axis=(0, 2, 3))
        wgrad, igrad = ((conv.conv2d_weight_grad_fast, conv.conv2d_input_grad_fast) if fast else
                        (conv.conv2d_weight_grad, conv.conv2d_input_grad))
        gW = wgrad(ain, g4, k, s, p)                                        # Eq. (B5) for a convolution
        ga = igrad(g4, L.W, (H, W), s, p) if need_input else None          # Eq. (B2): the transposed convolution
    if ga is not None:
        if sp.pool is not None:
            ga = (_pool_backward_rows if fast else pool_backward)(ga.reshape(R, *sp.pooled_shape),
                                                                  (R, *sp.below_shape), *sp.pool, argmax)
        ga = ga.reshape(R, -1)
    return gW, gb, ga


# ---------------------------------------------------------------------------
# Parameters and argument checks
# ---------------------------------------------------------------------------

def param_keys(n_layers: int, cfg: Config = Config()) -> list:
    """The parameter names of an ``n_layers``-layer network under ``cfg``, in order."""
    cfg = check_config(cfg, Config)
    keys = []
    for n in range(1, n_layers + 1):
        keys += [f"W{n}", f"b{n}"]
        if cfg.learn_decay == "clamp":
            keys.append(f"beta{n}")
        elif cfg.learn_decay == "sigmoid":
            keys.append(f"tau_w{n}")
        if cfg.learn_threshold:
            keys.append(f"thr{n}")
    return keys


def _layer_value(name: str, value, n: int, N: int):
    """Layer ``n``'s (0-based) entry of a per-layer Config field."""
    if isinstance(value, tuple):
        if len(value) != N:
            raise ValueError(f"{name}: {len(value)} values given for {N} layers; give one per layer or one number")
        return value[n]
    return value


def init_params(sizes=None, cfg: Config = Config(), rng=0) -> dict:
    """Initial parameters for a fully connected net ``sizes = [n_in, h1, ..., n_out]``, or for ``cfg.arch``.

    Returns ``{"W1": (h1, n_in), "b1": (h1,), ..., "WN": (n_out, h_{N-1}), "bN": (n_out,)}``
    in float64 (a convolution's ``Wn`` is PyTorch's ``(c_out, c_in, k, k)``, its ``bn`` one per
    output channel), initialised as ``cfg.init`` says, and with ``learn_decay`` /
    ``learn_threshold`` the 0-d ``beta{n}`` / ``tau_w{n}`` / ``thr{n}`` set from ``cfg.decay``
    and ``cfg.v_th``.  With ``cfg.arch`` the architecture fixes the sizes; ``sizes`` may then be
    None, or ``[n_in, ..., n_out]`` whose first and last entries must agree with it.
    """
    cfg = check_config(cfg, Config)
    rng = as_generator(rng)
    if cfg.arch is not None:
        input_shape, specs = parse_arch(cfg.arch)
        if sizes is not None:
            sizes = check_sizes(sizes)
            if (sizes[0], sizes[-1]) != (int(np.prod(input_shape)), specs[-1].n_out):
                raise ValueError(f"sizes: {sizes} do not match cfg.arch {cfg.arch!r} (input "
                                 f"{int(np.prod(input_shape))}, output {specs[-1].n_out})")
    else:
        specs = _specs(cfg, check_sizes(sizes))
    N = len(specs)
    params = {}
    for n, sp in enumerate(specs, start=1):
        fan_in = int(np.prod(sp.weight_shape[1:]))          # c_in k k for a convolution, n_in for a dense layer
        if cfg.init == "paper":
            W = rng.uniform(-1.0, 1.0, (sp.weight_shape[0], fan_in))
            W /= np.sqrt((W ** 2).sum(axis=1, keepdims=True))  # each row (each filter) to unit norm
            W = W.reshape(sp.weight_shape)
            b = np.zeros(sp.weight_shape[0])
        else:
            bound = 1.0 / math.sqrt(fan_in)                 # PyTorch's default for Linear and Conv2d
            W = rng.uniform(-bound, bound, sp.weight_shape)
            b = rng.uniform(-bound, bound, sp.weight_shape[0])
        params[f"W{n}"], params[f"b{n}"] = W, b
        lam = _layer_value("decay", cfg.decay, n - 1, N)
        if cfg.learn_decay == "clamp":
            params[f"beta{n}"] = np.array(lam)
        elif cfg.learn_decay == "sigmoid":
            params[f"tau_w{n}"] = np.array(math.log((1.0 - lam) / lam) if lam < 1 else -math.inf)
        if cfg.learn_threshold:
            params[f"thr{n}"] = np.array(float(_layer_value("v_th", cfg.v_th, n - 1, N)))
    return params


@dataclass
class _Layer:
    """One layer as the equations see it: weights and the neuron's constants, one per neuron."""

    W: np.ndarray
    b: np.ndarray
    spec: LayerSpec         # its synaptic operation (dense or convolution, pooling) and shapes
    lam: np.ndarray         # (H,) decay
    kap: np.ndarray         # (H,) input scale kappa
    c: np.ndarray           # (H,) (1 - lam) v_rest
    thr: np.ndarray         # (H,) threshold
    alpha: np.ndarray       # (H,) synapse decay
    decay_key: str | None = None     # "beta{n}" / "tau_w{n}" when the decay is learned ...
    decay_raw: np.ndarray | None = None   # ... and its value (0-d or (H,))
    thr_key: str | None = None       # "thr{n}" when the threshold is learned ...
    thr_raw: np.ndarray | None = None     # ... and its value

    @property
    def n(self) -> int:
        """The number of neurons ``H`` (a convolution's ``C * H * W``, flattened)."""
        return self.spec.n_out


def _float_param(name, value, H):
    arr = check_array(name, value, dtype=np.float64)
    if arr.shape not in ((), (H,)):
        raise ValueError(f"{name}: expected a 0-d array (one value for the layer) or shape ({H},), got {arr.shape}")
    return arr


def _network(params, cfg: Config, name: str = "params") -> list:
    """Validate ``params`` against ``cfg`` and resolve every layer's constants (:class:`_Layer`)."""
    if not isinstance(params, dict):
        raise TypeError(f"{name}: expected a dict of arrays, got {type(params).__name__}")
    N = sum(1 for k in params if k[:1] == "W" and k[1:].isdigit())
    want = param_keys(max(N, 1), cfg)
    if N < 1 or sorted(params) != sorted(want):
        missing = [k for k in want if k not in params]
        extra = [k for k in params if k not in want]
        raise ValueError(f"{name}: expected keys {want}; missing {missing}, unexpected {extra}")
    specs = parse_arch(cfg.arch)[1] if cfg.arch is not None else None
    if specs is not None and N != len(specs):
        raise ValueError(f"{name}: cfg.arch {cfg.arch!r} has {len(specs)} layers, the parameters {N} (W1..W{N})")
    layers = []
    for n in range(1, N + 1):
        if specs is not None:
            sp = specs[n - 1]
            W = check_array(f"{name}['W{n}']", params[f"W{n}"], ndim=len(sp.weight_shape))
            if W.shape != sp.weight_shape:
                raise ValueError(f"{name}['W{n}']: expected shape {sp.weight_shape} for layer {n} of cfg.arch "
                                 f"{cfg.arch!r}, got {W.shape}")
        else:
            W = check_array(f"{name}['W{n}']", params[f"W{n}"], ndim=2)
            if n > 1 and W.shape[1] != layers[-1].n:
                raise ValueError(f"{name}['W{n}']: expected {layers[-1].n} inputs (the size of layer {n - 1}), "
                                 f"got shape {W.shape}")
            sp = LayerSpec("dense", (W.shape[1],), (W.shape[1],), (W.shape[0],))
        b = check_array(f"{name}['b{n}']", params[f"b{n}"], ndim=1)
        if b.shape[0] != W.shape[0]:
            raise ValueError(f"{name}['b{n}']: expected shape ({W.shape[0]},) to match W{n} {W.shape}, got {b.shape}")
        H = sp.n_out
        decay_key = decay_raw = thr_key = thr_raw = None
        if cfg.learn_decay == "clamp":
            decay_key = f"beta{n}"
            decay_raw = _float_param(f"{name}['{decay_key}']", params[decay_key], H)
            lam = np.clip(decay_raw, 0.0, 1.0)
        elif cfg.learn_decay == "sigmoid":
            decay_key = f"tau_w{n}"
            decay_raw = _float_param(f"{name}['{decay_key}']", params[decay_key], H)
            lam = 1.0 - _sigmoid(decay_raw)
        else:
            lam = np.asarray(float(_layer_value("decay", cfg.decay, n - 1, N)))
        if cfg.learn_threshold:
            thr_key = f"thr{n}"
            thr = thr_raw = _float_param(f"{name}['{thr_key}']", params[thr_key], H)
        else:
            thr = np.asarray(float(_layer_value("v_th", cfg.v_th, n - 1, N)))
        alpha = float(_layer_value("syn_decay", cfg.syn_decay, n - 1, N))
        lam = np.broadcast_to(lam, (H,)).astype(np.float64)
        kap = 1.0 - lam if cfg.decay_input else np.ones(H)
        layers.append(_Layer(W, b, sp, lam, kap, (1.0 - lam) * cfg.v_rest, np.broadcast_to(thr, (H,)).astype(np.float64),
                             np.full(H, alpha), decay_key, decay_raw, thr_key, thr_raw))
    return layers


def _sigmoid(w):
    """The logistic function, computed as ``1/(1 + exp(-w))`` (torch.sigmoid's value)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(w, dtype=np.float64)))


def neuron_constants(params, cfg: Config = Config()) -> list:
    """Per layer, the neuron's effective constants ``{"decay", "input_scale", "threshold", "syn_decay"}``.

    Each is an array with one value per neuron, after the clamp or sigmoid of a
    learned decay: what the equations use.
    """
    cfg = check_config(cfg, Config)
    return [{"decay": L.lam.copy(), "input_scale": L.kap.copy(), "threshold": L.thr.copy(),
             "syn_decay": L.alpha.copy()} for L in _network(params, cfg)]


def _check_x(x, layers, finite=True) -> np.ndarray:
    """``x`` as (T, batch, n_in); a convolutional net also takes (T, batch, C, H, W) maps.  ``finite=False``
    leaves out the check for NaN and infinities, for a caller that makes it itself after the cast to
    ``cfg.dtype`` (:func:`_prepare`, :func:`_check_finite_x`)."""
    x = check_array("x", x, finite=finite)
    first = layers[0].spec
    if len(first.below_shape) == 3 and x.ndim == 5:
        if x.shape[2:] != first.below_shape:
            raise ValueError(f"x: expected maps of shape (T, batch, C, H, W) = (T, batch, "
                             f"{', '.join(map(str, first.below_shape))}) for cfg.arch, got {x.shape}")
        x = x.reshape(x.shape[0], x.shape[1], -1)
    n_in = int(np.prod(first.below_shape))
    check_time_major("x", x, n_in, layer="W1 has shape (h1, {n_in})" if first.op == "dense" and
                     len(first.below_shape) == 1 else "the input of cfg.arch, flattened in (C, H, W) order")
    return x


def _cast(layers, dt):
    """The layers with every array in dtype ``dt``."""
    return [replace(L, W=L.W.astype(dt, copy=False), b=L.b.astype(dt, copy=False), lam=L.lam.astype(dt),
                    kap=L.kap.astype(dt), c=L.c.astype(dt), thr=L.thr.astype(dt), alpha=L.alpha.astype(dt))
            for L in layers]


def _prepare(params, x, cfg, finite=True):
    """The layers and ``x`` in ``cfg.dtype``, checked; ``finite=False`` leaves the check for NaN and
    infinities to the caller (:func:`_check_finite_x`)."""
    cfg = check_config(cfg, Config)
    layers = _network(params, cfg)
    x = _check_x(x, layers, finite=False)
    dt = np.dtype(cfg.dtype)
    with np.errstate(over="ignore"):                  # a value beyond float32's range: refused by name below
        x = x.astype(dt, copy=False)
    if finite:
        _check_finite_x(x)
    return _cast(layers, dt), x, cfg


def _check_finite_x(x):
    """Raise, naming ``x``, if it holds NaN or infinities in the dtype the network runs in (checked after the
    cast: a float64 value beyond float32's range is infinite in float32)."""
    try:
        check_array("x", x)
    except ValueError as exc:
        if x.dtype == np.float32:
            raise ValueError(f"{exc} in float32 (cfg.dtype; values beyond 3.4e38 in magnitude become "
                             f"infinite)") from None
        raise


# ---------------------------------------------------------------------------
# The neuron's pieces: the reset R with its partial derivatives, the firing rules
# ---------------------------------------------------------------------------
# A reset is a named piece: R(u, o) (Eq. (R)) and the partial derivatives the backward pass needs
# (Eq. (B3), (B4)), written with operations that work on numbers and on arrays alike.  Constants are
# integers (``1 - o``, ``0 * u``) so that every branch keeps the dtype of ``u`` (float32 stays float32).
# The readable tier and the stack of layers (refsnn.stbp_layers) call these methods; numba cannot take a
# Python object, so the kernels read the same formulas from ``_kernel_reset_*`` below, selected by the
# piece's ``code`` (a named constant), and a test holds the two equal for every reset.  There the constants
# are ``one`` (1 in the data's dtype): numba, unlike NumPy, makes float64 of a float32 and an integer.

_EXP, _ZERO, _TO_VALUE, _SUBTRACT, _NONE = range(5)     # the kernels' names for the resets (Reset.code)


class Reset:
    """``R(u, o)``, the potential after a spike ``o`` at potential ``u``, with ``dR/du``, ``dR/do``, ``dR/dv_th``.

    ``lam`` (the decay) is used by :class:`ExpReset`, ``thr`` (the threshold) by :class:`Subtract`.
    """

    name = "reset"
    code = -1

    def value(self, u, o, lam, thr):
        raise NotImplementedError

    def du(self, u, o, lam):
        raise NotImplementedError

    def do(self, u, o, lam, thr):
        raise NotImplementedError

    def dthr(self, u, o):
        return 0 * o


class ExpReset(Reset):
    """The paper's: ``lam R = lam u exp(-o/lam)`` (its ``u tau f(o)``, ``f(o) = exp(-o/tau)``)."""

    name, code = "exp", _EXP

    def value(self, u, o, lam, thr):
        return u * np.exp(-o / lam)

    def du(self, u, o, lam):
        return np.exp(-o / lam) + 0 * u

    def do(self, u, o, lam, thr):
        return -(u / lam) * np.exp(-o / lam)


class ZeroReset(Reset):
    """The official code's ``mem * (1 - spike)``: ``R = u (1 - o)``."""

    name, code = "zero", _ZERO

    def value(self, u, o, lam, thr):
        return u * (1 - o)

    def du(self, u, o, lam):
        return (1 - o) + 0 * u

    def do(self, u, o, lam, thr):
        return -u + 0 * o


@dataclass(frozen=True)
class ToValue(Reset):
    """Reset to a value: ``R = u (1 - o) + v_reset o``."""

    v_reset: float = 0.0
    name, code = "v_reset", _TO_VALUE

    def value(self, u, o, lam, thr):
        return u * (1 - o) + self.v_reset * o

    def du(self, u, o, lam):
        return (1 - o) + 0 * u

    def do(self, u, o, lam, thr):
        return self.v_reset - u + 0 * o


class Subtract(Reset):
    """The "soft" reset: ``R = u - v_th o``."""

    name, code = "subtract", _SUBTRACT

    def value(self, u, o, lam, thr):
        return u - thr * o

    def du(self, u, o, lam):
        return 1 + 0 * (u + o)

    def do(self, u, o, lam, thr):
        return -thr + 0 * (u + o)

    def dthr(self, u, o):
        return -o + 0 * u


class NoReset(Reset):
    """No reset: ``R = u``."""

    name, code = "none", _NONE

    def value(self, u, o, lam, thr):
        return u + 0 * o

    def du(self, u, o, lam):
        return 1 + 0 * (u + o)

    def do(self, u, o, lam, thr):
        return 0 * (u + o)


def reset_piece(cfg: Config, dtype=np.float64) -> Reset:
    """The :class:`Reset` that ``cfg.reset`` names (``"v_reset"``: :class:`ToValue` of ``cfg.v_reset``,
    in ``dtype``)."""
    if cfg.reset == "v_reset":
        return ToValue(np.dtype(dtype).type(cfg.v_reset))
    return RESET_PIECES[cfg.reset]()


#: The resets that take no value, by the name :class:`Config` gives them (``"v_reset"`` is :class:`ToValue`).
RESET_PIECES = {"exp": ExpReset, "zero": ZeroReset, "subtract": Subtract, "none": NoReset}


@njit(error_model="numpy", inline="always")
def _kernel_reset_value(u, o, reset, lam, thr, v_reset, one):
    """:meth:`Reset.value` of the reset whose ``code`` is ``reset``, on numbers (for the kernels).  ``one``
    is 1 in the data's dtype: numba would turn ``1 - o`` with a float32 ``o`` into float64."""
    if reset == _EXP:
        return u * np.exp(-o / lam)
    if reset == _ZERO:
        return u * (one - o)
    if reset == _TO_VALUE:
        return u * (one - o) + v_reset * o
    if reset == _SUBTRACT:
        return u - thr * o
    return u + (one - one) * o


@njit(error_model="numpy", inline="always")
def _kernel_reset_du(u, o, reset, lam, one):
    """:meth:`Reset.du`, on numbers."""
    if reset == _EXP:
        return np.exp(-o / lam) + (one - one) * u
    if reset == _ZERO or reset == _TO_VALUE:
        return (one - o) + (one - one) * u
    return one + (one - one) * (u + o)


@njit(error_model="numpy", inline="always")
def _kernel_reset_do(u, o, reset, lam, thr, v_reset, one):
    """:meth:`Reset.do`, on numbers."""
    if reset == _EXP:
        return -(u / lam) * np.exp(-o / lam)
    if reset == _ZERO:
        return -u + (one - one) * o
    if reset == _TO_VALUE:
        return v_reset - u + (one - one) * o
    if reset == _SUBTRACT:
        return -thr + (one - one) * (u + o)
    return (one - one) * (u + o)


@njit(error_model="numpy", inline="always")
def _kernel_fire(u, thr, strict, one, zero):
    """Eq. (o) on numbers: ``one`` where ``u - thr > 0`` (``strict``) or ``>= 0``, else ``zero`` (1 and 0 in the
    data's dtype; the compiled code selects, no branch).  The forward kernel fires with it, and the backward
    kernel remakes the spikes with it from the stored ``u``: the same operations on the same numbers, so the
    same spikes.  (Called from plain Python it hands back a Python float: the kernels cast it to the dtype.)"""
    z = u - thr
    if strict:
        return one if z > zero else zero
    return one if z >= zero else zero


def spike_rule(cfg: Config):
    """The firing rule of the network ``cfg`` describes: ``fire(n, t, z) -> o^{t,n}``, ``z = u - v_th``.

    ``forward="spike"``: Eq. (o), ``H(z)`` with ``>`` (``strict``) or ``>=``.
    ``forward="smooth"``: ``P(z)``, the surrogate's primitive.
    """
    if cfg.forward == "smooth":
        return lambda n, t, z: surrogates.primitive(z, cfg.surrogate, cfg.width)
    if cfg.strict:
        return lambda n, t, z: (z > 0).astype(z.dtype)                            # Eq. (o)
    return lambda n, t, z: (z >= 0).astype(z.dtype)


def anchored_rule(cfg: Config, u0, o0, thr0):
    """The firing rule of :func:`reference_objective`'s network, anchored at a forward pass.

    ``o^{t,n} = o0 + P(z) - P(z0)``, ``z0 = u0 - thr0`` from the pass at
    ``params``: equal to the spikes ``o0`` at ``z = z0``, with derivative
    ``h(z)``.  For ``forward="smooth"`` the network is smooth already and the
    rule is :func:`spike_rule`'s.
    """
    if cfg.forward == "smooth":
        return spike_rule(cfg)

    def P(z):
        return surrogates.primitive(z, cfg.surrogate, cfg.width)

    return lambda n, t, z: o0[n][t] + P(z) - P(u0[n][t] - thr0[n])


# ---------------------------------------------------------------------------
# Readable twin: step-major loops that follow the equations line by line
# ---------------------------------------------------------------------------

class Trace(NamedTuple):
    """What a forward pass records, per layer a (T, batch, n_layer) array each: the potential ``u`` compared
    with the threshold, the spikes ``o``, and the charge ``v`` and synaptic current ``j`` (Eq. (V), (J))."""

    u: list
    o: list
    v: list
    j: list


def _run_numpy(layers, x, cfg, fire, reset_spikes, pool_select=None):
    """Eq. (I)-(R) step by step, layer by layer: the :class:`Trace`, and ``sel``, per layer and step the
    entries a max pooling took (None for other layers), which ``pool_select`` (the same structure)
    imposes instead."""
    R = reset_piece(cfg, x.dtype)
    delayed = cfg.reset_timing == "delayed"
    T, B = x.shape[:2]
    u, o, v, j = ([np.zeros((T, B, L.n), x.dtype) for L in layers] for _ in range(4))
    r = [np.broadcast_to(np.asarray(cfg.v_rest, x.dtype), (B, L.n)) for L in layers]   # r^{-1} = v_rest
    o_reset = o if reset_spikes is None else reset_spikes              # the spikes the reset sees
    sel = [[None] * T for _ in layers]
    for t in range(T):
        a = x[t]                                                        # o^{t,0}
        for n, L in enumerate(layers):
            I, _, sel[n][t] = _synapse(L, a, False, None if pool_select is None else pool_select[n][t])  # Eq. (I)
            j[n][t] = L.alpha * j[n][t - 1] + I if (cfg.synapse == "current" and t > 0) else I   # Eq. (J)
            v[n][t] = L.lam * r[n] + L.kap * j[n][t] + L.c              # Eq. (V)
            if delayed and t > 0:
                u[n][t] = R.value(v[n][t], o_reset[n][t - 1], L.lam, L.thr)   # Eq. (u)
            else:
                u[n][t] = v[n][t]
            o[n][t] = fire(n, t, u[n][t] - L.thr)                       # Eq. (o), or its smoothed stand-in
            r[n] = u[n][t] if delayed else R.value(u[n][t], o_reset[n][t], L.lam, L.thr)   # Eq. (R)
            a = o[n][t]
    return Trace(u, o, v, j), sel


def forward_numpy(params, x, cfg: Config, *, fire=None, reset_spikes=None, pool_select=None, trace=False):
    """Simulate the network, looping over time, then layers (the paper's order).

    Parameters
    ----------
    params : dict
        ``W1, b1, ..., WN, bN`` (and learned neuron parameters, :func:`param_keys`).
    x : ndarray, shape (T, batch, n_in)
        Input spikes or currents, ``o^{t,0}``.
    cfg : Config
    fire : callable, optional
        ``fire(n, t, z) -> o^{t,n}`` with ``z = u - v_th``, the firing rule of
        layer ``n`` at step ``t`` (0-based); default :func:`spike_rule` of
        ``cfg``.  :func:`reference_objective` passes :func:`anchored_rule`.
    reset_spikes : list of (T, batch, n_layer) arrays, optional
        Spikes for the reset to see instead of the network's own (a detached
        reset: :func:`reference_objective` freezes it at the forward pass's
        spikes when ``cfg.detach_reset``).
    pool_select : list, optional
        Per layer and step, the entries each max pooling takes (a frozen choice:
        :func:`reference_objective` freezes it at the forward pass's).
    trace : bool
        Return the whole :class:`Trace` (``u, o, v, j``), which :func:`backward_numpy` takes.

    Returns
    -------
    u, o : list of ndarray, each (T, batch, n_layer)
        Membrane potentials (the value compared with ``v_th``) and spikes of every layer
        (or the :class:`Trace` with ``trace=True``).
    """
    layers, x, cfg = _prepare(params, x, cfg)
    tr, _ = _run_numpy(layers, x, cfg, spike_rule(cfg) if fire is None else fire, reset_spikes, pool_select)
    return tr if trace else (tr.u, tr.o)


def backward_numpy(params, x, trace, g_obar, cfg: Config):
    """Exact BPTT through the surrogate graph, step-major (Eq. (B1)-(B5)).

    Parameters
    ----------
    params, x, cfg
        As for :func:`forward_numpy`.
    trace : Trace
        From ``forward_numpy(params, x, cfg, trace=True)``.
    g_obar : ndarray, shape (batch, n_out)
        ``dL/dobar``, the loss gradient with respect to the output rate.

    Returns
    -------
    grads : dict
        The gradient of every parameter (:func:`param_keys`).
    g_x : ndarray, shape (T, batch, n_in)
        ``dL/dx``, the gradient with respect to the input.
    """
    layers, x, cfg = _prepare(params, x, cfg)
    return _backward_numpy(layers, x, trace, g_obar, cfg)


def _backward_numpy(layers, x, trace, g_obar, cfg):
    R = reset_piece(cfg, x.dtype)
    delayed, detach = cfg.reset_timing == "delayed", cfg.detach_reset
    T, N = x.shape[0], len(layers)
    u, o, v, j = trace
    h = lambda z: surrogates.h(z, cfg.surrogate, cfg.width)           # noqa: E731
    gW = [np.zeros_like(L.W) for L in layers]
    gb = [np.zeros_like(L.b) for L in layers]
    glam = [np.zeros_like(L.lam) for L in layers]
    gthr = [np.zeros_like(L.thr) for L in layers]
    g_x = np.zeros_like(x)
    nxt = [None] * N                                                   # (eps, g_v, g_j) of step t+1
    for t in reversed(range(T)):
        delta = g_obar / T                                             # Eq. (B1)
        for n in reversed(range(N)):
            L = layers[n]
            a = x[t] if n == 0 else o[n - 1][t]                        # o^{t,n-1}
            _, ain, argmax = _synapse(L, a, False)                     # what the synapse saw (pooled) and chose
            ut, ot = u[n][t], o[n][t]
            eps_r = 0.0
            if t < T - 1:
                eps_next, gv_next, gj_next = nxt[n]
                g_r = L.lam * gv_next                                  # dL/dr^t, through the charge of t+1
                if delayed:
                    if not detach:
                        delta = delta + eps_next * R.do(v[n][t + 1], ot, L.lam, L.thr)   # Eq. (B3)
                    eps_r = g_r
                else:
                    if not detach:
                        delta = delta + g_r * R.do(ut, ot, L.lam, L.thr)   # Eq. (B3)
                    eps_r = g_r * R.du(ut, ot, L.lam)
                    gthr[n] += (g_r * R.dthr(ut, ot)).sum(axis=0)      # the reset's dR/dv_th
            fire_part = delta * h(ut - L.thr)
            eps = fire_part + eps_r                                    # Eq. (B4)
            gthr[n] -= fire_part.sum(axis=0)                           # do/dv_th = -h
            if delayed and t > 0:
                gv = eps * R.du(v[n][t], o[n][t - 1], L.lam)
                gthr[n] += (eps * R.dthr(v[n][t], o[n][t - 1])).sum(axis=0)
            else:
                gv = eps
            gj = L.kap * gv
            if cfg.synapse == "current" and t < T - 1:
                gj = gj + L.alpha * nxt[n][2]                          # Eq. (B4j)
            r_prev = cfg.v_rest if t == 0 else (u[n][t - 1] if delayed else R.value(
                u[n][t - 1], o[n][t - 1], L.lam, L.thr))
            glam[n] += (gv * (r_prev - cfg.v_rest - (j[n][t] if cfg.decay_input else 0.0))).sum(axis=0)   # dv/dlam
            gWt, gbt, delta = _synapse_backward(L, gj, ain, argmax, False)   # Eq. (B5), and (B2): dL/do^{t,n-1}
            gW[n] += gWt
            gb[n] += gbt
            nxt[n] = (eps, gv, gj)
        g_x[t] = delta
    return _collect(layers, cfg, gW, gb, glam, gthr), g_x


def _collect(layers, cfg, gW, gb, glam, gthr) -> dict:
    """The gradient dict: weights and biases, then the chain rule to the learned neuron parameters."""
    grads = {}
    for n, L in enumerate(layers, start=1):
        grads[f"W{n}"], grads[f"b{n}"] = gW[n - 1], gb[n - 1]
        if L.decay_key is not None:
            g = glam[n - 1]
            if cfg.learn_decay == "clamp":                             # lam = clamp(beta, 0, 1)
                inside = (L.decay_raw >= 0.0) & (L.decay_raw <= 1.0)
                g = np.broadcast_to(g, (L.n,)) * np.broadcast_to(inside, (L.n,))
            else:                                                      # lam = 1 - sigmoid(w)
                q = _sigmoid(L.decay_raw)
                g = -g * np.broadcast_to(q * (1.0 - q), (L.n,))
            grads[L.decay_key] = _reduce(g, L.decay_raw)
        if L.thr_key is not None:
            grads[L.thr_key] = _reduce(gthr[n - 1], L.thr_raw)
    return grads


def _reduce(g, like):
    """A per-neuron gradient summed to the parameter's shape (0-d: one value for the layer)."""
    like = np.asarray(like)
    return np.asarray(g.sum()) if like.shape == () else np.asarray(g)


# ---------------------------------------------------------------------------
# Fast tier: layer-major, numba kernels for the element-wise time recursions
# ---------------------------------------------------------------------------

class _Neurons(NamedTuple):
    """One layer's neuron constants as the kernels read them: one value per neuron, each (H,)."""

    lam: np.ndarray         # decay
    kap: np.ndarray         # input scale kappa
    c: np.ndarray           # (1 - lam) v_rest
    thr: np.ndarray         # threshold
    alpha: np.ndarray       # synapse decay


class _Rule(NamedTuple):
    """One layer's settings as the kernels read them (:class:`Config`'s, the reset and the surrogate by code)."""

    reset: int              # Reset.code
    v_reset: float          # for ToValue
    v_rest: float
    delayed: bool           # reset_timing == "delayed"
    synapse: bool           # synapse == "current"
    strict: bool            # fire on u > v_th (else >=)
    smooth: bool            # forward == "smooth": o = P(u - v_th)
    detach: bool            # detach_reset
    decay_input: bool       # the decay is learned and the input decayed: dv/dlam includes -j
    surrogate: int          # surrogates.KIND_CODES
    width: float


def _kernel_setting(L, cfg, dt):
    """``(_Neurons, _Rule)`` of layer ``L`` for the kernels, every number in dtype ``dt``."""
    rule = _Rule(reset=reset_piece(cfg).code, v_reset=dt.type(cfg.v_reset), v_rest=dt.type(cfg.v_rest),
                 delayed=cfg.reset_timing == "delayed", synapse=cfg.synapse == "current", strict=cfg.strict,
                 smooth=cfg.forward == "smooth", detach=cfg.detach_reset,
                 decay_input=cfg.decay_input and L.decay_key is not None,
                 surrogate=surrogates.KIND_CODES[cfg.surrogate], width=dt.type(cfg.width))
    return _Neurons(L.lam, L.kap, L.c, L.thr, L.alpha), rule


def _specialised(factory, key):
    """The kernel ``factory(*key)`` compiles, made once per process and setting: the setting's switches
    (which reset, its timing, the synapse, the firing rule, the surrogate, ...) are constants in the
    compiled code, so numba drops the branches of every other setting and the loops over neurons vectorise
    (the same code testing the switches for every neuron ran 2-4x slower).  One compilation per setting
    used, kept in numba's disk cache like every kernel."""
    if (factory, key) not in _KERNELS:
        _KERNELS[factory, key] = factory(*key)
    return _KERNELS[factory, key]


_KERNELS = {}


def _compile_lif_forward(reset, delayed, synapse, strict, smooth, sur, keep_v, keep_j, recurrent=False, bias=False):
    """The forward kernel for one setting (:func:`_lif_forward_kernel`, :func:`_specialised`)."""

    @njit(nogil=True, error_model="numpy")   # IEEE division (lam, width > 0 are validated): loops vectorise
    def forward(I, b, lam, kap, c, thr, alpha, V, v_reset, v_rest, width, u, o, v_out, j_out, first, stop):
        """:func:`_lif_forward_kernel` for the samples ``first`` to ``stop - 1``, into ``u`` and ``o``."""
        T, B, H = I.shape
        one, zero = I.dtype.type(1), I.dtype.type(0)     # constants in the data's dtype: float32 stays float32
        for s in range(first, stop):         # the innermost loop walks contiguous memory
            jprev = np.zeros(H, I.dtype)
            for t in range(T):
                for i in range(H):
                    jt = I[t, s, i]
                    if bias:                                      # the bias of Eq. (I), added as I is read
                        jt = jt + b[i]
                    if recurrent and t > 0:                       # one recurrent weight per neuron (the stack)
                        jt = jt + V[i] * o[t - 1, s, i]                                     # Eq. (Rec)
                    if synapse:
                        if t > 0:
                            jt = alpha[i] * jprev[i] + jt                                   # Eq. (J)
                        jprev[i] = jt
                    if t == 0:
                        r = v_rest                                                          # r^{-1} = v_rest
                    elif delayed:
                        r = u[t - 1, s, i]
                    else:
                        r = _kernel_reset_value(u[t - 1, s, i], o[t - 1, s, i], reset, lam[i], thr[i], v_reset, one)  # (R)
                    vt = lam[i] * r + kap[i] * jt + c[i]                                    # Eq. (V)
                    if delayed and t > 0:
                        ut = _kernel_reset_value(vt, o[t - 1, s, i], reset, lam[i], thr[i], v_reset, one)   # Eq. (u)
                    else:
                        ut = vt
                    u[t, s, i] = ut
                    if smooth:
                        o[t, s, i] = surrogates.primitive_scalar(sur, width, ut - thr[i])
                    else:
                        o[t, s, i] = _kernel_fire(ut, thr[i], strict, one, zero)          # Eq. (o)
                    if keep_v:
                        v_out[t, s, i] = vt
                    if keep_j:
                        j_out[t, s, i] = jt

    return forward


def _compile_lif_backward(reset, delayed, synapse, detach, decay_input, sur, recurrent=False, from_u=False,
                          strict=True):
    """The backward kernel for one setting (:func:`_lif_backward_kernel`, :func:`_specialised`).  ``from_u``: the
    spikes are remade from ``u`` by Eq. (o) (``strict``: ``>``, else ``>=``) instead of read from ``o``, one
    array less to stream (not for the smooth forward, whose spikes are no step of ``u``)."""

    @njit(nogil=True, error_model="numpy")
    def backward(g, u, o, v, j, lam, kap, thr, alpha, V, v_reset, v_rest, width, glam, gthr, gV, gI, first, stop):
        """:func:`_lif_backward_kernel` for the samples ``first`` to ``stop - 1``, into ``gI``."""
        subtract = reset == _SUBTRACT                # the only reset with dR/dv_th (= -o)
        T, B, H = u.shape
        one, zero = u.dtype.type(1), u.dtype.type(0)     # constants in the data's dtype
        for s in range(first, stop):
            eps_n = np.zeros(H, u.dtype)     # eps, g_v, g_j of step t+1 for this sample
            gv_n = np.zeros(H, u.dtype)
            gj_n = np.zeros(H, u.dtype)
            gl = glam[s]
            gt = gthr[s]
            for t in range(T - 1, -1, -1):
                for i in range(H):
                    ut = u[t, s, i]
                    if from_u:                                      # Eq. (o) again, as the forward fired
                        ot = u.dtype.type(_kernel_fire(ut, thr[i], strict, one, zero))
                    else:
                        ot = o[t, s, i]
                    d = g[t, s, i]
                    if recurrent and t < T - 1:                   # through the recurrent weight into step t+1
                        d = d + gI[t + 1, s, i] * V[i]                                      # Eq. (Rec), backward
                    e_r = zero
                    if t < T - 1:
                        g_r = lam[i] * gv_n[i]                                              # dL/dr^t
                        if delayed:
                            if not detach:
                                d = d + eps_n[i] * _kernel_reset_do(v[t + 1, s, i], ot, reset, lam[i], thr[i],
                                                                    v_reset, one)          # Eq. (B3)
                            e_r = g_r
                        else:
                            if not detach:
                                d = d + g_r * _kernel_reset_do(ut, ot, reset, lam[i], thr[i], v_reset, one)   # Eq. (B3)
                            e_r = g_r * _kernel_reset_du(ut, ot, reset, lam[i], one)
                            if subtract:
                                gt[i] -= g_r * ot
                    fire = d * u.dtype.type(surrogates.h_scalar(sur, width, ut - thr[i]))   # h in the dtype
                    e = fire + e_r                                                          # Eq. (B4)
                    gt[i] -= fire
                    if delayed and t > 0:
                        if from_u:
                            o_prev = u.dtype.type(_kernel_fire(u[t - 1, s, i], thr[i], strict, one, zero))
                        else:
                            o_prev = o[t - 1, s, i]
                        gv = e * _kernel_reset_du(v[t, s, i], o_prev, reset, lam[i], one)
                        if subtract:
                            gt[i] -= e * o_prev
                    else:
                        gv = e
                    gj = kap[i] * gv
                    if synapse and t < T - 1:
                        gj = gj + alpha[i] * gj_n[i]                                        # Eq. (B4j)
                    gI[t, s, i] = gj
                    eps_n[i] = e
                    gv_n[i] = gv
                    gj_n[i] = gj
                # dL/dlam (and dL/dV) of step t in a loop of their own: with them inside the loop above, the
                # compiler does not vectorise it (too many arrays to check for overlap); the same sums
                for i in range(H):
                    if t == 0:
                        r_prev = v_rest
                    else:
                        up = u[t - 1, s, i]
                        if from_u:
                            o_prev = u.dtype.type(_kernel_fire(up, thr[i], strict, one, zero))
                        else:
                            o_prev = o[t - 1, s, i]
                        if recurrent:
                            gV[s, i] += gj_n[i] * o_prev                                    # dL/dV, Eq. (Rec)
                        if delayed:
                            r_prev = up
                        else:
                            r_prev = _kernel_reset_value(up, o_prev, reset, lam[i], thr[i], v_reset, one)
                    dv = r_prev - v_rest
                    if decay_input:
                        dv = dv - j[t, s, i]
                    gl[i] += gv_n[i] * dv

    return backward


def _lif_forward_kernel(I, nrn, rule, v_out, j_out, V=None, u=None, bias=None):
    """All ``T`` steps of one layer, Eq. (J)-(R), from its synaptic input ``I`` (T, B, H) for every step.

    The same arithmetic, in the same order, as :func:`forward_numpy`; ``nrn`` and ``rule`` are the
    layer's :class:`_Neurons` and :class:`_Rule`.  ``v_out`` and ``j_out`` receive ``v`` and ``j`` when
    they have ``I``'s shape (the backward pass needs them for a delayed reset and a learned decay); pass
    (1, 1, 1) arrays otherwise (at ``T = 1`` too: the shape decides, not the number of rows).  Returns ``u, o``.  Runs the kernel compiled for ``rule``'s setting
    (:func:`_specialised`); ``_lif_forward_kernel.py_func`` runs the same code as plain Python.
    ``u=I`` writes the potentials over the input (each step reads ``I[t]`` before it writes ``u[t]``), which
    saves the memory traffic of a new array where the caller no longer needs ``I``; ``bias`` (H,), if given,
    is added to ``I`` as the kernel reads it (the same sums as adding it first, without a pass of its own).
    """
    kernel, args, u, o = _forward_args(I, nrn, rule, v_out, j_out, V, u, bias)
    over_batch(kernel, I.shape[1], *args)
    return u, o


def _forward_args(I, nrn, rule, v_out, j_out, V, u, bias):
    """The forward kernel compiled for this setting, its arguments in its order (without ``first, stop``), and
    ``u, o`` (made here unless ``u`` is given): shared by :func:`_lif_forward_kernel` and its plain-Python twin."""
    u = _memory.empty(I.shape, I.dtype) if u is None else u
    o = _memory.empty(I.shape, I.dtype)
    kernel = _forward_for(rule, I, v_out, j_out, V is not None, bias is not None)
    args = (I, _or_dummy(bias, I), *nrn, _or_dummy(V, I), rule.v_reset, rule.v_rest, rule.width, u, o, v_out, j_out)
    return kernel, args, u, o


def _lif_backward_kernel(g, trace, nrn, rule, glam, gthr, V=None, gV=None):
    """Reverse time recursion of one layer, Eq. (B3)-(B4j): ``dL/dI`` (T, B, H) from ``g = dL/do`` (spatial part).

    The same order as :func:`backward_numpy`.  ``trace`` is the layer's ``(u, o, v, j)`` from the forward
    kernel (``v`` used for a delayed reset, ``j`` for ``glam`` when ``rule.decay_input``; otherwise they
    may be (1, 1, 1) placeholders; ``o`` is read only for the smooth forward: a step forward's spikes are
    remade from ``u`` by the forward's own rule, :func:`_kernel_fire`).  Accumulates each sample's
    ``dL/dlam`` into ``glam[s]`` and ``dL/dv_th`` into ``gthr[s]`` (both (B, H); the caller sums over samples).
    Samples are shared out among threads.  ``_lif_backward_kernel.py_func`` runs the same code as plain Python.
    (Writing ``dL/dI`` over ``g`` would save a pass, but numba's vectorised loop then fails its overlap check and
    runs scalar: 1.5 -> 2.3 ms on the bench's float32 layer, in a step.)
    """
    kernel, args, gI = _backward_args(g, trace, nrn, rule, glam, gthr, V, gV)
    over_batch(kernel, gI.shape[1], *args)
    return gI


def _backward_args(g, trace, nrn, rule, glam, gthr, V, gV):
    """The backward kernel compiled for this setting, its arguments in its order (without ``first, stop``), and
    ``gI`` (made here): shared by :func:`_lif_backward_kernel` and its plain-Python twin."""
    gI = _memory.empty(trace[0].shape, trace[0].dtype)
    args = (g, *trace, nrn.lam, nrn.kap, nrn.thr, nrn.alpha, _or_dummy(V, gI), rule.v_reset, rule.v_rest, rule.width,
            glam, gthr, _or_dummy(gV, gI, 2), gI)
    return _backward_for(rule, V is not None), args, gI


def _or_dummy(a, like, ndim=1):
    """``a``, or a one-entry ``ndim``-d placeholder in ``like``'s dtype where a kernel takes an array it will not
    read (the recurrent weights and their gradient of a layer without recurrence)."""
    return np.zeros((1,) * ndim, like.dtype) if a is None else a


def _forward_for(rule, I, v_out, j_out, recurrent=False, bias=False):
    return _specialised(_compile_lif_forward, (int(rule.reset), bool(rule.delayed), bool(rule.synapse),
                                               bool(rule.strict), bool(rule.smooth),
                                               int(rule.surrogate) if rule.smooth else -1,   # the primitive
                                               v_out.shape == I.shape, j_out.shape == I.shape, bool(recurrent),
                                               bool(bias)))


def _backward_for(rule, recurrent=False):
    return _specialised(_compile_lif_backward, (int(rule.reset), bool(rule.delayed), bool(rule.synapse),
                                                bool(rule.detach), bool(rule.decay_input), int(rule.surrogate),
                                                bool(recurrent), not rule.smooth, bool(rule.strict)))


def _forward_py(I, nrn, rule, v_out, j_out, V=None, u=None, bias=None):
    """:func:`_lif_forward_kernel` with the kernel's code run as plain Python."""
    kernel, args, u, o = _forward_args(I, nrn, rule, v_out, j_out, V, u, bias)
    kernel.py_func(*args, 0, I.shape[1])
    return u, o


def _backward_py(g, trace, nrn, rule, glam, gthr, V=None, gV=None):
    """:func:`_lif_backward_kernel` with the kernel's code run as plain Python."""
    kernel, args, gI = _backward_args(g, trace, nrn, rule, glam, gthr, V, gV)
    kernel.py_func(*args, 0, gI.shape[1])
    return gI


_lif_forward_kernel.py_func = _forward_py
_lif_backward_kernel.py_func = _backward_py


def _forward_fast(layers, x, cfg, keep=False, checked=True):
    """Layer-major forward: per layer the :class:`Trace` entries ``u, o, v, j`` (``v`` and ``j`` only when
    ``keep`` and the backward pass needs them, else (1, 1, 1) placeholders) and, with ``keep``, what its
    synapse saw (``ins``: the pooled input, a max pooling's choice, the input's spike lists or None).

    A dense layer whose input is spikes (0 and 1 only) at most ``spike_products.MAX_DENSITY`` of the time
    and which has at least ``spike_products.MIN_OUT`` neurons gets its current by adding one column of ``W``
    per spike instead of a matrix product (:mod:`refsnn.blocks.spike_products`; the same sum, other
    rounding).  ``checked=False``: ``x`` has not been checked for NaN and infinities yet; a first layer that
    adds rows has done so (its input holds only 0 and 1), otherwise it is checked here."""
    T, B = x.shape[:2]
    dt = x.dtype
    dummy = np.zeros((1, 1, 1), dt)
    tr, ins = Trace([], [], [], []), []
    a = x
    for n, L in enumerate(layers):
        H = L.n
        nrn, rule = _kernel_setting(L, cfg, dt)
        if L.spec.op == "dense" and L.spec.pool is None:
            a2 = a.reshape(T * B, -1)
            lists = spike_products.lists_if_they_pay(a2, H)             # None unless 0 and 1 only, sparse enough
            if n == 0 and not checked and lists is None:
                _check_finite_x(x)                                      # NaN or infinities: a clear error
            if lists is not None:
                I = spike_products.matmul(lists, L.W).reshape(T, B, H)  # Eq. (I): a column of W per spike
            else:
                I = (a2 @ L.W.T).reshape(T, B, H)                       # Eq. (I), every t at once (+ b in the kernel)
            bias = L.b
            ins.append((a2, None, lists) if keep else None)
        else:
            if n == 0 and not checked:
                _check_finite_x(x)
            I, ain, argmax = _synapse(L, a.reshape(T * B, -1), True)   # Eq. (I), (C), (P), every t at once
            I, bias = I.reshape(T, B, H), None
            ins.append((ain, argmax, None) if keep else None)
        v_out = np.empty((T, B, H), dt) if keep and rule.delayed else dummy
        j_out = np.empty((T, B, H), dt) if keep and rule.decay_input else dummy
        un, on = _lif_forward_kernel(I, nrn, rule, v_out, j_out, u=I, bias=bias)   # u over I: nothing reads it later
        for seq, arr in zip(tr, (un, on, v_out, j_out)):
            seq.append(arr)
        a = on
    return tr, ins


def _backward_fast(layers, x, trace, ins, g_obar, cfg, input_grad=False):
    """Layer-major Eq. (B1)-(B5); ``dL/dx`` (one more matrix product) only when ``input_grad``."""
    T, B = x.shape[:2]
    dt = x.dtype
    N = len(layers)
    gW, gb, glam, gthr = [None] * N, [None] * N, [None] * N, [None] * N
    g = np.broadcast_to((g_obar / T).astype(dt), (T,) + g_obar.shape)   # Eq. (B1) at every t
    for n in reversed(range(N)):
        L = layers[n]
        H = L.n
        nrn, rule = _kernel_setting(L, cfg, dt)
        gl, gt = np.zeros((B, H), dt), np.zeros((B, H), dt)          # per sample, summed below
        layer_trace = (trace.u[n], trace.o[n], trace.v[n], trace.j[n])
        gI = _lif_backward_kernel(np.ascontiguousarray(g), layer_trace, nrn, rule, gl, gt)
        glam[n], gthr[n] = gl.sum(axis=0), gt.sum(axis=0)
        e2 = gI.reshape(T * B, H)
        ain, argmax, lists = ins[n]
        need = n > 0 or input_grad
        if L.spec.op == "dense" and L.spec.pool is None:
            if lists is not None:                                       # Eq. (B5): a spike's input adds its row of e
                gW[n] = spike_products.weight_grad(e2, lists)
            else:
                gW[n] = e2.T @ ain                                      # Eq. (B5), summed over t and batch
            gb[n] = e2.sum(axis=0)
            g = (e2 @ L.W).reshape(T, B, -1) if need else None          # Eq. (B2)
        else:
            gW[n], gb[n], g = _synapse_backward(L, e2, ain, argmax, True, need)   # Eq. (B5), (B2)
            g = g.reshape(T, B, -1) if need else None
    return _collect(layers, cfg, gW, gb, glam, gthr), g


# ---------------------------------------------------------------------------
# The algorithm contract
# ---------------------------------------------------------------------------

def _gradients(params, x, y, cfg, input_grad=False):
    layers, xx, cfg = _prepare(params, x, cfg, finite=False)        # the one validation of the call: x for NaN
    y = check_labels("y", y, layers[-1].n, batch=xx.shape[1])       # below (the fast tier as it reads x)
    if cfg.backend == "numpy":
        _check_finite_x(xx)
        tr, _ = _run_numpy(layers, xx, cfg, spike_rule(cfg), None)
        loss, g_obar = _loss(tr.o[-1].mean(axis=0), y, cfg)
        grads, gx = _backward_numpy(layers, xx, tr, g_obar, cfg)
    else:
        tr, ins = _forward_fast(layers, xx, cfg, keep=True, checked=False)
        loss, g_obar = _loss(tr.o[-1].mean(axis=0), y, cfg)
        grads, gx = _backward_fast(layers, xx, tr, ins, g_obar, cfg, input_grad=input_grad)
    return loss, grads, gx, tr.o


def loss_and_grad(params, x, y, cfg: Config = Config(), rng=None, *, info=None):
    """Loss of the network on ``(x, y)`` and its STBP gradient.

    Parameters
    ----------
    params : dict
        ``W1, b1, ..., WN, bN``, ``Wn`` of shape ``(n_out, n_in)``, and the
        learned neuron parameters ``beta{n}`` / ``tau_w{n}`` / ``thr{n}`` when
        ``cfg`` asks for them (:func:`param_keys`).
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
    loss, grads, _, o = _gradients(params, x, y, cfg)
    if info is not None:
        info["counts"] = [on.sum(axis=0) for on in o]
        info["pred"] = np.argmax(info["counts"][-1], axis=1)
    return loss, grads


def input_gradient(params, x, y, cfg: Config = Config()):
    """``dL/dx``, the shape of ``x``: the surrogate gradient with respect to the input."""
    g = _gradients(params, x, y, cfg, input_grad=True)[2]
    return g.reshape(np.shape(x))


def reference_objective(params, x, y, cfg: Config = Config(), rng=None):
    """The smooth function whose exact gradient at ``params`` is :func:`loss_and_grad`'s.

    Runs the forward pass at ``params`` once (float64, readable tier) to record
    the anchor ``(u0, o0)``, and returns ``objective(p)``: the loss of the
    network in which every spike is ``o0 + P(u - v_th) - P(u0 - v_th0)``
    (``P`` the surrogate's primitive), or ``P(u - v_th)`` when
    ``cfg.forward == "smooth"``; with ``detach_reset`` the reset sees the
    frozen spikes ``o0``, and a max pooling keeps the choice it made at
    ``params`` (its sub-gradient, as PyTorch's).  ``objective(params)`` equals
    the network's loss.  Always computed in float64.
    """
    cfg = replace(check_config(cfg, Config), dtype="float64", backend="numpy")
    layers = _network(params, cfg)
    x = _check_x(x, layers).astype(np.float64)
    y = check_labels("y", y, layers[-1].n, batch=x.shape[1])
    (u0, o0, _, _), sel0 = _run_numpy(layers, x, cfg, spike_rule(cfg), None)   # the anchor: the pass at params
    fire = anchored_rule(cfg, u0, o0, [L.thr for L in layers])
    reset_spikes = o0 if cfg.detach_reset else None             # a detached reset sees the anchor's spikes

    def objective(p) -> float:
        _, o = forward_numpy(p, x, cfg, fire=fire, reset_spikes=reset_spikes, pool_select=sel0)
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
    layers = _network(params, cfg)
    x = _check_x(x, layers).astype(np.float64)
    u = _run_numpy(layers, x, cfg, spike_rule(cfg), None)[0].u
    d = math.inf
    for un, L in zip(u, layers):
        for k in ks:
            d = min(d, float(np.min(np.abs(un - L.thr - k))))
    return d


def simulate(params, x, cfg: Config = Config()):
    """Run the network and return ``(u, o)``: per-layer membrane potentials and spikes, each (T, batch, n)."""
    layers, xx, cfg = _prepare(params, x, cfg)
    if cfg.backend == "numpy":
        tr, _ = _run_numpy(layers, xx, cfg, spike_rule(cfg), None)
    else:
        tr, _ = _forward_fast(layers, xx, cfg)
    return tr.u, tr.o


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
