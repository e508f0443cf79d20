"""Confidence intervals of a REML/ML fit, as lme4's ``confint(fm, method = ...)``.

Rows are the sds and correlations of the random effects, σ, then the fixed
effects, named as ``confint(fm, oldNames = FALSE)`` names them; columns are
labelled by the level (``2.5 %``, ``97.5 %``).

* ``"profile"``: likelihood-profile intervals (:mod:`bayeslmm.inference.likelihood_profile`);
* ``"Wald"``: β̂ ± z·SE for the fixed effects, NaN for the variance parameters;
* ``"boot"``: parametric-bootstrap intervals (:mod:`bayeslmm.inference.parametric_bootstrap`),
  percentile by default (``boot_type="basic"`` and ``"norm"`` as ``boot.ci``).
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..errors import BayesLMMError
from ..paramdraws import check_level
from .parametric_bootstrap import norm_inter, bootstrap
from .engine import fit_state
from .params import VarLayout
from .likelihood_profile import profile_confint
from .report import format_percent

__all__ = ["confint", "varcorr_intervals", "parameter_names"]

METHODS = {"profile": "profile", "wald": "Wald", "boot": "boot"}


def parameter_names(design) -> tuple[list[str], list[str]]:
    """(variance-parameter names, fixed-effect names) of a design, as ``confint`` names its rows."""
    return list(VarLayout.from_design(design).names), list(design.fixed_names)


def _resolve_parm(parm: Any, var_names: list[str], fixed: list[str]) -> list[str]:
    every = var_names + fixed
    if parm is None:
        return every
    items = [parm] if isinstance(parm, str) else list(parm)
    out: list[str] = []
    for item in items:
        if item == "beta_":
            new = fixed
        elif item == "theta_":
            new = var_names
        elif isinstance(item, str) and item in every:
            new = [item]
        else:
            raise BayesLMMError(
                f"parm {item!r} is not a parameter of this model. Choose from {every}, or 'beta_' (the fixed effects) "
                "or 'theta_' (the variance parameters)."
            )
        out += [n for n in new if n not in out]
    return [n for n in every if n in out]


def confint(
    fit: Any,
    parm: str | Sequence[str] | None = None,
    level: float = 0.95,
    method: str = "profile",
    nsim: int = 1000,
    seed: int | None = None,
    boot_type: str = "perc",
    progressbar: bool = False,
    cores: int | None = None,
) -> pd.DataFrame:
    """Confidence intervals of a REML/ML fit (lme4's ``confint.merMod``).

    Parameters
    ----------
    fit
        A REML or ML fit's state, ``fit.inference_state`` (the entry point is the fit's method).
    parm
        Parameter names (see :func:`parameter_names`), ``"beta_"`` or ``"theta_"``; ``None``: all.
    level
        Confidence level, strictly between 0 and 1.
    method
        ``"profile"`` (default), ``"Wald"`` or ``"boot"``.
    nsim, seed, boot_type, progressbar, cores
        For ``method="boot"``: replicates, seed, ``"perc"``/``"basic"``/``"norm"``, progress bar, processes.

    Returns
    -------
    pandas.DataFrame
        One row per parameter, two columns labelled by ``level``.

    Raises
    ------
    BayesLMMError
        For an unknown ``parm``, ``method`` or ``boot_type``, or ``level`` outside (0, 1).
    """
    level = check_level(level)
    key = method.lower() if isinstance(method, str) else None
    if key not in METHODS:
        raise BayesLMMError(f"method must be 'profile', 'Wald' or 'boot', got {method!r}.")
    state = fit_state(fit)
    var_names, fixed = parameter_names(state.design)
    names = _resolve_parm(parm, var_names, fixed)
    a = (1.0 - level) / 2.0
    cols = format_percent([a, 1.0 - a])
    if METHODS[key] == "Wald":
        z = norm.ppf([a, 1.0 - a])
        se = np.sqrt(np.diag(state.vcov_beta))
        wald = {n: state.beta[j] + se[j] * z for j, n in enumerate(fixed)}
        values = np.array([wald.get(n, [np.nan, np.nan]) for n in names])
    elif METHODS[key] == "profile":
        values = profile_confint(fit, names, level)
    else:
        if boot_type not in ("perc", "basic", "norm"):
            raise BayesLMMError(f"boot_type must be 'perc', 'basic' or 'norm', got {boot_type!r}.")
        res = bootstrap(fit, nsim=nsim, seed=seed, progressbar=progressbar, cores=cores)
        values = np.array([_boot_interval(res.replicates[n].to_numpy(), float(res.t0[n]), level, boot_type) for n in names])
    out = pd.DataFrame(values, index=names, columns=cols)
    out.attrs.update({"method": METHODS[key], "level": level})
    return out


def _boot_interval(t: np.ndarray, t0: float, level: float, boot_type: str) -> np.ndarray:
    """One interval as ``boot::boot.ci`` computes it for ``type`` = perc, basic or norm."""
    a = (1.0 - level) / 2.0
    alpha = np.array([a, 1.0 - a])
    if boot_type == "perc":
        return norm_inter(t, alpha)
    if boot_type == "basic":
        q = norm_inter(t, alpha[::-1])
        return 2 * t0 - q
    finite = t[np.isfinite(t)]
    bias = finite.mean() - t0
    merr = finite.std(ddof=1) * norm.ppf(1.0 - a)
    return np.array([t0 - bias - merr, t0 - bias + merr])


def varcorr_intervals(fit: Any, method: str = "profile", level: float = 0.95, **kwargs: Any) -> pd.DataFrame:
    """Intervals of the variance components laid out as ``as.data.frame(VarCorr(fm))``.

    One row per sd, correlation and σ, with ``grp``, ``var1``, ``var2`` (NaN for
    an sd) and the two interval columns of :func:`confint` (``method`` and
    ``level`` as there; ``"Wald"`` gives NaN, as lme4). For tables that set REML
    intervals beside a posterior's (``bayeslmm.compare``).
    """
    state = fit_state(fit)
    layout = VarLayout.from_design(state.design)
    ci = confint(fit, parm="theta_", level=level, method=method, **kwargs)
    frame = pd.DataFrame(
        [{"grp": g, "var1": v1 if v1 is not None else np.nan, "var2": v2 if v2 is not None else np.nan}
         for g, v1, v2 in layout.varcorr_rows]
    )
    out = pd.concat([frame, ci.reset_index(drop=True)], axis=1)
    out.attrs.update(ci.attrs)
    return out
