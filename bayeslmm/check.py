"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018).

If the sampler and the model are right, the rank of a parameter drawn from
the prior among posterior draws fitted to data simulated from it is uniform.
:func:`sbc` runs that loop on the very model :func:`bayeslmm.lmer` builds:

1. draw parameters and data from the prior predictive distribution of the model
   that bayeslmm builds for ``formula`` on ``design_data`` (``pm.sample_prior_predictive``);
2. fit every simulated data set with :func:`bayeslmm.lmer` and the same priors;
3. record the rank of each true parameter (every fixed effect, group-level sd,
   correlation and sigma) among ``thin_to`` thinned posterior draws;
4. test each parameter's ranks for uniformity (chi-square on binned ranks).

Default priors are scaled from the response, so they would change with every
simulated data set and the prior used to simulate would not be the prior used
to fit. :func:`sbc` therefore requires explicit ``priors=`` for every fixed
effect, sigma and every group-level sd (the LKJ correlation prior does not
depend on the data and may stay at its default).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping

import numpy as np
import pandas as pd
import pymc as pm
from scipy import stats

from . import naming
from .design import Design, build_design
from .errors import BayesLMMError
from .formula import parse_formula
from .model import build_model
from .priors import Priors, make_priors

__all__ = ["SBCResult", "sbc", "sbc_parameters", "rank_uniformity"]


@dataclass(frozen=True)
class SBCResult:
    """Ranks and uniformity tests of a simulation-based calibration run.

    Attributes
    ----------
    ranks
        One row per simulation, one column per parameter; ranks are in ``0..thin_to``.
    thin_to
        Number of posterior draws each rank is computed among (``L``).
    bins
        Number of rank bins used for the chi-square test and the histograms.
    truth
        The parameter values drawn from the prior, same shape as ``ranks``.
    divergences
        Divergent transitions of each simulation's fit.
    settings
        The settings of the run (formula, draws, chains, seed, ...).
    """

    ranks: pd.DataFrame
    thin_to: int
    bins: int
    truth: pd.DataFrame
    divergences: pd.Series
    settings: dict[str, Any]

    @property
    def pvalues(self) -> pd.Series:
        """Chi-square uniformity p-value of each parameter's ranks."""
        return rank_uniformity(self.ranks, self.thin_to, self.bins)["p_value"]

    def table(self) -> pd.DataFrame:
        """Per parameter: number of simulations, chi-square statistic and p-value."""
        return rank_uniformity(self.ranks, self.thin_to, self.bins)

    def plot(self, ncols: int = 4):
        """Rank histograms, one panel per parameter, with a 99% band for uniform ranks.

        Parameters
        ----------
        ncols
            Panels per row.

        Returns
        -------
        matplotlib.figure.Figure
            One axis per parameter; each has ``bins`` bars.
        """
        import matplotlib.pyplot as plt

        names = list(self.ranks.columns)
        ncols = max(1, min(ncols, len(names)))
        nrows = -(-len(names) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), squeeze=False)
        n = len(self.ranks)
        for ax, name in zip(axes.flat, names):
            obs, exp = _binned(self.ranks[name].to_numpy(), self.thin_to, self.bins)
            edges = _edges(self.thin_to, self.bins)
            ax.bar(edges[:-1], obs, width=np.diff(edges), align="edge", color="C0", edgecolor="white")
            lo = stats.binom.ppf(0.005, n, exp / n)
            hi = stats.binom.ppf(0.995, n, exp / n)
            ax.fill_between(edges, np.append(lo, lo[-1]), np.append(hi, hi[-1]), step="post", color="0.6", alpha=0.3)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel("rank")
        for ax in list(axes.flat)[len(names):]:
            ax.set_visible(False)
        fig.tight_layout()
        return fig


def _edges(thin_to: int, bins: int) -> np.ndarray:
    """Integer bin edges splitting ranks ``0..thin_to`` into ``bins`` near-equal bins."""
    return np.round(np.linspace(0, thin_to + 1, bins + 1)).astype(int)


