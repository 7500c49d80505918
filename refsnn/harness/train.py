"""One training loop for every algorithm, through the algorithm contract.

``train("stbp")`` (or ``refsnn train stbp`` on the command line):

1. takes the algorithm's default ``(Config, settings)`` from
   :func:`refsnn.harness.recipes.recipe` and applies your overrides;
2. loads the dataset (``refsnn.harness.datasets``), scales pixels to [0, 1] and
   flattens images to feature vectors;
3. for each epoch: shuffles, and for each minibatch encodes the features
   (``module.encode``), calls ``module.loss_and_grad`` and takes an optimizer
   step (``refsnn.harness.optim``); then evaluates test accuracy with ``module.predict``;
4. after every epoch writes, atomically, ``checkpoint.npz`` (parameters,
   optimizer state, history) and ``metrics.json`` (``test_accuracy``, the
   per-epoch history, the config, the settings, the seed and the versions).

Randomness is keyed, never sequential: the generator for initialisation, for
the shuffle of epoch ``e``, for batch ``k`` of epoch ``e`` and for evaluation
are each ``np.random.default_rng([seed, purpose, e, k])``.  So the same seed
gives a bit-identical run, and a run resumed from the checkpoint of epoch
``e`` (``resume=True``) continues exactly as the uninterrupted run would.

Learning-rate schedules (``settings["schedule"]``): ``"constant"``,
``"step"`` (multiply by ``gamma`` at each epoch in ``milestones``),
``"inv_sqrt"`` (``lr / sqrt(epoch + 1)``, ST-RSBP's) and ``"list"``
(``lrs[epoch]``: one given learning rate per epoch).  Each is a function of
the settings and the epoch only, so a resumed run continues on schedule.

Every call is ``loss_and_grad(params, x, y, cfg, rng=rng, info=info)`` with a
fresh ``info`` dict; the module fills it with its diagnostics, among them
``info["pred"]`` (its training-time predictions).  Two optional hooks:

* **state** (e.g. IDE's BatchNorm running statistics): keys listed by the
  module's ``state_keys(cfg)`` are never touched by the optimizer; after each
  step the loop writes ``info["state"]`` (their new values) into ``params``.
* **per-sample weights** (e.g. ST-RSBP's boosting): if the module defines
  ``update_sample_weights(weights, y, correct, cfg) -> weights``, the loop
  keeps one weight per training sample (starting at 1), passes
  ``sample_weight=w[batch]`` to ``loss_and_grad``, and after each epoch
  replaces the weights by ``update_sample_weights(w, y_train, correct, cfg)``.
  The weights are saved in the checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

import refsnn
from refsnn.blocks import _pools
from refsnn.harness import datasets, optim, recipes
from refsnn.blocks._checks import check_choice, check_in_range, check_int, check_positive
from refsnn.blocks._jit import jit_status

__all__ = ["Settings", "train", "lr_at", "versions", "load_checkpoint", "TrainingDiverged", "CheckpointError",
           "RunFolderError"]

# Keys of the random streams (see the module docstring).
_INIT, _SHUFFLE, _BATCH, _EVAL = 0, 1, 2, 3


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last checkpoint is kept."""


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not belong to this run; the file is left as it is."""


class RunFolderError(OSError):
    """The run folder cannot be created or written (the message says which and why); nothing half-written stays."""


@dataclass
class Settings:
    """Training settings (the algorithm's ``recipe`` gives the defaults).

    Parameters
    ----------
    hidden : list
        Hidden layer sizes; the network is ``[n_in, *hidden, n_classes]``.
        Entries are ints, or strings an algorithm understands (e.g. ``"R400"``).
    optimizer : {"adam", "sgd"}
    lr : float
        Initial learning rate.
    momentum, weight_decay : float
        SGD momentum; L2 weight decay (both optimizers).
    epochs, batch_size : int
    schedule : {"constant", "step", "inv_sqrt", "list"}
    lrs : list of float
        The "list" schedule's learning rate of each (0-based) epoch; it needs
        at least ``epochs`` entries (``lr`` is then unused).  Give the whole
        list from the start: a resumed run must have the same settings.
    milestones : list of int
        Epochs (0-based) at whose start the "step" schedule multiplies by ``gamma``.
    gamma : float
    eval_batch_size : int
        Batch size for evaluation.
    limit_train, limit_test : int or None
        Use only the first samples of each split (quick runs).
    """

    hidden: list = field(default_factory=lambda: [100])
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.0
    weight_decay: float = 0.0
    epochs: int = 10
    batch_size: int = 32
    schedule: str = "constant"
    lrs: list = field(default_factory=list)
    milestones: list = field(default_factory=list)
    gamma: float = 0.1
    eval_batch_size: int = 256
    limit_train: int | None = None
    limit_test: int | None = None

    def __post_init__(self):
        check_choice("optimizer", self.optimizer, ("adam", "sgd"))
        check_positive("lr", self.lr)
        check_in_range("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        if self.optimizer != "sgd" and self.momentum != 0:
            raise ValueError(f"momentum: applies to optimizer 'sgd' only (Adam has its own betas), got momentum="
                             f"{self.momentum} with optimizer {self.optimizer!r}")
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("eval_batch_size", self.eval_batch_size, minimum=1)
        check_choice("schedule", self.schedule, ("constant", "step", "inv_sqrt", "list"))
        if not isinstance(self.lrs, (list, tuple, np.ndarray)):
            raise TypeError(f"lrs: expected a list of learning rates, got {type(self.lrs).__name__}")
        self.lrs = [float(check_positive(f"lrs[{i}]", v)) for i, v in enumerate(self.lrs)]
        if self.schedule == "list" and len(self.lrs) < self.epochs:
            raise ValueError(f"lrs: the 'list' schedule needs one learning rate per epoch, got {len(self.lrs)} "
                             f"for {self.epochs} epochs")
        if self.schedule != "list" and self.lrs:
            raise ValueError(f"lrs: applies to schedule 'list' only, got {len(self.lrs)} rates with schedule "
                             f"{self.schedule!r}")
        check_positive("gamma", self.gamma)
        for name in ("hidden", "milestones"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple, np.ndarray)):
                raise TypeError(f"{name}: expected a list (e.g. {name}=[128]), got {type(value).__name__} {value!r}")
        self.hidden = list(self.hidden)
        self.milestones = [check_int("milestones", m, minimum=0) for m in self.milestones]
        for name in ("limit_train", "limit_test"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), minimum=1)


def lr_at(settings: Settings, epoch: int) -> float:
    """Learning rate of (0-based) ``epoch`` under the schedule."""
    if settings.schedule == "step":
        return settings.lr * settings.gamma ** sum(epoch >= m for m in settings.milestones)
    if settings.schedule == "inv_sqrt":
        return settings.lr / math.sqrt(epoch + 1)
    if settings.schedule == "list":
        if not 0 <= epoch < len(settings.lrs):
            raise ValueError(f"epoch: the 'list' schedule has {len(settings.lrs)} learning rates, none for epoch "
                             f"{epoch}")
        return settings.lrs[epoch]
    return settings.lr


def versions() -> dict:
    """Versions of everything that can change a result."""
    out = {"refsnn": refsnn.__version__, "python": platform.python_version(), "numpy": np.__version__,
           "platform": platform.platform(), "jit": jit_status(), "threads": _pools.status()}
    for mod in ("scipy", "numba", "sklearn"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:  # pragma: no cover
            out[mod] = None
    return out


def _rng(seed: int, *keys) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _features(X) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype == object:
        raise ValueError("dataset: its samples are variable-length event streams (e.g. N-MNIST); training needs "
                         "fixed-size samples: bin each one with refsnn.harness.datasets.bin_events first")
    flat = X.reshape(X.shape[0], -1).astype(np.float64)
    return flat / 255.0 if X.dtype == np.uint8 else flat


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _write_atomic(path: Path, write) -> None:
    """Write through ``write(fileobj)`` into ``path.tmp``, flush to disk, then rename over ``path``.

    If anything fails (a full disk, a folder made read-only meanwhile), the temporary file is removed, the
    previous ``path`` is untouched, and :class:`RunFolderError` says what failed.
    """
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        kept = f"; the previous {path.name} is kept" if path.exists() else ""
        raise RunFolderError(f"could not write {path}: {exc.strerror or exc}{kept}") from None


def _prepare_run_folder(out: Path) -> None:
    """Create ``out`` and prove that it is writable, before any epoch is trained."""
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"out: {out} is a file, not a folder; give --out a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".refsnn-write-test-{os.getpid()}"
        with open(probe, "wb") as f:
            f.write(b"ok")
        probe.unlink()
    except OSError as exc:
        raise RunFolderError(f"out: cannot write into {out} ({exc.strerror or exc}); give --out a writable "
                             f"folder") from None


def _save_checkpoint(path: Path, params: dict, opt, meta: dict, state: dict | None = None) -> None:
    arrays = {f"param/{k}": v for k, v in params.items()}
    arrays.update({f"opt/{k}": np.asarray(v) for k, v in opt.state_dict().items()})
    arrays.update({f"state/{k}": np.asarray(v) for k, v in (state or {}).items()})
    arrays["meta"] = np.array(json.dumps(meta, default=_json_default))
    _write_atomic(path, lambda f: np.savez(f, **arrays))


_RESTART_HINT = "start over with --restart (the old file is kept as {name}.bad) or use another --out"


def _read_checkpoint(path: Path) -> dict:
    """Every array of a checkpoint, read in full (so that a truncated or corrupted file fails here)."""
    import zipfile
    import zlib

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} cannot be read ({why}); "
                              + _RESTART_HINT.format(name=path.name)) from None


def load_checkpoint(path) -> tuple:
    """Read a checkpoint: ``(params, optimizer_state, meta)``.

    Raises :class:`CheckpointError` (naming the file) when it is not a readable checkpoint: truncated,
    corrupted, or missing its metadata, history or parameters.
    """
    path = Path(path)
    arrays = _read_checkpoint(path)
    params = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("param/")}
    opt_state = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("opt/")}
    try:
        meta = json.loads(str(arrays["meta"]))
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a JSON object")
        for key in ("history", "epochs_done"):
            if key not in meta:
                raise ValueError(f"metadata has no {key!r}")
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is not a refsnn checkpoint ({exc}); "
                              + _RESTART_HINT.format(name=path.name)) from None
    if not params:
        raise CheckpointError(f"checkpoint {path} holds no parameters; " + _RESTART_HINT.format(name=path.name))
    return params, opt_state, meta


def _checkpoint_params(path: Path, saved: dict, expected: dict) -> dict:
    """The saved parameters, checked key by key and shape by shape against freshly initialised ones."""
    missing = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    if missing or extra:
        raise CheckpointError(f"checkpoint {path}: parameters {sorted(saved)} do not match this network's "
                              f"{sorted(expected)} (missing {missing}, unexpected {extra}); "
                              + _RESTART_HINT.format(name=path.name))
    for k, v in expected.items():
        if np.shape(saved[k]) != np.shape(v):
            raise CheckpointError(f"checkpoint {path}: parameter {k!r} has shape {np.shape(saved[k])}, this network "
                                  f"needs {np.shape(v)}; " + _RESTART_HINT.format(name=path.name))
        if not np.all(np.isfinite(saved[k])):
            raise CheckpointError(f"checkpoint {path}: parameter {k!r} holds NaN or infinite values; "
                                  + _RESTART_HINT.format(name=path.name))
    return {k: np.array(saved[k], dtype=np.asarray(v).dtype) for k, v in expected.items()}


def _load_loop_state(path) -> dict:
    """The training loop's own arrays in a checkpoint (e.g. per-sample weights)."""
    arrays = _read_checkpoint(Path(path))
    return {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("state/")}


def _set_aside(path: Path) -> Path:
    """Rename ``path`` to ``path.bad`` (or ``.bad.1``, ``.bad.2``, ... if taken); returns the new name."""
    for k in range(1000):
        target = path.with_name(path.name + (".bad" if k == 0 else f".bad.{k}"))
        if not target.exists():
            try:
                os.replace(path, target)
            except OSError as exc:
                raise RunFolderError(f"restart: cannot rename {path} ({exc.strerror or exc})") from None
            return target
    raise RunFolderError(f"restart: {path.name}.bad .. .bad.999 all exist in {path.parent}; remove some")


def _evaluate(module, params, cfg, F, y, batch_size, seed, epoch, tag) -> float:
    correct = 0
    for k, start in enumerate(range(0, len(y), batch_size)):
        rng = _rng(seed, _EVAL, tag, epoch, k)
        xb = module.encode(F[start:start + batch_size], cfg, rng)
        correct += int(np.sum(module.predict(params, xb, cfg, rng=rng) == y[start:start + batch_size]))
    return correct / len(y)


def _say(line: str) -> None:
    """The default ``log``: print and flush, so that a log file shows each epoch as it ends."""
    print(line, flush=True)


def train(algo, dataset: str = "digits", *, seed: int = 0, out=None, resume: bool = False, restart: bool = False,
          config=None, progress: bool = True, log=_say, **overrides) -> dict:
    """Train algorithm ``algo`` on ``dataset`` and return the metrics dict.

    Parameters
    ----------
    algo : str or module
        ``"stbp"``, ``"st_rsbp"``, ``"ide"``, ``"ssnn_bp"`` (or the module).
    dataset : str
        A name :func:`refsnn.harness.datasets.load` knows (default: the bundled digits).
    seed : int
        Seeds everything (initialisation, shuffles, encodings, evaluation).
    out : path, optional
        Run directory for ``checkpoint.npz``, ``metrics.json`` and
        ``params.npz``.  Nothing is written when None.
    resume : bool
        Continue from ``out/checkpoint.npz`` (it must come from the same
        algorithm, dataset, seed, config and settings; only ``epochs`` may differ).
        An unreadable or foreign checkpoint raises :class:`CheckpointError` and is left as it is.
    restart : bool
        Start from scratch even if ``out/checkpoint.npz`` exists: the old file is
        first renamed to ``checkpoint.npz.bad`` (never deleted).
    config : Config or dict, optional
        The algorithm's ``Config``, or a dict of fields to change in the recipe's.
    progress : bool
        Show a tqdm progress bar.
    log : callable
        Receives one line per epoch (default: printed and flushed, so that
        ``refsnn train ... > run.log`` shows each epoch as it ends; ``None`` for silence).
    **overrides
        Any :class:`Settings` field (``epochs=5``, ``lr=1e-2``, ``hidden=[64]``, ...).

    Returns
    -------
    dict
        The contents of ``metrics.json``; the trained parameters are under the
        extra key ``"params"`` (not written to the JSON).
    """
    algo_name = refsnn.algorithm_name(algo)
    module = refsnn.algorithm(algo_name)
    seed = check_int("seed", seed, minimum=0)
    if resume and restart:
        raise ValueError("resume, restart: choose one (resume continues the checkpoint, restart starts over)")
    log = log or (lambda *_: None)
    cfg, settings = _config_and_settings(algo_name, dataset, config, overrides)

    Xtr, ytr = datasets.load(dataset, "train", limit=settings.limit_train)
    Xte, yte = datasets.load(dataset, "test", limit=settings.limit_test)
    Ftr, Fte = _features(Xtr), _features(Xte)
    n_classes = datasets.n_classes(dataset)
    sizes = [Ftr.shape[1], *settings.hidden, n_classes]
    if getattr(cfg, "arch", None) is not None:                     # the architecture fixes the layers
        sizes = [Ftr.shape[1], n_classes]

    # (an empty ``lrs`` is left out, so that checkpoints written before the "list" schedule still resume)
    meta_fixed = {"algorithm": algo_name, "dataset": dataset, "seed": seed, "config": cfg.to_dict(),
                  "settings": {k: v for k, v in asdict(settings).items()
                               if k != "epochs" and not (k == "lrs" and not v)}, "sizes": sizes}
    out = Path(out) if out is not None else None
    ckpt = out / "checkpoint.npz" if out is not None else None
    history, start_epoch = [], 0
    params = module.init_params(sizes, cfg, _rng(seed, _INIT))
    opt = _optimizer(module, cfg, settings)
    reweight = getattr(module, "update_sample_weights", None)      # optional hook (module docstring)
    sample_w = np.ones(len(ytr)) if reweight is not None else None

    if (resume or restart) and ckpt is None:
        raise ValueError(f"{'resume' if resume else 'restart'}: needs an output directory (out=...)")
    if resume:
        params, history, start_epoch, sample_w = _resume_from(ckpt, meta_fixed, params, opt, sample_w)
        log(f"resuming {algo_name} on {dataset} after epoch {start_epoch}")
    if out is not None:
        _prepare_run_folder(out)                     # fail now, not after the first epoch
        if restart and ckpt.exists():
            kept = _set_aside(ckpt)
            log(f"restarting: the old checkpoint is kept as {kept}")

    tqdm = _progress_bar() if progress else None
    n = len(ytr)
    eval_subset = np.arange(min(n, 1000))
    t_start = time.perf_counter()
    metrics = None
    for epoch in range(start_epoch, settings.epochs):
        t0 = time.perf_counter()
        opt.lr = lr_at(settings, epoch)
        try:
            losses, correct = _train_epoch(module, params, opt, cfg, settings, Ftr, ytr, sample_w, seed, epoch,
                                           tqdm, algo_name)
        except KeyboardInterrupt:
            done = f"epochs 1..{epoch}" if epoch else "no finished epoch"
            log(f"interrupted during epoch {epoch + 1}; the checkpoint holds {done}"
                + (f". Continue with: refsnn train {algo_name} --out {out} --resume" if out is not None else ""))
            raise
        if sample_w is not None:
            sample_w = np.asarray(reweight(sample_w, ytr, correct, cfg), dtype=np.float64)
        train_acc = _evaluate(module, params, cfg, Ftr[eval_subset], ytr[eval_subset], settings.eval_batch_size,
                              seed, epoch, 0)
        test_acc = _evaluate(module, params, cfg, Fte, yte, settings.eval_batch_size, seed, epoch, 1)
        seconds = time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "lr": opt.lr, "train_loss": float(np.mean(losses)),
                        "train_accuracy": train_acc, "test_accuracy": test_acc, "seconds": seconds})
        log(f"{algo_name} epoch {epoch + 1:>3}/{settings.epochs}  lr {opt.lr:.2e}  loss {np.mean(losses):.4f}  "
            f"train acc {train_acc:.4f}  test acc {test_acc:.4f}  ({seconds:.1f} s)")
        metrics = _metrics(meta_fixed, settings, history, epoch + 1, n, len(yte), time.perf_counter() - t_start)
        if out is not None:
            _save_checkpoint(ckpt, params, opt, {**meta_fixed, "history": history, "epochs_done": epoch + 1},
                             state=None if sample_w is None else {"sample_weight": sample_w})
            _write_atomic(out / "metrics.json",
                          lambda f: f.write(json.dumps(metrics, indent=2, default=_json_default).encode()))
    if metrics is None:  # resumed a finished run: nothing left to do
        metrics = _metrics(meta_fixed, settings, history, start_epoch, n, len(yte), 0.0)
        log(f"{algo_name}: the checkpoint already holds all {start_epoch} epochs")
    if out is not None:
        _write_atomic(out / "params.npz", lambda f: np.savez(f, **params))
    return {**metrics, "params": params}


