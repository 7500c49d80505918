"""The STBP layer stack (refsnn.stbp_layers) against PyTorch autograd of the same network (float64).

refsnn.checking.torch_golds.stack_loss_and_grad writes every piece again in torch from its equations (conv2d,
avg/max pooling, batch_norm, the neuron's step loop with the spike as a Heaviside whose backward is the
surrogate, cross_entropy and mse_loss) and lets autograd differentiate it.  For every piece, reset, timing,
learnable constant and loss, a small seeded network (6 inputs, 5 hidden, 3 outputs; T = 6, batch 4; conv
6x6x2 -> 3 channels 3x3) in which every spiking population fires on 2-98 % of its steps must give the same
spikes, the same loss (TWIN_REL) and the same gradients (TORCH_REL), and batch-mode BatchNorm the same next
running statistics (TWIN_REL).
"""
from dataclasses import dataclass, replace

import numpy as np
import pytest
from tolerances import TORCH_REL, TWIN_REL, assert_close

from refsnn.checking import gradcheck
from refsnn import stbp_layers as sl

torch = pytest.importorskip("torch", reason="the PyTorch cross-check needs torch (pip install torch, CPU build)")
golds = pytest.importorskip("refsnn.checking.torch_golds")

T, B, N_IN, HIDDEN, OUT = 6, 4, 6, 5, 3
CONV_IN = (2, 6, 6)
#: (surrogate, width): every surrogate of refsnn.blocks.surrogates, cycled through the cases.
SURROGATES = [("atan", 0.4), ("sigmoid", 0.3), ("gauss", 0.3), ("fast_sigmoid", 0.3), ("triangle", 1.0),
              ("rect", 1.0), ("window", 0.5)]


@dataclass
class Case:
    net: sl.Network
    params: dict
    x: np.ndarray
    y: object
    data: dict | None


def _values(shapes: dict, rng, scale: float) -> dict:
    """Seeded parameters by the prefix of their key, each in the range where its piece works."""
    out = {}
    for k, shape in shapes.items():
        if k.startswith("gamma"):
            out[k] = 1.0 + 0.2 * rng.standard_normal(shape)
        elif k.startswith("shift"):                                      # BatchNorm's beta
            out[k] = 0.5 + 0.2 * rng.standard_normal(shape)
        elif k.startswith("mean"):
            out[k] = 0.1 * rng.standard_normal(shape)
        elif k.startswith("var"):
            out[k] = 0.5 + rng.random(shape)
        elif k.startswith(("beta", "alpha")):                            # clamped to [0, 1]: kept inside
            out[k] = 0.3 + 0.5 * rng.random(shape)
        elif k.startswith("tau_w"):
            out[k] = -0.5 + 0.5 * rng.standard_normal(shape)
        elif k.startswith("thr"):
            out[k] = 0.8 + 0.4 * rng.random(shape)
        elif k.startswith("V"):
            out[k] = 0.5 * scale * rng.standard_normal(shape)
        elif k.startswith("c"):                                          # the recurrent bias
            out[k] = 0.1 * rng.standard_normal(shape)
        elif k.startswith("b"):
            out[k] = 0.2 + 0.3 * rng.standard_normal(shape)
        else:                                                            # W
            out[k] = scale * rng.standard_normal(shape)
    return out


def _rates(net, params, x, data) -> list:
    """The firing rate of every spiking population (the fraction of its (step, sample, neuron) entries)."""
    pops = [p for p in net.pieces if isinstance(p, sl.LIF)]
    return [float(o.mean()) for (_, o), p in zip(net.simulate(params, x, data), pops) if p.spiking]


def _fires(rates) -> bool:
    return all(0.02 <= r <= 0.98 for r in rates)


def _problem(pieces, shapes, *, loss=None, in_shape=(N_IN,), scale=1.0, data=None, target=None) -> Case:
    """The first seed whose network fires on 2-98 % of the steps in every spiking population."""
    net = sl.Network(tuple(pieces), loss or sl.Loss("mse_rate"))
    for seed in range(60):
        rng = np.random.default_rng(seed)
        x = (rng.random((T, B, *in_shape)) < 0.5).astype(np.float64)
        params = _values(shapes, rng, scale)
        if _fires(_rates(net, params, x, data)):
            y = rng.integers(0, OUT, B) if target is None else target
            return Case(net, params, x, y, data)
    raise AssertionError(f"no seed makes every population fire on 2-98 % of its steps: {pieces}")


