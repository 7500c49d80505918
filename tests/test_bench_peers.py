"""refsnn bench peers: every library's layer is checked equal to refsnn before it is timed (no timing is
asserted here: speed is measured by the benchmark itself, never by a test)."""
import json

import numpy as np
import pytest
from tolerances import TWIN_REL

pytest.importorskip("torch")
from refsnn.harness import bench_peers  # noqa: E402

PEERS = {"snntorch": "snntorch", "spikingjelly": "spikingjelly", "norse": "norse"}


@pytest.mark.parametrize("lib", list(bench_peers.LIBRARIES))
def test_every_librarys_layer_is_refsnns_layer(lib):
    """float64, n 64, T 50: identical output spikes and every gradient tensor equal to refsnn's to round-off
    (a matrix product over 64 inputs and 50 steps of recursion: TWIN_REL)."""
    if lib in PEERS:
        pytest.importorskip(PEERS[lib])
    r = bench_peers.check_equal(lib)
    assert r["spikes_equal"], r["report"]
    assert r["passed"] and r["max_rel_error"] <= TWIN_REL, r["report"]


def test_a_run_writes_its_table_json_and_figure(tmp_path):
    res = bench_peers.peers_bench((8, 16), T=4, batch=2, dtypes=("float64",), modes=("train",),
                                  libs=("refsnn", "torch"), compile_=False, rounds=1, out=tmp_path, log=lambda *a: None)
    assert [r["n"] for r in res["results"]] == [8, 16]
    assert all(set(r["rows"]) == {"refsnn", "torch"} for r in res["results"])
    assert json.loads((tmp_path / "peers_bench.json").read_text())["checks"]["torch"]["passed"] is True
    md = (tmp_path / "peers_bench.md").read_text()
    assert "| torch | yes," in md and "float64 train n=16" in md
    png = (tmp_path / "peers_bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_library_that_is_not_refsnns_layer_is_not_timed(tmp_path, monkeypatch):
    real = bench_peers.check_equal

    def check(lib, **kw):
        r = real(lib, **kw)
        return dict(r, passed=False) if lib == "torch" else r

    monkeypatch.setattr(bench_peers, "check_equal", check)
    res = bench_peers.peers_bench((8,), T=4, batch=2, dtypes=("float64",), modes=("forward",),
                                  libs=("refsnn", "torch"), compile_=False, rounds=1, log=lambda *a: None)
    assert list(res["results"][0]["rows"]) == ["refsnn"]
    assert res["checks"]["torch"]["passed"] is False


@pytest.mark.parametrize("kw, name", [(dict(ns=(0,)), "n"), (dict(dtypes=("float16",)), "dtypes"),
                                      (dict(modes=("inference",)), "modes"), (dict(libs=("jax",)), "libs"),
                                      (dict(T=0), "T")])
def test_bad_settings_are_named(kw, name):
    kw = {"ns": (8,), **kw}
    ns = kw.pop("ns")
    with pytest.raises(ValueError, match=name):
        bench_peers.peers_bench(ns, **kw, log=lambda *a: None)


def test_the_weights_make_the_layer_fire():
    """The seeded layer neither stays silent nor fires at every step (a benchmark of a dead layer would time
    nothing the libraries do differently)."""
    x = bench_peers._input(50, 4, 64, 0)
    stbp, cfg, params = bench_peers._refsnn_config(64)
    cfg = stbp.Config(**{**cfg.to_dict(), "T": 50})
    rate = float(np.mean(stbp.simulate(params, x, cfg)[1][-1]))
    assert 0.02 < rate < 0.5, rate
