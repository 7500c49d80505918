"""Property-based tests of the algorithms: random valid settings pass the gradient check, random invalid ones
are refused with an error that names the setting.

hypothesis draws (derandomised, so a run is reproducible) a configuration from the whole space each module
documents, small layer sizes, step counts and batches, and a seed for the problem generator of
``refsnn.harness.problems`` (which keeps every potential ``KINK_MARGIN`` from a kink, so that central differences
are of one smooth function). The gradient must equal central differences of ``reference_objective`` to
GRAD_FD_REL, every tensor. SSNN-BP's spiking update is stochastic and checked statistically elsewhere; its
ANN twin (``ann=True``) is the exact gradient drawn here.
"""
import math
from dataclasses import replace

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="the property tests need hypothesis (the [test] extra)")
from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tolerances import GRAD_FD_REL  # noqa: E402

from refsnn import ide, ssnn_bp, stbp  # noqa: E402
from refsnn.checking import gradcheck
from refsnn.harness import problems
from refsnn import st_rsbp as sr  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
#: A random setting can leave one tensor's gradient tiny or exactly zero (outside a finite surrogate's support,
#: a spectral-norm gain, a bias under BatchNorm), while central differences err by the same ~1e-11..1e-10 in
#: every entry whatever its size (the loss's round-off over eps). So every tensor's error is judged against
#: the largest tensor's norm: a wrong term in a tensor of relative size r still shows as an error of about r,
#: and anything above GRAD_FD_REL of the gradient's size fails.
FLOOR = 1.0
#: Fourth-order central differences: a random small net with a narrow surrogate has large third derivatives,
#: and the second-order rule's truncation error (eps^2 f'''/6) then reaches 1e-10 in a small tensor.
ORDER = 4


def _assert_passes(rep, loss):
    """The report passes; or, when the analytic gradient is exactly zero everywhere (every potential outside
    a finite surrogate's support: a flat network), the differences are round-off: at most the loss's
    round-off over eps, 1e-16 |L| / 1e-6, taken a hundred times larger."""
    if all(t.norm_analytic == 0.0 for t in rep.tensors):
        bound = 1e-8 * (1.0 + abs(loss))
        assert all(t.max_abs_error <= bound for t in rep.tensors), str(rep)
        return
    assert rep.passed, str(rep)


def _problem_or_skip(make):
    """The problem generator's result; a setting for which it finds no problem (every layer active, every
    potential away from a kink) within its tries is not a failure of the gradient, so it is set aside."""
    try:
        return make()
    except RuntimeError as exc:
        assume("no valid problem" not in str(exc))
        raise


# ---------------------------------------------------------------------------
# Valid settings: the FD check passes
# ---------------------------------------------------------------------------

stbp_settings = st.fixed_dictionaries({
    "reset": st.sampled_from(["exp", "zero", "v_reset", "subtract", "none"]),
    "reset_timing": st.sampled_from(["immediate", "delayed"]),
    "detach_reset": st.booleans(),
    "strict": st.booleans(),
    "decay_input": st.booleans(),
    "synapse": st.sampled_from(["none", "current"]),
    "syn_decay": st.floats(0.1, 0.8),
    "surrogate": st.sampled_from(["rect", "triangle", "sigmoid", "gauss", "atan", "fast_sigmoid", "window"]),
    "width": st.floats(0.3, 2.0),
    "v_th": st.floats(0.3, 1.5),
    "decay": st.floats(0.2, 0.9),
    "v_reset": st.floats(-0.3, 0.3),
    "learn_decay": st.sampled_from(["none", "clamp", "sigmoid"]),
    "learn_threshold": st.booleans(),
    "loss": st.sampled_from(["mse_paper", "mse_mean"]),
    "backend": st.sampled_from(["numba", "numpy"]),
})


@SETTINGS
@given(changes=stbp_settings, sizes=st.lists(st.integers(2, 5), min_size=2, max_size=4),
       T=st.integers(2, 5), batch=st.integers(1, 3), seed=st.integers(0, 10_000))
