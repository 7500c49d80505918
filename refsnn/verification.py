"""Checking another implementation against refsnn from a file (``refsnn verify``), and the golden vectors.

A *case file* is a NumPy ``.npz`` archive that any language can write (a zip of ``.npy`` arrays;
``docs/verify.md`` describes the format byte for byte).  Its keys:

==================  ========================  =================================================================
key                 shape, dtype              what
==================  ========================  =================================================================
``x``               algorithm's input         STBP/ST-RSBP ``(T, batch, n_in)``; IDE/SSNN-BP ``(batch, n_in)`` or spikes
``y``               ``(batch,)`` int          labels
``param/<key>``     the parameter's shape     your parameters under refsnn's keys (``W1``, ``b1``, ...)
``grad/<key>``      the same                  your gradient of the loss
``loss``            0-d, optional             your loss
``spikes/<n>``      ``(T, batch, n_n)``       optional: layer ``n``'s spikes (STBP, ST-RSBP; ``n = 1..N``)
``a``               ``(batch, n_N)``          optional (IDE): your rates ``a[T]``
``config``          0-d str, optional         a JSON dict of the algorithm's ``Config`` fields
``algorithm``       0-d str, optional         ``"stbp"``, ...
==================  ========================  =================================================================

:func:`verify` recomputes everything with refsnn and diagnoses a disagreement in this order: the
loss differs (the forward pass differs); the first layer and step where the spikes differ (the
neuron differs there; refsnn tries the other resets to say which matches yours); errors in the
float32 band with an identical forward (a float32 piece on one side; refsnn tries float32-rounded
constants); identical forward but different gradients (surrogate, detach or solver; refsnn tries
the other surrogates, widths and the detach flag).  The golden vectors (:func:`golden_write`,
``refsnn/golden/``) are case files in the same format, made by refsnn itself.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

import refsnn
from refsnn import gradcheck

__all__ = ["Verdict", "read_case", "write_case", "verify", "golden_dir", "golden_cases", "golden_write",
           "golden_compare", "FORMAT_VERSION"]

FORMAT_VERSION = 1
#: Loss differences above this (relative) mean the forward passes differ; in [1e-9, this] they look float32.
LOSS_REL = 1e-6


# ---------------------------------------------------------------------------
# Case files
# ---------------------------------------------------------------------------

def _load(path: Path) -> dict:
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise FileNotFoundError(f"case: no file {path}") from None
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"case: {path} is not a readable .npz archive ({type(exc).__name__}: {exc})") from None


def read_case(path) -> dict:
    """Read a case file: ``{"x", "y", "params", "grads", "loss", "spikes", "a", "config", "algorithm"}``.

    Missing optional entries are None (``spikes`` is a dict layer -> array, possibly empty).  Raises
    ValueError naming the key for anything malformed.
    """
    z = _load(Path(path))
    for key in ("x", "y"):
        if key not in z:
            raise ValueError(f"case: {path} has no {key!r} array (keys: {sorted(z)})")
    params = {k.split("/", 1)[1]: z[k] for k in z if k.startswith("param/")}
    grads = {k.split("/", 1)[1]: z[k] for k in z if k.startswith("grad/")}
    if not params:
        raise ValueError(f"case: {path} has no 'param/<key>' arrays")
    if not grads:
        raise ValueError(f"case: {path} has no 'grad/<key>' arrays")
    for k in grads:
        if k in params and np.shape(grads[k]) != np.shape(params[k]):
            raise ValueError(f"case: grad/{k} has shape {np.shape(grads[k])}, param/{k} {np.shape(params[k])}")
    spikes = {}
    for k in z:
        if k.startswith("spikes/"):
            layer = k.split("/", 1)[1]
            if not layer.isdigit():
                raise ValueError(f"case: {k}: the layer must be a number 1..N")
            spikes[int(layer)] = z[k]
    config = None
    if "config" in z:
        try:
            config = json.loads(str(z["config"]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"case: 'config' is not JSON ({exc})") from None
        if not isinstance(config, dict):
            raise ValueError("case: 'config' must be a JSON object of Config fields")
    loss = float(z["loss"]) if "loss" in z else None
    return {"x": z["x"], "y": z["y"], "params": params, "grads": grads, "loss": loss, "spikes": spikes,
            "a": z.get("a"), "config": config, "algorithm": str(z["algorithm"]) if "algorithm" in z else None,
            "extra": {k: z[k] for k in z if k.split("/", 1)[0] not in
                      ("x", "y", "param", "grad", "loss", "spikes", "a", "config", "algorithm")}}


def write_case(path, x, y, params, grads, *, loss=None, spikes=None, a=None, config=None, algorithm=None,
               extra=None) -> Path:
    """Write a case file (the format of :func:`read_case`); arrays are stored as float64 (labels int64)."""
    arrays = {"x": np.asarray(x, dtype=np.float64), "y": np.asarray(y, dtype=np.int64)}
    arrays.update({f"param/{k}": np.asarray(v, dtype=np.float64) for k, v in params.items()})
    arrays.update({f"grad/{k}": np.asarray(v, dtype=np.float64) for k, v in grads.items()})
    if loss is not None:
        arrays["loss"] = np.asarray(float(loss))
    for n, s in (spikes or {}).items():
        arrays[f"spikes/{int(n)}"] = np.asarray(s, dtype=np.float64)
    if a is not None:
        arrays["a"] = np.asarray(a, dtype=np.float64)
    if config is not None:
        arrays["config"] = np.array(json.dumps(config.to_dict() if hasattr(config, "to_dict") else config,
                                               sort_keys=True))
    if algorithm is not None:
        arrays["algorithm"] = np.array(str(algorithm))
    arrays.update({k: np.asarray(v) for k, v in (extra or {}).items()})
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def _config(module, given):
    """A Config from a Config, a dict of fields (JSON lists become tuples), or None (the defaults)."""
    if given is None:
        return module.Config()
    if isinstance(given, module.Config):
        return given
    if not isinstance(given, dict):
        raise TypeError(f"config: expected {module.__name__}.Config or a dict of its fields, got {type(given).__name__}")
    names = {f.name for f in fields(module.Config)}
    unknown = sorted(set(given) - names)
    if unknown:
        raise ValueError(f"config: {unknown} are not fields of {module.__name__}.Config")
    return module.Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()})


# ---------------------------------------------------------------------------
# verify
# ---------------------------------------------------------------------------

@dataclass
class Verdict:
    """What :func:`verify` found: ``agree``, the per-tensor ``report`` and the ``diagnosis`` lines."""

    agree: bool
    report: gradcheck.Report
    diagnosis: list = field(default_factory=list)
    reference_loss: float | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.agree else 1

    def __str__(self) -> str:
        lines = [str(self.report)] + [f"diagnosis: {d}" for d in self.diagnosis]
        lines.append("AGREE" if self.agree else "DISAGREE")
        return "\n".join(lines)


def _forward_state(module, name, params, x, y, cfg):
    """refsnn's loss, gradient and forward state for the case."""
    info = {}
    kw = {"rng": 0} if name == "ssnn_bp" else {}
    loss, grads = module.loss_and_grad(params, x, y, cfg, info=info, **kw)
    state = {}
    if name == "stbp":
        _, o = module.simulate(params, x, cfg)
        state["spikes"] = {n + 1: on for n, on in enumerate(o)}
    elif name == "st_rsbp":
        state["spikes"] = {n + 1: s for n, s in enumerate(module.simulate(params, x, cfg).S)}
    elif name == "ide":
        state["a"] = info["a"]
    return loss, grads, state


