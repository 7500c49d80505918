"""Every numeric tolerance the suite uses, in one place, with the reason for each.

Change a number here only with an argument from the mathematics or from floating-point error analysis,
never to make a failing test pass.  ``tests/test_tolerances.py`` fails on any float literal below 1e-13 in
a test file: such a number must be one of the named tolerances below, so that its reason is written down.

Two implementations of the same arithmetic in another order (a matrix product against a loop, BLAS
against a kernel, NumPy against torch, one CPU against another: FMA contraction, SIMD width and libm
differ between machines) agree to the float64 round-off of the computation, not bit for bit.  Each
rounding contributes at most ``EPS / 2`` relative; a result built from ``n`` roundings (sums of ``n``
terms, ``n`` chained operations) can move by up to about ``n * EPS`` relative to the size of its
operands.  So comparisons are made **relative to the scale of the computation** (the largest entry, or the
norm, of the expected result), never entry by entry against an absolute ``1e-15``: an entry that is
nearly zero because two large terms cancel carries the round-off of the large terms.
"""
import numpy as np

#: Spacing of float64 numbers at 1 (2.2e-16).
EPS = float(np.finfo(np.float64).eps)

#: A short formula (up to ~64 roundings: an optimizer step, a loss of a few outputs, one neuron's update
#: over a handful of steps, a mean of a few numbers) evaluated by two codes in a different order or with
#: and without fused multiply-adds: 64 * EPS = 1.4e-14 relative to the scale of the operands.
FORMULA_REL = 64 * EPS

#: Two float64 implementations of a whole network computation in a different order (one big matrix
#: product vs a sum of per-step products, an event-driven kernel vs BLAS, two LAPACK solves): sums of up to
#: ~1e3-1e4 terms, so up to ~4500 * EPS = 1e-12 relative.
TWIN_REL = 1e-12

#: Cross-check against PyTorch autograd of the same graph in float64: besides the twin's round-off, torch
#: computes some pieces by other algorithms (an SVD for the spectral norm, whose derivative is accurate to
#: ~EPS / (gap between the top singular values); its own Jacobian and solver), so 1e-10.
TORCH_REL = 1e-10

#: Gradient vs central finite differences (eps 1e-6, float64) of a smooth reference objective.  FD
#: truncation error ~ eps^2 * |f'''| ~ 1e-12 and round-off ~ 1e-16 * |f| / eps ~ 1e-10, relative to
#: gradients of order 1e-2 to 1e-1: observed errors are 1e-10..1e-8.  The issues require <= 1e-7.
GRAD_FD_REL = 1e-7

#: float32 vs float64 runs of the same network with no spike flipped: float32 round-off ~ 6e-8 per
#: operation, accumulated over T steps and layers.
FLOAT32_REL = 1e-4

#: reference_objective evaluated at the anchor against loss_and_grad's loss, for every algorithm: the same
#: function by two paths, one of which may end in an iterative solve (IDE's equilibrium, to its tolerance
#: 1e-10 and below), so 1e-9 relative (and 1e-12 absolute for a loss that is nearly zero).
ANCHOR_REL, ANCHOR_ABS = 1e-9, 1e-12

#: Two implementations of one iterative solver (a numba kernel and its NumPy twin) compared iteration by
#: iteration: each step's round-off (TWIN_REL) is carried into the next and amplified where the update is
#: ill-conditioned; observed differences stay below 1e-10 of the residual, so 1e-8.
SOLVER_TWIN_REL = 1e-8

#: scipy's adaptive quadrature of a smooth bump over a few pieces at its default requests (epsrel 1.5e-8
#: per piece), summed over up to five pieces: 1e-7 relative.
QUAD_REL = 1e-7

#: Central differences of a surrogate's primitive P with step 1e-6: round-off ~1e-16 |P| / 1e-6 (P up to
#: ~10) and truncation ~1e-12 times the third derivative of P (up to ~1e3 at the narrowest width) stay
#: below 1e-7 absolute; 1e-6 relative for the steep parts.
FD_PRIMITIVE_REL, FD_PRIMITIVE_ABS = 1e-6, 1e-7

#: An iterative solve run to a relative residual of 1e-13 and beyond, against the dense solution of the same
#: system: the residual times the conditioning of the system (below 3 for the contractions the tests build),
#: with a hundredfold margin: 1e-11 relative to the right-hand side.
CONVERGED_REL = 1e-11

