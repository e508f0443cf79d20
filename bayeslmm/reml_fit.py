"""The REML/ML fit: a :class:`~bayeslmm.reml.REMLResult` under the shared fit contract, plus lme4's likelihood extractors."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from .design import Design
from .errors import BayesLMMError
from .fitbase import FitDescription, MixedFit
from .paramdraws import ParamDraws
from .reml import REMLResult, block_sd_corr, fit_reml

__all__ = ["REMLFit", "fit_frequentist"]


def fit_frequentist(design: Design, method: str = "REML") -> REMLFit:
    """Fit a design by REML or ML and wrap it (stage used by ``lmer(method="REML")``).

    A design whose group effects collapse is fitted on its compressed rows
    (:func:`bayeslmm.compressed.compress`: the same per-group cross-products, a few rows
    per group), as its out-of-core form is, so a data frame and the same rows as
    Parquet files or a Dask frame give the same estimates to the last bit. The
    fitted values are then those of the design's own rows.
    """
    from .collapsed.structure import can_collapse
    from .compressed import compress

    if design.summary is not None or not can_collapse(design):
        return REMLFit(design=design, result=fit_reml(design, method))
    result = fit_reml(compress(design), method)
    fitted = design.X @ result.beta
    for b, m in zip(design.blocks, result.ranef):
        fitted = fitted + np.einsum("ij,ij->i", b.Z, m[b.group_idx])
    return REMLFit(design=design, result=replace(result, fitted=fitted))


@dataclass(eq=False, repr=False)
class REMLFit(MixedFit):
    """A linear mixed model fit by REML or ML, with lme4's extractor names.

    Every extractor of :class:`~bayeslmm.fitbase.MixedFit` reads the
    estimates as a single draw with their standard errors (``Var(β̂)`` and the
    conditional sds of the modes); this class adds what only a likelihood fit
    has: ``vcov``, ``logLik``, ``AIC``, ``BIC``, ``REMLcrit``, ``deviance``
    and ``isSingular``.

    Attributes
    ----------
    design
        The evaluated design (the same stage the Bayesian fit uses).
    result
        The numbers: θ, β, σ, covariances, conditional modes, criteria.
    """

    design: Design
    result: REMLResult

    @property
    def method(self) -> str:
        """``"REML"`` or ``"ML"``."""
        return self.result.method

    def _make_params(self) -> ParamDraws:
        r = self.result
        sd_corr = block_sd_corr(r)
        return ParamDraws.point(
            r.beta, r.sigma, r.ranef, [s for s, _ in sd_corr], [c for _, c in sd_corr], r.vcov_beta, r.condsd
        )

    def _describe(self) -> FitDescription:
        r = self.result
        if self.design.summary is None:
            res = self.resid().to_numpy() / r.sigma
            q = np.quantile(res, [0, 0.25, 0.5, 0.75, 1])
            scaled = pd.DataFrame([q], columns=["Min", "1Q", "Median", "3Q", "Max"]).to_string(
                index=False, float_format=lambda v: f"{v:.4f}"
            )
        else:
            scaled = f"(not computed: the fit was made out of core from {self.design.summary.source})"
        if r.method == "REML":
            crit = f"REML criterion at convergence: {r.criterion:.1f}"
        else:
            crit = (
                f"     AIC      BIC   logLik deviance df.resid\n"
                f"{self.AIC():8.1f} {self.BIC():8.1f} {r.loglik:8.1f} {r.criterion:8.1f} {r.nobs - r.n_params:9d}"
            )
        footer = []
        if r.singular:
            footer.append(r.warning or "boundary (singular) fit")
        if not r.converged:
            footer.append(f"optimizer did not report convergence: {r.optimizer_message}")
        title = "Linear mixed model fit by REML" if r.method == "REML" else "Linear mixed model fit by maximum likelihood"
        return FitDescription(
            title=title, header=("", crit), footer=tuple(footer), blocks=(("Scaled residuals", scaled),)
        )

    def _glance_extra(self) -> dict[str, Any]:
        r = self.result
        return {
            "logLik": r.loglik,
            "AIC": self.AIC(),
            "BIC": self.BIC(),
            # the minimised criterion, named as lme4 names it (deviance() refuses a REML fit)
            ("REMLcrit" if r.method == "REML" else "deviance"): r.criterion,
            "df.residual": r.nobs - r.n_params,
        }

    # -- what only a likelihood fit has --------------------------------------
    def vcov(self) -> pd.DataFrame:
        """``vcov(fm)``."""
        names = list(self.design.fixed_names)
        return pd.DataFrame(self.result.vcov_beta, index=names, columns=names)

    def logLik(self) -> float:  # noqa: N802
        """``logLik(fm)`` (the REML log-likelihood for a REML fit)."""
        return self.result.loglik

    def AIC(self) -> float:  # noqa: N802
        """``AIC(fm)``."""
        return self.result.aic

    def BIC(self) -> float:  # noqa: N802
        """``BIC(fm)``."""
        return self.result.bic

    def REMLcrit(self) -> float:  # noqa: N802
        """``REMLcrit(fm)``; for an ML fit, the deviance, as lme4 returns."""
        return self.result.criterion

    def deviance(self) -> float:
        """``deviance(fm)`` of an ML fit."""
        if self.result.deviance is None:
            raise BayesLMMError("deviance() is defined for ML fits; this fit is REML. Use REMLcrit(), or method='ML'.")
        return self.result.deviance

    def isSingular(self) -> bool:  # noqa: N802
        """``isSingular(fm)``: a variance component on the boundary."""
        return self.result.singular