def _first_spike_difference(mine: dict, ref: dict):
    for n in sorted(mine):
        if n not in ref:
            return f"layer {n}: refsnn's network has only {len(ref)} layers"
        a, b = np.asarray(mine[n]), np.asarray(ref[n])
        if a.shape != b.shape:
            return f"layer {n}: your spikes have shape {a.shape}, refsnn's {b.shape}"
        diff = np.argwhere(a != b)
        if diff.size:
            t, s, i = diff[0]
            return (f"the spikes first differ in layer {n} at step {t} (sample {s}, neuron {i}): yours "
                    f"{a[t, s, i]:g}, refsnn's {b[t, s, i]:g}")
    return None


def _grads_agree(module, params, x, y, cfg, mine, tol, buffers):
    try:
        _, g = module.loss_and_grad(params, x, y, cfg)
    except (ValueError, TypeError):
        return False
    try:
        return gradcheck.compare(mine, {k: g[k] for k in mine}, tol=tol, buffers=buffers).passed
    except (ValueError, KeyError):
        return False


def _stbp_probes(case, cfg, kind):
    """Variants of an STBP config to try: ``kind`` is "spikes" (the neuron), "float32" or "gradient"."""
    from refsnn import stbp, surrogates

    out = []
    if kind == "spikes":
        for reset in stbp.RESETS:
            for timing in stbp.TIMINGS:
                for strict in (True, False):
                    if (reset, timing, strict) != (cfg.reset, cfg.reset_timing, cfg.strict):
                        out.append(dict(reset=reset, reset_timing=timing, strict=strict))
    elif kind == "float32":
        f32 = lambda v: tuple(float(np.float32(u)) for u in v) if isinstance(v, tuple) else float(np.float32(v))  # noqa
        out.append(dict(decay=f32(cfg.decay)))
        out.append(dict(v_th=f32(cfg.v_th)))
        out.append(dict(decay=f32(cfg.decay), v_th=f32(cfg.v_th)))
    else:
        out.append(dict(detach_reset=not cfg.detach_reset))
        widths = {cfg.width * f for f in (0.5, 2.0, 0.25, 4.0, np.pi / 2, 2 / np.pi)}
        widths |= {1.0, 0.5, 2.0, 0.25, 1 / np.pi, 2 / (np.pi * 4), 1 / 4, 1 / 25, 1 / 5}
        for name in surrogates.NAMES:
            for w in sorted(widths):
                if (name, w) != (cfg.surrogate, cfg.width):
                    out.append(dict(surrogate=name, width=float(w)))
        for name in surrogates.NAMES:
            for w in sorted(widths):
                out.append(dict(surrogate=name, width=float(w), detach_reset=not cfg.detach_reset))
    return out


