"""The thread-pool policy: BLAS's idle workers sleep at once, so they never take the cores numba needs.

A refsnn training step alternates between NumPy's BLAS (OpenBLAS, with a pthread pool of its own) and
kernels that run on several threads (numba's, on shares of the batch).  OpenBLAS keeps its workers spinning
for 2^28 CPU cycles (about a tenth of a second) after each call, waiting for more work, so a kernel right
after a matrix product finds the cores busy.  On this project's 2-core benchmark machine that made IDE's
F400 training step (16 Broyden iterations, each a matrix product then a parallel kernel) take 168 ms on 2
threads instead of 70 ms with the workers sleeping at once (``refsnn bench ide``, when it was written), and
STBP's step (a product, then a LIF kernel on two threads, per layer) was slower than with serial kernels.

The policy, applied when refsnn is imported unless the environment already chooses:

* ``OPENBLAS_THREAD_TIMEOUT=4``: OpenBLAS's workers sleep after 2^4 cycles.  OpenBLAS reads it once,
  when NumPy loads it, so it takes effect when refsnn is imported **before NumPy** (as the ``refsnn``
  command does).  It changes nothing else (not PyTorch, which has its own BLAS).
* When NumPy was imported first, OpenBLAS keeps spinning; refsnn then runs numba's parallel kernels on
  numba's ``workqueue`` threading layer, whose workers yield the cores between kernels (86 ms against
  168 ms for the IDE step above).  It serves one Python thread at a time, as refsnn calls its kernels.

A pool that spins is as bad for the other direction: after a ``parallel=True`` kernel, the OpenMP threads
of numba's default layer wait busily for a while and slow the BLAS products that follow.  That is why
IDE's kernels (the simulation and Broyden's per-sample step) share the batch among refsnn's own Python
threads (:func:`refsnn.blocks._jit.over_batch`, which sleep between calls), like STBP's: IDE's F400 step
with the code's 30 'iter' steps took 36-38 ms on 2 threads (medians of two runs) with the simulation as a
``parallel=True`` kernel and 31-33 ms with it shared by ``over_batch`` (``refsnn bench ide --paired
--baseline``).  Only ST-RSBP's two per-neuron kernels still use numba's own thread pool (its threading
layer: OpenMP, or ``workqueue`` as below).

``REFSNN_THREAD_POLICY=0`` leaves both libraries at their defaults.  :func:`status` says what is in force
(``refsnn info``, and every run's ``metrics.json``).
"""
from __future__ import annotations

import os
import sys

#: OpenBLAS's variable and the value the policy gives it.
OPENBLAS_TIMEOUT = ("OPENBLAS_THREAD_TIMEOUT", "4")

#: Whether NumPy was imported before refsnn (then OpenBLAS had already read its environment).
NUMPY_FIRST = "numpy" in sys.modules
ENABLED = os.environ.get("REFSNN_THREAD_POLICY", "1").strip().lower() not in ("0", "off", "false", "no")
#: The variables refsnn set in this process (a child process that should start from the user's own
#: environment, such as a benchmark of an older version, leaves them out).
SET_BY_REFSNN = set()

if ENABLED and OPENBLAS_TIMEOUT[0] not in os.environ:
    os.environ[OPENBLAS_TIMEOUT[0]] = OPENBLAS_TIMEOUT[1]
    SET_BY_REFSNN.add(OPENBLAS_TIMEOUT[0])


def numba_layer_choice() -> str | None:
    """The threading layer refsnn asks numba for: ``"workqueue"`` when OpenBLAS's workers will spin (NumPy
    came first) and neither the user nor ``REFSNN_THREAD_POLICY=0`` says otherwise; else None."""
    if not ENABLED or "NUMBA_THREADING_LAYER" in os.environ:
        return None
    if NUMPY_FIRST and OPENBLAS_TIMEOUT[0] in SET_BY_REFSNN:
        return "workqueue"
    return None


def user_environment() -> dict:
    """``os.environ`` without what refsnn set: the environment the user started this process with."""
    return {k: v for k, v in os.environ.items() if k not in SET_BY_REFSNN}


def status() -> str:
    """One line: which parts of the thread-pool policy are in force in this process."""
    if not ENABLED:
        return "thread policy off (REFSNN_THREAD_POLICY=0): BLAS and numba at their defaults"
    key, _ = OPENBLAS_TIMEOUT
    blas = f"{key}={os.environ.get(key)}"
    if key not in SET_BY_REFSNN:
        blas += " (yours)"
    elif NUMPY_FIRST:
        blas += " (not in force: NumPy was imported before refsnn)"
    try:
        import numba

        layer = numba_layer_choice() or numba.config.THREADING_LAYER    # refsnn.blocks._jit applies the choice
    except ImportError:  # pragma: no cover
        layer = "none (numba not installed)"
    return f"thread policy: {blas}; numba threading layer {layer}"
