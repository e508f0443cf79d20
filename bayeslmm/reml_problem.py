"""The REML/ML problem of one design as a reusable object: profiled criterion, gradient, fits and refits.

lme4's algorithm (Bates, Mächler, Bolker & Walker 2015, JSS 67(1)): the
random effects are b = Λ_θ u with u ~ N(0, σ²I); for given θ the penalized
least-squares problem is solved through the Cholesky factor L_θ of
Λ'Z'ZΛ + I, β and σ are profiled out, and only θ is optimised, with lower
bounds 0 on the diagonal elements of each block's lower-triangular factor
(here: optimised over all of θ's space, where the criterion is even in each
diagonal element, and mapped back; see ``_local_min``).
The profiled criteria are

    REML: log|L_θ|² + log|R_X|² + (n−p)(1 + log(2π r²(θ)/(n−p)))
    ML:   log|L_θ|² + n(1 + log(2π r²(θ)/n))

where r²(θ) is the penalized residual sum of squares. With σ held fixed
instead of profiled, the same quantities give

    d(θ, σ) = log|L_θ|² [+ log|R_X|²] + ν log(2πσ²) + r²(θ)/σ²,

ν = n − p (REML) or n (ML), the deviance as a function of all variance
parameters that likelihood profiles and Satterthwaite's method differentiate.

:class:`REMLProblem` builds the cross-products once (through
:class:`bayeslmm._blockpls.BlockedPLS`, the blocked Cholesky factor updated
in place, or :class:`bayeslmm._linalg.SparseEngine` when the non-leading
random effects are too many for a dense block) and then evaluates any θ,
fits, and refits new responses without rebuilding anything.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._blockpls import BlockedPLS, rest_size
from ._linalg import DENSE_SCHUR_MAX, SparseEngine, ThetaLayout
from ._reml_optim import optimize_theta, single_threaded_blas
from .design import Design
from .errors import BayesLMMError
from .reml_result import SINGULAR_MESSAGE, SINGULAR_TOL, REMLResult

__all__ = ["REMLProblem", "REMLEstimate", "VarParInfo", "PLSAtTheta"]

_LOG2PI = float(np.log(2.0 * np.pi))
#: Criterion returned where θ cannot be factored (never at a feasible θ: A_θ = Λ'Z'ZΛ + I is positive definite).
_HUGE = float(np.finfo(float).max) / 1e10


@dataclass(frozen=True)
class REMLEstimate:
    """The optimum of one fit or refit, before the conditional modes are computed.

    Attributes
    ----------
    theta
        θ̂, lme4's ``getME(fm, "theta")``.
    beta
        β̂, ``fixef(fm)``.
    sigma
        σ̂, ``sigma(fm)``.
    criterion
        The minimised REML criterion or ML deviance.
    converged
        Whether the optimiser reported success.
    n_evals
        Number of criterion evaluations (with their gradients where analytic).
    message
        The optimiser's message.
    singular
        lme4's ``isSingular``: a diagonal θ element within 1e-4 of 0.
    """

    theta: np.ndarray
    beta: np.ndarray
    sigma: float
    criterion: float
    converged: bool
    n_evals: int
    message: str
    singular: bool


@dataclass(frozen=True)
class PLSAtTheta:
    """The penalized least-squares quantities at one θ, from one factorization (:meth:`REMLProblem.pls_at`).

    Attributes
    ----------
    logdet_L, logdet_RX
        log|L_θ|² and log|R_X|².
    r2
        The penalized residual sum of squares r²(θ) at β̂(θ).
    beta
        β̂(θ).
    rx_inverse
        (R_X'R_X)⁻¹ (σ² times it is vcov(β̂) at θ).
    """

    logdet_L: float
    logdet_RX: float
    r2: float
    beta: np.ndarray
    rx_inverse: np.ndarray


@dataclass(frozen=True)
class VarParInfo:
    """What one element of the variance-parameter vector is (see :meth:`REMLProblem.varpar`).

    Attributes
    ----------
    kind
        ``"sd"``, ``"cor"`` or ``"sigma"``.
    block
        Index of the design block (``None`` for σ).
    term1, term2
        The block's term names (``term2`` is set for correlations only).
    """

    kind: str
    block: int | None
    term1: str | None
    term2: str | None


def _lower_factor(cov: np.ndarray) -> np.ndarray:
    """Lower-triangular T with TT' = cov for a positive semi-definite cov (zero columns where singular)."""
    q = cov.shape[0]
    T = np.zeros((q, q))
    for j in range(q):
        d = cov[j, j] - T[j, :j] @ T[j, :j]
        if d <= 1e-14 * max(cov[j, j], 1e-300):
            continue
        T[j, j] = np.sqrt(d)
        T[j + 1 :, j] = (cov[j + 1 :, j] - T[j + 1 :, :j] @ T[j, :j]) / T[j, j]
    return T


class REMLProblem:
    """The REML or ML problem of one design, built once and evaluated at any θ.

    Build it with :meth:`from_design`. It pickles (for worker processes). Every method that takes θ factors
    L_θ in place (no allocation in the linear algebra), so a sequence of
    calls is as cheap as the optimiser's own evaluations.

    Attributes
    ----------
    design
        The design the problem was built from.
    method
        ``"REML"`` or ``"ML"``.
    layout
        Where the θ elements sit (per block, the lower triangle of its factor T_k).
    n, p
        Number of observations and of fixed effects.
    analytic_gradient
        Whether :meth:`deviance_and_gradient` is analytic (the blocked engine)
        rather than a finite difference (the sparse fallback).
    """

    def __init__(self, design: Design, method: str, engine: Any) -> None:
        self.design = design
        self.method = method
        self.reml = method == "REML"
        self.engine = engine
        self.n, self.p = design.nobs, int(design.X.shape[1])  # nobs: compressed rows stand for more
        self.layout = ThetaLayout.from_q(tuple(b.q for b in design.blocks))
        self.nu = self.n - self.p if self.reml else self.n
        self.analytic_gradient = isinstance(engine, BlockedPLS)
        self._theta: np.ndarray | None = None

    def __getstate__(self) -> dict:
        """Picklable (to send to worker processes): the design travels without its formulae encoders."""
        state = self.__dict__.copy()
        state["design"] = replace(self.design, encoders=None)
        state["_theta"] = None
        if isinstance(self.engine, SparseEngine):
            state["engine"] = copy.copy(self.engine)
            state["engine"]._design, state["engine"]._fac = state["design"], None
        return state

    @classmethod
    def from_design(cls, design: Design, method: str = "REML", engine: str = "auto") -> REMLProblem:
        """Build the problem: check the design and form its cross-products once.

        Parameters
        ----------
        design
            The evaluated design (:func:`bayeslmm.design.build_design`).
        method
            ``"REML"`` (lmer's default) or ``"ML"`` (``REML = FALSE``).
        engine
            ``"auto"`` (the blocked dense engine unless the non-leading random
            effects exceed ``DENSE_SCHUR_MAX``), ``"blocked"`` or ``"sparse"``.

        Returns
        -------
        REMLProblem

        Raises
        ------
        BayesLMMError
            If ``method`` is neither ``"REML"`` nor ``"ML"``, the design has no
            random-effect block, X is rank deficient, or there are no residual
            degrees of freedom.
        """
        if not isinstance(method, str) or method.upper() not in ("REML", "ML"):
            raise BayesLMMError(f"method must be 'REML' or 'ML', got {method!r}.")
        if engine not in ("auto", "blocked", "sparse"):
            raise BayesLMMError(f"engine must be 'auto', 'blocked' or 'sparse', got {engine!r}.")
        if not design.blocks:
            raise BayesLMMError("The design has no random-effect block; fit_reml fits mixed models only.")
        X = np.asarray(design.X, dtype=float)
        n, p = design.nobs, X.shape[1]
        if p and np.linalg.matrix_rank(X) < p:
            raise BayesLMMError(
                f"The fixed-effects matrix ({p} columns {list(design.fixed_names)}) is rank deficient; "
                "build the design with build_design, which drops aliased columns as lme4 does."
            )
        if n - p <= 0:
            raise BayesLMMError(f"{n} observations leave no residual degrees of freedom for {p} fixed effects.")
        if engine == "auto":
            engine = "blocked" if rest_size(design) <= DENSE_SCHUR_MAX else "sparse"
        impl = BlockedPLS(design) if engine == "blocked" else SparseEngine(design)
        return cls(design, method.upper(), impl)

    # ------------------------------------------------------------------
    # The criterion at θ
    # ------------------------------------------------------------------
    def _factor(self, theta: np.ndarray) -> bool:
        theta = np.asarray(theta, dtype=float)
        if theta.shape != (self.layout.size,):
            raise BayesLMMError(f"theta has shape {theta.shape}; this model has {self.layout.size} elements.")
        ok = self.engine.factor(theta)
        self._theta = theta.copy() if ok else None
        return ok

    def _profiled(self) -> float:
        e = self.engine
        logdet = e.logdet_L + (e.logdet_RX if self.reml else 0.0)
        r2 = max(e.r2, np.finfo(float).tiny)
        return float(logdet + self.nu * (1.0 + _LOG2PI + np.log(r2 / self.nu)))

    def deviance(self, theta: np.ndarray) -> float:
        """The profiled criterion at θ: lme4's ``devfun(theta)`` (REML criterion or ML deviance)."""
        return self._profiled() if self._factor(theta) else _HUGE

    def deviance_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """The profiled criterion at θ and its gradient in θ (analytic on the blocked engine)."""
        theta = np.asarray(theta, dtype=float)
        if not self.analytic_gradient:
            return self.deviance(theta), self._fd_gradient(theta)
        if not self._factor(theta):
            return _HUGE, np.zeros(self.layout.size)
        f = self._profiled()
        g_ld, g_r2 = self.engine.gradient(self.reml)
        return f, g_ld + self.nu * g_r2 / max(self.engine.r2, np.finfo(float).tiny)

    def _fd_gradient(self, theta: np.ndarray) -> np.ndarray:
        """Central differences of the profiled criterion (one-sided at a bound)."""
        g = np.empty(theta.size)
        for i in range(theta.size):
            h = 1e-6 * max(1.0, abs(theta[i]))
            up, dn = theta.copy(), theta.copy()
            up[i] += h
            dn[i] -= h
            if dn[i] < self.layout.lower[i]:
                g[i] = (self.deviance(up) - self.deviance(theta)) / h
            else:
                g[i] = (self.deviance(up) - self.deviance(dn)) / (2 * h)
        return g

    def pls_at(self, theta: np.ndarray) -> PLSAtTheta | None:
        """log|L_θ|², log|R_X|², r²(θ), β̂(θ) and (R_X'R_X)⁻¹ from one factorization at θ (None if it fails).

        θ may lie outside lme4's bounds (numerical derivatives at a boundary):
        the criterion is even in each diagonal element.
        """
        if not self._factor(theta):
            return None
        e = self.engine
        inv = e.rx_inverse() if self.p else np.zeros((0, 0))
        return PLSAtTheta(float(e.logdet_L), float(e.logdet_RX), float(e.r2), e.fixef(), inv)

    def sigma_hat(self, theta: np.ndarray) -> float:
        """σ̂(θ) = sqrt(r²(θ)/ν), the profiled residual sd."""
        if not self._factor(theta):
            raise BayesLMMError("theta could not be factored.")
        return float(np.sqrt(self.engine.r2 / self.nu))

    def deviance_sigma(self, theta: np.ndarray, sigma: float) -> float:
        """The criterion at θ with σ held fixed: d(θ, σ) (its minimum over σ is :meth:`deviance`)."""
        if not self._factor(theta):
            return _HUGE
        e = self.engine
        logdet = e.logdet_L + (e.logdet_RX if self.reml else 0.0)
        return float(logdet + self.nu * (_LOG2PI + 2.0 * np.log(sigma)) + e.r2 / sigma**2)

    def beta(self, theta: np.ndarray) -> np.ndarray:
        """β̂(θ), the fixed effects that solve the penalized least squares at θ."""
        if not self._factor(theta):
            raise BayesLMMError("theta could not be factored.")
        return self.engine.fixef()

    def vcov_beta(self, theta: np.ndarray, sigma: float | None = None) -> np.ndarray:
        """σ²(R_X'R_X)⁻¹ at θ: ``vcov(fm)`` as a function of θ and σ (σ̂(θ) if ``sigma`` is None)."""
        if not self._factor(theta):
            raise BayesLMMError("theta could not be factored.")
        s2 = self.engine.r2 / self.nu if sigma is None else float(sigma) ** 2
        return s2 * self.engine.rx_inverse()

    # ------------------------------------------------------------------
    # Variance parameters on the sd/cor scale
    # ------------------------------------------------------------------
    def varpar_info(self) -> list[VarParInfo]:
        """What each element of :meth:`varpar` is: per block (θ order) its sds and correlations, then σ."""
        out = []
        for k, b in enumerate(self.design.blocks):
            for j in range(b.q):
                for i in range(j, b.q):
                    if i == j:
                        out.append(VarParInfo("sd", k, b.terms[i], None))
                    else:
                        out.append(VarParInfo("cor", k, b.terms[i], b.terms[j]))
        out.append(VarParInfo("sigma", None, None, None))
        return out

    def varpar(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        """(θ, σ) on the sd/cor scale: per block in θ order the sds (diagonal) and correlations, then σ.

        A correlation with a zero sd is reported as 0, as ``VarCorr`` does.
        """
        theta = np.asarray(theta, dtype=float)
        out = []
        for k in range(len(self.design.blocks)):
            T = self.layout.block_factor(theta, k)
            cov = sigma**2 * T @ T.T
            sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
            q = T.shape[0]
            for j in range(q):
                for i in range(j, q):
                    if i == j:
                        out.append(sd[i])
                    else:
                        den = sd[i] * sd[j]
                        out.append(cov[i, j] / den if den > 0 else 0.0)
        out.append(float(sigma))
        return np.asarray(out)

    def theta_sigma(self, varpar: np.ndarray) -> tuple[np.ndarray, float]:
        """The inverse of :meth:`varpar`: (θ, σ) from sds, correlations and σ."""
        varpar = np.asarray(varpar, dtype=float)
        sigma = float(varpar[-1])
        theta = np.empty(self.layout.size)
        pos = 0
        for k in range(len(self.design.blocks)):
            q = self.layout.q[k]
            sd, cor = np.zeros(q), np.eye(q)
            for j in range(q):
                for i in range(j, q):
                    if i == j:
                        sd[i] = varpar[pos]
                    else:
                        cor[i, j] = cor[j, i] = varpar[pos]
                    pos += 1
            T = _lower_factor(np.outer(sd, sd) * cor) / sigma
            off = self.layout.offsets[k]
            m = 0
            for j in range(q):
                for i in range(j, q):
                    theta[off + m] = T[i, j]
                    m += 1
        return theta, sigma

    def deviance_varpar(self, varpar: np.ndarray) -> float:
        """The criterion as a function of the sds, correlations and σ (:meth:`varpar` order)."""
        theta, sigma = self.theta_sigma(varpar)
        return self.deviance_sigma(theta, sigma)

    # ------------------------------------------------------------------
    # Fits
    # ------------------------------------------------------------------
    def set_response(self, y: np.ndarray) -> None:
        """Install a new response vector (same rows, same design); only the y cross-products change."""
        y = np.asarray(y, dtype=float)
        if y.shape != (self.n,):
            raise BayesLMMError(f"The response has shape {y.shape}; this design has {self.n} observations.")
        self.engine.set_response(y)
        self._theta = None

    def _blas(self) -> Any:
        """One BLAS thread around LAPACK-sized work; nothing to limit when the compiled kernel does it all."""
        return contextlib.nullcontext() if getattr(self.engine, "small", False) else single_threaded_blas()

    def optimize(self, start: np.ndarray | None = None) -> REMLEstimate:
        """Minimise the profiled criterion from ``start`` (lme4's start if None) and return the optimum."""
        x0 = self.layout.start() if start is None else np.asarray(start, dtype=float)
        with self._blas():
            opt, n_evals, converged = optimize_theta(self, x0)
            theta = np.asarray(opt.x, dtype=float).copy()
            fin = np.isfinite(self.layout.lower)
            crit = self.deviance(theta)
            beta = self.engine.fixef()
        sigma = float(np.sqrt(self.engine.r2 / self.nu))
        singular = bool(np.any(theta[fin] < SINGULAR_TOL))
        return REMLEstimate(theta, beta, sigma, crit, converged, n_evals, str(opt.message), singular)

    def refit(self, y: np.ndarray, start: np.ndarray | None = None) -> REMLEstimate:
        """Fit a new response vector with the same design, reusing all the structure.

        Parameters
        ----------
        y
            The new response, one value per row of the design.
        start
            θ to start from (the original θ̂ for a parametric bootstrap); lme4's start if None.

        Returns
        -------
        REMLEstimate
        """
        self.set_response(y)
        return self.optimize(start)

    def result(self, est: REMLEstimate, condvar: bool = True) -> REMLResult:
        """The full :class:`REMLResult` at an optimum: covariances, conditional modes and sds, fitted values."""
        design = self.design
        n, p = self.n, self.p
        with self._blas():
            if not self._factor(est.theta):
                raise BayesLMMError("The estimate's theta could not be factored.")
            sigma2 = est.sigma**2
            vcov = sigma2 * self.engine.rx_inverse() if p else np.zeros((0, 0))
            modes, sds = self.engine.conditional(est.sigma, condvar)
        fitted = design.X @ est.beta if design.summary is None else np.zeros(0)  # no rows out of core
        for b, m in zip(design.blocks, modes):
            if design.summary is None:
                fitted = fitted + np.einsum("ij,ij->i", b.Z, m[b.group_idx])
        covs = []
        for k in range(len(design.blocks)):
            T = self.layout.block_factor(est.theta, k)
            covs.append(sigma2 * T @ T.T)
        crit = est.criterion
        return REMLResult(
            method=self.method,
            theta=est.theta,
            beta=est.beta,
            beta_se=np.sqrt(np.diag(vcov)),
            vcov_beta=vcov,
            sigma=est.sigma,
            block_cov=tuple(covs),
            ranef=tuple(modes),
            condsd=tuple(sds) if sds is not None else None,
            fitted=fitted,
            criterion=crit,
            reml_criterion=crit if self.reml else None,
            deviance=None if self.reml else crit,
            loglik=-crit / 2.0,
            nobs=n,
            n_fixed=p,
            n_params=p + self.layout.size + 1,
            fixed_names=tuple(design.fixed_names),
            block_labels=tuple(b.label for b in design.blocks),
            block_factors=tuple(b.factor for b in design.blocks),
            block_terms=tuple(tuple(b.terms) for b in design.blocks),
            block_levels=tuple(tuple(b.levels) for b in design.blocks),
            converged=est.converged,
            n_evals=est.n_evals,
            optimizer_message=est.message,
            singular=est.singular,
            warning=SINGULAR_MESSAGE if est.singular else None,
        )
