"""Which difference between today's ST-RSBP recipe and the commit that made the official Fashion-MNIST
log explains what the logged weight regulariser costs us?

With the regulariser on (lambda 10, beta 0.04, L 8, as the log lists) our recipe reaches 78.7 % after
epoch 1, the official log 84.71 %.  The log was written by the repository's first commit (``fe5bf2d``),
which differs from its HEAD and from our recipe in the gradient variants, the reservoir's initial weights,
kappa for zero counts, the d-tables, the regulariser's normaliser of a recurrent layer and the learning
rate list.  This script trains one epoch with one of those changes at a time (``run``) and tabulates the
runs (``table``).

    python data_scripts/st_rsbp_log_gap.py run CHANGE OUT [--epochs 1] [--seed 0] [--dataset D]
                                                         [--limit-train N --limit-test M]
    python data_scripts/st_rsbp_log_gap.py table OUT [OUT ...]

``run`` is exactly ``refsnn train st_rsbp --dataset fashion-mnist --epochs E --out OUT`` with the change's
``--set`` fields (it prints that command); on the side it records what ``metrics.json`` cannot hold, per
epoch: the cost x2 as the official log defines it (counts after the silent target's inserted spikes,
sample weights ignored, regulariser excluded), the mean regulariser value and the RMS weight of every
tensor, into ``OUT/extra.json``.  One epoch is 60 000 online samples: 35-75 min on one core here.

``table`` prints one Markdown row per run: test accuracy per epoch, the log-definition cost x2, the RMS of
the non-zero weights per tensor, and three statistics that the official log can be held against, because
it prints, after every epoch, the weights of neuron 0 from inputs 0, 1, 2 of each layer: after epoch 1
hidden_0's are -0.030 / 0.050 / 0.195 (from pixels 0, 1, 2, non-zero in 13, 124 and 735 of the 60 000
training images) and the reservoir's input weights -0.057 / 0.214 / 0.085.  ``W1[:,2] >= 0.195`` is the
share of our 400 hidden neurons whose weight from pixel 2 is at least as large in magnitude as the log's;
``W2 >= 0.05`` the share of our hidden-to-reservoir weights at least 0.05 in magnitude (the log's three are
all above it).
"""
import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from refsnn import st_rsbp
from refsnn.harness.train import train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from st_rsbp_regulariser_probe import _log_cost  # noqa: E402  (the log's cost x2 of one sample, written once)

#: One change each from today's Fashion-MNIST recipe (``refsnn.harness.recipes.st_rsbp_recipe``); all but
#: ``recipe`` turn the regulariser on as the log lists it.  ``log`` is every change at once
#: (``st_rsbp.PRESETS["log"]``, with the log's learning-rate list from epoch 2 on).
LAM = {"reg_lambda": 10.0}
CHANGES = {
    "recipe": {},
    "lam10": LAM,
    "codegrad": {**LAM, "recurrent_grad": "diagonal", "recurrent_delta": "code", "lateral_grad": "code"},
    "ei": {**LAM, "reservoir_init": "ei"},
    "kappa0": {**LAM, "kappa_zero": 0.0},
    "dtables": {**LAM, "dtable_max_count": 50, "dtable_T": 400, "dtable_T_recurrent": 600, "dtable_lookup": "code"},
    "regnorm": {**LAM, "reg_norm": "layer"},
    "lam1": {"reg_lambda": 1.0},
    "log": "preset",
}


def _rms(params):
    return {k: float(np.sqrt(np.mean(v[v != 0] ** 2))) for k, v in params.items()}


