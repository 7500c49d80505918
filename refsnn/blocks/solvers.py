"""Iterative solvers of a linear fixed point ``beta = A(beta) + g``, batched over samples.

They know nothing of any algorithm: each takes the linear map as a function ``A(beta)`` (rows are samples,
``(batch, n) -> (batch, n)``), the right-hand side ``g`` (batch, n), a tolerance and an iteration budget, and
returns the iterate and the number of iterations; the residual history, each entry the largest over samples
of ``||A(beta) + g - beta|| / ||g||``, is appended to ``trace``. IDE's adjoint equation
``(I - J^T) beta = dL/da`` is one such system (``A = J^T``).

* :func:`fixed_point`: ``beta <- A(beta) + g`` from ``beta = g``; converges when ``A`` is a contraction.
* :func:`halved_iteration`: ``beta <- (beta + A(beta) + g - beta) / 2``, the official IDE code's ``'iter'``
  solver, kept as it is: its fixed point solves ``(2I - A) beta = g``, not the system above, and its
  ``trace`` records the residual of that equation.
* Both take ``fast=True`` to do each step's element-wise part (residual, norms, update) in one compiled
  pass (serial: it is a few microseconds per sample, less than waking threads).
* :func:`broyden`: Broyden's good method on ``R(beta) = A(beta) + g - beta = 0``, one low-rank inverse
  estimate per sample, from ``beta = 0``; returns each sample's lowest-residual iterate.  Its NumPy loop is
  the readable form; ``fast=True`` runs the same per-sample arithmetic in a numba kernel, the samples
  shared among threads (:func:`refsnn.blocks._jit.over_batch`).
"""
from __future__ import annotations

import math

import numpy as np

from refsnn.blocks._jit import njit, over_batch

__all__ = ["fixed_point", "halved_iteration", "broyden", "relative_residual", "rhs_norms"]


def relative_residual(R, gnorm):
    """``||R|| / ||g||`` per sample (row)."""
    return np.linalg.norm(R, axis=1) / gnorm


def rhs_norms(g):
    """``||g||`` per sample, 1 where ``g`` is zero (the scale the residuals are relative to)."""
    gnorm = np.linalg.norm(g, axis=1)
    return np.where(gnorm > 0, gnorm, 1.0)


def fixed_point(A, g, *, tol: float, max_iter: int, early_stop: bool = True, trace: list, fast: bool = False):
    """``beta <- A(beta) + g`` from ``beta = g``; with ``early_stop`` it stops once the residual is below
    ``tol``, else it runs exactly ``max_iter`` steps.  Returns ``(beta, iterations)``.  ``fast``: each step's
    element-wise part (residual, its norms, the update) in one pass, :func:`_fixed_point_kernel`."""
    gnorm = rhs_norms(g)
    beta = g.copy()
    if fast:
        nxt, rel = np.empty_like(g), np.empty(g.shape[0])
    for k in range(max_iter):
        if fast:
            _fixed_point_kernel(A(beta), g, beta, gnorm, nxt, rel)
            trace.append(float(np.max(rel, initial=0.0)))
        else:
            R = A(beta) + g - beta                                     # the residual
            trace.append(float(np.max(relative_residual(R, gnorm), initial=0.0)))
        if (early_stop and trace[-1] <= tol) or not math.isfinite(trace[-1]):
            return beta, k + 1
        if fast:
            beta, nxt = nxt, beta
        else:
            beta = beta + R                                            # beta <- A beta + g
    R = A(beta) + g - beta
    trace.append(float(np.max(relative_residual(R, gnorm), initial=0.0)))
    return beta, max_iter + 1


