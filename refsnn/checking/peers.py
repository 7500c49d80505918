"""Peer adapters: a PyTorch SNN model (snnTorch, spikingjelly, norse, the official STBP code) as a refsnn STBP net.

::

    from refsnn.checking import peers
    adapted = peers.from_torch(model)            # model: nn.Sequential of layers and neuron modules
    loss, grads = adapted.loss_and_grad(x, y)    # refsnn's STBP gradient of the same model, float64
    report = peers.verify(model, x, y)            # ... against the peer's own autograd, tensor by tensor

``from_torch`` reads the model once: each ``nn.Linear`` or ``nn.Conv2d`` becomes ``W{n}, b{n}`` (the
peer's values, same layout: ``(n_out, n_in)``, ``(c_out, c_in, k, k)``), poolings of spikes
(``nn.AvgPool2d``, ``nn.MaxPool2d``) and ``nn.Flatten`` become tokens of ``Config.arch`` (pass
``input_shape=(C, H, W)`` for a conv model), each neuron module a layer of :class:`refsnn.stbp.Config` with
exactly the peer's neuron (reset, timing, detach, threshold comparison, input scaling, synapse,
surrogate), and learned neuron parameters become ``beta{n}`` / ``tau_w{n}`` / ``thr{n}``.
``Adapted.mapping`` says which peer parameter each refsnn key is, so the peer's ``.grad`` compare
tensor for tensor with refsnn's gradient, with no rescaling (``Adapted.peer_grads``).  What refsnn
cannot express raises :class:`NotExpressible`, naming the module, the attribute and its value.
Values the peer stores in float32 (snnTorch's ``beta`` and ``threshold`` given as Python floats,
norse's parameters) are used exactly as stored and reported in ``Adapted.notes``: they are the
usual reason for a ~1e-8 "mismatch".

Supported (``docs/verify.md`` has the mapping table):

============================================  ===================================================
peer module                                   refsnn STBP neuron
============================================  ===================================================
snnTorch ``Leaky`` (subtract, zero, none;     ``reset`` as named; ``reset_delay=True``: subtract
``reset_delay``; ``learn_beta``,              delayed and detached, zero = immediate detached;
``learn_threshold``)                          ``False``: immediate, attached (zero and none only)
snnTorch ``Synaptic``                         current synapse ``alpha``; resets as ``Leaky``'s,
                                              but zero with ``reset_delay`` zeroes the next step
spikingjelly ``LIFNode``, ``IFNode``,         ``decay = 1 - 1/tau``, ``decay_input``, ``>=``, hard
``ParametricLIFNode``                         reset to ``v_reset`` (soft if None), ``detach_reset``
norse ``LIFCell``, ``LIF``, ``LIFBoxCell``    ``decay = 1 - dt tau_mem_inv``, input scaled,
                                              synapse ``1 - dt tau_syn_inv``, reset to ``v_reset``
:func:`official_stbp_neuron`                  the official STBP code's ``mem_update``; its window
                                              ``|u - thresh| < lens`` is ``surrogate="window",
                                              width=lens``
============================================  ===================================================

Surrogates: snnTorch ``atan``, ``fast_sigmoid``, ``sigmoid`` (and the float64 versions
:func:`snntorch_surrogate` makes); spikingjelly ``Sigmoid``, ``ATan``; norse ``"super"``; the official
STBP code's height-1 window (refsnn's ``window``, ``width = lens``).  Stock
snnTorch surrogates return float32 spikes and round the incoming gradient to float32, so a stock
snnTorch model agrees with refsnn to float32 round-off (~1e-7); :func:`snntorch_surrogate` is the
same formula keeping the input's dtype, and agrees to float64 round-off.

torch and the peer libraries are imported only when a function here needs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from refsnn import stbp
from refsnn.checking import gradcheck
from refsnn.blocks._checks import check_in_range, check_positive

__all__ = ["NotExpressible", "Adapted", "from_torch", "verify", "run", "export_case", "snntorch_surrogate", "spike_function",
           "official_stbp_neuron"]


class NotExpressible(ValueError):
    """A peer model uses something refsnn's STBP cannot express (the message names module, attribute, value)."""


@dataclass
class Adapted:
    """A peer model as refsnn sees it.

    Attributes
    ----------
    algorithm : module
        ``refsnn.stbp``.
    params : dict
        float64 copies of the peer's tensors under refsnn's keys.
    cfg : refsnn.stbp.Config
        The peer's neuron (``loss="mse_mean"``, PyTorch's ``MSELoss`` of the output rate).
    mapping : dict
        refsnn key -> the peer's parameter name (``model.named_parameters()``), or None for a value
        refsnn needs that the peer does not train (e.g. a zero bias of ``nn.Linear(bias=False)``).
    notes : list of str
        What the adapter noticed: float32 values used as stored, float32 spikes.
    kinds : list of str
        The peer family of each layer ("snntorch", "spikingjelly", "norse", "official").
    """

    algorithm: object
    params: dict
    cfg: object
    mapping: dict
    notes: list = field(default_factory=list)
    kinds: list = field(default_factory=list)
    network: object = None          # the model as a refsnn.stbp_layers.Network (None: cfg says it all)
    dropouts: dict = field(default_factory=dict)   # data key -> the peer's dropout module (its mask, after a run)

    def stack(self):
        """The model as a :class:`refsnn.stbp_layers.Network`: ``network``, or the one ``cfg`` describes."""
        if self.network is not None:
            return self.network
        from refsnn import stbp_layers

        return stbp_layers.from_config(replace(self.cfg, forward="spike"), self.params)[0]

    def loss_and_grad(self, x, y, loss="mse_mean", data=None):
        """refsnn's loss and gradient of the adapted model on ``x`` (T, batch, ...), labels ``y``.

        ``loss``: ``"mse_mean"`` or ``"mse_paper"`` (refsnn.stbp's), a kind of :class:`refsnn.stbp_layers.Loss`
        or such a Loss (then the model runs as a stack; ``data`` holds its dropout masks).
        """
        x = np.asarray(x, dtype=np.float64)
        if self.network is None and loss in ("mse_mean", "mse_paper"):
            return stbp.loss_and_grad(self.params, x, y, replace(self.cfg, loss=loss))
        from refsnn import stbp_layers

        spec = loss if isinstance(loss, stbp_layers.Loss) else stbp_layers.Loss(
            {"mse_mean": "mse_rate", "mse_paper": "mse_rate_paper"}.get(loss, loss))
        net = stbp_layers.Network(self.stack().pieces, spec)
        return net.loss_and_grad(self.params, x, y, data)

    def peer_grads(self, model) -> dict:
        """The peer's ``.grad`` of every mapped parameter, as float64 arrays under refsnn's keys."""
        named = dict(model.named_parameters())
        out = {}
        for key, name in self.mapping.items():
            if name is None:
                continue
            g = named[name].grad
            out[key] = np.zeros(np.shape(self.params[key])) if g is None else g.detach().cpu().double().numpy().copy()
        return out


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional
        raise ImportError("refsnn.checking.peers needs PyTorch: pip install torch (the CPU build)") from None
    return torch


def _value(name, t):
    """A tensor (or number) as float64 NumPy, and whether it was stored in float32."""
    torch = _torch()
    if torch.is_tensor(t):
        return t.detach().cpu().double().numpy().copy(), t.dtype == torch.float32
    return np.asarray(float(t)), False


def _scalar(module_label, attr, t):
    """A fixed per-layer constant; ``low`` is True when it is (or is the float32 rounding of) a float32 value."""
    v, low = _value(attr, t)
    if v.size != 1:
        raise NotExpressible(f"{module_label}: {attr} has shape {tuple(v.shape)}; refsnn takes one value per layer "
                             f"for a fixed {attr} (make it learnable for one per neuron)")
    v = float(v.reshape(()))
    rounded = float(np.float32(v)) == v and repr(float(np.float32(v))) != str(np.float32(v))   # e.g. float32(0.9)
    return v, low or rounded


# ---------------------------------------------------------------------------
# Surrogates
# ---------------------------------------------------------------------------

def spike_function(derivative):
    """A torch spike ``(x > 0)`` in the input's dtype whose backward is ``grad * derivative(x)`` (a tensor of
    ``x``'s shape): the one autograd function behind every spike the adapters, the PyTorch ports and the
    benchmarks write.  Returns its ``apply``."""
    torch = _torch()

    class _Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * derivative(x)

    return _Spike.apply


