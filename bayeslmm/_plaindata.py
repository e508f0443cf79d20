"""Plain-data (JSON) codecs for :mod:`bayeslmm.io`, with type checks on the way back.

Everything read back from a file is untrusted: every decoder checks the type
of every value (strings where strings, numbers where numbers) and raises
:class:`~bayeslmm.errors.PersistenceError` naming the field otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

from .errors import PersistenceError

__all__ = [
    "plain",
    "expect",
    "field",
    "encode_frame",
    "decode_frame",
    "encode_dataclass",
    "decode_dataclass",
    "decode_priors",
]

_FLOAT = {"float64", "float32", "Float64", "Float32"}
_INT = {f"{u}int{b}" for u in ("", "u") for b in (8, 16, 32, 64)} | {f"{u}Int{b}" for u in ("", "U") for b in (8, 16, 32, 64)}
_BOOL = {"bool", "boolean"}
_STR = {"str", "string"}
_OBJECT = {"object"}
_ARRAY_DTYPES = {"float64", "int64", "bool"}


# ---------------------------------------------------------------------------
# Type checks
# ---------------------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def expect(value: Any, typ: type, where: str) -> Any:
    """Return ``value`` if it has JSON type ``typ`` (``float`` accepts integers), else raise.

    Parameters
    ----------
    value
        A value parsed from JSON.
    typ
        One of ``str``, ``int``, ``float``, ``bool``, ``list``, ``dict``.
    where
        The field's name, for the error message.
    """
    ok = {
        int: _is_int,
        float: _is_number,
        bool: lambda v: isinstance(v, bool),
    }.get(typ, lambda v: isinstance(v, typ))(value)
    if not ok:
        raise PersistenceError(f"Field {where!r} of the saved fit must be {typ.__name__}, got {type(value).__name__}.")
    return float(value) if typ is float else value


def field(d: dict[str, Any], key: str, typ: type) -> Any:
    """``expect(d[key], typ, key)``, raising :class:`PersistenceError` if the key is missing."""
    if key not in d:
        raise PersistenceError(f"The saved fit lacks the field {key!r}.")
    return expect(d[key], typ, key)


def plain(obj: Any) -> Any:
    """Numpy scalars to Python scalars, tuples to lists, recursively."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ---------------------------------------------------------------------------
# Data frames
# ---------------------------------------------------------------------------
def _encode_values(s: pd.Series | pd.Index, where: str) -> dict[str, Any]:
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.categories if isinstance(s, pd.Series) else s.categories
        codes = s.cat.codes if isinstance(s, pd.Series) else s.codes
        return {
            "dtype": "category",
            "ordered": bool(s.dtype.ordered),
            "categories": _encode_values(pd.Index(cats), where),
            "codes": [int(c) for c in codes],
        }
    dtype = str(s.dtype)
    if dtype not in _FLOAT | _INT | _BOOL | _STR | _OBJECT:
        raise PersistenceError(f"Column {where!r} has dtype {dtype}, which a saved fit cannot store.")
    values = [v.item() if isinstance(v, np.generic) else v for v in s.tolist()]
    if dtype in _OBJECT and not all(isinstance(v, (str, int, float, bool)) for v in values):
        raise PersistenceError(f"Column {where!r} holds values other than strings and numbers; it cannot be stored.")
    return {"dtype": dtype, "values": values}


def _check_value(v: Any, dtype: str) -> bool:
    if dtype in _FLOAT:
        return _is_number(v)
    if dtype in _INT:
        return _is_int(v)
    if dtype in _BOOL:
        return isinstance(v, bool)
    if dtype in _STR:
        return isinstance(v, str)
    return isinstance(v, (str, int, float, bool)) and not (isinstance(v, float) and math.isnan(v))


