"""Sweeps: a grid of settings times a list of seeds, one ``refsnn train`` run per point, and the table of
mean ± sd that the runs give.

A sweep file (TOML, or YAML when PyYAML is installed) names an algorithm, a dataset, the seeds and the
grid; everything else is the recipe's (``refsnn train``'s defaults)::

    # Accuracy against the number of time steps: STBP on the bundled digits
    name = "stbp-digits-T"
    algorithm = "stbp"
    dataset = "digits"
    seeds = [0, 1, 2, 3, 4]
    preset = "code"            # optional: one of the algorithm's PRESETS instead of the recipe's Config

    [config]                   # optional: Config fields for every point
    surrogate = "rect"

    [settings]                 # optional: training settings for every point (refsnn.harness.train.Settings)
    epochs = 20

    [grid]                     # optional: each name takes every value; every combination x every seed is a run
    T = [2, 4, 8, 16]

A grid name is a field of the algorithm's ``Config`` or of the training ``Settings`` (``lr``, ``hidden``,
``batch_size``, ...); ``config.NAME`` / ``settings.NAME`` say which when a name is both.

:func:`run` gives each point its own folder (``OUT/T=8,seed=0/``) holding what ``refsnn train`` writes
there (``metrics.json``, ``checkpoint.npz``, ``params.npz``) plus ``point.json`` (the point's settings) and
``log.txt``.  A point whose ``metrics.json`` says it is complete is skipped; one with a checkpoint resumes
from it; so a sweep that was stopped (Ctrl-C, the end of a session, a worker that died) continues where it
was when the same command runs again.  Nothing a finished point wrote is touched again.

Engines: the points run in worker processes of joblib's loky executor (local, the default), or as tasks
on a Dask cluster (``dask=ADDRESS`` of a running scheduler, e.g. one that dask-jobqueue started on Slurm,
or ``dask="local"`` for a ``LocalCluster`` on this machine).  Each point runs with ``threads`` BLAS and
numba threads (:func:`refsnn.blocks._jit.limit_threads`), chosen so that workers x threads = the cores
given; refsnn's results do not depend on the thread count, so a point gives the same numbers, bit for bit,
whichever engine and however many threads ran it (``tests/test_sweep.py`` checks both engines).

:func:`report` reads a sweep folder back: per setting, the final test accuracy's mean ± sd over seeds, n,
min and max, written as ``summary.json`` (small, meant to be committed), ``summary.md`` and a figure.  The
documentation's results page renders its sweep tables from committed ``summary.json`` files
(:func:`markdown`), so no number there is typed by hand.
"""
from __future__ import annotations

import itertools
import json
import math
import os
import re
import time
import traceback
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import refsnn

__all__ = ["Sweep", "Point", "read", "parse", "run", "report", "markdown", "results_page", "figure", "SweepError",
           "DEFAULT_ROOT"]

#: Where ``refsnn sweep FILE`` puts a sweep without ``--out``: ``sweeps/NAME``.
DEFAULT_ROOT = Path("sweeps")
_KEYS = ("name", "algorithm", "dataset", "seeds", "preset", "config", "settings", "grid", "epochs")
_POINT = "point.json"


class SweepError(ValueError):
    """A sweep file or folder that cannot be used (the message names the field or the file)."""


# --------------------------------------------------------------------------------------------
# The sweep file
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Point:
    """One run of a sweep: the grid's values at this point, the seed, and the Config and Settings changes it
    trains with (the sweep's base ones and the point's own)."""

    name: str            # its folder
    values: dict         # grid name -> value (without the seed)
    seed: int
    config: dict         # Config fields to change in the recipe's (or the preset's)
    settings: dict       # Settings fields (epochs included)


