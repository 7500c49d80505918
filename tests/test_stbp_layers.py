"""STBP as a stack of layers (refsnn.stbp_layers): it computes refsnn.stbp's networks, and every piece that
stbp cannot express is the exact gradient of its reference objective (finite differences, float64).

Each new piece is checked in a small network where every spiking population fires on 2-98 % of its steps
(found by a seeded search), with smooth surrogates (atan, sigmoid) so that the anchored objective has no
kink for a finite difference to straddle; the max choices (max pooling, max over time) are frozen in the
objective, as in refsnn.stbp.
"""
import contextlib
from dataclasses import replace

import numpy as np
import pytest
from tolerances import GRAD_FD_REL, TWIN_REL

from refsnn import stbp
from refsnn.checking import gradcheck
from refsnn.harness import problems
from refsnn import stbp_layers as sl
from refsnn.blocks import spike_products

# ---------------------------------------------------------------------------
# The stack computes refsnn.stbp's network, every variant of its gradient-check set
# ---------------------------------------------------------------------------

STBP_CASES = [c for c in problems.gradcheck_cases("stbp", 0) if c.cfg.forward == "spike"]


@pytest.mark.parametrize("case", STBP_CASES, ids=[c.label.replace("stbp ", "") for c in STBP_CASES])
def test_the_stack_computes_stbps_network(case):
    """Same spikes (every potential is KINK_MARGIN from its threshold: round-off cannot flip one), loss and
    gradients to the round-off of two orders of summation (TWIN_REL), and the stack's own gradient is the
    exact gradient of its own reference objective."""
    net, ishape = sl.from_config(case.cfg, case.params)
    x = np.asarray(case.x).reshape(case.x.shape[0], case.x.shape[1], *ishape)
    info = {}
    loss, g = net.loss_and_grad(case.params, x, case.y, info=info)
    ref_loss, ref = stbp.loss_and_grad(case.params, case.x, case.y, case.cfg)
    _, o = stbp.simulate(case.params, case.x, case.cfg)
    for n, (a, b) in enumerate(zip(info["spikes"], o)):
        assert np.array_equal(a.reshape(b.shape), b), f"layer {n + 1}: the spikes differ"
    assert loss == pytest.approx(ref_loss, rel=TWIN_REL)
    rep = gradcheck.compare(g, ref, tol=TWIN_REL)
    assert rep.passed, str(rep)
    fd = gradcheck.check_gradients(g, net.reference_objective(case.params, x, case.y), case.params,
                                   tol=GRAD_FD_REL, eps=case.eps, order=case.order,
                                   title=f"stbp_layers (readable): {case.label}")
    assert fd.passed, str(fd)
    calls = _fast_equals_readable(net, case.params, x, case.y, None, loss, g, case.label)
    assert calls or case.cfg.arch is not None          # a dense net's Affines (spike inputs) added columns


@pytest.mark.parametrize("name", ["paper", "code", "code_fc"])
def test_the_stack_computes_the_papers_network(name):
    """The paper's network (stbp.paper_loss_and_grad, the first code of refsnn.stbp) and the stack built for its
    presets: the same loss and gradients to TWIN_REL."""
    cfg = replace(stbp.PRESETS[name], T=6)
    cfg = replace(cfg, v_th=0.5, decay=0.3) if name == "paper" else cfg
    params, x, y = problems.stbp_problem(cfg, 3)
    net, _ = sl.from_config(cfg, params)
    loss, g = net.loss_and_grad(params, x, y)
    paper_loss, paper = stbp.paper_loss_and_grad(params, x, y, cfg)
    assert loss == pytest.approx(paper_loss, rel=TWIN_REL)
    rep = gradcheck.compare(g, paper, tol=TWIN_REL)
    assert rep.passed, str(rep)


# ---------------------------------------------------------------------------
# Networks stbp cannot express: each checked by finite differences
# ---------------------------------------------------------------------------

T, B = 6, 4
ATAN = sl.Neuron(reset="subtract", surrogate="atan", width=0.4)