def test_stbp_random_settings_pass_the_gradient_check(changes, sizes, T, batch, seed):
    assume(not (changes["reset"] == "exp" and changes["learn_decay"] != "none"))   # refused: exp divides by it
    cfg = stbp.Config(T=T, **changes)
    params, x, y = _problem_or_skip(lambda: problems.stbp_problem(cfg, seed, tuple(sizes), T, batch))
    rep = gradcheck.check(stbp, params, x, y, cfg, tol=GRAD_FD_REL, order=ORDER, floor_rel=FLOOR, title=f"stbp {changes}")
    _assert_passes(rep, stbp.loss_and_grad(params, x, y, cfg)[0])


ide_settings = st.fixed_dictionaries({
    "leak": st.sampled_from([1.0, 0.95, 0.9]),
    "linearize_at": st.sampled_from(["simulated", "fixed_point"]),
    "solver": st.sampled_from(["broyden", "fixed_point", "dense"]),
    "spectral_norm": st.sampled_from([None, 1.0]),
    "batchnorm": st.booleans(),
    "backend": st.sampled_from(["numba", "numpy"]),
})


@SETTINGS
@given(changes=ide_settings, hidden=st.lists(st.integers(3, 6), min_size=1, max_size=2),
       T=st.integers(10, 40), seed=st.integers(0, 10_000))
def test_ide_random_settings_pass_the_gradient_check(changes, hidden, T, seed):
    cfg = ide.Config(T=T, tol=1e-12, max_iter=200, **changes)
    params, x, y = _problem_or_skip(lambda: problems.ide_problem(cfg, seed, hidden=tuple(hidden)))
    rep = gradcheck.check(ide, params, x, y, cfg, tol=GRAD_FD_REL, order=ORDER, floor_rel=FLOOR, title=f"ide {changes}")
    assert rep.passed, str(rep)


st_rsbp_settings = st.fixed_dictionaries({
    "lateral": st.sampled_from([0.0, 0.5, 1.0]),
    "fake_target_spikes": st.booleans(),
    "reg_lambda": st.sampled_from([0.0, 10.0]),
    "reservoir": st.sampled_from(["grid", "dense"]),
    "backend": st.sampled_from(["numba", "numpy"]),
})


@SETTINGS
@given(changes=st_rsbp_settings, arch=st.sampled_from(["8-6-4", "8-R6-4", "8-6-R6-4", "8-R6-R5-4"]),
       seed=st.integers(0, 10_000))
def test_st_rsbp_random_settings_pass_the_gradient_check(changes, arch, seed):
    cfg = replace(problems.ST_RSBP_SMALL, **changes)
    if cfg.reg_lambda:
        cfg = replace(cfg, reg_beta=0.5, weight_limit=1.0)
    params, x, y = _problem_or_skip(lambda: problems.st_rsbp_problem(arch, cfg, seed))
    rep = gradcheck.check(sr, params, x, y, cfg, tol=GRAD_FD_REL, order=ORDER, floor_rel=FLOOR,
                          title=f"st_rsbp {arch} {changes}")
    _assert_passes(rep, sr.loss_and_grad(params, x, y, cfg)[0])


@SETTINGS
@given(sizes=st.lists(st.integers(3, 8), min_size=2, max_size=4), batch=st.integers(1, 4),
       seed=st.integers(0, 10_000))
def test_ssnn_bp_ann_twin_passes_the_gradient_check(sizes, batch, seed):
    params, x, y = _problem_or_skip(lambda: problems.ssnn_bp_problem(seed, tuple(sizes), batch))
    cfg = ssnn_bp.Config(ann=True)
    rep = gradcheck.check(ssnn_bp, params, x, y, cfg, tol=GRAD_FD_REL, order=ORDER, floor_rel=FLOOR, title=f"ssnn_bp ann {sizes}")
    assert rep.passed, str(rep)


