r"""Levels of grouping factors: their identity, their labels, and matching new data to them.

A level of a grouping factor is identified by the tuple of its component
values, typed as the fit saw them: ``(308,)`` for ``Subject``, ``("p:q", "r")``
for ``a:b``. The label (``"308"``, ``'"p:q":r'``) is for display only -- row
names of ``ranef``, posterior coordinates -- and never used to find a level.

lme4 labels a combined factor ``a:b`` by joining its components with ``:``,
which is ambiguous when a component holds a ``:`` itself (``a = "p:q", b = "r"``
and ``a = "p", b = "q:r"`` both become ``p:q:r``). Here such a component is
written in double quotes (with ``"`` and ``\\`` escaped), so distinct levels
always get distinct labels; labels of ordinary data are lme4's.

New values match a level when they are equal *as the type the fit saw*: a
number matches a number (``308.0`` is the level ``308``), a string matches a
string (``" 308"`` is not ``"308"``, and ``"308"`` is not the number 308).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["value_kind", "plain", "level_label", "factor_codes", "match_levels"]

KINDS = ("number", "string", "bool")


def value_kind(values: pd.Series) -> str:
    """``"number"``, ``"string"`` or ``"bool"``: the type of a grouping column's values."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return value_kind(pd.Series(values.cat.categories))
    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_numeric_dtype(values):
        return "number"
    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred == "boolean":
        return "bool"
    if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
        return "number"
    return "string"


def plain(v: Any) -> Any:
    """A numpy scalar as the Python scalar it holds; integral floats stay floats."""
    return v.item() if isinstance(v, np.generic) else v


def _text(v: Any) -> str:
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return str(int(v))  # R prints the level 308, not 308.0
    return str(v)


def _quoted(text: str) -> str:
    if ":" in text or '"' in text or "\\" in text:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def level_label(key: tuple[Any, ...]) -> str:
    """The display label of a level: lme4's ``a:b`` form, quoting components that need it."""
    if len(key) == 1:
        return _text(key[0])
    return ":".join(_quoted(_text(v)) for v in key)


def _sorted_levels(s: pd.Series) -> list[Any]:
    if isinstance(s.dtype, pd.CategoricalDtype):
        present = set(s.dropna().unique())
        return [c for c in s.cat.categories if c in present]
    uniq = pd.unique(s.dropna())
    try:
        return sorted(uniq)
    except TypeError:
        return sorted(uniq, key=str)


