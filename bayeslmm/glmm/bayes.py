"""The Bayesian GLMM: link-scale default priors, the parameterization plan, the PyMC model and the NUTS stage.

The model (the full model of :mod:`bayeslmm.model` on the link scale)::

    β   ~ Normal                          fixed effects (intercept at the predictor means, or at x = 0)
    τ   ~ HalfCauchy                      group-level sds, LKJ(η) for correlations
    γ_k ~ N(0, τ) / MVN(0, T_k)           group effects per block, gathered as γ_k[group_idx_k]
    η   = offset + X β + Σ_k (Z_k * γ_k[group_idx_k]).sum(1)
    y   ~ Binomial(n, g⁻¹(η)) | Bernoulli | Poisson(g⁻¹(η)) | NegBinomial2(g⁻¹(η), φ)

Default priors (``docs/priors.md``), on the link scale as rstanarm and brms
scale them: the intercept Normal(g(ȳ), 2.5), a slope Normal(0, 2.5 / sd(x)),
a group-level sd HalfCauchy(1 / sd(z)) (1 for an intercept), LKJ(1), and for
the negative binomial φ ~ Gamma(0.01, 0.01) (brms's default for its shape).

Each block is centered or non-centered by how informative one group's data
are: the κ rule of :mod:`bayeslmm.parameterization` with the Laplace fit's
Fisher working weights ``W_i`` in place of ``1/σ²``,
``κ = min_t median_g τ̂_t² Σ_{i∈g} W_i Z_it²``, taken at the lower 99% limit
of τ̂² over the factor's J levels; centered when that is at least 1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from scipy.stats import chi2

from .. import naming, stages
from ..design import Design
from ..errors import BayesLMMError, PriorError
from ..fitstats import MAX_STORED_VALUES
from ..inits import reml_initvals
from ..model import block_effects, fixed_effects, model_coords, prior_rv
from ..parameterization import CENTERED_THRESHOLD, KAPPA_CONFIDENCE
from ..priors import Prior, PriorEntry, Priors, make_priors
from ..sampling import diagnose, run_nuts
from .families import GLMFamily
from .fit import GLMMBayesFit, GLMMInfo, LaplaceFit

__all__ = ["glmm_default_priors", "glmm_priors", "plan_blocks", "build_glmm_model", "sample_glmm", "INTERCEPT_PRIORS"]

#: Where the intercept's prior is placed: at the predictor means, or at x = 0 (brms's ``0 + Intercept``).
INTERCEPT_PRIORS = ("centered", "x0")


def _intercept_location(design: Design, info: GLMMInfo) -> float:
    fam = info.family
    if fam.is_binomial:
        p = float(np.sum(design.y * info.weights) / np.sum(info.weights))
        return float(fam.link.linkfun(np.clip(p, 0.01, 0.99)))
    rate = float(np.mean(design.y / np.exp(info.offset)))
    return float(fam.link.linkfun(max(rate, 0.01)))


def glmm_default_priors(design: Design, info: GLMMInfo, intercept_prior: str = "centered") -> Priors:
    """The link-scale default priors of a GLMM design (see the module docstring)."""
    if intercept_prior not in INTERCEPT_PRIORS:
        raise PriorError(f"intercept_prior must be one of {list(INTERCEPT_PRIORS)}, got {intercept_prior!r}.")
    mom = design.moments
    entries: list[PriorEntry] = []
    for j, name in enumerate(design.fixed_names):
        if j == design.intercept_index:
            entries.append(PriorEntry("fixed", None, name, Prior("Normal", mu=_intercept_location(design, info), sigma=2.5)))
        else:
            scale = float(mom.x_scale[j]) if float(mom.x_scale[j]) > 0 else 1.0
            entries.append(PriorEntry("fixed", None, name, Prior("Normal", mu=0.0, sigma=2.5 / scale)))
    if info.family.has_dispersion:
        entries.append(PriorEntry("phi", None, None, Prior("Gamma", alpha=0.01, beta=0.01)))
    for kb, b in enumerate(design.blocks):
        for k, term in enumerate(b.terms):
            zs = float(mom.z_scale[kb][k])
            entries.append(PriorEntry("sd", b.label, term, Prior("HalfCauchy", beta=1.0 / zs if zs > 0 else 1.0)))
        if b.q > 1:
            entries.append(PriorEntry("cor", b.label, None, Prior("LKJ", eta=1.0)))
    centered = intercept_prior == "centered" and design.intercept_index is not None and len(design.fixed_names) > 1
    return Priors(tuple(entries), intercept_centered=centered)


def glmm_priors(design: Design, info: GLMMInfo, overrides: Mapping[str, Any] | None, intercept_prior: str) -> Priors:
    """Default priors with the user's overrides (the keys of :func:`bayeslmm.priors.make_priors`, plus ``"phi"``)."""
    return make_priors(design, overrides, defaults=glmm_default_priors(design, info, intercept_prior))


