"""Fit objects: thin holders of a Design and a posterior that call the table functions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

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
        raise NotImplementedError

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
    model
        The PyMC model, for users who want to extend it.
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
    model: Any
    idata: Any
    settings: SamplerSettings
    diagnostics: Diagnostics
    parameterization: dict[str, str] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)

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
            title="Bayesian linear mixed model fit by NUTS (PyMC)",
            header=header,
            random=random,
            groups=groups_line(self.design),
            fixed=fx,
            footer=footer,
        )

    def __repr__(self) -> str:
        return f"<BayesFit {self.formula!r}: {self.design.nobs} obs, {self.diagnostics.chains}x{self.diagnostics.draws} draws>"
