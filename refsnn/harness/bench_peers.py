"""``refsnn bench peers``: one spiking layer on the CPU in every library, checked equal before it is timed.

The layer is the Open Neuromorphic benchmark's (a ``Linear(n, n)`` then a population of ``n`` LIF neurons,
batch 16, T 500), run as the *same* model in every library: each library's stock LIF neuron with the
same constants (decay 0.9, threshold 1, reset to zero in the step that fires), its own surrogate, and
refsnn's reading of that very model (:func:`refsnn.checking.peers.from_torch`).  Before any timing, each
library's model is checked against refsnn in float64 at a small size: the same output spikes, and its own
autograd gradient of every tensor equal to refsnn's (:func:`refsnn.checking.peers.verify`).  Only then is it
timed, in float32 and float64, forward alone and forward + backward, eager and under ``torch.compile``, each
competitor in a process of its own with the rounds rotated (:func:`refsnn.harness.benchmarks.paired`).

Two neuron forms exist among the libraries: snnTorch's ``Leaky`` adds the input as it is
(``v = 0.9 v + I``), norse's ``LIFBoxCell`` scales it by ``dt / tau`` (``v = 0.9 v + 0.1 I``).  spikingjelly
runs either (``decay_input``).  Each library runs its own form and refsnn is checked against each; the
forms cost the same.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from refsnn.blocks._checks import check_choice, check_int

__all__ = ["LIBRARIES", "build", "check_equal", "peers_bench", "table"]

#: The libraries of the benchmark, and the form of LIF neuron each runs ("leaky": v = lam v + I;
#: "box": v = lam v + (1 - lam) I).
LIBRARIES = {"refsnn": "leaky", "torch": "leaky", "snntorch": "leaky", "spikingjelly": "leaky", "norse": "box"}
DECAY, THRESHOLD = 0.9, 1.0


def _weights(n: int, seed: int):
    """Seeded float64 weights that make about a tenth of the neurons fire at each step on Bernoulli(0.5) input."""
    rng = np.random.default_rng(seed)
    W = rng.normal(0.0, 1.0 / math.sqrt(n), (n, n))
    b = np.full(n, 0.05)
    return W, b


def _input(T: int, batch: int, n: int, seed: int):
    return (np.random.default_rng(seed + 1).random((T, batch, n)) < 0.5).astype(np.float64)


def build(lib: str, n: int, dtype: str = "float64", seed: int = 0):
    """The layer as ``lib`` writes it: an ``nn.Sequential`` (``Linear`` then the library's LIF), in ``dtype``.

    ``"torch"`` is the same layer written in plain PyTorch (a loop over the steps, the atan surrogate);
    ``"refsnn"`` is not a torch model (its layer is ``refsnn.stbp`` with one dense layer: :func:`_refsnn_config`)."""
    check_choice("lib", lib, tuple(k for k in LIBRARIES if k != "refsnn"))
    import torch

    tdt = {"float32": torch.float32, "float64": torch.float64}[dtype]
    W, b = _weights(n, seed)
    lin = torch.nn.Linear(n, n, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(W))
        lin.bias.copy_(torch.tensor(b))
    if lib == "snntorch":
        import snntorch as snn

        # float32: snnTorch's stock atan surrogate; float64: the same formula keeping the dtype (snnTorch's own
        # returns float32 spikes, which a float64 Linear after it refuses), written in torch as snnTorch's is
        if dtype == "float32":
            grad = snn.surrogate.atan(alpha=2.0)
        else:
            spike = _spike_function()

            def grad(z):
                return spike(z)

            grad.refsnn_surrogate = ("atan", 1.0 / math.pi)      # what peers.from_torch reads (checked by verify)
        neuron = snn.Leaky(beta=torch.tensor(DECAY), threshold=torch.tensor(THRESHOLD), init_hidden=True,
                           reset_mechanism="zero", reset_delay=False, spike_grad=grad,
                           graded_spikes_factor=torch.ones(1))
    elif lib == "spikingjelly":
        from spikingjelly.activation_based import layer, neuron as sj_neuron

        lin2 = layer.Linear(n, n, step_mode="m").to(torch.float64)
        lin2.load_state_dict(lin.state_dict())
        lin = lin2
        neuron = sj_neuron.LIFNode(tau=1.0 / (1.0 - DECAY), decay_input=False, v_threshold=THRESHOLD, v_reset=0.0,
                                   step_mode="m")
    elif lib == "norse":
        import norse.torch as norse
        from norse.torch.functional.lif_box import LIFBoxParameters

        dt = 1e-3
        p = LIFBoxParameters(tau_mem_inv=torch.tensor((1.0 - DECAY) / dt), v_leak=torch.tensor(0.0),
                             v_th=torch.tensor(THRESHOLD), v_reset=torch.tensor(0.0))
        return norse.SequentialState(lin, norse.LIFBoxCell(p=p, dt=dt)).to(tdt)
    else:
        return _TorchLayer(lin).to(tdt)
    return torch.nn.Sequential(lin, neuron).to(tdt)


def _spike_function():
    """The spike with snnTorch's default surrogate, atan(alpha=2) = refsnn's atan of width 1/pi, in torch (no
    NumPy round trip: the benchmark times it)."""
    from refsnn.checking import peers

    return peers.spike_function(lambda z: 1.0 / (1 + (math.pi * z) ** 2))


def _torch_layer_class():
    import torch

    spike = _spike_function()

    class TorchLayer(torch.nn.Module):
        """The layer in plain PyTorch: one matrix product over all steps, then the neuron step by step."""

        def __init__(self, lin):
            super().__init__()
            self.lin = lin

        def forward(self, x):
            current = self.lin(x)
            v = torch.zeros_like(current[0])
            out = []
            for c in current.unbind(0):                 # unbind: indexing current[t] would make every step's
                v = DECAY * v + c                       # backward write a full (T, batch, n) zero tensor
                o = spike(v - THRESHOLD)
                v = v * (1 - o)
                out.append(o)
            return torch.stack(out)

    return TorchLayer


def _TorchLayer(lin):
    return _torch_layer_class()(lin)


def _drive(lib, model, x):
    """Output spikes (T, batch, n) of ``model`` on ``x`` (a tensor)."""
    if lib == "torch":
        return model(x)
    from refsnn.checking import peers

    return peers.run(model, x)


def _refsnn_config(n: int, dtype: str = "float64", seed: int = 0):
    """refsnn's layer on its fast path: ``refsnn.stbp`` with one dense layer ``[n, n]`` (the numba kernels, the
    dtype asked for), the neuron of snnTorch's ``Leaky`` above; ``(stbp, cfg, params)``."""
    from refsnn import stbp

    W, b = _weights(n, seed)
    cfg = stbp.Config(T=1, decay=DECAY, v_th=THRESHOLD, reset="zero", reset_timing="immediate", surrogate="atan",
                      width=1.0 / math.pi, loss="mse_mean", dtype=dtype, backend="numba")
    return stbp, cfg, {"W1": W.astype(dtype), "b1": b.astype(dtype)}


