"""Model checking and comparison: log-likelihood, posterior predictive, LOO, WAIC, R², ICC.

The pointwise log-likelihood is computed in NumPy from the fit's parameter
draws (the family's log-density of ``y`` given the per-draw linear predictor
and σ; normal for a linear mixed model) and stored in the fit's ``DataTree`` as the ``log_likelihood`` group
when the fit is made (:func:`add_log_likelihood`), so ``fit.loo()`` and
``arviz.loo(fit.idata)`` need no extra flag. For very large fits
(n × draws > :data:`MAX_STORED_VALUES`) it is not stored; :func:`psis_loo`
and :func:`waic` then compute it on the fly each time they are called.

The functions take the pieces of a fit (its ``DataTree``, design and
:class:`~bayeslmm.paramdraws.ParamDraws`); the fit objects call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr
from scipy.special import logsumexp

from . import naming
from .design import Design
from .errors import BayesLMMError
from .paramdraws import ParamDraws, Rows, draw_chunks

__all__ = [
    "MAX_STORED_VALUES",
    "pointwise_log_likelihood",
    "add_log_likelihood",
    "log_likelihood_draws",
    "with_log_likelihood",
    "predictive_draws",
    "add_posterior_predictive",
    "psis_loo",
    "WAIC",
    "waic",
    "compare_models",
    "r2_draws",
    "icc_draws",
]

#: Largest n × total draws for which the log-likelihood is stored at fit time.
MAX_STORED_VALUES = 20_000_000  # 160 MB of float64
_HALF_LOG_2PI = 0.5 * float(np.log(2 * np.pi))


# ---------------------------------------------------------------------------
# Log-likelihood
# ---------------------------------------------------------------------------
def pointwise_log_likelihood(design: Design, params: ParamDraws) -> np.ndarray:
    """Log-density of every observation under every draw, ``(S, n)``.

    ``log p(y_i | μ_si, σ_s)`` of the family (normal for a linear mixed model),
    with μ gathered per draw, in blocks of draws.
    """
    out = np.empty((params.n_draws, design.nobs))
    for sel, mu in draw_chunks(Rows.from_design(design), params):
        out[sel] = params.family.log_density(design.y, params.family.linkinv(mu), params.sigma[sel, None])
    return out


def _obs_array(params: ParamDraws, values: np.ndarray, idata: Any) -> xr.DataArray:
    """``(S, n)`` values as a ``(chain, draw, obs)`` DataArray with the posterior's coordinates."""
    post = idata.posterior
    return xr.DataArray(
        params.to_chains(values),
        dims=("chain", "draw", naming.OBS_DIM),
        coords={
            "chain": post["chain"].values,
            "draw": post["draw"].values,
            naming.OBS_DIM: np.arange(values.shape[1]),
        },
    )


def _log_likelihood_tree(idata: Any, design: Design, params: ParamDraws) -> xr.DataTree:
    da = _obs_array(params, pointwise_log_likelihood(design, params), idata)
    return xr.DataTree(xr.Dataset({naming.LIKELIHOOD: da}))


def add_log_likelihood(idata: Any, design: Design, params: ParamDraws) -> bool:
    """Store the pointwise log-likelihood as ``idata["log_likelihood"]`` (variable ``y``).

    Parameters
    ----------
    idata
        The posterior ``DataTree``; modified in place.
    design
        The training design.
    params
        The same posterior as arrays (``fit.params``).

    Returns
    -------
    bool
        Whether it was stored (``False`` when n × draws > :data:`MAX_STORED_VALUES`).
    """
    if design.summary is not None or design.nobs * params.n_draws > MAX_STORED_VALUES:
        return False  # an out-of-core design keeps no rows: computing it would mean loading them
    idata["log_likelihood"] = _log_likelihood_tree(idata, design, params)
    return True


def with_log_likelihood(idata: Any, design: Design, params: ParamDraws) -> Any:
    """``idata`` if it holds the log-likelihood, else a shallow copy with it computed."""
    if "log_likelihood" in idata.children:
        return idata
    tree = idata.copy()
    tree["log_likelihood"] = _log_likelihood_tree(idata, design, params)
    return tree


def log_likelihood_draws(idata: Any, design: Design, params: ParamDraws) -> np.ndarray:
    """The pointwise log-likelihood ``(S, n)``: the stored group, or computed when it was not stored."""
    if "log_likelihood" in idata.children:
        ll = np.asarray(idata["log_likelihood"][naming.LIKELIHOOD].values, dtype=float)
        return ll.reshape(-1, ll.shape[-1])
    return pointwise_log_likelihood(design, params)