def _config_and_settings(algo_name, dataset, config, overrides):
    """The recipe's Config and Settings for ``dataset``, with ``config`` (a Config or a dict of changes) and
    the Settings ``overrides`` applied, each checked."""
    cfg, recipe_settings = recipes.recipe(algo_name, dataset)
    if config is not None:
        if isinstance(config, dict):
            cfg = replace(cfg, **config)
        elif isinstance(config, type(cfg)):
            cfg = config
        else:
            raise TypeError(f"config: expected {type(cfg).__module__}.Config or a dict, got {type(config).__name__}")
    known = {f.name for f in fields(Settings)}
    unknown = set(overrides) - known
    if unknown:
        raise TypeError(f"train: unknown setting(s) {sorted(unknown)}; expected among {sorted(known)}")
    settings = Settings(**{**recipe_settings, **overrides})
    if getattr(cfg, "arch", None) is not None and "hidden" in overrides:
        raise ValueError(f"hidden: the configuration's arch {cfg.arch!r} fixes the layers; drop --hidden")
    return cfg, settings


def _optimizer(module, cfg, settings):
    """The optimizer the settings name; an algorithm's state (BatchNorm buffers, ...) is never stepped."""
    frozen = module.state_keys(cfg) if hasattr(module, "state_keys") else ()      # state, not parameters
    opt_kwargs = {"weight_decay": settings.weight_decay, "frozen": frozen}
    if settings.optimizer == "sgd":
        opt_kwargs["momentum"] = settings.momentum
    return optim.make(settings.optimizer, settings.lr, **opt_kwargs)