@dataclass
class Sweep:
    """A parsed sweep file (:func:`read`)."""

    name: str
    algorithm: str
    dataset: str
    seeds: list
    preset: str | None = None
    config: dict = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    description: str = ""   # the file's leading comment lines: what the sweep is for (the results page shows it)
    source: str = ""     # the file it came from

    def points(self) -> list:
        """Every (grid combination, seed) as a :class:`Point`, grid-major, in the file's order."""
        names = list(self.grid)
        out = []
        for combo in itertools.product(*(self.grid[n] for n in names)):
            values = dict(zip(names, combo))
            for seed in self.seeds:
                config, settings = dict(self.config), dict(self.settings)
                for n, v in values.items():
                    where, key = _split(n)
                    (config if where == "config" else settings)[key] = v
                label = ",".join([f"{_split(n)[1]}={_label(v)}" for n, v in values.items()] + [f"seed={seed}"])
                out.append(Point(name=_safe(label), values=values, seed=seed, config=config, settings=settings))
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("source")
        return d


def _split(name: str) -> tuple:
    return tuple(name.split(".", 1))


def _label(v) -> str:
    if isinstance(v, (list, tuple)):
        return "-".join(_label(x) for x in v)
    if isinstance(v, float) and v == int(v) and abs(v) < 1e15:
        return repr(v)
    return str(v)


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", label)


def read(path) -> Sweep:
    """Read and check a sweep file (``.toml``, or ``.yaml`` / ``.yml`` with PyYAML installed).

    Every problem raises :class:`SweepError` (or ``OSError`` for a file that cannot be read) naming the
    file and the field: an unknown algorithm, dataset or setting, an empty grid entry or seed list, a value
    the algorithm refuses (each point's Config and Settings are built here, before anything runs)."""
    path = Path(path)
    text = path.read_text()            # OSError (missing, unreadable) says which file
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SweepError(f"{path}: YAML sweep files need PyYAML (pip install pyyaml), or write it as .toml") \
                from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SweepError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from None
    elif path.suffix == ".toml":
        import tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SweepError(f"{path}: not valid TOML ({exc})") from None
    else:
        raise SweepError(f"{path}: a sweep file ends in .toml (or .yaml, .yml), got {path.suffix or 'no suffix'!r}")
    lead = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lead.append(line[1:].strip())
    return replace(parse(data, source=str(path)), description=" ".join(x for x in lead if x))