def snntorch_surrogate(name: str = "atan", width: float = 1.0 / math.pi):
    """A snnTorch ``spike_grad`` that keeps the input's dtype: forward ``(x > 0)``, backward refsnn's surrogate.

    ``snntorch_surrogate("atan", 2 / (pi * alpha))`` is snnTorch's ``atan(alpha)`` in float64,
    ``snntorch_surrogate("fast_sigmoid", 1 / slope)`` its ``fast_sigmoid(slope)``; any refsnn
    surrogate name works.  The adapter recognises it.
    """
    torch = _torch()
    from refsnn.blocks import surrogates

    surrogates.get(name, width)
    spike = spike_function(lambda x: torch.as_tensor(surrogates.h(x.detach().cpu().numpy(), name, width),
                                                     dtype=x.dtype, device=x.device))

    def spike_grad(x):
        return spike(x)

    spike_grad.refsnn_surrogate = (name, float(width))
    return spike_grad


def _snntorch_surrogate(label, fn, notes):
    """refsnn's (name, width) of a snnTorch ``spike_grad``."""
    if hasattr(fn, "refsnn_surrogate"):
        return fn.refsnn_surrogate
    qual = getattr(fn, "__qualname__", "")
    free = dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in fn.__closure__ or ()))) \
        if hasattr(fn, "__code__") else {}
    if qual.startswith("atan."):
        out = ("atan", 2.0 / (math.pi * float(free["alpha"])))
    elif qual.startswith("fast_sigmoid."):
        out = ("fast_sigmoid", 1.0 / float(free["slope"]))
    elif qual.startswith("sigmoid."):
        out = ("sigmoid", 1.0 / float(free["slope"]))
    else:
        raise NotExpressible(f"{label}: spike_grad {qual or fn!r} has no refsnn counterpart (supported: snnTorch's "
                             f"atan, fast_sigmoid, sigmoid, or refsnn.checking.peers.snntorch_surrogate)")
    notes.append(f"{label}: snnTorch's stock {qual.split('.')[0]} surrogate returns float32 spikes and rounds the "
                 f"incoming gradient to float32: expect agreement to ~1e-7, not 1e-12 (use "
                 f"refsnn.checking.peers.snntorch_surrogate({out[0]!r}, {out[1]!r}) for a float64 model)")
    return out


def _spikingjelly_surrogate(label, sg):
    cls = type(sg).__name__
    alpha = getattr(sg, "alpha", None)
    if cls == "Sigmoid":
        return "sigmoid", 1.0 / float(alpha)
    if cls == "ATan":
        return "atan", 2.0 / (math.pi * float(alpha))
    raise NotExpressible(f"{label}: surrogate_function {cls}(alpha={alpha}) has no refsnn counterpart "
                         f"(supported: Sigmoid, ATan)")


# ---------------------------------------------------------------------------
# Neurons
# ---------------------------------------------------------------------------

def _snntorch_neuron(label, m, notes, prefix):
    name = type(m).__name__
    for attr in ("inhibition", "state_quant"):
        if getattr(m, attr, False):
            raise NotExpressible(f"{label}: {attr}={getattr(m, attr)!r} cannot be expressed")
    gsf, _ = _value("graded_spikes_factor", m.graded_spikes_factor)
    if np.any(gsf != 1.0):
        raise NotExpressible(f"{label}: graded_spikes_factor={gsf.tolist()} cannot be expressed (refsnn spikes are 0/1)")
    if "graded_spikes_factor" in dict(m.named_parameters()):
        raise NotExpressible(f"{label}: learn_graded_spikes_factor=True cannot be expressed")
    if m.graded_spikes_factor.dim() == 0 and not hasattr(m.spike_grad, "refsnn_surrogate"):
        notes.append(f"{label}: its spikes are float32 (a stock surrogate's float32 spike times a 0-d "
                     f"graded_spikes_factor stays float32; a float64 model needs graded_spikes_factor="
                     f"torch.ones(1, dtype=torch.float64))")
    reset = m.reset_mechanism
    delay = bool(getattr(m, "reset_delay", True))
    s = {}
    if reset == "subtract":
        if not delay:
            raise NotExpressible(f"{label}: reset_mechanism='subtract' with reset_delay=False cannot be expressed "
                                 f"(snnTorch subtracts again when the reset potential stays above threshold)")
        s.update(reset="subtract", reset_timing="delayed", detach_reset=True)
    elif reset == "zero":
        if name == "Synaptic" and delay:
            s.update(reset="zero", reset_timing="delayed", detach_reset=True)     # zeroes the next step entirely
        else:
            s.update(reset="zero", reset_timing="immediate", detach_reset=delay)
    else:
        s.update(reset="none", reset_timing="immediate", detach_reset=False)
    s.update(strict=True, decay_input=False, v_rest=0.0)
    s["surrogate"], s["width"] = _snntorch_surrogate(label, m.spike_grad, notes)
    layer = {}
    learned = dict(m.named_parameters())
    if "beta" in learned:
        s["learn_decay"] = "clamp"
        layer["beta"] = (f"{prefix}beta", _value("beta", m.beta)[0])
    else:
        layer["decay"], low = _scalar(label, "beta", m.beta)
        if low:
            notes.append(f"{label}: beta holds a float32 value ({layer['decay']!r}, snnTorch stores a Python float "
                         f"as float32): refsnn uses it exactly; typing {np.float32(layer['decay'])} into a Config "
                         f"by hand would leave a ~1e-8 difference")
    if "threshold" in learned:
        s["learn_threshold"] = True
        layer["thr"] = (f"{prefix}threshold", _value("threshold", m.threshold)[0])
    else:
        layer["v_th"], low = _scalar(label, "threshold", m.threshold)
        if low:
            notes.append(f"{label}: threshold holds a float32 value ({layer['v_th']!r}): refsnn uses it exactly")
    if name == "Synaptic":
        if "alpha" in learned:
            raise NotExpressible(f"{label}: learn_alpha=True cannot be expressed (the synapse's decay is fixed)")
        alpha, low = _scalar(label, "alpha", m.alpha)
        layer["syn_decay"] = min(max(alpha, 0.0), 1.0)                           # snnTorch clamps it
        s["synapse"] = "current"
        if low:
            notes.append(f"{label}: alpha is stored in float32: {alpha!r} is used exactly")
    else:
        s["synapse"] = "none"
    if "decay" in layer:
        layer["decay"] = min(max(layer["decay"], 0.0), 1.0)                      # beta.clamp(0, 1)
        if layer["decay"] == 0.0:
            raise NotExpressible(f"{label}: beta={layer['decay']} (no memory at all) cannot be expressed: "
                                 f"refsnn's decay lies in (0, 1]")
    return s, layer


def _spikingjelly_neuron(label, m, notes, prefix):
    name = type(m).__name__
    s = {"strict": False, "synapse": "none"}
    vr = m.v_reset
    if vr is None:
        s.update(reset="subtract", v_rest=0.0)
    elif float(vr) == 0.0:
        s.update(reset="zero", v_rest=0.0)
    else:
        s.update(reset="v_reset", v_reset=float(vr), v_rest=float(vr))
    s.update(reset_timing="immediate", detach_reset=bool(m.detach_reset))
    s["surrogate"], s["width"] = _spikingjelly_surrogate(label, m.surrogate_function)
    layer = {"v_th": float(m.v_threshold)}
    if name == "IFNode":
        s["decay_input"] = False
        layer["decay"] = 1.0
    elif name == "LIFNode":
        s["decay_input"] = bool(m.decay_input)
        layer["decay"] = 1.0 - 1.0 / float(m.tau)
    elif name == "ParametricLIFNode":
        s["decay_input"] = bool(m.decay_input)
        s["learn_decay"] = "sigmoid"
        w, low = _value("w", m.w)
        layer["tau_w"] = (f"{prefix}w", w)
        if low:
            notes.append(f"{label}: w is a float32 parameter ({float(w)!r}): refsnn uses it exactly, but the "
                         f"model's own float32 arithmetic caps agreement at ~1e-7 unless it is converted with .double()")
    else:  # pragma: no cover - guarded by the caller
        raise NotExpressible(f"{label}: {name} is not a supported spikingjelly neuron")
    return s, layer


