"""Fit objects: thin holders of a Design and a posterior that call the table functions."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import pandas as pd

from . import fitstats as _fitstats, pooling as _pooling, predict as _predict, tidy as _tidy
from . import naming, tables
from .design import Design
from .priors import Priors
from .sampling import Diagnostics, SamplerSettings
from .summary import ModelSummary, groups_line, random_effects_block

__all__ = ["FitBase", "BayesFit"]


class FitBase:
    """What every fit (Bayesian or REML/ML) shares: the design and its bookkeeping."""

    design: Design

    @property
    def formula(self) -> str:
        """The formula as written."""
        return self.design.parsed.text

    def nobs(self) -> int:
        """Number of observations used, as ``nobs(fm)``."""
        return self.design.nobs

    def ngrps(self) -> pd.Series:
        """Number of levels per grouping factor, as ``ngrps(fm)``."""
        return pd.Series({f: len(levels) for f, levels in self.design.factors.items()}, dtype=int)

    def resid(self) -> pd.Series:
        """Residuals ``y - fitted()``, row-aligned with the data used."""
        return pd.Series(self.design.y - self.fitted().to_numpy(), index=self.design.frame.index, name="resid")

    def fitted(self) -> pd.Series:  # pragma: no cover - overridden
        """Fitted values, row-aligned with the data used (each fit kind defines them)."""
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> Path:
        """Write this fit (Bayesian or REML/ML) to one netCDF-4 file.

        Read it back with :func:`bayeslmm.load`; no pickle is involved (see :mod:`bayeslmm.io`).

        Returns
        -------
        pathlib.Path
            The path written.
        """
        from .io import save

        return save(self, path)

    def _series(self, values: np.ndarray, name: str) -> pd.Series:
        return pd.Series(values, index=self.design.frame.index, name=name)


@dataclass(eq=False)
class BayesFit(FitBase):
    """A Bayesian linear mixed model fit by NUTS.

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

    design: Design
    priors: Priors
    model_factory: Callable[[], Any]
    idata: Any
    settings: SamplerSettings
    diagnostics: Diagnostics
    parameterization: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def model(self) -> Any:
        """The PyMC model (a ``pm.Model``) of this fit, for users who want to extend it; built on first use."""
        return self.model_factory()

    # -- lme4 extractors --------------------------------------------------
    def fixef(self, prob: float = 0.95) -> pd.DataFrame:
        """Fixed effects: ``Estimate``, ``Est.Error``, interval, ``Rhat``, ``Bulk_ESS``, ``Tail_ESS``."""
        return tables.fixef_table(self.design, self.idata, prob)

    def ranef(self, prob: float = 0.95, long: bool = False):
        """Group effects: ``{factor: levels x terms}`` or, with ``long=True``, one row per level and term."""
        return tables.ranef_table(self.design, self.idata, prob, long)

    def coef(self, prob: float = 0.95, long: bool = False):
        """Per-level coefficients (fixed + group effects, summarised per draw)."""
        return tables.coef_table(self.design, self.idata, prob, long)

    def VarCorr(self, prob: float = 0.95) -> pd.DataFrame:  # noqa: N802 - lme4's name
        """Variance components in the ``as.data.frame(VarCorr(fm))`` shape."""
        return tables.varcorr_table(self.design, self.idata, prob)

    def fitted(self) -> pd.Series:
        """Posterior-mean fitted values, row-aligned with the data used."""
        return self._series(tables.fitted_mean(self.design, self.idata), "fitted")

    @property
    def sigma(self) -> float:
        """Posterior mean of the residual sd."""
        return float(tables.draws(self.idata, naming.SIGMA).mean())

    @property
    def plot(self):
        """Plots of this fit (see :mod:`bayeslmm.plots`).

        ``fit.plot.caterpillar()``, ``fit.plot.trajectories("Days")``, ``residuals``, ``qq``,
        ``observed_fitted``, ``shrinkage``, ``trace``, ``rank``, ``forest``, ``ppc``.
        """
        from .plots import FitPlots

        return FitPlots(self)

    def summary(self, prob: float = 0.95) -> ModelSummary:
        """An lme4-style summary with posterior columns and sampling diagnostics."""
        lo, hi = tables.interval_names(prob)
        vc = self.VarCorr(prob)
        random = random_effects_block(self.design, vc, extra=["Est.Error", lo, hi])
        fx = self.fixef(prob)
        d = self.diagnostics
        s = self.settings
        how = "collapsed (group effects integrated out)" if "collapsed" in self.parameterization.values() else "full"
        header = [
            f"Formula: {self.formula}",
            f"   Data: {self.design.nobs} observations",
            f" Priors: see fit.priors ({sum(e.source == 'user' for e in self.priors.entries)} set by the user)",
        ]
        footer = [
            f"Sampling: NUTS ({s.sampler}), {d.chains} chains x {d.draws} draws after {d.tune} tuning steps; {how} model",
            f"Divergences: {d.divergences}; max R-hat: {d.max_rhat:.3f}; min bulk ESS: {d.min_ess_bulk:.0f}; "
            f"min tail ESS: {d.min_ess_tail:.0f}",
            "Estimates are posterior means; Est.Error is the posterior sd; intervals are equal-tailed.",
        ]
        if self.design.dropped_fixed:
            footer.append(f"fixed-effect model matrix is rank deficient: dropped {list(self.design.dropped_fixed)}")
        return ModelSummary(
            title=f"Bayesian linear mixed model fit by NUTS ({'PyMC' if s.sampler == 'pymc' else s.sampler})",
            header=header,
            random=random,
            groups=groups_line(self.design),
            fixed=fx,
            footer=footer,
        )

    # -- after the fit: prediction, checks, pooling, broom-style frames ---
    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        re_form: Any = None,
        new_levels: str = "error",
        kind: str = "mean",
        interval: float = 0.95,
        random_seed: int | None = None,
    ) -> pd.DataFrame:
        """Predictions with ``Estimate``, ``Est.Error`` and interval; see :func:`bayeslmm.predict.predict`."""
        return _predict.predict(self, newdata, re_form, new_levels, kind, interval, random_seed)

    def posterior_predictive(self, random_seed: int | None = None) -> Any:
        """Add ``y_rep`` draws as the ``posterior_predictive`` group of ``idata`` and return ``idata``."""
        return _fitstats.posterior_predictive(self, random_seed)

    def loo(self, pointwise: bool = True) -> Any:
        """PSIS-LOO cross-validation (:func:`arviz.loo`) from the stored pointwise log-likelihood."""
        return _fitstats.loo(self, pointwise)

    def waic(self) -> _fitstats.WAIC:
        """WAIC, computed from the pointwise log-likelihood (ArviZ 1.x has no ``waic``)."""
        return _fitstats.waic(self)

    def r2(self, prob: float = 0.95, summary: bool = True) -> pd.DataFrame:
        """Bayesian R², marginal and conditional; ``summary=False`` gives the draws."""
        return _fitstats.r2(self, prob, summary)

    def icc(self, prob: float = 0.95, summary: bool = True) -> pd.DataFrame:
        """Intraclass correlation per grouping factor; ``summary=False`` gives the draws."""
        return _fitstats.icc(self, prob, summary)

    def pooling(self, factor: str | None = None) -> pd.DataFrame:
        """Complete, no and partial pooling estimates per level of a grouping factor."""
        return _pooling.pooling(self, factor)

    def tidy(self, effects: Any = ("fixed", "ran_pars"), conf_level: float = 0.95) -> pd.DataFrame:
        """broom.mixed's ``tidy()``: ``effects`` from ``fixed``, ``ran_pars``, ``ran_vals``, ``ran_coefs``."""
        return _tidy.tidy(self, effects, conf_level)

    def glance(self) -> pd.DataFrame:
        """broom.mixed's ``glance()``: one row with nobs, sigma, LOO, WAIC, R², sampling counts."""
        return _tidy.glance(self)

    def augment(
        self, newdata: pd.DataFrame | None = None, re_form: Any = None, conf_level: float = 0.95
    ) -> pd.DataFrame:
        """broom.mixed's ``augment()``: the data plus ``.fitted``, ``.resid``, ``.lower``, ``.upper``."""
        return _tidy.augment(self, newdata, re_form, conf_level)

    def reml(self, method: str = "REML"):
        """The REML (or ML) fit of the same formula and data, as a diagnostic and for :func:`bayeslmm.compare`."""
        key = f"reml_{method.upper()}"
        if key not in self.extras:
            from .reml_fit import fit_frequentist

            self.extras[key] = fit_frequentist(self.design, method)
        return self.extras[key]

    def __repr__(self) -> str:
        return f"<BayesFit {self.formula!r}: {self.design.nobs} obs, {self.diagnostics.chains}x{self.diagnostics.draws} draws>"
