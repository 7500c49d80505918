r"""A census of the surrogate spike derivatives of snnTorch, spikingjelly, norse, spyx and snnax.

What it is for
--------------
A surrogate-gradient network replaces the derivative of the spike, :math:`dH/dx` with
:math:`x = u - V_{th}`, by a bump :math:`h(x)`.  The libraries name their bumps alike and mean different
curves by the same name, so a model ported from one library to another, or checked against refsnn, can
silently change its gradient by a constant factor or a change of width:

* snnTorch's ``atan(alpha)`` is the Cauchy bump of peak ``alpha / 2`` and area 1; spyx's ``arctan(k)`` is
  the Cauchy bump of peak ``1 / pi`` and area ``1 / (pi k)``.  At the default 2 of both, spyx's curve is
  half as wide and has ``1 / pi`` of the height: the same name, gradients that differ by a factor
  ``pi`` at the threshold.
* "SuperSpike" is ``1 / (1 + k|x|)^2`` in spyx (and snnTorch's ``fast_sigmoid``), ``alpha / (1 + |x|)^2``
  (``alpha`` a height) in spikingjelly, ``1 / (1 + |x|)^2`` with its ``alpha`` ignored in norse, and
  ``1 / (1 + beta |x|)``, not squared and of infinite area, in snnax.
* "triangle" has peak ``alpha`` and half-width 1 in norse, peak ``alpha`` and half-width ``1 / alpha`` in
  spikingjelly (``PiecewiseQuadratic``, named after its primitive), peak 1 and half-width ``1 / k`` in
  spyx, and snnTorch's ``triangular`` is not a triangle at all but ``+threshold`` below the threshold
  and ``-threshold`` above it.
* norse's single ``alpha`` (100 in its neurons' parameters) is an inverse width for ``tanh`` and
  ``heavi_erfc``, a width for ``circ`` (whose bump is then 153 wide at half height), a height for
  ``triangle`` (peak 100) and is ignored by ``super``.

Implementations also differ in how they round.  snnTorch's sigmoid surrogate returned NaN gradients far
below the threshold (``exp`` overflows and the quotient is ``inf / inf``; snnTorch issue #427, fixed upstream
by pull request #433; the release installed here, 1.0.0, still has it), and some spikingjelly
surrogates gave zero gradients under its Triton backend (spikingjelly pull request #660; that backend
needs a GPU and is not exercised here).  The census therefore evaluates every installed peer's own
backward pass on a wide grid and records where it is NaN, infinite, zero where the curve is not, or has
lost its tail (:data:`FINDINGS`, found by :func:`scan`).

What it holds
-------------
:data:`CENSUS` has one :class:`Row` per named surrogate: its library, name and call, parameter names and
defaults, the float64 formula ``h(x, param)`` (written here from the peer's source, or for spyx and snnax
from their documentation), its peak, full width at half maximum and area at the default parameter, and
``as_refsnn``: the refsnn surrogate ``name``, width ``a`` and factor ``c`` with
``h_peer(x) == c * refsnn.blocks.surrogates.h(x, name, a)`` for every ``x``, or ``None`` with the reason
in ``no_refsnn``.  :func:`peer_derivative` evaluates the installed peer's own backward pass in float64 by
torch autograd.  spyx and snnax build on JAX, which is not available here, so their rows come from their
documented formulas only and have no peer to run.  ``docs/surrogates.md`` shows the table
(:func:`markdown_table`) and the findings.

The formulas are written so that they neither overflow nor lose their tails (``exp`` only sees
non-positive arguments; ``1 - tanh^2`` is written as ``4 e / (1 + e)^2``), so that they are the reference
the peers are measured against.  A peer's float64 value at an ``x`` where the formula is a normal number
should agree with it to round-off; where it is exactly zero, or off by more than half the formula's value
(``TAIL_REL``), the peer has lost the curve there.

This module imports no torch and no peer at module level; :func:`peer_derivative` imports them when called.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

__all__ = ["Row", "RefsnnMap", "Finding", "CENSUS", "FINDINGS", "NOT_IN_CENSUS", "SOURCES", "TAIL_REL",
           "installed", "peer_derivative", "row", "rows", "wide_grid", "extreme_grid", "scan", "markdown_table"]

#: Smallest positive normal float64 (2.2e-308): below it a value is subnormal and zero is an acceptable result.
TINY = float(np.finfo(np.float64).tiny)
#: Largest float64 and its logarithm (709.78): ``exp`` of anything larger is ``inf``.
BIG = float(np.finfo(np.float64).max)
LN_BIG = math.log(BIG)
#: A peer's value counts as having lost the curve's tail where it differs from the formula by more than half
#: the formula's value.  A peer that is merely less accurate (float32 round-off, a few ulps of cancellation)
#: is far inside this bound; one whose tail is cancellation noise, or a wrong expression after an
#: intermediate overflow, is far outside it.  An order-of-magnitude test: it is not a precision tolerance.
TAIL_REL = 0.5

_LN1P_SQRT2 = math.log(1.0 + math.sqrt(2.0))       # arccosh(sqrt 2): sech^2 and the logistic bump at half height

#: Where each library's rows come from.
SOURCES = {
    "snntorch": "snnTorch 1.0.0, installed: its backward passes (snntorch.surrogate)",
    "spikingjelly": "spikingjelly 2.0.0, installed: its backward passes (spikingjelly.activation_based.surrogate)",
    "norse": "norse 1.1.0, installed: the methods of norse.torch.functional.threshold.threshold",
    "spyx": "spyx 1.0 documentation (JAX, not installable here): formulas as documented, not run",
    "snnax": "snnax documentation, 'Functions' page (JAX, not installable here): formulas as documented, not run",
}

#: Names in the peers' surrogate modules that are not a surrogate curve, with the reason.
NOT_IN_CENSUS = {
    ("snntorch", "custom_surrogate"): "a wrapper around a user-written backward function, not a curve",
    ("spikingjelly", "SurrogateFunctionBase"): "the base class of spikingjelly's surrogates",
    ("norse", "logistic_fn / circ_dist_fn"): "stochastic forward passes (Bernoulli spikes) that norse's "
                                             "threshold() does not offer; their backward passes are tanh's "
                                             "and circ's",
    ("spyx", "custom"): "a factory for user surrogates (documented default: the straight-through estimator)",
    ("spyx", "heaviside"): "the forward step itself, not a surrogate",
}


# ---------------------------------------------------------------------------------------------------------
# Stable pieces of the formulas
# ---------------------------------------------------------------------------------------------------------

def _f(x):
    return np.asarray(x, dtype=np.float64)


def _logistic_bump(z):
    """``sigma(z) (1 - sigma(z))`` without overflow or a lost tail: ``e / (1 + e)^2`` with ``e = exp(-|z|)``."""
    e = np.exp(-np.abs(z))
    return e / ((1.0 + e) * (1.0 + e))


def _sech2(z):
    """``1 - tanh(z)^2 = sech(z)^2`` as ``4 e / (1 + e)^2`` with ``e = exp(-2|z|)``: no cancellation."""
    e = np.exp(-2.0 * np.abs(z))
    return 4.0 * e / ((1.0 + e) * (1.0 + e))


def _quiet(fn):
    """Evaluate ``fn`` with overflow to ``inf`` and ``1/0`` allowed: every formula here turns them into 0 or a
    value selected away by ``np.where``."""
    def wrapped(x, p):
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            return np.asarray(fn(_f(x), tuple(p)), dtype=np.float64) + np.zeros(np.shape(x))
    wrapped.__name__ = fn.__name__
    wrapped.__doc__ = fn.__doc__
    return wrapped


# ---------------------------------------------------------------------------------------------------------
# The table's types
# ---------------------------------------------------------------------------------------------------------

def _always(p):
    return True


def _no_edges(p):
    return ()


@dataclass(frozen=True)
class RefsnnMap:
    """``h_peer(x) == scale(p) * refsnn.blocks.surrogates.h(x, name, width(p))`` for all ``x``.

    ``holds(p)`` says for which parameters it is true (``when`` in words, empty for all of them);
    ``edges(p)`` lists isolated points where it is not, because a documented window is closed
    (``|x| <= w``) where refsnn's is open (``|x| < w``): there the peer's value is its height, refsnn's 0.
    """

    name: str
    width: Callable[[tuple], float]
    scale: Callable[[tuple], float]
    rule: str                                   # the same in words/LaTeX, for the table
    when: str = ""
    holds: Callable[[tuple], bool] = _always
    edges: Callable[[tuple], tuple] = _no_edges

    def at(self, p) -> Optional[tuple]:
        """``(name, a, c)`` at parameter ``p``, or None where the mapping does not hold."""
        p = tuple(p)
        return (self.name, float(self.width(p)), float(self.scale(p))) if self.holds(p) else None


@dataclass(frozen=True)
class Row:
    """One named surrogate of one library.  ``param`` arguments are tuples in the order of ``params``."""

    library: str
    name: str
    api: str                                    # how it is called, with its parameter names
    params: tuple
    default: tuple
    others: tuple                               # two more parameter tuples the tests use (fewer where none exist)
    formula: Callable                           # h(x, param) in float64
    latex: str                                  # h(x) in LaTeX, without |...| (it would split a Markdown table)
    peak: float                                 # sup h at the default
    fwhm: float                                 # measure of {x : h >= peak / 2} (inf: h never falls to half)
    area: float                                 # integral of h at the default (inf: diverges; nan: undefined)
    as_refsnn: Optional[RefsnnMap]
    no_refsnn: str = ""                         # why there is no refsnn equivalent (at the default)
    note: str = ""
    float32: bool = False                       # the peer's backward computes in float32
    band: Optional[Callable] = None             # (x, p) -> (lo, hi): a random peer lies in [lo, hi]
    domain: tuple = (-math.inf, math.inf)       # the inputs the peer accepts
    kinks: Callable = _no_edges                 # p -> points where h jumps or has a corner
    peer: Optional[Callable] = field(default=None, repr=False, compare=False)   # (x tensor, p) -> spikes

    @property
    def source(self) -> str:
        return SOURCES[self.library]

    @property
    def parameters(self) -> tuple:
        """The default and the others: every parameter tuple the census evaluates."""
        return (tuple(self.default),) + tuple(tuple(p) for p in self.others)

    def h(self, x, param=None):
        """The formula at ``param`` (default: the library's default), float64."""
        return self.formula(x, self.default if param is None else tuple(param))

    def refsnn(self, param=None) -> Optional[tuple]:
        """``(refsnn name, width a, factor c)`` at ``param`` (default: the default), or None."""
        if self.as_refsnn is None:
            return None
        return self.as_refsnn.at(self.default if param is None else param)


@dataclass(frozen=True)
class Finding:
    """Where an installed peer's backward pass departs from its curve, at one parameter.

    ``kinds`` are what :func:`scan` reports there: ``"nan"``, ``"inf"`` (either sign), ``"zero"`` (exactly 0
    where the curve is a normal number), ``"tail"`` (finite and nonzero but off by more than ``TAIL_REL``
    relative), ``"error"`` (the call raises).  Every such point lies in ``lo <= x <= hi`` (``|x|`` when
    ``symmetric``); the test checks that, and that the region holds at least one of them.
    """

    library: str
    name: str
    param: tuple
    kinds: tuple
    lo: float
    hi: float
    symmetric: bool
    what: str


# ---------------------------------------------------------------------------------------------------------
# Peers (imported lazily)
# ---------------------------------------------------------------------------------------------------------

_MODULES = {"snntorch": "snntorch", "spikingjelly": "spikingjelly", "norse": "norse", "spyx": "spyx",
            "snnax": "snnax"}


def installed(library: str) -> bool:
    """Whether ``library`` (and torch, for the three PyTorch libraries) can be imported here."""
    if library not in _MODULES:
        raise ValueError(f"library: expected one of {', '.join(_MODULES)}, got {library!r}")
    needs = [_MODULES[library]] + (["torch"] if library in ("snntorch", "spikingjelly", "norse") else [])
    return all(importlib.util.find_spec(m) is not None for m in needs)


def _kw(row_params, p):
    return dict(zip(row_params, p))


def _snntorch(factory: str, names: tuple):
    def call(x, p):
        from snntorch import surrogate
        return getattr(surrogate, factory)(**_kw(names, p))(x)
    return call


def _spikingjelly(cls: str, names: tuple):
    def call(x, p):
        from spikingjelly.activation_based import surrogate
        return getattr(surrogate, cls)(**_kw(names, p))(x)
    return call


def _norse(method: str):
    def call(x, p):
        from norse.torch.functional.threshold import threshold
        return threshold(x, method, float(p[0]))
    return call


def peer_derivative(row: Row, x, param=None):
    """The installed peer's own derivative ``d spike / d x`` at ``x``, by torch autograd, as float64 NumPy.

    ``x`` becomes a float64 tensor that requires grad; the peer's spike function is applied and backpropagated
    with an upstream gradient of ones.  Returns None when the row's library (or torch) is not installed, or
    the row has no peer to run (spyx, snnax).  A spike function with no autograd path (norse's
    ``"heaviside"``) has derivative exactly 0.  Errors the peer raises propagate.

    Where the peer computes in float32 the row says so (``row.float32``).  snnTorch's spike functions return
    float32 spikes, so the upstream gradient reaching their backward pass is float32: the ones used here are
    exact in float32, but any other upstream gradient is rounded to float32 before it is used.
    """
    if row.peer is None or not installed(row.library):
        return None
    import torch

    p = tuple(row.default if param is None else param)
    xt = torch.tensor(np.asarray(x, dtype=np.float64), dtype=torch.float64, requires_grad=True)
    out = row.peer(xt, p)
    if not out.requires_grad:
        return np.zeros(xt.shape, dtype=np.float64)
    out.backward(torch.ones_like(out))
    if xt.grad is None:                         # pragma: no cover - an output disconnected from x
        return np.zeros(xt.shape, dtype=np.float64)
    return xt.grad.detach().cpu().numpy().astype(np.float64)


# ---------------------------------------------------------------------------------------------------------
# The formulas, one per row (parameters in the order of the row's ``params``)
# ---------------------------------------------------------------------------------------------------------

# snnTorch --------------------------------------------------------------------------------------------------

@_quiet
def _st_atan(x, p):
    (alpha,) = p
    u = (math.pi / 2 * alpha) * x
    return alpha / 2 / (1.0 + u * u)


@_quiet
def _st_sigmoid(x, p):
    (slope,) = p
    return slope * _logistic_bump(slope * x)


@_quiet
def _st_fast_sigmoid(x, p):
    (slope,) = p
    d = slope * np.abs(x) + 1.0
    return 1.0 / (d * d)


@_quiet
def _st_spike_rate_escape(x, p):
    beta, slope = p
    return slope * np.exp(-beta * np.abs(x - 1.0))


@_quiet
def _ones(x, p):
    return np.ones_like(x)


@_quiet
def _zeros(x, p):
    return np.zeros_like(x)


@_quiet
def _st_triangular(x, p):
    (threshold,) = p
    return np.where(x >= 0, -float(threshold), float(threshold))


@_quiet
def _st_heaviside(x, p):
    return np.where(x > 0, 1.0, 0.0)


@_quiet
def _st_sso(x, p):
    mean, variance = p
    return np.where(x > 0, 1.0, mean * variance)        # below threshold: the mean of a uniform draw


def _st_sso_band(x, p):
    mean, variance = p
    x = _f(x)
    lo, hi = sorted(((-0.5 + mean) * variance, (0.5 + mean) * variance))
    return np.where(x > 0, 1.0, lo), np.where(x > 0, 1.0, hi)


@_quiet
def _st_lso(x, p):
    (slope,) = p
    return np.where(x > 0, 1.0, float(slope))


@_quiet
def _st_sfs(x, p):
    slope, B = p
    d = slope * np.abs(x) + 1.0
    return np.where(x > B, 1.0 / (d * d), 0.0)


# spikingjelly ----------------------------------------------------------------------------------------------

@_quiet
def _sj_piecewise_quadratic(x, p):
    (alpha,) = p
    ax = np.abs(x)
    return np.where(ax > 1 / alpha, 0.0, -(alpha ** 2) * ax + alpha)


@_quiet
def _sj_piecewise_exp(x, p):
    (alpha,) = p
    return alpha / 2 * np.exp(-alpha * np.abs(x))


@_quiet
def _sj_sigmoid(x, p):
    (alpha,) = p
    return alpha * _logistic_bump(alpha * x)


@_quiet
def _sj_soft_sign(x, p):
    (alpha,) = p
    d = 1 / alpha + np.abs(x)
    return 1.0 / (2 * alpha * (d * d))


@_quiet
def _sj_super_spike(x, p):
    (alpha,) = p
    d = np.abs(x) + 1.0
    return alpha / (d * d)


@_quiet
def _sj_atan(x, p):
    (alpha,) = p
    half = alpha / 2
    u = (math.pi * half) * x
    return half / (1.0 + u * u)


@_quiet
def _sj_nonzero_sign_log_abs(x, p):
    (alpha,) = p
    return 1.0 / (1 / alpha + np.abs(x))


@_quiet
def _sj_erf(x, p):
    (alpha,) = p
    u = x * alpha
    return np.exp(-(u * u)) * (alpha / math.sqrt(math.pi))


@_quiet
def _sj_piecewise_leaky_relu(x, p):
    w, c = p
    return np.where(np.abs(x) < w, 1 / (2 * w), float(c))


@_quiet
def _sj_squarewave(x, p):
    n, T = p
    w = math.pi * 2.0 / T
    s = np.zeros_like(x)
    for i in range(1, int(n)):
        arg = ((2 * i - 1.0) * w) * x                   # the argument rounded as the peer rounds it
        # Where it overflows (|x| ~ 1e307), reduce x by whole periods first (fmod is exact): the curve stays
        # defined; the peer's cos(inf) is NaN there.
        arg = np.where(np.isfinite(arg), arg, ((2 * i - 1.0) * w) * np.fmod(x, T))
        s = s + np.cos(arg)
    return s * (4.0 / T)


@_quiet
def _sj_s2nn(x, p):
    alpha, beta = p
    return np.where(x < 0.0, alpha * _logistic_bump(alpha * x), beta / (x + 1.0))


@_quiet
def _sj_q_pseudo_spike(x, p):
    (alpha,) = p
    return (1.0 + 2 / (alpha - 1) * np.abs(x)) ** (-alpha)


@_quiet
def _sj_leaky_k_relu(x, p):
    leak, k = p
    return np.where(x >= 0.0, float(k), float(leak))


@_quiet
def _sj_fake_numerical_gradient(x, p):
    (alpha,) = p
    return np.minimum(1.0 / np.abs(x), alpha)           # x = +-0: 1/0 = inf, so alpha (the limit)


@_quiet
def _sj_log_tailed_relu(x, p):
    (alpha,) = p
    return np.where(x <= 0.0, float(alpha), np.where(x > 1.0, 1.0 / x, 1.0))


@_quiet
def _sj_rect(x, p):
    (alpha,) = p
    return alpha * (np.abs(x) < 0.5 / alpha)


@_quiet
def _sj_multi_level(x, p):
    (m,) = p
    return ((x >= 0.0) & (x <= float(m))).astype(np.float64)


# norse -----------------------------------------------------------------------------------------------------

@_quiet
def _no_super(x, p):
    d = np.abs(x) + 1.0
    return 1.0 / (d * d)


@_quiet
def _no_triangle(x, p):
    (alpha,) = p
    return alpha * np.maximum(0.0, 1.0 - np.abs(x))


@_quiet
def _no_tanh(x, p):
    (alpha,) = p
    return _sech2(alpha * x)


@_quiet
def _no_circ(x, p):
    (alpha,) = p
    u = x / alpha
    return (1.0 + u * u) ** -1.5


@_quiet
def _no_heavi_erfc(x, p):
    (alpha,) = p
    u = alpha * x
    return 2.0 * np.exp(-(u * u)) / math.sqrt(math.pi)


# spyx (documented) -----------------------------------------------------------------------------------------

@_quiet
def _spyx_tanh(x, p):
    (k,) = p
    return _sech2(k * x)


@_quiet
def _spyx_arctan(x, p):
    (k,) = p
    u = (k * math.pi) * x
    return 1.0 / ((1.0 + u * u) * math.pi)


@_quiet
def _spyx_superspike(x, p):
    (k,) = p
    d = 1.0 + k * np.abs(x)
    return 1.0 / (d * d)


@_quiet
def _spyx_triangular(x, p):
    (k,) = p
    return np.maximum(0.0, 1.0 - np.abs(k * x))


@_quiet
def _spyx_boxcar(x, p):
    width, height = p
    return height * (np.abs(x) <= width / 2)


# snnax (documented) ----------------------------------------------------------------------------------------

@_quiet
def _snnax_superspike(x, p):
    (beta,) = p
    return 1.0 / (beta * np.abs(x) + 1.0)


@_quiet
def _snnax_sigmoid(x, p):
    (beta,) = p
    if beta == 1:                                        # the only beta snnax accepts: sigma (1 - sigma), stably
        return _logistic_bump(x)
    e = np.exp(-np.abs(beta * x))
    s = np.where(beta * x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    return s * (1.0 - beta * s)


@_quiet
def _snnax_piecewise(x, p):
    (beta,) = p
    return ((x >= -beta) & (x <= beta)).astype(np.float64)


# ---------------------------------------------------------------------------------------------------------
# The census
# ---------------------------------------------------------------------------------------------------------

def _k(*fns):
    """Kinks as a function of the parameter tuple: each ``fn(p)`` gives one point."""
    return lambda p: tuple(float(f(tuple(p))) for f in fns)


_ZERO_KINK = _k(lambda p: 0.0)

_NONE_CONST = "no refsnn equivalent: a constant, not a bump (refsnn's window needs a finite half-width)"

CENSUS: tuple = (
    # ---------------------------------------------------------------------------------- snnTorch 1.0.0
    Row("snntorch", "atan", "snntorch.surrogate.atan(alpha)", ("alpha",), (2.0,), ((0.5,), (10.0,)),
        _st_atan, r"\frac{\alpha/2}{1 + (\pi \alpha x / 2)^2}",
        peak=1.0, fwhm=4 / (math.pi * 2.0), area=1.0,
        as_refsnn=RefsnnMap("atan", lambda p: 2 / (math.pi * p[0]), lambda p: 1.0,
                            r"$a = 2/(\pi\alpha)$, $c = 1$"),
        note="snnTorch's default surrogate; its docstring writes the bump with 1/pi where the code has alpha/2",
        peer=_snntorch("atan", ("alpha",))),
    Row("snntorch", "sigmoid", "snntorch.surrogate.sigmoid(slope)", ("slope",), (25.0,), ((1.0,), (100.0,)),
        _st_sigmoid, r"\frac{k\, e^{-kx}}{(1 + e^{-kx})^2}",
        peak=25.0 / 4, fwhm=4 * _LN1P_SQRT2 / 25.0, area=1.0,
        as_refsnn=RefsnnMap("sigmoid", lambda p: 1 / p[0], lambda p: 1.0, r"$a = 1/k$, $c = 1$"),
        note="NaN below x = -(ln(DBL_MAX) - ln k)/k and 0 from there up to x = -ln(DBL_MAX)/(2k) "
             "(issue #427, still in 1.0.0)",
        peer=_snntorch("sigmoid", ("slope",))),
    Row("snntorch", "fast_sigmoid", "snntorch.surrogate.fast_sigmoid(slope)", ("slope",), (25.0,),
        ((1.0,), (100.0,)),
        _st_fast_sigmoid, r"\frac{1}{(1 + k\lvert x\rvert)^2}",
        peak=1.0, fwhm=2 * (math.sqrt(2) - 1) / 25.0, area=2 / 25.0,
        as_refsnn=RefsnnMap("fast_sigmoid", lambda p: 1 / p[0], lambda p: 1.0, r"$a = 1/k$, $c = 1$"),
        kinks=_ZERO_KINK, peer=_snntorch("fast_sigmoid", ("slope",))),
    Row("snntorch", "spike_rate_escape", "snntorch.surrogate.spike_rate_escape(beta, slope)",
        ("beta", "slope"), (1.0, 25.0), ((2.0, 10.0), (0.5, 1.0)),
        _st_spike_rate_escape, r"k\, e^{-\beta \lvert x - 1\rvert}",
        peak=25.0, fwhm=2 * math.log(2) / 1.0, area=2 * 25.0 / 1.0,
        as_refsnn=None, no_refsnn="no refsnn equivalent: a two-sided exponential centred at x = 1, "
                                  "one unit above the threshold",
        kinks=_k(lambda p: 1.0), peer=_snntorch("spike_rate_escape", ("beta", "slope"))),
    Row("snntorch", "straight_through_estimator", "snntorch.surrogate.straight_through_estimator()", (), (), (),
        _ones, r"1", peak=1.0, fwhm=math.inf, area=math.inf,
        as_refsnn=None, no_refsnn=_NONE_CONST, float32=True,
        note="passes the float32 incoming gradient through unchanged",
        peer=_snntorch("straight_through_estimator", ())),
    Row("snntorch", "triangular", "snntorch.surrogate.triangular(threshold)", ("threshold",), (1.0,),
        ((0.3,), (2.0,)),
        _st_triangular, r"\begin{cases} \theta & x < 0 \\ -\theta & x \ge 0 \end{cases}",
        peak=1.0, fwhm=math.inf, area=math.nan,
        as_refsnn=None, no_refsnn="no refsnn equivalent: not a bump but +threshold below and -threshold "
                                  "above the threshold (a sign function)",
        float32=True, note="computed in float32 (the incoming float32 gradient times a Python float)",
        kinks=_ZERO_KINK, peer=_snntorch("triangular", ("threshold",))),
    Row("snntorch", "heaviside", "snntorch.surrogate.heaviside()", (), (), (),
        _st_heaviside, r"\mathbb{1}[x > 0]", peak=1.0, fwhm=math.inf, area=math.inf,
        as_refsnn=None, no_refsnn="no refsnn equivalent: a step, not a bump (the gradient passes where the "
                                  "neuron spiked)",
        float32=True, kinks=_ZERO_KINK, peer=_snntorch("heaviside", ())),
    Row("snntorch", "SSO", "snntorch.surrogate.SSO(mean, variance)", ("mean", "variance"), (0.0, 0.2),
        ((0.1, 0.1), (-0.2, 0.5)),
        _st_sso, r"\begin{cases} 1 & x > 0 \\ (U - \tfrac12 + \mu)\,\sigma^2,\ U \sim \mathcal U[0, 1) & x \le 0"
                 r"\end{cases}",
        peak=1.0, fwhm=math.inf, area=math.inf,
        as_refsnn=None, no_refsnn="no refsnn equivalent: random below the threshold, 1 above it",
        note="random below the threshold: the formula gives the mean, the tests check the range",
        band=_st_sso_band, kinks=_ZERO_KINK, peer=_snntorch("SSO", ("mean", "variance"))),
    Row("snntorch", "LSO", "snntorch.surrogate.LSO(slope)", ("slope",), (0.1,), ((0.2,), (0.0,)),
        _st_lso, r"\begin{cases} 1 & x > 0 \\ k & x \le 0 \end{cases}",
        peak=1.0, fwhm=math.inf, area=math.inf,
        as_refsnn=None, no_refsnn="no refsnn equivalent: a step with a leak below the threshold",
        float32=True, note="documented formula; the installed LSO() raises TypeError (it applies "
                           "StochasticSpikeOperator with one argument missing)",
        kinks=_ZERO_KINK, peer=_snntorch("LSO", ("slope",))),
    Row("snntorch", "SFS", "snntorch.surrogate.SFS(slope, B)", ("slope", "B"), (25.0, 1.0),
        ((25.0, 0.0), (5.0, -0.5)),
        _st_sfs, r"\frac{\mathbb{1}[x > B]}{(1 + k\lvert x\rvert)^2}",
        peak=1 / (1 + 25.0) ** 2, fwhm=(1 + 25.0) * (math.sqrt(2) - 1) / 25.0, area=1 / (25.0 * (1 + 25.0)),
        as_refsnn=None, no_refsnn="no refsnn equivalent: fast_sigmoid cut to zero for x <= B (B = 1: zero "
                                  "at the threshold itself)",
        note="peak is the supremum, approached just above x = B", kinks=_k(lambda p: p[1]),
        peer=_snntorch("SFS", ("slope", "B"))),

    # -------------------------------------------------------------------------------- spikingjelly 2.0.0
    Row("spikingjelly", "PiecewiseQuadratic", "surrogate.PiecewiseQuadratic(alpha)", ("alpha",), (1.0,),
        ((0.5,), (3.0,)),
        _sj_piecewise_quadratic, r"\alpha \max(0, 1 - \alpha \lvert x\rvert)",
        peak=1.0, fwhm=1 / 1.0, area=1.0,
        as_refsnn=RefsnnMap("triangle", lambda p: 4 * p[0] ** 2, lambda p: 1.0, r"$a = 4\alpha^2$, $c = 1$"),
        note="a triangle: 'piecewise quadratic' is its primitive",
        kinks=_k(lambda p: -1 / p[0], lambda p: 0.0, lambda p: 1 / p[0]),
        peer=_spikingjelly("PiecewiseQuadratic", ("alpha",))),
    Row("spikingjelly", "PiecewiseExp", "surrogate.PiecewiseExp(alpha)", ("alpha",), (1.0,), ((0.5,), (5.0,)),
        _sj_piecewise_exp, r"\tfrac{\alpha}{2} e^{-\alpha \lvert x\rvert}",
        peak=0.5, fwhm=2 * math.log(2) / 1.0, area=1.0,
        as_refsnn=None, no_refsnn="no refsnn equivalent: a two-sided exponential (Laplace) bump",
        kinks=_ZERO_KINK, peer=_spikingjelly("PiecewiseExp", ("alpha",))),
    Row("spikingjelly", "Sigmoid", "surrogate.Sigmoid(alpha)", ("alpha",), (4.0,), ((1.0,), (25.0,)),
        _sj_sigmoid, r"\alpha\, \sigma(\alpha x)\,(1 - \sigma(\alpha x))",
        peak=1.0, fwhm=4 * _LN1P_SQRT2 / 4.0, area=1.0,
        as_refsnn=RefsnnMap("sigmoid", lambda p: 1 / p[0], lambda p: 1.0, r"$a = 1/\alpha$, $c = 1$"),
        note="the default surrogate of most spikingjelly neurons",
        peer=_spikingjelly("Sigmoid", ("alpha",))),
    Row("spikingjelly", "SoftSign", "surrogate.SoftSign(alpha)", ("alpha",), (2.0,), ((0.5,), (10.0,)),
        _sj_soft_sign, r"\frac{\alpha/2}{(1 + \alpha \lvert x\rvert)^2}",
        peak=1.0, fwhm=2 * (math.sqrt(2) - 1) / 2.0, area=1.0,
        as_refsnn=RefsnnMap("fast_sigmoid", lambda p: 1 / p[0], lambda p: p[0] / 2,
                            r"$a = 1/\alpha$, $c = \alpha/2$"),
        kinks=_ZERO_KINK, peer=_spikingjelly("SoftSign", ("alpha",))),
    Row("spikingjelly", "SuperSpike", "surrogate.SuperSpike(alpha)", ("alpha",), (1.0,), ((0.5,), (4.0,)),
        _sj_super_spike, r"\frac{\alpha}{(1 + \lvert x\rvert)^2}",
        peak=1.0, fwhm=2 * (math.sqrt(2) - 1), area=2.0,
        as_refsnn=RefsnnMap("fast_sigmoid", lambda p: 1.0, lambda p: p[0], r"$a = 1$, $c = \alpha$"),
        note="alpha is a height, not a width",
        kinks=_ZERO_KINK, peer=_spikingjelly("SuperSpike", ("alpha",))),
    Row("spikingjelly", "ATan", "surrogate.ATan(alpha)", ("alpha",), (2.0,), ((0.5,), (10.0,)),
        _sj_atan, r"\frac{\alpha/2}{1 + (\pi \alpha x / 2)^2}",
        peak=1.0, fwhm=4 / (math.pi * 2.0), area=1.0,
        as_refsnn=RefsnnMap("atan", lambda p: 2 / (math.pi * p[0]), lambda p: 1.0,
                            r"$a = 2/(\pi\alpha)$, $c = 1$"),
        peer=_spikingjelly("ATan", ("alpha",))),
    Row("spikingjelly", "NonzeroSignLogAbs", "surrogate.NonzeroSignLogAbs(alpha)", ("alpha",), (1.0,),
        ((0.5,), (10.0,)),
        _sj_nonzero_sign_log_abs, r"\frac{\alpha}{1 + \alpha \lvert x\rvert}",
        peak=1.0, fwhm=2 / 1.0, area=math.inf,
        as_refsnn=None, no_refsnn="no refsnn equivalent: decays like 1/x (infinite area)",
        kinks=_ZERO_KINK, peer=_spikingjelly("NonzeroSignLogAbs", ("alpha",))),
    Row("spikingjelly", "Erf", "surrogate.Erf(alpha)", ("alpha",), (2.0,), ((0.5,), (10.0,)),
        _sj_erf, r"\frac{\alpha}{\sqrt\pi} e^{-\alpha^2 x^2}",
        peak=2.0 / math.sqrt(math.pi), fwhm=2 * math.sqrt(math.log(2)) / 2.0, area=1.0,
        as_refsnn=RefsnnMap("gauss", lambda p: 1 / (2 * p[0] ** 2), lambda p: 1.0,
                            r"$a = 1/(2\alpha^2)$, $c = 1$"),
        peer=_spikingjelly("Erf", ("alpha",))),
    Row("spikingjelly", "PiecewiseLeakyReLU", "surrogate.PiecewiseLeakyReLU(w, c)", ("w", "c"), (1.0, 0.01),
        ((0.5, 0.0), (2.0, 0.1)),
        _sj_piecewise_leaky_relu, r"\begin{cases} \frac{1}{2w} & \lvert x\rvert < w \\ c & \text{else}"
                                  r"\end{cases}",
        peak=0.5, fwhm=2.0, area=math.inf,
        as_refsnn=RefsnnMap("rect", lambda p: 2 * p[0], lambda p: 1.0, r"$a = 2w$, $c = 1$", when="its leak $c$ is 0",
                            holds=lambda p: p[1] == 0),
        no_refsnn="no refsnn equivalent at the default: the constant c > 0 outside the window",
        kinks=_k(lambda p: -p[0], lambda p: p[0]),
        peer=_spikingjelly("PiecewiseLeakyReLU", ("w", "c"))),
    Row("spikingjelly", "SquarewaveFourierSeries", "surrogate.SquarewaveFourierSeries(n, T_period)",
        ("n", "T_period"), (2, 8.0), ((3, 4.0), (5, 8.0)),
        _sj_squarewave, r"\frac{4}{T} \sum_{i=1}^{n-1} \cos\frac{2\pi (2i-1) x}{T}",
        peak=4 / 8.0, fwhm=math.inf, area=math.nan,
        as_refsnn=None, no_refsnn="no refsnn equivalent: periodic and of both signs (a truncated Fourier "
                                  "series of a square wave)",
        peer=_spikingjelly("SquarewaveFourierSeries", ("n", "T_period"))),
    Row("spikingjelly", "S2NN", "surrogate.S2NN(alpha, beta)", ("alpha", "beta"), (4.0, 1.0),
        ((1.0, 0.5), (10.0, 2.0)),
        _sj_s2nn, r"\begin{cases} \alpha\, \sigma(\alpha x)(1 - \sigma(\alpha x)) & x < 0 \\ \frac{\beta}{x + 1}"
                  r" & x \ge 0 \end{cases}",
        peak=1.0, fwhm=1.0 + 2 * _LN1P_SQRT2 / 4.0, area=math.inf,
        as_refsnn=None, no_refsnn="no refsnn equivalent: a logistic bump below the threshold and beta/(x+1) "
                                  "above it (infinite area)",
        kinks=_ZERO_KINK, peer=_spikingjelly("S2NN", ("alpha", "beta"))),
    Row("spikingjelly", "QPseudoSpike", "surrogate.QPseudoSpike(alpha)", ("alpha",), (2.0,), ((3.0,), (1.5,)),
        _sj_q_pseudo_spike, r"\left(1 + \frac{2\lvert x\rvert}{\alpha - 1}\right)^{-\alpha}",
        peak=1.0, fwhm=(2.0 - 1) * (2 ** (1 / 2.0) - 1), area=1.0,
        as_refsnn=RefsnnMap("fast_sigmoid", lambda p: (p[0] - 1) / 2, lambda p: 1.0, r"$a = 1/2$, $c = 1$",
                            when=r"$\alpha = 2$", holds=lambda p: p[0] == 2),
        note="alpha > 1; a heavier tail as alpha falls towards 1",
        kinks=_ZERO_KINK, peer=_spikingjelly("QPseudoSpike", ("alpha",))),
    Row("spikingjelly", "LeakyKReLU", "surrogate.LeakyKReLU(leak, k)", ("leak", "k"), (0.0, 1.0),
        ((0.1, 1.0), (0.5, 2.0)),
        _sj_leaky_k_relu, r"\begin{cases} k & x \ge 0 \\ \text{leak} & x < 0 \end{cases}",
        peak=1.0, fwhm=math.inf, area=math.inf,
        as_refsnn=None, no_refsnn="no refsnn equivalent: a step (k above the threshold, leak below)",
        kinks=_ZERO_KINK, peer=_spikingjelly("LeakyKReLU", ("leak", "k"))),
    Row("spikingjelly", "FakeNumericalGradient", "surrogate.FakeNumericalGradient(alpha)", ("alpha",), (0.3,),
        ((1.0,), (0.05,)),
        _sj_fake_numerical_gradient, r"\min(\alpha, 1/\lvert x\rvert)",
        peak=0.3, fwhm=4 / 0.3, area=math.inf,
        as_refsnn=None, no_refsnn="no refsnn equivalent: decays like 1/x (infinite area)",
        kinks=_k(lambda p: -1 / p[0], lambda p: 0.0, lambda p: 1 / p[0]),
        peer=_spikingjelly("FakeNumericalGradient", ("alpha",))),
    Row("spikingjelly", "LogTailedReLU", "surrogate.LogTailedReLU(alpha)", ("alpha",), (0.0,), ((0.1,), (0.5,)),
        _sj_log_tailed_relu, r"\begin{cases} \alpha & x \le 0 \\ 1 & 0 < x \le 1 \\ 1/x & x > 1 \end{cases}",
        peak=1.0, fwhm=2.0, area=math.inf,
        as_refsnn=None, no_refsnn="no refsnn equivalent: a step with a 1/x tail (infinite area)",
        kinks=_k(lambda p: 0.0, lambda p: 1.0), peer=_spikingjelly("LogTailedReLU", ("alpha",))),
    Row("spikingjelly", "DeterministicPass", "surrogate.DeterministicPass()", (), (), (),
        _ones, r"1", peak=1.0, fwhm=math.inf, area=math.inf,
        as_refsnn=None, no_refsnn=_NONE_CONST, peer=_spikingjelly("DeterministicPass", ())),
    Row("spikingjelly", "PoissonPass", "surrogate.PoissonPass()", (), (), (),
        _ones, r"1 \quad (0 \le x \le 1)", peak=1.0, fwhm=math.inf, area=math.nan,
        as_refsnn=None, no_refsnn="no refsnn equivalent: its input is a firing probability in [0, 1], not "
                                  "a distance to threshold",
        note="forward: Bernoulli(x), so x must lie in [0, 1]", domain=(0.0, 1.0),
        peer=_spikingjelly("PoissonPass", ())),
    Row("spikingjelly", "Rect", "surrogate.Rect(alpha)", ("alpha",), (1.0,), ((0.5,), (3.0,)),
        _sj_rect, r"\alpha\, \mathbb{1}[\lvert x\rvert < 1/(2\alpha)]",
        peak=1.0, fwhm=1 / 1.0, area=1.0,
        as_refsnn=RefsnnMap("rect", lambda p: 1 / p[0], lambda p: 1.0, r"$a = 1/\alpha$, $c = 1$"),
        kinks=_k(lambda p: -0.5 / p[0], lambda p: 0.5 / p[0]), peer=_spikingjelly("Rect", ("alpha",))),
    Row("spikingjelly", "MultiLevelSpikeCount", "surrogate.MultiLevelSpikeCount(max_spike_count)",
        ("max_spike_count",), (1,), ((2,), (4,)),
        _sj_multi_level, r"\mathbb{1}[0 \le x \le M]",
        peak=1.0, fwhm=1.0, area=1.0,
        as_refsnn=None, no_refsnn="no refsnn equivalent: a window over [0, M], not centred on the threshold",
        note="max_spike_count has no default (the census uses 1); forward round(clamp(x, 0, M))",
        kinks=_k(lambda p: 0.0, lambda p: p[0]),
        peer=_spikingjelly("MultiLevelSpikeCount", ("max_spike_count",))),

    # ------------------------------------------------------------------------------------- norse 1.1.0
    Row("norse", "heaviside", 'threshold(x, "heaviside", alpha)', ("alpha",), (100.0,), ((1.0,), (10.0,)),
        _zeros, r"0", peak=0.0, fwhm=math.nan, area=0.0,
        as_refsnn=None, no_refsnn="no refsnn equivalent: no gradient at all (torch.gt has no derivative)",
        note="the spikes do not require grad: nothing upstream of a neuron learns",
        peer=_norse("heaviside")),
    Row("norse", "super", 'threshold(x, "super", alpha)', ("alpha",), (100.0,), ((1.0,), (10.0,)),
        _no_super, r"\frac{1}{(1 + \lvert x\rvert)^2}",
        peak=1.0, fwhm=2 * (math.sqrt(2) - 1), area=2.0,
        as_refsnn=RefsnnMap("fast_sigmoid", lambda p: 1.0, lambda p: 1.0, r"$a = 1$, $c = 1$"),
        note="norse's default method; alpha is ignored", kinks=_ZERO_KINK, peer=_norse("super")),
    Row("norse", "triangle", 'threshold(x, "triangle", alpha)', ("alpha",), (100.0,), ((0.3,), (1.0,)),
        _no_triangle, r"\alpha \max(0, 1 - \lvert x\rvert)",
        peak=100.0, fwhm=1.0, area=100.0,
        as_refsnn=RefsnnMap("triangle", lambda p: 4.0, lambda p: p[0], r"$a = 4$, $c = \alpha$"),
        note="alpha is a height: peak 100 with the neurons' default (triangle_fn's own default is 0.3)",
        kinks=_k(lambda p: -1.0, lambda p: 0.0, lambda p: 1.0), peer=_norse("triangle")),
    Row("norse", "tanh", 'threshold(x, "tanh", alpha)', ("alpha",), (100.0,), ((1.0,), (10.0,)),
        _no_tanh, r"1 - \tanh^2(\alpha x)",
        peak=1.0, fwhm=2 * _LN1P_SQRT2 / 100.0, area=2 / 100.0,
        as_refsnn=RefsnnMap("sigmoid", lambda p: 1 / (2 * p[0]), lambda p: 2 / p[0],
                            r"$a = 1/(2\alpha)$, $c = 2/\alpha$"),
        peer=_norse("tanh")),
    Row("norse", "circ", 'threshold(x, "circ", alpha)', ("alpha",), (100.0,), ((1.0,), (0.1,)),
        _no_circ, r"\left(1 + x^2/\alpha^2\right)^{-3/2}",
        peak=1.0, fwhm=2 * 100.0 * math.sqrt(2 ** (2 / 3) - 1), area=2 * 100.0,
        as_refsnn=None, no_refsnn="no refsnn equivalent: a (1 + u^2)^(-3/2) bump",
        note="alpha is a width here: 153 wide with the neurons' default",
        peer=_norse("circ")),
    Row("norse", "heavi_erfc", 'threshold(x, "heavi_erfc", alpha)', ("alpha",), (100.0,), ((1.0,), (10.0,)),
        _no_heavi_erfc, r"\frac{2}{\sqrt\pi} e^{-\alpha^2 x^2}",
        peak=2 / math.sqrt(math.pi), fwhm=2 * math.sqrt(math.log(2)) / 100.0, area=2 / 100.0,
        as_refsnn=RefsnnMap("gauss", lambda p: 1 / (2 * p[0] ** 2), lambda p: 2 / p[0],
                            r"$a = 1/(2\alpha^2)$, $c = 2/\alpha$"),
        float32=True, note="divides by sqrt(pi) computed in float32 (torch.as_tensor of a Python float): "
                           "every value is 3.0e-8 too small",
        peer=_norse("heavi_erfc")),

    # ------------------------------------------------------------------------------ spyx 1.0 (documented)
    Row("spyx", "tanh", "spyx.axn.tanh(k)", ("k",), (1.0,), ((0.5,), (10.0,)),
        _spyx_tanh, r"\frac{4}{(e^{-kx} + e^{kx})^2}",
        peak=1.0, fwhm=2 * _LN1P_SQRT2 / 1.0, area=2 / 1.0,
        as_refsnn=RefsnnMap("sigmoid", lambda p: 1 / (2 * p[0]), lambda p: 2 / p[0],
                            r"$a = 1/(2k)$, $c = 2/k$")),
    Row("spyx", "arctan", "spyx.axn.arctan(k)", ("k",), (2.0,), ((0.5,), (10.0,)),
        _spyx_arctan, r"\frac{1}{\pi (1 + (k \pi x)^2)}",
        peak=1 / math.pi, fwhm=2 / (math.pi * 2.0), area=1 / (math.pi * 2.0),
        as_refsnn=RefsnnMap("atan", lambda p: 1 / (math.pi * p[0]), lambda p: 1 / (math.pi * p[0]),
                            r"$a = 1/(\pi k)$, $c = 1/(\pi k)$")),
    Row("spyx", "superspike", "spyx.axn.superspike(k)", ("k",), (25.0,), ((1.0,), (100.0,)),
        _spyx_superspike, r"\frac{1}{(1 + k\lvert x\rvert)^2}",
        peak=1.0, fwhm=2 * (math.sqrt(2) - 1) / 25.0, area=2 / 25.0,
        as_refsnn=RefsnnMap("fast_sigmoid", lambda p: 1 / p[0], lambda p: 1.0, r"$a = 1/k$, $c = 1$"),
        kinks=_ZERO_KINK),
    Row("spyx", "triangular", "spyx.axn.triangular(k)", ("k",), (2.0,), ((0.5,), (3.0,)),
        _spyx_triangular, r"\max(0, 1 - \lvert kx\rvert)",
        peak=1.0, fwhm=1 / 2.0, area=1 / 2.0,
        as_refsnn=RefsnnMap("triangle", lambda p: 4 * p[0] ** 2, lambda p: 1 / p[0], r"$a = 4k^2$, $c = 1/k$"),
        note="the default k was 0.5 before spyx 0.1.20",
        kinks=_k(lambda p: -1 / p[0], lambda p: 0.0, lambda p: 1 / p[0])),
    Row("spyx", "boxcar", "spyx.axn.boxcar(width, height)", ("width", "height"), (2.0, 0.5),
        ((1.0, 1.0), (3.0, 0.25)),
        _spyx_boxcar, r"h\, \mathbb{1}[\lvert x\rvert \le w/2]",
        peak=0.5, fwhm=2.0, area=1.0,
        as_refsnn=RefsnnMap("window", lambda p: p[0] / 2, lambda p: p[1], r"$a = w/2$, $c = h$",
                            edges=lambda p: (-p[0] / 2, p[0] / 2)),
        note="documented as a closed window; refsnn's window is open: they differ at x = +-w/2 only",
        kinks=_k(lambda p: -p[0] / 2, lambda p: p[0] / 2)),

    # ---------------------------------------------------------------------------- snnax (documented)
    Row("snnax", "superspike_surrogate", "snnax.functional.superspike_surrogate(beta)", ("beta",), (10.0,),
        ((1.0,), (100.0,)),
        _snnax_superspike, r"\frac{1}{1 + \beta \lvert x\rvert}",
        peak=1.0, fwhm=2 / 10.0, area=math.inf,
        as_refsnn=None, no_refsnn="no refsnn equivalent: not squared, so it decays like 1/x (infinite "
                                  "area)",
        kinks=_ZERO_KINK),
    Row("snnax", "sigmoid_surrogate", "snnax.functional.sigmoid_surrogate(beta)", ("beta",), (1.0,), (),
        _snnax_sigmoid, r"\sigma(\beta x)\,(1 - \beta\, \sigma(\beta x))",
        peak=0.25, fwhm=4 * _LN1P_SQRT2, area=1.0,
        as_refsnn=RefsnnMap("sigmoid", lambda p: 1.0, lambda p: 1.0, r"$a = 1$, $c = 1$", when=r"$\beta = 1$",
                            holds=lambda p: p[0] == 1),
        note="only beta = 1 is accepted"),
    Row("snnax", "piecewise_surrogate", "snnax.functional.piecewise_surrogate(beta)", ("beta",), (0.5,),
        ((1.0,), (0.25,)),
        _snnax_piecewise, r"\mathbb{1}[-\beta \le x \le \beta]",
        peak=1.0, fwhm=2 * 0.5, area=2 * 0.5,
        as_refsnn=RefsnnMap("window", lambda p: p[0], lambda p: 1.0, r"$a = \beta$, $c = 1$",
                            edges=lambda p: (-p[0], p[0])),
        note="documented as a closed window; refsnn's window is open: they differ at x = +-beta only",
        kinks=_k(lambda p: -p[0], lambda p: p[0])),
)


def rows(library: Optional[str] = None) -> tuple:
    """The census rows of ``library`` (all of them for None)."""
    if library is not None and library not in _MODULES:
        raise ValueError(f"library: expected one of {', '.join(_MODULES)}, got {library!r}")
    return tuple(r for r in CENSUS if library is None or r.library == library)


def row(library: str, name: str) -> Row:
    """The row called ``name`` in ``library``."""
    for r in rows(library):
        if r.name == name:
            return r
    raise KeyError(f"{library} has no surrogate {name!r} in the census")


# ---------------------------------------------------------------------------------------------------------
# Grids and the scan
# ---------------------------------------------------------------------------------------------------------

def wide_grid(r: Row, param=None) -> np.ndarray:
    """The evaluation grid on [-1e3, 1e3]: a uniform part on [-10, 10] (step 0.0025), a geometric part from
    1e-12 to 1e3 on both sides, +0.0 and -0.0, and every kink of ``r`` with its two float neighbours;
    restricted to ``r.domain``.  Sorted; -0.0 and +0.0 both kept."""
    p = tuple(r.default if param is None else param)
    geo = np.geomspace(1e-12, 1e3, 301)
    pts = [np.linspace(-10.0, 10.0, 8001), geo, -geo, np.array([0.0, -0.0])]
    for k in r.kinks(p):
        pts.append(np.array([k, np.nextafter(k, -np.inf), np.nextafter(k, np.inf)]))
    x = np.sort(np.concatenate(pts), kind="stable")
    lo, hi = r.domain
    return x[(x >= lo) & (x <= hi)]


def extreme_grid(r: Row) -> np.ndarray:
    """Beyond the wide grid: every decade from 1e3 to 1e308 and the largest float64, both signs (within
    ``r.domain``)."""
    dec = np.concatenate([10.0 ** np.arange(3, 309), [BIG]])
    x = np.concatenate([-dec[::-1], dec])
    lo, hi = r.domain
    return x[(x >= lo) & (x <= hi)]


def scan(r: Row, x, peer, param=None) -> dict:
    """Where the peer's values ``peer`` at ``x`` depart from the formula: a dict kind -> x values.

    ``"nan"`` and ``"inf"``: not finite.  ``"zero"``: exactly 0 where the formula's magnitude is a normal
    number (>= the smallest normal float64).  ``"tail"``: finite and nonzero, but off by more than ``TAIL_REL``
    of the formula's value, where that is normal.  Where a row's peer is random (``band``), the random part
    is judged by the band instead and skipped here.
    """
    p = tuple(r.default if param is None else param)
    x = _f(x)
    g = _f(peer)
    f = r.formula(x, p)
    judged = np.ones(x.shape, dtype=bool)
    if r.band is not None:
        lo, hi = r.band(x, p)
        judged = lo == hi
    normal = (np.abs(f) >= TINY) & judged
    fin = np.isfinite(g)
    with np.errstate(invalid="ignore"):
        off = np.abs(g - f) > TAIL_REL * np.abs(f)
    return {"nan": x[np.isnan(g)], "inf": x[np.isinf(g)],
            "zero": x[fin & (g == 0) & normal],
            "tail": x[fin & (g != 0) & normal & off]}


# ---------------------------------------------------------------------------------------------------------
# What the census found in the installed peers (checked by tests/test_surrogate_census.py)
# ---------------------------------------------------------------------------------------------------------

def _sigmoid_findings():
    # snnTorch writes (1 * k) e^{-kx} / (e^{-kx} + 1)^2: the numerator k e^{-kx} overflows below
    # x = -(ln(DBL_MAX) - ln k)/k, where the quotient is inf/inf; above that, up to x = -ln(DBL_MAX)/(2k), only the
    # squared denominator is inf, so the value is 0 where the curve is k e^{-k|x|} >= 1e-154 k.
    out = []
    for k in (25.0, 1.0, 100.0):
        nan_below = -(LN_BIG - math.log(k)) / k
        out.append(Finding("snntorch", "sigmoid", (k,), ("nan",), -math.inf, nan_below, False,
                           f"NaN below x = -(ln(DBL_MAX) - ln k)/k = {nan_below:.4g}: k exp(-k x) overflows, "
                           f"inf/inf"))
        out.append(Finding("snntorch", "sigmoid", (k,), ("zero",), nan_below, -LN_BIG / (2 * k), False,
                           f"0 for {nan_below:.4g} < x < -ln(DBL_MAX)/(2k) = {-LN_BIG / (2 * k):.4g}: the squared "
                           f"denominator overflows while the curve is still >= 1e-154 k"))
    return out


def _logistic_findings():
    # spikingjelly writes alpha s (1 - s) with s = sigmoid(alpha x): for x > 0, 1 - s is computed from s ~ 1
    # with an absolute error of about EPS, so the tail is noise from alpha x ~ ln(1/EPS) = 36.0 and exactly 0
    # once s rounds to 1 (alpha x ~ 36.7), until the curve alpha e^{-alpha x} is subnormal anyway.
    out = []
    for a in (4.0, 1.0, 25.0):
        lo, hi = 35.0 / a, (math.log(a) - math.log(TINY)) / a
        out.append(Finding("spikingjelly", "Sigmoid", (a,), ("tail", "zero"), lo, hi, False,
                           f"1 - sigmoid(alpha x) cancels: the tail is lost from x ~ 36.0/alpha = {36.04 / a:.4g} "
                           f"and is exactly 0 from ~36.7/alpha = {36.74 / a:.4g} up to x = ln(alpha/tiny)/alpha = "
                           f"{hi:.4g}, where the curve is below 1e-15 of its peak"))
    return out


def _tanh_findings():
    # norse writes 1 - tanh(alpha x)^2: noise from 4 e^{-2 alpha |x|} ~ EPS (alpha |x| ~ 18), exactly 0 once
    # tanh rounds to 1 (alpha |x| ~ 19), until 4 e^{-2 alpha |x|} is subnormal (alpha |x| = ln(4/tiny)/2 = 354.9).
    out = []
    for a in (100.0, 1.0, 10.0):
        lo, hi = 17.0 / a, (math.log(4.0) - math.log(TINY)) / 2 / a
        out.append(Finding("norse", "tanh", (a,), ("tail", "zero"), lo, hi, True,
                           f"1 - tanh(alpha x)^2 cancels: the tail is lost from |x| ~ 18/alpha = {18 / a:.4g} and "
                           f"is exactly 0 from ~19/alpha up to |x| = ln(4/tiny)/(2 alpha) = {hi:.4g}, where the "
                           f"curve is below 1e-15 of its peak"))
    return out


def _circ_findings():
    # norse writes 2 alpha (1/(2 sqrt(s)) - x^2/(2 s^1.5)), s = alpha^2 + x^2: two terms ~ alpha/|x| whose
    # difference, the curve alpha^3/|x|^3, falls below their round-off once (alpha/x)^2 < EPS, i.e. beyond
    # |x| = alpha/sqrt(EPS) = 6.7e7 alpha; s^1.5 overflows beyond 5.6e102 (the value is then alpha/|x|) and
    # s itself beyond 1.3e154 (NaN).
    out = []
    for a in (100.0, 1.0, 0.1):
        out.append(Finding("norse", "circ", (a,), ("tail", "zero"), 1e6 * a, math.sqrt(BIG), True,
                           f"cancellation of two terms ~alpha/|x|: the tail is noise or 0 beyond |x| ~ "
                           f"alpha/sqrt(eps) = {a / math.sqrt(np.finfo(np.float64).eps):.2g}" +
                           (" (and alpha/|x| instead of alpha^3/|x|^3 beyond 5.6e102)" if a == 100.0 else "")))
        out.append(Finding("norse", "circ", (a,), ("nan",), math.sqrt(BIG), math.inf, True,
                           "NaN beyond |x| = sqrt(DBL_MAX) = 1.3e154: x^2 overflows and a term is inf/inf"))
    return out


FINDINGS: tuple = tuple(
    _sigmoid_findings() + _logistic_findings() + _tanh_findings() + _circ_findings()
    + [Finding("spikingjelly", "FakeNumericalGradient", (a,), ("inf",), 0.0, 0.0, False,
               "-inf at x = -0.0: the sign test x >= 0 holds for -0.0 and 1/(-0.0) = -inf (+0.0 gives alpha)")
       for a in (0.3, 1.0, 0.05)]
    + [Finding("spikingjelly", "SquarewaveFourierSeries", p, ("nan",), 1e307, math.inf, True,
               "NaN where the highest harmonic's argument (2n-3) 2 pi x / T overflows (|x| ~ 1e307 and beyond): "
               "cos(inf)")
       for p in ((3, 4.0), (5, 8.0))]
    + [Finding("snntorch", "LSO", (s,), ("error",), math.nan, math.nan, False,
               "LSO() raises TypeError: it applies StochasticSpikeOperator (three arguments) with two; "
               "LeakySpikeOperator itself returns one gradient for its two inputs")
       for s in (0.1, 0.2, 0.0)]
)


# ---------------------------------------------------------------------------------------------------------
# The table of the documentation page
# ---------------------------------------------------------------------------------------------------------

def _num(v: float) -> str:
    if math.isnan(v):
        return "—"
    if math.isinf(v):
        return "∞"
    return f"{v:.4g}"


def _default(r: Row) -> str:
    if not r.params:
        return "—"
    return ", ".join(f"`{n}={v:g}`" for n, v in zip(r.params, r.default))


def _refsnn_cell(r: Row) -> str:
    m = r.as_refsnn
    if m is None:
        return r.no_refsnn
    out = f"`{m.name}`, {m.rule}"
    if m.when:
        out += f" when {m.when}" + ("" if m.holds(tuple(r.default)) else " (not at the default)")
    if m.edges(tuple(r.default)):
        out += ", except at the two edges of the window"
    return out


def markdown_table() -> str:
    """The census as the Markdown table of ``docs/surrogates.md`` (one line per row)."""
    head = ("| library | name | default | $h(x)$ | peak | FWHM | area | refsnn: $h = c\\,h_{\\text{name}}(x; a)$ |\n"
            "|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in CENSUS:
        lines.append(f"| {r.library} | `{r.name}` | {_default(r)} | ${r.latex}$ | {_num(r.peak)} | "
                     f"{_num(r.fwhm)} | {_num(r.area)} | {_refsnn_cell(r)} |")
    return "\n".join(lines)
