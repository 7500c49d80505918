"""refsnn verify and the golden vectors: the case-file format, the diagnosis, the exit codes, the shipped set."""
import hashlib
import json
import math
from dataclasses import replace

import numpy as np
import pytest

import refsnn
from refsnn import stbp
from refsnn.checking import verification
from refsnn.harness import problems
from refsnn.cli import main


def test_the_golden_set_ships_and_regenerates(tmp_path):
    """Regenerated here, every golden array equals the shipped one to 1e-12 relative (norm-wise per array) and
    every spike train exactly: the cases keep every potential at least 1e-6 from its threshold, so round-off
    (~1e-15 on another CPU) cannot flip a spike, and everything else is a float64 computation of a few hundred
    operations."""
    shipped = verification.golden_dir()
    manifest = json.loads((shipped / "manifest.json").read_text())
    assert manifest["format_version"] == verification.FORMAT_VERSION
    assert {c["algorithm"] for c in manifest["cases"]} == set(refsnn.ALGORITHMS)
    total = sum((shipped / c["file"]).stat().st_size for c in manifest["cases"])
    assert total < 5e6, f"the golden set is {total / 1e6:.1f} MB"
    for c in manifest["cases"]:
        assert hashlib.sha256((shipped / c["file"]).read_bytes()).hexdigest() == c["sha256"], c["file"]
    verification.golden_write(tmp_path)
    assert verification.golden_compare(shipped, tmp_path) == []


def test_golden_compare_sees_a_changed_array(tmp_path):
    verification.golden_write(tmp_path)
    case = tmp_path / "stbp_00.npz"
    z = dict(np.load(case))
    z["grad/W1"] = z["grad/W1"] * (1 + 1e-9)
    with open(case, "wb") as f:
        np.savez(f, **z)
    diffs = verification.golden_compare(verification.golden_dir(), tmp_path)
    assert diffs and "grad/W1" in diffs[0]


@pytest.mark.parametrize("entry", json.loads((verification.golden_dir() / "manifest.json").read_text())["cases"],
                         ids=lambda c: c["file"])
def test_every_golden_case_verifies(entry):
    verdict = refsnn.verify(entry["algorithm"], verification.golden_dir() / entry["file"])
    assert verdict.agree and verdict.exit_code == 0, str(verdict)


def _case(tmp_path, name="stbp_case.npz", **changes):
    """A correct STBP case file (from refsnn itself), with optional changes to its arrays."""
    cfg = problems.STBP_FAMILY[0][1]
    cfg = stbp.Config(v_th=0.5, decay=0.3, loss="mse_mean", **cfg)
    params, x, y = problems.stbp_problem(cfg, 7)
    loss, g = stbp.loss_and_grad(params, x, y, cfg)
    _, o = stbp.simulate(params, x, cfg)
    g = {**g, **changes.pop("grads", {})}
    path = verification.write_case(tmp_path / name, x, y, params, g, loss=changes.pop("loss", loss),
                                   spikes={n + 1: on for n, on in enumerate(o)}, config=cfg)
    return path, cfg, params, x, y