def _neuron(i=0, **kw):
    name, width = SURROGATES[i % len(SURROGATES)]
    return sl.Neuron(surrogate=name, width=width, **kw)


DENSE = {"W1": (HIDDEN, N_IN), "b1": (HIDDEN,), "W2": (OUT, HIDDEN), "b2": (OUT,)}


def _two_layers(first, second, shapes=None, middle=(), **kw) -> Case:
    """Affine -> [middle pieces] -> first population -> Affine -> second population."""
    return _problem((sl.Affine("W1", "b1"), *middle, first, sl.Affine("W2", "b2"), second),
                    {**DENSE, **(shapes or {})}, **kw)


# ---------------------------------------------------------------------------
# The cases: name -> a function that builds (network, params, x, y, data)
# ---------------------------------------------------------------------------

CASES = {}

# every reset, immediate and delayed, with the reset's spike detached or not (and '>' and '>=')
RESETS = {"exp": sl.ExpReset(), "zero": sl.ZeroReset(), "to_value(-0.2)": sl.ToValue(-0.2),
          "subtract": sl.Subtract(), "none": sl.NoReset()}
for i, (rname, reset) in enumerate(RESETS.items()):
    for timing in ("immediate", "delayed"):
        for detach in (False, True):
            def build(i=i, reset=reset, timing=timing, detach=detach):
                nrn = _neuron(i + 2 * detach + (timing == "delayed"), reset=reset, timing=timing, detach=detach,
                              strict=not detach)
                return _two_layers(sl.LIF(nrn, decay=0.6), sl.LIF(nrn, decay=0.6), scale=1.0)
            CASES[f"reset {rname} {timing} {'detached' if detach else 'attached'}"] = build

# per-neuron and learnable constants
_rng = np.random.default_rng(7)
_LAM1, _THR1 = 0.3 + 0.6 * _rng.random(HIDDEN), 0.7 + 0.5 * _rng.random(HIDDEN)
_LAM2, _THR2 = 0.3 + 0.6 * _rng.random(OUT), 0.7 + 0.5 * _rng.random(OUT)
CASES["per-neuron decay and threshold arrays"] = lambda: _two_layers(
    sl.LIF(_neuron(0, reset="subtract"), decay=_LAM1, threshold=_THR1),
    sl.LIF(_neuron(0, reset="subtract"), decay=_LAM2, threshold=_THR2))
CASES["per-neuron arrays, decay_input, v_rest"] = lambda: _two_layers(
    sl.LIF(_neuron(1, decay_input=True, v_rest=0.1), decay=_LAM1, threshold=_THR1),
    sl.LIF(_neuron(1, decay_input=True, v_rest=0.1), decay=_LAM2, threshold=_THR2), scale=2.0)
CASES["learned decay (clamp) in layer 1 only, per neuron"] = lambda: _two_layers(
    sl.LIF(_neuron(0), decay=("beta1", "clamp")), sl.LIF(_neuron(0), decay=0.6), {"beta1": (HIDDEN,)})
CASES["learned decay (clamp) in layer 1 only, one value, decay_input"] = lambda: _two_layers(
    sl.LIF(_neuron(2, decay_input=True, v_rest=-0.1), decay=("beta1", "clamp")),
    sl.LIF(_neuron(2, decay_input=True), decay=0.6), {"beta1": ()}, scale=2.0)
CASES["learned sigmoid decay"] = lambda: _two_layers(
    sl.LIF(_neuron(1, reset="subtract"), decay=("tau_w1", "sigmoid")),
    sl.LIF(_neuron(1, reset="subtract"), decay=("tau_w2", "sigmoid")), {"tau_w1": (), "tau_w2": (OUT,)})
CASES["learned threshold, subtract immediate"] = lambda: _two_layers(
    sl.LIF(_neuron(0, reset="subtract"), threshold=("thr1", "identity")),
    sl.LIF(_neuron(0, reset="subtract"), threshold=("thr2", "identity")), {"thr1": (HIDDEN,), "thr2": ()})
