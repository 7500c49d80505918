"""One NIR graph, every framework: a small network exported by snnTorch, norse and spikingjelly with their own
NIR export, imported back by the same framework and run in float64 with its own autograd, against refsnn's
reading of the same graph (refsnn.checking.nir_io.from_nir) under that framework's conventions.

What each framework's import does is in docs/nir.md; the conversions to float64 each needs are written here.
"""
import logging
import math
import warnings
from dataclasses import replace

import numpy as np
import pytest
from tolerances import FLOAT32_REL, TWIN_REL

nir = pytest.importorskip("nir")
torch = pytest.importorskip("torch")

from refsnn import stbp_layers as sl  # noqa: E402
from refsnn.checking import gradcheck, nir_io  # noqa: E402

T, B, NI, NH, NO = 12, 3, 3, 4, 2
Y = np.array([0, 1, 1])


def _x(seed=1):
    return (np.random.default_rng(seed).random((T, B, NI)) < 0.5).astype(np.float64)


def _peer_loss_and_grads(model, x, step, names):
    """MSE of the output rate to the one-hot labels (refsnn's Loss("mse_rate")) by the peer's autograd."""
    spikes = step(model, torch.tensor(x))
    target = torch.nn.functional.one_hot(torch.tensor(Y), NO).double()
    loss = ((spikes.mean(0) - target) ** 2).mean()
    loss.backward()
    params = dict(model.named_parameters())
    return float(loss), {ours: params[theirs].grad.double().numpy() for ours, theirs in names.items()}, spikes


def _compare(adapted, x, peer_loss, peer_grads, peer_spikes, title, tol=TWIN_REL):
    net = replace(adapted.network, loss=sl.Loss("mse_rate"))
    info = {}
    loss, grads = net.loss_and_grad(adapted.params, x, Y, info=info)
    assert np.array_equal(info["spikes"][-1], peer_spikes.detach().numpy()), f"{title}: output spikes differ"
    assert loss == pytest.approx(peer_loss, rel=tol)
    rep = gradcheck.compare(peer_grads, {k: grads[k] for k in peer_grads}, tol=tol, title=title)
    assert rep.passed, str(rep)
    assert any(np.any(g) for g in peer_grads.values()), f"{title}: every gradient is zero"
    return rep


# ---------------------------------------------------------------------------
# norse
# ---------------------------------------------------------------------------

def test_norse_export_and_import_against_refsnn():
    """norse.to_nir(dt=1) (its tau is dt / tau_mem_inv: only dt = 1 writes the time constant), norse.from_nir:
    Euler, reset to 0, '>', SuperSpike.  Powers of two everywhere, so that norse's float32 rounding of the
    graph's values on import (1/tau in float32) changes nothing and refsnn's float64 constants are norse's."""
    pytest.importorskip("norse")
    pytest.importorskip("nirtorch")
    import norse.torch as norse
    from norse.torch.functional.lif_box import LIFBoxParameters
    from torch.utils._pytree import tree_map

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.manual_seed(0)
    dt = 2.0 ** -10
    p1 = LIFBoxParameters(tau_mem_inv=torch.full((NH,), 64.0), v_leak=torch.zeros(NH), v_th=torch.ones(NH),
                          v_reset=torch.zeros(NH))
    p2 = LIFBoxParameters(tau_mem_inv=torch.full((NO,), 128.0), v_leak=torch.zeros(NO), v_th=torch.full((NO,), 0.5),
                          v_reset=torch.zeros(NO))
    model = norse.SequentialState(torch.nn.Linear(NI, NH), norse.LIFBoxCell(p1, dt=dt),
                                  torch.nn.Linear(NH, NO), norse.LIFBoxCell(p2, dt=dt))
    with torch.no_grad():
        model[0].weight.mul_(40.0)
        model[0].bias.add_(8.0)
        model[2].weight.mul_(40.0)
        model[2].bias.fill_(6.0)
    graph = norse.to_nir(model, torch.randn(NI), dt=1.0)
    imported = norse.from_nir(graph, dt=dt)
    imported.double()                                   # the Linear layers; the neurons' p by hand:
    for mod in imported.modules():
        if hasattr(mod, "p"):
            mod.p = tree_map(lambda a: a.double() if isinstance(a, torch.Tensor) else a, mod.p)

    def step(m, x):
        outs, state = [], None
        for t in range(T):
            o, state = m(x[t], state)
            outs.append(o)
        return torch.stack(outs)

    x = _x()
    names = {"0.weight": "0.weight", "0.bias": "0.bias", "2.weight": "2.weight", "2.bias": "2.bias"}
    loss, grads, spikes = _peer_loss_and_grads(imported, x, step, names)
    adapted = nir_io.from_nir(graph, **nir_io.CONVENTIONS["norse"] | {"dt": dt})
    _compare(adapted, x, loss, grads, spikes, "norse export -> norse import vs refsnn from_nir (float64)")


# ---------------------------------------------------------------------------
# spikingjelly
# ---------------------------------------------------------------------------

