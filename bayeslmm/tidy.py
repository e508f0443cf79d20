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
from .predict import ParamDraws, fit_params, predict

__all__ = ["EFFECTS", "tidy_table", "tidy", "glance", "augment"]

EFFECTS = ("fixed", "ran_pars", "ran_vals", "ran_coefs")
_COLUMNS = ["effect", "group", "level", "term", "estimate", "std.error", "conf.low", "conf.high"]


def _rows(effect: str, group: Sequence, level: Sequence | None, term: Sequence, flat: np.ndarray, conf: float) -> pd.DataFrame:
    """One row per column of ``flat`` (draws ``(S, k)``)."""
    a = (1 - conf) / 2
    k = flat.shape[1]
    return pd.DataFrame(
        {
            "effect": [effect] * k,
            "group": list(group),
            "level": list(level) if level is not None else [np.nan] * k,
            "term": list(term),
            "estimate": flat.mean(axis=0),
            "std.error": flat.std(axis=0, ddof=1) if flat.shape[0] > 1 else np.zeros(k),
            "conf.low": np.quantile(flat, a, axis=0),
            "conf.high": np.quantile(flat, 1 - a, axis=0),
        }
    )


def _fixed(design: Design, p: ParamDraws, conf: float) -> pd.DataFrame:
    names = list(design.fixed_names)
    return _rows("fixed", [np.nan] * len(names), None, names, p.beta, conf)


def _ran_pars(design: Design, p: ParamDraws, conf: float) -> pd.DataFrame:
    groups, terms, cols = [], [], []
    for b, cov in zip(design.blocks, p.cov):
        sd = np.sqrt(np.einsum("sii->si", cov))
        for i in range(b.q):
            groups.append(b.label)
            terms.append(f"sd__{b.terms[i]}")
            cols.append(sd[:, i])
            for j in range(i + 1, b.q):
                groups.append(b.label)
                terms.append(f"cor__{b.terms[i]}.{b.terms[j]}")
                with np.errstate(invalid="ignore", divide="ignore"):
                    cols.append(cov[:, i, j] / (sd[:, i] * sd[:, j]))
    groups.append("Residual")
    terms.append("sd__Observation")
    cols.append(p.sigma)
    return _rows("ran_pars", groups, None, terms, np.column_stack(cols), conf)


def _ran_vals(design: Design, p: ParamDraws, conf: float) -> pd.DataFrame:
    parts = []
    for b, r in zip(design.blocks, p.ranef):
        flat = r.transpose(0, 2, 1).reshape(r.shape[0], -1)  # term-major, as as.data.frame(ranef())
        levels = list(b.levels) * b.q
        terms = np.repeat(b.terms, b.n_levels)
        parts.append(_rows("ran_vals", [b.factor] * flat.shape[1], levels, terms, flat, conf))
    return pd.concat(parts, ignore_index=True)


def _ran_coefs(design: Design, p: ParamDraws, conf: float) -> pd.DataFrame:
    names = list(design.fixed_names)
    parts = []
    for factor, levels in design.factors.items():
        ks = [k for k, b in enumerate(design.blocks) if b.factor == factor]
        terms = names + [t for k in ks for t in design.blocks[k].terms if t not in names]
        total = np.zeros((p.n_draws, len(levels), len(terms)))
        total[:, :, : len(names)] = p.beta[:, None, :]
        for k in ks:
            for c, t in enumerate(design.blocks[k].terms):
                total[:, :, terms.index(t)] += p.ranef[k][:, :, c]
        flat = total.transpose(0, 2, 1).reshape(p.n_draws, -1)
        parts.append(
            _rows("ran_coefs", [factor] * flat.shape[1], list(levels) * len(terms), np.repeat(terms, len(levels)), flat, conf)
        )
    return pd.concat(parts, ignore_index=True)


_BUILDERS = {"fixed": _fixed, "ran_pars": _ran_pars, "ran_vals": _ran_vals, "ran_coefs": _ran_coefs}


