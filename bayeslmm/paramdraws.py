"""The array core of every after-fit output: parameter draws, rows, the linear predictor, one summary helper.

Every fit kind hands its parameters over as one :class:`ParamDraws`, built
once per fit and cached on it (``fit.params``): a posterior's draws, or a
point fit's estimates as a single "draw" with the standard errors its method
defines (``Var(β̂)``, the conditional sds of the modes). Tables, predictions,
model checks, pooling and plots are functions of a design, a ParamDraws and
:class:`Rows`; :func:`summarise` is the one place where draws become columns.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from . import naming
from .design import BlockDesign, Design
from .errors import BayesLMMError
from .newdata import NewDesign

__all__ = [
    "Family",
    "GAUSSIAN",
    "ParamDraws",
    "Rows",
    "check_level",
    "interval_names",
    "summarise",
    "linear_predictor",
    "draw_chunks",
    "sample_new_effects",
    "factor_blocks",
    "coef_draws",
    "CHUNK_VALUES",
]

#: Upper bound on the number of floats in one intermediate array (16 MB).
CHUNK_VALUES = 2_000_000
_HALF_LOG_2PI = 0.5 * float(np.log(2 * np.pi))


# ---------------------------------------------------------------------------
# Family
# ---------------------------------------------------------------------------
def _gaussian_log_density(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return -_HALF_LOG_2PI - np.log(sigma) - 0.5 * ((y - mu) / sigma) ** 2


def _gaussian_draw(mu: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return mu + sigma * rng.standard_normal(mu.shape)


@dataclass(frozen=True)
class Family:
    """The response distribution and link of a fit, as R's ``family(fm)``.

    The array core consults it wherever the response scale matters: ``linkinv``
    (fitted values, predictions), ``log_density(y, mu, sigma)`` (the pointwise
    log-likelihood), ``draw(mu, sigma, rng)`` (replicated responses) and
    ``statistic``, the name of estimate / SE in a point fit's ``fixef``.
    """

    name: str
    link: str
    linkinv: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    log_density: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] = field(repr=False)
    draw: Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray] = field(repr=False)
    statistic: str = "t value"


GAUSSIAN = Family("gaussian", "identity", np.asarray, _gaussian_log_density, _gaussian_draw)


# ---------------------------------------------------------------------------
# Intervals and the one summary helper
# ---------------------------------------------------------------------------
def check_level(level: Any) -> float:
    """Return ``level`` as a float, or raise ``BayesLMMError`` unless it is a number strictly between 0 and 1."""
    if isinstance(level, bool) or not isinstance(level, (float, int, np.floating, np.integer)) or not 0 < level < 1:
        raise BayesLMMError(f"level must be a number strictly between 0 and 1, e.g. 0.95; got {level!r}.")
    return float(level)


def interval_names(level: float) -> tuple[str, str]:
    """Interval column names for a level, as brms names them: ``("l-95% CI", "u-95% CI")``."""
    pct = f"{100 * check_level(level):g}"
    return f"l-{pct}% CI", f"u-{pct}% CI"


def summarise(
    draws: np.ndarray,
    level: float = 0.95,
    index: Sequence | pd.Index | None = None,
    *,
    se: np.ndarray | None = None,
    statistic: str | None = None,
    diagnostics: bool = False,
) -> pd.DataFrame:
    """One row per column of ``draws`` ``(chain, draw, k)``: the columns every table of the package shows.

    Without ``se``: posterior ``Estimate`` (mean), ``Est.Error`` (sd) and the
    equal-tailed interval, and with ``diagnostics`` ``Rhat``, ``Bulk_ESS``,
    ``Tail_ESS`` (NaN for a column constant over the draws, and R-hat of one
    chain). With ``se`` (a point estimate, ``draws`` of shape ``(1, 1, k)``):
    ``Estimate``, ``Std. Error``, the Wald interval ``Estimate ± z SE`` as
    ``confint(fm, method = "Wald")``, and a ``statistic`` column ``Estimate / SE`` if named.
    """
    lo, hi = interval_names(level)
    draws = np.asarray(draws, dtype=float)
    chains, ndraw, k = draws.shape
    flat = draws.reshape(chains * ndraw, k)
    if se is not None:
        z = float(stats.norm.ppf(0.5 + level / 2))
        est = flat[0]
        se = np.asarray(se, dtype=float).reshape(k)
        out = pd.DataFrame({"Estimate": est, "Std. Error": se, lo: est - z * se, hi: est + z * se}, index=index)
        if statistic:
            with np.errstate(divide="ignore", invalid="ignore"):
                out[statistic] = est / se
        return out
    out = pd.DataFrame(
        {
            "Estimate": flat.mean(axis=0),
            "Est.Error": flat.std(axis=0, ddof=1) if flat.shape[0] > 1 else np.full(k, np.nan),
            lo: np.quantile(flat, (1 - level) / 2, axis=0),
            hi: np.quantile(flat, 1 - (1 - level) / 2, axis=0),
        },
        index=index,
    )
    if diagnostics:
        import arviz as az

        rhat, bulk, tail = (np.full(k, np.nan) for _ in range(3))
        varying = flat.std(axis=0) > 0
        if varying.any() and ndraw >= 4:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                sub = draws[:, :, varying]
                if chains > 1:
                    rhat[varying] = az.rhat(sub)
                bulk[varying] = az.ess(sub, method="bulk")
                tail[varying] = az.ess(sub, method="tail", prob=(0.05, 0.95))
        out["Rhat"] = rhat
        out["Bulk_ESS"] = np.floor(bulk)
        out["Tail_ESS"] = np.floor(tail)
    return out


# ---------------------------------------------------------------------------
# Parameter draws
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamDraws:
    """Model parameters as arrays with one row per draw (a point fit: one row).

    ``beta`` ``(S, p)`` in ``design.fixed_names`` order, ``sigma`` ``(S,)``,
    and per block ``ranef`` ``(S, levels, q)``, ``sd`` ``(S, q)`` and ``cor``
    ``(S, q, q)``; ``chains`` (draws are chain-major) and the ``family``. A
    point fit also gives ``beta_vcov`` (``vcov(fm)``, whose presence makes the
    draws a point estimate) and ``ranef_sd``, the conditional sds ``(levels, q)``.
    """

    beta: np.ndarray
    sigma: np.ndarray
    ranef: tuple[np.ndarray, ...]
    sd: tuple[np.ndarray, ...]
    cor: tuple[np.ndarray, ...]
    chains: int = 1
    family: Family = GAUSSIAN
    beta_vcov: np.ndarray | None = None
    ranef_sd: tuple[np.ndarray, ...] | None = None

    @property
    def n_draws(self) -> int:
        """Total number of draws ``S``."""
        return int(self.sigma.shape[0])

    @property
    def is_point(self) -> bool:
        """Whether these are point estimates with standard errors rather than posterior draws."""
        return self.beta_vcov is not None

    @cached_property
    def cov(self) -> tuple[np.ndarray, ...]:
        """Per block, the covariance of one level's effects ``(S, q, q)``."""
        return tuple(s[:, :, None] * c * s[:, None, :] for s, c in zip(self.sd, self.cor))

    def to_chains(self, arr: np.ndarray) -> np.ndarray:
        """Reshape ``(S, ...)`` to ``(chain, draw, ...)``."""
        return arr.reshape(self.chains, -1, *arr.shape[1:])

    def summarise(
        self,
        values: np.ndarray,
        level: float,
        index: Sequence | pd.Index | None = None,
        *,
        se: np.ndarray | None = None,
        statistic: str | None = None,
        diagnostics: bool = False,
    ) -> pd.DataFrame:
        """:func:`summarise` of derived values ``(S, k)``; a point fit without ``se`` gives ``Estimate`` only."""
        values = np.asarray(values, dtype=float).reshape(self.n_draws, -1)
        if not self.is_point:
            return summarise(self.to_chains(values), level, index, diagnostics=diagnostics)
        if se is None:
            check_level(level)
            return pd.DataFrame({"Estimate": values[0]}, index=index)
        return summarise(values[None], level, index, se=se, statistic=statistic)

    def fixed_se(self, X: np.ndarray | None = None) -> np.ndarray | None:
        """Point fits: standard errors of β̂, or of ``X β̂`` row by row; None for a posterior."""
        if self.beta_vcov is None:
            return None
        if X is None:
            return np.sqrt(np.diag(self.beta_vcov))
        return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", X, self.beta_vcov, X), 0.0))

    @classmethod
    def from_posterior(cls, design: Design, idata: Any, family: Family = GAUSSIAN) -> ParamDraws:
        """Collect a posterior ``DataTree`` (variables named by :mod:`bayeslmm.naming`)."""
        post = idata.posterior
        chains, ndraw = int(post.sizes["chain"]), int(post.sizes["draw"])
        S = chains * ndraw

        def get(name: str, *shape: int) -> np.ndarray:
            return np.asarray(post[name].values, dtype=float).reshape(S, *shape)

        beta = get(naming.FIXED, len(design.fixed_names)) if design.fixed_names else np.zeros((S, 0))
        ranef, sd, cor = [], [], []
        for b in design.blocks:
            ranef.append(get(naming.ranef(b.label), b.n_levels, b.q))
            sd.append(get(naming.sd(b.label), b.q))
            cor.append(get(naming.cor(b.label), b.q, b.q) if b.q > 1 else np.ones((S, 1, 1)))
        # a GLMM has no residual sd: its draws are 1 (the array core's σ is then unused)
        sigma = get(naming.SIGMA) if naming.SIGMA in post else np.ones(S)
        return cls(beta, sigma, tuple(ranef), tuple(sd), tuple(cor), chains, family)

    @classmethod
    def point(
        cls,
        beta: np.ndarray,
        sigma: float,
        ranef: Sequence[np.ndarray],
        sd: Sequence[np.ndarray],
        cor: Sequence[np.ndarray],
        beta_vcov: np.ndarray,
        ranef_sd: Sequence[np.ndarray] | None = None,
        family: Family = GAUSSIAN,
    ) -> ParamDraws:
        """Point estimates as a single draw.

        β ``(p,)``, σ, per block the modes ``(levels, q)``, sds ``(q,)`` and
        correlations ``(q, q)``; ``Var(β̂)`` and the modes' conditional sds give
        the standard errors.
        """
        one = lambda arrays: tuple(np.asarray(a, dtype=float)[None] for a in arrays)  # noqa: E731
        return cls(
            beta=np.asarray(beta, dtype=float).reshape(1, -1),
            sigma=np.asarray([sigma], dtype=float),
            ranef=one(ranef),
            sd=one(sd),
            cor=one(cor),
            family=family,
            beta_vcov=np.asarray(beta_vcov, dtype=float),
            ranef_sd=None if ranef_sd is None else tuple(np.asarray(r, dtype=float) for r in ranef_sd),
        )