def plan_blocks(design: Design, start: LaplaceFit | None, requested: Mapping[str, str] | None = None) -> dict[str, str]:
    """Per block ``"centered"`` or ``"noncentered"``: the user's choice, else the κ rule with working weights.

    Raises
    ------
    BayesLMMError
        For an unknown block label or value.
    """
    requested = dict(requested or {})
    labels = [b.label for b in design.blocks]
    for k, v in requested.items():
        if k not in labels or v not in ("centered", "noncentered"):
            raise BayesLMMError(
                f"parameterization maps block labels {labels} to 'centered' or 'noncentered'; got {k!r}: {v!r}."
            )
    out: dict[str, str] = {}
    for kb, b in enumerate(design.blocks):
        if b.label in requested:
            out[b.label] = requested[b.label]
            continue
        if start is None:
            out[b.label] = "noncentered"
            continue
        W = start.result.working_weights
        tau2 = start.result.sd[kb] ** 2
        kappas = []
        for t in range(b.q):
            info_g = np.bincount(b.group_idx, W * b.Z[:, t] ** 2, minlength=b.n_levels)
            kappas.append(float(np.median(tau2[t] * info_g)))
        J = b.n_levels
        kappa_low = min(kappas) * (J - 1) / chi2.ppf(KAPPA_CONFIDENCE, J - 1)
        out[b.label] = "centered" if kappa_low >= CENTERED_THRESHOLD else "noncentered"
    return out


def _response_rv(family: GLMFamily, eta: Any, info: GLMMInfo, y: np.ndarray, priors: Priors) -> None:
    link = family.link.name
    if family.is_binomial:
        n = info.weights
        successes = np.round(y * n)
        if link == "logit":
            kw = {"logit_p": eta}
        elif link == "probit":
            kw = {"p": pt.clip(0.5 * (1.0 + pt.erf(eta / np.sqrt(2.0))), 1e-12, 1 - 1e-12)}
        else:
            kw = {"p": pt.clip(1.0 - pt.exp(-pt.exp(eta)), 1e-12, 1 - 1e-12)}
        if family.name == "bernoulli":
            pm.Bernoulli(naming.LIKELIHOOD, **kw, observed=successes, dims=naming.OBS_DIM)
        else:
            pm.Binomial(naming.LIKELIHOOD, n=n.astype(np.int64), **kw, observed=successes, dims=naming.OBS_DIM)
        return
    mu = {"log": lambda e: pt.exp(e), "identity": lambda e: e, "sqrt": lambda e: e**2}[link](eta)
    if family.has_dispersion:
        phi = prior_rv(naming.DISPERSION, [priors.phi()], None, "phi")
        pm.NegativeBinomial(naming.LIKELIHOOD, mu=mu, alpha=phi, observed=y, dims=naming.OBS_DIM)
    else:
        pm.Poisson(naming.LIKELIHOOD, mu=mu, observed=y, dims=naming.OBS_DIM)


