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
    kinds = {_kind_of(v) for v in values.dropna()}
    return kinds.pop() if len(kinds) == 1 else "string"


def _kind_of(v: Any) -> str | None:
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return "number"
    if isinstance(v, str):
        return "string"
    return None


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
        uniq, inverse = np.unique(np.column_stack(per_codes), axis=0, return_inverse=True)
        codes = inverse.reshape(-1).astype(np.int64)
        keys = tuple(tuple(per_levels[j][k] for j, k in enumerate(row)) for row in uniq)
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
    lookup: dict[tuple[Any, ...], int] = {}
    for i, key in enumerate(keys):
        lookup[tuple(_as_kind(v, k) for v, k in zip(key, kinds))] = i
    columns = [frame[v].tolist() for v in fvars]
    n = frame.shape[0]
    idx = np.empty(n, dtype=np.int64)
    unseen: dict[tuple[Any, ...], None] = {}
    for r in range(n):
        raw = tuple(plain(col[r]) for col in columns)
        typed = tuple(_as_kind(v, k) for v, k in zip(raw, kinds))
        i = lookup.get(typed, -1) if None not in typed else -1
        idx[r] = i
        if i < 0:
            unseen.setdefault(raw, None)
    return idx, list(unseen)
