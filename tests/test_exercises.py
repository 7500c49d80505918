"""Every exercise's self-check (refsnn/teaching/exercises.py) passes on the intended answer and fails on the wrong ones.

The wrong answers include the ones the exercises used to suggest: the diagonal ST-RSBP gradient being exact
(because the first case, feed-forward, passes), 0.4-0.7 % for the paper's literal temporal term, and "only
the reused update port is biased" in V2 at T = 2.  The notebooks call exactly these checks, one per exercise.

The teachers' answers (refsnn/teaching/exercise_solutions.py) pass their checks, and nothing a student reads (the
question, the expected form, the hint after a wrong answer, the notebooks' exercise cells) gives an answer away.
"""
import json
import re
from pathlib import Path

import pytest

from refsnn.teaching import exercises

ROOT = Path(__file__).resolve().parents[1]

INTENDED = {
    "00-1": {"stbp": True, "ide": False, "st_rsbp": False},
    "00-2": [0],
    "01-1": 1.98,
    "01-2": {"spikingjelly", "norse"},
    "01-3": {"rect": 0.955, "triangle": 0.945, "sigmoid": 0.933, "gauss": 0.945},
    "02-1": 0.930,
    "02-2": exercises._ratio_max_S,            # a callable: the value is computed live (see below)
    "02-3": {"tau_s": "closer", "rate": "further"},
    "02-4": 0.0,
    "03-1": {"bound": 2.86, "fixed_point": False, "broyden": True},
    "03-2": {"learns": True, "cosine": 0.990},
    "03-3": "b",
    "03-4": 200,
    "04-1": {"V2 T=4": 0.930, "V2 T=64": 0.967},
    "04-2": {"independent", "reuse"},
    "04-3": 2.22,
    "04-4": {"unbiased": True, "first_layer_noise": "larger"},
    "05-1": {"discretization": "euler", "reset": "subtract", "reset_timing": "delayed", "input_late": False,
             "spike_late": True},
}

WRONG = {
    "00-1": [{"stbp": True, "ide": False, "st_rsbp": True},          # "the diagonal gradient is exact"
             {"stbp": True, "ide": True, "st_rsbp": True},
             {"stbp": False, "ide": False, "st_rsbp": False}],
    "00-2": [list(range(11)), [0, 1, 2, 3, 4, 5], []],
    "01-1": [0.4, 0.55, 0.7, 0.0, 4.3, 0.0198],                     # the old promise; B3+B4; a fraction
    "01-2": [{"snntorch"}, {"snntorch", "spikingjelly", "norse"}, {"norse"}],
    "01-3": [{"rect": 0.955, "triangle": 0.955, "sigmoid": 0.955, "gauss": 0.955}, {"rect": 0.955}],
    "02-1": [0.947, 0.5],
    "02-2": [0.5, 1.0, -1.0],
    "02-3": [{"tau_s": "further", "rate": "closer"}, {"tau_s": "closer", "rate": "closer"}],
    "02-4": [11.094, 1.0],
    "03-1": [{"bound": 0.5, "fixed_point": True, "broyden": True},
             {"bound": 2.86, "fixed_point": True, "broyden": True}],
    "03-2": [{"learns": False, "cosine": 0.990}, {"learns": True, "cosine": 0.5}],
    "03-3": ["a", "c"],
    "03-4": [100, 50, 800],
    "04-1": [{"V2 T=4": 0.972, "V2 T=64": 0.972}],
    "04-2": [{"reuse"}, {"independent"}, set()],                    # "which one is biased": both are
    "04-3": [2.0, 1.0, 4.0],
    "04-4": [{"unbiased": False, "first_layer_noise": "larger"}, {"unbiased": True, "first_layer_noise": "same"}],
    "05-1": [{"discretization": "euler", "reset": "to_value", "reset_timing": "immediate", "input_late": False,
              "spike_late": False},                                        # norse's reading
             {"discretization": "euler", "reset": "to_value", "reset_timing": "immediate", "input_late": True,
              "spike_late": False},                                        # Lava's: the spikes agree, not the membrane
             {"discretization": "rk4", "reset": "subtract", "reset_timing": "delayed", "input_late": False,
              "spike_late": True}],
}


def _value(answer):
    return answer() if callable(answer) else answer


def test_every_exercise_has_answers_here():
    assert sorted(INTENDED) == sorted(exercises.EXERCISES) == sorted(WRONG)
    assert len(exercises.EXERCISES) == 18


@pytest.mark.parametrize("exercise", sorted(INTENDED))
def test_check_passes_on_the_intended_answer(exercise):
    assert exercises.check_answer(exercise, _value(INTENDED[exercise]), quiet=True)