def _params(shapes, seed, scale):
    rng = np.random.default_rng(seed)
    out = {}
    for k, shape in shapes.items():
        if k.startswith(("bn_gamma",)):
            out[k] = 1.0 + 0.2 * rng.standard_normal(shape)
        elif k.startswith(("bn_beta",)):
            out[k] = 0.3 + 0.2 * rng.standard_normal(shape)
        elif k.startswith("bn_mean"):
            out[k] = 0.1 * rng.standard_normal(shape)
        elif k.startswith("bn_var"):
            out[k] = 0.5 + rng.random(shape)
        elif k.startswith(("beta", "alpha")):
            out[k] = 0.3 + 0.5 * rng.random(shape)                     # inside the clamp's (0, 1)
        elif k.startswith("tau_w"):
            out[k] = rng.standard_normal(shape)
        elif k.startswith("thr"):
            out[k] = 0.8 + 0.4 * rng.random(shape)
        elif k.startswith("V"):
            out[k] = scale * 0.5 * rng.standard_normal(shape)
        elif k.startswith("b"):
            out[k] = 0.2 + 0.3 * rng.standard_normal(shape)
        else:
            out[k] = scale * rng.standard_normal(shape)
    return out


def _firing(net, params, x, data):
    """The firing rate of every spiking population."""
    pops = [p for p in net.pieces if isinstance(p, sl.LIF)]
    return [float(o.mean()) for (u, o), p in zip(net.simulate(params, x, data), pops) if p.spiking]


def _problem(net, shapes, in_shape, *, data=None, seed0=0, scale=1.0, y=None):
    """A seeded (params, x, y) on which every spiking population fires on 2-98 % of its steps."""
    for seed in range(seed0, seed0 + 60):
        rng = np.random.default_rng(1000 + seed)
        x = (rng.random((T, B, *in_shape)) < 0.5).astype(float)
        params = _params(shapes, seed, scale)
        rates = _firing(net, params, x, data)
        if all(0.02 < r < 0.98 for r in rates):
            labels = rng.integers(0, 3, B) if y is None else y
            return params, x, labels
    raise AssertionError(f"no seed makes every population fire in 2-98 % of steps: last rates {rates}")


def _fd(net, params, x, y, data=None, title=""):
    """FD of the reference objective against the readable forms' gradient; then the fast tier
    (backend="numba": stbp's kernels where a population allows them) against the readable forms."""
    loss, g = net.loss_and_grad(params, x, y, data)
    objective = net.reference_objective(params, x, y, data)
    rep = gradcheck.check_gradients(g, lambda q: objective({**params, **q}),       # buffers stay as they are
                                    {k: v for k, v in params.items() if k in g}, tol=GRAD_FD_REL,
                                    title=f"stbp_layers (readable): {title}")
    assert rep.passed, str(rep)
    assert any(np.any(v) for v in g.values())
    _fast_equals_readable(net, params, x, y, data, loss, g, title)
    return rep


@contextlib.contextmanager
def _events_everywhere():
    """Every Affine of the fast tier whose input is spikes adds weight columns (refsnn.blocks.spike_products),
    however small or busy; yields the list of the weight shapes it did so for."""
    saved = spike_products.MIN_OUT, spike_products.MAX_DENSITY, spike_products.matmul
    calls = []
    spike_products.MIN_OUT, spike_products.MAX_DENSITY = 1, 1.0
    spike_products.matmul = lambda lists, W: calls.append(W.shape) or saved[2](lists, W)
    try:
        yield calls
    finally:
        spike_products.MIN_OUT, spike_products.MAX_DENSITY, spike_products.matmul = saved


