"""refsnn: NumPy reference implementations of four spiking-neural-network training algorithms.

=============  ==========================================================  ===================
name           algorithm                                                   module
=============  ==========================================================  ===================
``stbp``       spatio-temporal backprop, surrogate-gradient BPTT           :mod:`refsnn.stbp`
``st_rsbp``    spike-train-level recurrent SNN backprop                    :mod:`refsnn.st_rsbp`
``ide``        implicit differentiation on the equilibrium of feedback     :mod:`refsnn.ide`
``ssnn_bp``    stochastic spike-based backprop, coincidence updates        :mod:`refsnn.ssnn_bp`
=============  ==========================================================  ===================

Every algorithm module has the same functional surface (``Config``,
``PRESETS``, ``init_params``, ``loss_and_grad``, ``reference_objective``,
``predict``, ``encode``); :func:`algorithm` finds one by name.  What is not
the paper lives beside them, keyed by algorithm name: training recipes in
:mod:`refsnn.recipes`, small test problems and gradient-check cases in
:mod:`refsnn.problems`, benchmarks and experiments in
:mod:`refsnn.benchmarks`, the PyTorch golds in :mod:`refsnn.torch_golds`.
"""

from __future__ import annotations

from refsnn import _pools  # noqa: F401, I001  -- first: OpenBLAS reads its thread policy when NumPy loads it

import importlib
import importlib.util

from refsnn._memory import keep_freed_memory

__version__ = "0.1.0"

#: Algorithm names and the modules that implement them.
ALGORITHMS = {
    "stbp": "refsnn.stbp",
    "st_rsbp": "refsnn.st_rsbp",
    "ide": "refsnn.ide",
    "ssnn_bp": "refsnn.ssnn_bp",
}


def available_algorithms() -> list:
    """Names of the algorithms whose module is present in this installation."""
    return [name for name, mod in ALGORITHMS.items() if importlib.util.find_spec(mod) is not None]


def verify(algo, case, cfg=None, *, tol: float = 1e-9, keys=None, alpha: float = 1e-3):
    """Check another implementation's gradient in a case file against refsnn's (:func:`refsnn.verification.verify`)."""
    from refsnn.verification import verify as _verify

    return _verify(algo, case, cfg, tol=tol, keys=keys, alpha=alpha)


def algorithm_name(algo) -> str:
    """The registry name ("stbp", ...) of an algorithm given by name (any case, "-" for "_") or by its module."""
    if not isinstance(algo, str):
        algo = getattr(algo, "__name__", None)
        if not isinstance(algo, str):
            raise TypeError(f"algorithm: expected a name or an algorithm module, got {type(algo).__name__}")
        algo = algo.rsplit(".", 1)[-1]
    algorithm(algo)                              # one clean error for unknown names
    return algo.strip().lower().replace("-", "_")


def algorithm(name: str):
    """The module implementing algorithm ``name`` ("stbp", "st_rsbp", "ide", "ssnn_bp"; "-" may replace "_")."""
    if not isinstance(name, str):
        raise TypeError(f"algorithm: expected a name, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in ALGORITHMS:
        raise ValueError(f"algorithm: unknown name {name!r}; expected one of {', '.join(ALGORITHMS)}")
    if importlib.util.find_spec(ALGORITHMS[key]) is None:
        raise ValueError(f"algorithm: {key!r} is not implemented in this version of refsnn "
                         f"(available: {', '.join(available_algorithms())})")
    return importlib.import_module(ALGORITHMS[key])
