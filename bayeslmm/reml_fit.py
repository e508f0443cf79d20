"""The REML/ML fit: a :class:`~bayeslmm.reml.REMLResult` under the shared fit contract, plus lme4's likelihood extractors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from . import inference, tidy as tidy_mod
from .design import Design
from .errors import BayesLMMError
from .fitbase import FitDescription, MixedFit
from .inference.engine import FitState, from_result
from .paramdraws import ParamDraws
from .reml import REMLProblem, REMLResult, block_sd_corr, fit_reml
from .summary import ModelSummary

__all__ = ["REMLFit", "fit_frequentist", "anova"]


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


def anova(*fits: REMLFit, refit: bool = True, names: Sequence[str] | None = None) -> inference.InferenceTable:
    """Likelihood-ratio tests of nested REML/ML fits, as lme4's ``anova(m0, m1, ...)``.

    Parameters
    ----------
    *fits
        Two or more REML or ML fits of the same rows and response.
    refit
        Refit REML fits by ML first, as lme4 does (the table says so); ``False``
        compares REML likelihoods, valid only for models with the same fixed effects.
    names
        Row names; by default ``m0``, ``m1``, ... in the order given.

    Returns
    -------
    InferenceTable
        Rows ordered by ``npar``: ``npar``, ``AIC``, ``BIC``, ``logLik``,
        ``deviance``, ``Chisq``, ``Df``, ``Pr(>Chisq)``, and ``Pr(>Chisq) mix``,
        the 50:50 χ² mixture p-value where one variance component is tested on
        its boundary (a note then says that the plain χ² test is conservative).

    Raises
    ------
    BayesLMMError
        For fewer than two fits, a fit that is not a REML/ML fit (a Bayesian fit:
        use :func:`bayeslmm.compare_models`), fits to different rows or
        responses, or models that are not nested.
    """
    labels = list(names) if names is not None else [f"m{i}" for i in range(len(fits))]
    for label, fit in zip(labels, fits):
        if not isinstance(fit, REMLFit):
            raise BayesLMMError(
                f"Model {label!r} is a {type(fit).__name__}, not a REML/ML fit. "
                "Likelihood-ratio tests need likelihood fits (lmer(..., method='REML') or 'ML'); compare Bayesian "
                "fits with bayeslmm.compare_models({...}) (PSIS-LOO)."
            )
    return inference.anova(*(f.inference_state for f in fits), refit=refit, names=names)


@dataclass(eq=False, repr=False)
class REMLFit(MixedFit):
    """A linear mixed model fit by REML or ML, with lme4's extractor names.

    Every extractor of :class:`~bayeslmm.fitbase.MixedFit` reads the
    estimates as a single draw with their standard errors (``Var(β̂)`` and the
    conditional sds of the modes); this class adds what only a likelihood fit
    has: ``vcov``, ``logLik``, ``AIC``, ``BIC``, ``REMLcrit``, ``deviance``
    and ``isSingular``, and the inference of lme4, lmerTest and pbkrtest:
    ``confint``, ``profile``, ``bootstrap``, t tests in ``fixef``/``summary``
    (``ddf=``), ``anova``, ``contest`` and ``ranova`` (see :mod:`bayeslmm.inference`).

    Attributes
    ----------
    design
        The evaluated design (the same stage the Bayesian fit uses).
    result
        The numbers: θ, β, σ, covariances, conditional modes, criteria.
    """

    file_kind: ClassVar[str] = "reml"
    design: Design
    result: REMLResult
    _coef_tests: dict[str, pd.DataFrame] = field(default_factory=dict, init=False, repr=False)

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

    # -- inference (lme4, lmerTest, pbkrtest) --------------------------------
    @cached_property
    def problem(self) -> REMLProblem:
        """The engine's reusable object for this design and method (lme4's ``devfun``), built on first use."""
        return REMLProblem.from_design(self.design, self.method)

    @cached_property
    def inference_state(self) -> FitState:
        """The estimates with :attr:`problem`, as :mod:`bayeslmm.inference` takes them."""
        return from_result(self.design, self.result, self.problem)

    def fixef(self, level: float = 0.95, *, ddf: str = "Satterthwaite") -> pd.DataFrame:
        """``fixef(fm)`` as a table, with lmerTest's t tests.

        Parameters
        ----------
        level
            Level of the Wald interval columns (``confint(fm, method = "Wald")``).
        ddf
            ``"Satterthwaite"`` (lmerTest's default), ``"Kenward-Roger"`` (REML
            fits; its adjusted standard errors, as pbkrtest) or ``"lme4"`` (no
            df and no p-values, as ``summary`` of an ``lmerMod``).

        Returns
        -------
        pandas.DataFrame
            ``Estimate``, ``Std. Error``, the Wald interval, then ``df``,
            ``t value`` and ``Pr(>|t|)`` (``coef(summary(fm, ddf = ...))``); for
            ``ddf="lme4"`` only ``t value`` after the interval. The interval
            is always ``confint(fm, method = "Wald")`` (from ``vcov(fm)``), also
            where Kenward-Roger adjusts the standard error of the t test.

        Raises
        ------
        BayesLMMError
            For an unknown ``ddf``, or ``"Kenward-Roger"`` on an ML fit (lmerTest refuses it).
        """
        table = super().fixef(level)
        ddf = inference.normalize_ddf(ddf)
        if ddf == "lme4":
            return table
        if ddf not in self._coef_tests:
            self._coef_tests[ddf] = inference.coef_table(self.inference_state, ddf=ddf)
        tests = self._coef_tests[ddf]
        table = table.drop(columns=["t value"])
        table["Std. Error"] = tests["Std. Error"].to_numpy()
        for col in ("df", "t value", "Pr(>|t|)"):
            table[col] = tests[col].to_numpy()
        table.attrs["ddf"] = ddf
        return table

    def tidy(self, effects: Any = ("fixed", "ran_pars"), level: float = 0.95, *, ddf: str = "Satterthwaite") -> pd.DataFrame:
        """broom.mixed's ``tidy()`` of an lmerTest fit: the fixed rows add ``statistic``, ``df`` and ``p.value``.

        Parameters
        ----------
        effects
            One or a list of ``"fixed"``, ``"ran_pars"``, ``"ran_vals"``, ``"ran_coefs"``.
        level
            Level of the Wald intervals ``conf.low`` / ``conf.high``.
        ddf
            ``"Satterthwaite"`` (default), ``"Kenward-Roger"`` or ``"lme4"`` (``statistic`` only,
            ``df`` and ``p.value`` NaN), as ``tidy(fm, ddf.method = ...)``.

        Returns
        -------
        pandas.DataFrame
            One row per parameter, broom.mixed's columns.
        """
        table = super().tidy(effects, level)
        wanted = [effects] if isinstance(effects, str) else list(effects)
        if "fixed" not in wanted:
            return table
        return tidy_mod.with_fixed_tests(table, self.fixef(level, ddf=ddf))

    def summary(self, level: float = 0.95, *, ddf: str = "Satterthwaite") -> ModelSummary:
        """The summary as lmerTest's ``summary(fm, ddf = ...)`` prints it: lme4's summary with df, t value and ``Pr(>|t|)``, the method named."""
        fx = self.fixef(level, ddf=ddf)
        note = inference.ddf_note(ddf)
        header = (f"{note} (lmerTest)",) if note else ()
        footer = ()
        if "Pr(>|t|)" in fx.columns and len(fx):
            fx[""] = [inference.significance_stars(v) for v in fx["Pr(>|t|)"]]
            footer = (inference.SIGNIF_LEGEND,)
        return self._build_summary(level, fx, header=header, footer=footer)

    def confint(
        self,
        parm: str | Sequence[str] | None = None,
        level: float = 0.95,
        method: str = "profile",
        nsim: int = 1000,
        seed: int | None = None,
        boot_type: str = "perc",
        progressbar: bool = True,
        cores: int | None = None,
    ) -> pd.DataFrame:
        """Confidence intervals, as lme4's ``confint(fm, parm, level, method, nsim, boot.type, oldNames = FALSE)``.

        Parameters
        ----------
        parm
            Row names (``"sd_(Intercept)|Subject"``, ``"cor_Days.(Intercept)|Subject"``,
            ``"sigma"``, fixed-effect names), ``"beta_"`` (the fixed effects) or
            ``"theta_"`` (the variance parameters); ``None``: all.
        level
            Confidence level, strictly between 0 and 1.
        method
            ``"profile"`` (likelihood profile of the ML deviance, lme4's default),
            ``"Wald"`` (fixed effects; NaN for variance parameters, as lme4) or
            ``"boot"`` (parametric bootstrap, :meth:`bootstrap`).
        nsim, seed, boot_type, progressbar, cores
            For ``method="boot"``: replicates, seed, ``"perc"``/``"basic"``/``"norm"``, progress bar, processes.

        Returns
        -------
        pandas.DataFrame
            One row per parameter, columns labelled by ``level`` (``2.5 %``, ``97.5 %``).

        Raises
        ------
        BayesLMMError
            For an unknown ``parm``, ``method`` or ``boot_type``, or ``level`` outside (0, 1).
        """
        if method == "boot":
            self.design.require_rows('confint(method="boot")')
        return inference.confint(
            self.inference_state, parm, level, method, nsim, seed, boot_type, progressbar, cores
        )

    def varcorr_intervals(self, method: str = "profile", level: float = 0.95, **kwargs: Any) -> pd.DataFrame:
        """:meth:`confint` of the variance parameters laid out as ``as.data.frame(VarCorr(fm))`` (``grp``, ``var1``, ``var2``)."""
        return inference.varcorr_intervals(self.inference_state, method, level, **kwargs)

    def profile(self, which: Sequence[str] | None = None, alphamax: float = 0.01) -> inference.Profile:
        """Likelihood profiles, lme4's ``profile(fm, which)``; ``as.data.frame`` via ``.to_frame()``."""
        return inference.profile(self.inference_state, which, alphamax)

    def bootstrap(
        self,
        func: Callable[[inference.BootReplicate], Any] | None = None,
        nsim: int = 1000,
        seed: int | None = None,
        use_u: bool = False,
        progressbar: bool = True,
        cores: int | None = None,
    ) -> inference.BootstrapResult:
        """Parametric bootstrap, lme4's ``bootMer(fm, FUN, nsim, seed, use.u)``.

        Each replicate simulates a response from the fitted model, refits it
        by the same criterion from the original θ̂ (only the response
        cross-products change) and evaluates ``func`` (default: sds,
        correlations, σ, fixed effects). Replicate i has its own seed, so the
        results do not depend on ``cores``; ``.summary()`` counts the refits
        that did not converge, ``.replicates`` holds the statistics.
        """
        self.design.require_rows("bootstrap()")
        return inference.bootstrap(self.inference_state, func, nsim, seed, use_u, progressbar, cores)

    def anova(self, type: Any = 3, ddf: str = "Satterthwaite") -> inference.InferenceTable:
        """F tests of each fixed-effect term, lmerTest's ``anova(fm, type, ddf)`` (Sum Sq, Mean Sq, NumDF, DenDF, F, p).

        ``type`` is 3 (default), 2 or 1; ``ddf="lme4"`` gives lme4's sequential
        table without tests. Likelihood-ratio tests of several fits are
        :func:`bayeslmm.anova`.
        """
        return inference.anova_table(self.inference_state, type=type, ddf=ddf)

    def contest(self, L: Any, ddf: str = "Satterthwaite", joint: bool = True) -> pd.DataFrame:
        """Tests of contrasts, lmerTest's ``contest(fm, L, ddf, joint)``: F (joint) or t tests of contrasts Lβ = 0."""
        return inference.contest(self.inference_state, L, ddf=ddf, joint=joint)

    def ranova(self, reduce_terms: bool = True) -> inference.InferenceTable:
        """Tests of the random-effect terms, lmerTest's ``ranova(fm, reduce.terms)``: likelihood-ratio tests of each random-effect term."""
        return inference.ranova(self.inference_state, reduce_terms=reduce_terms)
