r"""Surrogate derivatives of the Heaviside step, and their primitives.

A spiking neuron fires when its membrane potential crosses the threshold,
:math:`o = H(u - V_{th})`.  :math:`H` has derivative zero almost everywhere, so
gradient-based training replaces :math:`dH/dx` by a bump :math:`h(x)` of unit
area (Wu et al. 2018, the four curves of their Fig. 3B).  Each bump has
a width parameter ``a`` and tends to the Dirac delta as ``a -> 0``.  Two bumps are
not normalised, because the code they reproduce does not normalise them: ``fast_sigmoid``
(peak 1, as snnTorch and norse write it) and ``window`` (height 1, as the official STBP code writes it).

With :math:`x = u - V_{th}`:

============  ==========================================================  ============================================================
name          surrogate :math:`h_k(x)`                                     primitive :math:`P_k(x) = \int_{-\infty}^x h_k`
============  ==========================================================  ============================================================
rect          :math:`\frac{1}{a}\,1[|x| < a/2]`                            :math:`\mathrm{clip}(x/a + 1/2, 0, 1)`
triangle      :math:`\max(0, \frac{\sqrt a}{2} - \frac{a}{4}|x|)`          :math:`\frac12 + \frac{\sqrt a}{2}x - \frac a8 x|x|` on :math:`|x| < 2/\sqrt a`, else 0 or 1
sigmoid       :math:`\frac1a \sigma(x/a)(1-\sigma(x/a))`                   :math:`\sigma(x/a)`
gauss         :math:`\frac{1}{\sqrt{2\pi a}} e^{-x^2/(2a)}`                :math:`\Phi(x/\sqrt a) = \frac12\,\mathrm{erfc}(-x/\sqrt{2a})`
atan          :math:`\frac{a}{\pi (a^2 + x^2)}`                            :math:`\frac12 + \frac1\pi \arctan(x/a)`
fast_sigmoid  :math:`\frac{1}{(1 + |x|/a)^2}`  (area :math:`2a`, peak 1)     :math:`a + \frac{a x}{a + |x|}` (from 0 to :math:`2a`)
window        :math:`1[|x| < a]`  (area :math:`2a`, height 1)                :math:`\mathrm{clip}(x, -a, a) + a` (from 0 to :math:`2a`)
============  ==========================================================  ============================================================

The first four are h1..h4 of the STBP paper, which uses :math:`a_1 = a_2 = a_3 = a_4 = 1`
(its Table 1).  atan and fast_sigmoid are the default surrogates of the PyTorch SNN
libraries; window is the official STBP code's.  What the width ``a`` means, and how each
library's parameter maps to it (larger ``a`` is always wider):

============  =====================================  ==========================================================
name          ``a`` is                               a peer's surrogate as refsnn's
============  =====================================  ==========================================================
rect          the window's width (height ``1/a``)    (the paper's h1); it is ``window`` of width ``a/2`` divided by ``a``
triangle      the paper's ``a_2``                    (the paper's h2)
sigmoid       a temperature: ``1/slope``             snnTorch ``sigmoid(slope=k)``, spikingjelly ``Sigmoid(alpha=k)``: ``a = 1/k``
gauss         the variance                           (the paper's h4)
atan          the scale of the Cauchy bump           snnTorch ``atan(alpha)``, spikingjelly ``ATan(alpha)``: ``a = 2 / (pi alpha)``
fast_sigmoid  the half-width at a quarter of peak    snnTorch ``fast_sigmoid(slope=k)``: ``a = 1/k``; norse ``method="super"``: ``a = 1`` (norse ignores its ``alpha``)
window        the window's half-width (height 1)     the official STBP code's ``|u - thresh| < lens``: ``a = lens``, for every ``lens``
============  =====================================  ==========================================================

The official code's window has height 1, not ``1/(2 lens)``: it is ``rect`` of width ``2 lens``
multiplied by ``2 lens``.  The two agree only at ``lens = 0.5``, the code's default, where
``window`` of width 0.5 equals ``rect`` of width 1 exactly (the ``code`` presets of ``refsnn.stbp``
use the latter); at any other ``lens`` reading the window as ``rect`` scales every surrogate
derivative by ``1 / (2 lens)`` (by 1/2 at ``lens = 1``, by 2 at ``lens = 0.25``).

spikingjelly's ``SuperSpike(alpha)`` is ``alpha / (|x| + 1)^2``: an amplitude, not a width (``alpha``
times ``fast_sigmoid`` with ``a = 1``); it is not one of refsnn's surrogates.  snnTorch's own
surrogates compute in float32 (they return float32 spikes and round the incoming gradient to
float32), so a stock snnTorch model agrees with refsnn only to float32 round-off, ~1e-7; the same
formulas in float64 agree to float64 round-off.

The *primitives* define the smoothed network of ``refsnn.stbp``: replacing
:math:`H` by :math:`P_k` turns the surrogate gradient into an exact gradient,
which finite differences can check.

Every function here is written in a form that cannot overflow or return NaN
for any finite input (``exp`` only ever sees non-positive arguments, the tail
of the Gaussian CDF uses ``erfc``); ``tests/test_surrogates.py`` sweeps
``[-100, 100]`` and far beyond.

Notation differences from the paper: the paper indexes the four curves
h1..h4 with widths a1..a4; here each is selected by ``name`` and the width is
the single argument ``a``.  ``KIND_CODES`` maps names to the integers the numba
kernels use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erfc

from refsnn.blocks._jit import njit

__all__ = [
    "NAMES",
    "KIND_CODES",
    "Surrogate",
    "get",
    "h",
    "primitive",
    "kinks",
    "area",
    "h_scalar",
    "primitive_scalar",
]

NAMES = ("rect", "triangle", "sigmoid", "gauss", "atan", "fast_sigmoid", "window")
KIND_CODES = {name: code for code, name in enumerate(NAMES)}


def _check_name(name: str) -> int:
    if name not in KIND_CODES:
        raise ValueError(f"surrogate: unknown name {name!r}; expected one of {', '.join(NAMES)}")
    return KIND_CODES[name]


def _check_width(a) -> float:
    try:
        a = float(a)
    except (TypeError, ValueError):
        raise TypeError(f"width: expected a positive number, got {a!r}") from None
    if not math.isfinite(a) or a <= 0:
        raise ValueError(f"width: must be finite and > 0, got {a}")
    return a


def _arguments(x, name, a):
    """Validated ``(kind code, width, x as a float array, its dtype)``."""
    kind = _check_name(name)
    a = _check_width(a)
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    return kind, a, x, x.dtype.type


# --------------------------------------------------------------------------
# Readable NumPy forms.
# --------------------------------------------------------------------------

def _sigmoid(z):
    """Logistic function without overflow: exp only sees -|z|."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def h(x, name: str = "rect", a: float = 1.0):
    """Surrogate derivative :math:`h(x) \\approx dH/dx` (Wu et al. 2018, Fig. 3B; h1..h4).

    Parameters
    ----------
    x : array_like
        Distance to threshold, ``u - v_th``.
    name : {"rect", "triangle", "sigmoid", "gauss", "atan", "fast_sigmoid", "window"}
        Which curve: h1..h4 of the paper, the peers' arctangent and fast sigmoid, or the
        official STBP code's window.
    a : float
        Width parameter, > 0.

    Returns
    -------
    ndarray
        Same shape and float dtype as ``x`` (float64 for integer input).
    """
    kind, a, x, dt = _arguments(x, name, a)
    if kind == 0:  # h1, rectangular window of width a and height 1/a
        out = np.where(np.abs(x) < a / 2, 1.0 / a, 0.0)
    elif kind == 1:  # h2, triangle: peak sqrt(a)/2, support |x| < 2/sqrt(a)
        out = np.maximum(0.0, math.sqrt(a) / 2 - (a / 4) * np.abs(x))
    elif kind == 2:  # h3, derivative of the logistic sigmoid of x/a
        e = np.exp(-np.abs(x) / a)
        out = e / (1.0 + e) ** 2 / a
    elif kind == 3:  # h4, Gaussian with variance a; beyond 40 standard deviations exp() is 0 anyway,
        # and clipping there keeps x*x from overflowing
        xc = np.clip(x, -40 * math.sqrt(a), 40 * math.sqrt(a))
        out = np.exp(-(xc * xc) / (2 * a)) / math.sqrt(2 * math.pi * a)
    elif kind == 4:  # atan: a Cauchy bump of scale a; z*z overflows to inf only where h is 0 anyway
        with np.errstate(over="ignore"):
            z = x / a
            out = (1.0 / (math.pi * a)) / (1.0 + z * z)
    elif kind == 6:  # the official STBP code's window: half-width a, height 1
        out = np.where(np.abs(x) < a, 1.0, 0.0)
    else:  # fast sigmoid: peak 1 at x = 0 (the same: an overflow to inf gives exactly h = 0)
        with np.errstate(over="ignore"):
            z = 1.0 + np.abs(x) / a
            out = 1.0 / (z * z)
    return np.asarray(out, dtype=dt)


