"""No test relies on two implementations rounding identically: no bare tolerance below 1e-13 in a test file,
and no comparison keyword (rel=, abs=, rtol=, atol=) given a bare number below 1e-3.

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


#: A comparison's tolerance keyword (pytest.approx, np.allclose, assert_allclose), or a bound written
#: ``<= 1e-8 * scale``, given a number below this is a tolerance that needs its reason: a named constant too.
KEYWORD_LIMIT = 1e-3
_KEYWORD = re.compile(r"\b(rel|abs|rtol|atol)\s*=\s*([0-9][0-9_.]*(?:[eE][-+]?[0-9]+)?)(?![\w.])"
                      r"|(<=?|>=?)\s*()([0-9][0-9_.]*[eE][-+]?[0-9]+)\s*\*")


def _bare_keyword_tolerances(path: Path) -> list:
    """``(line, text)`` of every ``rel=``/``abs=``/``rtol=``/``atol=`` given a positive literal below
    KEYWORD_LIMIT (0, an exact comparison, is allowed)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if "not a tolerance" in line:
            continue
        for m in _KEYWORD.finditer(line):
            value = float((m.group(2) or m.group(5)).replace("_", ""))
            if 0 < value < KEYWORD_LIMIT:
                out.append((n, m.group(0)))
    return out


def test_no_bare_comparison_tolerance():
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        if path.name in ("tolerances.py", "test_tolerances.py"):
            continue
        offenders += [f"{path.name}:{line}: {text}" for line, text in _bare_keyword_tolerances(path)]
    assert not offenders, ("bare comparison tolerances (use a named constant of tests/tolerances.py, where the "
                           "reason is written):\n" + "\n".join(offenders))


def test_the_keyword_scanner_finds_what_it_must(tmp_path):
    f = tmp_path / "t.py"
    f.write_text("a == pytest.approx(b, rel=1e-12)\nnp.allclose(a, b, rtol=1e-8, atol=0)\nassert e <= 1e-9 * s\n"
                 "ok = pytest.approx(b, rel=TWIN_REL)\nwide = np.allclose(a, b, atol=0.01)\n"
                 "x = pytest.approx(b, abs=1e-9)  # data, not a tolerance\n")
    assert [t for _, t in _bare_keyword_tolerances(f)] == ["rel=1e-12", "rtol=1e-8", "<= 1e-9 *"]


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
    # the scanner's own test data (a file it writes and reads), not a tolerance of this suite:
    f.write_text("assert_allclose(a, b, rtol=0, atol=1e-1" "5)\nx = 2.5E-1" "4\nok = 1e-13 + 1e-7\n"
                 "d = [1e-300]  # test data, not a tolerance\n")
    assert [t for _, t in _small_literals(f)] == ["1e-15", "2.5E-14"]
