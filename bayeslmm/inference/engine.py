"""The one place where the inference code meets the REML/ML engine.

Everything in :mod:`bayeslmm.inference` asks this module for what it needs
from a REML or ML fit, and nothing else there imports :mod:`bayeslmm.reml` or
:mod:`bayeslmm._linalg`. What it needs is small:

* :class:`FitState` -- the estimates of a fit (θ, β, σ, vcov(β), the
  criterion, the conditional modes), read from the engine's result object;
* :func:`fit_method` -- a fresh REML or ML fit of a design (the ML refit of
  ``anova`` and of the likelihood profile);
* :class:`Engine` -- for one design, the penalized least-squares quantities at
  any θ: log|L_θ|² and the Gram matrix of the fixed effects and response after
  the random effects are absorbed (Bates et al. 2015, JSS 67(1), section 3),
  from which every profiled criterion, β̂(θ) and vcov(β̂)(θ) follow;
* :meth:`Engine.refit` -- the optimum of the profiled criterion for a new
  response vector, reusing the design's structure (the parametric bootstrap).

Today these sit on :func:`bayeslmm.reml.fit_reml`, :class:`bayeslmm.reml.REMLResult`
and :class:`bayeslmm._linalg.PLSProblem`. The profiled criterion is assembled
here from ``PLSProblem.factorize`` (the equivalent of the engine's private
``_criterion``), and :meth:`Engine.with_response` replaces the response
columns of the engine's cross-products (which it lays out as ``PLSProblem``
does); both are marked where the engine's own reusable object will take over.

What this module needs from the engine's reusable object, when it lands:

1. for a design, at any θ (also outside the bounds, for numerical
   derivatives): log|L_θ|² and the (p+1)×(p+1) matrix [X y]'V₀⁻¹[X y]
   (equivalently R_X, R_X'c_β and the penalized RSS) -- :meth:`Engine.gram`;
2. a copy bound to a new response vector that shares every y-free
   computation -- :meth:`Engine.with_response` -- and its optimum from a given
   θ with a convergence flag and message -- :meth:`Engine.refit` (the
   bootstrap calls these once per replicate, in forked worker processes);
3. the REML or ML fit of a design (θ, β, vcov(β), σ, criterion, logLik,
   number of parameters, conditional modes, convergence) -- :func:`fit_method`
   and :func:`fit_state`.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

import numpy as np
from scipy.linalg import solve_triangular
from scipy.optimize import minimize

from .._linalg import PLSProblem
from ..design import Design
from ..errors import BayesLMMError
from ..reml import SINGULAR_TOL, fit_reml

__all__ = ["FitState", "Gram", "Refit", "Engine", "fit_state", "fit_method", "single_threaded_blas"]

_LOG2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class FitState:
    """The estimates of one REML or ML fit, as the inference code uses them.

    Attributes
    ----------
    design
        The evaluated design the fit used.
    method
        ``"REML"`` or ``"ML"``.
    theta
        Relative covariance parameters, ``getME(fm, "theta")``.
    beta, vcov_beta, sigma
        ``fixef(fm)``, ``vcov(fm)`` and ``sigma(fm)``.
    criterion
        The minimised profiled criterion (REML criterion or ML deviance).
    loglik
        ``logLik(fm)`` (the REML log-likelihood for a REML fit).
    n_params
        ``attr(logLik(fm), "df")``: p + len(θ) + 1.
    modes
        Per block, the conditional modes (levels × q), ``ranef(fm)``.
    converged, singular
        Whether the optimiser converged; ``isSingular(fm)``.
    """

    design: Design
    method: str
    theta: np.ndarray
    beta: np.ndarray
    vcov_beta: np.ndarray
    sigma: float
    criterion: float
    loglik: float
    n_params: int
    modes: tuple[np.ndarray, ...]
    converged: bool
    singular: bool

    @property
    def nobs(self) -> int:
        """Number of observations."""
        return self.design.nobs

    @property
    def reml(self) -> bool:
        """Whether this is a REML fit."""
        return self.method == "REML"


def _from_result(design: Design, result: Any) -> FitState:
    return FitState(
        design=design,
        method=str(result.method),
        theta=np.asarray(result.theta, dtype=float),
        beta=np.asarray(result.beta, dtype=float),
        vcov_beta=np.asarray(result.vcov_beta, dtype=float),
        sigma=float(result.sigma),
        criterion=float(result.criterion),
        loglik=float(result.loglik),
        n_params=int(result.n_params),
        modes=tuple(np.asarray(m, dtype=float) for m in result.ranef),
        converged=bool(result.converged),
        singular=bool(result.singular),
    )


def fit_state(fit: Any) -> FitState:
    """The :class:`FitState` of a REML/ML fit object (anything with ``design`` and a REML ``result``).

    Raises
    ------
    BayesLMMError
        If ``fit`` is a Bayesian fit or not a fit at all.
    """
    if isinstance(fit, FitState):
        return fit
    design, result = getattr(fit, "design", None), getattr(fit, "result", None)
    if design is None or result is None or not hasattr(result, "theta"):
        kind = "a Bayesian (NUTS) fit" if hasattr(fit, "idata") else f"a {type(fit).__name__}"
        raise BayesLMMError(
            f"This needs a REML or ML fit (lmer(..., method='REML') or 'ML'), got {kind}. "
            "For a Bayesian fit use fit.hypothesis(), fit.summary() or compare_models()."
        )
    return _from_result(design, result)


def fit_method(design: Design, method: str, quiet: bool = False) -> FitState:
    """A REML or ML fit of ``design`` by the engine (``update(fm, REML = ...)``).

    ``quiet=True`` silences the engine's singular-fit and convergence warnings
    (used for the internal refits of a profile, where lme4 is silent too).
    """
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        result = fit_reml(design, method=method, condvar=False)
    return _from_result(design, result)


@contextlib.contextmanager
def single_threaded_blas():
    """Limit BLAS to one thread: the per-θ algebra is many small LAPACK calls."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@dataclass(frozen=True)
