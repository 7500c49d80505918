"""Every exercise's self-check (refsnn/exercises.py) passes on the intended answer and fails on the wrong ones.

The wrong answers include the ones the exercises used to suggest: the diagonal ST-RSBP gradient being exact
(because the first case, feed-forward, passes), 0.4-0.7 % for the paper's literal temporal term, and "only
the reused update port is biased" in V2 at T = 2.  The notebooks call exactly these checks, one per exercise.
"""
import json
import re
from pathlib import Path

import pytest

from refsnn import exercises

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
}


def _value(answer):
    return answer() if callable(answer) else answer


def test_every_exercise_has_answers_here():
    assert sorted(INTENDED) == sorted(exercises.EXERCISES) == sorted(WRONG)
    assert len(exercises.EXERCISES) == 17


@pytest.mark.parametrize("exercise", sorted(INTENDED))
def test_check_passes_on_the_intended_answer(exercise):
    assert exercises.check(exercise, _value(INTENDED[exercise]), quiet=True)


@pytest.mark.parametrize("exercise", sorted(WRONG))
def test_check_fails_on_wrong_answers(exercise):
    for answer in WRONG[exercise]:
        assert not exercises.check(exercise, answer, quiet=True), f"{exercise} accepted {answer!r}"


@pytest.mark.parametrize("exercise", sorted(exercises.EXERCISES))
def test_unanswered_and_malformed_answers_are_not_accepted(exercise, capsys):
    assert not exercises.check(exercise, None)
    assert "not answered yet" in capsys.readouterr().out
    assert not exercises.check(exercise, "no idea", quiet=True)
    assert exercises.answer_format(exercise)


def test_unknown_exercise_is_an_error():
    with pytest.raises(ValueError, match="exercise"):
        exercises.check("09-9", 1)


def test_the_notebooks_call_every_check_once():
    """Each notebook's exercises end with exercises.check(ID, ...), and the IDs are exactly the checks."""
    called = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        src = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
        ids = re.findall(r'exercises\.check\("(\d\d-\d)"', src)
        assert all(i.startswith(path.name[:2]) for i in ids), f"{path.name} checks another notebook's exercise"
        called += ids
    assert sorted(called) == sorted(exercises.EXERCISES)