def _fast_equals_readable(net, params, x, y, data, loss, g, title):
    """The same spikes, and loss and gradients to the round-off of two orders of the same operations; on the
    fast tier as it decides, and with every Affine of a spike input adding weight columns.  Returns the weight
    shapes of the Affines that added columns in the second run."""
    fast = replace(net, backend="numba")
    info_r = {}
    net.loss_and_grad(params, x, y, data, info=info_r)
    for events in (False, True):
        how = "kernels, event-driven products" if events else "kernels"
        info_f = {}
        with (_events_everywhere() if events else contextlib.nullcontext()) as calls:
            loss_f, g_f = fast.loss_and_grad(params, x, y, data, info=info_f)
        for n, (a, b) in enumerate(zip(info_f["spikes"], info_r["spikes"])):
            assert np.array_equal(a, b), f"{title}: population {n + 1} spikes differently on the {how}"
        assert loss_f == pytest.approx(loss, rel=TWIN_REL)
        # A tensor whose gradient vanishes exactly (a bias before BatchNorm) holds round-off of the size of the
        # whole computation on both sides: judge every tensor against at least a tenth of the largest one.
        rep = gradcheck.compare(g_f, g, tol=TWIN_REL, floor_rel=0.1, title=f"stbp_layers ({how} vs readable): {title}")
        assert rep.passed, str(rep)
    return calls


DENSE = {"W1": (5, 6), "b1": (5,), "W2": (3, 5), "b2": (3,)}
BN = {"bn_gamma": (5,), "bn_beta": (5,), "bn_mean": (5,), "bn_var": (5,)}


def _bn(**kw):
    return sl.BatchNorm("bn_gamma", "bn_beta", "bn_mean", "bn_var", **kw)


@pytest.mark.parametrize("over", ["time_batch", "step"])
@pytest.mark.parametrize("mode", ["batch", "running"])
def test_batchnorm_between_a_layer_and_its_neuron(over, mode):
    net = sl.Network((sl.Affine("W1", "b1"), _bn(over=over, mode=mode), sl.LIF(ATAN, decay=0.7),
                      sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=0.7)))
    params, x, y = _problem(net, {**DENSE, **BN}, (6,))
    _fd(net, params, x, y, title=f"BatchNorm over {over}, {mode}")
    info = {}
    net.loss_and_grad(params, x, y, info=info)
    if mode == "batch":
        assert set(info["state"]) == {"bn_mean", "bn_var"}
        assert not np.allclose(info["state"]["bn_mean"], params["bn_mean"])
    else:
        assert info["state"] == {}


def test_batchnorm2d_between_a_convolution_and_its_neuron():
    net = sl.Network((sl.Conv("W1", "b1", 1, 1), sl.BatchNorm("g1", "be1", "m1", "v1"), sl.LIF(ATAN, decay=0.6),
                      sl.Flatten(), sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=0.6)))
    shapes = {"W1": (3, 2, 3, 3), "b1": (3,), "g1": (3,), "be1": (3,), "m1": (3,), "v1": (3,), "W2": (3, 3 * 5 * 5),
              "b2": (3,)}
    params, x, y = _problem(net, shapes, (2, 5, 5), scale=0.5)
    params["g1"], params["v1"] = 1.0 + 0.1 * params["g1"], 1.0 + 0.1 * np.abs(params["v1"])
    _fd(net, params, x, y, title="BatchNorm2d")


@pytest.mark.parametrize("per_step", [False, True])
def test_dropout_with_a_given_mask(per_step):
    net = sl.Network((sl.Affine("W1", "b1"), sl.Dropout("m1"), sl.LIF(ATAN, decay=0.7), sl.Affine("W2", "b2"),
                      sl.LIF(ATAN, decay=0.7)))
    rng = np.random.default_rng(5)
    mask = (rng.random((T, B, 5) if per_step else (B, 5)) < 0.8) / 0.8
    params, x, y = _problem(net, DENSE, (6,), data={"m1": mask})
    _fd(net, params, x, y, {"m1": mask}, title=f"dropout, {'a mask per step' if per_step else 'one mask'}")
    _, g = net.loss_and_grad(params, x, y, {"m1": mask})
    dropped = np.all(np.broadcast_to(mask, (T, B, 5)) == 0, axis=(0, 1))
    assert np.all(g["b1"][dropped] == 0), "a unit dropped everywhere gets no gradient"
    with pytest.raises(ValueError, match="data\\['m1'\\]"):
        net.loss_and_grad(params, x, y, {"m1": np.ones((3, 3))})


