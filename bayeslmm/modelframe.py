"""The model frame: checking and cleaning the data before formulae evaluates a formula on it.

Shared by the design stage (training data) and :mod:`bayeslmm.newdata` (new
data): one column type per column, no infinite values, rows with missing
values dropped with a count (or refused), categorical level order kept as R
keeps a factor's, and every evaluated model-matrix column checked to be finite
and free of overflow, with the column named when it is not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError, DataWarning, warn_user
from .formula import ParsedFormula

__all__ = [
    "check_frame",
    "is_numeric",
    "uniform_object_column",
    "clean_rows",
    "check_response",
    "check_values",
    "check_response_values",
    "check_levels",
]


def check_frame(parsed: ParsedFormula, data: Any) -> None:
    """Refuse data that are not a DataFrame, are empty, repeat a column name or lack a column the formula uses."""
    if not isinstance(data, pd.DataFrame):
        raise DataError(f"data must be a pandas DataFrame, got {type(data).__name__}.")
    if data.columns.duplicated().any():
        dups = sorted({str(c) for c in data.columns[data.columns.duplicated()]})
        raise DataError(f"The data frame has duplicate column names {dups}; rename them so each is unique.")
    if data.shape[0] == 0:
        raise DataError("The data frame is empty (0 rows); a model needs observations.")
    missing = sorted(v for v in parsed.var_names if v not in data.columns)
    if missing:
        raise DataError(
            f"Column(s) {missing} used in the formula {parsed.text!r} are not in the data. "
            f"Available columns: {[str(c) for c in data.columns]}."
        )


def is_numeric(s: pd.Series) -> bool:
    """Whether a column holds numbers (booleans are not numbers here)."""
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def value_kind(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return "number"
    return "string" if isinstance(v, str) else type(v).__name__


def uniform_object_column(s: pd.Series, name: str) -> pd.Series:
    """An object column as one type: numbers -> float, booleans -> bool, strings kept; mixed -> DataError."""
    kinds = {value_kind(v) for v in s.dropna()}
    if len(kinds) > 1 or (kinds and kinds.pop() not in ("number", "bool", "string")):
        found = sorted({value_kind(v) for v in s.dropna()})
        raise DataError(
            f"Column {name!r} mixes values of different types ({', '.join(found)}); make it one type, "
            f"e.g. data[{name!r}].astype(str) for a factor or pd.to_numeric(data[{name!r}]) for a number."
        )
    kind = value_kind(s.dropna().iloc[0]) if s.notna().any() else "string"
    if kind == "number":
        return s.astype(float)
    if kind == "bool" and s.notna().all():
        return s.astype(bool)
    return s


def clean_rows(parsed: ParsedFormula, data: pd.DataFrame, na_action: str) -> tuple[pd.DataFrame, int]:
    """The model frame (the used columns, one type each) and the number of incomplete rows dropped."""
    cols = sorted(parsed.var_names)
    frame = data.loc[:, cols].copy()
    for c in cols:
        if frame[c].dtype == object:
            frame[c] = uniform_object_column(frame[c], c)
        s = frame[c]
        if is_numeric(s):
            vals = s.to_numpy(dtype=float, na_value=np.nan)
            if np.isinf(vals).any():
                n_inf = int(np.isinf(vals).sum())
                raise DataError(
                    f"Column {c!r} has {n_inf} infinite value(s); replace or remove them before fitting."
                )
    na = frame.isna().any(axis=1).to_numpy()
    n_na = int(na.sum())
    if n_na:
        which = [c for c in cols if frame[c].isna().any()]
        if na_action == "raise":
            raise DataError(
                f"{n_na} row(s) have missing values in column(s) {which}. "
                "Remove them, or use na_action='drop' to drop them with a warning."
            )
        warn_user(
            f"Dropped {n_na} of {len(frame)} row(s) with missing values in column(s) {which}.",
            DataWarning,
        )
        frame = frame.loc[~na]
    if frame.shape[0] == 0:
        raise DataError("No rows are left after dropping rows with missing values.")
    return ordered_categoricals(frame), n_na


def ordered_categoricals(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep a categorical column's level order, as R's factors do.

    formulae sorts the levels of unordered categoricals alphabetically; marking
    them ordered (with unused levels dropped, as lme4's model frame does) makes
    it use the user's order, so the first level is the reference.
    """
    for c in frame.columns:
        s = frame[c]
        if isinstance(s.dtype, pd.CategoricalDtype) and not s.dtype.ordered:
            used = set(s.dropna().unique())
            cats = [x for x in s.cat.categories if x in used]
            frame[c] = s.astype(pd.CategoricalDtype(categories=cats, ordered=True))
    return frame


def check_response(parsed: ParsedFormula, frame: pd.DataFrame) -> None:
    """Refuse a response column that is not numeric."""
    name = parsed.response_name
    if name in frame.columns and not is_numeric(frame[name]):
        raise DataError(
            f"The response {name!r} is not numeric (dtype {frame[name].dtype}); "
            "a linear mixed model needs a numeric response. Convert it, e.g. with pd.to_numeric."
        )


def check_values(what: str, names: list[str], M: np.ndarray, index: pd.Index) -> None:
    """Every column finite and small enough that its squares do not overflow; else name it."""
    for j, name in enumerate(names):
        col = M[:, j]
        bad = ~np.isfinite(col)
        if bad.any():
            first = index[int(np.flatnonzero(bad)[0])]
            kinds = sorted({"NaN" if np.isnan(v) else ("inf" if v > 0 else "-inf") for v in col[bad]})
            raise DataError(
                f"The {what} {name!r} has {int(bad.sum())} non-finite value(s) ({', '.join(kinds)}) after evaluation, "
                f"the first in row {first!r}; its transformation is undefined there (e.g. the log of 0). "
                "Remove those rows or change the transformation (e.g. log(x + 1))."
            )
        with np.errstate(over="ignore"):
            if not np.isfinite(col @ col):
                raise DataError(
                    f"The {what} {name!r} has values too large to compute with (largest |value| "
                    f"{float(np.max(np.abs(col))):.3g}; their squares overflow). Rescale it, e.g. divide by a power of ten."
                )


def check_response_values(parsed: ParsedFormula, y: np.ndarray, n: int, index: pd.Index) -> None:
    """Refuse a response that is not one finite, non-constant number per row."""
    if y.shape[0] != n:
        raise DataError(f"The response {parsed.response_name!r} must give one number per row.")
    check_values("response", [parsed.response_name], y.reshape(n, 1), index)
    if np.ptp(y) == 0:
        raise DataError(
            f"The response {parsed.response_name!r} is constant ({float(y[0])!r}); there is no variation to model."
        )


def check_levels(fname: str, n_levels: int, n: int) -> None:
    """Refuse a grouping factor with one level, or with as many levels as rows."""
    if n_levels < 2:
        raise DataError(
            f"The grouping factor {fname!r} has only {n_levels} level; a random effect "
            "needs at least two groups. Remove the term or fit it as a fixed effect."
        )
    if n_levels >= n:
        raise DataError(
            f"The grouping factor {fname!r} has {n_levels} levels for {n} observations; "
            "every row is its own group, so the group effect cannot be told apart from the residual. "
            "Remove the term or group at a coarser level."
        )
