"""The house rules of the layout (CONTRIBUTING.md), read from the source so that they stay true.

An algorithm file is the paper: it imports only the shared building blocks below it, never the training
loop, the gradient checker, the optimizers, the datasets, the harness modules, torch or another algorithm;
and it holds no recipe, test problem or benchmark.  Nothing in the repository points at documents that the
repository does not contain.
"""
import ast
import re
import subprocess
from pathlib import Path

import pytest

import refsnn

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "refsnn"
ALGOS = list(refsnn.ALGORITHMS)

#: What an algorithm module may import from refsnn: the shared building blocks below it.
ALLOWED_REFSNN = {"refsnn.surrogates", "refsnn.encoding", "refsnn.conv", "refsnn.solvers", "refsnn.ide_variants",
                  "refsnn._checks", "refsnn._jit",
                  "refsnn._paths"}
#: Third-party modules an algorithm may use (the library's run-time dependencies).
ALLOWED_THIRD_PARTY = {"numpy", "scipy"}


def _imports(path: Path) -> set:
    """Every module a file imports, anywhere in it (also inside functions), as dotted names."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path.name}: relative import; write 'from refsnn... import ...'")
            base = node.module or ""
            if base == "refsnn":
                names.update(f"refsnn.{a.name}" for a in node.names)
            else:
                names.add(base)
    return names


@pytest.mark.parametrize("algo", ALGOS)
def test_algorithm_modules_import_only_the_building_blocks(algo):
    imported = _imports(PKG / f"{algo}.py")
    import sys

    stdlib = set(sys.stdlib_module_names)
    bad = []
    for name in sorted(imported):
        top = name.split(".")[0]
        if name.startswith("refsnn"):
            if name not in ALLOWED_REFSNN:
                bad.append(name)
        elif top not in stdlib and top not in ALLOWED_THIRD_PARTY and top != "__future__":
            bad.append(name)
    assert not bad, f"refsnn/{algo}.py imports {bad}; an algorithm module may import only {sorted(ALLOWED_REFSNN)}, " \
                    f"the standard library and {sorted(ALLOWED_THIRD_PARTY)}"


def test_the_import_check_can_fail(tmp_path):
    """The rule above catches what it is meant to catch (a function-level import of the training loop, torch)."""
    f = tmp_path / "algo.py"
    f.write_text("import numpy as np\n\ndef g():\n    from refsnn import train\n    import torch\n")
    assert {"refsnn.train", "torch"} <= _imports(f)


@pytest.mark.parametrize("algo", ALGOS)
def test_algorithm_modules_hold_no_recipe_problem_or_benchmark(algo):
    tree = ast.parse((PKG / f"{algo}.py").read_text())
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    harness = {"recipe", "gradcheck_cases", "bench", "small_problem", "_small_problem", "SMALL", "accuracy_vs_T",
               "training_step_memory", "_peak_bytes", "_blas_one_thread"}
    assert not defined & harness, f"refsnn/{algo}.py defines {sorted(defined & harness)}: those belong in " \
                                  f"refsnn/recipes.py, refsnn/problems.py or refsnn/benchmarks.py"


def test_harness_modules_cover_every_algorithm():
    from refsnn import benchmarks, problems, recipes

    for table in (recipes.RECIPES, problems.CASES, benchmarks.BENCHMARKS):
        assert sorted(table) == sorted(ALGOS)


def _tracked_files():
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:  # pragma: no cover - not a git checkout (e.g. an sdist)
        pytest.skip("not a git checkout: cannot list the repository's files")
    return [ROOT / p for p in out.stdout.split()]


#: Pointers to the developers' notes beside the repository, which users do not have.  The pattern is put
#: together from its parts so that this guard does not itself contain a pointer it forbids.
_NOTES = ("shar" + "ed", "DES" + "IGN", "spe" + "cs")
OUTSIDE = re.compile(rf"{_NOTES[0]}/{_NOTES[2]}|{_NOTES[0]}/{_NOTES[1]}|{_NOTES[1]}\.md|\.\./{_NOTES[0]}"
                     rf"|(?i:\b{_NOTES[2][:-1]}s? §)")


def test_no_file_points_outside_the_repository():
    """Docstrings, notebooks, docs and tests cite only what the repository ships."""
    hits = []
    for path in _tracked_files():
        if path.suffix in (".png", ".npz", ".gz", ".pdf") or not path.is_file():
            continue
        if path == Path(__file__):
            continue
        text = path.read_text(errors="replace")
        for m in OUTSIDE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            hits.append(f"{path.relative_to(ROOT)}:{line}: {m.group(0)}")
    assert not hits, "references to documents outside the repository:\n" + "\n".join(hits)


def test_cited_docs_pages_exist():
    """Every ``docs/NAME.md`` that a file of the repository cites is in the repository."""
    missing = set()
    for path in _tracked_files():
        if path.suffix not in (".py", ".md", ".ipynb", ".toml", ".txt") or not path.is_file():
            continue
        for m in re.finditer(r"docs/([A-Za-z0-9_\-]+\.md)", path.read_text(errors="replace")):
            if m.group(1)[:-3].isupper():      # a placeholder such as docs/NAME.md in a template
                continue
            if not (ROOT / "docs" / m.group(1)).exists():
                missing.add(f"{path.relative_to(ROOT)} cites docs/{m.group(1)}")
    assert not missing, "\n".join(sorted(missing))