CASES["learned threshold, subtract delayed"] = lambda: _two_layers(
    sl.LIF(_neuron(3, reset="subtract", timing="delayed"), threshold=("thr1", "identity")),
    sl.LIF(_neuron(3, reset="subtract", timing="delayed"), threshold=("thr2", "identity")),
    {"thr1": (), "thr2": (OUT,)})
CASES["learned threshold, zero reset"] = lambda: _two_layers(
    sl.LIF(_neuron(1), threshold=("thr1", "identity")), sl.LIF(_neuron(1), threshold=1.0), {"thr1": (HIDDEN,)})
CASES["learned alpha (synapse)"] = lambda: _two_layers(
    sl.LIF(_neuron(0), decay=0.6, alpha=("alpha1", "clamp")), sl.LIF(_neuron(0), decay=0.6, alpha=0.5),
    {"alpha1": (HIDDEN,)}, scale=0.7)

# recurrence inside a population
for kind in ("all", "one"):
    for alpha in (None, 0.5):
        def build(kind=kind, alpha=alpha):
            return _two_layers(sl.LIF(_neuron(0, reset="subtract"), decay=0.6, recurrent=("V1", kind), alpha=alpha),
                               sl.LIF(_neuron(0, reset="subtract"), decay=0.6),
                               {"V1": (HIDDEN, HIDDEN) if kind == "all" else (HIDDEN,)},
                               scale=0.7 if alpha else 1.0)
        CASES[f"recurrent {kind}-to-{kind if kind == 'all' else 'one'}"
              f"{', current synapse' if alpha else ''}"] = build
CASES["recurrent all-to-all with a bias, learned alpha"] = lambda: _two_layers(
    sl.LIF(_neuron(1, reset="zero"), decay=0.6, recurrent=("V1", "all", "c1"), alpha=("alpha1", "clamp")),
    sl.LIF(_neuron(1), decay=0.6), {"V1": (HIDDEN, HIDDEN), "c1": (HIDDEN,), "alpha1": ()}, scale=0.7)

# BatchNorm between a layer and its neuron.  In batch mode the Affine has no bias: BatchNorm subtracts the
# batch mean, so its gradient is 0 analytically, and round-off of two codes is not a relative error
BN = {"gamma1": (HIDDEN,), "shift1": (HIDDEN,), "mean1": (HIDDEN,), "var1": (HIDDEN,)}
BN_KEYS = ("gamma1", "shift1", "mean1", "var1")
for over in ("time_batch", "step"):
    for mode in ("batch", "running"):
        def build(over=over, mode=mode):
            bias = "b1" if mode == "running" else None
            shapes = {**DENSE, **BN}
            if bias is None:
                del shapes["b1"]
            return _problem((sl.Affine("W1", bias), sl.BatchNorm(*BN_KEYS, over=over, mode=mode),
                             sl.LIF(_neuron(0), decay=0.6), sl.Affine("W2", "b2"), sl.LIF(_neuron(0), decay=0.6)),
                            shapes)
        CASES[f"batchnorm {over} {mode}"] = build

CONV = {"Wc": (3, 2, 3, 3), "bc": (3,), "W2": (OUT, 27), "b2": (OUT,)}
for mode in ("batch", "running"):
    def build(mode=mode):
        shapes = {**CONV, "gamma1": (3,), "shift1": (3,), "mean1": (3,), "var1": (3,)}
        bias = "bc" if mode == "running" else None
        if bias is None:
            del shapes["bc"]
        return _problem((sl.Conv("Wc", bias, 1, 1), sl.BatchNorm(*BN_KEYS, over="time_batch", mode=mode),
                         sl.LIF(_neuron(1), decay=0.6), sl.Pool("avg", 2), sl.Flatten(), sl.Affine("W2", "b2"),
                         sl.LIF(_neuron(1), decay=0.6)), shapes, in_shape=CONV_IN, scale=0.5)
    CASES[f"batchnorm2d time_batch {mode}"] = build

