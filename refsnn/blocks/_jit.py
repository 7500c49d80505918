"""The numba shim: one decorator, ``njit``, for every fast kernel in refsnn.

Every hot loop in refsnn exists twice: a readable NumPy twin that follows the
paper line by line, and a kernel decorated with :func:`njit` that computes the
same thing fast.  This module decides how the kernels run:

* numba importable and ``NUMBA_DISABLE_JIT`` unset (or ``0``): the kernels are
  compiled with ``numba.njit(cache=True)``.  The first call of each kernel
  compiles it (a few seconds); later processes load it from numba's cache.
* ``NUMBA_DISABLE_JIT=1``, or numba not installed: ``njit`` returns the plain
  Python function unchanged, and the algorithms' ``Config(backend="numba")`` runs the NumPy tier instead
  (:func:`resolve_backend`, said once), which is far faster than the kernels as Python.  With
  ``REFSNN_KERNELS_AS_PYTHON=1`` the kernels do run as ordinary (slow) Python and give the same results;
  this is how coverage is measured and how CI checks that the kernels agree with their twins.

Kernels must take every value they use as an argument (no globals), so they
behave the same compiled and uncompiled.

``JIT_ENABLED`` tells which of the two is in force; ``refsnn.cli`` prints it in
``refsnn info``.

Threads: :mod:`refsnn.blocks._pools` makes BLAS's idle workers sleep at once, so that they do not hold the
cores numba's parallel kernels need.  :func:`limit_threads` is the one place that caps how many threads the
BLAS libraries (NumPy's and SciPy's, through threadpoolctl) and numba's
parallel kernels may use inside a ``with`` block.  ST-RSBP uses it for every
call (``Config.threads``), the benchmarks for their timed regions.  :func:`over_batch` shares a serial
``nogil`` kernel's batch among that many Python threads (STBP's LIF kernels, which are compiled once per
neuron setting and would take twice as long to compile with ``parallel=True``; IDE's simulation and Broyden
step, whose OpenMP threads, spinning after each kernel, slowed the BLAS products: :mod:`refsnn.blocks._pools`).
"""

from __future__ import annotations

import contextlib
import os

__all__ = ["njit", "prange", "JIT_ENABLED", "KERNELS_AS_PYTHON", "resolve_backend", "jit_status",
           "limit_threads", "over_batch"]


def _env_disables_jit() -> bool:
    value = os.environ.get("NUMBA_DISABLE_JIT", "0").strip()
    return value not in ("", "0")


try:  # pragma: no cover - which branch runs depends on the environment
    import numba as _numba
except ImportError:  # pragma: no cover
    _numba = None

JIT_ENABLED: bool = _numba is not None and not _env_disables_jit()

if _numba is not None:  # pragma: no cover - environment dependent
    from refsnn.blocks._pools import numba_layer_choice

    if numba_layer_choice() is not None:      # the thread-pool policy (refsnn/blocks/_pools.py)
        _numba.config.THREADING_LAYER = numba_layer_choice()


def njit(*args, **kwargs):
    """Compile a kernel with numba, or return it unchanged when JIT is off.

    Usable bare (``@njit``) or with options (``@njit(parallel=True)``).  The
    default options are ``cache=True`` (compiled code is reused across
    processes).  The undecorated function stays reachable as ``.py_func`` in
    both modes, so tests can always call the pure-Python form.
    """
    options = {"cache": True}
    options.update(kwargs)

    def decorate(func):
        if JIT_ENABLED:
            return _numba.njit(**options)(func)
        func.py_func = func
        return func

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


if JIT_ENABLED:  # pragma: no cover - environment dependent
    prange = _numba.prange
else:  # pragma: no cover
    prange = range


#: Set ``REFSNN_KERNELS_AS_PYTHON=1`` to run the kernels as plain Python when numba is off (how CI checks that they
#: agree with their twins); by default refsnn then uses its NumPy tier instead, which is much faster than the
#: kernels' Python loops.
KERNELS_AS_PYTHON: bool = os.environ.get("REFSNN_KERNELS_AS_PYTHON", "0").strip() not in ("", "0")
_TOLD = []


def resolve_backend(backend: str) -> str:
    """The backend a Config runs: ``"numba"`` becomes ``"numpy"`` (the readable twins) when numba is missing or
    disabled, unless ``REFSNN_KERNELS_AS_PYTHON=1``; said once per process."""
    if backend != "numba" or JIT_ENABLED or KERNELS_AS_PYTHON:
        return backend
    if not _TOLD:
        import warnings

        _TOLD.append(True)
        warnings.warn(f"{jit_status().split(':')[0]}: refsnn runs its NumPy tier (backend='numpy'), the readable "
                      f"twins, instead of the kernels as slow Python; install numba (or unset NUMBA_DISABLE_JIT) "
                      f"for the fast kernels", RuntimeWarning, stacklevel=4)
    return "numpy"


def jit_status() -> str:
    """One line saying whether kernels are compiled, for logs and ``refsnn info``."""
    if _numba is None:
        return "numba not installed: kernels run as plain Python"
    if not JIT_ENABLED:
        return f"numba {_numba.__version__} present but NUMBA_DISABLE_JIT is set: kernels run as plain Python"
    return f"numba {_numba.__version__}: kernels compiled"


