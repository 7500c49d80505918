"""Experiments that train many runs and tabulate them: accuracy against a setting, beside a baseline.

Not benchmarks (nothing here is timed for its own sake) and not the algorithms: each function trains through
:func:`refsnn.harness.train.train` with a recipe and collects what the runs reached, resumably.
"""
from __future__ import annotations

import time

import numpy as np

__all__ = ["accuracy_vs_T", "accuracy_table"]


def _label(model: str, T) -> str:
    return "ANN" if model == "ann" else f"{'V1' if model == 'rate' else 'V2'} T={T}"


def accuracy_vs_T(dataset: str = "digits", Ts=(1, 2, 4, 8, 16, 32, 64, 128, 256), seeds=(0, 1, 2),
                  forwards=("rate", "spike"), *, results=None, on_result=None, log=print, progress=False,
                  **settings) -> dict:
    """Train SSNN-BP's ANN twin and SSNN-BP at every ``T`` with identical settings; collect test accuracies.

    Every run goes through :func:`refsnn.harness.train.train` with the ``ssnn_bp`` recipe of ``dataset`` and the
    given ``settings`` overrides (``epochs=``, ``limit_train=``, ...): same architecture, initialisation,
    data order, online SGD and learning rate for the ANN twin (``Config(ann=True)``) and for V1/V2 at each
    ``T``.

    Parameters
    ----------
    results : dict, optional
        A previous return value: runs already in it are skipped (resume).
    on_result : callable, optional
        Called with ``results`` after every finished run (e.g. to save it).

    Returns
    -------
    dict
        ``{"dataset", "settings", "runs": [{"model", "T", "seed", "test_accuracy",
        "best_test_accuracy", "seconds"}, ...]}``; :func:`accuracy_table` formats it.
    """
    from refsnn.harness.train import train

    log = log or (lambda *_: None)
    results = results if results is not None else {"dataset": dataset, "settings": dict(settings), "runs": []}
    done = {(r["model"], r["T"], r["seed"]) for r in results["runs"]}
    jobs = [("ann", None, s) for s in seeds] + [(f, int(T), s) for s in seeds for f in forwards for T in Ts]
    for model, T, seed in sorted(jobs, key=lambda j: (j[2], j[0] != "ann", j[0], j[1] or 0)):
        if (model, T, seed) in done:
            continue
        config = {"ann": True} if model == "ann" else {"T": T, "forward": model}
        t0 = time.perf_counter()
        m = train("ssnn_bp", dataset, seed=seed, config=config, progress=progress, log=None, **settings)
        run = {"model": model, "T": T, "seed": seed, "test_accuracy": m["test_accuracy"],
               "best_test_accuracy": m["best_test_accuracy"], "seconds": time.perf_counter() - t0}
        results["runs"].append(run)
        log(f"{dataset} seed {seed} {_label(model, T):<10} test acc {run['test_accuracy']:.4f} "
            f"({run['seconds']:.0f} s)")
        if on_result is not None:
            on_result(results)
    return results


def accuracy_table(results) -> str:
    """Markdown table of :func:`accuracy_vs_T` results: mean +- sd over seeds, and the gap to the ANN twin."""
    runs = results["runs"]
    ann = {r["seed"]: r["test_accuracy"] for r in runs if r["model"] == "ann"}
    Ts = sorted({r["T"] for r in runs if r["model"] != "ann"})
    models = [m for m in ("rate", "spike") if any(r["model"] == m for r in runs)]

    def stat(vals):
        vals = 100 * np.asarray(vals, dtype=float)
        if vals.size == 0:
            return "-"
        sd = f" ± {vals.std(ddof=1):.2f}" if vals.size > 1 else ""
        return f"{vals.mean():.2f}{sd}"

    head = "| T | " + " | ".join(f"{'V1 (rate)' if m == 'rate' else 'V2 (spike)'} % | gap to ANN (pts)"
                                  for m in models) + " | ANN twin % |"
    lines = [head, "|" + "---|" * (2 + 2 * len(models))]
    for T in Ts:
        cells = []
        for m in models:
            rs = [r for r in runs if r["model"] == m and r["T"] == T]
            cells.append(stat([r["test_accuracy"] for r in rs]))
            gaps = [r["test_accuracy"] - ann[r["seed"]] for r in rs if r["seed"] in ann]
            cells.append(stat(gaps).replace("-", "−") if gaps else "-")
        lines.append(f"| {T} | " + " | ".join(cells) + f" | {stat(list(ann.values()))} |")
    n_seeds = len({r["seed"] for r in runs})
    lines.append(f"\n{results['dataset']}, {n_seeds} seed(s), settings {results.get('settings', {})}; "
                 f"gap = SSNN-BP minus the ANN twin of the same seed, in points.")
    return "\n".join(lines)
