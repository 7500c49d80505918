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
the paper lives in four folders, by job:

* ``refsnn.blocks``: the building blocks an algorithm may import (surrogates,
  encoding, convolution, solvers, IDE's official-code variants, argument checks,
  the numba shim);
* ``refsnn.checking``: checking gradients, yours and refsnn's (finite differences,
  case files and golden vectors, the peers' models, the PyTorch golds);
* ``refsnn.harness``: training and measuring (recipes, test problems, datasets,
  optimizers, the training loop, benchmarks, experiments);
* ``refsnn.teaching``: the notebooks' plots and exercise checks.

The flat names of earlier versions (``refsnn.surrogates``, ``refsnn.train``,
``refsnn.plots``, ...) still import, as the same module objects (:data:`MOVED`).
"""

from __future__ import annotations

from refsnn.blocks import _pools  # noqa: F401, I001  -- first: OpenBLAS reads its thread policy when NumPy loads it

import importlib
import importlib.abc
import importlib.util
import sys

from refsnn.blocks._memory import keep_freed_memory

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
    """Check another implementation's gradient in a case file against refsnn's (:func:`refsnn.checking.verification.verify`)."""
    from refsnn.checking.verification import verify as _verify

    return _verify(algo, case, cfg, tol=tol, keys=keys, alpha=alpha)


def from_nir(graph_or_path, **conventions):
    """Read a NIR graph as a refsnn STBP stack under stated conventions (:func:`refsnn.checking.nir_io.from_nir`)."""
    from refsnn.checking.nir_io import from_nir as _from_nir

    return _from_nir(graph_or_path, **conventions)


def to_nir(network, params, input_shape, *, dt):
    """Write a refsnn STBP stack as a NIR graph (:func:`refsnn.checking.nir_io.to_nir`)."""
    from refsnn.checking.nir_io import to_nir as _to_nir

    return _to_nir(network, params, input_shape, dt=dt)


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


#: Where each module of the earlier flat layout lives now.  ``import refsnn.train``, ``from refsnn import
#: plots`` and ``refsnn.gradcheck`` keep working and give the module itself (not a copy), so code written for
#: the flat layout, monkeypatching included, sees the same objects as code that uses the folders.
MOVED = {
    **{m: f"refsnn.blocks.{m}" for m in ("surrogates", "encoding", "conv", "solvers", "ide_variants",
                                         "_checks", "_jit", "_paths", "_pools", "_memory")},
    **{m: f"refsnn.checking.{m}" for m in ("gradcheck", "verification", "peers", "torch_golds", "torch_ide_port")},
    **{m: f"refsnn.harness.{m}" for m in ("recipes", "problems", "benchmarks", "experiments", "_bench_worker",
                                          "train", "datasets", "optim")},
    **{m: f"refsnn.teaching.{m}" for m in ("exercises", "exercise_solutions", "plots")},
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import ``refsnn.<old name>`` as the module that now lives at ``MOVED[old name]``."""

    def find_spec(self, fullname, path=None, target=None):
        prefix, _, name = fullname.partition(".")
        if prefix != "refsnn" or name not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name.partition(".")[2]])
        spec.loader_state = module.__spec__          # the import system is about to overwrite it
        return module

    def exec_module(self, module):
        module.__spec__ = module.__spec__.loader_state  # the module keeps its own name and spec


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())


def __getattr__(name):
    """``refsnn.plots`` and the other flat names, as attributes, without an explicit import first."""
    if name in MOVED:
        return importlib.import_module(f"refsnn.{name}")
    raise AttributeError(f"module 'refsnn' has no attribute {name!r}")
