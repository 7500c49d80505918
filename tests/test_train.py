"""The training loop: seeds give bit-identical runs, resume equals an uninterrupted run, files are atomic."""
import json

import numpy as np
import pytest

from refsnn import stbp
from refsnn.harness import recipes, train as train_mod
from refsnn.harness.train import Settings, TrainingDiverged, load_checkpoint, lr_at, train

QUICK = dict(epochs=3, limit_train=200, limit_test=100, hidden=[16], batch_size=50, progress=False, log=None)


def _same_params(a, b):
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_gives_a_bit_identical_run(tmp_path):
    m1 = train("stbp", seed=3, out=tmp_path / "a", **QUICK)
    m2 = train("stbp", seed=3, out=tmp_path / "b", **QUICK)
    m3 = train("stbp", seed=4, **QUICK)
    assert _same_params(m1["params"], m2["params"])
    assert [h["train_loss"] for h in m1["history"]] == [h["train_loss"] for h in m2["history"]]
    assert not _same_params(m1["params"], m3["params"])


def test_metrics_json_and_checkpoint_contents(tmp_path):
    m = train("stbp", seed=0, out=tmp_path, **QUICK)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["status"] == "complete" and on_disk["epochs_done"] == 3
    assert on_disk["test_accuracy"] == m["test_accuracy"] == on_disk["history"][-1]["test_accuracy"]
    assert len(on_disk["history"]) == 3 and {"train_loss", "lr", "seconds"} <= set(on_disk["history"][0])
    assert on_disk["config"] == recipes.recipe("stbp", "digits")[0].to_dict()
    assert on_disk["seed"] == 0 and {"numpy", "refsnn", "numba", "python"} <= set(on_disk["versions"])
    params, opt_state, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert _same_params(params, m["params"]) and meta["epochs_done"] == 3 and int(opt_state["t"]) > 0
    assert not list(tmp_path.glob("*.tmp"))
    saved = np.load(tmp_path / "params.npz")
    assert all(np.array_equal(saved[k], m["params"][k]) for k in m["params"])


def test_resume_after_a_finished_epoch_equals_the_uninterrupted_run(tmp_path):
    full = train("stbp", seed=1, out=tmp_path / "full", **QUICK)
    train("stbp", seed=1, out=tmp_path / "part", **{**QUICK, "epochs": 1})
    resumed = train("stbp", seed=1, out=tmp_path / "part", resume=True, **QUICK)
    assert _same_params(full["params"], resumed["params"])
    assert [h["test_accuracy"] for h in full["history"]] == [h["test_accuracy"] for h in resumed["history"]]