# ---------------------------------------------------------------------------
# Posterior predictive
# ---------------------------------------------------------------------------
def predictive_draws(design: Design, params: ParamDraws, rng: np.random.Generator) -> np.ndarray:
    """Replicated responses ``y_rep`` (``μ`` plus the family's noise) for the training rows, ``(S, n)``."""
    out = np.empty((params.n_draws, design.nobs))
    for sel, mu in draw_chunks(Rows.from_design(design), params):
        out[sel] = params.family.draw(params.family.linkinv(mu), params.sigma[sel, None], rng)
    return out


def add_posterior_predictive(idata: Any, design: Design, params: ParamDraws, random_seed: int | None = None) -> Any:
    """Draw ``y_rep`` for the training data into ``idata.posterior_predictive`` and return ``idata``.

    The variable is ``y`` (:data:`bayeslmm.naming.LIKELIHOOD`) with dims
    ``(chain, draw, obs)``, matching ``observed_data``, so
    ``arviz.plot_ppc_dist(idata)`` works. A previous ``posterior_predictive``
    group is replaced.
    """
    y_rep = predictive_draws(design, params, np.random.default_rng(random_seed))
    idata["posterior_predictive"] = xr.DataTree(xr.Dataset({naming.LIKELIHOOD: _obs_array(params, y_rep, idata)}))
    return idata


