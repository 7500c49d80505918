"""docs/peers_examples.md tells the truth: each library's tutorial-style model, checked by refsnn.checking.peers, passes.

The page has one section per peer library (snnTorch, spikingjelly, norse, in that order), each with one
self-contained ```python block that builds a small float64 model the way that library's tutorials write it,
calls ``report = peers.verify(...)`` and ends with ``assert report.passed``.  Each block runs here as it is,
in a fresh namespace and a temporary working directory; the block's own assert is the check, and the test
also asserts that the namespace holds a passing ``report`` whose title names the loss the block compared.
A block is skipped, saying so, when torch or its library is not installed.
"""
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "peers_examples.md"

#: (section heading, module to import, the ``loss=`` argument the block passes, what the report's title calls
#: that loss).  ``"mse_mean"`` is refsnn's ``Loss('mse_rate')``: PyTorch's MSELoss of the output firing rate.
SECTIONS = [
    ("snnTorch", "snntorch", 'loss="ce_membrane_sum"', "ce_membrane_sum"),
    ("spikingjelly", "spikingjelly", 'loss="mse_mean"', "mse_rate"),
    ("norse", "norse.torch", 'loss="ce_membrane_max"', "ce_membrane_max"),
]


def _sections():
    """``[(heading, [python blocks])]`` of the page's ``##`` sections, in order."""
    text = PAGE.read_text()
    parts = re.split(r"^## +(.+?) *$", text, flags=re.M)
    return [(heading, re.findall(r"^```python\n(.*?)^```", body, flags=re.S | re.M))
            for heading, body in zip(parts[1::2], parts[2::2])]


def test_one_python_block_per_library_section_in_order():
    sections = _sections()
    assert [h for h, _ in sections] == [s[0] for s in SECTIONS], [h for h, _ in sections]
    for (heading, blocks), (_, _, loss_arg, _) in zip(sections, SECTIONS):
        assert len(blocks) == 1, f"section {heading}: {len(blocks)} python blocks, expected one"
        block = blocks[0]
        assert len(block.splitlines()) < 45, f"section {heading}: the block has {len(block.splitlines())} lines"
        assert "report = peers.verify(" in block and loss_arg in block, f"section {heading}: no check with {loss_arg}"
        assert block.rstrip().endswith("assert report.passed"), f"section {heading}: must end with the assert"
        assert "torch.manual_seed(" in block, f"section {heading}: the input must be seeded"


@pytest.mark.parametrize("index", range(len(SECTIONS)), ids=[s[0] for s in SECTIONS])
def test_the_block_runs_and_its_check_passes(index, tmp_path, monkeypatch):
    heading, module, _, loss_name = SECTIONS[index]
    pytest.importorskip("torch", reason="the peer examples need torch (pip install torch, CPU build)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip(module, reason=f"{heading} not installed (pip install {module.split('.')[0]})")
    sections = dict(_sections())
    assert heading in sections, f"docs/peers_examples.md has no section {heading}"
    (block,) = sections[heading]
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"peers_examples_{module.split('.')[0]}"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")        # norse and spikingjelly warn on import about optional backends
        exec(compile(block, f"docs/peers_examples.md ({heading})", "exec"), namespace)
    report = namespace.get("report")
    assert report is not None, f"section {heading}: the block defines no `report`"
    assert report.passed, str(report)
    assert loss_name in report.title, f"section {heading}: the title does not name {loss_name}: {report.title}"
    assert any(t.name == "loss" for t in report.tensors), "the loss itself must be compared too"