CONV = {"W1": (3, 2, 3, 3), "b1": (3,), "W2": (3, 12), "b2": (3,)}


@pytest.mark.parametrize("kind", ["avg", "max", "sum"])
def test_pooling_of_currents_before_the_neuron(kind):
    """snnTorch's tutorials 6-7: conv -> pool -> neuron (the currents are pooled)."""
    net = sl.Network((sl.Conv("W1", "b1", 1, 1), sl.Pool(kind, 2), sl.LIF(ATAN, decay=0.6), sl.Flatten(),
                      sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=0.6)))
    params, x, y = _problem(net, CONV, (2, 4, 4), scale=0.4 if kind != "sum" else 0.15)
    _fd(net, params, x, y, title=f"{kind} pooling of currents")


@pytest.mark.parametrize("kind", ["avg", "max", "sum"])
def test_pooling_of_spikes_after_the_neuron(kind):
    net = sl.Network((sl.Conv("W1", "b1", 1, 1), sl.LIF(ATAN, decay=0.6), sl.Pool(kind, 2), sl.Flatten(),
                      sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=0.6)))
    params, x, y = _problem(net, CONV, (2, 4, 4), scale=0.5)
    _fd(net, params, x, y, title=f"{kind} pooling of spikes")


@pytest.mark.parametrize("kind", ["all", "one", "all+bias"])
@pytest.mark.parametrize("synapse", [False, True])
def test_recurrent_weights_inside_a_population(kind, synapse):
    """snnTorch RLeaky(all_to_all=True / False) (its recurrent nn.Linear has a bias); with a current synapse,
    norse's LIFRecurrentCell shape."""
    alpha = ("alpha1", "clamp") if synapse else None
    rec = ("V1", "all", "c1") if kind == "all+bias" else ("V1", kind)
    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN, decay=0.7, recurrent=rec, alpha=alpha),
                      sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=0.7)))
    shapes = {**DENSE, "V1": (5,) if kind == "one" else (5, 5)}
    if kind == "all+bias":
        shapes["c1"] = (5,)
    if synapse:
        shapes["alpha1"] = ()
    params, x, y = _problem(net, shapes, (6,))
    rep = _fd(net, params, x, y, title=f"recurrent {kind}{', learned synaptic decay' if synapse else ''}")
    assert rep["V1"].norm_reference > 0


def test_per_neuron_constants_and_learning_in_some_layers_only():
    """Fixed per-neuron thresholds and decays in layer 1; a learned decay (clamp) and threshold in layer 2
    only; spikingjelly's sigmoid decay in layer 3, with a delayed detached reset there."""
    rng = np.random.default_rng(3)
    delayed = sl.Neuron(reset="subtract", timing="delayed", detach=True, surrogate="sigmoid", width=0.3,
                        decay_input=True)
    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN, decay=0.4 + 0.5 * rng.random(5),
                                                     threshold=0.8 + 0.4 * rng.random(5)),
                      sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=("beta2", "clamp"), threshold=("thr2", "identity")),
                      sl.Affine("W3", "b3"), sl.LIF(delayed, decay=("tau_w3", "sigmoid"))))
    shapes = {"W1": (5, 6), "b1": (5,), "W2": (4, 5), "b2": (4,), "beta2": (4,), "thr2": (), "W3": (3, 4),
              "b3": (3,), "tau_w3": ()}
    params, x, y = _problem(net, shapes, (6,), scale=1.5)
    params["tau_w3"] = np.asarray(-1.0)                                     # lam 0.73, a scale that fires
    _fd(net, params, x, y, title="per-neuron constants, learned in some layers")


@pytest.mark.parametrize("reset", ["exp", "zero", "v_reset", "subtract", "none"])
@pytest.mark.parametrize("timing", ["immediate", "delayed"])
def test_every_reset_and_timing_with_recurrence(reset, timing):
    r = sl.ToValue(-0.2) if reset == "v_reset" else reset
    neuron = sl.Neuron(reset=r, timing=timing, surrogate="atan", width=0.4)
    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(neuron, decay=0.6, recurrent=("V1", "all")),
                      sl.Affine("W2", "b2"), sl.LIF(neuron, decay=0.6)))
    params, x, y = _problem(net, {**DENSE, "V1": (5, 5)}, (6,))
    _fd(net, params, x, y, title=f"{reset} {timing} with recurrence")