def parse(data, source: str = "sweep") -> Sweep:
    """A :class:`Sweep` from the dict a sweep file holds (see the module docstring), checked."""
    from refsnn.harness import datasets, recipes
    from refsnn.harness.train import Settings

    def fail(what):
        raise SweepError(f"{source}: {what}")

    if not isinstance(data, dict):
        fail("expected a table of keys (name, algorithm, dataset, seeds, ...)")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        fail(f"unknown key {unknown[0]!r} (a sweep file has: {', '.join(_KEYS)})")
    for key in ("algorithm", "dataset", "seeds"):
        if key not in data:
            fail(f"{key}: missing")
    algo = data["algorithm"]
    if not isinstance(algo, str) or algo.replace("-", "_") not in refsnn.ALGORITHMS:
        fail(f"algorithm: no algorithm {algo!r} (one of {', '.join(refsnn.ALGORITHMS)})")
    algo = algo.replace("-", "_")
    module = refsnn.algorithm(algo)
    dataset = data["dataset"]
    if dataset not in datasets.NAMES:
        fail(f"dataset: no dataset {dataset!r} (one of {', '.join(datasets.NAMES)})")
    seeds = data["seeds"]
    if not isinstance(seeds, list) or not seeds:
        fail(f"seeds: expected a non-empty list of integers, got {seeds!r}")
    if any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds) or len(set(seeds)) < len(seeds):
        fail(f"seeds: expected distinct integers >= 0, got {seeds!r}")
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str) or not name or _safe(name) != name:
        fail(f"name: expected a folder-friendly name (letters, digits, . _ = , + -), got {name!r}")
    preset = data.get("preset")
    presets = getattr(module, "PRESETS", {})
    if preset is not None and preset not in presets:
        fail(f"preset: {algo} has no preset {preset!r} (available: {', '.join(presets) or 'none'})")

    config_names = {f.name for f in fields(module.Config)}
    settings_names = {f.name for f in fields(Settings)}
    tables = {}
    for key, names in (("config", config_names), ("settings", settings_names)):
        table = data.get(key, {})
        if not isinstance(table, dict):
            fail(f"{key}: expected a table of fields, got {table!r}")
        for k in table:
            if k not in names:
                fail(f"{key}.{k}: not a field of {'the ' + algo + ' Config' if key == 'config' else 'the Settings'} "
                     f"(fields: {', '.join(sorted(names))})")
        tables[key] = dict(table)
    if "epochs" in data:
        if "epochs" in tables["settings"]:
            fail("epochs: given twice (top level and settings.epochs)")
        tables["settings"]["epochs"] = data["epochs"]

    grid_in = data.get("grid", {})
    if not isinstance(grid_in, dict):
        fail(f"grid: expected a table of lists, got {grid_in!r}")
    grid = {}
    for k, values in grid_in.items():
        where, _, key = k.rpartition(".")
        if where not in ("", "config", "settings"):
            fail(f"grid.{k}: expected NAME, config.NAME or settings.NAME")
        if not where:
            hits = [w for w, names in (("config", config_names), ("settings", settings_names)) if key in names]
            if not hits:
                fail(f"grid.{k}: not a setting of {algo} (Config fields: {', '.join(sorted(config_names))}; "
                     f"Settings fields: {', '.join(sorted(settings_names))})")
            if len(hits) == 2:
                fail(f"grid.{k}: both a Config and a Settings field; write config.{k} or settings.{k}")
            where = hits[0]
        elif key not in (config_names if where == "config" else settings_names):
            fail(f"grid.{k}: not a field of the {where}")
        if key == "seed" or k == "seed":
            fail("grid.seed: the seeds are the top-level 'seeds' list")
        if not isinstance(values, list):
            fail(f"grid.{k}: expected a list of values, got {values!r}")
        if not values:
            fail(f"grid.{k}: an empty list gives no runs")
        grid[f"{where}.{key}"] = values
    sweep = Sweep(name=name, algorithm=algo, dataset=dataset, seeds=list(seeds), preset=preset,
                  config=tables["config"], settings=tables["settings"], grid=grid, source=source)
    points = sweep.points()
    if len({p.name for p in points}) < len(points):
        fail("grid: two points get the same folder name; make the values distinct")
    for p in points:                                   # every point's Config and Settings, built now
        try:
            _config_and_settings(sweep, p, recipes, Settings)
        except (ValueError, TypeError) as exc:
            fail(f"point {p.name}: {' '.join(str(exc).split())}")
    return sweep


def _config_and_settings(sweep, point, recipes, Settings):
    cfg, base = recipes.recipe(sweep.algorithm, sweep.dataset)
    if sweep.preset is not None:
        cfg = refsnn.algorithm(sweep.algorithm).PRESETS[sweep.preset]
    cfg = replace(cfg, **point.config)
    settings = Settings(**{**base, **point.settings})
    return cfg, settings


# --------------------------------------------------------------------------------------------
# Running: one point (in a worker process), then the engines
# --------------------------------------------------------------------------------------------

def _point_state(folder: Path, epochs: int) -> str:
    """``"done"`` (metrics.json complete), ``"resume"`` (a checkpoint to continue) or ``"new"``."""
    metrics = folder / "metrics.json"
    if metrics.exists():
        try:
            m = json.loads(metrics.read_text())
            if m.get("status") == "complete" and m.get("epochs_done", 0) >= epochs:
                return "done"
        except (OSError, ValueError):
            pass
    return "resume" if (folder / "checkpoint.npz").exists() else "new"


