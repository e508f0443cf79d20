"""GLMM fits under the shared fit contract: :class:`LaplaceFit` (lme4's ``glmer``) and :class:`GLMMBayesFit` (NUTS).

Both subclass :class:`~bayeslmm.fitbase.MixedFit`, so ``fixef``, ``ranef``,
``coef``, ``tidy``, ``summary`` and the rest are the shared extractors,
reading ``fit.params`` (whose ``family`` carries the link). What a GLMM
changes is added here once, in :class:`GLMMOutputs`:

* ``VarCorr`` has no ``Residual`` row (there is no residual sd);
* ``fitted`` is on the response scale and includes the offset;
* ``resid(type=)`` gives lme4's ``"deviance"`` (default), ``"pearson"``,
  ``"response"`` and ``"working"`` residuals;
* ``predict(type="link" | "response")`` transforms the link-scale interval
  of a point fit, and summarises the response-scale draws of a posterior;
* ``save`` refuses a GLMM fit with a :class:`~bayeslmm.errors.PersistenceError`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..design import Design
from ..errors import BayesLMMError, PersistenceError, PredictionError
from ..fitbase import FitDescription, MixedFit
from ..paramdraws import Family, ParamDraws, interval_names
from ..priors import Priors
from ..sampling import Diagnostics, SamplerSettings
from ..summary import ModelSummary
from .families import GLMFamily, array_family
from .laplace import LaplaceResult

__all__ = ["GLMMInfo", "GLMMOutputs", "LaplaceFit", "GLMMBayesFit", "RESIDUAL_TYPES"]

RESIDUAL_TYPES = ("deviance", "pearson", "response", "working")


@dataclass(frozen=True)
class GLMMInfo:
    """What a GLMM adds to a design: the family and, per kept row, the trials and the offset.

    Attributes
    ----------
    family
        Family and link.
    weights
        Trials (binomial) or 1, ``(n,)``.
    offset
        Offset on the link scale, ``(n,)``.
    formula
        The formula as written.
    offsets
        The offset expressions, for printing.
    """

    family: GLMFamily
    weights: np.ndarray
    offset: np.ndarray
    formula: str
    offsets: tuple[str, ...] = ()

    @property
    def has_offset(self) -> bool:
        """Whether the model has a nonzero offset."""
        return bool(np.any(self.offset != 0))

    def family_line(self) -> str:
        """lme4's `` Family: binomial  ( logit )`` line."""
        return f" Family: {self.family.lme4_name()}  ( {self.family.link.name} )"


def _identity_family(fam: Family) -> Family:
    return replace(fam, linkinv=lambda eta: np.asarray(eta, dtype=float))