SPIKE_LOSSES = ["mse_rate_paper", "mse_rate", "mse_count", "ce_rate", "ce_count", "ce_per_step"]
MEMBRANE_LOSSES = ["ce_membrane_sum", "ce_membrane_max", "ce_membrane_last", "mse_membrane"]


@pytest.mark.parametrize("kind", SPIKE_LOSSES)
def test_every_spike_readout(kind):
    loss = sl.Loss(kind, correct=0.8, incorrect=0.1) if kind == "mse_count" else sl.Loss(kind)
    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN, decay=0.7), sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=0.7)),
                     loss)
    params, x, y = _problem(net, DENSE, (6,))
    _fd(net, params, x, y, title=kind)


@pytest.mark.parametrize("readout", ["LI", "LIF"])
@pytest.mark.parametrize("kind", MEMBRANE_LOSSES)
def test_every_membrane_readout(kind, readout):
    """A leaky-integrator readout (norse's LICell shape, snnTorch's Leaky without reset read through its
    membrane), or the membrane of a spiking output layer (snnTorch tutorial 5)."""
    last = sl.LI(decay=0.8) if readout == "LI" else sl.LIF(ATAN, decay=0.7)
    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN, decay=0.7), sl.Affine("W2", "b2"), last), sl.Loss(kind))
    target = np.random.default_rng(9).standard_normal((T, B, 3)) if kind == "mse_membrane" else None
    params, x, y = _problem(net, DENSE, (6,), y=target)
    _fd(net, params, x, y, title=f"{kind}, {readout} readout")


@pytest.mark.parametrize("kind", ["mse_rate", "ce_count"])
def test_a_voting_readout_after_the_last_population(kind):
    """spikingjelly's VotingLayer: 7 output neurons vote in groups of 2 for 3 classes (the last one dropped)."""
    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN, decay=0.7), sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=0.7),
                      sl.Vote(2)), sl.Loss(kind))
    params, x, y = _problem(net, {"W1": (5, 6), "b1": (5,), "W2": (7, 5), "b2": (7,)}, (6,))
    rep = _fd(net, params, x, y, title=f"vote, {kind}")
    _, g = net.loss_and_grad(params, x, y)
    assert not np.any(g["W2"][6]) and np.any(g["W2"][:6]), "the dropped neuron gets no gradient, the voters do"
    assert rep.passed


def test_a_loss_of_your_own():
    """The open door: the user's loss and its gradients with respect to the output spikes and membrane."""
    w = np.random.default_rng(4).standard_normal((T, B, 3))

    def mine(o, u, y):
        return float(np.sum(w * o) + 0.5 * np.sum(u * u)), w, u

    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN, decay=0.7), sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=0.7)),
                     sl.Loss("custom", fn=mine))
    params, x, y = _problem(net, DENSE, (6,))
    _fd(net, params, x, y, title="custom loss")


def test_the_scale_of_the_rate_losses():
    """mse_rate is PyTorch's MSELoss of the rate, (2/C) times the paper's loss; mse_count with rates 1 and 0 is
    T times mse_rate (snnTorch's mse_count_loss divides the MSE of the counts, T^2 times the rates', by T)."""
    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN, decay=0.7), sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=0.7)))
    params, x, y = _problem(net, DENSE, (6,))
    values = {k: sl.Network(net.pieces, sl.Loss(k)).loss_and_grad(params, x, y)[0]
              for k in ("mse_rate", "mse_rate_paper", "mse_count")}
    assert values["mse_rate"] == pytest.approx(2 / 3 * values["mse_rate_paper"], rel=TWIN_REL)
    assert values["mse_count"] == pytest.approx(T * values["mse_rate"], rel=TWIN_REL)


