"""refsnn sweep: a grid x seeds of training runs that survives being stopped, gives the same numbers on every
engine, and reports mean ± sd per setting."""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tolerances import FORMULA_REL

from refsnn.harness import sweep as sw

TINY = """
name = "tiny"
algorithm = "stbp"
dataset = "digits"
seeds = [0, 1]
epochs = {epochs}
[settings]
limit_train = 96
limit_test = 48
batch_size = 32
[grid]
T = [2, 3]
"""


def _file(tmp_path, text, name="tiny.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _params(folder):
    with np.load(folder / "params.npz") as z:
        return {k: z[k] for k in z.files}


def _numbers(folder):
    """What must not depend on the engine: every epoch's loss and accuracies, and the parameters."""
    m = json.loads((folder / "metrics.json").read_text())
    hist = [{k: h[k] for k in ("epoch", "lr", "train_loss", "train_accuracy", "test_accuracy")} for h in m["history"]]
    return hist, _params(folder)


def _same(a, b):
    (ha, pa), (hb, pb) = a, b
    assert ha == hb                                    # floats compared exactly: the same operations ran
    assert sorted(pa) == sorted(pb)
    for k in pa:
        assert np.array_equal(pa[k], pb[k]), k


def test_a_sweep_runs_every_point_in_its_folder_and_skips_finished_ones(tmp_path):
    path = _file(tmp_path, TINY.format(epochs=1))
    out = tmp_path / "s"
    res = sw.run(path, out, cores=2, progress=False, log=None)
    names = ["T=2,seed=0", "T=2,seed=1", "T=3,seed=0", "T=3,seed=1"]
    assert sorted(res["ran"]) == names and res["failed"] == {} and res["done"] == []
    for n in names:
        point = json.loads((out / n / "point.json").read_text())
        metrics = json.loads((out / n / "metrics.json").read_text())
        assert metrics["status"] == "complete" and metrics["seed"] == point["seed"]
        assert metrics["config"]["T"] == point["values"]["config.T"]
    stamp = {n: (out / n / "metrics.json").stat().st_mtime_ns for n in names}
    again = sw.run(path, out, cores=2, progress=False, log=None)
    assert sorted(again["done"]) == names and again["ran"] == []
    assert stamp == {n: (out / n / "metrics.json").stat().st_mtime_ns for n in names}   # not touched


def test_an_interrupted_sweep_resumes_to_the_numbers_of_an_uninterrupted_one(tmp_path):
    """Stopped after one of two epochs (the checkpoint of each point holds epoch 1), then run again with
    the full length: each point resumes and ends where a sweep that ran straight through ends, bit for bit.
    A point that never started (its folder missing) starts."""
    straight = tmp_path / "straight"
    sw.run(_file(tmp_path, TINY.format(epochs=2), "a.toml"), straight, cores=2, progress=False, log=None)
    stopped = tmp_path / "stopped"
    sw.run(_file(tmp_path, TINY.format(epochs=1), "b.toml"), stopped, cores=2, progress=False, log=None)
    for n in ("T=2,seed=0", "T=2,seed=1", "T=3,seed=1"):        # as after a stop mid-run: status "running"
        m = json.loads((stopped / n / "metrics.json").read_text())
        m["status"] = "running"
        (stopped / n / "metrics.json").write_text(json.dumps(m))
    import shutil

    shutil.rmtree(stopped / "T=3,seed=0")
    res = sw.run(_file(tmp_path, TINY.format(epochs=2), "c.toml"), stopped, cores=2, progress=False, log=None)
    assert sorted(res["ran"]) == ["T=2,seed=0", "T=2,seed=1", "T=3,seed=0", "T=3,seed=1"]
    assert "resuming" in (stopped / "T=2,seed=0" / "log.txt").read_text()
    assert "resuming" not in (stopped / "T=3,seed=0" / "log.txt").read_text()
    for n in res["ran"]:
        _same(_numbers(straight / n), _numbers(stopped / n))


def test_the_dask_engine_gives_the_local_engines_numbers_bit_for_bit(tmp_path):
    """The same sweep on joblib's loky processes (one point at a time with 2 threads each) and on a Dask
    cluster listening on 127.0.0.1 (two workers, one thread per point): identical losses, accuracies and
    parameters."""
    distributed = pytest.importorskip("distributed")
    path = _file(tmp_path, TINY.format(epochs=1))
    local = tmp_path / "local"
    sw.run(path, local, cores=2, workers=1, progress=False, log=None)
    environ = dict(os.environ)        # distributed's nanny sets MALLOC_TRIM_THRESHOLD_ in this process and leaves it
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                      dashboard_address=None) as cluster:
            assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
            remote = tmp_path / "dask"
            res = sw.run(path, remote, cores=2, dask=cluster.scheduler_address, progress=False, log=None)
    finally:
        os.environ.clear()
        os.environ.update(environ)
    assert len(res["ran"]) == 4
    for n in res["ran"]:
        _same(_numbers(local / n), _numbers(remote / n))
    before = dict(os.environ)
    own = tmp_path / "dask-local"                     # --dask local: the sweep starts its own LocalCluster
    assert len(sw.run(path, own, cores=2, dask="local", progress=False, log=None)["ran"]) == 4
    assert dict(os.environ) == before                 # and leaves this process's environment as it was
    for n in res["ran"]:
        _same(_numbers(local / n), _numbers(own / n))