class GLMMOutputs(MixedFit):
    """The outputs of a GLMM that differ from a linear mixed model's (see the module docstring)."""

    design: Design
    glmm: GLMMInfo

    @property
    def formula(self) -> str:
        """The formula as written."""
        return self.glmm.formula

    @property
    def sigma(self) -> float:
        """``sigma(fm)``: 1 for the binomial and Poisson families, as lme4."""
        return 1.0

    def VarCorr(self, level: float = 0.95) -> pd.DataFrame:  # noqa: N802 - lme4's name
        """``as.data.frame(VarCorr(fm))``: the group-level sds and correlations (a GLMM has no residual row)."""
        vc = super().VarCorr(level)
        return vc[vc["grp"] != "Residual"].reset_index(drop=True)

    def tidy(self, effects: Any = ("fixed", "ran_pars"), level: float = 0.95) -> pd.DataFrame:
        """broom.mixed's ``tidy()`` (a GLMM has no residual-sd row)."""
        out = super().tidy(effects, level)
        if "group" in out.columns:
            out = out[out["group"] != "Residual"].reset_index(drop=True)
        return out

    def linear_predictor(self) -> np.ndarray:
        """Link-scale fitted values of the training rows (mean over draws), offset included."""
        p = self.params
        eta = self.design.X @ p.beta.mean(axis=0) + self.glmm.offset
        for b, r in zip(self.design.blocks, p.ranef):
            eta = eta + np.einsum("nq,nq->n", b.Z, r.mean(axis=0)[b.group_idx])
        return eta

    def fitted(self) -> pd.Series:
        """``fitted(fm)``: the response-scale fitted values (probabilities, or expected counts), offset included."""
        mu = self.glmm.family.link.linkinv(self.linear_predictor())
        return pd.Series(mu, index=self.design.frame.index, name="fitted")

    def resid(self, type: str = "deviance") -> pd.Series:  # noqa: A002 - lme4's argument name
        """``residuals(fm, type)``: ``"deviance"`` (lme4's default), ``"pearson"``, ``"response"`` or ``"working"``.

        Raises
        ------
        BayesLMMError
            For an unknown ``type``.
        """
        if type not in RESIDUAL_TYPES:
            raise BayesLMMError(f"type must be one of {list(RESIDUAL_TYPES)}, got {type!r}.")
        fam, y, w = self.glmm.family, self.design.y, self.glmm.weights
        eta = self.linear_predictor()
        mu = fam.link.linkinv(eta)
        phi = self._phi()
        if type == "response":
            r = y - mu
        elif type == "pearson":
            r = (y - mu) * np.sqrt(w) / np.sqrt(fam.variance(mu, phi))
        elif type == "working":
            r = (y - mu) / fam.link.mu_eta(eta)
        else:
            r = np.sign(y - mu) * np.sqrt(np.maximum(fam.unit_deviance(y, mu, w, phi), 0.0))
        return pd.Series(r, index=self.design.frame.index, name="resid")

    def _phi(self) -> float:
        return np.inf

    def latent_variance(self) -> np.ndarray:
        """Per draw, the distribution-specific variance on the latent (link) scale used by :meth:`icc`.

        logit: π²/3 (the standard logistic); probit: 1; cloglog: π²/6 (the
        standard Gumbel); log link (Poisson): ``log(1 + 1/λ)``, and for the
        negative binomial ``log(1 + 1/λ + 1/φ)``, with ``λ = exp(mean_i(x_i'β +
        offset_i) + Σ τ²/2)`` the mean count (Nakagawa, Johnson & Schielzeth 2017).

        Raises
        ------
        BayesLMMError
            For the Poisson identity and sqrt links, which have no latent-scale variance.
        """
        link, p = self.glmm.family.link.name, self.params
        if link in ("logit", "probit", "cloglog"):
            return np.full(p.n_draws, {"logit": np.pi**2 / 3, "probit": 1.0, "cloglog": np.pi**2 / 6}[link])
        if link != "log":
            raise BayesLMMError(
                f"The ICC is defined on the latent scale of a log link (or a binomial link); this model's link is {link!r}."
            )
        fixed = (p.beta @ self.design.X.T).mean(axis=1) + float(np.mean(self.glmm.offset))
        tau2 = sum((s**2).sum(axis=1) for s in p.sd)
        lam = np.exp(fixed + 0.5 * tau2)
        extra = 1.0 / self._phi() if self.glmm.family.has_dispersion else 0.0
        return np.log1p(1.0 / lam + extra)

    def icc(self, level: float = 0.95, summary: bool = True) -> pd.DataFrame:
        """Intraclass correlation per grouping factor on the latent scale: τ_k² / (Σ_j τ_j² + σ²_latent).

        σ²_latent is :meth:`latent_variance` (π²/3 for logit, 1 for probit,
        π²/6 for cloglog, ``log(1 + 1/λ)`` for a log-Poisson model); the τ² are
        the random-intercept variances, as :func:`bayeslmm.fitstats.icc_draws` defines them.
        """
        from .. import fitstats
        from ..fitbase import draw_table

        latent = replace(self.params, sigma=np.sqrt(self.latent_variance()))
        return draw_table(self.params, fitstats.icc_draws(self.design, latent), level, "factor", summary)

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        re_form: Any = None,
        new_levels: str = "error",
        kind: str = "mean",
        level: float = 0.95,
        random_seed: int | None = None,
        type: str = "response",  # noqa: A002 - lme4's argument name
    ) -> pd.DataFrame:
        """``predict(fm, newdata, re.form, type)``: the expected response (``type="response"``) or the linear predictor (``"link"``).

        A point fit gives ``Estimate`` and the Wald interval, computed on the
        link scale and transformed (with ``Std. Error`` on the link scale
        for ``type="link"``); a posterior summarises the draws on the scale
        asked for. ``kind="response"`` draws new observations (posterior only).

        Raises
        ------
        PredictionError
            For a model with an offset (not supported yet for prediction; ``fitted()`` includes it),
            an unknown ``type``, or ``kind="response"`` on a point fit.
        """
        from .. import predict as predict_mod

        if type not in ("response", "link"):
            raise PredictionError(f"type must be 'response' or 'link', got {type!r}.")
        if self.glmm.has_offset:
            raise PredictionError(
                f"This model has an offset ({', '.join(self.glmm.offsets)}); predict() does not take offsets for "
                "new rows yet. fitted() gives the training rows' fitted values, offset included."
            )
        if kind == "response" and (type == "link" or self.params.is_point):
            raise PredictionError(
                "kind='response' draws new observations from a posterior on the response scale; "
                "use type='response' on a NUTS fit, or kind='mean'."
            )
        if type == "link" or self.params.is_point:
            link_params = replace(self.params, family=_identity_family(self.params.family))
            out = predict_mod.predict(self.design, link_params, newdata, re_form, new_levels, kind, level, random_seed)
            if type == "response":
                lo, hi = interval_names(level)
                inv = self.glmm.family.link.linkinv
                for col in ("Estimate", lo, hi):
                    if col in out.columns:
                        out[col] = inv(out[col].to_numpy())
                out = out.drop(columns=[c for c in ("Std. Error", "Est.Error") if c in out.columns and self.params.is_point])
            return out
        return predict_mod.predict(self.design, self.params, newdata, re_form, new_levels, kind, level, random_seed)

    def save(self, path: str | os.PathLike):
        """Saving is not supported for GLMM fits yet.

        Raises
        ------
        PersistenceError
            Always: the saved-fit format holds Gaussian fits only.
        """
        raise PersistenceError(
            f"Saving a {type(self).__name__} (family {self.glmm.family.name}) is not supported yet: the saved-fit "
            "format holds linear mixed models only. Keep the fit in memory, or refit it from the formula and data."
        )