def _describe(changes, cfg):
    """The fields a probe changed, with refsnn's values (unchanged ones left out)."""
    return ", ".join(f"{k}={v!r} (refsnn has {getattr(cfg, k)!r})" for k, v in changes.items() if getattr(cfg, k) != v)


def verify(algo, case, cfg=None, *, tol: float = 1e-9) -> Verdict:
    """Check the gradient in a case file (or a :func:`read_case` dict) against refsnn's, and diagnose.

    Parameters
    ----------
    algo : str or module
        The algorithm the case belongs to.
    case : path or dict
        A case file (format: module docstring) or what :func:`read_case` returns.
    cfg : Config or dict, optional
        The algorithm's configuration; default: the case's ``config`` entry, else the defaults.
    tol : float
        Largest accepted relative error per tensor (1e-9: a float64 port agrees to ~1e-15).
    """
    name = refsnn.algorithm_name(algo)
    module = refsnn.algorithm(name)
    c = case if isinstance(case, dict) else read_case(case)
    cfg = _config(module, c["config"] if cfg is None else cfg)
    params = c["params"]
    x = np.asarray(c["x"], dtype=np.float64)
    y = np.asarray(c["y"])
    buffers = tuple(module.state_keys(cfg)) if hasattr(module, "state_keys") else ()
    ref_loss, ref_grads, state = _forward_state(module, name, params, x, y, cfg)
    mine = c["grads"]
    missing = [k for k in ref_grads if k not in mine and k not in buffers]
    extra = [k for k in mine if k not in ref_grads]
    if extra:
        raise ValueError(f"case: grad/{extra[0]} is not a parameter of this {name} network "
                         f"(refsnn's keys: {sorted(ref_grads)})")
    report = gradcheck.compare(mine, {k: ref_grads[k] for k in mine}, tol=tol, buffers=buffers,
                               title=f"refsnn verify {name}: yours (mine) vs refsnn (reference)")
    diagnosis = []
    if missing:
        diagnosis.append(f"the case has no gradient for {missing}: those were not compared")
    forward_same = True
    if c["loss"] is not None:
        rel = abs(c["loss"] - ref_loss) / max(abs(ref_loss), 1e-300)
        if rel > LOSS_REL:
            forward_same = False
            diagnosis.append(f"the loss differs: yours {c['loss']:.12g}, refsnn's {ref_loss:.12g} (relative "
                             f"{rel:.1e}): the forward pass differs")
        elif rel > 1e-9:
            diagnosis.append(f"the loss differs by {rel:.1e} relative: a float32 piece in the forward pass?")
    if c["spikes"] and "spikes" in state:
        where = _first_spike_difference(c["spikes"], state["spikes"])
        if where:
            forward_same = False
            diagnosis.append(f"{where}: the neuron differs there")
            if name == "stbp":
                for ch in _stbp_probes(c, cfg, "spikes"):
                    try:
                        _, o = module.simulate(params, x, replace(cfg, **ch))
                    except (ValueError, TypeError):
                        continue
                    if _first_spike_difference(c["spikes"], {n + 1: on for n, on in enumerate(o)}) is None:
                        diagnosis.append(f"your spikes are refsnn's with {_describe(ch, cfg)}")
                        break
    if c["a"] is not None and "a" in state:
        da = float(np.max(np.abs(np.asarray(c["a"]) - state["a"]), initial=0.0))
        if da > LOSS_REL:
            forward_same = False
            diagnosis.append(f"the rates a[T] differ by up to {da:.2e}: the simulation differs")
    if not report.passed and forward_same:
        failing = [t for t in report.tensors if not t.passed]
        lo, hi = gradcheck.FLOAT32_BAND
        if all(lo <= t.rel_error <= hi for t in failing):
            diagnosis.append(f"the forward passes agree and the gradients differ by "
                             f"{min(t.rel_error for t in failing):.1e}..{max(t.rel_error for t in failing):.1e}: "
                             f"the size float32 round-off leaves: a float32 piece on one side (a parameter "
                             f"stored as float32, float32 spikes or constants)")
            probes = _stbp_probes(c, cfg, "float32") if name == "stbp" else []
        else:
            diagnosis.append("the forward passes agree but the gradients differ: look at the surrogate (its "
                             "name and width), the detach of the reset, or (IDE) the adjoint solver")
            probes = _stbp_probes(c, cfg, "gradient") if name == "stbp" else []
        for ch in probes:
            if _grads_agree(module, params, x, y, replace(cfg, **ch), mine, tol, buffers):
                diagnosis.append(f"your gradient is refsnn's with {_describe(ch, cfg)}")
                break
    agree = report.passed and forward_same
    return Verdict(agree, report, diagnosis, ref_loss)