def _die_on_seed_1(job):
    """A runner whose worker process dies (no exception, no cleanup) on the points of seed 1."""
    if job["point"]["seed"] == 1:
        os._exit(3)
    return sw.run_point(job)


def test_a_worker_that_dies_is_one_line_and_loses_no_finished_point(tmp_path):
    path = _file(tmp_path, TINY.format(epochs=1))
    out = tmp_path / "s"
    with pytest.raises(OSError, match=r"a worker stopped .*finished point\(s\) are kept") as info:
        sw.run(path, out, cores=1, workers=1, progress=False, log=None, runner=_die_on_seed_1)   # one at a time
    assert "\n" not in str(info.value)
    finished = [p.name for p in out.iterdir() if (p / "metrics.json").exists()]
    assert "T=2,seed=0" in finished                                        # ran before the worker died
    before = {n: (out / n / "params.npz").read_bytes() for n in finished}
    res = sw.run(path, out, cores=2, progress=False, log=None)             # the same command again
    assert sorted(res["done"]) == sorted(finished)
    assert len(res["done"]) + len(res["ran"]) == 4
    assert before == {n: (out / n / "params.npz").read_bytes() for n in finished}


def test_a_point_that_raises_is_reported_and_the_others_run(tmp_path):
    """A run that fails (here: its checkpoint is corrupt) is named with the reason; the sweep goes on."""
    path = _file(tmp_path, TINY.format(epochs=1))
    out = tmp_path / "s"
    (out / "T=2,seed=1").mkdir(parents=True)
    (out / "T=2,seed=1" / "checkpoint.npz").write_bytes(b"not a zip file")
    res = sw.run(path, out, cores=2, progress=False, log=None)
    assert list(res["failed"]) == ["T=2,seed=1"] and "checkpoint" in res["failed"]["T=2,seed=1"].lower()
    assert len(res["ran"]) == 3
    assert (out / "T=2,seed=1" / "checkpoint.npz").read_bytes() == b"not a zip file"    # left as it was


def test_report_gives_mean_and_sample_sd_per_setting(tmp_path):
    path = _file(tmp_path, TINY.format(epochs=1).replace("seeds = [0, 1]", "seeds = [0, 1, 2]"))
    out = tmp_path / "s"
    sw.run(path, out, cores=2, progress=False, log=None)
    summary = sw.report(out)
    assert [g["values"] for g in summary["groups"]] == [{"T": 2}, {"T": 3}]
    for g in summary["groups"]:
        accs = [json.loads((out / f"T={g['values']['T']},seed={s}" / "metrics.json").read_text())["test_accuracy"]
                for s in (0, 1, 2)]
        assert g["n"] == 3 and g["seeds"] == [0, 1, 2]
        # a mean and an sd of three numbers, computed in another order by the statistics module: a short
        # formula's round-off, relative to the size of the accuracies (the sd can be 0 when seeds tie)
        scale = FORMULA_REL * max(accs)
        assert g["test_accuracy"]["mean"] == pytest.approx(statistics.mean(accs), rel=0, abs=scale)
        assert g["test_accuracy"]["sd"] == pytest.approx(statistics.stdev(accs), rel=0, abs=scale)
        assert f"{100 * statistics.mean(accs):.2f}" in sw.markdown(summary)
    assert json.loads((out / "summary.json").read_text()) == summary
    assert (out / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "summary.md").read_text() == sw.markdown(summary)
    assert "tiny.toml" in summary["command"]


