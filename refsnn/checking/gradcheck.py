r"""Gradient checking: central differences, relative errors, printable reports.

Every refsnn algorithm returns, from ``loss_and_grad``, the exact gradient of a
smooth function that its ``reference_objective`` builds (see CONTRIBUTING.md, "the
algorithm contract").  This module checks that claim numerically:

1. :func:`numerical_gradient` perturbs each parameter entry (or a seeded
   sample of entries, for big tensors) and takes a central difference of the
   objective, in float64::

       order 2:  g ~ [f(w+e) - f(w-e)] / (2e)                         error O(e^2)
       order 4:  g ~ [f(w-2e) - 8f(w-e) + 8f(w+e) - f(w+2e)] / (12e)  error O(e^4)

2. :func:`compare` reports, per tensor, the relative error of "mine" (the
   gradient under test) against the "reference"

   .. math::  \mathrm{rel} = \frac{\lVert g_{\rm mine} - g_{\rm ref}\rVert_2}
                                   {\max(\lVert g_{\rm mine}\rVert_2, \lVert g_{\rm ref}\rVert_2, 10^{-8} s)}

   over the checked entries (``s`` the largest norm of any tensor compared),
   the largest absolute difference and where it is.  A norm-wise error is used
   because entry-wise relative errors are meaningless for entries that are zero
   up to round-off; a reference that is exactly zero is judged by the absolute
   error.  Mismatched key sets are an error, never a silent skip.  A NaN or an infinity on either
   side fails its tensor in every branch, the report says where ("mine has 1 NaN at (0, 0)") and
   the summary's maximum is NaN (or inf); the scale is taken from the finite entries only, so one
   tensor's infinity cannot change another tensor's error, and every norm is taken of the arrays
   divided by their largest magnitude, so that entries near the largest float64 cannot overflow a norm
   into a pass.

3. :func:`check` does both for an algorithm module and a problem, and
   :func:`check_statistical` handles stochastic gradient estimators (SSNN-BP):
   it averages many independent estimates and tests the mean against the exact
   gradient with Bonferroni-bounded z-scores and Hotelling's T^2 (which
   accounts for the correlations between entries).

A :class:`Report` prints as a table (``print(report)``) and has ``.passed``.
``refsnn gradcheck ALGO`` runs each algorithm's ``gradcheck_cases`` through
:func:`run_cases` and exits non-zero if any tensor fails.

Using it on your own implementation: compute your gradient as a dict with the
same keys and shapes as refsnn's parameters and call
``compare(your_grads, refsnn_grads)`` (yours are "mine", refsnn's the "reference") or
``check_gradients(your_grads, refsnn_module.reference_objective(...), params)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import stats

from refsnn.blocks._checks import as_generator, check_in_range, check_int, check_positive

__all__ = [
    "numerical_gradient",
    "compare",
    "check_gradients",
    "check",
    "check_statistical",
    "TensorReport",
    "Report",
    "Case",
    "run_cases",
]


def _select_entries(size: int, max_entries: int | None, rng: np.random.Generator) -> np.ndarray:
    if max_entries is None or size <= max_entries:
        return np.arange(size)
    return np.sort(rng.choice(size, size=max_entries, replace=False))


def numerical_gradient(f: Callable[[dict], float], params: dict, *, eps: float = 1e-6, order: int = 2,
                       keys=None, max_entries: int | None = None, seed: int = 0) -> dict:
    """Central-difference gradient of ``f`` at ``params``.

    Parameters
    ----------
    f : callable
        Maps a parameter dict to a float.
    params : dict[str, ndarray]
        The point; it is not modified (entries are perturbed on a float64 copy).
    eps : float
        Step size.
    order : {2, 4}
        Accuracy order of the central stencil.
    keys : iterable of str, optional
        Which tensors to differentiate (default: all).
    max_entries : int, optional
        Check at most this many entries per tensor, drawn without replacement
        with ``seed`` (all entries when None or when the tensor is smaller).
    seed : int
        Seed for the entry sample.

    Returns
    -------
    dict[str, tuple[ndarray, ndarray]]
        For each key, ``(flat_indices, derivatives)``.
    """
    eps = check_positive("eps", eps)
    if order not in (2, 4):
        raise ValueError(f"order: expected 2 or 4, got {order!r}")
    rng = np.random.default_rng(seed)
    work = {k: np.array(v, dtype=np.float64, copy=True) for k, v in params.items()}
    keys = list(params) if keys is None else list(keys)
    out = {}
    for key in keys:
        if key not in work:
            raise KeyError(f"keys: {key!r} is not a parameter (have {list(work)})")
        arr = work[key]
        flat = arr.reshape(-1)  # a view: edits reach `work`
        idx = _select_entries(flat.size, max_entries, rng)
        d = np.empty(idx.size)
        for n, i in enumerate(idx):
            w0 = flat[i]

            def at(delta):
                flat[i] = w0 + delta
                return float(f(work))

            if order == 2:
                d[n] = (at(eps) - at(-eps)) / (2 * eps)
            else:
                d[n] = (at(-2 * eps) - 8 * at(-eps) + 8 * at(eps) - at(2 * eps)) / (12 * eps)
            flat[i] = w0
        out[key] = (idx, d)
    return out


@dataclass
class TensorReport:
    """The comparison of one tensor: "mine" (the gradient under test) against "reference".

    ``rel_error`` is ``||mine - reference|| / max(||mine||, ||reference||, floor)``; when the reference
    is exactly zero (``basis == "absolute"``) it is ``||mine|| / scale`` instead, the absolute error
    relative to the largest tensor of the comparison, and the table shows the absolute error.
    """

    name: str
    shape: tuple
    n_checked: int
    rel_error: float
    max_abs_error: float
    norm_analytic: float        # ||mine|| over the checked entries
    norm_numeric: float         # ||reference|| over the checked entries
    worst_index: tuple
    tol: float
    extra: dict = field(default_factory=dict)
    verdict: bool | None = None  # set by tests that are not a tolerance on rel_error (statistical)
    basis: str = "relative"
    nonfinite: str = ""          # "mine has 1 NaN at (0, 0)": a tensor with a NaN or infinity never passes


    @property
    def norm_mine(self) -> float:
        return self.norm_analytic

    @property
    def norm_reference(self) -> float:
        return self.norm_numeric

    @property
    def passed(self) -> bool:
        if self.nonfinite:
            return False
        if self.verdict is not None:
            return bool(self.verdict)
        # written so that a NaN error or tolerance fails: every comparison with NaN is False
        return bool(math.isfinite(self.rel_error) and self.rel_error <= self.tol)


#: Relative errors in this band, with everything else equal, are what float32 arithmetic on one side leaves.
FLOAT32_BAND = (1e-9, 1e-5)


@dataclass
class Report:
    """Per-tensor results of one gradient check; ``print`` it for a table."""

    tensors: list
    title: str = ""
    kind: str = "exact"
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.tensors) and all(t.passed for t in self.tensors)

    @property
    def max_rel_error(self) -> float:
        """The largest ``rel_error``; NaN if any tensor's is NaN (Python's ``max`` would drop it by position)."""
        errs = [float(t.rel_error) for t in self.tensors]
        if any(math.isnan(e) for e in errs):
            return math.nan
        return max(errs, default=0.0)

    def __getitem__(self, name: str) -> TensorReport:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def table(self) -> str:
        if self.kind == "statistical":
            head = (f"{'tensor':<8} {'shape':<12} {'checked':>7} {'rel.err(mean)':>13} {'max|z|':>8} {'z-bound':>8} "
                    f"{'T2/dof':>8} {'dof':>5} {'T2 band (Hotelling)':>20}  ok")
            rows = []
            for t in self.tensors:
                e = t.extra
                band = "non-finite" if t.nonfinite else f"[{e['band_lo']:.2f},{e['band_hi']:.2f}]"
                rows.append(f"{t.name:<8} {str(t.shape):<12} {t.n_checked:>7} {t.rel_error:>13.3e} "
                            f"{e['max_abs_z']:>8.2f} {e['z_bound']:>8.2f} {e['T2_per_dof']:>8.3f} {e['dof']:>5} "
                            f"{band:>20}  {'yes' if t.passed else 'NO'}")
        else:
            head = (f"{'tensor':<8} {'shape':<12} {'checked':>7} {'rel.error':>10} {'max|diff|':>10} {'|mine|':>11} "
                    f"{'|reference|':>11} {'tol':>8}  ok")
            rows = []
            for t in self.tensors:
                if t.nonfinite:
                    err = f"{'non-finite':>10}"
                elif t.basis == "relative":
                    err = f"{t.rel_error:>10.2e}"
                else:
                    err = f"{'abs ' + format(t.max_abs_error, '.1e'):>10}"
                rows.append(f"{t.name:<8} {str(t.shape):<12} {t.n_checked:>7} {err} {t.max_abs_error:>10.2e} "
                            f"{t.norm_analytic:>11.3e} {t.norm_numeric:>11.3e} {t.tol:>8.0e}  "
                            f"{'yes' if t.passed else 'NO'}")
        lines = ([self.title] if self.title else []) + [head, "-" * len(head)] + rows
        bad = [f"{t.name}: {t.nonfinite}" for t in self.tensors if t.nonfinite]
        summary = f"{'PASSED' if self.passed else 'FAILED'}: max relative error {self.max_rel_error:.2e}"
        lines.append(summary + (f" ({'; '.join(bad)})" if bad else ""))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def describe_nonfinite(values, side: str, *, shape=None, index=None) -> str:
    """``"mine has 1 NaN at (0, 0)"``: the NaNs and infinities among ``values``, or ``""`` if all are finite.

    ``values`` is a flat or shaped array; ``index`` (flat indices into ``shape``) says where its entries
    sit in the full tensor when only some entries were checked.
    """
    v = np.asarray(values)
    if v.dtype.kind not in "fc":
        return ""                                   # integers and booleans cannot hold NaN or inf
    shape = v.shape if shape is None else tuple(shape)
    flat = v.reshape(-1)
    nan, inf = np.isnan(flat), np.isinf(flat)
    n_nan, n_inf = int(nan.sum()), int(inf.sum())
    if not (n_nan or n_inf):
        return ""
    where = np.flatnonzero(nan | inf)[0]
    pos = int(where if index is None else np.asarray(index).reshape(-1)[where])
    at = tuple(int(i) for i in np.unravel_index(pos, shape)) if shape else ()
    parts = ([f"{n_nan} NaN"] if n_nan else []) + ([f"{n_inf} infinit{'y' if n_inf == 1 else 'ies'}"]
                                                     if n_inf else [])
    first = ", the first" if n_nan + n_inf > 1 else ""
    return f"{side} has {' and '.join(parts)}{first} at {at}"


def _float32_note(mine: dict, reports: list) -> list:
    """Notes that say when a disagreement looks like float32 arithmetic rather than a different model."""
    notes = []
    low = [k for k, v in mine.items() if np.asarray(v).dtype == np.float32]
    if low:
        notes.append(f"mine holds float32 arrays ({', '.join(low)}): agreement is capped at ~1e-7 relative")
    failing = [t for t in reports if not t.passed]
    lo, hi = FLOAT32_BAND
    if failing and all(lo <= t.rel_error <= hi for t in failing):
        notes.append(f"every failing tensor is off by {min(t.rel_error for t in failing):.1e}.."
                     f"{max(t.rel_error for t in failing):.1e}: the size float32 round-off leaves; look for a "
                     f"float32 piece on one side (a parameter stored as float32, float32 spikes or constants) "
                     f"before suspecting the model")
    return notes


def compare(mine: dict, reference: dict, *, tol: float = 1e-7, keys=None, buffers=(), floor_rel: float = 1e-8,
            float32_hint: bool = True, title: str = "") -> Report:
    """Compare two gradients tensor by tensor: ``mine`` (under test) against ``reference``.

    Parameters
    ----------
    mine, reference : dict of arrays
        Gradients with the same keys.  ``reference`` values may also be ``(flat_indices, values)``
        pairs from :func:`numerical_gradient`: then only those entries are compared.
    tol : float
        Largest accepted relative error per tensor.
    keys : iterable of str, optional
        Compare exactly these keys (each must be on both sides).  By default the two key sets, less
        ``buffers``, must be equal: a key on one side only is an error, not a silent skip.
    buffers : iterable of str
        Keys that are state, not parameters (e.g. ``bn_mean``, ``bn_var``): ignored on both sides.
    floor_rel : float
        A tensor's error is relative to ``max(||mine||, ||reference||, floor_rel * scale)``, ``scale``
        the largest norm of any tensor compared: round-off in a tensor that nearly vanishes is not a
        "relative" failure.  A reference that is exactly zero is judged by the absolute error
        ``||mine|| <= tol * scale`` and reported as such.

    float32_hint : bool
        Add a note when the errors look like float32 arithmetic on one side (off for comparisons with
        finite differences, whose own error can be of that size).

    Raises ValueError when nothing would be compared or the key sets differ.
    """
    tol = check_positive("tol", tol)
    floor_rel = check_positive("floor_rel", floor_rel)
    if not isinstance(mine, dict) or not isinstance(reference, dict):
        raise TypeError(f"mine, reference: expected dicts of arrays, got {type(mine).__name__} and "
                        f"{type(reference).__name__}")
    buffers = set(buffers)
    if keys is None:
        mk = [k for k in mine if k not in buffers]
        rk = [k for k in reference if k not in buffers]
        missing, extra = [k for k in rk if k not in mine], [k for k in mk if k not in reference]
        if missing or extra:
            raise ValueError(f"mine, reference: the key sets differ (only in reference: {missing}; only in mine: "
                             f"{extra}); pass keys=[...] to compare a subset, buffers=[...] for state")
        keys = rk
    else:
        keys = [k for k in keys if k not in buffers]
        absent = [k for k in keys if k not in mine or k not in reference]
        if absent:
            raise ValueError(f"keys: {absent} missing from mine or reference")
    if not keys:
        raise ValueError("mine, reference: nothing to compare (no keys left); a comparison of nothing cannot pass")
    pairs = []
    for key in keys:
        a_full = _real_array(mine[key], f"mine[{key!r}]")
        num = reference[key]
        if isinstance(num, tuple):
            if len(num) != 2:
                raise ValueError(f"reference[{key!r}]: a tuple must be (flat_indices, values), got {len(num)} items")
            idx = np.asarray(num[0])
            n = _real_array(num[1], f"reference[{key!r}] values").astype(np.float64).reshape(-1)
            if idx.ndim != 1 or idx.dtype.kind not in "iu" or idx.size != n.size:
                raise ValueError(f"reference[{key!r}]: the flat indices must be a 1-d integer array as long as the "
                                 f"values ({n.size}), got shape {idx.shape}, dtype {idx.dtype}")
            if idx.size and (idx.min() < 0 or idx.max() >= a_full.size):
                raise ValueError(f"reference[{key!r}]: flat indices must lie in [0, {a_full.size}) for mine's "
                                 f"shape {a_full.shape}")
        else:
            n_arr = _real_array(num, f"reference[{key!r}]").astype(np.float64)
            if n_arr.shape != a_full.shape:
                raise ValueError(f"reference[{key!r}]: shape {n_arr.shape} differs from mine's {a_full.shape}")
            idx, n = np.arange(a_full.size), n_arr.reshape(-1)
        a = a_full.astype(np.float64).reshape(-1)[idx]
        bad = "; ".join(d for d in (describe_nonfinite(a_full.reshape(-1)[idx], "mine", shape=a_full.shape,
                                                       index=idx),
                                    describe_nonfinite(n, "reference", shape=a_full.shape, index=idx)) if d)
        pairs.append((key, a_full.shape, idx, a, n, bad))

    # Every norm is taken of the arrays divided by S, the largest finite magnitude of the comparison, so that
    # no norm overflows (a norm of 1e300-sized entries would be inf and make any error look like 0), and the
    # scale comes from the finite entries only, so that one tensor's NaN or infinity cannot change (or void)
    # another tensor's error.
    S = max((float(np.max(np.abs(v[np.isfinite(v)]), initial=0.0)) for *_, a, n, _ in pairs for v in (a, n)),
            default=0.0)
    S = S if S > 0 else 1.0

    def norm(v):                                  # ||v|| / S over the finite entries
        return float(np.linalg.norm(np.where(np.isfinite(v), v, 0.0) / S))

    scale = max((max(norm(a), norm(n)) for *_, a, n, _ in pairs), default=0.0)
    reports = []
    for key, shape, idx, a, n, bad in pairs:
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.abs(a - n)
            na, nn = norm(a) * S, norm(n) * S     # for the table (these may round to inf; never judged)
        if bad:
            basis = "relative" if np.any(n[np.isfinite(n)]) else "absolute"
            rel = math.nan if (np.isnan(a).any() or np.isnan(n).any()) else math.inf
            max_abs = math.nan if np.isnan(diff).any() else math.inf
            worst = int(idx[np.flatnonzero(~np.isfinite(a) | ~np.isfinite(n))[0]])
        else:
            err = float(np.linalg.norm(a / S - n / S))
            if not np.any(n):
                basis, rel = "absolute", err / scale if scale > 0 else 0.0
            else:
                basis, rel = "relative", err / max(norm(a), norm(n), floor_rel * scale)
            max_abs = float(diff.max(initial=0.0))
            worst = int(idx[np.argmax(diff)]) if diff.size else 0
        reports.append(TensorReport(key, shape, int(idx.size), rel, max_abs, na, nn,
                                    np.unravel_index(worst, shape) if int(np.prod(shape)) else (), tol,
                                    basis=basis, nonfinite=bad))
    notes = _float32_note({k: mine[k] for k in keys}, reports) if float32_hint else []
    return Report(reports, title=title, notes=notes)


def _real_array(value, name: str) -> np.ndarray:
    """``value`` as a real numeric array, or a TypeError naming ``name`` (strings, objects, complex, bool)."""
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name}: expected a numeric array ({exc})") from None
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name}: expected a real numeric array (integers or floats), got dtype {arr.dtype}")
    return arr


def check_gradients(grads: dict, objective: Callable[[dict], float], params: dict, *, tol: float = 1e-7,
                    eps: float = 1e-6, order: int = 2, max_entries: int | None = None, seed: int = 0,
                    floor_rel: float = 1e-8, title: str = "") -> Report:
    """Compare ``grads`` with central differences of ``objective`` at ``params``.

    ``floor_rel`` as for :func:`compare`.  Central differences carry an absolute error of about the
    objective's round-off divided by ``eps`` in every entry, whatever the size of the tensor, so a tensor
    whose gradient is a thousandth of the largest one needs ``floor_rel`` of about 1e-2 to be judged
    against that error rather than against itself.
    """
    numeric = numerical_gradient(objective, params, eps=eps, order=order, max_entries=max_entries, seed=seed)
    return compare(grads, numeric, tol=tol, keys=list(params), floor_rel=floor_rel, float32_hint=False, title=title)


def check(module, params: dict, x, y, cfg, rng=None, *, tol: float = 1e-7, eps: float = 1e-6, order: int = 2,
          max_entries: int | None = None, seed: int = 0, floor_rel: float = 1e-8, title: str = "") -> Report:
    """The contract check for an algorithm module with a deterministic gradient.

    Calls ``module.loss_and_grad`` and compares it with central differences of
    ``module.reference_objective`` over every parameter tensor.  ``rng`` is
    passed to both as an int seed (so both see the same random draws).
    """
    _, grads = module.loss_and_grad(params, x, y, cfg, rng=rng)
    objective = module.reference_objective(params, x, y, cfg, rng=rng)
    return check_gradients(grads, objective, params, tol=tol, eps=eps, order=order,
                           max_entries=max_entries, seed=seed, floor_rel=floor_rel, title=title)


def check_statistical(sample_grad: Callable[[np.random.Generator], dict], exact: dict, *, n_samples: int,
                      seed, alpha: float = 1e-3, exact_rtol: float = 1e-7, max_joint: int = 1000,
                      title: str = "") -> Report:
    r"""Test that a stochastic gradient estimator is unbiased for ``exact``.

    Draws ``n_samples`` independent estimates ``g_1..g_N = sample_grad(rng)``.
    Two tests per tensor, each failing with probability about ``alpha`` for a
    correct estimator (with a fixed ``seed`` the outcome is reproducible):

    * **Entry-wise z-scores** of the mean against the exact value,
      :math:`z = (\bar g - g)/(s/\sqrt N)`, all below the Bonferroni bound
      :math:`\Phi^{-1}(1 - \alpha/(2m))` over all :math:`m` entries
      (Bonferroni holds whatever the correlations between entries).
    * **Hotelling's** :math:`T^2 = N\, d^\top S^{+} d`, :math:`d = \bar g - g`,
      with :math:`S` the sample covariance of the entries and :math:`S^+` its
      pseudo-inverse on the :math:`r` directions in which the samples vary.
      For an unbiased estimator (the mean is approximately Gaussian by the
      CLT) :math:`T^2 (N - r) / (r (N - 1)) \sim F(r, N - r)`, so
      :math:`T^2/r` must lie in the central :math:`1-\alpha` band of that
      law.  Unlike a sum of :math:`z^2` against :math:`\chi^2_m`, this stays
      calibrated when the entries of one estimate are correlated (they
      usually are: they share the same random draws).  At most ``max_joint``
      entries per tensor (a fixed sample) enter it, to bound the memory
      (``N * max_joint`` floats).

    Directions in which the samples never vary (constant entries, exact
    linear constraints) must match the exact value to ``exact_rtol`` times the
    exact tensor's norm (the exact gradient may itself come from finite
    differences).  ``rel_error`` reports the norm-wise relative error of the mean.
    """
    n_samples = check_int("n_samples", n_samples)
    if n_samples < 2:
        raise ValueError(f"n_samples: need at least 2 to estimate a variance, got {n_samples}")
    alpha = check_in_range("alpha", alpha, 0.0, 1.0, lo_open=True, hi_open=True)
    exact_rtol = check_positive("exact_rtol", exact_rtol)
    max_joint = check_int("max_joint", max_joint, minimum=1)
    if not isinstance(exact, dict) or not exact:
        raise ValueError("exact: expected a non-empty dict of arrays; a check of nothing cannot pass")
    exact = {k: _real_array(v, f"exact[{k!r}]") for k, v in exact.items()}
    rng = as_generator(seed, name="seed")
    keys = list(exact)
    shapes = {k: np.shape(exact[k]) for k in keys}
    pick = np.random.default_rng(0)
    joint = {k: _select_entries(int(np.prod(shapes[k], dtype=np.int64)), max_joint, pick) for k in keys}
    total = {k: np.zeros(shapes[k]) for k in keys}
    total_sq = {k: np.zeros(shapes[k]) for k in keys}
    samples = {k: np.empty((n_samples, joint[k].size)) for k in keys}
    nonfinite = {k: "" for k in keys}          # the first draw with a NaN or infinity, per tensor
    for s in range(n_samples):
        g = sample_grad(rng)
        if not isinstance(g, dict) or any(k not in g for k in keys):
            raise ValueError(f"sample_grad: draw {s} must be a dict with every key of exact ({keys}), got "
                             f"{sorted(g) if isinstance(g, dict) else type(g).__name__}")
        for k in keys:
            gk = _real_array(g[k], f"sample_grad()[{k!r}]").astype(np.float64)
            if gk.shape != shapes[k]:
                raise ValueError(f"sample_grad: {k!r} has shape {gk.shape}, the exact gradient {shapes[k]}")
            if not nonfinite[k]:
                nonfinite[k] = describe_nonfinite(gk, f"draw {s}")
            total[k] += gk
            total_sq[k] += gk ** 2
            samples[k][s] = gk.reshape(-1)[joint[k]]
    m_all = sum(int(np.size(exact[k])) for k in keys)
    z_bound = float(stats.norm.isf(alpha / (2 * m_all)))
    reports = []
    N = n_samples
    for k in keys:
        ex = np.asarray(exact[k], dtype=np.float64)
        bad = "; ".join(d for d in (nonfinite[k], describe_nonfinite(ex, "exact")) if d)
        if bad:                       # no statistics of non-finite numbers: the tensor fails, saying why
            reports.append(TensorReport(
                k, ex.shape, int(ex.size), math.nan, math.nan, math.nan, math.nan, (), tol=math.nan,
                verdict=False, nonfinite=bad,
                extra={"max_abs_z": math.nan, "z_bound": z_bound, "T2": math.nan, "dof": 0, "T2_per_dof": math.nan,
                       "band_lo": math.nan, "band_hi": math.nan, "n_joint": int(joint[k].size),
                       "null_deviation": math.nan, "constant_entries_exact": False, "n_samples": n_samples}))
            continue
        mean = total[k] / N
        var = np.maximum(total_sq[k] / N - mean ** 2, 0.0) * N / (N - 1)
        se = np.sqrt(var / N)
        scale = max(float(np.linalg.norm(ex)), 1e-300)
        varies = se > 1e-12 * max(float(np.abs(mean).max(initial=0.0)), float(np.abs(ex).max(initial=0.0)), 1e-300)
        z = np.zeros_like(mean)
        z[varies] = (mean[varies] - ex[varies]) / se[varies]
        const_ok = bool(np.all(np.abs(mean[~varies] - ex[~varies]) <= exact_rtol * scale))
        max_z = float(np.abs(z).max(initial=0.0))
        # Hotelling's T^2 on the joint sample of entries.
        X = samples[k]
        d = X.mean(axis=0) - ex.reshape(-1)[joint[k]]
        Xc = X - X.mean(axis=0)
        S = Xc.T @ Xc / (N - 1)
        lam, V = np.linalg.eigh(S) if S.size else (np.zeros(0), np.zeros((0, 0)))
        keep = lam > 1e-10 * max(float(lam.max(initial=0.0)), 1e-300)
        r = int(keep.sum())
        proj = V.T @ d
        null_dev = float(np.linalg.norm(proj[~keep]))
        null_ok = null_dev <= exact_rtol * scale
        if r and N - r < 1:
            raise ValueError(f"n_samples: Hotelling's test of {k!r} needs more samples than its {r} varying "
                             f"directions, got {N}; raise n_samples or lower max_joint")
        T2 = float(N * np.sum(proj[keep] ** 2 / lam[keep])) if r else 0.0
        if r:
            c = (N - 1) / (N - r)
            lo = float(stats.f.ppf(alpha / 2, r, N - r)) * c
            hi = float(stats.f.ppf(1 - alpha / 2, r, N - r)) * c
        else:
            lo = hi = 0.0
        ok = const_ok and null_ok and max_z <= z_bound and (r == 0 or lo <= T2 / r <= hi)
        rel = float(np.linalg.norm(mean - ex)) / scale
        worst = np.unravel_index(int(np.argmax(np.abs(z))), ex.shape) if ex.size else ()
        reports.append(TensorReport(
            k, ex.shape, int(ex.size), rel, float(np.abs(mean - ex).max(initial=0.0)),
            float(np.linalg.norm(mean)), float(np.linalg.norm(ex)), worst, tol=math.nan, verdict=ok,
            extra={"max_abs_z": max_z, "z_bound": z_bound, "T2": T2, "dof": r,
                   "T2_per_dof": T2 / r if r else 0.0, "band_lo": lo, "band_hi": hi,
                   "n_joint": int(joint[k].size), "null_deviation": null_dev,
                   "constant_entries_exact": const_ok, "n_samples": N}))
    return Report(reports, title=title, kind="statistical")


@dataclass
class Case:
    """One gradient-check problem, as an algorithm's ``gradcheck_cases`` returns it.

    ``kind="exact"``: compare ``loss_and_grad`` with central differences of
    ``reference_objective``.  ``kind="statistical"``: average ``n_samples``
    stochastic gradients (``loss_and_grad`` with fresh randomness) and test
    the mean against the exact gradient of ``reference_objective``.
    """

    label: str
    params: dict
    x: object
    y: object
    cfg: object
    rng: object = None
    kind: str = "exact"
    tol: float = 1e-7
    eps: float = 1e-6
    order: int = 2
    max_entries: int | None = None
    n_samples: int = 0


def run_cases(module, cases, *, seed: int = 0) -> list:
    """Run a list of :class:`Case` for ``module``; returns ``[(case, Report), ...]``."""
    results = []
    for case in cases:
        if case.kind == "exact":
            rep = check(module, case.params, case.x, case.y, case.cfg, rng=case.rng, tol=case.tol, eps=case.eps,
                        order=case.order, max_entries=case.max_entries, seed=seed, title=case.label)
        elif case.kind == "statistical":
            objective = module.reference_objective(case.params, case.x, case.y, case.cfg, rng=case.rng)
            num = numerical_gradient(objective, case.params, eps=case.eps, order=case.order)
            exact = {k: v for k, (_, v) in num.items()}
            exact = {k: exact[k].reshape(np.shape(case.params[k])) for k in exact}

            def sample(rng, case=case):
                return module.loss_and_grad(case.params, case.x, case.y, case.cfg, rng=rng)[1]

            rep = check_statistical(sample, exact, n_samples=case.n_samples, seed=seed, title=case.label)
        else:
            raise ValueError(f"case.kind: expected 'exact' or 'statistical', got {case.kind!r}")
        results.append((case, rep))
    return results
