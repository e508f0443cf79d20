"""Contrast matrices of lmerTest's type-III F tests, one per fixed-effect term.

lmerTest (``get_contrasts_type3``) builds the hypotheses of SAS's type III in
treatment coding: with X_t the model matrix in treatment coding and R the
"complete" over-parameterised matrix (an intercept, then for each term every
level of its factors, ``model.matrix(~ 0 + term)``), the basic contrasts are
L = (X_t⁺R)', one row per column of R. Terms are visited from the highest
order down; the columns of L belonging to a term contained in others (SAS's
containment: the same numeric variables, a subset of the factors) are
replaced by their residuals on the columns of the containing terms. The rows
of L for the model's own coefficients then give, per term, the contrast
(its non-zero rows). For another coding (e.g. ``S(x)``, sum-to-zero) the
contrasts are mapped onto it with X_t⁺X. Values are rounded to 7 significant
digits at the same steps as R's ``zapsmall``. A model with one term (or one
column) gets the type I contrast from the Doolittle decomposition of X'X.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ..design import Design
from ..errors import BayesLMMError
from ..recipe import TermSpec, evaluate_component

__all__ = ["FixedTerm", "fixed_terms", "type3_contrasts", "term_contains", "doolittle_rows"]


@dataclass(frozen=True)
class FixedTerm:
    """One fixed-effect term of the design.

    Attributes
    ----------
    name
        The term as formulae names it (``"recipe:temperature"``).
    columns
        Its columns in X (after aliased columns were dropped).
    variables
        Its variables (components), in order.
    numeric
        The numeric ones among them.
    """

    name: str
    columns: tuple[int, ...]
    variables: tuple[str, ...]
    numeric: frozenset[str]

    @property
    def order(self) -> int:
        """Number of variables in the term."""
        return len(self.variables)


@dataclass(frozen=True)
class _Component:
    name: str
    numeric: bool
    values: np.ndarray  # numeric: (n, c) values; categorical: (n,) level index
    n_levels: int
    treatment: tuple[int, ...]  # categorical: the levels kept by treatment coding (all if not reduced)
    coding: np.ndarray | None  # categorical: the contrast matrix used in X


def _components(term) -> list[_Component]:
    out = []
    for comp in term.components:
        value = np.asarray(comp.value, dtype=float)
        if comp.kind == "categoric":
            C = np.asarray(comp.contrast_matrix.matrix, dtype=float)
            value = value.reshape(value.shape[0], -1)
            dist = ((value[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)
            idx = np.argmin(dist, axis=1)
            n_levels = C.shape[0]
            kept = tuple(range(1, n_levels)) if C.shape[1] == n_levels - 1 else tuple(range(n_levels))
            out.append(_Component(str(comp.name), False, idx, n_levels, kept, C))
        else:
            out.append(_Component(str(comp.name), True, value.reshape(value.shape[0], -1), 0, (), None))
    return out


def _recipe_components(term: TermSpec, data: dict[str, np.ndarray], n: int) -> list[_Component]:
    """The components of one term, evaluated on the fitted rows from the design's recipe."""
    out = []
    for comp in term.components:
        value = evaluate_component(comp, data, n)
        if comp.categorical:
            C = np.asarray(comp.contrast, dtype=float).reshape(len(comp.levels), comp.ncol)
            idx = np.argmin(((value[:, None, :] - C[None, :, :]) ** 2).sum(axis=2), axis=1)
            n_levels = C.shape[0]
            kept = tuple(range(1, n_levels)) if C.shape[1] == n_levels - 1 else tuple(range(n_levels))
            out.append(_Component(comp.name, False, idx, n_levels, kept, C))
        else:
            out.append(_Component(comp.name, True, value, 0, (), None))
    return out


def _recipe_term_blocks(design: Design) -> list[tuple[str, list[_Component], np.ndarray, np.ndarray]]:
    """:func:`_term_blocks` from the design's recipe (a fit loaded from a file has no formulae encoders)."""
    rec = design.recipe
    n = design.nobs
    data = {str(c): design.frame[c].to_numpy() for c in design.frame.columns}
    position = {int(c): i for i, c in enumerate(rec.kept)}
    out, start = [], 0
    for term in rec.fixed:
        width = int(np.prod([c.ncol for c in term.components])) if term.components else 1
        full = np.arange(start, start + width)
        start += width
        if not term.components:
            continue
        name = ":".join(c.name for c in term.components)
        out.append((name, _recipe_components(term, data, n), full, np.array([position.get(int(c), -1) for c in full])))
    return out


def _term_blocks(design: Design) -> list[tuple[str, list[_Component], np.ndarray, np.ndarray]]:
    """Per non-intercept term: name, components, its columns in the full matrix, and their positions in X (-1: dropped)."""
    enc = design.encoders
    if enc is None or enc.fixed is None:
        if design.recipe is not None:
            return _recipe_term_blocks(design)
        raise BayesLMMError(
            "This design carries neither formulae's encoders nor a recipe, so its fixed-effect terms cannot be "
            "tested; refit the model with bayeslmm.lmer(formula, data, method='REML')."
        )
    position = {int(c): i for i, c in enumerate(np.asarray(enc.kept_columns))}
    out = []
    for name, term in enc.fixed.terms.items():
        comps = getattr(term, "components", None)
        if not comps:
            continue
        sl = enc.fixed.slices[name]
        full = np.arange(sl.start, sl.stop)
        out.append((str(name), _components(term), full, np.array([position.get(int(c), -1) for c in full])))
    return out