# dropout with a given mask: one for all steps, or one per step
for per_step in (False, True):
    def build(per_step=per_step):
        mask = (np.random.default_rng(11).random((T, B, HIDDEN) if per_step else (B, HIDDEN)) < 0.75) / 0.75
        return _two_layers(sl.LIF(_neuron(0), decay=0.6), sl.LIF(_neuron(0), decay=0.6),
                           middle=(sl.Dropout("mask1"),), data={"mask1": mask})
    CASES[f"dropout {'per-step' if per_step else 'shared'} mask"] = build

# pooling of currents (conv -> pool -> neuron) and of spikes (neuron -> pool -> flatten -> affine)
for kind in ("avg", "max", "sum"):
    def build(kind=kind):
        return _problem((sl.Conv("Wc", "bc", 1, 1), sl.Pool(kind, 2), sl.LIF(_neuron(0), decay=0.6), sl.Flatten(),
                         sl.Affine("W2", "b2"), sl.LIF(_neuron(0), decay=0.6)),
                        CONV, in_shape=CONV_IN, scale=0.4 if kind != "sum" else 0.15)
    CASES[f"conv -> {kind} pool -> LIF (currents)"] = build

    def build(kind=kind):
        return _problem((sl.Conv("Wc", "bc", 1, 1), sl.LIF(_neuron(1), decay=0.6), sl.Pool(kind, 2), sl.Flatten(),
                         sl.Affine("W2", "b2"), sl.LIF(_neuron(1), decay=0.6)),
                        CONV, in_shape=CONV_IN, scale=0.5 if kind != "sum" else 0.25)
    CASES[f"conv -> LIF -> {kind} pool (spikes)"] = build

# every loss but "custom": the membrane losses on a leaky-integrator readout and on a spiking output, the
# spike losses on a spiking output
SPIKE_LOSSES = ["mse_rate_paper", "mse_rate", "mse_count", "ce_rate", "ce_count", "ce_per_step"]
MEMBRANE_LOSSES = ["ce_membrane_sum", "ce_membrane_max", "ce_membrane_last", "mse_membrane"]
assert set(SPIKE_LOSSES + MEMBRANE_LOSSES + ["custom"]) == set(sl.LOSSES), "a loss of LOSSES is not covered"
for i, kind in enumerate(SPIKE_LOSSES):
    def build(i=i, kind=kind):
        loss = sl.Loss(kind, correct=0.8, incorrect=0.1) if kind == "mse_count" else sl.Loss(kind)
        return _two_layers(sl.LIF(_neuron(i), decay=0.7), sl.LIF(_neuron(i), decay=0.7), loss=loss)
    CASES[f"loss {kind} (LIF output)"] = build
_TARGETS = {"(T,B,C)": np.random.default_rng(9).standard_normal((T, B, OUT)),
            "(B,C)": np.random.default_rng(10).standard_normal((B, OUT))}
for readout in ("LI", "LIF"):
    for kind in MEMBRANE_LOSSES:
        for tname, target in (_TARGETS.items() if kind == "mse_membrane" else [("", None)]):
            def build(readout=readout, kind=kind, target=target):
                last = sl.LI(decay=0.8) if readout == "LI" else sl.LIF(_neuron(0), decay=0.7)
                return _two_layers(sl.LIF(_neuron(0), decay=0.7), last, loss=sl.Loss(kind), target=target)
            CASES[f"loss {kind}{' ' + tname if tname else ''} ({readout} output)"] = build
CASES["LI readout with a synapse, decay_input, v_rest"] = lambda: _two_layers(
    sl.LIF(_neuron(2), decay=0.7), sl.LI(decay=("beta2", "clamp"), alpha=("alpha2", "clamp"), decay_input=True,
                                         v_rest=0.2),
    {"beta2": (OUT,), "alpha2": ()}, loss=sl.Loss("ce_membrane_sum"))

# combinations: a leaky integrator inside, stride and padding, pooling that drops a remainder, BatchNorm per
# step on maps with a dropout mask, every option at once, three layers
CASES["LI hidden population -> LIF"] = lambda: _two_layers(sl.LI(decay=0.7), sl.LIF(_neuron(0), decay=0.6))
CASES["conv stride 2, no padding"] = lambda: _problem(
    (sl.Conv("Wc", "bc", 2, 0), sl.LIF(_neuron(0), decay=0.6), sl.Flatten(), sl.Affine("W2", "b2"),
     sl.LIF(_neuron(0), decay=0.6)), {**CONV, "W2": (OUT, 12)}, in_shape=CONV_IN, scale=0.5)
