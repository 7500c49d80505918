"""refsnn verify on every algorithm: malformed and incomplete case files never pass, and the diagnosis names the
exact setting that reproduces a deliberately different "user" implementation.

Each algorithm gets a correct case written by refsnn itself (the control: it verifies, exit 0).  The malformed
suite changes one thing at a time; every change must exit 2 (bad input) with the offending key named on one line
of stderr, never 0 and never 1 (a malformed file is not a model difference).  The "user" cases are refsnn run with
one named setting changed, as another implementation following an official code would compute; the diagnosis must
name that setting and the ``--set`` that reproduces it, and verifying with that ``--set`` must then agree.
"""
import json
import math
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from tolerances import TINY

import refsnn
from refsnn import ide, ssnn_bp, st_rsbp, stbp
from refsnn.checking import verification
from refsnn.harness import problems
from refsnn.cli import main

# ---------------------------------------------------------------------------
# The correct case of each algorithm
# ---------------------------------------------------------------------------

STBP_CFG = stbp.Config(v_th=0.5, decay=0.3, loss="mse_mean", T=5)
IDE_CFG = ide.Config(T=20, batchnorm=True, solver="dense")
ST_RSBP_CFG = problems.ST_RSBP_SMALL
SSNN_CFG = ssnn_bp.Config(T=16, forward="rate")


def _arrays(algo, params, x, y, cfg, *, grads=None, loss=None, spikes=None, a=None, masks=None):
    """The arrays of a case file, as a dict (keys as in the file)."""
    z = {"x": np.asarray(x, dtype=np.float64), "y": np.asarray(y, dtype=np.int64),
         "config": np.array(json.dumps(cfg.to_dict())), "algorithm": np.array(algo)}
    z.update({f"param/{k}": np.asarray(v, dtype=np.float64) for k, v in params.items()})
    z.update({f"grad/{k}": np.asarray(v, dtype=np.float64) for k, v in grads.items()})
    if loss is not None:
        z["loss"] = np.asarray(float(loss))
    z.update({f"spikes/{n}": np.asarray(s, dtype=np.float64) for n, s in (spikes or {}).items()})
    if a is not None:
        z["a"] = np.asarray(a, dtype=np.float64)
    z.update({f"dropout_mask/{k}": np.asarray(v, dtype=np.float64) for k, v in (masks or {}).items()})
    return z


def stbp_case(cfg=STBP_CFG, seed=7, user_cfg=None):
    params, x, y = problems.stbp_problem(cfg, seed)
    u = user_cfg or cfg
    loss, g = stbp.loss_and_grad(params, x, y, u)
    _, o = stbp.simulate(params, x, u)
    return _arrays("stbp", params, x, y, cfg, grads=g, loss=loss, spikes={n + 1: on for n, on in enumerate(o)})


def ide_case(cfg=IDE_CFG, seed=303, user_cfg=None, with_a=True, masks=None, **kw):
    params, x, y = problems.ide_problem(cfg, seed, **kw)
    u = user_cfg or cfg
    info = {}
    extra = {"dropout_mask": masks} if masks else {}
    loss, g = ide.loss_and_grad(params, x, y, u, info=info, **extra)
    g = {k: v for k, v in g.items() if k not in ide.state_keys(cfg)}
    return _arrays("ide", params, x, y, cfg, grads=g, loss=loss, a=info["a"] if with_a else None, masks=masks)


def st_rsbp_case(cfg=ST_RSBP_CFG, seed=200, user_cfg=None):
    params, x, y = problems.st_rsbp_problem("8-6-R6-4", cfg, seed)
    u = user_cfg or cfg
    loss, g = st_rsbp.loss_and_grad(params, x, y, u)
    S = st_rsbp.simulate(params, x, u).S
    return _arrays("st_rsbp", params, x, y, cfg, grads=g, loss=loss, spikes={n + 1: s for n, s in enumerate(S)})


