"""Satterthwaite's degrees of freedom for contrasts of the fixed effects, as lmerTest computes them.

The variance parameters are varpar = (θ, σ). Their asymptotic covariance is
2H⁺, H the Hessian of the (REML or ML) deviance as a function of varpar with
β profiled out (lmerTest's ``devfun_vp``), H⁺ its Moore-Penrose inverse over
eigenvalues above 10⁻⁸. For a contrast L'β with variance v(varpar) =
L'vcov(β)L, the Satterthwaite degrees of freedom are

    ν = 2 v² / (∇v' · 2H⁺ · ∇v),

with ∇v from the Jacobian of vcov(β) = σ²(X'V₀⁻¹X)⁻¹ in varpar. For a
q-dimensional contrast (``contestMD``) L vcov(β) L' is diagonalised, each of
the q independent t statistics gets its ν_m, and the F statistic's
denominator df is 2E/(E - q) with E = Σ ν_m/(ν_m - 2) (2 if any ν_m ≤ 2;
their mean if all ν_m agree within 10⁻⁸).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import ConvergenceWarning, InferenceError
from .engine import FitState, single_threaded_blas
from .numderiv import hessian, jacobian

__all__ = ["VarparCovariance", "varpar_covariance", "satterthwaite_df", "satterthwaite_ftest"]

_EIG_TOL = 1e-8


@dataclass(frozen=True)
class VarparCovariance:
    """What Satterthwaite's method needs from a fit (lmerTest's ``lmerModLmerTest`` slots).

    Attributes
    ----------
    varpar
        (θ, σ) at the estimate.
    vcov_varpar
        Their asymptotic covariance, 2H⁺.
    jacobian
        d vcov(β) / d varpar_k, shape (k, p, p).
    vcov_beta
        vcov(β) at the estimate.
    beta
        The fixed effects.
    sigma
        The residual sd.
    """

    varpar: np.ndarray
    vcov_varpar: np.ndarray
    jacobian: np.ndarray
    vcov_beta: np.ndarray
    beta: np.ndarray
    sigma: float


def varpar_covariance(state: FitState) -> VarparCovariance:
    """The covariance of (θ, σ) and the Jacobian of vcov(β) in them (lmerTest's ``as_lmerModLmerTest``).

    Warns
    -----
    ConvergenceWarning
        When the Hessian has negative or near-zero eigenvalues, as lmerTest does.
    """
    p = state.beta.size

    def deviance(vp: np.ndarray) -> float:
        # the criterion at (θ, σ) of the fit's method (REML or ML); σ enters squared
        return state.deviance_sigma(vp[:-1], abs(vp[-1]))

    def covbeta(vp: np.ndarray) -> np.ndarray:
        pls = state.at(vp[:-1])
        if pls is None:
            raise InferenceError(
                f"Satterthwaite's method needs vcov(beta) near the optimum, and the model could not be factored at "
                f"theta = {np.array2string(vp[:-1], precision=3)} (sigma = {vp[-1]:.3g}): the fit is degenerate. "
                "Simplify the random effects, or use ddf='lme4' (no df, no p-values)."
            )
        return (vp[-1] ** 2 * pls.rx_inverse).ravel()

    varpar = np.concatenate([state.theta, [state.sigma]])
    with single_threaded_blas():
        H = hessian(deviance, varpar)
        J = jacobian(covbeta, varpar)
    evals, evecs = np.linalg.eigh(H)
    neg, zero = evals < -_EIG_TOL, np.abs(evals) <= _EIG_TOL
    if neg.any():
        warnings.warn(
            f"Model failed to converge with {int(neg.sum())} negative eigenvalue(s) of the deviance Hessian: "
            f"{' '.join(f'{v:.1e}' for v in evals[neg])}",
            ConvergenceWarning,
            stacklevel=3,
        )
    if zero.any():
        warnings.warn(
            f"Model may not have converged with {int(zero.sum())} eigenvalue(s) of the deviance Hessian close to zero: "
            f"{' '.join(f'{v:.1e}' for v in evals[zero])}",
            ConvergenceWarning,
            stacklevel=3,
        )
    pos = evals > _EIG_TOL
    h_inv = (evecs[:, pos] / evals[pos]) @ evecs[:, pos].T
    jac = np.moveaxis(J.reshape(p, p, -1), -1, 0)
    return VarparCovariance(varpar, 2.0 * h_inv, jac, state.vcov_beta, state.beta, state.sigma)


def satterthwaite_df(vc: VarparCovariance, L: np.ndarray) -> tuple[float, float]:
    """(variance of L'β, Satterthwaite df) for one contrast vector ``L`` (lmerTest's ``contest1D``)."""
    L = np.asarray(L, dtype=float)
    var = float(L @ vc.vcov_beta @ L)
    grad = np.einsum("i,kij,j->k", L, vc.jacobian, L)
    denom = float(grad @ vc.vcov_varpar @ grad)
    return var, (2.0 * var**2 / denom if denom > 0 else np.inf)


def _fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """Denominator df (lmerTest's ``get_Fstat_ddf``) of an F built from q t statistics."""
    if nu.size == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * E / (E - nu.size)


def satterthwaite_ftest(vc: VarparCovariance, L: np.ndarray, eps: float = float(np.sqrt(np.finfo(float).eps))) -> tuple[float, int, float]:
    """(F value, numerator df, denominator df) of H₀: Lβ = 0 (lmerTest's ``contestMD``)."""
    L = np.atleast_2d(np.asarray(L, dtype=float))
    VL = L @ vc.vcov_beta @ L.T
    d, P = np.linalg.eigh(VL)
    order = np.argsort(d)[::-1]
    d, P = d[order], P[:, order]
    tol = max(eps * d[0], 0.0)
    q = int(np.sum(d > tol))
    if q == 0:
        return float("nan"), 0, float("nan")
    PtL = (P.T @ L)[:q]
    if q == 1:
        var, df = satterthwaite_df(vc, PtL[0])
        t = float(PtL[0] @ vc.beta) / np.sqrt(var)
        return t * t, 1, df
    t2 = (PtL @ vc.beta) ** 2 / d[:q]
    F = float(t2.sum() / q)
    grads = np.einsum("mi,kij,mj->mk", PtL, vc.jacobian, PtL)
    nu = np.array([2.0 * d[m] ** 2 / float(grads[m] @ vc.vcov_varpar @ grads[m]) for m in range(q)])
    return F, q, _fstat_ddf(nu)