def _decode_values(spec: Any, where: str) -> pd.Series:
    spec = expect(spec, dict, where)
    dtype = field(spec, "dtype", str)
    if dtype == "category":
        cats = _decode_values(field(spec, "categories", dict), f"{where} categories")
        codes = field(spec, "codes", list)
        if not all(_is_int(c) and 0 <= c < len(cats) for c in codes):
            raise PersistenceError(f"Column {where!r} has category codes out of range.")
        try:
            cat = pd.Categorical.from_codes(codes, categories=pd.Index(cats), ordered=field(spec, "ordered", bool))
        except (ValueError, TypeError) as exc:
            raise PersistenceError(f"Column {where!r} has invalid categories: {exc}") from None
        return pd.Series(cat)
    if dtype not in _FLOAT | _INT | _BOOL | _STR | _OBJECT:
        raise PersistenceError(f"Column {where!r} has an unsupported dtype {dtype!r}.")
    values = field(spec, "values", list)
    if not all(_check_value(v, dtype) for v in values):
        raise PersistenceError(f"Column {where!r} holds values that do not match its dtype {dtype}.")
    try:
        return pd.Series(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise PersistenceError(f"Column {where!r} cannot be restored as {dtype}: {exc}") from None


def encode_frame(frame: pd.DataFrame) -> dict[str, Any]:
    """A model frame as plain data: columns with dtypes and category levels, and the row index.

    An index that cannot be stored (e.g. dates or a MultiIndex) is replaced by row positions.
    """
    columns = []
    for name in frame.columns:
        if not isinstance(name, str):
            raise PersistenceError(f"Column name {name!r} is not a string; it cannot be stored.")
        columns.append({"name": name, **_encode_values(frame[name], name)})
    try:
        if isinstance(frame.index, pd.MultiIndex):
            raise PersistenceError("MultiIndex")
        index = _encode_values(frame.index, "index")
    except PersistenceError:
        index = None
    return {"nrow": int(frame.shape[0]), "columns": columns, "index": index}


def decode_frame(spec: dict[str, Any]) -> pd.DataFrame:
    """Inverse of :func:`encode_frame`, checking every value."""
    nrow = field(spec, "nrow", int)
    data: dict[str, pd.Series] = {}
    for col in field(spec, "columns", list):
        col = expect(col, dict, "frame column")
        name = field(col, "name", str)
        if name in data:
            raise PersistenceError(f"The saved model frame has the column {name!r} twice.")
        s = _decode_values(col, name)
        if len(s) != nrow:
            raise PersistenceError(f"Column {name!r} of the saved model frame has {len(s)} rows, not {nrow}.")
        data[name] = s.reset_index(drop=True)
    index_spec = spec.get("index")
    index = pd.RangeIndex(nrow) if index_spec is None else pd.Index(_decode_values(index_spec, "index"))
    if len(index) != nrow:
        raise PersistenceError("The saved model frame's index has the wrong length.")
    frame = pd.DataFrame(data)
    frame.index = index
    return frame


# ---------------------------------------------------------------------------
# Dataclasses: REML results (arrays), sampler settings and diagnostics (scalars)
# ---------------------------------------------------------------------------
def _encode_any(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        dtype = {"f": "float64", "i": "int64", "u": "int64", "b": "bool"}.get(v.dtype.kind)
        if dtype is None:
            raise PersistenceError(f"An array of dtype {v.dtype} cannot be stored.")
        return {"dtype": dtype, "shape": list(v.shape), "data": v.astype(dtype).reshape(-1).tolist()}
    if isinstance(v, (list, tuple)):
        return [_encode_any(x) for x in v]
    return plain(v)


def encode_dataclass(obj: Any) -> dict[str, Any]:
    """A dataclass of numbers, strings, arrays and tuples of them as plain data."""
    return {f.name: _encode_any(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _split_union(annot: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in annot:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


def _decode_annot(v: Any, annot: str, where: str) -> Any:
    """Decode ``v`` as the (string) type annotation ``annot`` says, or raise."""
    options = _split_union(annot)
    if len(options) > 1:
        if v is None and "None" in options:
            return None
        return _decode_annot(v, next(o for o in options if o != "None"), where)
    if annot.startswith("tuple[") and annot.endswith(", ...]"):
        return tuple(_decode_annot(x, annot[6:-6], where) for x in expect(v, list, where))
    if annot == "np.ndarray":
        spec = expect(v, dict, where)
        dtype, shape, data = field(spec, "dtype", str), field(spec, "shape", list), field(spec, "data", list)
        if dtype not in _ARRAY_DTYPES or not all(_is_int(s) and s >= 0 for s in shape):
            raise PersistenceError(f"Field {where!r} is not a valid array.")
        if len(data) != math.prod(shape) or not all(_check_value(x, dtype) for x in data):
            raise PersistenceError(f"Field {where!r} has data that do not match its shape or dtype.")
        return np.asarray(data, dtype=dtype).reshape(shape)
    types = {"float": float, "int": int, "bool": bool, "str": str}
    if annot not in types:
        raise PersistenceError(f"Field {where!r} has a type ({annot}) that cannot be read back.")
    return expect(v, types[annot], where)


def decode_dataclass(spec: dict[str, Any], cls: type) -> dict[str, Any]:
    """Keyword arguments for ``cls`` from :func:`encode_dataclass` output, type-checked per field."""
    names = [f.name for f in dataclasses.fields(cls)]
    if set(spec) != set(names):
        raise PersistenceError(f"The saved {cls.__name__} has fields {sorted(spec)}, expected {sorted(names)}.")
    return {f.name: _decode_annot(spec[f.name], str(f.type), f.name) for f in dataclasses.fields(cls)}


# ---------------------------------------------------------------------------
# Priors
# ---------------------------------------------------------------------------
def decode_priors(spec: dict[str, Any]):
    """:class:`~bayeslmm.priors.Priors` from ``{"entries": Priors.to_list(), "intercept_centered": bool}``."""
    from .errors import PriorError
    from .priors import CORR_DISTS, POSITIVE_DISTS, REAL_DISTS, Priors, check_prior_params

    allowed = {"fixed": REAL_DISTS, "sigma": POSITIVE_DISTS, "sd": POSITIVE_DISTS, "cor": CORR_DISTS}
    rows = []
    for e in field(spec, "entries", list):
        e = expect(e, dict, "prior entry")
        cls = field(e, "cls", str)
        prior = field(e, "prior", dict)
        dist = field(prior, "dist", str)
        if cls not in allowed or dist not in allowed[cls]:
            raise PersistenceError(f"The saved prior {dist!r} for a {cls!r} parameter is not allowed.")
        for k, v in prior.items():
            if k != "dist" and not (k.isidentifier() and _is_number(v) and math.isfinite(v)):
                raise PersistenceError(f"The saved prior {dist!r} has an invalid parameter {k!r}: {v!r}.")
        for key in ("block", "term"):
            if e.get(key) is not None:
                field(e, key, str)
        if field(e, "source", str) not in ("default", "user"):
            raise PersistenceError("A saved prior has an invalid source.")
        rows.append({"cls": cls, "block": e.get("block"), "term": e.get("term"), "prior": prior, "source": e["source"]})
    priors = Priors.from_list(rows, field(spec, "intercept_centered", bool))
    for e in priors.entries:
        try:
            check_prior_params(e.prior, e.term or e.cls)
        except PriorError as exc:
            raise PersistenceError(f"A saved prior is invalid: {exc}") from None
    return priors
