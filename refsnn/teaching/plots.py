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

from refsnn.blocks import surrogates
from refsnn.blocks._checks import check_array

__all__ = ["raster", "membrane", "surrogate_curves", "residuals", "learning_curves", "stbp_unrolled_graph",
           "ssnn_bp_composite_neuron"]


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


def raster(spikes, ax=None, *, sample: int = 0, neurons=None, title: str | None = None, color="k", s=25.0,
           labels=None, ylabel: str = "neuron"):
    """Spike raster: a dot at (time step, neuron) for every spike.

    Parameters
    ----------
    spikes : array_like, shape (T,), (T, n) or (T, batch, n)
        Time first; values > 0 count as spikes.  A batch is reduced to ``sample``.
    neurons : sequence of int, optional
        Which neurons to show (default: all).
    labels : sequence of str, optional
        A name per row (then the rows are ticked with these and the y axis has no other label).
    ylabel : str
        The y axis label when ``labels`` is not given.
    """
    S = _time_by_neuron("spikes", spikes, sample)
    if neurons is not None:
        S = S[:, list(neurons)]
    if labels is not None and len(labels) != S.shape[1]:
        raise ValueError(f"labels: expected one per row ({S.shape[1]}), got {len(labels)}")
    ax = _axes(ax)
    t, i = np.nonzero(S > 0)
    ax.scatter(t, i, s=s, c=color, marker="|" if S.shape[1] > 1 else "o", linewidths=1.0)
    ax.set_xlim(-0.5, S.shape[0] - 0.5)
    ax.set_ylim(-0.5, S.shape[1] - 0.5)
    if labels is not None:
        ax.set_yticks(range(S.shape[1]), list(labels))
        ylabel = ""
    elif S.shape[1] <= 12:
        ax.set_yticks(range(S.shape[1]))              # whole rows, not 0.0, 2.5, ...
    return _finish(ax, "time step", ylabel, title)


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