# ---------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Rows:
    """The rows to predict for, as arrays.

    ``group_idx[k]`` is ``-1`` where the level was not seen in training;
    ``new_code[k]`` then gives the row's position in ``new_levels[k]``.
    """

    X: np.ndarray
    group_idx: tuple[np.ndarray, ...]
    Z: tuple[np.ndarray, ...]
    new_levels: tuple[tuple[str, ...], ...] = ()
    new_code: tuple[np.ndarray, ...] = ()

    @property
    def n(self) -> int:
        """Number of rows."""
        return int(self.X.shape[0])

    @classmethod
    def from_design(cls, design: Design) -> Rows:
        """The training rows (refused for an out-of-core design, which keeps none)."""
        design.require_rows("Computing on the training rows (fitted values, residuals, log-likelihood, R², ppc)")
        n = design.nobs
        return cls(
            X=design.X,
            group_idx=tuple(b.group_idx for b in design.blocks),
            Z=tuple(b.Z for b in design.blocks),
            new_levels=tuple(() for _ in design.blocks),
            new_code=tuple(np.full(n, -1, dtype=np.int64) for _ in design.blocks),
        )

    @classmethod
    def from_new(cls, nd: NewDesign) -> Rows:
        """Encoded new rows."""
        return cls(nd.X, tuple(nd.group_idx), tuple(nd.Z), tuple(nd.new_levels), tuple(nd.new_code))

    def take(self, sel: slice | np.ndarray) -> Rows:
        """A subset of the rows."""
        return Rows(
            self.X[sel],
            tuple(g[sel] for g in self.group_idx),
            tuple(z[sel] for z in self.Z),
            self.new_levels,
            tuple(c[sel] for c in self.new_code),
        )


