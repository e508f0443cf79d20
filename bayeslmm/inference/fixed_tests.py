"""t and F tests of the fixed effects of a REML/ML fit, as lmerTest reports them.

* :func:`coef_table` -- ``coef(summary(fm, ddf = ...))``: Estimate, Std. Error,
  df, t value and Pr(>|t|) per coefficient; with ``ddf="Kenward-Roger"`` the
  standard errors are the adjusted ones; with ``ddf="lme4"`` there are no df
  and no p-values, as lme4 prints.
* :func:`anova_table` -- ``anova(fm, type = 3)``: an F test per fixed-effect
  term with Sum Sq, Mean Sq (F·σ², lmerTest's convention), NumDF, DenDF,
  F value and Pr(>F); types III (default), II and I; ``ddf="lme4"`` gives
  lme4's sequential table without tests.
* :func:`contest` -- the test of any contrast matrix L (lmerTest's ``contest``).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import BayesLMMError, ConvergenceWarning, InferenceError
from .contrasts import term_contains, doolittle_rows, fixed_terms, type3_contrasts
from .engine import FitState, fit_state
from .kenward_roger import kr_adjust, kr_ddf, kr_ftest
from .report import InferenceTable
from .satterthwaite import satterthwaite_df, satterthwaite_ftest, varpar_covariance

__all__ = ["normalize_ddf", "ddf_note", "coef_table", "anova_table", "contest", "DDF_METHODS"]

DDF_METHODS = ("Satterthwaite", "Kenward-Roger", "lme4")
_DDF_ALIASES = {"satterthwaite": "Satterthwaite", "kenward-roger": "Kenward-Roger", "kr": "Kenward-Roger", "lme4": "lme4"}


def normalize_ddf(ddf: Any) -> str:
    """``"Satterthwaite"``, ``"Kenward-Roger"`` (also ``"KR"``) or ``"lme4"``, case-insensitive."""
    key = ddf.lower().replace("_", "-") if isinstance(ddf, str) else None
    if key not in _DDF_ALIASES:
        raise BayesLMMError(f"ddf must be one of {list(DDF_METHODS)} (or 'KR'), got {ddf!r}.")
    return _DDF_ALIASES[key]


def ddf_note(ddf: str) -> str:
    """The line lmerTest prints under a summary's title, naming the df method (empty for ``"lme4"``)."""
    ddf = normalize_ddf(ddf)
    return "" if ddf == "lme4" else f"t-tests use {ddf}'s method"


def _state_for(fit: Any, ddf: str) -> FitState:
    state = fit_state(fit)
    if ddf == "Kenward-Roger" and not state.reml:
        raise BayesLMMError(
            "ddf='Kenward-Roger' needs a REML fit, and this fit is ML (lmerTest refuses it too). "
            "Refit with method='REML', or use ddf='Satterthwaite'."
        )
    return state


def coef_table(fit: Any, ddf: str = "Satterthwaite") -> pd.DataFrame:
    """The coefficient table of ``summary(fm, ddf = ...)`` from lmerTest.

    Parameters
    ----------
    fit
        A REML or ML fit's state, ``fit.inference_state`` (the entry point is the fit's method).
    ddf
        ``"Satterthwaite"`` (lmerTest's default), ``"Kenward-Roger"`` (REML fits only) or ``"lme4"``.

    Returns
    -------
    pandas.DataFrame
        Index: the fixed effects; columns ``Estimate``, ``Std. Error``, ``df``,
        ``t value``, ``Pr(>|t|)`` (the last two df columns absent for ``"lme4"``).
    """
    ddf = normalize_ddf(ddf)
    state = _state_for(fit, ddf)
    names = pd.Index(list(state.design.fixed_names), name="term")
    beta = state.beta
    p = beta.size
    if ddf == "lme4":
        se = np.sqrt(np.diag(state.vcov_beta))
        return pd.DataFrame({"Estimate": beta, "Std. Error": se, "t value": beta / se}, index=names)
    if p == 0:  # no fixed effects: nothing to test
        return pd.DataFrame({c: np.zeros(0) for c in ("Estimate", "Std. Error", "df", "t value", "Pr(>|t|)")}, index=names)
    se, df = np.empty(p), np.empty(p)
    if ddf == "Satterthwaite":
        try:
            vc = varpar_covariance(state)
        except InferenceError as err:
            # lmerTest, when it cannot compute the variance parameters' covariance, prints lme4's table
            warnings.warn(f"{err} The df and Pr(>|t|) columns are NA.", ConvergenceWarning, stacklevel=2)
            se = np.sqrt(np.diag(state.vcov_beta))
            nan = np.full(p, np.nan)
            return pd.DataFrame(
                {"Estimate": beta, "Std. Error": se, "df": nan, "t value": beta / se, "Pr(>|t|)": nan}, index=names
            )
        for j in range(p):
            var, df[j] = satterthwaite_df(vc, np.eye(p)[j])
            se[j] = np.sqrt(var)
    else:
        kr = kr_adjust(state)
        se = np.sqrt(np.diag(kr.vcov_adj))
        for j in range(p):
            df[j] = kr_ddf(kr, np.eye(p)[j])[0]
    t = beta / se
    return pd.DataFrame(
        {"Estimate": beta, "Std. Error": se, "df": df, "t value": t, "Pr(>|t|)": 2 * stats.t.sf(np.abs(t), df)},
        index=names,
    )


