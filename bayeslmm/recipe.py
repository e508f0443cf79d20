"""How a design encodes data, as plain data: the *recipe* that ``predict`` and ``load`` use.

After formulae has evaluated a formula on the training data, the recipe
describes every model-matrix column without any code: which data column,
which allowlisted transformation (:mod:`bayeslmm.transforms`) with its learnt
constants stored as numbers, which categorical levels and contrast matrix.
:func:`evaluate_terms` rebuilds the columns from it with NumPy alone. The
design stage derives the recipe once and checks that it reproduces the
training y, X and Z; new data are then encoded from it whether the fit was
just made or loaded from a file, so saved and unsaved fits predict alike.

Nodes (nested tuples, stored in files as JSON lists)::

    ("col", name)                      a data column
    ("num", value) / ("str", value)    a literal
    ("op", sym, a, b)                  + - * / ** == != < <= > >=
    ("unary", sym, a)                  + -
    ("fn", name, a)                    log log1p log2 log10 exp sqrt abs
    ("center", a, mean)
    ("scale", a, mean, std)            scale() and standardize()
    ("poly", a, degree, raw, alpha, norms2)
    ("C", a)                           C(a): a categorical predictor (top of a component only)
"""

from __future__ import annotations

import itertools
import operator
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .compat import Intercept
from .transforms import FUNCTIONS, NotAllowedError, describe_component

__all__ = [
    "Component",
    "TermSpec",
    "BlockRecipe",
    "DesignRecipe",
    "EvaluationError",
    "derive_term",
    "derive_component",
    "term_labels",
    "evaluate_component",
    "evaluate_terms",
    "node_columns",
    "strip",
    "derive_recipe",
]

_BINARY = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "**": operator.pow,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_UNARY = {"+": operator.pos, "-": operator.neg}