def check_equal(lib: str, *, n: int = 64, T: int = 50, batch: int = 4, seed: int = 0) -> dict:
    """``lib``'s layer against refsnn in float64 at a small size: the output spikes, and the gradient of the MSE
    of the output rate to one-hot labels tensor by tensor (its own autograd against refsnn's).  For ``"refsnn"``
    and ``"torch"``: refsnn's fast path (the one timed) against the plain-PyTorch layer.  Returns ``{"passed",
    "max_rel_error", "spikes_equal", "report"}``."""
    import torch

    from refsnn.checking import gradcheck, peers

    check_choice("lib", lib, tuple(LIBRARIES))
    x = _input(T, batch, n, seed)
    y = np.random.default_rng(seed + 2).integers(0, n, batch)
    if lib in ("torch", "refsnn"):
        model = build("torch", n, "float64", seed)
        spikes = model(torch.tensor(x))
        target = torch.nn.functional.one_hot(torch.tensor(y), n).double()
        ((spikes.mean(0) - target) ** 2).mean().backward()
        mine = {"W1": model.lin.weight.grad.numpy(), "b1": model.lin.bias.grad.numpy()}
        stbp, cfg, params = _refsnn_config(n, "float64", seed)
        cfg = stbp.Config(**{**cfg.to_dict(), "T": T})
        _, g = stbp.loss_and_grad(params, x, y, cfg)
        rep = gradcheck.compare(mine, g, tol=1e-12, title="plain PyTorch layer vs refsnn (float64)")
        ours = stbp.simulate(params, x, cfg)[1][-1]
        equal = bool(np.array_equal(spikes.detach().numpy(), ours))
    else:
        model = build(lib, n, "float64", seed)
        rep = peers.verify(model, x, y)
        adapted = peers.from_torch(model)
        ours = adapted.stack().simulate(adapted.params, x)[-1][1]
        equal = bool(np.array_equal(_drive(lib, model, torch.tensor(x)).detach().numpy(), ours))
    return {"passed": bool(rep.passed) and equal, "max_rel_error": float(rep.max_rel_error), "spikes_equal": equal,
            "report": str(rep)}


