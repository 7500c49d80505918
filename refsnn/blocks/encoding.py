"""Turning static inputs into what spiking networks consume.

Three encodings, all explicit about their randomness:

``bernoulli(p, T, rng)``
    Rate coding.  Each of the ``T`` steps carries an independent spike with
    probability ``p`` (an intensity in [0, 1], optionally scaled).  This is the
    STBP paper's and official code's coding (``x > torch.rand(...)``, Wu et
    al. 2018, Sec. 3.1) and ST-RSBP's (probability pixel/5.5 per step).
``poisson(rate, T, dt, rng)``
    Rate coding with a Poisson count per step (a rate in Hz and a step in
    seconds), clipped to at most one spike per step.  For ``rate*dt`` small it
    is the same as Bernoulli with ``p = 1 - exp(-rate*dt)``.
``direct(x, T)``
    Analog ("direct current") input: the same real vector at every step, as in
    the STBP code's FC MNIST model and in IDE.

Every function returns an array of shape ``(T, batch, n_in)`` (time first,
the layout of every simulator in refsnn) with the dtype asked for.

Notation differences from the papers: the papers write the input spike train
of neuron ``j`` as ``o_j^{t,0}`` (STBP) or ``s_j(t)`` (ST-RSBP); here it is
``x[t, b, j]`` with an explicit batch axis.
"""

from __future__ import annotations

import numpy as np

from refsnn.blocks._checks import as_generator, check_array, check_int, check_positive

__all__ = ["bernoulli", "poisson", "direct", "rates"]


def _as_batch(name: str, x, lo=None, hi=None) -> np.ndarray:
    x = check_array(name, x, lo=lo, hi=hi, dtype=np.float64)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{name}: expected shape (batch, n_in) or (n_in,), got {x.shape}")
    return x


def bernoulli(p, T: int, rng, *, scale: float = 1.0, dtype=np.float64) -> np.ndarray:
    """Bernoulli rate coding: ``x[t, b, j] ~ Bernoulli(scale * p[b, j])``, iid over ``t``.

    Parameters
    ----------
    p : array_like, shape (batch, n_in) or (n_in,)
        Intensities in [0, 1] (e.g. pixel / 255).
    T : int
        Number of time steps, >= 1.
    rng : int or numpy.random.Generator
        Source of randomness (required).
    scale : float
        Multiplies ``p`` before sampling; ``scale * p`` must stay in [0, 1].
        ST-RSBP uses ``scale = 1/5.5``.
    dtype : numpy dtype
        Of the returned 0/1 array.

    Returns
    -------
    ndarray, shape (T, batch, n_in)
        Spikes (0.0 or 1.0).
    """
    p = _as_batch("p", p, lo=0.0, hi=1.0)
    T = check_int("T", T, minimum=1)
    scale = check_positive("scale", scale)
    if scale > 1.0 and p.size and p.max() * scale > 1.0:
        raise ValueError(f"scale: scale * p must stay <= 1, got max {p.max() * scale:g}")
    rng = as_generator(rng)
    u = rng.random((T,) + p.shape)
    return (u < scale * p[None]).astype(dtype)


def poisson(rate, T: int, dt: float, rng, *, dtype=np.float64) -> np.ndarray:
    """Poisson rate coding with at most one spike per step.

    ``rate`` (Hz, >= 0) and ``dt`` (s, > 0): each step spikes when a Poisson
    count with mean ``rate*dt`` is positive, i.e. with probability
    ``1 - exp(-rate*dt)``.
    """
    rate = _as_batch("rate", rate, lo=0.0)
    T = check_int("T", T, minimum=1)
    dt = check_positive("dt", dt)
    rng = as_generator(rng)
    p = -np.expm1(-rate * dt)
    return (rng.random((T,) + rate.shape) < p[None]).astype(dtype)


def direct(x, T: int, *, dtype=np.float64) -> np.ndarray:
    """Direct (analog) input: ``x`` repeated at each of ``T`` steps (a read-only broadcast view)."""
    x = _as_batch("x", x)
    T = check_int("T", T, minimum=1)
    return np.broadcast_to(x.astype(dtype, copy=False)[None], (T,) + x.shape)


def rates(spikes) -> np.ndarray:
    """Mean firing rate over time of a ``(T, ...)`` spike array."""
    spikes = check_array("spikes", spikes)
    if spikes.ndim < 1 or spikes.shape[0] < 1:
        raise ValueError(f"spikes: expected a time axis first, got shape {spikes.shape}")
    return spikes.mean(axis=0)