def test_a_wrong_gradient_is_found_and_the_exit_codes(tmp_path, capsys):
    path, cfg, params, x, y = _case(tmp_path)
    assert main(["verify", "stbp", str(path)]) == 0
    out = capsys.readouterr().out
    assert "AGREE" in out and "W1" in out
    _, g = stbp.loss_and_grad(params, x, y, cfg)
    bad, *_ = _case(tmp_path, "bad.npz", grads={"W2": g["W2"] * 1.01})
    assert main(["verify", "stbp", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "DISAGREE" in out and "diagnosis: the forward passes agree but the gradients differ" in out
    assert main(["verify", "stbp", str(tmp_path / "missing.npz")]) == 2
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert main(["verify", "stbp", str(tmp_path / "junk.npz")]) == 2
    assert "is not a .npz archive" in capsys.readouterr().err
    np.savez(tmp_path / "nograd.npz", x=x, y=y, **{f"param/{k}": v for k, v in params.items()})
    assert main(["verify", "stbp", str(tmp_path / "nograd.npz")]) == 2
    assert "grad/<key>" in capsys.readouterr().err
    assert main(["verify", "stbp", str(path), "--preset", "nope"]) == 2
    assert main(["verify", "stbp", str(path), "--set", "nofield=1"]) == 2


def test_the_diagnosis_names_a_forward_difference_before_a_gradient_one(tmp_path):
    path, cfg, params, x, y = _case(tmp_path)
    verdict = refsnn.verify("stbp", path, replace(cfg, v_th=0.45))
    assert not verdict.agree
    assert "the forward pass differs" in verdict.diagnosis[0] or "spikes first differ" in verdict.diagnosis[0]


# ---------------------------------------------------------------------------
# An snnTorch export, correct and broken four ways, through the command line
# ---------------------------------------------------------------------------

def _snn_case(tmp_path, name, **leaky):
    torch = pytest.importorskip("torch", reason="the export needs torch")
    snn = pytest.importorskip("snntorch", reason="snnTorch not installed (pip install snntorch)")
    from refsnn.checking import peers

    D = torch.float64
    alpha = leaky.pop("alpha", 2.0)
    leaky.setdefault("beta", torch.tensor(0.9, dtype=D))

    def neuron():
        return snn.Leaky(init_hidden=True, graded_spikes_factor=torch.ones(1, dtype=D),
                         spike_grad=peers.snntorch_surrogate("atan", 2 / (math.pi * alpha)), **leaky)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), neuron(), torch.nn.Linear(5, 3), neuron()).double()
    with torch.no_grad():
        for lin in (model[0], model[2]):
            lin.weight.mul_(3.0)
            lin.bias.add_(0.2)
    rng = np.random.default_rng(0)
    x = (rng.random((12, 4, 6)) < 0.5).astype(float)
    y = rng.integers(0, 3, 4)
    return peers.export_case(model, x, y, tmp_path / name)


SNNTORCH = ["--preset", "snntorch", "--set", "v_th=1.0", "--set", "decay=0.9"]   # refsnn's side of the check


def _verify_out(capsys, path, *extra):
    code = main(["verify", "stbp", str(path), *SNNTORCH, *extra])
    return code, capsys.readouterr().out


def test_verify_passes_a_correct_snntorch_export(tmp_path, capsys):
    code, out = _verify_out(capsys, _snn_case(tmp_path, "good.npz"))
    assert code == 0 and "AGREE" in out, out


def test_verify_diagnoses_a_wrong_reset(tmp_path, capsys):
    code, out = _verify_out(capsys, _snn_case(tmp_path, "reset.npz", reset_mechanism="zero"))
    assert code == 1
    assert "the forward pass differs" in out and "the spikes first differ in layer" in out
    assert "your numbers are refsnn's with reset='zero'" in out and "--set reset=zero" in out, out


def test_verify_diagnoses_a_float32_beta(tmp_path, capsys):
    """snnTorch's Leaky(beta=0.9) keeps float32(0.9): the forward agrees, the gradients differ by ~1e-8."""
    code, out = _verify_out(capsys, _snn_case(tmp_path, "beta.npz", beta=0.9))
    assert code == 1
    assert "float32 round-off" in out and "your gradient is refsnn's with decay=0.8999999761581421" in out, out


def test_verify_diagnoses_a_detached_reset(tmp_path, capsys):
    """The export detaches the reset (snnTorch always does with reset_delay=True); refsnn is told it does not."""
    code, out = _verify_out(capsys, _snn_case(tmp_path, "detach.npz"), "--set", "detach_reset=False")
    assert code == 1
    assert "the forward passes agree but the gradients differ" in out
    assert "your gradient is refsnn's with detach_reset=True" in out, out


@pytest.mark.parametrize("alpha", [4.0, 3.0, 1.7])
def test_verify_diagnoses_a_wrong_surrogate_width(tmp_path, capsys, alpha):
    """The export's atan has alpha 4, 3 or 1.7; refsnn's preset has alpha 2.  A search over the width finds any
    of them (a fixed list of probes found 4 and not 3) and says what it is in the peers' alpha."""
    code, out = _verify_out(capsys, _snn_case(tmp_path, "width.npz", alpha=alpha))
    assert code == 1
    assert "look at the surrogate" in out
    assert "your gradient is refsnn's with surrogate='atan'" in out or "your gradient is refsnn's with width=" in out, out
    assert f"atan alpha = {alpha:g})" in out, out
    # and the suggested --set reproduces the export: it verifies with it
    line = next(ln for ln in out.splitlines() if "to check with it:" in ln)
    extra = line.split("to check with it:")[1].split()
    code, out = _verify_out(capsys, tmp_path / "width.npz", *extra)
    assert code == 0, out