# ---------------------------------------------------------------------------
# Golden vectors
# ---------------------------------------------------------------------------

def golden_dir() -> Path:
    """The golden vectors shipped with the package (``refsnn/golden/``)."""
    return Path(__file__).resolve().parent / "golden"


def _threshold_margin(module_name, params, x, cfg):
    """Smallest ``|u - v_th|`` of an STBP case: how far every neuron is from flipping a spike."""
    from refsnn import stbp

    u, _ = stbp.simulate(params, x, replace(cfg, backend="numpy"))
    thr = [c["threshold"] for c in stbp.neuron_constants(params, cfg)]
    return min(float(np.min(np.abs(un - t))) for un, t in zip(u, thr))


def golden_cases() -> list:
    """``(file stem, algorithm, label, cfg, params, x, y)`` of every golden vector, built from seeded problems.

    STBP: its presets and one case per setting of :data:`refsnn.problems.STBP_FAMILY` (the peers'
    neurons); ST-RSBP: the exact and the code presets on the small problem; IDE: one- and two-layer
    blocks, static and spike input, BatchNorm; SSNN-BP: the ANN twin.  Every STBP case keeps every
    potential at least 1e-6 from its threshold, so no spike flips on round-off.
    """
    from refsnn import ide, problems, ssnn_bp, st_rsbp, stbp

    cases = []
    base = stbp.Config(v_th=0.5, decay=0.3, loss="mse_mean")
    stbp_settings = [("paper", replace(stbp.PRESETS["paper"], v_th=0.5, decay=0.3, T=5)),
                     ("code", replace(stbp.PRESETS["code"], T=5)),
                     ("code_fc", replace(stbp.PRESETS["code_fc"], T=5))]
    stbp_settings += [(label, replace(base, **ch)) for label, ch in problems.STBP_FAMILY]
    for k, (label, cfg) in enumerate(stbp_settings):
        params, x, y = problems.stbp_problem(cfg, 100 + k)
        cases.append((f"stbp_{k:02d}", "stbp", label, cfg, params, x, y))
    small = problems.ST_RSBP_SMALL
    for k, (label, cfg) in enumerate([("exact", small), ("code variants", replace(
            small, recurrent_grad="diagonal", recurrent_delta="code", lateral_grad="code", boost=True))]):
        params, x, y = problems.st_rsbp_problem("8-6-R6-4", cfg, 200 + k)
        cases.append((f"st_rsbp_{k:02d}", "st_rsbp", label, cfg, params, x, y))
    ide_settings = [("IF, broyden, spectral norm", ide.Config(T=20), {}),
                    ("LIF 0.9, dense, raw W", ide.Config(T=20, leak=0.9, solver="dense", spectral_norm=None), {}),
                    ("2 layers, fixed point", ide.Config(T=20, linearize_at="fixed_point", solver="dense"),
                     {"hidden": (6, 5)}),
                    ("spike input", ide.Config(T=20, solver="dense"), {"spikes": True}),
                    ("BatchNorm, running statistics", ide.Config(T=20, batchnorm=True, bn_mode="running",
                                                                 solver="dense"), {})]
    for k, (label, cfg, kw) in enumerate(ide_settings):
        params, x, y = problems.ide_problem(cfg, 300 + k, **kw)
        cases.append((f"ide_{k:02d}", "ide", label, cfg, params, x, y))
    params, x, y = problems.ssnn_bp_problem(400)
    cases.append(("ssnn_bp_00", "ssnn_bp", "ANN twin", ssnn_bp.Config(ann=True), params, x, y))
    return cases


