"""The command line, the plots and the numba shim."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refsnn import stbp
from refsnn.blocks import surrogates
from refsnn.checking import gradcheck
from refsnn.harness import problems
from refsnn.teaching import plots
from refsnn.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_train_stbp_on_digits_reaches_90_percent(tmp_path, capsys):
    """The README's main job: `refsnn train stbp` (the full digits recipe) reaches >= 90 % test accuracy."""
    assert main(["train", "stbp", "--out", str(tmp_path), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.90, metrics["history"][-1]
    assert "test accuracy" in capsys.readouterr().out


def test_cli_train_options_and_resume(tmp_path):
    args = ["train", "stbp", "--epochs", "1", "--limit-train", "100", "--limit-test", "50", "--hidden", "12",
            "--set", "T=4", "--set", "surrogate=gauss", "--lr", "0.01", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["config"]["T"] == 4 and m["config"]["surrogate"] == "gauss" and m["sizes"] == [64, 12, 10]
    assert m["settings"]["lr"] == 0.01
    args[3] = "2"
    assert main(args + ["--resume"]) == 0
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs_done"] == 2


def test_cli_preset_then_set(tmp_path):
    args = ["train", "stbp", "--epochs", "1", "--limit-train", "60", "--limit-test", "30", "--preset", "paper",
            "--set", "T=3", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    cfg = json.loads((tmp_path / "metrics.json").read_text())["config"]
    assert cfg == {**stbp.PRESETS["paper"].to_dict(), "T": 3}
    assert main(args[:-5] + ["--preset", "nosuch", "--no-progress"]) == 2


def test_cli_errors(capsys):
    assert main(["train", "nosuchalgo"]) == 2
    assert "unknown name" in capsys.readouterr().err
    assert main(["train", "stbp", "--set", "nonsense=1"]) == 2          # one line, no SystemExit traceback
    assert "nonsense: not a field" in capsys.readouterr().err
    assert main(["train", "stbp", "--set", "decay=3", "--no-progress"]) == 2
    assert "decay" in capsys.readouterr().err


def test_gradcheck_exit_status_is_one_when_a_tensor_fails(monkeypatch, capsys):
    case = problems.gradcheck_cases("stbp", 0)[0]
    real = stbp.loss_and_grad

    def wrong(*a, **k):
        loss, g = real(*a, **k)
        return loss, {**g, "b1": g["b1"] * 1.01}

    monkeypatch.setitem(problems.CASES, "stbp", lambda seed: [case])
    monkeypatch.setattr(stbp, "loss_and_grad", wrong)
    assert main(["gradcheck", "stbp"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_python_dash_m_refsnn_is_the_cli():
    out = subprocess.run([sys.executable, "-m", "refsnn", "info"], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert "refsnn" in out.stdout and "stbp" in out.stdout


# ---------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------

def test_raster_accepts_1d_2d_and_batched_input():
    import matplotlib.pyplot as plt

    S = np.zeros((6, 2, 3))
    S[1, 0, 2] = S[4, 0, 0] = S[2, 1, 1] = 1
    ax = plots.raster(S)
    pts = ax.collections[0].get_offsets()
    assert sorted(map(tuple, np.asarray(pts))) == [(1.0, 2.0), (4.0, 0.0)]
    assert ax.get_xlabel() == "time step" and ax.get_ylabel() == "neuron"
    ax2 = plots.raster(S, sample=1)
    assert [tuple(p) for p in np.asarray(ax2.collections[0].get_offsets())] == [(2.0, 1.0)]
    assert len(plots.raster(S[:, 0, 0]).collections[0].get_offsets()) == 1
    assert len(plots.raster(S[:, 0]).collections[0].get_offsets()) == 2
    fig, axes = plt.subplots(1, 2)
    assert plots.raster(S[:, 0], ax=axes[1]) is axes[1]
    with pytest.raises(ValueError, match="sample"):
        plots.raster(S, sample=5)
    with pytest.raises(ValueError, match="spikes"):
        plots.raster(np.zeros((2, 2, 2, 2)))
    plt.close("all")


def test_membrane_surrogates_residuals_and_learning_curves():
    import matplotlib.pyplot as plt

    case = problems.gradcheck_cases("stbp", 0)[0]
    u, o = stbp.simulate(case.params, case.x, case.cfg)
    ax = plots.membrane(u[0], v_th=case.cfg.v_th, spikes=o[0], neurons=[0, 1])
    assert ax.get_ylabel().startswith("membrane") and len(ax.get_lines()) >= 3
    ax = plots.surrogate_curves(width=1.0)
    assert len(ax.get_lines()) == len(surrogates.NAMES)
    ax = plots.surrogate_curves(["sigmoid"], width=0.5, primitive=True)
    assert ax.get_ylabel().startswith("P")
    ax = plots.residuals(np.array([1.0, 0.1, 0.01]), label="fixed point")
    assert ax.get_yscale() == "log"
    hist = [{"epoch": 1, "train_accuracy": 0.5, "test_accuracy": 0.4},
            {"epoch": 2, "train_accuracy": 0.7, "test_accuracy": 0.6}]
    ax = plots.learning_curves({"history": hist})
    assert [list(line.get_ydata()) for line in ax.get_lines()] == [[0.5, 0.7], [0.4, 0.6]]
    with pytest.raises(ValueError, match="history"):
        plots.learning_curves([])
    plt.close("all")


# ---------------------------------------------------------------------------
# the numba shim
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("setup,expect", [
    ("import os; os.environ['NUMBA_DISABLE_JIT'] = '1'", "NUMBA_DISABLE_JIT is set"),
    ("import sys; sys.modules['numba'] = None", "not installed"),
])
def test_shim_falls_back_to_plain_python(setup, expect):
    code = (f"{setup}\nfrom refsnn import _jit\n"
            "@_jit.njit\ndef f(x):\n    return x + 1\n"
            "print(_jit.JIT_ENABLED, f(1), f.py_func is f, _jit.jit_status())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
    assert out.startswith("False 2 True") and expect in out


def test_gradcheck_report_lookup():
    rep = gradcheck.compare({"a": np.ones(3)}, {"a": np.ones(3)})
    assert rep["a"].passed and rep.passed
    with pytest.raises(KeyError):
        rep["b"]


def test_keep_freed_memory_applies_on_glibc_and_steps_aside_otherwise(monkeypatch):
    import platform

    import refsnn
    from refsnn.blocks import _memory

    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert refsnn.keep_freed_memory() is on_glibc
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "1048576")              # the user's setting wins
    assert refsnn.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setattr(_memory.sys, "platform", "darwin")
    assert refsnn.keep_freed_memory() is False


def test_cli_tunes_malloc_before_running_a_command(monkeypatch, capsys):
    import refsnn

    calls = []
    monkeypatch.setattr(refsnn, "keep_freed_memory", lambda: calls.append(1) or True)
    assert main(["info"]) == 0
    assert calls == [1]


def test_large_arrays_reuse_freed_blocks_only_after_the_last_view_is_gone(monkeypatch):
    """_memory.empty: a large array takes the block of one no longer used (same address, any dtype of the same
    size in bytes), never one a view still reads (its values stay); small arrays are ordinary; the cache keeps
    at most CACHE_LIMIT bytes, the oldest blocks leaving first, and no block larger than the limit."""
    from refsnn.blocks import _memory

    monkeypatch.setattr(_memory, "LARGE", 4096)
    monkeypatch.setattr(_memory, "CACHE_LIMIT", 3 * 8000)
    _memory.release()
    assert _memory.empty((10,), np.float64).base is None              # below LARGE: np.empty's own memory
    a = _memory.empty((10, 100), np.float64)                          # 8000 bytes
    a[...] = 7.0
    address = a.ctypes.data
    view = a[2:, ::3]
    del a
    assert _memory.cached_bytes() == 0                                # the view keeps the block
    b = _memory.empty((1000,), np.float64)
    b[...] = -1.0
    assert b.ctypes.data != address and np.all(view == 7.0)
    del view
    assert _memory.cached_bytes() == 8000
    c = _memory.empty((20, 50), np.float64)                           # the freed block again
    assert c.ctypes.data == address and c.shape == (20, 50) and c.flags.c_contiguous and c.flags.writeable
    assert _memory.cached_bytes() == 0
    del c
    d = _memory.empty((2000,), np.float32)                            # same bytes, other dtype: the same block
    assert d.dtype == np.float32 and d.ctypes.data == address
    blocks = [_memory.empty((1000,), np.float64) for _ in range(4)]   # four more blocks of 8000 bytes
    addresses = [x.ctypes.data for x in blocks]
    while blocks:                                                     # freed in list order: oldest first
        blocks.pop(0)
    assert _memory.cached_bytes() == 3 * 8000                         # the first of the four went back
    again = [_memory.empty((1000,), np.float64) for _ in range(3)]
    assert sorted(x.ctypes.data for x in again) == sorted(addresses[1:])
    del again, b, d
    huge = _memory.empty((4000,), np.float64)                         # 32000 bytes > CACHE_LIMIT
    before = _memory.cached_bytes()
    del huge
    assert _memory.cached_bytes() == before                           # not cached: it would evict everything
    _memory.release()
    assert _memory.cached_bytes() == 0


def test_share_out_waits_for_every_share_and_raises_a_share_error():
    """``over_batch``/``over_shares`` run the first share on the caller's thread and the others on the pool:
    whichever share fails, the call returns only when every share has finished (no thread keeps writing into
    the caller's arrays), and the error reaches the caller."""
    import threading
    import time

    from refsnn.blocks import _jit

    done = []

    def slow_then_record(lo, hi):
        if lo > 0:
            time.sleep(0.2)                       # the pool's share finishes after this thread's share has failed
            done.append((lo, threading.current_thread().name))
        else:
            raise ValueError("first share failed")

    with pytest.raises(ValueError, match="first share failed"):
        _jit._share_out(slow_then_record, (), [0, 5, 10])
    assert done and done[0][0] == 5 and done[0][1].startswith("refsnn-kernel")   # waited for it, on the pool

    def fail_on_pool(lo, hi):
        if lo > 0:
            raise KeyError("pool share failed")
        done.append(lo)

    with pytest.raises(KeyError, match="pool share failed"):
        _jit._share_out(fail_on_pool, (), [0, 5, 10])
    assert done[-1] == 0                          # this thread's share ran

    seen = []
    _jit._share_out(lambda a, lo, hi: seen.append((a, lo, hi)), ("arg",), [0, 3, 7, 10])
    assert sorted(seen) == [("arg", 0, 3), ("arg", 3, 7), ("arg", 7, 10)]
