"""lme4's extractor tables, computed from the array core for every fit kind.

Pure functions of a :class:`~bayeslmm.design.Design` and a
:class:`~bayeslmm.paramdraws.ParamDraws`. A posterior gives brms's columns:
``Estimate`` (posterior mean), ``Est.Error`` (posterior sd), ``l-95% CI``,
``u-95% CI`` (equal-tailed), and for ``fixef`` ``Rhat``, ``Bulk_ESS``,
``Tail_ESS``. A point fit (REML/ML) gives the estimate and, where its method
defines one, the standard error and Wald interval (and the family's
statistic, ``t value``, for ``fixef``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .design import Design
from .paramdraws import ParamDraws, check_level, coef_draws, factor_blocks

__all__ = ["VARCORR_COLUMNS", "fixef_table", "ranef_table", "coef_table", "varcorr_table", "fitted_values"]

#: The columns of ``as.data.frame(VarCorr(fm))``.
VARCORR_COLUMNS = ["grp", "var1", "var2", "vcov", "sdcor"]


def fixef_table(design: Design, params: ParamDraws, level: float = 0.95) -> pd.DataFrame:
    """``fixef(fm)`` with uncertainty columns, one row per fixed term."""
    df = params.summarise(
        params.beta,
        level,
        pd.Index(list(design.fixed_names), name="term"),
        se=params.fixed_se(),
        statistic=params.family.statistic,
        diagnostics=True,
    )
    return df


def ranef_table(design: Design, params: ParamDraws, level: float = 0.95, long: bool = False):
    """``ranef(fm)``: per grouping factor, levels x terms of posterior means (conditional modes).

    With ``long=True``, the ``as.data.frame(ranef(fm, condVar=TRUE))`` form:
    ``grpvar, term, grp, condval, condsd`` plus the interval columns
    (posterior quantiles, or ``condval ± z condsd`` for a point fit).
    """
    check_level(level)
    wide: dict[str, pd.DataFrame] = {}
    rows = []
    for factor, ks in factor_blocks(design).items():
        cols = {}
        for k in ks:
            b, r = design.blocks[k], params.ranef[k]
            for c, term in enumerate(b.terms):
                cols[term] = r[:, :, c].mean(axis=0)
                se = None
                if params.is_point:
                    se = params.ranef_sd[k][:, c] if params.ranef_sd is not None else np.full(b.n_levels, np.nan)
                s = params.summarise(r[:, :, c], level, se=se).rename(
                    columns={"Estimate": "condval", "Est.Error": "condsd", "Std. Error": "condsd"}
                )
                s.insert(0, "grp", list(b.levels))
                s.insert(0, "term", term)
                s.insert(0, "grpvar", factor)
                rows.append(s)
        wide[factor] = pd.DataFrame(cols, index=pd.Index(list(design.blocks[ks[0]].levels), name=factor))
    if long:
        return pd.concat(rows, ignore_index=True)
    return wide


def coef_table(design: Design, params: ParamDraws, level: float = 0.95, long: bool = False):
    """``coef(fm)``: fixed + group effects per level, computed draw by draw.

    Returns, per grouping factor, levels x (every fixed term, then the
    factor's other group terms) of posterior means; a term that does not vary
    by the factor equals its fixed effect. With ``long=True``: one row per
    factor, level and term, ``grpvar, grp, term, Estimate`` plus, for a
    posterior, ``Est.Error`` and the interval.
    """
    check_level(level)
    wide: dict[str, pd.DataFrame] = {}
    longs = []
    for factor in factor_blocks(design):
        terms, total = coef_draws(design, params, factor)
        levels = list(design.factors[factor])
        wide[factor] = pd.DataFrame(total.mean(axis=0), index=pd.Index(levels, name=factor), columns=terms)
        idx = pd.MultiIndex.from_product([levels, terms], names=["grp", "term"])
        s = params.summarise(total.reshape(params.n_draws, -1), level, idx).reset_index()
        s.insert(0, "grpvar", factor)
        longs.append(s)
    if long:
        return pd.concat(longs, ignore_index=True)
    return wide


def varcorr_table(design: Design, params: ParamDraws, level: float = 0.95) -> pd.DataFrame:
    """``as.data.frame(VarCorr(fm))``: ``grp, var1, var2, vcov, sdcor``, one row per sd, correlation and ``Residual``.

    For a posterior ``vcov`` is the posterior mean of the variance
    (covariance) and ``sdcor`` that of the sd (correlation), followed by
    ``Est.Error`` and the interval of ``sdcor``. A point fit gives the estimates only.
    """
    labels, vcov, sdcor = [], [], []
    for b, sd, cor in zip(design.blocks, params.sd, params.cor):
        for i, t in enumerate(b.terms):
            labels.append((b.label, t, np.nan))
            vcov.append(sd[:, i] ** 2)
            sdcor.append(sd[:, i])
        for i in range(b.q):
            for j in range(i + 1, b.q):
                labels.append((b.label, b.terms[i], b.terms[j]))
                vcov.append(cor[:, i, j] * sd[:, i] * sd[:, j])
                sdcor.append(cor[:, i, j])
    labels.append(("Residual", np.nan, np.nan))
    vcov.append(params.sigma**2)
    sdcor.append(params.sigma)
    s = params.summarise(np.column_stack(sdcor), level).rename(columns={"Estimate": "sdcor"})
    s.insert(0, "vcov", np.column_stack(vcov).mean(axis=0))
    head = pd.DataFrame(labels, columns=VARCORR_COLUMNS[:3])
    return pd.concat([head, s.reset_index(drop=True)], axis=1)


def fitted_values(design: Design, params: ParamDraws) -> np.ndarray:
    """Response-scale fitted values of the training rows at the mean linear predictor.

    The mean over draws of ``X β + Z γ`` is exact by linearity; for the
    identity link it is the posterior mean of the fitted value (for a point
    fit, ``fitted(fm)``).
    """
    design.require_rows("fitted()")
    mu = design.X @ params.beta.mean(axis=0)
    for b, r in zip(design.blocks, params.ranef):
        mu = mu + np.einsum("nq,nq->n", b.Z, r.mean(axis=0)[b.group_idx])
    return params.family.linkinv(mu)