def test_report_leaves_out_unfinished_runs_and_says_so(tmp_path):
    path = _file(tmp_path, TINY.format(epochs=1))
    out = tmp_path / "s"
    sw.run(path, out, cores=2, progress=False, log=None)
    m = json.loads((out / "T=3,seed=1" / "metrics.json").read_text())
    (out / "T=3,seed=1" / "metrics.json").write_text(json.dumps({**m, "status": "running"}))
    summary = sw.report(out)
    assert [g["n"] for g in summary["groups"]] == [2, 1]
    assert summary["groups"][1]["test_accuracy"]["sd"] is None
    assert [i["name"] for i in summary["incomplete"]] == ["T=3,seed=1"]
    assert "T=3,seed=1" in sw.markdown(summary)


BAD = [
    ("unknown algorithm", 'algorithm = "backprop"', "algorithm"),
    ("unknown dataset", 'dataset = "mnis"', "dataset"),
    ("unknown grid setting", "[grid]\nnope = [1, 2]", "grid.nope"),
    ("unknown config field", "[config]\nnope = 1", "config.nope"),
    ("unknown settings field", "[settings]\nnope = 1", "settings.nope"),
    ("empty grid entry", "[grid]\nT = []", "grid.T"),
    ("grid entry not a list", "[grid]\nT = 4", "grid.T"),
    ("empty seed list", "seeds = []", "seeds"),
    ("repeated seed", "seeds = [1, 1]", "seeds"),
    ("negative seed", "seeds = [-1]", "seeds"),
    ("a value the algorithm refuses", "[grid]\nT = [0, 2]", "T=0"),
    ("a Settings value refused", "[grid]\nlr = [-1.0]", "lr"),
    ("unknown key", 'colour = "red"', "colour"),
    ("unknown preset", 'preset = "nope"', "preset"),
    ("a bad name", 'name = "a/b"', "name"),
    ("the seed in the grid", "[grid]\nseed = [1]", "seed"),
]


def _sweep_text(change):
    """A valid one-point sweep file with ``change`` applied: a top-level ``key = value`` replaces that key,
    anything else (a table) is appended."""
    base = {"name": '"bad"', "algorithm": '"stbp"', "dataset": '"digits"', "seeds": "[0]"}
    extra = ""
    key = change.split("=", 1)[0].strip()
    if not change.startswith("[") and key in base:
        base[key] = change.split("=", 1)[1].strip()
    else:
        extra = change
    return "\n".join(f"{k} = {v}" for k, v in base.items()) + "\n" + extra + "\n"


