"""Convergence diagnostics of a posterior, and warnings that say what to change."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import arviz as az
import numpy as np

from ..errors import ConvergenceWarning, warn_user

__all__ = ["Diagnostics", "diagnose", "ESS_PER_CHAIN"]

#: Smallest bulk and tail ESS per chain that passes without a warning.
ESS_PER_CHAIN = 100


@dataclass(frozen=True)
class Diagnostics:
    """Sampling diagnostics of a fit.

    ``max_rhat`` is NaN with one chain: R-hat compares chains (:attr:`rhat_note`).
    """

    divergences: int
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    draws: int
    chains: int
    tune: int

    @property
    def rhat_note(self) -> str:
        """Why ``max_rhat`` is missing, or ``""``."""
        if self.chains < 2:
            return f"R-hat needs 2 or more chains (this fit has {self.chains})"
        return "" if np.isfinite(self.max_rhat) else "R-hat needs at least 4 draws per chain"


def diagnose(
    idata, var_names: list[str], tune: int, target_accept: float, warn: bool = True,
    parameterization: Mapping[str, str] | None = None,
) -> Diagnostics:
    """Compute divergences, max R-hat and min ESS over ``var_names``, and warn.

    Parameters
    ----------
    idata
        The posterior DataTree.
    var_names
        Parameters to check (the model's free parameters and their transforms).
    tune
        Number of tuning steps (reported only).
    target_accept
        Used in the advice about divergences.
    warn
        Whether to emit :class:`ConvergenceWarning`.
    parameterization
        The fit's ``{block label: "collapsed" | "centered" | "noncentered"}``,
        which the advice about divergences refers to; None gives general advice.

    Returns
    -------
    Diagnostics
    """
    post = idata.posterior
    chains, draws = int(post.sizes["chain"]), int(post.sizes["draw"])
    div = int(np.asarray(idata.sample_stats["diverging"]).sum()) if "diverging" in idata.sample_stats else 0
    rhats, bulk, tail = [], [], []
    for v in var_names:
        arr = np.asarray(post[v].values, dtype=float).reshape(chains, draws, -1)
        keep = np.nanstd(arr, axis=(0, 1)) > 0
        if not keep.any():
            continue
        arr = arr[:, :, keep]
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if chains > 1 and draws >= 4:
                rhats.append(np.atleast_1d(az.rhat(arr)))
            if draws >= 4:
                bulk.append(np.atleast_1d(az.ess(arr, method="bulk")))
                tail.append(np.atleast_1d(az.ess(arr, method="tail", prob=(0.05, 0.95))))
    max_rhat = float(np.nanmax(np.concatenate(rhats))) if rhats else float("nan")
    min_bulk = float(np.nanmin(np.concatenate(bulk))) if bulk else float("nan")
    min_tail = float(np.nanmin(np.concatenate(tail))) if tail else float("nan")
    diag = Diagnostics(div, max_rhat, min_bulk, min_tail, draws, chains, tune)
    if warn:
        _warn(diag, target_accept, parameterization)
    return diag


def _divergence_advice(target_accept: float, parameterization: Mapping[str, str] | None) -> str:
    higher = f"Try target_accept={min(0.99, target_accept + 0.1):.2f} or higher"
    param = dict(parameterization or {})
    if param and set(param.values()) == {"collapsed"}:
        return (
            f"{higher}, or more informative priors on sigma and the group-level sds. The group effects are "
            "integrated out here, so there is no funnel between them and their sd; passing parameterization= "
            "would switch to the full model, which samples such designs worse."
        )
    if param:
        factor, now = next((k, v) for k, v in param.items() if v != "collapsed")  # a crossed fit: a sampled block
        other = "noncentered" if now == "centered" else "centered"
        return (
            f"{higher}, more informative priors on the group-level sds, or the other parameterization of a "
            f"grouping factor (this fit: {param}), e.g. parameterization={{{factor!r}: {other!r}}}: 'noncentered' "
            "suits a factor whose levels have few rows or whose sd may be near zero, 'centered' one whose "
            "levels' data pin their effects down."
        )
    return (
        f"{higher}, more informative priors on the group-level sds, or, for the full model, the other "
        "parameterization of a grouping factor (fit.parameterization shows the choice made): "
        "parameterization={'<factor>': 'noncentered'} when its levels have few rows or its sd may be small, "
        "'centered' when each level's data pin its effect down."
    )


def _warn(d: Diagnostics, target_accept: float, parameterization: Mapping[str, str] | None = None) -> None:
    total = d.draws * d.chains
    if d.divergences:
        warn_user(
            f"There were {d.divergences} divergent transitions after tuning ({100 * d.divergences / total:.1f}% "
            f"of draws). The posterior may be biased. {_divergence_advice(target_accept, parameterization)}",
            ConvergenceWarning,
        )
    if np.isfinite(d.max_rhat) and d.max_rhat > 1.01:
        warn_user(
            f"The largest R-hat is {d.max_rhat:.3f} (> 1.01): the chains have not mixed. "
            "Run more tuning steps and draws (tune=, draws=) and check the trace plots.",
            ConvergenceWarning,
        )
    if d.chains < 2:
        warn_user(
            f"{d.rhat_note}, so whether the chains agree is not checked and R-hat is shown as NaN; "
            "run chains=4 (the default) for that check.",
            ConvergenceWarning,
        )
    low = ESS_PER_CHAIN * d.chains
    if np.isfinite(d.min_ess_bulk) and min(d.min_ess_bulk, d.min_ess_tail) < low:
        want = f"{low} ({ESS_PER_CHAIN} per chain)" if d.chains > 1 else f"{low}"
        warn_user(
            f"Low effective sample size (bulk ESS {d.min_ess_bulk:.0f}, tail ESS {d.min_ess_tail:.0f}; "
            f"want at least {want}). Posterior means and intervals may be unreliable; run more draws.",
            ConvergenceWarning,
        )
