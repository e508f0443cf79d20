"""The REML/ML fit object: lme4's extractors over a :class:`~bayeslmm.reml.REMLResult`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .design import Design
from .reml import REMLResult, block_sd_corr, fit_reml
from .results import FitBase
from .summary import ModelSummary, groups_line, random_effects_block

__all__ = ["REMLFit", "fit_frequentist"]


def fit_frequentist(design: Design, method: str = "REML") -> REMLFit:
    """Fit a design by REML or ML and wrap it (stage used by ``lmer(method="REML")``)."""
    return REMLFit(design=design, result=fit_reml(design, method))


@dataclass(eq=False)
class REMLFit(FitBase):
    """A linear mixed model fit by REML or ML, with lme4's extractor names.

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

    @property
    def sigma(self) -> float:
        """``sigma(fm)``."""
        return self.result.sigma

    # -- lme4 extractors --------------------------------------------------
    def fixef(self) -> pd.DataFrame:
        """``coef(summary(fm))``: Estimate, Std. Error, t value."""
        r = self.result
        return pd.DataFrame(
            {"Estimate": r.beta, "Std. Error": r.beta_se, "t value": r.beta / r.beta_se},
            index=pd.Index(list(r.fixed_names), name="term"),
        )

    def vcov(self) -> pd.DataFrame:
        """``vcov(fm)``."""
        names = list(self.result.fixed_names)
        return pd.DataFrame(self.result.vcov_beta, index=names, columns=names)

    def ranef(self, long: bool = False):
        """``ranef(fm)``: per factor, levels x terms of conditional modes; ``long=True`` adds ``condsd``."""
        wide: dict[str, pd.DataFrame] = {}
        rows = []
        for k, b in enumerate(self.design.blocks):
            modes = self.result.ranef[k]
            sds = self.result.condsd[k] if self.result.condsd is not None else np.full_like(modes, np.nan)
            df = wide.setdefault(b.factor, pd.DataFrame(index=pd.Index(list(b.levels), name=b.factor)))
            for j, term in enumerate(b.terms):
                df[term] = modes[:, j]
                rows.append(
                    pd.DataFrame(
                        {"grpvar": b.factor, "term": term, "grp": list(b.levels), "condval": modes[:, j], "condsd": sds[:, j]}
                    )
                )
        return pd.concat(rows, ignore_index=True) if long else wide

    def coef(self) -> dict[str, pd.DataFrame]:
        """``coef(fm)``: fixed effects plus conditional modes, per level."""
        fx = pd.Series(self.result.beta, index=list(self.result.fixed_names))
        out = {}
        for factor, re in self.ranef().items():
            terms = list(fx.index) + [t for t in re.columns if t not in fx.index]
            df = pd.DataFrame(0.0, index=re.index, columns=terms)
            for t in fx.index:
                df[t] = fx[t]
            for t in re.columns:
                df[t] = df[t] + re[t]
            out[factor] = df
        return out

    def VarCorr(self) -> pd.DataFrame:  # noqa: N802 - lme4's name
        """``as.data.frame(VarCorr(fm))``: grp, var1, var2, vcov, sdcor."""
        rows = []
        for b, cov, (sd, corr) in zip(self.design.blocks, self.result.block_cov, block_sd_corr(self.result)):
            for j, t in enumerate(b.terms):
                rows.append({"grp": b.label, "var1": t, "var2": np.nan, "vcov": cov[j, j], "sdcor": sd[j]})
            for i in range(b.q):
                for j in range(i + 1, b.q):
                    rows.append(
                        {"grp": b.label, "var1": b.terms[i], "var2": b.terms[j], "vcov": cov[i, j], "sdcor": corr[i, j]}
                    )
        s = self.result.sigma
        rows.append({"grp": "Residual", "var1": np.nan, "var2": np.nan, "vcov": s**2, "sdcor": s})
        return pd.DataFrame(rows)

    def fitted(self) -> pd.Series:
        """``fitted(fm)``: Xβ + Zb, row-aligned with the data used."""
        return self._series(self.result.fitted, "fitted")

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
        from .errors import BayesLMMError

        if self.result.deviance is None:
            raise BayesLMMError("deviance() is defined for ML fits; this fit is REML. Use REMLcrit(), or method='ML'.")
        return self.result.deviance

    def isSingular(self) -> bool:  # noqa: N802
        """``isSingular(fm)``: a variance component on the boundary."""
        return self.result.singular

    def summary(self) -> ModelSummary:
        """The lme4 summary: criterion, scaled residuals, random and fixed effects."""
        r = self.result
        res = self.resid().to_numpy() / r.sigma
        q = np.quantile(res, [0, 0.25, 0.5, 0.75, 1])
        scaled = pd.DataFrame([q], columns=["Min", "1Q", "Median", "3Q", "Max"]).to_string(
            index=False, float_format=lambda v: f"{v:.4f}"
        )
        if r.method == "REML":
            crit = f"REML criterion at convergence: {r.criterion:.1f}"
        else:
            crit = (
                f"     AIC      BIC   logLik deviance df.resid\n"
                f"{self.AIC():8.1f} {self.BIC():8.1f} {r.loglik:8.1f} {r.criterion:8.1f} {r.nobs - r.n_params:9d}"
            )
        header = [f"Formula: {self.formula}", f"   Data: {self.design.nobs} observations", "", crit]
        footer = []
        if r.singular:
            footer.append(r.warning or "boundary (singular) fit")
        if self.design.dropped_fixed:
            footer.append(
                f"fixed-effect model matrix is rank deficient so dropping {len(self.design.dropped_fixed)} "
                f"columns / coefficients: {list(self.design.dropped_fixed)}"
            )
        if not r.converged:
            footer.append(f"optimizer did not report convergence: {r.optimizer_message}")
        title = "Linear mixed model fit by REML" if r.method == "REML" else "Linear mixed model fit by maximum likelihood"
        return ModelSummary(
            title=title,
            header=header,
            random=random_effects_block(self.design, self.VarCorr()),
            groups=groups_line(self.design),
            fixed=self.fixef(),
            footer=footer,
            blocks=[("Scaled residuals", scaled)],
        )

    def param_draws(self):
        """The estimates as a single "draw", so the shared prediction code serves REML fits too."""
        from .predict import ParamDraws

        r = self.result
        return ParamDraws.point(r.beta, r.sigma, r.ranef, r.block_cov)

    def predict(self, newdata: pd.DataFrame | None = None, re_form=None, new_levels: str = "error") -> pd.Series:
        """``predict(fm, newdata, re.form)``: point predictions, as lme4 gives them.

        ``re_form="~0"`` (or ``"NA"``) gives population-level predictions;
        unseen levels raise (``new_levels="error"``, lme4's default
        ``allow.new.levels = FALSE``) or get a group effect of 0
        (``"population"``, lme4's ``allow.new.levels = TRUE``). For
        intervals, fit the model by NUTS.
        """
        from .errors import PredictionError
        from .predict import predict as _predict

        if new_levels not in ("population", "error"):
            raise PredictionError(
                f"A {self.method} fit predicts with new_levels='population' or 'error'; got {new_levels!r}. "
                "Drawing new group effects needs a posterior: fit with method='NUTS'."
            )
        out = _predict(self, newdata, re_form=re_form, new_levels=new_levels, kind="mean")
        return out["Estimate"].rename("predict")

    def __repr__(self) -> str:
        return f"<REMLFit {self.method} {self.formula!r}: {self.design.nobs} obs, criterion {self.result.criterion:.4f}>"
