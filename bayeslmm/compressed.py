"""Per-group sums of products -> a design of *compressed rows* (the out-of-core design's last step).

The Gaussian mixed model of a design whose group effects collapse (one
grouping factor, or two nested ones) depends on the rows only through, per
finest group g (a level of the single factor, or of the inner one), the
cross-products M_g = W_g'W_g of W = [Z_inner Z_outer X y]: the REML criterion
(lme4's profiled deviance) and the collapsed likelihood are sums over groups
of functions of M_g. Any rows with the same M_g per group give the same fit.

:func:`compressed_design` factors each M_g = C_g'C_g (C_g square, from the
symmetric eigendecomposition of M_g scaled to unit diagonal) and uses the rows
of C_g, all in group g, as the design's rows: a few rows per group, whatever
the number of data rows. The design records the true number of rows and the
column moments in its :class:`~bayeslmm.rowsummary.RowSummary`, and refuses
what needs the real rows (:meth:`~bayeslmm.design.Design.require_rows`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from .design import BlockDesign, Design
from .errors import DataError, DataWarning, warn_user
from .groupwise import group_products
from .modelframe import check_levels
from .recipe import DesignRecipe, term_labels
from .rowsummary import RowSummary, gram_layout, moments_from_gram

__all__ = [
    "GroupSums", "FactorLevels", "compressed_design", "compress", "accumulate_gram", "independent_columns_gram", "gram_rows",
]


@dataclass(frozen=True)
class FactorLevels:
    """A grouping factor's levels over all the data (from the distinct-values pass).

    Attributes
    ----------
    name, fvars
        The factor's name and data columns.
    keys, labels, kinds
        As :func:`bayeslmm.grouping.factor_codes` gives them.
    """

    name: str
    fvars: tuple[str, ...]
    keys: tuple[tuple[Any, ...], ...]
    labels: tuple[str, ...]
    kinds: tuple[str, ...]


@dataclass(frozen=True)
class GroupSums:
    """The sums one pass over the data accumulates.

    ``gram[g]`` is the cross-product matrix, over the rows of finest group g, of
    the columns ``[1, Z (blocks in design order), X (every column, before
    aliased ones are dropped), y]``, upper triangle only (see :func:`accumulate_gram`).
    """

    rows_read: int
    n_missing: int
    missing_by_column: dict[str, int]
    gram: np.ndarray
    y_min: float
    y_max: float
    n_partitions: int


def accumulate_gram(acc: np.ndarray, idx: np.ndarray, W: np.ndarray) -> None:
    """Add, in place, the per-group cross-products of W's rows to the upper triangle of ``acc`` ``(G, d, d)``.

    Each sum runs over the rows in order, one addition per row, as ``np.bincount``
    (hence :func:`bayeslmm.groupwise.group_products`) adds them: folding
    partitions in order into one accumulator gives the sums of the whole data
    to the last bit, however the rows are partitioned.
    """
    for a in range(W.shape[1]):
        for b in range(a, W.shape[1]):
            np.add.at(acc[:, a, b], idx, W[:, a] * W[:, b])


def _symmetric(gram: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(gram.shape[1], 1)
    out = gram.copy()
    out[:, iu[1], iu[0]] = out[:, iu[0], iu[1]]
    return out


def independent_columns_gram(G: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """The columns kept by :func:`bayeslmm.design.build_design`'s rank check, from the Gram matrix X'X.

    A column is dropped when its residual on the kept columns before it is at most
    ``tol`` times its norm (lme4 keeps the earlier columns), as the design stage
    decides on X itself.
    """
    keep: list[int] = []
    for j in range(G.shape[0]):
        norm2 = float(G[j, j])
        if norm2 <= 0:
            continue
        if keep:
            K = G[np.ix_(keep, keep)]
            g = G[keep, j]
            resid2 = norm2 - float(g @ np.linalg.solve(K, g))
        else:
            resid2 = norm2
        if resid2 > (tol**2) * norm2:
            keep.append(j)
    return np.asarray(keep, dtype=int)


def gram_rows(M: np.ndarray) -> np.ndarray:
    """Square factors C with C'C = M for a stack of positive semi-definite matrices ``(G, d, d)``."""
    scale = np.sqrt(np.diagonal(M, axis1=1, axis2=2)).copy()
    scale[scale == 0] = 1.0
    Ms = M / (scale[:, :, None] * scale[:, None, :])
    lam, V = np.linalg.eigh(Ms)
    C = np.sqrt(np.clip(lam, 0.0, None))[:, :, None] * np.swapaxes(V, 1, 2)
    return C * scale[:, None, :]


