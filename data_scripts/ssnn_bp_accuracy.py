"""Accuracy of SSNN-BP against the spike-train length T, next to its ANN twin (the table of the results page, docs/results.md).

Every run is ``refsnn.harness.train.train("ssnn_bp", ...)`` with ``recipes.recipe("ssnn_bp", dataset)`` and the
overrides below: same architecture, initialisation, data order, online SGD and learning rate for
the ANN twin and for V1 / V2 at each T.  Results are appended to a JSON file after every run, so an
interrupted run continues where it stopped (run it again with the same --out).

Examples (long: use nice on a shared machine)::

    nice -n 10 python data_scripts/ssnn_bp_accuracy.py --dataset digits --seeds 0 1 2
    nice -n 10 python data_scripts/ssnn_bp_accuracy.py --dataset fashion-mnist --seeds 0 1 2 \\
        --forwards rate --limit-train 10000 --epochs 3 --milestones 2 --out runs/ssnn_bp_fashion.json
"""
import argparse
import json
import sys
from pathlib import Path

from refsnn.harness import experiments
from refsnn.blocks._jit import limit_threads


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--Ts", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128, 256])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--forwards", nargs="+", default=["rate", "spike"], choices=["rate", "spike"])
    p.add_argument("--epochs", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--milestones", type=int, nargs="*", help="epochs (0-based) at which the lr is multiplied by 0.3")
    p.add_argument("--limit-train", type=int)
    p.add_argument("--limit-test", type=int)
    p.add_argument("--out", help="JSON file for the results (default runs/ssnn_bp_accuracy_DATASET.json)")
    p.add_argument("--one-blas-thread", action="store_true", help="limit BLAS to one thread (shared machines)")
    args = p.parse_args(argv)
    settings = {k: v for k, v in (("epochs", args.epochs), ("lr", args.lr), ("milestones", args.milestones),
                                  ("limit_train", args.limit_train), ("limit_test", args.limit_test)) if v is not None}
    out = Path(args.out or f"runs/ssnn_bp_accuracy_{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results = None
    if out.exists():
        results = json.loads(out.read_text())
        if results.get("dataset") != args.dataset or results.get("settings") != settings:
            print(f"{out}: holds results for {results.get('dataset')} with settings {results.get('settings')}; "
                  f"use another --out", file=sys.stderr)
            return 2
        print(f"resuming from {out} ({len(results['runs'])} runs done)")

    def save(res):
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(res, indent=1))
        tmp.replace(out)

    with limit_threads(1 if args.one_blas_thread else None):
        results = experiments.accuracy_vs_T(args.dataset, Ts=args.Ts, seeds=args.seeds, forwards=args.forwards,
                                        results=results, on_result=save, **settings)
    save(results)
    print(experiments.accuracy_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