# ---------------------------------------------------------------------------
# The timed table
# ---------------------------------------------------------------------------

def _competitors(libs, n, T, batch, dtype, mode, compile_):
    from refsnn.harness.benchmarks import Competitor

    out = []
    for lib in libs:
        args = dict(lib=lib, n=n, T=T, batch=batch, dtype=dtype, mode=mode)
        out.append(Competitor(lib, "peers_layer", args))
        if compile_ and lib != "refsnn":
            out.append(Competitor(f"{lib} (compiled)", "peers_layer", dict(args, compile=True)))
    return out


def peers_bench(ns=(512, 1024, 2048), *, T: int = 500, batch: int = 16, dtypes=("float32", "float64"),
                modes=("forward", "train"), libs=None, compile_: bool = True, rounds: int = 3, calls: int = 1,
                threads=None, out=None, log=print) -> dict:
    """The Linear + LIF layer of every library, checked equal to refsnn in float64 first (:func:`check_equal`),
    then timed side by side at each ``n`` in ``ns``, each dtype and mode (:func:`refsnn.harness.benchmarks.paired`).

    A library that is not installed, or whose check fails, is left out and the result says why.  Returns
    ``{"setup", "checks", "results": [{n, dtype, mode, rows, skipped, ...}]}``; with ``out`` (a folder) also
    writes ``peers_bench.json``, ``peers_bench.md`` (:func:`table`) and ``peers_bench.png`` (time against n).
    """
    from refsnn.harness.benchmarks import paired

    ns = [check_int("n", n, minimum=1) for n in ns]
    T, batch = check_int("T", T, minimum=1), check_int("batch", batch, minimum=1)
    libs = list(LIBRARIES) if libs is None else list(libs)
    for lib in libs:
        check_choice("libs", lib, tuple(LIBRARIES))
    for d in dtypes:
        check_choice("dtypes", d, ("float32", "float64"))
    for m in modes:
        check_choice("modes", m, ("forward", "train"))
    if out is not None:                              # before the long run: a folder that cannot take the results
        from refsnn.harness.train import _prepare_run_folder

        _prepare_run_folder(Path(out))
    checks, ok = {}, []
    for lib in libs:
        try:
            r = check_equal(lib)
        except ImportError as exc:
            checks[lib] = {"passed": False, "reason": f"not installed ({exc})"}
            continue
        checks[lib] = {k: r[k] for k in ("passed", "max_rel_error", "spikes_equal")}
        log(f"  {lib}: {'checked equal to refsnn' if r['passed'] else 'NOT equal to refsnn, left out'} "
            f"(float64, n 64, T 50: spikes {'identical' if r['spikes_equal'] else 'differ'}, gradient max relative "
            f"error {r['max_rel_error']:.1e})")
        if r["passed"]:
            ok.append(lib)
    results = []
    for dtype in dtypes:
        for mode in modes:
            for n in ns:
                # no untimed calls after the pause: a call is T (500) steps, whose first few do not weigh
                res = paired(_competitors(ok, n, T, batch, dtype, mode, compile_), rounds=rounds, calls=calls,
                             threads=threads, warm=0.0, reference="refsnn", log=log)
                res.update(n=n, dtype=dtype, mode=mode)
                results.append(res)
                log(f"  n {n:5d} {dtype} {mode:7s}: " + ", ".join(
                    f"{k} {v['median_ms']:.0f} ms" for k, v in res["rows"].items()))
    result = {"setup": {"T": T, "batch": batch, "ns": ns, "decay": DECAY, "threshold": THRESHOLD,
                        "forms": {lib: LIBRARIES[lib] for lib in libs}, "rounds": rounds, "calls": calls},
              "checks": checks, "results": results}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "peers_bench.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
        (out / "peers_bench.md").write_text(table(result) + "\n")
        _figure(result, out / "peers_bench.png")
    return result