def fixed_terms(design: Design) -> list[FixedTerm]:
    """The design's fixed-effect terms (the intercept excluded) with their columns of X."""
    terms = []
    for name, comps, _, pos in _term_blocks(design):
        cols = pos[pos >= 0]
        if cols.size == 0:
            continue
        terms.append(FixedTerm(name, tuple(int(c) for c in cols), tuple(c.name for c in comps), frozenset(c.name for c in comps if c.numeric)))
    return terms


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's ``zapsmall``: round to ``digits`` significant digits of the largest absolute value."""
    finite = np.abs(x[np.isfinite(x)])
    mx = float(finite.max()) if finite.size else 0.0
    d = max(0, digits - int(np.ceil(np.log10(mx)))) if mx > 0 else digits
    return np.round(x, d)


def _columns(comps: list[_Component], full: bool) -> tuple[list[tuple], list[np.ndarray]]:
    """Keys and columns of a term: every level (``full``) or the treatment-coded ones, formulae's order."""
    per = []
    for c in comps:
        if c.numeric:
            per.append([(j, c.values[:, j]) for j in range(c.values.shape[1])])
        else:
            levels = range(c.n_levels) if full else c.treatment
            per.append([(lv, (c.values == lv).astype(float)) for lv in levels])
    keys, cols = [], []
    for combo in itertools.product(*per):
        keys.append(tuple(k for k, _ in combo))
        col = np.ones(combo[0][1].shape[0]) if combo else None
        for _, v in combo:
            col = col * v
        cols.append(col)
    return keys, cols


def term_contains(inner: FixedTerm, outer: FixedTerm) -> bool:
    """SAS containment: ``outer`` has all of ``inner``'s variables and more, and the same numeric ones."""
    vi, vo = set(inner.variables), set(outer.variables)
    return vi <= vo and len(vo - vi) > 0 and inner.numeric == outer.numeric


def doolittle_rows(X: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """t(L) of lmerTest's ``doolittle(X'X)``: the type I contrasts, one row per column of X."""
    A = X.T @ X
    n = A.shape[0]
    L, U = np.eye(n), np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            U[i, j] = A[i, j] - L[i, :i] @ U[:i, j]
        for j in range(i + 1, n):
            val = A[j, i] - L[j, :i] @ U[:i, i]
            L[j, i] = 0.0 if abs(U[i, i]) < eps else val / U[i, i]
    L[np.abs(L) < eps] = 0.0
    return L.T


def type3_contrasts(design: Design) -> dict[str, np.ndarray]:
    """The type-III contrast matrix (lmerTest's) of every fixed-effect term (rows: hypotheses; columns: X).

    Raises
    ------
    BayesLMMError
        If the model has no fixed-effect term to test.
    """
    X = np.asarray(design.X, dtype=float)
    p = X.shape[1]
    terms = fixed_terms(design)
    if not terms:
        raise BayesLMMError("The model has no fixed-effect term besides the intercept; there is nothing to test.")
    if p <= 1 or len(terms) <= 1:
        rows = doolittle_rows(X) if p > 1 else np.ones((1, 1))
        return {t.name: rows[list(t.columns)] for t in terms}
    # Treatment-coded X (in X's column order) and the complete over-parameterised R, keyed by (term, levels).
    n = X.shape[0]
    xt_keys: list[tuple | None] = [None] * p
    xt_cols: list[np.ndarray | None] = [None] * p
    rd_keys, rd_cols = [], []
    if design.intercept_index is not None:
        xt_keys[design.intercept_index] = ("(Intercept)",)
        xt_cols[design.intercept_index] = np.ones(n)
        rd_keys.append(("(Intercept)",))
        rd_cols.append(np.ones(n))
    for name, comps, full, pos in _term_blocks(design):
        keys, cols = _columns(comps, full=False)
        if len(keys) != full.size:
            raise BayesLMMError(
                f"The term {name!r} has {full.size} columns but its treatment coding has {len(keys)}; "
                "type-III tests need every factor coded with one column per level or per non-reference level."
            )
        for key, col, at in zip(keys, cols, pos):
            if at >= 0:
                xt_keys[at], xt_cols[at] = (name, *key), col
        keys, cols = _columns(comps, full=True)
        rd_keys += [(name, *key) for key in keys]
        rd_cols += cols
    if any(c is None for c in xt_cols):
        raise BayesLMMError("Some columns of X belong to no formula term; type-III contrasts cannot be built.")
    Xt = np.column_stack(xt_cols)
    if np.linalg.matrix_rank(Xt) < p:
        raise BayesLMMError("The treatment-coded model matrix is rank deficient; type-III contrasts are not defined for it.")
    R = np.column_stack(rd_cols)
    Xt_pinv = np.linalg.pinv(Xt)
    L = _zapsmall((Xt_pinv @ R).T)
    col_of = {t.name: list(t.columns) for t in terms}
    for t in sorted(terms, key=lambda t: -t.order):
        outer = [u for u in terms if term_contains(t, u)]
        if not outer:
            continue
        xc = L[:, [c for u in outer for c in col_of[u.name]]]
        yc = L[:, col_of[t.name]]
        coef, *_ = np.linalg.lstsq(xc, yc, rcond=None)
        L[:, col_of[t.name]] = _zapsmall(yc - xc @ coef)
    row_of = {key: i for i, key in enumerate(rd_keys)}
    L = L[[row_of[key] for key in xt_keys]]
    coding_map = _zapsmall(Xt_pinv @ X)
    treatment = np.allclose(coding_map, np.eye(p), atol=1e-10)
    out = {}
    for t in terms:
        Lt = L[:, col_of[t.name]].T
        Lt = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
        out[t.name] = Lt if treatment else Lt @ coding_map
    return out
