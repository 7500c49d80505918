"""The paired benchmark (``refsnn bench ALGO``): competitors in processes of their own, alternating rounds.

These tests check what the harness records, never how fast anything is (timings depend on the machine).
"""
import os
from pathlib import Path

import numpy as np
import pytest
from tolerances import FORMULA_REL

from refsnn.harness import benchmarks
from refsnn.harness.benchmarks import Competitor

ROOT = Path(__file__).resolve().parents[1]
SHAPE = {"sizes": [20, 12, 4], "T": 3, "batch": 5, "dtype": "float64"}


def test_paired_times_every_competitor_in_every_round_and_reports_ratios():
    comps = [Competitor("refsnn", "stbp_refsnn", SHAPE), Competitor("numpy tier", "stbp_refsnn",
                                                                    dict(SHAPE, backend="numpy")),
             Competitor("GEMM floor", "stbp_gemm_floor", SHAPE)]
    res = benchmarks.paired(comps, rounds=3, calls=2, threads=1, pause=0.0, warm=0.01, reference="numpy tier",
                            log=lambda *_: None)
    assert list(res["rows"]) == ["refsnn", "numpy tier", "GEMM floor"] and not res["skipped"]
    for label, row in res["rows"].items():
        assert row["n"] == 3 * 2, label                               # rounds x calls timed calls each
        assert row["warm_calls"] >= 3, label                          # and untimed ones before, every round
        assert 0 < row["min_ms"] <= row["median_ms"], label
    ref = res["rows"]["numpy tier"]["median_ms"]
    assert res["rows"]["numpy tier"]["ratio"] == 1.0
    assert res["rows"]["refsnn"]["ratio"] == pytest.approx(res["rows"]["refsnn"]["median_ms"] / ref, rel=FORMULA_REL)
    # the floor's FLOPs: forward, weight gradient, and the input gradient above the first layer
    T, B = SHAPE["T"], SHAPE["batch"]
    flops = 2 * T * B * (20 * 12 * 2 + 12 * 4 * 3)
    assert res["rows"]["GEMM floor"]["info"]["gflop"] == pytest.approx(flops / 1e9, rel=FORMULA_REL)
    assert res["threads"] == 1 and len(res["load_before"]) == 3
    assert res["others_cpu_share"] is None or 0.0 <= res["others_cpu_share"] <= 1.0


def test_a_competitor_that_cannot_start_is_left_out_with_its_reason():
    comps = [Competitor("refsnn", "stbp_refsnn", SHAPE), Competitor("nothing", "no_such_case", {}),
             Competitor("bad args", "stbp_refsnn", dict(SHAPE, dtype="float16"))]
    lines = []
    res = benchmarks.paired(comps, rounds=1, calls=1, threads=1, pause=0.0, warm=0.0, log=lines.append)
    assert list(res["rows"]) == ["refsnn"] and res["rows"]["refsnn"]["warm_calls"] == 0   # warm 0: none
    assert "no_such_case" in res["skipped"]["nothing"] and "dtype" in res["skipped"]["bad args"]
    assert any("nothing" in line and "left out" in line for line in lines)


def test_baseline_rows_run_another_checkout(tmp_path):
    """``--baseline DIR`` times DIR's refsnn beside this one; here DIR is a copy of this checkout whose
    ``refsnn.__version__`` is changed, and the baseline's worker must have imported the copy."""
    import shutil

    copy = tmp_path / "old"
    shutil.copytree(ROOT / "refsnn", copy / "refsnn", ignore=shutil.ignore_patterns("__pycache__"))
    init = copy / "refsnn" / "__init__.py"
    init.write_text(init.read_text() + "\n__version__ = 'baseline-copy'\n")
    comps = benchmarks._with_baseline([Competitor("refsnn", "stbp_refsnn", SHAPE),
                                       Competitor("GEMM floor", "stbp_gemm_floor", SHAPE)], str(copy))
    assert [c.label for c in comps] == ["refsnn", "refsnn @old", "GEMM floor"]
    res = benchmarks.paired(comps, rounds=1, calls=1, threads=1, pause=0.0, log=lambda *_: None)
    assert res["rows"]["refsnn"]["info"]["refsnn"] != "baseline-copy"
    assert res["rows"]["refsnn @old"]["info"]["refsnn"] == "baseline-copy"


