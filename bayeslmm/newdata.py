"""Stage 2b: new data -> :class:`NewDesign`, encoded exactly as the training data were.

Prediction (:mod:`bayeslmm.predict`) uses this for Bayesian and REML fits
alike. The fixed part and each block's Z columns are evaluated from the
design's plain-data recipe (:mod:`bayeslmm.recipe`) -- the same for a fit
just made and one loaded from a file -- or, for a formula outside the
allowlist (a user's own function), by formulae's fitted encoders. Grouping
values are matched to the training levels by the type the fit saw
(:mod:`bayeslmm.grouping`), with ``-1`` for levels never seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import grouping
from .design import Design
from .errors import DataError, PredictionError
from .modelframe import check_values, is_numeric, uniform_object_column
from .recipe import EvaluationError, evaluate_terms, node_columns

__all__ = ["NewDesign", "encode_new_data", "unseen_label"]


@dataclass(frozen=True)
class NewDesign:
    """A new data set encoded like the training data.

    Attributes
    ----------
    X
        Fixed-effects matrix of the new rows.
    group_idx
        Per block, the training level index of every row (``-1`` for an unseen level).
    Z
        Per block, the Z columns of the new rows.
    new_levels
        Per block, the unseen levels (labels as :func:`unseen_label` writes them), in order of appearance.
    new_code
        Per block, each row's position in ``new_levels`` (``-1`` for seen levels).
    """

    X: np.ndarray
    group_idx: tuple[np.ndarray, ...]
    Z: tuple[np.ndarray, ...]
    new_levels: tuple[tuple[str, ...], ...]
    new_code: tuple[np.ndarray, ...] = ()


def unseen_label(key: tuple[Any, ...]) -> str:
    """A level as it is shown in messages: strings quoted, so ``' 308'`` differs from ``308``."""
    parts = [repr(v) if isinstance(v, str) else grouping.level_label((v,)) for v in key]
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


def _needed(design: Design, blocks: bool) -> tuple[set[str], set[str]]:
    """(columns needed, columns whose values enter model-matrix terms)."""
    if design.recipe is not None:
        r = design.recipe
        in_terms = {c for t in r.fixed for comp in t.components for c in node_columns(comp.node)}
        if blocks:
            in_terms |= {c for b in r.blocks for t in b.terms for comp in t.components for c in node_columns(comp.node)}
        return r.columns(blocks), in_terms
    parsed = design.parsed
    fixed_vars = {str(v) for t in parsed.fixed_terms for v in t.var_names} - {""}
    if not blocks:
        return fixed_vars, fixed_vars
    block_vars = {str(v) for rb in parsed.blocks for e in rb.exprs for v in e.var_names} - {""}
    factor_vars = {v for b in design.blocks for v in b.factor_vars}
    return fixed_vars | block_vars | factor_vars, fixed_vars | block_vars


def _clean(design: Design, newdata: pd.DataFrame, needed: set[str], in_terms: set[str]) -> pd.DataFrame:
    missing = sorted(v for v in needed if v not in newdata.columns)
    if missing:
        raise PredictionError(f"newdata lacks column(s) {missing} that the formula {design.parsed.text!r} uses.")
    dups = sorted({str(c) for c in newdata.columns[newdata.columns.duplicated()] if c in needed})
    if dups:
        raise PredictionError(f"newdata has duplicate column names {dups}; rename them so each is unique.")
    cols = sorted(needed)
    nd = newdata.loc[:, cols].reset_index(drop=True)
    for c in cols:
        if nd[c].dtype == object:
            try:
                nd[c] = uniform_object_column(nd[c], c)
            except DataError as exc:
                raise PredictionError(f"newdata: {exc}") from None
        if c in in_terms and is_numeric(design.frame[c]) and not pd.api.types.is_numeric_dtype(nd[c]):
            raise PredictionError(
                f"newdata column {c!r} must be numeric, as in the data the model was fitted to; it has dtype {nd[c].dtype}."
            )
    na_cols = [c for c in cols if nd[c].isna().any()]
    if na_cols:
        raise PredictionError(f"newdata has missing values in column(s) {na_cols}; fill or drop those rows first.")
    inf_cols = [c for c in cols if is_numeric(nd[c]) and np.isinf(nd[c].to_numpy(dtype=float)).any()]
    if inf_cols:
        raise PredictionError(f"newdata has infinite values in column(s) {inf_cols}; replace or drop those rows first.")
    return nd


def _matrix(what: str, recipe_terms: Any, encoder: Any, nd: pd.DataFrame) -> np.ndarray:
    n = nd.shape[0]
    try:
        if recipe_terms is not None:
            M = evaluate_terms(recipe_terms, nd)
        else:
            M = np.asarray(encoder.evaluate_new_data(nd).design_matrix, dtype=float).reshape(n, -1)
    except EvaluationError as exc:
        raise PredictionError(f"Could not encode {what} on newdata: the term {exc.what!r} {exc.message}.") from None
    except Exception as exc:  # formulae's encoders raise bare ValueError/KeyError
        raise PredictionError(f"Could not encode {what} on newdata: {exc}") from None
    return M


def _finite(what: str, names: list[str], M: np.ndarray, index: pd.Index) -> None:
    try:
        check_values(what, names, M, index)
    except DataError as exc:
        raise PredictionError(f"newdata: {exc}") from None


def encode_new_data(design: Design, newdata: pd.DataFrame, blocks: bool = True) -> NewDesign:
    """Encode new data with the training encodings.

    Parameters
    ----------
    design
        The training design.
    newdata
        New rows. The response column is not needed.
    blocks
        Whether to encode the random-effect blocks too.

    Returns
    -------
    NewDesign

    Raises
    ------
    PredictionError
        If a needed column is missing, a value cannot be encoded (e.g. a level
        of a categorical predictor the fit never saw) or a transformation is
        not finite on it.
    """
    if design.recipe is None and design.encoders is None:
        raise PredictionError("This design has no encoders; rebuild it from the data.")
    if not isinstance(newdata, pd.DataFrame):
        raise PredictionError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}.")
    if newdata.shape[0] == 0:
        raise PredictionError("newdata has no rows.")
    nd = _clean(design, newdata, *_needed(design, blocks))
    n = nd.shape[0]
    recipe, enc = design.recipe, design.encoders
    if len(design.fixed_names) > 0:
        kept = list(recipe.kept) if recipe is not None else list(enc.kept_columns)
        Xn = _matrix("the fixed part", recipe.fixed if recipe is not None else None,
                     enc.fixed if recipe is None else None, nd)[:, kept]
        _finite("predictor", list(design.fixed_names), Xn, newdata.index)
    else:
        Xn = np.zeros((n, 0))
    idxs, Zs, news, codes = [], [], [], []
    if blocks:
        for k, b in enumerate(design.blocks):
            idx, unseen = grouping.match_levels(nd, b.factor_vars, b.level_keys, b.kinds)
            Zn = _matrix(f"the random term of {b.factor!r}", recipe.blocks[k].terms if recipe is not None else None,
                         enc.blocks[k] if recipe is None else None, nd)
            _finite(f"random-effect column of {b.factor!r}", list(b.terms), Zn, newdata.index)
            code = np.full(n, -1, dtype=np.int64)
            if unseen:
                pos = {key: j for j, key in enumerate(unseen)}
                rows = np.flatnonzero(idx < 0)
                cols = [nd[v].tolist() for v in b.factor_vars]
                code[rows] = [pos[tuple(grouping.plain(col[r]) for col in cols)] for r in rows]
            idxs.append(idx)
            Zs.append(Zn)
            news.append(tuple(unseen_label(key) for key in unseen))
            codes.append(code)
    return NewDesign(X=Xn, group_idx=tuple(idxs), Z=tuple(Zs), new_levels=tuple(news), new_code=tuple(codes))
