"""refsnn.checking.peers on models refsnn.stbp cannot express, read as a stack of layers (refsnn.stbp_layers).

Each model is a small float64 peer model built as the peers' tutorials build theirs (BatchNorm between a
layer and its neuron, recurrence, a different neuron per layer, pooled currents, a leaky-integrator
readout, the peers' own losses); one ``peers.verify`` call runs the peer's autograd and compares every
trainable tensor and the loss with refsnn's, to TWIN_REL (float64 round-off of two implementations).
"""
import math

import numpy as np
import pytest
from tolerances import FLOAT32_REL, TWIN_REL

torch = pytest.importorskip("torch", reason="the peer cross-checks need torch (pip install torch, CPU build)")
from test_peers import D, _leaky, _norse_p64, _sj, _snntorch  # noqa: E402

from refsnn.checking import peers  # noqa: E402

RNG = np.random.default_rng(0)
T, B = 10, 4
X = (RNG.random((T, B, 6)) < 0.5).astype(float)
Y = RNG.integers(0, 3, B)
XC = (np.random.default_rng(1).random((T, 3, 2, 8, 8)) < 0.5).astype(float)
YC = np.random.default_rng(2).integers(0, 3, 3)


def _scaled(model, gain, bias=0.1):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.weight.mul_(gain)
                if m.bias is not None:
                    m.bias.add_(bias * gain)
    return model


def _check(model, x=X, y=Y, **kw):
    report = peers.verify(model, x, y, **kw)
    assert report.passed, str(report)
    assert report["loss"].passed
    adapted = report.extra["adapted"]
    assert adapted.network is not None, "expected the stack route"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    compared = {adapted.mapping[t.name] for t in report.tensors if t.name != "loss"}
    assert compared == trainable, f"not compared: {trainable - compared}"
    return report


def _firing(model, x, kinds=None):
    """Every spiking layer of the peer fires on 1-99 % of its steps (the check would be vacuous otherwise)."""
    seen = {}

    def hook(mod, inp, out):
        o = (out[0] if isinstance(out, tuple) else out).detach().double()
        total, count = seen.get(id(mod), (0.0, 0))
        seen[id(mod)] = (total + float(o.sum()), count + o.numel())

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if type(m).__name__ in ("Leaky", "RLeaky", "RSynaptic", "Synaptic", "LIFNode", "LIFRecurrentCell")]
    peers.run(model, torch.as_tensor(x, dtype=D), kinds)
    for h in hooks:
        h.remove()
    rates = [total / count for total, count in seen.values()]
    assert rates and 0.01 < min(rates) and max(rates) < 0.99, rates


# ---------------------------------------------------------------------------
# snnTorch
# ---------------------------------------------------------------------------

def test_snntorch_a_different_neuron_in_each_layer():
    snn = _snntorch()
    torch.manual_seed(0)
    model = _scaled(torch.nn.Sequential(torch.nn.Linear(6, 5), _leaky(reset_mechanism="zero"),
                                        torch.nn.Linear(5, 3), _leaky(reset_mechanism="subtract")).double(), 2.5)
    _firing(model, X)
    assert snn
    _check(model)


def test_snntorch_batchnorm_at_every_step_between_a_layer_and_its_neuron():
    """torch's BatchNorm1d inside the per-step Sequential: statistics of each step, training mode."""
    torch.manual_seed(0)
    model = _scaled(torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), _leaky(),
                                        torch.nn.Linear(5, 3), _leaky()).double(), 2.0)
    _firing(model, X)
    _check(model)


def test_snntorch_conv_pooling_currents_batchnorm2d():
    """snnTorch tutorial 6's shape: Conv2d -> MaxPool2d of the currents -> Leaky, with BatchNorm2d."""
    torch.manual_seed(0)
    nn = torch.nn
    model = _scaled(nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(4), _leaky(),
                                  nn.Flatten(), nn.Linear(4 * 4 * 4, 3), _leaky()).double(), 1.5)
    _firing(model, XC)
    _check(model, XC, YC)