def test_interrupted_mid_epoch_then_resumed_equals_the_uninterrupted_run(tmp_path, monkeypatch):
    full = train("stbp", seed=2, **QUICK)
    calls = {"n": 0}
    real = stbp.loss_and_grad

    def interrupt_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # 4 batches per epoch: the 6th call is in epoch 2
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(stbp, "loss_and_grad", interrupt_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train("stbp", seed=2, out=tmp_path, **QUICK)
    _, _, meta = load_checkpoint(tmp_path / "checkpoint.npz")
    assert meta["epochs_done"] == 1
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "running"
    monkeypatch.setattr(stbp, "loss_and_grad", real)
    resumed = train("stbp", seed=2, out=tmp_path, resume=True, **QUICK)
    assert _same_params(full["params"], resumed["params"])


def test_resume_refuses_a_checkpoint_from_other_settings(tmp_path):
    train("stbp", seed=0, out=tmp_path, **{**QUICK, "epochs": 1})
    with pytest.raises(ValueError, match="seed"):
        train("stbp", seed=9, out=tmp_path, resume=True, **QUICK)
    with pytest.raises(ValueError, match="config"):
        train("stbp", seed=0, out=tmp_path, resume=True, config={"T": 5}, **QUICK)
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        train("stbp", seed=0, out=tmp_path / "empty", resume=True, **QUICK)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    train("stbp", seed=0, out=tmp_path, **{**QUICK, "epochs": 1})
    before = (tmp_path / "checkpoint.npz").read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(train_mod.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        train("stbp", seed=0, out=tmp_path, resume=True, **QUICK)
    assert (tmp_path / "checkpoint.npz").read_bytes() == before


def test_divergence_is_reported_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    train("stbp", seed=0, out=tmp_path, **{**QUICK, "epochs": 1})
    real = stbp.loss_and_grad
    monkeypatch.setattr(stbp, "loss_and_grad", lambda *a, **k: (float("nan"), real(*a, **k)[1]))
    with pytest.raises(TrainingDiverged, match="not finite"):
        train("stbp", seed=0, out=tmp_path, resume=True, **QUICK)
    assert load_checkpoint(tmp_path / "checkpoint.npz")[2]["epochs_done"] == 1


def test_settings_validation_and_schedules():
    with pytest.raises(ValueError, match="optimizer"):
        Settings(optimizer="lbfgs")
    with pytest.raises(ValueError, match="epochs"):
        Settings(epochs=0)
    with pytest.raises(TypeError, match="unknown setting"):
        train("stbp", epoch=3, progress=False, log=None)
    with pytest.raises(TypeError, match=r"hidden: expected a list .*int 128"):
        train("stbp", hidden=128, progress=False, log=None)
    with pytest.raises(TypeError, match="milestones"):
        Settings(milestones=3)
    s = Settings(lr=1.0, schedule="step", milestones=[2, 4], gamma=0.5)
    assert [lr_at(s, e) for e in range(6)] == [1.0, 1.0, 0.5, 0.5, 0.25, 0.25]
    s = Settings(lr=1.0, schedule="inv_sqrt")
    assert lr_at(s, 3) == pytest.approx(0.5)
    s = Settings(lr=1.0, schedule="list", lrs=[0.5, 0.25, 0.125], epochs=3)
    assert [lr_at(s, e) for e in range(3)] == [0.5, 0.25, 0.125]
    with pytest.raises(ValueError, match="epoch"):
        lr_at(s, 3)
    with pytest.raises(ValueError, match="lrs"):
        Settings(schedule="list", lrs=[0.5, 0.25], epochs=3)
    with pytest.raises(ValueError, match="lrs"):
        Settings(schedule="inv_sqrt", lrs=[0.5])
    with pytest.raises(ValueError, match=r"lrs\[1\]"):
        Settings(schedule="list", lrs=[0.5, 0.0], epochs=2)
    with pytest.raises(TypeError, match="lrs"):
        Settings(schedule="list", lrs=0.5)


def test_list_schedule_is_followed_and_resumes_on_schedule(tmp_path):
    """``schedule="list"``: epoch e trains at lrs[e] (the history says so), and a run stopped after epoch 1 and
    resumed equals the uninterrupted one."""
    sched = dict(schedule="list", lrs=[3e-3, 1e-3, 3e-4, 1e-4])
    full = train("stbp", seed=5, out=tmp_path / "full", **QUICK, **sched)
    assert [h["lr"] for h in full["history"]] == sched["lrs"][:3]
    train("stbp", seed=5, out=tmp_path / "part", **{**QUICK, "epochs": 1}, **sched)
    resumed = train("stbp", seed=5, out=tmp_path / "part", resume=True, **QUICK, **sched)
    assert _same_params(full["params"], resumed["params"])
    assert [h["lr"] for h in resumed["history"]] == sched["lrs"][:3]
    const = train("stbp", seed=5, **QUICK, lr=3e-3)
    assert not _same_params(full["params"], const["params"])


def test_st_rsbp_log_recipe_is_the_logged_setting():
    """The official log's learning rates (1e-3 twice, then 1e-3/sqrt(epoch)) and the first commit's preset."""
    from refsnn import st_rsbp

    cfg, settings = recipes.st_rsbp_log_recipe("fashion-mnist")
    assert cfg == st_rsbp.PRESETS["log"] and cfg.reg_lambda == 10.0 and cfg.kappa_zero == 0.0
    s = Settings(**settings)
    assert s.schedule == "list" and s.hidden == [400, "R400"] and s.batch_size == 1
    assert [lr_at(s, e) for e in range(4)] == pytest.approx([1e-3, 1e-3, 1e-3 / 2 ** 0.5, 1e-3 / 3 ** 0.5])


def test_config_override_reaches_the_algorithm(tmp_path):
    m = train("stbp", seed=0, config={"T": 3, "surrogate": "sigmoid", "width": 0.5}, **{**QUICK, "epochs": 1})
    assert m["config"]["T"] == 3 and m["config"]["surrogate"] == "sigmoid"
    with pytest.raises(ValueError, match="surrogate"):
        train("stbp", seed=0, config={"surrogate": "bad"}, **QUICK)


def test_the_default_log_flushes_each_epoch_line(monkeypatch):
    """``refsnn train ... > run.log`` must show each epoch when it ends, not when the process exits."""
    import io
    import sys

    events = []

    class Recorder(io.StringIO):
        def write(self, s):
            events.append(("write", s))
            return super().write(s)

        def flush(self):
            events.append(("flush", None))
            super().flush()

    monkeypatch.setattr(sys, "stdout", Recorder())
    train("stbp", **{**QUICK, "epochs": 2, "log": train_mod._say})
    lines = [i for i, (kind, s) in enumerate(events) if kind == "write" and "epoch" in s]
    assert len(lines) == 2
    for i in lines:                                    # every epoch line is followed by a flush
        assert ("flush", None) in events[i + 1:i + 3], events[i:i + 3]
    assert train_mod.train.__kwdefaults__["log"] is train_mod._say
