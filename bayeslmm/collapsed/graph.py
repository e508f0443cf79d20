"""The collapsed model as a PyMC model: ``fit.model``, saved fits, and the samplers without a numba route.

The default sampler never compiles this graph (see
:mod:`bayeslmm.collapsed.sample`), but the PyMC model of a collapsed fit is
built from it, so users can inspect and extend it and ``sampler="numpyro"``,
or a prior without a numba form, can run it. The likelihood is
:func:`~bayeslmm.collapsed.marginal.marginal_parts` on the PyTensor backend
(a ``Potential``); variables, dims and priors are the full model's.
"""

from __future__ import annotations

import pymc as pm
import pytensor.tensor as pt

from .. import naming
from ..design import BlockDesign, Design
from ..model import fixed_effects, model_coords, prior_dist, prior_rv
from ..priors import Priors
from . import smallmat as sm
from .marginal import PYTENSOR, marginal_parts
from .structure import sufficient_stats

__all__ = ["build_collapsed_model", "block_factor"]


def block_factor(block: BlockDesign, priors: Priors) -> sm.Mat:
    """Create a block's sd (and LKJ) variables, named as in the full model; return its Cholesky factor."""
    label = block.label
    tdim = naming.term_dim(label)
    sd_priors = [priors.sd(label, t) for t in block.terms]
    if block.q == 1:
        sd = prior_rv(naming.sd(label), sd_priors, tdim, f"block {label!r}")
        return [[sd[0]]]
    chol, corr, stds = pm.LKJCholeskyCov(
        naming.chol(label),
        n=block.q,
        eta=priors.cor(label).kwargs.get("eta", 1.0),
        sd_dist=prior_dist(sd_priors, f"block {label!r}"),
        compute_corr=True,
        store_in_trace=False,
    )
    pm.Deterministic(naming.sd(label), stds, dims=tdim)
    pm.Deterministic(naming.cor(label), corr, dims=(tdim, naming.term_dim2(label)))
    return [[chol[i, j] if j <= i else 0 for j in range(block.q)] for i in range(block.q)]


def build_collapsed_model(design: Design, priors: Priors) -> pm.Model:
    """Build the collapsed PyMC model: β, σ and the covariance parameters, with the group effects integrated out.

    Variables, dims and priors are those of :func:`bayeslmm.model.build_model`
    except that the group effects (and their offsets) are absent; they are
    added after sampling by :func:`bayeslmm.collapsed.add_group_effects`.

    Parameters
    ----------
    design
        A collapsible design (see :func:`bayeslmm.collapsed.can_collapse`).
    priors
        Its priors.

    Returns
    -------
    pm.Model
        The model, its likelihood a ``Potential`` named ``y_marginal``.

    Raises
    ------
    BayesLMMError
        If the design cannot be collapsed.
    """
    st = sufficient_stats(design)
    structure = st.structure
    coords = model_coords(design, observations=False)
    with pm.Model(coords=coords) as model:
        fixed_effects(design, priors)
        delta = model[naming.FIXED] - st.beta0 if design.fixed_names else pt.zeros(0)
        factors = {k: block_factor(b, priors) for k, b in enumerate(design.blocks)}
        lam_o = sm.block_diag([factors[k] for k in structure.outer])
        lam_i = sm.block_diag([factors[k] for k in structure.inner])
        sigma = prior_rv(naming.SIGMA, [priors.sigma()], None, "sigma")
        pm.Potential(naming.MARGINAL_LIKELIHOOD, marginal_parts(st, delta, sigma, lam_o, lam_i, PYTENSOR).loglik)
    return model