def _binned(ranks: np.ndarray, thin_to: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Observed and expected (discrete uniform) counts per rank bin."""
    edges = _edges(thin_to, bins)
    obs = np.histogram(ranks, bins=edges - 0.5)[0].astype(float)
    exp = len(ranks) * np.diff(edges) / (thin_to + 1)
    return obs, exp


def rank_uniformity(ranks: pd.DataFrame, thin_to: int, bins: int) -> pd.DataFrame:
    """Chi-square test of discrete uniformity of binned ranks, per column.

    Parameters
    ----------
    ranks
        Ranks in ``0..thin_to``, one column per parameter.
    thin_to
        The number of draws ranks were computed among.
    bins
        Number of bins (expected counts follow the number of rank values in each bin).

    Returns
    -------
    pandas.DataFrame
        One row per parameter: ``sims``, ``chi2`` (``bins - 1`` degrees of freedom) and ``p_value``.
    """
    rows = []
    for name in ranks.columns:
        obs, exp = _binned(ranks[name].to_numpy(), thin_to, bins)
        chi2, p = stats.chisquare(obs, exp)
        rows.append({"parameter": name, "sims": int(obs.sum()), "chi2": float(chi2), "p_value": float(p)})
    return pd.DataFrame(rows).set_index("parameter")


def sbc_parameters(design: Design) -> list[tuple[str, str, tuple[int, ...]]]:
    """The calibrated parameters: ``(label, model variable, index into its last axes)``.

    Every fixed effect (by its lme4 name), every group-level sd
    (``sd((Intercept)|Subject)``), every correlation (``cor((Intercept),Days|Subject)``)
    and ``sigma``.
    """
    params: list[tuple[str, str, tuple[int, ...]]] = []
    for j, name in enumerate(design.fixed_names):
        params.append((name, naming.FIXED, (j,)))
    for b in design.blocks:
        for k, t in enumerate(b.terms):
            params.append((f"sd({t}|{b.label})", naming.sd(b.label), (k,)))
        for i in range(b.q):
            for j in range(i + 1, b.q):
                params.append((f"cor({b.terms[i]},{b.terms[j]}|{b.label})", naming.cor(b.label), (i, j)))
    params.append(("sigma", naming.SIGMA, ()))
    return params


def _values(group, var: str, index: tuple[int, ...]) -> np.ndarray:
    """Flattened draws ``(chain * draw,)`` of one element of a variable."""
    arr = np.asarray(group[var].values, dtype=float)
    arr = arr.reshape(arr.shape[0] * arr.shape[1], *arr.shape[2:])
    return arr[(slice(None), *index)]


def _check_priors(priors: Priors) -> None:
    scaled = [e for e in priors.entries if e.cls != "cor" and e.source != "user"]
    if scaled:
        keys = [e.term if e.cls == "fixed" else ("sigma" if e.cls == "sigma" else f"{e.term}|{e.block}") for e in scaled]
        raise BayesLMMError(
            f"SBC needs explicit priors for every parameter whose default is scaled from the response; "
            f"missing: {keys}. Pass them with priors={{...}} (see bayeslmm.priors.make_priors for the keys)."
        )


def _simulation_design(formula: str, design_data: pd.DataFrame, rng: np.random.Generator) -> Design:
    parsed = parse_formula(formula)
    response = parsed.response_name
    if response not in parsed.var_names:
        raise BayesLMMError(
            f"SBC needs the response to be a plain column, got {response!r}; transform it in the data first."
        )
    data = design_data.copy()
    data[response] = rng.standard_normal(len(data))
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)
        try:
            return build_design(parsed, data, na_action="raise")
        except UserWarning as w:
            raise BayesLMMError(f"SBC needs a design that builds without warnings: {w}") from None


def sbc(
    formula: str,
    design_data: pd.DataFrame,
    n_sims: int,
    *,
    priors: Mapping[str, Any],
    draws: int = 200,
    tune: int = 200,
    chains: int = 2,
    thin_to: int = 100,
    bins: int | None = None,
    random_seed: int | None = None,
    progress: bool = False,
    **lmer_kwargs: Any,
) -> SBCResult:
    """Simulation-based calibration of :func:`bayeslmm.lmer` for one formula and design.

    Parameters
    ----------
    formula
        lme4 formula; its response must be a plain column name.
    design_data
        Covariates and grouping factors. The response column may be absent: a
        placeholder (standard normal noise) is put in a copy so the design can
        be built; it never enters the simulation. Used columns must be complete.
    n_sims
        Number of simulated data sets (and fits).
    priors
        Explicit priors for every fixed effect, ``"sigma"`` and every group-level
        sd (default priors are scaled from the response and so would differ
        between simulation and fit).
    draws, tune, chains
        NUTS settings of each fit; ``draws * chains`` must be at least ``thin_to``.
    thin_to
        Number of (roughly independent) posterior draws kept by thinning; ranks
        lie in ``0..thin_to``.
    bins
        Number of rank bins; by default about ``n_sims / 5`` (at least 2, at most 20),
        so that every bin expects at least 5 ranks.
    random_seed
        Seed of the prior draws and of every fit.
    progress
        Print ``SBC i/n`` on standard error after each fit.
    **lmer_kwargs
        Passed to :func:`bayeslmm.lmer` (e.g. ``target_accept``, ``sampler``).

    Returns
    -------
    SBCResult
    """
    from .api import lmer

    if not isinstance(n_sims, (int, np.integer)) or n_sims < 2:
        raise BayesLMMError(f"n_sims must be an integer of at least 2, got {n_sims!r}.")
    if draws * chains < thin_to:
        raise BayesLMMError(f"draws * chains ({draws * chains}) must be at least thin_to ({thin_to}).")
    bins = bins if bins is not None else int(min(20, max(2, n_sims // 5)))
    rng = np.random.default_rng(random_seed)
    design = _simulation_design(formula, design_data, rng)
    prior_set = make_priors(design, priors)
    _check_priors(prior_set)
    model = build_model(design, prior_set)
    prior = pm.sample_prior_predictive(draws=int(n_sims), model=model, random_seed=rng)
    params = sbc_parameters(design)
    truth = pd.DataFrame({label: _values(prior.prior, var, idx) for label, var, idx in params})
    y_sim = np.asarray(prior.prior_predictive[naming.LIKELIHOOD].values, dtype=float).reshape(n_sims, -1)

    opts = dict(draws=draws, tune=tune, chains=chains, cores=1, progressbar=False)
    opts.update(lmer_kwargs)
    ranks, divs = [], []
    frame = design.frame.copy()
    for i in range(n_sims):
        frame[design.response_name] = y_sim[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = lmer(formula, frame, priors=priors, random_seed=int(rng.integers(2**31 - 1)), **opts)
        total = fit.idata.posterior.sizes["chain"] * fit.idata.posterior.sizes["draw"]
        keep = np.linspace(0, total - 1, thin_to).round().astype(int)
        ranks.append({label: int((_values(fit.idata.posterior, var, idx)[keep] < truth.at[i, label]).sum())
                      for label, var, idx in params})
        divs.append(fit.diagnostics.divergences)
        if progress:
            print(f"SBC {i + 1}/{n_sims}", file=sys.stderr, flush=True)
    settings = dict(
        formula=formula, n_sims=int(n_sims), nobs=design.nobs, draws=draws, tune=tune, chains=chains,
        thin_to=thin_to, bins=bins, random_seed=random_seed, priors=prior_set.to_list(),
        parameterization=dict(fit.parameterization),
    )
    return SBCResult(
        ranks=pd.DataFrame(ranks, columns=truth.columns),
        thin_to=thin_to,
        bins=bins,
        truth=truth,
        divergences=pd.Series(divs, name="divergences"),
        settings=settings,
    )