def _unique_rows(codes: np.ndarray, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The distinct rows of non-negative integer codes (in lexicographic order) and each row's index among them."""
    if float(np.prod(np.asarray(sizes, dtype=float))) < 2.0**62:  # one integer per row: a fast 1-d sort
        strides = np.cumprod([1] + sizes[:0:-1])[::-1].astype(np.int64)
        flat = codes.astype(np.int64) @ strides
        uniq_flat, inverse = np.unique(flat, return_inverse=True)
        uniq = (uniq_flat[:, None] // strides[None, :]) % np.asarray(sizes, dtype=np.int64)[None, :]
        return uniq, inverse.reshape(-1).astype(np.int64)
    uniq, inverse = np.unique(codes, axis=0, return_inverse=True)
    return uniq, inverse.reshape(-1).astype(np.int64)


def factor_codes(
    frame: pd.DataFrame, fvars: tuple[str, ...]
) -> tuple[np.ndarray, tuple[tuple[Any, ...], ...], tuple[str, ...], tuple[str, ...]]:
    """Level index of every row, and the levels of the (interaction of the) factor columns.

    Returns
    -------
    codes
        ``(n,)`` integer level index per row.
    keys
        The levels, each the tuple of its component values (sorted as lme4 sorts them).
    labels
        Their display labels (see :func:`level_label`), all distinct.
    kinds
        The value kind of each factor column (:func:`value_kind`).
    """
    per_codes, per_levels = [], []
    for v in fvars:
        lev = _sorted_levels(frame[v])
        per_codes.append(np.asarray(pd.Categorical(frame[v], categories=lev).codes, dtype=np.int64))
        per_levels.append([plain(x) for x in lev])
    if len(fvars) == 1:
        codes = per_codes[0]
        keys = tuple((x,) for x in per_levels[0])
    else:
        uniq, codes = _unique_rows(np.column_stack(per_codes), [len(lev) for lev in per_levels])
        keys = tuple(tuple(per_levels[j][k] for j, k in enumerate(row)) for row in uniq.tolist())
    labels = tuple(level_label(k) for k in keys)
    if len(set(labels)) != len(labels):
        dups = sorted({lab for lab in labels if labels.count(lab) > 1})[:5]
        raise ValueError(f"distinct levels share the label(s) {dups}; make the values of {list(fvars)} distinct as text")
    return codes, keys, labels, tuple(value_kind(frame[v]) for v in fvars)


def _as_kind(v: Any, kind: str) -> Any:
    """``v`` as a value of ``kind`` for matching, or ``None`` if it is of another type."""
    v = plain(v)
    if kind == "bool":
        return v if isinstance(v, bool) else None
    if kind == "number":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and math.isnan(v)):
            return None
        return v
    return v if isinstance(v, str) else None


def _component_codes(values: pd.Series, uniq: list[Any], kind: str) -> np.ndarray:
    """Position of each value in ``uniq`` (values of ``kind``), ``-1`` where absent or of another type."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    arr = values.to_numpy()
    numeric = pd.api.types.is_numeric_dtype(values.dtype) and not pd.api.types.is_bool_dtype(values.dtype)
    fast = (
        (kind == "number" and numeric)
        or (kind == "bool" and pd.api.types.is_bool_dtype(values.dtype))
        or (kind == "string" and pd.api.types.infer_dtype(arr, skipna=False) == "string")
    )
    if fast:
        return np.asarray(pd.Index(uniq, dtype=object if kind == "string" else None).get_indexer(arr), dtype=np.int64)
    lookup = {v: i for i, v in enumerate(uniq)}
    typed = (_as_kind(v, kind) for v in arr)
    return np.fromiter((-1 if t is None else lookup.get(t, -1) for t in typed), dtype=np.int64, count=len(arr))


def match_levels(
    frame: pd.DataFrame, fvars: tuple[str, ...], keys: tuple[tuple[Any, ...], ...], kinds: tuple[str, ...]
) -> tuple[np.ndarray, list[tuple[Any, ...]]]:
    """The training level index of every row of new data, ``-1`` where the level is unseen.

    Parameters
    ----------
    frame
        New data holding the factor columns.
    fvars
        The factor columns.
    keys, kinds
        The training levels and the value kind of each column (:func:`factor_codes`).

    Returns
    -------
    idx
        ``(n,)`` level index, ``-1`` for unseen levels.
    unseen
        The unseen levels, as tuples of the raw values, in order of first appearance.
    """
    n = frame.shape[0]
    uniqs = [list(dict.fromkeys(key[j] for key in keys)) for j in range(len(fvars))]
    comp = np.column_stack([_component_codes(frame[v], uniqs[j], kinds[j]) for j, v in enumerate(fvars)]) if n else (
        np.zeros((0, len(fvars)), dtype=np.int64))
    positions = [{v: i for i, v in enumerate(u)} for u in uniqs]
    by_codes = {tuple(positions[j][key[j]] for j in range(len(fvars))): i for i, key in enumerate(keys)}
    idx = np.full(n, -1, dtype=np.int64)
    found = (comp >= 0).all(axis=1)
    if found.any():
        rows, inverse = _unique_rows(comp[found], [len(u) for u in uniqs])
        idx[found] = np.array([by_codes.get(tuple(row), -1) for row in rows.tolist()], dtype=np.int64)[inverse]
    columns = [frame[v] for v in fvars]
    unseen = dict.fromkeys(tuple(plain(col.iloc[r]) for col in columns) for r in np.flatnonzero(idx < 0))
    return idx, list(unseen)