def _golden_arrays(name, cfg, params, x, y):
    """Everything a golden case file holds beyond the inputs: loss, gradient, forward state."""
    module = refsnn.algorithm(name)
    kw = {"rng": 0} if name == "ssnn_bp" else {}
    info = {}
    loss, grads = module.loss_and_grad(params, x, y, cfg, info=info, **kw)
    spikes, a, extra = None, None, {}
    if name == "stbp":
        u, o = module.simulate(params, x, cfg)
        spikes = {n + 1: on for n, on in enumerate(o)}
        extra.update({f"potential/{n + 1}": un for n, un in enumerate(u)})
        margin = _threshold_margin(name, params, x, cfg)
        if margin < 1e-6:
            raise RuntimeError(f"golden: a potential is {margin:.1e} from its threshold: choose another seed")
    elif name == "st_rsbp":
        fwd = module.simulate(params, x, cfg)
        spikes = {n + 1: s for n, s in enumerate(fwd.S)}
        extra.update({f"potential/{n + 1}": v for n, v in enumerate(fwd.V)})
    elif name == "ide":
        a = info["a"]
        extra["adjoint"] = info["beta"]
        _, g_iter = module.loss_and_grad(params, x, y, replace(cfg, solver="code_iter", max_iter=30,
                                                               early_stop=False))   # the official 'iter': 30 steps
        extra.update({f"grad_code_iter/{k}": v for k, v in g_iter.items()})
        exact = replace(cfg, linearize_at="fixed_point", solver="dense")
        _, g_fp = module.loss_and_grad(params, x, y, exact)
        extra.update({f"grad_fixed_point/{k}": v for k, v in g_fp.items()})
    elif name == "ssnn_bp":
        zs, acts = module.forward_rates(params, x)
        extra.update({f"rates/{n}": v for n, v in enumerate(acts)})
    return loss, grads, spikes, a, extra