def _resume_from(ckpt, meta_fixed, params, opt, sample_w):
    """``(params, history, epochs_done, sample_w)`` from the checkpoint ``ckpt``, which must come from the same
    run (``meta_fixed``); the optimizer's state is loaded into ``opt``."""
    if not ckpt.exists():
        raise FileNotFoundError(f"resume: no checkpoint at {ckpt}; start the run without resume first")
    saved_params, opt_state, meta = load_checkpoint(ckpt)
    mismatch = [k for k in meta_fixed if json.loads(json.dumps(meta_fixed[k], default=_json_default)) != meta.get(k)]
    if mismatch:
        raise CheckpointError(f"resume: {ckpt} was written with different {', '.join(mismatch)}; "
                              f"use another --out directory or the same settings")
    params = _checkpoint_params(ckpt, saved_params, params)
    try:
        opt.load_state_dict(opt_state)
        history, start_epoch = list(meta["history"]), check_int("epochs_done", meta["epochs_done"], minimum=0)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {ckpt}: its optimizer state or history is incomplete ({exc}); "
                              + _RESTART_HINT.format(name=ckpt.name)) from None
    if len(history) != start_epoch:
        raise CheckpointError(f"checkpoint {ckpt}: {len(history)} history entries for {start_epoch} epochs; "
                              + _RESTART_HINT.format(name=ckpt.name))
    if sample_w is not None:
        saved_w = _load_loop_state(ckpt).get("sample_weight", sample_w)
        if np.shape(saved_w) != sample_w.shape:
            raise CheckpointError(f"checkpoint {ckpt}: {np.size(saved_w)} sample weights for {sample_w.size} "
                                  f"training samples; " + _RESTART_HINT.format(name=ckpt.name))
        sample_w = np.asarray(saved_w, dtype=np.float64)
    return params, history, start_epoch, sample_w


