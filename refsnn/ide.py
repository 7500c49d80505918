r"""IDE: training feedback spiking networks by implicit differentiation on the equilibrium state.

Xiao, Meng, Zhang, Wang, Lin, "Training Feedback Spiking Neural Networks by
Implicit Differentiation on the Equilibrium State", NeurIPS 2021
(arXiv 2109.14247).  Official code: ``pkuxmq/IDE-FSNN``.  The derivation is
written out in ``docs/ide.md`` (the paper's body was not available to us; the
equation labels below are refsnn's own, and that page says where each comes from).

The model
---------
A feedback block of ``N >= 1`` spiking layers.  Layer 1 receives the input
current ``I = F x + b`` and, with a one-step delay, the spikes of the last
layer ``N`` through the feedback weight ``W``; layers ``l >= 2`` receive the
spikes of layer ``l-1`` *of the same step* through ``F^l``.  With
``u_0 = 0, s_0 = 0`` and ``t = 1..T``::

    v^1_t = lam u^1_{t-1} + W s^N_{t-1} + I                     # Eq. (N1): no feedback at t = 1 (s_0 = 0)
    v^l_t = lam u^l_{t-1} + F^l s^{l-1}_t + b^l      (l >= 2)   # Eq. (N2): zero-delay feed-forward chain
    s^l_t = 1[v^l_t >= v_th]                                    # Eq. (N3): ">=" threshold
    u^l_t = v^l_t - v_th s^l_t                                  # Eq. (N4): soft reset by subtraction

``lam = leak``: ``1`` is the IF neuron, ``lam < 1`` the LIF neuron with the
leak applied to the potential *after* the reset (the code's
``u <- lam (v - v_th s)``).  The network's output is the (weighted) average
firing rate of the last layer::

    a[T] = (1/T) sum_t s^N_t                                  (IF)      # Eq. (R)
    a[T] = sum_t lam^(T-t) s^N_t / sum_t lam^(T-t)            (LIF)

and the readout is linear on that rate, ``o = Wo a[T] + bo``, with the mean
cross-entropy over the batch as the loss (Eq. (L)).  A static ``x`` of shape
``(batch, n_in)`` is direct (analog) input: ``I`` is computed once and added
at every step.  Spike input ``x`` of shape ``(T, batch, n_in)`` gives
``I_t = F x_t + b``.  :func:`simulate` keeps no per-step history: its memory
does not depend on ``T``.

The equilibrium
---------------
With ``sigma(z) = clamp(z, 0, 1)`` the fixed-point map on the last layer is::

    f_1(a) = sigma((W a + F xbar + b) / v_th)
    f_l(h) = sigma((F^l h + b^l) / v_th)              (l >= 2)
    a*     = f(a*) = f_N o ... o f_1 (a*)                             # Eq. (FP)

``xbar`` is the input itself (static) or its (weighted) time average (spikes).
Summing Eq. (N1)-(N4) over time with weights ``lam^(T-t)`` gives the exact
identity (one layer; ``Lam_T = sum_t lam^(T-t)``, ``= T`` for IF)::

    v_th a[T] = W (a[T] - s^N_T / Lam_T) / lam + I - u^1_T / Lam_T          # Eq. (ID)

so for IF, ``a[T] = f(a[T]) + O(1/T)`` and ``a[T] -> a*`` like ``1/T`` when
``||W||_2 < v_th`` (then f is a contraction).  For LIF the ``1/lam`` and the
``u_T / Lam_T -> (1 - lam) u_T`` terms do not vanish: the LIF rate only
approximately solves Eq. (FP) (the code uses the IF map for both).  Measured
(40 units, ``||W||_2 = 1``, ``v_th = 2``; ``tests/test_ide.py``), the RMS
``||a[T] - a*||`` at T = 30 / 300 / 3000 is 0.116 / 0.0116 / 0.0012 for IF,
0.135 / 0.034 / 0.032 for LIF ``lam = 0.99`` and 0.217 / 0.170 / 0.170 for
``lam = 0.95``: the LIF error stalls at a bias that grows with ``1 - lam``.

The backward pass: three steps
------------------------------
At an equilibrium ``a = f_theta(a)`` the implicit function theorem gives
``da/dtheta = (I - J)^{-1} df/dtheta`` with ``J = df/da``.  So::

    1. a     = simulate(params, x)            no graph, no history (memory independent of T)
    2. beta  : (I - J^T) beta = dL/da                                   # Eq. (A)
    3. dL/dtheta = beta^T df/dtheta(a)        one VJP through a single application of f    # Eq. (G)

Writing ``pre_1 = W a + F xbar + b``, ``h_l = sigma(pre_l / v_th)`` and
``delta_l = dL/dpre_l``, the VJP of Eq. (G) is, layer by layer from ``N`` down::

    delta_N     = beta * sigma'(pre_N / v_th) / v_th
    delta_{l-1} = (delta_l F^l) * sigma'(pre_{l-1} / v_th) / v_th
    dL/dF^l = delta_l^T h_{l-1},   dL/db^l = sum delta_l
    dL/dW   = delta_1^T a,   dL/dF = delta_1^T xbar,   dL/db = sum delta_1
    J^T beta = delta_1 W                                                    # the same chain

``sigma'(z) = 1`` for ``0 <= z <= 1`` and ``0`` outside (PyTorch's ``clamp``
backward, no surrogate).  With dropout (Eq. (DO)) each current's mask
multiplies the ``delta`` that reaches its weight: ``dL/dW = (m_W delta_1)^T a``,
``dL/dF = (m_F delta_1)^T xbar``, ``delta_{l-1} = ((m_l delta_l) F^l) *
sigma'(...) / v_th``, ``J^T beta = (m_W delta_1) W``.  Step 2 is solved by
``Config.solver``:

* ``"dense"``: build ``J`` per sample and ``numpy.linalg.solve`` (the exact answer);
* ``"fixed_point"``: ``beta <- J^T beta + dL/da`` from ``beta = dL/da``, a
  contraction when ``||J|| < 1``;
* ``"broyden"``: Broyden's ("good") method on ``R(beta) = J^T beta + dL/da - beta``
  with the inverse-Jacobian estimate ``H = -I + sum u_i v_i^T`` (the official
  code's solver; unit step, no line search, the lowest-residual iterate is
  returned; its stopping rule and first step differ from the code's, see the
  notation note);
* ``"code_iter"`` (ablation, **biased**): the official code's ``'iter'``
  solver, ``beta <- (beta + R(beta)) / 2 = (J^T beta + dL/da) / 2``.  Its
  fixed point is ``(2I - J^T)^{-1} dL/da``, not the adjoint; it
  is there to reproduce and measure that bias (``tests/test_ide.py``).

The iterative solvers stop as soon as every sample reaches ``Config.tol``.
With ``Config.early_stop = False``, ``"fixed_point"`` and ``"code_iter"``
instead run exactly ``max_iter`` iterations whatever the residual, as the
official ``'iter'`` solver always runs its ``threshold`` (30) iterations
(the official Broyden does stop at its tolerance: see the notation note).
Each returns a :class:`SolverInfo` (residual trace, iterations).  A solver
that ends above its tolerance warns (:class:`ConvergenceWarning`) and says
by how much and why (the contraction bound).

``Config.linearize_at`` chooses the point ``a`` of steps 2-3:

* ``"simulated"`` (default; the paper's Algorithm and the official code): the
  simulated ``a[T]``.  Loss, ``J`` and ``sigma'`` are all evaluated at ``a[T]``.
* ``"fixed_point"``: the exact equilibrium ``a*`` of Eq. (FP), solved to
  round-off (:func:`solve_equilibrium`).  Loss, ``J`` and ``sigma'`` at ``a*``.

What the gradient is exactly the derivative of
----------------------------------------------
With ``linearize_at="fixed_point"`` it is the exact gradient of
``L(a*(theta))``.  With ``"simulated"`` it is the exact gradient of the
*equilibrium anchored at the simulation* (the analogue of STBP's smoothed
network anchored at the forward spikes): let ``a0 = a[T](theta0)`` be the
simulated rate at the parameters ``theta0`` of the call and freeze the
equilibrium residual of the simulation, ``r0 = a0 - f_theta0(a0)``; define
``a~(theta)`` as the unique solution of::

    a~ = f_theta(a~) + r0                                                   # Eq. (AN)

(unique: ``a -> f(a) + r0`` is the same contraction as ``f``).  At ``theta0``
``a~ = a0``, so ``L(a~(theta0))`` *is* the spiking network's loss; and
differentiating Eq. (AN) gives ``da~/dtheta = (I - J(a0))^{-1} df/dtheta(a0)``,
exactly the three steps above with everything evaluated at ``a[T]``.  So the
default IDE gradient is the exact derivative of ``theta -> L_theta(a~(theta))``;
with ``r0 = 0`` (``"fixed_point"``) the same construction is ``L(a*(theta))``.
:func:`reference_objective` returns that function; central differences of it
match :func:`loss_and_grad` to ~1e-9 as long as no ``pre/v_th`` sits on a kink
of ``sigma`` (0 or 1; see :func:`kink_distance`).

Spectral-norm re-parameterisation
---------------------------------
With ``Config.spectral_norm = c`` the feedback weight is::

    W = clamp(g, -c, c) * W_raw / sigma                                     # Eq. (SN)

Parameter naming: ``params["W"]`` then holds ``W_raw`` and ``params["g"]``
the scalar gain (a 0-d array); both are ordinary trainable keys.  With
``spectral_norm=None`` there is no ``g`` and ``params["W"]`` is the feedback
weight itself.  ``Config.sn_method`` says what ``sigma`` is:

* ``"exact"`` (default): ``sigma = sigma_max(W_raw)``, the largest singular
  value (a symmetric eigen-solve), ``u1, v1`` its singular vectors.  A pure
  function of the parameters: ``||W||_2 = |clamp(g, -c, c)| <= c`` exactly,
  and for ``c < v_th`` in a one-layer block ``f`` is a contraction.
* ``"power"`` (the official code's ``WeightSpectralNorm``,
  ``modules/optimizations.py``): one power-iteration step from two persistent
  unit vectors, the state ``params["sn_u"]`` (n_1) and ``params["sn_v"]``
  (n_N), and the estimate at the *updated* vectors::

      v1 = normalize(W_raw^T sn_u),   u1 = normalize(W_raw v1)              # Eq. (PI)
      sigma = u1^T W_raw v1                                                 # Eq. (PI)

  with ``normalize(z) = z / max(||z||, 1e-12)`` (``torch.nn.functional.normalize``;
  the old ``sn_v`` is not read, the step starts from ``sn_u``, as torch's).
  ``sigma <= sigma_max``, so ``||W||_2`` may exceed ``|clamp(g)|`` until the
  vectors have converged.  :func:`loss_and_grad` never writes ``sn_u, sn_v``:
  it returns ``u1, v1`` in ``info["state"]``, the training loop writes them
  back after the optimizer step (no optimizer touches them, :func:`state_keys`),
  so each training step advances the iteration by one step, as each forward
  of the code does.

Either way the gradient holds ``u1, v1`` constant (for the exact method that
*is* the derivative, ``d sigma_max / dW_raw = u1 v1^T``; for the power method
it is what torch differentiates: the code runs the step under ``no_grad`` and
differentiates ``u1^T W_raw v1`` in ``W_raw`` only)::

    dL/dg     = <G, W_raw> / sigma * 1[-c <= g <= c]
    dL/dW_raw = s/sigma * (G - <G, W_raw>/sigma * u1 v1^T)    (s = clamp(g), G = dL/dW)

and ``dL/dsn_u = dL/dsn_v = 0``.  :func:`reference_objective` freezes ``u1,
v1`` at their values at ``params`` (as it freezes ``r0``): it is the function
with exactly these derivatives.

Dropout (``Config.dropout``)
----------------------------
As the official code's ``VariationalHidDropout2d`` (``modules/optimizations.py``,
with ``spatial=False`` in every ``SNNFC`` of ``modules/snn_modules.py``): with
``p = Config.dropout``, one mask per sample and unit, ``m = Bernoulli(1 - p) /
(1 - p)``, is drawn for the batch and shared by every time step and by ``f``
(the simulation, ``J``, the adjoint and the VJP all see the same mask).  It
multiplies the *output current* of each synaptic layer; the input layer
(after BatchNorm) and the feedback layer own separate masks, as the code's
``network_x`` and ``network_s`` do::

    v^1_t = lam u^1_{t-1} + m_W * (W s^N_{t-1}) + m_F * I                   # Eq. (DO)
    v^l_t = lam u^l_{t-1} + m_l * (F^l s^{l-1}_t + b^l)      (l >= 2)       # Eq. (DO)
    f_1(a) = sigma((m_W * (W a) + m_F * (F xbar + b)) / v_th),   f_l likewise

The masks are a dict ``{"F": m_F, "W": m_W, "F2": m_2, ...}``, each (batch,
n_l) (:func:`dropout_keys`).  :func:`loss_and_grad` draws them from its
``rng`` (:func:`dropout_mask`: ``rng.random((batch, n_l)) < 1 - p`` for "F",
"W", "F2", ... in that order, divided by ``1 - p``) or takes them as
``dropout_mask=``, and returns them in ``info["dropout_mask"]``.
:func:`reference_objective` given the same ``rng`` (an int seed) or the same
``dropout_mask`` is the objective of the same masked network.
:func:`predict` never drops (the code's eval mode); neither do the other
functions unless they are given ``dropout_mask=``.  A unit whose every input
is dropped has ``pre = 0`` for all parameters: it sits at the kink ``z = 0``
but never moves off it, so :func:`kink_distance` leaves it out.

BatchNorm on the input layer (``Config.batchnorm``)
---------------------------------------------------
As the official code's ``network_x``, the input current can be batch-normalised::

    I = bn_gamma * (F xbar + b - mean) / sqrt(var + 1e-5) + bn_beta                 # Eq. (BN)

with the batch's (biased) statistics (``bn_mode="batch"``, training; ``b``
then cancels and gets a zero gradient) or the running ones ``bn_mean,
bn_var`` (``"running"``, eval mode; :func:`predict` always).  The running
statistics are state, not parameters (:func:`state_keys`): in batch mode
:func:`loss_and_grad` computes their next values with PyTorch's rule
(momentum 0.1, unbiased variance) and returns them in ``info["state"]``
without touching ``params``; the training loop writes them back after each
step, and no optimizer updates them.  BN is per unit and
affine for a given batch, so it folds into an effective ``F, b``
(:func:`refsnn.blocks.ide_variants.fold_batchnorm`); the same map scales every step's current for spike
input, with the statistics of ``F xbar`` (as the code).  Its backward,
including through the batch statistics, is exact (finite differences pass
in both modes).  BN inside multi-layer blocks is not implemented.

Convolutional blocks (``Config.arch``)
--------------------------------------
``Config.arch`` describes a convolutional feedback block (:func:`parse_arch`):
the official MNIST net "64C5s (F64C5)" is ``"28x28x1-64c5s2p2-fbc5p2-10"``
(``F``: a 5x5 convolution, stride 2, padding 2, 1 -> 64 channels, with bias and
BatchNorm2d, giving 14x14x64; ``W``: a 5x5 convolution, padding 2, 64 -> 64, no
bias; the readout on the 12544 rates), and an AlexNet-F-shaped block ends in a
transposed-convolution feedback (``fbt3s2p1o1``, PyTorch's ``ConvTranspose2d``
with ``output_padding``).  Every equation above holds with the matrix products
replaced by the operations (:mod:`refsnn.blocks.conv`): ``F x``, ``W a`` and ``F^l h``
are convolutions of the maps flattened in ``(C, H, W)`` order, ``delta F^l`` and
``J^T beta = (m_W delta_1) W`` their transposes, ``dL/dF = delta_1^T xbar`` the
correlation of ``delta_1`` with the input patches; a bias (and BatchNorm's
``gamma, beta`` and statistics) is one per output channel, its gradient summed
over the channel's positions.  The weights keep PyTorch's layouts,
``(c_out, c_in, k, k)`` and ``(c_in, c_out, k, k)`` for the transposed one.

Spectral norm of a convolution.  The official code reshapes the kernel along
dim 0 (``(c_out, c_in k k)``; a transposed kernel ``(c_in, c_out k k)``) and
normalises that matrix; ``sn_method="exact"`` and ``"power"`` do the same.  Its
norm is **not** the norm of the convolution as an operator, which can be up to
about ``k`` times larger, so ``c < v_th`` no longer guarantees a contraction
(:func:`contraction_bound` uses the operator norms).  ``sn_method="operator"``
normalises by the operator norm itself (:func:`operator_norm`: power iteration
on ``W^T W`` to convergence, or the explicit matrix when small), with
``d sigma / dW_raw`` the correlation of its singular vectors; then
``||W||_2 = |clamp(g)| <= c`` holds exactly for a convolution too.

The readable twin computes the convolutions as einsums, the numba backend by
im2col and BLAS (each step of the simulation, since the feedback makes the steps
sequential); nothing is stored across steps, so memory stays independent of
``T``.  The dense solver builds each sample's Jacobian from the operations as
explicit matrices, which is only possible for small blocks (it refuses beyond
:data:`DENSE_JACOBIAN_LIMIT` entries); the iterative solvers never build it.

Notation differences from the paper and the code
------------------------------------------------
* Time runs ``t = 1..T`` in the equations and ``0..T-1`` in the loops.
* ``leak`` is the code's ``leaky`` (``1`` = IF; the code's "``leaky >= 1``
  means IF" is replaced by ``leak == 1``); ``v_th`` is ``vth``; ``max_iter``
  is the code's misleadingly named ``threshold`` (Broyden iterations).
* ``F, b`` are the code's ``network_x`` (FC + bias), ``W`` its ``network_s``,
  ``F2, b2, ...`` the internal ``s_1, s_2, ...`` of the multi-layer block,
  ``Wo, bo`` the ``classifier``.  Weights are stored ``(n_out, n_in)``.
  ``g, sn_u, sn_v`` are the code's ``weight_g, weight_u, weight_v`` of
  ``network_s.fc``; the dropout masks ``"F"``, ``"W"`` are the ``drop.mask``
  of ``network_x`` and ``network_s``.
* ``sigma`` is by default the exact largest singular value (a pure function
  of the parameters, whose bound ``||W||_2 <= c`` holds exactly), not the
  code's one power-iteration step with persistent buffers; that is
  ``sn_method="power"`` (:data:`PRESETS` ``"code"``).  With it,
  :func:`init_params` follows the code's construction: ``sn_u, sn_v`` drawn
  ``N(0, 1)`` and normalised, then advanced by one step (the code's
  ``setattr(..., compute_weight(...))`` at construction), and ``g`` the
  estimate of 10 power steps from another random start
  (``compute_spectral_norm``).  The code also advances ``u, v`` at every
  *evaluation* forward (its ``_reset`` runs in eval mode too);
  :func:`predict` uses the same one step from the stored vectors but cannot
  write them back, so refsnn's vectors do not move during evaluation.
* The official ``'iter'`` solver always runs exactly ``threshold`` (30)
  iterations: ``solver="code_iter", early_stop=False``.  The official
  Broyden (``modules/broyden.py``, ``broyden``) stops when the norm of the
  residual over the *whole batch* falls below the absolute
  ``eps = 2e-10 sqrt(batch n_N)`` or after ``threshold`` steps, silently, and
  returns the iterate of lowest whole-batch residual; its first step is
  ``beta_1 = -R(0) = -dL/da`` (``update = -gx``, although its ``H_0 = -I``),
  and it keeps at most 27 rank-one updates (a ring buffer).  refsnn's
  ``"broyden"`` uses a per-sample relative tolerance, freezes converged
  samples, returns each sample's best iterate, steps ``-H_0 R(0) = +dL/da``
  first and keeps every update.  Both converge to the same ``beta``; with a
  budget of 30 steps on a large block, both stop at an approximation and the
  two approximations differ.
* The multi-layer code evaluates ``J`` at ``f(a[T])`` while taking ``sigma'``
  of ``df/dtheta`` at ``a[T]``; refsnn evaluates both at
  ``a[T]``, which is what makes Eq. (AN) exact.  In a multi-layer block the
  inner layers are linearised along the chain ``f_1(a), f_2(f_1(a)), ...``,
  not at their own simulated rates.
* BatchNorm on the internal ``F^l`` of a multi-layer block is not
  implemented (the AlexNet-F blocks of the code have it).  The code's BN updates its running statistics twice per
  training step (in the simulation and again in ``equivalent_func``: its
  ``save_bn_statistics`` keeps a reference, not a copy, so the restore is a
  no-op); refsnn once.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from refsnn.blocks import conv, encoding, solvers
from refsnn.blocks import ide_variants as variants
from refsnn.blocks._checks import (
    as_generator,
    check_array,
    check_choice,
    check_config,
    check_in_range,
    check_int,
    check_labels,
    check_positive,
)
from refsnn.blocks._jit import njit, over_batch, resolve_backend

__all__ = [
    "Config",
    "PRESETS",
    "ConvergenceWarning",
    "SolverInfo",
    "init_params",
    "loss_and_grad",
    "reference_objective",
    "predict",
    "encode",
    "simulate",
    "simulate_numpy",
    "fixed_point_map",
    "solve_equilibrium",
    "jacobian",
    "jacobian_T_vec",
    "adjoint",
    "vjp",
    "readout",
    "feedback_weight",
    "contraction_bound",
    "kink_distance",
    "linear_fraction",
    "input_average",
    "state_keys",
    "dropout_keys",
    "dropout_mask",
    "parse_arch",
    "operator_norm",
]

SOLVERS = ("dense", "fixed_point", "broyden", "code_iter")
SN_METHODS = ("exact", "power", "operator")
SN_KEYS = ("sn_u", "sn_v")
BN_KEYS = ("bn_gamma", "bn_beta", "bn_mean", "bn_var")
BN_MOMENTUM = 0.1                    # PyTorch's BatchNorm1d default (its eps: ide_variants.BN_EPS)
LINEARIZE = ("simulated", "fixed_point")


# ---------------------------------------------------------------------------
# Architecture: the synaptic operations of a block (dense, convolution, transposed convolution)
# ---------------------------------------------------------------------------

@dataclass(frozen=True)
class OpSpec:
    """One synaptic operation of a feedback block: what it maps, and how.

    ``kind`` is ``"dense"``, ``"conv"`` (PyTorch's ``Conv2d``, weight ``(c_out, c_in, k, k)``) or
    ``"convT"`` (``ConvTranspose2d``, weight ``(c_in, c_out, k, k)``, PyTorch's layout); ``in_shape``
    and ``out_shape`` are ``(n,)`` or ``(C, H, W)``.
    """

    kind: str
    in_shape: tuple
    out_shape: tuple
    kernel: int = 0
    stride: int = 1
    pad: int = 0
    out_pad: int = 0

    @property
    def n_in(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def n_out(self) -> int:
        return int(np.prod(self.out_shape))

    @property
    def weight_shape(self) -> tuple:
        if self.kind == "conv":
            return (self.out_shape[0], self.in_shape[0], self.kernel, self.kernel)
        if self.kind == "convT":
            return (self.in_shape[0], self.out_shape[0], self.kernel, self.kernel)
        return (self.n_out, self.n_in)

    @property
    def channels(self) -> int:
        """Output channels: one bias (and one BatchNorm unit) each; every unit for a dense layer."""
        return self.out_shape[0]


_CONV_TOKEN = re.compile(r"(\d*)(c|t)(\d+)((?:[spo]\d+)*)")


def _conv_spec(token, kind, c_out, k, opts, shape, what):
    if len(shape) != 3:
        raise ValueError(f"arch: the {what} {token!r} needs (C, H, W) maps, not a vector")
    stride, pad, out_pad = int(opts.get("s", 1)), int(opts.get("p", 0)), int(opts.get("o", 0))
    C, H, W = shape
    if kind == "conv":
        if out_pad:
            raise ValueError(f"arch: {token!r}: output padding 'o' belongs to a transposed convolution 't'")
        Ho, Wo = conv.out_size(H, k, stride, pad), conv.out_size(W, k, stride, pad)
    else:
        if out_pad >= stride:
            raise ValueError(f"arch: {token!r}: output padding must be smaller than the stride (as PyTorch's)")
        Ho, Wo = (H - 1) * stride - 2 * pad + k + out_pad, (W - 1) * stride - 2 * pad + k + out_pad
    if c_out < 1 or k < 1 or stride < 1 or Ho < 1 or Wo < 1:
        raise ValueError(f"arch: the {what} {token!r} does not fit its {H}x{W} input")
    return OpSpec(kind, shape, (c_out, Ho, Wo), k, stride, pad, out_pad)


def parse_arch(arch) -> tuple:
    """Read a feedback block: ``"28x28x1-64c5s2p2-fbc5p2-10"`` -> ``(input_shape, [F ops], W op, n_classes)``.

    Tokens, separated by ``-``: the input ``HxWxC``; then the input operation ``F`` of layer 1 and
    the operations ``F^l`` into layers ``2..N``, each a convolution ``{c}c{k}`` (optional ``s{stride}``,
    ``p{padding}``; PyTorch's defaults 1 and 0) or a dense layer ``{n}``; then the feedback ``W`` from
    layer ``N`` to layer 1: ``fbc{k}...`` a convolution, ``fbt{k}...`` a transposed convolution
    (optional ``o{output_padding}``), or ``fb`` for a dense feedback; its output channels are layer
    1's and its output must have layer 1's shape.  The last token is the number of classes of the
    readout ``Wo`` (on the flattened rates of layer ``N``).  The official MNIST net "64C5s (F64C5)"
    is ``"28x28x1-64c5s2p2-fbc5p2-10"``; an AlexNet-F-shaped block ends in ``fbt3s2p1o1``.
    """
    if not isinstance(arch, str):
        raise TypeError(f"arch: expected a string like '28x28x1-64c5s2p2-fbc5p2-10', got {type(arch).__name__}")
    tokens = [t.strip().lower() for t in arch.split("-")]
    if len(tokens) < 4 or any(not t for t in tokens):
        raise ValueError(f"arch: expected 'input-F-...-fb...-classes', like '28x28x1-64c5s2p2-fbc5p2-10', got {arch!r}")
    shape = conv.input_shape(tokens[0])
    if not tokens[-1].isdigit() or int(tokens[-1]) < 1:
        raise ValueError(f"arch: the last token of {arch!r} must be the number of classes of the readout")
    if not tokens[-2].startswith("fb"):
        raise ValueError(f"arch: the token before the classes must be the feedback (fb, fbc{{k}}..., fbt{{k}}...), "
                         f"got {tokens[-2]!r}")
    input_shape, ops = shape, []
    for t in tokens[1:-2]:
        m = _CONV_TOKEN.fullmatch(t)
        if t.isdigit() and int(t) > 0:
            ops.append(OpSpec("dense", (int(np.prod(shape)),), (int(t),)))
        elif m and m.group(2) == "c" and m.group(1):
            ops.append(_conv_spec(t, "conv", int(m.group(1)), int(m.group(3)), dict(re.findall(r"([spo])(\d+)",
                                                                                            m.group(4))), shape,
                                  "convolution"))
        else:
            raise ValueError(f"arch: unknown layer token {t!r} (expected {{c}}c{{k}}[s{{s}}][p{{p}}] or a size)")
        shape = ops[-1].out_shape
    if not ops:
        raise ValueError(f"arch: {arch!r} has no layer between the input and the feedback")
    fb, first = tokens[-2][2:], ops[0].out_shape
    if fb == "":
        W = OpSpec("dense", (int(np.prod(shape)),), (int(np.prod(first)),))
    else:
        m = _CONV_TOKEN.fullmatch(fb)
        if not m or m.group(1):
            raise ValueError(f"arch: unknown feedback token {tokens[-2]!r} (expected fb, fbc{{k}}[s][p] or "
                             f"fbt{{k}}[s][p][o]; the channels are layer 1's)")
        W = _conv_spec(tokens[-2], "conv" if m.group(2) == "c" else "convT", first[0] if len(first) == 3 else 0,
                       int(m.group(3)), dict(re.findall(r"([spo])(\d+)", m.group(4))), shape, "feedback")
    if W.out_shape != first:
        raise ValueError(f"arch: the feedback {tokens[-2]!r} maps layer {len(ops)}'s {shape} to {W.out_shape}, "
                         f"but layer 1 is {first}")
    return input_shape, ops, W, int(tokens[-1])


@dataclass
class _Op:
    """A synaptic operation with its weight: ``op(a)`` (batched, flat ``(B, n_in) -> (B, n_out)``), its
    transpose ``op.T(d)``, the weight gradient ``op.wgrad(d, a)`` (of ``sum d . op(a)``), and the bias
    helpers (one bias per output channel of a convolution).  ``fast`` picks the im2col forms."""

    spec: OpSpec
    w: np.ndarray
    fast: bool = True

    @property
    def shape(self) -> tuple:
        """``(n_out, n_in)``: the operation as a matrix."""
        return (self.spec.n_out, self.spec.n_in)

    def _maps(self, a, shape):
        return a.reshape(a.shape[0], *shape)

    def __call__(self, a):
        sp = self.spec
        if sp.kind == "dense":
            return a @ self.w.T
        A = self._maps(a, sp.in_shape)
        if sp.kind == "conv":
            Y = (conv.conv2d_fast if self.fast else conv.conv2d)(A, self.w, sp.stride, sp.pad)
        else:
            Y = (conv.conv_transpose2d_fast if self.fast else conv.conv_transpose2d)(A, self.w, sp.stride, sp.pad,
                                                                                     sp.out_pad)
        return Y.reshape(a.shape[0], -1)

    def T(self, d):
        """``d op`` (the adjoint applied to rows ``d`` (B, n_out)): (B, n_in)."""
        sp = self.spec
        if sp.kind == "dense":
            return d @ self.w
        D = self._maps(d, sp.out_shape)
        if sp.kind == "conv":
            X = (conv.conv2d_input_grad_fast if self.fast else conv.conv2d_input_grad)(D, self.w, sp.in_shape[1:],
                                                                                       sp.stride, sp.pad)
        else:                           # a transposed convolution's adjoint is the convolution of the same weight
            X = (conv.conv2d_fast if self.fast else conv.conv2d)(D, self.w, sp.stride, sp.pad)
        return X.reshape(d.shape[0], -1)

    def wgrad(self, d, a):
        """``d/dw sum_b d_b . op(a_b)``, the weight's shape."""
        sp = self.spec
        if sp.kind == "dense":
            return d.T @ a
        grad = conv.conv2d_weight_grad_fast if self.fast else conv.conv2d_weight_grad
        D, A = self._maps(d, sp.out_shape), self._maps(a, sp.in_shape)
        if sp.kind == "conv":
            return grad(A, D, sp.kernel, sp.stride, sp.pad)
        return grad(D, A, sp.kernel, sp.stride, sp.pad)       # convT(a, w) = the input gradient of conv(., w)

    def units(self, c):
        """A per-channel vector (a bias, a BN scale) as one value per output unit, (n_out,)."""
        if self.spec.kind == "dense":
            return c
        return np.repeat(c, self.spec.n_out // self.spec.channels)

    def channel_sum(self, d):
        """The gradient of a per-channel vector from the per-unit one: ``d`` (B, n_out) summed per channel."""
        if self.spec.kind == "dense":
            return d.sum(axis=0)
        return d.reshape(d.shape[0], self.spec.channels, -1).sum(axis=(0, 2))

    def scaled(self, r):
        """The operation followed by a per-output-channel scale ``r``: the same kind, weight scaled."""
        sp = self.spec
        if sp.kind == "convT":
            return replace(self, w=self.w * r[None, :, None, None])
        return replace(self, w=r.reshape((-1,) + (1,) * (self.w.ndim - 1)) * self.w)

    def channel_rows(self, w):
        """``w`` (the weight's shape) as one row per output channel, for per-channel sums."""
        if self.spec.kind == "convT":
            return np.moveaxis(w, 1, 0).reshape(self.spec.channels, -1)
        return w.reshape(self.spec.channels, -1)

    def matrix(self) -> np.ndarray:
        """The operation as an explicit ``(n_out, n_in)`` matrix (dense: the weight itself)."""
        if self.spec.kind == "dense":
            return self.w
        return self(np.eye(self.spec.n_in)).T


def operator_norm(op: _Op, tol: float = 1e-14, max_iter: int = 5000) -> tuple:
    """``(sigma, u1, v1)``: the largest singular value of the operation as a linear map, and its unit
    singular vectors (output, input), by power iteration on ``op^T op`` from a fixed start (exact SVD
    of the explicit matrix when it has at most 4096 columns)."""
    if op.spec.kind == "dense" or op.spec.n_in <= 4096:
        return variants.top_singular(op.matrix())
    v = np.random.default_rng(0).standard_normal(op.spec.n_in)
    v /= np.linalg.norm(v)
    sigma = 0.0
    for _ in range(max_iter):
        u = op(v[None])[0]
        new = float(np.linalg.norm(u))
        v = op.T(u[None])[0]
        v /= max(float(np.linalg.norm(v)), variants.SN_EPS)
        if abs(new - sigma) <= tol * new:
            break
        sigma = new
    u = op(v[None])[0]
    sigma = float(np.linalg.norm(u))
    return sigma, u / max(sigma, variants.SN_EPS), v


class ConvergenceWarning(RuntimeWarning):
    """An iterative solver stopped before reaching its tolerance (the message carries the diagnostics)."""


@dataclass(frozen=True)
class Config:
    """Settings of a feedback SNN trained by IDE.  Every field is validated on construction.

    Model settings
    --------------
    T : int
        Time steps of the simulation (>= 1).  Spike input must have this many steps.
    v_th : float
        Firing threshold ``V_th`` (> 0); a neuron fires when ``v >= v_th``.
    leak : float
        ``lam`` in (0, 1]: ``1`` is IF, ``< 1`` LIF (the code's 0.95 / 0.99).
    linearize_at : {"simulated", "fixed_point"}
        Where loss, ``J`` and ``sigma'`` are evaluated: the simulated ``a[T]``
        (paper and code) or the exact equilibrium ``a*`` (the exact gradient
        of ``L(a*(theta))``).
    arch : str or None
        A convolutional feedback block (:func:`parse_arch`), e.g. the official
        MNIST net ``"28x28x1-64c5s2p2-fbc5p2-10"``; None for a fully connected
        block whose sizes come from the parameters.
    encoding : {"direct", "bernoulli"}
        What :func:`encode` makes of features in [0, 1]: the (normalised)
        analog values, shape (batch, n_in) (the paper, all static datasets),
        or ``T`` Bernoulli spike frames, shape (T, batch, n_in).

    Official-code variants
    ----------------------
    spectral_norm : float or None
        The bound ``c`` of the feedback re-parameterisation Eq. (SN) (the code:
        1.0), or None for a raw ``W``.
    sn_method : {"exact", "power", "operator"}
        ``sigma`` of Eq. (SN): the exact ``sigma_max(W_raw)`` (default), or
        the code's one power-iteration step from the state vectors
        ``params["sn_u"], params["sn_v"]`` (Eq. (PI); needs ``spectral_norm``),
        or, for a convolutional feedback, the norm of the convolution as an
        operator (:func:`operator_norm`; needs ``spectral_norm``).
    batchnorm : bool
        BatchNorm on the input current ``F xbar + b`` (the official code's
        ``network_x``; Eq. (BN)), with parameters ``bn_gamma, bn_beta`` and
        running statistics ``bn_mean, bn_var``.
    bn_mode : {"batch", "running"}
        What :func:`loss_and_grad` normalises with: the batch's statistics
        (training; it then also returns the next ``bn_mean``/``bn_var`` in
        ``info["state"]``) or the running ones (eval mode).  :func:`predict`
        always uses the running ones.
    dropout : float
        ``p`` in [0, 1) of the variational dropout Eq. (DO) (the code's F400:
        0.2): one mask per sample and unit for the batch, on the input,
        feedback and internal currents, shared by all time steps and by ``f``.
        :func:`loss_and_grad` draws it from ``rng`` or takes ``dropout_mask=``;
        :func:`predict` never drops.  0 (default): no dropout.
    normalize : tuple (mean, std) or None
        ``"direct"`` encoding maps features to ``(x - mean) / std`` (the code
        uses MNIST's (0.1307, 0.3081) for MNIST and Fashion-MNIST).

    Numerical settings
    ------------------
    solver : {"broyden", "fixed_point", "dense", "code_iter"}
        How the adjoint system ``(I - J^T) beta = dL/da`` is solved (module
        docstring).  ``"code_iter"`` is the official code's biased damped
        iteration, kept as an ablation.
    max_iter : int
        Most iterations of the iterative adjoint solvers (the code: 30).
    tol : float
        They stop when every sample's ``||(I - J^T) beta - dL/da|| <= tol * ||dL/da||``
        (for ``"code_iter"``: the residual of its own fixed-point equation),
        unless ``early_stop`` is False; a solver that ends above it warns.
    eq_max_iter : int
        Most fixed-point iterations of :func:`solve_equilibrium` before its
        Newton (active-set) polish.
    eq_tol : float
        :func:`solve_equilibrium` warns when ``max |f(a) - a|`` stays above this.
    early_stop : bool
        True (default): the iterative adjoint solvers stop at ``tol``.  False:
        ``"fixed_point"`` and ``"code_iter"`` run exactly ``max_iter``
        iterations whatever the residual (the official ``'iter'`` solver:
        always 30).  Not for ``"broyden"`` or ``"dense"``.

    Backend settings
    ----------------
    backend : {"numba", "numpy"}
        The event-driven numba kernel or the readable NumPy twin for the simulation.
    """

    T: int = 30
    v_th: float = 2.0
    leak: float = 1.0
    solver: str = "broyden"
    max_iter: int = 50
    tol: float = 1e-10
    linearize_at: str = "simulated"
    spectral_norm: float | None = 1.0
    eq_max_iter: int = 2000
    eq_tol: float = 1e-13
    batchnorm: bool = False
    bn_mode: str = "batch"
    encoding: str = "direct"
    normalize: tuple | None = None
    backend: str = "numba"
    dropout: float = 0.0
    sn_method: str = "exact"
    early_stop: bool = True
    arch: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "T", check_int("T", self.T, minimum=1))
        object.__setattr__(self, "v_th", check_positive("v_th", self.v_th))
        object.__setattr__(self, "leak", check_in_range("leak", self.leak, 0.0, 1.0, lo_open=True))
        check_choice("solver", self.solver, SOLVERS)
        object.__setattr__(self, "max_iter", check_int("max_iter", self.max_iter, minimum=1))
        object.__setattr__(self, "tol", check_positive("tol", self.tol))
        check_choice("linearize_at", self.linearize_at, LINEARIZE)
        if self.spectral_norm is not None:
            object.__setattr__(self, "spectral_norm", check_positive("spectral_norm", self.spectral_norm))
        object.__setattr__(self, "eq_max_iter", check_int("eq_max_iter", self.eq_max_iter, minimum=1))
        object.__setattr__(self, "eq_tol", check_positive("eq_tol", self.eq_tol))
        if not isinstance(self.batchnorm, (bool, np.bool_)):
            raise TypeError(f"batchnorm: expected True or False, got {self.batchnorm!r}")
        check_choice("bn_mode", self.bn_mode, ("batch", "running"))
        check_choice("encoding", self.encoding, ("direct", "bernoulli"))
        if self.normalize is not None:
            if not isinstance(self.normalize, (tuple, list)) or len(self.normalize) != 2:
                raise ValueError(f"normalize: expected a pair (mean, std) or None, got {self.normalize!r}")
            mean = float(check_in_range("normalize[0]", self.normalize[0], -1e6, 1e6))
            std = check_positive("normalize[1]", self.normalize[1])
            object.__setattr__(self, "normalize", (mean, std))
        check_choice("backend", self.backend, ("numba", "numpy"))
        object.__setattr__(self, "backend", resolve_backend(self.backend))    # numba off: the NumPy tier
        object.__setattr__(self, "dropout", check_in_range("dropout", self.dropout, 0.0, 1.0, hi_open=True))
        check_choice("sn_method", self.sn_method, SN_METHODS)
        if self.sn_method == "power" and self.spectral_norm is None:
            raise ValueError("sn_method: 'power' estimates sigma of the spectral-norm re-parameterisation; "
                             "it needs Config.spectral_norm (e.g. 1.0), got None")
        if not isinstance(self.early_stop, (bool, np.bool_)):
            raise TypeError(f"early_stop: expected True or False, got {self.early_stop!r}")
        object.__setattr__(self, "early_stop", bool(self.early_stop))
        if not self.early_stop and self.solver not in ("fixed_point", "code_iter"):
            raise ValueError(f"early_stop: False (run exactly max_iter iterations) applies to the solvers "
                             f"'fixed_point' and 'code_iter', got solver {self.solver!r}")
        if self.sn_method == "operator" and self.spectral_norm is None:
            raise ValueError("sn_method: 'operator' normalises the feedback by its operator norm; it needs "
                             "Config.spectral_norm (e.g. 1.0), got None")
        if self.arch is not None:
            parse_arch(self.arch)                       # a clean error for a malformed architecture

    @property
    def is_if(self) -> bool:
        """True for the IF neuron (``leak == 1``)."""
        return self.leak == 1.0

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["normalize"] is not None:
            d["normalize"] = list(d["normalize"])
        return d


@dataclass
class SolverInfo:
    """Diagnostics of one solve (adjoint or equilibrium).

    ``residuals[k]`` is the largest relative residual over the batch after
    ``k`` iterations (adjoint: ``||(I - J^T) beta - g|| / ||g||``;
    equilibrium: ``max |f(a) - a|``).  ``iterations`` counts applications of
    ``J^T`` (adjoint) or of ``f`` (equilibrium).
    """

    method: str
    converged: bool
    iterations: int
    residual: float
    tol: float
    residuals: np.ndarray = field(repr=False)
    extra: dict = field(default_factory=dict)

    def summary(self) -> str:
        tail = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.extra.items())
        return (f"{self.method}: {'converged' if self.converged else 'NOT converged'} after {self.iterations} "
                f"iterations, residual {self.residual:.3e} (tol {self.tol:.1e})" + (f"; {tail}" if tail else ""))


#: Reference settings.  ``paper``: the official Fashion-MNIST "400 (F400)" net
#: (T 5, v_th 2, IF, spectral norm 1, BatchNorm on the input, Broyden with 30
#: iterations, inputs normalised with (0.1307, 0.3081)), with refsnn's exact
#: spectral norm and no dropout; ``paper_lif``: the same with the code's LIF leak
#: 0.95.  ``code``: the F400 net as the official code trains it
#: (``fashionmnist_fc.py``, ``models/snn_ide_fc.py``): ``paper`` plus dropout 0.2
#: (Eq. (DO)) and the power-iteration spectral norm (Eq. (PI)); ``code_lif``: the
#: same with leak 0.95 (the script's default ``--leaky``).  The code's Broyden has
#: its own stopping rule (module docstring); its ``'iter'`` solver is
#: ``replace(PRESETS["code"], solver="code_iter", early_stop=False)``.
#: ``conv``: the paper's MNIST net "64C5s (F64C5)" (``mnist_conv.py``, ``models/snn_ide_conv.py``): a 5x5
#: stride-2 convolution with BatchNorm2d into 64 maps of 14x14, a 5x5 convolution feedback, T 30, IF, v_th 2,
#: spectral norm 1 (of the reshaped kernel, as the code), Broyden 30; ``code_conv``: the same as the script
#: trains it (its defaults: LIF 0.95, dropout 0.2, the power-iteration spectral norm).
PRESETS = {
    "paper": Config(T=5, v_th=2.0, leak=1.0, solver="broyden", max_iter=30, tol=1e-10, spectral_norm=1.0,
                    batchnorm=True, normalize=(0.1307, 0.3081)),
    "paper_lif": Config(T=5, v_th=2.0, leak=0.95, solver="broyden", max_iter=30, tol=1e-10, spectral_norm=1.0,
                        batchnorm=True, normalize=(0.1307, 0.3081)),
    "code": Config(T=5, v_th=2.0, leak=1.0, solver="broyden", max_iter=30, tol=1e-10, spectral_norm=1.0,
                   batchnorm=True, normalize=(0.1307, 0.3081), dropout=0.2, sn_method="power"),
    "code_lif": Config(T=5, v_th=2.0, leak=0.95, solver="broyden", max_iter=30, tol=1e-10, spectral_norm=1.0,
                       batchnorm=True, normalize=(0.1307, 0.3081), dropout=0.2, sn_method="power"),
    "conv": Config(T=30, v_th=2.0, leak=1.0, solver="broyden", max_iter=30, tol=1e-10, spectral_norm=1.0,
                   batchnorm=True, normalize=(0.1307, 0.3081), arch="28x28x1-64c5s2p2-fbc5p2-10"),
    "code_conv": Config(T=30, v_th=2.0, leak=0.95, solver="broyden", max_iter=30, tol=1e-10, spectral_norm=1.0,
                        batchnorm=True, normalize=(0.1307, 0.3081), dropout=0.2, sn_method="power",
                        arch="28x28x1-64c5s2p2-fbc5p2-10"),
}


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------

@dataclass
class _Net:
    """Validated parameters as operations (:class:`_Op`), with the effective feedback weight of Eq. (SN)."""

    F: _Op              # input operation of layer 1
    b: np.ndarray       # its bias (one per unit, or per output channel of a convolution)
    Fs: list            # F^2..F^N (_Op)
    bs: list            # b^2..b^N
    W: _Op              # effective feedback W, layer N -> layer 1
    Wo: np.ndarray
    bo: np.ndarray
    sn: tuple | None    # (W_raw, g, s, sigma, u1, v1, dsigma/dW_raw) when spectral-normed (Eq. (SN), (PI))
    bn: tuple | None = None     # (gamma, beta, running mean, running var) with Config.batchnorm
    fold: dict | None = None    # set by ide_variants.fold_batchnorm: F, b above are then the folded (effective) ones
    drop: dict | None = None    # dropout masks {"F", "W", "F2", ...} of Eq. (DO), each (B, n_l); None: no dropout

    @property
    def N(self) -> int:
        return 1 + len(self.Fs)

    @property
    def sizes(self) -> list:
        return [self.F.spec.n_out] + [Fl.spec.n_out for Fl in self.Fs]

    def current(self, l: int, h):
        """``F^l h + b^l`` of layer ``l`` (1-based; ``h`` the input for ``l = 1``), before any mask.  With
        BatchNorm's batch statistics folded in, layer 1's current at the ``xbar`` they were taken from is
        ``r (F xbar) + b_e`` (Eq. (BN)) with the fold's ``F xbar``: that product is not made twice."""
        op, b = (self.F, self.b) if l == 1 else (self.Fs[l - 2], self.bs[l - 2])
        fo = self.fold
        if l == 1 and fo is not None and fo["mode"] == "batch" and h is fo["xbar"]:
            return op.units(fo["r"]) * fo["P"].reshape(h.shape[0], -1) + op.units(b)      # Eq. (BN)
        return op(h) + op.units(b)


def param_keys(n_layers: int, cfg: Config) -> list:
    """The parameter names of an ``n_layers``-layer feedback block, in order."""
    keys = ["F", "b"]
    if cfg.batchnorm:
        keys += list(BN_KEYS)
    for l in range(2, n_layers + 1):
        keys += [f"F{l}", f"b{l}"]
    keys.append("W")
    if cfg.spectral_norm is not None:
        keys.append("g")
    if cfg.sn_method == "power":
        keys += list(SN_KEYS)
    return keys + ["Wo", "bo"]


def _float_array(name, value, ndim):
    arr = check_array(name, value, ndim=ndim)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"{name}: expected a float array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _specs(params, cfg: Config, name: str, N: int):
    """The operations' specs: from ``cfg.arch``, or dense ones read off the weights' shapes (checked)."""
    if cfg.arch is not None:
        _, ops, W, _ = parse_arch(cfg.arch)
        if len(ops) != N:
            raise ValueError(f"{name}: cfg.arch {cfg.arch!r} has {len(ops)} layers, the parameters {N} "
                             f"(F{', F2' if N > 1 else ''}...)")
        return ops, W
    ops, prev = [], None
    for l in range(1, N + 1):
        key = "F" if l == 1 else f"F{l}"
        w = _float_array(f"{name}[{key!r}]", params[key], 2)
        if prev is not None and w.shape[1] != prev:
            raise ValueError(f"{name}['{key}']: expected {prev} inputs (the size of layer {l - 1}), got shape "
                             f"{w.shape}")
        ops.append(OpSpec("dense", (w.shape[1],), (w.shape[0],)))
        prev = w.shape[0]
    return ops, OpSpec("dense", (prev,), (ops[0].n_out,))


def _weight(name, value, spec: OpSpec, what: str):
    w = _float_array(name, value, len(spec.weight_shape))
    if w.shape != spec.weight_shape:
        raise ValueError(f"{name}: {what} must have shape {spec.weight_shape}, got {w.shape}")
    return w


def _unpack(params, cfg: Config, name: str = "params", sn_vectors=None) -> _Net:
    """Validated parameters; ``sn_vectors = (u1, v1)`` fixes the power method's vectors (no step is taken)."""
    if not isinstance(params, dict):
        raise TypeError(f"{name}: expected a dict of arrays, got {type(params).__name__}")
    N = 1
    while f"F{N + 1}" in params:
        N += 1
    want = param_keys(N, cfg)
    if sorted(params) != sorted(want):
        missing = [k for k in want if k not in params]
        extra = [k for k in params if k not in want]
        hint = ""
        if cfg.spectral_norm is not None and "g" in missing:
            hint = " (Config.spectral_norm is set: params need the scalar gain 'g' beside the raw 'W')"
        elif cfg.spectral_norm is None and "g" in extra:
            hint = " (params carry a spectral-norm gain 'g' but Config.spectral_norm is None)"
        elif cfg.batchnorm and "bn_gamma" in missing:
            hint = " (Config.batchnorm is set: params need bn_gamma, bn_beta, bn_mean, bn_var)"
        elif not cfg.batchnorm and "bn_gamma" in extra:
            hint = " (params carry BatchNorm parameters but Config.batchnorm is False)"
        elif cfg.sn_method == "power" and ("sn_u" in missing or "sn_v" in missing):
            hint = (" (Config.sn_method is 'power': params need the power-iteration state sn_u (n_1,) and "
                    "sn_v (n_N,), e.g. from init_params)")
        elif cfg.sn_method != "power" and ("sn_u" in extra or "sn_v" in extra):
            hint = " (params carry power-iteration vectors sn_u/sn_v but Config.sn_method is not 'power')"
        raise ValueError(f"{name}: expected keys {want}; missing {missing}, unexpected {extra}{hint}")
    fast = cfg.backend != "numpy"
    specs, wspec = _specs(params, cfg, name, N)
    ops, biases = [], []
    for l, sp in enumerate(specs, start=1):
        key, bkey = ("F", "b") if l == 1 else (f"F{l}", f"b{l}")
        what = "the input operation" if l == 1 else f"the operation from layer {l - 1} to layer {l}"
        ops.append(_Op(sp, _weight(f"{name}[{key!r}]", params[key], sp, what), fast))
        bl = _float_array(f"{name}[{bkey!r}]", params[bkey], 1)
        if bl.shape != (sp.channels,):
            raise ValueError(f"{name}['{bkey}']: expected shape ({sp.channels},) to match {key} "
                             f"{ops[-1].w.shape} (one per output {'channel' if sp.kind != 'dense' else 'unit'}), "
                             f"got {bl.shape}")
        biases.append(bl)
    F, b = ops[0], biases[0]
    bn = None
    if cfg.batchnorm:
        bn = tuple(_float_array(f"{name}[{k!r}]", params[k], 1) for k in BN_KEYS)
        for k, v in zip(BN_KEYS, bn):
            if v.shape != b.shape:
                raise ValueError(f"{name}[{k!r}]: expected shape {b.shape} (one per {'channel' if F.spec.kind != 'dense' else 'unit'} "
                                 f"of layer 1), got {v.shape}")
        if np.any(bn[3] < 0):
            raise ValueError(f"{name}['bn_var']: a variance must be >= 0, got min {bn[3].min():g}")
    n1, nN = specs[0].n_out, specs[-1].n_out
    if wspec.kind == "dense":
        Wr = _float_array(f"{name}['W']", params["W"], 2)
        if Wr.shape != (n1, nN):
            raise ValueError(f"{name}['W']: the feedback from layer {N} to layer 1 must have shape ({n1}, {nN}), "
                             f"got {Wr.shape}")
    else:
        Wr = _weight(f"{name}['W']", params["W"], wspec, f"the feedback from layer {N} to layer 1")
    raw = _Op(wspec, Wr, fast)
    sn = None
    if cfg.spectral_norm is not None:
        g = _float_array(f"{name}['g']", params["g"], None)
        if g.size != 1 or g.ndim > 1:
            raise ValueError(f"{name}['g']: expected a scalar (0-d array), got shape {g.shape}")
        g = float(g.reshape(()))
        W2 = Wr.reshape(Wr.shape[0], -1)                                 # the code's reshape along dim 0
        su = None
        if cfg.sn_method == "power":
            su = _float_array(f"{name}['sn_u']", params["sn_u"], 1)
            sv = _float_array(f"{name}['sn_v']", params["sn_v"], 1)
            if su.shape != (W2.shape[0],):
                raise ValueError(f"{name}['sn_u']: the power-iteration vector of W's rows must have shape "
                                 f"({W2.shape[0]},), got {su.shape}")
            if sv.shape != (W2.shape[1],):
                raise ValueError(f"{name}['sn_v']: the power-iteration vector of W's columns must have shape "
                                 f"({W2.shape[1]},), got {sv.shape}")
        W, sn = variants.spectral_norm(raw, g, cfg.spectral_norm, cfg.sn_method, su, sn_vectors, operator_norm, name)
    else:
        W = raw
    Wo = _float_array(f"{name}['Wo']", params["Wo"], 2)
    bo = _float_array(f"{name}['bo']", params["bo"], 1)
    if Wo.shape[1] != nN:
        raise ValueError(f"{name}['Wo']: the readout takes the {nN} rates of layer {N}, expected shape (C, {nN}), "
                         f"got {Wo.shape}")
    if bo.shape[0] != Wo.shape[0]:
        raise ValueError(f"{name}['bo']: expected shape ({Wo.shape[0]},) to match Wo {Wo.shape}, got {bo.shape}")
    return _Net(F, b, ops[1:], biases[1:], W, Wo, bo, sn, bn)


def feedback_weight(params, cfg: Config = Config()) -> np.ndarray:
    """The effective feedback weight ``W`` (Eq. (SN) applied when ``cfg.spectral_norm`` is set).

    With ``sn_method="power"``: ``sigma`` from one step of Eq. (PI) from the stored ``sn_u`` (the weight
    the next :func:`loss_and_grad` uses).
    """
    return _unpack(params, check_config(cfg, Config)).W.w


def contraction_bound(params, cfg: Config = Config()) -> float:
    """``||W||_2 prod_l ||F^l||_2 / v_th^N``: an upper bound of ``||J||_2``; below 1, f is a contraction.

    The norms are those of the operations as linear maps (:func:`operator_norm`): for a convolution
    that is not the norm of the reshaped kernel that Eq. (SN) normalises by default.
    """
    cfg = check_config(cfg, Config)
    return _bound(_unpack(params, cfg), cfg)


def init_params(sizes=None, cfg: Config = Config(), rng=0) -> dict:
    """Initial parameters for ``sizes = [n_in, n_1, ..., n_N, n_classes]`` (an N-layer feedback block),
    or for ``cfg.arch``.

    As the official code: ``F, F^l, W ~ U(-1, 1)`` with each output unit's
    row (a convolution's output filter ``w[o]``, a transposed convolution's
    ``w[:, o]``) scaled to unit l2 norm, biases 0; the readout ``Wo, bo``
    with PyTorch's ``nn.Linear`` default ``U(-1/sqrt(n_N), 1/sqrt(n_N))``.
    With ``cfg.spectral_norm`` the gain ``g`` starts at ``sigma`` of Eq. (SN)
    (so the effective ``W`` is the raw one, clipped to norm ``c``).  With
    ``cfg.arch`` the architecture fixes the sizes; ``sizes`` may then be
    None, or a list whose first and last entries (input size, classes) agree.

    With ``cfg.sn_method = "power"``, as the code's ``WeightSpectralNorm.apply``
    (after every draw above, so the other tensors are the same as with
    ``"exact"``): ``sn_u ~ N(0, I)``, ``sn_v ~ N(0, I)`` (the rows and columns
    of ``W`` reshaped along dim 0), normalised; ``g`` is the estimate
    ``u^T W v`` of 10 power steps from a second random pair
    (``compute_spectral_norm``); then ``sn_u, sn_v`` take one power step
    (Eq. (PI)), as the code's first ``compute_weight`` at construction does.
    """
    cfg = check_config(cfg, Config)
    if cfg.arch is not None:
        input_shape, specs, wspec, n_classes = parse_arch(cfg.arch)
        if sizes is not None:
            if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__") or len(sizes) < 2:
                raise TypeError(f"sizes: expected None or a list [n_in, ..., n_classes] with cfg.arch, got {sizes!r}")
            if (int(sizes[0]), int(sizes[-1])) != (int(np.prod(input_shape)), n_classes):
                raise ValueError(f"sizes: {list(sizes)} do not match cfg.arch {cfg.arch!r} (input "
                                 f"{int(np.prod(input_shape))}, {n_classes} classes)")
    else:
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
            raise TypeError(f"sizes: expected a list [n_in, n_1, ..., n_N, n_classes], got {sizes!r}")
        sizes = [check_int(f"sizes[{i}]", s, minimum=1) for i, s in enumerate(sizes)]
        if len(sizes) < 3:
            raise ValueError(f"sizes: need [n_in, n_hidden, ..., n_classes] with at least one feedback layer, "
                             f"got {sizes}")
        specs = [OpSpec("dense", (a,), (b,)) for a, b in zip(sizes[:-2], sizes[1:-1])]
        wspec, n_classes = OpSpec("dense", (sizes[-2],), (sizes[1],)), sizes[-1]
    rng = as_generator(rng)

    def unit_filters(sp: OpSpec):
        w = rng.uniform(-1.0, 1.0, sp.weight_shape)
        if sp.kind == "convT":                                          # output channel o is w[:, o]
            return w / np.sqrt((w ** 2).sum(axis=(0, 2, 3), keepdims=True))
        return w / np.sqrt((w ** 2).reshape(w.shape[0], -1).sum(axis=1)).reshape((-1,) + (1,) * (w.ndim - 1))

    c1 = specs[0].channels
    params = {"F": unit_filters(specs[0]), "b": np.zeros(c1)}
    if cfg.batchnorm:
        params.update(bn_gamma=np.ones(c1), bn_beta=np.zeros(c1), bn_mean=np.zeros(c1), bn_var=np.ones(c1))
    for l, sp in enumerate(specs[1:], start=2):
        params[f"F{l}"] = unit_filters(sp)
        params[f"b{l}"] = np.zeros(sp.channels)
    params["W"] = unit_filters(wspec)
    W2 = params["W"].reshape(params["W"].shape[0], -1)                  # the code's reshape along dim 0
    if cfg.spectral_norm is not None:
        params["g"] = np.array(operator_norm(_Op(wspec, params["W"]))[0] if cfg.sn_method == "operator"
                               else variants.top_singular(W2)[0])
    nN = specs[-1].n_out
    bound = 1.0 / math.sqrt(nN)
    params["Wo"] = rng.uniform(-bound, bound, (n_classes, nN))
    params["bo"] = rng.uniform(-bound, bound, n_classes)
    if cfg.sn_method == "power":
        u = variants.normalize(rng.normal(size=W2.shape[0]))                    # the buffers weight_u, weight_v
        v = variants.normalize(rng.normal(size=W2.shape[1]))
        u10, v10 = variants.normalize(rng.normal(size=W2.shape[0])), variants.normalize(rng.normal(size=W2.shape[1]))
        for _ in range(10):                                             # compute_spectral_norm(W, iterations=10)
            v10 = variants.normalize(W2.T @ u10)
            u10 = variants.normalize(W2 @ v10)
        params["g"] = np.array(float(u10 @ (W2 @ v10)))
        _, u, v = variants.power_step(W2, u)                            # the power step at construction
        params["sn_u"], params["sn_v"] = u, v
    return {k: params[k] for k in param_keys(len(specs), cfg)}


# ---------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------

def _check_x(x, net, cfg: Config) -> np.ndarray:
    """``x`` as (batch, n_in) or (T, batch, n_in); a convolutional block also takes maps (batch, C, H, W)
    and (T, batch, C, H, W), flattened here in (C, H, W) order."""
    x = check_array("x", x)
    in_shape = net.F.spec.in_shape
    n_in = net.F.spec.n_in
    if len(in_shape) == 3 and x.ndim in (4, 5) and x.shape[-3:] == in_shape:
        x = x.reshape(x.shape[:-3] + (n_in,))
    if x.ndim == 2:
        if x.shape[0] < 1 or x.shape[1] != n_in:
            raise ValueError(f"x: expected static input of shape (batch, {n_in}) (F has shape (n_1, {n_in})), "
                             f"got {x.shape}")
    elif x.ndim == 3:
        if x.shape[1] < 1 or x.shape[2] != n_in:
            raise ValueError(f"x: expected spike input of shape (T, batch, {n_in}), got {x.shape}")
        if x.shape[0] != cfg.T:
            raise ValueError(f"x: spike input has {x.shape[0]} time steps but Config.T = {cfg.T}; "
                             f"they must agree")
    else:
        raise ValueError(f"x: expected (batch, {n_in}) static input or (T, batch, {n_in}) spikes, got shape {x.shape}")
    return x.astype(np.float64, copy=False)


def _rate_norm(T: int, leak: float) -> float:
    """``Lam_T = sum_t lam^(T-t)``, accumulated as the simulation does (``norm <- lam * norm + 1``)."""
    norm = 0.0
    for _ in range(T):
        norm = leak * norm + 1.0
    return norm


def _rate_weights(T: int, leak: float) -> np.ndarray:
    """``lam^(T-t)`` for ``t = 1..T`` (all ones for IF)."""
    return leak ** np.arange(T - 1, -1, -1, dtype=np.float64)


def input_average(x, cfg: Config = Config()) -> np.ndarray:
    """``xbar``: static input unchanged; spike input averaged over time as the rate is (Eq. (R)).

    IF: ``(1/T) sum_t x_t``; LIF: ``sum_t lam^(T-t) x_t / sum_t lam^(T-t)``.
    """
    x = check_array("x", x).astype(np.float64, copy=False)
    if x.ndim == 2:
        return x
    if x.ndim != 3:
        raise ValueError(f"x: expected (batch, n_in) or (T, batch, n_in), got shape {x.shape}")
    w = _rate_weights(x.shape[0], check_config(cfg, Config).leak)
    return np.tensordot(w / w.sum(), x, axes=(0, 0))


def _prepare(params, x, cfg, bn_mode=None, dropout_mask=None):
    cfg = check_config(cfg, Config)
    net = _unpack(params, cfg)
    x = _check_x(x, net, cfg)
    if net.bn is not None:
        net = variants.fold_batchnorm(net, input_average(x, cfg), bn_mode or cfg.bn_mode)
    if dropout_mask is not None:
        net = replace(net, drop=_check_mask(dropout_mask, net, x.shape[-2], cfg))
    return net, x, cfg


# ---------------------------------------------------------------------------
# Dropout masks (Eq. (DO))
# ---------------------------------------------------------------------------

def dropout_keys(n_layers: int) -> list:
    """The keys of a dropout mask for an ``n_layers``-layer block: ``["F", "W", "F2", ..., "FN"]``.

    ``"F"`` masks the input current (after BatchNorm), ``"W"`` the feedback
    current, ``"F{l}"`` the current ``F^l h + b^l`` into layer ``l`` (Eq. (DO)).
    """
    n_layers = check_int("n_layers", n_layers, minimum=1)
    return ["F", "W"] + [f"F{l}" for l in range(2, n_layers + 1)]


def _mask_sizes(net: _Net) -> dict:
    sizes = net.sizes
    return {"F": sizes[0], "W": sizes[0], **{f"F{l}": sizes[l - 1] for l in range(2, net.N + 1)}}


def _draw_mask(net: _Net, B: int, cfg: Config, rng) -> dict:
    """Fresh masks ``Bernoulli(1 - p) / (1 - p)``, (B, n_l) each, drawn in the order of :func:`dropout_keys`."""
    p = cfg.dropout
    return {k: (rng.random((B, n)) < 1.0 - p) / (1.0 - p) for k, n in _mask_sizes(net).items()}   # kept units scaled by 1/(1-p)


def _check_mask(mask, net: _Net, B: int, cfg: Config) -> dict:
    if cfg.dropout == 0.0:
        raise ValueError("dropout_mask: given, but Config.dropout is 0 (no dropout); set Config.dropout or "
                         "leave dropout_mask out")
    if not isinstance(mask, dict):
        raise TypeError(f"dropout_mask: expected a dict of arrays with keys {dropout_keys(net.N)}, "
                        f"got {type(mask).__name__}")
    sizes = _mask_sizes(net)
    if sorted(mask) != sorted(sizes):
        missing = [k for k in sizes if k not in mask]
        extra = [k for k in mask if k not in sizes]
        raise ValueError(f"dropout_mask: expected keys {list(sizes)} (a {net.N}-layer block); missing {missing}, "
                         f"unexpected {extra}")
    out = {}
    for k, n in sizes.items():
        m = check_array(f"dropout_mask[{k!r}]", mask[k], shape=(B, n), dtype=np.float64)
        if m.size and m.min() < 0:
            raise ValueError(f"dropout_mask[{k!r}]: a keep mask must be >= 0 (0 or 1/(1 - p)), got min {m.min():g}")
        out[k] = m
    return out


def _dropout(net: _Net, x, cfg: Config, rng, dropout_mask) -> dict | None:
    """The masks of a training step: ``dropout_mask`` if given (checked), else drawn from ``rng``; None if p = 0."""
    if cfg.dropout == 0.0 and dropout_mask is None:
        return None
    if dropout_mask is not None:
        return _check_mask(dropout_mask, net, x.shape[-2], cfg)
    if rng is None:
        raise ValueError(f"rng: Config.dropout = {cfg.dropout} draws a dropout mask; pass an int seed or a "
                         f"numpy.random.Generator, or the mask itself as dropout_mask=")
    return _draw_mask(net, x.shape[-2], cfg, as_generator(rng))


def dropout_mask(params, x, cfg: Config = Config(), rng=None) -> dict:
    """The dropout masks :func:`loss_and_grad` draws from ``rng`` for this batch (Eq. (DO)).

    Returns ``{"F": m_F, "W": m_W, "F2": m_2, ...}`` (:func:`dropout_keys`),
    each (batch, n_l) with entries ``0`` or ``1 / (1 - p)``: ``rng.random((batch,
    n_l)) < 1 - p`` per key, in that order.  The same int seed (or a generator
    in the same state) gives the same masks as ``loss_and_grad(..., rng=rng)``.
    """
    cfg = check_config(cfg, Config)
    if cfg.dropout == 0.0:
        raise ValueError("cfg: Config.dropout is 0, so there is no dropout mask to draw")
    net = _unpack(params, cfg)
    x = _check_x(x, net, cfg)
    return _dropout(net, x, cfg, rng, None)


# ---------------------------------------------------------------------------
# Step 1: the spiking simulation (readable twin and numba kernel)
# ---------------------------------------------------------------------------

def simulate_numpy(params, x, cfg: Config = Config(), *, record: bool = False, dropout_mask=None, _net=None):
    """Simulate the feedback block with Eq. (N1)-(N4), step by step, layer by layer (the readable twin).

    Parameters
    ----------
    params : dict
        ``F, b, [F2, b2, ...], W, [g], Wo, bo``.
    x : ndarray, shape (batch, n_in) or (T, batch, n_in)
        Static (direct current) or spike input.
    cfg : Config
    record : bool
        Also return the last layer's rate ``a[t]`` and spikes ``s^N_t`` at
        every step (for plots; this is the only history ever kept).
    dropout_mask : dict, optional
        Dropout masks (Eq. (DO), :func:`dropout_keys`); none by default.

    Returns
    -------
    dict
        ``"a"``: ``a[T]`` of the last layer, (batch, n_N); ``"u"``, ``"s"``:
        lists of each layer's potential and spikes after step ``T``;
        ``"rates"``: list of each layer's (weighted) average rate; with
        ``record``, ``"a_t"`` and ``"s_t"`` of shape (T, batch, n_N).
    """
    net, x, cfg = (_net, x, cfg) if _net is not None else _prepare(params, x, cfg, dropout_mask=dropout_mask)
    T, lam, vth, N = cfg.T, cfg.leak, cfg.v_th, net.N
    m = _masks(net)                                                    # the masks of Eq. (DO), or 1
    static = x.ndim == 2
    B = x.shape[-2]
    if static:
        I = m["F"] * net.current(1, x)                                 # I = F x + b, computed once
    u = [np.zeros((B, n)) for n in net.sizes]                          # u_0 = 0
    s = [np.zeros((B, n)) for n in net.sizes]                          # s_0 = 0
    acc = [np.zeros((B, n)) for n in net.sizes]
    a_t, s_t = [], []
    norm = 0.0
    for t in range(T):
        It = I if static else m["F"] * net.current(1, x[t])
        for l in range(N):
            if l == 0:
                v = lam * u[0] + m["W"] * net.W(s[N - 1]) + It         # Eq. (N1): s^N from step t-1
            else:
                v = lam * u[l] + m[f"F{l + 1}"] * net.current(l + 1, s[l - 1])   # Eq. (N2): s^{l-1} from step t
            s[l] = (v >= vth).astype(np.float64)                       # Eq. (N3)
            u[l] = v - vth * s[l]                                      # Eq. (N4)
            acc[l] = lam * acc[l] + s[l]                               # Eq. (R), numerator
        norm = lam * norm + 1.0                                        # Eq. (R), sum_t lam^(T-t)
        if record:
            a_t.append(acc[N - 1] / norm)
            s_t.append(s[N - 1].copy())
    out = {"a": acc[N - 1] / norm, "u": u, "s": s, "rates": [A / norm for A in acc]}
    if record:
        out["a_t"], out["s_t"] = np.array(a_t), np.array(s_t)
    return out


@njit(nogil=True, error_model="numpy")
def _simulate_kernel(I, x, FT, b, static, Ms, cs, us, ss, acc, T, v_th, leak, masked, mx, ms, first, stop):
    """All ``T`` steps of Eq. (N1)-(N4), event-driven: each spike adds one row of a transposed weight.

    ``I`` (B, n_1): the static current ``F x + b`` (used when ``static``;
    already masked); ``x`` (T, B, n_in), ``FT = F^T``, ``b``: spike input
    otherwise.  ``Ms = (W^T, F2^T, ..., FN^T)``, ``cs = (unused, b2, ..., bN)``.
    ``us, ss`` (per layer, (B, n_l)) hold ``u`` and ``s`` (zeros on entry,
    the state after step ``T`` on exit); ``acc`` (B, n_N) receives
    ``sum_t lam^(T-t) s^N_t``.  With ``masked`` (dropout), ``mx`` (B, n_1)
    scales the spike input's current and ``ms[l]`` (B, n_l) every term of
    layer ``l``'s synaptic current (``ms[0]``: the feedback).  Nothing is
    allocated: memory is independent of ``T``.  Samples ``first`` to ``stop - 1``: the batch is shared among
    Python threads by :func:`refsnn.blocks._jit.over_batch` (each sample's state is its own rows).
    """
    N = len(Ms)
    for bb in range(first, stop):
        for t in range(T):
            for l in range(N):
                u = us[l]
                n = u.shape[1]
                m = ms[l]
                for i in range(n):
                    u[bb, i] = leak * u[bb, i]                                 # Eq. (N1), (N2): the leak
                if l == 0:
                    if static:
                        for i in range(n):
                            u[bb, i] += I[bb, i]                               # Eq. (N1): + I
                    elif masked:
                        for i in range(n):
                            u[bb, i] += mx[bb, i] * b[i]
                        for j in range(x.shape[2]):
                            xj = x[t, bb, j]
                            if xj != 0.0:
                                for i in range(n):
                                    u[bb, i] += mx[bb, i] * (xj * FT[j, i])    # Eq. (N1): + I, masked
                    else:
                        for i in range(n):
                            u[bb, i] += b[i]
                        for j in range(x.shape[2]):
                            xj = x[t, bb, j]
                            if xj != 0.0:
                                for i in range(n):
                                    u[bb, i] += xj * FT[j, i]                  # Eq. (N1): + I
                    src = ss[N - 1]                      # s^N_{t-1}: layer N not yet updated at step t
                else:
                    c = cs[l]
                    if masked:
                        for i in range(n):
                            u[bb, i] += m[bb, i] * c[i]                        # Eq. (N2): + b^l, masked
                    else:
                        for i in range(n):
                            u[bb, i] += c[i]                                   # Eq. (N2): + b^l
                    src = ss[l - 1]                      # s^{l-1}_t
                M = Ms[l]
                for j in range(src.shape[1]):
                    if src[bb, j] != 0.0:
                        if masked:
                            for i in range(n):
                                u[bb, i] += m[bb, i] * M[j, i]                 # Eq. (N1), (N2): a spike's row, masked
                        else:
                            for i in range(n):
                                u[bb, i] += M[j, i]                            # Eq. (N1), (N2): a spike's row
                s = ss[l]
                for i in range(n):
                    if u[bb, i] >= v_th:
                        s[bb, i] = 1.0                                         # Eq. (N3)
                        u[bb, i] -= v_th                                       # Eq. (N4)
                    else:
                        s[bb, i] = 0.0
            sN = ss[N - 1]
            for i in range(acc.shape[1]):
                acc[bb, i] = leak * acc[bb, i] + sN[bb, i]                     # Eq. (R), numerator


def _simulate_fast(net: _Net, x, cfg: Config, keep=None) -> dict:
    if any(op.spec.kind != "dense" for op in [net.F, net.W, *net.Fs]):
        # convolutions: the readable loop over steps, each step's operations by im2col and BLAS (net's ops
        # are the fast forms unless backend="numpy"); still no history, memory independent of T
        return simulate_numpy(None, x, cfg, _net=net)
    B = x.shape[-2]
    static = x.ndim == 2
    m = net.drop
    if static:
        current1 = net.current(1, x)                                   # Eq. (N1): I = F x + b, once
        if keep is not None:                # f at the same static x (xbar = x) needs it again: _apply_f
            keep["current1"] = current1
        I = np.ascontiguousarray(_masks(net)["F"] * current1)
        xs, FT = np.zeros((1, 1, 1)), np.zeros((1, 1))                 # unused
    else:
        I = np.zeros((1, 1))
        xs, FT = np.ascontiguousarray(x), np.ascontiguousarray(net.F.w.T)
    Ms = tuple([np.ascontiguousarray(net.W.w.T)] + [np.ascontiguousarray(Fl.w.T) for Fl in net.Fs])
    cs = tuple([np.zeros(net.sizes[0])] + [np.ascontiguousarray(bl) for bl in net.bs])
    us = tuple(np.zeros((B, n)) for n in net.sizes)
    ss = tuple(np.zeros((B, n)) for n in net.sizes)
    acc = np.zeros((B, net.sizes[-1]))
    if m is None:
        mx, ms = np.zeros((1, 1)), tuple(np.zeros((1, 1)) for _ in net.sizes)     # unused
    else:
        mx = np.ascontiguousarray(m["F"])
        ms = tuple(np.ascontiguousarray(m[k]) for k in dropout_keys(net.N)[1:])
    # samples shared among threads by the work the events stand for: the bytes of the dense products
    # (every row of every operation at every step; spikes add only some of them, so this overstates it)
    rows = [net.sizes[-1] + (0 if static else x.shape[-1])] + net.sizes[:-1]
    work = cfg.T * B * 8 * sum(r * n for r, n in zip(rows, net.sizes))
    over_batch(_simulate_kernel, B, I, xs, FT, np.ascontiguousarray(net.b), static, Ms, cs, us, ss, acc, cfg.T,
               cfg.v_th, cfg.leak, m is not None, mx, ms, work=work)
    norm = _rate_norm(cfg.T, cfg.leak)
    return {"a": acc / norm, "u": list(us), "s": list(ss)}


def _simulate(net, x, cfg, keep=None) -> np.ndarray:
    if cfg.backend == "numpy":
        return simulate_numpy(None, x, cfg, _net=net)["a"]
    return _simulate_fast(net, x, cfg, keep)["a"]


def simulate(params, x, cfg: Config = Config(), *, return_state: bool = False, dropout_mask=None):
    """Run the spiking network for ``cfg.T`` steps; return the last layer's rate ``a[T]``, (batch, n_N).

    Uses ``cfg.backend`` (numba kernel or NumPy twin).  With ``return_state``
    returns the dict of :func:`simulate_numpy` (``a``, per-layer ``u`` and
    ``s`` after step T) instead.  ``dropout_mask``: the masks of Eq. (DO)
    (none by default).
    """
    net, x, cfg = _prepare(params, x, cfg, dropout_mask=dropout_mask)
    if cfg.backend == "numpy":
        out = simulate_numpy(None, x, cfg, _net=net)
    else:
        out = _simulate_fast(net, x, cfg)
    return out if return_state else out["a"]


# ---------------------------------------------------------------------------
# The fixed-point map and its derivatives
# ---------------------------------------------------------------------------

def _sigma(z):
    return np.clip(z, 0.0, 1.0)


def _sigma_prime(z):
    """``1`` on ``0 <= z <= 1`` (inclusive, as PyTorch's clamp backward), else ``0``."""
    return ((z >= 0.0) & (z <= 1.0)).astype(np.float64)


@dataclass
class _Lin:
    """One application of f at ``a``: the pre-activations and outputs of every layer."""

    a: np.ndarray
    xbar: np.ndarray
    pre: list           # pre_l (B, n_l)
    h: list             # h_l = sigma(pre_l / v_th); h[-1] = f(a)
    dsig: list          # sigma'(pre_l / v_th)


def _apply_f(net: _Net, a, xbar, v_th, current1=None) -> _Lin:
    """f at ``a`` (Eq. (FP)); ``current1``, if given, is ``F xbar + b`` already computed (the fast simulation's,
    at a static input: the same product of the same numbers)."""
    pre, h, dsig = [], [], []
    m = _masks(net)                                                    # the masks of Eq. (DO), or 1
    if current1 is None:
        current1 = net.current(1, xbar)
    p = m["W"] * net.W(a) + m["F"] * current1                          # Eq. (FP), layer 1
    for l in range(net.N):
        if l > 0:
            p = m[f"F{l + 1}"] * net.current(l + 1, h[-1])             # Eq. (FP), layer l >= 2
        z = p / v_th
        pre.append(p)
        h.append(_sigma(z))
        dsig.append(_sigma_prime(z))
    return _Lin(a, xbar, pre, h, dsig)


def _check_a(a, net, B, name="a"):
    a = check_array(name, a, ndim=2).astype(np.float64, copy=False)
    if a.shape != (B, net.sizes[-1]):
        raise ValueError(f"{name}: expected the last layer's rates, shape ({B}, {net.sizes[-1]}), got {a.shape}")
    return a


def fixed_point_map(params, a, x, cfg: Config = Config(), *, dropout_mask=None) -> np.ndarray:
    """``f(a) = f_N o ... o f_1(a)`` of Eq. (FP) (with the masks of Eq. (DO) if given), shape (batch, n_N)."""
    net, x, cfg = _prepare(params, x, cfg, dropout_mask=dropout_mask)
    a = _check_a(a, net, x.shape[-2])
    return _apply_f(net, a, input_average(x, cfg), cfg.v_th).h[-1]


class _NoDropout(dict):
    """The masks of Eq. (DO) when there is no dropout: 1 for every key (multiplying by 1.0 is exact)."""

    def __missing__(self, key):
        return 1.0


def _masks(net: _Net):
    """The dropout masks ``{"F", "W", "F2", ...}`` of Eq. (DO), or 1 for each without dropout: the variant is
    data the paper's equations take, not a second copy of their lines."""
    return net.drop if net.drop is not None else _NoDropout()


def _masked(net: _Net, key: str, d):
    """``d`` times the dropout mask of ``key`` ("F", "W", "F2", ...): the backward pass of Eq. (DO)."""
    return _masks(net)[key] * d


def _deltas(net: _Net, lin: _Lin, beta, v_th) -> list:
    """``delta_l = d(beta . f)/d pre_l`` for every layer (the chain of Eq. (G))."""
    d = beta
    out = [None] * net.N
    for l in reversed(range(net.N)):
        d = d * lin.dsig[l] / v_th
        out[l] = d
        if l > 0:
            d = net.Fs[l - 1].T(_masked(net, f"F{l + 1}", d))
    return out


def _JT(net, lin, beta, v_th):
    """``J^T beta`` at the linearisation point (batched)."""
    return net.W.T(_masked(net, "W", _deltas(net, lin, beta, v_th)[0]))


def _JT_fast(net, lin, beta, v_th):
    """:func:`_JT` for the fast tier: each link of the chain of Eq. (G) with its dropout mask of Eq. (DO),
    ``mask * (d * sigma' / v_th)``, in one pass (:func:`_masked_delta_kernel`) instead of three NumPy passes
    and their temporaries, before the operation's adjoint.  The same operations in the same order, so the
    same numbers (the iterative solvers call it once per iteration)."""
    d = beta
    for l in reversed(range(net.N)):               # masks are checked to (batch, n_l), like d and sigma'
        key, op = (f"F{l + 1}", net.Fs[l - 1]) if l > 0 else ("W", net.W)
        mask = None if net.drop is None else net.drop[key]
        out = np.empty_like(d)
        _masked_delta_kernel(d, lin.dsig[l], float(v_th), d if mask is None else mask, mask is not None, out)
        d = op.T(out)
    return d


@njit(nogil=True, error_model="numpy")
def _masked_delta_kernel(d, dsig, v_th, mask, masked, out):
    """``out = mask * (d * dsig / v_th)`` (``masked``; else ``d * dsig / v_th``), entry by entry: the products
    and the division of :func:`_deltas` and :func:`_masked`, in their order."""
    B, n = d.shape
    for b in range(B):
        for j in range(n):
            v = d[b, j] * dsig[b, j] / v_th
            out[b, j] = mask[b, j] * v if masked else v


#: Most entries of the per-sample Jacobians the dense solver (and the exact equilibrium's Newton
#: polish) may build: 2e8 float64 = 1.6 GB.
DENSE_JACOBIAN_LIMIT = 200_000_000


def _jacobian(net, lin, v_th):
    """``J = df/da`` per sample, (B, n_N, n_N), from the operations as explicit matrices."""
    B, n = lin.a.shape
    if B * n * max(net.sizes) > DENSE_JACOBIAN_LIMIT:
        raise ValueError(f"cfg.solver: the dense Jacobians of this block would hold {B * n * max(net.sizes):.3g} "
                         f"numbers ({B} samples x {n} x {max(net.sizes)}); use solver='broyden' or 'fixed_point' "
                         f"(and linearize_at='simulated')")
    M = _masked(net, "W", lin.dsig[0])[:, :, None] * net.W.matrix()[None] / v_th
    for l in range(1, net.N):
        M = _masked(net, f"F{l + 1}", lin.dsig[l])[:, :, None] * np.einsum("ij,bjk->bik", net.Fs[l - 1].matrix(),
                                                                            M) / v_th
    return M


def jacobian(params, a, x, cfg: Config = Config(), *, dropout_mask=None) -> np.ndarray:
    """``J = df/da`` at ``a`` for every sample, shape (batch, n_N, n_N) (with the masks of Eq. (DO) if given)."""
    net, x, cfg = _prepare(params, x, cfg, dropout_mask=dropout_mask)
    a = _check_a(a, net, x.shape[-2])
    return _jacobian(net, _apply_f(net, a, input_average(x, cfg), cfg.v_th), cfg.v_th)


def jacobian_T_vec(params, a, x, beta, cfg: Config = Config(), *, dropout_mask=None) -> np.ndarray:
    """``J^T beta`` at ``a`` (batched; one backward pass through f, no matrix built)."""
    net, x, cfg = _prepare(params, x, cfg, dropout_mask=dropout_mask)
    a = _check_a(a, net, x.shape[-2])
    beta = check_array("beta", beta, shape=a.shape).astype(np.float64)
    return _JT(net, _apply_f(net, a, input_average(x, cfg), cfg.v_th), beta, cfg.v_th)


def kink_distance(params, x, cfg: Config = Config(), *, dropout_mask=None) -> float:
    """Smallest ``min(|z|, |z - 1|)``, ``z = pre/v_th``, over every unit, layer and sample at the linearisation point.

    The linearisation point is ``a[T]`` (``"simulated"``) or ``a*``
    (``"fixed_point"``).  Central differences of :func:`reference_objective`
    are exact only if no perturbation moves a ``z`` across 0 or 1, i.e. if
    this is much larger than ``eps`` times the sensitivity of ``z``.  With
    ``dropout_mask``, units whose every input current is dropped are left
    out: their ``pre`` is 0 for all parameters and never crosses the kink.
    """
    net, lin = _linearisation(params, x, cfg, dropout_mask)
    dist = [np.minimum(np.abs(p / cfg.v_th), np.abs(p / cfg.v_th - 1.0)) for p in lin.pre]
    if net.drop is not None:
        m = net.drop
        live = [(m["F"] != 0) | (m["W"] != 0)] + [m[f"F{l}"] != 0 for l in range(2, net.N + 1)]
        dist = [d[ok] for d, ok in zip(dist, live)]
    return float(min(np.min(d, initial=np.inf) for d in dist))


def linear_fraction(params, x, cfg: Config = Config(), *, dropout_mask=None) -> float:
    """Fraction of units on the linear piece of ``sigma`` (``0 <= z <= 1``) at the linearisation point.

    Averaged over layers (each layer's own fraction over units and samples).
    Only those units pass gradient: ``sigma'`` is 0 elsewhere.
    """
    _, lin = _linearisation(params, x, cfg, dropout_mask)
    return float(np.mean([np.mean(d) for d in lin.dsig]))


def _linearisation(params, x, cfg, dropout_mask=None) -> tuple:
    """``(net, f applied once at the linearisation point a[T] or a*)`` (see ``Config.linearize_at``)."""
    net, x, cfg = _prepare(params, x, cfg, dropout_mask=dropout_mask)
    xbar = input_average(x, cfg)
    a = _linearisation_point(net, x, xbar, cfg)[0]
    return net, _apply_f(net, a, xbar, cfg.v_th)


def _regions(lin: _Lin, v_th) -> bytes:
    """Which piece of sigma every unit is on (0: z < 0, 1: inside, 2: z > 1), as a hashable key."""
    parts = [np.where(p < 0, 0, np.where(p > v_th, 2, 1)).astype(np.int8).tobytes() for p in lin.pre]
    return b"|".join(parts)


# ---------------------------------------------------------------------------
# The exact equilibrium (for linearize_at="fixed_point" and reference_objective)
# ---------------------------------------------------------------------------

def _solve_equilibrium(net, xbar, cfg, offset, a0):
    """``a = f(a) + offset`` by fixed-point iteration, then Newton (active-set) steps to round-off."""
    B, n = xbar.shape[0], net.sizes[-1]
    a = np.zeros((B, n)) if a0 is None else np.array(a0, dtype=np.float64)
    off = 0.0 if offset is None else offset
    residuals = []
    iters = 0
    for _ in range(cfg.eq_max_iter):
        fa = _apply_f(net, a, xbar, cfg.v_th).h[-1] + off
        r = float(np.max(np.abs(fa - a), initial=0.0))
        residuals.append(r)
        a = fa
        iters += 1
        if r <= 1e-9 or not math.isfinite(r):
            break
    newton = 0
    eye = np.eye(n)
    for _ in range(8):                                          # Newton on the piecewise-linear G(a) = a - f(a) - offset:
        lin = _apply_f(net, a, xbar, cfg.v_th)                  # exact in one step once the active set is right
        G = a - lin.h[-1] - off
        r = float(np.max(np.abs(G), initial=0.0))
        if newton:
            residuals.append(r)
        if r <= 0.25 * cfg.eq_tol or not math.isfinite(r):
            break
        try:
            step = np.linalg.solve(eye - _jacobian(net, lin, cfg.v_th), G[..., None])[..., 0]
        except np.linalg.LinAlgError:
            break
        a_new = a - step
        r_new = float(np.max(np.abs(a_new - _apply_f(net, a_new, xbar, cfg.v_th).h[-1] - off), initial=0.0))
        newton += 1
        if not r_new < r:                                       # no progress (wrong piece): keep a
            residuals.append(r_new)
            break
        a = a_new
    lin = _apply_f(net, a, xbar, cfg.v_th)
    r = float(np.max(np.abs(a - lin.h[-1] - off), initial=0.0))
    residuals.append(r)
    info = SolverInfo("equilibrium", bool(r <= cfg.eq_tol), iters + newton, r, cfg.eq_tol, np.array(residuals),
                      {"fixed_point_iterations": iters, "newton_steps": newton})
    if not info.converged:
        _warn_nonconvergence(info, net, cfg, what="the equilibrium a* = f(a*)")
    return a, info


def solve_equilibrium(params, x, cfg: Config = Config(), *, offset=None, a0=None, dropout_mask=None):
    """The exact fixed point ``a* = f(a*)`` of Eq. (FP) (or of ``a = f(a) + offset``, Eq. (AN)).

    Iterates ``a <- f(a) + offset`` (a contraction when
    :func:`contraction_bound` < 1) to ``max|f(a) - a| <= 1e-9`` or
    ``cfg.eq_max_iter`` steps, then takes Newton steps
    ``a <- a - (I - J)^{-1} (a - f(a) - offset)``.  Because ``f`` is
    piecewise linear, one Newton step from a point with the right active set
    (which units are silent, linear, saturated) *is* the closed-form solution
    ``a_A = (I - J_AA)^{-1} (...)``, so the result is exact to round-off.

    Returns ``(a, SolverInfo)``; warns (:class:`ConvergenceWarning`) when the
    final ``max|f(a) + offset - a|`` exceeds ``cfg.eq_tol``.  ``dropout_mask``:
    the masks of Eq. (DO) (none by default).
    """
    net, x, cfg = _prepare(params, x, cfg, dropout_mask=dropout_mask)
    B = x.shape[-2]
    if offset is not None:
        offset = _check_a(offset, net, B, "offset")
    if a0 is not None:
        a0 = _check_a(a0, net, B, "a0")
    return _solve_equilibrium(net, input_average(x, cfg), cfg, offset, a0)


# ---------------------------------------------------------------------------
# Step 2: the adjoint linear system (I - J^T) beta = g
# ---------------------------------------------------------------------------

def _adjoint_dense(net, lin, g, cfg):
    J = _jacobian(net, lin, cfg.v_th)
    A = np.eye(g.shape[1])[None] - np.transpose(J, (0, 2, 1))
    try:
        beta = np.linalg.solve(A, g[..., None])[..., 0]                # Eq. (A), exactly
    except np.linalg.LinAlgError as exc:
        raise ValueError(f"adjoint: I - J^T is singular ({exc}); the feedback is not a contraction "
                         f"(bound {_bound(net, cfg):.3g})") from None
    return beta, 1


def _bound(net, cfg):
    bound = operator_norm(net.W)[0]
    for Fl in net.Fs:
        bound *= operator_norm(Fl)[0]
    if net.drop is not None:                                           # ||diag(m) M|| <= max|m| ||M||
        bound *= float(np.prod([np.max(net.drop[k], initial=0.0) for k in dropout_keys(net.N)[1:]]))
    return float(bound / cfg.v_th ** net.N)


def _warn_nonconvergence(info: SolverInfo, net, cfg, what: str):
    bound = _bound(net, cfg)
    why = (f"the contraction bound ||W|| prod||F^l|| / v_th^N = {bound:.3g} >= 1, so f need not be a contraction; "
           f"set Config.spectral_norm to a c with c * prod||F^l|| < v_th^N" if bound >= 1
           else f"contraction bound {bound:.3g}; raise Config.max_iter / eq_max_iter or loosen tol")
    warnings.warn(f"IDE: {what} did not converge: {info.summary()}. {why}.", ConvergenceWarning, stacklevel=4)


def _adjoint(net, lin, g, cfg) -> tuple:
    gnorm = solvers.rhs_norms(g)
    trace = []
    if cfg.solver == "dense":
        beta, iters = _adjoint_dense(net, lin, g, cfg)
        last = {"beta": beta, "JT": _JT(net, lin, beta, cfg.v_th)}
        R = last["JT"] + g - beta
        trace.append(float(np.max(solvers.relative_residual(R, gnorm), initial=0.0)))
        tol = max(cfg.tol, 1e-8)
    else:
        last = {}

        jt = _JT if cfg.backend == "numpy" else _JT_fast

        def JT(beta):                                                  # J^T beta, batched (the solvers' one input)
            last["beta"], last["JT"] = beta, jt(net, lin, beta, cfg.v_th)
            return last["JT"]

        if cfg.solver == "broyden":
            beta, iters = solvers.broyden(JT, g, tol=cfg.tol, max_iter=cfg.max_iter, trace=trace,
                                          fast=cfg.backend != "numpy")
        else:
            solve = {"fixed_point": solvers.fixed_point, "code_iter": solvers.halved_iteration}[cfg.solver]
            beta, iters = solve(JT, g, tol=cfg.tol, max_iter=cfg.max_iter, early_stop=cfg.early_stop, trace=trace,
                                fast=cfg.backend != "numpy")
        tol = cfg.tol
    if last.get("beta") is not beta:     # the simple iterations end on a product of the beta they return: reused
        last["JT"] = _JT(net, lin, beta, cfg.v_th)
    true = float(np.max(solvers.relative_residual(last["JT"] + g - beta, gnorm), initial=0.0))
    info = SolverInfo(cfg.solver, bool(trace[-1] <= tol), iters, trace[-1], tol, np.array(trace),
                      {"adjoint_residual": true})
    if not info.converged:
        _warn_nonconvergence(info, net, cfg, what=f"the adjoint solve (I - J^T) beta = dL/da ({cfg.solver})")
    return beta, info


def adjoint(params, a, x, g, cfg: Config = Config(), *, dropout_mask=None):
    """Step 2: solve ``(I - J^T) beta = g`` at ``a`` with ``cfg.solver`` (Eq. (A)).

    Parameters
    ----------
    a : ndarray, (batch, n_N)
        The linearisation point (``a[T]`` or ``a*``).
    g : ndarray, (batch, n_N)
        ``dL/da``.

    Returns
    -------
    beta : ndarray, (batch, n_N)
    info : SolverInfo
        ``residuals`` is the trace of the largest per-sample relative
        residual; ``extra["adjoint_residual"]`` the final residual of Eq. (A)
        itself (for ``"code_iter"`` it stays large: that solver solves
        ``(2I - J^T) beta = g``).
    """
    net, x, cfg = _prepare(params, x, cfg, dropout_mask=dropout_mask)
    a = _check_a(a, net, x.shape[-2])
    g = check_array("g", g, shape=a.shape).astype(np.float64)
    return _adjoint(net, _apply_f(net, a, input_average(x, cfg), cfg.v_th), g, cfg)


# ---------------------------------------------------------------------------
# Step 3: one vector-Jacobian product through f
# ---------------------------------------------------------------------------

def _vjp(net: _Net, lin: _Lin, beta, cfg) -> dict:
    deltas = _deltas(net, lin, beta, cfg.v_th)                         # Eq. (G)
    dF = _masked(net, "F", deltas[0])                                  # dL/d(F xbar + b), Eq. (DO)
    if net.fold is None:
        grads = {"F": net.F.wgrad(dF, lin.xbar), "b": net.F.channel_sum(dF)}
    else:                                                              # BatchNorm's pullback to stored params
        grads = variants.batchnorm_backward(net, dF)
    for l in range(2, net.N + 1):
        dl = _masked(net, f"F{l}", deltas[l - 1])
        grads[f"F{l}"] = net.Fs[l - 2].wgrad(dl, lin.h[l - 2])
        grads[f"b{l}"] = net.Fs[l - 2].channel_sum(dl)
    GW = net.W.wgrad(_masked(net, "W", deltas[0]), lin.a)             # dL/dW (effective)
    if net.sn is None:
        grads["W"] = GW
    else:                                                              # spectral norm's pullback
        grads.update(variants.spectral_norm_backward(net.sn, GW, cfg.spectral_norm, cfg.sn_method))
    return grads


def vjp(params, a, x, beta, cfg: Config = Config(), *, dropout_mask=None) -> dict:
    """Step 3: ``beta^T df/dtheta`` at ``a`` for every parameter inside ``f`` (Eq. (G)).

    Returns gradients for ``F, b, F2, b2, ..., W`` (and ``g``), with
    ``W``/``g`` through Eq. (SN) when ``cfg.spectral_norm`` is set (and zeros
    for the state ``sn_u, sn_v`` with ``sn_method="power"``).
    """
    net, x, cfg = _prepare(params, x, cfg, dropout_mask=dropout_mask)
    a = _check_a(a, net, x.shape[-2])
    beta = check_array("beta", beta, shape=a.shape).astype(np.float64)
    return _vjp(net, _apply_f(net, a, input_average(x, cfg), cfg.v_th), beta, cfg)


# ---------------------------------------------------------------------------
# Loss and the algorithm contract
# ---------------------------------------------------------------------------

def _cross_entropy(logits, y):
    """Mean cross-entropy over the batch and ``dL/dlogits`` (Eq. (L))."""
    B = logits.shape[0]
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -float(np.mean(logp[np.arange(B), y]))
    d = np.exp(logp)
    d[np.arange(B), y] -= 1.0
    return loss, d / B


def _readout(net, a, y):
    loss, dlogits = _cross_entropy(a @ net.Wo.T + net.bo, y)
    return loss, dlogits, {"Wo": dlogits.T @ a, "bo": dlogits.sum(axis=0)}


def readout(params, a, y, cfg: Config = Config()):
    """The readout and loss at rates ``a``: ``(loss, dL/da, {"Wo": dL/dWo, "bo": dL/dbo})`` (Eq. (L)).

    ``loss`` is the mean cross-entropy of ``o = Wo a + bo``; ``dL/da`` is the
    right-hand side of the adjoint equation (Eq. (A)).
    """
    net = _unpack(params, check_config(cfg, Config))
    a = check_array("a", a, ndim=2).astype(np.float64, copy=False)
    if a.shape[1] != net.sizes[-1]:
        raise ValueError(f"a: expected the last layer's rates, shape (batch, {net.sizes[-1]}), got {a.shape}")
    y = check_labels("y", y, net.Wo.shape[0], batch=a.shape[0])
    loss, dlogits, grads = _readout(net, a, y)
    return loss, dlogits @ net.Wo, grads


def _linearisation_point(net, x, xbar, cfg, keep=None):
    if cfg.linearize_at == "simulated":
        return _simulate(net, x, cfg, keep), None
    return _solve_equilibrium(net, xbar, cfg, None, None)


def loss_and_grad(params, x, y, cfg: Config = Config(), rng=None, *, info=None, dropout_mask=None):
    """Loss and IDE gradient: simulate, solve the adjoint, one VJP.

    Parameters
    ----------
    params : dict
        ``F, b, [F2, b2, ...], W, [g], [sn_u, sn_v], Wo, bo`` (see :func:`init_params`).
    x : ndarray, (batch, n_in) or (T, batch, n_in)
        Static (direct) input or spikes.
    y : ndarray of int, (batch,)
    cfg : Config
    rng : int seed or numpy.random.Generator, optional
        Draws the dropout masks when ``cfg.dropout > 0`` and no
        ``dropout_mask`` is given (:func:`dropout_mask`); otherwise unused.
    info : dict, optional
        If given, filled with diagnostics: ``"a"`` (the linearisation point),
        ``"beta"`` (the adjoint), ``"adjoint"`` (:class:`SolverInfo`),
        ``"equilibrium"`` (SolverInfo or None), ``"snn_residual"``
        (``max|f(a) - a|`` at ``a``), ``"pred"`` (the classes the readout at
        ``a`` predicts), ``"dropout_mask"`` (the masks used, or None) and
        ``"state"``: the next values of the buffers of :func:`state_keys`:
        with BatchNorm in batch mode the running statistics ``bn_mean,
        bn_var``, with ``sn_method="power"`` the stepped vectors ``sn_u,
        sn_v`` (Eq. (PI)); else empty.  ``params`` itself is never modified.
    dropout_mask : dict, optional
        The masks of Eq. (DO) (:func:`dropout_keys`; e.g. ``info["dropout_mask"]``
        of an earlier call), used instead of drawing them from ``rng``.

    Returns
    -------
    loss : float
        Mean cross-entropy of the readout at ``a[T]`` (``"simulated"``) or ``a*``.
    grads : dict
        Same keys and shapes as ``params``: the exact gradient of
        :func:`reference_objective` at ``params`` (zeros for the state ``sn_u, sn_v``).
    """
    net, x, cfg = _prepare(params, x, cfg)
    y = check_labels("y", y, net.Wo.shape[0], batch=x.shape[-2])
    mask = _dropout(net, x, cfg, rng, dropout_mask)
    net = replace(net, drop=mask)
    xbar = input_average(x, cfg)
    keep = {}
    a, eq_info = _linearisation_point(net, x, xbar, cfg, keep)          # step 1
    loss, dlogits, grads_out = _readout(net, a, y)
    g = dlogits @ net.Wo                                               # dL/da
    lin = _apply_f(net, a, xbar, cfg.v_th, keep.get("current1"))
    beta, adj_info = _adjoint(net, lin, g, cfg)                        # step 2, Eq. (A)
    grads = _vjp(net, lin, beta, cfg)                                  # step 3, Eq. (G)
    grads.update(grads_out)
    grads = {k: grads[k] for k in params}
    if info is not None:
        info.update(a=a, beta=beta, adjoint=adj_info, equilibrium=eq_info,
                    snn_residual=float(np.max(np.abs(lin.h[-1] - a), initial=0.0)),
                    pred=np.argmax(a @ net.Wo.T + net.bo, axis=1), dropout_mask=mask,
                    state=_next_state(net, params, x, cfg))
    return loss, grads


def _next_state(net: _Net, params, x, cfg: Config) -> dict:
    """The buffers' next values after this step: BN running statistics (batch mode) and the power-iteration vectors."""
    state = _running_statistics(net, params, x)
    if cfg.sn_method == "power":
        state["sn_u"], state["sn_v"] = net.sn[4].copy(), net.sn[5].copy()      # the power step's u1, v1: state
    return state


def _running_statistics(net: _Net, params, x) -> dict:
    """The next BatchNorm running statistics after a batch-mode step (PyTorch's rule), or ``{}``.

    ``mean <- (1 - m) mean + m * batch mean``, ``var <- (1 - m) var + m *
    batch variance * B / (B - 1)`` (the unbiased variance), ``m = 0.1``; the
    batch mean is that of ``F xbar + b``.
    """
    if net.fold is None or net.fold["mode"] != "batch":
        return {}
    P = net.fold["P"]
    M = P.shape[0] * P.shape[2]                                        # values per channel: B (x H W for BN2d)
    m = BN_MOMENTUM
    return {"bn_mean": (1 - m) * np.asarray(params["bn_mean"], np.float64) + m * (net.fold["mean"] + net.fold["b"]),
            "bn_var": (1 - m) * np.asarray(params["bn_var"], np.float64) + m * net.fold["var"] * M / max(M - 1, 1)}


def reference_objective(params, x, y, cfg: Config = Config(), rng=None, *, dropout_mask=None):
    """The smooth function whose exact gradient at ``params`` is :func:`loss_and_grad`'s.

    ``objective(p) = L_p(a~(p))`` where ``a~(p)`` solves
    ``a~ = f_p(a~) + r0`` exactly (:func:`solve_equilibrium`), with the frozen
    residual ``r0 = a0 - f_params(a0)`` of the simulation
    ``a0 = a[T](params)`` (``"simulated"``, Eq. (AN)) or ``r0 = 0``
    (``"fixed_point"``: ``L(a*(p))``).  ``objective(params)`` equals the loss
    :func:`loss_and_grad` returns.  Frozen as well: the dropout masks (drawn
    from ``rng`` exactly as :func:`loss_and_grad` draws them, or
    ``dropout_mask``) and, with ``sn_method="power"``, the stepped vectors
    ``u1, v1`` of Eq. (PI) at ``params`` (so ``sigma(p) = u1^T W_raw(p) v1``,
    and ``p["sn_u"], p["sn_v"]`` do not enter).

    The returned function has an attribute ``regions``: a set that collects,
    at every evaluation, which piece of ``sigma`` every unit sits on.  If it
    holds a single element after a finite-difference check, every evaluation
    lay on the same smooth piece (no kink was crossed).
    """
    cfg = replace(check_config(cfg, Config), backend="numpy")
    net0, x, _ = _prepare(params, x, cfg)
    y = check_labels("y", y, net0.Wo.shape[0], batch=x.shape[-2])
    mask = _dropout(net0, x, cfg, rng, dropout_mask)
    net0 = replace(net0, drop=mask)
    sn_vectors = (net0.sn[4], net0.sn[5]) if cfg.sn_method == "power" else None
    xbar = input_average(x, cfg)
    if cfg.linearize_at == "simulated":
        a0 = simulate_numpy(None, x, cfg, _net=net0)["a"]
        r0 = a0 - _apply_f(net0, a0, xbar, cfg.v_th).h[-1]             # frozen residual, Eq. (AN)
    else:
        a0, _ = _solve_equilibrium(net0, xbar, cfg, None, None)
        r0 = None
    regions = set()

    def objective(p) -> float:
        net = replace(_unpack(p, cfg, sn_vectors=sn_vectors), drop=mask)
        if net.bn is not None:
            net = variants.fold_batchnorm(net, xbar, cfg.bn_mode)
        a, _ = _solve_equilibrium(net, xbar, cfg, r0, a0)
        regions.add(_regions(_apply_f(net, a, xbar, cfg.v_th), cfg.v_th))
        return _readout(net, a, y)[0]

    objective.regions = regions
    return objective


def predict(params, x, cfg: Config = Config(), rng=None) -> np.ndarray:
    """Predicted class per sample: argmax of the readout of the *simulated* ``a[T]`` (never of ``a*``).

    Eval mode: with ``cfg.batchnorm`` the running statistics are used, nothing
    is dropped (whatever ``cfg.dropout``), and with ``sn_method="power"`` the
    feedback uses one power step from the stored ``sn_u`` (the code's eval
    forward also takes it), which is not written back.
    """
    net, x, cfg = _prepare(params, x, cfg, bn_mode="running")
    a = _simulate(net, x, cfg)
    return np.argmax(a @ net.Wo.T + net.bo, axis=1)


def encode(features, cfg: Config = Config(), rng=None) -> np.ndarray:
    """Features in [0, 1], (batch, n_in), as the network's input.

    ``"direct"``: the values themselves, (batch, n_in), normalised by
    ``cfg.normalize`` if set.  ``"bernoulli"``: ``cfg.T`` spike frames
    ``(T, batch, n_in)`` (``rng`` required).
    """
    cfg = check_config(cfg, Config)
    if cfg.encoding == "bernoulli":
        return encoding.bernoulli(features, cfg.T, rng)
    x = check_array("features", features, lo=0.0, hi=1.0, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features: expected shape (batch, n_in), got {x.shape}")
    if cfg.normalize is not None:
        x = (x - cfg.normalize[0]) / cfg.normalize[1]
    return x


# ---------------------------------------------------------------------------
# State (buffers) that the training loop updates
# ---------------------------------------------------------------------------

def state_keys(cfg: Config = Config()) -> tuple:
    """Keys of ``params`` that are state, not parameters: the BatchNorm running statistics ``bn_mean,
    bn_var`` (with ``cfg.batchnorm``) and the power-iteration vectors ``sn_u, sn_v`` (with
    ``cfg.sn_method = "power"``).

    No optimizer may update them.  :func:`loss_and_grad` leaves them alone and
    puts their new values (PyTorch's update rule for BN, one step of Eq. (PI)
    for ``sn_u, sn_v``) in ``info["state"]``; the training loop writes those
    into ``params`` after each step.
    """
    cfg = check_config(cfg, Config)
    return (("bn_mean", "bn_var") if cfg.batchnorm else ()) + (SN_KEYS if cfg.sn_method == "power" else ())