def _z_tests(fx: pd.DataFrame) -> pd.DataFrame:
    if "z value" in fx.columns:
        fx["Pr(>|z|)"] = 2 * stats.norm.sf(np.abs(fx["z value"].to_numpy()))
    return fx


@dataclass(eq=False, repr=False)
class LaplaceFit(GLMMOutputs):
    """A GLMM fit by the Laplace approximation (or adaptive Gauss-Hermite quadrature), as lme4's ``glmer``.

    Adds what a likelihood fit has: ``vcov``, ``logLik``, ``AIC``, ``BIC``,
    ``deviance``, ``df_residual``, ``isSingular``, Wald ``confint`` and the
    z tests of ``summary(glmer)``.

    Attributes
    ----------
    design
        The evaluated design (``design.y`` holds the proportion or the count).
    glmm
        Family, trials and offset.
    result
        The estimates.
    """

    design: Design
    glmm: GLMMInfo
    result: LaplaceResult

    @property
    def method(self) -> str:
        """``"Laplace"`` or ``"AGQ"``."""
        return "Laplace" if self.result.nagq == 1 else "AGQ"

    @property
    def n_params(self) -> int:
        """Number of estimated parameters (θ, β and the negative binomial's φ)."""
        return self.result.theta.size + self.result.beta.size + int(self.glmm.family.has_dispersion)

    def _phi(self) -> float:
        return self.result.phi

    def _make_params(self) -> ParamDraws:
        r = self.result
        return ParamDraws.point(
            r.beta, 1.0, r.ranef, r.sd, r.cor, r.vcov_beta, r.condsd,
            family=array_family(self.glmm.family, self.glmm.weights, r.phi),
        )

    def _describe(self) -> FitDescription:
        r = self.result
        how = "Laplace Approximation" if r.nagq == 1 else f"Adaptive Gauss-Hermite Quadrature, nAGQ = {r.nagq}"
        crit = (
            f"     AIC      BIC   logLik deviance df.resid\n"
            f"{self.AIC():8.1f} {self.BIC():8.1f} {r.loglik:8.1f} {r.deviance:8.1f} {self.df_residual():9d}"
        )
        footer = []
        if r.singular:
            footer.append("boundary (singular) fit: see help('isSingular')")
        if not r.converged:
            footer.append(f"optimizer did not report convergence: {r.message}")
        header = [self.glmm.family_line(), "", crit]
        if self.glmm.family.has_dispersion:
            header.insert(1, f" Dispersion phi: {r.phi:.4g}")
        res = self.resid("pearson").to_numpy()
        q = np.quantile(res, [0, 0.25, 0.5, 0.75, 1])
        scaled = pd.DataFrame([q], columns=["Min", "1Q", "Median", "3Q", "Max"]).to_string(
            index=False, float_format=lambda v: f"{v:.4f}"
        )
        return FitDescription(
            title=f"Generalized linear mixed model fit by maximum likelihood ({how}) [glmerMod]",
            header=tuple(header),
            footer=tuple(footer),
            blocks=(("Scaled residuals", scaled),),
        )

    def _glance_extra(self) -> dict[str, Any]:
        return {
            "logLik": self.logLik(),
            "AIC": self.AIC(),
            "BIC": self.BIC(),
            "deviance": self.deviance(),
            "df.residual": self.df_residual(),
        }

    def fixef(self, level: float = 0.95) -> pd.DataFrame:
        """``fixef(fm)`` with ``coef(summary(fm))``: ``Estimate``, ``Std. Error``, the Wald interval, ``z value``, ``Pr(>|z|)``."""
        return _z_tests(super().fixef(level))

    def summary(self, level: float = 0.95) -> ModelSummary:
        """``summary(glmer)``: family, AIC/BIC/logLik/deviance, random effects, z tests of the fixed effects."""
        return self._build_summary(level, self.fixef(level))

    def vcov(self) -> pd.DataFrame:
        """``vcov(fm)`` (from the Hessian of the deviance over θ and β, lme4's default)."""
        names = list(self.design.fixed_names)
        return pd.DataFrame(self.result.vcov_beta, index=names, columns=names)

    def logLik(self) -> float:  # noqa: N802 - lme4's name
        """``logLik(fm)``: minus half the Laplace (or AGQ) deviance."""
        return self.result.loglik

    def AIC(self) -> float:  # noqa: N802 - lme4's name
        """``AIC(fm)``."""
        return -2.0 * self.result.loglik + 2.0 * self.n_params

    def BIC(self) -> float:  # noqa: N802 - lme4's name
        """``BIC(fm)``."""
        return -2.0 * self.result.loglik + np.log(self.design.nobs) * self.n_params

    def deviance(self) -> float:
        """``deviance(fm)``: lme4's deviance of a GLMM, the sum of the squared deviance residuals at the conditional modes."""
        return self.result.deviance

    def df_residual(self) -> int:
        """``df.residual(fm)``: observations minus estimated parameters."""
        return int(self.design.nobs - self.n_params)

    def isSingular(self) -> bool:  # noqa: N802 - lme4's name
        """``isSingular(fm)``: a variance component on the boundary."""
        return self.result.singular

    def confint(self, level: float = 0.95, method: str = "Wald") -> pd.DataFrame:
        """``confint(fm, method = "Wald")``: Wald intervals of the fixed effects (the only method for GLMM fits here).

        Raises
        ------
        BayesLMMError
            For a method other than ``"Wald"``.
        """
        if method != "Wald":
            raise BayesLMMError(f"confint for a GLMM fit supports method='Wald' only; got {method!r}.")
        lo, hi = interval_names(level)
        fx = self.fixef(level)
        pct = (f"{100 * (1 - level) / 2:g} %", f"{100 * (1 + level) / 2:g} %")
        return fx[[lo, hi]].rename(columns={lo: pct[0], hi: pct[1]})


