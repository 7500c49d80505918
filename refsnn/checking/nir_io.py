r"""NIR graphs read as refsnn STBP stacks, with every convention NIR leaves open given as an argument.

NIR (the Neuromorphic Intermediate Representation, PyPI ``nir``) writes a network as a graph of
continuous-time nodes: ``Affine``, ``Linear``, ``Scale``, ``Conv2d``, ``SumPool2d``, ``AvgPool2d``,
``Flatten``, and the neurons ``LIF``, ``CubaLIF``, ``LI``, ``CubaLI``, ``IF``, ``I`` and ``Threshold``; a
cycle through a weight node is recurrence.  It does not say how to turn the differential equations into
steps, and every framework decides for itself.  :func:`from_nir` makes each of those decisions an
argument (:class:`Conventions`), so that the same graph can be read as each framework reads it, and
the differences between frameworks become named settings rather than mysteries:

==================  =====================================================================================
convention          what it decides
==================  =====================================================================================
``dt``              the step, in the graph's time unit (seconds).  Not in the graph.
``discretization``  ``"euler"``: :math:`\lambda = 1 - dt/\tau`, input weighted :math:`dt/\tau` (forward
                    Euler, what snnTorch, norse and spikingjelly do); ``"zoh"``: :math:`\lambda = e^{-dt/\tau}`,
                    input weighted :math:`1 - e^{-dt/\tau}` (exact between spikes for an input held over the
                    step; LIF, LI, IF and I only); ``"exp_decay"``: :math:`\lambda = e^{-dt/\tau}` with Euler's input
                    weight :math:`dt/\tau` (the NIR paper's rockpool and sinabs traces)
``reset``           ``"to_value"`` (to the graph's ``v_reset``, NIR's equations), ``"zero"``,
                    ``"subtract"`` (the threshold; the NIR paper's own debugging reference did this)
``reset_timing``    ``"immediate"`` (in the step that fires) or ``"delayed"`` (at the next step)
``firing``          ``">"`` (NIR's equations) or ``">="``
``gain_as``         ``"input"``: the input is multiplied by ``r``, ``w_in`` and the :math:`dt/\tau` factors
                    (NIR's equations); ``"threshold"``: the threshold (and ``v_reset``, ``v_leak``) is
                    divided by them instead, so the membrane is NIR's divided by that gain and the spikes
                    are the same (snnTorch's import: its voltages are 25x the NIR paper's)
``surrogate``,      the surrogate derivative used for gradients (:mod:`refsnn.blocks.surrogates`); NIR
``width``           says nothing about training
``detach_reset``    whether the gradient flows through the reset (``False``: it does, as in the three
                    frameworks' NIR imports; ``True``: snnTorch's and spikingjelly's ``detach_reset`` option)
==================  =====================================================================================

None of them has a default: :data:`CONVENTIONS` holds each framework's choices (``from_nir(g,
**CONVENTIONS["norse"])``), and what each framework's import ignores or hard-codes is in its notes.

The graph's parameters are float32 in every NIR file (HDF5): they are read as stored (each float32
value is exactly a float64) and everything after is float64.  The result is a
:class:`refsnn.checking.peers.Adapted` with ``network`` set: ``loss_and_grad``, ``stack().simulate``, and the
gradient checks of :mod:`refsnn.checking.gradcheck` work on it as on a peer model read by
:func:`refsnn.checking.peers.from_torch`.

Not expressible, refused with the node and the reason: ``Delay``, ``Conv1d``, dilated or grouped
convolutions, overlapping or padded pooling, branches and merges other than a recurrent cycle, a
current (not a population) as the graph's output, per-neuron ``v_reset`` or ``v_leak`` values that
differ, and the ``"zoh"`` and ``"exp_decay"`` discretisations of the two-state ``CubaLIF``/``CubaLI``.

:func:`to_nir` writes a refsnn stack back as a graph (Euler, ``gain_as="input"``), and
:func:`explain_trace` finds which conventions reproduce a trace recorded on some platform.
``docs/nir.md`` has the derivations and the NIR paper's single-neuron comparison.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn import stbp, stbp_layers
from refsnn.blocks import surrogates
from refsnn.blocks._checks import check_choice, check_positive

__all__ = ["Conventions", "CONVENTIONS", "from_nir", "to_nir", "read_graph", "explain_trace", "event_exact_lif",
           "Candidate", "NotExpressible", "PAPER_DATA", "paper_traces", "neuron_trace"]

#: The NIR paper's graphs and single-neuron traces, shipped with refsnn (its README says what each file is).
PAPER_DATA = Path(__file__).resolve().parent / "nir_paper"


def paper_traces() -> dict:
    """The NIR paper's single-neuron recordings: platform -> (1000, 3) array of (input current, membrane
    voltage, spike) per step, as the paper's csv files hold them (``lif_norse.nir`` driven at dt 1e-4)."""
    with np.load(PAPER_DATA / "lif_traces.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class NotExpressible(ValueError):
    """A node or structure of the graph that refsnn's STBP stack cannot express (the message names it)."""


@dataclass(frozen=True)
class Conventions:
    """The choices NIR leaves open (module docstring); every field is required."""

    dt: float
    discretization: str
    reset: str
    reset_timing: str
    firing: str
    gain_as: str
    surrogate: str
    width: float
    detach_reset: bool

    def __post_init__(self):
        check_positive("dt", self.dt)
        check_choice("discretization", self.discretization, ("euler", "zoh", "exp_decay"))
        check_choice("reset", self.reset, ("to_value", "zero", "subtract"))
        check_choice("reset_timing", self.reset_timing, ("immediate", "delayed"))
        check_choice("firing", self.firing, (">", ">="))
        check_choice("gain_as", self.gain_as, ("input", "threshold"))
        check_choice("surrogate", self.surrogate, surrogates.NAMES)
        check_positive("width", self.width)
        if not isinstance(self.detach_reset, (bool, np.bool_)):
            raise TypeError(f"detach_reset: expected True or False, got {self.detach_reset!r}")


#: What each framework's NIR import does, as :func:`from_nir`'s arguments (read from their import code at
#: snnTorch 1.0.0, norse 1.1.0; ``docs/nir.md`` has the details and what each ignores).
CONVENTIONS = {
    # snnTorch import_from_nir: Leaky(beta = 1 - dt/tau) with dt hard-coded to 1e-4 whatever the graph's
    # time scale; the threshold divided by r dt / tau instead of scaling the input; reset_mechanism "zero"
    # (the graph's v_reset ignored), reset_delay=False; its default surrogate atan(alpha=2) = atan width 1/pi.
    "snntorch": dict(dt=1e-4, discretization="euler", reset="zero", reset_timing="immediate", firing=">",
                     gain_as="threshold", surrogate="atan", width=1.0 / math.pi, detach_reset=False),
    # norse from_nir(graph, dt=...): LIFBoxCell, Euler with dt/tau on the input, reset to v_reset = 0 (the
    # graph's v_reset is not passed on), fires on v - v_th > 0; its default surrogate "super" (alpha 100),
    # which is fast_sigmoid of width 1 in refsnn's terms.  dt defaults to 1e-3 in norse: pass the graph's.
    "norse": dict(dt=1e-3, discretization="euler", reset="zero", reset_timing="immediate", firing=">",
                  gain_as="input", surrogate="fast_sigmoid", width=1.0, detach_reset=False),
    # spikingjelly import_from_nir(graph, dt=...): NIR's forward Euler exactly (r = 1 or r = tau/dt, v_leak must
    # equal v_reset), a hard reset to v_reset in the step that fires, fires on v - v_th >= 0; its LIF gets the
    # Sigmoid(alpha=4) surrogate = refsnn sigmoid width 1/4 (its CubaLIF gets Rect(alpha=1) = rect width 1).
    "spikingjelly": dict(dt=1e-4, discretization="euler", reset="to_value", reset_timing="immediate", firing=">=",
                         gain_as="input", surrogate="sigmoid", width=0.25, detach_reset=False),
    # NIR's own equations read step by step: Euler, reset to the graph's v_reset in the step that fires.
    "nir": dict(dt=1e-4, discretization="euler", reset="to_value", reset_timing="immediate", firing=">",
                gain_as="input", surrogate="atan", width=1.0 / math.pi, detach_reset=False),
}

_NEURONS = ("LIF", "CubaLIF", "LI", "CubaLI", "IF", "I", "Threshold")
_WEIGHTS = ("Affine", "Linear")


# ---------------------------------------------------------------------------
# Reading the graph: nodes as plain records, nested graphs flattened, recurrence found, a chain ordered
# ---------------------------------------------------------------------------

def _nir():
    try:
        import nir
    except ImportError:  # pragma: no cover - nir is optional
        raise ImportError("NIR graphs need the 'nir' package: pip install 'refsnn[nir]'") from None
    return nir


def read_graph(graph_or_path):
    """A ``nir.NIRGraph`` from a path (read as stored) or the graph itself; returns ``(graph, notes)``.

    A file whose declared input/output types do not agree (older exports) is read without NIR's type
    check, and the notes say so.
    """
    nir = _nir()
    notes = []
    if isinstance(graph_or_path, (str, Path)):
        path = Path(graph_or_path)
        if not path.is_file():
            raise FileNotFoundError(f"graph: no file {path}")
        try:
            graph = nir.read(path)
        except ValueError as exc:
            if "type" not in str(exc).lower():
                raise ValueError(f"graph: {path} is not a readable NIR graph ({exc})") from None
            graph = nir.read(path, type_check=False)
            notes.append(f"{path.name}: the declared node types do not agree ({exc}); read without NIR's type check")
        except OSError as exc:
            raise ValueError(f"graph: {path} is not a NIR (HDF5) file ({exc})") from None
        return graph, notes
    if not isinstance(graph_or_path, nir.NIRGraph):
        raise TypeError(f"graph: expected a nir.NIRGraph or a path, got {type(graph_or_path).__name__}")
    return graph_or_path, notes


def _flatten(graph, prefix=""):
    """Nodes and edges with nested graphs inlined: a subgraph's Input/Output become pass-through nodes."""
    nir = _nir()
    nodes, edges = {}, []
    for name, node in graph.nodes.items():
        full = f"{prefix}{name}"
        if isinstance(node, nir.NIRGraph):
            sub_nodes, sub_edges = _flatten(node, f"{full}.")
            nodes.update(sub_nodes)
            edges += sub_edges
            ins = [k for k, v in node.nodes.items() if isinstance(v, nir.Input)]
            outs = [k for k, v in node.nodes.items() if isinstance(v, nir.Output)]
            if len(ins) != 1 or len(outs) != 1:
                raise NotExpressible(f"node {full!r}: a nested graph needs one Input and one Output, has "
                                     f"{len(ins)} and {len(outs)}")
            nodes[full] = ("pass", f"{full}.{ins[0]}", f"{full}.{outs[0]}")
        else:
            nodes[full] = node
    for a, b in graph.edges:
        a, b = f"{prefix}{a}", f"{prefix}{b}"
        edges.append((a, b))
    # route edges into and out of nested graphs through their Input and Output
    routed = []
    for a, b in edges:
        if isinstance(nodes.get(a), tuple):
            a = nodes[a][2]
        if isinstance(nodes.get(b), tuple):
            b = nodes[b][1]
        routed.append((a, b))
    nodes = {k: v for k, v in nodes.items() if not isinstance(v, tuple)}
    if prefix:
        return nodes, routed
    # the inner Input/Output nodes pass their input on: contract them
    top_in = [k for k, v in graph.nodes.items() if isinstance(v, nir.Input)]
    top_out = [k for k, v in graph.nodes.items() if isinstance(v, nir.Output)]
    for k in [k for k, v in nodes.items() if isinstance(v, (nir.Input, nir.Output)) and k not in top_in + top_out]:
        preds = [a for a, b in routed if b == k]
        succs = [b for a, b in routed if a == k]
        routed = [(a, b) for a, b in routed if k not in (a, b)] + [(p, s) for p in preds for s in succs]
        del nodes[k]
    return nodes, routed


def _chain(nodes, edges):
    """The nodes from Input to Output in order, and the recurrent weight of each neuron that has one."""
    nir = _nir()
    kind = {k: type(v).__name__ for k, v in nodes.items()}
    recurrent = {}
    for w in [k for k in nodes if kind[k] in _WEIGHTS]:
        preds = {a for a, b in edges if b == w}
        succs = {b for a, b in edges if a == w}
        if len(preds) == 1 and preds == succs and kind[next(iter(preds))] in _NEURONS:
            recurrent[next(iter(preds))] = w                      # a cycle neuron -> w -> the same neuron
    edges = [(a, b) for a, b in edges if a not in recurrent.values() and b not in recurrent.values()]
    inputs = [k for k, v in nodes.items() if isinstance(v, nir.Input)]
    if len(inputs) != 1:
        raise NotExpressible(f"graph: refsnn reads graphs with one Input node, this one has {len(inputs)}")
    order, node = [], inputs[0]
    seen = set()
    while True:
        order.append(node)
        seen.add(node)
        succs = [b for a, b in edges if a == node]
        if not succs:
            break
        if len(succs) > 1:
            raise NotExpressible(f"node {node!r}: its output goes to {sorted(succs)}: refsnn's stack is a chain "
                                 f"(branches are not expressible; a recurrent cycle goes through one weight node)")
        node = succs[0]
        preds = [a for a, b in edges if b == node]
        if len(preds) > 1:
            raise NotExpressible(f"node {node!r}: it adds the outputs of {sorted(preds)}: merges other than a "
                                 f"recurrent cycle are not expressible")
        if node in seen:
            raise NotExpressible(f"node {node!r}: a cycle that does not go through one weight node")
    if not isinstance(nodes[order[-1]], nir.Output):
        raise NotExpressible(f"node {order[-1]!r}: the chain from the Input ends here, not at an Output")
    left = set(nodes) - set(order) - set(recurrent.values())
    if left:
        raise NotExpressible(f"nodes {sorted(left)}: not on the path from Input to Output")
    return order, recurrent


# ---------------------------------------------------------------------------
# Nodes to pieces
# ---------------------------------------------------------------------------

def _f64(a):
    """A stored parameter as float64 (float32 values are exact in float64)."""
    return np.asarray(a, dtype=np.float64)


def _uniform(name, what, a):
    a = _f64(a)
    if a.size and not np.all(a == a.flat[0]):
        raise NotExpressible(f"node {name!r}: {what} differs between neurons ({a.min():g} .. {a.max():g}); refsnn's "
                             f"neurons take one {what} per population")
    return float(a.flat[0]) if a.size else 0.0


def _decay(name, tau, conv, what="tau"):
    """(lam, the input weight) of one leaky state over one step."""
    tau = _f64(tau)
    if np.any(tau <= 0) or not np.all(np.isfinite(tau)):
        raise NotExpressible(f"node {name!r}: {what} must be finite and > 0, got {tau}")
    if conv.discretization == "euler":
        h = conv.dt / tau
        if np.any(h > 1):
            raise NotExpressible(f"node {name!r}: dt / {what} = {h.max():g} > 1: forward Euler's decay 1 - dt/{what} "
                                 f"would be negative; use a smaller dt (or, for a one-state neuron, "
                                 f"discretization='zoh')")
        return 1.0 - h, h
    lam = np.exp(-conv.dt / tau)
    return lam, (1.0 - lam) if conv.discretization == "zoh" else conv.dt / tau


def _population(name, node, conv, recurrent_key):
    """A NIR neuron node as a :class:`refsnn.stbp_layers.LIF` (or a leaky integrator)."""
    kind = type(node).__name__
    spiking = kind in ("LIF", "CubaLIF", "IF", "Threshold")
    nrn = lambda reset, v_rest=0.0: stbp_layers.Neuron(                    # noqa: E731
        reset=reset, timing=conv.reset_timing, detach=conv.detach_reset, strict=conv.firing == ">",
        decay_input=False, v_rest=v_rest, surrogate=conv.surrogate, width=conv.width)
    if kind == "Threshold":
        return stbp_layers.LIF(nrn("none"), decay=0.0, threshold=_f64(node.threshold),
                               recurrent=recurrent_key)
    alpha = None
    if kind in ("LIF", "LI"):
        lam, h = _decay(name, node.tau, conv)
        gain = h * _f64(node.r)
        v_leak = _uniform(name, "v_leak", node.v_leak)
    elif kind in ("CubaLIF", "CubaLI"):
        if conv.discretization != "euler":
            raise NotExpressible(f"node {name!r} ({kind}): the exact step of two coupled leaky states is not the "
                                 f"product of two one-state steps; refsnn reads {kind} with discretization='euler'")
        alpha, hs = _decay(name, node.tau_syn, conv, "tau_syn")
        lam, h = _decay(name, node.tau_mem, conv, "tau_mem")
        gain = _f64(node.w_in) * hs * h * _f64(node.r)                   # j carries r dt/tau_mem: v = lam v + j
        v_leak = _uniform(name, "v_leak", node.v_leak)
    else:                                                                 # IF, I: dv/dt = r I, no leak
        lam = np.ones_like(_f64(node.r))
        gain = conv.dt * _f64(node.r)
        v_leak = 0.0
    lam = np.broadcast_to(lam, np.shape(gain)).copy() if np.ndim(gain) else lam
    threshold = _f64(node.v_threshold) if spiking else 1.0
    v_reset = getattr(node, "v_reset", None)
    v_reset = 0.0 if v_reset is None else _uniform(name, "v_reset", v_reset)
    if conv.gain_as == "threshold":
        g = _uniform(name, "the input gain (r, w_in, dt/tau)", gain)
        threshold, v_reset, v_leak, gain = threshold / g, v_reset / g, v_leak / g, None
    if not spiking:
        reset = "none"
    elif conv.reset == "to_value":
        reset = stbp.ToValue(v_reset)
    else:
        reset = conv.reset
    if conv.reset == "to_value" and spiking and v_reset == 0.0:
        reset = "zero"                                                     # the same numbers, the simpler piece
    if alpha is not None:
        alpha = np.asarray(alpha)
    return stbp_layers.LIF(nrn(reset, v_rest=v_leak), decay=lam, threshold=threshold, alpha=alpha,
                           recurrent=recurrent_key, spiking=spiking, gain=gain)


def _square(name, what, v):
    v = np.atleast_1d(np.asarray(v))
    if v.dtype.kind not in "iuf" or not np.all(v == v.flat[0]):
        raise NotExpressible(f"node {name!r}: {what} {v.tolist()} is not one number for both axes")
    return int(v.flat[0])


def _pieces(order, nodes, recurrent, conv):
    nir = _nir()
    pieces, params, mapping = [], {}, {}
    for name in order:
        node = nodes[name]
        kind = type(node).__name__
        if isinstance(node, (nir.Input, nir.Output)):
            continue
        if kind in _WEIGHTS:
            params[f"{name}.weight"] = _f64(node.weight)
            mapping[f"{name}.weight"] = f"{name}.weight"
            b = getattr(node, "bias", None)
            if b is not None:
                params[f"{name}.bias"] = _f64(b)
                mapping[f"{name}.bias"] = f"{name}.bias"
            pieces.append(stbp_layers.Affine(f"{name}.weight", f"{name}.bias" if b is not None else None))
        elif kind == "Scale":
            pieces.append(stbp_layers.Scale(_f64(node.scale)))
        elif kind == "Flatten":
            if node.start_dim not in (0, 1) or node.end_dim != -1:
                raise NotExpressible(f"node {name!r} (Flatten): only flattening all feature dimensions is "
                                     f"expressible (start_dim {node.start_dim}, end_dim {node.end_dim})")
            pieces.append(stbp_layers.Flatten())
        elif kind == "Conv2d":
            if _square(name, "dilation", node.dilation) != 1 or int(node.groups) != 1:
                raise NotExpressible(f"node {name!r} (Conv2d): dilation {node.dilation} and groups {node.groups}: "
                                     f"refsnn's convolution has neither")
            if isinstance(node.padding, str):
                raise NotExpressible(f"node {name!r} (Conv2d): padding {node.padding!r}: give it as numbers")
            params[f"{name}.weight"] = _f64(node.weight)
            params[f"{name}.bias"] = _f64(node.bias) if node.bias is not None else np.zeros(node.weight.shape[0])
            mapping[f"{name}.weight"], mapping[f"{name}.bias"] = f"{name}.weight", f"{name}.bias"
            pieces.append(stbp_layers.Conv(f"{name}.weight", f"{name}.bias", stride=_square(name, "stride", node.stride),
                                           pad=_square(name, "padding", node.padding)))
        elif kind in ("SumPool2d", "AvgPool2d"):
            k = _square(name, "kernel_size", node.kernel_size)
            if _square(name, "stride", node.stride) != k or _square(name, "padding", node.padding) != 0:
                raise NotExpressible(f"node {name!r} ({kind}): overlapping or padded pooling (kernel {k}, stride "
                                     f"{node.stride}, padding {node.padding}) is not expressible")
            pieces.append(stbp_layers.Pool("sum" if kind == "SumPool2d" else "avg", k))
        elif kind in _NEURONS:
            rkey = None
            if name in recurrent:
                w = nodes[recurrent[name]]
                rname = recurrent[name]
                params[f"{rname}.weight"] = _f64(w.weight)
                mapping[f"{rname}.weight"] = f"{rname}.weight"
                rkey = (f"{rname}.weight", "all")
                if getattr(w, "bias", None) is not None:
                    params[f"{rname}.bias"] = _f64(w.bias)
                    mapping[f"{rname}.bias"] = f"{rname}.bias"
                    rkey = (f"{rname}.weight", "all", f"{rname}.bias")
            pieces.append(_population(name, node, conv, rkey))
        elif kind == "Delay":
            raise NotExpressible(f"node {name!r} (Delay): per-neuron transmission delays are not a piece of "
                                 f"refsnn's STBP stack")
        else:
            raise NotExpressible(f"node {name!r} ({kind}): not a node refsnn reads (it reads "
                                 f"{', '.join(_WEIGHTS + _NEURONS)}, Scale, Flatten, Conv2d, SumPool2d, AvgPool2d)")
    return pieces, params, mapping


def from_nir(graph_or_path, *, dt, discretization, reset, reset_timing, firing, gain_as, surrogate, width,
             detach_reset, loss=None):
    """Read a NIR graph (a ``nir.NIRGraph`` or a ``.nir`` file) as a refsnn STBP stack under stated conventions.

    Every keyword is required (see :class:`Conventions`; :data:`CONVENTIONS` holds each framework's:
    ``from_nir(g, **CONVENTIONS["norse"])``).  ``loss`` is the stack's :class:`refsnn.stbp_layers.Loss`
    (default: the mean squared error of the output rate, or of the membrane when the graph ends in a
    leaky integrator).  Returns a :class:`refsnn.checking.peers.Adapted` with ``network`` (the stack),
    ``params`` (float64 copies of the graph's weights, keys ``"<node>.weight"``, ``"<node>.bias"``),
    ``mapping`` (key -> the graph's node and field) and ``notes``.  Raises :class:`NotExpressible` naming the
    node and the reason for what the stack cannot express.
    """
    from refsnn.checking.peers import Adapted

    conv = Conventions(dt=dt, discretization=discretization, reset=reset, reset_timing=reset_timing, firing=firing,
                       gain_as=gain_as, surrogate=surrogate, width=width, detach_reset=detach_reset)
    graph, notes = read_graph(graph_or_path)
    nodes, edges = _flatten(graph)
    order, recurrent = _chain(nodes, edges)
    pieces, params, mapping = _pieces(order, nodes, recurrent, conv)
    pops = [p for p in pieces if isinstance(p, stbp_layers.LIF)]
    if not pops:
        raise NotExpressible("graph: no neuron node; refsnn's stack reads out a population")
    last = max(i for i, p in enumerate(pieces) if isinstance(p, stbp_layers.LIF))
    after = [p for p in pieces[last + 1:] if not isinstance(p, (stbp_layers.Pool, stbp_layers.Flatten))]
    if after:
        raise NotExpressible(f"graph: its output is {type(after[0]).__name__} of the last population's spikes (a "
                             f"current): refsnn's stack reads out a population; end the graph with a neuron (an LI "
                             f"readout for a current)")
    if loss is None:
        loss = stbp_layers.Loss("mse_rate" if pieces[last].spiking else "mse_membrane")
    notes.append(f"read with {conv}; parameters as stored (float32 in NIR files) then float64")
    network = stbp_layers.Network(tuple(pieces), loss)
    return Adapted(algorithm=stbp, params=params, cfg=None, mapping=mapping, notes=notes, kinds=["nir"] * len(pops),
                   network=network)


# ---------------------------------------------------------------------------
# Writing a stack as a graph
# ---------------------------------------------------------------------------

def to_nir(network, params, input_shape, *, dt):
    """A refsnn stack (Affine, Scale, Flatten, Conv, sum/avg Pool, LIF and LI populations with constant
    decays and thresholds, recurrence all-to-all) as a ``nir.NIRGraph``, read back by
    ``from_nir(graph, dt=dt, discretization="euler", gain_as="input", ...)`` as the same network.

    A population with decay ``lam`` and gain ``g`` becomes ``tau = dt / (1 - lam)`` and ``r = g / (1 - lam)``
    (so ``lam = 0`` with no reset is a ``Threshold``; ``lam = 1`` an ``IF``/``I`` with ``r = g / dt``); a synapse
    ``alpha`` becomes a ``CubaLIF`` with ``tau_syn = dt / (1 - alpha)`` and ``w_in = 1``.  Refused with the
    piece and the reason: learned decays or thresholds (parameters rather than constants), a detached or delayed
    reset, a reset by subtraction or refsnn's exp reset, BatchNorm, Dropout, Vote, max pooling, one-to-one
    recurrence.  A ``decay_input`` neuron's input factor ``1 - lam`` is written into ``r``.
    """
    nir = _nir()
    if not isinstance(network, stbp_layers.Network):
        raise TypeError(f"network: expected a refsnn.stbp_layers.Network, got {type(network).__name__}")
    check_positive("dt", dt)
    nodes = {"input": nir.Input(input_type={"input": np.asarray(input_shape)})}
    edges, prev = [], "input"

    def arr(a):
        return np.asarray(a, dtype=np.float32)

    for i, p in enumerate(network.pieces):
        name = f"{i}_{type(p).__name__.lower()}"
        if isinstance(p, stbp_layers.Affine):
            W = np.asarray(params[p.W])
            nodes[name] = nir.Affine(arr(W), arr(params[p.b])) if p.b else nir.Linear(arr(W))
        elif isinstance(p, stbp_layers.Scale):
            nodes[name] = nir.Scale(arr(p.s))
        elif isinstance(p, stbp_layers.Flatten):
            nodes[name] = nir.Flatten(input_type={"input": np.asarray(input_shape)}, start_dim=0, end_dim=-1)
        elif isinstance(p, stbp_layers.Conv):
            W = np.asarray(params[p.W])
            b = np.asarray(params[p.b]) if p.b else np.zeros(W.shape[0])
            nodes[name] = nir.Conv2d(input_shape=None, weight=arr(W), stride=p.stride, padding=p.pad, dilation=1,
                                     groups=1, bias=arr(b))
        elif isinstance(p, stbp_layers.Pool) and p.kind in ("sum", "avg"):
            k = np.array([p.k, p.k])
            cls = nir.SumPool2d if p.kind == "sum" else nir.AvgPool2d
            nodes[name] = cls(kernel_size=k, stride=k, padding=np.array([0, 0]))
        elif isinstance(p, stbp_layers.LIF):
            nodes[name], rec = _population_node(name, p, params, dt)
            if rec is not None:
                nodes[f"{name}_rec"] = rec
                edges += [(name, f"{name}_rec"), (f"{name}_rec", name)]
        else:
            raise NotExpressible(f"pieces[{i}] ({type(p).__name__}): no NIR node expresses it")
        edges.append((prev, name))
        prev = name
    nodes["output"] = nir.Output(output_type={"output": np.asarray([1])})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _population_node(name, p, params, dt):
    nir = _nir()
    for what in ("decay", "threshold", "alpha"):
        if isinstance(getattr(p, what), tuple):
            raise NotExpressible(f"{name}: a learned {what} is a parameter; NIR holds constants")
    nrn = p.neuron
    if nrn.detach:
        raise NotExpressible(f"{name}: a detached reset is a training convention NIR does not hold (read the graph "
                             f"back with detach_reset=True)")
    if not isinstance(nrn.reset, (stbp.ZeroReset, stbp.ToValue, stbp.NoReset)) or nrn.timing != "immediate":
        raise NotExpressible(f"{name}: NIR's neurons reset to a value in the step that fires; this population "
                             f"resets with {nrn.reset.name!r} ({nrn.timing})")
    lam = np.asarray(p.decay, dtype=np.float64)
    gain = np.ones_like(lam) if p.gain is None else np.asarray(p.gain, dtype=np.float64)
    if nrn.decay_input:                                                   # kappa = 1 - lam is a gain too
        gain = gain * (1.0 - lam)
    n = None
    f32 = lambda a: np.asarray(a, dtype=np.float32)                       # noqa: E731
    v_reset = float(getattr(nrn.reset, "v_reset", 0.0))
    rec = None
    if p.recurrent is not None:
        key, kind = p.recurrent[:2]
        if kind != "all":
            raise NotExpressible(f"{name}: recurrence {kind!r}; NIR's cycle is a full weight matrix")
        W = np.asarray(params[key])
        rec = nir.Affine(f32(W), f32(params[p.recurrent[2]])) if len(p.recurrent) > 2 else nir.Linear(f32(W))
        n = W.shape[0]
    shape = np.shape(gain) if np.ndim(gain) else (n or 1,)
    full = lambda a: f32(np.broadcast_to(np.asarray(a, dtype=np.float64), shape))   # noqa: E731
    if np.all(lam == 0.0) and isinstance(nrn.reset, stbp.NoReset) and p.alpha is None and p.spiking:
        return nir.Threshold(full(p.threshold)), rec
    if np.any(lam == 1.0):
        if p.alpha is not None:
            raise NotExpressible(f"{name}: an integrator with a synapse has no NIR node")
        if p.spiking:
            return nir.IF(r=full(gain / dt), v_threshold=full(p.threshold), v_reset=full(v_reset)), rec
        return nir.I(r=full(gain / dt)), rec
    tau = dt / (1.0 - lam)
    r = gain / (1.0 - lam)
    if p.alpha is not None:
        al = np.asarray(p.alpha, dtype=np.float64)
        tau_syn = dt / (1.0 - al)
        # gain = w_in (dt/tau_syn) (dt/tau_mem) r with w_in = 1
        r = gain / ((1.0 - al) * (1.0 - lam))
        if p.spiking:
            return nir.CubaLIF(tau_syn=full(tau_syn), tau_mem=full(tau), r=full(r), v_leak=full(nrn.v_rest),
                               v_threshold=full(p.threshold), v_reset=full(v_reset), w_in=full(1.0)), rec
        return nir.CubaLI(tau_syn=full(tau_syn), tau_mem=full(tau), r=full(r), v_leak=full(nrn.v_rest),
                          w_in=full(1.0)), rec
    if p.spiking:
        return nir.LIF(tau=full(tau), r=full(r), v_leak=full(nrn.v_rest), v_threshold=full(p.threshold),
                       v_reset=full(v_reset)), rec
    return nir.LI(tau=full(tau), r=full(r), v_leak=full(nrn.v_rest)), rec


# ---------------------------------------------------------------------------
# Which conventions reproduce a recorded trace
# ---------------------------------------------------------------------------

def event_exact_lif(current, *, tau, r, v_leak, v_threshold, v_reset, dt):
    """One LIF neuron driven by a current held constant over each step, solved exactly in continuous time:
    the membrane follows ``v_inf + (v - v_inf) exp(-s / tau)`` (``v_inf = v_leak + r I``); when it reaches the
    threshold inside a step it is reset to ``v_reset`` at that instant and goes on for the rest of the step.
    Returns ``(v, spikes)`` per step: the membrane at the end of each step and whether it fired in it (the
    number of threshold crossings).  Forward only: the NIR paper's exact reference."""
    current = np.asarray(current, dtype=np.float64)
    v = float(v_leak)
    vs, ss = np.empty(len(current)), np.zeros(len(current))
    for t, i_t in enumerate(current):
        v_inf = v_leak + r * i_t
        left = dt
        while True:
            end = v_inf + (v - v_inf) * math.exp(-left / tau)
            if end <= v_threshold or v_inf <= v_threshold:
                v = end
                break
            s = tau * math.log((v - v_inf) / (v_threshold - v_inf))        # the crossing, inside the step
            ss[t] += 1
            v, left = v_reset, left - s
        vs[t] = v
    return vs, ss


@dataclass(frozen=True)
class Candidate:
    """One set of conventions and how far its trace is from the recorded one."""

    conventions: dict              # from_nir's keywords, plus "input_lag", "spike_lag" (steps) and "recorded"
    spike_steps: tuple             # the steps at which this candidate fires
    spike_mismatches: int          # steps where it and the recording disagree about a spike
    voltage_scale: float | None    # the least-squares factor recorded ~ scale * this candidate's membrane
    voltage_residual: float | None # max |recorded - scale * membrane|, after the scale
    voltage_residual_unscaled: float | None  # max |recorded - membrane|

    def __str__(self):
        c = ", ".join(f"{k}={v}" for k, v in self.conventions.items() if k not in ("surrogate", "width"))
        v = "" if self.voltage_scale is None else (f"; voltage: x{self.voltage_scale:.4g}, residual "
                                                   f"{self.voltage_residual:.2e} (unscaled {self.voltage_residual_unscaled:.2e})")
        return f"{self.spike_mismatches} spike steps differ{v} [{c}]"


def neuron_trace(adapted, current, lag=0):
    """``(membrane before the reset, membrane after the reset, spikes)``, each (T,), of the first neuron of the
    graph's last population, for one sample whose single input carries ``current`` (T,), delivered ``lag``
    steps late.  For reading a one-neuron graph such as the NIR paper's against a recording."""
    T = len(current)
    x = np.zeros((T, 1, 1))
    x[lag:, 0, 0] = current[:T - lag]
    u, o = adapted.network.simulate(adapted.params, x)[-1]
    u, o = u.reshape(T, -1)[:, 0], o.reshape(T, -1)[:, 0]
    pop = [p for p in adapted.network.pieces if isinstance(p, stbp_layers.LIF)][-1]
    lam, thr = float(np.ravel(pop.decay)[0]), float(np.ravel(pop.threshold)[0])
    return u, pop.neuron.reset.value(u, o, lam, thr), o


def explain_trace(graph_or_path, current, *, dt, spikes=None, voltage=None, top=5, exact=True):
    """Which conventions reproduce a trace recorded on some platform, for a graph whose input is one current.

    ``current`` (T,) the input per step, ``spikes`` (T,) and/or ``voltage`` (T,) the recording.  Every
    combination of discretisation, reset, reset timing, firing rule, an input lag of 0 or 1 step (the input
    reaches the neuron a step later), a spike lag of 0 or 1 step (the spike is reported a step after the
    membrane that caused it) and the membrane recorded before or after the reset is simulated (plus, with ``exact``, the event-exact
    solution of :func:`event_exact_lif` for a single-LIF graph); each is scored by the number of steps
    whose spike differs, then by the voltage residual after the least-squares voltage scale.  Returns the
    ``top`` :class:`Candidate` s, best first.
    """
    current = np.asarray(current, dtype=np.float64)
    if current.ndim != 1:
        raise ValueError(f"current: expected one value per step (T,), got shape {current.shape}")
    if spikes is None and voltage is None:
        raise ValueError("spikes, voltage: give the recording (one or both)")
    rec_s = None if spikes is None else (np.asarray(spikes, dtype=np.float64) > 0).astype(float)
    rec_v = None if voltage is None else np.asarray(voltage, dtype=np.float64)
    for nm, a in (("spikes", rec_s), ("voltage", rec_v)):
        if a is not None and a.shape != current.shape:
            raise ValueError(f"{nm}: expected shape {current.shape} (as current), got {a.shape}")
    graph, _ = read_graph(graph_or_path)
    out = []

    def score(conv, u, o):
        mism = int(np.sum(o != rec_s)) if rec_s is not None else 0
        scale = res = res0 = None
        if rec_v is not None:
            den = float(u @ u)
            scale = float(rec_v @ u) / den if den > 0 else 1.0
            res = float(np.max(np.abs(rec_v - scale * u)))
            res0 = float(np.max(np.abs(rec_v - u)))
        out.append(Candidate(conv, tuple(int(t) for t in np.flatnonzero(o)), mism, scale, res, res0))

    grid = itertools.product(("euler", "zoh", "exp_decay"), ("to_value", "subtract"), ("immediate", "delayed"),
                             (">", ">="), (0, 1))
    for disc, reset, timing, firing, lag in grid:
        conv = dict(dt=dt, discretization=disc, reset=reset, reset_timing=timing, firing=firing, gain_as="input",
                    surrogate="atan", width=1.0, detach_reset=False)
        try:
            adapted = from_nir(graph, **conv)
        except NotExpressible:
            continue
        before, after, o = neuron_trace(adapted, current, lag)
        for spike_lag, (recorded, u) in itertools.product((0, 1), (("after_reset", after), ("before_reset", before))):
            oo = np.concatenate([[0.0], o[:-1]]) if spike_lag else o
            score({**conv, "input_lag": lag, "spike_lag": spike_lag, "recorded": recorded}, u, oo)
    if exact:
        lif = _single_lif(graph)
        if lif is not None:
            w, node = lif
            v, s = event_exact_lif(w * current, tau=float(_f64(node.tau)[0]), r=float(_f64(node.r)[0]),
                                   v_leak=float(_f64(node.v_leak)[0]), v_threshold=float(_f64(node.v_threshold)[0]),
                                   v_reset=float(_f64(node.v_reset)[0]), dt=dt)
            score({"dt": dt, "discretization": "event_exact", "reset": "to_value", "input_lag": 0, "spike_lag": 0,
                   "recorded": "after_reset"}, v, (s > 0).astype(float))
    out.sort(key=lambda c: (c.spike_mismatches, c.voltage_residual if c.voltage_residual is not None else 0.0))
    return out[:top]


def _single_lif(graph):
    """(input weight, LIF node) when the graph is Input -> Affine/Linear 1x1 -> LIF (1 neuron) -> Output."""
    nir = _nir()
    try:
        nodes, edges = _flatten(graph)
        order, recurrent = _chain(nodes, edges)
    except NotExpressible:
        return None
    inner = [nodes[k] for k in order if not isinstance(nodes[k], (nir.Input, nir.Output))]
    if (len(inner) == 2 and not recurrent and type(inner[0]).__name__ in _WEIGHTS and isinstance(inner[1], nir.LIF)
            and np.size(inner[0].weight) == 1 and np.size(inner[1].tau) == 1):
        b = getattr(inner[0], "bias", None)
        if b is not None and np.any(_f64(b) != 0):
            return None
        return float(_f64(inner[0].weight).ravel()[0]), inner[1]
    return None


# ---------------------------------------------------------------------------
# Golden vectors as NIR graphs
# ---------------------------------------------------------------------------

#: How the golden graphs are read (and so how their arrays were computed): NIR's own equations step by step.
GOLDEN_CONVENTIONS = dict(dt=1.0, discretization="euler", reset="to_value", reset_timing="immediate",
                          gain_as="input", detach_reset=False)
_GOLDEN_LOSSES = {"mse_mean": "mse_rate", "mse_paper": "mse_rate_paper"}


def golden_dir() -> Path:
    """The golden vectors as NIR graphs, shipped with the package (``refsnn/checking/golden/nir/``)."""
    return Path(__file__).resolve().parent / "golden" / "nir"


def golden_write(directory) -> Path:
    """Write every golden STBP case that a NIR graph expresses as ``<case>.nir`` (the network, float32 as NIR
    stores it) and ``<case>.npz`` (a case file: ``x``, ``y``, ``param/<node>.weight`` ..., ``grad/...``, ``loss``,
    ``spikes/<n>``, ``potential/<n>`` (the membrane before the reset), ``conventions`` (the JSON of
    :func:`from_nir`'s keywords) and ``loss_kind`` (a :class:`refsnn.stbp_layers.Loss` kind)), computed by reading the written graph back under those conventions; plus
    ``manifest.json`` (the cases written, and the ones not expressible with the reason).  Returns its path."""
    import hashlib
    import json

    from refsnn.checking import verification

    nir = _nir()
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"conventions": GOLDEN_CONVENTIONS, "cases": [], "not_expressible": []}
    for stem, name, label, cfg, params, x, y in verification.golden_cases():
        if name != "stbp":
            continue
        try:
            net, shape = stbp_layers.from_config(cfg, params)
            graph = to_nir(net, params, shape, dt=GOLDEN_CONVENTIONS["dt"])
        except NotExpressible as exc:
            manifest["not_expressible"].append({"case": stem, "label": label, "reason": str(exc)})
            continue
        conv = {**GOLDEN_CONVENTIONS, "firing": ">" if cfg.strict else ">=", "surrogate": cfg.surrogate,
                "width": float(cfg.width)}
        path = directory / f"{stem}.nir"
        tmp = path.with_name(path.name + ".tmp")
        nir.write(tmp, graph)
        tmp.replace(path)
        back = from_nir(path, **conv, loss=stbp_layers.Loss(_GOLDEN_LOSSES[cfg.loss]))
        xx = np.asarray(x, dtype=np.float64).reshape(x.shape[0], x.shape[1], *shape)
        info = {}
        loss, grads = back.network.loss_and_grad(back.params, xx, y, info=info)
        pops = back.network.simulate(back.params, xx)
        thr = [np.ravel(p.threshold) for p in back.network.pieces if isinstance(p, stbp_layers.LIF)]
        margin = min(float(np.min(np.abs(u - t.reshape((1, 1) + np.shape(u)[2:]) if t.size > 1 else np.abs(u - t[0]))))
                     for (u, _), t in zip(pops, thr))
        if margin < 1e-6:
            path.unlink()
            manifest["not_expressible"].append({"case": stem, "label": label, "reason": f"a potential is {margin:.1e} "
                                                "from its threshold after float32 storage"})
            continue
        case = verification.write_case(
            directory / f"{stem}.npz", xx, y, back.params, grads, loss=loss,
            spikes={n + 1: o for n, (_, o) in enumerate(pops)},
            extra={**{f"potential/{n + 1}": u for n, (u, _) in enumerate(pops)},
                   "conventions": np.array(json.dumps(conv, sort_keys=True)), "graph": np.array(path.name),
                   "loss_kind": np.array(_GOLDEN_LOSSES[cfg.loss])})
        manifest["cases"].append({"case": stem, "label": label, "graph": path.name, "arrays": case.name,
                                  "conventions": conv, "sha256": hashlib.sha256(case.read_bytes()).hexdigest()})
    out = directory / "manifest.json"
    out.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out


