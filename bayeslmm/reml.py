"""REML/ML fits of linear mixed models, as lme4 computes them.

The algorithm is lme4's (Bates, Mächler, Bolker & Walker 2015, JSS 67(1)):
the random effects are b = Λ_θ u with u ~ N(0, σ²I); for given θ the
penalized least-squares problem is solved through the Cholesky factor L_θ of
Λ'Z'ZΛ + I (see :mod:`bayeslmm._linalg`), β and σ are profiled out, and only θ
is optimised, with lower bounds 0 on the diagonal elements of each block's
lower-triangular factor. The profiled criteria are

    REML: log|L_θ|² + log|R_X|² + (n−p)(1 + log(2π r²(θ)/(n−p)))
    ML:   log|L_θ|² + n(1 + log(2π r²(θ)/n))

where r²(θ) is the penalized residual sum of squares.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import numpy as np
from scipy.optimize import OptimizeResult, minimize

from ._linalg import Factorization, PLSProblem, ThetaLayout, chol, chol_solve
from .design import Design
from .errors import BayesLMMError, ConvergenceWarning

__all__ = ["REMLResult", "fit_reml", "block_sd_corr", "SINGULAR_MESSAGE", "SINGULAR_TOL"]

SINGULAR_MESSAGE = "boundary (singular) fit: see help('isSingular')"
#: lme4's ``isSingular`` tolerance on the diagonal elements of θ.
SINGULAR_TOL = 1e-4
#: Projected-gradient size at which a stalled L-BFGS-B line search is accepted.
_GTOL_ACCEPT = 1e-4
_LOG2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class REMLResult:
    """An lme4-style REML or ML fit.

    Attributes
    ----------
    method
        ``"REML"`` or ``"ML"``.
    theta
        Relative covariance parameters, lme4's ``getME(fm, "theta")``: per block
        the lower triangle of its factor T_k, column by column.
    beta
        Fixed effects, ``fixef(fm)``.
    beta_se
        Their standard errors, ``sqrt(diag(vcov(fm)))``.
    vcov_beta
        ``vcov(fm)`` = σ²(R_X'R_X)⁻¹.
    sigma
        Residual sd, ``sigma(fm)``.
    block_cov
        Per block, the q×q covariance σ²T_kT_k' of one level's effects.
    ranef
        Per block, the conditional modes (levels × q), ``ranef(fm)``.
    condsd
        Per block, their conditional sds (levels × q), the ``condsd`` column of
        ``as.data.frame(ranef(fm, condVar=TRUE))``; ``None`` if not computed.
    fitted
        Fitted values Xβ + Zb, ``fitted(fm)``.
    criterion
        The minimised profiled criterion: the REML criterion or the deviance.
    reml_criterion
        ``REMLcrit(fm)`` for REML fits, else ``None``.
    deviance
        ``deviance(fm)`` for ML fits, else ``None``.
    loglik
        ``logLik(fm)``: −criterion/2 (lme4 reports −REMLcrit/2 for REML fits).
    nobs
        Number of observations n.
    n_fixed
        Number of fixed effects p.
    n_params
        Parameters counted by AIC/BIC: p + len(θ) + 1.
    fixed_names, block_labels, block_factors, block_terms, block_levels
        Names from the design, aligned with ``beta`` and the per-block lists.
    converged
        Whether the optimiser reported success.
    n_evals
        Number of criterion evaluations.
    optimizer_message
        The optimiser's message.
    singular
        lme4's ``isSingular(fm)``: a diagonal θ element within 1e-4 of 0.
    warning
        The singular-fit warning text, or ``None``.
    """

    method: str
    theta: np.ndarray
    beta: np.ndarray
    beta_se: np.ndarray
    vcov_beta: np.ndarray
    sigma: float
    block_cov: tuple[np.ndarray, ...]
    ranef: tuple[np.ndarray, ...]
    condsd: tuple[np.ndarray, ...] | None
    fitted: np.ndarray
    criterion: float
    reml_criterion: float | None
    deviance: float | None
    loglik: float
    nobs: int
    n_fixed: int
    n_params: int
    fixed_names: tuple[str, ...]
    block_labels: tuple[str, ...]
    block_factors: tuple[str, ...]
    block_terms: tuple[tuple[str, ...], ...]
    block_levels: tuple[tuple[str, ...], ...]
    converged: bool
    n_evals: int
    optimizer_message: str
    singular: bool
    warning: str | None

    @property
    def aic(self) -> float:
        """``AIC(fm)`` = −2 logLik + 2 n_params."""
        return -2.0 * self.loglik + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        """``BIC(fm)`` = −2 logLik + log(n) n_params."""
        return -2.0 * self.loglik + np.log(self.nobs) * self.n_params


@dataclass(frozen=True)
class _Profile:
    """β, σ and the criterion profiled out of one factorization."""

    criterion: float
    beta: np.ndarray
    RXt: np.ndarray  # lower Cholesky factor of R_X'R_X, i.e. R_X'
    r2: float


def _criterion(pls: PLSProblem, fac: Factorization, reml: bool) -> _Profile:
    """The profiled REML criterion or deviance at the θ behind ``fac``."""
    p, n = pls.p, pls.n
    G = pls.XyXy - fac.K  # [[R_X'R_X, R_X'c_β], [., c_β'c_β + r²]]
    if p:
        RXt = chol(G[:p, :p])
        beta = chol_solve(RXt, G[:p, p])
        logdet_rx = 2.0 * float(np.log(np.diag(RXt)).sum())
    else:
        RXt, beta, logdet_rx = np.zeros((0, 0)), np.zeros(0), 0.0
    r2 = max(float(G[p, p] - G[:p, p] @ beta), np.finfo(float).tiny)
    if reml:
        dof = n - p
        crit = fac.logdet_L + logdet_rx + dof * (1.0 + _LOG2PI + np.log(r2 / dof))
    else:
        crit = fac.logdet_L + n * (1.0 + _LOG2PI + np.log(r2 / n))
    return _Profile(float(crit), beta, RXt, r2)


_BLAS_CONTROLLER: Any = None


def _single_threaded_blas() -> Any:
    """A context limiting BLAS to one thread for the duration of a fit.

    The per-θ linear algebra is a long sequence of small or moderate LAPACK
    calls. Threaded OpenBLAS was measured here at milliseconds per tiny
    triangular solve (L-BFGS-B's own and ours), and at 20-40 times slower than
    one thread on a 1,142² Cholesky when the machine's cores were busy.
    """
    global _BLAS_CONTROLLER
    try:
        if _BLAS_CONTROLLER is None:
            from threadpoolctl import ThreadpoolController

            _BLAS_CONTROLLER = ThreadpoolController()
        return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing or unable to inspect the BLAS
        return contextlib.nullcontext()


def _optimize(fun: Callable[[np.ndarray], float], layout: ThetaLayout) -> tuple[OptimizeResult, int, bool]:
    """Minimise the profiled criterion over θ within lme4's bounds.

    L-BFGS-B with central-difference gradients (one-sided at a bound) from
    lme4's start. A line search that gives up where the projected gradient is
    already at the finite-difference noise floor counts as converged; otherwise
    a bounded Nelder-Mead run polishes the answer and the better point is kept.
    Returns the scipy result, the number of evaluations and a convergence flag.
    """
    bounds = [(lo, None) if np.isfinite(lo) else (None, None) for lo in layout.lower]
    options = {"ftol": 1e-11, "gtol": 1e-5, "maxiter": 1000}
    best = minimize(fun, layout.start(), method="L-BFGS-B", jac="3-point", bounds=bounds, options=options)
    n_evals, converged = int(best.nfev), bool(best.success)
    if not converged and best.nit > 0:
        grad = np.where((best.x <= layout.lower) & (best.jac > 0), 0.0, best.jac)
        converged = bool(np.max(np.abs(grad)) < _GTOL_ACCEPT)
    if not converged:
        x0 = np.maximum(best.x, layout.lower)
        simplex = [x0]
        for i in range(layout.size):
            step = np.zeros(layout.size)
            step[i] = max(1e-4, 1e-3 * abs(x0[i]))
            simplex.append(x0 + step)
        nm_options = {"initial_simplex": np.array(simplex), "xatol": 1e-8, "fatol": 1e-10, "maxfev": 400 * layout.size}
        polish = minimize(fun, x0, method="Nelder-Mead", bounds=bounds, options=nm_options)
        n_evals += int(polish.nfev)
        converged = bool(polish.success)
        if polish.fun <= best.fun:
            best = polish
    best, extra = _escape_boundary(fun, best, layout, bounds, options)
    return best, n_evals + extra, converged


def _escape_boundary(fun, best, layout: ThetaLayout, bounds, options):
    """Re-check a boundary optimum from inside the feasible region.

    The criterion depends on a diagonal θ element through its square, so its
    derivative is exactly zero at the bound θ = 0: a gradient method that
    steps onto the bound stops there even when the interior is lower (lme4's
    derivative-free BOBYQA does not have this trap). For every diagonal
    element on the bound, try moving it back inside; restart from the best
    such point and keep the better optimum.
    """
    lower = layout.lower
    on_bound = np.flatnonzero(np.isfinite(lower) & (best.x <= lower + SINGULAR_TOL))
    if on_bound.size == 0:
        return best, 0
    n_evals = 0
    x_best, f_best = None, best.fun
    for value in (0.05, 0.2, 0.5, 1.0, 2.0):
        x = best.x.copy()
        x[on_bound] = value
        f = fun(x)
        n_evals += 1
        if f < f_best - 1e-10:
            x_best, f_best = x, f
    if x_best is None:
        return best, n_evals
    again = minimize(fun, x_best, method="L-BFGS-B", jac="3-point", bounds=bounds, options=options)
    n_evals += int(again.nfev)
    return (again if again.fun < best.fun else best), n_evals


def fit_reml(design: Design, method: str = "REML", condvar: bool = True) -> REMLResult:
    """Fit a linear mixed model by REML or ML, exactly as ``lme4::lmer`` does.

    Parameters
    ----------
    design
        The evaluated design (:func:`bayeslmm.design.build_design`).
    method
        ``"REML"`` (lmer's default) or ``"ML"`` (``REML = FALSE``).
    condvar
        Whether to compute the conditional sds of the random effects.

    Returns
    -------
    REMLResult

    Raises
    ------
    BayesLMMError
        If ``method`` is neither ``"REML"`` nor ``"ML"``, the design has no
        random-effect block, X is rank deficient, or there are no residual
        degrees of freedom.

    Warns
    -----
    ConvergenceWarning
        ``"boundary (singular) fit: see help('isSingular')"`` for a singular fit,
        and a separate warning if the optimiser did not converge.
    """
    if not isinstance(method, str) or method.upper() not in ("REML", "ML"):
        raise BayesLMMError(f"method must be 'REML' or 'ML', got {method!r}.")
    method = method.upper()
    reml = method == "REML"
    if not design.blocks:
        raise BayesLMMError("The design has no random-effect block; fit_reml fits mixed models only.")
    X = np.asarray(design.X, dtype=float)
    if X.shape[1] and np.linalg.matrix_rank(X) < X.shape[1]:
        raise BayesLMMError(
            f"The fixed-effects matrix ({X.shape[1]} columns {list(design.fixed_names)}) is rank deficient; "
            "build the design with build_design, which drops aliased columns as lme4 does."
        )
    pls = PLSProblem(design)
    n, p = pls.n, pls.p
    if n - p <= 0:
        raise BayesLMMError(f"{n} observations leave no residual degrees of freedom for {p} fixed effects.")

    def objective(theta: np.ndarray) -> float:
        try:
            return _criterion(pls, pls.factorize(theta), reml).criterion
        except (np.linalg.LinAlgError, ValueError):
            return float(np.finfo(float).max) / 1e10

    with _single_threaded_blas():
        opt, n_evals, converged = _optimize(objective, pls.layout)
        theta = np.asarray(opt.x, dtype=float).copy()
        lower = pls.layout.lower
        theta[np.isfinite(lower)] = np.maximum(theta[np.isfinite(lower)], 0.0)
        fac = pls.factorize(theta)
        prof = _criterion(pls, fac, reml)
        sigma2 = prof.r2 / (n - p if reml else n)
        sigma = float(np.sqrt(sigma2))
        if p:
            vcov = sigma2 * chol_solve(prof.RXt, np.eye(p))
        else:
            vcov = np.zeros((0, 0))
        modes, sds = pls.conditional(fac, prof.beta, sigma, condvar=condvar)
    fitted = design.X @ prof.beta
    for b, m in zip(design.blocks, modes):
        fitted = fitted + np.einsum("ij,ij->i", b.Z, m[b.group_idx])
    covs = []
    for k in range(len(design.blocks)):
        T = pls.layout.block_factor(theta, k)
        covs.append(sigma2 * T @ T.T)
    singular = bool(np.any(theta[np.isfinite(lower)] < SINGULAR_TOL))
    message = SINGULAR_MESSAGE if singular else None
    if singular:
        warnings.warn(SINGULAR_MESSAGE, ConvergenceWarning, stacklevel=2)
    if not converged:
        warnings.warn(
            f"The {method} optimiser did not converge ({opt.message}); the estimates may be inaccurate.",
            ConvergenceWarning,
            stacklevel=2,
        )
    crit = prof.criterion
    return REMLResult(
        method=method,
        theta=theta,
        beta=prof.beta,
        beta_se=np.sqrt(np.diag(vcov)),
        vcov_beta=vcov,
        sigma=sigma,
        block_cov=tuple(covs),
        ranef=tuple(modes),
        condsd=tuple(sds) if sds is not None else None,
        fitted=fitted,
        criterion=crit,
        reml_criterion=crit if reml else None,
        deviance=None if reml else crit,
        loglik=-crit / 2.0,
        nobs=n,
        n_fixed=p,
        n_params=p + pls.layout.size + 1,
        fixed_names=tuple(design.fixed_names),
        block_labels=tuple(b.label for b in design.blocks),
        block_factors=tuple(b.factor for b in design.blocks),
        block_terms=tuple(tuple(b.terms) for b in design.blocks),
        block_levels=tuple(tuple(b.levels) for b in design.blocks),
        converged=converged,
        n_evals=n_evals,
        optimizer_message=str(opt.message),
        singular=singular,
        warning=message,
    )


def block_sd_corr(result: REMLResult) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per block, the sds and the correlation matrix of its random effects.

    Parameters
    ----------
    result
        A REML or ML fit.

    Returns
    -------
    list of (numpy.ndarray, numpy.ndarray)
        For every block in ``result.block_labels`` order, the sd vector (q,)
        and the q×q correlation matrix, as ``VarCorr(fm)`` prints them. A
        correlation with a zero-sd term is reported as 0.
    """
    out = []
    for cov in result.block_cov:
        sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
        denom = np.outer(sd, sd)
        corr = np.divide(cov, denom, out=np.zeros_like(cov), where=denom > 0)
        np.fill_diagonal(corr, 1.0)
        out.append((sd, corr))
    return out
