"""Stage 4 (full model): Design + Priors -> ``pm.Model``.

The Gaussian linear mixed model with correlated group effects per block::

    beta  ~ Normal(., v)                      fixed effects
    sigma ~ HalfCauchy(r)                     residual sd
    gamma ~ N(0, tau) / MVN(0, T), LKJ(eta)   group effects, per block
    y     ~ N(X beta + sum_k (Z_k * gamma_k[group_idx_k]).sum(1), sigma)

Group effects enter by index-gather, ``gamma[group_idx]``; Z is never dense.
Each block is non-centered by default (``gamma = z * tau`` or
``gamma = z @ L'``); a block can be made centered through ``parameterization``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from . import naming
from .compat import link_pip_blas
from .design import BlockDesign, Design
from .errors import PriorError
from .priors import Prior, Priors

__all__ = ["build_model", "model_coords", "fixed_effects", "block_effects", "prior_rv", "prior_dist"]

link_pip_blas()  # PyTensor's BLAS operations (e.g. in LKJCholeskyCov's graphs) link to the scipy-openblas32 wheel


def model_coords(design: Design, observations: bool = True) -> dict[str, list]:
    """Coordinates with real labels: term names, level names, and (unless ``observations=False``) row numbers.

    The collapsed model has no per-row variable, and an out-of-core design may stand for 10⁸ rows:
    it asks for the coordinates without the observation dimension, whose labels grow with the rows.
    """
    coords: dict[str, list] = {naming.FIXED_DIM: list(design.fixed_names)}
    idx = design.intercept_index
    if idx is not None and len(design.fixed_names) > 1:
        coords[naming.SLOPE_DIM] = [n for j, n in enumerate(design.fixed_names) if j != idx]
    for b in design.blocks:
        coords[naming.level_dim(b.label)] = list(b.levels)
        coords[naming.term_dim(b.label)] = list(b.terms)
        if b.q > 1:
            coords[naming.term_dim2(b.label)] = list(b.terms)
    if observations:
        coords[naming.OBS_DIM] = list(range(design.nobs))
    return coords


def prior_rv(name: str, priors: list[Prior], dims: str | tuple[str, ...] | None, what: str):
    """One vector random variable whose elements have the given priors (one family)."""
    fams = {p.dist for p in priors}
    if len(fams) != 1 or len({tuple(k for k, _ in p.params) for p in priors}) != 1:
        raise PriorError(
            f"The priors of {what} must share one distribution family with the same parameters; "
            f"got {[str(p) for p in priors]}."
        )
    dist = getattr(pm, priors[0].dist)
    keys = [k for k, _ in priors[0].params]
    if dims is None:
        return dist(name, **priors[0].kwargs)
    kwargs = {k: np.array([p.kwargs[k] for p in priors], dtype=float) for k in keys}
    return dist(name, **kwargs, dims=dims)


def prior_dist(priors: list[Prior], what: str):
    """An unnamed vector distribution (for LKJCholeskyCov's sd_dist)."""
    fams = {p.dist for p in priors}
    if len(fams) != 1:
        raise PriorError(f"The sd priors of {what} must share one distribution family; got {[str(p) for p in priors]}.")
    dist = getattr(pm, priors[0].dist)
    keys = [k for k, _ in priors[0].params]
    kwargs = {k: np.array([p.kwargs[k] for p in priors], dtype=float) for k in keys}
    return dist.dist(**kwargs, shape=len(priors))


def fixed_effects(design: Design, priors: Priors):
    """Create the fixed-effect variables and return the linear predictor X beta.

    With an intercept and other predictors, the intercept's prior is placed on
    the intercept at the predictor means (``Intercept_centered``), which
    decorrelates it from the slopes; ``beta`` is the lme4-parameterised vector.
    """
    X = design.X
    p = X.shape[1]
    if p == 0:
        return pt.zeros(design.nobs)
    names = list(design.fixed_names)
    idx = design.intercept_index
    if idx is None or p == 1:
        beta = prior_rv(naming.FIXED, [priors.fixed(n) for n in names], naming.FIXED_DIM, "the fixed effects")
        return pt.dot(X, beta)
    slopes = [j for j in range(p) if j != idx]
    xbar = design.moments.x_mean[slopes]
    Xc = X[:, slopes] - xbar
    alpha = prior_rv(naming.INTERCEPT_CENTERED, [priors.fixed(names[idx])], None, "the intercept")
    bs = prior_rv(naming.SLOPES, [priors.fixed(names[j]) for j in slopes], naming.SLOPE_DIM, "the fixed slopes")
    intercept = alpha - pt.dot(xbar, bs)
    parts = []
    for j in range(p):
        parts.append(intercept if j == idx else bs[slopes.index(j)])
    pm.Deterministic(naming.FIXED, pt.stack(parts), dims=naming.FIXED_DIM)
    return alpha + pt.dot(Xc, bs)


def block_effects(block: BlockDesign, priors: Priors, centered: bool):
    """Create a block's sd (and correlation) variables and its group effects.

    Returns the ``(levels, q)`` tensor of group effects.
    """
    label = block.label
    ldim, tdim = naming.level_dim(label), naming.term_dim(label)
    sd_priors = [priors.sd(label, t) for t in block.terms]
    if block.q == 1:
        sd = prior_rv(naming.sd(label), sd_priors, tdim, f"block {label!r}")
        if centered:
            return pm.Normal(naming.ranef(label), mu=0.0, sigma=sd, dims=(ldim, tdim))
        z = pm.Normal(naming.offset(label), 0.0, 1.0, dims=(ldim, tdim))
        return pm.Deterministic(naming.ranef(label), z * sd, dims=(ldim, tdim))
    lkj = priors.cor(label)
    chol, corr, stds = pm.LKJCholeskyCov(
        naming.chol(label),
        n=block.q,
        eta=lkj.kwargs.get("eta", 1.0),
        sd_dist=prior_dist(sd_priors, f"block {label!r}"),
        compute_corr=True,
        store_in_trace=False,
    )
    pm.Deterministic(naming.sd(label), stds, dims=tdim)
    pm.Deterministic(naming.cor(label), corr, dims=(tdim, naming.term_dim2(label)))
    if centered:
        return pm.MvNormal(naming.ranef(label), mu=np.zeros(block.q), chol=chol, dims=(ldim, tdim))
    z = pm.Normal(naming.offset(label), 0.0, 1.0, dims=(ldim, tdim))
    return pm.Deterministic(naming.ranef(label), pt.dot(z, chol.T), dims=(ldim, tdim))


def build_model(
    design: Design,
    priors: Priors,
    parameterization: Mapping[str, str] | None = None,
) -> pm.Model:
    """Build the full (non-collapsed) PyMC model.

    Parameters
    ----------
    design
        The evaluated design.
    priors
        Priors for every parameter.
    parameterization
        ``{block label: "centered" | "noncentered"}``; missing blocks are non-centered.

    Returns
    -------
    pm.Model
    """
    parameterization = dict(parameterization or {})
    with pm.Model(coords=model_coords(design)) as model:
        mu = fixed_effects(design, priors)
        for b in design.blocks:
            r = block_effects(b, priors, parameterization.get(b.label, "noncentered") == "centered")
            if b.q == 1:
                mu = mu + r[b.group_idx, 0] * b.Z[:, 0]
            else:
                mu = mu + (r[b.group_idx] * b.Z).sum(axis=1)
        sigma = prior_rv(naming.SIGMA, [priors.sigma()], None, "sigma")
        pm.Normal(naming.LIKELIHOOD, mu=mu, sigma=sigma, observed=design.y, dims=naming.OBS_DIM)
    return model