def _label(blocks: list[BlockDesign]) -> list[BlockDesign]:
    """lme4's labels for repeated factors (``Subject``, ``Subject.1``)."""
    seen: dict[str, int] = {}
    out = []
    for b in blocks:
        k = seen.get(b.factor, 0)
        seen[b.factor] = k + 1
        out.append(replace(b, label=b.factor if k == 0 else f"{b.factor}.{k}"))
    return out


def _compressed_arrays(
    blocks: list[BlockDesign], gram: np.ndarray, zcols: list[list[int]], xcols: list[int], yc: int,
    fine_factor: str, parent: np.ndarray | None,
) -> tuple[list[BlockDesign], np.ndarray, np.ndarray]:
    """Compressed rows of ``blocks`` (in design order, their Z in ``zcols`` of the Gram), X (``xcols``) and y."""
    sel = [c for zc in zcols for c in zc] + list(xcols) + [yc]
    M = gram[:, sel][:, :, sel]
    d = len(sel)
    rows = gram_rows(M).reshape(-1, d)
    fine = np.repeat(np.arange(M.shape[0], dtype=np.int64), d)
    out, pos = [], 0
    for b, zc in zip(blocks, zcols):
        idx = fine if (b.factor == fine_factor or parent is None) else parent[fine]
        out.append(replace(b, group_idx=idx, Z=np.ascontiguousarray(rows[:, pos : pos + len(zc)])))
        pos += len(zc)
    return out, np.ascontiguousarray(rows[:, pos : pos + len(xcols)]), np.ascontiguousarray(rows[:, -1])


def compress(design: Design) -> Design:
    """The design on compressed rows (module docstring), for a design whose group effects collapse.

    The sums are those the out-of-core pass forms, in the same order, so an
    in-memory design and the out-of-core design of the same rows compress to
    the same numbers to the last bit (and their collapsed fits draw alike).
    """
    if design.summary is not None:
        return design
    finest = max(design.blocks, key=lambda b: b.n_levels)
    parent = None
    for b in design.blocks:
        if b.factor != finest.factor:
            parent = np.full(finest.n_levels, -1, dtype=np.int64)
            parent[finest.group_idx] = b.group_idx
    W = np.column_stack([np.ones(design.nobs), *[b.Z for b in design.blocks], design.X, design.y])
    gram = group_products(finest.group_idx, finest.n_levels, W)
    zcols, xcols, yc = gram_layout([b.q for b in design.blocks], design.X.shape[1])
    blocks, X, y = _compressed_arrays(list(design.blocks), gram, zcols, xcols, yc, finest.factor, parent)
    summary = RowSummary(n=design.nobs, moments=design.moments, source="the data frame", n_partitions=1)
    return replace(design, y=y, X=X, blocks=tuple(blocks), summary=summary)


def _missing(sums: GroupSums, na_action: str, source: str) -> None:
    which = sorted(c for c, k in sums.missing_by_column.items() if k)
    if na_action == "raise":
        raise DataError(
            f"{sums.n_missing} row(s) of {source} have missing values in column(s) {which}. "
            "Remove them, or use na_action='drop' to drop them with a warning."
        )
    warn_user(
        f"Dropped {sums.n_missing} of {sums.rows_read} row(s) with missing values in column(s) {which}.",
        DataWarning,
    )


