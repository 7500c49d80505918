"""Plots for spiking networks: rasters, membrane traces, surrogates, residuals, learning curves.

Every function takes ``ax=None`` (a new figure is made when None), labels its
axes, and returns the ``matplotlib.axes.Axes`` it drew on, so plots compose::

    fig, axes = plt.subplots(1, 2)
    plots.raster(o[0], ax=axes[0])
    plots.membrane(u[0], v_th=cfg.v_th, ax=axes[1])

matplotlib is imported only when a function is called.
"""

from __future__ import annotations

import numpy as np

from refsnn import surrogates
from refsnn._checks import check_array

__all__ = ["raster", "membrane", "surrogate_curves", "residuals", "learning_curves"]


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def _finish(ax, xlabel, ylabel, title=None, legend=False):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend:
        ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    return ax


def _time_by_neuron(name, x, sample):
    """Bring a (T,), (T, n) or (T, batch, n) array to (T, n), picking ``sample`` from a batch."""
    x = check_array(name, x)
    if x.ndim == 1:
        return x[:, None]
    if x.ndim == 2:
        return x
    if x.ndim == 3:
        if not 0 <= sample < x.shape[1]:
            raise ValueError(f"sample: must lie in [0, {x.shape[1] - 1}] for a batch of {x.shape[1]}, got {sample}")
        return x[:, sample, :]
    raise ValueError(f"{name}: expected shape (T,), (T, n) or (T, batch, n), got {x.shape}")


def raster(spikes, ax=None, *, sample: int = 0, neurons=None, title: str | None = None, color="k", s=25.0):
    """Spike raster: a dot at (time step, neuron) for every spike.

    Parameters
    ----------
    spikes : array_like, shape (T,), (T, n) or (T, batch, n)
        Time first; values > 0 count as spikes.  A batch is reduced to ``sample``.
    neurons : sequence of int, optional
        Which neurons to show (default: all).
    """
    S = _time_by_neuron("spikes", spikes, sample)
    if neurons is not None:
        S = S[:, list(neurons)]
    ax = _axes(ax)
    t, i = np.nonzero(S > 0)
    ax.scatter(t, i, s=s, c=color, marker="|" if S.shape[1] > 1 else "o", linewidths=1.0)
    ax.set_xlim(-0.5, S.shape[0] - 0.5)
    ax.set_ylim(-0.5, S.shape[1] - 0.5)
    return _finish(ax, "time step", "neuron", title)


def membrane(u, ax=None, *, sample: int = 0, neurons=None, v_th: float | None = None, spikes=None,
             title: str | None = None):
    """Membrane potential traces of a few neurons, with the threshold and spike times marked.

    ``u`` is (T,), (T, n) or (T, batch, n); ``neurons`` picks columns (default:
    the first three); ``spikes`` (same shape as ``u``) marks firing steps.
    """
    U = _time_by_neuron("u", u, sample)
    cols = list(range(min(3, U.shape[1]))) if neurons is None else list(neurons)
    ax = _axes(ax)
    t = np.arange(U.shape[0])
    S = _time_by_neuron("spikes", spikes, sample) if spikes is not None else None
    for c in cols:
        line, = ax.plot(t, U[:, c], drawstyle="steps-mid", label=f"neuron {c}")
        if S is not None:
            fired = np.nonzero(S[:, c] > 0)[0]
            ax.plot(fired, U[fired, c], "v", color=line.get_color(), ms=5)
    if v_th is not None:
        ax.axhline(v_th, color="gray", ls="--", lw=1, label="threshold")
    return _finish(ax, "time step", "membrane potential u", title, legend=True)


def surrogate_curves(names=None, width: float = 1.0, ax=None, *, primitive: bool = False, x_range=(-2.5, 2.5)):
    """The surrogate derivatives h(x) (or their primitives P(x)) against x = u - v_th."""
    names = surrogates.NAMES if names is None else names
    ax = _axes(ax)
    x = np.linspace(*x_range, 801)
    for name in names:
        y = surrogates.primitive(x, name, width) if primitive else surrogates.h(x, name, width)
        ax.plot(x, y, label=f"{name} (a={width:g})")
    if primitive:
        ax.step(x, (x > 0).astype(float), where="post", color="k", lw=1, ls=":", label="Heaviside H")
    return _finish(ax, "u - v_th", "P(u - v_th)" if primitive else "h(u - v_th)", legend=True)


def residuals(values, ax=None, *, label: str | None = None, logy: bool = True, xlabel: str = "iteration",
              ylabel: str = "residual"):
    """A residual trace (e.g. ``||f(a) - a||`` of a fixed-point solver) against iteration or time."""
    v = check_array("values", values, ndim=1, finite=False)
    ax = _axes(ax)
    it = np.arange(1, v.size + 1)
    (ax.semilogy if logy else ax.plot)(it, v, label=label)
    return _finish(ax, xlabel, ylabel, legend=bool(label))


def learning_curves(history, ax=None, *, keys=("train_accuracy", "test_accuracy"), title: str | None = None):
    """Per-epoch curves from a ``metrics.json`` history (a list of dicts) or the metrics dict itself."""
    if isinstance(history, dict):
        history = history.get("history", [])
    if not history:
        raise ValueError("history: empty; train for at least one epoch first")
    ax = _axes(ax)
    ep = [h["epoch"] for h in history]
    for key in keys:
        if key not in history[0]:
            raise KeyError(f"keys: {key!r} is not in the history (have {sorted(history[0])})")
        ax.plot(ep, [h[key] for h in history], marker="o", ms=3, label=key.replace("_", " "))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ylabel = "accuracy" if all(k.endswith("accuracy") for k in keys) else "value"
    return _finish(ax, "epoch", ylabel, title, legend=True)
