"""The optimiser of :class:`bayeslmm.reml_problem.REMLProblem`: θ̂ from lme4's start.

A quasi-Newton run over all of θ's space (the criterion is even in every
diagonal θ element, so no bound is needed and none can trap the gradient),
mapped back to lme4's region, with singular fits snapped to the boundary and
checked from inside. Small problems on the blocked engine run the compiled
BFGS of :mod:`bayeslmm._bfgs`, the others scipy's L-BFGS-B.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from scipy.optimize import OptimizeResult, minimize

from ._bfgs import CONVERGED_DECREASE, CONVERGED_GRADIENT, STOPPED_LINESEARCH, STOPPED_MAXITER, minimize_small
from .reml_result import SINGULAR_TOL

__all__ = ["optimize_theta", "single_threaded_blas"]

#: Projected-gradient size at which a stalled line search is accepted.
_GTOL_ACCEPT = 1e-4
#: The quasi-Newton runs' stopping rules: relative decrease, projected gradient (θ·scale), iterations.
_FTOL, _GTOL, _MAXITER = 1e-12, 1e-6, 1000
_BFGS_MESSAGES = {
    CONVERGED_GRADIENT: "CONVERGENCE: NORM OF PROJECTED GRADIENT <= PGTOL",
    CONVERGED_DECREASE: "CONVERGENCE: RELATIVE REDUCTION OF F <= FTOL",
    STOPPED_MAXITER: "STOP: TOTAL NO. OF ITERATIONS REACHED LIMIT",
    STOPPED_LINESEARCH: "ABNORMAL: LINE SEARCH FAILED",
}

_BLAS_CONTROLLER: Any = None


def single_threaded_blas() -> Any:
    """A context limiting BLAS to one thread for the duration of a fit.

    The per-θ linear algebra is a long sequence of small or moderate LAPACK
    calls. Threaded OpenBLAS was measured at milliseconds per tiny triangular
    solve, and at 20-40 times slower than one thread on a 1,142² Cholesky
    when the machine's cores were busy.
    """
    global _BLAS_CONTROLLER
    try:
        if _BLAS_CONTROLLER is None:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER = ThreadpoolController()
        return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing or unable to inspect the BLAS
        return contextlib.nullcontext()



# ----------------------------------------------------------------------
# The optimiser
# ----------------------------------------------------------------------
def _scale(problem: Any) -> np.ndarray:
    """Per θ element, √(levels of its block): the optimiser works on θ·scale.

    The curvature of the criterion in a block's θ grows with the block's
    number of levels; without this a factor with 14 levels beside one with
    thousands makes the quasi-Newton steps badly scaled.
    """
    return np.concatenate([np.full(b.q * (b.q + 1) // 2, np.sqrt(b.n_levels)) for b in problem.design.blocks])


def _local_min(problem: Any, x0: np.ndarray) -> OptimizeResult:
    """One quasi-Newton run from x0 over all of θ's space, with the analytic gradient where there is one.

    The criterion is unchanged when a column of a block's factor T_k changes
    sign, so it is even in every diagonal θ element: the run needs no bounds
    (:func:`_canonical` maps its answer back to lme4's region, diagonals
    ≥ 0). A bound at 0 would trap a gradient method, whose steps land on it
    where the derivative is exactly 0. Small blocked problems run the compiled
    BFGS of :mod:`bayeslmm._bfgs` in one call, the others scipy's L-BFGS-B;
    both work on θ·scale (see :func:`_scale`) and stop on a gradient ≤ 1e-6
    or a relative decrease ≤ 1e-12.
    """
    layout = problem.layout
    scale = _scale(problem)
    engine = problem.engine
    x0 = np.asarray(x0, dtype=float)
    if problem.analytic_gradient and engine.small:
        x, g = np.empty(layout.size), np.empty(layout.size)
        free = np.full(layout.size, -np.inf)
        f, nfev, code = minimize_small(x0, free, scale, problem.reml, _FTOL, _GTOL, _MAXITER, x, g, *engine.small_args)
        return OptimizeResult(x=x, fun=float(f), jac=g, nfev=int(nfev), nit=int(nfev), success=code <= 1,
                              message=_BFGS_MESSAGES[code])

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = problem.deviance_and_gradient(x / scale)
        return f, g / scale

    options = {"ftol": _FTOL, "gtol": _GTOL, "maxiter": _MAXITER}
    res = minimize(fun, x0 * scale, method="L-BFGS-B", jac=True, options=options)
    res.x = res.x / scale
    res.jac = res.jac * scale
    return res


def _canonical(problem: Any, theta: np.ndarray) -> np.ndarray:
    """θ with every factor column whose diagonal is negative negated (the same model, lme4's sign convention)."""
    theta = np.array(theta, dtype=float)
    for k, q in enumerate(problem.layout.q):
        off, m = problem.layout.offsets[k], 0
        for j in range(q):
            col = slice(off + m, off + m + q - j)  # elements (j..q-1, j), diagonal first
            if theta[off + m] < 0:
                theta[col] = -theta[col]
            m += q - j
    return theta


def optimize_theta(problem: Any, x0: np.ndarray) -> tuple[OptimizeResult, int, bool]:
    """Minimise the profiled criterion over θ and return it in lme4's region.

    A quasi-Newton run (:func:`_local_min`) from lme4's start. A line search
    that gives up where the gradient is already at its noise floor counts as
    converged; otherwise a Nelder-Mead run polishes the answer and the better
    point is kept. The answer is made canonical (diagonals ≥ 0); diagonals
    within 1e-3 of 0 are set to 0 when that does not raise the criterion by
    more than 1e-8 (a singular fit, reported on the boundary as lme4 does);
    and diagonals at 0 are checked from inside (:func:`_escape_boundary`).
    Returns the result, the number of evaluations and a convergence flag.
    """
    layout = problem.layout
    best = _local_min(problem, x0)
    n_evals, converged = int(best.nfev), bool(best.success)
    if not converged and best.nit > 0:
        converged = bool(np.max(np.abs(best.jac)) < _GTOL_ACCEPT)
    if not converged:
        xs = best.x
        simplex = [xs]
        for i in range(layout.size):
            step = np.zeros(layout.size)
            step[i] = max(1e-4, 1e-3 * abs(xs[i]))
            simplex.append(xs + step)
        nm_options = {"initial_simplex": np.array(simplex), "xatol": 1e-8, "fatol": 1e-10, "maxfev": 400 * layout.size}
        polish = minimize(problem.deviance, xs, method="Nelder-Mead", options=nm_options)
        n_evals += int(polish.nfev)
        converged = bool(polish.success)
        if polish.fun <= best.fun:
            best = polish
    best.x = _canonical(problem, best.x)
    diag = np.flatnonzero(np.isfinite(layout.lower) & (best.x > 0) & (best.x < 1e-3))
    if diag.size:
        snapped = best.x.copy()
        snapped[diag] = 0.0
        f = problem.deviance(snapped)
        n_evals += 1
        if f <= best.fun + 1e-8:
            best.x, best.fun = snapped, min(f, best.fun)
    best, extra = _escape_boundary(problem, best)
    return best, n_evals + extra, converged


def _escape_boundary(problem: Any, best: OptimizeResult) -> tuple[OptimizeResult, int]:
    """Re-check an optimum with a diagonal θ element at 0 from inside.

    The criterion is even in a diagonal θ element, so its derivative there is
    exactly 0 and a gradient method started at (or snapped to) 0 stays there
    even when the interior is lower. For every diagonal element at 0, try
    moving it away (from just off 0, where the criterion falls if its
    curvature there is negative, to far out); restart from the best such
    point and keep the better optimum.
    """
    lower = problem.layout.lower
    on_bound = np.flatnonzero(np.isfinite(lower) & (best.x <= SINGULAR_TOL))
    if on_bound.size == 0:
        return best, 0
    n_evals = 0
    x_best, f_best = None, best.fun
    for value in (0.001, 0.01, 0.05, 0.2, 0.5, 1.0, 2.0):
        x = best.x.copy()
        x[on_bound] = value
        f = problem.deviance(x)
        n_evals += 1
        if f < f_best - 1e-10:
            x_best, f_best = x, f
    if x_best is None:
        return best, n_evals
    again = _local_min(problem, x_best)
    n_evals += int(again.nfev)
    if again.fun < best.fun:
        again.x = _canonical(problem, again.x)
        return again, n_evals
    return best, n_evals