def table(result) -> str:
    """A markdown table of a :func:`peers_bench` result: one row per library, one column per (dtype, mode, n),
    medians in ms; and the check each library passed before it was timed."""
    cols = [(r["dtype"], r["mode"], r["n"]) for r in result["results"]]
    by = {(r["dtype"], r["mode"], r["n"]): r for r in result["results"]}
    labels = []
    for r in result["results"]:
        labels += [k for k in r["rows"] if k not in labels]
    head = "| library | checked equal (float64) | " + " | ".join(f"{d} {m} n={n}" for d, m, n in cols) + " |"
    lines = [head, "|" + "---|" * (2 + len(cols))]
    for label in labels:
        lib = label.split(" ")[0]
        c = result["checks"].get(lib, {})
        check = f"yes, {c['max_rel_error']:.0e}" if c.get("passed") else "no"
        cells = []
        for col in cols:
            row = by[col]["rows"].get(label)
            cells.append(f"{row['median_ms']:.0f}" if row else by[col]["skipped"].get(label, "-")[:30])
        lines.append(f"| {label} | {check} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _figure(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import NullFormatter

    combos = sorted({(r["dtype"], r["mode"]) for r in result["results"]})
    cols = min(2, len(combos))
    rows = (len(combos) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(combos):]:
        ax.set_visible(False)
    for ax, (dtype, mode) in zip(axes.ravel(), combos):
        rs = [r for r in result["results"] if r["dtype"] == dtype and r["mode"] == mode]
        labels = []
        for r in rs:
            labels += [k for k in r["rows"] if k not in labels]
        for label in labels:
            pts = [(r["n"], r["rows"][label]["median_ms"]) for r in rs if label in r["rows"]]
            ax.plot(*zip(*pts), marker="o", ls="--" if "compiled" in label else "-", label=label)
        ax.set(xscale="log", yscale="log", xlabel="n (neurons)", ylabel="median time (ms)",
               title=f"{dtype}, {'forward + backward' if mode == 'train' else 'forward'}")
        ax.set_xticks([r["n"] for r in rs], [str(r["n"]) for r in rs])
        ax.xaxis.set_minor_formatter(NullFormatter())
    axes[0][0].legend(fontsize=7)
    s = result["setup"]
    fig.suptitle(f"Linear + LIF, batch {s['batch']}, T {s['T']}, CPU; each library checked equal to refsnn first",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
