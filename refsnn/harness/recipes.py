"""Training recipes: the ``Config`` and training settings that ``refsnn train ALGO --dataset D`` starts from.

``recipe(algo, dataset)`` returns ``(cfg, settings)``: the algorithm's
``Config`` and a dict of :class:`refsnn.harness.train.Settings` fields (hidden layers,
optimizer, learning rate and schedule, epochs, batch size).  ``refsnn train``
applies ``--preset``, ``--set`` and the other flags on top.

Every algorithm has two recipes, side by side below: ``"digits"`` (the bundled
8x8 images, 64 inputs; each trains in well under a minute on a laptop) and one
for the 28x28 datasets (784 inputs: Fashion-MNIST, MNIST, EMNIST), which is the
paper's or the official code's setting.  The accuracies and times they reach
are on the results page (docs/results.md).
"""

from __future__ import annotations

import math
from dataclasses import replace

import refsnn
from refsnn import ide, ssnn_bp, st_rsbp, stbp

__all__ = ["recipe", "RECIPES", "st_rsbp_log_recipe", "ST_RSBP_LOG_LRS"]


def stbp_recipe(dataset: str):
    """STBP.  Digits: 64-128-10 with the official code's neuron (threshold 0.5, decay 0.2, rect window,
    reset not detached), Bernoulli input over 8 steps, Adam.  784 inputs: 784-400-10 with the code's
    neuron at T = 20, Adam, 10 epochs."""
    if dataset == "digits":
        return replace(stbp.PRESETS["code"], T=8), dict(
            hidden=[128], optimizer="adam", lr=3e-3, epochs=20, batch_size=32,
            schedule="step", milestones=[15], gamma=0.3)
    return stbp.PRESETS["code"], dict(
        hidden=[400], optimizer="adam", lr=1e-3, epochs=10, batch_size=100,
        schedule="step", milestones=[8], gamma=0.1)


def st_rsbp_recipe(dataset: str):
    """ST-RSBP.  Digits: 64-R100-10 (one recurrent layer), T = 100, time constants 32/4 (shorter than the
    paper's 64/8, for 100 steps), thresholds 10 / 8, targets 20 / 3 with margin 2, input spike probability
    up to 0.5 per step; online Adam with lr 1e-2/sqrt(epoch + 1), 8 epochs.

    784 inputs: the paper's Fashion-MNIST run, 784-400-R400-10, T = 400, tau 64/8, thresholds 20/20/15,
    targets 35/5, margin 5, online Adam with lr 1e-3/sqrt(epoch + 1), boosting, exact gradients, 40 epochs.
    The logged weight regulariser (lambda 10) is off: see the results page (docs/results.md, ST-RSBP) for why
    (``--set reg_lambda=10`` turns it on)."""
    if dataset == "digits":
        cfg = st_rsbp.Config(T=100, tau_m=32.0, tau_s=4.0, nu_hidden=10.0, nu_out=8.0, desired=20.0,
                             undesired=3.0, margin=2.0, input_scale=0.5)
        return cfg, dict(hidden=["R100"], optimizer="adam", lr=1e-2, epochs=8, batch_size=1,
                         schedule="inv_sqrt", eval_batch_size=64)
    cfg = replace(st_rsbp.PRESETS["exact"], boost=True, reg_lambda=0.0, reg_beta=0.04)
    return cfg, dict(hidden=[400, "R400"], optimizer="adam", lr=1e-3, epochs=40, batch_size=1,
                     schedule="inv_sqrt", eval_batch_size=32)


#: The learning rates the official ST-RSBP Fashion-MNIST log was trained with, per (0-based) epoch: the
#: first commit's ``main.cpp`` lists ``1e-3 / sqrt(i + 1)`` for i = 0..99 and ``cuTrainSpikingNetwork`` moves
#: to the next entry only after epochs 1, 2, ..., so epochs 0 and 1 both use 1e-3 (the log prints
#: 1e-3, 1e-3, 7.07e-4, 5.77e-4, ...).
ST_RSBP_LOG_LRS = [1e-3 / math.sqrt(max(epoch, 1)) for epoch in range(100)]