CASES["conv 7x7 -> 5x5 -> max pool dropping a row and a column"] = lambda: _problem(
    (sl.Conv("Wc", "bc", 1, 0), sl.Pool("max", 2), sl.LIF(_neuron(1), decay=0.6), sl.Flatten(), sl.Affine("W2", "b2"),
     sl.LIF(_neuron(1), decay=0.6)), {**CONV, "W2": (OUT, 12)}, in_shape=(2, 7, 7), scale=0.4)
CASES["batchnorm2d step batch, dropout on maps, sum pool"] = lambda: _problem(
    (sl.Conv("Wc", None, 1, 1), sl.BatchNorm(*BN_KEYS, over="step"), sl.Dropout("mask1"), sl.LIF(_neuron(2), decay=0.6),
     sl.Pool("sum", 2), sl.Flatten(), sl.Affine("W2", "b2"), sl.LIF(_neuron(2), decay=0.6)),
    {"Wc": (3, 2, 3, 3), "gamma1": (3,), "shift1": (3,), "mean1": (3,), "var1": (3,), "W2": (OUT, 27), "b2": (OUT,)},
    in_shape=CONV_IN, scale=0.5, data={"mask1": (np.random.default_rng(3).random((B, 3, 6, 6)) < 0.8) / 0.8})
CASES["every option at once: delayed detached '>=' subtract, learned sigmoid decay, threshold, alpha, "
      "recurrence with a bias"] = lambda: _two_layers(
    sl.LIF(_neuron(4, reset="subtract", timing="delayed", detach=True, strict=False, decay_input=True, v_rest=0.05),
           decay=("tau_w1", "sigmoid"), threshold=("thr1", "identity"), recurrent=("V1", "one", "c1"),
           alpha=("alpha1", "clamp")),
    sl.LIF(_neuron(5, reset=sl.ToValue(0.3), timing="delayed"), decay=("beta2", "clamp"),
           threshold=("thr2", "identity")),
    {"tau_w1": (HIDDEN,), "thr1": (HIDDEN,), "V1": (HIDDEN,), "c1": (HIDDEN,), "alpha1": (HIDDEN,), "beta2": (),
     "thr2": (OUT,)}, scale=1.5)
CASES["three layers: exp reset, step batchnorm (running), delayed recurrent, ce_count"] = lambda: _problem(
    (sl.Affine("W1", "b1"), sl.LIF(_neuron(0, reset="exp"), decay=0.4), sl.Affine("W2", "b2"),
     sl.BatchNorm(*BN_KEYS, over="step", mode="running"),
     sl.LIF(_neuron(3, reset="none", timing="delayed"), decay=0.5, recurrent=("V1", "all")), sl.Affine("W3", "b3"),
     sl.LIF(_neuron(6), decay=0.6)),
    {**DENSE, "W2": (HIDDEN, HIDDEN), "b2": (HIDDEN,), **BN, "V1": (HIDDEN, HIDDEN), "W3": (OUT, HIDDEN), "b3": (OUT,)},
    loss=sl.Loss("ce_count"))

NAMES = list(CASES)


def _both(case):
    info_np, info_t = {}, {}
    L_np, g_np = case.net.loss_and_grad(case.params, case.x, case.y, case.data, info=info_np)
    L_t, g_t = golds.stack_loss_and_grad(case.net, case.params, case.x, case.y, case.data, info=info_t)
    return (L_np, g_np, info_np), (L_t, g_t, info_t)


@pytest.mark.parametrize("name", NAMES)
def test_stack_equals_torch_autograd(name):
    """Same spikes (exactly: a Heaviside of the same potentials), same loss (TWIN_REL), same gradients under
    the same keys (TORCH_REL, per tensor, relative: gradcheck.compare)."""
    case = CASES[name]()
    rates = _rates(case.net, case.params, case.x, case.data)
    assert rates and _fires(rates), f"firing rates {rates}: every spiking population must fire on 2-98 % of steps"
    (L_np, g_np, info_np), (L_t, g_t, info_t) = _both(case)
    assert len(info_np["spikes"]) == len(info_t["spikes"])
    for n, (a, b) in enumerate(zip(info_np["spikes"], info_t["spikes"])):
        assert np.array_equal(a, b), f"population {n + 1}: the spikes differ"
    assert_close(L_t, L_np, TWIN_REL, what="loss")
    rep = gradcheck.compare(g_np, g_t, tol=TORCH_REL, title=f"stbp_layers vs torch autograd: {name}")
    assert rep.passed, str(rep)
    assert all(np.any(v) for v in g_t.values()), \
        f"a parameter gets no gradient, so the comparison says little: {[k for k, v in g_t.items() if not np.any(v)]}"