@pytest.mark.parametrize("exercise", sorted(WRONG))
def test_check_fails_on_wrong_answers(exercise):
    for answer in WRONG[exercise]:
        assert not exercises.check_answer(exercise, answer, quiet=True), f"{exercise} accepted {answer!r}"


@pytest.mark.parametrize("exercise", sorted(exercises.EXERCISES))
def test_unanswered_and_malformed_answers_are_not_accepted(exercise, capsys):
    assert not exercises.check_answer(exercise, None)
    assert "not answered yet" in capsys.readouterr().out
    assert not exercises.check_answer(exercise, "no idea", quiet=True)
    assert exercises.answer_format(exercise)


def test_unknown_exercise_is_an_error():
    with pytest.raises(ValueError, match="exercise"):
        exercises.check_answer("09-9", 1)


def test_the_notebooks_call_every_check_once():
    """Each notebook's exercises end with exercises.check_answer(ID, ...), and the IDs are exactly the checks."""
    called = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        src = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        ids = re.findall(r'exercises\.check_answer\("(\d\d-\d)"', src)
        assert all(i.startswith(path.name[:2]) for i in ids), f"{path.name} checks another notebook's exercise"
        called += ids
    assert sorted(called) == sorted(exercises.EXERCISES)


# ---------------------------------------------------------------------------
# The teachers' solutions, and no answer in anything a student reads
# ---------------------------------------------------------------------------

from refsnn.teaching import exercise_solutions  # noqa: E402


@pytest.mark.parametrize("exercise", sorted(exercises.EXERCISES))
def test_the_solution_passes_its_check(exercise):
    answer, explanation = exercise_solutions.solution(exercise)
    assert exercises.check_answer(exercise, answer, quiet=True), f"{exercise}: the solution {answer!r} is not accepted"
    assert explanation.strip()


def test_solutions_cover_every_exercise():
    assert sorted(exercise_solutions.SOLUTIONS) == sorted(exercises.EXERCISES)
    with pytest.raises(ValueError, match="exercise"):
        exercise_solutions.solution("09-9")


#: How close a number in a student's text may come to a numeric answer: (low, high) of what the check
#: accepts, widened to 1 % of the answer so that a rounded printout counts too.  "percent" answers
#: are also compared with numbers written as fractions; any "N %" is also compared as N/100.
NUMERIC_TOL = {"01-1": (0.95, 2.2), "01-3": 0.01, "02-1": 0.01, "02-2": 1e-9, "02-4": 1e-12,
               "03-1": {"bound": 0.01}, "03-2": {"cosine": 0.002}, "03-4": 0, "04-1": 0.01, "04-3": 0.02}
RELATIVE = {"03-1", "04-3"}                  # tolerance relative to the answer, as the check has it
PERCENT_ANSWERS = {"01-1"}
#: The grid a choice is made from may be listed (it is the form of the answer, not the answer).
CHOICE_LISTS = {"03-4": "(25, 50, 100, 200, 400, 800)"}

FORBIDDEN = re.compile(r"\b(measured|accepted|truth)\b", re.I)
CUES = re.compile(r"\b(yes|no|true|false|truth|measured|accepted|it is|right|correct|wrong|holds|only|both)\b", re.I)
PLACEHOLDER = re.compile(r'True\s*(?:/|\bor\b)\s*False|"[^"\n]+"(?:\s*(?:/|\bor\b|\|)\s*"[^"\n]+")+')
NUMBER = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)(\s*(?:%|percent\b))?")
EXERCISE_ID = re.compile(r"\b0\d-\d\b")
NEAR = 40                                   # characters between an answer's name and a verdict word


def _windows(exercise, answer):
    """[(low, high, whether the answer is a whole number)] of the numbers that would give ``answer`` away, for numeric parts of it."""
    spec = NUMERIC_TOL.get(exercise)
    if spec is None:
        return []
    if isinstance(spec, tuple):
        return [(*spec, False)]
    values = answer.items() if isinstance(answer, dict) else [(None, answer)]
    out = []
    for key, v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        tol = spec.get(key.lower()) if isinstance(spec, dict) else spec
        if tol is None:
            continue
        tol = tol * abs(v) if exercise in RELATIVE else tol
        tol = max(tol, 0.01 * abs(v))
        out.append((v - tol, v + tol, float(v).is_integer()))
    return out