def run(change: str, out: str, epochs: int, seed: int, dataset: str = "fashion-mnist", limit_train=None,
        limit_test=None) -> None:
    from refsnn.harness import datasets, recipes
    if change == "log":
        cfg, settings = recipes.st_rsbp_log_recipe(dataset)
        sets = "--preset log (and the log's learning-rate list)"
    else:
        cfg, settings = recipes.recipe("st_rsbp", dataset)
        cfg = replace(cfg, **CHANGES[change])
        sets = " ".join(f"--set {k}={v}" for k, v in CHANGES[change].items())
    limits = ""
    settings = {**settings, "epochs": epochs}
    if limit_train:
        settings.update(limit_train=limit_train, limit_test=limit_test)
        limits = f" --limit-train {limit_train} --limit-test {limit_test}"
    print(f"# refsnn train st_rsbp --dataset {dataset} --epochs {epochs} --seed {seed} {sets}{limits} "
          f"--out {shlex.quote(out)}", flush=True)
    n_epoch = limit_train or len(datasets.load(dataset)[0])
    per_epoch, cur, seen = [], {}, [0]
    real = st_rsbp.loss_and_grad

    def recording(params, x, y, c, rng=None, *, info=None, sample_weight=None):
        # called by train() once per online sample; records, then returns exactly what it returned
        loss, g = real(params, x, y, c, rng, info=info, sample_weight=sample_weight)
        if seen[0] % n_epoch == 0:
            if seen[0]:
                per_epoch.append({**cur, "rms_w_end": _rms(params)})
            cur.clear()
            cur.update(n=0, cost=0.0, reg=0.0)
        seen[0] += 1
        counts = info["counts"][-1]
        for b in range(counts.shape[0]):
            cur["cost"] += _log_cost(counts[b], int(y[b]), c)[1]
            cur["n"] += 1
        cur["reg"] += st_rsbp.regulariser(params, c)[0] * counts.shape[0]
        return loss, g

    st_rsbp.loss_and_grad = recording
    try:
        m = train("st_rsbp", dataset, seed=seed, out=out, config=cfg, progress=False, **settings)
    finally:
        st_rsbp.loss_and_grad = real
    per_epoch.append({**cur, "rms_w_end": _rms(m["params"])})
    extra = {"command": " ".join(sys.argv), "change": change,
             "epochs": [{"cost_x2_log_definition": e["cost"] / e["n"], "mean_regulariser": e["reg"] / e["n"],
                         "rms_w_end": e["rms_w_end"]} for e in per_epoch],
             "test_accuracy": [h["test_accuracy"] for h in m["history"]],
             "seconds": [h["seconds"] for h in m["history"]]}
    Path(out, "extra.json").write_text(json.dumps(extra, indent=2))
    print(json.dumps(extra, indent=2))


def table(outs) -> None:
    print("| change | test % per epoch | cost x2 (log's definition) | RMS weight per tensor, in layer order | "
          "W1[:,2] >= 0.195 | W2 >= 0.05 | s per epoch |")
    print("|---|---|---|---|---|---|---|")
    for out in outs:
        e = json.loads(Path(out, "extra.json").read_text())
        p = np.load(Path(out, "params.npz"))
        rms = e["epochs"][-1]["rms_w_end"]
        log_shaped = p["W1"].shape[1] == 784 and "Wr2" in p      # 784-400-R400-10, the log's net
        pix2 = f"{np.mean(np.abs(p['W1'][:, 2]) >= 0.195):.3f}" if log_shaped else "-"
        w2 = f"{np.mean(np.abs(p['W2']) >= 0.05):.3f}" if log_shaped else "-"
        seconds = e.get("seconds") or json.loads(Path(out, "metrics.json").read_text())["history"]
        seconds = [s["seconds"] if isinstance(s, dict) else s for s in seconds]
        acc = " / ".join(f"{100 * a:.2f}" for a in e["test_accuracy"])
        cost = " / ".join(f"{x['cost_x2_log_definition']:.1f}" for x in e["epochs"])
        w = " / ".join(f"{rms[k]:.3f}" for k in sorted(rms, key=lambda k: (k[-1], k)))
        secs = " / ".join(f"{s:.0f}" for s in seconds)
        print(f"| {e.get('change', Path(out).name)} | {acc} | {cost} | {w} | {pix2} | {w2} | {secs} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("change", choices=sorted(CHANGES))
    r.add_argument("out")
    r.add_argument("--epochs", type=int, default=1)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--dataset", default="fashion-mnist")
    r.add_argument("--limit-train", type=int)
    r.add_argument("--limit-test", type=int)
    t = sub.add_parser("table")
    t.add_argument("outs", nargs="+")
    a = ap.parse_args()
    if a.cmd == "run":
        run(a.change, a.out, a.epochs, a.seed, a.dataset, a.limit_train, a.limit_test)
    else:
        table(a.outs)


if __name__ == "__main__":
    main()