@pytest.mark.parametrize("all_to_all", [True, False])
def test_snntorch_rleaky(all_to_all):
    snn = _snntorch()
    torch.manual_seed(0)
    kw = dict(linear_features=5) if all_to_all else dict(V=torch.full((5,), 0.3, dtype=D))
    rl = snn.RLeaky(beta=torch.tensor(0.8, dtype=D), all_to_all=all_to_all, init_hidden=True,
                    spike_grad=peers.snntorch_surrogate("atan", 2 / (math.pi * 2.0)), **kw)
    rl.graded_spikes_factor = torch.ones(1, dtype=D)                       # not a constructor argument of RLeaky
    model = _scaled(torch.nn.Sequential(torch.nn.Linear(6, 5), rl, torch.nn.Linear(5, 3), _leaky()).double(), 2.0)
    _firing(model, X)
    _check(model)


def test_snntorch_rsynaptic():
    snn = _snntorch()
    torch.manual_seed(0)
    rs = snn.RSynaptic(alpha=torch.tensor(0.6, dtype=D), beta=torch.tensor(0.8, dtype=D), linear_features=5,
                       init_hidden=True, spike_grad=peers.snntorch_surrogate("atan", 2 / (math.pi * 2.0)))
    rs.graded_spikes_factor = torch.ones(1, dtype=D)
    model = _scaled(torch.nn.Sequential(torch.nn.Linear(6, 5), rs, torch.nn.Linear(5, 3), _leaky()).double(), 1.5)
    _firing(model, X)
    _check(model)


def _functional():
    _snntorch()
    import snntorch.functional as SF

    return SF


@pytest.mark.parametrize("make", ["ce_count_loss", "mse_count_loss", "ce_max_membrane_loss"])
def test_snntorch_own_losses(make):
    """The peer's loss object itself against refsnn's readout of the same name (the title says which)."""
    SF = _functional()
    loss = {"ce_count_loss": lambda: SF.ce_count_loss(),
            "mse_count_loss": lambda: SF.mse_count_loss(correct_rate=0.8, incorrect_rate=0.2),
            "ce_max_membrane_loss": lambda: SF.ce_max_membrane_loss()}[make]()
    torch.manual_seed(0)
    model = _scaled(torch.nn.Sequential(torch.nn.Linear(6, 5), _leaky(), torch.nn.Linear(5, 3), _leaky()).double(), 2.5)
    _firing(model, X)
    report = peers.verify(model, X, Y, loss=loss)
    assert report.passed, str(report)
    assert f"snnTorch {make}" in report.title


@pytest.mark.parametrize("make, same", [("ce_rate_loss", "ce_per_step"), ("mse_membrane_loss", "mse_membrane")])
def test_snntorch_losses_that_sum_in_float32_and_the_report_says_so(make, same):
    """ce_rate_loss and mse_membrane_loss accumulate in torch.zeros(1) (float32): agreement at float32 round-off
    (FLOAT32_REL), not 1e-12, and a note says why; the same loss in float64 (refsnn's readout of that name, written
    in PyTorch) agrees to TWIN_REL."""
    SF = _functional()
    loss = SF.ce_rate_loss() if make == "ce_rate_loss" else SF.mse_membrane_loss(on_target=1.2, off_target=0.1)
    torch.manual_seed(0)
    model = _scaled(torch.nn.Sequential(torch.nn.Linear(6, 5), _leaky(), torch.nn.Linear(5, 3), _leaky()).double(), 2.5)
    report = peers.verify(model, X, Y, loss=loss, tol=FLOAT32_REL)
    assert report.passed, str(report)
    assert any("float32 accumulator" in n for n in report.notes)
    if make == "ce_rate_loss":
        strict = peers.verify(model, X, Y, loss=same)
        assert strict.passed, str(strict)


def test_snntorch_membrane_cross_entropy_summed_over_steps_with_a_no_reset_output():
    """snnTorch tutorial 5's loss (CrossEntropyLoss of the output membrane at every step, summed), here with an
    output layer that never resets."""
    torch.manual_seed(0)
    model = _scaled(torch.nn.Sequential(torch.nn.Linear(6, 5), _leaky(), torch.nn.Linear(5, 3),
                                        _leaky(reset_mechanism="none")).double(), 2.5)
    report = peers.verify(model, X, Y, loss="ce_membrane_sum")
    assert report.passed, str(report)
    assert "ce_membrane_sum" in report.title


# ---------------------------------------------------------------------------
# spikingjelly
# ---------------------------------------------------------------------------

