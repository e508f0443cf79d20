"""Stage 2b: new data -> :class:`NewDesign`, encoded exactly as the training data were.

Prediction (:mod:`bayeslmm.predict`) uses this for Bayesian and REML fits
alike. The fitted formulae encoders kept in :class:`~bayeslmm.design.Encoders`
evaluate the fixed part and each block's Z columns; grouping labels are mapped
to training level indices, with ``-1`` for levels never seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .design import Design, _factor_labels, _is_numeric, _uniform_object_column
from .errors import DataError, PredictionError

__all__ = ["NewDesign", "encode_new_data"]


@dataclass(frozen=True)
class NewDesign:
    """A new data set encoded like the training data.

    ``group_idx[k]`` is ``-1`` for rows whose level was not seen in training;
    ``new_code[k]`` then gives the row's position in ``new_levels[k]`` (else ``-1``).
    """

    X: np.ndarray
    group_idx: tuple[np.ndarray, ...]
    Z: tuple[np.ndarray, ...]
    new_levels: tuple[tuple[str, ...], ...]
    new_code: tuple[np.ndarray, ...] = ()


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
        If a needed column is missing or a value cannot be encoded.
    """
    if design.encoders is None:
        raise PredictionError("This design has no encoders; rebuild it from the data.")
    if not isinstance(newdata, pd.DataFrame):
        raise PredictionError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}.")
    if newdata.shape[0] == 0:
        raise PredictionError("newdata has no rows.")
    needed = set(design.parsed.var_names) - set(design.parsed.response.var_names)  # y of np.log(y) too
    if not blocks:
        fixed_vars = {str(v) for t in design.parsed.fixed_terms for v in t.var_names}
        needed -= {v for b in design.blocks for v in b.factor_vars} - fixed_vars
    missing = sorted(v for v in needed if v not in newdata.columns)
    if missing:
        raise PredictionError(f"newdata lacks column(s) {missing} that the formula {design.parsed.text!r} uses.")
    cols = sorted(needed)
    dups = sorted({str(c) for c in newdata.columns[newdata.columns.duplicated()] if c in needed})
    if dups:
        raise PredictionError(f"newdata has duplicate column names {dups}; rename them so each is unique.")
    nd = newdata.loc[:, cols].reset_index(drop=True)
    terms = design.parsed.fixed_terms + tuple(e for rb in design.parsed.blocks for e in rb.exprs)
    in_terms = set().union(*(t.var_names for t in terms))  # grouping columns are labels, not numbers
    for c in cols:
        if nd[c].dtype == object:
            try:
                nd[c] = _uniform_object_column(nd[c], c)
            except DataError as exc:
                raise PredictionError(f"newdata: {exc}") from None
        if c in in_terms and _is_numeric(design.frame[c]) and not pd.api.types.is_numeric_dtype(nd[c]):
            raise PredictionError(
                f"newdata column {c!r} must be numeric, as in the data the model was fitted to; it has dtype {nd[c].dtype}."
            )
    na_cols = [c for c in cols if nd[c].isna().any()]
    if na_cols:
        raise PredictionError(f"newdata has missing values in column(s) {na_cols}; fill or drop those rows first.")
    inf_cols = [c for c in cols if _is_numeric(nd[c]) and np.isinf(nd[c].to_numpy(dtype=float)).any()]
    if inf_cols:
        raise PredictionError(f"newdata has infinite values in column(s) {inf_cols}; replace or drop those rows first.")
    n = nd.shape[0]
    enc = design.encoders
    if enc.fixed is not None and len(design.fixed_names) > 0:
        try:
            Xn = np.asarray(enc.fixed.evaluate_new_data(nd).design_matrix, dtype=float).reshape(n, -1)
        except Exception as exc:
            raise PredictionError(f"Could not encode the fixed part on newdata: {exc}") from None
        Xn = Xn[:, enc.kept_columns]
    else:
        Xn = np.zeros((n, 0))
    idxs, Zs, news, codes = [], [], [], []
    if blocks:
        for b, benc, lmap in zip(design.blocks, enc.blocks, enc.level_maps):
            labels = _factor_labels(nd, b.factor_vars)
            idx = np.fromiter((lmap.get(lab, -1) for lab in labels), dtype=np.int64, count=n)
            try:
                Zn = np.asarray(benc.evaluate_new_data(nd).design_matrix, dtype=float).reshape(n, -1)
            except Exception as exc:
                raise PredictionError(f"Could not encode the random term of {b.factor!r} on newdata: {exc}") from None
            idxs.append(idx)
            Zs.append(Zn)
            news.append(tuple(sorted({lab for lab, i in zip(labels, idx) if i < 0})))
            pos = {lab: j for j, lab in enumerate(news[-1])}
            codes.append(np.fromiter((pos.get(lab, -1) if i < 0 else -1 for lab, i in zip(labels, idx)), np.int64, n))
    return NewDesign(X=Xn, group_idx=tuple(idxs), Z=tuple(Zs), new_levels=tuple(news), new_code=tuple(codes))
