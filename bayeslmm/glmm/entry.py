"""The user-facing entry point :func:`glmer`: response stage → design → Laplace fit → (NUTS) → fit object."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from .. import stages
from ..compat import Environment
from ..datasource import design_from_data
from ..design import Design
from ..errors import BayesLMMError, DataError
from ..formula import parse_formula
from .families import get_family
from .fit import GLMMInfo, LaplaceFit
from .laplace import GLMMData, fit_laplace
from .response import PLACEHOLDER, parse_response

__all__ = ["glmer", "glmm_design", "laplace_fit"]

METHODS = {"laplace": "Laplace", "nuts": "NUTS", "bayes": "NUTS", "bayesian": "NUTS", "mcmc": "NUTS"}


def glmm_design(
    formula: str,
    data: Any,
    family: str = "binomial",
    link: str | None = None,
    weights: Any = None,
    offset: Any = None,
    na_action: str = "drop",
    env: Environment | None = None,
    closed: bool = False,
) -> tuple[Design, GLMMInfo]:
    """Stages 1-2 of a GLMM: the response forms and offsets, then the design of the right-hand side.

    Returns the design (whose ``y`` is the proportion of successes or the
    count of each kept row) and the :class:`~bayeslmm.glmm.fit.GLMMInfo`
    (family, trials, offset).
    """
    fam = get_family(family, link)
    if hasattr(data, "to_pandas") and not isinstance(data, pd.DataFrame):
        data = data.to_pandas()
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"glmer needs a pandas (or polars) DataFrame, got {type(data).__name__}.")
    resp = parse_response(formula, data, fam, weights, offset)
    missing = np.isnan(resp.y) | np.isnan(resp.weights) | np.isnan(resp.offset)
    frame = data.copy()
    frame[PLACEHOLDER] = np.where(missing, np.nan, np.arange(len(data), dtype=float))
    design = design_from_data(parse_formula(resp.formula), frame, na_action=na_action, env=env, closed=closed)
    pos = design.y.astype(np.int64)
    if fam.name == "bernoulli" and np.any(resp.weights[pos] != 1):
        raise DataError("family='bernoulli' takes one trial per row; for counts of successes use family='binomial'.")
    design = replace(design, y=resp.y[pos])
    info = GLMMInfo(fam, resp.weights[pos], resp.offset[pos], formula, resp.offsets)
    return design, info


def glmm_data(design: Design, info: GLMMInfo) -> GLMMData:
    """The engine's arrays of a design."""
    return GLMMData(
        y=design.y, weights=info.weights, offset=info.offset, X=design.X,
        group_idx=tuple(b.group_idx for b in design.blocks), Z=tuple(b.Z for b in design.blocks),
        n_levels=tuple(b.n_levels for b in design.blocks),
    )


def laplace_fit(design: Design, info: GLMMInfo, nagq: int = 1) -> LaplaceFit:
    """Fit a GLMM design by the Laplace approximation (``nagq=1``) or adaptive Gauss-Hermite quadrature."""
    if not design.blocks:
        raise BayesLMMError(f"The formula {info.formula!r} has no random-effect term such as (1 | g); glmer needs one.")
    return LaplaceFit(design=design, glmm=info, result=fit_laplace(glmm_data(design, info), info.family, nagq))


def glmer(
    formula: str,
    data: Any,
    family: str = "binomial",
    method: str = "NUTS",
    *,
    link: str | None = None,
    weights: Any = None,
    offset: Any = None,
    nAGQ: int = 1,  # noqa: N803 - lme4's name
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
    na_action: str = "drop",
    parameterization: Mapping[str, str] | None = None,
    init: str = "laplace",
    formula_env: str = "caller",
):
    """Fit a generalized linear mixed model written as an lme4 formula.

    Parameters
    ----------
    formula
        lme4 formula. The response may be a 0/1, boolean or two-level column
        (the second level is success), ``cbind(successes, failures)``,
        ``p(successes, trials)`` (Bambi), a proportion with ``weights=`` the
        trials, or a count; ``offset(log(exposure))`` terms are offsets.
    data
        A pandas or polars DataFrame (not modified).
    family
        ``"binomial"``, ``"bernoulli"``, ``"poisson"`` or ``"negative_binomial"`` (NB2, Var = μ + μ²/φ).
    method
        ``"NUTS"`` (Bayesian, the default) or ``"Laplace"`` (lme4's ``glmer`` maximum likelihood).
    link
        The link; default the family's canonical one. Binomial: ``logit``,
        ``probit``, ``cloglog``; Poisson: ``log``, ``identity``, ``sqrt``.
    weights
        Trials of a proportion response (binomial), as lme4's ``weights=``: a column name or values.
    offset
        Link-scale offset, a column name or values (added to ``offset()`` terms).
    nAGQ
        Method ``"Laplace"``: quadrature nodes per group effect (1: Laplace; more: adaptive
        Gauss-Hermite, for one scalar random-effect term), as lme4.
    priors
        Overrides of the default priors, keyed as for :func:`bayeslmm.lmer` (``"phi"`` for the negative
        binomial's dispersion); the defaults are in ``docs/priors.md``.
    intercept_prior
        ``"centered"`` (default): the intercept's prior is on the intercept at the means of the
        predictors (as brms and rstanarm); ``"x0"``: on the intercept at x = 0 (brms's ``0 + Intercept``).
    draws, tune, chains, random_seed, target_accept, sampler, progressbar, cores
        NUTS settings, as for :func:`bayeslmm.lmer`.
    na_action
        ``"drop"`` (with a warning giving the count) or ``"raise"``.
    parameterization
        ``{block label: "centered" | "noncentered"}``; blocks not named are chosen from how informative
        each group's data are (the Laplace fit's working weights; see ``docs/glmm.md``).
    init
        ``"laplace"`` (default): start the chains at the Laplace fit; ``"prior"``: PyMC's default start.
    formula_env
        ``"caller"`` or ``"closed"``, as for :func:`bayeslmm.lmer`.

    Returns
    -------
    GLMMBayesFit or LaplaceFit

    Raises
    ------
    BayesLMMError
        For an unknown method, family or link, a response that does not fit the family (the message
        names the column and the rows), or bad settings.
    """
    if not isinstance(method, str) or method.lower() not in METHODS:
        raise BayesLMMError(f"method must be 'NUTS' or 'Laplace', got {method!r}.")
    env, closed = stages.formula_environment(formula_env, frames_up=1)
    design, info = glmm_design(formula, data, family, link, weights, offset, na_action, env, closed)
    if METHODS[method.lower()] == "Laplace":
        return laplace_fit(design, info, nAGQ)
    if nAGQ != 1:
        raise BayesLMMError("nAGQ applies to method='Laplace'; NUTS integrates the group effects by sampling them.")
    if init not in ("laplace", "prior"):
        raise BayesLMMError(f"init must be 'laplace' or 'prior', got {init!r}.")
    from .bayes import sample_glmm

    start = None
    if init == "laplace" or parameterization is None or len(parameterization) < len(design.blocks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                start = laplace_fit(design, info)
            except BayesLMMError:
                start = None
    return sample_glmm(
        design, info, start, priors=priors, intercept_prior=intercept_prior, draws=draws, tune=tune, chains=chains,
        random_seed=random_seed, target_accept=target_accept, sampler=sampler, progressbar=progressbar,
        cores=cores, parameterization=parameterization, use_start=init == "laplace",
    )