#: Central differences with step h = 1e-7 of a quantity that is linear in the perturbed weight (a re-simulated
#: potential sum with the spike trains frozen): exact up to the round-off of the simulation, ~1e-16 |a| / h,
#: about 1e-8 for sums of order 10, so 1e-6 relative (1e-6 absolute below 1).
FD_LINEAR_REL = 1e-6

#: Two orders of adding the same ``n`` terms (a BLAS product with its blocking and fused multiply-adds, a loop
#: over spikes, a pairwise sum) differ, entry by entry, by at most ``2 gamma_n sum |terms|`` with ``gamma_n =
#: n u / (1 - n u)`` and ``u`` the unit round-off, half the spacing at 1 (Higham, Accuracy and Stability of
#: Numerical Algorithms, 2nd ed., Sec. 3.1 and 4.2: each order is within ``gamma_{n-1}`` of the exact sum; one
#: more rounding is allowed for a product of two factors).  ``summation_bound(n, abs_sum, eps)`` is that bound.
def summation_bound(n, abs_sum, eps=EPS):
    u = eps / 2
    return 2 * (n * u / (1 - n * u)) * np.asarray(abs_sum, dtype=np.float64)


#: A floor that keeps a division defined when both sides are exactly zero.  Not a tolerance.
TINY = 1e-300


def assert_close(actual, expected, rel: float, *, scale=None, what: str = ""):
    """``|actual - expected| <= rel * scale`` for every entry, with ``scale = max |expected|`` by default.

    The norm-wise rule of this module: an entry is judged against the size of the computation it came
    from, so round-off in an entry that nearly cancels does not fail the comparison, while any real
    difference (a wrong term, a flipped spike) far exceeds ``rel * scale``.
    """
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shapes {actual.shape} and {expected.shape} differ"
    assert np.all(np.isfinite(actual)), f"{what}: actual has {np.size(actual) - np.isfinite(actual).sum()} NaN/inf"
    assert np.all(np.isfinite(expected)), (f"{what}: expected has {np.size(expected) - np.isfinite(expected).sum()} "
                                           f"NaN/inf")
    if scale is None:
        scale = float(np.max(np.abs(expected), initial=0.0))
    diff = np.abs(actual - expected)
    err = float(np.max(diff, initial=0.0))
    if err <= rel * max(scale, TINY):
        return
    worst = np.unravel_index(int(np.argmax(diff)), diff.shape) if diff.ndim else ()
    raise AssertionError(f"{what}: max |difference| {err:.3e} exceeds {rel:.1e} x scale {scale:.3e}\n"
                         f"  worst at index {tuple(int(i) for i in worst)}: actual {float(actual[worst])!r}, "
                         f"expected {float(expected[worst])!r}\n  tolerance: {reason(rel)}")


def reason(value) -> str:
    """The name of the tolerance ``value`` is and the first line of the reason written beside it."""
    import inspect

    lines = inspect.getsource(inspect.getmodule(reason)).splitlines()
    for i, line in enumerate(lines):
        names = line.split("=")[0].replace(" ", "").split(",") if "=" in line and line[:1].isupper() else []
        for name in names:
            if name in globals() and isinstance(globals()[name], float) and globals()[name] == value:
                k = i
                while k > 0 and lines[k - 1].startswith("#:"):
                    k -= 1
                return f"{name}: {lines[k][2:].strip()} ..." if k < i else name
    return f"{value!r} (not a named tolerance)"

#: A trace that a platform computed in float32 against refsnn's float64 reading of the same graph: each step
#: rounds the membrane a few times (decay, input, reset, storage: ~4 roundings of 2^-24 relative), and a leaky
#: neuron carries each error on with its decay lam, so the errors add up to at most ~4 * EPS32 * |v|max /
#: (1 - lam) (a geometric series).  ``float32_trace_bound(vmax, lam)`` is that bound.
EPS32 = float(np.finfo(np.float32).eps)


def float32_trace_bound(vmax: float, lam: float) -> float:
    return 4 * EPS32 * vmax / (1.0 - lam)


#: refsnn's event-exact LIF against the NIR paper's event-driven reference solution, both float64: the paper's
#: solver keeps absolute event times (sums of 1e-4 steps) and finds each spike by a logarithm; the two differ
#: by up to 3.4e-9 on the paper's trace (measured, every step from the first input on, not only near spikes;
#: the cause is not identified).  1e-8 is 1e-7 of the threshold 0.1: far below any convention's effect (the
#: nearest other convention is 6e-4 away).
EVENT_EXACT_ABS = 1e-8