def _norse_neuron(label, m, notes, prefix):
    torch = _torch()
    name = type(m).__name__
    p, dt = m.p, float(m.dt)
    method = p.method
    if method != "super":
        raise NotExpressible(f"{label}: p.method={method!r} has no refsnn counterpart (supported: 'super')")
    low = [f for f in p._fields if torch.is_tensor(getattr(p, f)) and getattr(p, f).dtype == torch.float32]
    a = dt * p.tau_mem_inv                                                  # norse's own product, in its dtype
    a_val = float(a)
    s = {"strict": True, "surrogate": "fast_sigmoid", "width": 1.0, "decay_input": True,
         "reset_timing": "immediate", "detach_reset": False}
    v_leak, v_th, v_reset = float(p.v_leak), float(p.v_th), float(p.v_reset)
    s["v_rest"] = v_leak
    if v_reset == 0.0:
        s["reset"] = "zero"
    else:
        s.update(reset="v_reset", v_reset=v_reset)
    layer = {"decay": 1.0 - a_val, "v_th": v_th}
    if name in ("LIFCell", "LIF"):
        s["synapse"] = "current"
        layer["syn_decay"] = 1.0 - float(dt * p.tau_syn_inv)
    else:
        s["synapse"] = "none"
    if low:
        notes.append(f"{label}: norse's parameters {low} are float32 tensors (dt * tau_mem_inv = {a_val!r}): "
                     f"refsnn uses these values exactly; pass float64 tensors for a float64 model")
    return s, layer


def _kind(m) -> str | None:
    mod = type(m).__module__
    if getattr(m, "refsnn_official_stbp", False):
        return "official"
    if mod.startswith("snntorch") and type(m).__name__ in ("Leaky", "Synaptic"):
        return "snntorch"
    if mod.startswith("spikingjelly") and type(m).__name__ in ("LIFNode", "IFNode", "ParametricLIFNode"):
        return "spikingjelly"
    if mod.startswith("norse") and type(m).__name__ in ("LIFCell", "LIF", "LIFBoxCell"):
        return "norse"
    return None


def _official_neuron(label, m, notes, prefix):
    # The code's surrogate is grad * (|u - thresh| < lens): height 1, half-width lens, for any lens.  That is
    # refsnn's "window" of width lens (rect of width 2 lens has height 1 / (2 lens): equal at lens 0.5 only).
    s = {"reset": "zero", "reset_timing": "immediate", "detach_reset": False, "strict": True, "decay_input": False,
         "v_rest": 0.0, "synapse": "none", "surrogate": "window", "width": float(m.lens)}
    return s, {"decay": float(m.decay), "v_th": float(m.thresh)}


_NEURONS = {"snntorch": _snntorch_neuron, "spikingjelly": _spikingjelly_neuron, "norse": _norse_neuron,
            "official": _official_neuron}
_PER_LAYER = ("decay", "v_th", "syn_decay")


def _modules(model):
    """The model's layers in order: the children of an ``nn.Sequential`` (nested ones flattened)."""
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module (an nn.Sequential of layers), got {type(model).__name__}")
    out = []

    def walk(m, prefix):
        children = list(m.named_children())
        if isinstance(m, torch.nn.Sequential):
            for name, c in children:
                walk(c, f"{prefix}{name}.")
        else:
            out.append((prefix[:-1], m))

    walk(model, "")
    return out