def _progress_bar():
    """tqdm, or None when it is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm


def _train_epoch(module, params, opt, cfg, settings, Ftr, ytr, sample_w, seed, epoch, tqdm, algo_name):
    """One epoch of minibatch steps, in the seeded order; updates ``params`` in place.  Returns the batch
    losses and, when samples are re-weighted, which samples each batch predicted right."""
    n = len(ytr)
    order = _rng(seed, _SHUFFLE, epoch).permutation(n)
    batches = [order[i:i + settings.batch_size] for i in range(0, n, settings.batch_size)]
    bar = tqdm(total=len(batches), desc=f"{algo_name} epoch {epoch + 1}/{settings.epochs}", leave=False,
               file=sys.stderr) if tqdm else None
    losses = []
    correct = np.zeros(n, dtype=bool) if sample_w is not None else None
    try:
        for k, idx in enumerate(batches):
            rng = _rng(seed, _BATCH, epoch, k)
            xb = module.encode(Ftr[idx], cfg, rng)
            info = {}
            if sample_w is None:
                loss, grads = module.loss_and_grad(params, xb, ytr[idx], cfg, rng=rng, info=info)
            else:
                loss, grads = module.loss_and_grad(params, xb, ytr[idx], cfg, rng=rng,
                                                   sample_weight=sample_w[idx], info=info)
                correct[idx] = np.asarray(info["pred"]) == ytr[idx]
            if not math.isfinite(loss) or not all(np.all(np.isfinite(g)) for g in grads.values()):
                raise TrainingDiverged(f"epoch {epoch + 1}, batch {k}: loss or gradient is not finite "
                                       f"(loss={loss}); lower the learning rate. The checkpoint of the last "
                                       f"finished epoch is kept.")
            opt.step(params, grads)
            params.update(info.get("state", {}))                     # buffers (state_keys), after the step
            losses.append(loss)
            if bar is not None:
                bar.update(1)
                if k % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
    finally:
        if bar is not None:
            bar.close()
    return losses, correct


def _metrics(meta_fixed, settings, history, epochs_done, n_train, n_test, seconds) -> dict:
    """The contents of ``metrics.json`` after ``epochs_done`` epochs."""
    return {**meta_fixed, "settings": asdict(settings),
            "status": "complete" if epochs_done >= settings.epochs else "running",
            "epochs_done": epochs_done, "test_accuracy": history[-1]["test_accuracy"],
            "best_test_accuracy": max(h["test_accuracy"] for h in history),
            "n_train": n_train, "n_test": n_test, "history": history, "versions": versions(),
            "seconds_this_session": seconds}