def golden_write(directory) -> Path:
    """(Re)generate every golden case file and ``manifest.json`` into ``directory``; returns the manifest path."""
    import warnings

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {"format_version": FORMAT_VERSION, "refsnn_version": refsnn.__version__, "cases": []}
    for stem, name, label, cfg, params, x, y in golden_cases():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")           # code_iter stops at max_iter by design
            loss, grads, spikes, a, extra = _golden_arrays(name, cfg, params, x, y)
        path = write_case(directory / f"{stem}.npz", x, y, params, grads, loss=loss, spikes=spikes, a=a,
                          config=cfg, algorithm=name, extra=extra)
        with np.load(path) as z:
            shapes = {k: list(z[k].shape) for k in z.files}
        manifest["cases"].append({"file": path.name, "algorithm": name, "label": label, "config": cfg.to_dict(),
                                  "shapes": shapes, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    out = directory / "manifest.json"
    out.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out


def _normal_config(algo: str, d: dict) -> dict:
    """``d`` as the algorithm's ``Config`` reads it: fields added since the case was written take their defaults."""
    return refsnn.algorithm(algo).Config(**d).to_dict()


def golden_compare(a_dir, b_dir, *, rel: float = 1e-12) -> list:
    """Differences between two golden sets, array by array (norm-wise relative to each array): ``[]`` if none.

    Spikes and labels must be equal exactly (the cases keep every potential away from its threshold).
    """
    problems_found = []
    ma = json.loads((Path(a_dir) / "manifest.json").read_text())
    mb = json.loads((Path(b_dir) / "manifest.json").read_text())
    fa, fb = [c["file"] for c in ma["cases"]], [c["file"] for c in mb["cases"]]
    if fa != fb:
        return [f"the case lists differ: {sorted(set(fa) ^ set(fb))}"]
    for ca, cb in zip(ma["cases"], mb["cases"]):
        if _normal_config(ca["algorithm"], ca["config"]) != _normal_config(cb["algorithm"], cb["config"]):
            problems_found.append(f"{ca['file']}: the configs differ")
        za, zb = _load(Path(a_dir) / ca["file"]), _load(Path(b_dir) / cb["file"])
        if sorted(za) != sorted(zb):
            problems_found.append(f"{ca['file']}: keys differ: {sorted(set(za) ^ set(zb))}")
            continue
        for k in za:
            va, vb = za[k], zb[k]
            if k == "config":                   # the same Config, whatever fields were added since
                va, vb = (np.asarray(json.dumps(_normal_config(c["algorithm"], json.loads(str(v)))))
                          for c, v in ((ca, va), (cb, vb)))
            if va.dtype.kind in "US" or k.startswith("spikes/") or k == "y":
                if not np.array_equal(va, vb):
                    problems_found.append(f"{ca['file']}: {k} differs")
                continue
            for side, v in (("first", va), ("second", vb)):
                bad = gradcheck.describe_nonfinite(v, f"the {side} set")
                if bad:
                    problems_found.append(f"{ca['file']}: {k}: {bad}")
            den = max(float(np.linalg.norm(va)), float(np.linalg.norm(vb)), 1e-300)
            err = float(np.linalg.norm(va.astype(np.float64) - vb.astype(np.float64))) / den
            if not err <= rel:                   # a NaN error is a difference too
                problems_found.append(f"{ca['file']}: {k} differs by {err:.2e} relative")
    return problems_found