def halved_iteration(A, g, *, tol: float, max_iter: int, early_stop: bool = True, trace: list, fast: bool = False):
    """``beta <- (beta + R(beta)) / 2`` with ``R(beta) = (A - I) beta + g``, from ``beta = g``: the official
    IDE code's ``'iter'`` solver.  Its own residual, recorded in ``trace``, is that of ``(2I - A) beta = g``
    (the equation it solves, which is not ``beta = A beta + g``).  Returns ``(beta, iterations)``.
    ``fast``: each step's element-wise part in one pass, :func:`_halved_kernel`."""
    gnorm = rhs_norms(g)
    beta = g.copy()
    if fast:
        nxt, rel = np.empty_like(g), np.empty(g.shape[0])
    for k in range(max_iter):
        if fast:
            _halved_kernel(A(beta), g, beta, gnorm, nxt, rel)
            trace.append(float(np.max(rel, initial=0.0)))
        else:
            Rc = A(beta) + g - beta                                    # the code's g(beta) = (A - I) beta + g
            own = Rc - beta                                            # residual of (2I - A) beta = g
            trace.append(float(np.max(relative_residual(own, gnorm), initial=0.0)))
        if (early_stop and trace[-1] <= tol) or not math.isfinite(trace[-1]):
            return beta, k + 1
        if fast:
            beta, nxt = nxt, beta
        else:
            beta = 0.5 * (beta + Rc)
    Rc = A(beta) + g - beta
    trace.append(float(np.max(relative_residual(Rc - beta, gnorm), initial=0.0)))
    return beta, max_iter + 1


@njit(error_model="numpy")
def _fixed_point_kernel(Ab, g, beta, gnorm, nxt, rel):
    """One step of :func:`fixed_point` after the batched product ``Ab = A(beta)``, in one pass: the
    residual ``R = Ab + g - beta`` (its norm over ``gnorm`` into ``rel``) and ``nxt = beta + R``, with the
    NumPy loop's operations in its order (the same ``nxt``; the norm's sum in another order)."""
    B, n = g.shape
    for b in range(B):
        acc = 0.0
        for j in range(n):
            r = Ab[b, j] + g[b, j] - beta[b, j]
            acc += r * r
            nxt[b, j] = beta[b, j] + r
        rel[b] = np.sqrt(acc) / gnorm[b]


@njit(error_model="numpy")
def _halved_kernel(Ab, g, beta, gnorm, nxt, rel):
    """One step of :func:`halved_iteration` after ``Ab = A(beta)``, in one pass: ``Rc = Ab + g -
    beta``, the norm of ``Rc - beta`` over ``gnorm`` into ``rel``, and ``nxt = (beta + Rc) / 2``, in the
    NumPy loop's order (the same ``nxt``; the norm's sum in another order)."""
    B, n = g.shape
    for b in range(B):
        acc = 0.0
        for j in range(n):
            rc = Ab[b, j] + g[b, j] - beta[b, j]
            own = rc - beta[b, j]
            acc += own * own
            nxt[b, j] = 0.5 * (beta[b, j] + rc)
        rel[b] = np.sqrt(acc) / gnorm[b]