def ssnn_bp_composite_neuron(ax=None):
    """The wiring of one hidden neuron of SSNN-BP (``refsnn.ssnn_bp``): its F, D, G+ and G- units, the
    forward and gradient spikes between layers, and the crossbar update (``docs/ssnn_bp.md``)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 5.8))

    def box(xy, w, h, title, body, color):
        ax.add_patch(plt.Rectangle((xy[0] - w / 2, xy[1] - h / 2), w, h, fc=color, ec="k", lw=1.3, zorder=2))
        ax.text(xy[0], xy[1] + h / 2 - 0.3, title, ha="center", va="center", fontsize=13, weight="bold", zorder=3)
        ax.text(xy[0], xy[1] - 0.22, body, ha="center", va="center", fontsize=10.5, zorder=3)

    def arrow(a, b, color="k", text="", off=(0, 0.4)):
        ax.annotate("", xy=b, xytext=a, zorder=1,
                    arrowprops=dict(arrowstyle="-|>", color=color, lw=2, mutation_scale=16))
        if text:
            ax.text((a[0] + b[0]) / 2 + off[0], (a[1] + b[1]) / 2 + off[1], text, color=color, fontsize=10.5,
                    ha="center", va="center")

    fwd, bwd, upd, gray = "tab:blue", "tab:red", "tab:green", "0.3"
    box((0, 4), 3.4, 1.5, "F (forward)",
        r"$\hat z_j = W_{j,:}\,n/T + b_j$" "\n" r"fires ~ Bernoulli(clip($\hat z_j$))", "#dbe9f6")
    box((0, 1.9), 3.4, 1.1, "D (derivative)", r"gate $g_j = 1[0 < \hat z_j < 1]$", "#eeeeee")
    box((-2.0, -0.4), 3.6, 1.3, "G+ (gradient)", r"fires w.p. $g_j\,\gamma \max(\beta_j, 0)$", "#f8dcdc")
    box((2.1, -0.4), 3.6, 1.3, "G\u2212 (gradient)", r"fires w.p. $g_j\,\gamma \max(-\beta_j, 0)$", "#f8dcdc")
    arrow((-5.4, 4), (-1.7, 4), fwd, "input spikes $s^{l-1}_i(t)$,\ncounted over the window", off=(-0.2, 0.6))
    arrow((1.7, 4), (5.6, 4), fwd, "spikes $s^{l}_j(t)$\nto layer $l+1$", off=(0, 0.6))
    arrow((0, 3.25), (0, 2.45), gray, r"$\hat z_j$", off=(0.35, 0))
    arrow((-0.6, 1.35), (-1.5, 0.25), gray, "gate", off=(-0.5, 0.05))
    arrow((0.6, 1.35), (1.7, 0.25), gray, "gate", off=(0.5, 0.05))
    arrow((7.0, 1.25), (3.0, 0.25), bwd)
    arrow((7.0, 1.25), (-0.8, 0.25), bwd)
    ax.text(5.0, 1.75, "gradient spikes of layer $l+1$, read through $W^\\top$:\n"
            r"$\beta_j(t) = \sum_k W_{kj}\,(e^+_k(t) - e^-_k(t))$", color=bwd, fontsize=10.5, va="center")
    arrow((-2.0, -1.05), (-5.4, -1.75), bwd, "$e^+_j(t)$, $e^-_j(t)$: to layer $l-1$ and to the crossbar",
          off=(-0.3, -0.75))
    arrow((2.1, -1.05), (-5.4, -1.9), bwd)
    ax.text(-5.5, -3.0, "crossbar update (U1): count the steps where presynaptic update-port spikes $v_i(t)$ meet "
            "$e^+_j(t)$ (+1) or $e^-_j(t)$ (\u22121);\n"
            r"$\Delta W_{ji} = \Delta w_{\min}\,(C^+_{ji} - C^-_{ji})$: local in space and time, no backward phase",
            color=upd, fontsize=10.5, va="center")
    ax.text(-5.5, 5.35, "forward spikes (blue) and gradient spikes (red) flow at the same time, in one window of "
            "T steps", fontsize=11, va="center")
    ax.set_xlim(-5.8, 10.2)
    ax.set_ylim(-3.6, 5.8)
    ax.axis("off")
    ax.set_title("SSNN-BP: composite neuron j of hidden layer l (our reconstruction, docs/ssnn_bp.md)", fontsize=13)
    return ax


def stbp_unrolled_graph(ax=None):
    """One STBP layer ``n`` unrolled over two steps: the spatial and temporal paths and the equations
    (B2)-(B5) of ``docs/stbp.md`` on the arrows they belong to (``refsnn.stbp``)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 5.6))
    pos = {}
    for k, t in enumerate(["t", "t+1"]):
        X0 = 5.0 * k
        pos[f"x{k}"], pos[f"u{k}"], pos[f"o{k}"], pos[f"up{k}"] = (X0, 0), (X0, 1.8), (X0, 3.6), (X0, 5.4)
        for key, label in [(f"x{k}", f"$o^{{{t},\\,n-1}}$"), (f"u{k}", f"$u^{{{t},\\,n}}$"),
                           (f"o{k}", f"$o^{{{t},\\,n}}$"), (f"up{k}", f"$u^{{{t},\\,n+1}}$")]:
            ax.text(*pos[key], label, ha="center", va="center", fontsize=15, zorder=4,
                    bbox=dict(boxstyle="round,pad=0.45", fc="white", ec="k", lw=1.4))

    def arrow(a, b, color, text="", off=(0.0, 0.0)):
        ax.annotate("", xy=b, xytext=a, zorder=2, arrowprops=dict(arrowstyle="-|>", color=color, lw=2.4,
                    shrinkA=24, shrinkB=24, mutation_scale=20))
        if text:
            ax.text((a[0] + b[0]) / 2 + off[0], (a[1] + b[1]) / 2 + off[1], text, color=color, fontsize=12,
                    ha="center", va="center", bbox=dict(fc="white", ec="none", alpha=0.9, pad=1))

    S, Tc, H = "tab:blue", "tab:orange", "0.3"
    for k in (0, 1):
        side = -1.45 if k == 0 else 1.45
        arrow(pos[f"x{k}"], pos[f"u{k}"], S, "$W^n$  (B2, B5)" if k == 0 else "", off=(side, 0))
        arrow(pos[f"u{k}"], pos[f"o{k}"], H, "fire; backward $h(u-V_{th})$" if k == 0 else "", off=(-2.15, 0))
        arrow(pos[f"o{k}"], pos[f"up{k}"], S, "$W^{n+1}$  (B2)" if k == 0 else "", off=(side, 0))
    arrow(pos["u0"], pos["u1"], Tc, r"leak $\lambda R_u$  (B4)", off=(0, -0.38))
    arrow(pos["o0"], pos["u1"], Tc, r"reset $\lambda R_o$  (B3)", off=(0.2, 0.55))
    arrow(pos["u1"], (8.6, 1.8), Tc, "to $t+2$", off=(0.6, -0.38))
    arrow(pos["o1"], (8.6, 2.1), Tc)
    ax.text(9.3, 5.2, "spatial path\n(layer to layer)", color=S, fontsize=12, va="center")
    ax.text(9.3, 3.9, "temporal path\n(step to step)", color=Tc, fontsize=12, va="center")
    ax.text(9.3, 2.6, "the spike: H forward,\nsurrogate h backward", color=H, fontsize=12, va="center")
    ax.text(9.3, 0.7, "backward: every arrow\nreversed.  The paper's\nprinted (B3) stops at\n"
            r"$o^{t+1,n}$ instead of $u^{t+1,n}$", fontsize=11, va="center")
    ax.set_xlim(-3.3, 12.4)
    ax.set_ylim(-0.6, 6.0)
    ax.axis("off")
    ax.set_title("STBP: one layer $n$ unrolled over two steps", fontsize=14)
    return ax
