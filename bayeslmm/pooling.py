"""Complete, no and partial pooling side by side, per level of a grouping factor.

* **complete pooling**: the fixed-effects-only least-squares fit, ``lm(y ~ fixed part)``;
  the same coefficients for every level;
* **no pooling**: a separate least-squares fit per group of the terms that
  vary by the factor (per subject ``lm(Reaction ~ Days)`` for
  ``(Days | Subject)``). Fixed terms that do not vary by the factor are held
  at their complete-pooling values (entered as an offset), so the per-group
  intercepts are on the same footing as ``coef()``'s. Groups with too few rows
  (or too little spread) to fit the terms get NaN;
* **partial pooling**: the mixed model's ``coef()``: fixed plus group effect,
  averaged over draws (for a REML fit, the single point estimate).

The per-group fits are vectorised (:func:`bayeslmm.groupwise.group_least_squares`).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .design import BlockDesign, Design
from .errors import BayesLMMError
from .groupwise import group_least_squares
from .paramdraws import ParamDraws

__all__ = ["no_pooling_fits", "pooling_table"]


def _factor_blocks(design: Design, factor: str | None) -> list[BlockDesign]:
    if factor is None:
        factor = design.blocks[0].factor
    blocks = [b for b in design.blocks if b.factor == factor]
    if not blocks:
        raise BayesLMMError(
            f"The model has no grouping factor {factor!r}; choose one of {sorted(design.factors)}."
        )
    return blocks


def no_pooling_fits(
    group_idx: np.ndarray, n_groups: int, Z: np.ndarray, y: np.ndarray, rtol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coefficients of ``y`` on ``Z`` within every group.

    Parameters
    ----------
    group_idx
        Group index of every row, ``(n,)`` with values in ``[0, n_groups)``.
    n_groups
        Number of groups.
    Z
        Predictors, ``(n, q)``.
    y
        Response, ``(n,)``.
    rtol
        A group whose ``Z_g'Z_g`` has an eigenvalue below ``rtol`` times its
        largest is treated as not estimable.

    Returns
    -------
    coefs : numpy.ndarray
        ``(n_groups, q)``; NaN rows for groups that cannot be fit.
    sizes : numpy.ndarray
        Rows per group, ``(n_groups,)``.
    """
    return group_least_squares(group_idx, n_groups, Z, y, rtol=rtol)


def pooling_table(design: Design, params: ParamDraws, factor: str | None = None) -> pd.DataFrame:
    """Complete, no and partial pooling estimates per level of a grouping factor.

    Parameters
    ----------
    design
        The training design.
    params
        Parameter draws (a single draw for a REML fit).
    factor
        Grouping factor name; ``None`` takes the first (the one with most levels).

    Returns
    -------
    pandas.DataFrame
        One row per term and level (term-major, like ``ranef(long=True)``):
        ``grpvar`` (the factor), ``grp`` (the level), ``term``, ``n`` (rows in
        the group), ``complete_pooling``, ``no_pooling``, ``partial_pooling``.
        The terms are those that vary by the factor. ``attrs["note"]`` names
        the levels that could not be fit without pooling (empty if none).
        For a levels x terms view: ``df.pivot(index="grp", columns="term")``.
    """
    blocks = _factor_blocks(design, factor)
    factor = blocks[0].factor
    levels = list(blocks[0].levels)
    terms = [t for b in blocks for t in b.terms]
    names = list(design.fixed_names)

    ols = np.linalg.lstsq(design.X, design.y, rcond=None)[0] if names else np.zeros(0)
    complete = np.array([ols[names.index(t)] if t in names else 0.0 for t in terms])
    other = [j for j, nm in enumerate(names) if nm not in terms]
    offset = design.X[:, other] @ ols[other] if other else 0.0
    Z = np.column_stack([b.Z for b in blocks])
    none, sizes = no_pooling_fits(blocks[0].group_idx, len(levels), Z, design.y - offset)

    beta_mean = params.beta.mean(axis=0)
    partial = np.zeros((len(levels), len(terms)))
    for c, t in enumerate(terms):
        if t in names:
            partial[:, c] = beta_mean[names.index(t)]
    ranef_means = [params.ranef[k].mean(axis=0) for k, b in enumerate(design.blocks) if b.factor == factor]
    partial += np.concatenate(ranef_means, axis=1)

    bad = [lev for lev, row in zip(levels, none) if np.isnan(row).any()]
    note = (
        f"{len(bad)} level(s) of {factor!r} have too few rows (or too little spread) to fit {terms} "
        f"without pooling; their no-pooling estimates are NaN: {bad[:10]}{' ...' if len(bad) > 10 else ''}"
        if bad
        else ""
    )
    if bad:
        warnings.warn(note, UserWarning, stacklevel=3)

    nlev, nterm = len(levels), len(terms)
    out = pd.DataFrame(
        {
            "grpvar": factor,
            "grp": np.tile(levels, nterm),
            "term": np.repeat(terms, nlev),
            "n": np.tile(sizes, nterm),
            "complete_pooling": np.repeat(complete, nlev),
            "no_pooling": none.T.reshape(-1),
            "partial_pooling": partial.T.reshape(-1),
        }
    )
    out.attrs["note"] = note
    return out