class EvaluationError(Exception):
    """A recipe could not be evaluated on a data frame; ``what`` names the term."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.what = what
        self.message = message


@dataclass(frozen=True)
class Component:
    """One factor of a model term, e.g. ``log(Days + 1)`` or the categorical ``recipe``.

    Attributes
    ----------
    name
        formulae's name of the component; lme4's column names are built from it.
    node
        The expression giving its values.
    ncol
        Number of model-matrix columns it contributes.
    levels
        For a categorical component, its levels (as the fit saw them); else ``None``.
    contrast
        For a categorical component, the contrast matrix (levels x ncol).
    contrast_labels
        For a categorical component, the labels of the contrast columns.
    """

    name: str
    node: tuple
    ncol: int = 1
    levels: tuple | None = None
    contrast: tuple[tuple[float, ...], ...] | None = None
    contrast_labels: tuple[str, ...] | None = None

    @property
    def categorical(self) -> bool:
        """Whether the component is categorical."""
        return self.levels is not None


@dataclass(frozen=True)
class TermSpec:
    """A model term: the row-wise product of its components; no components is the intercept."""

    components: tuple[Component, ...]


@dataclass(frozen=True)
class BlockRecipe:
    """A random-effect block: its grouping factor's levels and its Z terms.

    Attributes
    ----------
    label, factor, factor_vars
        As in :class:`bayeslmm.design.BlockDesign`.
    kinds
        The value kind of each factor column (``"number"``, ``"string"``, ``"bool"``).
    level_keys
        The levels, each the tuple of its component values.
    terms
        The terms of the block's Z columns.
    """

    label: str
    factor: str
    factor_vars: tuple[str, ...]
    kinds: tuple[str, ...]
    level_keys: tuple[tuple[Any, ...], ...]
    terms: tuple[TermSpec, ...]


@dataclass(frozen=True)
class DesignRecipe:
    """Everything needed to encode data as the fitted design did.

    Attributes
    ----------
    response
        The response (a numeric component).
    fixed
        The terms of the full fixed-effects matrix, before aliased columns were dropped.
    kept
        The columns of that matrix kept in X.
    blocks
        The random-effect blocks, in the design's order.
    """

    response: Component
    fixed: tuple[TermSpec, ...]
    kept: tuple[int, ...]
    blocks: tuple[BlockRecipe, ...]

    def columns(self, blocks: bool = True) -> set[str]:
        """The data columns the predictors use (the response's excluded)."""
        cols = {c for t in self.fixed for comp in t.components for c in node_columns(comp.node)}
        if blocks:
            for b in self.blocks:
                cols |= set(b.factor_vars)
                cols |= {c for t in b.terms for comp in t.components for c in node_columns(comp.node)}
        return cols


# ---------------------------------------------------------------------------
# From formulae's evaluated objects
# ---------------------------------------------------------------------------
def _level(v: Any) -> Any:
    v = v.item() if isinstance(v, np.generic) else v
    if isinstance(v, (bool, int, str)) or (isinstance(v, float) and np.isfinite(v)):
        return v
    raise NotAllowedError(f"the categorical level {v!r}")


def derive_component(comp: Any) -> Component:
    """The :class:`Component` of an evaluated formulae ``Variable`` or ``Call``.

    Raises
    ------
    NotAllowedError
        If the component uses anything outside the allowlist, or is of a kind
        (offset, proportion) a linear mixed model does not use.
    """
    node = describe_component(comp, fitted=True)
    name = str(comp.name)
    if comp.kind == "categoric":
        cm = comp.contrast_matrix
        matrix = np.asarray(cm.matrix, dtype=float)
        levels = tuple(_level(v) for v in comp.levels)
        if matrix.ndim != 2 or matrix.shape[0] != len(levels) or not np.all(np.isfinite(matrix)):
            raise NotAllowedError(f"the contrasts of {name}")
        return Component(name, node, int(matrix.shape[1]), levels, tuple(map(tuple, matrix.tolist())),
                         tuple(str(lab) for lab in cm.labels))
    if comp.kind != "numeric" or node[0] == "C":
        raise NotAllowedError(f"the term {name} (of kind {comp.kind})")
    value = np.asarray(comp.value)
    ncol = int(value.shape[1]) if value.ndim == 2 else 1
    return Component(name, node, ncol)


def derive_term(term: Any) -> TermSpec:
    """The :class:`TermSpec` of an evaluated formulae term (``Intercept`` or ``Term``)."""
    if isinstance(term, Intercept):
        return TermSpec(())
    return TermSpec(tuple(derive_component(c) for c in term.components))


def _component_labels(c: Component) -> list[str]:
    if c.categorical:
        return [f"{c.name}{lab}" for lab in c.contrast_labels]
    if c.ncol > 1:
        return [f"{c.name}{i + 1}" for i in range(c.ncol)]
    return [c.name]


def term_labels(term: TermSpec) -> list[str]:
    """lme4's column names of a term (``recipeB:temperature``, ``poly(Days, 2)1``, ``(Intercept)``)."""
    if not term.components:
        return ["(Intercept)"]
    return [":".join(parts) for parts in itertools.product(*(_component_labels(c) for c in term.components))]


# ---------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------
def node_columns(node: tuple) -> set[str]:
    """The data columns a node reads."""
    if node[0] == "col":
        return {node[1]}
    return set().union(*(node_columns(a) for a in node[1:] if isinstance(a, tuple) and a and isinstance(a[0], str)))


def strip(node: tuple) -> tuple:
    """The node without learnt constants: what the formula's text alone determines."""
    kind = node[0]
    if kind == "center":
        return ("center", strip(node[1]), None)
    if kind == "scale":
        return ("scale", strip(node[1]), None, None)
    if kind == "poly":
        return ("poly", strip(node[1]), node[2], node[3], None, None)
    if kind in ("col", "num", "str"):
        return node
    return tuple(strip(a) if isinstance(a, tuple) else a for a in node)


def _poly(x: np.ndarray, degree: int, raw: bool, alpha: tuple, norms2: tuple) -> np.ndarray:
    """The ``poly`` of formulae: raw powers, or orthogonal polynomials by their three-term recurrence."""
    if raw:
        return np.column_stack([np.power(x, k) for k in range(1, degree + 1)])
    P = np.empty((x.shape[0], degree + 1))
    P[:, 0] = 1
    for i in range(1, degree + 1):
        P[:, i] = (x - alpha[i - 1]) * P[:, i - 1]
        if i >= 2:
            P[:, i] -= (norms2[i - 1] / norms2[i - 2]) * P[:, i - 2]
    P /= np.array([np.sqrt(norms2[k]) for k in range(degree + 1)])
    return P[:, 1:]


def evaluate_node(node: tuple, data: Mapping[str, np.ndarray]) -> Any:
    """The value of a node on data (a mapping of column name -> 1-d array)."""
    kind = node[0]
    if kind == "col":
        return data[node[1]]
    if kind in ("num", "str"):
        return node[1]
    if kind == "op":
        return _BINARY[node[1]](evaluate_node(node[2], data), evaluate_node(node[3], data))
    if kind == "unary":
        return _UNARY[node[1]](evaluate_node(node[2], data))
    if kind == "fn":
        return FUNCTIONS[node[1]](evaluate_node(node[2], data))
    if kind == "center":
        return evaluate_node(node[1], data) - node[2]
    if kind == "scale":
        return (evaluate_node(node[1], data) - node[2]) / node[3]
    if kind == "poly":
        x = np.asarray(evaluate_node(node[1], data))
        return _poly(x, node[2], node[3], node[4], node[5])
    if kind == "C":
        return evaluate_node(node[1], data)
    raise ValueError(f"unknown node {kind!r}")  # decoded recipes are checked, so this is a bug


def _unseen_message(values: np.ndarray, codes: np.ndarray, levels: tuple) -> str:
    unseen = list(dict.fromkeys(values[codes < 0].tolist()))
    shown = ", ".join(repr(v) for v in unseen[:5]) + (f" and {len(unseen) - 5} more" if len(unseen) > 5 else "")
    return f"value(s) {shown} are not among the levels the model was fitted with ({', '.join(map(repr, levels[:10]))})"


def evaluate_component(c: Component, data: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """The ``(n, ncol)`` model-matrix columns of one component.

    Raises
    ------
    EvaluationError
        If the values cannot be computed, have the wrong shape, or a
        categorical value is not one of the fitted levels.
    """
    try:
        with np.errstate(all="ignore"):
            value = evaluate_node(c.node, data)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError) as exc:
        raise EvaluationError(c.name, f"cannot be computed: {exc}") from None
    if c.categorical:
        values = np.asarray(value, dtype=object) if np.ndim(value) else np.full(n, value, dtype=object)
        codes = np.asarray(pd.Categorical(values, categories=list(c.levels)).codes)
        if (codes < 0).any():
            raise EvaluationError(c.name, _unseen_message(values, codes, c.levels))
        return np.asarray(c.contrast, dtype=float).reshape(len(c.levels), c.ncol)[codes]
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(n, arr)
    if arr.dtype.kind not in "biuf":
        raise EvaluationError(c.name, f"gives values of type {arr.dtype}, not numbers")
    arr = arr.astype(float).reshape(n, -1) if arr.shape[0] == n else None
    if arr is None or arr.shape[1] != c.ncol:
        raise EvaluationError(c.name, "gives values of the wrong shape")
    return arr


def _term_matrix(term: TermSpec, data: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    if not term.components:
        return np.ones((n, 1))
    out = evaluate_component(term.components[0], data, n)
    for comp in term.components[1:]:
        right = evaluate_component(comp, data, n)
        out = (out[:, :, None] * right[:, None, :]).reshape(n, -1)  # formulae's column order
    return out


def evaluate_terms(terms: tuple[TermSpec, ...], frame: pd.DataFrame) -> np.ndarray:
    """The model-matrix columns of ``terms`` on a data frame, ``(n, total columns)``.

    Raises
    ------
    EvaluationError
        Naming the term that fails.
    """
    n = frame.shape[0]
    data = {str(c): frame[c].to_numpy() for c in frame.columns}
    mats = [_term_matrix(t, data, n) for t in terms]
    return np.column_stack(mats) if mats else np.zeros((n, 0))


# ---------------------------------------------------------------------------
# Deriving a design's recipe, checked against formulae's matrices
# ---------------------------------------------------------------------------
def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.shape != b.shape:
        return False
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    return bool(np.allclose(a, b, rtol=1e-12, atol=1e-12 * max(scale, 1.0)))


def derive_recipe(
    response_term: Any,
    fixed_terms: list[Any],
    blocks: list[tuple[Any, list[Any]]],
    kept: np.ndarray,
    frame: pd.DataFrame,
    y: np.ndarray,
    X_full: np.ndarray,
    names_full: list[str],
) -> tuple[DesignRecipe | None, str]:
    """A design's recipe from formulae's evaluated terms, checked to reproduce y, X and Z.

    Parameters
    ----------
    response_term, fixed_terms
        formulae's evaluated response term and fixed-part terms.
    blocks
        Per design block (in the design's order), the block (with ``label``,
        ``factor``, ``factor_vars``, ``kinds``, ``level_keys`` and ``Z``) and
        formulae's evaluated terms of its Z columns.
    kept
        The columns of the full fixed-effects matrix kept in X.
    frame
        The model frame the terms were evaluated on (row positions as formulae saw them).
    y, X_full, names_full
        The response, full fixed-effects matrix and its column names formulae gave.

    Returns
    -------
    (DesignRecipe, "") or (None, the reason there is no recipe)
    """
    try:
        response = derive_term(response_term)
        if len(response.components) != 1 or response.components[0].categorical:
            raise NotAllowedError("a response that is not one numeric column or transformation")
        fixed = tuple(derive_term(t) for t in fixed_terms)
        brecipes = tuple(
            BlockRecipe(b.label, b.factor, b.factor_vars, b.kinds, b.level_keys, tuple(derive_term(t) for t in terms))
            for b, terms in blocks
        )
        recipe = DesignRecipe(response.components[0], fixed, tuple(int(i) for i in kept), brecipes)
    except NotAllowedError as exc:
        return None, f"the formula uses {exc}, which is outside the allowlist of bayeslmm.transforms"
    except (AttributeError, TypeError, ValueError) as exc:  # a formulae structure not foreseen here
        return None, f"its terms could not be described as data ({type(exc).__name__}: {exc})"
    data = {str(c): frame[c].to_numpy() for c in frame.columns}
    try:
        ok = _same(evaluate_component(recipe.response, data, len(y))[:, 0], y)
        ok = ok and _same(evaluate_terms(recipe.fixed, frame), X_full)
        ok = ok and all(_same(evaluate_terms(br.terms, frame), b.Z) for br, (b, _) in zip(brecipes, blocks))
        ok = ok and [lab for t in fixed for lab in term_labels(t)] == list(names_full)
    except (EvaluationError, KeyError) as exc:
        return None, f"its description as data could not be evaluated ({exc})"
    if not ok:
        return None, "its description as data does not reproduce the model matrices formulae built"
    return recipe, ""