# ---------------------------------------------------------------------------
# LOO, WAIC, comparison
# ---------------------------------------------------------------------------
def psis_loo(idata: Any, design: Design, params: ParamDraws, pointwise: bool = True) -> Any:
    """PSIS-LOO cross-validation through :func:`arviz.loo`, without ArviZ's Pareto-k warning.

    The caller reports high Pareto k values (``BayesFit.loo`` refits them or
    warns once, naming the observations).

    Returns
    -------
    arviz.ELPDDataLOO
        ``elpd``, ``se``, ``p`` (p_loo), ``elpd_i`` (one per row), ``pareto_k``, ``good_k``.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Estimated shape parameter of Pareto")
        return az.loo(with_log_likelihood(idata, design, params), pointwise=pointwise, var_name=naming.LIKELIHOOD)


@dataclass(frozen=True)
class WAIC:
    """The widely applicable information criterion of a fit.

    Attributes
    ----------
    elpd_waic
        Σ_i (lppd_i − p_i), the estimated expected log predictive density.
    se
        Its standard error, sqrt(n · var_i(elpd_i)).
    p_waic
        Effective number of parameters Σ_i var_s(log p(y_i | θ_s)).
    waic
        −2 · elpd_waic (deviance scale, like ``looic``).
    elpd_i, p_i
        Pointwise values, one per row.
    warning
        True if some p_i > 0.4, where WAIC is unreliable (prefer LOO).
    """

    elpd_waic: float
    se: float
    p_waic: float
    waic: float
    elpd_i: np.ndarray
    p_i: np.ndarray
    warning: bool

    def __str__(self) -> str:
        lines = [
            f"WAIC from {self.elpd_i.shape[0]} observations",
            f"  elpd_waic {self.elpd_waic:10.2f}  (se {self.se:.2f})",
            f"  p_waic    {self.p_waic:10.2f}",
            f"  waic      {self.waic:10.2f}  (se {2 * self.se:.2f})",
        ]
        if self.warning:
            n_bad = int((self.p_i > 0.4).sum())
            lines.append(f"Warning: {n_bad} observation(s) have p_waic > 0.4; prefer fit.loo().")
        return "\n".join(lines)


def waic_from_log_likelihood(log_lik: np.ndarray) -> WAIC:
    """WAIC from a pointwise log-likelihood ``(S, n)`` (Vehtari, Gelman & Gabry 2017, eqs. 3-5, 22-23).

    lppd_i = log(mean_s exp(ll_si)), p_i = var_s(ll_si) (ddof 1),
    elpd_i = lppd_i − p_i, elpd_waic = Σ elpd_i, se = sqrt(n var(elpd_i)).
    """
    S, n = log_lik.shape
    lppd_i = logsumexp(log_lik, axis=0) - np.log(S)
    p_i = log_lik.var(axis=0, ddof=1)
    elpd_i = lppd_i - p_i
    elpd = float(elpd_i.sum())
    se = float(np.sqrt(n * elpd_i.var(ddof=1)))
    return WAIC(elpd, se, float(p_i.sum()), -2.0 * elpd, elpd_i, p_i, bool((p_i > 0.4).any()))


def waic(idata: Any, design: Design, params: ParamDraws) -> WAIC:
    """WAIC of a posterior.

    ArviZ 1.3 dropped ``az.waic`` (it recommends PSIS-LOO), so WAIC is computed
    here with the standard formulas of Vehtari, Gelman & Gabry (2017),
    see :func:`waic_from_log_likelihood`. Prefer LOO for model choice.
    """
    return waic_from_log_likelihood(log_likelihood_draws(idata, design, params))


def compare_models(fits: Mapping[str, Any], method: str = "stacking") -> pd.DataFrame:
    """Compare Bayesian fits of the same data by PSIS-LOO ELPD (:func:`arviz.compare`).

    Each fit's ``loo()`` is used, so observations with a high Pareto k are
    refitted exactly as ``fit.loo()`` does (see :meth:`bayeslmm.results.BayesFit.loo`).

    Parameters
    ----------
    fits
        ``{name: fit}`` with at least two Bayesian fits of the same response on the same rows.
    method
        Weighting method passed to :func:`arviz.compare` (``"stacking"``,
        ``"BB-pseudo-BMA"``, ``"pseudo-BMA"``).

    Returns
    -------
    pandas.DataFrame
        ArviZ's table, best model first: ``rank``, ``elpd_diff``, ``dse``,
        ``p``, ``elpd``, ``se``, ``weight``, ... (not rounded).

    Raises
    ------
    BayesLMMError
        If fewer than two fits are given, one is not a posterior fit, or they
        were fit to different data.
    """
    if not isinstance(fits, Mapping) or len(fits) < 2:
        raise BayesLMMError("compare_models needs a dict of at least two fits, e.g. {'m1': fit1, 'm2': fit2}.")
    names = list(fits)
    first = fits[names[0]].design
    for name in names:
        fit = fits[name]
        d = fit.design
        if d.nobs != first.nobs or not np.array_equal(d.y, first.y):
            raise BayesLMMError(
                f"Model {name!r} was fit to different data than {names[0]!r} ({d.nobs} vs {first.nobs} rows "
                "or a different response); LOO comparisons need the same observations."
            )
        if fit.params.is_point:
            raise BayesLMMError(
                f"compare_models (model {name!r}) needs a Bayesian fit with posterior draws (method='NUTS'); "
                f"got a {fit.method} fit. Compare likelihood fits with their AIC()/BIC()."
            )
    return az.compare({name: fits[name].loo() for name in names}, method=method, round_to="none")


# ---------------------------------------------------------------------------
# Bayesian R² and ICC
# ---------------------------------------------------------------------------
def r2_draws(design: Design, params: ParamDraws) -> dict[str, np.ndarray]:
    """Per-draw Bayesian R² (Gelman, Goodrich, Gabry & Vehtari 2019), model-based.

    With V_μ = var_i(μ_si) of the full linear predictor, V_f = var_i((Xβ_s)_i)
    and σ_s² per draw:

    * conditional = V_μ / (V_μ + σ²), Gelman et al.'s R² with group effects;
    * marginal = V_f / (V_μ + σ²): the share of the same total variance that
      the fixed part explains. Keeping the denominator makes marginal and
      conditional comparable (as Nakagawa & Schielzeth's R²_m and R²_c are)
      instead of leaving the group variance out of the marginal one.

    Returns
    -------
    dict
        ``{"marginal": (S,), "conditional": (S,)}``.
    """
    v_mu, v_f = np.empty(params.n_draws), np.empty(params.n_draws)
    for sel, mu in draw_chunks(Rows.from_design(design), params):
        v_mu[sel] = mu.var(axis=1, ddof=1)
        v_f[sel] = (params.beta[sel] @ design.X.T).var(axis=1, ddof=1)
    total = v_mu + params.sigma**2
    return {"marginal": v_f / total, "conditional": v_mu / total}


def icc_draws(design: Design, params: ParamDraws) -> dict[str, np.ndarray]:
    """Per-draw intraclass correlation (variance partition coefficient) per grouping factor.

    For factor k with random-intercept variance τ_k²:
    ICC_k = τ_k² / (Σ_j τ_j² + σ²), the sum over every factor with a random
    intercept. With a single grouping factor this is τ²/(τ²+σ²), the
    correlation of two observations of the same group. For a block with
    slopes only the intercept variance is used, so the value is the ICC at
    the slope variables' zero. Factors without a random intercept are left out.

    Raises
    ------
    BayesLMMError
        If no grouping factor has a random intercept.
    """
    tau2: dict[str, np.ndarray] = {}
    for k, b in enumerate(design.blocks):
        if "(Intercept)" in b.terms:
            j = b.terms.index("(Intercept)")
            tau2[b.factor] = tau2.get(b.factor, 0.0) + params.sd[k][:, j] ** 2
    if not tau2:
        raise BayesLMMError(
            f"The ICC needs a random intercept, and no grouping factor in {design.parsed.text!r} has one; "
            "add a term like (1 | group)."
        )
    total = sum(tau2.values()) + params.sigma**2
    return {factor: t / total for factor, t in tau2.items()}


