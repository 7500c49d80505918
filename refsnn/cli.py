"""The ``refsnn`` command (also ``python -m refsnn``).

::

    refsnn train ALGO [--dataset digits] [--epochs N] [--seed S] [--out DIR] [--resume]
                      [--lr LR] [--batch-size B] [--hidden 128 64] [--preset NAME] [--set field=value ...]
    refsnn gradcheck ALGO [--seed S] [--verbose]
    refsnn verify ALGO CASE.npz [--preset P | --config cfg.json] [--set field=value ...] [--tol T]
    refsnn golden write DIR | check [DIR]
    refsnn bench ALGO [--quick] [--paired] [--baseline DIR] [--threads N] [--rounds N] [--json]
    refsnn bench peers [--n N ...] [--T T] [--batch B] [--no-compile] [--out DIR]
    refsnn sweep FILE [--out DIR] [--cores N] [--workers W] [--dask ADDRESS | --dask local] [--no-progress]
    refsnn sweep report DIR [--out DIR]
    refsnn info
    refsnn data list | path [NAME] | fetch NAME [--mirror URL ...] | checksums NAME   [--root DIR]

``--set`` changes a field of the algorithm's ``Config`` (``--set T=10
--set surrogate=sigmoid``).  ``gradcheck`` exits with status 1 when any
tensor fails; ``verify`` with 0 (your gradient agrees with refsnn's), 1
(it does not; the diagnosis says where it goes wrong) or 2 (bad input).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
from dataclasses import fields, replace
from pathlib import Path

import refsnn

__all__ = ["main"]


def _parse_value(text: str):
    for conv in (ast.literal_eval,):
        try:
            return conv(text)
        except (ValueError, SyntaxError):
            pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _config_overrides(module, pairs) -> dict:
    names = {f.name for f in fields(module.Config)}
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ValueError(f"--set: expects FIELD=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        key = key.strip()
        if key not in names:
            raise ValueError(f"--set {key}: not a field of {module.__name__}.Config "
                             f"(fields: {', '.join(sorted(names))})")
        out[key] = _parse_value(value.strip())
    return out


def _cmd_train(args) -> int:
    from refsnn.harness.train import TrainingDiverged, train

    module = refsnn.algorithm(args.algo)
    overrides = {}
    for name in ("epochs", "lr", "batch_size", "optimizer", "limit_train", "limit_test"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    if args.hidden is not None:
        overrides["hidden"] = [_parse_value(h) for h in args.hidden]
    out = args.out or f"runs/{args.algo.replace('-', '_')}-{args.dataset}-seed{args.seed}"
    config = _config_overrides(module, args.set) or None
    if args.preset is not None:
        presets = getattr(module, "PRESETS", {})
        if args.preset not in presets:
            raise ValueError(f"--preset: {args.algo} has no preset {args.preset!r} "
                             f"(available: {', '.join(presets) or 'none'})")
        config = replace(presets[args.preset], **(config or {}))
    try:
        metrics = train(module, args.dataset, seed=args.seed, out=out, resume=args.resume, restart=args.restart,
                        config=config, progress=not args.no_progress, **overrides)
    except KeyboardInterrupt:
        return 130
    except TrainingDiverged as exc:
        print(f"refsnn: training diverged: {exc}", file=sys.stderr)
        return 1
    print(f"test accuracy {metrics['test_accuracy']:.4f} (best {metrics['best_test_accuracy']:.4f}); "
          f"metrics and checkpoint in {out}/")
    return 0


def _cmd_gradcheck(args) -> int:
    from refsnn.checking.gradcheck import run_cases
    from refsnn.harness.problems import gradcheck_cases

    module = refsnn.algorithm(args.algo)
    results = run_cases(module, gradcheck_cases(module, args.seed), seed=args.seed)
    failed = 0
    for case, report in results:
        if args.verbose or not report.passed:
            print(report)
            print()
        failed += not report.passed
    width = max(len(case.label) for case, _ in results)
    print(f"{'case':<{width}}  {'check':<22}  {'max rel. error':>14}  result")
    for case, report in results:
        if case.kind == "statistical":  # the error of a mean of noisy estimates; judged by z-scores and T^2
            check = f"mean of {case.n_samples} estimates"
        else:
            check = "finite differences"
        print(f"{case.label:<{width}}  {check:<22}  {report.max_rel_error:>14.2e}  "
              f"{'pass' if report.passed else 'FAIL'}")
    if any(case.kind == "statistical" for case, _ in results):
        print("statistical rows pass when the mean differs from the exact gradient by no more than its sampling "
              "noise allows (Bonferroni z-scores and Hotelling's T^2; -v prints the tables)")
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


def _verify_config(module, args):
    """The Config for ``refsnn verify``: --preset or --config, then --set; None means "the case's own"."""
    base = None
    if args.preset is not None and args.config is not None:
        raise ValueError("--preset, --config: give one of them")
    if args.preset is not None:
        presets = getattr(module, "PRESETS", {})
        if args.preset not in presets:
            raise ValueError(f"--preset: {args.algo} has no preset {args.preset!r} (available: {', '.join(presets)})")
        base = presets[args.preset].to_dict()
    elif args.config is not None:
        try:
            base = json.loads(open(args.config).read())
        except json.JSONDecodeError as exc:
            raise ValueError(f"--config: {args.config} is not JSON ({exc})") from None
        if not isinstance(base, dict):
            raise ValueError(f"--config: {args.config} must hold a JSON object of Config fields")
    overrides = _config_overrides(module, args.set)
    if overrides:
        base = {**(base or {}), **overrides}
    return base


def _cmd_verify(args) -> int:
    from refsnn.checking import verification

    module = refsnn.algorithm(args.algo)
    case = verification.read_case(args.case)
    cfg = _verify_config(module, args)
    if cfg is None and case["config"] is None:
        print(f"note: {args.case} holds no config and none was given: using {module.__name__}.Config() "
              f"defaults (pass --preset or --config)")
    if cfg is not None and case["config"] is not None:
        cfg = {**case["config"], **cfg}
    keys = None
    if args.keys is not None:
        keys = [k.strip() for k in args.keys.split(",") if k.strip()]
        if not keys:
            raise ValueError("--keys: name at least one gradient, e.g. --keys W1,b1")
    verdict = verification.verify(module, case, cfg, tol=args.tol, keys=keys, alpha=args.alpha,
                                  set_fields=tuple(_config_overrides(module, args.set)))
    print(verdict)
    return verdict.exit_code


def _cmd_golden(args) -> int:
    import tempfile

    from refsnn.checking import verification

    if args.action == "write":
        if args.dir is None:
            raise ValueError("DIR: refsnn golden write needs a folder to write into")
        path = verification.golden_write(args.dir)
        print(f"wrote {len(json.loads(path.read_text())['cases'])} golden cases and {path}")
        nir_io = _nir_io()
        if nir_io is not None:
            path = nir_io.golden_write(Path(args.dir) / "nir")
            print(f"wrote {len(json.loads(path.read_text())['cases'])} of them as NIR graphs and {path}")
        return 0
    shipped = Path(args.dir) if args.dir else verification.golden_dir()
    with tempfile.TemporaryDirectory() as tmp:
        verification.golden_write(tmp)
        diffs = verification.golden_compare(shipped, tmp)
        nir_io = _nir_io()
        if nir_io is not None and (shipped / "nir" / "manifest.json").is_file():
            nir_io.golden_write(Path(tmp) / "nir")
            diffs += [f"nir/{d}" for d in nir_io.golden_compare(shipped / "nir", Path(tmp) / "nir")]
    for d in diffs:
        print(d)
    print(f"golden vectors in {shipped}: {'regenerate identically (to 1e-12)' if not diffs else 'DIFFER'}")
    if nir_io is None:
        print("(the NIR graphs among them not checked: pip install 'refsnn[nir]')")
    return 1 if diffs else 0


def _nir_io():
    """refsnn.checking.nir_io, or None when the optional nir package is missing."""
    try:
        from refsnn.checking import nir_io

        nir_io._nir()
    except ImportError:
        return None
    return nir_io


def _cmd_bench(args) -> int:
    from refsnn.harness.benchmarks import bench

    if args.baseline is not None and not os.path.isdir(os.path.join(args.baseline, "refsnn")):
        raise ValueError(f"--baseline: {args.baseline!r} is not a refsnn checkout (no refsnn/ folder in it)")
    from refsnn.blocks._checks import check_int

    for flag, value in (("--threads", args.threads), ("--rounds", args.rounds)):
        if value is not None:
            check_int(flag, value, minimum=1)
    if args.algo.strip().lower() == "peers":
        from refsnn.harness.bench_peers import peers_bench, table

        ns = args.n or ((64, 128) if args.quick else (512, 1024, 2048))
        T = args.T if args.T is not None else (50 if args.quick else 500)
        result = peers_bench(ns, T=T, batch=args.batch, compile_=not args.no_compile, threads=args.threads,
                             rounds=args.rounds or (1 if args.quick else 3), out=args.out)
        print(table(result))
        if args.json:
            print(json.dumps(result, indent=2))
        return 0
    result = bench(args.algo, quick=args.quick, paired_only=args.paired, baseline=args.baseline,
                   threads=args.threads, rounds=args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


def _cmd_sweep(args) -> int:
    from refsnn.harness import sweep

    if args.what[0] == "report":
        if len(args.what) != 2:
            raise ValueError("sweep report: expects one sweep folder (refsnn sweep report DIR)")
        summary = sweep.report(args.what[1], args.out)
        print(sweep.markdown(summary), end="")
        print(f"summary.json, summary.md and summary.png in {args.out or args.what[1]}/")
        return 0
    if len(args.what) != 1:
        raise ValueError(f"sweep: expects one sweep file (or 'report DIR'), got {' '.join(args.what)}")
    result = sweep.run(args.what[0], args.out, cores=args.cores, workers=args.workers, dask=args.dask,
                       progress=not args.no_progress)
    for name, why in result["failed"].items():
        print(f"refsnn: sweep point {name} failed: {why}", file=sys.stderr)
    n = len(result["done"]) + len(result["ran"])
    print(f"{n} of {n + len(result['failed'])} points finished; 'refsnn sweep report FOLDER' makes the table")
    return 1 if result["failed"] else 0


def _cmd_info(args) -> int:
    from refsnn.harness.train import versions

    print(f"refsnn {refsnn.__version__}")
    print(f"algorithms available: {', '.join(refsnn.available_algorithms())}")
    for key, value in versions().items():
        print(f"  {key}: {value}")
    return 0


def _cmd_data(args) -> int:
    from refsnn.harness import datasets

    if args.action == "list":
        rows = datasets.describe(root=args.root)
        width = max(len(r["name"]) for r in rows)
        print(f"{'name':<{width}}  classes  where")
        for r in rows:
            print(f"{r['name']:<{width}}  {r['classes']:>7}  {r['where']}")
        print(f"downloads go to {datasets.data_home(args.root)}/NAME  (refsnn data fetch NAME)")
        return 0
    if args.action == "path":
        if args.name is None:
            print(datasets.data_home(args.root))
            return 0
        print("searched, in order:")
        for d in datasets.search_dirs(args.name, args.root):
            print(f"  {d}{'  (exists)' if d.is_dir() else ''}")
        return 0
    if args.name is None:
        raise ValueError(f"name: refsnn data {args.action} needs a dataset name ({', '.join(datasets.NAMES)})")
    if args.action == "fetch":
        try:
            target = datasets.fetch(args.name, root=args.root, mirrors=args.mirror, progress=not args.no_progress,
                                    force=args.force, log=print)
        except datasets.DownloadError as exc:
            print(f"refsnn: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("refsnn: interrupted; a partly downloaded file is kept as FILE.part and the next "
                  "'refsnn data fetch' resumes it", file=sys.stderr)
            return 130
        rows = datasets.checksums(args.name, root=args.root)
        print(f"{args.name}: {'all files verified' if all(r[2] == 'ok' for r in rows) else 'see refsnn data checksums'}"
              f" (downloads go to {target})")
        return 0
    rows = datasets.checksums(args.name, root=args.root)
    for filename, path, status, detail in rows:
        print(f"{status if status == 'ok' else status.upper():>10}  {filename}  {path or '-'}\n            {detail}")
    return 0 if all(r[2] == "ok" for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refsnn", description="Reference implementations of SNN training algorithms.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an algorithm on a dataset")
    t.add_argument("algo", help=f"one of {', '.join(refsnn.ALGORITHMS)}")
    t.add_argument("--dataset", default="digits", help="dataset name (default: the bundled digits)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", help="run directory (default runs/ALGO-DATASET-seedS)")
    t.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    t.add_argument("--restart", action="store_true",
                   help="start over in --out; an existing checkpoint is kept as checkpoint.npz.bad")
    t.add_argument("--lr", type=float)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--optimizer", choices=["adam", "sgd"])
    t.add_argument("--hidden", nargs="+", help="hidden layer sizes, e.g. --hidden 400 or --hidden 400 R400")
    t.add_argument("--limit-train", type=int, help="use only the first N training samples")
    t.add_argument("--limit-test", type=int, help="use only the first N test samples")
    t.add_argument("--preset", help="start from one of the algorithm's Config presets (e.g. stbp: paper, code)")
    t.add_argument("--set", action="append", metavar="FIELD=VALUE", help="change a Config field (repeatable)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)

    g = sub.add_parser("gradcheck", help="check an algorithm's gradient against finite differences")
    g.add_argument("algo")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--verbose", "-v", action="store_true", help="print every per-tensor table")
    g.set_defaults(func=_cmd_gradcheck)

    v = sub.add_parser("verify", help="check another implementation's gradient (a case .npz) against refsnn",
                       description="Compare the gradient in CASE.npz (keys x, y, param/<key>, grad/<key>, optionally "
                                   "loss, spikes/<n>, a, config) with refsnn's; exit 0 agree, 1 disagree, 2 bad "
                                   "input.  The format is described in docs/verify.md.")
    v.add_argument("algo")
    v.add_argument("case", help="the .npz case file")
    v.add_argument("--preset", help="configure refsnn with one of the algorithm's presets")
    v.add_argument("--config", help="a JSON file of Config fields")
    v.add_argument("--set", action="append", metavar="FIELD=VALUE", help="change a Config field (repeatable)")
    v.add_argument("--tol", type=float, default=1e-9, help="largest relative error per tensor (default 1e-9)")
    v.add_argument("--keys", help="check only these gradients (comma-separated, e.g. W1,b1); by default every "
                                  "gradient refsnn computes must be in the case")
    v.add_argument("--alpha", type=float, default=1e-3,
                   help="SSNN-BP: false-alarm probability of the statistical test of the draws (default 1e-3)")
    v.set_defaults(func=_cmd_verify)

    gd = sub.add_parser("golden", help="the golden vectors: write them, or check that they regenerate")
    gd.add_argument("action", choices=["write", "check"])
    gd.add_argument("dir", nargs="?", help="folder (write: required; check: default the shipped set)")
    gd.set_defaults(func=_cmd_golden)

    b = sub.add_parser("bench", help="time an algorithm's training step; 'bench peers': one layer in every library")
    b.add_argument("algo", help="an algorithm, or 'peers' (a Linear + LIF layer in refsnn, PyTorch and the peers)")
    b.add_argument("--quick", action="store_true", help="small sizes, a few repetitions")
    b.add_argument("--json", action="store_true", help="also print the results as JSON")
    b.add_argument("--paired", action="store_true",
                   help="only the side-by-side table (refsnn, PyTorch, the peers, each in its own process)")
    b.add_argument("--baseline", metavar="DIR", help="also time the refsnn of another checkout in the same rounds")
    b.add_argument("--threads", type=int, help="threads per competitor (default: numba's thread count)")
    b.add_argument("--rounds", type=int, help="rounds of the paired table (default 7)")
    b.add_argument("--n", type=int, nargs="+", help="peers: layer sizes (default 512 1024 2048)")
    b.add_argument("--T", type=int, help="peers: time steps (default 500)")
    b.add_argument("--batch", type=int, default=16, help="peers: batch size (default 16)")
    b.add_argument("--no-compile", action="store_true", help="peers: leave out the torch.compile forms")
    b.add_argument("--out", metavar="DIR", help="peers: write peers_bench.json, .md and .png into DIR")
    b.set_defaults(func=_cmd_bench)

    w = sub.add_parser("sweep", help="run a sweep file (a grid of settings x seeds), or 'sweep report DIR'",
                       description="refsnn sweep FILE: one 'refsnn train' run per grid point and seed, each in its "
                                   "own folder; finished points are skipped and interrupted ones resume. "
                                   "refsnn sweep report DIR: mean +- sd per setting (summary.json, .md, .png).")
    w.add_argument("what", nargs="+", metavar="FILE | report DIR")
    w.add_argument("--out", help="the sweep's folder (default sweeps/NAME); for report: where the summary goes")
    w.add_argument("--cores", type=int, help="cores the sweep may use (default: all of this machine's)")
    w.add_argument("--workers", type=int, help="points at once (default: as many as the cores allow); each gets "
                                               "cores / workers threads")
    w.add_argument("--dask", metavar="ADDRESS", help="run the points on a Dask cluster: a scheduler address, or "
                                                     "'local' for a LocalCluster on this machine")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    w.set_defaults(func=_cmd_sweep)

    i = sub.add_parser("info", help="versions and what is installed")
    i.set_defaults(func=_cmd_info)

    d = sub.add_parser("data", help="datasets: list, where they are, fetch, checksums",
                       description="list: every dataset and where it was found; path [NAME]: the download folder, "
                                   "or the folders searched for NAME; fetch NAME: download and verify into the "
                                   "cache; checksums NAME: re-check every file's checksum (exit 1 on any problem; 'verify' is its "
                                   "earlier name)")
    d.add_argument("action", choices=["list", "path", "fetch", "checksums", "verify"])
    d.add_argument("name", nargs="?", help="dataset name (see refsnn data list)")
    d.add_argument("--root", help="folder searched first and downloaded into (default: $REFSNN_DATA or the cache)")
    d.add_argument("--mirror", action="append", metavar="URL", help="base URL to fetch from instead of the "
                                                                    "manifest's (repeatable, tried in order)")
    d.add_argument("--force", action="store_true", help="download even when a verified copy exists")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd_data)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    refsnn.keep_freed_memory()       # reuse freed arrays between steps (refsnn/blocks/_memory.py)
    try:
        return args.func(args)
    except (ValueError, TypeError, OSError) as exc:           # a user's mistake or the machine's state: one line
        message = " ".join(str(exc).split()) if args.command != "data" else str(exc)
        print(f"refsnn: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("refsnn: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
