"""Predictions from a fitted model, and the array core shared by the after-fit functions.

Two layers, as in the rest of the package:

* a NumPy core that works on plain arrays -- :class:`ParamDraws` (β, σ,
  group effects and block covariances, one row per draw) and :class:`Rows`
  (X, per-block group index and Z columns) -- and computes the linear
  predictor per draw by index-gather, never with a dense Z;
* :func:`predict`, a thin function of a fit.

A REML/ML fit can reuse the core by handing its point estimates over as a
single "draw" (:meth:`ParamDraws.point`); a fit object that has a
``param_draws()`` method is asked for its draws through it (see
:func:`fit_params`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from . import naming, tables
from .design import Design
from .newdata import NewDesign, encode_new_data
from .errors import FormulaError, PredictionError
from .formula import parse_formula

__all__ = [
    "ParamDraws",
    "Rows",
    "posterior_params",
    "fit_params",
    "linear_predictor",
    "resolve_re_form",
    "sample_new_effects",
    "draw_chunks",
    "predict",
]

#: Upper bound on the number of floats in one intermediate array (16 MB).
CHUNK_VALUES = 2_000_000
_NA_STRINGS = {"~0", "0", "NA", "~NA", "~-1"}
_KINDS = ("mean", "response")
_NEW_LEVELS = ("population", "sample", "error")


# ---------------------------------------------------------------------------
# Array containers
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamDraws:
    """Model parameters as arrays with one row per draw.

    Attributes
    ----------
    beta
        Fixed effects, ``(S, p)`` in the order of ``design.fixed_names``.
    sigma
        Residual sd, ``(S,)``.
    ranef
        Per block, the group effects ``(S, levels, q)``.
    cov
        Per block, the covariance matrix of one level's effects ``(S, q, q)``.
    chains
        Number of chains the ``S`` draws come from (chain-major order).
    """

    beta: np.ndarray
    sigma: np.ndarray
    ranef: tuple[np.ndarray, ...]
    cov: tuple[np.ndarray, ...]
    chains: int = 1

    @property
    def n_draws(self) -> int:
        """Total number of draws ``S``."""
        return int(self.sigma.shape[0])

    def to_chains(self, arr: np.ndarray) -> np.ndarray:
        """Reshape ``(S, ...)`` to ``(chain, draw, ...)``."""
        return arr.reshape(self.chains, -1, *arr.shape[1:])

    @classmethod
    def point(cls, beta: np.ndarray, sigma: float, ranef: Sequence[np.ndarray], cov: Sequence[np.ndarray]) -> ParamDraws:
        """Point estimates as a single draw.

        β ``(p,)``, σ, per block the modes ``(levels, q)`` and the ``(q, q)`` covariance
        (a REML fit: ``beta``, ``sigma``, ``ranef``, ``block_cov``).
        """
        return cls(
            beta=np.asarray(beta, dtype=float).reshape(1, -1),
            sigma=np.asarray([sigma], dtype=float),
            ranef=tuple(np.asarray(r, dtype=float)[None] for r in ranef),
            cov=tuple(np.asarray(c, dtype=float)[None] for c in cov),
        )


def posterior_params(design: Design, idata: Any) -> ParamDraws:
    """Collect the posterior of a fit into a :class:`ParamDraws`.

    Parameters
    ----------
    design
        The training design.
    idata
        The posterior ``DataTree`` with the variables named by :mod:`bayeslmm.naming`.
    """
    post = idata.posterior
    chains = int(post.sizes["chain"])
    beta = tables.fixed_draws(design, idata)
    S = beta.shape[0] * beta.shape[1]
    ranef, cov = [], []
    for b in design.blocks:
        ranef.append(tables.ranef_draws(b, idata).reshape(S, b.n_levels, b.q))
        sd = tables.draws(idata, naming.sd(b.label)).reshape(S, b.q)
        if b.q == 1:
            cov.append((sd**2)[:, :, None])
        else:
            cor = tables.draws(idata, naming.cor(b.label)).reshape(S, b.q, b.q)
            cov.append(sd[:, :, None] * cor * sd[:, None, :])
    sigma = tables.draws(idata, naming.SIGMA).reshape(S)
    return ParamDraws(beta.reshape(S, -1), sigma, tuple(ranef), tuple(cov), chains)


def fit_params(fit: Any) -> ParamDraws:
    """The parameter draws of a fit: ``fit.param_draws()`` if it has one, else its posterior."""
    getter = getattr(fit, "param_draws", None)
    if callable(getter):
        return getter()
    return posterior_params(fit.design, fit.idata)


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
        """The training rows."""
        n = design.nobs
        return cls(
            X=design.X,
            group_idx=tuple(b.group_idx for b in design.blocks),
            Z=tuple(b.Z for b in design.blocks),
            new_levels=tuple(() for _ in design.blocks),
            new_code=tuple(np.full(n, -1, dtype=np.int64) for _ in design.blocks),
        )

    @classmethod
    def from_new(cls, design: Design, nd: NewDesign, newdata: pd.DataFrame) -> Rows:
        """Encoded new rows (unseen levels numbered by :func:`bayeslmm.newdata.encode_new_data`)."""
        return cls(nd.X, tuple(nd.group_idx), tuple(nd.Z), tuple(nd.new_levels), tuple(nd.new_code))

    def take(self, sel: slice) -> Rows:
        """A contiguous subset of the rows."""
        return Rows(
            self.X[sel],
            tuple(g[sel] for g in self.group_idx),
            tuple(z[sel] for z in self.Z),
            self.new_levels,
            tuple(c[sel] for c in self.new_code),
        )


# ---------------------------------------------------------------------------
# NumPy core
# ---------------------------------------------------------------------------
def linear_predictor(
    rows: Rows,
    params: ParamDraws,
    include: Sequence[bool] | None = None,
    new_effects: Sequence[np.ndarray | None] | None = None,
    draws: slice = slice(None),
) -> np.ndarray:
    """Per-draw linear predictor ``X β + Σ_k (Z_k * γ_k[group_idx_k]).sum(1)``.

    Parameters
    ----------
    rows
        The rows.
    params
        Parameter draws.
    include
        Per block, whether its group effects enter (default: all).
    new_effects
        Per block, effects of unseen levels ``(S, len(new_levels), q)``;
        ``None`` (or a missing entry) gives unseen levels an effect of 0.
    draws
        Which draws to use.

    Returns
    -------
    numpy.ndarray
        ``(s, n)`` for the ``s`` selected draws.
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


