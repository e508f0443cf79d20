"""The Bayesian fit: a posterior ``DataTree`` under the shared fit contract, plus what only a posterior has."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar
from collections.abc import Callable

import numpy as np
import pandas as pd

from . import fitstats, reloo as reloo_mod
from .design import Design
from .errors import BayesLMMError, ConvergenceWarning
from .fitbase import FitDescription, MixedFit, draw_table
from .inference import hypothesis as hypothesis_table, probability_of_direction
from .paramdraws import ParamDraws
from .priors import Priors
from .summary import ModelSummary
from .parameterization import COLLAPSED, fully_collapsed, partly_collapsed
from .reml_fit import REMLFit, fit_frequentist
from .sampling import Diagnostics, SamplerSettings

__all__ = ["BayesFit", "fit_posterior"]


@dataclass(eq=False, repr=False)
class BayesFit(MixedFit):
    """A Bayesian linear mixed model fit by NUTS.

    Every extractor of :class:`~bayeslmm.fitbase.MixedFit` (``fixef``,
    ``ranef``, ``coef``, ``VarCorr``, ``predict``, ``tidy``, ...) reads the
    posterior; this class adds what only a posterior has: ``idata``,
    ``loo``, ``waic``, ``r2``, ``posterior_predictive`` and the plots.

    Attributes
    ----------
    design
        The evaluated design.
    priors
        The priors used (``print(fit.priors)`` shows the table).
    model_factory
        Builds the PyMC model; ``fit.model`` calls it once, on first use (the
        collapsed fit samples without it, so it is not built unless asked for).
    idata
        The ArviZ ``DataTree`` posterior: every ArviZ function works on it.
    settings
        Sampler settings.
    diagnostics
        Divergences, R-hat and ESS.
    parameterization
        Per block label, ``"centered"``, ``"noncentered"`` or ``"collapsed"``.
    """

    file_kind: ClassVar[str] = "bayes"
    design: Design
    priors: Priors
    model_factory: Callable[[], Any]
    idata: Any
    settings: SamplerSettings
    diagnostics: Diagnostics
    parameterization: dict[str, str] = field(default_factory=dict)
    _frequentist: dict[str, REMLFit] = field(default_factory=dict, init=False, repr=False)
    _loo: dict[bool, Any] = field(default_factory=dict, init=False, repr=False)

    method = "NUTS"

    @cached_property
    def model(self) -> Any:
        """The PyMC model (a ``pm.Model``) of this fit, for users who want to extend it; built on first use."""
        return self.model_factory()

    def _make_params(self) -> ParamDraws:
        return ParamDraws.from_posterior(self.design, self.idata)

    def _describe(self) -> FitDescription:
        d, s = self.diagnostics, self.settings
        n_user = sum(e.source == "user" for e in self.priors.entries)
        if fully_collapsed(self.parameterization):
            how = "collapsed (group effects integrated out)"
        elif partly_collapsed(self.parameterization):
            kept = [label for label, v in self.parameterization.items() if v == COLLAPSED]
            how = f"crossed (group effects of {', '.join(kept)} integrated out)"
        else:
            how = "full"
        rhat = f"{d.max_rhat:.2f}" if d.chains > 1 and np.isfinite(d.max_rhat) else "not computed (one chain)"
        footer = [
            f"Sampling: NUTS ({s.sampler}), {d.chains} chain{'s' if d.chains > 1 else ''} x {d.draws} draws "
            f"after {d.tune} tuning steps; {how} model",
            f"Divergences: {d.divergences}; max R-hat: {rhat}; min bulk ESS: {d.min_ess_bulk:.0f}; "
            f"min tail ESS: {d.min_ess_tail:.0f}",
            "Estimate is the posterior mean, Est.Error the posterior sd; intervals are equal-tailed credible intervals.",
        ]
        if d.chains == 1:
            footer.append("R-hat compares chains, so a one-chain fit has none (Rhat is blank); run chains >= 2 to check mixing.")
        return FitDescription(
            title=f"Bayesian linear mixed model fit by NUTS ({'PyMC' if s.sampler == 'pymc' else s.sampler})",
            header=(f" Priors: {len(self.priors.entries) - n_user} default, {n_user} set by the user (listed below)",),
            footer=tuple(footer),
            after=(("Priors", self.priors.table()),),
        )

    def _glance_extra(self) -> dict[str, Any]:
        d = self.diagnostics
        if self.design.summary is not None:  # out of core: the pointwise criteria need the rows
            nan = float("nan")
            elpd = p_loo = waic = r2m = r2c = nan
        else:
            lo, rr = self.loo(), self.r2()["Estimate"]
            elpd, p_loo, waic = float(lo.elpd), float(lo.p), self.waic().waic
            r2m, r2c = float(rr["marginal"]), float(rr["conditional"])
        return {
            "elpd_loo": elpd,
            "p_loo": p_loo,
            "looic": -2.0 * elpd,
            "waic": waic,
            "r2_marginal": r2m,
            "r2_conditional": r2c,
            "divergences": d.divergences,
            "draws": d.draws,
            "chains": d.chains,
        }

    @property
    def plot(self):
        """Plots of this fit (see :mod:`bayeslmm.plots`).

        ``fit.plot.caterpillar()``, ``fit.plot.trajectories("Days")``, ``residuals``, ``qq``,
        ``observed_fitted``, ``shrinkage``, ``trace``, ``rank``, ``forest``, ``ppc``.
        """
        from .plots import FitPlots

        return FitPlots(self)

    # -- what only a posterior has -------------------------------------------
    def posterior_predictive(self, random_seed: int | None = None) -> Any:
        """Add ``y_rep`` draws as the ``posterior_predictive`` group of ``idata`` and return ``idata``."""
        return fitstats.add_posterior_predictive(self.idata, self.design, self.params, random_seed)

    def loo(self, pointwise: bool = True, reloo: bool | str = "auto") -> Any:
        """Leave-one-out cross-validation: PSIS-LOO (:func:`arviz.loo`), exact where PSIS fails.

        Parameters
        ----------
        pointwise
            Keep the per-observation ``elpd_i`` and Pareto k values.
        reloo
            What to do with observations whose Pareto k exceeds ArviZ's
            threshold ``good_k`` (0.7 for 4000 draws), where PSIS is unreliable:
            ``True`` refits the model without each of them and uses its exact
            leave-one-out density (brms's ``reloo``; see :mod:`bayeslmm.reloo`);
            ``False`` keeps the PSIS values and warns; ``"auto"`` (default)
            refits when at most :data:`bayeslmm.reloo.RELOO_MAX` (10)
            observations are flagged, and warns otherwise. The result is
            computed once per fit and setting.

        Returns
        -------
        arviz.ELPDDataLOO
            ``elpd``, ``se``, ``p`` (p_loo), ``elpd_i`` (one per row), ``pareto_k``.
        """
        if reloo not in (True, False, "auto"):
            raise BayesLMMError(f"reloo must be True, False or 'auto', got {reloo!r}.")
        psis = fitstats.psis_loo(self.idata, self.design, self.params)
        bad = np.flatnonzero(np.asarray(psis.pareto_k) > psis.good_k)
        refit = bad.size > 0 and (reloo is True or (reloo == "auto" and bad.size <= reloo_mod.RELOO_MAX))
        if refit:
            if True not in self._loo:
                tree = fitstats.with_log_likelihood(self.idata, self.design, self.params)
                self._loo[True] = reloo_mod.refit_loo(
                    psis, tree, self.design, self.priors, self.parameterization, self.settings
                )
            result = self._loo[True]
        else:
            result = psis
            if bad.size:
                warnings.warn(
                    f"{bad.size} observation(s) have Pareto k > {psis.good_k:.2f} (rows {bad[:10].tolist()}"
                    f"{' ...' if bad.size > 10 else ''}), where PSIS-LOO is unreliable; fit.loo(reloo=True) "
                    "refits the model without each of them for their exact leave-one-out values.",
                    ConvergenceWarning,
                    stacklevel=2,
                )
        if not pointwise:
            result = copy.copy(result)
            result.elpd_i = result.pareto_k = None
        return result

    def summary(self, level: float = 0.95, *, pd: bool = False) -> ModelSummary:
        """A brms/lme4-style summary; ``pd=True`` adds the probability of direction of each fixed effect.

        The probability of direction (bayestestR's ``pd``) is
        max(P(β > 0 | y), P(β < 0 | y)): the posterior answer to "which way
        does this coefficient go?".
        """
        fx = self.fixef(level)
        footer: tuple[str, ...] = ()
        if pd:
            fx["pd"] = probability_of_direction(self.design.fixed_names, self.params.beta).to_numpy()
            footer = ("pd is the probability of direction, max(P(b > 0 | y), P(b < 0 | y)).",)
        return self._build_summary(level, fx, footer=footer)

    def hypothesis(
        self,
        hypotheses: str | list[str],
        level: float = 0.95,
        prior_draws: int = 20000,
        seed: int | None = None,
    ) -> pd.DataFrame:
        """Posterior tests of the fixed effects, as brms's ``hypothesis(fit, "Days > 0")``.

        Parameters
        ----------
        hypotheses
            One or several of ``"<combination> <sign> <combination>"`` over the
            coefficient names, sign ``=``, ``<`` or ``>``: ``"Days > 0"``,
            ``"Days = 0"``, ``"Days + Days:groupB = 0"``, ``"2 * b - c < 1"``
            (backticks quote awkward names, ``Intercept`` is ``(Intercept)``).
        level
            Credible level (one-sided intervals for ``<`` and ``>``).
        prior_draws, seed
            Prior draws and their seed for the Savage-Dickey ratio when a prior
            involved is not Normal (Normal priors give the exact prior density).

        Returns
        -------
        pandas.DataFrame
            ``Hypothesis``, ``Estimate``, ``Est.Error``, ``CI.Lower``,
            ``CI.Upper``, ``Evid.Ratio`` (one-sided: posterior odds of the
            hypothesis; point: the Savage-Dickey Bayes factor p(h=0 | y)/p(h=0)),
            ``Post.Prob`` and ``Star`` (the interval excludes 0).
        """
        return hypothesis_table(self.design, self.params.beta, self.priors, hypotheses, level, prior_draws, seed)

    def waic(self) -> fitstats.WAIC:
        """WAIC, computed from the pointwise log-likelihood (ArviZ 1.x has no ``waic``)."""
        return fitstats.waic(self.idata, self.design, self.params)

    def r2(self, level: float = 0.95, summary: bool = True) -> pd.DataFrame:
        """Bayesian R², marginal and conditional (:func:`bayeslmm.fitstats.r2_draws`); ``summary=False`` gives the draws."""
        return draw_table(self.params, fitstats.r2_draws(self.design, self.params), level, "R2", summary)

    def reml(self, method: str = "REML") -> REMLFit:
        """The REML (or ML) fit of the same formula and data, as a diagnostic and for :func:`bayeslmm.compare`."""
        key = method.upper()
        if key not in self._frequentist:
            self._frequentist[key] = fit_frequentist(self.design, key)
        return self._frequentist[key]


def fit_posterior(
    design: Design,
    priors: Priors,
    parameterization: dict[str, str],
    model_factory: Callable[[], Any],
    settings: SamplerSettings,
    idata: Any,
) -> BayesFit:
    """The fit object of a posterior (the last stage of ``lmer``'s NUTS route; see :mod:`bayeslmm.stages`).

    Diagnoses convergence (warning as :func:`~bayeslmm.sampling.diagnose` does) and adds the
    pointwise log-likelihood group to ``idata``.

    Parameters
    ----------
    design, priors, parameterization
        The design, its priors and the parameterization per block.
    model_factory
        Builds the PyMC model (:func:`bayeslmm.stages.model_factory`).
    settings
        The sampler settings.
    idata
        The posterior ``DataTree`` (:func:`bayeslmm.stages.sample`); the ``log_likelihood`` group is added to it.

    Returns
    -------
    BayesFit
    """
    from .sampling import diagnose
    from .stages import sampled_vars

    diag = diagnose(idata, sampled_vars(design), settings.tune, settings.target_accept, parameterization=parameterization)
    fit = BayesFit(
        design=design,
        priors=priors,
        model_factory=model_factory,
        idata=idata,
        settings=settings,
        diagnostics=diag,
        parameterization=parameterization,
    )
    fitstats.add_log_likelihood(idata, design, fit.params)  # for loo()/waic()/az.loo, from the fit's cached array core
    return fit