def _ssnn_draws(params, x, y, cfg, n, seed, factor=1.0):
    rng = np.random.default_rng(seed)
    draws = [ssnn_bp.loss_and_grad(params, x, y, cfg, rng=rng)[1] for _ in range(n)]
    return {k: factor * np.stack([d[k] for d in draws]) for k in draws[0]}


def ssnn_case(n=200, seed=1, factor=1.0, cfg=SSNN_CFG, batch=3):
    params, x, y = problems.ssnn_bp_problem(400, batch=batch)
    loss, _ = ssnn_bp.loss_and_grad(params, x, y, replace(cfg, ann=True))
    return _arrays("ssnn_bp", params, x, y, cfg, grads=_ssnn_draws(params, x, y, cfg, n, seed, factor), loss=loss)


BASES = {"stbp": stbp_case, "ide": ide_case, "st_rsbp": st_rsbp_case, "ssnn_bp": ssnn_case}


def _write(tmp_path, z, name="case.npz"):
    path = tmp_path / name
    with open(path, "wb") as f:
        np.savez(f, **z)
    return path


def _cli(capsys, algo, path, *extra):
    code = main(["verify", algo, str(path), *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("algo", sorted(BASES))
def test_the_correct_case_of_each_algorithm_agrees(tmp_path, capsys, algo):
    code, out, err = _cli(capsys, algo, _write(tmp_path, BASES[algo]()))
    assert code == 0 and "AGREE" in out, out + err


# ---------------------------------------------------------------------------
# Malformed and incomplete cases: exit 2, the key named
# ---------------------------------------------------------------------------

def _set(z, key, value):
    z = dict(z)
    z[key] = value
    return z


def _drop(z, *keys):
    return {k: v for k, v in z.items() if k not in keys}


def _poke(z, key, index, value):
    z = dict(z)
    arr = np.array(z[key], dtype=np.float64, copy=True)
    arr[index] = value
    z[key] = arr
    return z


def _only_grad(z, key):
    return {k: v for k, v in z.items() if not k.startswith("grad/") or k == f"grad/{key}"}


def _zero_grad_one_nan(z, key):
    z = dict(z)
    g = np.zeros_like(z[key])
    g.reshape(-1)[0] = np.nan
    z[key] = g
    return z


#: (algorithm, label, change of the correct case's arrays or a raw-file writer, extra CLI arguments, what stderr names)
MALFORMED = [
    ("stbp", "grad/W2 missing", lambda z: _drop(z, "grad/W2"), (), "grad/W2"),
    ("stbp", "only grad/b2 present (3 of 4 missing)", lambda z: _only_grad(z, "b2"), (), "grad/W1"),
    ("stbp", "NaN loss", lambda z: _set(z, "loss", np.asarray(np.nan)), (), "loss"),
    ("stbp", "NaN in grad/W1", lambda z: _poke(z, "grad/W1", (0, 0), np.nan), (), "grad/W1 has 1 NaN at (0, 0)"),
    ("stbp", "inf in grad/W1 (beside a doubled W2)",
     lambda z: _set(_poke(z, "grad/W1", (1, 2), np.inf), "grad/W2", 2 * z["grad/W2"]), (), "grad/W1 has 1 infinity"),
    ("stbp", "-inf in x", lambda z: _poke(z, "x", (0, 0, 0), -np.inf), (), "x has 1 infinity"),
    ("stbp", "NaN in param/b1", lambda z: _poke(z, "param/b1", 0, np.nan), (), "param/b1"),
    ("stbp", "wrong-shape spikes/1", lambda z: _set(z, "spikes/1", z["spikes/1"][:, :, :-1]), (), "spikes/1"),
    ("stbp", "spikes/4 for a three-layer net", lambda z: _set(z, "spikes/4", z["spikes/3"]), (), "spikes/4"),
    ("stbp", "spikes/0", lambda z: _set(z, "spikes/0", z["spikes/1"]), (), "spikes/0"),
    ("stbp", "non-binary spikes", lambda z: _poke(z, "spikes/2", (1, 0, 0), 0.5), (), "spikes/2"),
    ("stbp", "NaN spikes", lambda z: _poke(z, "spikes/1", (0, 0, 0), np.nan), (), "spikes/1"),
    ("stbp", "--tol -1", lambda z: z, ("--tol", "-1"), "tol"),
    ("stbp", "--tol nan", lambda z: z, ("--tol", "nan"), "tol"),
    ("stbp", "--tol 0", lambda z: z, ("--tol", "0"), "tol"),
    ("stbp", "param/W2 missing", lambda z: _drop(z, "param/W2", "grad/W2"), (), "param/W2 is missing"),
    ("stbp", "a 2-element loss", lambda z: _set(z, "loss", np.array([0.1, 0.2])), (), "'loss' must be one number"),
    ("stbp", "'algorithm' says ide", lambda z: _set(z, "algorithm", np.array("ide")), (), "'algorithm'"),
    ("stbp", "'algorithm' unknown", lambda z: _set(z, "algorithm", np.array("nope")), (), "nope"),
    ("stbp", "--set T against x's T", lambda z: z, ("--set", "T=7"), "--set T=7"),
    ("stbp", "grad/W1 of the wrong shape", lambda z: _set(z, "grad/W1", z["grad/W1"][:, :-1]), (), "grad/W1"),
    ("stbp", "a gradient of no parameter",
     lambda z: _set(_set(z, "grad/W9", np.zeros(2)), "param/W9", np.zeros(2)), (), "W9"),
    ("stbp", "a gradient without its parameter", lambda z: _set(z, "grad/V1", np.zeros(2)), (), "grad/V1"),
    ("stbp", "non-integer labels", lambda z: _set(z, "y", z["y"] + 0.5), (), "'y'"),
    ("stbp", "2-d labels", lambda z: _set(z, "y", z["y"][:, None]), (), "'y'"),
    ("stbp", "string x", lambda z: _set(z, "x", np.array(["a", "b"])), (), "'x'"),
    ("stbp", "config not JSON", lambda z: _set(z, "config", np.array("{nope")), (), "'config'"),
    ("stbp", "config a JSON list", lambda z: _set(z, "config", np.array("[1, 2]")), (), "'config'"),
    ("stbp", "config with an unknown field", lambda z: _set(z, "config", np.array('{"nofield": 1}')), (), "nofield"),
    ("stbp", "config not a string", lambda z: _set(z, "config", np.arange(3.0)), (), "'config'"),
    ("stbp", "no x", lambda z: _drop(z, "x"), (), "'x'"),
    ("stbp", "no gradient at all", lambda z: {k: v for k, v in z.items() if not k.startswith("grad/")}, (),
     "grad/<key>"),
    ("stbp", "no parameter at all", lambda z: {k: v for k, v in z.items() if not k.startswith("param/")}, (),
     "param/<key>"),
    ("stbp", "--keys of no gradient", lambda z: z, ("--keys", "W9"), "--keys"),
    ("stbp", "--keys empty", lambda z: z, ("--keys", ","), "--keys"),
    ("stbp", "a dropout mask for STBP", lambda z: _set(z, "dropout_mask/F", np.ones((4, 5))), (), "dropout_mask"),
    ("stbp", "rates 'a' for STBP", lambda z: _set(z, "a", np.ones((4, 3))), (), "'a'"),
    ("ide", "NaN in a", lambda z: _poke(z, "a", (0, 0), np.nan), (), "case: a has 1 NaN"),
    ("ide", "wrong-shape a", lambda z: _set(z, "a", z["a"][:, :-1]), (), "'a' has shape"),
    ("ide", "all-zero grad/b with one NaN", lambda z: _zero_grad_one_nan(z, "grad/b"), (), "grad/b has 1 NaN"),
    ("ide", "grad/W missing", lambda z: _drop(z, "grad/W"), (), "grad/W"),
    ("ide", "spikes for IDE", lambda z: _set(z, "spikes/1", np.zeros((20, 4, 6))), (), "spikes"),
    ("ide", "dropout without masks", lambda z: z, ("--set", "dropout=0.2"), "dropout_mask"),
    ("ide", "masks without dropout", lambda z: _set(z, "dropout_mask/F", np.ones((4, 6))), (), "dropout"),
    ("ide", "inf in param/W", lambda z: _poke(z, "param/W", (0, 0), np.inf), (), "param/W"),
    ("st_rsbp", "non-binary spikes", lambda z: _poke(z, "spikes/1", (3, 0, 0), 2.0), (), "spikes/1"),
    ("st_rsbp", "grad/Wr2 missing", lambda z: _drop(z, "grad/Wr2"), (), "grad/Wr2"),
    ("st_rsbp", "NaN loss", lambda z: _set(z, "loss", np.asarray(np.nan)), (), "loss"),
    ("ssnn_bp", "a single draw", lambda z: {**z, **{k: v[0] for k, v in z.items() if k.startswith("grad/")}}, (),
     "single draw"),
    ("ssnn_bp", "draws of different numbers", lambda z: _set(z, "grad/b1", z["grad/b1"][:-1]), (), "differ in number"),
    ("ssnn_bp", "one NaN among the draws", lambda z: _poke(z, "grad/W2", (5, 0, 0), np.nan), (), "grad/W2"),
    ("ssnn_bp", "N = 1 stacked", lambda z: {**z, **{k: v[:1] for k, v in z.items() if k.startswith("grad/")}}, (),
     "N >= 2"),
    ("ssnn_bp", "spikes for SSNN-BP", lambda z: _set(z, "spikes/1", np.zeros((4, 3, 8))), (), "spikes"),
]

RAW = [
    ("a text file", lambda p: p.write_text("x,y\n1,2\n"), "is not a .npz archive"),
    ("an empty file", lambda p: p.write_bytes(b""), "is not a .npz archive"),
    ("a truncated zip", lambda p: p.write_bytes(p.read_bytes()[:200]), "not a readable .npz"),
    ("a pickled object array", None, "holds Python objects"),
    ("a folder", None, "is a folder"),
    ("no such file", None, "no file"),
]


@pytest.fixture(scope="module")
def bases():
    return {algo: make() for algo, make in BASES.items()}


@pytest.mark.parametrize("algo, label, change, extra, named", MALFORMED, ids=[f"{m[0]}: {m[1]}" for m in MALFORMED])
def test_a_malformed_case_exits_2_naming_the_key(tmp_path, capsys, bases, algo, label, change, extra, named):
    path = _write(tmp_path, change(bases[algo]))
    code, out, err = _cli(capsys, algo, path, *extra)
    assert code == 2, f"{label}: exit {code}\n{out}{err}"
    assert err.count("\n") == 1 and err.startswith("refsnn: "), err
    assert named in err, f"{label}: {err}"


@pytest.mark.parametrize("label, make, named", RAW, ids=[r[0] for r in RAW])
def test_a_file_that_is_no_case_exits_2(tmp_path, capsys, bases, label, make, named):
    path = _write(tmp_path, bases["stbp"])
    if label == "a pickled object array":
        z = dict(bases["stbp"])
        z["grad/W1"] = np.array([object()], dtype=object)
        with open(path, "wb") as f:
            np.savez(f, **z)
    elif label == "a folder":
        path = tmp_path / "folder.npz"
        path.mkdir()
    elif label == "no such file":
        path = tmp_path / "none.npz"
    else:
        make(path)
    code, out, err = _cli(capsys, "stbp", path)
    assert code == 2 and named in err and err.count("\n") == 1, err


def test_the_suite_covers_at_least_the_issue_s_42_kinds():
    assert len(MALFORMED) + len(RAW) >= 42


def test_a_subset_named_with_keys_is_checked_and_said(tmp_path, capsys, bases):
    z = _only_grad(bases["stbp"], "b2")
    code, out, err = _cli(capsys, "stbp", _write(tmp_path, z), "--keys", "b2")
    assert code == 0, out + err
    assert "note: only b2 checked, as asked; not compared: W1, b1, W2, W3, b3" in out, out


# ---------------------------------------------------------------------------
# The Python route raises the same errors (hypothesis: a NaN anywhere in any array never gives a verdict)
# ---------------------------------------------------------------------------

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@given(st.data(), st.sampled_from([np.nan, np.inf, -np.inf]))
@settings(max_examples=40, deadline=None, derandomize=True)
def test_verify_never_gives_a_verdict_on_a_non_finite_array(tmp_path_factory, data, bad):
    base = _STBP_BASE
    key = data.draw(st.sampled_from([k for k in base if k.split("/")[0] in ("x", "param", "grad", "loss", "spikes")]))
    arr = np.array(base[key], dtype=np.float64, copy=True)
    flat = arr.reshape(-1)
    flat[data.draw(st.integers(0, flat.size - 1))] = bad
    path = _write(tmp_path_factory.mktemp("h"), _set(base, key, arr))
    with pytest.raises(ValueError, match=key.replace("/", "/") if key != "loss" else "loss"):
        refsnn.verify("stbp", path)


_STBP_BASE = stbp_case()


# ---------------------------------------------------------------------------
# The diagnosis: three or more deliberately different "user" cases per algorithm
# ---------------------------------------------------------------------------

def _diagnosed(tmp_path, capsys, algo, z, *extra):
    """Verify a user case: it must disagree, the diagnosis must give a --set, and with it the case must agree."""
    path = _write(tmp_path, z)
    code, out, err = _cli(capsys, algo, path, *extra)
    assert code == 1, out + err
    line = next((ln for ln in out.splitlines() if "to check with it:" in ln), None)
    assert line is not None, out
    sets = line.split("to check with it:")[1].split()
    code2, out2, err2 = _cli(capsys, algo, path, *extra, *sets)
    assert code2 == 0, out2 + err2
    return out


def test_stbp_user_with_a_zero_reset(tmp_path, capsys):
    """The paper's reset (u decays to 0 after a spike) and the zero reset fire alike; the gradients differ."""
    out = _diagnosed(tmp_path, capsys, "stbp", stbp_case(user_cfg=replace(STBP_CFG, reset="zero")))
    assert "the forward passes agree" in out and "reset='zero'" in out


def test_stbp_user_with_a_subtract_reset(tmp_path, capsys):
    out = _diagnosed(tmp_path, capsys, "stbp", stbp_case(user_cfg=replace(STBP_CFG, reset="subtract")))
    assert "spikes first differ" in out and "your numbers are refsnn's with reset='subtract'" in out


def test_stbp_user_with_a_sigmoid_surrogate_of_another_width(tmp_path, capsys):
    out = _diagnosed(tmp_path, capsys, "stbp", stbp_case(user_cfg=replace(STBP_CFG, surrogate="sigmoid", width=0.37)))
    assert "surrogate='sigmoid'" in out and "width=0.37 " in out


def test_stbp_user_with_a_detached_reset(tmp_path, capsys):
    out = _diagnosed(tmp_path, capsys, "stbp", stbp_case(user_cfg=replace(STBP_CFG, detach_reset=True)))
    assert "detach_reset=True" in out


def test_stbp_user_with_a_float32_decay(tmp_path, capsys):
    out = _diagnosed(tmp_path, capsys, "stbp", stbp_case(user_cfg=replace(STBP_CFG, decay=float(np.float32(0.3)))))
    assert f"decay={float(np.float32(0.3))!r}" in out and "float32" in out


def test_stbp_user_with_the_paper_s_printed_temporal_term(tmp_path, capsys):
    """An implementation of the print (written in tests/test_stbp.py, independently of the library's) is
    recognised as that."""
    from test_stbp import literal_temporal_term_gradient

    cfg = replace(STBP_CFG, reset="zero", surrogate="sigmoid", width=0.5)
    z = stbp_case(cfg=cfg)
    params = {k.split("/")[1]: v for k, v in z.items() if k.startswith("param/")}
    g = literal_temporal_term_gradient(params, z["x"], z["y"], cfg)
    z = {**z, **{f"grad/{k}": v for k, v in g.items()}}
    code, out, err = _cli(capsys, "stbp", _write(tmp_path, z))
    assert code == 1 and "your gradient is the paper's printed temporal term" in out, out + err


@pytest.mark.parametrize("kind", ["ce_count", "mse_count"])
def test_stbp_user_with_another_loss_function_on_the_same_spikes(tmp_path, capsys, kind):
    """The spikes match refsnn's exactly, the loss does not: the diagnosis says the loss function differs (not
    the network) and names the readout whose value it is."""
    from refsnn import stbp_layers as sl

    z = stbp_case()
    o = z[f"spikes/{max(int(k.split('/')[1]) for k in z if k.startswith('spikes/'))}"]
    z = _set(z, "loss", np.asarray(sl.Loss(kind).value_and_grads(o, None, z["y"])[0]))
    code, out, err = _cli(capsys, "stbp", _write(tmp_path, z))
    assert code == 1, out + err
    assert "agree exactly: the loss function" in out and f"'{kind}'" in out, out


def test_ide_user_with_the_official_iter_solver(tmp_path, capsys):
    user = replace(IDE_CFG, solver="code_iter", max_iter=30, early_stop=False)
    out = _diagnosed(tmp_path, capsys, "ide", ide_case(user_cfg=user))
    assert "the official IDE code's 'iter' solver" in out and "--set solver=code_iter" in out


def test_ide_user_in_eval_mode_batchnorm(tmp_path, capsys):
    out = _diagnosed(tmp_path, capsys, "ide", ide_case(user_cfg=replace(IDE_CFG, bn_mode="running")))
    assert "bn_mode='running'" in out and "eval mode" in out


def test_ide_user_with_a_lif_leak(tmp_path, capsys):
    out = _diagnosed(tmp_path, capsys, "ide", ide_case(user_cfg=replace(IDE_CFG, leak=0.95)))
    assert "the rates a[T] differ" in out and "leak=0.95" in out


def test_ide_user_whose_solver_stops_early_is_told_so_not_float32(tmp_path, capsys):
    """A Broyden stopped at a loose tolerance leaves ~1e-7: the diagnosis says it is a solver's stopping error,
    with its size, and never blames float32 (nothing is float32)."""
    user = replace(IDE_CFG, solver="broyden", tol=1e-6)
    path = _write(tmp_path, ide_case(user_cfg=user))
    code, out, err = _cli(capsys, "ide", path)
    assert code == 1, out + err
    assert "stopping error" in out and "a float32 piece" not in out, out


def test_ide_dropout_masks_in_the_case(tmp_path, capsys):
    cfg = replace(IDE_CFG, dropout=0.2)
    params, x, y = problems.ide_problem(cfg, 303)
    masks = ide.dropout_mask(params, x, cfg, 5)
    z = ide_case(cfg=cfg, masks=masks)
    code, out, err = _cli(capsys, "ide", _write(tmp_path, z))
    assert code == 0, out + err
    other = ide.dropout_mask(params, x, cfg, 6)         # the user's masks differ from the file's: no agreement
    z2 = _set(z, "dropout_mask/F", other["F"])
    code, out, err = _cli(capsys, "ide", _write(tmp_path, z2, "other.npz"))
    assert code == 1, out + err


def test_st_rsbp_user_with_the_official_diagonal_gradient(tmp_path, capsys):
    out = _diagnosed(tmp_path, capsys, "st_rsbp", st_rsbp_case(user_cfg=replace(ST_RSBP_CFG, recurrent_grad="diagonal")))
    assert "recurrent_grad='diagonal'" in out and "official ST-RSBP code's diagonal" in out


def test_st_rsbp_user_with_all_three_code_gradients(tmp_path, capsys):
    user = replace(ST_RSBP_CFG, recurrent_grad="diagonal", recurrent_delta="code", lateral_grad="code")
    out = _diagnosed(tmp_path, capsys, "st_rsbp", st_rsbp_case(user_cfg=user))
    assert "the official ST-RSBP code's gradients" in out


def test_st_rsbp_user_with_kappa_zero(tmp_path, capsys):
    out = _diagnosed(tmp_path, capsys, "st_rsbp", st_rsbp_case(user_cfg=replace(ST_RSBP_CFG, kappa_zero=0.0)))
    assert "kappa_zero=0.0" in out


def test_st_rsbp_user_without_fake_target_spikes(tmp_path, capsys):
    params, x, y = problems.st_rsbp_problem("8-6-R6-4", ST_RSBP_CFG, 200, silent_target=True)
    user = replace(ST_RSBP_CFG, fake_target_spikes=False)
    loss, g = st_rsbp.loss_and_grad(params, x, y, user)
    S = st_rsbp.simulate(params, x, user).S
    z = _arrays("st_rsbp", params, x, y, ST_RSBP_CFG, grads=g, loss=loss, spikes={n + 1: s for n, s in enumerate(S)})
    out = _diagnosed(tmp_path, capsys, "st_rsbp", z)
    assert "fake_target_spikes=False" in out


# ---------------------------------------------------------------------------
# SSNN-BP: judged statistically
# ---------------------------------------------------------------------------

def _detect_n(factor, z_target=8.0):
    """Draws needed to see a bias of (1 - factor) x the exact gradient: for the entry where it is largest against
    the closed-form standard deviation of one draw (one sample, Eq. (Var1)-(Var2)), N such that the expected z-score
    of the mean is ``z_target``, far past the Bonferroni bound (~4.5 for these 46 entries at alpha 1e-3)."""
    params, x, y = problems.ssnn_bp_problem(400, batch=1)
    _, g = ssnn_bp.loss_and_grad(params, x, y, replace(SSNN_CFG, ann=True))
    var = ssnn_bp.variance_v1(params, x, y, SSNN_CFG)
    ratio = max(float(np.max(np.abs(g[k]) / np.sqrt(np.maximum(var[k], TINY)))) for k in g)
    return int(math.ceil((z_target / ((1 - factor) * ratio)) ** 2))


def test_ssnn_bp_unbiased_draws_pass_and_the_variance_matches_the_closed_form(tmp_path, capsys):
    z = ssnn_case(n=400, seed=3, batch=1)
    code, out, err = _cli(capsys, "ssnn_bp", _write(tmp_path, z))
    assert code == 0, out + err
    assert "statistical" in out and "the closed form" in out


@pytest.mark.parametrize("factor", [0.9, 0.98])
def test_ssnn_bp_biased_draws_fail(tmp_path, capsys, factor):
    n = _detect_n(factor)
    assert n <= 4000, f"a bias of {1 - factor:g} needs {n} draws here"
    z = ssnn_case(n=n, seed=4, factor=factor, batch=1)
    code, out, err = _cli(capsys, "ssnn_bp", _write(tmp_path, z))
    assert code == 1, out + err
    found = float(out.split("the mean of your draws is ")[1].split()[0])
    assert abs(found - factor) < (1 - factor) / 2, out     # nearer the bias than halfway back to unbiased
    control = ssnn_case(n=n, seed=4, factor=1.0, batch=1)
    code, out, err = _cli(capsys, "ssnn_bp", _write(tmp_path, control, "control.npz"))
    assert code == 0, out + err


def test_ssnn_bp_the_ann_twin_is_exact(tmp_path, capsys):
    cfg = ssnn_bp.Config(ann=True)
    params, x, y = problems.ssnn_bp_problem(400)
    loss, g = ssnn_bp.loss_and_grad(params, x, y, cfg)
    z = _arrays("ssnn_bp", params, x, y, cfg, grads=g, loss=loss)
    code, out, err = _cli(capsys, "ssnn_bp", _write(tmp_path, z))
    assert code == 0, out + err
    z = _set(z, "grad/W1", z["grad/W1"] * 1.001)
    code, out, err = _cli(capsys, "ssnn_bp", _write(tmp_path, z, "bad.npz"))
    assert code == 1, out + err
