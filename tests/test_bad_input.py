"""Bad input gets a clean error that names the argument: a table across the public API and the command line.

Every row of API_CASES calls a public function with one bad argument and expects a ValueError or TypeError
whose message names that argument (never an AttributeError, a numba TypingError, a silent wrong result or
an out-of-bounds read).  Every row of CLI_CASES runs ``refsnn ...`` in-process and expects a non-zero exit,
no traceback, one line on stderr naming what is wrong, and nothing half-written left behind.  The tables are
meant to grow with the API.
"""
import errno
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import refsnn
from refsnn import ide, ssnn_bp, st_rsbp, stbp
from refsnn.blocks import encoding, surrogates
from refsnn.checking import gradcheck
from refsnn.harness import datasets, optim, problems
from refsnn.cli import main
from refsnn.harness.train import train

# ---------------------------------------------------------------------------
# Small valid problems, built once; each row below breaks one argument.
# ---------------------------------------------------------------------------

_STBP = stbp.Config(v_th=0.5, decay=0.3)
_SP, _SX, _SY = problems.stbp_problem(_STBP, 0)
_IDE = ide.Config(T=10)
_IP, _IX, _IY = problems.ide_problem(_IDE, 0)
_IA = ide.simulate(_IP, _IX, _IDE)
_IPOW = replace(_IDE, sn_method="power")                                   # power-iteration spectral norm
_IPP = {**_IP, "sn_u": np.full(6, 6 ** -0.5), "sn_v": np.full(6, 6 ** -0.5)}
_IDROP = replace(_IDE, dropout=0.2)
_IM = ide.dropout_mask(_IP, _IX, _IDROP, 0)                                 # {"F": (4, 6), "W": (4, 6)}
_SR = problems.ST_RSBP_SMALL
_RP, _RX, _RY = problems.st_rsbp_problem("8-6-R6-4", _SR, 0)
_SSP, _SSX, _SSY = problems.ssnn_bp_problem(0)


def _with(d, **changes):
    return {**d, **changes}


def _nan(a):
    a = np.array(a, dtype=float, copy=True)
    a.flat[0] = np.nan
    return a


