"""The numbers of an lme4-style REML or ML fit (:class:`REMLResult`), as a frozen record."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["REMLResult", "block_sd_corr", "SINGULAR_MESSAGE", "SINGULAR_TOL"]

SINGULAR_MESSAGE = "boundary (singular) fit: see help('isSingular')"
#: lme4's ``isSingular`` tolerance on the diagonal elements of θ.
SINGULAR_TOL = 1e-4


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
