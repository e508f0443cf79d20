"""The stages :func:`bayeslmm.lmer` composes, each a public function.

They play the part of lme4's exported stages of ``lmer`` (``lFormula``, ``mkLmerDevfun``,
``optimizeLmer``, ``mkMerMod``).

A fit by NUTS runs (the numbers are those the stage modules' docstrings use)::

    check_method → formula_environment → model_design (stages 1-2: formula, design)
        → sampler_settings → make_priors (stage 3) → plan_parameterization (stage 4a)
        → runnable_parameterization → start_values → model_factory (stage 4) → sample (stage 5)
        → fit_posterior

and a REML/ML fit::

    check_method → formula_environment → model_design → fit_frequentist

Calling the stages in this order with :func:`lmer`'s arguments gives the same fit, draw for draw
under the same seed; a stage may be replaced (another design, another start) to study one step.
The stages that are not in this module belong to the modules of what they make:
:func:`~bayeslmm.priors.make_priors`, :func:`~bayeslmm.parameterization.plan_parameterization`,
and the fit objects' :func:`~bayeslmm.results.fit_posterior` and
:func:`~bayeslmm.reml_fit.fit_frequentist`. This module imports neither fit class, so
:mod:`bayeslmm.reloo` refits through these same stages.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from . import naming
from .compat import Environment, extend_environment
from .datasource import design_from_data
from .design import Design, default_env
from .errors import BayesLMMError
from .formula import parse_formula
from .model import build_model  # also links PyTensor's BLAS (bayeslmm.compat.link_pip_blas) before any graph compiles
from .parameterization import full_model_parameterization, fully_collapsed, partly_collapsed
from .priors import Priors
from .reml import REMLResult
from .sampling import SamplerSettings

if TYPE_CHECKING:
    import pymc as pm
    import xarray as xr

__all__ = [
    "BAYES_METHODS",
    "LIKELIHOOD_METHODS",
    "check_method",
    "formula_environment",
    "model_design",
    "sampler_settings",
    "runnable_parameterization",
    "start_values",
    "model_factory",
    "sample",
    "sampled_vars",
]

#: Spellings of ``method=`` that mean NUTS.
BAYES_METHODS = frozenset({"nuts", "bayes", "bayesian", "mcmc"})
#: Spellings of ``method=`` that mean a likelihood fit (lower case; the fit records them upper case).
LIKELIHOOD_METHODS = frozenset({"reml", "ml"})
INITS = ("reml", "prior")


def check_method(method: str) -> str:
    """The fitting method ``lmer`` was asked for, as ``"NUTS"``, ``"REML"`` or ``"ML"``.

    Parameters
    ----------
    method
        ``"NUTS"`` (or ``"bayes"``, ``"bayesian"``, ``"mcmc"``), ``"REML"`` or ``"ML"``, in any case.

    Returns
    -------
    str
        The method's canonical name.

    Raises
    ------
    BayesLMMError
        If ``method`` is none of these.
    """
    if not isinstance(method, str) or method.lower() not in BAYES_METHODS | LIKELIHOOD_METHODS:
        raise BayesLMMError(f"method must be 'NUTS', 'REML' or 'ML', got {method!r}.")
    return "NUTS" if method.lower() in BAYES_METHODS else method.upper()


def formula_environment(formula_env: str = "caller", frames_up: int = 0) -> tuple[Environment, bool]:
    """The namespace a formula's functions are looked up in, and whether it is the closed one.

    Parameters
    ----------
    formula_env
        ``"caller"``: the calling frame's namespace, then numpy as ``np`` and the allowlisted
        functions of :mod:`bayeslmm.transforms`; ``"closed"``: only the allowlist (see
        :func:`bayeslmm.lmer`).
    frames_up
        How many frames above the caller of this function the ``"caller"`` namespace is taken
        from: 0 for the caller itself, 1 for a function (such as :func:`bayeslmm.lmer`) that
        passes its own caller's namespace on.

    Returns
    -------
    tuple of (formulae Environment, bool)
        The environment, and True for the closed one.

    Raises
    ------
    BayesLMMError
        If ``formula_env`` is neither ``"caller"`` nor ``"closed"``.
    """
    from .transforms import closed_namespace, fallback_namespace

    if formula_env == "closed":
        return Environment([closed_namespace()]), True
    if formula_env == "caller":
        env = Environment.capture(0, reference=1 + frames_up)
        return extend_environment(env, {"np": np}, fallback_namespace()), False
    raise BayesLMMError(f"formula_env must be 'caller' or 'closed', got {formula_env!r}.")


def model_design(
    formula: str, data: Any, na_action: str = "drop", env: Environment | None = None, closed: bool = False
) -> Design:
    """Parse a formula and evaluate it on data: lme4's ``lFormula``.

    Parameters
    ----------
    formula
        An lme4 formula.
    data
        Data of any kind :mod:`bayeslmm.datasource` accepts (in memory or out of core).
    na_action
        ``"drop"`` or ``"raise"``.
    env
        The formula's namespace (:func:`formula_environment`); None: numpy and the allowlist.
    closed
        True when ``env`` is the closed namespace: the formula is then checked against the
        allowlist before anything is evaluated.

    Returns
    -------
    Design
        The response, fixed-effect matrix and random-effect blocks.
    """
    return design_from_data(parse_formula(formula), data, na_action=na_action, env=env or default_env(), closed=closed)


def sampler_settings(**kwargs: Any) -> SamplerSettings:
    """NUTS settings, checked: the keyword arguments of :class:`~bayeslmm.sampling.SamplerSettings`.

    Parameters
    ----------
    **kwargs
        ``draws``, ``tune``, ``chains``, ``random_seed``, ``target_accept``, ``sampler``,
        ``progressbar``, ``cores``.

    Returns
    -------
    SamplerSettings

    Raises
    ------
    BayesLMMError
        If a setting is out of range or the sampler is not installed.
    """
    settings = SamplerSettings(**kwargs)
    settings.validate()
    return settings


#: Samplers that run the compiled crossed posterior (:mod:`bayeslmm.crossed`).
CROSSED_SAMPLERS = ("pymc", "nutpie")


def runnable_parameterization(
    design: Design, priors: Priors, parameterization: dict[str, str], settings: SamplerSettings
) -> dict[str, str]:
    """The plan the sampler will run.

    A plan that integrates only the largest crossed factor out (:mod:`bayeslmm.crossed`) needs
    compiled densities of every prior and a sampler that takes a log-density target; when a prior
    or ``sampler="numpyro"`` rules that out, the plan becomes the full model's
    (:func:`~bayeslmm.parameterization.full_model_parameterization`). Other plans are returned as they are.

    Parameters
    ----------
    design, priors
        The design and its priors.
    parameterization
        The plan (:func:`~bayeslmm.parameterization.plan_parameterization`).
    settings
        The sampler settings.

    Returns
    -------
    dict
        Per block label, ``"collapsed"``, ``"centered"`` or ``"noncentered"``.
    """
    if not partly_collapsed(parameterization):
        return dict(parameterization)
    if settings.sampler in CROSSED_SAMPLERS:
        from .crossed.posterior import CrossedPosterior  # imports numba only when needed

        if CrossedPosterior.build(design, priors, parameterization) is not None:
            return dict(parameterization)
    return full_model_parameterization(design, parameterization)


def start_values(design: Design, parameterization: dict[str, str], init: str = "reml") -> REMLResult | None:
    """Where NUTS starts: the REML fit of the design, or None for the sampler's own start.

    For the collapsed model the REML fit is computed on the compressed rows the collapsed
    likelihood uses (:func:`bayeslmm.compressed.compress`), so in-memory and out-of-core data
    start alike. A REML fit that fails gives None.

    Parameters
    ----------
    design
        The design.
    parameterization
        Per block, ``"collapsed"``, ``"centered"`` or ``"noncentered"``
        (:func:`~bayeslmm.parameterization.plan_parameterization`).
    init
        ``"reml"`` or ``"prior"`` (PyMC's default start: None).

    Returns
    -------
    REMLResult or None

    Raises
    ------
    BayesLMMError
        If ``init`` is neither ``"reml"`` nor ``"prior"``.
    """
    import warnings

    from .compressed import compress
    from .reml import fit_reml

    if init not in INITS:
        raise BayesLMMError(f"init must be 'reml' or 'prior', got {init!r}.")
    if init == "prior":
        return None
    fitted = compress(design) if fully_collapsed(parameterization) else design
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_reml(fitted, "REML", condvar=False)
    except BayesLMMError:
        return None


def _built(model: Any) -> Any:
    """The model itself: the full model is built before sampling, so its factory returns it."""
    return model


def model_factory(design: Design, priors: Priors, parameterization: dict[str, str]) -> Callable[[], pm.Model]:
    """What builds the fit's PyMC model.

    The full model is built here, once (its factory returns it); the collapsed model is built
    only if the sampler or a later output needs its PyMC graph.

    Parameters
    ----------
    design, priors
        The design and its priors.
    parameterization
        Per block, ``"collapsed"``, ``"centered"`` or ``"noncentered"``.

    Returns
    -------
    callable
        No arguments; returns the PyMC model.
    """
    if fully_collapsed(parameterization):
        from .collapsed import build_collapsed_model

        return partial(build_collapsed_model, design, priors)
    if partly_collapsed(parameterization):  # the crossed posterior samples without it: the full model, when asked for
        return partial(build_model, design, priors, full_model_parameterization(design, parameterization))
    return partial(_built, build_model(design, priors, parameterization))


def sample(
    design: Design,
    priors: Priors,
    parameterization: dict[str, str],
    factory: Callable[[], pm.Model],
    settings: SamplerSettings,
    start: REMLResult | None = None,
) -> xr.DataTree:
    """Posterior draws by NUTS, with the full model's variables whatever was sampled.

    Parameters
    ----------
    design, priors, parameterization
        As for :func:`model_factory`.
    factory
        The model's factory (:func:`model_factory`).
    settings
        The sampler settings (:func:`sampler_settings`).
    start
        Starting values (:func:`start_values`); None: the sampler's own.

    Returns
    -------
    xarray.DataTree
        The posterior and sampler statistics.
    """
    if fully_collapsed(parameterization):
        from .collapsed.sample import sample_collapsed_model  # imports numba only when needed

        return sample_collapsed_model(design, priors, factory, settings, start)
    if partly_collapsed(parameterization):
        from .crossed.posterior import CrossedPosterior, sample_crossed_model  # imports numba only when needed

        posterior = CrossedPosterior.build(design, priors, parameterization)
        if posterior is None:
            raise BayesLMMError(
                "This plan integrates the largest crossed factor out, which these priors or this design do not "
                "allow; pass the plan through runnable_parameterization first."
            )
        return sample_crossed_model(posterior, settings, start)
    from .inits import reml_initvals
    from .sampling import run_nuts

    model = factory()
    return run_nuts(model, settings, initvals=reml_initvals(model, design, start) if start is not None else None)


def sampled_vars(design: Design) -> list[str]:
    """The PyMC names of the parameters whose convergence is diagnosed: σ, β, and per block its sds and correlations."""
    names = [naming.SIGMA]
    if design.fixed_names:
        names.append(naming.FIXED)
    for b in design.blocks:
        names.append(naming.sd(b.label))
        if b.q > 1:
            names.append(naming.cor(b.label))
    return names