def test_spikingjelly_multistep_conv_with_batchnorm_and_dropout():
    """spikingjelly's conv examples: Conv2d -> BatchNorm2d (over time and batch) -> LIFNode, dropout between, all
    multi-step; the dropout's mask is read from the module after the peer's run."""
    neuron, surrogate = _sj()
    from spikingjelly.activation_based import layer

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        layer.Conv2d(2, 4, 3, padding=1, step_mode="m"), layer.BatchNorm2d(4, step_mode="m"),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m"),
        layer.MaxPool2d(2, step_mode="m"), layer.Flatten(step_mode="m"), layer.Dropout(0.3, step_mode="m"),
        layer.Linear(4 * 4 * 4, 3, step_mode="m"),
        neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m")).double()
    _scaled(model, 2.0)
    report = _check(model, XC, YC)
    assert any("stack" in n for n in report.notes)


def test_spikingjelly_voting_layer_readout():
    """spikingjelly's examples read 10 classes from 100 neurons with layer.VotingLayer(10); here 6 vote for 3."""
    neuron, surrogate = _sj()
    from spikingjelly.activation_based import layer

    torch.manual_seed(0)
    model = _scaled(torch.nn.Sequential(
        layer.Linear(6, 5, step_mode="m"), neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m"),
        layer.Linear(5, 6, step_mode="m"), neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan(), step_mode="m"),
        layer.VotingLayer(2, step_mode="m")).double(), 2.5)
    report = _check(model)
    assert report.tensors[-2].name == "b2" and report["b2"].shape == (6,)


# ---------------------------------------------------------------------------
# norse
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["ce_membrane_max", "ce_membrane_last", "ce_membrane_sum"])
def test_norse_recurrent_cell_with_a_leaky_integrator_readout(loss):
    """norse's MNIST notebook shape: LIFRecurrentCell (its own input weights, recurrence without autapses), a
    Linear, and an LICell readout whose membrane is read (max over time, last step or every step)."""
    norse, p = _norse_p64()
    from norse.torch.functional.leaky_integrator import LIParameters

    torch.manual_seed(0)
    cell = norse.LIFRecurrentCell(6, 5, p=p, dt=torch.tensor(1e-3, dtype=D))
    li_p = LIParameters(tau_syn_inv=torch.tensor(200.0, dtype=D), tau_mem_inv=torch.tensor(100.0, dtype=D),
                        v_leak=torch.tensor(0.0, dtype=D))
    readout = norse.LICell(p=li_p, dt=torch.tensor(1e-3, dtype=D))
    model = torch.nn.Sequential(cell, torch.nn.Linear(5, 3), readout).double()
    with torch.no_grad():
        cell.input_weights.mul_(8.0)
        cell.recurrent_weights.mul_(2.0)
    report = peers.verify(model, X, Y, loss=loss)
    assert report.passed, str(report)
    names = {report.extra["adapted"].mapping[t.name] for t in report.tensors if t.name != "loss"}
    assert "0.recurrent_weights" in names and "0.input_weights" in names


# ---------------------------------------------------------------------------
# Refusals: every module that cannot be read, at once
# ---------------------------------------------------------------------------

def test_refusals_name_every_module_and_the_missing_capability():
    snn = _snntorch()
    nn = torch.nn
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.5), _leaky(),
                          nn.Linear(5, 3), snn.Alpha(alpha=0.9, beta=0.8, init_hidden=True))
    model.train()
    with pytest.raises(peers.NotExpressible) as err:
        peers.from_torch(model)
    text = str(err.value)
    assert "module 1 (ReLU)" in text and "module 2 (Dropout)" in text and "module 5 (Alpha)" in text
    assert text.count("\n") >= 3, text


# ---------------------------------------------------------------------------
# Models written as classes, as the tutorials write them
# ---------------------------------------------------------------------------

