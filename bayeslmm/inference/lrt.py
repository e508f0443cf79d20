"""Likelihood-ratio tests: lme4's ``anova(m0, m1, ...)`` and lmerTest's ``ranova(fm)``.

``anova`` orders the models by their number of parameters and tests each
against the one before: Chisq = 2·max(0, Δ logLik), Df = Δ npar. REML fits are
refitted by ML first unless ``refit=False`` (REML likelihoods of models with
different fixed effects are not comparable). ``ranova`` drops or reduces each
random-effect term in turn (:mod:`bayeslmm.inference.random_terms`) and
compares with the full model on the fit's own criterion (REML for a REML fit);
without any random effect left the model is a linear model, whose REML or ML
log-likelihood is ``logLik(lm(...), REML = ...)``.

A variance component tested at 0 lies on the boundary of its space, so the
χ² reference distribution is conservative; when a test removes exactly one
standard deviation (and its correlations), the column ``Pr(>Chisq) mix`` gives
the p-value of the 50:50 mixture of χ²(Df - 1) and χ²(Df) (Self & Liang 1987,
Stram & Lee 1994).
"""

from __future__ import annotations

import logging
import warnings
from typing import Any
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..design import Design
from ..errors import BayesLMMError
from .engine import FitState, fit_method, fit_state
from .random_terms import reductions, sd_count
from .report import InferenceTable

__all__ = ["anova", "ranova", "mixture_pvalue"]

_log = logging.getLogger("bayeslmm")
_LOG2PI = float(np.log(2.0 * np.pi))
BOUNDARY_NOTE = (
    "Note: a variance component tested at 0 is on the boundary of its space, so Pr(>Chisq) is conservative; "
    "'Pr(>Chisq) mix' is the p-value of the 50:50 mixture of chi-square(Df - 1) and chi-square(Df), "
    "given where the test removes exactly one standard deviation (and its correlations)."
)


def mixture_pvalue(chisq: float, df: int) -> float:
    """P-value of the 50:50 mixture of χ²(df - 1) and χ²(df) at ``chisq`` (χ²(0) is a point mass at 0)."""
    upper = stats.chi2.sf(chisq, df)
    lower = stats.chi2.sf(chisq, df - 1) if df > 1 else float(chisq <= 0)
    return float(0.5 * upper + 0.5 * lower)


def _lm_loglik(design: Design, reml: bool) -> tuple[float, int]:
    """``logLik(lm(y ~ X), REML = reml)`` and its df (p + 1)."""
    X, y = np.asarray(design.X, dtype=float), np.asarray(design.y, dtype=float)
    n, p = X.shape
    if p:
        Q, R = np.linalg.qr(X)
        resid = y - Q @ (Q.T @ y)
        logdet = float(np.log(np.abs(np.diag(R))).sum())
    else:
        resid, logdet = y, 0.0
    rss = float(resid @ resid)
    m = n - p if reml else n
    value = 0.5 * (-m * (_LOG2PI + 1 - np.log(m) + np.log(rss)))
    return (value - logdet if reml else value), p + 1


def _check_same_rows(states: list[FitState], names: list[str]) -> None:
    first = states[0].design
    for name, s in zip(names[1:], states[1:]):
        d = s.design
        if d.nobs != first.nobs or not d.frame.index.equals(first.frame.index):
            raise BayesLMMError(
                f"Models {names[0]!r} ({first.nobs} rows) and {name!r} ({d.nobs} rows) were not fitted to the same rows "
                "(missing values dropped differently?); a likelihood-ratio test needs the same observations. "
                "Drop incomplete rows from the data before fitting both."
            )
        if not np.array_equal(np.asarray(d.y), np.asarray(first.y)):
            raise BayesLMMError(
                f"Models {names[0]!r} and {name!r} have different responses ({first.response_name!r} vs "
                f"{d.response_name!r}); their likelihoods cannot be compared."
            )