def st_rsbp_log_recipe(dataset: str = "fashion-mnist"):
    """ST-RSBP as the official code's first commit (``fe5bf2d``) made its Fashion-MNIST log:
    ``st_rsbp.PRESETS["log"]`` (the code's gradient variants, E/I-signed +-1 reservoir, kappa 0 for zero
    counts, its 50-row d-tables and their lookup, the reservoir-wide regulariser normaliser, regulariser
    lambda 10, boosting) and the logged learning rates (:data:`ST_RSBP_LOG_LRS`), 784-400-R400-10, online
    Adam, 40 epochs.  Use it from Python: ``cfg, s = st_rsbp_log_recipe(); train("st_rsbp",
    "fashion-mnist", config=cfg, **s)``; ``refsnn train ... --preset log`` gives the Config with the
    recipe's schedule (the same learning rate, 1e-3, in epoch 1).  What it reaches is on the results
    page (docs/results.md, ST-RSBP)."""
    if not isinstance(dataset, str):
        raise TypeError(f"dataset: expected a dataset name, got {dataset!r}")
    if dataset == "digits":
        raise ValueError("dataset: the log recipe is the official 784-input run (fashion-mnist, mnist, ...), "
                         "not 'digits'")
    _, settings = st_rsbp_recipe(dataset)
    settings.update(schedule="list", lrs=list(ST_RSBP_LOG_LRS))
    return st_rsbp.PRESETS["log"], settings


def ide_recipe(dataset: str):
    """IDE.  Digits: a 64-128(feedback)-10 IF net, T = 30, spectral norm 1, Adam, 15 epochs.

    784 inputs: the paper's Fashion-MNIST "F400" setting (``ide.PRESETS["paper"]``): 784-400(feedback)-10
    IF, T = 5, v_th 2, spectral norm c = 1, BatchNorm on the input current, inputs normalised with
    (0.1307, 0.3081); SGD momentum 0.9, weight decay 5e-4, lr 0.05 divided by 10 at epochs 30/60/90,
    batch 128, 100 epochs.  ``--preset code`` trains it as the official code does (``ide.PRESETS["code"]``:
    dropout 0.2 and the power-iteration spectral norm as well)."""
    if dataset == "digits":
        cfg = ide.Config(T=30, v_th=2.0, leak=1.0, solver="broyden", max_iter=50, tol=1e-10,
                         spectral_norm=1.0, normalize=(0.0, 0.25))
        return cfg, dict(hidden=[128], optimizer="adam", lr=3e-3, epochs=15, batch_size=32,
                         schedule="step", milestones=[10], gamma=0.3)
    return ide.PRESETS["paper"], dict(
        hidden=[400], optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=100, batch_size=128,
        eval_batch_size=200, schedule="step", milestones=[30, 60, 90], gamma=0.1)


def ssnn_bp_recipe(dataset: str):
    """SSNN-BP.  V1 at T = 64 with online SGD (batch size 1, as the hardware would learn: every sample's
    coincidences update the crossbar at once).  Digits: 64-100-10, lr 0.02, 20 epochs; 784 inputs:
    784-100-10, lr 0.01, 5 epochs.  ``--preset ann`` trains the ANN twin identically, ``--preset v2``
    the fully spiking variant."""
    cfg = ssnn_bp.Config(T=64, forward="rate")
    if dataset == "digits":
        return cfg, dict(hidden=[100], optimizer="sgd", lr=0.02, epochs=20, batch_size=1,
                         schedule="step", milestones=[15], gamma=0.3, eval_batch_size=256)
    return cfg, dict(hidden=[100], optimizer="sgd", lr=0.01, epochs=5, batch_size=1,
                     schedule="step", milestones=[4], gamma=0.3, eval_batch_size=256)


#: The recipe function of each algorithm.
RECIPES = {"stbp": stbp_recipe, "st_rsbp": st_rsbp_recipe, "ide": ide_recipe, "ssnn_bp": ssnn_bp_recipe}


def recipe(algo: str, dataset: str = "digits") -> tuple:
    """``(Config, settings)`` for ``refsnn train algo --dataset dataset``.

    ``algo`` is an algorithm name (``refsnn.ALGORITHMS``) or its module;
    ``dataset`` is ``"digits"`` or any 28x28 dataset name.  ``settings`` is a
    fresh dict each call.
    """
    name = refsnn.algorithm_name(algo)
    if not isinstance(dataset, str):
        raise TypeError(f"dataset: expected a dataset name, got {dataset!r}")
    return RECIPES[name](dataset)
