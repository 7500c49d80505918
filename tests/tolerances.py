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
    err = float(np.max(np.abs(actual - expected), initial=0.0))
    assert err <= rel * max(scale, TINY), (f"{what}: max |difference| {err:.3e} exceeds {rel:.1e} x scale "
                                           f"{scale:.3e}")
