r"""STBP as a stack of layers, each differentiated by hand beside its forward.

:mod:`refsnn.stbp` computes the networks of the STBP paper and of the peers' basic neurons, fast.  This
module writes a network as a list of small pieces, so that it can say what the peers' tutorial models
compute -- BatchNorm between a layer and its neuron, dropout, recurrence inside a population, pooling of
currents, a different neuron in every layer, a non-spiking readout, membrane losses -- and check their
gradients exactly.  It is the readable form: NumPy, time-major sequences, every pullback beside its
forward, each line tagged with the equation of ``docs/stbp.md`` it implements.

A piece maps a sequence ``a`` of shape ``(T, batch, *features)`` to another and pulls a gradient back:

==============================  ===================================================================
piece                           forward (every step ``t``)
==============================  ===================================================================
``Affine(W, b)``                ``I = W a + b``                                        Eq. (I)
``Conv(W, b, stride, pad)``     the cross-correlation of Eq. (C)
``Pool(kind, k)``               average, max or sum over ``k x k`` windows              Eq. (P)
``Flatten()``                   ``(C, H, W)`` to one vector
``Scale(s)``                    ``s * a``, a constant per feature (NIR's ``Scale``)
``Vote(k)``                     the mean of groups of ``k`` output neurons (a readout)
``BatchNorm(...)``              ``gamma (a - mu) / sqrt(var + eps) + beta``             Eq. (BN)
``Dropout(key)``                ``a * mask``, the mask given as data                    Eq. (DO)
``LIF(neuron, ...)``            the time recursion Eq. (I)-(R) of a population           (spikes out)
``LI(...)``                     a leaky integrator that never fires                      (membrane out)
==============================  ===================================================================

A :class:`Network` is the list plus a loss (:mod:`readouts <refsnn.stbp_layers>`: rates, counts,
membranes, or your own ``dL/do`` and ``dL/du``).  ``Network.loss_and_grad`` is exact backpropagation
through time through the surrogate graph; ``Network.reference_objective`` is the function it is the
exact gradient of (every spike replaced by ``o0 + P(u - v_th) - P(u0 - v_th)`` anchored at the
forward pass, max choices frozen), as for :func:`refsnn.stbp.reference_objective`.

The neuron's options are named pieces, never integer codes: a :class:`Reset` (``ExpReset``,
``ZeroReset``, ``ToValue``, ``Subtract``, ``NoReset``) with its two partial derivatives, the firing
rule, the synapse.  ``tests/test_stbp_layers.py`` holds this stack equal to :mod:`refsnn.stbp` on the
settings both express and checks every piece by finite differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refsnn import stbp
from refsnn.blocks import conv, spike_products, surrogates
from refsnn.blocks._checks import check_array, check_choice, check_in_range, check_labels, check_positive
from refsnn.blocks._jit import resolve_backend

__all__ = [
    "Reset", "ExpReset", "ZeroReset", "ToValue", "Subtract", "NoReset", "RESETS",
    "Neuron", "Affine", "Conv", "Pool", "Flatten", "Scale", "Vote", "BatchNorm", "Dropout", "LIF", "LI",
    "Loss", "LOSSES", "Network",
]


# ---------------------------------------------------------------------------
# The reset: R(u, o) and its partial derivatives (Eq. (R), used by (B3) and (B4))
# ---------------------------------------------------------------------------

# The reset pieces live in refsnn.stbp (the Config-driven network uses them too); they are re-exported here.
Reset, ExpReset, ZeroReset, ToValue = stbp.Reset, stbp.ExpReset, stbp.ZeroReset, stbp.ToValue
Subtract, NoReset = stbp.Subtract, stbp.NoReset

#: The resets by name, as :class:`refsnn.stbp.Config` names them.
RESETS = {name: cls() for name, cls in stbp.RESET_PIECES.items()}


# ---------------------------------------------------------------------------
# A run: the parameters, the data, the mode and what every piece recorded
# ---------------------------------------------------------------------------

@dataclass
class _Run:
    params: dict
    data: dict
    mode: str                      # "spike", "smooth" or "anchored"
    anchors: list | None = None    # per piece: the record of the anchor pass (mode "anchored")
    fast: bool = False             # the fast tier (Network.backend "numba"): kernels, im2col, one GEMM per layer
    input_grad: bool = True        # whether the first piece returns dL/dx (asked for through info)
    records: list = field(default_factory=list)
    grads: dict = field(default_factory=dict)
    state: dict = field(default_factory=dict)    # next values of buffers (BatchNorm running statistics)

    def add(self, key, g):
        self.grads[key] = self.grads.get(key, 0.0) + g


def _rows(a):
    """(T, B, *f) -> (T * B, *f)."""
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:])


# ---------------------------------------------------------------------------
# Synaptic pieces: affine, convolution, pooling, flatten
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Affine:
    """``I^t = W a^t + b`` (Eq. (I)); ``b=None`` for no bias.  Pullback: Eq. (B5) and (B2)."""

    W: str
    b: str | None = None

    def forward(self, run, rec, a):
        rec["a"] = a
        W = run.params[self.W]
        # the fast tier adds a column of W per input spike where that pays (refsnn.blocks.spike_products)
        rec["lists"] = spike_products.lists_if_they_pay(_rows(a), W.shape[0]) if run.fast and a.ndim == 3 else None
        if rec["lists"] is not None:
            out = spike_products.matmul(rec["lists"], W).reshape(*a.shape[:2], -1)   # Eq. (I), as sums of columns
        else:
            out = (_rows(a) @ W.T).reshape(*a.shape[:2], -1)                  # Eq. (I), every step at once
        return out + run.params[self.b] if self.b else out

    def backward(self, run, rec, g):
        a = rec["a"]
        if rec["lists"] is not None:
            run.add(self.W, spike_products.weight_grad(_rows(g), rec["lists"]))   # Eq. (B5), as sums of rows
        else:
            run.add(self.W, _rows(g).T @ _rows(a))                            # Eq. (B5)
        if self.b:
            run.add(self.b, _rows(g).sum(axis=0))
        if rec["index"] == 0 and not run.input_grad:
            return None                                                       # nobody asked for dL/dx
        return (_rows(g) @ run.params[self.W]).reshape(a.shape)               # Eq. (B2)


@dataclass(frozen=True)
class Conv:
    """The cross-correlation of Eq. (C): weights ``(c_out, c_in, k, k)`` (PyTorch's layout)."""

    W: str
    b: str | None = None
    stride: int = 1
    pad: int = 0

    def forward(self, run, rec, a):
        rec["a"] = a
        W = run.params[self.W]
        conv2d = conv.conv2d_fast if run.fast else conv.conv2d               # im2col and a GEMM, or the sum
        out = conv2d(_rows(a), W, self.stride, self.pad)                      # Eq. (C)
        if self.b:
            out = out + run.params[self.b][None, :, None, None]
        return out.reshape(a.shape[0], a.shape[1], *out.shape[1:])

    def backward(self, run, rec, g):
        a, W = rec["a"], run.params[self.W]
        g4, a4 = _rows(g), _rows(a)
        weight_grad, input_grad = ((conv.conv2d_weight_grad_fast, conv.conv2d_input_grad_fast) if run.fast else
                                   (conv.conv2d_weight_grad, conv.conv2d_input_grad))
        run.add(self.W, weight_grad(a4, g4, W.shape[2], self.stride, self.pad))   # Eq. (B5)
        if self.b:
            run.add(self.b, g4.sum(axis=(0, 2, 3)))
        if rec["index"] == 0 and not run.input_grad:
            return None                                                       # nobody asked for dL/dx
        ga = input_grad(g4, W, a.shape[3:], self.stride, self.pad)            # Eq. (B2)
        return ga.reshape(a.shape)


@dataclass(frozen=True)
class Pool:
    """Pooling over non-overlapping ``k x k`` windows (Eq. (P)): ``"avg"``, ``"max"`` or ``"sum"``.

    Placed after a neuron it pools spikes (the official STBP net); placed between a convolution and its
    neuron it pools currents (snnTorch's tutorials).  Max takes the first largest entry of a window, as
    PyTorch's CPU kernel; the anchored objective keeps that choice.
    """

    kind: str
    k: int

    def __post_init__(self):
        check_choice("kind", self.kind, ("avg", "max", "sum"))

    def forward(self, run, rec, a):

        rec["shape"] = a.shape
        select = run.anchors[rec["index"]]["argmax"] if (run.mode == "anchored" and self.kind == "max") else None
        out, argmax = stbp.pool_forward(_rows(a), "max" if self.kind == "max" else "avg", self.k, select=select)
        rec["argmax"] = argmax
        if self.kind == "sum":
            out = out * (self.k * self.k)
        return out.reshape(a.shape[0], a.shape[1], *out.shape[1:])

    def backward(self, run, rec, g):

        shape = rec["shape"]
        g4 = _rows(g) * (self.k * self.k if self.kind == "sum" else 1)
        ga = stbp.pool_backward(g4, (shape[0] * shape[1], *shape[2:]), "max" if self.kind == "max" else "avg", self.k,
                           rec["argmax"])
        return ga.reshape(shape)


@dataclass(frozen=True)
class Flatten:
    """``(T, B, C, H, W)`` to ``(T, B, C H W)``, in ``(C, H, W)`` order."""

    def forward(self, run, rec, a):
        rec["shape"] = a.shape
        return a.reshape(a.shape[0], a.shape[1], -1)

    def backward(self, run, rec, g):
        return g.reshape(rec["shape"])


@dataclass(frozen=True)
class Scale:
    """``s * a`` with a constant ``s`` (a number, or one value per feature, broadcast over time and batch):
    NIR's ``Scale`` node.  Pullback: ``s * g``."""

    s: object = 1.0

    def __post_init__(self):
        s = np.asarray(self.s, dtype=np.float64)
        if not np.all(np.isfinite(s)):
            raise ValueError(f"s: must be finite, got {self.s!r}")

    def forward(self, run, rec, a):
        return a * np.asarray(self.s, dtype=a.dtype)

    def backward(self, run, rec, g):
        return g * np.asarray(self.s, dtype=g.dtype)


@dataclass(frozen=True)
class Vote:
    """The mean of consecutive groups of ``k`` neurons (spikingjelly's ``VotingLayer(k)``): ``(T, B, n)`` to
    ``(T, B, n // k)`` (a remainder dropped), e.g. 100 output neurons voting for 10 classes.  A readout: it may follow the last
    population, and the loss then reads its output."""

    k: int

    def __post_init__(self):
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ValueError(f"k: expected a positive int, got {self.k!r}")

    def forward(self, run, rec, a):
        groups = a.shape[-1] // self.k                        # a remainder is dropped, as avg_pool1d does
        if groups == 0:
            raise ValueError(f"Vote({self.k}): {a.shape[-1]} neurons make no group of {self.k}")
        rec["shape"] = a.shape
        return a[..., :groups * self.k].reshape(*a.shape[:-1], groups, self.k).mean(axis=-1)

    def backward(self, run, rec, g):
        out = np.zeros(rec["shape"])
        out[..., :g.shape[-1] * self.k] = np.repeat(g / self.k, self.k, axis=-1)
        return out


# ---------------------------------------------------------------------------
# BatchNorm and dropout
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class BatchNorm:
    r"""BatchNorm of the features (axis 2: a dense layer's neurons, a conv layer's channels), Eq. (BN)::

        y = gamma (a - mu) / sqrt(var + eps) + beta

    ``over="time_batch"``: one mean and variance per feature over all steps, samples (and pixels) together,
    as spikingjelly's multi-step ``BatchNorm1d/2d`` and tdBN (``(T, B)`` flattened into one batch).
    ``over="step"``: separate statistics at every step (BatchNorm called inside a loop over steps).
    ``mode="batch"``: training, the batch's statistics (biased variance); the next running statistics
    (PyTorch's rule: ``(1 - momentum) old + momentum new``, the new variance unbiased; with ``over="step"``
    one update per step, in order) go to the network's ``state``.  ``mode="running"``: evaluation, the
    buffers ``mean``, ``var``.
    """

    gamma: str
    beta: str
    mean: str
    var: str
    over: str = "time_batch"
    mode: str = "batch"
    eps: float = 1e-5
    momentum: float = 0.1

    def __post_init__(self):
        check_choice("over", self.over, ("time_batch", "step"))
        check_choice("mode", self.mode, ("batch", "running"))

    def _axes(self, a):
        rest = tuple(range(3, a.ndim))
        return ((0, 1) + rest) if self.over == "time_batch" else ((1,) + rest)

    def _view(self, v, a):
        return v.reshape((1, 1, -1) + (1,) * (a.ndim - 3))

    def forward(self, run, rec, a):
        p = run.params
        gamma, beta = self._view(p[self.gamma], a), self._view(p[self.beta], a)
        if self.mode == "running":
            s = np.sqrt(self._view(p[self.var], a) + self.eps)
            xhat = (a - self._view(p[self.mean], a)) / s
        else:
            ax = self._axes(a)
            mu = a.mean(axis=ax, keepdims=True)
            centred = a - mu
            var = (centred * centred).mean(axis=ax, keepdims=True)            # biased, for normalising
            s = np.sqrt(var + self.eps)
            xhat = centred / s
            n = a.size // a.shape[2] if self.over == "time_batch" else a.size // (a.shape[0] * a.shape[2])
            m_run, v_run = p[self.mean].astype(np.float64), p[self.var].astype(np.float64)
            steps = [(mu, var)] if self.over == "time_batch" else [(mu[t:t + 1], var[t:t + 1]) for t in range(a.shape[0])]
            for mu_t, var_t in steps:                                          # the running statistics' update
                m_run = (1 - self.momentum) * m_run + self.momentum * mu_t.reshape(-1)
                v_run = (1 - self.momentum) * v_run + self.momentum * var_t.reshape(-1) * n / max(n - 1, 1)
            run.state[self.mean], run.state[self.var] = m_run, v_run
        rec["xhat"], rec["s"] = xhat, s
        return gamma * xhat + beta                                            # Eq. (BN)

    def backward(self, run, rec, g):
        xhat, s = rec["xhat"], rec["s"]
        scale = self._view(run.params[self.gamma], g) / s                     # gamma / sqrt(var + eps)
        feat = tuple(i for i in range(g.ndim) if i != 2)
        g_xhat = g * xhat
        run.add(self.gamma, g_xhat.sum(axis=feat))
        run.add(self.beta, g.sum(axis=feat))
        if self.mode == "running":
            return g * scale
        ax = self._axes(g)                      # the batch statistics' own dependence on a: the two means
        return scale * (g - g.mean(axis=ax, keepdims=True) - xhat * g_xhat.mean(axis=ax, keepdims=True))


@dataclass(frozen=True)
class Dropout:
    """``a * mask`` (Eq. (DO)) with the mask given as data under ``key``: entries 0 or ``1/(1-p)``, shape
    ``(B, *features)`` (one mask for all steps: spikingjelly's multi-step dropout) or ``(T, B, *features)``
    (a new mask every step: dropout called inside a loop over steps)."""

    key: str

    def _mask(self, run, a):
        m = run.data.get(self.key)
        if m is None:
            raise ValueError(f"data: Dropout needs its mask as data[{self.key!r}]")
        m = np.asarray(m, dtype=a.dtype)
        if m.shape not in (a.shape, a.shape[1:]):
            raise ValueError(f"data[{self.key!r}]: expected shape {a.shape[1:]} or {a.shape}, got {m.shape}")
        return m

    def forward(self, run, rec, a):
        return a * self._mask(run, a)                                         # Eq. (DO)

    def backward(self, run, rec, g):
        return g * self._mask(run, g)


# ---------------------------------------------------------------------------
# The neuron population: the time recursion, Eq. (J)-(R) forward, (B3)-(B4j) backward
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Neuron:
    """How a population's neurons behave (the peers' settings; :class:`refsnn.stbp.Config` has the same).

    ``reset`` a :class:`Reset` (or its name); ``timing`` ``"immediate"`` or ``"delayed"`` (snnTorch's
    ``reset_delay=True``); ``detach`` drops (B3); ``strict`` fires on ``u > v_th`` (else ``>=``);
    ``decay_input`` scales the input by ``1 - lam`` (spikingjelly, norse); ``v_rest`` the resting
    potential; ``surrogate`` and ``width`` the surrogate derivative (:mod:`refsnn.blocks.surrogates`).
    """

    reset: object = "zero"
    timing: str = "immediate"
    detach: bool = False
    strict: bool = True
    decay_input: bool = False
    v_rest: float = 0.0
    surrogate: str = "rect"
    width: float = 1.0

    def __post_init__(self):
        if isinstance(self.reset, str):
            if self.reset not in RESETS:
                raise ValueError(f"reset: expected one of {sorted(RESETS)} or a Reset, got {self.reset!r}")
            object.__setattr__(self, "reset", RESETS[self.reset])
        elif not isinstance(self.reset, Reset):
            raise TypeError(f"reset: expected a Reset or its name, got {type(self.reset).__name__}")
        check_choice("timing", self.timing, ("immediate", "delayed"))
        check_choice("surrogate", self.surrogate, surrogates.NAMES)
        check_positive("width", self.width)


def _constant(run, spec, name):
    """A population constant: a number, an array (one per neuron), or ``(key, transform)`` of a parameter."""
    if isinstance(spec, tuple):
        key, how = spec
        raw = np.asarray(run.params[key], dtype=np.float64)
        if how == "clamp":
            return np.clip(raw, 0.0, 1.0), key, how, raw
        if how == "sigmoid":                                                  # lam = 1 - sigmoid(w)
            return 1.0 - 1.0 / (1.0 + np.exp(-raw)), key, how, raw
        if how == "identity":
            return raw, key, how, raw
        raise ValueError(f"{name}: transform must be 'clamp', 'sigmoid' or 'identity', got {how!r}")
    return np.asarray(spec, dtype=np.float64), None, None, None


def _chain(g, how, raw):
    """``dL/draw`` from ``dL/dvalue`` through the transform (clamp passes on [0, 1], as PyTorch's)."""
    if how == "clamp":
        return g * ((raw >= 0.0) & (raw <= 1.0))
    if how == "sigmoid":
        q = 1.0 / (1.0 + np.exp(-raw))
        return -g * q * (1.0 - q)
    return g


def _to_shape(g, raw):
    """A per-neuron gradient (summed over time and batch) reduced to the parameter's shape."""
    g = np.asarray(g)
    return np.asarray(g.sum()) if np.ndim(raw) == 0 else g


@dataclass(frozen=True)
class LIF:
    r"""A population of LIF neurons: the time recursion (one layer of ``docs/stbp.md``, section 1)::

        I'^t = g (I^t + V o^{t-1})                   (recurrent; o^{-1} = 0)      Eq. (Rec)
        j^t  = alpha j^{t-1} + I'^t                  (synapse; else j^t = I'^t)   Eq. (J)
        v^t  = lam r^{t-1} + kappa j^t + (1 - lam) v_rest                         Eq. (V)
        u^t  = R(v^t, o^{t-1}) (delayed, t >= 1);  else v^t                       Eq. (u)
        o^t  = H(u^t - v_th)                                                      Eq. (o)
        r^t  = R(u^t, o^t) (immediate);  u^t (delayed)                            Eq. (R)

    ``decay`` (lam), ``threshold`` (v_th) and ``alpha``: a number, one value per neuron (an array), or a
    parameter ``(key, "clamp" | "sigmoid" | "identity")`` that is learned (``"clamp"``: snnTorch's
    ``learn_beta``/``learn_alpha``; ``"sigmoid"``: spikingjelly's ``ParametricLIFNode``, lam = 1 - sigmoid(w);
    thresholds take ``"identity"``).  ``recurrent=(key, "all" | "one")``: all-to-all weights ``V`` (n, n)
    (snnTorch ``RLeaky(all_to_all=True)``; a zero diagonal is norse's ``LIFRecurrentCell``) or one per neuron
    (n,) (``RLeaky(all_to_all=False)``), or ``"all_no_autapses"``: all-to-all with the diagonal held at zero
    (norse's ``LIFRecurrentCell(autapses=False)``), entering with the input, before the synapse, as both libraries add
    it; a third entry names the bias of snnTorch's recurrent ``nn.Linear``, which enters at every step
    (``t = 0`` included, where the spikes before are 0).
    ``spiking=False`` makes a leaky integrator that never fires nor resets (its output is ``u``: :class:`LI`).
    ``gain`` (``g`` above; ``None`` is 1): a constant input gain, a number or one value per neuron, applied to
    the whole input (recurrent part included) before the synapse: a NIR neuron's ``r``, ``w_in`` and
    ``dt / tau`` factors (:mod:`refsnn.checking.nir_io`).
    """

    neuron: Neuron = Neuron()
    decay: object = 0.5
    threshold: object = 1.0
    alpha: object = None
    recurrent: tuple | None = None
    spiking: bool = True
    gain: object = None

    def __post_init__(self):
        if not isinstance(self.neuron, Neuron):
            raise TypeError(f"neuron: expected a Neuron, got {type(self.neuron).__name__}")
        if isinstance(self.decay, tuple) and isinstance(self.neuron.reset, ExpReset):
            raise ValueError("decay: the exp reset divides by the decay; learn the decay with another reset")
        if self.recurrent is not None and (not isinstance(self.recurrent, tuple) or len(self.recurrent) not in (2, 3)
                                           or self.recurrent[1] not in ("all", "all_no_autapses", "one")):
            raise ValueError(f"recurrent: expected (key, 'all' | 'one') or (key, 'all' | 'one', bias key), got "
                             f"{self.recurrent!r}")
        if self.gain is not None and not np.all(np.isfinite(np.asarray(self.gain, dtype=np.float64))):
            raise ValueError(f"gain: must be finite, got {self.gain!r}")

    @staticmethod
    def _recurrent_weights(V, kind):
        """``V`` as it acts: with its diagonal zeroed for ``"all_no_autapses"`` (norse's default), whose
        gradient is zero there too (norse zeroes it with a hook)."""
        return V * (1.0 - np.eye(V.shape[0])) if kind == "all_no_autapses" else V

    def _constants(self, run):
        lam, lkey, lhow, lraw = _constant(run, self.decay, "decay")
        thr, tkey, _, traw = _constant(run, self.threshold, "threshold")
        al = _constant(run, self.alpha, "alpha") if self.alpha is not None else None
        kap = (1.0 - lam) if self.neuron.decay_input else 1.0
        return lam, kap, thr, al, (lkey, lhow, lraw), (tkey, traw)

    def _fire(self, run, rec, t, z):
        nrn = self.neuron
        if run.mode == "smooth":
            return surrogates.primitive(z, nrn.surrogate, nrn.width)
        if run.mode == "anchored":
            anc = run.anchors[rec["index"]]
            P = lambda v: surrogates.primitive(v, nrn.surrogate, nrn.width)   # noqa: E731
            return anc["o"][t] + P(z) - P(anc["z"][t])
        return (z > 0).astype(z.dtype) if nrn.strict else (z >= 0).astype(z.dtype)   # Eq. (o)

    def _kernel_ready(self, run, shape) -> bool:
        """Whether this population runs on the numba kernels of :mod:`refsnn.stbp` in this run: the fast
        tier covers a spiking population without a learned synaptic decay, without recurrence or with one
        recurrent weight per neuron (no bias, no input gain), in a plain forward pass, with the gradient
        arriving through its spikes (the readable form covers the rest).  ``shape``: the population's."""
        rec_ok = self.recurrent is None or (len(self.recurrent) == 2 and self.recurrent[1] == "one"
                                            and self.gain is None and np.shape(run.params[self.recurrent[0]]) == shape)
        return (run.fast and run.mode == "spike" and self.spiking and rec_ok and not isinstance(self.alpha, tuple))

    def _kernel_V(self, run, dtype):
        """The recurrent weights (one per neuron, the population's shape) flattened as the kernels read them;
        None without recurrence."""
        if self.recurrent is None:
            return None
        return np.ascontiguousarray(np.asarray(run.params[self.recurrent[0]], dtype=dtype).reshape(-1))

    def _kernel_setting(self, constants, shape):
        """The kernels' ``(_Neurons, _Rule)`` from :meth:`_constants`: every constant one value per neuron of
        the flattened population."""
        nrn = self.neuron
        lam, kap, thr, al, (lkey, _, _), _ = constants
        H = int(np.prod(shape))
        # float64 constants: the stack runs float64 only.  (The backward kernel remakes the spikes from the stored
        # u with these constants; data of another dtype would need them in its dtype, as stbp._kernel_setting does.)
        per = lambda c: np.ascontiguousarray(np.broadcast_to(np.asarray(c, np.float64), shape).reshape(H))  # noqa
        neurons = stbp._Neurons(lam=per(lam), kap=per(kap), c=per((1.0 - lam) * nrn.v_rest), thr=per(thr),
                                alpha=per(al[0] if al is not None else 0.0))
        rule = stbp._Rule(reset=nrn.reset.code, v_reset=float(getattr(nrn.reset, "v_reset", 0.0)),
                          v_rest=float(nrn.v_rest), delayed=nrn.timing == "delayed", synapse=al is not None,
                          strict=nrn.strict, smooth=False, detach=nrn.detach,
                          decay_input=nrn.decay_input and lkey is not None,
                          surrogate=surrogates.KIND_CODES[nrn.surrogate], width=float(nrn.width))
        return neurons, rule

    def _forward_kernel(self, run, rec, I):
        """The fast tier of :meth:`forward`: stbp's forward kernel on the population flattened to (T, B, H)."""
        T, B = I.shape[:2]
        shape = I.shape[2:]
        neurons, rule = self._kernel_setting(self._constants(run), shape)
        if self.gain is not None:
            I = I * np.asarray(self.gain, dtype=I.dtype)                      # Eq. (Rec): g I
        I3 = np.ascontiguousarray(I.reshape(T, B, -1))
        none = np.zeros((1, 1, 1), I3.dtype)                                   # not recorded: no backward reads it
        v = np.empty_like(I3) if rule.delayed else none                        # the delayed reset's derivatives
        j = np.empty_like(I3) if (rule.synapse or self.neuron.decay_input) else none   # dv/dlam, dL/dalpha
        u, o = stbp._lif_forward_kernel(I3, neurons, rule, v, j, self._kernel_V(run, I3.dtype))
        u, o = u.reshape(I.shape), o.reshape(I.shape)
        v, j = (a.reshape(I.shape) if a is not none else a for a in (v, j))
        rec.update(u=u, o=o, v=v, j=j, I=I, seen=o, kernel=True)   # no z: only an anchor pass (readable) needs it
        return o

    def forward(self, run, rec, I):
        if self._kernel_ready(run, I.shape[2:]):
            return self._forward_kernel(run, rec, I)
        nrn, R = self.neuron, self.neuron.reset
        lam, kap, thr, al, _, _ = self._constants(run)
        T, B = I.shape[:2]
        shape = I.shape[2:]
        u, o, v, j = (np.zeros_like(I) for _ in range(4))
        z = np.zeros_like(I)
        r = np.broadcast_to(np.asarray(nrn.v_rest, I.dtype), (B,) + shape)    # r^{-1} = v_rest
        if self.recurrent is not None:
            Vkey, kind, ckey = (*self.recurrent, None)[:3]
            V = self._recurrent_weights(run.params[Vkey], kind)
        gain = None if self.gain is None else np.asarray(self.gain, dtype=I.dtype)
        anchor_o = run.anchors[rec["index"]]["o"] if (run.mode == "anchored" and nrn.detach) else None
        for t in range(T):
            inp = I[t]
            if self.recurrent is not None:                                    # Eq. (Rec)
                if t > 0:
                    inp = inp + (o[t - 1] * V if kind == "one" else o[t - 1] @ V.T)
                if ckey is not None:
                    inp = inp + run.params[ckey]
            if self.gain is not None:
                inp = inp * gain                                              # Eq. (Rec): the input gain
            j[t] = al[0] * j[t - 1] + inp if (al is not None and t > 0) else inp  # Eq. (J)
            v[t] = lam * r + kap * j[t] + (1.0 - lam) * nrn.v_rest            # Eq. (V)
            seen = o if anchor_o is None else anchor_o                        # the spikes the reset sees
            if not self.spiking:
                u[t] = v[t]
                r = u[t]
                continue
            u[t] = R.value(v[t], seen[t - 1], lam, thr) if (nrn.timing == "delayed" and t > 0) else v[t]   # Eq. (u)
            z[t] = u[t] - thr
            o[t] = self._fire(run, rec, t, z[t])                              # Eq. (o)
            r = u[t] if nrn.timing == "delayed" else R.value(u[t], seen[t], lam, thr)   # Eq. (R)
        rec.update(u=u, o=o, v=v, j=j, z=z, I=I, seen=o if anchor_o is None else anchor_o)
        return o if self.spiking else u

    def _backward_kernel(self, run, rec, g_o):
        """The fast tier of :meth:`backward`: stbp's backward kernel, then the same chain rules to the
        learned constants."""
        constants = self._constants(run)
        _, _, _, _, (lkey, lhow, lraw), (tkey, traw) = constants
        u = rec["u"]
        T, B = u.shape[:2]
        shape = u.shape[2:]
        neurons, rule = self._kernel_setting(constants, shape)
        flat = lambda a: np.ascontiguousarray(a.reshape(T, B, -1))            # noqa: E731
        glam, gthr = np.zeros((B, neurons.lam.size)), np.zeros((B, neurons.lam.size))   # per sample
        trace = tuple(flat(rec[k]) if rec[k].shape == u.shape else rec[k] for k in "uovj")   # v, j: maybe (1, 1, 1)
        V = self._kernel_V(run, u.dtype)
        gV = None if V is None else np.zeros((B, V.size), u.dtype)                  # per sample, summed below
        gI = stbp._lif_backward_kernel(flat(g_o), trace, neurons, rule, glam, gthr, V, gV)
        if V is not None:
            run.add(self.recurrent[0], gV.sum(axis=0).reshape(shape))
        if lkey is not None:
            run.add(lkey, _to_shape(_chain(glam.sum(axis=0).reshape(shape), lhow, lraw), lraw))
        if tkey is not None:
            run.add(tkey, _to_shape(gthr.sum(axis=0).reshape(shape), traw))
        gI = gI.reshape(u.shape)
        return gI if self.gain is None else gI * np.asarray(self.gain, dtype=gI.dtype)

    def backward(self, run, rec, g_o, g_u=None):
        """``g_o = dL/do`` (spiking) or ``dL/du`` (a leaky integrator) per step, plus ``g_u`` from a membrane
        loss; returns ``dL/dI``."""
        if rec.get("kernel") and g_u is None:
            return self._backward_kernel(run, rec, g_o)
        nrn, R = self.neuron, self.neuron.reset
        lam, kap, thr, al, (lkey, lhow, lraw), (tkey, traw) = self._constants(run)
        u, o, v, j, seen = rec["u"], rec["o"], rec["v"], rec["j"], rec["seen"]
        gain = None if self.gain is None else np.asarray(self.gain, dtype=u.dtype)
        T = u.shape[0]
        if not self.spiking:
            g_u, g_o = (g_o if g_u is None else g_o + g_u), np.zeros_like(u)
        g_u = np.zeros_like(u) if g_u is None else g_u
        delayed = nrn.timing == "delayed"
        h = lambda zz: surrogates.h(zz, nrn.surrogate, nrn.width)             # noqa: E731
        gI = np.zeros_like(u)
        glam, gthr, galpha = 0.0, 0.0, 0.0
        gV = 0.0
        carry = 0.0                                                           # dL/do^t through the recurrence of t+1
        if self.recurrent is not None:
            Vkey, kind, ckey = (*self.recurrent, None)[:3]
            V = self._recurrent_weights(run.params[Vkey], kind)
        nxt = None                                                            # (eps, g_v, g_j) of step t+1
        for t in reversed(range(T)):
            delta = g_o[t] + carry
            eps_r = 0.0
            if nxt is not None and self.spiking:
                eps_next, gv_next, _ = nxt
                g_r = lam * gv_next                                           # dL/dr^t, through the charge of t+1
                if delayed:
                    if not nrn.detach:
                        delta = delta + eps_next * R.do(v[t + 1], o[t], lam, thr)        # Eq. (B3)
                    eps_r = g_r
                else:
                    if not nrn.detach:
                        delta = delta + g_r * R.do(u[t], o[t], lam, thr)                 # Eq. (B3)
                    eps_r = g_r * R.du(u[t], seen[t], lam)
                    gthr = gthr + g_r * R.dthr(u[t], seen[t])
            elif nxt is not None:
                eps_r = lam * nxt[1]                                          # a leaky integrator: r^t = u^t
            fire_part = delta * h(u[t] - thr) if self.spiking else 0.0
            eps = fire_part + eps_r + g_u[t]                                  # Eq. (B4)
            gthr = gthr - fire_part                                           # do/dv_th = -h
            if delayed and t > 0 and self.spiking:
                gv = eps * R.du(v[t], seen[t - 1], lam)
                gthr = gthr + eps * R.dthr(v[t], seen[t - 1])
            else:
                gv = eps
            gj = kap * gv
            if al is not None and nxt is not None:
                gj = gj + al[0] * nxt[2]                                      # Eq. (B4j)
            if al is not None and t > 0:
                galpha = galpha + gj * j[t - 1]
            r_prev = nrn.v_rest if t == 0 else (u[t - 1] if (delayed or not self.spiking) else
                                                R.value(u[t - 1], seen[t - 1], lam, thr))
            glam = glam + gv * (r_prev - nrn.v_rest - (j[t] if nrn.decay_input else 0.0))   # dv/dlam
            gin = gj if self.gain is None else gj * gain                      # through the input gain
            gI[t] = gin
            carry = 0.0
            if self.recurrent is not None and t > 0:                          # Eq. (Rec), backward
                if kind != "one":
                    gV = gV + _rows(gin[None]).T @ _rows(o[t - 1][None])
                    carry = gin @ V
                else:
                    gV = gV + (gin * o[t - 1]).reshape(-1, gin.shape[-1]).sum(axis=0)
                    carry = gin * V
            nxt = (eps, gv, gj)
        per_neuron = lambda g: np.asarray(g).reshape(-1, *u.shape[2:]).sum(axis=0) if np.ndim(g) else g  # noqa
        if lkey is not None:
            run.add(lkey, _to_shape(_chain(per_neuron(glam), lhow, lraw), lraw))
        if tkey is not None:
            run.add(tkey, _to_shape(per_neuron(gthr), traw))
        if al is not None and al[1] is not None:
            run.add(al[1], _to_shape(_chain(per_neuron(galpha), al[2], al[3]), al[3]))
        if self.recurrent is not None:
            run.add(Vkey, self._recurrent_weights(gV, kind) if kind == "all_no_autapses" else gV)
            if ckey is not None:
                run.add(ckey, _rows(gI).sum(axis=0))
        return gI


def LI(decay=0.5, alpha=None, v_rest: float = 0.0, decay_input: bool = False, gain=None):
    """A leaky integrator that never fires (snnTorch's ``Leaky(reset_mechanism="none")`` read through its
    membrane): the :class:`LIF` recursion without spike or reset; its output is the membrane ``u``."""
    return LIF(Neuron(reset="none", decay_input=decay_input, v_rest=v_rest), decay=decay, threshold=1.0,
               alpha=alpha, spiking=False, gain=gain)


# ---------------------------------------------------------------------------
# Readouts and losses: of the output spikes o (T, B, C) and/or the output membrane u (T, B, C)
# ---------------------------------------------------------------------------

def _softmax_ce(z, y):
    """Mean cross-entropy over the batch of logits ``z`` (B, C) and its gradient."""
    zs = z - z.max(axis=1, keepdims=True)
    logp = zs - np.log(np.exp(zs).sum(axis=1, keepdims=True))
    B = z.shape[0]
    g = np.exp(logp)
    g[np.arange(B), y] -= 1.0
    return float(-logp[np.arange(B), y].mean()), g / B


def _onehot(y, C, dtype=np.float64):
    t = np.zeros((len(y), C), dtype)
    t[np.arange(len(y)), y] = 1.0
    return t


@dataclass(frozen=True)
class Loss:
    r"""A readout and its loss; ``value_and_grads(o, u, y, select)`` returns ``(L, dL/do, dL/du, select)``.

    ``kind`` (``o`` the output spikes, ``u`` the output membrane, ``obar = mean_t o``, ``n = sum_t o``,
    ``CE`` PyTorch's ``cross_entropy`` with its mean over the batch, ``MSE`` ``mse_loss``'s mean):

    ======================  ======================================================================
    ``"mse_rate_paper"``    ``1/(2B) sum ||obar - onehot||^2`` (the paper's Eq. (L))
    ``"mse_rate"``          ``MSE(obar, onehot)`` (the official STBP code)
    ``"mse_count"``         ``MSE(n, target) / T``, target ``int(T correct)`` for the label, ``int(T incorrect)``
                            else: snnTorch's ``mse_count_loss(correct, incorrect)`` (with 1 and 0 it is
                            ``T`` times ``"mse_rate"``, not ``T^2``)
    ``"ce_rate"``           ``CE(obar, y)``
    ``"ce_count"``          ``CE(n, y)``: snnTorch's ``ce_count_loss``
    ``"ce_per_step"``       ``(1/T) sum_t CE(o^t, y)``: snnTorch's ``ce_rate_loss`` (which sums in float32)
    ``"ce_membrane_sum"``   ``sum_t CE(u^t, y)`` (snnTorch tutorial 5)
    ``"ce_membrane_max"``   ``CE(max_t u^t, y)``: snnTorch's ``ce_max_membrane_loss``, norse's max readout
                            (the arg-max is frozen in the objective)
    ``"ce_membrane_last"``  ``CE(u^{T-1}, y)``
    ``"mse_membrane"``      ``MSE(u, target)``, ``target`` (T, B, C) or (B, C) given as ``y`` (snnTorch's
                            ``mse_membrane_loss`` with its target made explicit)
    ``"custom"``            ``fn(o, u, y) -> (L, dL/do, dL/du)``: any other loss (``None`` for a zero part)
    ======================  ======================================================================
    """

    kind: str = "mse_rate"
    correct: float = 1.0
    incorrect: float = 0.0
    fn: object = None

    def __post_init__(self):
        check_choice("kind", self.kind, LOSSES)
        if self.kind == "custom" and not callable(self.fn):
            raise ValueError("fn: a 'custom' loss needs fn(o, u, y) -> (loss, dL/do, dL/du)")

    @property
    def reads_membrane(self) -> bool:
        return self.kind.startswith(("ce_membrane", "mse_membrane")) or self.kind == "custom"

    def value_and_grads(self, o, u, y, select=None):
        k = self.kind
        if k == "custom":
            L, go, gu = self.fn(o, u, y)
            return float(L), go, gu, None
        if k == "mse_membrane":
            target = np.broadcast_to(np.asarray(y, dtype=u.dtype), u.shape)
            d = u - target
            return float(np.mean(d * d)), None, 2.0 * d / d.size, None
        T, B, C = (o if o is not None else u).shape
        if k.startswith("ce_membrane"):
            gu = np.zeros_like(u)
            if k == "ce_membrane_sum":
                L = 0.0
                for t in range(T):
                    Lt, g = _softmax_ce(u[t], y)
                    L, gu[t] = L + Lt, g
                return L, None, gu, None
            if k == "ce_membrane_last":
                L, gu[-1] = _softmax_ce(u[-1], y)
                return L, None, gu, None
            tmax = np.argmax(u, axis=0) if select is None else select        # (B, C): the step of each maximum
            zmax = np.take_along_axis(u, tmax[None], axis=0)[0]
            L, g = _softmax_ce(zmax, y)
            np.put_along_axis(gu, tmax[None], g[None], axis=0)
            return L, None, gu, tmax
        target = _onehot(y, C, o.dtype)
        if k == "mse_rate_paper":
            d = o.mean(axis=0) - target
            return 0.5 * float(np.sum(d * d)) / B, np.broadcast_to(d / (B * T), o.shape).copy(), None, None
        if k == "mse_rate":
            d = o.mean(axis=0) - target
            return float(np.mean(d * d)), np.broadcast_to(2.0 * d / (B * C * T), o.shape).copy(), None, None
        if k == "mse_count":                      # snnTorch's mse_count_loss: int() truncates the target counts
            want = np.where(target == 1.0, float(int(T * self.correct)), float(int(T * self.incorrect)))
            d = o.sum(axis=0) - want
            return float(np.mean(d * d)) / T, np.broadcast_to(2.0 * d / (T * B * C), o.shape).copy(), None, None
        if k == "ce_rate":
            L, g = _softmax_ce(o.mean(axis=0), y)
            return L, np.broadcast_to(g / T, o.shape).copy(), None, None
        if k == "ce_count":
            L, g = _softmax_ce(o.sum(axis=0), y)
            return L, np.broadcast_to(g, o.shape).copy(), None, None
        # "ce_per_step"
        go = np.zeros_like(o)
        L = 0.0
        for t in range(T):
            Lt, g = _softmax_ce(o[t], y)
            L, go[t] = L + Lt / T, g / T
        return L, go, None, None


LOSSES = ("mse_rate_paper", "mse_rate", "mse_count", "ce_rate", "ce_count", "ce_per_step", "ce_membrane_sum",
          "ce_membrane_max", "ce_membrane_last", "mse_membrane", "custom")


# ---------------------------------------------------------------------------
# The network: the list of pieces and the loss
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Network:
    """A stack of pieces and a :class:`Loss`.  The last population's spikes and membrane are the readout.

    ``loss_and_grad(params, x, y, data=None)`` -> ``(loss, grads)``; ``info`` receives the next BatchNorm
    buffers (``"state"``), every population's spikes (``"spikes"``) and ``dL/dx`` (``"input_grad"``, computed
    only when ``info`` is given).  ``backend="numpy"`` (the default) runs the readable forms; ``"numba"`` the
    fast tier behind the same pieces (stbp's kernels for the populations they cover, im2col convolutions).  ``reference_objective(params, x,
    y, data=None)`` -> the smooth function of the parameters whose exact gradient at ``params`` that is.
    """

    pieces: tuple
    loss: Loss = Loss()
    backend: str = "numpy"

    def __post_init__(self):
        object.__setattr__(self, "pieces", tuple(self.pieces))
        check_choice("backend", self.backend, ("numpy", "numba"))
        object.__setattr__(self, "backend", resolve_backend(self.backend))    # numba off: the readable forms
        if not self.pieces:
            raise ValueError("pieces: a network needs at least one piece")
        if not any(isinstance(p, LIF) for p in self.pieces):
            raise ValueError("pieces: a network needs a neuron population (LIF or LI) to read out")
        if not isinstance(self.loss, Loss):
            raise TypeError(f"loss: expected a Loss, got {type(self.loss).__name__}")
        last = self.pieces[self._last_population()]
        if not last.spiking and self.loss.kind not in ("mse_membrane", "custom") and not self.loss.reads_membrane:
            raise ValueError(f"loss: {self.loss.kind!r} reads the output spikes, but the last population is a "
                             f"leaky integrator (LI) that never fires; use a membrane loss")
        after = self.pieces[self._last_population() + 1:]
        if any(not isinstance(p, (Vote, Pool, Flatten)) for p in after):
            raise ValueError("pieces: nothing may follow the last neuron population but a readout of its spikes "
                             "(Vote, Pool, Flatten)")
        if after and (not last.spiking or self.loss.reads_membrane):
            raise ValueError("pieces: a readout after the last population reads spikes; a membrane loss reads the "
                             "last population itself")

    def _last_population(self) -> int:
        return max(i for i, p in enumerate(self.pieces) if isinstance(p, LIF))

    def _forward(self, run, x):
        a = x
        for i, piece in enumerate(self.pieces):
            rec = {"index": i}
            run.records.append(rec)
            try:
                a = piece.forward(run, rec, a)
            except (ValueError, IndexError) as exc:          # a shape that does not fit: say where and what
                if str(exc).startswith(("data[", "data:", "decay", "threshold", "alpha")):
                    raise
                keys = {k: np.shape(run.params[k]) for k in _piece_keys(piece) if k in run.params}
                raise ValueError(f"pieces[{i}] ({type(piece).__name__}): its input has shape {a.shape} "
                                 f"(T, batch, ...), its parameters {keys}: they do not fit ({exc})") from None
        last = run.records[self._last_population()]
        spiking = self.pieces[self._last_population()].spiking
        return (a if spiking else None), last["u"]        # a: the spikes, or their readout (Vote, Pool)

    def _run(self, params, x, data, mode, anchors=None, fast=False):
        x = check_array("x", x, dtype=np.float64)
        if x.ndim < 3:
            raise ValueError(f"x: expected (T, batch, *features), got shape {x.shape}")
        if not isinstance(params, dict):
            raise TypeError(f"params: expected a dict of arrays, got {type(params).__name__}")
        for i, piece in enumerate(self.pieces):
            for k in _piece_keys(piece):
                if k not in params:
                    raise ValueError(f"params: no {k!r} (pieces[{i}], {type(piece).__name__}); have {sorted(params)}")
        arrays = {k: check_array(f"params[{k!r}]", v, dtype=np.float64) for k, v in params.items()}
        return _Run(params=arrays, data=data or {}, mode=mode, anchors=anchors, fast=fast), x

    def _labels(self, y, o, u):
        if self.loss.kind in ("mse_membrane", "custom"):
            return y
        C = (o if o is not None else u).shape[-1]
        return check_labels("y", y, C, batch=(o if o is not None else u).shape[1])

    def simulate(self, params, x, data=None):
        """Every population's ``(u, o)`` at ``params`` (a list, in order)."""
        run, x = self._run(params, x, data, "spike", fast=self.backend == "numba")
        self._forward(run, x)
        return [(r["u"], r["o"]) for r, p in zip(run.records, self.pieces) if isinstance(p, LIF)]

    def loss_and_grad(self, params, x, y, data=None, *, info=None):
        run, x = self._run(params, x, data, "spike", fast=self.backend == "numba")
        run.input_grad = info is not None
        o, u = self._forward(run, x)
        y = self._labels(y, o, u)
        L, g_o, g_u, _ = self.loss.value_and_grads(o, u, y)
        last = self._last_population()
        g = None if g_o is None else g_o
        for i in reversed(range(len(self.pieces))):
            piece, rec = self.pieces[i], run.records[i]
            if i > last:                                       # a readout of the spikes (Vote, Pool, Flatten)
                g = piece.backward(run, rec, g)
            elif i == last:
                if piece.spiking:
                    g = piece.backward(run, rec, np.zeros_like(rec["o"]) if g is None else g, g_u)
                else:
                    g = piece.backward(run, rec, np.zeros_like(rec["u"]) if g_u is None else g_u)
            else:
                g = piece.backward(run, rec, g)
        grads = {k: np.asarray(run.grads.get(k, np.zeros_like(np.asarray(v, dtype=np.float64))), dtype=np.float64)
                 .reshape(np.shape(v)) for k, v in params.items() if k not in self._buffers()}
        if info is not None:
            info["state"] = dict(run.state)
            info["spikes"] = [r["o"] for r, p in zip(run.records, self.pieces) if isinstance(p, LIF) and p.spiking]
            info["input_grad"] = g
        return L, grads

    def _buffers(self) -> set:
        return {k for p in self.pieces if isinstance(p, BatchNorm) for k in (p.mean, p.var)}

    def reference_objective(self, params, x, y, data=None):
        anchor, xx = self._run(params, x, data, "spike")
        o0, u0 = self._forward(anchor, xx)
        yy = self._labels(y, o0, u0)
        _, _, _, select = self.loss.value_and_grads(o0, u0, yy)
        anchors = [dict(r) for r in anchor.records]

        def objective(p) -> float:
            run, x2 = self._run(p, x, data, "anchored", anchors)
            o, u = self._forward(run, x2)
            return self.loss.value_and_grads(o, u, yy, select)[0]

        return objective


def _piece_keys(piece) -> list:
    """The parameter keys a piece reads."""
    if isinstance(piece, (Affine, Conv)):
        return [k for k in (piece.W, piece.b) if k]
    if isinstance(piece, BatchNorm):
        return [piece.gamma, piece.beta, piece.mean, piece.var]
    if isinstance(piece, LIF):
        keys = [spec[0] for spec in (piece.decay, piece.threshold, piece.alpha) if isinstance(spec, tuple)]
        if piece.recurrent is not None:
            keys += [k for k in piece.recurrent[:1] + piece.recurrent[2:3]]
        return keys
    return []


# ---------------------------------------------------------------------------
# The networks refsnn.stbp computes, as stacks
# ---------------------------------------------------------------------------

def from_config(cfg, params) -> tuple:
    """``(network, input_shape)``: the stack that computes :mod:`refsnn.stbp`'s network for ``cfg``.

    ``input_shape`` is the shape of one step of one sample (``(C, H, W)`` for ``cfg.arch``, else
    ``(n_in,)``): reshape ``x`` (T, batch, n_in) to ``(T, batch, *input_shape)`` before the stack.  Used by
    the tests to hold the two equal, and a starting point for a model :mod:`refsnn.stbp` cannot express.
    """

    if cfg.forward != "spike":
        raise ValueError(f"cfg: forward={cfg.forward!r}; the stack computes the spiking network")
    N = sum(1 for k in params if k.startswith("W"))
    sizes = None
    if cfg.arch is None:
        sizes = [np.shape(params["W1"])[1]] + [np.shape(params[f"W{n}"])[0] for n in range(1, N + 1)]
    specs = stbp._specs(cfg, sizes)
    reset = ToValue(cfg.v_reset) if cfg.reset == "v_reset" else RESETS[cfg.reset]
    neuron = Neuron(reset=reset, timing=cfg.reset_timing, detach=cfg.detach_reset, strict=cfg.strict,
                    decay_input=cfg.decay_input, v_rest=cfg.v_rest, surrogate=cfg.surrogate, width=cfg.width)
    pieces = []
    for n, sp in enumerate(specs, start=1):
        if sp.pool is not None:
            pieces.append(Pool(sp.pool[0], sp.pool[1]))
        if sp.op == "conv":
            pieces.append(Conv(f"W{n}", f"b{n}", sp.stride, sp.pad))
        else:
            if len(sp.below_shape) == 3:
                pieces.append(Flatten())
            pieces.append(Affine(f"W{n}", f"b{n}"))
        decay = stbp._layer_value("decay", cfg.decay, n - 1, len(specs))
        if cfg.learn_decay == "clamp":
            decay = (f"beta{n}", "clamp")
        elif cfg.learn_decay == "sigmoid":
            decay = (f"tau_w{n}", "sigmoid")
        thr = (f"thr{n}", "identity") if cfg.learn_threshold else stbp._layer_value("v_th", cfg.v_th, n - 1, len(specs))
        alpha = stbp._layer_value("syn_decay", cfg.syn_decay, n - 1, len(specs)) if cfg.synapse == "current" else None
        pieces.append(LIF(neuron, decay=decay, threshold=thr, alpha=alpha))
    loss = Loss("mse_rate_paper" if cfg.loss == "mse_paper" else "mse_rate")
    return Network(tuple(pieces), loss), tuple(specs[0].below_shape)
