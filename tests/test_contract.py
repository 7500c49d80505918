"""Every available algorithm module offers the common contract (CONTRIBUTING.md), and it behaves."""
import re
import inspect
from dataclasses import fields

import numpy as np
import pytest
from tolerances import ANCHOR_ABS, ANCHOR_REL

import refsnn
from refsnn.checking import gradcheck
from refsnn.harness import problems, recipes

ALGOS = refsnn.available_algorithms()

REQUIRED = {
    "init_params": ["sizes", "cfg", "rng"],
    "loss_and_grad": ["params", "x", "y", "cfg", "rng", "info"],
    "reference_objective": ["params", "x", "y", "cfg", "rng"],
    "predict": ["params", "x", "cfg", "rng"],
    "encode": ["features", "cfg", "rng"],
}


def test_registry_names_and_errors():
    assert "stbp" in ALGOS
    with pytest.raises(ValueError, match="unknown name"):
        refsnn.algorithm("backprop")
    assert refsnn.algorithm("STBP") is refsnn.algorithm("stbp")


@pytest.mark.parametrize("algo", ALGOS)
def test_module_surface(algo):
    mod = refsnn.algorithm(algo)
    assert hasattr(mod, "Config") and fields(mod.Config), "Config must be a dataclass"
    cfg = mod.Config()
    assert isinstance(cfg.to_dict(), dict)
    with pytest.raises(Exception):
        setattr(cfg, fields(mod.Config)[0].name, 0)  # frozen
    for name, args in REQUIRED.items():
        fn = getattr(mod, name)
        params = list(inspect.signature(fn).parameters)
        assert params[: len(args)] == args, f"{algo}.{name} has parameters {params}, expected {args} first"
    assert mod.__doc__ and "Notation differences" in mod.__doc__, f"{algo}: module docstring needs a notation note"
    assert isinstance(mod.PRESETS, dict) and all(isinstance(c, mod.Config) for c in mod.PRESETS.values())
    assert inspect.signature(mod.loss_and_grad).parameters["info"].kind is inspect.Parameter.KEYWORD_ONLY
    assert algo in recipes.RECIPES and algo in problems.CASES, f"{algo}: needs a recipe and gradient-check cases"


@pytest.mark.parametrize("algo", ALGOS)
def test_info_is_filled_and_params_are_not_modified(algo):
    """One form of diagnostics: loss_and_grad(..., info=dict) fills the dict (with at least "pred"), the
    result does not depend on whether info is asked for, and params are never modified in place."""
    mod = refsnn.algorithm(algo)
    case = problems.gradcheck_cases(algo, 0)[0]
    before = {k: np.array(v, copy=True) for k, v in case.params.items()}
    loss0, g0 = mod.loss_and_grad(case.params, case.x, case.y, case.cfg, rng=case.rng)
    info = {}
    loss1, g1 = mod.loss_and_grad(case.params, case.x, case.y, case.cfg, rng=case.rng, info=info)
    assert loss0 == loss1 and all(np.array_equal(g0[k], g1[k]) for k in g0)   # same calls, same numbers
    assert info["pred"].shape == (np.shape(case.y)[0],)
    assert all(np.array_equal(case.params[k], before[k]) for k in before)


@pytest.mark.parametrize("algo", ALGOS)
def test_recipe_and_first_gradcheck_case(algo):
    """The recipe builds a valid config and settings; the first gradcheck case passes and its loss matches."""
    from refsnn.harness.train import Settings

    mod = refsnn.algorithm(algo)
    for dataset in ("digits", "fashion-mnist"):
        cfg, settings = recipes.recipe(algo, dataset)
        assert isinstance(cfg, mod.Config)
        Settings(**settings)
    case = problems.gradcheck_cases(algo, 0)[0]
    loss, grads = mod.loss_and_grad(case.params, case.x, case.y, case.cfg, rng=case.rng)
    assert set(grads) == set(case.params)
    for k in grads:
        assert grads[k].shape == np.shape(case.params[k]), k
    if case.kind == "exact":
        objective = mod.reference_objective(case.params, case.x, case.y, case.cfg, rng=case.rng)
        assert objective(case.params) == pytest.approx(loss, rel=ANCHOR_REL, abs=ANCHOR_ABS)
    rep = gradcheck.run_cases(mod, [case])[0][1]
    assert rep.passed, str(rep)


_CHOICES_DOC = re.compile(r"^\s*(\w+)\s*:\s*\{([^}]*)\}", re.M)


def _validator_choices(mod, field):
    """The names ``mod.Config`` accepts for ``field``: from the error a bogus value raises."""
    with pytest.raises(ValueError, match=field) as err:
        mod.Config(**{field: "no-such-choice"})
    listed = str(err.value).split("expected one of", 1)
    assert len(listed) == 2, f"{mod.__name__}.Config({field}=...): the error does not list the choices: {err.value}"
    return set(re.findall(r"'([^']+)'", listed[1]))


@pytest.mark.parametrize("name", ALGOS)
def test_config_docstring_lists_exactly_the_choices_the_validator_accepts(name):
    """Each ``field : {"a", "b"}`` line of a Config docstring names every value the validator accepts, and no
    other (aliases the validator also accepts, such as STBP's old reset names, are listed after "or")."""
    mod = refsnn.algorithm(name)
    found = _CHOICES_DOC.findall(mod.Config.__doc__ or "")
    assert found, f"{name}.Config documents no choices"
    for field, listed in found:
        documented = set(re.findall(r'"([^"]+)"', listed))
        accepted = _validator_choices(mod, field)
        aliases = set(getattr(mod, "RESET_ALIASES", {})) if field == "reset" else set()
        assert documented == accepted - aliases, (f"{name}.Config.{field}: the docstring lists {sorted(documented)}, "
                                                  f"the validator accepts {sorted(accepted)}")


#: The owners a Config field can have; each Config docstring groups its fields under these headings.
OWNERS = ("Model settings", "Neuron-family settings (the official code's and the peers' variants)",
          "Official-code variants", "Reconstruction choices (no public code)", "Numerical settings", "Backend settings")


@pytest.mark.parametrize("name", ALGOS)
def test_config_docstring_says_who_owns_each_field(name):
    """Every field of a Config is documented under exactly one owner: the model, the official code's variants
    (or, for SSNN-BP, which has no public code, our reconstruction's choices), numerics, or the backend."""
    mod = refsnn.algorithm(name)
    doc = mod.Config.__doc__
    sections = re.split(r"^    ([^\n]+)\n    -+\n", doc, flags=re.M)
    owned = {}
    for title, body in zip(sections[1::2], sections[2::2]):
        assert title in OWNERS, f"{name}.Config: a section {title!r} is not one of the owners {OWNERS}"
        for line in re.findall(r"^    (\w[\w, ]*) :", body, flags=re.M):
            for field in (f.strip() for f in line.split(",")):
                assert field not in owned, f"{name}.Config.{field}: documented under {owned[field]!r} and {title!r}"
                owned[field] = title
    missing = [f.name for f in fields(mod.Config) if f.name not in owned]
    assert not missing, f"{name}.Config: fields without an owner in the docstring: {missing}"
