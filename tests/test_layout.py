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

#: What an algorithm module may import from refsnn: the shared building blocks (the folder refsnn/blocks/).
ALLOWED_REFSNN = {f"refsnn.blocks.{p.stem}" for p in (PKG / "blocks").glob("*.py") if p.stem != "__init__"}
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
            for a in node.names:                        # 'from refsnn.blocks import conv' imports a module
                sub = f"{base}.{a.name}"
                names.add(sub if _is_module(sub) else base)
    return {_canonical(n) for n in names}


def _is_module(dotted: str) -> bool:
    if not dotted.startswith("refsnn."):
        return False
    parts = dotted.split(".")[1:]
    return parts[0] in refsnn.MOVED or (PKG.joinpath(*parts).with_suffix(".py")).exists()


def _canonical(dotted: str) -> str:
    """A flat name of the earlier layout (refsnn.train) as the module it names (refsnn.harness.train)."""
    parts = dotted.split(".")
    if len(parts) >= 2 and parts[0] == "refsnn" and parts[1] in refsnn.MOVED:
        return ".".join([refsnn.MOVED[parts[1]], *parts[2:]])
    return dotted


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
    assert {"refsnn.harness.train", "torch"} <= _imports(f)


@pytest.mark.parametrize("algo", ALGOS)
def test_algorithm_modules_hold_no_recipe_problem_or_benchmark(algo):
    tree = ast.parse((PKG / f"{algo}.py").read_text())
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    harness = {"recipe", "gradcheck_cases", "bench", "small_problem", "_small_problem", "SMALL", "accuracy_vs_T",
               "training_step_memory", "_peak_bytes", "_blas_one_thread"}
    assert not defined & harness, f"refsnn/{algo}.py defines {sorted(defined & harness)}: those belong in " \
                                  f"refsnn/harness/recipes.py, refsnn/harness/problems.py or refsnn/harness/benchmarks.py"


def test_harness_modules_cover_every_algorithm():
    from refsnn.harness import benchmarks, problems, recipes

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


#: The top of the package: the four papers (and STBP's stack of layers), the command, and the folders.
TOP = {"__init__", "__main__", "cli", "stbp_layers", *ALGOS}
FOLDERS = ("blocks", "checking", "harness", "teaching")


def test_the_top_of_the_package_is_the_papers_and_the_folders():
    files = {p.stem for p in PKG.glob("*.py")}
    assert files == TOP, f"refsnn/ holds {sorted(files - TOP)} beside the algorithms: put each module in the " \
                         f"folder of its job ({', '.join(FOLDERS)}; CONTRIBUTING.md, 'The house')"
    dirs = {p.name for p in PKG.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert dirs == set(FOLDERS)


def test_contributing_lists_every_module_where_it_lives():
    text = (ROOT / "CONTRIBUTING.md").read_text()
    missing = []
    for folder in FOLDERS:
        for p in sorted((PKG / folder).glob("*.py")):
            if p.stem != "__init__" and not re.search(rf"\b{p.stem}\.py\b", text):
                missing.append(f"refsnn/{folder}/{p.name}")
    for folder in FOLDERS:
        if f"refsnn/{folder}/" not in text:
            missing.append(f"refsnn/{folder}/")
    assert not missing, f"CONTRIBUTING.md does not say where these live: {missing}"


def test_the_flat_names_of_the_earlier_layout_import_the_same_modules():
    """`import refsnn.train`, `from refsnn import plots` and `refsnn.gradcheck` keep working, as the modules
    themselves (a copy would let monkeypatching one name miss the other)."""
    import importlib

    moved = {f"{folder}.{p.stem}" for folder in FOLDERS for p in (PKG / folder).glob("*.py") if p.stem != "__init__"}
    assert {v.split(".", 1)[1] for v in refsnn.MOVED.values()} <= moved, "refsnn.MOVED names a module that is gone"
    for old, new in refsnn.MOVED.items():
        try:
            real = importlib.import_module(new)
        except ImportError as exc:              # pragma: no cover - an optional dependency missing
            pytest.skip(f"{new}: {exc}")
        assert importlib.import_module(f"refsnn.{old}") is real
        assert getattr(refsnn, old) is real
        assert real.__name__ == new and real.__spec__.name == new, "the old name must not rename the module"
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        refsnn.nonexistent  # noqa: B018
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("refsnn.nonexistent")


@pytest.mark.parametrize("module, old, new", [("refsnn.harness.datasets", "verify", "checksums"),
                                              ("refsnn.checking.peers", "check", "verify"),
                                              ("refsnn.teaching.exercises", "check", "check_answer")])
def test_renamed_functions_still_answer_to_their_earlier_names(module, old, new, monkeypatch):
    """'verify' names checking another implementation against refsnn, 'check' the finite-difference check of
    refsnn's own gradient; the functions that used those words for something else were renamed, and the earlier
    names forward to the new ones with a DeprecationWarning."""
    import importlib

    mod = importlib.import_module(module)
    seen = []
    monkeypatch.setattr(mod, new, lambda *a, **k: seen.append((a, k)) or "forwarded")
    with pytest.warns(DeprecationWarning, match=f"is now .*{new}"):
        assert getattr(mod, old)(1, key=2) == "forwarded"
    assert seen == [((1,), {"key": 2})]
    assert old not in mod.__all__ and new in mod.__all__


def test_the_data_command_keeps_its_earlier_verb():
    from refsnn.cli import main

    assert main(["data", "verify", "digits"]) == main(["data", "checksums", "digits"]) == 0
