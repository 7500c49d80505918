"""The README tells the truth: its Python example runs, and its two commands are the ones CI runs."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README should show how to use refsnn from Python"
    for block in blocks:
        if "your_grads" in block:  # the template for checking *your* gradients needs your arrays
            continue
        exec(compile(block, "README.md", "exec"), {})
    assert "PASSED" in capsys.readouterr().out


def _command_after(marker):
    lines = README.splitlines()
    i = lines.index(marker)
    return next(line for line in lines[i + 1:] if line and not line.startswith("```"))


def test_the_two_commands_are_there_and_ci_runs_the_test_command():
    main = _command_after("<!-- main-command -->")
    test = _command_after("<!-- test-command -->")
    assert "pip install -e ." in main and "refsnn train stbp" in main
    assert "pytest" in test and "[test]" in test
    ci = (ROOT / ".ci" / "run").read_text()
    assert "<!-- test-command -->" in ci and "pip install --quiet torch==2.13.0" in ci


def test_the_readme_is_a_front_door():
    """The README stays short (what refsnn is, how to start, where to read on); the results, the command line
    and the datasets live on the documentation site, which the README points to."""
    assert len(README.splitlines()) <= 150, f"README.md has {len(README.splitlines())} lines; move detail to docs/"
    for page in ("docs/usage.md", "docs/results.md", "docs/verify.md", "docs/course.md"):
        assert page in README and (ROOT / page).exists(), page
