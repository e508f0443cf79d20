"""The user-facing entry point, :func:`lmer`: runs the pipeline stages in order."""

from __future__ import annotations

from functools import partial
from typing import Any
from collections.abc import Mapping

from . import naming
from .compat import Environment, extend_environment
from .fitstats import add_log_likelihood
from .collapsed import build_collapsed_model
from .datasource import design_from_data
from .design import Design, default_env
from .errors import BayesLMMError
from .formula import parse_formula
from .inits import reml_initvals
from .model import build_model
from .parameterization import full_model_parameterization, fully_collapsed, partly_collapsed, plan_parameterization
from .priors import make_priors
from .reml import REMLResult
from .transforms import closed_namespace, fallback_namespace
from .results import BayesFit
from .sampling import SamplerSettings, diagnose, run_nuts

__all__ = ["lmer", "design_for"]

BAYES_METHODS = {"nuts", "bayes", "bayesian", "mcmc"}
FREQ_METHODS = {"reml", "ml"}


def design_for(formula: str, data: Any, na_action: str = "drop", env: Environment | None = None) -> Design:
    """Parse a formula and evaluate it on data of any kind :mod:`bayeslmm.datasource` accepts (stages 1-2)."""
    return design_from_data(parse_formula(formula), data, na_action=na_action, env=env or default_env())


def _sampled_vars(design: Design) -> list[str]:
    names = [naming.SIGMA]
    if design.fixed_names:
        names.append(naming.FIXED)
    for b in design.blocks:
        names.append(naming.sd(b.label))
        if b.q > 1:
            names.append(naming.cor(b.label))
    return names


def _built(model: Any) -> Any:
    """The model itself: the full model is built before sampling, so its factory returns it."""
    return model


def _reml_start(design: Design, collapsed: bool = False) -> REMLResult | None:
    """The REML fit of the design, for starting values; None if it fails.

    For the collapsed model it is fitted on the compressed rows the collapsed likelihood uses
    (:func:`bayeslmm.compressed.compress`), so in-memory and out-of-core data start NUTS alike.
    """
    import warnings

    from .compressed import compress
    from .reml import fit_reml

    design = compress(design) if collapsed else design
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fit_reml(design, "REML", condvar=False)
    except BayesLMMError:
        return None


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
        sampling); ``True``: require it; ``False``: sample the full model.
        ``fit.parameterization`` records what was used.

    Returns
    -------
    BayesFit or REMLFit
    """
    if not isinstance(method, str) or method.lower() not in BAYES_METHODS | FREQ_METHODS:
        raise BayesLMMError(f"method must be 'NUTS', 'REML' or 'ML', got {method!r}.")
    if formula_env == "closed":
        env, closed = Environment([closed_namespace()]), True
    elif formula_env == "caller":
        env = extend_environment(Environment.capture(0, reference=1), {"np": __import__("numpy")}, fallback_namespace())
        closed = False
    else:
        raise BayesLMMError(f"formula_env must be 'caller' or 'closed', got {formula_env!r}.")
    design = design_from_data(parse_formula(formula), data, na_action=na_action, env=env, closed=closed)
    if method.lower() in FREQ_METHODS:
        from .reml_fit import fit_frequentist

        return fit_frequentist(design, method.upper())
    settings = SamplerSettings(
        draws=draws,
        tune=tune,
        chains=chains,
        random_seed=random_seed,
        target_accept=target_accept,
        sampler=sampler,
        progressbar=progressbar,
        cores=cores,
    )
    settings.validate()
    prior_set = make_priors(design, priors)
    param = plan_parameterization(design, collapse, parameterization)
    if init not in ("reml", "prior"):
        raise BayesLMMError(f"init must be 'reml' or 'prior', got {init!r}.")
    start = _reml_start(design, fully_collapsed(param)) if init == "reml" else None
    crossed = None
    if partly_collapsed(param) and settings.sampler in ("pymc", "nutpie"):
        from .crossed.posterior import CrossedPosterior  # imports numba only when needed

        crossed = CrossedPosterior.build(design, prior_set, param)
    if partly_collapsed(param) and crossed is None:  # a prior or sampler the compiled posterior lacks: the full model
        param = full_model_parameterization(design, param)
    if fully_collapsed(param):
        from .collapsed.sample import sample_collapsed_model  # imports numba only when needed

        model_factory = partial(build_collapsed_model, design, prior_set)
        idata = sample_collapsed_model(design, prior_set, model_factory, settings, start)
    elif crossed is not None:
        from .crossed.posterior import sample_crossed_model

        model_factory = partial(build_model, design, prior_set, full_model_parameterization(design, param))
        idata = sample_crossed_model(crossed, settings, start)
    else:
        model = build_model(design, prior_set, param)
        model_factory = partial(_built, model)
        idata = run_nuts(model, settings, initvals=reml_initvals(model, design, start) if start is not None else None)
    diag = diagnose(idata, _sampled_vars(design), settings.tune, settings.target_accept, parameterization=param)
    fit = BayesFit(
        design=design,
        priors=prior_set,
        model_factory=model_factory,
        idata=idata,
        settings=settings,
        diagnostics=diag,
        parameterization=param,
    )
    add_log_likelihood(idata, design, fit.params)  # for loo()/waic()/az.loo, from the fit's cached array core
    return fit