def test_versus_quick_tables_for_every_algorithm():
    lines = []
    for algo, ref in (("stbp", "refsnn"), ("ide", "refsnn broyden"), ("st_rsbp", "refsnn"),
                      ("ssnn_bp", "ANN twin")):
        out = benchmarks.versus(algo, quick=True, threads=1, rounds=1, log=lines.append)
        if algo == "stbp":
            out_stbp = out
        for name, table in out["tables"].items():
            want = "stack (stbp_layers)" if name == "stbp stack pieces" else ref
            assert table["reference"] == want and table["rows"][want]["ratio"] == 1.0, name
            assert all(r["median_ms"] > 0 for r in table["rows"].values()), name
    text = "\n".join(lines)
    assert "GEMM floor" in text and "torch port broyden" in text and "ANN twin" in text
    assert "stack (stbp_layers)" in out_stbp["tables"]["stbp float64"]["rows"]      # the stack's row ran
    assert "stack, readable tier" in out_stbp["tables"]["stbp stack pieces"]["rows"]   # and the new pieces' table
    assert {"stbp conv float64", "stbp conv float32"} <= set(out_stbp["tables"])    # and the conv net's
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    assert "torch eager" in text
    assert "torch eager" in out_stbp["tables"]["stbp stack pieces"]["rows"]
    assert "torch eager" in out_stbp["tables"]["stbp conv float32"]["rows"]


# ---------------------------------------------------------------------------
# The thread-pool policy (refsnn/blocks/_pools.py), read in fresh processes
# ---------------------------------------------------------------------------

_STATUS = "import sys\n{first}\nfrom refsnn import _pools\nimport os\nprint(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))\n" \
          "print(_pools.status())\n"


def _policy_in_fresh_process(first: str, **env) -> list:
    import subprocess
    import sys

    from refsnn.blocks._pools import user_environment

    base = {k: v for k, v in user_environment().items()
            if k not in ("OPENBLAS_THREAD_TIMEOUT", "REFSNN_THREAD_POLICY", "NUMBA_THREADING_LAYER")}
    out = subprocess.run([sys.executable, "-c", _STATUS.format(first=first)], capture_output=True, text=True,
                         env=dict(base, **env), check=True, cwd=str(ROOT))
    return out.stdout.strip().splitlines()


@pytest.mark.parametrize("case", ["refsnn first", "numpy first", "off", "user's value"])
def test_thread_policy_is_what_the_environment_and_import_order_allow(case):
    """refsnn imported first sets OPENBLAS_THREAD_TIMEOUT=4 and keeps numba's default layer; NumPy first
    cannot change OpenBLAS any more, so numba's workqueue layer is used and the status says why;
    REFSNN_THREAD_POLICY=0 sets nothing; a value of the user's own is kept."""
    if case == "refsnn first":
        value, status = _policy_in_fresh_process("import refsnn, numpy")
        assert value == "4" and "OPENBLAS_THREAD_TIMEOUT=4;" in status and "workqueue" not in status
    elif case == "numpy first":
        value, status = _policy_in_fresh_process("import numpy, refsnn")
        assert value == "4" and "not in force" in status and "workqueue" in status
    elif case == "off":
        value, status = _policy_in_fresh_process("import refsnn", REFSNN_THREAD_POLICY="0")
        assert value == "None" and "off" in status
    else:
        value, status = _policy_in_fresh_process("import refsnn", OPENBLAS_THREAD_TIMEOUT="12")
        assert value == "12" and "(yours)" in status


def test_paired_workers_start_from_the_users_environment():
    """What refsnn set in this process is not passed on: a baseline checkout must run as it would alone."""
    from refsnn.blocks import _pools

    env = _pools.user_environment()
    for key in _pools.SET_BY_REFSNN:
        assert key not in env
    assert all(env[k] == v for k, v in os.environ.items() if k not in _pools.SET_BY_REFSNN)
    if "OPENBLAS_THREAD_TIMEOUT" in _pools.SET_BY_REFSNN:          # this test process: set by refsnn
        assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "4" and "OPENBLAS_THREAD_TIMEOUT" not in env


@pytest.mark.parametrize("kw,name", [({"rounds": 0}, "rounds"), ({"calls": 0}, "calls"), ({"threads": 0}, "threads"),
                                     ({"pause": -1.0}, "pause"), ({"warm": -0.1}, "warm"),
                                     ({"rounds": 2.5}, "rounds")])
def test_paired_refuses_bad_settings_naming_them(kw, name):
    with pytest.raises((ValueError, TypeError), match=name):
        benchmarks.paired([Competitor("refsnn", "stbp_refsnn", SHAPE)], **kw)