class Gram:
    """The penalized least-squares system at one θ, with the random effects absorbed.

    With V₀ = I + ZΛΛ'Z' (the marginal covariance over σ²), ``A`` = X'V₀⁻¹X,
    ``g`` = X'V₀⁻¹y and ``c`` = y'V₀⁻¹y; ``logdet_L`` = log|Λ'Z'ZΛ + I|.
    """

    logdet_L: float
    A: np.ndarray
    g: np.ndarray
    c: float

    @cached_property
    def _chol(self) -> np.ndarray:
        return np.linalg.cholesky(self.A) if self.g.size else np.zeros((0, 0))

    @cached_property
    def beta(self) -> np.ndarray:
        """β̂(θ) = A⁻¹g."""
        if not self.g.size:
            return np.zeros(0)
        L = self._chol
        return solve_triangular(L.T, solve_triangular(L, self.g, lower=True), lower=False)

    @property
    def r2(self) -> float:
        """Penalized residual sum of squares at β̂(θ)."""
        return max(float(self.c - self.g @ self.beta), np.finfo(float).tiny)

    @property
    def logdet_A(self) -> float:
        """log|A| = log|R_X|²."""
        return 2.0 * float(np.log(np.diag(self._chol)).sum()) if self.g.size else 0.0

    def criterion(self, n: int, reml: bool) -> float:
        """lme4's profiled REML criterion or ML deviance at this θ."""
        p = self.g.size
        if reml:
            dof = n - p
            return self.logdet_L + self.logdet_A + dof * (1.0 + _LOG2PI + np.log(self.r2 / dof))
        return self.logdet_L + n * (1.0 + _LOG2PI + np.log(self.r2 / n))


@dataclass(frozen=True)
class Refit:
    """The optimum of a refit (one bootstrap replicate)."""

    theta: np.ndarray
    beta: np.ndarray
    sigma: float
    criterion: float
    converged: bool
    message: str