def _tutorial5(static=True, steps=T, residual=False, twice=False):
    """snnTorch tutorial 5's network: two Linear + Leaky layers, a loop over the steps inside forward, the
    spikes and membranes of the output recorded and returned stacked."""
    snn = _snntorch()
    nn = torch.nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(6, 5)
            self.lif1 = snn.Leaky(beta=torch.tensor(0.8, dtype=D), graded_spikes_factor=torch.ones(1, dtype=D),
                                  spike_grad=peers.snntorch_surrogate("atan", 2 / (math.pi * 2.0)))
            self.fc2 = nn.Linear(5, 5 if residual else 3)
            self.lif2 = snn.Leaky(beta=torch.tensor(0.7, dtype=D), graded_spikes_factor=torch.ones(1, dtype=D),
                                  spike_grad=peers.snntorch_surrogate("atan", 2 / (math.pi * 2.0)))

        def forward(self, x):
            mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
            spk_rec, mem_rec = [], []
            for step in range(steps):
                cur1 = self.fc1(x if static else x[step])
                spk1, mem1 = self.lif1(cur1, mem1)
                cur2 = self.fc2(spk1)
                if residual:
                    cur2 = cur2 + spk1                         # a residual add: not a chain
                if twice:
                    cur2 = self.fc2(self.lif1(cur1, mem1)[0])   # fc2 and lif1 called twice in a step
                spk2, mem2 = self.lif2(cur2, mem2)
                spk_rec.append(spk2)
                mem_rec.append(mem2)
            return torch.stack(spk_rec), torch.stack(mem_rec)

    torch.manual_seed(0)
    return _scaled(Net().double(), 2.5)


def test_a_class_model_with_a_static_input_and_its_membrane_loss():
    """Tutorial 5 as written: a static input fed at every step, CrossEntropyLoss of the output membrane at every
    step, summed."""
    x = np.random.default_rng(3).random((B, 6))
    report = peers.verify(_tutorial5(), x, Y, loss="ce_membrane_sum")
    assert report.passed, str(report)
    assert {t.name for t in report.tensors} == {"W1", "b1", "W2", "b2", "loss"}


def test_a_class_model_stepping_through_a_sequence_with_an_snntorch_loss():
    SF = _functional()
    report = peers.verify(_tutorial5(static=False), X, Y, loss=SF.ce_count_loss())
    assert report.passed, str(report)


@pytest.mark.parametrize("how, word", [("residual", "is not the output of module fc2"), ("twice", "twice")])
def test_a_class_model_that_is_not_a_chain_is_refused_naming_the_module(how, word):
    model = _tutorial5(residual=how == "residual", twice=how == "twice")
    with pytest.raises(peers.NotExpressible, match=word):
        peers.verify(model, np.random.default_rng(3).random((B, 6)), Y)


def test_a_class_model_needs_an_example_input():
    with pytest.raises(peers.NotExpressible, match="example_input"):
        peers.from_torch(_tutorial5())


def test_a_spikingjelly_class_that_repeats_a_static_image_and_returns_the_rate():
    """spikingjelly's CSNN shape: forward repeats the image over T itself, runs a multi-step Sequential once and
    returns the mean firing rate; refsnn reads the chain, the readout's spikes from the last neuron."""
    neuron, surrogate = _sj()
    from spikingjelly.activation_based import functional, layer

    nn = torch.nn

    class CSNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_fc = nn.Sequential(
                layer.Conv2d(2, 4, 3, padding=1), layer.BatchNorm2d(4),
                neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()), layer.MaxPool2d(2), layer.Flatten(),
                layer.Linear(4 * 4 * 4, 3), neuron.LIFNode(tau=2.0, surrogate_function=surrogate.ATan()))
            functional.set_step_mode(self, "m")

        def forward(self, x):
            return self.conv_fc(x.unsqueeze(0).repeat(T, 1, 1, 1, 1)).mean(0)

    torch.manual_seed(0)
    model = _scaled(CSNN().double(), 2.0)
    img = np.random.default_rng(4).random((3, 2, 8, 8))
    report = peers.verify(model, img, YC)
    assert report.passed, str(report)


def test_a_computation_before_the_first_module_is_refused():
    snn = _snntorch()
    nn = torch.nn

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.lif = snn.Leaky(beta=0.9, init_hidden=True)

        def forward(self, x):
            return torch.stack([self.lif(self.fc(x[t, :, :3])) for t in range(x.shape[0])])

    with pytest.raises(peers.NotExpressible, match="computation before the first module"):
        peers.from_torch(Scaled().double(), example_input=torch.as_tensor(X, dtype=D))
