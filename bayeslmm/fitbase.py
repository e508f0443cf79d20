"""The fit contract: :class:`MixedFit`, every lme4 and broom extractor written once.

A fit kind (NUTS posterior, REML/ML optimum, and later a GLMM or a Laplace
fit) subclasses :class:`MixedFit` and provides only:

* ``design`` -- the evaluated :class:`~bayeslmm.design.Design`;
* ``method`` -- a short name (``"NUTS"``, ``"REML"``, ``"ML"``);
* ``_make_params()`` -- its parameters as one
  :class:`~bayeslmm.paramdraws.ParamDraws` (a posterior's draws, or a point
  estimate with standard errors), built once and cached as ``fit.params``;
* ``_describe()`` -- the lines of its printed summary that are its own
  (a :class:`FitDescription`);
* ``_glance_extra()`` -- its columns of ``glance()`` after ``nobs`` and ``sigma``;
* ``file_kind`` -- what a saved file records (:mod:`bayeslmm.savefile` writes it,
  :mod:`bayeslmm.io` reads it back).

Everything else -- ``fixef``, ``ranef``, ``coef``, ``VarCorr``, ``fitted``,
``resid``, ``predict``, ``summary``, ``tidy``, ``glance``, ``augment``,
``icc``, ``pooling``, ``nobs``, ``ngrps``, ``sigma``, ``save`` and the
printed forms -- is computed here from the design and ``fit.params``, with
the same signature on every fit kind. The interval level is ``level``
everywhere, as in lme4's ``confint(fm, level = 0.95)``. What kind of
uncertainty a table shows (posterior sd and credible interval, or standard
error and Wald interval) follows from the parameters, not from the class.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from . import fitstats, pooling as pooling_mod, predict as predict_mod, tables, tidy as tidy_mod
from .design import Design
from .paramdraws import Family, ParamDraws, interval_names
from .summary import FitPrint, ModelSummary, groups_line, random_effects_block

__all__ = ["MixedFit", "FitDescription", "draw_table"]


def draw_table(
    params: ParamDraws, values: dict[str, Any], level: float, index_name: str, summary: bool = True
) -> pd.DataFrame:
    """Named derived draws ``{name: (S,)}``: one summary row per name, or (``summary=False``) the draws."""
    if not summary:
        return pd.DataFrame(values)
    flat = np.column_stack(list(values.values()))
    return params.summarise(flat, level, pd.Index(list(values), name=index_name))


@dataclass(frozen=True)
class FitDescription:
    """The parts of a printed summary that belong to one fit kind.

    Attributes
    ----------
    title
        First line, e.g. ``"Linear mixed model fit by REML"``.
    header
        Lines after ``Formula:`` and ``Data:`` (criterion, sampler).
    footer
        Lines after the tables (diagnostics, warnings, what the columns mean).
    blocks
        Titled text blocks before the random effects (lme4's scaled residuals).
    after
        Titled tables after the fixed effects (the priors of a Bayesian fit).
    """

    title: str
    header: tuple[str, ...] = ()
    footer: tuple[str, ...] = ()
    blocks: tuple[tuple[str, str], ...] = ()
    after: tuple[tuple[str, pd.DataFrame], ...] = field(default=(), compare=False)


class MixedFit(ABC):
    """A fitted linear mixed model: the extractors every fit kind shares.

    Subclasses are dataclasses with a ``design`` field; see the module
    docstring for the members a new fit kind provides.
    """

    design: Design
    #: What a saved file records as the kind of fit, one of :data:`bayeslmm.savefile.FIT_KINDS`.
    file_kind: ClassVar[str]

    # -- what a fit kind provides --------------------------------------------
    @property
    @abstractmethod
    def method(self) -> str:
        """How the model was fit: ``"NUTS"``, ``"REML"``, ``"ML"``."""

    @abstractmethod
    def _make_params(self) -> ParamDraws:
        """The fit's parameters as the array core (called once; use ``fit.params``)."""

    @abstractmethod
    def _describe(self) -> FitDescription:
        """The summary lines that belong to this fit kind."""

    @abstractmethod
    def _glance_extra(self) -> dict[str, Any]:
        """``glance()`` columns after ``nobs`` and ``sigma``."""

    # -- the array core ------------------------------------------------------
    @cached_property
    def params(self) -> ParamDraws:
        """The parameters as arrays, one row per draw (one row for a point fit); built once per fit."""
        return self._make_params()

    @property
    def family(self) -> Family:
        """Response family and link (``family(fm)``)."""
        return self.params.family

    @property
    def formula(self) -> str:
        """The formula as written."""
        return self.design.parsed.text

    @property
    def sigma(self) -> float:
        """``sigma(fm)``: the residual sd (posterior mean for a posterior)."""
        return float(self.params.sigma.mean())

    @property
    def interval_kind(self) -> str:
        """What this fit's interval columns are: ``"credible"`` or ``"Wald confidence"``."""
        return "Wald confidence" if self.params.is_point else "credible"

    def nobs(self) -> int:
        """Number of observations used, as ``nobs(fm)``."""
        return self.design.nobs

    def ngrps(self) -> pd.Series:
        """Number of levels per grouping factor, as ``ngrps(fm)``."""
        return pd.Series({f: len(levels) for f, levels in self.design.factors.items()}, dtype=int)

    # -- lme4 extractors -----------------------------------------------------
    def fixef(self, level: float = 0.95) -> pd.DataFrame:
        """``fixef(fm)`` as a table, one row per fixed term.

        A posterior: ``Estimate`` (mean), ``Est.Error`` (sd), the equal-tailed
        interval (``l-95% CI``, ``u-95% CI``), ``Rhat``, ``Bulk_ESS``,
        ``Tail_ESS``. A point fit: ``Estimate``, ``Std. Error``, the Wald
        interval and ``t value`` (``coef(summary(fm))`` with ``confint(fm, method = "Wald")``).
        """
        return tables.fixef_table(self.design, self.params, level)

    def ranef(self, level: float = 0.95, long: bool = False):
        """``ranef(fm)``: per grouping factor, a levels x terms table of group effects.

        ``long=True`` gives ``grpvar, term, grp, condval, condsd`` and the
        interval, as ``as.data.frame(ranef(fm, condVar = TRUE))``.
        """
        return tables.ranef_table(self.design, self.params, level, long)

    def coef(self, level: float = 0.95, long: bool = False):
        """``coef(fm)``: fixed plus group effects per level, computed draw by draw; ``long=True`` for one row each."""
        return tables.coef_table(self.design, self.params, level, long)

    def VarCorr(self, level: float = 0.95) -> pd.DataFrame:  # noqa: N802 - lme4's name
        """Variance components in the ``as.data.frame(VarCorr(fm))`` shape (plus posterior columns)."""
        return tables.varcorr_table(self.design, self.params, level)

    def fitted(self) -> pd.Series:
        """``fitted(fm)``: fitted values (posterior means), row-aligned with the data used."""
        values = tables.fitted_values(self.design, self.params)
        return pd.Series(values, index=self.design.frame.index, name="fitted")

    def resid(self) -> pd.Series:
        """``resid(fm)``: response residuals ``y - fitted()``, row-aligned with the data used."""
        self.design.require_rows("resid()")
        return pd.Series(self.design.y - self.fitted().to_numpy(), index=self.design.frame.index, name="resid")

    def predict(
        self,
        newdata: pd.DataFrame | None = None,
        re_form: Any = None,
        new_levels: str = "error",
        kind: str = "mean",
        level: float = 0.95,
        random_seed: int | None = None,
    ) -> pd.DataFrame:
        """``predict(fm, newdata, re.form)`` with uncertainty, always a DataFrame; see :func:`bayeslmm.predict.predict`."""
        return predict_mod.predict(self.design, self.params, newdata, re_form, new_levels, kind, level, random_seed)

    def icc(self, level: float = 0.95, summary: bool = True) -> pd.DataFrame:
        """Intraclass correlation per grouping factor (see :func:`bayeslmm.fitstats.icc_draws`).

        ``summary=True``: one row per factor with ``Estimate`` (and, for a
        posterior, ``Est.Error`` and the interval); ``False``: the draws.
        """
        return draw_table(self.params, fitstats.icc_draws(self.design, self.params), level, "factor", summary)

    def pooling(self, factor: str | None = None) -> pd.DataFrame:
        """Complete, no and partial pooling per level of a grouping factor; see :func:`bayeslmm.pooling.pooling_table`."""
        return pooling_mod.pooling_table(self.design, self.params, factor)

    # -- broom.mixed ---------------------------------------------------------
    def tidy(self, effects: Any = ("fixed", "ran_pars"), level: float = 0.95) -> pd.DataFrame:
        """broom.mixed's ``tidy()``: ``effects`` from ``fixed``, ``ran_pars``, ``ran_vals``, ``ran_coefs``."""
        return tidy_mod.tidy(self.design, self.params, effects, level)

    def glance(self) -> pd.DataFrame:
        """broom.mixed's ``glance()``: one row, ``nobs``, ``sigma`` and the fit kind's criteria."""
        return pd.DataFrame([{"nobs": self.design.nobs, "sigma": self.sigma, **self._glance_extra()}])

    def augment(self, newdata: pd.DataFrame | None = None, re_form: Any = None, level: float = 0.95) -> pd.DataFrame:
        """broom.mixed's ``augment()``: the data plus ``.fitted``, ``.resid``, ``.lower``, ``.upper``."""
        return tidy_mod.augment(self.design, self.params, newdata, re_form, level)

    # -- printed forms -------------------------------------------------------
    def summary(self, level: float = 0.95) -> ModelSummary:
        """An lme4-style summary: header, random effects, fixed effects and the fit kind's diagnostics."""
        return self._build_summary(level, self.fixef(level))

    def _build_summary(
        self, level: float, fx: pd.DataFrame, header: tuple[str, ...] = (), footer: tuple[str, ...] = ()
    ) -> ModelSummary:
        """The summary around a fixed-effects table ``fx`` (a fit kind's ``summary`` options choose its columns)."""
        d = self._describe()
        vc = self.VarCorr(level)
        extra = [c for c in vc.columns if c not in tables.VARCORR_COLUMNS]
        if self.params.is_point:  # lme4's summary prints Estimate, Std. Error and the statistic only
            fx = fx.drop(columns=list(interval_names(level)))
        footer = list(d.footer) + list(footer)
        if self.design.dropped_fixed:
            footer.append(
                f"fixed-effect model matrix is rank deficient so dropping {len(self.design.dropped_fixed)} "
                f"columns / coefficients: {list(self.design.dropped_fixed)}"
            )
        return ModelSummary(
            title=d.title,
            header=[*header, f"Formula: {self.formula}", f"   Data: {self.design.nobs} observations", *d.header],
            random=random_effects_block(self.design, vc, extra),
            groups=groups_line(self.design),
            fixed=fx,
            footer=footer,
            blocks=list(d.blocks),
            after=list(d.after),
        )

    def _short(self) -> FitPrint:
        d = self._describe()
        return FitPrint(
            title=d.title,
            header=[f"Formula: {self.formula}", f"   Data: {self.design.nobs} observations", *d.header],
            random=random_effects_block(self.design, self.VarCorr(), variance=False),
            groups=groups_line(self.design),
            fixed=pd.Series(self.params.beta.mean(axis=0), index=list(self.design.fixed_names)),
        )

    def __str__(self) -> str:
        return str(self._short())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self._short()._repr_html_()

    # -- persistence ---------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write this fit to one netCDF-4 file; read it back with :func:`bayeslmm.load` (no pickle).

        Returns
        -------
        pathlib.Path
            The path written.
        """
        from .savefile import write_fit

        self.design.require_rows("save()")
        return write_fit(self, self.file_kind, path)
