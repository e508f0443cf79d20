"""Design -> posterior ``DataTree`` for the collapsed model, by the fastest route available.

With priors that :mod:`bayeslmm.collapsed.densities` implements (every
default), NUTS runs on the numba log posterior through
:func:`bayeslmm.sampling.sample_target`, under PyMC's NUTS or nutpie's: no
PyTensor graph is compiled (compiling one with an LKJ prior takes minutes
cold). The target is :class:`~bayeslmm.collapsed.beta_marginal.BetaMarginalPosterior`
where the fixed effects integrate out exactly, else
:class:`~bayeslmm.collapsed.posterior.CollapsedPosterior`. Other priors, and
``sampler="numpyro"``, sample the PyMC model of
:mod:`bayeslmm.collapsed.graph`. Either way the group effects are then drawn
from their exact conditional (:func:`~bayeslmm.collapsed.marginal.add_group_effects`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pymc as pm
import xarray as xr

from .. import naming
from ..design import Design
from ..inits import reml_initvals
from ..priors import Priors
from ..reml import REMLResult
from ..sampling import SamplerSettings, run_nuts, sample_target
from .beta_marginal import BetaMarginalPosterior
from .marginal import add_group_effects
from .posterior import CollapsedPosterior, start_names

__all__ = ["sample_collapsed_model"]


def sample_collapsed_model(
    design: Design,
    priors: Priors,
    model_factory: Callable[[], pm.Model],
    settings: SamplerSettings,
    start: REMLResult | None = None,
) -> xr.DataTree:
    """Sample the collapsed model of ``design``; return a ``DataTree`` with the full model's variables.

    Parameters
    ----------
    design
        A collapsible design.
    priors
        Its priors.
    model_factory
        Builds the PyMC model (:func:`bayeslmm.collapsed.build_collapsed_model`), for the route without numba.
    settings
        The sampler settings.
    start
        The REML fit of the design, for starting values; None starts from moment estimates.

    Returns
    -------
    xarray.DataTree
        ``posterior`` (fixed effects, σ, sds, correlations and group effects),
        ``sample_stats`` and ``observed_data``.
    """
    posterior = CollapsedPosterior.build(design, priors) if settings.sampler in ("pymc", "nutpie") else None
    if posterior is not None:
        initvals = reml_initvals(start_names(design), design, start) if start is not None else None
        marginal = BetaMarginalPosterior.build(posterior)
        target: CollapsedPosterior | BetaMarginalPosterior = marginal if marginal is not None else posterior
        idata = sample_target(target, target.start(initvals), settings, "the collapsed posterior")
        add_group_effects(design, idata, settings.random_seed, posterior.stats)
    else:
        model = model_factory()
        idata = run_nuts(model, settings, initvals=reml_initvals(model, design, start) if start is not None else None)
        add_group_effects(design, idata, settings.random_seed)
    if design.summary is None:  # an out-of-core design keeps no rows to observe
        _add_observed(design, idata)
    return idata


def _add_observed(design: Design, idata: Any) -> None:
    """The ``observed_data`` group the full model's fit has (``y`` over ``obs``), for posterior predictive checks."""
    obs = xr.Dataset({naming.LIKELIHOOD: ((naming.OBS_DIM,), design.y)}, coords={naming.OBS_DIM: np.arange(design.nobs)})
    idata["observed_data"] = xr.DataTree(obs)