def build_glmm_model(design: Design, info: GLMMInfo, priors: Priors, parameterization: Mapping[str, str]) -> pm.Model:
    """The full PyMC model of a GLMM design (see the module docstring).

    Parameters
    ----------
    design
        The design (``y``: proportion or count).
    info
        Family, trials and offset.
    priors
        Priors of every parameter.
    parameterization
        ``{block label: "centered" | "noncentered"}``.

    Returns
    -------
    pm.Model
    """
    with pm.Model(coords=model_coords(design)) as model:
        if priors.intercept_centered or design.intercept_index is None or len(design.fixed_names) <= 1:
            eta = fixed_effects(design, priors)
        else:  # the intercept's prior at x = 0: every coefficient sampled as it is
            beta = prior_rv(naming.FIXED, [priors.fixed(n) for n in design.fixed_names], naming.FIXED_DIM, "the fixed effects")
            eta = pt.dot(design.X, beta)
        for b in design.blocks:
            r = block_effects(b, priors, parameterization.get(b.label) == "centered")
            if b.q == 1:
                eta = eta + r[b.group_idx, 0] * b.Z[:, 0]
            else:
                eta = eta + (r[b.group_idx] * b.Z).sum(axis=1)
        if info.has_offset:
            eta = eta + info.offset
        _response_rv(info.family, eta, info, design.y, priors)
    return model


@dataclass(frozen=True)
class _Start:
    """A Laplace fit in the shape :func:`bayeslmm.inits.reml_initvals` reads (β, σ = 1, block covariances, modes)."""

    beta: np.ndarray
    sigma: float
    block_cov: tuple[np.ndarray, ...]
    ranef: tuple[np.ndarray, ...]


def _initvals(model: pm.Model, design: Design, start: LaplaceFit) -> dict[str, np.ndarray]:
    r = start.result
    cov = tuple(np.outer(s, s) * c for s, c in zip(r.sd, r.cor))
    init = reml_initvals(model, design, _Start(r.beta, 1.0, cov, r.ranef))
    names = {v.name for v in model.free_RVs}
    if naming.FIXED in names and naming.FIXED not in init:
        init[naming.FIXED] = np.asarray(r.beta)
    if naming.DISPERSION in names and np.isfinite(r.phi):
        init[naming.DISPERSION] = np.asarray(r.phi)
    return init


def sample_glmm(
    design: Design,
    info: GLMMInfo,
    start: LaplaceFit | None,
    *,
    priors: Mapping[str, Any] | None = None,
    intercept_prior: str = "centered",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    random_seed: int | None = None,
    target_accept: float = 0.8,
    sampler: str = "pymc",
    progressbar: bool = True,
    cores: int | None = None,
    parameterization: Mapping[str, str] | None = None,
    use_start: bool = True,
) -> GLMMBayesFit:
    """Sample the posterior of a GLMM design by NUTS and wrap it as a :class:`~bayeslmm.glmm.fit.GLMMBayesFit`."""
    settings = stages.sampler_settings(
        draws=draws, tune=tune, chains=chains, random_seed=random_seed, target_accept=target_accept,
        sampler=sampler, progressbar=progressbar, cores=cores,
    )
    prior_set = glmm_priors(design, info, priors, intercept_prior)
    param = plan_blocks(design, start, parameterization)
    model = build_glmm_model(design, info, prior_set, param)
    initvals = _initvals(model, design, start) if (use_start and start is not None) else None
    idata = run_nuts(model, settings, initvals=initvals)
    var_names = ([naming.FIXED] if design.fixed_names else []) + [
        name for b in design.blocks for name in ([naming.sd(b.label)] + ([naming.cor(b.label)] if b.q > 1 else []))
    ]
    if info.family.has_dispersion:
        var_names.append(naming.DISPERSION)
    diag = diagnose(idata, var_names, settings.tune, settings.target_accept, parameterization=param)
    fit = GLMMBayesFit(
        design=design, glmm=info, priors=prior_set, idata=idata, settings=settings, diagnostics=diag,
        parameterization=param, laplace=start,
    )
    if design.nobs * fit.params.n_draws <= MAX_STORED_VALUES:
        fit.store_log_likelihood()  # for loo()/waic()/az.loo
    return fit