def test_spikingjelly_export_and_import_against_refsnn():
    """spikingjelly's export_to_nir / import_from_nir(dtype=float64): NIR's forward Euler, reset to v_reset,
    '>=', its Sigmoid(alpha=4) surrogate = refsnn's sigmoid of width 1/4.  Its graph holds float64 values."""
    pytest.importorskip("spikingjelly")
    pytest.importorskip("nirtorch")
    from spikingjelly.activation_based import layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir, import_from_nir

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    dt = 1e-4
    model = torch.nn.Sequential(layer.Linear(NI, NH, step_mode="m"), neuron.LIFNode(tau=2.0, step_mode="m"),
                                layer.Linear(NH, NO, step_mode="m"),
                                neuron.LIFNode(tau=4.0, decay_input=False, v_threshold=0.5, step_mode="m"))
    with torch.no_grad():
        model[0].weight.mul_(3.0)
        model[0].bias.add_(0.5)
        model[2].weight.mul_(3.0)
        model[2].bias.fill_(0.3)
    graph = export_to_nir(model, torch.rand(T, B, NI), dt=dt)
    imported = import_from_nir(graph, dt=dt, dtype=torch.float64, step_mode="m")
    x = _x()
    names = {"_0.weight": "_0.weight", "_0.bias": "_0.bias", "_2.weight": "_2.weight", "_2.bias": "_2.bias"}
    loss, grads, spikes = _peer_loss_and_grads(imported, x, lambda m, xx: m(xx)[0], names)
    adapted = nir_io.from_nir(graph, **nir_io.CONVENTIONS["spikingjelly"] | {"dt": dt})
    _compare(adapted, x, loss, grads, spikes, "spikingjelly export -> spikingjelly import vs refsnn from_nir")


# ---------------------------------------------------------------------------
# snnTorch
# ---------------------------------------------------------------------------

class _ATan64(torch.autograd.Function):
    """snnTorch's ATan surrogate (alpha 2) with the spike in the input's dtype: snnTorch's own returns float32
    spikes, which a float64 Linear after it refuses."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g / (1 + (math.pi * x) ** 2)                  # alpha / 2 / (1 + (pi / 2 alpha x)^2), alpha 2


def test_snntorch_export_and_import_against_refsnn():
    """snnTorch's export_to_nir / import_from_nir: Euler with dt hard-coded to 1e-4, reset to zero, '>', the
    threshold divided by the input gain only when that gain is not close to 1 (here it is: r = tau / dt), ATan.
    Its import rounds beta to float32 (it computes 1 - 1e-4 / tau and casts the modules to float32), which
    refsnn's float64 reading of the graph does not: so the same computation is checked with snnTorch's own
    constants (to round-off), and refsnn's reading against it to the float32 rounding of beta."""
    snn = pytest.importorskip("snntorch")
    pytest.importorskip("nirtorch")
    from snntorch.export_nir import export_to_nir
    from snntorch.import_nir import import_from_nir

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(NI, NH),
        snn.Leaky(beta=torch.full((NH,), 0.75), threshold=torch.full((NH,), 1.0), init_hidden=True,
                  reset_mechanism="zero", reset_delay=False),
        torch.nn.Linear(NH, NO),
        snn.Leaky(beta=torch.full((NO,), 0.5), threshold=torch.full((NO,), 0.5), init_hidden=True,
                  reset_mechanism="zero", reset_delay=False, output=True))
    with torch.no_grad():
        model[0].weight.mul_(3.0)
        model[0].bias.add_(0.5)
        model[2].weight.mul_(3.0)
        model[2].bias.fill_(0.2)
    graph = export_to_nir(model, torch.randn(B, NI), ignore_dims=[0])
    imported = import_from_nir(graph)
    neurons = [m for m in imported.modules() if isinstance(m, snn.SpikingNeuron)]
    for m in neurons:
        m.spike_grad = _ATan64.apply
    imported = imported.double()

    def step(m, x):
        for n in neurons:
            n.reset_mem()
        return torch.stack([m(x[t])[0] for t in range(T)])

    x = _x()
    names = {"0.weight": "0.weight", "0.bias": "0.bias", "2.weight": "2.weight", "2.bias": "2.bias"}
    loss, grads, spikes = _peer_loss_and_grads(imported, x, step, names)
    adapted = nir_io.from_nir(graph, **nir_io.CONVENTIONS["snntorch"])
    # the same computation with snnTorch's constants (its float32-rounded beta, its threshold)
    betas = [float(n.beta.double().ravel()[0]) for n in neurons]
    thresholds = [float(n.threshold.double().ravel()[0]) for n in neurons]
    pops = [i for i, p in enumerate(adapted.network.pieces) if isinstance(p, sl.LIF)]
    pieces = list(adapted.network.pieces)
    for i, lam, thr in zip(pops, betas, thresholds):
        pieces[i] = replace(pieces[i], decay=lam, threshold=thr, gain=None)
    theirs = replace(adapted, network=replace(adapted.network, pieces=tuple(pieces)))
    _compare(theirs, x, loss, grads, spikes, "snnTorch import (its constants) vs refsnn stack")
    # refsnn's own reading: beta from the float32 tau in float64, so within float32 round-off of snnTorch's
    lams = [float(np.ravel(adapted.network.pieces[i].decay)[0]) for i in pops]
    assert np.allclose(lams, betas, rtol=0, atol=float(np.finfo(np.float32).eps)), (lams, betas)
    _compare(adapted, x, loss, grads, spikes, "snnTorch import vs refsnn from_nir (float32 beta)", tol=FLOAT32_REL)