# ---------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------

def test_bad_pieces_and_settings_are_named():
    with pytest.raises(ValueError, match="reset"):
        sl.Neuron(reset="nope")
    with pytest.raises(ValueError, match="timing"):
        sl.Neuron(timing="later")
    with pytest.raises(ValueError, match="width"):
        sl.Neuron(width=0.0)
    with pytest.raises(ValueError, match="kind"):
        sl.Pool("median", 2)
    with pytest.raises(ValueError, match="over"):
        _bn(over="channel")
    with pytest.raises(ValueError, match="decay: the exp reset"):
        sl.LIF(sl.Neuron(reset="exp"), decay=("beta1", "clamp"))
    with pytest.raises(ValueError, match="recurrent"):
        sl.LIF(ATAN, recurrent=("V1", "some"))
    with pytest.raises(ValueError, match="kind"):
        sl.Loss("hinge")
    with pytest.raises(ValueError, match="fn"):
        sl.Loss("custom")
    with pytest.raises(ValueError, match="leaky integrator"):
        sl.Network((sl.Affine("W1"), sl.LI()), sl.Loss("ce_rate"))
    with pytest.raises(ValueError, match="nothing may follow"):
        sl.Network((sl.Affine("W1"), sl.LIF(ATAN), sl.Affine("W2")))
    with pytest.raises(ValueError, match="membrane loss reads the last population"):
        sl.Network((sl.Affine("W1"), sl.LIF(ATAN), sl.Vote(2)), sl.Loss("ce_membrane_sum"))
    with pytest.raises(ValueError, match="k: expected a positive int"):
        sl.Vote(0)
    with pytest.raises(ValueError, match="neuron population"):
        sl.Network((sl.Affine("W1"),))
    net = sl.Network((sl.Affine("W1", "b1"), sl.Dropout("m"), sl.LIF(ATAN)))
    with pytest.raises(ValueError, match="data\\['m'\\]"):
        net.loss_and_grad({"W1": np.ones((3, 2)), "b1": np.zeros(3)}, np.ones((2, 1, 2)), [0])
    with pytest.raises(ValueError, match="x"):
        net.loss_and_grad({"W1": np.ones((3, 2)), "b1": np.zeros(3)}, np.ones((2, 2)), [0])


def test_a_weight_of_the_wrong_width_is_named_on_both_tiers():
    """An Affine whose weight does not fit its input: the fast tier (which may add weight columns for spikes
    instead of multiplying) refuses it with the readable tier's message, rather than reading out of bounds."""
    net = sl.Network((sl.Affine("W1"), sl.LIF(ATAN, decay=0.7)))
    params = {"W1": np.ones((64, 10))}
    x = (np.random.default_rng(0).random((3, 4, 12)) < 0.2).astype(float)   # 12 inputs, W1 takes 10
    for backend in ("numpy", "numba"):
        with _events_everywhere():
            with pytest.raises(ValueError, match=r"pieces\[0\] \(Affine\): its input has shape \(3, 4, 12\)"):
                replace(net, backend=backend).simulate(params, x)


def test_bad_parameters_are_named():
    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN), sl.Affine("W2", "b2"), sl.LIF(ATAN)))
    params = {"W1": np.ones((5, 6)), "b1": np.zeros(5), "W2": np.ones((3, 5)), "b2": np.zeros(3)}
    x, y = np.ones((T, B, 6)), np.zeros(B, dtype=int)
    with pytest.raises(ValueError, match="params: no 'W2' \\(pieces\\[2\\], Affine\\)"):
        net.loss_and_grad({k: v for k, v in params.items() if k != "W2"}, x, y)
    with pytest.raises(ValueError, match="pieces\\[2\\] \\(Affine\\): its input has shape"):
        net.loss_and_grad({**params, "W2": np.ones((3, 4))}, x, y)
    with pytest.raises(ValueError, match="params\\['b1'\\]: contains 1 NaN"):
        net.loss_and_grad({**params, "b1": np.array([np.nan, 0, 0, 0, 0])}, x, y)
    with pytest.raises(ValueError, match="pieces\\[0\\] \\(Affine\\)"):
        net.loss_and_grad(params, np.ones((T, B, 7)), y)


