"""broom.mixed-style ``tidy``, ``glance`` and ``augment`` frames.

Column names and term names follow broom.mixed (``tidy.brmsfit`` /
``tidy.merMod``): ``effect``, ``group``, ``level``, ``term``, ``estimate``,
``std.error``, ``conf.low``, ``conf.high``; variance parameters are
``sd__(Intercept)``, ``cor__(Intercept).Days`` and, for the residual,
``sd__Observation`` in group ``Residual``. ``estimate`` is the posterior mean,
``std.error`` the posterior sd, the interval equal-tailed.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .design import Design
from .errors import BayesLMMError
from .paramdraws import ParamDraws, check_level, coef_draws, factor_blocks, interval_names
from .predict import predict

__all__ = ["EFFECTS", "tidy", "with_fixed_tests", "augment"]

EFFECTS = ("fixed", "ran_pars", "ran_vals", "ran_coefs")
_COLUMNS = ["effect", "group", "level", "term", "estimate", "std.error", "conf.low", "conf.high"]


def _rows(
    params: ParamDraws, effect: str, group: Sequence, level: Sequence | None, term: Sequence, values: np.ndarray,
    conf: float, se: np.ndarray | None = None,
) -> pd.DataFrame:
    """One broom row per column of ``values`` (draws ``(S, k)``); missing uncertainty columns are NaN."""
    lo, hi = interval_names(conf)
    s = params.summarise(values, conf, se=se).rename(
        columns={"Estimate": "estimate", "Est.Error": "std.error", "Std. Error": "std.error", lo: "conf.low", hi: "conf.high"}
    )
    k = values.shape[1]
    head = pd.DataFrame(
        {"effect": [effect] * k, "group": list(group), "level": list(level) if level is not None else [np.nan] * k,
         "term": list(term)}
    )
    return pd.concat([head, s.reset_index(drop=True)], axis=1).reindex(columns=_COLUMNS)


def _fixed(design: Design, p: ParamDraws, conf: float) -> pd.DataFrame:
    names = list(design.fixed_names)
    return _rows(p, "fixed", [np.nan] * len(names), None, names, p.beta, conf, se=p.fixed_se())


def _ran_pars(design: Design, p: ParamDraws, conf: float) -> pd.DataFrame:
    groups, terms, cols = [], [], []
    for b, sd, cor in zip(design.blocks, p.sd, p.cor):
        for i in range(b.q):
            groups.append(b.label)
            terms.append(f"sd__{b.terms[i]}")
            cols.append(sd[:, i])
            for j in range(i + 1, b.q):
                groups.append(b.label)
                terms.append(f"cor__{b.terms[i]}.{b.terms[j]}")
                cols.append(cor[:, i, j])
    groups.append("Residual")
    terms.append("sd__Observation")
    cols.append(p.sigma)
    return _rows(p, "ran_pars", groups, None, terms, np.column_stack(cols), conf)


def _ran_vals(design: Design, p: ParamDraws, conf: float) -> pd.DataFrame:
    parts = []
    for k, (b, r) in enumerate(zip(design.blocks, p.ranef)):
        flat = r.transpose(0, 2, 1).reshape(r.shape[0], -1)  # term-major, as as.data.frame(ranef())
        se = None
        if p.is_point and p.ranef_sd is not None:
            se = p.ranef_sd[k].T.reshape(-1)
        levels = list(b.levels) * b.q
        terms = np.repeat(b.terms, b.n_levels)
        parts.append(_rows(p, "ran_vals", [b.factor] * flat.shape[1], levels, terms, flat, conf, se=se))
    return pd.concat(parts, ignore_index=True)


def _ran_coefs(design: Design, p: ParamDraws, conf: float) -> pd.DataFrame:
    parts = []
    for factor in factor_blocks(design):
        terms, total = coef_draws(design, p, factor)
        levels = list(design.factors[factor])
        flat = total.transpose(0, 2, 1).reshape(p.n_draws, -1)
        parts.append(
            _rows(p, "ran_coefs", [factor] * flat.shape[1], levels * len(terms), np.repeat(terms, len(levels)), flat, conf)
        )
    return pd.concat(parts, ignore_index=True)


_BUILDERS = {"fixed": _fixed, "ran_pars": _ran_pars, "ran_vals": _ran_vals, "ran_coefs": _ran_coefs}


def tidy(
    design: Design, params: ParamDraws, effects: str | Sequence[str] = ("fixed", "ran_pars"), level: float = 0.95
) -> pd.DataFrame:
    """broom.mixed's ``tidy()`` from parameter draws (what ``fit.tidy`` returns).

    Parameters
    ----------
    design
        The training design.
    params
        Parameter draws (``fit.params``).
    effects
        One of, or a list of, ``"fixed"``, ``"ran_pars"`` (sds, correlations
        and the residual sd), ``"ran_vals"`` (group effects, as ``ranef``),
        ``"ran_coefs"`` (fixed + group effects per level, as ``coef``).
    level
        Interval level.

    Returns
    -------
    pandas.DataFrame
        ``effect``, ``group``, ``term``, ``estimate``, ``std.error``,
        ``conf.low``, ``conf.high`` and, when ``ran_vals`` or ``ran_coefs``
        is asked for, ``level`` after ``group``. ``group`` is NaN for fixed
        effects, the block label (``VarCorr``'s ``grp``) for ``ran_pars`` and
        the grouping factor for ``ran_vals`` / ``ran_coefs``. A point fit
        (REML/ML) has standard errors and Wald intervals for ``fixed`` and
        ``ran_vals`` (conditional sds) and NaN elsewhere, as ``tidy.merMod``.

    Raises
    ------
    BayesLMMError
        For an unknown effect name or a bad ``level``.
    """
    wanted = [effects] if isinstance(effects, str) else list(effects)
    unknown = [e for e in wanted if e not in _BUILDERS]
    if unknown or not wanted:
        raise BayesLMMError(f"effects must be one or a list of {list(EFFECTS)}; got {effects!r}.")
    check_level(level)
    out = pd.concat([_BUILDERS[e](design, params, level) for e in wanted], ignore_index=True)
    cols = _COLUMNS if {"ran_vals", "ran_coefs"} & set(wanted) else [c for c in _COLUMNS if c != "level"]
    return out[cols]


def with_fixed_tests(table: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """Add broom.mixed's ``statistic``, ``df`` and ``p.value`` to the fixed rows of a ``tidy`` frame.

    What ``tidy()`` gives for an lmerTest fit (``lmerModLmerTest``): the t value,
    the denominator df and ``Pr(>|t|)`` of each fixed effect, after ``std.error``;
    NaN on the other rows.

    Parameters
    ----------
    table
        A frame from :func:`tidy`.
    tests
        The fit's coefficient table (``fit.fixef(ddf=...)``), indexed by term,
        with ``t value`` and, unless ``ddf="lme4"``, ``df`` and ``Pr(>|t|)``.

    Returns
    -------
    pandas.DataFrame
        ``table`` with the three columns inserted after ``std.error``.
    """
    out = table.copy()
    fixed = (out["effect"] == "fixed").to_numpy()
    terms = out.loc[fixed, "term"]
    at = list(out.columns).index("std.error") + 1
    for offset, (name, col) in enumerate((("statistic", "t value"), ("df", "df"), ("p.value", "Pr(>|t|)"))):
        values = np.full(len(out), np.nan)
        if col in tests.columns:
            values[fixed] = tests[col].reindex(terms).to_numpy(dtype=float)
        out.insert(at + offset, name, values)
    return out


def augment(
    design: Design, params: ParamDraws, newdata: pd.DataFrame | None = None, re_form: Any = None, level: float = 0.95
) -> pd.DataFrame:
    """The data with fitted values and residuals, like broom.mixed's ``augment()`` (what ``fit.augment`` returns).

    Parameters
    ----------
    design
        The training design.
    params
        Parameter draws (``fit.params``).
    newdata
        Rows to augment; ``None`` uses the model frame (the columns and rows
        used in the fit).
    re_form
        Which group effects enter the fitted values (see :func:`bayeslmm.predict.predict`).
    level
        Level of the interval of the fitted mean.

    Returns
    -------
    pandas.DataFrame
        The data plus ``.fitted`` (mean of the linear predictor), ``.resid``
        (response − ``.fitted``; only when the response column is present),
        ``.lower`` and ``.upper`` (credible interval of the mean, or for a
        point fit the Wald interval of its fixed part). Grouping levels
        the fit did not see are refused, as by ``predict``.
    """
    if newdata is None:
        design.require_rows("augment() without newdata")
    pred = predict(design, params, newdata, re_form=re_form, kind="mean", level=level)
    lo, hi = interval_names(level)
    if newdata is None:
        out = design.frame.copy()
        y = design.y
    else:
        out = newdata.copy()
        name = design.response_name
        y = pd.to_numeric(out[name], errors="coerce").to_numpy(dtype=float) if name in out.columns else None
    out[".fitted"] = pred["Estimate"].to_numpy()
    if y is not None:
        out[".resid"] = y - out[".fitted"].to_numpy()
    out[".lower"] = pred[lo].to_numpy()
    out[".upper"] = pred[hi].to_numpy()
    return out