API_CASES = [
    # --- STBP
    ("stbp init_params(64)", lambda: stbp.init_params(64), TypeError, "sizes"),
    ("stbp init_params([64])", lambda: stbp.init_params([64]), ValueError, "sizes"),
    ("stbp init_params([64, 0])", lambda: stbp.init_params([64, 0]), ValueError, r"sizes\[1\]"),
    ("stbp init_params(cfg=dict)", lambda: stbp.init_params([4, 3], {"v_th": 1.0}), TypeError, "cfg.*Config\\(\\*\\*cfg\\)"),
    ("stbp Config(v_th=0)", lambda: stbp.Config(v_th=0.0), ValueError, "v_th"),
    ("stbp Config(v_th=nan)", lambda: stbp.Config(v_th=float("nan")), ValueError, "v_th"),
    ("stbp Config(decay=1.5)", lambda: stbp.Config(decay=1.5), ValueError, "decay"),
    ("stbp Config(surrogate='relu')", lambda: stbp.Config(surrogate="relu"), ValueError, "surrogate"),
    ("stbp Config(T=0)", lambda: stbp.Config(T=0), ValueError, "T"),
    ("stbp Config(T=2.5)", lambda: stbp.Config(T=2.5), TypeError, "T"),
    ("stbp Config(detach_reset='yes')", lambda: stbp.Config(detach_reset="yes"), TypeError, "detach_reset"),
    ("stbp x with wrong n_in", lambda: stbp.loss_and_grad(_SP, _SX[:, :, :3], _SY, _STBP), ValueError, "x"),
    ("stbp x with NaN", lambda: stbp.loss_and_grad(_SP, _nan(_SX), _SY, _STBP), ValueError, "x.*NaN"),
    ("stbp x 2-D", lambda: stbp.loss_and_grad(_SP, _SX[0], _SY, _STBP), ValueError, "x"),
    ("stbp y out of range", lambda: stbp.loss_and_grad(_SP, _SX, _SY + 10, _STBP), ValueError, "y"),
    ("stbp y wrong length", lambda: stbp.loss_and_grad(_SP, _SX, _SY[:2], _STBP), ValueError, "y"),
    ("stbp y not whole numbers", lambda: stbp.loss_and_grad(_SP, _SX, _SY + 0.5, _STBP), ValueError, "y"),
    ("stbp params missing b2", lambda: stbp.loss_and_grad({k: v for k, v in _SP.items() if k != "b2"}, _SX, _SY,
                                                          _STBP), ValueError, "params"),
    ("stbp params W2 misfit", lambda: stbp.loss_and_grad(_with(_SP, W2=_SP["W2"][:, :2]), _SX, _SY, _STBP),
     ValueError, r"params\['W2'\]"),
    ("stbp params not a dict", lambda: stbp.loss_and_grad([1, 2], _SX, _SY, _STBP), TypeError, "params"),
    ("stbp cfg of another algorithm", lambda: stbp.loss_and_grad(_SP, _SX, _SY, _IDE), TypeError,
     "cfg: expected refsnn.stbp.Config, got refsnn.ide.Config"),
    ("stbp encode direct outside [0,1]", lambda: stbp.encode(np.full((2, 6), 1.5), replace(_STBP, encoding="direct")),
     ValueError, "features"),
    ("stbp encode bernoulli without rng", lambda: stbp.encode(np.full((2, 6), 0.5), _STBP), ValueError, "rng"),
    # --- IDE
    ("ide Config(leak=0)", lambda: ide.Config(leak=0.0), ValueError, "leak"),
    ("ide Config(solver='newton')", lambda: ide.Config(solver="newton"), ValueError, "solver"),
    ("ide Config(normalize=(0, 0))", lambda: ide.Config(normalize=(0.0, 0.0)), ValueError, r"normalize\[1\]"),
    ("ide init_params([5, 3])", lambda: ide.init_params([5, 3]), ValueError, "sizes"),
    ("ide init_params(cfg=dict)", lambda: ide.init_params([5, 4, 3], {}), TypeError, "cfg"),
    ("ide spike input with wrong T", lambda: ide.loss_and_grad(_IP, np.zeros((3, 4, 5)), _IY, _IDE), ValueError,
     "x.*T"),
    ("ide params without g", lambda: ide.loss_and_grad({k: v for k, v in _IP.items() if k != "g"}, _IX, _IY, _IDE),
     ValueError, "params.*'g'"),
    ("ide g not a scalar", lambda: ide.loss_and_grad(_with(_IP, g=np.ones(2)), _IX, _IY, _IDE), ValueError,
     r"params\['g'\]"),
    ("ide bn_var negative", lambda: ide.loss_and_grad(
        _with(_IP, bn_gamma=np.ones(6), bn_beta=np.zeros(6), bn_mean=np.zeros(6), bn_var=-np.ones(6)), _IX, _IY,
        replace(_IDE, batchnorm=True, bn_mode="running")), ValueError, "bn_var"),
    ("ide solve_equilibrium a0 misfit", lambda: ide.solve_equilibrium(_IP, _IX, _IDE, a0=np.zeros((1, 6))),
     ValueError, "a0"),
    ("ide solve_equilibrium offset NaN", lambda: ide.solve_equilibrium(_IP, _IX, _IDE, offset=_nan(_IA)),
     ValueError, "offset"),
    ("ide adjoint g misfit", lambda: ide.adjoint(_IP, _IA, _IX, np.zeros((4, 2)), _IDE), ValueError, "g"),
    ("ide readout a misfit", lambda: ide.readout(_IP, np.zeros((4, 2)), _IY, _IDE), ValueError, "a"),
    ("ide vjp beta NaN", lambda: ide.vjp(_IP, _IA, _IX, _nan(_IA), _IDE), ValueError, "beta"),
    ("ide encode outside [0,1]", lambda: ide.encode(np.full((2, 5), -0.1), _IDE), ValueError, "features"),
    ("ide x NaN", lambda: ide.predict(_IP, _nan(_IX), _IDE), ValueError, "x.*NaN"),
    ("ide Config(dropout=1)", lambda: ide.Config(dropout=1.0), ValueError, "dropout"),
    ("ide Config(dropout=-0.2)", lambda: ide.Config(dropout=-0.2), ValueError, "dropout"),
    ("ide Config(dropout=None)", lambda: ide.Config(dropout=None), TypeError, "dropout"),
    ("ide Config(sn_method='svd')", lambda: ide.Config(sn_method="svd"), ValueError, "sn_method"),
    ("ide Config(sn_method='power') without spectral_norm", lambda: ide.Config(sn_method="power", spectral_norm=None),
     ValueError, "sn_method"),
    ("ide Config(early_stop=0)", lambda: ide.Config(early_stop=0), TypeError, "early_stop"),
    ("ide Config(early_stop=False) with broyden", lambda: ide.Config(early_stop=False), ValueError, "early_stop"),
    ("ide power without sn_u", lambda: ide.loss_and_grad({k: v for k, v in _IPP.items() if k != "sn_u"}, _IX, _IY,
                                                         _IPOW), ValueError, "params.*sn_u"),
    ("ide power without sn_u, sn_v", lambda: ide.loss_and_grad(_IP, _IX, _IY, _IPOW), ValueError,
     "sn_method is 'power'"),
    ("ide sn_u wrong shape", lambda: ide.loss_and_grad(_with(_IPP, sn_u=np.ones(5)), _IX, _IY, _IPOW), ValueError,
     r"params\['sn_u'\]"),
    ("ide sn_v wrong shape", lambda: ide.loss_and_grad(_with(_IPP, sn_v=np.ones((6, 1))), _IX, _IY, _IPOW),
     ValueError, r"params\['sn_v'\]"),
    ("ide sn_u all zeros", lambda: ide.loss_and_grad(_with(_IPP, sn_u=np.zeros(6)), _IX, _IY, _IPOW), ValueError,
     r"params\['sn_u'\]"),
    ("ide sn_u NaN", lambda: ide.predict(_with(_IPP, sn_u=_nan(np.ones(6))), _IX, _IPOW), ValueError, "sn_u.*NaN"),
    ("ide sn_u with exact method", lambda: ide.loss_and_grad(_IPP, _IX, _IY, _IDE), ValueError, "sn_u"),
    ("ide dropout without rng", lambda: ide.loss_and_grad(_IP, _IX, _IY, _IDROP), ValueError, "rng"),
    ("ide dropout rng of a wrong type", lambda: ide.loss_and_grad(_IP, _IX, _IY, _IDROP, rng="seed"), TypeError,
     "rng"),
    ("ide dropout_mask not a dict", lambda: ide.loss_and_grad(_IP, _IX, _IY, _IDROP, dropout_mask=_IM["F"]),
     TypeError, "dropout_mask"),
    ("ide dropout_mask missing W", lambda: ide.loss_and_grad(_IP, _IX, _IY, _IDROP, dropout_mask={"F": _IM["F"]}),
     ValueError, r"dropout_mask.*missing \['W'\]"),
    ("ide dropout_mask wrong shape", lambda: ide.loss_and_grad(_IP, _IX, _IY, _IDROP,
                                                               dropout_mask=_with(_IM, W=_IM["W"][:3])),
     ValueError, r"dropout_mask\['W'\]"),
    ("ide dropout_mask negative", lambda: ide.reference_objective(_IP, _IX, _IY, _IDROP,
                                                                  dropout_mask=_with(_IM, F=-_IM["F"])),
     ValueError, r"dropout_mask\['F'\]"),
    ("ide dropout_mask NaN", lambda: ide.simulate(_IP, _IX, _IDROP, dropout_mask=_with(_IM, F=_nan(_IM["F"]))),
     ValueError, r"dropout_mask\['F'\].*NaN"),
    ("ide dropout_mask without dropout", lambda: ide.loss_and_grad(_IP, _IX, _IY, _IDE, dropout_mask=_IM),
     ValueError, "dropout_mask.*Config.dropout is 0"),
    ("ide dropout_mask() without dropout", lambda: ide.dropout_mask(_IP, _IX, _IDE, 0), ValueError, "dropout"),
    # --- ST-RSBP
    ("st_rsbp parse_arch('784-R-10')", lambda: st_rsbp.parse_arch("784-R-10"), ValueError, r"sizes\[1\]"),
    ("st_rsbp parse_arch('R784-10')", lambda: st_rsbp.parse_arch("R784-10"), ValueError, "sizes"),
    ("st_rsbp init_params(64)", lambda: st_rsbp.init_params(64), TypeError, "sizes"),
    ("st_rsbp Config(tau_m=1)", lambda: st_rsbp.Config(tau_m=1.0), ValueError, "tau_m"),
    ("st_rsbp Config(nu_hidden=())", lambda: st_rsbp.Config(nu_hidden=()), ValueError, "nu_hidden"),
    ("st_rsbp Config(input_scale=2)", lambda: st_rsbp.Config(input_scale=2.0), ValueError, "input_scale"),
    ("st_rsbp x not binary", lambda: st_rsbp.loss_and_grad(_RP, _RX * 0.5, _RY, _SR), ValueError, "x.*0 or 1"),
    ("st_rsbp x with one step", lambda: st_rsbp.loss_and_grad(_RP, _RX[:1], _RY, _SR), ValueError, "x"),
    ("st_rsbp thresholds per layer", lambda: st_rsbp.loss_and_grad(_RP, _RX, _RY, replace(_SR, nu_hidden=(1.0,))),
     ValueError, "nu_hidden"),
    ("st_rsbp sample_weight length", lambda: st_rsbp.loss_and_grad(_RP, _RX, _RY, _SR, sample_weight=np.ones(2)),
     ValueError, "sample_weight"),
    ("st_rsbp sample_weight negative", lambda: st_rsbp.loss_and_grad(_RP, _RX, _RY, _SR, sample_weight=-np.ones(3)),
     ValueError, "sample_weight"),
    ("st_rsbp spsp trains of different lengths", lambda: st_rsbp.spsp(np.zeros((20, 3)), np.zeros((25, 2)), _SR),
     ValueError, "s_post, s_pre"),
    ("st_rsbp spsp non-binary", lambda: st_rsbp.spsp(np.zeros((20, 3)), np.full((20, 2), 2.0), _SR), ValueError,
     "s_pre.*0 or 1"),
    ("st_rsbp spsp_replay different lengths", lambda: st_rsbp.spsp_replay(np.zeros((20, 3)), np.zeros((9, 2)), _SR),
     ValueError, "s_post, s_pre"),
    ("st_rsbp spike_effect 2-D", lambda: st_rsbp.spike_effect(np.zeros((20, 3)), _SR), ValueError, "S_post"),
    ("st_rsbp spike_effect NaN", lambda: st_rsbp.spike_effect(_nan(np.zeros((20, 1, 3))), _SR), ValueError,
     "S_post.*NaN"),
    ("st_rsbp effect_ratio negative count", lambda: st_rsbp.effect_ratio(np.ones((2, 3)), [1, 2], [1, -1, 0]),
     ValueError, "o_pre"),
    ("st_rsbp effect_ratio misfit", lambda: st_rsbp.effect_ratio(np.ones((2, 3)), [1, 2, 3], [1, 1, 0]), ValueError,
     "o_post"),
    ("st_rsbp update_sample_weights zero class", lambda: st_rsbp.update_sample_weights(
        np.array([0.0, 0.0, 1.0]), np.array([0, 0, 1]), np.array([False, True, True]), replace(_SR, boost=True)),
     ValueError, "weights"),
    ("st_rsbp update_sample_weights negative", lambda: st_rsbp.update_sample_weights(
        -np.ones(3), np.array([0, 1, 1]), np.ones(3, bool), _SR), ValueError, "weights"),
    ("st_rsbp cfg=dict", lambda: st_rsbp.simulate(_RP, _RX, {}), TypeError, "cfg"),
    ("st_rsbp Config(reservoir_init='pm1')", lambda: st_rsbp.Config(reservoir_init="pm1"), ValueError,
     "reservoir_init"),
    ("st_rsbp Config E/I init of a dense reservoir", lambda: st_rsbp.Config(reservoir_init="ei", reservoir="dense"),
     ValueError, "reservoir_init"),
    ("st_rsbp Config(reg_norm='row')", lambda: st_rsbp.Config(reg_norm="row"), ValueError, "reg_norm"),
    ("st_rsbp Config(dtable_T=1)", lambda: st_rsbp.Config(dtable_T=1), ValueError, "dtable_T"),
    ("st_rsbp Config(dtable_T_recurrent=600.0)", lambda: st_rsbp.Config(dtable_T_recurrent=600.0), TypeError,
     "dtable_T_recurrent"),
    ("st_rsbp Config(dtable_lookup='nearest')", lambda: st_rsbp.Config(dtable_lookup="nearest"), ValueError,
     "dtable_lookup"),
    ("st_rsbp DTable.lookup unknown rule", lambda: st_rsbp.d_table(replace(_SR, dtable_trials=20)).lookup(
        [1], [1], "extrapolate"), ValueError, "rule"),
    ("st_rsbp postsynaptic_derivative recurrent=1", lambda: st_rsbp.postsynaptic_derivative(
        np.ones((2, 3)), [1, 2], [1, 1, 0], _SR, 60, recurrent=1), TypeError, "recurrent"),
    # --- SSNN-BP
    ("ssnn_bp init_params one class", lambda: ssnn_bp.init_params([10, 1]), ValueError, "sizes"),
    ("ssnn_bp x outside [0,1]", lambda: ssnn_bp.loss_and_grad(_SSP, _SSX + 1.0, _SSY, ssnn_bp.Config(), rng=0),
     ValueError, "x"),
    ("ssnn_bp x NaN", lambda: ssnn_bp.loss_and_grad(_SSP, _nan(_SSX), _SSY, ssnn_bp.Config(), rng=0), ValueError,
     "x.*NaN"),
    ("ssnn_bp V1 without rng", lambda: ssnn_bp.loss_and_grad(_SSP, _SSX, _SSY, ssnn_bp.Config()), ValueError, "rng"),
    ("ssnn_bp coincidences of 0.5", lambda: ssnn_bp.coincidences(np.array([[0.5, 1.0]]), np.array([[1]]),
                                                               np.array([[0]])), ValueError, "port.*0 or 1"),
    ("ssnn_bp coincidences misfit", lambda: ssnn_bp.coincidences(np.ones((3, 2), bool), np.ones((2, 1), bool),
                                                              np.ones((2, 1), bool)), ValueError, "port, e_plus"),
    ("ssnn_bp gradient_units clipping gain", lambda: ssnn_bp.gradient_units(np.array([[2.0]]), np.ones((1, 1)), 1.0,
                                                                         np.zeros((1, 1))), ValueError, "gamma"),
    ("ssnn_bp wta_winners T=0", lambda: ssnn_bp.wta_winners(np.zeros((1, 3)), 0, 0), ValueError, "T"),
    ("ssnn_bp dw_min lr=0", lambda: ssnn_bp.dw_min(_SSP, ssnn_bp.Config(), 0.0), ValueError, "lr"),
    ("ssnn_bp Config(gamma_scale=0)", lambda: ssnn_bp.Config(gamma_scale=0.0), ValueError, "gamma_scale"),
    ("ssnn_bp Config(counter='gpu')", lambda: ssnn_bp.Config(counter="gpu"), ValueError, "counter"),
    # --- shared building blocks
    ("encoding.bernoulli p > 1", lambda: encoding.bernoulli(np.array([1.2]), 3, 0), ValueError, "p"),
    ("encoding.poisson dt = 0", lambda: encoding.poisson(np.array([10.0]), 3, 0.0, 0), ValueError, "dt"),
    ("encoding.bernoulli rng=-1", lambda: encoding.bernoulli(np.array([0.2]), 3, -1), ValueError, "rng"),
    ("surrogates.h unknown name", lambda: surrogates.h(np.zeros(2), "relu"), ValueError, "surrogate"),
    ("surrogates.h width -1", lambda: surrogates.h(np.zeros(2), "rect", -1.0), ValueError, "width"),
    ("optim.SGD momentum 1", lambda: optim.SGD(0.1, momentum=1.0), ValueError, "momentum"),
    ("optim.Adam beta 1", lambda: optim.Adam(0.1, betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    ("optim step with a misfit gradient", lambda: optim.SGD(0.1).step({"w": np.zeros(3)}, {"w": np.zeros(2)}),
     ValueError, "grads"),
    ("optim.make unknown", lambda: optim.make("rmsprop", 0.1), ValueError, "optimizer"),
    ("gradcheck.compare of nothing", lambda: gradcheck.compare({}, {}), ValueError, "nothing to compare"),
    ("gradcheck.compare one-sided key", lambda: gradcheck.compare({"a": np.ones(2)}, {}), ValueError, "key sets"),
    ("gradcheck.numerical_gradient order 3", lambda: gradcheck.numerical_gradient(lambda p: 0.0, {"a": np.ones(1)},
                                                                                 order=3), ValueError, "order"),
    ("gradcheck.check_statistical n=1", lambda: gradcheck.check_statistical(lambda r: {"a": np.ones(1)},
                                                                           {"a": np.ones(1)}, n_samples=1, seed=0),
     ValueError, "n_samples"),
    ("datasets.load unknown name", lambda: datasets.load("mnis"), ValueError, "mnis"),
    ("datasets.load bad split", lambda: datasets.load("digits", "val"), ValueError, "split"),
    ("datasets.bin_events not events", lambda: datasets.bin_events(np.zeros(3), 5), TypeError, "events"),
    ("refsnn.algorithm unknown", lambda: refsnn.algorithm("backprop"), ValueError, "backprop"),
    ("train(123)", lambda: train(123), TypeError, "algorithm"),
    ("train momentum with adam", lambda: train("stbp", optimizer="adam", momentum=-5, epochs=1), ValueError,
     "momentum"),
    ("train unknown setting", lambda: train("stbp", epoch=1), TypeError, "epoch"),
    ("train resume without out", lambda: train("stbp", resume=True), ValueError, "resume"),
    ("train resume and restart", lambda: train("stbp", out="x", resume=True, restart=True), ValueError, "restart"),
    ("train dataset not a name", lambda: train("stbp", 3), TypeError, "dataset"),
    ("train config of another algorithm", lambda: train("stbp", config=ide.Config()), TypeError, "config"),
    ("train list schedule too short", lambda: train("stbp", schedule="list", lrs=[1e-3], epochs=2), ValueError,
     "lrs"),
    ("train lrs not a list", lambda: train("stbp", schedule="list", lrs="1e-3"), TypeError, "lrs"),
    ("train lrs with a negative rate", lambda: train("stbp", schedule="list", lrs=[1e-3, -1.0], epochs=2),
     ValueError, r"lrs\[1\]"),
    ("train lrs without the list schedule", lambda: train("stbp", schedule="constant", lrs=[1e-3]), ValueError,
     "lrs"),
    ("recipes.st_rsbp_log_recipe digits", lambda: refsnn.harness.recipes.st_rsbp_log_recipe("digits"), ValueError,
     "dataset"),
]


@pytest.mark.parametrize("label,call,exc,pattern", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input_gets_a_clean_error_naming_the_argument(label, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_api_table_is_large_enough():
    assert len(API_CASES) >= 60


# ---------------------------------------------------------------------------
# No kernel reads out of bounds: mismatched lengths are refused before any kernel runs, and the kernels
# given consistent input agree with their twins (tested in the algorithm files).
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_the_finiteness_check_finds_every_nan_and_inf(dtype):
    """check_array's finiteness test (a sum first, min/max when the sum is not finite) agrees with np.isfinite
    wherever a NaN or an infinity sits (first, last, middle entry; alone or with the other kind); the largest
    finite values are finite, also when their sum overflows (the exact test then decides)."""
    from refsnn.blocks._checks import _all_finite

    rng = np.random.default_rng(5)
    base = rng.normal(size=(4, 5, 6)).astype(dtype)
    assert _all_finite(base) and _all_finite(base[:0])
    big = base.copy()
    big[1, 2, 3] = np.finfo(dtype).max
    big[0, 0, 0] = -np.finfo(dtype).max
    assert _all_finite(big)
    big[0, 0, 0] = np.finfo(dtype).max
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.sum(big))                           # the sum overflows ...
    assert _all_finite(big)                                           # ... but every entry is finite
    for bad in (np.nan, np.inf, -np.inf):
        for where in ((0, 0, 0), (3, 4, 5), (2, 1, 3)):
            x = base.copy()
            x[where] = bad
            assert not _all_finite(x), (bad, where)
            assert not _all_finite(x.T), (bad, where, "non-contiguous")
    x = base.copy()
    x[0, 0, 0], x[3, 4, 5] = np.inf, np.nan
    assert not _all_finite(x)
    spikes = np.zeros((4, 2, 6))
    spikes[0, 0, 0], spikes[3, 1, 5] = np.inf, np.nan
    with pytest.raises(ValueError, match=r"x: contains 2 NaN or infinite"):
        stbp.loss_and_grad(stbp.init_params([6, 3], stbp.Config(T=4), 0), spikes, [0, 1], stbp.Config(T=4))


def test_spsp_with_a_longer_presynaptic_train_is_refused_not_read_past_the_end():
    s_post = np.zeros((30, 2))
    s_post[[5, 17], 0] = 1
    s_pre = np.zeros((31, 3))
    s_pre[30, 0] = 1                     # the extra step: the old kernel read U past its end for it
    for backend in ("numba", "numpy"):
        with pytest.raises(ValueError, match="same number of steps"):
            st_rsbp.spsp(s_post, s_pre, replace(_SR, backend=backend))


def test_non_binary_trains_are_refused_by_every_spsp_path():
    """A train of 2s used to give the numba path twice the NumPy path's and the replay's result."""
    s_post = np.zeros((30, 2))
    s_post[[5, 17], 0] = 1
    s_pre = np.zeros((30, 3))
    s_pre[[2, 9], 1] = 2.0
    for fn in (st_rsbp.spsp, st_rsbp.spsp_replay):
        for backend in ("numba", "numpy"):
            with pytest.raises(ValueError, match="s_pre: spikes must be 0 or 1"):
                fn(s_post, s_pre, replace(_SR, backend=backend))


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------

def _run(capsys, argv):
    """``refsnn argv`` in-process: (exit code, stdout, stderr lines).  An exception here is a traceback."""
    try:
        code = main(argv)
    except SystemExit as exc:            # argparse's own usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, [line for line in err.splitlines() if line.strip()]


def _good_run(tmp_path) -> Path:
    """A finished one-epoch STBP run on 64 digits, with its checkpoint."""
    out = tmp_path / "run"
    assert main(["train", "stbp", "--epochs", "1", "--limit-train", "64", "--limit-test", "32", "--no-progress",
                 "--out", str(out)]) == 0
    return out


def _corrupt(kind):
    def make(ckpt: Path):
        data = ckpt.read_bytes()
        if kind == "truncated":
            ckpt.write_bytes(data[: len(data) // 2])
        elif kind == "empty":
            ckpt.write_bytes(b"")
        elif kind == "bit-flipped":
            b = bytearray(data)
            mid = len(b) // 3
            b[mid] ^= 0xFF
            ckpt.write_bytes(bytes(b))
        elif kind == "text":
            ckpt.write_text("not a checkpoint")
        else:
            z = dict(np.load(ckpt))
            if kind == "missing W1":
                z.pop("param/W1")
            elif kind == "misshaped W1":
                z["param/W1"] = z["param/W1"][:, :10]
            elif kind == "no history":
                import json
                meta = json.loads(str(z["meta"]))
                meta.pop("history")
                z["meta"] = np.array(json.dumps(meta))
            elif kind == "NaN W2":
                z["param/W2"] = z["param/W2"] * np.nan
            elif kind == "no meta":
                z.pop("meta")
            with open(ckpt, "wb") as f:
                np.savez(f, **z)
    return make


RESUME_CORRUPTIONS = ["truncated", "empty", "bit-flipped", "text", "missing W1", "misshaped W1", "no history",
                      "NaN W2", "no meta"]


@pytest.mark.parametrize("kind", RESUME_CORRUPTIONS)
def test_resume_from_a_bad_checkpoint_says_which_file_and_keeps_it(tmp_path, capsys, kind):
    out = _good_run(tmp_path)
    ckpt = out / "checkpoint.npz"
    _corrupt(kind)(ckpt)
    before = ckpt.read_bytes()
    capsys.readouterr()
    code, _, err = _run(capsys, ["train", "stbp", "--epochs", "2", "--limit-train", "64", "--limit-test", "32",
                                 "--no-progress", "--out", str(out), "--resume"])
    assert code != 0 and len(err) == 1 and err[0].startswith("refsnn:"), err
    assert "checkpoint" in err[0] and str(ckpt) in err[0] and "--restart" in err[0], err[0]
    assert ckpt.read_bytes() == before, "the bad checkpoint must be left as it is"
    # and --restart starts over, keeping the bad file aside
    code, _, err = _run(capsys, ["train", "stbp", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
                                 "--no-progress", "--out", str(out), "--restart"])
    assert code == 0 and (out / "checkpoint.npz.bad").read_bytes() == before


def _unwritable_dir(tmp_path) -> Path:
    """A folder this process cannot create files in (as root, chmod does not stop us: use /proc/self)."""
    if os.geteuid() != 0:
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        return d
    d = Path("/proc/self")
    try:
        (d / "probe").open("wb").close()
    except OSError:
        return d
    pytest.skip("found no folder that is read-only for this process")  # pragma: no cover


def _cli_cases(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    T = ["train", "stbp", "--epochs", "1", "--limit-train", "32", "--limit-test", "16", "--no-progress"]
    return [
        ("unknown algorithm", ["train", "backprop"], "backprop"),
        ("unknown dataset", T + ["--dataset", "mnis"], "mnis"),
        ("zero epochs", ["train", "stbp", "--epochs", "0"], "epochs"),
        ("negative seed", ["train", "stbp", "--seed", "-1"], "seed"),
        ("zero batch size", ["train", "stbp", "--batch-size", "0"], "batch_size"),
        ("negative lr", ["train", "stbp", "--lr", "-0.1"], "lr"),
        ("unknown preset", ["train", "stbp", "--preset", "nope"], "preset"),
        ("--set without =", ["train", "stbp", "--set", "T"], "--set"),
        ("--set unknown field", ["train", "stbp", "--set", "nofield=1"], "nofield"),
        ("--set bad value", ["train", "stbp", "--set", "v_th=-1"], "v_th"),
        ("--set bad type", ["train", "stbp", "--set", "T=abc"], "T"),
        ("--hidden not a size", ["train", "stbp", "--hidden", "abc"], "sizes"),
        ("conv preset on the 8x8 digits", T + ["--preset", "code_conv"], "sizes"),
        ("--hidden with an architecture", T + ["--preset", "code_conv", "--dataset", "fashion-mnist", "--hidden", "9"],
         "hidden"),
        ("--set a malformed arch", ["train", "stbp", "--set", "arch=28x28x1-32q3-10"], "arch"),
        ("--set an IDE arch whose feedback does not fit", ["train", "ide", "--set", "arch=8x8x1-4c3s2p1-fbc5-10"],
         "arch"),
        ("--out is a file", T + ["--out", str(a_file)], "file"),
        ("--out below a file", T + ["--out", str(a_file / "run")], str(a_file)),
        ("--out read-only", T + ["--out", str(_unwritable_dir(tmp_path))], "cannot write"),
        ("--resume without a checkpoint", T + ["--out", str(tmp_path / "empty"), "--resume"], "no checkpoint"),
        ("--resume and --restart", T + ["--out", str(tmp_path / "x"), "--resume", "--restart"], "restart"),
        ("resume with other settings", None, "different"),
        ("gradcheck unknown algorithm", ["gradcheck", "nope"], "nope"),
        ("gradcheck negative seed", ["gradcheck", "stbp", "--seed", "-3"], "seed"),
        ("bench unknown algorithm", ["bench", "nope"], "nope"),
        ("bench baseline not a checkout", ["bench", "stbp", "--paired", "--baseline", str(tmp_path)], "--baseline"),
        ("bench zero threads", ["bench", "stbp", "--paired", "--threads", "0"], "--threads"),
        ("bench peers zero steps", ["bench", "peers", "--T", "0", "--no-compile"], "T"),
        ("bench peers unwritable out", ["bench", "peers", "--n", "8", "--T", "2", "--no-compile", "--out",
                                        str(a_file / "out")], "out"),
        ("data checksums unknown name", ["data", "checksums", "mnis"], "mnis"),
        ("data fetch without a name", ["data", "fetch"], "name"),
        ("data fetch unknown name", ["data", "fetch", "mnis"], "mnis"),
        ("data fetch bundled dataset", ["data", "fetch", "digits"], "no download"),
        ("data fetch uncreatable root", ["data", "fetch", "mnist", "--root", str(a_file / "data"),
                                         "--mirror", "http://127.0.0.1:9/"], "root"),
        ("data verify unknown name", ["data", "verify", "mnis"], "mnis"),
        ("data path unknown name", ["data", "path", "mnis"], "mnis"),
    ]


def test_cli_table_is_large_enough(tmp_path):
    assert len(_cli_cases(tmp_path)) + len(RESUME_CORRUPTIONS) + 2 >= 25


@pytest.mark.parametrize("i", range(29))
def test_cli_bad_invocation_is_one_line_and_a_nonzero_exit(tmp_path, capsys, monkeypatch, i):
    monkeypatch.setenv("REFSNN_OFFLINE", "0")
    label, argv, pattern = _cli_cases(tmp_path)[i]
    if argv is None:                                  # resume a checkpoint written with other settings
        out = _good_run(tmp_path)
        capsys.readouterr()
        argv = ["train", "stbp", "--epochs", "2", "--limit-train", "64", "--limit-test", "32", "--lr", "0.5",
                "--no-progress", "--out", str(out), "--resume"]
    code, _, err = _run(capsys, argv)
    assert code not in (0, None), (label, code)
    assert err, (label, "nothing on stderr")
    if code == 2 and err[0].startswith("usage:"):      # argparse: usage line, then the error
        assert "error:" in err[-1] and len(err) == 2, (label, err)
    else:
        assert len(err) == 1 and err[0].startswith("refsnn:"), (label, err)
    assert any(pattern in line for line in err), (label, pattern, err)
    assert not list(tmp_path.rglob("*.tmp")), "a half-written file was left behind"


def test_a_full_disk_during_the_checkpoint_write_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    """ENOSPC while writing checkpoint.npz: one line, exit != 0, no checkpoint.npz.tmp, the previous
    checkpoint (from the first epoch) intact."""
    out = _good_run(tmp_path)
    before = (out / "checkpoint.npz").read_bytes()
    real = np.savez

    def full(f, **arrays):
        real(f, **arrays)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(np, "savez", full)
    capsys.readouterr()
    code, _, err = _run(capsys, ["train", "stbp", "--epochs", "2", "--limit-train", "64", "--limit-test", "32",
                                 "--no-progress", "--out", str(out), "--resume"])
    assert code != 0 and len(err) == 1 and "No space left on device" in err[0] and "kept" in err[0], err
    assert not list(out.glob("*.tmp"))
    assert (out / "checkpoint.npz").read_bytes() == before


def test_an_unwritable_run_folder_fails_before_the_first_epoch(tmp_path, capsys, monkeypatch):
    """The folder is checked before training: no epoch is trained into a folder that cannot take its result."""
    import refsnn.harness.train as train_mod

    trained = []
    real = train_mod._evaluate

    def spy(*a, **k):
        trained.append(1)
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "_evaluate", spy)
    code, _, err = _run(capsys, ["train", "stbp", "--epochs", "1", "--limit-train", "32", "--limit-test", "16",
                                 "--no-progress", "--out", str(_unwritable_dir(tmp_path))])
    assert code != 0 and len(err) == 1 and "cannot write" in err[0] and not trained


def test_ctrl_c_during_a_download_is_one_line_and_keeps_the_partial_file(tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setenv("REFSNN_OFFLINE", "0")
    monkeypatch.setattr(datasets, "_transfer", interrupted)
    code, _, err = _run(capsys, ["data", "fetch", "mnist", "--root", str(tmp_path), "--mirror",
                                 "http://127.0.0.1:9/", "--no-progress"])
    assert code == 130 and len(err) == 1 and "interrupted" in err[0] and ".part" in err[0], err