# ---------------------------------------------------------------------------
# Linear predictor
# ---------------------------------------------------------------------------
def linear_predictor(
    rows: Rows,
    params: ParamDraws,
    include: Sequence[bool] | None = None,
    new_effects: Sequence[np.ndarray | None] | None = None,
    draws: slice = slice(None),
) -> np.ndarray:
    """Per-draw linear predictor ``X β + Σ_k (Z_k * γ_k[group_idx_k]).sum(1)``, by index-gather, ``(s, n)``.

    ``include`` says per block whether its effects enter (default all);
    ``new_effects`` gives per block the effects of unseen levels ``(S,
    len(new_levels), q)`` (None: 0); ``draws`` selects the draws.
    """
    mu = params.beta[draws] @ rows.X.T
    for k, (idx, Z) in enumerate(zip(rows.group_idx, rows.Z)):
        if include is not None and not include[k]:
            continue
        seen = idx >= 0
        g = params.ranef[k][draws][:, np.where(seen, idx, 0), :]
        if not seen.all():
            extra = new_effects[k] if new_effects is not None else None
            if extra is None:
                g[:, ~seen, :] = 0.0
            else:
                g[:, ~seen, :] = extra[draws][:, rows.new_code[k][~seen], :]
        mu = mu + np.einsum("snq,nq->sn", g, Z)
    return mu


