"""The one place where the inference code meets the REML/ML engine.

Everything in :mod:`bayeslmm.inference` asks this module for what it needs
from a REML or ML fit, and nothing else there imports the engine. The engine's
reusable object is :class:`bayeslmm.reml_problem.REMLProblem` (the design's
cross-products formed once, the blocked Cholesky factor updated in place per
θ); this module reads from it:

* :class:`FitState` -- the estimates of a fit (θ, β, σ, vcov(β), the
  criterion, the conditional modes) together with the fit's ``REMLProblem``;
  a :class:`~bayeslmm.reml_fit.REMLFit` hands its state over as
  ``fit.inference_state``;
* :func:`fit_method` -- a fresh REML or ML fit of a design (the ML refit of
  ``anova``, of the likelihood profile, and the reduced models of ``ranova``);
* :meth:`FitState.at` -- the penalized least-squares quantities at any θ
  (log|L_θ|², log|R_X|², the penalized RSS, β̂(θ) and (R_X'R_X)⁻¹, Bates et
  al. 2015, JSS 67(1), section 3), from which every profiled criterion, β̂(θ)
  and vcov(β̂)(θ) follow; also outside θ's bounds, for numerical derivatives;
* :meth:`FitState.deviance_sigma` -- the criterion at (θ, σ), σ not profiled;
* :func:`refit_response` -- the optimum for a new response vector, started
  from the original θ̂ (``REMLProblem.refit``: only the response
  cross-products change), for the parametric bootstrap.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from .._reml_optim import single_threaded_blas
from ..design import Design
from ..errors import BayesLMMError
from ..reml_problem import PLSAtTheta, REMLEstimate, REMLProblem
from ..reml_result import REMLResult

__all__ = ["FitState", "PLSAtTheta", "fit_state", "from_result", "fit_method", "refit_response", "restore_response",
           "single_threaded_blas"]

#: The criterion where θ cannot be factored (never at a feasible θ).
HUGE = 1e300


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
    problem
        The engine's reusable object for this design and method (lme4's ``devfun``).
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
    problem: REMLProblem = field(repr=False, compare=False)

    @property
    def nobs(self) -> int:
        """Number of observations."""
        return self.design.nobs

    @property
    def reml(self) -> bool:
        """Whether this is a REML fit."""
        return self.method == "REML"

    @property
    def lower(self) -> np.ndarray:
        """Lower bounds of θ: 0 on the diagonal elements of each block's factor, -inf elsewhere."""
        return np.asarray(self.problem.layout.lower, dtype=float)

    def at(self, theta: np.ndarray) -> PLSAtTheta | None:
        """The penalized least-squares quantities at θ (None where θ cannot be factored)."""
        return self.problem.pls_at(np.asarray(theta, dtype=float))

    def deviance(self, theta: np.ndarray) -> float:
        """The profiled criterion of this fit's method at θ (:data:`HUGE` where it cannot be factored)."""
        value = self.problem.deviance(np.asarray(theta, dtype=float))
        return float(value) if np.isfinite(value) and value < HUGE else HUGE

    def deviance_sigma(self, theta: np.ndarray, sigma: float) -> float:
        """The criterion at θ with σ held fixed, d(θ, σ) (:data:`HUGE` where it cannot be evaluated)."""
        if not sigma > 0:
            return HUGE
        value = self.problem.deviance_sigma(np.asarray(theta, dtype=float), float(sigma))
        return float(value) if np.isfinite(value) and value < HUGE else HUGE


def from_result(design: Design, result: REMLResult, problem: REMLProblem) -> FitState:
    """The :class:`FitState` of an engine result and the problem it was fitted with."""
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
        problem=problem,
    )


def fit_state(state: object) -> FitState:
    """``state`` if it is a :class:`FitState`; otherwise a :class:`BayesLMMError` that says what is needed.

    The public entry points are the methods of :class:`~bayeslmm.reml_fit.REMLFit`
    (``fit.confint()``, ``fit.anova()``, ...), which pass ``fit.inference_state``.
    """
    if isinstance(state, FitState):
        return state
    raise BayesLMMError(
        f"This needs a REML or ML fit (lmer(..., method='REML') or 'ML'), got a {type(state).__name__}. "
        "Call the fit's own method (fit.confint(), fit.anova(), fit.bootstrap(), ...); for a Bayesian fit use "
        "fit.hypothesis(), fit.summary(pd=True) or bayeslmm.compare_models()."
    )


def fit_method(design: Design, method: str, quiet: bool = False, start: np.ndarray | None = None) -> FitState:
    """A REML or ML fit of ``design`` by the engine (``update(fm, REML = ...)``).

    ``start`` is the θ to start from (the other method's optimum when a fit is
    refitted); ``quiet=True`` silences the singular-fit and convergence
    warnings (the internal refits of a profile or of ``ranova``, where lme4 is
    silent too).
    """
    problem = REMLProblem.from_design(design, method)
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        est = problem.optimize(start)
        result = problem.result(est, condvar=False)
    return from_result(design, result, problem)


def refit_response(state: FitState, y: np.ndarray) -> REMLEstimate:
    """The optimum of the fit's criterion for the response ``y``, started from the fit's θ̂.

    The problem's response is replaced (only its y cross-products change);
    :func:`restore_response` puts the fit's own response back.
    """
    return state.problem.refit(np.asarray(y, dtype=float), start=state.theta)


def restore_response(state: FitState) -> None:
    """Reinstall the fit's own response in its problem after :func:`refit_response`."""
    state.problem.set_response(np.asarray(state.design.y, dtype=float))