BN_BATCH = ["batchnorm time_batch batch", "batchnorm step batch", "batchnorm2d time_batch batch",
            "batchnorm2d step batch, dropout on maps, sum pool"]


@pytest.mark.parametrize("name", BN_BATCH)
def test_batchnorm_running_statistics_equal_torchs(name):
    """The next running mean and variance (PyTorch's rule, the variance unbiased; one update per step for
    over="step") equal the buffers torch's batch_norm updated in place."""
    case = CASES[name]()
    (_, _, info_np), (_, _, info_t) = _both(case)
    assert set(info_np["state"]) == set(info_t["state"]) == {"mean1", "var1"}
    for k in ("mean1", "var1"):
        assert_close(info_np["state"][k], info_t["state"][k], TWIN_REL, what=f"state[{k!r}]")
        assert not np.allclose(info_t["state"][k], case.params[k]), f"{k}: torch did not update it"


def test_the_comparison_can_fail():
    """Detaching the reset changes the gradient far beyond TORCH_REL: the cases can tell two networks apart."""
    case = CASES["reset zero immediate attached"]()
    _, g_np = case.net.loss_and_grad(case.params, case.x, case.y)
    nrn = replace(case.net.pieces[1].neuron, detach=True)
    other = sl.Network((case.net.pieces[0], sl.LIF(nrn, decay=0.6), case.net.pieces[2], sl.LIF(nrn, decay=0.6)),
                       case.net.loss)
    assert golds.stack_loss_and_grad(other, case.params, case.x, case.y)[0] == pytest.approx(
        case.net.loss_and_grad(case.params, case.x, case.y)[0], rel=TWIN_REL)        # the same forward
    _, g_t = golds.stack_loss_and_grad(other, case.params, case.x, case.y)
    assert not gradcheck.compare(g_np, g_t, tol=TORCH_REL).passed


def test_a_custom_loss_has_no_torch_form():
    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(_neuron(0))),
                     sl.Loss("custom", fn=lambda o, u, y: (0.0, None, None)))
    params = {"W1": np.ones((OUT, N_IN)), "b1": np.zeros(OUT)}
    with pytest.raises(NotImplementedError, match="custom"):
        golds.stack_loss_and_grad(net, params, np.ones((T, B, N_IN)), np.zeros(B, dtype=int))


def test_a_voting_readout_agrees_with_torch():
    """Vote (spikingjelly's VotingLayer, avg_pool1d over neurons) after the last population, 7 neurons in groups of
    2 (the last dropped), a rate and a count loss."""
    for kind in ("mse_rate", "ce_count"):
        net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(sl.Neuron(reset="subtract", surrogate="atan", width=0.4),
                                                        decay=0.7),
                          sl.Affine("W2", "b2"), sl.LIF(sl.Neuron(surrogate="sigmoid", width=0.3), decay=0.6),
                          sl.Vote(2)), sl.Loss(kind))
        rng = np.random.default_rng(11)
        params = {"W1": 1.5 * rng.standard_normal((5, 6)), "b1": 0.3 + 0.2 * rng.standard_normal(5),
                  "W2": 1.5 * rng.standard_normal((7, 5)), "b2": 0.3 + 0.2 * rng.standard_normal(7)}
        x = (rng.random((6, 4, 6)) < 0.5).astype(float)
        y = rng.integers(0, 3, 4)
        loss, g = net.loss_and_grad(params, x, y)
        t_loss, tg = golds.stack_loss_and_grad(net, params, x, y)
        assert loss == pytest.approx(t_loss, rel=TWIN_REL)
        rep = gradcheck.compare(g, tg, tol=TORCH_REL)
        assert rep.passed, str(rep)