def _numeric_leaks(exercise, answer, text):
    if exercise in CHOICE_LISTS:
        text = text.replace(CHOICE_LISTS[exercise], "")
    text = EXERCISE_ID.sub(" ", text)
    hits = []
    for lo, hi, integral in _windows(exercise, answer):
        for m in NUMBER.finditer(text):
            n, pct = float(m.group(1)), bool(m.group(2))
            bare_int = re.fullmatch(r"\d+", m.group(1)) is not None and not pct
            if bare_int and not integral:
                continue                       # "section 1" does not give away 1.98
            cands = [n] + ([n / 100] if pct else []) + ([n * 100] if exercise in PERCENT_ANSWERS and n < 1 else [])
            if any(lo <= c <= hi or lo <= -c <= hi for c in cands):
                hits.append(m.group(0).strip())
    return hits


def _literals(answer):
    """[(forms of an answer's name, extra verdict words for it, anywhere)]: the names a text must not pair with a verdict."""
    out = []
    if isinstance(answer, dict):
        for k, v in answer.items():
            if isinstance(v, bool):
                out.append(([k], [], False))
            elif isinstance(v, str):
                out.append(([k], [v], False))
    elif isinstance(answer, str):
        out.append(([f"({answer})", f'"{answer}"'], [], False))
    elif isinstance(answer, (set, frozenset, list, tuple)):
        for item in answer:
            if isinstance(item, str):
                out.append(([item], [], False))
            else:                              # case indices: naming one at all points at it
                out.append(([f"[{item}]", f"case {item}", f"cases {item}", f"index {item}"], [], True))
    return out


def _name_leaks(answer, text):
    text = PLACEHOLDER.sub("<choice>", text)
    hits = []
    for forms, extra, anywhere in _literals(answer):
        cue = CUES if not extra else re.compile(CUES.pattern[:-3] + "|" + "|".join(map(re.escape, extra)) + r")\b", re.I)
        for clause in re.split(r"(?<=[.;!?])\s+|\n\s*\n", text):
            for form in forms:
                for m in re.finditer(r"(?<![\w])" + re.escape(form) + r"(?![\w])", clause, re.I):
                    if anywhere:
                        hits.append(form)
                        continue
                    for c in cue.finditer(clause):
                        if max(c.start() - m.end(), m.start() - c.end()) <= NEAR:
                            hits.append(f"{form} ... {c.group(0)}")
    return hits


def _leaks(exercise, answer, text):
    """What in ``text`` gives the answer to ``exercise`` away (empty if nothing)."""
    return (FORBIDDEN.findall(text) + _numeric_leaks(exercise, answer, text) + _name_leaks(answer, text))


def _student_texts(module, exercise, capsys):
    """Everything a student can read about ``exercise`` without answering it right."""
    texts = {"answer_format": module.answer_format(exercise)}
    capsys.readouterr()
    module.check_answer(exercise, None)
    texts["check(None)"] = capsys.readouterr().out
    for i, wrong in enumerate(WRONG[exercise] + ["no idea"]):
        module.check_answer(exercise, wrong)
        texts[f"check(wrong #{i}: {wrong!r})"] = capsys.readouterr().out
    return texts


def _leak_report(module, capsys):
    found = []
    for exercise in sorted(module.EXERCISES):
        answer = exercise_solutions.solution(exercise)[0]
        for where, text in _student_texts(module, exercise, capsys).items():
            hits = _leaks(exercise, answer, text)
            if hits:
                found.append(f"{exercise} {where}: {hits}")
    return found


def test_no_student_facing_text_gives_an_answer_away(capsys):
    """The question, the expected form and the hints after wrong answers state no answer."""
    found = _leak_report(exercises, capsys)
    assert not found, "answers in student-facing text:\n" + "\n".join(found)


@pytest.mark.parametrize("exercise", sorted(exercises.EXERCISES))
def test_student_facing_text_is_plain_text(exercise):
    text = exercises.answer_format(exercise)
    assert not re.search(r"``|:(func|mod|data|class):`", text), f"{exercise}: raw reStructuredText in {text!r}"
    assert exercises.EXERCISES[exercise].__name__.startswith("_"), "per-exercise checks are private"


def test_the_leak_scan_can_fail():
    """The scan catches the way the answers used to be printed (the old docstrings' phrases)."""
    assert _leaks("01-1", 1.98, "Measured: 1.98 % on that net (W1).  Accepted: 0.95-2.2 %.")
    assert _numeric_leaks("01-1", 1.98, "about 1-2 % on this net")
    assert _numeric_leaks("01-1", 1.98, "as a fraction: 0.0198")
    assert _numeric_leaks("02-1", 0.930, "93.0 % against 94.7 % for the exact gradient")
    assert _numeric_leaks("04-3", 2.2154, "Checked live, 2 % tolerance (it is 2.22)")
    assert _numeric_leaks("03-4", 200, "the answer is 200")
    assert not _numeric_leaks("03-4", 200, "one T from (25, 50, 100, 200, 400, 800)")
    assert _name_leaks({"stbp": True, "ide": False}, "Truth: STBP yes (the zero reset is exact); IDE no")
    assert _name_leaks({"tau_s": "closer", "rate": "further"}, "0.951 -> 0.938 (further) with the rate doubled")
    assert _name_leaks({"independent", "reuse"}, "both are biased: independent and reuse")
    assert _name_leaks("b", "Truth: (b) by default")
    assert _name_leaks([0], "exactly the cases without a recurrent layer pass (today: [0])")
    assert not _name_leaks({"stbp": True}, 'give {"stbp": True/False}')