@pytest.mark.parametrize("label,change,pattern", BAD, ids=[b[0] for b in BAD])
def test_a_bad_sweep_file_is_one_clear_error_naming_the_field(tmp_path, label, change, pattern):
    path = _file(tmp_path, _sweep_text(change), "bad.toml")
    with pytest.raises(sw.SweepError, match=pattern) as info:
        sw.read(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_bad_files_and_folders(tmp_path):
    with pytest.raises(sw.SweepError, match="not valid TOML"):
        sw.read(_file(tmp_path, "name = [", "broken.toml"))
    with pytest.raises(sw.SweepError, match=r"\.toml"):
        sw.read(_file(tmp_path, "{}", "sweep.json"))
    with pytest.raises(OSError):
        sw.read(tmp_path / "missing.toml")
    good = _file(tmp_path, TINY.format(epochs=1))
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(OSError, match="out: cannot write"):
        sw.run(good, a_file / "s", progress=False, log=None)
    other = _file(tmp_path, TINY.format(epochs=1).replace('algorithm = "stbp"', 'algorithm = "ide"'), "other.toml")
    sw.run(good, tmp_path / "s", progress=False, log=None)
    with pytest.raises(sw.SweepError, match="holds another sweep"):
        sw.run(other, tmp_path / "s", progress=False, log=None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(sw.SweepError, match="not a sweep folder"):
        sw.report(tmp_path / "empty")


def _cli(*argv, cwd):
    return subprocess.run([sys.executable, "-m", "refsnn", *argv], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


@pytest.mark.parametrize("argv,pattern", [
    (["sweep", "bad.toml"], "algorithm"),
    (["sweep", "missing.toml"], "missing.toml"),
    (["sweep", "report", "nowhere"], "nowhere"),
    (["sweep", "report"], "report"),
    (["sweep", "a.toml", "b.toml"], "one sweep file"),
    (["sweep", "good.toml", "--dask", "tcp://127.0.0.1:9"], "--dask"),
    (["sweep", "good.toml", "--cores", "0"], "cores"),
])
def test_the_command_says_what_is_wrong_in_one_line(tmp_path, argv, pattern):
    _file(tmp_path, _sweep_text('algorithm = "backprop"'), "bad.toml")
    _file(tmp_path, TINY.format(epochs=1), "good.toml")
    r = _cli(*argv, "--no-progress", cwd=tmp_path) if argv[1] != "report" else _cli(*argv, cwd=tmp_path)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("refsnn: ") and pattern in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_the_command_runs_and_reports(tmp_path):
    _file(tmp_path, TINY.format(epochs=1), "good.toml")
    r = _cli("sweep", "good.toml", "--no-progress", "--cores", "2", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "4 of 4 points finished" in r.stdout
    r = _cli("sweep", "report", "sweeps/tiny", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "| T | n |" in r.stdout and (tmp_path / "sweeps/tiny/summary.json").exists()


def test_committed_sweep_files_parse_and_their_summaries_render(tmp_path):
    """Every sweep file in the repository is valid; every committed summary renders into the results page
    from its JSON, and names the sweep file that made it."""
    root = Path(__file__).parents[1]
    files = sorted((root / "sweeps").glob("*.toml"))
    assert files
    for f in files:
        s = sw.read(f)
        assert s.name == f.stem, f
    summaries = sorted((root / "docs" / "sweeps").glob("*/summary.json"))
    page = sw.results_page(root / "docs" / "sweeps")
    for f in summaries:
        summary = json.loads(f.read_text())
        assert (root / summary["command"].split()[-1]).exists(), f     # the sweep file that made it
        assert (f.parent / "summary.png").exists(), f
        assert sw.markdown(summary) in page
    assert "{include} _sweep_tables.md" in (root / "docs" / "results.md").read_text()


def test_ctrl_c_stops_the_sweep_in_one_line_and_the_same_command_resumes(tmp_path):
    """Ctrl-C in the terminal (SIGINT to the command's process group, workers included) while the first point
    is between epochs: exit status 130 and one line; the point keeps its checkpoint, and running the command
    again resumes it and finishes every point."""
    import signal
    import time

    # 40 epochs per point (about a second each): the sweep is surely still running when the signal comes
    _file(tmp_path, TINY.format(epochs=40).replace("limit_train = 96", "limit_train = 400"), "good.toml")
    # `python -m refsnn sweep ...` with Ctrl-C turned on as in a terminal: a shell's background job (as a CI
    # script may run these tests) starts with SIGINT ignored, and Python keeps an inherited "ignore", so
    # Ctrl-C would never reach the command whatever it does
    terminal = ("import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
                "runpy.run_module('refsnn', run_name='__main__', alter_sys=True)")
    cmd = [sys.executable, "-c", terminal, "sweep", "good.toml", "--no-progress", "--cores", "1"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    log = tmp_path / "sweeps" / "tiny" / "T=2,seed=0" / "log.txt"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.exists() and "epoch   2/40" in log.read_text()):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    lines = [line for line in err.strip().splitlines() if line]
    assert lines == ["refsnn: interrupted"], err
    assert (log.parent / "checkpoint.npz").exists()
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming" in log.read_text()
    assert "4 of 4 points finished" in done.stdout


def test_a_yaml_sweep_file_is_the_same_sweep(tmp_path):
    yaml = pytest.importorskip("yaml")
    toml_sweep = sw.read(_file(tmp_path, TINY.format(epochs=1)))
    data = {"name": "tiny", "algorithm": "stbp", "dataset": "digits", "seeds": [0, 1], "epochs": 1,
            "settings": {"limit_train": 96, "limit_test": 48, "batch_size": 32}, "grid": {"T": [2, 3]}}
    yaml_sweep = sw.read(_file(tmp_path, yaml.safe_dump(data), "tiny.yaml"))
    assert yaml_sweep.points() == toml_sweep.points()
    with pytest.raises(sw.SweepError, match="not valid YAML"):
        sw.read(_file(tmp_path, "name: [", "broken.yml"))