def broyden(A, g, *, tol: float, max_iter: int, trace: list, fast: bool = False):
    """Broyden's good method on ``R(beta) = A(beta) + g - beta = 0``, per sample, from ``beta = 0``.

    Inverse-Jacobian estimate ``H = -I + sum_i u_i v_i^T`` (Sherman-Morrison updates), step
    ``dbeta = -H R``; converged samples are frozen; the lowest-residual iterate of each sample is returned,
    with the number of updates made.  ``fast`` runs each iteration's per-sample arithmetic in
    :func:`_broyden_kernel` (the same operations, the samples shared among threads).
    """
    m = max_iter
    B, n = g.shape
    gnorm = rhs_norms(g)
    U = np.empty((B, m, n), g.dtype)   # per sample b, the i-th rank-one update of H is U[b, i] V[b, i]^T:
    V = np.empty((B, m, n), g.dtype)   # memory 2 * max_iter * B * n floats
    k = 0                              # updates made so far

    def H(y):           # H y = -y + sum_{i<k} u_i (v_i . y): two stacked matrix-vector products per sample
        return np.matmul((V[:, :k] @ y[:, :, None]).transpose(0, 2, 1), U[:, :k])[:, 0] - y

    def HT(y):          # H^T y = -y + sum_{i<k} v_i (u_i . y)
        return np.matmul((U[:, :k] @ y[:, :, None]).transpose(0, 2, 1), V[:, :k])[:, 0] - y

    beta = np.zeros_like(g)
    R = g.copy()                                                       # R(0) = g
    rel = relative_residual(R, gnorm)
    best, best_rel = beta.copy(), rel.copy()
    trace.append(float(np.max(rel, initial=0.0)))
    HR = -R                                                            # H R, with H = -I before any update
    while k < m and trace[-1] > tol and math.isfinite(trace[-1]):
        active = (rel > tol)[:, None]
        dbeta = np.where(active, -HR, 0.0)                             # Broyden step towards R = 0
        beta_new = beta + dbeta
        Ab = A(beta_new)
        if fast:
            # samples shared among threads by the bytes the iteration reads (the k updates U, V and six vectors)
            over_batch(_broyden_kernel, B, k, Ab, g, gnorm, active[:, 0], dbeta, beta_new, beta, R, HR, U, V, rel, best,
                       best_rel, work=B * (2 * k + 6) * n * g.itemsize)
        else:
            R_new = Ab + g - beta_new                                  # R(beta) = A beta + g - beta
            dR = R_new - R
            HdR = H(dR)
            den = np.sum(dbeta * HdR, axis=1, keepdims=True)
            ok = active & (np.abs(den) > 1e-300)
            U[:, k] = np.where(ok, (dbeta - HdR) / np.where(ok, den, 1.0), 0.0)   # Sherman-Morrison update of H
            V[:, k] = np.where(ok, HT(dbeta), 0.0)
            # H R_new for the updated H without another pass over the updates: H R_new = H R + H dR before the
            # update, then the update's own term u (v . R_new)
            HR = HR + HdR + U[:, k] * np.sum(V[:, k] * R_new, axis=1, keepdims=True)
            beta, R = beta_new, R_new
            rel = relative_residual(R, gnorm)
            better = rel < best_rel
            best[better], best_rel[better] = beta[better], rel[better]
        k += 1
        trace.append(float(np.max(rel, initial=0.0)))
    trace[-1] = float(np.max(best_rel, initial=0.0))
    return best, k


@njit(error_model="numpy", fastmath={"reassoc"})
def _dot(a, b):
    """``a . b`` as a plain loop: no BLAS call (and no BLAS thread pool) inside a kernel that runs on shares of
    the batch in several threads at once.

    ``reassoc`` lets the compiler add the products in any order, so the loop vectorises (7x faster than
    one running sum); like BLAS, the order then depends on the CPU's vector width."""
    acc = 0.0
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@njit(nogil=True, error_model="numpy")
def _broyden_kernel(k, Ab, g, gnorm, active, dbeta, beta_new, beta, R, HR, U, V, rel, best, best_rel, first, stop):
    """One Broyden iteration after the batched product ``Ab = A(beta_new)``, for the samples ``first`` to
    ``stop - 1``: the same arithmetic as the NumPy loop of :func:`broyden`, written per sample.  Samples are
    shared among Python threads by :func:`refsnn.blocks._jit.over_batch` (each writes only its own rows).

    Updates in place: ``beta, R, HR`` (to the new iterate), the ``k``-th updates ``U[:, k], V[:, k]``,
    ``rel`` and the best iterate ``best, best_rel``.
    """
    B, n = g.shape
    for b in range(first, stop):
        r_new = Ab[b] + g[b] - beta_new[b]                             # R(beta_new)
        dR = r_new - R[b]
        HdR = -dR                                                       # H dR with the first k updates
        HTd = -dbeta[b]                                                 # H^T dbeta likewise
        for i in range(k):
            cu = _dot(V[b, i], dR)
            cv = _dot(U[b, i], dbeta[b])
            for j in range(n):
                HdR[j] += U[b, i, j] * cu
                HTd[j] += V[b, i, j] * cv
        den = _dot(dbeta[b], HdR)
        if active[b] and abs(den) > 1e-300:                            # Sherman-Morrison update of H
            for j in range(n):
                U[b, k, j] = (dbeta[b, j] - HdR[j]) / den
                V[b, k, j] = HTd[j]
        else:
            U[b, k] = 0.0
            V[b, k] = 0.0
        c = _dot(V[b, k], r_new)
        for j in range(n):
            HR[b, j] += HdR[j] + U[b, k, j] * c
            beta[b, j] = beta_new[b, j]
            R[b, j] = r_new[j]
        rel[b] = np.sqrt(_dot(r_new, r_new)) / gnorm[b]
        if rel[b] < best_rel[b]:
            best[b] = beta_new[b]
            best_rel[b] = rel[b]