def _exercise_cells(nb):
    """The cells of a notebook's exercise section (from its "Exercises" heading on) and every check cell."""
    cells, inside = [], False
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown" and re.search(r"^#+ .*Exercises", src, re.M):
            inside = True
            src = src[re.search(r"^#+ .*Exercises", src, re.M).start():]
        if inside or "exercises.check_answer(" in src:
            cells.append((c["cell_type"], src))
    return cells


def _parts(kind, src, ids):
    """(exercise, text) to scan: a code cell against the exercises it checks; a markdown cell's numbered item
    ("2. ..." or "**2. ...") against its own exercise, and the text before the first item against all of them."""
    if kind == "code":
        called = re.findall(r'exercises\.check_answer\("(\d\d-\d)"', src)
        return [(i, src) for i in (called or ids)]
    prefix = ids[0][:2]
    pieces = re.split(r"^\s*(?:\*\*)?(\d+)\.\s", src, flags=re.M)
    out = [(i, pieces[0]) for i in ids]
    for number, text in zip(pieces[1::2], pieces[2::2]):
        exercise = f"{prefix}-{number}"
        out += [(exercise, text)] if exercise in ids else [(i, text) for i in ids]
    return out


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebook_exercise_cells_hold_no_answer(path):
    """The shipped notebooks only ask: every check is called with None (or ...), and no cell states an answer."""
    nb = json.loads(path.read_text())
    cells = _exercise_cells(nb)
    ids = sorted(i for i in exercises.EXERCISES if i.startswith(path.name[:2]))
    assert cells and ids
    found, n_calls = [], 0
    for kind, src in cells:
        if kind == "code":
            calls = re.findall(r"exercises\.check_answer\(.*?\)", src)
            n_calls += len(calls)
            placeholders = re.findall(r'exercises\.check_answer\("\d\d-\d",\s*(?:None|\.\.\.)\s*\)', src)
            assert calls == placeholders, f"{path.name}: a check is called with an answer: {calls}"
        for exercise, part in _parts(kind, src, ids):
            hits = _leaks(exercise, exercise_solutions.solution(exercise)[0], part)
            if hits:
                found.append(f"{path.name} {kind} cell, {exercise}: {hits}")
    assert n_calls >= len(ids), f"{path.name}: {n_calls} checks called for {len(ids)} exercises (renamed?)"
    assert not found, "answers in the notebooks' exercise cells:\n" + "\n".join(found)


EXECUTED = ROOT / "docs" / "_build" / "jupyter_execute" / "notebooks"


@pytest.mark.parametrize("name", ["00_overview", "01_stbp", "02_st_rsbp", "03_ide", "04_ssnn_bp"])
def test_executed_notebook_outputs_hold_no_answer(name):
    """What the documentation site shows: the outputs of the executed notebooks (the site build runs them).
    Every output of a cell that calls a check is scanned against that exercise's answer, and every other
    output of the exercise section against all of the notebook's answers.  Skipped when the site is not
    built (CI builds it before the tests)."""
    path = EXECUTED / f"{name}.ipynb"
    if not path.exists():
        pytest.skip(f"the documentation site is not built ({path} is missing)")
    nb = json.loads(path.read_text())
    ids = sorted(i for i in exercises.EXERCISES if i.startswith(name[:2]))
    found, scanned = [], 0
    for kind, src in _exercise_cells(nb):
        if kind != "code":
            continue
        cell = next(c for c in nb["cells"] if "".join(c["source"]) == src)
        text = "".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                       for o in cell.get("outputs", []))
        scanned += bool(text)
        for exercise in re.findall(r'exercises\.check_answer\("(\d\d-\d)"', src) or ids:
            hits = _leaks(exercise, exercise_solutions.solution(exercise)[0], text)
            if hits:
                found.append(f"{name} output, {exercise}: {hits}")
    assert scanned, f"{name}: no exercise output to scan (was the notebook executed?)"
    assert not found, "answers in the executed notebooks' outputs:\n" + "\n".join(found)
