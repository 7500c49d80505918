"""The worked case files of docs/verify_cases.md run as printed, and verify; broken by 1 %, they do not.

Each ```python block of the page is executed, in order, in a fresh namespace inside its own temporary
directory (where it writes its case files).  A block must end by assigning ``verdict = refsnn.verify(...)``
(optionally followed by ``print`` calls); that verdict, and every other Verdict the block made, must agree.
The control that this can fail: every case file a block wrote is re-read, one gradient (the largest) is
scaled, the file rewritten, and verify must then disagree and name that tensor.

The blocks compute their gradients with PyTorch: the tests are skipped when torch is not installed.
"""
import ast
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the worked case files compute their gradients with PyTorch "
                                            "(pip install torch, CPU build)")

import refsnn  # noqa: E402
from refsnn.checking.verification import Verdict  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "verify_cases.md"
#: The page's sections, in order; each holds exactly one python block.
SECTIONS = ["STBP", "IDE", "ST-RSBP", "SSNN-BP"]
#: A block is short enough to read at once (the page promises fewer than 40 lines).
MAX_LINES = 39
#: A deterministic gradient scaled by 1 %: seven orders of magnitude above verify's default tol (1e-9).
BROKEN_FACTOR = 1.01
#: SSNN-BP's draws (400 of them) estimate the mean to a few per cent, so a 1 % bias is within the noise of the
#: statistical test; 25 % is far outside it (the test rejects 5-10 % scalings of any one tensor already).
BROKEN_FACTOR_DRAWS = 1.25


def _sections() -> list:
    """``[(heading, code), ...]``: each ``## `` section of the page with the python blocks in it."""
    text = DOC.read_text()
    out = []
    for part in re.split(r"^## ", text, flags=re.M)[1:]:
        heading = part.splitlines()[0].strip()
        out.append((heading, re.findall(r"^```python\n(.*?)^```", part, flags=re.S | re.M)))
    return out


def _blocks() -> list:
    return [code for _, codes in _sections() for code in codes]


def _is_verify_call(node) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "verify"
            and isinstance(node.func.value, ast.Name) and node.func.value.id == "refsnn")


def _is_print(node) -> bool:
    return (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name) and node.value.func.id == "print")


def _run(code: str, index: int, tmp_path, monkeypatch) -> dict:
    """Execute block ``index`` in a fresh namespace with ``tmp_path`` as the working directory."""
    monkeypatch.chdir(tmp_path)
    ns = {"__name__": f"verify_cases_block_{index}"}
    exec(compile(code, f"docs/verify_cases.md (python block {index + 1})", "exec"), ns)
    return ns


def test_the_page_has_one_block_per_algorithm():
    sections = _sections()
    assert [h for h, _ in sections] == SECTIONS, f"the sections of {DOC.name}: {[h for h, _ in sections]}"
    for heading, codes in sections:
        assert len(codes) == 1, f"section {heading!r} has {len(codes)} python blocks, not one"


@pytest.mark.parametrize("index", range(len(SECTIONS)), ids=SECTIONS)
def test_block_ends_by_verifying(index):
    code = _blocks()[index]
    lines = code.rstrip("\n").splitlines()
    assert len(lines) <= MAX_LINES, f"block {SECTIONS[index]}: {len(lines)} lines (at most {MAX_LINES})"
    body = ast.parse(code).body
    while body and _is_print(body[-1]):
        body = body[:-1]
    last = body[-1] if body else None
    assert (isinstance(last, ast.Assign) and len(last.targets) == 1 and isinstance(last.targets[0], ast.Name)
            and last.targets[0].id == "verdict" and _is_verify_call(last.value)), \
        f"block {SECTIONS[index]} must end with `verdict = refsnn.verify(...)` (then only print calls)"


@pytest.mark.parametrize("index", range(len(SECTIONS)), ids=SECTIONS)
def test_block_runs_and_agrees(index, tmp_path, monkeypatch, capsys):
    ns = _run(_blocks()[index], index, tmp_path, monkeypatch)
    verdict = ns.get("verdict")
    assert isinstance(verdict, Verdict), f"block {SECTIONS[index]}: `verdict` is {type(verdict).__name__}"
    for name, v in ns.items():
        if isinstance(v, Verdict):
            assert v.agree, f"block {SECTIONS[index]}: {name} disagrees:\n{v}"
    assert "AGREE" in capsys.readouterr().out, f"block {SECTIONS[index]} does not print its verdict"
    assert sorted(tmp_path.glob("*.npz")), f"block {SECTIONS[index]} wrote no case file"


@pytest.mark.parametrize("index", range(len(SECTIONS)), ids=SECTIONS)
def test_broken_case_disagrees(index, tmp_path, monkeypatch):
    """Each case file the block wrote verifies as written (the control); with its largest gradient scaled it
    does not, and the report fails that tensor."""
    _run(_blocks()[index], index, tmp_path, monkeypatch)
    cases = sorted(tmp_path.glob("*.npz"))
    assert cases, f"block {SECTIONS[index]} wrote no case file"
    for path in cases:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        algo = str(arrays["algorithm"])
        assert refsnn.verify(algo, path).agree, f"{path.name}: the control does not agree"
        grads = [k for k in arrays if k.startswith("grad/")]
        key = max(grads, key=lambda k: float(np.linalg.norm(arrays[k])))
        params_shape = arrays["param/" + key.split("/", 1)[1]].shape
        draws = arrays[key].shape != params_shape               # SSNN-BP's stacked draws (N,) + shape
        factor = BROKEN_FACTOR_DRAWS if draws else BROKEN_FACTOR
        arrays[key] = arrays[key] * factor
        broken = tmp_path / f"broken_{path.name}"
        np.savez(broken, **arrays)
        verdict = refsnn.verify(algo, broken)
        assert not verdict.agree, f"{path.name} with {key} x {factor}: verify still agrees\n{verdict}"
        assert not verdict.report[key.split("/", 1)[1]].passed, f"{broken.name}: {key} is not the failing tensor"
