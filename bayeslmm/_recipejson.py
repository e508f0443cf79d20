"""A design's recipe (:mod:`bayeslmm.recipe`) as JSON, and back with every value checked.

Reading a recipe from a file checks that every node is one of the allowlisted
kinds with the allowlisted operator or function name, every number is finite,
every size is consistent; anything else is a :class:`PersistenceError`. A
recipe read here is then only ever evaluated by
:func:`bayeslmm.recipe.evaluate_node`, which knows nothing but these nodes.
"""

from __future__ import annotations

import math
from typing import Any

from ._plaindata import expect, field
from .errors import PersistenceError
from .grouping import KINDS
from .recipe import BlockRecipe, Component, DesignRecipe, TermSpec
from .transforms import BINARY_OPS, FUNCTIONS, MAX_DEPTH, MAX_POLY_DEGREE, UNARY_OPS

__all__ = ["encode_recipe", "decode_recipe"]


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------
def _node_out(node: tuple) -> list:
    """A node as nested lists (a tuple of numbers, such as poly's coefficients, as a list)."""
    out: list = []
    for a in node:
        if isinstance(a, tuple):
            out.append(_node_out(a) if a and isinstance(a[0], str) else list(a))
        else:
            out.append(a)
    return out


def _component_out(c: Component) -> dict[str, Any]:
    return {
        "name": c.name,
        "node": _node_out(c.node),
        "ncol": c.ncol,
        "levels": list(c.levels) if c.levels is not None else None,
        "contrast": [list(row) for row in c.contrast] if c.contrast is not None else None,
        "contrast_labels": list(c.contrast_labels) if c.contrast_labels is not None else None,
    }


def _term_out(t: TermSpec) -> list[dict[str, Any]]:
    return [_component_out(c) for c in t.components]


def encode_recipe(recipe: DesignRecipe) -> dict[str, Any]:
    """A recipe as plain JSON data."""
    return {
        "response": _component_out(recipe.response),
        "fixed": [_term_out(t) for t in recipe.fixed],
        "kept": list(recipe.kept),
        "blocks": [
            {
                "label": b.label,
                "factor": b.factor,
                "factor_vars": list(b.factor_vars),
                "kinds": list(b.kinds),
                "levels": [list(k) for k in b.level_keys],
                "terms": [_term_out(t) for t in b.terms],
            }
            for b in recipe.blocks
        ],
    }


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------
_KINDS = ("col", "num", "str", "op", "unary", "fn", "center", "scale", "poly", "C")


def _bad(where: str, what: str) -> PersistenceError:
    return PersistenceError(f"The saved recipe of {where} {what}; the file was modified or is corrupt.")


