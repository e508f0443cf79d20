"""The user-facing entry point, :func:`lmer`: a composition of the stages of :mod:`bayeslmm.stages`."""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping

from . import stages
from .errors import BayesLMMError
from .parameterization import plan_parameterization
from .priors import make_priors
from .reml_fit import fit_frequentist
from .results import fit_posterior

__all__ = ["lmer"]


def lmer(
    formula: str,
    data: Any,
    method: str = "NUTS",
    *,
    priors: Mapping[str, Any] | None = None,
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
    init: str = "reml",
    collapse: bool | None = None,
    formula_env: str = "caller",
    family: str = "gaussian",
):
    """Fit a linear mixed model written as an lme4 formula.

    Parameters
    ----------
    formula
        lme4 formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``. Supports
        ``(x | g)``, ``(0 + x | g)``, ``(x || g)``, ``(1 | a/b)``, crossed factors,
        interactions, ``C()`` categorical predictors and transformations such as
        ``log(x)``, ``np.sqrt(x)``, ``I(x**2)``, ``{x / 2}``, ``poly(x, 2)`` and
        ``scale(x)``, also inside bars (``(log(Days + 1) | Subject)``).

        **A formula is code.** formulae evaluates the calls in it in the
        caller's namespace, as R and patsy do: ``"y ~ os.system('...') + (1|g)"``
        runs the command if the caller has imported ``os``. Never pass a formula
        from an untrusted source with the default ``formula_env``.
    data
        A pandas or polars DataFrame or a pyarrow Table (it is not modified), or, for data larger
        than memory, a path, directory or glob of Parquet files or a dask DataFrame: the fit is then
        computed out of core in one Dask pass over the partitions (models with one grouping factor
        or two nested ones; see :mod:`bayeslmm.datasource` and ``docs/large_data.md``).
    method
        ``"NUTS"`` (Bayesian, the default), ``"REML"`` or ``"ML"``.
    priors
        Overrides of the default priors, ``{"Days": {"dist": "Normal", "mu": 0, "sigma": 5}, ...}``;
        see :func:`bayeslmm.priors.make_priors` for the keys.
    draws, tune, chains, random_seed, target_accept
        NUTS settings. The same seed gives the same draws.
    sampler
        ``"pymc"`` (default), ``"nutpie"`` or ``"numpyro"`` (the last two need
        ``pip install 'bayeslmm[fast]'``).
    progressbar
        Show progress on standard error: one display for all chains (a line rewritten in place in a
        terminal, a few plain lines elsewhere); False: silent.
    cores
        Processes for the chains; None: every available CPU, up to ``chains``. With
        ``sampler="pymc"`` the chains run in forked processes, each chain from its own seed, so
        the draws do not depend on ``cores``.
    na_action
        ``"drop"`` (drop incomplete rows with a warning giving the count) or ``"raise"``.
    parameterization
        ``{block label: "centered" | "noncentered"}`` for the full model; blocks
        not named get centered when their groups' data are informative and
        non-centered otherwise (see ``docs/collapsed.md``). Naming any block
        selects the full model unless ``collapse=True``.
    init
        ``"reml"`` (default): start NUTS at the REML estimates of the same
        design (jittered per chain); ``"prior"``: PyMC's default start.
    formula_env
        ``"caller"`` (default): the formula's functions are looked up in the
        caller's namespace, then numpy as ``np`` and the allowlisted functions
        of :mod:`bayeslmm.transforms` (so ``log(x)`` needs no import).
        ``"closed"``: for a formula that is not trusted code (what the command
        line uses). The formula is checked, before anything is evaluated, to
        use only data columns, numbers, arithmetic and comparisons, ``log``,
        ``log1p``, ``log2``, ``log10``, ``exp``, ``sqrt``, ``abs`` (or
        ``np.``-prefixed), ``center``, ``scale``, ``standardize``, ``poly`` and
        ``C``, and is evaluated in a namespace holding only those.
    collapse
        ``None`` (default): integrate the group effects out when every block
        belongs to one grouping factor or to two nested ones (the collapsed
        Gaussian likelihood; group effects are then drawn exactly after
        sampling); ``True``: require it, and for crossed factors with one
        scalar term each integrate the largest factor's effects out and sample
        the rest (:mod:`bayeslmm.crossed`, ``docs/crossed.md``); ``False``:
        sample the full model. ``fit.parameterization`` records what was used.

    family
        ``"gaussian"`` only; any other family raises an error pointing to
        :func:`bayeslmm.glmer`, as lme4's ``lmer`` points to ``glmer``.

    Returns
    -------
    BayesFit or REMLFit
    """
    if not (isinstance(family, str) and family.lower() == "gaussian"):
        raise BayesLMMError(
            f"lmer fits Gaussian responses; for family={family!r} use bayeslmm.glmer(formula, data, "
            f"family={family!r}), as lme4's glmer."
        )
    method = stages.check_method(method)
    env, closed = stages.formula_environment(formula_env, frames_up=1)
    design = stages.model_design(formula, data, na_action=na_action, env=env, closed=closed)
    if method != "NUTS":
        return fit_frequentist(design, method)
    settings = stages.sampler_settings(
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=random_seed,
        target_accept=target_accept,
        sampler=sampler,
        progressbar=progressbar,
        cores=cores,
    )
    prior_set = make_priors(design, priors)
    param = plan_parameterization(design, collapse, parameterization)
    param = stages.runnable_parameterization(design, prior_set, param, settings)
    start = stages.start_values(design, param, init)
    factory = stages.model_factory(design, prior_set, param)
    idata = stages.sample(design, prior_set, param, factory, settings, start)
    return fit_posterior(design, prior_set, param, factory, settings, idata)
