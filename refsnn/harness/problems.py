"""Small seeded test problems, and the gradient-check cases built on them, for all four algorithms.

A *problem* is ``(params, x, y)``: a few neurons, a few samples, drawn from a
seed so that every layer is active and the finite differences of the
algorithm's ``reference_objective`` are exact.  Two rules make them so, shared
by all four algorithms:

* **one retry loop**, :func:`search`: candidate ``k`` is drawn from
  ``np.random.default_rng([seed, k])`` until one passes the algorithm's test,
  so the same seed always gives the same problem;
* **one margin rule**: every quantity at which the smooth objective has a kink
  (STBP's ``u - v_th`` at a corner of the surrogate's primitive, IDE's and
  SSNN-BP's pre-activations at 0 and 1) stays at least :data:`KINK_MARGIN`
  from it.  A central difference with step ``eps = 1e-6`` moves those
  quantities by about ``1e-6`` times their sensitivity (of order 1 here), so
  a margin 1000 times larger means no perturbation crosses a kink.  IDE's
  feedback must also be a contraction with room to spare:
  ``contraction_bound < CONTRACTION_MARGIN``.

:func:`gradcheck_cases` lists, per algorithm, the problems ``refsnn gradcheck
ALGO`` runs: every variant of the model that changes the gradient.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

import refsnn
from refsnn import ide, ssnn_bp, st_rsbp, stbp
from refsnn.blocks import surrogates
from refsnn.blocks._checks import check_int
from refsnn.checking.gradcheck import Case

__all__ = [
    "KINK_MARGIN",
    "CONTRACTION_MARGIN",
    "search",
    "stbp_problem",
    "STBP_FAMILY",
    "STBP_CONV",
    "ide_problem",
    "ST_RSBP_SMALL",
    "st_rsbp_problem",
    "ssnn_bp_problem",
    "gradcheck_cases",
    "CASES",
]

#: Smallest distance of any kink-sensitive quantity from a kink (see the module docstring).
KINK_MARGIN = 1e-3
#: IDE problems keep the bound ``||W|| prod ||F^l|| / v_th^N`` on ``||J||`` below this.
CONTRACTION_MARGIN = 0.9


def search(make, seed: int, *, tries: int, what: str):
    """The first problem ``make(rng)`` returns (not None), trying ``rng = default_rng([seed, k])``, k = 0, 1, ...

    ``make`` draws a candidate from ``rng`` and returns it, or None to reject it.
    Raises RuntimeError after ``tries`` rejections.
    """
    for k in range(tries):
        problem = make(np.random.default_rng([seed, k]))
        if problem is not None:
            return problem
    raise RuntimeError(f"{what}: no valid problem in {tries} tries from seed {seed}")  # pragma: no cover


# ---------------------------------------------------------------------------
# STBP
# ---------------------------------------------------------------------------

def stbp_problem(cfg, seed: int = 0, sizes=(6, 5, 4, 3), T: int = 5, batch: int = 4, margin: float = KINK_MARGIN):
    """A random STBP problem with spikes in every layer and no ``u - v_th`` within ``margin`` of a kink.

    Weights from PyTorch's default init times 2.5, biases + 0.3, Bernoulli(0.5)
    input.  The margin holds for the spiking and for the smoothed
    (``forward="smooth"``) network, so the same problem serves both checks.
    With ``cfg.arch`` the architecture gives the sizes (``sizes`` is ignored).
    """
    if cfg.arch is not None:
        input_shape, specs = stbp.parse_arch(cfg.arch)
        sizes = (int(np.prod(input_shape)), *(sp.n_out for sp in specs))
    spiking, smooth = replace(cfg, forward="spike"), replace(cfg, forward="smooth")
    # with a scaled input (decay_input: kappa = 1 - lam) the weights are scaled up to keep the layers active
    lam = np.mean(cfg.decay) if cfg.learn_decay == "none" else 0.3
    gain = 2.5 / (1.0 - lam) if cfg.decay_input else 2.5

    def make(rng):
        params = stbp.init_params(None if cfg.arch else sizes, replace(cfg, init="torch"), rng)
        for n in range(1, len(sizes)):
            params[f"W{n}"] *= gain
            params[f"b{n}"] += 0.3 * gain / 2.5
        x = (rng.random((T, batch, sizes[0])) < 0.5).astype(float)
        y = rng.integers(0, sizes[-1], batch)
        _, o = stbp.forward_numpy(params, x, cfg)
        if (all(on.mean() > 0.05 for on in o) and stbp.kink_distance(params, x, spiking) > margin
                and stbp.kink_distance(params, x, smooth) > margin):
            return params, x, y
        return None

    return search(make, seed, tries=1000, what="stbp_problem")


#: Convolutional STBP nets, one per synaptic operation (with the official code's neuron and the snnTorch
#: one): a convolution, padding and stride, average and max pooling of spikes, a dense layer on flattened
#: maps, and pooling the input itself.
STBP_CONV = [
    ("conv 3x3 + dense", "6x6x2-3c3-4", {}),
    ("conv padded, avg pool", "6x6x2-3c3p1-ap2-4", {}),
    ("conv stride 2, max pool", "7x7x1-2c3s2p1-mp2-3", {}),
    ("avg-pooled input, conv", "8x8x1-ap2-2c3-5", {}),
    ("two convs, max pool between, snnTorch neuron", "6x6x1-2c3p1-mp2-3c2-4",
     dict(surrogate="atan", width=0.3, reset="subtract", reset_timing="delayed", detach_reset=True)),
]


#: The neuron settings of the PyTorch SNN libraries (and a few more), as STBP configurations: each changes
#: the model, so each gets its own gradient check.  Applied on top of v_th 0.5, decay 0.3, MSELoss.
STBP_FAMILY = [
    ("snnTorch Leaky: subtract, delayed, detached, atan",
     dict(surrogate="atan", width=0.3, reset="subtract", reset_timing="delayed", detach_reset=True)),
    ("snnTorch Leaky zero / Synaptic zero: zero, delayed, detached",
     dict(surrogate="atan", width=0.3, reset="zero", reset_timing="delayed", detach_reset=True)),
    ("snnTorch Leaky none", dict(surrogate="atan", width=0.3, reset="none")),
    ("snnTorch reset_delay=False zero: immediate, attached", dict(surrogate="atan", width=0.3, reset="zero")),
    ("snnTorch learn_beta + learn_threshold", dict(surrogate="atan", width=0.3, reset="subtract",
                                                   reset_timing="delayed", detach_reset=True, learn_decay="clamp",
                                                   learn_threshold=True)),
    ("snnTorch Synaptic: current synapse, subtract delayed", dict(surrogate="fast_sigmoid", width=0.3,
                                                                  reset="subtract", reset_timing="delayed",
                                                                  detach_reset=True, synapse="current",
                                                                  syn_decay=0.7)),
    ("spikingjelly LIFNode: decay_input, hard reset, >=, sigmoid",
     dict(surrogate="sigmoid", width=0.25, reset="zero", strict=False, decay_input=True)),
    ("spikingjelly LIFNode soft reset", dict(surrogate="sigmoid", width=0.25, reset="subtract", strict=False,
                                             decay_input=True)),
    ("spikingjelly LIFNode v_reset -0.2, detached", dict(surrogate="atan", width=0.3, reset="v_reset", v_reset=-0.2,
                                                         v_rest=-0.2, strict=False, decay_input=True,
                                                         detach_reset=True)),
    ("spikingjelly IFNode", dict(surrogate="sigmoid", width=0.25, decay=1.0, reset="zero", strict=False)),
    ("spikingjelly ParametricLIFNode", dict(surrogate="sigmoid", width=0.25, reset="zero", strict=False,
                                            decay_input=True, learn_decay="sigmoid")),
    ("spikingjelly ParametricLIFNode, decay_input=False", dict(surrogate="sigmoid", width=0.25, reset="zero",
                                                               strict=False, learn_decay="sigmoid")),
    ("norse LIFCell: current synapse, input scaled, to v_reset", dict(surrogate="fast_sigmoid", width=1.0, decay=0.7,
                                                                     reset="zero", decay_input=True,
                                                                     synapse="current", syn_decay=0.8)),
    ("norse LIFBoxCell with v_leak 0.1", dict(surrogate="fast_sigmoid", width=1.0, decay=0.7, reset="zero",
                                              decay_input=True, v_rest=0.1)),
    ("per-layer thresholds and decays", dict(v_th=(0.5, 0.6, 0.4), decay=(0.3, 0.2, 0.5))),
    ("reset to v_reset 0.1, immediate, attached", dict(reset="v_reset", v_reset=0.1)),
]


def _stbp_cases(seed: int) -> list:
    """The paper's four surrogates x {exp, zero} reset x detached/attached x loss (32 cases), then every
    setting of :data:`STBP_FAMILY`; one 6-5-4-3 net, T = 5, batch 4."""
    cases = []
    for sur in ("rect", "triangle", "sigmoid", "gauss"):
        for reset in ("exp", "zero"):
            for detach in (False, True):
                for loss in stbp.LOSSES:
                    cfg = stbp.Config(v_th=0.5, decay=0.3, surrogate=sur,
                                      width=1.0 if sur in ("rect", "triangle") else 0.4,
                                      reset=reset, detach_reset=detach, loss=loss)
                    params, x, y = stbp_problem(cfg, seed)
                    cases.append(Case(f"stbp {sur}/{reset}/{'detached' if detach else 'attached'}/{loss}",
                                      params, x, y, cfg, tol=1e-7))
    base = stbp.Config(v_th=0.5, decay=0.3, loss="mse_mean")
    for label, changes in STBP_FAMILY:
        cfg = replace(base, **changes)
        # A learned decay's gradient can be 1e-2 of the weights' (a 0-d sum of small terms): the 2nd-order
        # stencil's absolute error (~1e-11 here) is then ~1e-7 of it, so use the 4th-order one.
        learned = cfg.learn_decay != "none" or cfg.learn_threshold
        cases.append(Case(f"stbp {label}", *stbp_problem(cfg, seed), cfg, tol=1e-7,
                          order=4 if learned else 2, eps=1e-4 if learned else 1e-6))
    for label, arch, changes in STBP_CONV:
        cfg = replace(base, arch=arch, **changes)
        cases.append(Case(f"stbp {label} ({arch})", *stbp_problem(cfg, seed, T=4, batch=3), cfg, tol=1e-7))
    return cases


# ---------------------------------------------------------------------------
# IDE
# ---------------------------------------------------------------------------

def ide_problem(cfg, seed: int = 0, hidden=(6,), n_in: int = 5, n_classes: int = 3, batch: int = 4,
                spikes: bool = False, margin: float = KINK_MARGIN, max_bound: float = CONTRACTION_MARGIN,
                dropout_rng=None):
    """A random IDE problem: many units on the linear piece of sigma, none within ``margin`` of a kink,
    ``contraction_bound < max_bound``, and the spectral-norm gain strictly inside ``(-c, c)``.

    With ``cfg.dropout > 0`` the margins hold under the masks that ``loss_and_grad(..., rng=dropout_rng)``
    draws (``dropout_rng`` an int seed, default ``seed``: pass the same to the algorithm), and the
    contraction bound is scaled by the largest mask entries.  With ``cfg.sn_method = "power"`` the
    power-iteration state is the one :func:`refsnn.ide.init_params` makes (two steps from a random
    start by the first training step, far from converged: the test tells the power estimate from the
    exact one).
    """
    if cfg.dropout > 0 and dropout_rng is None:
        dropout_rng = seed
    if cfg.arch is not None:                  # the architecture gives the sizes
        input_shape, ops, _, n_classes = ide.parse_arch(cfg.arch)
        n_in, hidden = int(np.prod(input_shape)), tuple(op.n_out for op in ops)

    def make(rng):
        params = ide.init_params(None if cfg.arch else [n_in, *hidden, n_classes], cfg, rng)
        params["b"] = params["b"] + rng.uniform(0.5, 1.5, params["b"].shape)
        params["F"] = params["F"] * 1.5
        for l in range(2, len(hidden) + 1):
            params[f"F{l}"] = params[f"F{l}"] * 1.2
            params[f"b{l}"] = params[f"b{l}"] + rng.uniform(0.2, 1.2, params[f"b{l}"].shape)
        if cfg.spectral_norm is not None:
            params["g"] = np.array(rng.uniform(0.4, 0.9) * cfg.spectral_norm)
        else:
            params["W"] = params["W"] * rng.uniform(0.6, 1.2)
        params["Wo"] = params["Wo"] * 2.0
        if cfg.batchnorm:     # away from the identity, and running statistics that differ from the batch's
            h = params["b"].shape
            params.update(bn_gamma=rng.uniform(0.6, 1.4, h), bn_beta=rng.uniform(0.3, 1.5, h),
                          bn_mean=rng.normal(0.0, 0.3, h), bn_var=rng.uniform(0.5, 2.0, h))
        if spikes:
            x = (rng.random((cfg.T, batch, n_in)) < 0.6).astype(float)
        else:
            x = rng.uniform(0.0, 1.0, (batch, n_in))
        y = rng.integers(0, n_classes, batch)
        mask = ide.dropout_mask(params, x, cfg, dropout_rng) if cfg.dropout > 0 else None
        scale = 1.0 / (1.0 - cfg.dropout) ** len(hidden)          # ||diag(m) M|| <= max(m) ||M|| per layer
        bound = ide.contraction_bound(params, cfg) * scale
        if cfg.arch is not None and bound >= max_bound:
            # a convolution's operator norm can be k times that of its reshaped kernel (what Eq. (SN) bounds
            # by default): shrink the feedback until the block is a contraction again
            target = rng.uniform(0.4, 0.85) * max_bound
            key = "g" if cfg.spectral_norm is not None else "W"
            params[key] = params[key] * (target / bound)
            bound = ide.contraction_bound(params, cfg) * scale
        if bound >= max_bound:
            return None
        if (ide.linear_fraction(params, x, cfg, dropout_mask=mask) > 0.6
                and ide.kink_distance(params, x, cfg, dropout_mask=mask) > margin):
            return params, x, y
        return None

    return search(make, seed, tries=2000, what="ide_problem")


def _ide_cases(seed: int) -> list:
    """Both linearisation points, every solver, IF and LIF, one- to three-layer blocks, with and without
    spectral norm (exact and power iteration), static and spike input, BatchNorm with batch and with running
    statistics, dropout (masks drawn from the case's ``rng``), and the official code's F400 setting
    (``ide.PRESETS["code"]``: BatchNorm, dropout 0.2, power iteration, T = 5)."""
    C = ide.Config
    specs = [
        ("default: IF, simulated, broyden, spectral norm", C(T=20), {}),
        ("IF, fixed point, dense, raw W", C(T=20, linearize_at="fixed_point", solver="dense", spectral_norm=None), {}),
        ("IF, fixed point, dense, spectral norm", C(T=20, linearize_at="fixed_point", solver="dense"), {}),
        ("LIF 0.9, simulated, fixed_point solver", C(T=20, leak=0.9, solver="fixed_point"), {}),
        ("LIF 0.9, simulated, broyden, raw W", C(T=20, leak=0.9, spectral_norm=None), {}),
        ("2 layers, IF, simulated, broyden, spectral norm", C(T=20), {"hidden": (6, 5)}),
        ("2 layers, IF, fixed point, dense, raw W", C(T=20, linearize_at="fixed_point", solver="dense",
                                                      spectral_norm=None), {"hidden": (6, 5)}),
        ("3 layers, LIF 0.95, fixed point, dense, spectral norm",
         C(T=20, leak=0.95, linearize_at="fixed_point", solver="dense"), {"hidden": (5, 6, 4)}),
        ("spike input, IF, simulated, dense", C(T=20, solver="dense"), {"spikes": True}),
        ("spike input, LIF 0.9, fixed point, broyden", C(T=20, leak=0.9, linearize_at="fixed_point"),
         {"spikes": True}),
        ("BatchNorm (batch statistics), IF, simulated", C(T=20, batchnorm=True), {}),
        ("BatchNorm (running statistics), LIF 0.9, fixed point, dense",
         C(T=20, leak=0.9, batchnorm=True, bn_mode="running", linearize_at="fixed_point", solver="dense"), {}),
        ("BatchNorm (batch statistics), spike input, 2 layers", C(T=20, batchnorm=True),
         {"spikes": True, "hidden": (6, 5)}),
        ("dropout 0.2, IF, simulated, broyden, spectral norm", C(T=20, dropout=0.2), {}),
        ("dropout 0.3, 2 layers, LIF 0.9, fixed point, dense, raw W",
         C(T=20, leak=0.9, dropout=0.3, linearize_at="fixed_point", solver="dense", spectral_norm=None),
         {"hidden": (6, 5)}),
        ("dropout 0.2, spike input, BatchNorm (batch statistics)", C(T=20, dropout=0.2, batchnorm=True),
         {"spikes": True}),
        ("power-iteration spectral norm, IF, simulated, broyden", C(T=20, sn_method="power"), {}),
        ("power-iteration spectral norm, 2 layers, LIF 0.9, fixed point, dense",
         C(T=20, leak=0.9, sn_method="power", linearize_at="fixed_point", solver="dense"), {"hidden": (6, 5)}),
        ("the code's F400 setting (PRESETS['code']: BN, dropout 0.2, power iteration, T = 5)",
         ide.PRESETS["code"], {}),
        ("the code's F400 setting, LIF 0.95 (PRESETS['code_lif'])", ide.PRESETS["code_lif"], {}),
    ]
    specs += [(f"conv: {label}", cfg, kw) for label, cfg, kw in IDE_CONV]
    return [Case(f"ide {label}", *ide_problem(cfg, seed, **kw), cfg, rng=seed if cfg.dropout > 0 else None,
                 tol=1e-7) for label, cfg, kw in specs]


#: Convolutional feedback blocks, small enough for dense Jacobians and finite differences: the official
#: MNIST net's shape ("64C5s (F64C5)": a strided conv with BatchNorm2d in, a same-size conv feedback) and an
#: AlexNet-F-shaped three-layer block whose feedback is a transposed convolution, under the settings that
#: matter (spectral norm of the reshaped kernel as the code, or of the operator; BN with batch and running
#: statistics; spike input; dropout with the power iteration, as the code trains it).
IDE_CONV = [
    ("64C5s(F64C5)-shaped, IF, simulated, broyden, BN2d batch, reshaped-kernel spectral norm",
     ide.Config(T=20, arch="6x6x1-3c3s2p1-fbc3p1-3", batchnorm=True), {}),
    ("64C5s(F64C5)-shaped, operator-norm spectral norm, fixed point, dense",
     ide.Config(T=20, arch="6x6x1-3c3s2p1-fbc3p1-3", sn_method="operator", linearize_at="fixed_point",
                solver="dense"), {}),
    ("AlexNet-F-shaped, 3 layers, transposed-conv feedback, IF, simulated, dense",
     ide.Config(T=20, arch="8x8x2-3c3s2p1-4c3p1-4c3s2p1-fbt3s2p1o1-3", solver="dense"), {}),
    ("AlexNet-F-shaped, LIF 0.9, fixed point, broyden, raw W",
     ide.Config(T=20, leak=0.9, arch="8x8x2-3c3s2p1-4c3p1-4c3s2p1-fbt3s2p1o1-3", linearize_at="fixed_point",
                spectral_norm=None), {}),
    ("spike input, BN2d running statistics, LIF 0.95",
     ide.Config(T=20, leak=0.95, arch="6x6x2-3c3s2p1-fbc3p1-3", batchnorm=True, bn_mode="running"),
     {"spikes": True}),
    ("as the code trains it: BN2d, dropout 0.2, power iteration, T = 5",
     replace(ide.PRESETS["code"], arch="6x6x1-3c3s2p1-fbc3p1-3"), {}),
]


# ---------------------------------------------------------------------------
# ST-RSBP
# ---------------------------------------------------------------------------

#: The small ST-RSBP neuron of the checks and tests: short time constants, so that 60 steps hold about
#: 10 spikes per neuron.
ST_RSBP_SMALL = st_rsbp.Config(tau_m=16.0, tau_s=4.0, T=60, nu_hidden=2.0, nu_out=2.0, desired=8.0,
                               undesired=1.0, margin=1.0, lateral=0.5)


def st_rsbp_problem(sizes, cfg=None, seed: int = 0, *, batch: int = 3, silent_target: bool = False,
                    p_in: float = 0.3):
    """A random ST-RSBP ``(params, x, y)`` on which every layer fires.

    ``cfg`` defaults to :data:`ST_RSBP_SMALL`: short time constants, so that 60
    steps hold about 10 spikes per neuron.  Weights are ``U[-1, 1] * 0.6 + 0.25``
    (recurrent ones keep their connectivity), inputs Bernoulli(``p_in``); a
    candidate is accepted when more than 30 % of every hidden layer's neurons
    fire, the output fires, and at least two output errors exceed the margin.
    With ``silent_target`` each label is an output neuron that stays silent
    (exercising the fake target spikes).
    """
    cfg = ST_RSBP_SMALL if cfg is None else cfg
    arch = st_rsbp.parse_arch(sizes)

    def make(rng):
        params = st_rsbp.init_params(sizes, cfg, rng)
        for key in params:
            if key.startswith("Wr"):
                params[key] = np.where(params[key] != 0, params[key] * 0.6 + 0.1, 0.0)
            else:
                params[key] = params[key] * 0.6 + 0.25
        x = (rng.random((cfg.T, batch, arch[0][0])) < p_in).astype(float)
        x[0] = 0.0
        fwd = st_rsbp.simulate(params, x, cfg)
        out = fwd.counts[-1]
        if silent_target:
            y = np.array([int(np.argmin(o)) for o in out])
            if not np.all(out[np.arange(batch), y] == 0):
                return None
        else:
            y = rng.integers(0, arch[-1][0], batch)
        if all(np.mean(c > 0) > 0.3 for c in fwd.counts[:-1]) and out.sum() > 0:
            Y = np.full(out.shape, cfg.undesired)
            Y[np.arange(batch), y] = cfg.desired
            if np.count_nonzero(np.abs(out - Y) > cfg.margin) >= 2:     # output errors beyond the margin
                return params, x, y
        return None

    return search(make, seed, tries=200, what=f"st_rsbp_problem({sizes!r})")


def _st_rsbp_cases(seed: int) -> list:
    """Each architecture kind and each switch of the exact model: feed-forward only; one recurrent layer
    (sparse grid reservoir, absent synapses included); the paper's shape 8-6-R6-4; two recurrent layers;
    HM2-BP's d; the regulariser; a silent target (fake spikes); clamped S; no lateral inhibition; the
    code's first commit (E/I-signed reservoir, kappa 0, short d-tables of other lengths read by the code's
    lookup rules, with extrapolated derivatives); the regulariser with the reservoir-wide normaliser."""
    c = ST_RSBP_SMALL
    specs = [
        ("feed-forward 8-6-4", "8-6-4", c, {}),
        ("recurrent 8-R6-4 (grid reservoir)", "8-R6-4", c, {}),
        ("paper shape 8-6-R6-4", "8-6-R6-4", c, {}),
        ("two recurrent 8-R6-R5-4", "8-R6-R5-4", replace(c, reservoir="dense"), {}),
        ("d = e/o (HM2-BP)", "8-6-R6-4", replace(c, d_method="ratio"), {}),
        ("regulariser", "8-6-R6-4", replace(c, reg_lambda=10.0, reg_beta=0.5, weight_limit=1.0), {}),
        ("silent target, fake spikes", "8-6-R6-4", c, {"silent_target": True}),
        ("clamped S (s_min = 3)", "8-6-R6-4", replace(c, s_min=3.0), {}),
        ("no lateral inhibition", "8-6-R6-4", replace(c, lateral=0.0), {}),
        ("fe5bf2d: E/I reservoir, kappa 0, code d lookup", "8-6-R6-4",
         replace(c, reservoir_init="ei", kappa_zero=0.0, dtable_max_count=6, dtable_T=50, dtable_T_recurrent=90,
                 dtable_lookup="code"), {}),
        ("regulariser, reservoir-wide D", "8-6-R6-4",
         replace(c, reg_lambda=10.0, reg_beta=0.5, weight_limit=1.0, reg_norm="layer"), {}),
    ]
    cases = []
    for label, sizes, cfg, kw in specs:
        params, x, y = st_rsbp_problem(sizes, cfg, seed, **kw)
        # d = e/o makes S_i = 1 - a_i/(nu o_i) <= 0, near 0: a stiff objective, so a 4th-order stencil.
        order = 4 if cfg.d_method == "ratio" else 2
        # Large S (clamped to 3) gives gradients ~1e-3 of the loss: round-off ~1e-16 |E|/eps needs a larger eps.
        eps = 1e-4 if cfg.s_min > 1 else 1e-6
        cases.append(Case(f"st_rsbp {label}", params, x, y, cfg, tol=1e-7, order=order, eps=eps))
    return cases


# ---------------------------------------------------------------------------
# SSNN-BP
# ---------------------------------------------------------------------------

def ssnn_bp_problem(seed: int = 0, sizes=(10, 8, 4), batch: int = 3, margin: float = KINK_MARGIN):
    """A random SSNN-BP problem: > 40 % of each hidden layer's units on the linear piece of the clip,
    every pre-activation at least ``margin`` from the kinks 0 and 1."""
    def make(rng):
        params = ssnn_bp.init_params(list(sizes), ssnn_bp.Config(), rng)
        for n in range(1, len(sizes)):
            params[f"W{n}"] *= 2.0
        x = rng.random((batch, sizes[0]))
        y = rng.integers(0, sizes[-1], batch)
        hidden = ssnn_bp.forward_rates(params, x)[0][:-1]
        if all(np.mean((z > 0) & (z < 1)) > 0.4 for z in hidden) and \
                all(np.min(np.minimum(np.abs(z), np.abs(z - 1.0))) > margin for z in hidden):
            return params, x, y
        return None

    return search(make, seed, tries=1000, what="ssnn_bp_problem")


def _ssnn_bp_cases(seed: int) -> list:
    """Statistical cases (the mean of many V1 estimates against the exact gradient,
    :func:`refsnn.checking.gradcheck.check_statistical`): a 10-8-4 net, batch 3, at T = 16, T = 1 (the coarsest
    quantisation) and T = 4 with half the maximal gain, and a two-hidden-layer 8-6-5-3 net at T = 16.  One
    exact case: the ANN twin against central differences.  V2 is biased by design and is checked
    separately (``tests/test_ssnn_bp.py``)."""
    C = ssnn_bp.Config
    params, x, y = ssnn_bp_problem(seed)
    deep = ssnn_bp_problem(seed + 1, sizes=(8, 6, 5, 3), batch=2)
    return [
        Case("ssnn_bp V1 T=16 independent port", params, x, y, C(T=16), rng=seed, kind="statistical",
             n_samples=2000),
        Case("ssnn_bp V1 T=1", params, x, y, C(T=1), rng=seed, kind="statistical", n_samples=3000),
        Case("ssnn_bp V1 T=4 gamma_scale=0.5", params, x, y, C(T=4, gamma_scale=0.5), rng=seed,
             kind="statistical", n_samples=3000),
        Case("ssnn_bp V1 T=16 two hidden layers", *deep, C(T=16), rng=seed, kind="statistical", n_samples=3000),
        Case("ssnn_bp ANN twin (exact)", params, x, y, C(ann=True), tol=1e-7),
    ]


#: The gradient-check case list of each algorithm.
CASES = {"stbp": _stbp_cases, "st_rsbp": _st_rsbp_cases, "ide": _ide_cases, "ssnn_bp": _ssnn_bp_cases}


def gradcheck_cases(algo, seed: int = 0) -> list:
    """The :class:`refsnn.checking.gradcheck.Case` list ``refsnn gradcheck algo`` runs (name or module)."""
    return CASES[refsnn.algorithm_name(algo)](check_int("seed", seed, minimum=0))