def tidy_table(
    design: Design, params: ParamDraws, effects: str | Sequence[str] = ("fixed", "ran_pars"), conf_level: float = 0.95
) -> pd.DataFrame:
    """broom.mixed's ``tidy()`` from parameter draws.

    Parameters
    ----------
    design
        The training design.
    params
        Parameter draws.
    effects
        One of, or a list of, ``"fixed"``, ``"ran_pars"`` (sds, correlations
        and the residual sd), ``"ran_vals"`` (group effects, as ``ranef``),
        ``"ran_coefs"`` (fixed + group effects per level, as ``coef``).
    conf_level
        Interval probability.

    Returns
    -------
    pandas.DataFrame
        ``effect``, ``group``, ``term``, ``estimate``, ``std.error``,
        ``conf.low``, ``conf.high`` and, when ``ran_vals`` or ``ran_coefs``
        is asked for, ``level`` after ``group``. ``group`` is NaN for fixed
        effects, the block label (``VarCorr``'s ``grp``) for ``ran_pars`` and
        the grouping factor for ``ran_vals`` / ``ran_coefs``.

    Raises
    ------
    BayesLMMError
        For an unknown effect name or a bad ``conf_level``.
    """
    wanted = [effects] if isinstance(effects, str) else list(effects)
    unknown = [e for e in wanted if e not in _BUILDERS]
    if unknown or not wanted:
        raise BayesLMMError(f"effects must be one or a list of {list(EFFECTS)}; got {effects!r}.")
    if isinstance(conf_level, bool) or not isinstance(conf_level, (int, float)) or not 0 < conf_level < 1:
        raise BayesLMMError(f"conf_level must be between 0 and 1, e.g. 0.95; got {conf_level!r}.")
    out = pd.concat([_BUILDERS[e](design, params, conf_level) for e in wanted], ignore_index=True)
    cols = _COLUMNS if {"ran_vals", "ran_coefs"} & set(wanted) else [c for c in _COLUMNS if c != "level"]
    return out[cols]


def tidy(fit: Any, effects: str | Sequence[str] = ("fixed", "ran_pars"), conf_level: float = 0.95) -> pd.DataFrame:
    """broom.mixed's ``tidy(fit)``; see :func:`tidy_table`."""
    return tidy_table(fit.design, fit_params(fit), effects, conf_level)


def glance(fit: Any) -> pd.DataFrame:
    """One-row model summary, like broom.mixed's ``glance()``.

    Returns
    -------
    pandas.DataFrame
        ``nobs``, ``sigma`` (posterior mean), ``elpd_loo``, ``p_loo``,
        ``looic`` (−2 elpd_loo), ``waic`` (−2 elpd_waic), ``r2_marginal``,
        ``r2_conditional`` (posterior means of :func:`bayeslmm.fitstats.r2`),
        ``divergences``, ``draws`` (per chain) and ``chains``.
    """
    from .fitstats import loo, r2, waic

    lo = loo(fit, pointwise=False)
    rr = r2(fit)["Estimate"]
    d = fit.diagnostics
    return pd.DataFrame(
        {
            "nobs": [fit.design.nobs],
            "sigma": [float(fit_params(fit).sigma.mean())],
            "elpd_loo": [float(lo.elpd)],
            "p_loo": [float(lo.p)],
            "looic": [-2.0 * float(lo.elpd)],
            "waic": [waic(fit).waic],
            "r2_marginal": [float(rr["marginal"])],
            "r2_conditional": [float(rr["conditional"])],
            "divergences": [d.divergences],
            "draws": [d.draws],
            "chains": [d.chains],
        }
    )


def augment(fit: Any, newdata: pd.DataFrame | None = None, re_form: Any = None, conf_level: float = 0.95) -> pd.DataFrame:
    """The data with fitted values and residuals, like broom.mixed's ``augment()``.

    Parameters
    ----------
    fit
        A fit.
    newdata
        Rows to augment; ``None`` uses the model frame (the columns and rows
        used in the fit).
    re_form
        Which group effects enter the fitted values (see :func:`bayeslmm.predict.predict`).
    conf_level
        Probability of the credible interval of the fitted mean.

    Returns
    -------
    pandas.DataFrame
        The data plus ``.fitted`` (posterior mean of the linear predictor),
        ``.resid`` (response − ``.fitted``; only when the response column is
        present), ``.lower`` and ``.upper`` (credible interval of the mean).
        Grouping levels the fit did not see are refused, as by ``predict``.
    """
    pred = predict(fit, newdata, re_form=re_form, kind="mean", interval=conf_level)
    lo, hi = pred.columns[2], pred.columns[3]
    if newdata is None:
        out = fit.design.frame.copy()
        y = fit.design.y
    else:
        out = newdata.copy()
        name = fit.design.response_name
        y = pd.to_numeric(out[name], errors="coerce").to_numpy(dtype=float) if name in out.columns else None
    out[".fitted"] = pred["Estimate"].to_numpy()
    if y is not None:
        out[".resid"] = y - out[".fitted"].to_numpy()
    out[".lower"] = pred[lo].to_numpy()
    out[".upper"] = pred[hi].to_numpy()
    return out