def _finite(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _bad(where, f"holds {v!r} where a finite number belongs")
    return float(v)


def _name(v: Any, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise _bad(where, f"names a column {v!r}")
    return v


def _node_in(v: Any, where: str, depth: int = 0, top: bool = False) -> tuple:
    if depth > MAX_DEPTH:
        raise _bad(where, "is nested too deeply")
    if not isinstance(v, list) or not v or v[0] not in _KINDS:
        raise _bad(where, f"has an unknown element {str(v)[:60]!r}")
    kind, args = v[0], v[1:]
    sizes = {"col": 1, "num": 1, "str": 1, "op": 3, "unary": 2, "fn": 2, "center": 2, "scale": 3, "poly": 5, "C": 1}
    if len(args) != sizes[kind]:
        raise _bad(where, f"has a malformed {kind!r} element")
    if kind == "col":
        return ("col", _name(args[0], where))
    if kind == "num":
        if isinstance(args[0], bool):
            return ("num", args[0])
        _finite(args[0], where)
        return ("num", args[0])
    if kind == "str":
        if not isinstance(args[0], str):
            raise _bad(where, "has a text literal that is not text")
        return ("str", args[0])
    if kind == "op":
        if args[0] not in BINARY_OPS:
            raise _bad(where, f"uses the operator {args[0]!r}")
        return ("op", args[0], _node_in(args[1], where, depth + 1), _node_in(args[2], where, depth + 1))
    if kind == "unary":
        if args[0] not in UNARY_OPS:
            raise _bad(where, f"uses the operator {args[0]!r}")
        return ("unary", args[0], _node_in(args[1], where, depth + 1))
    if kind == "fn":
        if not isinstance(args[0], str) or args[0] not in FUNCTIONS:
            raise _bad(where, f"calls {str(args[0])[:60]!r}, which is not an allowed function")
        return ("fn", args[0], _node_in(args[1], where, depth + 1))
    if kind == "center":
        return ("center", _node_in(args[0], where, depth + 1), _finite(args[1], where))
    if kind == "scale":
        std = _finite(args[2], where)
        if std <= 0:
            raise _bad(where, "has a scale that is not positive")
        return ("scale", _node_in(args[0], where, depth + 1), _finite(args[1], where), std)
    if kind == "poly":
        return _poly_in(args, where, depth)
    if not top:
        raise _bad(where, "has C() inside an expression")
    return ("C", _node_in(args[0], where, depth + 1))


def _poly_in(args: list, where: str, depth: int) -> tuple:
    x, degree, raw, alpha, norms2 = args
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= MAX_POLY_DEGREE:
        raise _bad(where, f"has a polynomial degree {degree!r}")
    if not isinstance(raw, bool) or not isinstance(alpha, list) or not isinstance(norms2, list):
        raise _bad(where, "has malformed polynomial coefficients")
    if raw and (alpha or norms2):
        raise _bad(where, "has coefficients for a raw polynomial")
    if not raw and (len(alpha) != degree or len(norms2) != degree + 1):
        raise _bad(where, "has the wrong number of polynomial coefficients")
    a = tuple(_finite(v, where) for v in alpha)
    nrm = tuple(_finite(v, where) for v in norms2)
    if any(v <= 0 for v in nrm):
        raise _bad(where, "has polynomial norms that are not positive")
    return ("poly", _node_in(x, where, depth + 1), degree, raw, a, nrm)


def _level(v: Any, where: str) -> Any:
    if isinstance(v, (bool, int, str)) or (isinstance(v, float) and math.isfinite(v)):
        return v
    raise _bad(where, f"has a level {v!r}")


def _component_in(d: Any, where: str) -> Component:
    d = expect(d, dict, where)
    if set(d) != {"name", "node", "ncol", "levels", "contrast", "contrast_labels"}:
        raise _bad(where, "has unexpected fields")
    name = field(d, "name", str)
    node = _node_in(d["node"], f"{where} {name!r}", top=True)
    ncol = field(d, "ncol", int)
    if d["levels"] is None:
        if d["contrast"] is not None or d["contrast_labels"] is not None or node[0] == "C":
            raise _bad(where, f"mixes numeric and categorical parts in {name!r}")
        want = node[2] if node[0] == "poly" else 1
        if ncol != want:
            raise _bad(where, f"gives {name!r} {ncol} column(s), not {want}")
        return Component(name, node, ncol)
    levels = tuple(_level(v, where) for v in expect(d["levels"], list, where))
    contrast = expect(d["contrast"], list, where)
    labels = expect(d["contrast_labels"], list, where)
    if not levels or len({type(v) for v in levels}) != 1 or len(set(levels)) != len(levels):
        raise _bad(where, f"has invalid levels for {name!r}")
    if not 1 <= ncol <= len(levels) or len(contrast) != len(levels) or len(labels) != ncol:
        raise _bad(where, f"has a contrast matrix of the wrong size for {name!r}")
    rows = []
    for row in contrast:
        if not isinstance(row, list) or len(row) != ncol:
            raise _bad(where, f"has a contrast matrix of the wrong size for {name!r}")
        rows.append(tuple(_finite(v, where) for v in row))
    if not all(isinstance(lab, str) for lab in labels):
        raise _bad(where, f"has contrast labels that are not text for {name!r}")
    return Component(name, node, ncol, levels, tuple(rows), tuple(labels))


def _terms_in(v: Any, where: str) -> tuple[TermSpec, ...]:
    out = []
    for t in expect(v, list, where):
        out.append(TermSpec(tuple(_component_in(c, where) for c in expect(t, list, where))))
    return tuple(out)


def _key_value(v: Any, kind: str, where: str) -> Any:
    ok = {
        "bool": isinstance(v, bool),
        "string": isinstance(v, str),
        "number": not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v),
    }[kind]
    if not ok:
        raise _bad(where, f"has a level value {v!r} that is not a {kind}")
    return v


def _block_in(d: Any) -> BlockRecipe:
    d = expect(d, dict, "block")
    label, factor = field(d, "label", str), field(d, "factor", str)
    where = f"the block {label!r}"
    fvars = tuple(_name(v, where) for v in field(d, "factor_vars", list))
    kinds = tuple(field(d, "kinds", list))
    if not fvars or factor != ":".join(fvars) or len(kinds) != len(fvars) or not all(k in KINDS for k in kinds):
        raise _bad(where, "has an inconsistent grouping factor")
    if label != factor and not (label.startswith(factor + ".") and label[len(factor) + 1 :].isdigit()):
        raise _bad(where, "has a label that does not name its factor")
    keys = []
    for key in field(d, "levels", list):
        if not isinstance(key, list) or len(key) != len(fvars):
            raise _bad(where, "has a malformed level")
        keys.append(tuple(_key_value(v, k, where) for v, k in zip(key, kinds)))
    if len(set(keys)) != len(keys):
        raise _bad(where, "has a level twice")
    return BlockRecipe(label, factor, fvars, kinds, tuple(keys), _terms_in(d.get("terms"), where))


def decode_recipe(spec: Any) -> DesignRecipe:
    """A :class:`~bayeslmm.recipe.DesignRecipe` from :func:`encode_recipe` output, every value checked.

    Raises
    ------
    PersistenceError
        For anything that is not a well-formed recipe of allowlisted elements.
    """
    spec = expect(spec, dict, "recipe")
    if set(spec) != {"response", "fixed", "kept", "blocks"}:
        raise _bad("the design", "has unexpected fields")
    response = _component_in(spec["response"], "the response")
    if response.categorical:
        raise _bad("the response", "is categorical")
    fixed = _terms_in(spec["fixed"], "the fixed part")
    kept = tuple(field(spec, "kept", list))
    if not all(isinstance(k, int) and not isinstance(k, bool) for k in kept) or list(kept) != sorted(set(kept)):
        raise _bad("the fixed part", "keeps an invalid list of columns")
    blocks = tuple(_block_in(b) for b in field(spec, "blocks", list))
    if not blocks or len({b.label for b in blocks}) != len(blocks):
        raise _bad("the design", "has no or repeated random-effect blocks")
    return DesignRecipe(response, fixed, kept, blocks)