def _span_contains(big: np.ndarray, small: np.ndarray, tol: float = 1e-8) -> bool:
    """Whether every column of ``small`` lies in the column space of ``big``."""
    if small.shape[1] == 0:
        return True
    if big.shape[1] == 0:
        return False
    coef, *_ = np.linalg.lstsq(big, small, rcond=None)
    resid = small - big @ coef
    return bool(np.all(np.linalg.norm(resid, axis=0) <= tol * np.maximum(1.0, np.linalg.norm(small, axis=0))))


def _same_groups(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two group index vectors define the same partition of the rows."""
    pairs = np.unique(np.column_stack([a, b]), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def nested_in(small: Design, big: Design) -> bool:
    """Whether model ``small`` is a special case of model ``big`` (fixed and random parts)."""
    if not _span_contains(np.asarray(big.X, dtype=float), np.asarray(small.X, dtype=float)):
        return False
    for b0 in small.blocks:
        if not any(_same_groups(b0.group_idx, b1.group_idx) and _span_contains(b1.Z, b0.Z) for b1 in big.blocks):
            return False
    return True


def _same_fixed(a: Design, b: Design) -> bool:
    Xa, Xb = np.asarray(a.X, dtype=float), np.asarray(b.X, dtype=float)
    return _span_contains(Xa, Xb) and _span_contains(Xb, Xa)


def anova(*fits: Any, refit: bool = True, names: Sequence[str] | None = None) -> InferenceTable:
    """Likelihood-ratio tests of nested REML/ML fits, as lme4's ``anova(m0, m1, ...)``.

    Parameters
    ----------
    *fits
        The states (``fit.inference_state``) of two or more REML or ML fits of the same rows and response;
        the entry point is :func:`bayeslmm.anova`.
    refit
        Refit REML fits by ML first (lme4's default). With ``False`` the REML
        likelihoods are compared, which is valid only for models with the same fixed effects.
    names
        Row names; by default ``m0``, ``m1``, ... in the order given.

    Returns
    -------
    InferenceTable
        Rows ordered by ``npar``; columns ``npar``, ``AIC``, ``BIC``, ``logLik``,
        ``deviance`` (-2 logLik), ``Chisq``, ``Df``, ``Pr(>Chisq)`` and ``Pr(>Chisq) mix``.

    Raises
    ------
    BayesLMMError
        For fewer than two fits, a Bayesian fit, fits to different rows or responses, or models that are not nested.
    """
    if len(fits) < 2:
        raise BayesLMMError("anova compares two or more fits, e.g. anova(m0, m1).")
    names = list(names) if names is not None else [f"m{i}" for i in range(len(fits))]
    if len(names) != len(fits):
        raise BayesLMMError(f"names has {len(names)} entries for {len(fits)} fits.")
    states = [fit_state(f) for f in fits]
    _check_same_rows(states, names)
    heading = [f"Data: {states[0].nobs} observations, the same rows in every model", "Models:"]
    heading += [f"{n}: {s.design.parsed.text}" for n, s in zip(names, states)]
    notes: list[str] = []
    if refit and any(s.reml for s in states):
        msg = "refitting model(s) with ML (instead of REML)"
        _log.info(msg)
        heading.insert(0, msg)
        states = [fit_method(s.design, "ML", start=s.theta) if s.reml else s for s in states]
    elif not refit and any(s.reml for s in states):
        if not all(_same_fixed(states[0].design, s.design) for s in states[1:]):
            warnings.warn(
                "refit=False compares REML likelihoods of models with different fixed effects, which are not comparable; "
                "use refit=True (ML) for tests of fixed effects.",
                UserWarning,
                stacklevel=2,
            )
    order = sorted(range(len(states)), key=lambda i: states[i].n_params)
    for a, b in zip(order, order[1:]):
        if not nested_in(states[a].design, states[b].design):
            raise BayesLMMError(
                f"Model {names[a]!r} ({states[a].design.parsed.text}) is not nested in {names[b]!r} "
                f"({states[b].design.parsed.text}): a likelihood-ratio test needs the smaller model to be a special case "
                "of the larger (its fixed effects in the larger's column space, each random term within one of the "
                "larger's on the same grouping factor). Compare non-nested models by AIC/BIC."
            )
    rows = []
    prev = None
    for i in order:
        s = states[i]
        ll, k, n = s.loglik, s.n_params, s.nobs
        row = {"term": names[i], "npar": k, "AIC": -2 * ll + 2 * k, "BIC": -2 * ll + np.log(n) * k, "logLik": ll,
               "deviance": -2 * ll, "Chisq": np.nan, "Df": np.nan, "Pr(>Chisq)": np.nan, "Pr(>Chisq) mix": np.nan}
        if prev is not None:
            chisq, df = 2 * max(0.0, ll - prev.loglik), k - prev.n_params
            row.update({"Chisq": chisq, "Df": df, "Pr(>Chisq)": stats.chi2.sf(chisq, df) if df > 0 else np.nan})
            if df > 0 and _same_fixed(prev.design, s.design) and sd_count(s.design) - sd_count(prev.design) == 1:
                row["Pr(>Chisq) mix"] = mixture_pvalue(chisq, df)
        rows.append(row)
        prev = s
    table = pd.DataFrame(rows).set_index("term")
    table.index.name = None
    if table["Pr(>Chisq) mix"].notna().any():
        notes.append(BOUNDARY_NOTE)
    return InferenceTable(table, tuple(heading), tuple(notes))


def ranova(fit: Any, reduce_terms: bool = True) -> InferenceTable:
    """Likelihood-ratio tests of the random-effect terms, as lmerTest's ``ranova(fm)``.

    Parameters
    ----------
    fit
        A REML or ML fit's state (``fit.inference_state``); the tests use its own criterion (REML likelihood for a REML fit).
    reduce_terms
        True (lmerTest's default): ``(x | g)`` is reduced to ``(1 | g)``; False: each term is removed.

    Returns
    -------
    InferenceTable
        Rows ``<none>`` and one per reduction; columns ``npar``, ``logLik``,
        ``AIC``, ``LRT``, ``Df``, ``Pr(>Chisq)``, ``Pr(>Chisq) mix``.
    """
    state = fit_state(fit)
    rows = [{"term": "<none>", "npar": state.n_params, "logLik": state.loglik}]
    for red in reductions(state.design, reduce_terms):
        if red.design.blocks:
            reduced = fit_method(red.design, state.method, quiet=True)
            ll, k = reduced.loglik, reduced.n_params
        else:
            ll, k = _lm_loglik(red.design, state.reml)
        rows.append({"term": red.label, "npar": k, "logLik": ll, "removed_sd": red.removed_sd})
    table = pd.DataFrame(rows).set_index("term")
    table.index.name = None
    table["AIC"] = -2 * table["logLik"] + 2 * table["npar"]
    lrt = 2 * (state.loglik - table["logLik"])
    df = state.n_params - table["npar"]
    table["LRT"] = lrt.where(df.index != "<none>")
    table["Df"] = df.where(df.index != "<none>")
    table["Pr(>Chisq)"] = [stats.chi2.sf(x, d) if d > 0 else np.nan for x, d in zip(table["LRT"], table["Df"])]
    table["Pr(>Chisq) mix"] = [
        mixture_pvalue(x, int(d)) if d > 0 and r == 1 else np.nan
        for x, d, r in zip(table["LRT"], table["Df"], table["removed_sd"].fillna(0))
    ]
    table = table[["npar", "logLik", "AIC", "LRT", "Df", "Pr(>Chisq)", "Pr(>Chisq) mix"]]
    heading = ("ANOVA-like table for random-effects: Single term deletions", f"Model: {state.design.parsed.text}")
    notes = (BOUNDARY_NOTE,) if table["Pr(>Chisq) mix"].notna().any() else ()
    return InferenceTable(table, heading, notes)
