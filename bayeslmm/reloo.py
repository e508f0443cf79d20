"""Exact leave-one-out for the observations where PSIS-LOO is unreliable, as brms's ``loo(fit, reloo = TRUE)``.

PSIS-LOO approximates the posterior without observation i by importance
weights. When the Pareto shape k of those weights exceeds ArviZ's threshold
``min(1 - 1/log10(S), 0.7)`` (0.7 for 4000 draws) the approximation fails for
that observation. For each such observation the model is fitted again
without it -- same formula, priors, parameterization and sampler settings
(seed derived from the fit's seed and the row) -- and its exact
``elpd_i = log mean_s p(y_i | θ_s^(-i))`` replaces the PSIS value
(:func:`arviz.reloo` does the bookkeeping; its Pareto k is then 0).

The refit keeps the design's columns and levels and removes the row, so a
group left without rows keeps its prior: its effect for the held-out row is
then a draw from N(0, T), as for a new level.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from functools import partial
from typing import Any

import numpy as np
import xarray as xr
import arviz as az

from . import naming
from .design import Design
from .errors import BayesLMMError
from .model import build_model
from .parameterization import full_model_parameterization, fully_collapsed, partly_collapsed
from .paramdraws import ParamDraws, Rows, linear_predictor
from .priors import Priors
from .sampling import SamplerSettings, run_nuts

__all__ = ["RELOO_MAX", "drop_rows", "sample_posterior", "refit_loo"]

#: ``fit.loo()`` refits automatically when at most this many observations have a high Pareto k.
RELOO_MAX = 10


def drop_rows(design: Design, rows: np.ndarray) -> Design:
    """The design without the given row positions; columns, blocks and levels are kept."""
    keep = np.ones(design.nobs, dtype=bool)
    keep[np.asarray(rows, dtype=int)] = False
    blocks = tuple(dataclasses.replace(b, group_idx=b.group_idx[keep], Z=b.Z[keep]) for b in design.blocks)
    return dataclasses.replace(
        design, y=design.y[keep], X=design.X[keep], blocks=blocks, frame=design.frame.loc[keep]
    )


def _built(model: Any) -> Any:
    return model


def sample_posterior(design: Design, priors: Priors, parameterization: dict[str, str], settings: SamplerSettings) -> Any:
    """Sample the posterior of ``design`` with given priors, parameterization and settings, as ``lmer`` does.

    Starts at the REML estimates when they exist. Returns the posterior ``DataTree``.
    """
    from .reml import fit_reml

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = fit_reml(design, "REML", condvar=False)
    except BayesLMMError:
        start = None
    if fully_collapsed(parameterization):
        from .collapsed import build_collapsed_model
        from .collapsed.sample import sample_collapsed_model

        return sample_collapsed_model(design, priors, partial(build_collapsed_model, design, priors), settings, start)
    if partly_collapsed(parameterization):
        from .crossed.posterior import CrossedPosterior, sample_crossed_model

        crossed = CrossedPosterior.build(design, priors, parameterization)
        if crossed is not None and settings.sampler in ("pymc", "nutpie"):
            return sample_crossed_model(crossed, settings, start)
        parameterization = full_model_parameterization(design, parameterization)
    from .inits import reml_initvals

    model = build_model(design, priors, parameterization)
    return run_nuts(model, settings, initvals=reml_initvals(model, design, start) if start is not None else None)


class _RefitWrapper(az.SamplingWrapper):
    """ArviZ's refitting interface for one bayeslmm posterior fit."""

    def __init__(self, idata: Any, design: Design, priors: Priors, parameterization: dict[str, str],
                 settings: SamplerSettings) -> None:
        super().__init__(model=None, idata_orig=idata)
        self.design = design
        self.priors = priors
        self.parameterization = parameterization
        self.settings = settings

    def sel_observations(self, idx: Any) -> tuple[Any, Any]:
        row = int(idx)
        return row, row

    def sample(self, modified_observed_data: Any) -> Any:
        row = int(modified_observed_data)
        seed = self.settings.random_seed
        if seed is not None:
            seed = int(np.random.SeedSequence([int(seed), row]).generate_state(1)[0])
        settings = dataclasses.replace(self.settings, random_seed=seed, progressbar=False)
        design = drop_rows(self.design, [row])
        pymc_log = logging.getLogger("pymc")
        level = pymc_log.level
        pymc_log.setLevel(logging.ERROR)  # one refit per flagged row: no per-refit sampler lines
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                idata = sample_posterior(design, self.priors, self.parameterization, settings)
        finally:
            pymc_log.setLevel(level)
        return ParamDraws.from_posterior(design, idata)

    def get_inference_data(self, fitted_model: Any) -> Any:
        return fitted_model

    def log_likelihood__i(self, excluded_obs: Any, idata__i: Any) -> xr.DataArray:
        params: ParamDraws = idata__i
        row = int(excluded_obs)
        rows = Rows.from_design(self.design).take(np.array([row]))
        mu = params.family.linkinv(linear_predictor(rows, params))
        ll = params.family.log_density(self.design.y[row], mu, params.sigma[:, None])
        return xr.DataArray(params.to_chains(ll), dims=("chain", "draw", naming.OBS_DIM))


def refit_loo(
    psis: Any, idata: Any, design: Design, priors: Priors, parameterization: dict[str, str], settings: SamplerSettings
) -> Any:
    """PSIS-LOO with every high-Pareto-k observation replaced by its exact leave-one-out value.

    Parameters
    ----------
    psis
        The pointwise PSIS-LOO result (``arviz.ELPDDataLOO``) of the fit.
    idata
        The posterior with its ``log_likelihood`` group.
    design, priors, parameterization, settings
        What the fit was made from.

    Returns
    -------
    arviz.ELPDDataLOO
        The updated result (refitted observations have Pareto k 0).
    """
    wrapper = _RefitWrapper(idata, design, priors, parameterization, settings)
    return az.reloo(wrapper, loo_orig=psis, var_name=naming.LIKELIHOOD, k_threshold=float(psis.good_k), pointwise=True)