def draw_chunks(rows: Rows, params: ParamDraws) -> Iterator[tuple[slice, np.ndarray]]:
    """The linear predictor of all rows, a block of draws at a time.

    Yields ``(draws, mu)`` with ``mu`` of shape ``(s, n)``; each block is small
    enough that the gathered group effects stay under :data:`CHUNK_VALUES`.
    """
    q_total = max(1, sum(z.shape[1] for z in rows.Z))
    step = max(1, CHUNK_VALUES // (rows.n * q_total))
    for start in range(0, params.n_draws, step):
        sel = slice(start, min(start + step, params.n_draws))
        yield sel, linear_predictor(rows, params, draws=sel)


def sample_new_effects(cov: np.ndarray, n_levels: int, rng: np.random.Generator) -> np.ndarray:
    """Draw group effects of ``n_levels`` new levels from N(0, T_s) per draw, ``(S, n_levels, q)``; T may be singular."""
    w, V = np.linalg.eigh(cov)
    root = V * np.sqrt(np.clip(w, 0.0, None))[:, None, :]
    z = rng.standard_normal((cov.shape[0], n_levels, cov.shape[1]))
    return np.einsum("sqr,snr->snq", root, z)


# ---------------------------------------------------------------------------
# Per-level coefficients
# ---------------------------------------------------------------------------
def factor_blocks(design: Design) -> dict[str, list[int]]:
    """Per grouping factor, the indices of its blocks (``(1|g) + (0+x|g)`` gives two)."""
    out: dict[str, list[int]] = {}
    for k, b in enumerate(design.blocks):
        out.setdefault(b.factor, []).append(k)
    return out


def coef_draws(design: Design, params: ParamDraws, factor: str) -> tuple[list[str], np.ndarray]:
    """Per-level coefficients of a factor, ``coef(fm)``, draw by draw.

    Returns
    -------
    terms : list of str
        Every fixed term, then the factor's group terms that are not fixed terms.
    values : numpy.ndarray
        ``(S, levels, len(terms))``: fixed effect plus the level's group effect
        (the fixed effect alone for terms that do not vary by the factor).
    """
    ks = factor_blocks(design)[factor]
    blocks: list[BlockDesign] = [design.blocks[k] for k in ks]
    names = list(design.fixed_names)
    terms = names + [t for b in blocks for t in b.terms if t not in names]
    total = np.zeros((params.n_draws, blocks[0].n_levels, len(terms)))
    total[:, :, : len(names)] = params.beta[:, None, :]
    for k, b in zip(ks, blocks):
        for c, t in enumerate(b.terms):
            total[:, :, terms.index(t)] += params.ranef[k][:, :, c]
    return terms, total