def test_from_config_refuses_the_smoothed_forward():
    cfg = replace(stbp.PRESETS["code"], forward="smooth")
    with pytest.raises(ValueError, match="forward"):
        sl.from_config(cfg, {"W1": np.ones((3, 2)), "b1": np.zeros(3)})


def test_the_fast_tier_runs_the_kernels_where_a_population_allows_them(monkeypatch):
    """backend="numba" sends every spiking population without all-to-all recurrence or a learned synaptic
    decay through stbp's kernels (counted here), the rest through the readable forms; the default is the
    readable forms."""
    calls = []
    for name in ("_lif_forward_kernel", "_lif_backward_kernel"):
        kernel = getattr(stbp, name)
        monkeypatch.setattr(stbp, name, lambda *a, _k=kernel, _n=name: calls.append(_n) or _k(*a))
    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN, decay=0.7, recurrent=("V1", "all")),
                      sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=0.7)))
    params, x, y = _problem(net, {**DENSE, "V1": (5, 5)}, (6,))
    net.loss_and_grad(params, x, y)
    assert calls == []
    replace(net, backend="numba").loss_and_grad(params, x, y)
    assert calls == ["_lif_forward_kernel", "_lif_backward_kernel"], calls     # the output layer only
    # one recurrent weight per neuron runs on the kernels too (its recurrence is element-wise), both layers
    one = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN, decay=0.7, recurrent=("V1", "one")),
                      sl.Affine("W2", "b2"), sl.LIF(ATAN, decay=0.7)))
    params, x, y = _problem(one, {**DENSE, "V1": (5,)}, (6,))
    calls.clear()
    loss_k, g_k = replace(one, backend="numba").loss_and_grad(params, x, y)
    assert calls.count("_lif_forward_kernel") == 2 and calls.count("_lif_backward_kernel") == 2, calls
    loss_r, g_r = one.loss_and_grad(params, x, y)
    assert loss_k == pytest.approx(loss_r, rel=TWIN_REL)
    assert gradcheck.compare(g_k, g_r, tol=TWIN_REL, floor_rel=0.1, title="recurrent one: kernels").passed
    assert np.any(g_k["V1"] != 0)
    with pytest.raises(ValueError, match="backend"):
        replace(net, backend="cuda")


@pytest.mark.parametrize("recurrent", [False, True])
def test_an_input_gain_and_a_scale(recurrent):
    """A constant per-neuron input gain before the synapse (a NIR neuron's r, w_in and dt/tau: the whole input,
    recurrent part included, is scaled) and a Scale piece between layers: the pullbacks by FD, both tiers."""
    rng = np.random.default_rng(5)
    gain = 0.5 + rng.random(5)
    rec = ("V1", "all", "c1") if recurrent else None
    net = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN, decay=0.7, gain=gain, recurrent=rec, alpha=0.6),
                      sl.Scale(0.5 + rng.random(5)), sl.Affine("W2", "b2"),
                      sl.LIF(ATAN, decay=0.7, gain=1.7)))
    shapes = {**DENSE, **({"V1": (5, 5), "c1": (5,)} if recurrent else {})}
    params, x, y = _problem(net, shapes, (6,))
    _fd(net, params, x, y, title=f"input gain{' with recurrence' if recurrent else ''} and a Scale")
    # the gain is the input scaled: the same population without it, fed g * I, spikes identically
    plain = sl.Network((sl.Affine("W1", "b1"), sl.Scale(gain), sl.LIF(ATAN, decay=0.7, alpha=0.6)))
    gained = sl.Network((sl.Affine("W1", "b1"), sl.LIF(ATAN, decay=0.7, alpha=0.6, gain=gain)))
    (u1, o1), = plain.simulate(params, x)
    (u2, o2), = gained.simulate(params, x)
    assert np.array_equal(o1, o2) and np.array_equal(u1, u2)    # the same products in the same order