def _type2_contrasts(design) -> dict[str, np.ndarray]:
    """Type II contrasts (lmerTest's ``get_contrasts_type2_unfolded``): marginal rows for terms no other contains."""
    X = np.asarray(design.X, dtype=float)
    terms = fixed_terms(design)
    out = {}
    for t in terms:
        outer = [u for u in terms if term_contains(t, u)]
        if not outer:
            out[t.name] = np.eye(X.shape[1])[list(t.columns)]
            continue
        cols = list(t.columns) + [c for u in outer for c in u.columns]
        rest = [c for c in range(X.shape[1]) if c not in cols]
        order = rest + cols
        rows = doolittle_rows(X[:, order])
        sel = [order.index(c) for c in t.columns]
        back = np.argsort(order)
        out[t.name] = rows[sel][:, back]
    return out


def _type1_contrasts(design) -> dict[str, np.ndarray]:
    X = np.asarray(design.X, dtype=float)
    rows = doolittle_rows(X) if X.shape[1] > 1 else np.ones((1, 1))
    return {t.name: rows[list(t.columns)] for t in fixed_terms(design)}


def _contrasts(design, type: Any) -> tuple[dict[str, np.ndarray], str]:
    key = str(type).upper()
    if key in ("3", "III"):
        return type3_contrasts(design), "III"
    if key in ("2", "II"):
        return (type3_contrasts(design) if len(fixed_terms(design)) <= 1 else _type2_contrasts(design)), "II"
    if key in ("1", "I"):
        return _type1_contrasts(design), "I"
    raise BayesLMMError(f"type must be 3, 2 or 1 (or 'III', 'II', 'I'), got {type!r}.")


def _lme4_anova(state: FitState) -> InferenceTable:
    """lme4's single-model ``anova(fm)``: sequential sums of squares, no tests."""
    pls = state.at(state.theta)
    RX = np.linalg.cholesky(np.linalg.inv(pls.rx_inverse)).T
    ss = (RX @ state.beta) ** 2
    rows = []
    for t in fixed_terms(state.design):
        s = float(ss[list(t.columns)].sum())
        k = len(t.columns)
        rows.append({"term": t.name, "npar": k, "Sum Sq": s, "Mean Sq": s / k, "F value": s / k / state.sigma**2})
    table = pd.DataFrame(rows).set_index("term")
    return InferenceTable(table, ("Analysis of Variance Table (lme4: sequential sums of squares, no denominator df)",))