def primitive(x, name: str = "rect", a: float = 1.0):
    """Primitive :math:`P(x) = \\int_{-\\infty}^x h`, a smooth stand-in for the Heaviside step.

    Same arguments as :func:`h`.  ``P`` rises monotonically from 0 to :func:`area` (1 for
    all but ``fast_sigmoid`` and ``window``) and ``P' = h`` everywhere except at the kinks
    listed by :func:`kinks`.
    """
    kind, a, x, dt = _arguments(x, name, a)
    if kind == 0:
        out = np.clip(x / a + 0.5, 0.0, 1.0)
    elif kind == 1:
        c = 2.0 / math.sqrt(a)
        xc = np.clip(x, -c, c)  # keeps x|x| from overflowing far outside the support
        inner = 0.5 + (math.sqrt(a) / 2) * xc - (a / 8) * xc * np.abs(xc)
        out = np.where(x <= -c, 0.0, np.where(x >= c, 1.0, inner))
    elif kind == 2:
        out = _sigmoid(x / a)
    elif kind == 3:
        out = 0.5 * erfc(-x / math.sqrt(2 * a))
    elif kind == 4:
        with np.errstate(over="ignore"):
            out = 0.5 + np.arctan(x / a) / math.pi
    elif kind == 6:  # 0 below the window, x + a inside it, 2a above
        out = np.clip(x, -a, a) + a
    else:  # a + a x / (a + |x|), written so that x = +-inf gives 0 and 2a, not inf / inf
        with np.errstate(over="ignore"):
            out = a + a * np.sign(x) * (1.0 - a / (a + np.abs(x)))
    return np.asarray(out, dtype=dt)


