"""Checking another implementation against refsnn from a file (``refsnn verify``), and the golden vectors.

A *case file* is a NumPy ``.npz`` archive that any language can write (a zip of ``.npy`` arrays;
``docs/verify.md`` describes the format byte for byte).  Its keys:

======================  ========================  =============================================================
key                     shape, dtype              what
======================  ========================  =============================================================
``x``                   algorithm's input         STBP/ST-RSBP ``(T, batch, n_in)``; IDE/SSNN-BP ``(batch, n_in)`` or spikes
``y``                   ``(batch,)`` int          labels
``param/<key>``         the parameter's shape     your parameters under refsnn's keys (``W1``, ``b1``, ...); IDE's
                                                  buffers (``bn_mean``, ``sn_u``, ...) with their values before the step
``grad/<key>``          the same                  your gradient of the loss -- every one refsnn computes; SSNN-BP:
                                                  ``(N,) + shape``, N >= 2 independent draws
``loss``                0-d, optional             your loss
``spikes/<n>``          ``(T, batch, n_n)``       optional: layer ``n``'s spikes, 0 or 1 (STBP, ST-RSBP; ``n = 1..N``)
``a``                   ``(batch, n_N)``          optional (IDE): your rates ``a[T]``
``dropout_mask/<key>``  ``(batch, n_l)``          IDE with dropout: the masks your step used
``config``              0-d str, optional         a JSON dict of the algorithm's ``Config`` fields
``algorithm``           0-d str, optional         ``"stbp"``, ...; must name the algorithm being verified
======================  ========================  =============================================================

:func:`verify` gives a verdict only on a complete, finite, well-formed case (anything else is a ValueError
naming the key: exit 2 on the command line).  It recomputes everything with refsnn and diagnoses a
disagreement in this order: the loss differs (the forward pass differs, or only the loss function when the
spikes or rates agree); the first layer and step where the spikes (IDE: the rates) differ; errors in the
float32 band with an identical forward (a float32 piece on one side; for IDE, a solver's stopping error when
the gradient is that close to the exact adjoint); larger gradient differences.  Then it tries the algorithm's
named settings (``_stbp_probes``, ``_ide_probes``, ``_st_rsbp_probes``; for STBP a search over every
surrogate's width) and names the first that reproduces the case, with the ``--set`` that does.  SSNN-BP's
draws are judged statistically (:func:`refsnn.checking.gradcheck.check_statistical`).  The golden vectors
(:func:`golden_write`, ``refsnn/checking/golden/``) are case files in the same format, made by refsnn itself.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

import refsnn
from refsnn.checking import gradcheck
from refsnn.blocks._checks import check_in_range, check_positive

__all__ = ["Verdict", "read_case", "write_case", "verify", "golden_dir", "golden_cases", "golden_write",
           "golden_compare", "FORMAT_VERSION"]

FORMAT_VERSION = 1
#: Loss differences above this (relative) mean the forward passes differ; in [LOSS_SAME, this] they look float32.
LOSS_REL = 1e-6
#: Two float64 computations of the same loss (a sum of up to ~1e3 terms in another order) agree to ~1e3 x 2.2e-16:
#: a loss (or rate) this close is the same forward pass.
LOSS_SAME = 1e-12


# ---------------------------------------------------------------------------
# Case files
# ---------------------------------------------------------------------------

def _load(path: Path) -> dict:
    import zipfile
    import zlib

    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except FileNotFoundError:
        raise FileNotFoundError(f"case: no file {path}") from None
    except IsADirectoryError:
        raise ValueError(f"case: {path} is a folder, not a .npz file") from None
    if head[:2] != b"PK":
        raise ValueError(f"case: {path} is not a .npz archive (a zip of .npy arrays, which starts with b'PK'); "
                         f"it starts with {head!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {}
            for k in z.files:
                try:
                    out[k] = z[k]
                except ValueError as exc:
                    if "pickle" not in str(exc):
                        raise
                    raise ValueError(f"case: {k!r} in {path} holds Python objects (a pickled array); store numbers "
                                     f"as float64 arrays and strings as 0-d unicode arrays") from None
            return out
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        if str(exc).startswith("case: "):
            raise
        raise ValueError(f"case: {path} is not a readable .npz archive ({type(exc).__name__}: {exc})") from None


def _real(z: dict, key: str, *, finite: bool = True) -> np.ndarray:
    """``z[key]`` as a real numeric array, finite, or a ValueError naming the key."""
    v = z[key]
    if v.dtype.kind not in "iuf":
        raise ValueError(f"case: {key!r} must be a real numeric array, got dtype {v.dtype}")
    if finite:
        bad = gradcheck.describe_nonfinite(v, f"case: {key}")
        if bad:
            raise ValueError(bad)
    return v


def _text(z: dict, key: str) -> str:
    v = z[key]
    if v.dtype.kind not in "US" or v.shape != ():
        raise ValueError(f"case: {key!r} must be a 0-d string array, got dtype {v.dtype}, shape {v.shape}")
    return str(v)


def read_case(path) -> dict:
    """Read and check a case file: ``{"x", "y", "params", "grads", "loss", "spikes", "a", "dropout_mask",
    "config", "algorithm", "extra"}``.

    Missing optional entries are None (``spikes`` and ``dropout_mask`` are dicts, possibly empty).  Every
    array must be real and finite, spikes 0 or 1, labels integers, ``loss`` one number; anything else is a
    ValueError naming the key.  What needs the algorithm (shapes against refsnn's network, completeness)
    is checked by :func:`verify`.
    """
    z = _load(Path(path))
    for key in ("x", "y"):
        if key not in z:
            raise ValueError(f"case: {path} has no {key!r} array (keys: {sorted(z)})")
    x = _real(z, "x")
    y = _real(z, "y")
    if y.ndim != 1:
        raise ValueError(f"case: 'y' must be a 1-d array of labels (batch,), got shape {y.shape}")
    if y.dtype.kind == "f":
        if not np.all(y == np.round(y)):
            raise ValueError("case: 'y' must hold integer labels, got non-integer values")
        y = y.astype(np.int64)
    params = {k.split("/", 1)[1]: _real(z, k) for k in z if k.startswith("param/")}
    grads = {k.split("/", 1)[1]: _real(z, k) for k in z if k.startswith("grad/")}
    if not params:
        raise ValueError(f"case: {path} has no 'param/<key>' arrays")
    if not grads:
        raise ValueError(f"case: {path} has no 'grad/<key>' arrays")
    for k in grads:
        if k not in params:
            raise ValueError(f"case: grad/{k} has no param/{k}: give the parameter values too")
    spikes = {}
    for k in z:
        if k.startswith("spikes/"):
            layer = k.split("/", 1)[1]
            if not layer.isdigit() or int(layer) < 1:
                raise ValueError(f"case: {k}: the layer must be a number 1..N")
            s = _real(z, k)
            if not np.all((s == 0) | (s == 1)):
                v = s[(s != 0) & (s != 1)].reshape(-1)[0]
                where = tuple(int(i) for i in np.argwhere((s != 0) & (s != 1))[0])
                raise ValueError(f"case: {k} must hold spikes (0 or 1), got {v:g} at {where}")
            spikes[int(layer)] = s
    masks = {k.split("/", 1)[1]: _real(z, k) for k in z if k.startswith("dropout_mask/")}
    config = None
    if "config" in z:
        try:
            config = json.loads(_text(z, "config"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"case: 'config' is not JSON ({exc})") from None
        if not isinstance(config, dict):
            raise ValueError("case: 'config' must be a JSON object of Config fields")
    loss = None
    if "loss" in z:
        lv = _real(z, "loss")
        if lv.size != 1:
            raise ValueError(f"case: 'loss' must be one number (a 0-d array), got shape {lv.shape}")
        loss = float(lv.reshape(-1)[0])
    a = _real(z, "a") if "a" in z else None
    known = ("x", "y", "param", "grad", "loss", "spikes", "a", "config", "algorithm", "dropout_mask")
    return {"x": x, "y": y, "params": params, "grads": grads, "loss": loss, "spikes": spikes, "a": a,
            "dropout_mask": masks, "config": config,
            "algorithm": _text(z, "algorithm") if "algorithm" in z else None,
            "extra": {k: z[k] for k in z if k.split("/", 1)[0] not in known}}


def write_case(path, x, y, params, grads, *, loss=None, spikes=None, a=None, config=None, algorithm=None,
               dropout_mask=None, extra=None) -> Path:
    """Write a case file (the format of :func:`read_case`); arrays are stored as float64 (labels int64).

    For SSNN-BP, ``grads`` holds the draws: each value of shape ``(N,) + param.shape``.
    """
    arrays = {"x": np.asarray(x, dtype=np.float64), "y": np.asarray(y, dtype=np.int64)}
    arrays.update({f"param/{k}": np.asarray(v, dtype=np.float64) for k, v in params.items()})
    arrays.update({f"grad/{k}": np.asarray(v, dtype=np.float64) for k, v in grads.items()})
    if loss is not None:
        arrays["loss"] = np.asarray(float(loss))
    for n, s in (spikes or {}).items():
        arrays[f"spikes/{int(n)}"] = np.asarray(s, dtype=np.float64)
    if a is not None:
        arrays["a"] = np.asarray(a, dtype=np.float64)
    arrays.update({f"dropout_mask/{k}": np.asarray(v, dtype=np.float64) for k, v in (dropout_mask or {}).items()})
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
    reproduced_by: dict | None = None      # the Config changes that reproduce the user's numbers, if found

    @property
    def exit_code(self) -> int:
        return 0 if self.agree else 1

    def __str__(self) -> str:
        lines = [str(self.report)] + [f"diagnosis: {d}" for d in self.diagnosis]
        lines.append("AGREE" if self.agree else "DISAGREE")
        return "\n".join(lines)


#: Layered parameter keys: ``W{n}`` with optional ``b{n}`` (and ST-RSBP's ``Wr{n}``).
_LAYERED = ("stbp", "st_rsbp", "ssnn_bp")


def _check_layer_keys(name: str, params: dict) -> None:
    """A missing ``param/W2`` is named as missing (not as "unexpected b2")."""
    if name not in _LAYERED:
        return
    import re

    numbered = {}
    for k in params:
        m = re.fullmatch(r"(W|b|Wr|beta|tau_w|thr)(\d+)", k)
        if m:
            numbered.setdefault(int(m.group(2)), set()).add(m.group(1))
    if not numbered:
        return
    top = max(numbered)
    for n in range(1, top + 1):
        if "W" not in numbered.get(n, set()):
            have = ", ".join(f"param/{k}" for k in sorted(params))
            raise ValueError(f"case: param/W{n} is missing (the case has {have})")


def _state(module, name, params, x, cfg):
    """refsnn's forward state that a case may carry: spikes per layer (STBP, ST-RSBP)."""
    if name == "stbp":
        _, o = module.simulate(params, x, cfg)
        return {n + 1: on for n, on in enumerate(o)}
    if name == "st_rsbp":
        return {n + 1: s for n, s in enumerate(module.simulate(params, x, cfg).S)}
    return {}


def _run(module, name, params, x, y, cfg, masks):
    """refsnn's loss, gradient and info for one setting (``masks``: IDE's dropout masks, or None)."""
    info = {}
    kw = {}
    if name == "ide" and masks:
        kw["dropout_mask"] = masks
    if name == "ssnn_bp":
        cfg = replace(cfg, ann=True)           # the exact gradient the draws estimate
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # a probe may stop an iterative solver early on purpose
        loss, grads = module.loss_and_grad(params, x, y, cfg, info=info, **kw)
    return loss, grads, info


def _first_spike_difference(mine: dict, ref: dict):
    """Where the user's spikes first part from refsnn's (arrays (T, batch, neuron...)), or None."""
    for n in sorted(mine):
        a, b = np.asarray(mine[n]), np.asarray(ref[n])
        diff = np.argwhere(a != b)
        if diff.size:
            at = tuple(int(i) for i in diff[0])
            neuron = at[2] if len(at) == 3 else at[2:]
            return (f"the spikes first differ in layer {n} at step {at[0]} (sample {at[1]}, neuron {neuron}): yours "
                    f"{a[at]:g}, refsnn's {b[at]:g}")
    return None


def _describe(changes, cfg):
    """The fields a probe changed, with refsnn's values (unchanged ones left out)."""
    return ", ".join(f"{k}={v!r} (refsnn has {getattr(cfg, k)!r})" for k, v in changes.items() if getattr(cfg, k) != v)


def _set_args(changes, cfg):
    return " ".join(f"--set {k}={v}" for k, v in changes.items() if getattr(cfg, k) != v)


def _stbp_probes(case, cfg):
    """Named STBP settings to try, most likely first: the neuron (resets, timing, comparison), float32-rounded
    constants, the detach of the reset, surrogates and widths (a width search follows separately)."""
    from refsnn import stbp

    out = []
    f32 = lambda v: tuple(float(np.float32(u)) for u in v) if isinstance(v, tuple) else float(np.float32(v))  # noqa
    out += [dict(decay=f32(cfg.decay)), dict(v_th=f32(cfg.v_th)), dict(decay=f32(cfg.decay), v_th=f32(cfg.v_th))]
    out.append(dict(detach_reset=not cfg.detach_reset))
    for reset in stbp.RESETS:
        for timing in stbp.TIMINGS:
            for strict in (True, False):
                for detach in (cfg.detach_reset, not cfg.detach_reset):
                    ch = dict(reset=reset, reset_timing=timing, strict=strict, detach_reset=detach)
                    if any(getattr(cfg, k) != v for k, v in ch.items()):
                        out.append(ch)
    return out


def _ide_probes(case, cfg):
    """The official IDE code's paths and the settings that change what a case computes."""
    out = [dict(solver="code_iter", max_iter=30, early_stop=False),          # the official 'iter'
           dict(solver="dense"), dict(solver="fixed_point"), dict(solver="broyden", max_iter=30),
           dict(linearize_at="fixed_point", solver="dense")]
    if cfg.batchnorm:
        out.append(dict(bn_mode="running" if cfg.bn_mode == "batch" else "batch"))
    if "sn_u" in case["params"] and cfg.sn_method != "power":
        out.append(dict(sn_method="power"))
    if cfg.sn_method == "power":
        out.append(dict(sn_method="exact"))
    for leak in (1.0, 0.95, 0.99, 0.9):
        if leak != cfg.leak:
            out.append(dict(leak=leak))
    if cfg.spectral_norm is not None and "g" not in case["params"]:
        out.append(dict(spectral_norm=None))
    base = list(out)
    for ch in base[:4]:                              # a solver together with eval-mode BN or another leak
        for other in base[5:]:
            if not set(ch) & set(other):
                out.append({**ch, **other})
    return out


def _st_rsbp_probes(case, cfg):
    """The official ST-RSBP code's three gradient flags (every combination), then the d-table settings."""
    import itertools

    out = []
    for rg, rd, lg in itertools.product(("exact", "diagonal"), ("exact", "code"), ("exact", "code")):
        ch = dict(recurrent_grad=rg, recurrent_delta=rd, lateral_grad=lg)
        if any(getattr(cfg, k) != v for k, v in ch.items()):
            out.append(ch)
    for extra in (dict(fake_target_spikes=not cfg.fake_target_spikes),
                  dict(kappa_zero=0.0 if cfg.kappa_zero != 0.0 else 0.5),
                  dict(d_method="ratio" if cfg.d_method == "table" else "table"),
                  dict(dtable_lookup="code" if cfg.dtable_lookup == "clip" else "clip"),
                  dict(dtable_max_count=50), dict(boost=not cfg.boost)):
        out.append(extra)
        out.append({**extra, "recurrent_grad": "diagonal", "recurrent_delta": "code", "lateral_grad": "code"})
    return out


def _stbp_printed_term_gradient(params, x, y, cfg):
    """STBP's gradient with the paper's printed temporal term: Eq. (B3) with ``delta^{t+1} h(u^{t+1} - v_th)``
    where the chain rule has ``eps^{t+1}`` (Eq. (B4) unchanged), for the paper's family of neurons (an
    immediate reset, no synapse, fixed decay and threshold, fully connected); None for any other.

    The printed term drops the path ``u^{t+1} -> u^{t+2}``; refsnn's ``loss_and_grad`` follows the exact
    chain rule.  Kept here only to recognise an implementation that follows the print.
    """
    from refsnn import stbp
    from refsnn.blocks import surrogates

    if (cfg.arch is not None or cfg.reset_timing != "immediate" or cfg.synapse != "none" or cfg.decay_input
            or cfg.learn_decay != "none" or cfg.learn_threshold or not np.isscalar(cfg.decay)
            or not np.isscalar(cfg.v_th)):
        return None
    u, o = stbp.forward_numpy(params, x, cfg)
    T, S, C, N = x.shape[0], x.shape[1], o[-1].shape[2], len(o)
    diff = o[-1].mean(axis=0) - np.eye(C)[y]
    g_obar = diff / S if cfg.loss == "mse_paper" else 2 * diff / (S * C)
    R, lam, thr = stbp.reset_piece(cfg), float(cfg.decay), float(cfg.v_th)
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    printed_next = [0.0] * N          # delta^{t+1} h(u^{t+1} - v_th), per layer
    eps_next = [0.0] * N
    for t in reversed(range(T)):
        delta = g_obar / T
        for n in reversed(range(N)):
            ut, ot = u[n][t], o[n][t]
            if not cfg.detach_reset:
                delta = delta + lam * printed_next[n] * R.do(ut, ot, lam, thr)  # printed
            hu = surrogates.h(ut - thr, cfg.surrogate, cfg.width)
            eps = delta * hu + lam * eps_next[n] * R.du(ut, ot, lam)
            grads[f"W{n + 1}"] += eps.T @ (x[t] if n == 0 else o[n - 1][t])
            grads[f"b{n + 1}"] += eps.sum(axis=0)
            eps_next[n], printed_next[n] = eps, delta * hu
            delta = eps @ params[f"W{n + 1}"]
    return grads


_PROBES = {"stbp": _stbp_probes, "ide": _ide_probes, "st_rsbp": _st_rsbp_probes}

#: The official codes' named paths, so that a diagnosis can say what a setting is.
_OFFICIAL = {
    ("ide", (("early_stop", False), ("max_iter", 30), ("solver", "code_iter"))): "the official IDE code's 'iter' solver",
    ("ide", (("bn_mode", "running"),)): "BatchNorm in eval mode (the running statistics)",
    ("ide", (("sn_method", "power"),)): "the official code's power-iteration spectral norm",
    ("st_rsbp", (("lateral_grad", "code"), ("recurrent_delta", "code"), ("recurrent_grad", "diagonal"))):
        "the official ST-RSBP code's gradients (diagonal recurrent term, its recurrent delta and lateral factor)",
    ("st_rsbp", (("recurrent_grad", "diagonal"),)): "the official ST-RSBP code's diagonal recurrent gradient",
}


def _official_name(name, ch, cfg):
    changed = tuple(sorted((k, v) for k, v in ch.items() if getattr(cfg, k) != v))
    for (algo, items), text in _OFFICIAL.items():
        if algo == name and set(items) <= set(changed):
            return text
    return None


class _Case:
    """What a probe compares with: the user's loss, state and gradient."""

    def __init__(self, name, module, c, params, x, y, mine, masks, tol, buffers):
        self.name, self.module, self.c, self.params, self.x, self.y = name, module, c, params, x, y
        self.mine, self.masks, self.tol, self.buffers = mine, masks, tol, buffers

    def error(self, cfg):
        """The largest relative gradient error of the user's numbers against refsnn's with ``cfg`` (inf if the
        loss, the spikes or the rates differ, None if refsnn refuses the setting)."""
        try:
            loss, g, info = _run(self.module, self.name, self.params, self.x, self.y, cfg, self.masks)
        except (ValueError, TypeError):
            return None
        if self.c["loss"] is not None and not abs(self.c["loss"] - loss) <= LOSS_SAME * max(abs(loss), 1e-300):
            return math.inf
        if self.c["spikes"]:
            try:
                if _first_spike_difference(self.c["spikes"], _state(self.module, self.name, self.params, self.x,
                                                                     cfg)) is not None:
                    return math.inf
            except (ValueError, TypeError):
                return None
        if self.c["a"] is not None and not np.max(np.abs(self.c["a"] - info["a"]), initial=0.0) <= LOSS_SAME:
            return math.inf
        try:
            rep = gradcheck.compare(self.mine, {k: g[k] for k in self.mine}, tol=self.tol, buffers=self.buffers,
                                    float32_hint=False)
        except (ValueError, KeyError, TypeError):
            return None
        return rep.max_rel_error


def _width_search(case: _Case, cfg):
    """The surrogate (name, width, detach) whose gradient is nearest the user's: a bounded search over the
    log-width for every surrogate, so that any width is found, not only those of a list."""
    from refsnn.blocks import surrogates

    best = None
    for detach in (cfg.detach_reset, not cfg.detach_reset):
        for sname in surrogates.NAMES:
            def err(logw, sname=sname, detach=detach):
                e = case.error(replace(cfg, surrogate=sname, width=float(np.exp(logw)), detach_reset=detach))
                return 1e3 if e is None or not math.isfinite(e) else e
            lo, hi = math.log(cfg.width) - math.log(1e3), math.log(cfg.width) + math.log(1e3)
            grid = np.linspace(lo, hi, 25)
            vals = [err(g) for g in grid]
            k = int(np.argmin(vals))
            if vals[k] >= 0.5:                   # nowhere near: this surrogate cannot be the user's
                continue
            a, b = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
            # golden-section search: the error is V-shaped about the user's width (|w - w*| to first order), which a
            # parabolic step does not resolve below ~sqrt(eps); 64 shrinks by 0.618 take the bracket (0.58 wide in
            # log-width) below 1e-13, float64's resolution of a width
            g = (math.sqrt(5) - 1) / 2
            c1, c2 = b - g * (b - a), a + g * (b - a)
            f1, f2 = err(c1), err(c2)
            for _ in range(64):
                if f1 <= f2:
                    b, c2, f2 = c2, c1, f1
                    c1 = b - g * (b - a)
                    f1 = err(c1)
                else:
                    a, c1, f1 = c1, c2, f2
                    c2 = a + g * (b - a)
                    f2 = err(c2)
            x_best = c1 if f1 <= f2 else c2
            w = float(np.exp(x_best))
            e = min(f1, f2)
            if best is None or e < best[0]:
                best = (e, dict(surrogate=sname, width=w, detach_reset=detach))
    return best


def _round_width(ch, cfg, case):
    """The width the search found, rounded to the fewest digits that still reproduce the user's gradient."""
    w = ch["width"]
    for digits in range(1, 16):
        r = float(f"{w:.{digits}g}")
        e = case.error(replace(cfg, **{**ch, "width": r}))
        if e is not None and e <= case.tol:
            return {**ch, "width": r}
    return ch


def _peer_width(ch) -> str:
    """What the found width is in the peers' parameters (docs/verify.md, "Surrogate widths")."""
    w, s = ch["width"], ch["surrogate"]
    if s == "atan":
        return f" (snnTorch/spikingjelly atan alpha = {2 / (math.pi * w):.6g})"
    if s in ("fast_sigmoid", "sigmoid"):
        return f" (snnTorch slope / spikingjelly alpha = {1 / w:.6g})"
    return ""


def _ssnn_bp_verdict(module, c, params, x, y, cfg, tol, alpha, keys):
    """SSNN-BP: the user's draws, judged statistically against the exact ANN gradient."""
    exact_loss, exact, _ = _run(module, "ssnn_bp", params, x, y, cfg, None)
    draws = {k: np.asarray(c["grads"][k], dtype=np.float64) for k in keys}
    N = next(iter(draws.values())).shape[0]
    it = iter(range(N))

    def sample(_rng):
        n = next(it)
        return {k: v[n] for k, v in draws.items()}

    # Hotelling's T^2 needs many more draws than the entries it takes jointly (its F law holds for Gaussian
    # means; for these discrete draws N - r must be large): at most N / 5 entries per tensor enter it.
    rep = gradcheck.check_statistical(sample, {k: exact[k] for k in keys}, n_samples=N, seed=0, alpha=alpha,
                                      max_joint=max(1, min(1000, N // 5)),
                                      title=f"refsnn verify ssnn_bp: the mean of your {N} draws vs refsnn's exact "
                                            f"ANN gradient (statistical, alpha {alpha:g})")
    diagnosis = []
    mean = np.concatenate([draws[k].mean(axis=0).reshape(-1) for k in keys])
    ex = np.concatenate([np.asarray(exact[k]).reshape(-1) for k in keys])
    if not rep.passed and float(ex @ ex) > 0:
        factor = float(mean @ ex / (ex @ ex))
        resid = float(np.linalg.norm(mean - factor * ex) / np.linalg.norm(ex))
        diagnosis.append(f"the mean of your draws is {factor:.4f} x refsnn's exact gradient plus a remainder of "
                         f"{resid:.2e} (relative): {'a scaled' if resid < abs(1 - factor) else 'a'} biased estimate "
                         f"(look at the gain gamma, the 1/T normalisation and the learning-rate division)")
    if cfg.forward == "spike":
        diagnosis.append("forward='spike' (V2) is biased for the ANN gradient by design (its forward pass is "
                         "itself random); only V1 (forward='rate') is unbiased, so only V1 can be judged this way")
    # the variance against the closed form Eq. (Var1)-(Var2): one sample, one hidden layer, V1
    lay = [k for k in params if k.startswith("W")]
    if cfg.forward == "rate" and x.shape[0] == 1 and len(lay) == 2 and set(keys) == set(exact):
        var = module.variance_v1(params, x, y, cfg)
        V = float(sum(np.sum(var[k]) for k in keys))               # E ||g - E g||^2 of one draw
        X = np.concatenate([draws[k].reshape(N, -1) for k in keys], axis=1)
        sq = np.sum((X - X.mean(axis=0)) ** 2, axis=1) * N / (N - 1)   # unbiased: mean(sq) estimates V
        Vhat, se = float(sq.mean()), float(sq.std(ddof=1) / math.sqrt(N))
        from scipy import stats

        bound = float(stats.norm.isf(alpha / 2))
        z = (Vhat - V) / se if se > 0 else (0.0 if Vhat == V else math.inf)
        ok = abs(z) <= bound
        extra = gradcheck.TensorReport("variance", (), N, abs(Vhat / V - 1) if V > 0 else math.nan,
                                       abs(Vhat - V), Vhat, V, (), tol=math.nan, verdict=ok,
                                       extra={"max_abs_z": abs(z), "z_bound": bound, "T2": math.nan, "dof": 0,
                                              "T2_per_dof": math.nan, "band_lo": math.nan, "band_hi": math.nan})
        rep.tensors.append(extra)
        diagnosis.append(f"total variance of one draw: yours {Vhat:.4e}, the closed form (Eq. (Var1)-(Var2)) {V:.4e} "
                         f"(z = {z:.2f}, bound {bound:.2f}){'' if ok else ': your estimator is not V1'}")
    if c["loss"] is not None:
        rel = abs(c["loss"] - exact_loss) / max(abs(exact_loss), 1e-300)
        if not rel <= LOSS_REL:
            diagnosis.insert(0, f"the loss differs: yours {c['loss']:.12g}, refsnn's {exact_loss:.12g} "
                                f"(relative {rel:.1e}): the ANN forward pass differs")
            return Verdict(False, rep, diagnosis, exact_loss)
    return Verdict(rep.passed, rep, diagnosis, exact_loss)


def verify(algo, case, cfg=None, *, tol: float = 1e-9, keys=None, alpha: float = 1e-3, set_fields=()) -> Verdict:
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
    keys : iterable of str, optional
        The gradients you mean to check, when the case holds only some of them (the report says so).
        By default every gradient refsnn computes must be in the case.
    alpha : float
        SSNN-BP: the false-alarm probability of the statistical test of the draws.
    set_fields : iterable of str
        Config fields the user set explicitly (the CLI's ``--set``): a ``T`` among them that disagrees with
        the case's input is an error rather than a note.

    Raises ValueError (naming the key) for anything malformed or incomplete: a verdict is given only on a
    complete, finite case.
    """
    name = refsnn.algorithm_name(algo)
    module = refsnn.algorithm(name)
    tol = check_positive("tol", tol)
    alpha = check_in_range("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    c = case if isinstance(case, dict) else read_case(case)
    if c.get("algorithm") is not None and refsnn.algorithm_name(c["algorithm"]) != name:
        raise ValueError(f"case: its 'algorithm' is {c['algorithm']!r}, but it is being verified as {name!r}")
    cfg = _config(module, c["config"] if cfg is None else cfg)
    params = c["params"]
    _check_layer_keys(name, params)
    x = np.asarray(c["x"], dtype=np.float64)
    y = np.asarray(c["y"])
    notes = []
    # T: the input decides for time-major inputs; an explicit --set T that disagrees is an error
    if name in ("stbp", "st_rsbp") and x.ndim == 3 and hasattr(cfg, "T") and cfg.T != x.shape[0]:
        if "T" in set(set_fields):
            raise ValueError(f"--set T={cfg.T}: the case's x has {x.shape[0]} time steps; they must agree")
        notes.append(f"the case's x has T = {x.shape[0]} steps: refsnn ran {x.shape[0]} (the configuration "
                     f"said T = {cfg.T})")
        cfg = replace(cfg, T=x.shape[0])
    buffers = tuple(module.state_keys(cfg)) if hasattr(module, "state_keys") else ()
    masks = c.get("dropout_mask") or {}
    if masks and name != "ide":
        raise ValueError(f"case: dropout_mask/<key> is for IDE; {name} has no dropout")
    if name == "ide":
        if cfg.dropout > 0 and not masks:
            raise ValueError(f"case: this IDE configuration has dropout {cfg.dropout}: the case must hold the masks "
                             f"your step used (dropout_mask/F, dropout_mask/W, ...; docs/verify.md)")
        if masks and cfg.dropout == 0:
            raise ValueError("case: it holds dropout masks but the configuration has dropout 0 (--set dropout=P)")
    if c["spikes"] and name not in ("stbp", "st_rsbp"):
        raise ValueError(f"case: spikes/<n> is for STBP and ST-RSBP; {name} compares "
                         f"{'the rates a' if name == 'ide' else 'the loss'}")
    if c["a"] is not None and name != "ide":
        raise ValueError(f"case: 'a' (the rates a[T]) is for IDE, not {name}")
    # refsnn's own numbers; refsnn's message names the argument for inputs it refuses
    try:
        ref_loss, ref_grads, info = _run(module, name, params, x, y, cfg, masks)
    except (ValueError, TypeError) as exc:
        raise type(exc)(f"case: refsnn cannot run it: {exc}") from None
    ref_keys = [k for k in ref_grads if k not in buffers]
    mine_all = c["grads"]
    extra = [k for k in mine_all if k not in ref_grads]
    if extra:
        raise ValueError(f"case: grad/{extra[0]} is not a parameter of this {name} network "
                         f"(refsnn's keys: {sorted(ref_keys)})")
    if keys is None:
        missing = [k for k in ref_keys if k not in mine_all]
        if missing:
            raise ValueError(f"case: no grad/{missing[0]} (missing: {', '.join('grad/' + k for k in missing)}): a "
                             f"verdict needs every gradient refsnn computes ({', '.join(ref_keys)}); to check only "
                             f"some, name them (--keys {','.join(k for k in ref_keys if k in mine_all)})")
        keys = ref_keys
    else:
        keys = [str(k) for k in keys]
        unknown = [k for k in keys if k not in ref_keys]
        if unknown:
            raise ValueError(f"--keys: {unknown} are not gradients of this {name} network ({', '.join(ref_keys)})")
        absent = [k for k in keys if k not in mine_all]
        if absent:
            raise ValueError(f"--keys: the case has no {', '.join('grad/' + k for k in absent)}")
        if not keys:
            raise ValueError("--keys: name at least one gradient")
        left = [k for k in ref_keys if k not in keys]
        if left:
            notes.append(f"only {', '.join(keys)} checked, as asked; not compared: {', '.join(left)}")
    stochastic = name == "ssnn_bp" and not cfg.ann
    for k in keys:
        want = np.shape(params[k])
        got = np.shape(mine_all[k])
        if stochastic:
            if got == want:
                raise ValueError(f"case: grad/{k} is a single draw: SSNN-BP's gradient is a random estimate, and one "
                                 f"draw cannot be judged against refsnn (it is no function of the inputs alone); give N "
                                 f">= 2 independent draws stacked as grad/<key> of shape (N,) + {want}")
            if got[1:] != want or len(got) != len(want) + 1 or got[0] < 2:
                raise ValueError(f"case: grad/{k} has shape {got}; SSNN-BP's draws must have shape (N,) + {want}, "
                                 f"N >= 2")
        elif got != want:
            raise ValueError(f"case: grad/{k} has shape {got}, param/{k} {want}")
    if stochastic:
        counts = {np.shape(mine_all[k])[0] for k in keys}
        if len(counts) != 1:
            raise ValueError(f"case: the grad/<key> draws differ in number ({sorted(counts)}): one N for all")
        v = _ssnn_bp_verdict(module, c, params, x, y, cfg, tol, alpha, keys)
        v.report.notes = notes + v.report.notes
        return v
    # forward state the case may carry: shapes first (malformed is not a model difference)
    state = {}
    if c["spikes"]:
        state = _state(module, name, params, x, cfg)
        for n, s in c["spikes"].items():
            if n not in state:
                raise ValueError(f"case: spikes/{n}: refsnn's network has {len(state)} spiking layers (1..{len(state)})")
            if np.shape(s) != np.shape(state[n]):
                raise ValueError(f"case: spikes/{n} has shape {np.shape(s)}, refsnn's layer {n} "
                                 f"{np.shape(state[n])} (T, batch, neurons)")
    if c["a"] is not None and np.shape(c["a"]) != np.shape(info["a"]):
        raise ValueError(f"case: 'a' has shape {np.shape(c['a'])}, refsnn's rates a[T] {np.shape(info['a'])} "
                         f"(batch, neurons of the last feedback layer)")
    mine = {k: mine_all[k] for k in keys}
    report = gradcheck.compare(mine, {k: ref_grads[k] for k in keys}, tol=tol, float32_hint=False,
                               title=f"refsnn verify {name}: yours (mine) vs refsnn (reference)")
    report.notes = notes + report.notes
    diagnosis = []
    # 1. the forward pass: loss, spikes, rates
    forward = "same"
    if c["loss"] is not None:
        rel = abs(c["loss"] - ref_loss) / max(abs(ref_loss), 1e-300)
        if not rel <= LOSS_REL:
            forward = "differs"
            same_state = bool(c["spikes"]) and _first_spike_difference(c["spikes"], state) is None
            same_state |= c["a"] is not None and float(np.max(np.abs(c["a"] - info["a"]), initial=0.0)) <= LOSS_SAME
            if same_state:
                diagnosis.append(f"the loss differs (yours {c['loss']:.12g}, refsnn's {ref_loss:.12g}, ratio "
                                 f"{c['loss'] / ref_loss if ref_loss else math.inf:.6g}) while the "
                                 f"{'spikes' if c['spikes'] else 'rates'} agree exactly: the loss function (or its "
                                 f"normalisation) differs, not the network (refsnn's: "
                                 f"{getattr(cfg, 'loss', 'the default loss')!r})")
                if name == "stbp" and c["spikes"]:
                    known = _known_spike_loss(c["loss"], state, y, x.shape[0])
                    if known:
                        diagnosis.append(known)
            else:
                diagnosis.append(f"the loss differs: yours {c['loss']:.12g}, refsnn's {ref_loss:.12g} (relative "
                                 f"{rel:.1e}): the forward pass differs")
        elif rel > LOSS_SAME:
            forward = "float32"
            diagnosis.append(f"the loss differs by {rel:.1e} relative: the forward passes agree to float32 "
                             f"round-off, not to float64's")
    if c["spikes"]:
        where = _first_spike_difference(c["spikes"], state)
        if where:
            forward = "differs"
            diagnosis.append(f"{where}: the neuron differs there")
    if c["a"] is not None:
        da = float(np.max(np.abs(c["a"] - info["a"]), initial=0.0))
        if not da <= LOSS_REL:
            forward = "differs"
            diagnosis.append(f"the rates a[T] differ by up to {da:.2e}: the simulation differs")
        elif da > LOSS_SAME and forward == "same":
            forward = "float32"
    # 2. the gradient
    found = None
    if not report.passed:
        failing = [t for t in report.tensors if not t.passed]
        errs = [t.rel_error for t in failing]
        lo, hi = gradcheck.FLOAT32_BAND
        in_band = all(lo <= e <= hi for e in errs)
        if name == "ide" and forward == "same" and (c["loss"] is not None or c["a"] is not None):
            solver_line = _ide_solver_error(module, params, x, y, cfg, masks, mine, info)
            if solver_line:
                diagnosis.append(solver_line)
                in_band = False
        if forward == "differs":
            pass
        elif in_band:
            diagnosis.append(f"the forward passes agree and the gradients differ by {min(errs):.1e}.."
                             f"{max(errs):.1e}: the size float32 round-off leaves: a float32 piece on one side (a "
                             f"parameter stored as float32, float32 spikes or constants)")
        else:
            diagnosis.append(f"the forward passes agree{' (to float32 round-off)' if forward == 'float32' else ''} "
                             f"but the gradients differ: {_GRADIENT_HINT[name]}")
        probe_case = _Case(name, module, c, params, x, y, mine, masks, tol, buffers)
        for ch in _PROBES.get(name, lambda *_: [])(c, cfg):
            try:
                trial = replace(cfg, **ch)
            except (ValueError, TypeError):
                continue
            e = probe_case.error(trial)
            if e is not None and e <= tol:
                found = ch
                break
        if found is None and name == "stbp" and forward != "differs":
            try:
                printed = _stbp_printed_term_gradient(params, x, y, cfg)
            except (ValueError, TypeError, KeyError, IndexError):
                printed = None
            if printed is not None and gradcheck.compare(mine, {k: printed[k] for k in mine}, tol=tol,
                                                         float32_hint=False).passed:
                diagnosis.append("your gradient is the paper's printed temporal term: Eq. (B3) with "
                                 "delta^{t+1} h(u^{t+1} - v_th) where the chain rule has eps^{t+1}, which drops the "
                                 "path u^{t+1} -> u^{t+2}; refsnn (and autograd) follow the exact chain rule "
                                 "(docs/stbp.md, section 2.4)")
                found = {"printed_temporal_term": True}
        if found is None and name == "stbp":
            best = _width_search(probe_case, cfg)
            if best is not None and best[0] <= tol:
                found = _round_width(best[1], cfg, probe_case)
        if found is not None and "printed_temporal_term" not in found:
            what = _official_name(name, found, cfg)
            target = "numbers" if forward == "differs" else "gradient"
            diagnosis.append(f"your {target} {'are' if target == 'numbers' else 'is'} refsnn's with "
                             f"{_describe(found, cfg)}{' -- ' + what if what else ''}"
                             f"{_peer_width(found) if 'width' in found else ''}; to check with it: "
                             f"{_set_args(found, cfg)}")
        elif forward != "differs":
            diagnosis.append("no single setting refsnn tried reproduces your gradient (the probes: "
                             f"{_PROBE_TEXT[name]})")
    elif forward == "differs" and name in _PROBES:
        probe_case = _Case(name, module, c, params, x, y, mine, masks, tol, buffers)
        for ch in _PROBES[name](c, cfg):
            try:
                e = probe_case.error(replace(cfg, **ch))
            except (ValueError, TypeError):
                continue
            if e is not None and e <= tol:
                found = ch
                diagnosis.append(f"your numbers are refsnn's with {_describe(ch, cfg)}")
                break
    agree = report.passed and forward != "differs"
    return Verdict(agree, report, diagnosis, ref_loss, found)


_GRADIENT_HINT = {
    "stbp": "look at the surrogate (its name and width) and the detach of the reset",
    "ide": "look at the adjoint solver and its stopping, the linearisation point, BatchNorm's mode and the "
           "spectral norm's method",
    "st_rsbp": "look at the recurrent gradient, the recurrent delta and the lateral factor (the official code's "
               "variants), and the d-table settings",
    "ssnn_bp": "look at the ANN backward pass",
}

_PROBE_TEXT = {
    "stbp": "float32 constants, every reset, timing and comparison, the detach flag, and a search over the width "
            "of every surrogate",
    "ide": "the solvers (dense, fixed point, Broyden 30, the official 'iter'), the exact fixed point, BatchNorm's "
           "mode, the power-iteration spectral norm, the leaks 1, 0.95, 0.99, 0.9",
    "st_rsbp": "every combination of recurrent_grad, recurrent_delta and lateral_grad, fake target spikes, "
               "kappa for zero counts, the d-table method, size and lookup, boosting",
    "ssnn_bp": "none (the ANN twin is exact)",
}


def _known_spike_loss(user_loss, spikes, y, T):
    """The readouts of :mod:`refsnn.stbp_layers` (and their snnTorch names) whose value on refsnn's output spikes
    is the user's loss: a line for the diagnosis, or None."""
    from refsnn import stbp_layers as sl

    o = spikes[max(spikes)]
    found = []
    for kind, peer in (("mse_rate", "the official STBP code's MSELoss of the rate"), ("mse_rate_paper", "the paper's Eq. (L)"),
                       ("mse_count", "snnTorch mse_count_loss()"), ("ce_rate", "cross-entropy of the rate"),
                       ("ce_count", "snnTorch ce_count_loss()"), ("ce_per_step", "snnTorch ce_rate_loss()")):
        value = sl.Loss(kind).value_and_grads(o.reshape(o.shape[0], o.shape[1], -1), None, y)[0]
        if abs(value - user_loss) <= 1e-9 * max(abs(value), 1e-300):
            found.append(f"{kind!r} ({peer})")
        elif value and abs(user_loss / value - round(user_loss / value)) <= 1e-9 and round(user_loss / value) > 1:
            found.append(f"{round(user_loss / value)} x {kind!r} ({peer})")
    if not found:
        return None
    return (f"your loss is refsnn's readout {' or '.join(found)} of the same spikes (refsnn.stbp_layers.Loss): "
            f"check that loss with refsnn.checking.peers.verify(model, x, y, loss=...) or a refsnn.stbp_layers.Network")


def _ide_solver_error(module, params, x, y, cfg, masks, mine, info):
    """When the user's IDE gradient is close to the exact adjoint solve, the difference is a solver's stopping
    error: say so with its size (a Broyden stopping early leaves 1e-9..1e-6, the size float32 leaves too)."""
    try:
        _, g_dense, _ = _run(module, "ide", params, x, y, replace(cfg, solver="dense"), masks)
    except (ValueError, TypeError):
        return None
    keys = list(mine)
    e_user = gradcheck.compare(mine, {k: g_dense[k] for k in keys}, float32_hint=False).max_rel_error
    _, g_ref, _ = _run(module, "ide", params, x, y, cfg, masks)
    e_ref = gradcheck.compare({k: g_ref[k] for k in keys}, {k: g_dense[k] for k in keys},
                              float32_hint=False).max_rel_error
    if not e_user <= 1e-5:
        return None
    res = info.get("adjoint")
    own = f" (its residual {res.residual:.1e} after {res.iterations} iterations)" if res is not None else ""
    return (f"your gradient is within {e_user:.1e} of the exact adjoint solve (solver='dense'); refsnn's "
            f"{cfg.solver!r}{own} is within {e_ref:.1e}: the difference is an iterative solver's stopping error, "
            f"not float32. To compare without it: --set solver=dense and a --tol above {max(e_user, e_ref):.0e}")


# ---------------------------------------------------------------------------
# Golden vectors
# ---------------------------------------------------------------------------

def golden_dir() -> Path:
    """The golden vectors shipped with the package (``refsnn/checking/golden/``)."""
    return Path(__file__).resolve().parent / "golden"


def _threshold_margin(module_name, params, x, cfg):
    """Smallest ``|u - v_th|`` of an STBP case: how far every neuron is from flipping a spike."""
    from refsnn import stbp

    u, _ = stbp.simulate(params, x, replace(cfg, backend="numpy"))
    thr = [c["threshold"] for c in stbp.neuron_constants(params, cfg)]
    return min(float(np.min(np.abs(un - t))) for un, t in zip(u, thr))


def golden_cases() -> list:
    """``(file stem, algorithm, label, cfg, params, x, y)`` of every golden vector, built from seeded problems.

    STBP: its presets and one case per setting of :data:`refsnn.harness.problems.STBP_FAMILY` (the peers'
    neurons); ST-RSBP: the exact and the code presets on the small problem; IDE: one- and two-layer
    blocks, static and spike input, BatchNorm; SSNN-BP: the ANN twin.  Every STBP case keeps every
    potential at least 1e-6 from its threshold, so no spike flips on round-off.
    """
    from refsnn import ide, ssnn_bp, st_rsbp, stbp
    from refsnn.harness import problems

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
            problems_found += array_differences(ca["file"], k, va, vb, rel=rel)
    return problems_found


def array_differences(label: str, key: str, va, vb, *, rel: float = 1e-12) -> list:
    """How two stored arrays of a golden set differ (``[]`` if they do not): strings, spikes and labels must be
    equal exactly; numbers must be finite and agree to ``rel`` relative, norm-wise."""
    va, vb = np.asarray(va), np.asarray(vb)
    if va.dtype.kind in "USb" or key.startswith("spikes/") or key == "y":
        return [] if np.array_equal(va, vb) else [f"{label}: {key} differs"]
    found = []
    for side, v in (("first", va), ("second", vb)):
        bad = gradcheck.describe_nonfinite(v, f"the {side} set")
        if bad:
            found.append(f"{label}: {key}: {bad}")
    den = max(float(np.linalg.norm(va)), float(np.linalg.norm(vb)), 1e-300)
    err = float(np.linalg.norm(va.astype(np.float64) - vb.astype(np.float64))) / den
    if not err <= rel:                           # a NaN error is a difference too
        found.append(f"{label}: {key} differs by {err:.2e} relative")
    return found