_CONTROLLER = []   # the threadpoolctl controller, created on first use (None when threadpoolctl is missing)


def _blas_controller():
    if not _CONTROLLER:
        try:
            import scipy.linalg  # noqa: F401  -- load SciPy's own BLAS first, so the controller sees it too
            from threadpoolctl import ThreadpoolController
            _CONTROLLER.append(ThreadpoolController())
        except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
            _CONTROLLER.append(None)
    return _CONTROLLER[0]


@contextlib.contextmanager
def limit_threads(n):
    """Within the ``with`` block, BLAS and numba's parallel kernels use at most ``n`` threads.

    ``n=None`` changes nothing.  BLAS is limited through threadpoolctl (a no-op
    if it is missing); numba through ``numba.set_num_threads`` (restored on
    exit).  Results do not depend on ``n``: refsnn's parallel kernels split
    work by sample, never a sum.

    >>> with limit_threads(1):
    ...     pass
    """
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads: expected None or an integer >= 1, got {n!r}")
    with contextlib.ExitStack() as stack:
        ctl = _blas_controller()
        if ctl is not None:
            stack.enter_context(ctl.limit(limits=n, user_api="blas"))
        if JIT_ENABLED:
            before = _numba.get_num_threads()
            _numba.set_num_threads(min(n, _numba.config.NUMBA_NUM_THREADS))
            stack.callback(_numba.set_num_threads, before)
        yield


_EXECUTOR = []        # the threads over_batch shares the batch out to, made on first use
#: Below this many bytes in a kernel's first array (T x B x H numbers) it runs on one thread: handing a share
#: to another thread costs 0.1-0.2 ms (measured).  STBP's LIF forward and backward kernels together, one thread
#: -> two, the layer warm (H 400, T 20; medians of two runs on this project's 2-core VM): from 3.2 MB both runs
#: gain (float32 2.0 -> 1.3 and 2.2 -> 1.2 ms at 3.2 MB; float64 3.6 -> 2.0 and 4.7 -> 4.2 ms at 6.4 MB); at 1-2 MB
#: they disagree (float64 2 MB: 0.80 -> 0.61 in one, 0.96 -> 1.40 ms in the other), so those stay on one thread.
#: (An earlier limit of 8 MB came from the kernels timed with cold caches.)
OVER_BATCH_MIN = 3 * 2**20


def _executor():
    """The pool of Python threads :func:`over_batch` and :func:`over_shares` hand work to (made once)."""
    if not _EXECUTOR:
        from concurrent.futures import ThreadPoolExecutor
        _EXECUTOR.append(ThreadPoolExecutor(max_workers=_numba.config.NUMBA_NUM_THREADS,
                                            thread_name_prefix="refsnn-kernel"))
    return _EXECUTOR[0]


def over_batch(kernel, B, *args, work=None):
    """``kernel(*args, first, stop)`` over the samples ``0..B-1``: in one call, or in one contiguous share of
    the batch per thread when numba may use several threads (:func:`limit_threads`) and the work is large:
    ``work`` bytes (default: those of the first argument) of at least :data:`OVER_BATCH_MIN`.

    For kernels compiled with ``nogil=True`` that write each sample's results into arrays given in ``args``
    and read no other sample's: the results are the same, bit for bit, however the batch is shared out.
    The threads are Python threads (a pool made once), so a kernel needs no ``parallel=True``, which would
    double its compile time."""
    n = _numba.get_num_threads() if JIT_ENABLED else 1
    if work is None:
        work = sum(a.nbytes for a in args[:1] if hasattr(a, "nbytes"))
    if n < 2 or B < 2 or work < OVER_BATCH_MIN:
        kernel(*args, 0, B)
        return
    n = min(n, B)
    cuts = [B * k // n for k in range(n + 1)]
    _share_out(kernel, args, cuts)


def _share_out(fn, args, cuts):
    """``fn(*args, lo, hi)`` for each pair of neighbours in ``cuts``: the first share on this thread, the others on
    the pool's threads meanwhile (one hand-over fewer than giving every share away; ~0.1 ms per call measured).
    Returns when every share is done, also when one raises (no thread keeps writing into the caller's arrays)."""
    jobs = []
    try:
        for lo, hi in zip(cuts[1:-1], cuts[2:]):
            jobs.append(_executor().submit(fn, *args, lo, hi))
        fn(*args, cuts[0], cuts[1])
    finally:
        for job in jobs:
            job.exception()                 # wait, whatever happened here
    for job in jobs:
        job.result()                        # raise a share's error


def over_shares(fn, n):
    """``fn(first, stop)`` over the items ``0..n-1``: in one call, or in one contiguous share per thread when
    numba may use several threads (:func:`limit_threads`), with BLAS on one thread meanwhile (each share
    calls it).  For work done by NumPy and BLAS, which release the GIL: the convolutions' im2col blocks.
    ``fn`` must write each item's results where no other item writes."""
    threads = _numba.get_num_threads() if JIT_ENABLED else 1
    if threads < 2 or n < 2:
        fn(0, n)
        return
    threads = min(threads, n)
    cuts = [n * k // threads for k in range(threads + 1)]
    ctl = _blas_controller()
    with (ctl.limit(limits=1, user_api="blas") if ctl is not None else contextlib.nullcontext()):
        _share_out(fn, (), cuts)