def sample_new_effects(cov: np.ndarray, n_levels: int, rng: np.random.Generator) -> np.ndarray:
    """Draw group effects of new levels from N(0, T_s), one set per draw.

    Parameters
    ----------
    cov
        Block covariance draws ``(S, q, q)``; may be singular.
    n_levels
        Number of new levels.
    rng
        Random generator.

    Returns
    -------
    numpy.ndarray
        ``(S, n_levels, q)``.
    """
    w, V = np.linalg.eigh(cov)
    root = V * np.sqrt(np.clip(w, 0.0, None))[:, None, :]
    z = rng.standard_normal((cov.shape[0], n_levels, cov.shape[1]))
    return np.einsum("sqr,snr->snq", root, z)


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


def _is_na_like(value: Any) -> bool:
    if value is False:
        return True
    if isinstance(value, str):
        return "".join(value.split()) in _NA_STRINGS
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return bool(np.isnan(value)) or value == 0
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def resolve_re_form(design: Design, re_form: Any) -> tuple[bool, ...]:
    """Which blocks' group effects enter, as lme4's ``re.form``.

    Parameters
    ----------
    design
        The training design.
    re_form
        ``None``: all group effects. ``"~0"``, ``"NA"``, ``"0"``, ``nan``,
        ``pd.NA`` or ``False``: none (population-level prediction). A formula
        such as ``"~(1|Subject)"``: the blocks of the grouping factors it
        names (parsed by formulae; the terms left of the bar do not matter).

    Returns
    -------
    tuple of bool
        One entry per block of ``design``.

    Raises
    ------
    PredictionError
        For a value of another type, a formula without a grouping term, or a
        factor the model does not have.
    """
    if re_form is None:
        return tuple(True for _ in design.blocks)
    if _is_na_like(re_form):
        return tuple(False for _ in design.blocks)
    if not isinstance(re_form, str):
        raise PredictionError(
            f"re_form must be None (all group effects), '~0' (none) or a formula such as "
            f"'~(1|{design.blocks[0].factor})'; got {re_form!r}."
        )
    text = re_form.strip()
    if not text.startswith("~"):
        text = "~" + text
    try:
        parsed = parse_formula(f"re_form_response__ {text}")
    except FormulaError as exc:
        raise PredictionError(
            f"Cannot read re_form={re_form!r} as grouping terms like '~(1|{design.blocks[0].factor})': {exc}"
        ) from None
    wanted = {frozenset(rb.factor_vars): rb.factor_name for rb in parsed.blocks}
    have = {frozenset(b.factor_vars) for b in design.blocks}
    unknown = sorted(name for key, name in wanted.items() if key not in have)
    if unknown:
        raise PredictionError(
            f"re_form={re_form!r} names grouping factor(s) {unknown} that the model does not have; "
            f"the model's factors are {sorted(design.factors)}."
        )
    return tuple(frozenset(b.factor_vars) in wanted for b in design.blocks)


# ---------------------------------------------------------------------------
# Fit-level functions
# ---------------------------------------------------------------------------
def _kind_text(block: Any) -> str:
    kinds = {"number": "numbers", "string": "strings", "bool": "True/False values"}
    return " and ".join(kinds.get(k, k) for k in block.kinds) or "labels"