def _pair(label, attr, v):
    """A square ``int`` from an int or an ``(a, a)`` pair (torch stores both)."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2 or v[0] != v[1]:
            raise NotExpressible(f"{label}: {attr}={tuple(v)} is not square; refsnn's convolutions and poolings are")
        v = v[0]
    return int(v)


def _conv_token(label, m, shape):
    """The architecture token of an ``nn.Conv2d`` on maps ``shape`` (C, H, W), or NotExpressible."""
    if shape is None or len(shape) != 3:
        raise NotExpressible(f"{label}: a convolution needs (C, H, W) maps; pass input_shape=(C, H, W) to "
                             f"from_torch" if shape is None else f"{label}: a convolution after a dense layer")
    if m.in_channels != shape[0]:
        raise NotExpressible(f"{label}: in_channels={m.in_channels}, but the maps below have {shape[0]} channels")
    k, s, p = (_pair(label, a, getattr(m, a)) for a in ("kernel_size", "stride", "padding"))
    if _pair(label, "dilation", m.dilation) != 1 or m.groups != 1 or m.padding_mode != "zeros":
        raise NotExpressible(f"{label}: dilation={m.dilation}, groups={m.groups}, padding_mode={m.padding_mode!r}; "
                             f"refsnn's convolution has dilation 1, groups 1 and zero padding")
    H, W = (shape[1] + 2 * p - k) // s + 1, (shape[2] + 2 * p - k) // s + 1
    return f"{m.out_channels}c{k}s{s}p{p}", (m.out_channels, H, W)


def _pool_token(label, m, shape, torch):
    """The architecture token of an ``nn.AvgPool2d`` / ``nn.MaxPool2d`` on maps ``shape``, or NotExpressible."""
    if shape is None or len(shape) != 3:
        raise NotExpressible(f"{label}: pooling needs (C, H, W) maps (pass input_shape=(C, H, W) to from_torch)")
    k = _pair(label, "kernel_size", m.kernel_size)
    stride = k if m.stride in (None, ()) else _pair(label, "stride", m.stride)
    avg = isinstance(m, torch.nn.AvgPool2d)
    if stride != k or _pair(label, "padding", m.padding) != 0 or m.ceil_mode or \
            (avg and m.divisor_override is not None) or (not avg and _pair(label, "dilation", m.dilation) != 1):
        raise NotExpressible(f"{label}: refsnn pools non-overlapping k x k windows (stride = kernel, no padding, "
                             f"floor mode{', no divisor_override' if avg else ', dilation 1'})")
    return f"{'ap' if avg else 'mp'}{k}", (shape[0], shape[1] // k, shape[2] // k)


def _is_class_model(model) -> bool:
    """A model written as a class with its own ``forward`` (not an ``nn.Sequential``, not a single neuron)."""
    torch = _torch()
    return (isinstance(model, torch.nn.Module) and not isinstance(model, torch.nn.Sequential)
            and _kind(model) is None and _stack_kind(model) is None and any(True for _ in model.children()))


def _atomic_modules(model):
    """``[(path, module)]``: the neurons (whose inner modules belong to them) and the leaf modules, in order."""
    out, skip = [], []
    for path, m in model.named_modules():
        if not path or any(path.startswith(p + ".") for p in skip):
            continue
        if _kind(m) is not None or _stack_kind(m) is not None:
            out.append((path, m))
            skip.append(path)
        elif not any(True for _ in m.children()):
            out.append((path, m))
    return out


def _recorded_modules(model, example):
    """The modules a class model calls at one step, in order, read by running a copy of it on ``example``.

    Returns ``(modules, static)``: the chain of one step (each module's input the previous one's output, the
    same chain at every step) and whether the model takes one static input for all steps (``example`` itself)
    rather than a sequence it steps through.  Anything else (a residual add, a branch, a module called twice in
    a step, a computation between two modules) is refused, naming the module and what it saw.
    """
    import copy

    torch = _torch()
    twin = copy.deepcopy(model)
    calls = []
    hooks = [m.register_forward_hook(lambda mod, args, out, path=path: calls.append((path, args, out)))
             for path, m in _atomic_modules(twin)]
    try:
        with torch.no_grad():
            twin(example)
    finally:
        for h in hooks:
            h.remove()
    if not calls:
        raise NotExpressible(f"model ({type(model).__name__}): running it called none of its modules")
    first = calls[0][0]
    starts = [i for i, c in enumerate(calls) if c[0] == first] + [len(calls)]
    steps = [calls[a:b] for a, b in zip(starts[:-1], starts[1:])]
    chain = [c[0] for c in steps[0]]
    problems = []
    for t, step in enumerate(steps):
        if [c[0] for c in step] != chain:
            problems.append(f"step {t} calls {[c[0] for c in step]}, step 0 {chain}: refsnn reads one chain of "
                            f"modules, the same at every step")
            break
        for (pa, _, out), (pb, args, _) in zip(step[:-1], step[1:]):
            prev = out[0] if isinstance(out, tuple) else out
            if not args or args[0] is not prev:
                problems.append(f"module {pb} ({type(dict(twin.named_modules())[pb]).__name__}) at step {t}: its input "
                                f"is not the output of module {pa}: a residual add, a branch or a computation "
                                f"between modules, which refsnn does not read (it reads a chain)")
                break
        if problems:
            break
    if len(set(chain)) != len(chain):
        problems.append(f"a module is called twice in one step ({chain}): refsnn reads each module once per step")
    if problems:
        raise NotExpressible("refsnn cannot read this model as a chain of modules:\n" + "\n".join(problems))
    x0 = steps[0][0][1][0] if steps[0][0][1] else None
    shape, ex = (tuple(x0.shape) if x0 is not None else None), tuple(example.shape)
    if shape == ex:
        static = True                      # the same input at every step (or a sequence passed whole)
    elif shape == ex[1:]:
        static = False                     # x[step]: a sequence it steps through
    elif shape is not None and shape[1:] == ex and torch.equal(x0, example.expand(shape).to(x0.dtype)):
        static = True                      # it repeats a static input over the steps itself (spikingjelly's CSNN)
    else:
        raise NotExpressible(f"module {chain[0]}: its input has shape {shape}, which is neither the model's input "
                             f"{ex}, one step of it, nor it repeated over the steps: a computation before the first "
                             f"module, which refsnn does not read")
    named = dict(model.named_modules())
    return [(path, named[path]) for path in chain], static


def from_torch(model, input_shape=None, example_input=None) -> Adapted:
    """Read a PyTorch SNN (an ``nn.Sequential`` of layers and neuron modules) as a refsnn STBP network.

    A model written as a class (``class Net(nn.Module)`` with a ``forward`` that loops over the steps, as
    the peers' tutorials write them) is read by running a copy of it once on ``example_input`` and
    recording the modules it calls: when they form a chain (each module's input the previous one's output,
    the same at every step) it is read as that Sequential; a residual add, a branch or a module called
    twice is refused, naming it.  Models :mod:`refsnn.stbp` expresses get a ``cfg``; anything else it reads as a stack of layers
    (:mod:`refsnn.stbp_layers`: ``Adapted.network``): BatchNorm (PyTorch's, called at every step, or
    spikingjelly's multi-step one, over time and batch), spikingjelly's multi-step dropout (its mask is read
    after a run), pooling of currents, a different neuron in each layer, snnTorch's ``RLeaky`` and
    ``RSynaptic`` (all-to-all over a Linear, or one-to-one), norse's ``LIFRecurrentCell``, ``LICell`` and
    ``LIBoxCell`` (a leaky-integrator readout).  What neither reads is refused with every module and reason.

    Layers: ``nn.Linear``, ``nn.Conv2d`` (square kernel, stride and padding), ``nn.AvgPool2d`` and
    ``nn.MaxPool2d`` of the spikes below (non-overlapping windows), ``nn.Flatten`` before a Linear,
    ``nn.Identity``; a neuron after each Linear and Conv2d.  A model with convolutions needs
    ``input_shape = (C, H, W)`` of one sample; ``cfg.arch`` then describes it.

    Returns an :class:`Adapted`: ``params`` (float64 copies of the peer's tensors), ``cfg`` (the
    peer's neuron as :class:`refsnn.stbp.Config`, MSELoss), ``mapping`` (refsnn key -> peer parameter
    name) and ``notes``.  Raises :class:`NotExpressible` for anything refsnn's STBP cannot express.
    """
    if _is_class_model(model):
        if example_input is None:
            raise NotExpressible(f"model ({type(model).__name__}) is written as a class with its own forward: refsnn "
                                 f"reads it by running it once and recording the modules it calls; pass "
                                 f"example_input= (refsnn.checking.peers.verify does)")
        mods, _ = _recorded_modules(model, example_input)
    else:
        mods = _modules(model)
    return _adapt(model, mods, input_shape)


def _adapt(model, mods, input_shape) -> Adapted:
    """:func:`from_torch` once the modules are known: ``refsnn.stbp``'s Config when it can say it, else the stack."""
    try:
        return _from_torch_config(model, mods, input_shape)
    except NotExpressible as first:
        shape = None if input_shape is None else tuple(int(d) for d in np.atleast_1d(input_shape))
        notes = []
        network, params, mapping, kinds, dropouts = _from_torch_stack(model, mods, shape, notes)
        notes.append(f"read as a stack of layers (refsnn.stbp_layers), since refsnn.stbp cannot express it: {first}")
        return Adapted(stbp, params, None, mapping, notes, kinds, network=network, dropouts=dropouts)


def _from_torch_config(model, mods, input_shape):
    """The route of :func:`from_torch` for models :mod:`refsnn.stbp` expresses (one neuron type, a Config)."""
    torch = _torch()
    params, mapping, notes, kinds, layers = {}, {}, [], [], []
    settings = None
    pending = None          # the Linear or Conv2d waiting for its neuron
    shape = None
    if input_shape is not None:
        shape = tuple(int(d) for d in np.atleast_1d(input_shape))
        if len(shape) not in (1, 3) or min(shape) < 1:
            raise ValueError(f"input_shape: expected (C, H, W) or (n,) of one sample, got {input_shape!r}")
    tokens = [] if shape is None else ["x".join(map(str, (shape[1], shape[2], shape[0]))) if len(shape) == 3
                                       else str(shape[0])]
    spatial = False         # a convolution or pooling seen: the net needs cfg.arch
    for path, m in mods:
        label = f"module {path or '(root)'} ({type(m).__name__})"
        if isinstance(m, torch.nn.Identity):
            continue
        if isinstance(m, torch.nn.Flatten):
            if pending is not None:
                raise NotExpressible(f"{label}: a Flatten between a layer and its neuron cannot be expressed")
            if (m.start_dim, m.end_dim) != (1, -1):
                raise NotExpressible(f"{label}: start_dim={m.start_dim}, end_dim={m.end_dim}; refsnn flattens "
                                     f"each sample (start_dim=1, end_dim=-1)")
            if shape is not None and len(shape) == 3:
                shape = (int(np.prod(shape)),)
            continue
        if isinstance(m, (torch.nn.AvgPool2d, torch.nn.MaxPool2d)):
            if pending is not None:
                raise NotExpressible(f"{label}: pooling between a layer and its neuron (of currents, not spikes) "
                                     f"cannot be expressed; refsnn pools the spikes of the layer below")
            if tokens and tokens[-1][:2] in ("ap", "mp"):
                raise NotExpressible(f"{label}: two poolings in a row")
            token, shape = _pool_token(label, m, shape, torch)
            tokens.append(token)
            spatial = True
            continue
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            if pending is not None:
                raise NotExpressible(f"{label}: two layers in a row (refsnn needs a neuron after each)")
            if isinstance(m, torch.nn.Conv2d):
                token, shape = _conv_token(label, m, shape)
                spatial = True
            else:
                if shape is not None and int(np.prod(shape)) != m.in_features:
                    raise NotExpressible(f"{label}: in_features={m.in_features}, but the layer below gives "
                                         f"{int(np.prod(shape))} values")
                token, shape = str(m.out_features), (m.out_features,)
            tokens.append(token)
            pending = (path, m)
            continue
        kind = _kind(m)
        if kind is None:
            raise NotExpressible(f"{label}: not a supported layer (nn.Linear, nn.Conv2d, nn.AvgPool2d, nn.MaxPool2d, "
                                 f"nn.Flatten and the neurons of snnTorch, spikingjelly, norse or "
                                 f"refsnn.checking.peers.official_stbp_neuron)")
        if pending is None:
            raise NotExpressible(f"{label}: a neuron must follow an nn.Linear or nn.Conv2d")
        lpath, lin = pending
        pending = None
        n = len(layers) + 1
        W, low_w = _value("weight", lin.weight)
        params[f"W{n}"], mapping[f"W{n}"] = W, f"{lpath}.weight"
        if lin.bias is not None:
            b, low_b = _value("bias", lin.bias)
            params[f"b{n}"], mapping[f"b{n}"] = b, f"{lpath}.bias"
        else:
            params[f"b{n}"], mapping[f"b{n}"], low_b = np.zeros(W.shape[0]), None, False
        if low_w or low_b:
            notes.append(f"module {lpath} ({type(lin).__name__}): float32 weights; refsnn uses their values, the peer's own "
                         f"arithmetic in float32 caps agreement at ~1e-7")
        s, layer = _NEURONS[kind](label, m, notes, f"{path}.")
        if settings is None:
            settings = s
        else:
            for k, v in s.items():
                if k in ("learn_decay", "learn_threshold") or settings.get(k) == v:
                    continue
                raise NotExpressible(f"{label}: {k}={v!r} differs from the first layer's {settings.get(k)!r}; "
                                     f"refsnn takes one neuron type for the whole network")
        for key, (pname, value) in ((k, layer[k]) for k in ("beta", "tau_w", "thr") if k in layer):
            refkey = {"beta": "beta", "tau_w": "tau_w", "thr": "thr"}[key] + str(n)
            params[refkey], mapping[refkey] = value, pname
        kinds.append(kind)
        layers.append(layer)
    if pending is not None:
        raise NotExpressible(f"module {pending[0]} ({type(pending[1]).__name__}): the last layer has no neuron after "
                             f"it (refsnn's STBP output layer spikes)")
    if not layers:
        raise NotExpressible("model: no nn.Linear + neuron layer found")
    learn_decay = "none"
    for k, layer in enumerate(layers):
        if ("beta" in layer or "tau_w" in layer) != ("beta" in layers[0] or "tau_w" in layers[0]) or \
                ("thr" in layer) != ("thr" in layers[0]):
            raise NotExpressible(f"layer {k + 1}: learns its decay/threshold where the first layer does not (or "
                                 f"the other way round); refsnn learns them in every layer or in none")
    if "beta" in layers[0]:
        learn_decay = "clamp"
    elif "tau_w" in layers[0]:
        learn_decay = "sigmoid"
    per_layer = {}
    for key in _PER_LAYER:
        vals = [layer.get(key, 0.0 if key == "syn_decay" else None) for layer in layers]
        if key == "decay" and learn_decay != "none":
            vals = [0.5] * len(layers)                       # unused: the params hold the decay
        if key == "v_th" and "thr" in layers[0]:
            vals = [1.0] * len(layers)
        per_layer[key] = vals[0] if all(v == vals[0] for v in vals) else tuple(vals)
    settings = {k: v for k, v in settings.items() if k not in ("learn_decay", "learn_threshold")}
    if spatial and not tokens[-1].isdigit():
        raise NotExpressible("model: refsnn's STBP output layer is dense (an nn.Linear and its neuron)")
    cfg = stbp.Config(**settings, **per_layer, learn_decay=learn_decay, learn_threshold="thr" in layers[0],
                      loss="mse_mean", init="torch", T=1, arch="-".join(tokens) if spatial else None)
    stbp.neuron_constants(params, cfg)                       # every key and shape as refsnn expects
    return Adapted(stbp, params, cfg, mapping, notes, kinds)


# ---------------------------------------------------------------------------
# Running a peer model, and the whole check
# ---------------------------------------------------------------------------

def run(model, x, kinds=None, *, membrane=None):
    """Output spikes ``(T, batch, n_out)`` of a peer model on ``x`` (a torch tensor, (T, batch, n_in)).

    Resets the model's state first (snnTorch ``utils.reset``, spikingjelly ``functional.reset_net``,
    a fresh norse state), then drives it as its library expects: one call per step, or one call on
    the whole sequence for spikingjelly's ``step_mode='m'`` and norse's ``LIF``.  ``membrane``, a list,
    receives the last snnTorch neuron's membrane after every step (its ``mem``, before the next reset).
    """
    torch = _torch()
    mods = [m for _, m in _modules(model)]
    kinds = kinds or {_kind(m) or (_stack_kind(m) or (None,))[0] for m in mods} - {None}
    if membrane is None:
        return _drive(model, x, kinds, mods, torch)
    last = [m for m in mods if _kind(m) == "snntorch" or (_stack_kind(m) or ("",))[0] == "snntorch"][-1]
    handle = last.register_forward_hook(lambda mod, inp, out: membrane.append(mod.mem))
    try:
        return _drive(model, x, kinds, mods, torch)
    finally:
        handle.remove()


def _reset_state(model, kinds, mods):
    """Every neuron's state back to its start (snnTorch, spikingjelly, the official neuron's port)."""
    if "snntorch" in kinds:
        import snntorch.utils

        snntorch.utils.reset(model)
        for m in mods:                     # snnTorch 1.0's reset leaves RSynaptic's spk of the run before: the
            if _stack_kind(m) is not None and hasattr(m, "reset_mem"):      # first step's recurrent input would be stale
                m.reset_mem()
    if "spikingjelly" in kinds:
        from spikingjelly.activation_based import functional

        functional.reset_net(model)
    for m in mods:
        if getattr(m, "refsnn_official_stbp", False):
            m.reset()


def _drive(model, x, kinds, mods, torch):
    """:func:`run` after its arguments are settled: reset the state, then one call per step or per sequence."""
    _reset_state(model, kinds, mods)
    if "spikingjelly" in kinds and all(getattr(m, "step_mode", "m") == "m" for m in mods if _kind(m)):
        return model(x)
    if "norse" in kinds and any(type(m).__name__ == "LIF" for m in mods):
        return model(x)[0]
    outs, state = [], None
    stateful = "norse" in kinds and type(model).__name__ == "SequentialState"
    states = [None] * len(mods)
    for t in range(x.shape[0]):
        if stateful:                                   # norse's container threads the states itself
            o, state = model(x[t], state)
        elif "norse" in kinds:                         # a plain nn.Sequential: thread them here
            o = x[t]
            for k, m in enumerate(mods):
                if _kind(m) == "norse" or (_stack_kind(m) or ("",))[0] == "norse":
                    o, states[k] = m(o, states[k])
                else:
                    o = m(o)
        else:
            o = model(x[t])
        outs.append(o[0] if isinstance(o, tuple) else o)
    return torch.stack(outs)


def _sample_shape(x):
    """``(C, H, W)`` of one sample of a (T, batch, C, H, W) input, else None."""
    shape = tuple(np.shape(x))
    return shape[2:] if len(shape) == 5 else None


#: snnTorch's loss objects (``snntorch.functional``) and the refsnn readout each one is.
_SNNTORCH_LOSSES = {"ce_rate_loss": "ce_per_step", "ce_count_loss": "ce_count", "mse_count_loss": "mse_count",
                    "ce_max_membrane_loss": "ce_membrane_max", "mse_membrane_loss": "mse_membrane"}


def _loss_spec(loss, T, y, n_out):
    """``(refsnn Loss, refsnn's y, the peer's loss object or None, a label)`` for ``peers.verify``'s ``loss``."""
    from refsnn import stbp_layers as sl

    name = type(loss).__name__
    if type(loss).__module__.startswith("snntorch") and name in _SNNTORCH_LOSSES:
        kind = _SNNTORCH_LOSSES[name]
        label = f"snnTorch {name} (refsnn Loss({kind!r}))"
        if kind == "mse_count":
            return sl.Loss(kind, correct=float(loss.correct_rate), incorrect=float(loss.incorrect_rate)), y, loss, label
        if kind == "mse_membrane":                 # its target: clamp(onehot * on, min=off) when on > off
            on, off = float(loss.on_target), float(loss.off_target)
            onehot = np.eye(n_out)[np.asarray(y)]
            target = np.maximum(onehot * on, off) if on > off else onehot * on + (1 - onehot) * off
            return sl.Loss(kind), np.broadcast_to(target, (T,) + target.shape), loss, label
        return sl.Loss(kind), y, loss, label
    if isinstance(loss, sl.Loss):
        spec = loss
    elif isinstance(loss, str):
        kind = {"mse_mean": "mse_rate", "mse_paper": "mse_rate_paper"}.get(loss, loss)
        if kind != loss:
            return sl.Loss(kind), y, None, f"{loss!r} = refsnn Loss({kind!r}), written in PyTorch for the peer"
        if kind not in sl.LOSSES or kind == "custom":
            raise ValueError(f"loss: {loss!r} is not a refsnn readout ({', '.join(k for k in sl.LOSSES if k != 'custom')}, "
                             f"'mse_mean', 'mse_paper') nor an snnTorch loss object ({', '.join(_SNNTORCH_LOSSES)})")
        spec = sl.Loss(kind)
    else:
        raise TypeError(f"loss: expected a refsnn readout name, a refsnn.stbp_layers.Loss or an snnTorch loss object "
                        f"({', '.join(_SNNTORCH_LOSSES)}), got {type(loss).__name__}")
    if spec.kind == "custom":
        raise ValueError("loss: a 'custom' loss has no PyTorch side to compare with")
    return spec, y, None, f"refsnn Loss({spec.kind!r}), written in PyTorch for the peer"


def verify(model, x, y, *, loss="mse_mean", tol: float = 1e-12) -> gradcheck.Report:
    """The peer's autograd gradient of a loss of its output against refsnn's, tensor by tensor, and the loss.

    ``x`` (T, batch, n_in), or (T, batch, C, H, W) for a convolutional model, and ``y`` (batch,) may be
    NumPy arrays or tensors; the peer sees ``x`` in the dtype of its first layer's weight.  ``loss`` is the
    loss the model trains with: an snnTorch loss object (``snntorch.functional.ce_rate_loss()``,
    ``ce_count_loss()``, ``mse_count_loss(...)``, ``ce_max_membrane_loss()``, ``mse_membrane_loss(...)``: the
    peer's loss is the object itself), a refsnn readout name (``"mse_mean"``, the default: PyTorch's
    ``MSELoss`` of the output rate; ``"mse_paper"``; any kind of :class:`refsnn.stbp_layers.Loss`) or such a
    Loss.  The report's title names the loss compared.  Returns a :class:`refsnn.checking.gradcheck.Report` (mine = the
    peer, reference = refsnn) with a row for every trainable tensor and one for the loss; its notes include
    the adapter's.
    """
    torch = _torch()
    from refsnn.checking.torch_golds import _stack_loss

    dtype = next(model.parameters()).dtype
    xt = torch.as_tensor(np.asarray(x), dtype=dtype)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    static = False
    if _is_class_model(model):            # a class with its own loop over the steps: run it as it is
        chain, static = _recorded_modules(model, xt)                # recorded once, read as a chain
        adapted = _adapt(model, chain, tuple(xt.shape[1:]) if (static and xt.dim() == 4) else _sample_shape(x))
        _reset_state(model, set(adapted.kinds), [m for _, m in _atomic_modules(model)])
        model.zero_grad()
        last_out = []                     # the readout's output at every call: its spikes (or an LI's membrane)
        handle = chain[-1][1].register_forward_hook(
            lambda mod, args, o: last_out.append(o[0] if isinstance(o, tuple) else o))
        try:
            out = model(xt)
        finally:
            handle.remove()
        first = torch.stack(last_out) if len(last_out) > 1 else last_out[0]
        second = out[1] if isinstance(out, tuple) and len(out) > 1 and tuple(out[1].shape) == tuple(first.shape) \
            else None
        out = (first, second)
        steps = first.shape[0]
        x = np.broadcast_to(np.asarray(x, dtype=np.float64), (steps,) + tuple(np.shape(x))) if static else x
    else:
        adapted = from_torch(model, input_shape=_sample_shape(x))
        out = None
        steps = xt.shape[0]
    from refsnn import stbp_layers

    net = adapted.stack()
    readout = [p for p in net.pieces if isinstance(p, stbp_layers.LIF)][-1]     # the last population
    spec, y_ref, peer_loss, label = _loss_spec(loss, steps, np.asarray(y), _out_size(adapted))
    if spec.reads_membrane and readout.spiking and "snntorch" not in adapted.kinds[-1:]:
        raise NotExpressible(f"loss: {label} reads the membrane of a spiking output layer, which refsnn reads from "
                             f"snnTorch's neurons only (spikingjelly and norse store it after the reset); read the "
                             f"membrane through a leaky-integrator readout (norse LICell)")
    membrane_needed = spec.reads_membrane and readout.spiking
    if out is not None:                   # the class model's readout, stacked, and the membrane it returns
        first, second = out
        if membrane_needed and second is None:
            raise NotExpressible(f"loss: {label} reads the output membrane, but the model returns no second output "
                                 f"(return the stacked spikes and membranes, as snnTorch's tutorials do)")
        o, u = (first, second) if readout.spiking else (None, first)
    else:
        model.zero_grad()
        mem = [] if membrane_needed else None
        out = run(model, xt, set(adapted.kinds), membrane=mem)
        if readout.spiking:
            o, u = out, (torch.stack(mem) if membrane_needed else None)
        else:
            o, u = None, out
    if peer_loss is not None:
        L = peer_loss(u if spec.reads_membrane else o, yt)
        L = L.sum() if L.dim() else L
    else:
        L = _stack_loss(spec, o, u, y_ref)
    L.backward()
    mine = adapted.peer_grads(model)
    data = {key: m.mask.detach().cpu().double().numpy() for key, m in adapted.dropouts.items()}
    plain = {"mse_rate": "mse_mean", "mse_rate_paper": "mse_paper"}.get(spec.kind)    # refsnn.stbp's own losses
    ref_loss, ref = adapted.loss_and_grad(np.asarray(x, dtype=np.float64), y_ref,
                                          loss=plain if (plain and adapted.network is None) else spec, data=data)
    # A tensor under a tenth of the largest is judged against a tenth of the largest (floor_rel): the round-off of
    # a gradient is relative to the largest terms it sums, and the bias before a BatchNorm, whose gradient vanishes,
    # carries ~1e-15 of the largest tensor's norm, whose "relative" error means nothing.
    report = gradcheck.compare(mine, {k: ref[k] for k in mine}, tol=tol, floor_rel=0.1,
                               title=f"{type(model).__name__} ({'/'.join(sorted(set(adapted.kinds)))}) vs refsnn, "
                                     f"loss: {label}: {float(L.item()):.12g} vs {ref_loss:.12g}")
    # The losses are compared too (a row named "loss"): equal gradients of a NaN or of another loss are no
    # agreement.
    report.tensors.append(gradcheck.compare({"loss": np.asarray(float(L.item()))}, {"loss": np.asarray(ref_loss)},
                                            tol=tol, float32_hint=False).tensors[0])
    notes = list(adapted.notes)
    if peer_loss is not None and type(peer_loss).__name__ in ("ce_rate_loss", "mse_membrane_loss"):
        notes.append(f"snnTorch's {type(peer_loss).__name__} sums over steps in a float32 accumulator "
                     f"(torch.zeros(1)): in a float64 model its loss agrees to ~1e-8 only, and its gradient too "
                     f"unless T is a power of two")
    report.notes = notes + report.notes
    report.extra = {"peer_loss": float(L.item()), "refsnn_loss": ref_loss, "adapted": adapted, "loss": label}
    return report


def _out_size(adapted) -> int:
    """The number of outputs: the rows of the last weight (divided by a final vote's group size)."""
    from refsnn import stbp_layers

    last = max(int(k[1:]) for k in adapted.params if k.startswith("W") and k[1:].isdigit())
    n = int(np.shape(adapted.params[f"W{last}"])[0])
    tail = adapted.stack().pieces[-1]
    return n // tail.k if isinstance(tail, stbp_layers.Vote) else n


def export_case(model, x, y, path, *, loss: str = "mse_mean", adapted=None):
    """Run a peer model with its own autograd and write a ``refsnn verify`` case file of it.

    The file holds ``x``, ``y``, the parameters and gradients under refsnn's keys (``adapted``'s mapping,
    default :func:`from_torch`), the loss and every layer's spikes: what a researcher hands to
    ``refsnn verify stbp CASE.npz --preset ...`` (no ``config``: that is refsnn's side of the check).
    """
    torch = _torch()
    from refsnn.checking import verification

    adapted = adapted or from_torch(model, input_shape=_sample_shape(x))
    dtype = dict(model.named_parameters())[adapted.mapping["W1"]].dtype
    xt = torch.as_tensor(np.asarray(x), dtype=dtype)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    model.zero_grad()
    out = run(model, xt, set(adapted.kinds))
    obar = out.mean(dim=0)
    target = torch.nn.functional.one_hot(yt, obar.shape[1]).to(obar.dtype)
    L = torch.nn.functional.mse_loss(obar, target) if loss == "mse_mean" else 0.5 * ((obar - target) ** 2).sum() / len(yt)
    L.backward()
    mods = _modules(model)
    spikes, n = {}, 0
    with torch.no_grad():
        for k, (_, m) in enumerate(mods):
            if _kind(m) is not None:
                n += 1
                spikes[n] = run(torch.nn.Sequential(*[mm for _, mm in mods[:k + 1]]), xt,
                                set(adapted.kinds)).double().numpy()
    named = dict(model.named_parameters())
    params = {key: (named[name].detach().double().numpy() if name else adapted.params[key])
              for key, name in adapted.mapping.items()}
    return verification.write_case(path, x, y, params, adapted.peer_grads(model), loss=L.item(), spikes=spikes)


def official_stbp_neuron(thresh: float = 0.5, decay: float = 0.2, lens: float = 0.5):
    """A PyTorch port of the official STBP code's neuron (``mem_update``) as a module for ``nn.Sequential``.

    Per step: ``mem = mem * decay * (1 - spike) + x``; ``spike = (mem - thresh > 0)`` with the window
    surrogate ``|mem - thresh| < lens`` (height 1).  Call it once per step (``run`` does, after
    ``reset()``).  ``from_torch`` reads it as ``stbp.PRESETS["code"]``'s neuron with
    ``surrogate="window", width=lens`` (at the default ``lens = 0.5`` exactly the preset's rect of
    width 1).

    Parameters
    ----------
    thresh : float
        The firing threshold (> 0).
    decay : float
        The leak factor in (0, 1].
    lens : float
        The surrogate window's half-width (> 0).

    Returns
    -------
    torch.nn.Module
        The neuron, with attributes ``thresh``, ``decay``, ``lens``.
    """
    thresh = check_positive("thresh", thresh)
    decay = check_in_range("decay", decay, 0.0, 1.0, lo_open=True)
    lens = check_positive("lens", lens)
    torch = _torch()
    act = spike_function(lambda u: (u.abs() < lens).to(u.dtype))         # the official code's ActFun

    class OfficialSTBPNeuron(torch.nn.Module):
        refsnn_official_stbp = True

        def __init__(self):
            super().__init__()
            self.thresh, self.decay, self.lens = float(thresh), float(decay), float(lens)
            self.reset()

        def reset(self):
            self.mem = self.spike = None

        def forward(self, x):
            if self.mem is None:
                self.mem, self.spike = torch.zeros_like(x), torch.zeros_like(x)
            self.mem = self.mem * self.decay * (1.0 - self.spike) + x
            self.spike = act(self.mem - self.thresh)
            return self.spike

    return OfficialSTBPNeuron()


# ---------------------------------------------------------------------------
# Models refsnn.stbp cannot express: read as a stack of layers (refsnn.stbp_layers)
# ---------------------------------------------------------------------------
# A model with BatchNorm, dropout, recurrence, pooled currents, a different neuron in each layer or a
# leaky-integrator readout is read into refsnn.stbp_layers' pieces.  Every module maps to pieces and
# parameters under refsnn's keys; whatever cannot be mapped is collected, and all of it is refused at once.

def _stack_lif(settings, layer, n, params, mapping):
    """An ``stbp_layers.LIF`` piece from a neuron's settings (the keys of ``stbp.Config``) and its layer values."""
    from refsnn import stbp_layers as sl

    reset = sl.ToValue(settings.get("v_reset", 0.0)) if settings["reset"] == "v_reset" else settings["reset"]
    neuron = sl.Neuron(reset=reset, timing=settings["reset_timing"], detach=settings["detach_reset"],
                       strict=settings["strict"], decay_input=settings["decay_input"], v_rest=settings["v_rest"],
                       surrogate=settings["surrogate"], width=settings["width"])
    decay, thr = layer.get("decay"), layer.get("v_th")
    for key, how, name in (("beta", "clamp", "decay"), ("tau_w", "sigmoid", "decay"), ("thr", "identity", "thr")):
        if key in layer:
            pname, value = layer[key]
            params[f"{key}{n}"], mapping[f"{key}{n}"] = value, pname
            if name == "decay":
                decay = (f"{key}{n}", how)
            else:
                thr = (f"{key}{n}", how)
    alpha = layer.get("syn_decay") if settings.get("synapse") == "current" else None
    return sl.LIF(neuron, decay=decay, threshold=thr, alpha=alpha)


def _recurrent_piece(label, m, n, params, mapping, path, problems):
    """The recurrence of snnTorch's RLeaky/RSynaptic: ``(key, "all" | "one"[, bias])`` with its parameters."""
    rec = getattr(m, "recurrent", None)
    torch = _torch()
    if getattr(m, "all_to_all", False):
        if not isinstance(rec, torch.nn.Linear):
            problems.append(f"{label}: a convolutional recurrence (conv2d_channels, kernel_size) is not supported "
                            f"(all-to-all over a dense layer's neurons, or one-to-one, are)")
            return None
        params[f"V{n}"], mapping[f"V{n}"] = _value("weight", rec.weight)[0], f"{path}.recurrent.weight"
        if rec.bias is None:
            return (f"V{n}", "all")
        params[f"c{n}"], mapping[f"c{n}"] = _value("bias", rec.bias)[0], f"{path}.recurrent.bias"
        return (f"V{n}", "all", f"c{n}")
    V = rec.V
    named = {id(p): name for name, p in m.named_parameters()}
    params[f"V{n}"] = _value("V", V)[0]
    mapping[f"V{n}"] = f"{path}.{named[id(V)]}" if id(V) in named else None
    return (f"V{n}", "one")


def _stack_norse(label, m, n, params, mapping, path, problems, notes):
    """norse's recurrent cell and leaky integrators as pieces: ``(pieces, output is spikes)``."""
    from refsnn import stbp_layers as sl

    name = type(m).__name__
    p, dt = m.p, float(m.dt)
    a = 1.0 - float(dt * p.tau_mem_inv)
    if name in ("LICell", "LIBoxCell"):
        alpha = 1.0 - float(dt * p.tau_syn_inv) if name == "LICell" else None
        return [sl.LI(decay=a, alpha=alpha, v_rest=float(p.v_leak), decay_input=True)], False
    # LIFRecurrentCell: its own input weights (no bias), recurrent weights into the current, a detached reset
    s, layer = _norse_neuron(label, type("Cell", (), {"p": p, "dt": m.dt})(), notes, f"{path}.")
    s.update(detach_reset=True, synapse="current")
    layer["syn_decay"] = 1.0 - float(dt * p.tau_syn_inv)
    params[f"W{n}"], mapping[f"W{n}"] = _value("input_weights", m.input_weights)[0], f"{path}.input_weights"
    params[f"V{n}"], mapping[f"V{n}"] = _value("recurrent_weights", m.recurrent_weights)[0], f"{path}.recurrent_weights"
    lif = _stack_lif(s, layer, n, params, mapping)
    kind = "all" if m.autapses else "all_no_autapses"
    return [sl.Affine(f"W{n}"), replace(lif, recurrent=(f"V{n}", kind))], True


_STACK_ONLY = {("snntorch", "RLeaky"), ("snntorch", "RSynaptic"), ("norse", "LIFRecurrentCell"),
               ("norse", "LICell"), ("norse", "LIBoxCell")}


def _stack_kind(m):
    """``("snntorch" | "norse", class name)`` of a module only the stack reads, else None."""
    lib = type(m).__module__.split(".")[0]
    key = (lib, type(m).__name__)
    return key if key in _STACK_ONLY else None


def _batchnorm_piece(label, m, k, params, mapping, path, problems, torch):
    from refsnn import stbp_layers as sl

    if not (m.affine and m.track_running_stats) or m.momentum is None:
        problems.append(f"{label}: BatchNorm without affine parameters or running statistics, or with a cumulative "
                        f"average (momentum=None), is not supported")
        return None
    multi = type(m).__module__.startswith("spikingjelly") and getattr(m, "step_mode", "s") == "m"
    keys = [f"bn_gamma{k}", f"bn_beta{k}", f"bn_mean{k}", f"bn_var{k}"]
    for key, attr in zip(keys, ("weight", "bias", "running_mean", "running_var")):
        params[key] = _value(attr, getattr(m, attr))[0]
        mapping[key] = f"{path}.{attr}" if attr in ("weight", "bias") else None
    return sl.BatchNorm(*keys, over="time_batch" if multi else "step", mode="batch" if m.training else "running",
                        eps=float(m.eps), momentum=float(m.momentum))


def _from_torch_stack(model, mods, shape, notes):
    """The stack route of :func:`from_torch`: ``(network, params, mapping, kinds, dropouts)`` or NotExpressible
    listing every module it cannot read, one per line."""
    from refsnn import stbp_layers as sl

    torch = _torch()
    pieces, params, mapping, kinds, problems, dropouts = [], {}, {}, [], [], {}
    n = 0                          # synaptic layers so far (W{n}, b{n})
    k_bn = 0
    for path, m in mods:
        label = f"module {path or '(root)'} ({type(m).__name__})"
        mod = type(m).__module__
        if isinstance(m, torch.nn.Identity):
            continue
        if isinstance(m, torch.nn.Flatten) or (mod.startswith("spikingjelly") and type(m).__name__ == "Flatten"):
            if (m.start_dim, m.end_dim) != (1, -1):
                problems.append(f"{label}: start_dim={m.start_dim}, end_dim={m.end_dim}; refsnn flattens each sample")
            pieces.append(sl.Flatten())
            shape = None if shape is None else (int(np.prod(shape)),)
            continue
        if isinstance(m, (torch.nn.AvgPool2d, torch.nn.MaxPool2d)):
            try:
                _, pooled = _pool_token(label, m, (1, 2, 2) if shape is None else shape, torch)
                shape = None if shape is None else pooled
            except NotExpressible as exc:
                problems.append(str(exc))
                continue
            pieces.append(sl.Pool("avg" if isinstance(m, torch.nn.AvgPool2d) else "max",
                                  _pair(label, "kernel_size", m.kernel_size)))
            continue
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            n += 1
            W, low_w = _value("weight", m.weight)
            params[f"W{n}"], mapping[f"W{n}"] = W, f"{path}.weight"
            bias = None
            if m.bias is not None:
                params[f"b{n}"], mapping[f"b{n}"] = _value("bias", m.bias)[0], f"{path}.bias"
                bias = f"b{n}"
            if isinstance(m, torch.nn.Conv2d):
                try:
                    if shape is not None:
                        _, shape = _conv_token(label, m, shape)          # checks in_channels and the maps
                    k, s, p = (_pair(label, a, getattr(m, a)) for a in ("kernel_size", "stride", "padding"))
                    if _pair(label, "dilation", m.dilation) != 1 or m.groups != 1 or m.padding_mode != "zeros":
                        raise NotExpressible(f"{label}: dilation={m.dilation}, groups={m.groups}, padding_mode="
                                             f"{m.padding_mode!r}; refsnn's convolution has dilation 1, groups 1 "
                                             f"and zero padding")
                except NotExpressible as exc:
                    problems.append(str(exc))
                    continue
                pieces.append(sl.Conv(f"W{n}", bias, s, p))
            else:
                if shape is not None and int(np.prod(shape)) != m.in_features:
                    problems.append(f"{label}: in_features={m.in_features}, but the layer below gives "
                                    f"{int(np.prod(shape))} values")
                shape = None if shape is None else (m.out_features,)
                pieces.append(sl.Affine(f"W{n}", bias))
            if low_w:
                notes.append(f"{label}: float32 weights; the peer's own float32 arithmetic caps agreement at ~1e-7")
            continue
        if mod.startswith("spikingjelly") and type(m).__name__ == "VotingLayer":
            pieces.append(sl.Vote(int(m.voting_size)))
            continue
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            k_bn += 1
            piece = _batchnorm_piece(label, m, k_bn, params, mapping, path, problems, torch)
            if piece is not None:
                pieces.append(piece)
            continue
        if isinstance(m, torch.nn.Dropout) or (mod.startswith("spikingjelly") and type(m).__name__ == "Dropout"):
            if not m.training or m.p == 0:
                continue                                            # the identity
            if mod.startswith("spikingjelly") and getattr(m, "step_mode", "s") == "m":
                key = f"dropout{len(dropouts) + 1}"
                dropouts[key] = m                                   # its mask is read after the peer's run
                pieces.append(sl.Dropout(key))
                continue
            problems.append(f"{label}: a training-mode dropout that draws a new mask at every call cannot be "
                            f"reproduced (put it in eval mode, or use spikingjelly's multi-step layer.Dropout, "
                            f"whose mask refsnn reads)")
            continue
        kind = _kind(m)
        special = _stack_kind(m)
        try:
            if special is not None and special[0] == "norse":
                if special[1] == "LIFRecurrentCell":
                    n += 1
                new, spiking = _stack_norse(label, m, n, params, mapping, path, problems, notes)
                pieces.extend(new)
                kinds.append("norse")
                continue
            if kind is None and special is None:
                problems.append(f"{label}: not a module refsnn reads (layers: Linear, Conv2d, AvgPool2d, MaxPool2d, "
                                f"Flatten, BatchNorm, Dropout, spikingjelly's VotingLayer; neurons: snnTorch Leaky, Synaptic, RLeaky, "
                                f"RSynaptic; spikingjelly LIFNode, IFNode, ParametricLIFNode; norse LIFCell, "
                                f"LIFBoxCell, LIFRecurrentCell, LICell, LIBoxCell)")
                continue
            if special is not None:                                  # snnTorch RLeaky / RSynaptic
                if special[1] == "RSynaptic" and m.reset_mechanism == "zero":
                    raise NotExpressible(f"{label}: RSynaptic with reset_mechanism='zero' is not supported")
                if not getattr(m, "reset_delay", True):
                    raise NotExpressible(f"{label}: reset_delay=False is not supported for snnTorch's recurrent "
                                         f"neurons (its code does not reset with it)")
                s, layer = _snntorch_neuron(label, _as_leaky(m), notes, f"{path}.")
                if special[1] == "RLeaky" and m.reset_mechanism == "zero":
                    s.update(reset_timing="delayed")                 # base * (1 - R): the charge is zeroed too
                if special[1] == "RSynaptic":
                    layer["syn_decay"] = min(max(_scalar(label, "alpha", m.alpha)[0], 0.0), 1.0)
                    s["synapse"] = "current"
                lif = _stack_lif(s, layer, max(n, 1), params, mapping)
                rec = _recurrent_piece(label, m, max(n, 1), params, mapping, path, problems)
                if rec is None:
                    continue
                pieces.append(replace(lif, recurrent=rec))
                kinds.append("snntorch")
                continue
            s, layer = _NEURONS[kind](label, m, notes, f"{path}.")
            pieces.append(_stack_lif(s, layer, max(n, 1), params, mapping))
            kinds.append(kind)
        except NotExpressible as exc:
            problems.append(str(exc))
    if problems:
        raise NotExpressible("refsnn cannot express this model:\n" + "\n".join(problems))
    if not any(isinstance(p, sl.LIF) for p in pieces):
        raise NotExpressible("model: no neuron found (refsnn's STBP reads out a neuron population)")
    readout_tail = len(pieces)
    while readout_tail and isinstance(pieces[readout_tail - 1], (sl.Vote, sl.Pool, sl.Flatten)):
        readout_tail -= 1
    if readout_tail < len(pieces) and readout_tail and isinstance(pieces[readout_tail - 1], sl.LIF) and \
            any(isinstance(p, sl.Vote) for p in pieces[readout_tail:]):
        return sl.Network(tuple(pieces), sl.Loss("mse_rate")), params, mapping, kinds, dropouts
    if not isinstance(pieces[-1], sl.LIF):
        raise NotExpressible(f"model: the last module ({mods[-1][0]}, {type(mods[-1][1]).__name__}) has no neuron "
                             f"after it; refsnn reads out the last neuron population")
    readout = sl.Loss("mse_rate") if pieces[-1].spiking else sl.Loss("ce_membrane_last")   # check() names its own
    return sl.Network(tuple(pieces), readout), params, mapping, kinds, dropouts


def _as_leaky(m):
    """snnTorch's RLeaky/RSynaptic seen as Leaky for the settings they share (reset, surrogate, beta, threshold)."""
    view = type("Leaky", (), {})()
    for attr in ("inhibition", "state_quant", "graded_spikes_factor", "spike_grad", "reset_mechanism", "reset_delay",
                 "beta", "threshold"):
        setattr(view, attr, getattr(m, attr, None))
    view.named_parameters = lambda: [(k, v) for k, v in m.named_parameters() if k in ("beta", "threshold")]
    return view


def check(*args, **kwargs):
    """The earlier name of :func:`verify` ('check' names the finite-difference check of refsnn's own gradient); it still works and warns."""
    import warnings

    warnings.warn("peers.check is now peers.verify", DeprecationWarning, stacklevel=2)
    return verify(*args, **kwargs)