def area(name: str, a: float = 1.0) -> float:
    """``P(inf) - P(-inf)``, the integral of ``h``: 1, but ``2a`` for ``fast_sigmoid`` and ``window`` (height 1)."""
    kind = _check_name(name)
    a = _check_width(a)
    return 2.0 * a if kind in (5, 6) else 1.0


def kinks(name: str, a: float = 1.0) -> tuple[float, ...]:
    """Points where ``P`` is not twice differentiable (where ``h`` jumps or has a corner).

    Finite-difference checks of the smoothed model must keep every ``u - v_th``
    away from these points; the smooth curves (sigmoid, gauss) have none.
    """
    kind = _check_name(name)
    a = _check_width(a)
    if kind == 0:
        return (-a / 2, a / 2)
    if kind == 1:
        c = 2.0 / math.sqrt(a)
        return (-c, 0.0, c)
    if kind == 5:          # |x| in h: P is C^1 but P'' jumps at 0
        return (0.0,)
    if kind == 6:
        return (-a, a)
    return ()


# --------------------------------------------------------------------------
# Scalar forms for the numba kernels (same formulas, one value at a time).
# --------------------------------------------------------------------------

@njit(error_model="numpy", inline="always")      # IEEE division (a > 0 is validated), so the kernels calling it vectorise
def h_scalar(kind, a, x):
    """Scalar :func:`h` for kernels; ``kind`` is ``KIND_CODES[name]``."""
    # Written without data-dependent branches (a bool times a float): on real data the
    # window test is unpredictable, and a mispredicted branch costs more than the arithmetic.
    if kind == 0:
        return (1.0 / a) * (abs(x) < a / 2)
    if kind == 1:
        return max(0.0, math.sqrt(a) / 2 - (a / 4) * abs(x))
    if kind == 2:
        e = math.exp(-abs(x) / a)
        return e / ((1.0 + e) * (1.0 + e)) / a
    if kind == 3:
        return math.exp(-(x * x) / (2 * a)) / math.sqrt(2 * math.pi * a)
    if kind == 4:
        z = x / a
        return (1.0 / (math.pi * a)) / (1.0 + z * z)
    if kind == 6:
        return 1.0 * (abs(x) < a)
    z = 1.0 + abs(x) / a
    return 1.0 / (z * z)


@njit(error_model="numpy", inline="always")
def primitive_scalar(kind, a, x):
    """Scalar :func:`primitive` for kernels."""
    if kind == 0:
        v = x / a + 0.5
        return 0.0 if v < 0.0 else (1.0 if v > 1.0 else v)
    if kind == 1:
        c = 2.0 / math.sqrt(a)
        if x <= -c:
            return 0.0
        if x >= c:
            return 1.0
        return 0.5 + (math.sqrt(a) / 2) * x - (a / 8) * x * abs(x)
    if kind == 2:
        z = x / a
        e = math.exp(-abs(z))
        return 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
    if kind == 3:
        return 0.5 * math.erfc(-x / math.sqrt(2 * a))
    if kind == 4:
        return 0.5 + math.atan(x / a) / math.pi
    if kind == 6:
        return 0.0 if x < -a else (2.0 * a if x > a else x + a)
    sign = 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)
    return a + a * sign * (1.0 - a / (a + abs(x)))


@dataclass(frozen=True)
class Surrogate:
    """A named surrogate with its width, bundled for convenience.

    >>> s = Surrogate("sigmoid", 0.5)
    >>> float(s.h(0.0))
    0.5
    """

    name: str = "rect"
    a: float = 1.0

    def __post_init__(self):
        _check_name(self.name)
        object.__setattr__(self, "a", _check_width(self.a))

    @property
    def code(self) -> int:
        return KIND_CODES[self.name]

    def h(self, x):
        return h(x, self.name, self.a)

    def primitive(self, x):
        return primitive(x, self.name, self.a)

    def kinks(self):
        return kinks(self.name, self.a)


def get(name: str, a: float = 1.0) -> Surrogate:
    """The surrogate called ``name`` with width ``a`` (raises ``ValueError`` for unknown names)."""
    return Surrogate(name, a)
