"""Every available algorithm module offers the common contract of DESIGN.md, and it behaves."""
import inspect
from dataclasses import fields

import numpy as np
import pytest

import refsnn
from refsnn import gradcheck

ALGOS = refsnn.available_algorithms()

REQUIRED = {
    "init_params": ["sizes", "cfg", "rng"],
    "loss_and_grad": ["params", "x", "y", "cfg", "rng"],
    "reference_objective": ["params", "x", "y", "cfg", "rng"],
    "predict": ["params", "x", "cfg", "rng"],
    "encode": ["features", "cfg", "rng"],
    "recipe": ["dataset"],
    "gradcheck_cases": ["seed"],
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


@pytest.mark.parametrize("algo", ALGOS)
def test_recipe_and_first_gradcheck_case(algo):
    """The recipe builds a valid config and settings; the first gradcheck case passes and its loss matches."""
    from refsnn.train import Settings

    mod = refsnn.algorithm(algo)
    cfg, settings = mod.recipe("digits")
    assert isinstance(cfg, mod.Config)
    Settings(**settings)
    case = mod.gradcheck_cases(0)[0]
    loss, grads = mod.loss_and_grad(case.params, case.x, case.y, case.cfg, rng=case.rng)
    assert set(grads) == set(case.params)
    for k in grads:
        assert grads[k].shape == np.shape(case.params[k]), k
    if case.kind == "exact":
        objective = mod.reference_objective(case.params, case.x, case.y, case.cfg, rng=case.rng)
        assert objective(case.params) == pytest.approx(loss, rel=1e-9, abs=1e-12)
    rep = gradcheck.run_cases(mod, [case])[0][1]
    assert rep.passed, str(rep)