def _check_args(kind: str, new_levels: str, interval: float) -> None:
    if kind not in _KINDS:
        raise PredictionError(f"kind must be one of {list(_KINDS)}, got {kind!r}.")
    if new_levels not in _NEW_LEVELS:
        raise PredictionError(f"new_levels must be one of {list(_NEW_LEVELS)}, got {new_levels!r}.")
    if isinstance(interval, bool) or not isinstance(interval, (float, int)) or not 0 < interval < 1:
        raise PredictionError(f"interval must be a probability between 0 and 1, e.g. 0.95; got {interval!r}.")


def predict(
    fit: Any,
    newdata: pd.DataFrame | None = None,
    re_form: Any = None,
    new_levels: str = "error",
    kind: str = "mean",
    interval: float = 0.95,
    random_seed: int | None = None,
) -> pd.DataFrame:
    """Posterior predictions, summarised per row.

    Parameters
    ----------
    fit
        A fit with ``design`` and a posterior (or a ``param_draws()`` method).
    newdata
        Rows to predict for; ``None`` uses the training rows. The response
        column is not needed; with ``re_form`` "~0" the grouping columns are
        not needed either.
    re_form
        Which group effects enter; see :func:`resolve_re_form`.
    new_levels
        Levels of a grouping factor not seen in the fit: ``"error"`` (the
        default, as lme4's ``allow.new.levels = FALSE``) raises, listing
        them; ``"population"`` gives them a group effect of 0; ``"sample"``
        draws a new effect from N(0, T) per posterior draw (one per new level,
        shared by its rows). Values are matched as the type the fit saw: a
        number ``308.0`` is the level ``308``, a string ``" 308"`` is not.
    kind
        ``"mean"``: the expected value per draw (credible interval);
        ``"response"``: adds N(0, σ) noise per draw (prediction interval).
    interval
        Probability of the equal-tailed interval.
    random_seed
        Seed for new-level effects and response noise.

    Returns
    -------
    pandas.DataFrame
        ``Estimate`` (mean over draws), ``Est.Error`` (sd), and the interval
        columns named as brms does (``l-95% CI``, ``u-95% CI``), row-aligned
        with ``newdata`` (or the rows used in the fit).

    Raises
    ------
    PredictionError
        For a missing column, a bad argument, or an unseen level with
        ``new_levels="error"`` (the message names the factor and the levels).
    """
    _check_args(kind, new_levels, interval)
    design: Design = fit.design
    include = resolve_re_form(design, re_form)
    if newdata is None:
        rows, index = Rows.from_design(design), design.frame.index
    else:
        nd = encode_new_data(design, newdata, blocks=any(include))
        if not any(include):
            include = ()  # the blocks were not encoded
        rows, index = Rows.from_new(design, nd, newdata), newdata.index
    params = fit_params(fit)
    rng = np.random.default_rng(random_seed)
    new_effects: list[np.ndarray | None] = []
    for k, levels in enumerate(rows.new_levels):
        if not include[k] or not levels:
            new_effects.append(None)
            continue
        b = design.blocks[k]
        if new_levels == "error":
            shown = ", ".join(levels[:5]) + (f" and {len(levels) - 5} more" if len(levels) > 5 else "")
            raise PredictionError(
                f"newdata has {len(levels)} level(s) of the grouping factor {b.factor!r} that the fit did not see: "
                f"{shown} (values are matched as the type the fit saw: {b.factor!r} held {_kind_text(b)}). "
                "As lme4 does by default (allow.new.levels = FALSE), bayeslmm refuses them; to predict them, pass "
                "new_levels='population' (group effect 0) or new_levels='sample' (new group effects drawn from "
                "the fitted covariance) -- on the command line --new-levels population or sample -- or fix or drop "
                "those rows."
            )
        new_effects.append(sample_new_effects(params.cov[k], len(levels), rng) if new_levels == "sample" else None)

    S = params.n_draws
    q_total = max(1, sum(z.shape[1] for z in rows.Z))
    step = max(1, CHUNK_VALUES // (S * q_total))
    lo_name, hi_name = tables.interval_names(interval)
    out = {name: np.empty(rows.n) for name in ("Estimate", "Est.Error", lo_name, hi_name)}
    for start in range(0, rows.n, step):
        sel = slice(start, min(start + step, rows.n))
        mu = linear_predictor(rows.take(sel), params, include or None, new_effects)
        if kind == "response":
            mu = mu + params.sigma[:, None] * rng.standard_normal(mu.shape)
        out["Estimate"][sel] = mu.mean(axis=0)
        out["Est.Error"][sel] = mu.std(axis=0, ddof=1) if S > 1 else 0.0
        out[lo_name][sel] = np.quantile(mu, (1 - interval) / 2, axis=0)
        out[hi_name][sel] = np.quantile(mu, 1 - (1 - interval) / 2, axis=0)
    return pd.DataFrame(out, index=index)