# ---------------------------------------------------------------------------
# Invalid settings: an error that names the setting
# ---------------------------------------------------------------------------

#: Per module, settings and values each Config must refuse: out of range, the wrong type, not finite, or
#: not one of the documented names.
BAD = {
    stbp: {"T": [0, -3, 2.5, "5"], "v_th": [0.0, -1.0, math.nan, math.inf], "decay": [-0.1, math.nan, 1.5],
           "width": [0.0, -2.0, math.nan], "surrogate": ["nope", 3], "reset": ["soft", None],
           "reset_timing": ["later"], "synapse": ["alpha"], "learn_decay": ["yes"], "loss": ["l1"],
           "dtype": ["float16"], "backend": ["cuda"], "detach_reset": ["yes", 1]},
    ide: {"T": [0, -1, 1.5], "v_th": [0.0, -2.0, math.nan], "leak": [0.0, 1.5, math.nan], "tol": [0.0, -1e-9],
          "max_iter": [0, -5], "solver": ["newton"], "linearize_at": ["start"], "bn_mode": ["eval"],
          "dropout": [-0.1, 1.0, math.nan], "sn_method": ["svd"], "backend": ["cuda"]},
    sr: {"T": [0, -10], "tau_m": [0.0, -4.0, math.nan], "tau_s": [0.0, math.inf], "t_ref": [-1, 1.5],
         "d_method": ["exact"], "recurrent_grad": ["full"], "backend": ["cuda"]},
    ssnn_bp: {"T": [0, -4, 3.5], "forward": ["exact"], "update_port": ["shared"], "counter": ["gpu"],
              "gamma_scale": [0.0, -1.0, math.nan]},
}
BAD_ENTRIES = [(mod, field, value) for mod, table in BAD.items() for field, values in table.items() for value in values]


@pytest.mark.parametrize("mod,field,value", BAD_ENTRIES,
                         ids=[f"{m.__name__.split('.')[-1]}-{f}-{v!r}" for m, f, v in BAD_ENTRIES])
def test_every_listed_bad_setting_is_refused_naming_it(mod, field, value):
    with pytest.raises((ValueError, TypeError)) as err:
        mod.Config(**{field: value})
    assert str(err.value).startswith(field), f"{mod.__name__}.Config({field}={value!r}): {err.value}"


#: Settings that must be positive (or, for ``dropout``, in [0, 1)); hypothesis draws values outside.
POSITIVE = [(stbp, "v_th"), (stbp, "width"), (ide, "v_th"), (ide, "tol"), (sr, "tau_m"), (sr, "tau_s"),
            (ssnn_bp, "gamma_scale")]
COUNTS = [(stbp, "T"), (ide, "T"), (ide, "max_iter"), (sr, "T"), (ssnn_bp, "T")]


@settings(max_examples=80, deadline=None, derandomize=True)
@given(where=st.sampled_from(POSITIVE),
       value=st.one_of(st.floats(max_value=0.0), st.sampled_from([math.nan, math.inf, -math.inf])))
def test_random_non_positive_or_non_finite_values_are_refused(where, value):
    mod, field = where
    with pytest.raises((ValueError, TypeError)) as err:
        mod.Config(**{field: value})
    assert str(err.value).startswith(field), f"{mod.__name__}.Config({field}={value!r}): {err.value}"


@settings(max_examples=60, deadline=None, derandomize=True)
@given(where=st.sampled_from(COUNTS),
       value=st.one_of(st.integers(max_value=0), st.floats(0.5, 1e3).filter(lambda v: not v.is_integer())))
def test_random_bad_step_and_iteration_counts_are_refused(where, value):
    mod, field = where
    with pytest.raises((ValueError, TypeError)) as err:
        mod.Config(**{field: value})
    assert str(err.value).startswith(field), f"{mod.__name__}.Config({field}={value!r}): {err.value}"