def compressed_design(
    template: Design,
    factors: dict[str, FactorLevels],
    parent: np.ndarray | None,
    sums: GroupSums,
    na_action: str,
    source: str,
) -> Design:
    """The design of the data the sums describe, on compressed rows.

    Parameters
    ----------
    template
        The design of a few rows with every categorical level (its recipe and
        its blocks in the order the sums' columns follow).
    factors
        Every grouping factor's levels over all the data; the finest factor is
        the one with most levels.
    parent
        For two nested factors, the outer level of every inner level; else None.
    sums
        The pass's sums.
    na_action
        ``"drop"`` warns with the count of dropped rows; ``"raise"`` refuses them.
    source
        The data, for messages.

    Returns
    -------
    Design
    """
    recipe: DesignRecipe = template.recipe  # type: ignore[assignment]
    if sums.n_missing:
        _missing(sums, na_action, source)
    gram = _symmetric(sums.gram)
    S = gram.sum(axis=0)
    n = int(round(S[0, 0]))
    if n == 0:
        raise DataError("No rows are left after dropping rows with missing values.")
    if sums.y_min == sums.y_max:  # as build_design: a constant response has nothing to model
        raise DataError(
            f"The response {template.response_name!r} is constant ({sums.y_min!r}); there is no variation to model."
        )
    names_full = [lab for t in recipe.fixed for lab in term_labels(t)]
    zcols, xcols, yc = gram_layout([b.q for b in template.blocks], len(names_full))
    keep = independent_columns_gram(S[np.ix_(xcols, xcols)])
    dropped = tuple(names_full[i] for i in range(len(names_full)) if i not in set(keep.tolist()))
    if dropped:
        warn_user(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} column(s) / "
            f"coefficient(s): {list(dropped)}.", DataWarning,
        )
    for f in factors.values():
        check_levels(f.name, len(f.keys), n)
    for b, zc in zip(template.blocks, zcols):
        zero = [t for t, c in zip(b.terms, zc) if S[c, c] == 0]
        if zero:
            warn_user(
                f"The random-effect column(s) {zero} of {b.factor!r} are all zero; their sd is not identified "
                "by the data (only by its prior). Remove the term.", DataWarning,
            )
    # lme4's order, most levels first (stable), as build_design orders the blocks.
    order = sorted(range(len(template.blocks)), key=lambda k: -len(factors[template.blocks[k].factor].keys))
    blocks = []
    for k in order:
        f = factors[template.blocks[k].factor]
        blocks.append(replace(template.blocks[k], levels=f.labels, level_keys=f.keys, kinds=f.kinds))
    blocks = _label(blocks)
    xk = [xcols[i] for i in keep]
    finest = max(factors.values(), key=lambda f: len(f.keys)).name
    blocks, X, y = _compressed_arrays(blocks, gram, [zcols[k] for k in order], xk, yc, finest, parent)
    moments = moments_from_gram(S, [zcols[k] for k in order], xk, yc)
    brecipes = tuple(
        replace(recipe.blocks[k], label=blocks[i].label, level_keys=blocks[i].level_keys, kinds=blocks[i].kinds)
        for i, k in enumerate(order)
    )
    return Design(
        parsed=template.parsed,
        y=y,
        X=X,
        fixed_names=tuple(names_full[i] for i in keep),
        blocks=tuple(blocks),
        frame=pd.DataFrame({c: template.frame[c].iloc[:0] for c in template.frame.columns}),
        dropped_fixed=dropped,
        n_dropped_rows=sums.n_missing,
        encoders=None,
        recipe=replace(recipe, kept=tuple(int(i) for i in keep), blocks=brecipes),
        recipe_problem="",
        summary=RowSummary(n=n, moments=moments, source=source, n_partitions=sums.n_partitions),
    )