def golden_compare(a_dir, b_dir, *, rel: float = 1e-12) -> list:
    """Differences between two sets of NIR golden vectors (``[]`` if none): the same cases and graphs' arrays,
    spikes and strings equal, every other array to ``rel`` norm-wise."""
    import json

    from refsnn.checking import verification

    ma = json.loads((Path(a_dir) / "manifest.json").read_text())
    mb = json.loads((Path(b_dir) / "manifest.json").read_text())
    if [c["case"] for c in ma["cases"]] != [c["case"] for c in mb["cases"]]:
        return ["the case lists differ"]
    found = []
    for ca in ma["cases"]:
        for kind in ("graph", "arrays"):
            if kind == "graph":
                ga, gb = (read_graph(Path(d) / ca["graph"])[0] for d in (a_dir, b_dir))
                za = {f"{n}.{k}": np.asarray(v) for n, node in ga.nodes.items() for k, v in vars(node).items()
                      if isinstance(v, np.ndarray)}
                zb = {f"{n}.{k}": np.asarray(v) for n, node in gb.nodes.items() for k, v in vars(node).items()
                      if isinstance(v, np.ndarray)}
            else:
                with np.load(Path(a_dir) / ca["arrays"]) as f:
                    za = {k: f[k] for k in f.files}
                with np.load(Path(b_dir) / ca["arrays"]) as f:
                    zb = {k: f[k] for k in f.files}
            if sorted(za) != sorted(zb):
                found.append(f"{ca['case']} ({kind}): keys differ: {sorted(set(za) ^ set(zb))}")
                continue
            for k in za:
                found += verification.array_differences(f"{ca['case']} ({kind})", k, za[k], zb[k], rel=rel)
    return found
