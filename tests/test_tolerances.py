"""No test relies on two implementations rounding identically: no bare tolerance below 1e-13 in a test file.

Every tolerance smaller than that must be a named constant of tests/tolerances.py, where its reason is
written (and which this check does not read).  Exact equality stays allowed where the operation sequence is
the same by construction; the tests say so beside it.
"""
import io
import re
import tokenize
from pathlib import Path

TESTS = Path(__file__).resolve().parent
LIMIT = 1e-13


def _small_literals(path: Path) -> list:
    """``(line, text)`` of every float literal in ``path`` whose value is positive and below LIMIT."""
    out = []
    lines = path.read_text().splitlines()
    tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
    for tok in tokens:
        if tok.start[0] <= len(lines) and "not a tolerance" in lines[tok.start[0] - 1]:       # data that happens to be tiny, said so at the line
            continue
        text = tok.string.replace("_", "")
        if tok.type == tokenize.NUMBER and re.fullmatch(r"[0-9.]+([eE][-+]?[0-9]+)?", text) and re.search(r"[eE.]", text):
            value = float(text)
            if 0 < value < LIMIT:
                out.append((tok.start[0], tok.string))
    return out


def test_no_bare_tolerance_below_1e_13():
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name == "tolerances.py":
            continue
        offenders += [f"{path.name}:{line}: {text}" for line, text in _small_literals(path)]
    assert not offenders, ("bare tolerances below 1e-13 (use a named constant of tests/tolerances.py):\n"
                           + "\n".join(offenders))


def test_the_scanner_finds_what_it_must(tmp_path):
    f = tmp_path / "t.py"
    f.write_text("assert_allclose(a, b, rtol=0, atol=1e-15)\nx = 2.5E-14\nok = 1e-13 + 1e-7\n"
                 "d = [1e-300]  # test data, not a tolerance\n")
    assert [t for _, t in _small_literals(f)] == ["1e-15", "2.5E-14"]