@dataclass(eq=False, repr=False)
class GLMMBayesFit(GLMMOutputs):
    """A GLMM fit by NUTS: the posterior under the shared fit contract.

    Attributes
    ----------
    design, glmm
        As for :class:`LaplaceFit`.
    priors
        The priors used.
    idata
        The ArviZ ``DataTree`` posterior.
    settings, diagnostics
        Sampler settings, divergences, R-hat and ESS.
    parameterization
        Per block label, ``"centered"`` or ``"noncentered"``.
    laplace
        The Laplace fit the chains started from (None with ``init="prior"``).
    """

    design: Design
    glmm: GLMMInfo
    priors: Priors
    idata: Any
    settings: SamplerSettings
    diagnostics: Diagnostics
    parameterization: dict[str, str] = field(default_factory=dict)
    laplace: LaplaceFit | None = None

    method = "NUTS"

    def _make_params(self) -> ParamDraws:
        return ParamDraws.from_posterior(
            self.design, self.idata, family=array_family(self.glmm.family, self.glmm.weights, self._phi())
        )

    def _phi(self) -> float:
        from .. import naming

        if naming.DISPERSION in self.idata.posterior:
            return float(np.mean(self.idata.posterior[naming.DISPERSION].values))
        return np.inf

    @cached_property
    def phi_draws(self) -> np.ndarray | None:
        """Posterior draws of the negative binomial's φ (None for other families)."""
        from .. import naming

        if naming.DISPERSION in self.idata.posterior:
            return np.asarray(self.idata.posterior[naming.DISPERSION].values, dtype=float).reshape(-1)
        return None

    def pointwise_log_likelihood(self) -> np.ndarray:
        """``log p(y_i | η_si)`` of every row under every draw, offset included, ``(S, n)``."""
        from ..paramdraws import Rows, draw_chunks

        fam, out = self.glmm.family, np.empty((self.params.n_draws, self.design.nobs))
        for sel, eta in draw_chunks(Rows.from_design(self.design), self.params):
            out[sel] = fam.logpdf(self.design.y, fam.link.linkinv(eta + self.glmm.offset), self.glmm.weights, self._phi())
        return out

    def store_log_likelihood(self) -> None:
        """Store :meth:`pointwise_log_likelihood` as ``idata["log_likelihood"]`` (what ``loo``/``waic`` and ArviZ read)."""
        import xarray as xr

        from .. import naming

        post = self.idata.posterior
        ll = self.params.to_chains(self.pointwise_log_likelihood())
        da = xr.DataArray(ll, dims=("chain", "draw", naming.OBS_DIM), coords={
            "chain": post["chain"].values, "draw": post["draw"].values, naming.OBS_DIM: np.arange(ll.shape[-1])})
        self.idata["log_likelihood"] = xr.DataTree(xr.Dataset({naming.LIKELIHOOD: da}))

    def loo(self, pointwise: bool = True) -> Any:
        """PSIS-LOO (:func:`arviz.loo`) from the stored pointwise log-likelihood (binomial rows count as one observation each)."""
        from .. import fitstats

        return fitstats.psis_loo(self.idata, self.design, self.params, pointwise)

    def waic(self) -> Any:
        """WAIC from the stored pointwise log-likelihood (:func:`bayeslmm.fitstats.waic`)."""
        from .. import fitstats

        return fitstats.waic(self.idata, self.design, self.params)

    def r2(self, level: float = 0.95, summary: bool = True) -> pd.DataFrame:
        """Bayesian R² of a GLM (Gelman, Goodrich, Gabry & Vehtari 2019), per draw.

        With ``μ_si`` the expected response of row i under draw s (response
        scale, offset included), ``V_μ = var_i(μ_si)`` and the modelled
        residual variance ``V_e = mean_i Var(y_i | μ_si)`` (``μ(1 − μ)/n_i`` for a
        proportion of ``n_i`` trials, ``μ`` for a Poisson count, ``μ + μ²/φ`` for the
        negative binomial): ``conditional = V_μ / (V_μ + V_e)``; ``marginal`` uses the
        fixed part of μ (group effects at 0) in the numerator over the same denominator.
        """
        from ..fitbase import draw_table
        from ..paramdraws import Rows, linear_predictor

        fam, rows, off = self.glmm.family, Rows.from_design(self.design), self.glmm.offset
        S = self.params.n_draws
        cond, marg = np.empty(S), np.empty(S)
        none = [False] * len(self.design.blocks)
        step = max(1, 2_000_000 // max(1, self.design.nobs))
        for a in range(0, S, step):
            sel = slice(a, min(a + step, S))
            mu = fam.link.linkinv(linear_predictor(rows, self.params, draws=sel) + off)
            mu_f = fam.link.linkinv(linear_predictor(rows, self.params, include=none, draws=sel) + off)
            ve = (fam.variance(mu, self._phi()) / self.glmm.weights).mean(axis=1)
            total = mu.var(axis=1, ddof=1) + ve
            cond[sel] = mu.var(axis=1, ddof=1) / total
            marg[sel] = mu_f.var(axis=1, ddof=1) / total
        return draw_table(self.params, {"marginal": marg, "conditional": cond}, level, "R2", summary)

    def posterior_predictive(self, random_seed: int | None = None) -> Any:
        """Add replicated responses ``y_rep`` as ``idata.posterior_predictive``; return ``idata``.

        ``y_rep`` is on the scale of ``idata.observed_data``: numbers of successes
        (binomial, Bernoulli) or counts, so ArviZ's PPC plots compare like with like.

        Raises
        ------
        PredictionError
            For a model with an offset (not supported yet).
        """
        from .. import fitstats

        if self.glmm.has_offset:
            raise PredictionError("posterior_predictive() does not take the offset into account yet; this model has one.")
        from .. import naming

        idata = fitstats.add_posterior_predictive(self.idata, self.design, self.params, random_seed)
        if self.glmm.family.is_binomial:
            pp = idata["posterior_predictive"].to_dataset()
            pp[naming.LIKELIHOOD] = np.round(pp[naming.LIKELIHOOD] * self.glmm.weights)
            idata["posterior_predictive"] = type(idata["posterior_predictive"])(pp)
        return idata

    def _describe(self) -> FitDescription:
        d, s = self.diagnostics, self.settings
        rhat = f"{d.max_rhat:.2f}" if d.chains > 1 and np.isfinite(d.max_rhat) else "not computed (one chain)"
        footer = [
            f"Sampling: NUTS ({s.sampler}), {d.chains} chain{'s' if d.chains > 1 else ''} x {d.draws} draws "
            f"after {d.tune} tuning steps; blocks: "
            + ", ".join(f"{k} {v}" for k, v in self.parameterization.items()),
            f"Divergences: {d.divergences}; max R-hat: {rhat}; min bulk ESS: {d.min_ess_bulk:.0f}; "
            f"min tail ESS: {d.min_ess_tail:.0f}",
            "Estimate is the posterior mean, Est.Error the posterior sd; intervals are equal-tailed credible intervals.",
        ]
        header = [self.glmm.family_line()]
        if self.phi_draws is not None:
            header.append(f" Dispersion phi: posterior mean {self.phi_draws.mean():.4g}")
        return FitDescription(
            title=f"Bayesian generalized linear mixed model fit by NUTS ({'PyMC' if s.sampler == 'pymc' else s.sampler})",
            header=tuple(header),
            footer=tuple(footer),
            after=(("Priors", self.priors.table()),),
        )

    def _glance_extra(self) -> dict[str, Any]:
        d = self.diagnostics
        return {"divergences": d.divergences, "draws": d.draws, "chains": d.chains}