def anova_table(fit: Any, type: Any = 3, ddf: str = "Satterthwaite") -> InferenceTable:
    """F tests of the fixed-effect terms, as lmerTest's ``anova(fm, type = 3, ddf = ...)``.

    Parameters
    ----------
    fit
        A REML or ML fit's state, ``fit.inference_state`` (the entry point is the fit's method).
    type
        3 (type III, the default), 2 or 1 (sequential).
    ddf
        ``"Satterthwaite"``, ``"Kenward-Roger"`` or ``"lme4"`` (lme4's table: sequential, without tests).

    Returns
    -------
    InferenceTable
        Rows: the terms; columns ``Sum Sq``, ``Mean Sq``, ``NumDF``, ``DenDF``, ``F value``, ``Pr(>F)``.
    """
    ddf = normalize_ddf(ddf)
    state = _state_for(fit, ddf)
    if ddf == "lme4":
        return _lme4_anova(state)
    contrasts, label = _contrasts(state.design, type)
    rows = []
    s2 = state.sigma**2
    if ddf == "Satterthwaite":
        vc = varpar_covariance(state)
        for name, L in contrasts.items():
            F, q, den = satterthwaite_ftest(vc, L)
            rows.append((name, F * s2 * q, F * s2, q, den, F))
    else:
        kr = kr_adjust(state)
        for name, L in contrasts.items():
            F_u, F, q, den, _ = kr_ftest(kr, L)
            rows.append((name, F_u * s2 * q, F_u * s2, q, den, F))
    table = pd.DataFrame(rows, columns=["term", "Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value"]).set_index("term")
    table["Pr(>F)"] = stats.f.sf(table["F value"], table["NumDF"], table["DenDF"])
    return InferenceTable(table, (f"Type {label} Analysis of Variance Table with {ddf}'s method",))


def contest(fit: Any, L: Any, ddf: str = "Satterthwaite", joint: bool = True) -> pd.DataFrame:
    """Test contrasts Lβ = 0 (lmerTest's ``contest``).

    Parameters
    ----------
    fit
        A REML or ML fit's state, ``fit.inference_state`` (the entry point is the fit's method).
    L
        A vector (one contrast) or a matrix with one row per contrast, as many columns as fixed effects.
    ddf
        ``"Satterthwaite"`` or ``"Kenward-Roger"``.
    joint
        True: one F test of all rows together (``contestMD``); False: a t test per row (``contest1D``).

    Returns
    -------
    pandas.DataFrame
        F table (``Sum Sq``, ``Mean Sq``, ``NumDF``, ``DenDF``, ``F value``, ``Pr(>F)``) or t table
        (``Estimate``, ``Std. Error``, ``df``, ``t value``, ``Pr(>|t|)``).
    """
    ddf = normalize_ddf(ddf)
    if ddf == "lme4":
        raise BayesLMMError("contest needs ddf='Satterthwaite' or 'Kenward-Roger'; 'lme4' has no denominator df.")
    state = _state_for(fit, ddf)
    p = state.beta.size
    Lm = np.atleast_2d(np.asarray(L, dtype=float))
    if Lm.shape[1] != p:
        raise BayesLMMError(
            f"L has {Lm.shape[1]} columns but the model has {p} fixed effects {list(state.design.fixed_names)}; "
            "give one column per fixed effect."
        )
    s2 = state.sigma**2
    if joint:
        if ddf == "Satterthwaite":
            F, q, den = satterthwaite_ftest(varpar_covariance(state), Lm)
            ss = F * s2 * q
        else:
            F_u, F, q, den, _ = kr_ftest(kr_adjust(state), Lm)
            ss = F_u * s2 * q
        return pd.DataFrame(
            [{"Sum Sq": ss, "Mean Sq": ss / q, "NumDF": q, "DenDF": den, "F value": F, "Pr(>F)": stats.f.sf(F, q, den)}]
        )
    rows = []
    vc = varpar_covariance(state) if ddf == "Satterthwaite" else None
    kr = kr_adjust(state) if ddf == "Kenward-Roger" else None
    for row in Lm:
        est = float(row @ state.beta)
        if vc is not None:
            var, df = satterthwaite_df(vc, row)
        else:
            var, df = float(row @ kr.vcov_adj @ row), kr_ddf(kr, row)[0]
        t = est / np.sqrt(var)
        rows.append({"Estimate": est, "Std. Error": np.sqrt(var), "df": df, "t value": t, "Pr(>|t|)": 2 * stats.t.sf(abs(t), df)})
    return pd.DataFrame(rows)
