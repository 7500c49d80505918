r"""SSNN-BP: backprop computed by stochastic spikes, with spike-coincidence weight updates.

Biswas, Saraswat, Ganguly, "A temporally and spatially local spike-based
backpropagation algorithm to enable training in hardware", Neuromorphic
Computing and Engineering (2023), doi:10.1088/2634-4386/acf1c5; arXiv:2207.09755.
The reconstruction is derived in ``docs/ssnn_bp.md``.

What is the paper's and what is ours
------------------------------------
Only the paper's abstract could be read.  From it come the
*ideas*: information is carried by stochastic spike trains; a **composite
neuron** computes the forward activation and the backward gradient at the same
time, both as spikes; signed gradients are split into a **positive and a
negative stream**; the weight update is a **temporally and spatially local,
discrete count of spike coincidences** (what a resistive crossbar, an RPU,
does); softmax cross-entropy is made by **winner-take-all lateral inhibition**;
and accuracy approaches the ANN's **as the spike trains grow**.  A 2-layer
(one hidden layer) network is the paper's.

Everything concrete below is **our design**: the clip
activation, the four units F / D / G+ / G- and their wiring, the Gumbel-noise
WTA, the gain ``gamma`` and its no-clipping bound, the update-port spikes, the
window-pipelined forward pass of V2, and every equation number (the tags
``Eq. (F1)`` ... are ours; the paper's own numbering is unknown).  None of
the paper's hyper-parameters (hidden width, T, learning rate) are known, and
none are quoted here.

The network (ANN view, exact rates)
-----------------------------------
Layers ``l = 1..L`` (``L = 2`` is the paper's 2-layer network), input
``a^0 = x`` in [0, 1] (spike probabilities), label ``c``::

    z^l = W^l a^{l-1} + b^l                                     # Eq. (F1)
    a^l = f(z^l) = clip(z^l, 0, 1)            (l < L)           # Eq. (F2): a valid spike probability
    p   = softmax(z^L),   loss = -log p_c   (mean over a batch) # Eq. (F3)

Exact backprop (the ANN twin, and what the spikes estimate), with
``delta = dloss/dz``::

    delta^L = p - onehot(c)                                     # Eq. (B1)
    delta^l = f'(z^l) * (W^{l+1})^T delta^{l+1},  f' = 1[0<z<1] # Eq. (B2)
    dloss/dW^l = delta^l (a^{l-1})^T,  dloss/db^l = delta^l     # Eq. (B3)

The spiking computation (one window of ``T`` steps)
---------------------------------------------------
**F unit (forward).**  In V1 (``forward="rate"``) the forward pass uses the
exact rates of Eq. (F1)-(F2).  In V2 (``forward="spike"``) every unit emits a
Bernoulli train and the next layer counts it over the window::

    s^0(t) ~ Bernoulli(x)                                       # Eq. (S1): input trains
    zhat^l = W^l (1/T sum_t s^{l-1}(t)) + b^l                   # Eq. (S2): F unit integrates its window
    s^l(t) ~ Bernoulli(f(zhat^l)),  iid over t    (l < L)       # Eq. (S3): F unit fires

**D unit (derivative gate):** ``g^l = 1[0 < zhat^l < 1]``, held for the
window (Eq. (S4)); ``zhat = z`` in V1.

**Output layer: WTA.**  At each step exactly one output neuron spikes, the one
whose potential plus escape noise is largest (lateral inhibition)::

    w(t) = argmax_k ( zhat^L_k + G_k(t) ),   G_k(t) iid Gumbel(0, 1)   # Eq. (W1)

so ``P(w(t) = k) = softmax(zhat^L)_k`` (the Gumbel-max identity).  Its gradient
streams need no arithmetic::

    e+_c(t) = 1[w(t) != c],    e-_k(t) = 1[w(t) = k]  (k != c)       # Eq. (W2)

hence ``E[e+(t) - e-(t)] = onehot(c) - p = -delta^L``.  When the target wins,
no gradient spike is emitted at that step (event sparsity).

**G+ and G- units (gradient), hidden layer l.**  They read the gradient spikes
of layer ``l+1`` through the transpose of its crossbar and fire with a gain
``gamma_l``::

    beta^l(t) = (W^{l+1})^T (e+^{l+1}(t) - e-^{l+1}(t))                # Eq. (G1)
    e+^l_j(t) = g^l_j 1[u_j(t) < gamma_l max( beta^l_j(t), 0)]          # Eq. (G2)
    e-^l_j(t) = g^l_j 1[u_j(t) < gamma_l max(-beta^l_j(t), 0)]

with ``u_j(t) ~ U[0, 1)`` fresh.  (The two units share one uniform: since at
most one of them has a non-zero probability, this is the same distribution as
two independent draws.)  ``gamma_l`` is the largest gain for which no
probability exceeds 1 (clipping would bias the estimate), times
``Config.gamma_scale`` <= 1::

    gamma_{L-1} = gamma_scale / max_j (max_k W^L_kj - min_k W^L_kj)    # Eq. (G3): beta = W^L_cj - W^L_wj
    gamma_l     = gamma_scale / max_j sum_k |W^{l+1}_kj|   (l < L-1)

(the first is tight because at most two output streams are non-zero at a
step, ``+1`` at ``c`` and ``-1`` at the winner; the simpler
``1/(2 max|W^L|)`` is a looser bound).  In expectation the streams of layer
``l`` carry ``-Gamma_l delta^l`` with ``Gamma_l = gamma_l gamma_{l+1} ...
gamma_{L-1}`` and ``Gamma_L = 1``.

**Update port and coincidence counting (the RPU update).**  Presynaptic unit
``i`` of layer ``l-1`` drives the crossbar's update port with spikes
``v_i(t) ~ Bernoulli(a^{l-1}_i)`` drawn independently of everything else
(``update_port="independent"``, the default: exact unbiasedness), or with its
own forward train ``s^{l-1}(t)`` (``"reuse"``, closer to STDP).  A device
changes by one quantum only where a presynaptic and a postsynaptic gradient
spike coincide::

    C+^l_ji = sum_t v_i(t) AND e+^l_j(t),   C-^l_ji = sum_t v_i(t) AND e-^l_j(t)   # Eq. (U1)
    Delta W^l = dw_min^l (C+ - C-),   dw_min^l = eta / (Gamma_l T)                  # Eq. (U2)
    Delta b^l = dw_min^l sum_t (e+^l(t) - e-^l(t))        (the bias input spikes every step)

Every coincidence is one pulse of ``+-dw_min``: the update is quantised, and
the quantum shrinks like ``1/T`` at fixed ``eta``.

What ``loss_and_grad`` returns
------------------------------
An RPU writes the update as ``Delta W = +eta e a^T`` with ``e = -dloss/dz``.
The refsnn contract is ``W <- W - eta * grad``.  So the returned gradient
estimate is ``-Delta W / eta``::

    ghat_W^l = -(C+^l - C-^l) / (Gamma_l T),   ghat_b^l = -sum_t (e+^l - e-^l) / (Gamma_l T)   # Eq. (U3)

averaged over the batch (with ``batch > 1`` that is the minibatch mean of the
per-sample estimates, :func:`sample_gradients`).  The returned loss is the ANN
cross-entropy (Eq. (F3)) at the exact rates, in both modes.

Why V1 is unbiased, and its variance
------------------------------------
In V1 the gate and the winners' distribution are exact, the update-port
spikes are independent of the gradient spikes, and nothing clips, so by
linearity of expectation, for one step ``t``:
``E[e+_k - e-_k] = -delta^L_k``; ``E[e+^l_j - e-^l_j | beta] = gamma_l g_j
beta_j`` so ``E[e+^l - e-^l] = -Gamma_l delta^l``; ``E[v_i (e+_j - e-_j)] =
a_i E[e+_j - e-_j]``.  Summing ``T`` iid steps and dividing by
``-Gamma_l T``: ``E[ghat_W^l] = delta^l (a^{l-1})^T``, Eq. (B3) exactly.
Each entry of ``ghat`` is ``-1/(Gamma T)`` times a sum of ``T`` iid
variables ``X_t = v_i(t)(e+_j(t) - e-_j(t))`` in ``{-1, 0, 1}``, so (one hidden
layer, ``delta^2 = p - onehot(c)``, ``delta^1`` from Eq. (B2))::

    Var[ghat_W2_kj] = (a1_j |delta2_k| - a1_j^2 delta2_k^2) / T                       # Eq. (Var1)
    Var[ghat_W1_ji] = (x_i g_j E|beta_j| / gamma - x_i^2 delta1_j^2) / T,
        E|beta_j| = sum_{k != c} p_k |W2_cj - W2_kj|                                   # Eq. (Var2)

(bias entries: set ``a = 1``).  Both fall like ``1/T``; larger ``gamma``
lowers the hidden layer's.  :func:`variance_v1` computes them.

V2 (``forward="spike"``) is consistent but not exactly unbiased: the gate,
the clip and the softmax see a noisy ``zhat`` (``sqrt(T) (zhat_j - z_j)`` has
variance ``sigma_j^2 = sum_i W_ji^2 x_i (1 - x_i)`` in the first layer).  The
softmax's curvature gives a bias ``O(1/T)``; a hidden unit at distance
``d_j`` from a kink of the clip adds a gate-flip term of order
``Phi(-d_j sqrt(T) / sigma_j)``, which is flat until ``T ~ (sigma_j/d_j)^2``
and then vanishes faster than any power.  So the bias falls at least 2x per
4x in ``T`` once ``T`` exceeds that for every unit (``tests/test_ssnn_bp.py``
checks it exactly, by enumerating the spike counts of a tiny net, and on
samples), but a unit that sits just next to a kink keeps its hidden-layer bias
almost flat over a wide range of ``T`` (we measured 0.51, 0.47, 0.40, 0.27 for
one such row of a 20-12-5 net at T = 4, 16, 64, 256).  With
``update_port="reuse"`` in V2 the update-port spike that enters a coincidence
also shaped ``zhat`` of the next layer, which adds a correlation bias; in V1
the F units' trains feed nothing but the update port, so "reuse" and
"independent" are the same thing there.

The ANN twin
------------
``Config(ann=True)`` makes :func:`loss_and_grad` return the exact gradient
Eq. (B1)-(B3) (:func:`ann_loss_and_grad`) of the same network, and
:func:`predict` use the exact rates.  So ``refsnn train ssnn_bp --set
ann=True`` trains the baseline with the same architecture, initialisation,
data order and online SGD as the spiking runs.

Two tiers
---------
The coincidence counter of Eq. (U1) is the hot loop, and it exists three
times (``Config(counter=...)``), all giving the same integers from the same
spikes (``tests/test_ssnn_bp.py``):

* ``"loop"``, :func:`coincidences_loop`: the readable twin, plain NumPy.  At
  every step, every synapse ANDs its two spikes and counts (one outer product
  of the step's two spike vectors).
* ``"events"`` (default), :func:`coincidences`: a numba kernel that visits,
  at each step, only the ports and G units that spiked (the crossbar's outer
  product of two sparse pulse vectors).
* ``"matmul"``: ``C+ - C- = (e+ - e-)^T v``, one product of 0/1 matrices
  (BLAS, float32, exact for counts below 2**24).  As fast as ``"events"`` on
  an idle machine, but OpenBLAS's threads make it 100x slower when other
  processes load the cores, hence not the default.

All three run only over the *active* steps, those where the target lost the
WTA: at the other steps no gradient spike exists anywhere (Eq. (W2),
(G1)-(G2)), so no coincidence can happen, and the update-port spikes there are
never drawn.  This does not change the distribution of any count.

Notation differences from the paper
-----------------------------------
* The paper's notation is unknown (only its abstract is public); the symbols
  are ours (``docs/ssnn_bp.md``).  ``T`` is the spike-train length (``BL`` in the RPU
  literature).  ``Gamma_l`` (product of the per-layer gains) is ours, needed
  for more than one hidden layer.
* ``e+ / e-`` are the positive and negative streams ``e^+ / e^-``; ``delta = -e`` is the usual
  backprop error, because refsnn returns gradients (update ``-eta * grad``),
  not the RPU's ``+eta e a^T`` updates.
* Weights are ``(n_out, n_in)``; keys ``W1, b1, ..., WL, bL``.  Time runs
  ``t = 0..T-1``; spike arrays are ``(T, batch, n)``; the active steps are
  listed as rows ``(t, b)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from refsnn.blocks._checks import (
    as_generator,
    check_array,
    check_choice,
    check_config,
    check_in_range,
    check_int,
    check_labels,
    check_layers,
    check_sizes,
    check_spikes,
)
from refsnn.blocks._jit import njit, resolve_backend

__all__ = [
    "Config",
    "PRESETS",
    "init_params",
    "loss_and_grad",
    "reference_objective",
    "predict",
    "encode",
    "ann_loss_and_grad",
    "forward_rates",
    "wta_winners",
    "output_streams",
    "gradient_units",
    "gains",
    "coincidences",
    "coincidences_loop",
    "simulate",
    "Trace",
    "sample_gradients",
    "dw_min",
    "variance_v1",
]

FORWARDS = ("rate", "spike")
PORTS = ("independent", "reuse")
COUNTERS = ("events", "matmul", "loop")


@dataclass(frozen=True)
class Config:
    """Settings of an SSNN-BP network.  Every field is validated on construction.

    Model settings
    --------------
    T : int
        Spike-train length (steps per window), >= 1.  The update quantum is
        ``dw_min = eta / (Gamma T)`` and the estimate's variance falls like ``1/T``.
    forward : {"rate", "spike"}
        ``"rate"`` (V1): the forward pass uses the exact rates, only the
        gradient streams and the update are stochastic; the estimate is exactly
        unbiased.  ``"spike"`` (V2): every layer's F units spike and the next
        layer counts them over the window (Eq. (S1)-(S3)); the estimate is
        consistent, with a bias that falls with ``T``.
    ann : bool
        True: the ANN twin.  :func:`loss_and_grad` returns the exact backprop
        gradient and :func:`predict` uses exact rates; the other fields are unused.

    Reconstruction choices (no public code)
    ---------------------------------------
    update_port : {"independent", "reuse"}
        Presynaptic spikes used in the coincidences: fresh ``Bernoulli(a)``
        trains independent of everything (default, unbiased), or the F units'
        own forward trains (biased in V2; the same distribution in V1).
    gamma_scale : float
        In (0, 1]: the gain of the G units as a fraction of the largest gain
        that never clips a firing probability (Eq. (G3)).  1 gives the lowest
        variance.

    Numerical settings
    ------------------
    counter : {"events", "matmul", "loop"}
        How coincidences are counted (Eq. (U1)): a numba kernel visiting only
        the spikes of each step (default), a product of 0/1 matrices (BLAS),
        or the brute-force per-step, per-synapse twin.  All three give the
        same integers given the same spikes.
    """

    T: int = 64
    forward: str = "rate"
    update_port: str = "independent"
    gamma_scale: float = 1.0
    counter: str = "events"
    ann: bool = False

    def __post_init__(self):
        object.__setattr__(self, "T", check_int("T", self.T, minimum=1))
        check_choice("forward", self.forward, FORWARDS)
        check_choice("update_port", self.update_port, PORTS)
        object.__setattr__(self, "gamma_scale",
                           check_in_range("gamma_scale", self.gamma_scale, 0.0, 1.0, lo_open=True))
        check_choice("counter", self.counter, COUNTERS)
        if self.counter == "events" and resolve_backend("numba") == "numpy":
            object.__setattr__(self, "counter", "matmul")     # numba off: BLAS counts the same integers
        if not isinstance(self.ann, (bool, np.bool_)):
            raise TypeError(f"ann: expected True or False, got {self.ann!r}")
        object.__setattr__(self, "ann", bool(self.ann))

    def to_dict(self) -> dict:
        return asdict(self)


#: Named settings for ``refsnn train ssnn_bp --preset NAME``: the unbiased V1,
#: the fully spiking V2, and the ANN twin (exact backprop of the same network).
PRESETS = {
    "v1": Config(T=64, forward="rate"),
    "v2": Config(T=64, forward="spike"),
    "ann": Config(ann=True),
}


# ---------------------------------------------------------------------------
# Parameters and argument checks
# ---------------------------------------------------------------------------

def init_params(sizes, cfg: Config = Config(), rng=0) -> dict:
    """Initial weights for ``sizes = [n_in, h1, ..., n_out]`` (``n_out >= 2`` classes).

    ``W^l ~ U(-1/sqrt(n_in), 1/sqrt(n_in))`` (PyTorch's ``nn.Linear``
    default) and ``b^l ~ U(0, 1/sqrt(n_in))`` for hidden layers (a positive
    start keeps most clip units inside their linear range ``(0, 1)`` where
    they pass gradient), ``U(-1/sqrt(n_in), 1/sqrt(n_in))`` for the output.
    The spiking runs and the ANN twin start from the same weights.
    """
    check_config(cfg, Config)
    sizes = check_sizes(sizes, example="[64, 100, 10]")
    if sizes[-1] < 2:
        raise ValueError(f"sizes: the WTA output needs at least 2 classes, got n_out = {sizes[-1]}")
    rng = as_generator(rng)
    params = {}
    L = len(sizes) - 1
    for n, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:]), start=1):
        bound = 1.0 / math.sqrt(n_in)
        params[f"W{n}"] = rng.uniform(-bound, bound, (n_out, n_in))
        params[f"b{n}"] = rng.uniform(0.0, bound, n_out) if n < L else rng.uniform(-bound, bound, n_out)
    return params


def _layers(params, name="params"):
    """Split ``{W1, b1, ..., WL, bL}`` into float64 lists, checking names and shapes."""
    Ws, bs = check_layers(params, name, dtype=np.float64)
    L = len(Ws)
    if Ws[-1].shape[0] < 2:
        raise ValueError(f"{name}['W{L}']: the WTA output needs at least 2 classes, got shape {Ws[-1].shape}")
    return Ws, bs


def _check_x(x, n_in: int) -> np.ndarray:
    x = check_array("x", x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(f"x: expected shape (batch, n_in) = (batch, {n_in}) of spike probabilities, got {x.shape}")
    if x.shape[0] < 1:
        raise ValueError(f"x: need a batch of at least 1 sample, got shape {x.shape}")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(f"x: values are spike probabilities and must lie in [0, 1], "
                         f"got min {x.min():g}, max {x.max():g}")
    return x


def _prepare(params, x, y, cfg):
    cfg = check_config(cfg, Config)
    Ws, bs = _layers(params)
    x = _check_x(x, Ws[0].shape[1])
    y = check_labels("y", y, Ws[-1].shape[0], batch=x.shape[0])
    return Ws, bs, x, y, cfg


# ---------------------------------------------------------------------------
# The ANN: exact forward rates, loss and backprop (the twin and the reference)
# ---------------------------------------------------------------------------

def _f(z):
    """The activation ``clip(z, 0, 1)`` (Eq. (F2))."""
    return np.clip(z, 0.0, 1.0)


def _f_prime(z):
    """``f'(z) = 1[0 < z < 1]``, the D unit's gate (Eq. (B2), (S4))."""
    return ((z > 0.0) & (z < 1.0)).astype(np.float64)


def _log_softmax(z):
    m = z.max(axis=1, keepdims=True)
    zs = z - m
    return zs - np.log(np.exp(zs).sum(axis=1, keepdims=True))


def forward_rates(params, x):
    """Exact forward pass, Eq. (F1)-(F2): ``(zs, activations)``.

    ``zs[l-1]`` is ``z^l`` (batch, n_l) for ``l = 1..L``; ``activations[l]``
    is ``a^l`` for ``l = 0..L-1`` (``a^0 = x``).
    """
    Ws, bs = _layers(params)
    x = _check_x(x, Ws[0].shape[1])
    return _forward_rates(Ws, bs, x)


def _forward_rates(Ws, bs, x):
    zs, acts = [], [x]
    for n, (W, b) in enumerate(zip(Ws, bs)):
        z = acts[-1] @ W.T + b                                   # Eq. (F1)
        zs.append(z)
        if n < len(Ws) - 1:
            acts.append(_f(z))                                   # Eq. (F2)
    return zs, acts


def _ce(zL, y):
    """Mean softmax cross-entropy and ``p`` (Eq. (F3))."""
    logp = _log_softmax(zL)
    return float(-np.mean(logp[np.arange(len(y)), y])), np.exp(logp)


def _backprop(Ws, zs, acts, y):
    """Exact BP, Eq. (B1)-(B3), for the batch-mean loss."""
    B = len(y)
    _, p = _ce(zs[-1], y)
    delta = p.copy()
    delta[np.arange(B), y] -= 1.0                                # Eq. (B1)
    grads = {}
    for n in reversed(range(len(Ws))):
        grads[f"W{n + 1}"] = delta.T @ acts[n] / B               # Eq. (B3)
        grads[f"b{n + 1}"] = delta.sum(axis=0) / B
        if n > 0:
            delta = _f_prime(zs[n - 1]) * (delta @ Ws[n])        # Eq. (B2)
    return _sorted(grads)


def _sorted(grads):
    return dict(sorted(grads.items(), key=lambda kv: (int(kv[0][1:]), kv[0][0] == "b")))


def ann_loss_and_grad(params, x, y):
    """The ANN twin: mean cross-entropy and its exact gradient (Eq. (F1)-(F3), (B1)-(B3))."""
    Ws, bs = _layers(params)
    x = _check_x(x, Ws[0].shape[1])
    y = check_labels("y", y, Ws[-1].shape[0], batch=x.shape[0])
    zs, acts = _forward_rates(Ws, bs, x)
    return _ce(zs[-1], y)[0], _backprop(Ws, zs, acts, y)


# ---------------------------------------------------------------------------
# The spiking pieces: WTA, output streams, G units, gains, coincidence counters
# ---------------------------------------------------------------------------

def wta_winners(z, T: int, rng) -> np.ndarray:
    """Winner-take-all with escape noise, Eq. (W1): ``w(t) = argmax_k (z_k + G_k(t))``.

    Parameters
    ----------
    z : ndarray, shape (batch, K)
        Output potentials.
    T : int
        Steps.
    rng : int or Generator

    Returns
    -------
    ndarray of int, shape (T, batch)
        One winner per step; ``P(w(t) = k) = softmax(z)_k`` (Gumbel-max).
    """
    z = check_array("z", z, ndim=2, dtype=np.float64)
    T = check_int("T", T, minimum=1)
    rng = as_generator(rng)
    G = rng.gumbel(size=(T,) + z.shape)                          # escape noise, iid Gumbel(0, 1)
    return np.argmax(z[None] + G, axis=2)                        # Eq. (W1): lateral inhibition keeps one


def output_streams(winners, y, K: int):
    """The output gradient spikes of Eq. (W2) at every step.

    Returns ``(e_plus, e_minus)``, bool arrays of shape ``(T, batch, K)``:
    ``e_plus[t, b, c] = w != c`` (the target lost: potentiate onto ``c``),
    ``e_minus[t, b, k] = w == k != c`` (a wrong neuron won: depress onto it).
    """
    winners = np.asarray(winners)
    T, B = winners.shape
    y = np.asarray(y)
    lost = winners != y[None, :]                                 # the target lost this step
    e_plus = np.zeros((T, B, K), dtype=bool)
    e_minus = np.zeros((T, B, K), dtype=bool)
    tt, bb = np.nonzero(lost)
    e_plus[tt, bb, y[bb]] = True                                 # Eq. (W2)
    e_minus[tt, bb, winners[tt, bb]] = True
    return e_plus, e_minus


def gains(params, cfg: Config = Config()) -> list:
    """The G units' gains ``gamma_l`` for hidden layers ``l = 1..L-1`` (Eq. (G3)).

    The largest gain that keeps every firing probability ``gamma |beta|`` <= 1,
    times ``cfg.gamma_scale``.  For the last hidden layer ``beta_j = W^L_cj -
    W^L_wj`` (one ``+1`` and one ``-1`` stream), bounded by the range of column
    ``j``; deeper layers receive ternary streams from every unit above, so
    ``|beta_j| <= sum_k |W_kj|``.  A zero bound (``beta`` identically 0) gives
    ``gamma = gamma_scale``: nothing can fire, so any finite gain is exact.
    """
    Ws, _ = _layers(params)
    return _gains(Ws, check_config(cfg, Config).gamma_scale)


def _gains(Ws, gamma_scale: float) -> list:
    out = []
    L = len(Ws)
    for n in range(1, L):                                        # hidden layer n (1-based) reads W^{n+1}
        W = Ws[n]
        if n == L - 1:
            bound = float(np.max(W.max(axis=0) - W.min(axis=0)))  # Eq. (G3), output-fed layer
        else:
            bound = float(np.max(np.abs(W).sum(axis=0)))          # Eq. (G3), hidden-fed layer
        out.append(gamma_scale / bound if bound > 0 else gamma_scale)
    return out


def gradient_units(beta, g, gamma: float, u):
    """G+ and G- units, Eq. (G2): fire with probability ``gamma * max(+-beta, 0)`` where the gate is open.

    Parameters
    ----------
    beta : ndarray, shape (R, n)
        Backward currents ``(W^{l+1})^T (e+ - e-)`` at ``R`` steps (Eq. (G1)).
    g : ndarray of bool/0-1, shape (R, n)
        The D unit's gate at those steps.
    gamma : float
        The gain (Eq. (G3)); ``gamma |beta| <= 1`` is required (no clipping).
    u : ndarray, shape (R, n)
        Uniform [0, 1) noise.

    Returns
    -------
    e_plus, e_minus : bool ndarrays, shape (R, n)
    """
    prob = gamma * np.abs(beta)
    if prob.size and prob.max() > 1.0 + 1e-12:
        raise ValueError(f"gamma: gamma * |beta| reaches {prob.max():.6g} > 1; the firing probability would clip "
                         f"and bias the estimate (use refsnn.ssnn_bp.gains)")
    fire = (u < prob) & (np.asarray(g) > 0)
    return fire & (beta > 0), fire & (beta < 0)                  # Eq. (G2)


def _check_streams(port, e_plus, e_minus):
    """Three spike arrays (bool, or numbers that are all 0 or 1) of shapes (R, n_in), (R, n_out), (R, n_out)."""
    arrays = []
    for name, s_ in (("port", port), ("e_plus", e_plus), ("e_minus", e_minus)):
        arr = np.asarray(s_)
        if arr.dtype != bool:
            arr = check_spikes(name, arr)
        arrays.append(arr)
    port, e_plus, e_minus = arrays
    if port.ndim != 2 or e_plus.ndim != 2 or e_plus.shape != e_minus.shape or port.shape[0] != e_plus.shape[0]:
        raise ValueError(f"port, e_plus, e_minus: expected shapes (R, n_in), (R, n_out), (R, n_out), got "
                         f"{port.shape}, {e_plus.shape}, {e_minus.shape}")
    return port.astype(bool), e_plus.astype(bool), e_minus.astype(bool)


def coincidences_loop(port, e_plus, e_minus):
    """Coincidence counts ``(C+, C-)``, Eq. (U1), as the equation reads: the readable twin, plain NumPy.

    ``port`` (R, n_in) are presynaptic update-port spikes, ``e_plus`` and
    ``e_minus`` (R, n_out) the postsynaptic gradient spikes at the same ``R``
    steps.  At every step, every synapse ``(j, i)`` ANDs its two spikes and
    counts.  Returns two int64 arrays of shape ``(n_out, n_in)``.
    """
    port, e_plus, e_minus = _check_streams(port, e_plus, e_minus)
    c_plus = np.zeros((e_plus.shape[1], port.shape[1]), dtype=np.int64)
    c_minus = np.zeros_like(c_plus)
    for r in range(port.shape[0]):                               # every (active) time step
        c_plus += np.outer(e_plus[r], port[r])                   # Eq. (U1): e+_j(r) AND v_i(r), one pulse each
        c_minus += np.outer(e_minus[r], port[r])                 # the depressing pulses
    return c_plus, c_minus


@njit(error_model="numpy")
def _event_kernel(port, d, out):
    """Event-driven counting: at each step, add ``d_j`` to every synapse ``(j, i)`` whose port ``i`` spiked.

    ``port`` (R, n_in) bool, ``d`` (R, n_out) int8 in {-1, 0, 1}, ``out``
    (n_out, n_in) float64, updated in place: ``out += d^T port`` visiting
    only the spikes (the crossbar's outer product of two sparse pulse vectors).
    """
    R, n_in = port.shape
    n_out = d.shape[1]
    active = np.empty(n_in, dtype=np.int64)
    for r in range(R):
        m = 0
        for i in range(n_in):                                    # the ports that spiked at this step
            if port[r, i]:
                active[m] = i
                m += 1
        for j in range(n_out):
            v = d[r, j]
            if v != 0:                                           # a gradient spike of G+ (v=1) or G- (v=-1)
                for q in range(m):
                    out[j, active[q]] += v                       # Eq. (U1): one coincidence, one pulse of C+ - C-


def _count_dtype(R):
    return np.float32 if R < 2 ** 24 else np.float64            # float32 sums of +-1 are exact below 2**24


def coincidences(port, e_plus, e_minus, method: str = "events"):
    """Fast coincidence counts ``(C+, C-)``, Eq. (U1); the twin of :func:`coincidences_loop`.

    ``method="events"``: a numba kernel that, at each step, visits only the
    ports and G units that spiked.  ``method="matmul"``: ``C+ = (e+)^T port``
    as a product of 0/1 matrices (BLAS; exact in float32 below 2**24 steps).
    Returns two int64 arrays of shape ``(n_out, n_in)``.
    """
    check_choice("method", method, ("events", "matmul"))
    port, e_plus, e_minus = _check_streams(port, e_plus, e_minus)
    out = []
    for e in (e_plus, e_minus):
        out.append(_net_coincidences(port, e.astype(np.int8), method).astype(np.int64))
    return out[0], out[1]


def _net_coincidences(port, d, counter: str):
    """``C+ - C-`` (float64) for ternary ``d = e+ - e-`` (R, n_out) and ``port`` (R, n_in)."""
    if counter == "loop":
        c_plus, c_minus = coincidences_loop(port, d > 0, d < 0)
        return (c_plus - c_minus).astype(np.float64)
    if counter == "matmul":
        dt = _count_dtype(port.shape[0])
        return (d.astype(dt).T @ port.astype(dt)).astype(np.float64)  # Eq. (U1) as one product: (e+ - e-)^T v
    out = np.zeros((d.shape[1], port.shape[1]))
    _event_kernel(np.ascontiguousarray(port, dtype=bool), np.ascontiguousarray(d, dtype=np.int8), out)
    return out


# ---------------------------------------------------------------------------
# One window of the spiking network
# ---------------------------------------------------------------------------

@dataclass
class Trace:
    """Everything one window of SSNN-BP produced (:func:`simulate`).

    Attributes
    ----------
    T, batch : int
    z : list of (batch, n_l) arrays
        ``zhat^l`` for ``l = 1..L`` (the exact ``z^l`` in V1).
    rates : list of (batch, n_l) arrays
        Firing probabilities ``a^l`` of layers ``l = 0..L-1`` (``a^0 = x``;
        ``f(zhat^l)`` in V2).
    gates : list of (batch, n_l) bool arrays
        D units ``g^l`` of hidden layers ``l = 1..L-1``.
    trains : list of (T, batch, n_l) bool arrays, or None
        Forward spike trains ``s^l``, ``l = 0..L-1`` (V2 only).
    winners : (T, batch) int array
        WTA winners.
    rows : (R, 2) int array
        The active steps ``(t, b)``: those where the target lost the WTA.
    streams : list of (R, n_l) int8 arrays
        ``e+^l - e-^l`` at the active steps, ``l = 1..L``.
    ports : list of (R, n_{l-1}) bool arrays
        The update-port spikes ``v`` that meet layer ``l``'s streams.
    gammas : list of float
        Gains ``gamma_l`` of the hidden layers (Eq. (G3)).
    Gammas : list of float
        ``Gamma_l`` for ``l = 1..L`` (``Gamma_L = 1``).
    net_counts : list of (ndarray, ndarray)
        ``(C+ - C-, sum_t (e+ - e-))`` per layer, summed over the batch
        (``None`` entries when the trace was made without counting).
    max_prob : float
        The largest G-unit firing probability ``gamma |beta|`` seen (<= 1: no clipping).
    """

    T: int
    batch: int
    z: list
    rates: list
    gates: list
    trains: list | None
    winners: np.ndarray
    rows: np.ndarray
    streams: list
    ports: list
    gammas: list
    Gammas: list
    net_counts: list
    max_prob: float = 0.0

    def stream(self, layer: int, sign: int = 0) -> np.ndarray:
        """Full ``(T, batch, n)`` array of layer ``layer``'s gradient spikes (1-based layer).

        ``sign=+1``: the G+ unit's train; ``-1``: G-'s (as 0/1); ``0``: ``e+ - e-``.
        """
        d = self.streams[layer - 1]
        full = np.zeros((self.T, self.batch, d.shape[1]), dtype=np.int8)
        full[self.rows[:, 0], self.rows[:, 1]] = d
        if sign > 0:
            return (full > 0).astype(np.int8)
        if sign < 0:
            return (full < 0).astype(np.int8)
        return full


def _bernoulli(p, shape, rng):
    return rng.random(shape) < p


def simulate(params, x, y, cfg: Config = Config(), rng=None) -> Trace:
    """Run one window of ``cfg.T`` steps of SSNN-BP on a batch and record every spike.

    Forward (Eq. (F1)-(F2) in V1, Eq. (S1)-(S4) in V2), WTA (Eq. (W1)-(W2)),
    G units layer by layer downwards (Eq. (G1)-(G3)), update-port spikes and
    coincidence counts (Eq. (U1)) with ``cfg.counter``.  See :class:`Trace`.
    """
    Ws, bs, x, y, cfg = _prepare(params, x, y, cfg)
    return _simulate(Ws, bs, x, y, cfg, as_generator(rng))


def _simulate(Ws, bs, x, y, cfg, rng, exact=None, count=True) -> Trace:
    T, B, L = cfg.T, x.shape[0], len(Ws)

    # Forward: F and D units.
    trains = None
    if cfg.forward == "rate":
        zs, rates = exact if exact is not None else _forward_rates(Ws, bs, x)   # Eq. (F1)-(F2)
    else:
        trains = [_bernoulli(x[None], (T, B, x.shape[1]), rng)]  # Eq. (S1)
        zs, rates = [], [x]
        for n, (W, b) in enumerate(zip(Ws, bs)):
            zhat = trains[-1].mean(axis=0) @ W.T + b             # Eq. (S2): counts over the window
            zs.append(zhat)
            if n < L - 1:
                a = _f(zhat)
                rates.append(a)
                trains.append(_bernoulli(a[None], (T, B, a.shape[1]), rng))   # Eq. (S3)
    gates = [(z > 0.0) & (z < 1.0) for z in zs[:-1]]             # Eq. (S4): D units

    # Output layer: WTA and its gradient spikes, only at active steps.
    winners = wta_winners(zs[-1], T, rng)                        # Eq. (W1)
    tt, bb = np.nonzero(winners != y[None, :])                   # the target lost: gradient spikes exist
    rows = np.stack([tt, bb], axis=1)
    R, K = len(tt), Ws[-1].shape[0]
    d = np.zeros((R, K), dtype=np.int8)
    d[np.arange(R), y[bb]] = 1                                   # Eq. (W2): e+_c
    d[np.arange(R), winners[tt, bb]] = -1                        #           e-_w

    gammas = _gains(Ws, cfg.gamma_scale)
    Gammas = [1.0] * L
    for n in range(L - 2, -1, -1):
        Gammas[n] = gammas[n] * Gammas[n + 1]

    streams = [None] * L
    ports = [None] * L
    net_counts = [None] * L
    streams[L - 1] = d
    max_prob = 0.0
    for n in range(L - 1, -1, -1):                               # layer n+1 (1-based), downwards
        d = streams[n]
        # Update-port spikes of the presynaptic layer at the active steps.
        if cfg.update_port == "reuse" and trains is not None:
            port = trains[n][tt, bb]                             # the F units' own forward spikes
        else:
            port = _bernoulli(rates[n][bb], (R, rates[n].shape[1]), rng)   # independent RPU-style draws
        ports[n] = port
        if count:
            net_counts[n] = (_net_coincidences(port, d, cfg.counter),            # Eq. (U1)
                             d.sum(axis=0, dtype=np.int64).astype(np.float64))   # the bias input spikes always
        if n > 0:                                                # G units of hidden layer n (1-based)
            beta = d.astype(np.float64) @ Ws[n]                  # Eq. (G1): read through W^T
            if R:
                max_prob = max(max_prob, float(gammas[n - 1] * np.abs(beta).max()))
            e_plus, e_minus = gradient_units(beta, gates[n - 1][bb], gammas[n - 1],
                                             rng.random(beta.shape))          # Eq. (G2)
            streams[n - 1] = e_plus.astype(np.int8) - e_minus.astype(np.int8)
    return Trace(T, B, zs, rates, gates, trains, winners, rows, streams, ports, gammas, Gammas, net_counts,
                 max_prob)


def _grads_from_trace(tr: Trace) -> dict:
    grads = {}
    scale_T = tr.T * tr.batch
    for n, (cw, cb) in enumerate(tr.net_counts):
        s = -1.0 / (tr.Gammas[n] * scale_T)                      # Eq. (U3): -dW/eta, batch mean
        grads[f"W{n + 1}"] = s * cw
        grads[f"b{n + 1}"] = s * cb
    return _sorted(grads)


def dw_min(params, cfg: Config, lr: float) -> list:
    """The update quantum ``dw_min^l = eta / (Gamma_l T)`` of each layer ``l = 1..L`` (Eq. (U2)).

    One potentiating (depressing) coincidence moves a weight by ``+dw_min``
    (``-dw_min``): the SGD step ``-lr * grad`` with :func:`loss_and_grad`'s
    estimate on one sample is exactly ``dw_min * (C+ - C-)``.
    """
    Ws, _ = _layers(params)
    cfg = check_config(cfg, Config)
    lr = float(lr)
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr: must be finite and > 0, got {lr}")
    gammas = _gains(Ws, cfg.gamma_scale)
    Gammas = [1.0] * len(Ws)
    for n in range(len(Ws) - 2, -1, -1):
        Gammas[n] = gammas[n] * Gammas[n + 1]
    return [lr / (G * cfg.T) for G in Gammas]


def sample_gradients(params, x, y, cfg: Config = Config(), rng=None) -> dict:
    """Each sample's own stochastic gradient estimate (Eq. (U3)), shape ``(batch, *param.shape)``.

    One window of :func:`simulate`; :func:`loss_and_grad` returns the mean
    over the batch of exactly these (same ``rng``, same numbers up to
    round-off).  With ``x`` one sample repeated, the rows are iid estimates:
    this is how the statistical tests and the notebook draw many of them.
    """
    Ws, bs, x, y, cfg = _prepare(params, x, y, cfg)
    tr = _simulate(Ws, bs, x, y, cfg, as_generator(rng), count=False)   # counted per sample below
    b_of_row = tr.rows[:, 1]
    order = np.argsort(b_of_row, kind="stable")
    bounds = np.searchsorted(b_of_row[order], np.arange(tr.batch + 1))
    out = {}
    for n, (d, port) in enumerate(zip(tr.streams, tr.ports)):
        s = -1.0 / (tr.Gammas[n] * tr.T)
        d = d[order].astype(np.float64)
        port = port[order].astype(np.float64)
        gW = np.zeros((tr.batch, d.shape[1], port.shape[1]))
        gb = np.zeros((tr.batch, d.shape[1]))
        for b in range(tr.batch):
            lo, hi = bounds[b], bounds[b + 1]
            if hi > lo:
                gW[b] = s * (d[lo:hi].T @ port[lo:hi])           # Eq. (U1)-(U3) for sample b alone
                gb[b] = s * d[lo:hi].sum(axis=0)
        out[f"W{n + 1}"], out[f"b{n + 1}"] = gW, gb
    return _sorted(out)


# ---------------------------------------------------------------------------
# The algorithm contract
# ---------------------------------------------------------------------------

def loss_and_grad(params, x, y, cfg: Config = Config(), rng=None, *, info=None):
    """ANN cross-entropy and a stochastic, spike-computed estimate of its gradient.

    Parameters
    ----------
    params : dict
        ``W1, b1, ..., WL, bL``, ``Wl`` of shape ``(n_l, n_{l-1})``.
    x : ndarray, shape (batch, n_in)
        Input spike probabilities in [0, 1].
    y : ndarray of int, shape (batch,)
        Labels in ``[0, n_L)``.
    cfg : Config
    rng : int or Generator
        Required unless ``cfg.ann``.
    info : dict, optional
        If given, filled with diagnostics: ``"pred"`` (the classes the exact
        output potentials predict) and, unless ``cfg.ann``, ``"trace"`` (the
        window's :class:`Trace`: every spike and count), ``"active_steps"``
        (how many steps carried gradient spikes) and ``"max_prob"`` (the
        largest G-unit firing probability, <= 1).

    Returns
    -------
    loss : float
        Mean ANN cross-entropy at the exact rates (Eq. (F3)).
    grads : dict
        ``-(Delta W)/eta`` of the coincidence update (Eq. (U3)), averaged over
        the batch: a stochastic estimate of the gradient of ``loss`` (exactly
        unbiased in V1), so the update is ``-eta * grads``.  With
        ``cfg.ann`` the exact gradient (Eq. (B1)-(B3)).
    """
    Ws, bs, x, y, cfg = _prepare(params, x, y, cfg)
    zs, acts = _forward_rates(Ws, bs, x)
    loss = _ce(zs[-1], y)[0]
    if info is not None:
        info["pred"] = np.argmax(zs[-1], axis=1)
    if cfg.ann:
        return loss, _backprop(Ws, zs, acts, y)
    tr = _simulate(Ws, bs, x, y, cfg, as_generator(rng), exact=(zs, acts))
    if info is not None:
        info.update(trace=tr, active_steps=len(tr.rows), max_prob=tr.max_prob)
    return loss, _grads_from_trace(tr)


def reference_objective(params, x, y, cfg: Config = Config(), rng=None):
    """The ANN loss ``p -> mean CE`` (Eq. (F1)-(F3)) on ``(x, y)``.

    Its exact gradient at ``params`` is the mean of :func:`loss_and_grad`'s
    estimate in V1 (a statistical check, ``refsnn gradcheck ssnn_bp``), and
    exactly what ``loss_and_grad`` returns with ``cfg.ann``.  ``rng`` is unused.
    """
    cfg = check_config(cfg, Config)
    Ws, _ = _layers(params)
    x = _check_x(x, Ws[0].shape[1]).copy()
    y = check_labels("y", y, Ws[-1].shape[0], batch=x.shape[0]).copy()

    def objective(p) -> float:
        Wp, bp = _layers(p)
        zs, _ = _forward_rates(Wp, bp, x)
        return _ce(zs[-1], y)[0]

    return objective


def _spike_potentials(Ws, bs, x, T, rng, chunk_elems=2 ** 22):
    """``zhat^L`` of the V2 forward pass (Eq. (S1)-(S3)), in batch chunks to bound memory."""
    B = x.shape[0]
    width = max([x.shape[1]] + [W.shape[0] for W in Ws])
    step = max(1, chunk_elems // (T * width))
    out = []
    for s in range(0, B, step):
        a = x[s:s + step]
        for n, (W, b) in enumerate(zip(Ws, bs)):
            counts = _bernoulli(a[None], (T,) + a.shape, rng).mean(axis=0)   # Eq. (S1)/(S3)
            zhat = counts @ W.T + b                                          # Eq. (S2)
            a = _f(zhat) if n < len(Ws) - 1 else zhat
        out.append(a)
    return np.concatenate(out, axis=0)


def predict(params, x, cfg: Config = Config(), rng=None) -> np.ndarray:
    """Predicted class per sample.

    ``forward="rate"`` (and ``ann``): ``argmax_k z^L_k`` of the exact rates,
    deterministic.  ``forward="spike"``: the output potential ``zhat^L`` of
    the spiking forward pass over ``cfg.T`` steps (Eq. (S1)-(S3); ``rng``
    required), ``argmax_k zhat^L_k``: the output neuron the WTA would pick
    most often.
    """
    cfg = check_config(cfg, Config)
    Ws, bs = _layers(params)
    x = _check_x(x, Ws[0].shape[1])
    if cfg.ann or cfg.forward == "rate":
        zs, _ = _forward_rates(Ws, bs, x)
        return np.argmax(zs[-1], axis=1)
    return np.argmax(_spike_potentials(Ws, bs, x, cfg.T, as_generator(rng)), axis=1)


def encode(features, cfg: Config = Config(), rng=None) -> np.ndarray:
    """Static features in [0, 1], shape (batch, n_in), are already spike probabilities: checked and returned as float64.

    The spike trains themselves are drawn inside :func:`loss_and_grad` and
    :func:`predict` (``rng`` unused here).
    """
    check_config(cfg, Config)
    x = check_array("features", features, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"features: expected shape (batch, n_in), got {x.shape}")
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(f"features: must lie in [0, 1] (spike probabilities), got min {x.min():g}, max {x.max():g}")
    return np.ascontiguousarray(x)


# ---------------------------------------------------------------------------
# Closed forms
# ---------------------------------------------------------------------------

def variance_v1(params, x, y, cfg: Config = Config()) -> dict:
    """Exact per-entry variance of one sample's V1 estimate, Eq. (Var1)-(Var2) (one hidden layer).

    ``x`` (1, n_in) or (n_in,), ``y`` one label.  Returns ``{"W1", "b1",
    "W2", "b2"}`` arrays of the variance of :func:`sample_gradients`' entries.
    Each entry is ``-1/(Gamma T)`` times a sum of ``T`` iid ``X_t`` in
    ``{-1, 0, 1}``, ``X_t = v_i(t) (e+_j(t) - e-_j(t))``, so
    ``Var = (E|X| - (E X)^2) / (Gamma^2 T)``.
    """
    Ws, bs = _layers(params)
    if len(Ws) != 2:
        raise ValueError(f"params: variance_v1 covers one hidden layer (W1, b1, W2, b2), got {len(Ws)} layers")
    x = _check_x(np.atleast_2d(x), Ws[0].shape[1])
    if x.shape[0] != 1:
        raise ValueError(f"x: one sample expected, got batch {x.shape[0]}")
    c = int(check_labels("y", np.atleast_1d(y), Ws[-1].shape[0], batch=1)[0])
    zs, acts = _forward_rates(Ws, bs, x)
    _, p = _ce(zs[-1], np.array([c]))
    p = p[0]
    delta2 = p.copy()
    delta2[c] -= 1.0
    a1, g = acts[1][0], _f_prime(zs[0][0])
    delta1 = g * (delta2 @ Ws[1])
    gamma = gains(params, cfg)[0]
    T = cfg.T
    abs2 = np.abs(delta2)                                        # E|e+_k - e-_k|: 1-p_c at c, p_k elsewhere
    var = {"W2": (np.outer(abs2, a1) - np.outer(delta2 ** 2, a1 ** 2)) / T,           # Eq. (Var1)
           "b2": (abs2 - delta2 ** 2) / T}
    W2 = Ws[1]
    E_abs_beta = (p[:, None] * np.abs(W2[c][None, :] - W2)).sum(axis=0)              # sum_{k != c} (k = c adds 0)
    E_abs_d1 = g * gamma * E_abs_beta                                                # E|e+^1_j - e-^1_j|
    xi = x[0]
    var["W1"] = (np.outer(E_abs_d1, xi) - np.outer((gamma * delta1) ** 2, xi ** 2)) / (gamma ** 2 * T)  # Eq. (Var2)
    var["b1"] = (E_abs_d1 - (gamma * delta1) ** 2) / (gamma ** 2 * T)
    return _sorted(var)