class Engine:
    """lme4's penalized least squares for one design, evaluated at any θ.

    Parameters
    ----------
    design
        The evaluated design.
    """

    def __init__(self, design: Design, _pls: Any = None) -> None:
        self.design = design
        self._pls = _pls if _pls is not None else PLSProblem(design)
        self.n, self.p = self._pls.n, self._pls.p
        #: Lower bounds of θ: 0 on the diagonal elements of each block's factor, -inf elsewhere.
        self.lower = np.asarray(self._pls.layout.lower, dtype=float)

    @property
    def n_theta(self) -> int:
        """Number of θ elements."""
        return int(self.lower.size)

    def gram(self, theta: np.ndarray) -> Gram:
        """The absorbed system at θ (see :class:`Gram`)."""
        fac = self._pls.factorize(np.asarray(theta, dtype=float))
        G = self._pls.XyXy - fac.K
        p = self.p
        return Gram(float(fac.logdet_L), G[:p, :p], G[:p, p].copy(), float(G[p, p]))

    def criterion(self, theta: np.ndarray, reml: bool) -> float:
        """The profiled criterion at θ; a huge value where the factorization fails."""
        try:
            value = self.gram(theta).criterion(self.n, reml)
        except (np.linalg.LinAlgError, ValueError):
            return 1e300
        return value if np.isfinite(value) else 1e300

    # -- new responses (parametric bootstrap) -------------------------------
    def with_response(self, y: np.ndarray) -> Engine:
        """The same design with response ``y``; the y-free cross-products are shared.

        The engine keeps Z'[X y] in two parts (leading factor: levels × terms;
        the other blocks: block, level, term); only their last column and the
        last row/column of [X y]'[X y] depend on y. Until the engine exposes
        its own response swap, they are recomputed here in that layout.
        """
        y = np.asarray(y, dtype=float)
        pls = copy.copy(self._pls)
        X = self.design.X
        p = self.p
        XyXy = pls.XyXy.copy()
        xty = X.T @ y
        XyXy[:p, p] = XyXy[p, :p] = xty
        XyXy[p, p] = y @ y
        pls.XyXy = XyXy
        zty1, zty2 = self._zty(y)
        Z1 = pls.ZtXy1.copy()
        Z1[..., p] = zty1
        pls.ZtXy1 = Z1
        if zty2 is not None:
            Z2 = pls.ZtXy2.copy()
            Z2[:, p] = zty2
            pls.ZtXy2 = Z2
        return Engine(_with_y(self.design, y), _pls=pls)

    def _zty(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        blocks = self.design.blocks
        pls = self._pls
        n1 = blocks[0].n_levels
        zty1 = np.zeros((n1, pls.g))
        for k, cols in zip(pls.lead, pls.lead_cols):
            b = blocks[k]
            for t in range(b.q):
                zty1[:, cols.start + t] = np.bincount(b.group_idx, b.Z[:, t] * y, minlength=n1)
        if not pls.rest:
            return zty1, None
        zty2 = np.zeros(pls.Q2)
        for k, off in zip(pls.rest, pls.rest_offsets):
            b = blocks[k]
            for t in range(b.q):
                zty2[off + t : off + b.n_levels * b.q : b.q] = np.bincount(b.group_idx, b.Z[:, t] * y, minlength=b.n_levels)
        return zty1, zty2

    def check_layout(self) -> bool:
        """Whether :meth:`with_response` reproduces the engine's own cross-products for the design's y."""
        zty1, zty2 = self._zty(np.asarray(self.design.y, dtype=float))
        ok = np.allclose(zty1, self._pls.ZtXy1[..., self.p], rtol=1e-10, atol=1e-8)
        if zty2 is not None:
            ok = ok and np.allclose(zty2, self._pls.ZtXy2[:, self.p], rtol=1e-10, atol=1e-8)
        return bool(ok)

    # -- the optimum for a new response ---------------------------------------
    def refit(self, theta0: np.ndarray, reml: bool) -> Refit:
        """Minimise the profiled criterion over θ from ``theta0`` (lme4's ``refit``).

        L-BFGS-B with central differences within θ's bounds, then a check that
        no diagonal element left on its bound 0 would rather be inside (the
        criterion's derivative in such an element is exactly 0 at the bound).
        """
        lower = self.lower
        bounds = [(lo, None) if np.isfinite(lo) else (None, None) for lo in lower]

        def fun(th: np.ndarray) -> float:
            return self.criterion(th, reml)

        x0 = np.where(np.isfinite(lower), np.maximum(theta0, lower), theta0)
        opts = {"ftol": 1e-12, "gtol": 1e-6, "maxiter": 500}
        best = minimize(fun, x0, method="L-BFGS-B", jac="3-point", bounds=bounds, options=opts)
        converged = bool(best.success)
        if not converged and best.nit > 0:
            grad = np.where((best.x <= lower) & (best.jac > 0), 0.0, best.jac)
            converged = bool(np.max(np.abs(grad)) < 1e-4)
        if not converged:
            # A line search that stops at the finite-difference noise floor: restart once; if the
            # restart cannot lower the criterion either, the point is the optimum.
            again = minimize(fun, best.x, method="L-BFGS-B", jac="3-point", bounds=bounds, options=opts)
            converged = bool(again.success) or again.fun >= best.fun - 1e-9 * max(1.0, abs(best.fun))
            if again.fun < best.fun:
                best = again
        on_bound = np.flatnonzero(np.isfinite(lower) & (best.x <= lower + SINGULAR_TOL))
        if on_bound.size:
            trial = best.x.copy()
            trial[on_bound] = 0.1
            if fun(trial) < best.fun - 1e-10:
                again = minimize(fun, trial, method="L-BFGS-B", jac="3-point", bounds=bounds, options=opts)
                if again.fun < best.fun:
                    best, converged = again, bool(again.success) or converged
        theta = np.asarray(best.x, dtype=float)
        theta[np.isfinite(lower)] = np.maximum(theta[np.isfinite(lower)], 0.0)
        gram = self.gram(theta)
        dof = self.n - self.p if reml else self.n
        return Refit(theta, gram.beta, float(np.sqrt(gram.r2 / dof)), float(best.fun), converged, str(best.message))


def _with_y(design: Design, y: np.ndarray) -> Design:
    """``design`` with another response vector (same rows, same structure)."""
    return replace(design, y=np.asarray(y, dtype=float))