def run_point(job: dict) -> dict:
    """Train one point (``job`` from :func:`_jobs`), in whatever process runs it; returns a short summary
    (``error`` set when the run raised; the traceback is in the point's ``log.txt``).  Module-level so that
    every engine can send it to a worker."""
    from refsnn.blocks._jit import limit_threads
    from refsnn.harness import recipes
    from refsnn.harness.train import Settings, train

    refsnn.keep_freed_memory()
    folder = Path(job["folder"])
    sweep = Sweep(**job["sweep"])
    point = Point(**job["point"])
    t0 = time.perf_counter()
    with open(folder / "log.txt", "a") as logf:
        def log(line):
            logf.write(line + "\n")
            logf.flush()

        try:
            cfg, settings = _config_and_settings(sweep, point, recipes, Settings)
            state = _point_state(folder, settings.epochs)
            if state == "done":
                m = json.loads((folder / "metrics.json").read_text())
            else:
                with limit_threads(job["threads"]):
                    m = train(sweep.algorithm, sweep.dataset, seed=point.seed, out=folder, resume=state == "resume",
                              config=cfg, progress=False, log=log, **asdict(settings))
        except Exception as exc:                       # reported by the parent, one line; details in log.txt
            log(traceback.format_exc())
            return {"name": point.name, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
    return {"name": point.name, "test_accuracy": m["test_accuracy"], "epochs_done": m["epochs_done"],
            "seconds": time.perf_counter() - t0}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:          # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _check_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".refsnn-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"out: cannot write into {out} ({exc.strerror or exc})") from None


def _jobs(sweep: Sweep, out: Path, threads: int) -> tuple:
    """The points still to run as jobs for :func:`run_point`, and the names of those already done."""
    from refsnn.harness import recipes
    from refsnn.harness.train import Settings

    todo, done = [], []
    for p in sweep.points():
        folder = out / p.name
        _, settings = _config_and_settings(sweep, p, recipes, Settings)
        if _point_state(folder, settings.epochs) == "done":
            done.append(p.name)
            continue
        folder.mkdir(exist_ok=True)
        info = {"sweep": sweep.name, "algorithm": sweep.algorithm, "dataset": sweep.dataset,
                "preset": sweep.preset, "values": p.values, "seed": p.seed, "config": p.config,
                "settings": p.settings}
        (folder / _POINT).write_text(json.dumps(info, indent=2) + "\n")
        todo.append({"folder": str(folder), "sweep": {**sweep.to_dict(), "source": sweep.source},
                     "point": asdict(p), "threads": threads})
    return todo, done


def _same_sweep(out: Path, sweep: Sweep) -> None:
    """Refuse a folder that holds another sweep (other algorithm, dataset or base settings): its points
    would not resume.  More seeds, grid values or epochs are fine: the finished points are kept."""
    record = out / "sweep.json"
    mine = sweep.to_dict()
    if record.exists():
        try:
            theirs = json.loads(record.read_text())
        except ValueError:
            theirs = None
        if isinstance(theirs, dict):
            for key in ("algorithm", "dataset", "preset", "config"):
                if theirs.get(key) != mine[key]:
                    raise SweepError(f"out: {out} holds another sweep ({key} {theirs.get(key)!r}, this file "
                                     f"{mine[key]!r}); give another --out")
            a = {k: v for k, v in (theirs.get("settings") or {}).items() if k != "epochs"}
            b = {k: v for k, v in mine["settings"].items() if k != "epochs"}
            if a != b:
                raise SweepError(f"out: {out} holds another sweep (settings {a}, this file {b}); give another --out")
    record.write_text(json.dumps({**mine, "file": sweep.source}, indent=2) + "\n")


def _local_engine(jobs, workers, runner):
    """Yield ``(job, result)`` as the points finish, on joblib's loky process executor."""
    from joblib.externals.loky import get_reusable_executor

    executor = get_reusable_executor(max_workers=workers, timeout=60)
    futures = {executor.submit(runner, job): job for job in jobs}
    from concurrent.futures import as_completed

    for fut in as_completed(futures):
        yield futures[fut], fut.result()           # a dead worker raises here (TerminatedWorkerError)


def _dask_engine(jobs, workers, address, runner):
    """Yield ``(job, result)`` as the points finish, on a Dask cluster (``address``) or a LocalCluster."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise SweepError("--dask: needs Dask's distributed scheduler (pip install 'refsnn[dask]')") from None
    cluster = None
    if address == "local":
        environ = dict(os.environ)        # distributed's nanny sets MALLOC_TRIM_THRESHOLD_ here and leaves it
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               host="127.0.0.1")
        os.environ.clear()
        os.environ.update(environ)
        address = cluster.scheduler_address
    try:
        try:
            client = Client(address, timeout="10s")
        except OSError as exc:
            raise OSError(f"--dask: no Dask scheduler at {address} ({' '.join(str(exc).split())})") from None
        with client:
            futures = {client.submit(runner, job, pure=False, key=f"refsnn-{Path(job['folder']).name}-{i}"): job
                       for i, job in enumerate(jobs)}
            for fut in as_completed(list(futures)):
                yield futures[fut], fut.result()   # a worker that died twice raises KilledWorker here
    finally:
        if cluster is not None:
            cluster.close()


def run(sweep, out=None, *, cores=None, workers=None, dask=None, progress=True, log=print, runner=run_point) -> dict:
    """Run every point of ``sweep`` (a :class:`Sweep` or a sweep file's path) that is not finished.

    ``out``: the sweep's folder (default ``sweeps/NAME``).  ``cores``: how many cores the sweep may use
    (default: this process's); ``workers``: points at once (default: as many as cores and points allow);
    each point gets ``cores // workers`` threads.  ``dask``: None (local processes), ``"local"`` (a Dask
    LocalCluster) or a scheduler address.  Returns ``{"done": [...], "ran": [...], "failed": {name: why}}``.
    A worker process that dies stops the sweep with an ``OSError`` saying so; every finished point stays
    on disk and the next run resumes the rest.  ``runner``: the function that trains one point
    (:func:`run_point`; a test gives one whose worker dies)."""
    from refsnn.harness.train import _progress_bar

    if not isinstance(sweep, Sweep):
        sweep = read(sweep)
    out = Path(out) if out is not None else DEFAULT_ROOT / sweep.name
    cores = _cores() if cores is None else cores
    if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1:
        raise ValueError(f"cores: expected an integer >= 1, got {cores!r}")
    _check_folder(out)
    _same_sweep(out, sweep)
    n_points = len(sweep.points())
    if workers is None:
        workers = max(1, min(cores, n_points))
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: expected an integer >= 1, got {workers!r}")
    threads = max(1, cores // workers)
    jobs, done = _jobs(sweep, out, threads)
    log = log or (lambda *_: None)
    log(f"sweep {sweep.name}: {n_points} points ({len(done)} finished before), {len(jobs)} to run on "
        f"{'dask ' + dask if dask else 'local processes'}: {workers} worker(s) x {threads} thread(s); in {out}/")
    result = {"done": done, "ran": [], "failed": {}}
    if not jobs:
        return result
    tqdm = _progress_bar() if progress else None
    bar = tqdm(total=n_points, initial=len(done), desc=sweep.name, unit="run") if tqdm else None
    engine = _dask_engine(jobs, workers, dask, runner) if dask else _local_engine(jobs, workers, runner)
    try:
        for job, res in engine:
            name = Path(job["folder"]).name
            if "error" in res:
                result["failed"][name] = res["error"]
                log(f"  {name}: FAILED: {res['error']} (details in {job['folder']}/log.txt)")
            else:
                result["ran"].append(name)
                log(f"  {name}: test accuracy {res['test_accuracy']:.4f} after {res['epochs_done']} epochs "
                    f"({res['seconds']:.0f} s)")
            if bar is not None:
                bar.update(1)
    except (KeyboardInterrupt, SweepError):
        raise
    except Exception as exc:                         # the engine lost a worker (loky, dask): say so in one line
        finished = len(done) + len(result["ran"])
        raise OSError(f"sweep {sweep.name}: a worker stopped ({type(exc).__name__}: "
                      f"{' '.join(str(exc).split())[:200]}); {finished} finished point(s) are kept in {out}/; "
                      f"run the same command again to continue") from None
    finally:
        if bar is not None:
            bar.close()
    return result


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def _stats(xs: list) -> dict:
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None   # the sample sd
    return {"mean": mean, "sd": sd, "min": min(xs), "max": max(xs), "values": xs}


def _collect(directory: Path) -> tuple:
    record = directory / "sweep.json"
    if not record.exists():
        raise SweepError(f"{directory}: not a sweep folder (no sweep.json; run 'refsnn sweep FILE' first)")
    try:
        sweep = json.loads(record.read_text())
    except ValueError as exc:
        raise SweepError(f"{record}: not valid JSON ({exc})") from None
    rows, incomplete = [], []
    for folder in sorted(p for p in directory.iterdir() if (p / _POINT).exists()):
        try:
            point = json.loads((folder / _POINT).read_text())
            metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").exists() else None
        except ValueError as exc:
            raise SweepError(f"{folder}: a file is not valid JSON ({exc})") from None
        if metrics is None or metrics.get("status") != "complete":
            incomplete.append({"name": folder.name, "epochs_done": (metrics or {}).get("epochs_done", 0)})
            continue
        epochs = metrics["epochs_done"]
        rows.append({"name": folder.name, "values": point["values"], "seed": point["seed"],
                     "test_accuracy": metrics["test_accuracy"], "best_test_accuracy": metrics["best_test_accuracy"],
                     "epochs": epochs, "n_train": metrics["n_train"], "n_test": metrics["n_test"],
                     "seconds_per_epoch": sum(h["seconds"] for h in metrics["history"]) / max(1, len(metrics["history"])),
                     "versions": metrics.get("versions", {})})
    return sweep, rows, incomplete


def report(directory, out=None, *, command: str | None = None) -> dict:
    """Summarise a sweep folder: per grid setting, the final (and best) test accuracy's mean, sample sd,
    n, min and max over the seeds that finished, and the seconds per epoch.  Writes ``summary.json``,
    ``summary.md`` and ``summary.png`` into ``out`` (default: the sweep folder) and returns the summary."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SweepError(f"{directory}: no such sweep folder")
    sweep, rows, incomplete = _collect(directory)
    if not rows:
        raise SweepError(f"{directory}: no finished run yet ({len(incomplete)} incomplete)")
    keys = list(sweep.get("grid", {}))
    groups = {}
    for r in rows:
        groups.setdefault(json.dumps([r["values"].get(k) for k in keys]), []).append(r)
    summary_groups = []
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["seed"])
        summary_groups.append({"values": dict(zip([k.split(".", 1)[1] for k in keys], json.loads(key))),
                               "n": len(rs), "seeds": [r["seed"] for r in rs], "epochs": sorted({r["epochs"] for r in rs}),
                               "test_accuracy": _stats([r["test_accuracy"] for r in rs]),
                               "best_test_accuracy": _stats([r["best_test_accuracy"] for r in rs]),
                               "seconds_per_epoch": sum(r["seconds_per_epoch"] for r in rs) / len(rs)})
    order = {json.dumps(list(combo)): i for i, combo in
             enumerate(itertools.product(*(sweep["grid"][k] for k in keys)))}
    summary_groups.sort(key=lambda g: order.get(json.dumps(list(g["values"].values())), len(order)))
    v = rows[0]["versions"]
    summary = {"sweep": sweep["name"], "description": sweep.get("description", ""),
               "algorithm": sweep["algorithm"], "dataset": sweep["dataset"],
               "preset": sweep.get("preset"), "config": sweep.get("config", {}), "settings": sweep.get("settings", {}),
               "grid": [k.split(".", 1)[1] for k in keys], "seeds": sweep["seeds"],
               "n_train": rows[0]["n_train"], "n_test": rows[0]["n_test"],
               "command": command or f"refsnn sweep {sweep.get('file') or sweep['name'] + '.toml'}",
               "groups": summary_groups,
               "incomplete": incomplete,
               "versions": {k: v[k] for k in ("refsnn", "numpy", "numba", "python") if k in v}}
    out = Path(out) if out is not None else directory
    _check_folder(out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(summary))
    figure(summary, out / "summary.png")
    return summary


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def _seconds(x) -> str:
    return f"{x:.1f}" if x >= 1 else f"{x:.2f}"


def markdown(summary: dict) -> str:
    """The table of a :func:`report` summary as Markdown (the results page renders committed summaries
    with this)."""
    keys = summary["grid"]
    head = [*keys, "n", "final test accuracy (%), mean ± sd", "min – max", "best during training (%)", "s / epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for g in summary["groups"]:
        a, b = g["test_accuracy"], g["best_test_accuracy"]
        sd = "" if a["sd"] is None else f" ± {_pct(a['sd'])}"
        bsd = "" if b["sd"] is None else f" ± {_pct(b['sd'])}"
        lines.append("| " + " | ".join([*(str(g["values"][k]) for k in keys), str(g["n"]), f"{_pct(a['mean'])}{sd}",
                                        f"{_pct(a['min'])} – {_pct(a['max'])}", f"{_pct(b['mean'])}{bsd}",
                                        _seconds(g["seconds_per_epoch"])]) + " |")
    epochs = sorted({e for g in summary["groups"] for e in g["epochs"]})
    note = (f"\n{summary['algorithm']} on {summary['dataset']} ({summary['n_train']} training, {summary['n_test']} "
            f"test samples), {', '.join(map(str, epochs))} epoch(s), seeds {summary['seeds']}; `{summary['command']}`"
            f" then `refsnn sweep report`.")
    if summary["incomplete"]:
        note += f" Not finished (left out): {', '.join(i['name'] for i in summary['incomplete'])}."
    return "\n".join(lines) + "\n" + note + "\n"


def results_page(folder) -> str:
    """Markdown for every committed sweep summary under ``folder`` (``folder/NAME/summary.json`` and its
    ``summary.png``): what the sweep is, its table, its figure.  The documentation's results page includes
    this (``docs/conf.py`` writes it at every build), so its sweep tables are never typed by hand."""
    folder = Path(folder)
    parts = []
    for path in sorted(folder.glob("*/summary.json")):
        summary = json.loads(path.read_text())
        parts.append(f"### {summary['sweep']}\n\n{summary.get('description', '')}\n\n{markdown(summary)}\n"
                     f"![{summary['sweep']}: accuracy per setting]({folder.name}/{path.parent.name}/summary.png)\n")
    return "\n".join(parts) if parts else "(No sweep summaries are committed yet.)\n"


def figure(summary: dict, path) -> None:
    """Accuracy per setting: each seed a dot, the mean with ± sd bars; against the grid value when there is
    one numeric grid entry."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = summary["grid"]
    groups = summary["groups"]
    numeric = len(keys) == 1 and all(isinstance(g["values"][keys[0]], (int, float)) for g in groups)
    xs = [g["values"][keys[0]] for g in groups] if numeric else list(range(len(groups)))
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    logx = numeric and all(x > 0 for x in xs) and max(xs) / min(xs) >= 8
    for x, g in zip(xs, groups):
        ys = [100 * v for v in g["test_accuracy"]["values"]]
        spread = [k - (len(ys) - 1) / 2 for k in range(len(ys))]        # side by side, so equal values show
        if logx:
            dots = [x * 2 ** (0.04 * k) for k in spread]
        else:
            dots = [x + 0.04 * k * ((max(xs) - min(xs)) / max(1, len(xs) - 1) if numeric and len(xs) > 1 else 1)
                    for k in spread]
        ax.plot(dots, ys, "o", color="0.6", ms=4, zorder=1, label="one seed" if x == xs[0] else None)
    means = [100 * g["test_accuracy"]["mean"] for g in groups]
    sds = [100 * (g["test_accuracy"]["sd"] or 0.0) for g in groups]
    ax.errorbar(xs, means, yerr=sds, fmt="-s" if numeric else "s", color="C0", capsize=4, zorder=2,
                label="mean ± sd over seeds")
    if numeric:
        ax.set_xlabel(keys[0])
        if logx:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [str(x) for x in xs])
    else:
        ax.set_xticks(xs, [",".join(f"{k}={g['values'][k]}" for k in keys) or "all" for g in groups],
                      rotation=20 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center")
    ax.set_ylabel("final test accuracy (%)")
    ax.set_title(f"{summary['algorithm']} on {summary['dataset']}: {summary['sweep']}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
