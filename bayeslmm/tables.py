"""Stage 7: posterior -> lme4-style tables with posterior columns.

Pure functions of a :class:`~bayeslmm.design.Design` and a posterior
``DataTree`` whose variables are named by :mod:`bayeslmm.naming`. Both the
full and the collapsed model produce these variables, so the tables do not
care which was sampled.

Columns follow brms: ``Estimate`` (posterior mean), ``Est.Error`` (posterior
sd), ``l-95% CI``, ``u-95% CI`` (equal-tailed), ``Rhat``, ``Bulk_ESS``,
``Tail_ESS``.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd

from . import naming
from .design import BlockDesign, Design

__all__ = [
    "draws",
    "summarise_draws",
    "interval_names",
    "fixef_table",
    "ranef_table",
    "coef_table",
    "varcorr_table",
    "fitted_mean",
    "fixed_draws",
    "ranef_draws",
]


def draws(idata, name: str) -> np.ndarray:
    """Posterior draws of a variable as an array ``(chain, draw, ...)``."""
    return np.asarray(idata.posterior[name].values, dtype=float)


def _check_prob(prob: float) -> None:
    from .errors import BayesLMMError

    if isinstance(prob, bool) or not isinstance(prob, (float, int)) or not 0 < prob < 1:
        raise BayesLMMError(f"prob must be a number strictly between 0 and 1, e.g. 0.95; got {prob!r}.")


def interval_names(prob: float) -> tuple[str, str]:
    """Brms's interval column names for a probability, e.g. ``("l-95% CI", "u-95% CI")``.

    Raises ``BayesLMMError`` when ``prob`` is not a number in (0, 1).
    """
    _check_prob(prob)
    pct = f"{100 * prob:g}"
    return f"l-{pct}% CI", f"u-{pct}% CI"


def summarise_draws(arr: np.ndarray, index: list | pd.Index, prob: float = 0.95, diagnostics: bool = True) -> pd.DataFrame:
    """Summarise draws ``(chain, draw, k)`` into one row per parameter.

    Parameters
    ----------
    arr
        Draws, shape ``(chain, draw, k)``.
    index
        Row labels, length ``k``.
    prob
        Interval probability (equal-tailed).
    diagnostics
        Whether to add ``Rhat``, ``Bulk_ESS`` and ``Tail_ESS``.
    """
    _check_prob(prob)
    chains, ndraw = arr.shape[:2]
    flat = arr.reshape(chains * ndraw, -1)
    lo, hi = interval_names(prob)
    out = pd.DataFrame(
        {
            "Estimate": flat.mean(axis=0),
            "Est.Error": flat.std(axis=0, ddof=1) if flat.shape[0] > 1 else np.zeros(flat.shape[1]),
            lo: np.quantile(flat, (1 - prob) / 2, axis=0),
            hi: np.quantile(flat, 1 - (1 - prob) / 2, axis=0),
        },
        index=index,
    )
    if diagnostics:
        a = arr.reshape(chains, ndraw, -1)
        rhat = np.full(a.shape[2], np.nan)
        bulk = np.full(a.shape[2], np.nan)
        tail = np.full(a.shape[2], np.nan)
        varying = a.reshape(-1, a.shape[2]).std(axis=0) > 0
        if varying.any() and ndraw >= 4:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                sub = a[:, :, varying]
                if chains > 1:
                    rhat[varying] = az.rhat(sub)
                bulk[varying] = az.ess(sub, method="bulk")
                tail[varying] = az.ess(sub, method="tail", prob=(0.05, 0.95))
        out["Rhat"] = rhat
        out["Bulk_ESS"] = np.floor(bulk)
        out["Tail_ESS"] = np.floor(tail)
    return out


# ---------------------------------------------------------------------------
# Draw-level building blocks (also used by predict, coef, r2, ...)
# ---------------------------------------------------------------------------
def fixed_draws(design: Design, idata) -> np.ndarray:
    """Fixed effects, ``(chain, draw, p)`` in the order of ``design.fixed_names``."""
    if not design.fixed_names:
        post = idata.posterior
        return np.zeros((post.sizes["chain"], post.sizes["draw"], 0))
    return draws(idata, naming.FIXED)


def ranef_draws(block: BlockDesign, idata) -> np.ndarray:
    """Group effects of a block, ``(chain, draw, levels, q)``."""
    return draws(idata, naming.ranef(block.label))


def fitted_mean(design: Design, idata) -> np.ndarray:
    """Posterior mean of the linear predictor for every row (exact, by linearity)."""
    beta = fixed_draws(design, idata).reshape(-1, len(design.fixed_names)).mean(axis=0)
    mu = design.X @ beta
    for b in design.blocks:
        r = ranef_draws(b, idata)
        rbar = r.reshape(-1, b.n_levels, b.q).mean(axis=0)
        mu = mu + (rbar[b.group_idx] * b.Z).sum(axis=1)
    return mu


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------
def fixef_table(design: Design, idata, prob: float = 0.95) -> pd.DataFrame:
    """``fixef(fm)`` with posterior columns, one row per fixed term."""
    arr = fixed_draws(design, idata)
    df = summarise_draws(arr, list(design.fixed_names), prob)
    df.index.name = "term"
    return df


def _factor_blocks(design: Design) -> dict[str, list[BlockDesign]]:
    out: dict[str, list[BlockDesign]] = {}
    for b in design.blocks:
        out.setdefault(b.factor, []).append(b)
    return out


def ranef_table(design: Design, idata, prob: float = 0.95, long: bool = False):
    """``ranef(fm)``: per grouping factor, levels x terms of posterior means.

    With ``long=True``, the ``as.data.frame(ranef(fm, condVar=TRUE))`` form:
    ``grpvar, term, grp, condval, condsd`` plus interval columns.
    """
    _check_prob(prob)
    lo, hi = interval_names(prob)
    wide: dict[str, pd.DataFrame] = {}
    rows = []
    for factor, blocks in _factor_blocks(design).items():
        cols = {}
        for b in blocks:
            r = ranef_draws(b, idata)
            flat = r.reshape(-1, b.n_levels, b.q)
            for k, term in enumerate(b.terms):
                cols[term] = flat[:, :, k].mean(axis=0)
                rows.append(
                    pd.DataFrame(
                        {
                            "grpvar": factor,
                            "term": term,
                            "grp": list(b.levels),
                            "condval": flat[:, :, k].mean(axis=0),
                            "condsd": flat[:, :, k].std(axis=0, ddof=1),
                            lo: np.quantile(flat[:, :, k], (1 - prob) / 2, axis=0),
                            hi: np.quantile(flat[:, :, k], 1 - (1 - prob) / 2, axis=0),
                        }
                    )
                )
        df = pd.DataFrame(cols, index=pd.Index(list(blocks[0].levels), name=factor))
        wide[factor] = df
    if long:
        return pd.concat(rows, ignore_index=True)
    return wide


def coef_table(design: Design, idata, prob: float = 0.95, long: bool = False):
    """``coef(fm)``: fixed + group effects per level, computed per draw.

    Returns, per grouping factor, levels x (every fixed term) of posterior
    means; terms with no group effect for that factor equal the fixed effect.
    With ``long=True``: one row per factor, level and term, with
    ``Estimate``, ``Est.Error`` and interval columns.
    """
    _check_prob(prob)
    beta = fixed_draws(design, idata)
    chains, ndraw = beta.shape[:2]
    S = chains * ndraw
    beta = beta.reshape(S, -1)
    wide: dict[str, pd.DataFrame] = {}
    longs = []
    for factor, blocks in _factor_blocks(design).items():
        levels = list(blocks[0].levels)
        terms = list(design.fixed_names)
        extra = [t for b in blocks for t in b.terms if t not in terms]
        terms = terms + extra
        total = np.zeros((S, len(levels), len(terms)))
        for j in range(len(design.fixed_names)):
            total[:, :, j] = beta[:, j][:, None]
        for b in blocks:
            r = ranef_draws(b, idata).reshape(S, b.n_levels, b.q)
            for k, t in enumerate(b.terms):
                total[:, :, terms.index(t)] += r[:, :, k]
        wide[factor] = pd.DataFrame(total.mean(axis=0), index=pd.Index(levels, name=factor), columns=terms)
        arr = total.reshape(chains, ndraw, -1)
        idx = pd.MultiIndex.from_product([levels, terms], names=["grp", "term"])
        s = summarise_draws(arr, idx, prob, diagnostics=False).reset_index()
        s.insert(0, "grpvar", factor)
        longs.append(s)
    if long:
        return pd.concat(longs, ignore_index=True)
    return wide


def varcorr_table(design: Design, idata, prob: float = 0.95) -> pd.DataFrame:
    """``as.data.frame(VarCorr(fm))`` with posterior means and intervals.

    One row per sd (``var2`` missing), one per correlation, and ``Residual``.
    ``vcov`` is the posterior mean of the variance (covariance), ``sdcor``
    the posterior mean of the sd (correlation); ``Est.Error`` and the
    interval refer to ``sdcor``.
    """
    _check_prob(prob)
    lo, hi = interval_names(prob)
    rows = []

    def row(grp, v1, v2, vcov_draws, sdcor_draws):
        rows.append(
            {
                "grp": grp,
                "var1": v1,
                "var2": v2,
                "vcov": float(np.mean(vcov_draws)),
                "sdcor": float(np.mean(sdcor_draws)),
                "Est.Error": float(np.std(sdcor_draws, ddof=1)),
                lo: float(np.quantile(sdcor_draws, (1 - prob) / 2)),
                hi: float(np.quantile(sdcor_draws, 1 - (1 - prob) / 2)),
            }
        )

    for b in design.blocks:
        sd = draws(idata, naming.sd(b.label)).reshape(-1, b.q)
        for k, t in enumerate(b.terms):
            row(b.label, t, np.nan, sd[:, k] ** 2, sd[:, k])
        if b.q > 1:
            corr = draws(idata, naming.cor(b.label)).reshape(-1, b.q, b.q)
            for i in range(b.q):
                for j in range(i + 1, b.q):
                    row(b.label, b.terms[i], b.terms[j], corr[:, i, j] * sd[:, i] * sd[:, j], corr[:, i, j])
    sigma = draws(idata, naming.SIGMA).reshape(-1)
    row("Residual", np.nan, np.nan, sigma**2, sigma)
    return pd.DataFrame(rows)
