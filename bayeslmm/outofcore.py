"""Stage 2 out of core: the design of Parquet files or a Dask frame, in two passes through Dask.

For a model whose group effects collapse (every random-effect block on one
grouping factor, or on two factors one nested in the other), the Gaussian
likelihood needs the data only through per-group cross-products
(:mod:`bayeslmm.compressed`). :func:`design_out_of_core` computes them without
loading the data:

1. the distinct-values pass reads the used columns of the complete rows and
   keeps the distinct values of every non-numeric column, of every grouping
   factor (its columns together) and, for two factors, of both together (which
   tells whether they are nested before anything else is read);
2. a *template* design is evaluated by formulae on a few rows holding every
   categorical level, giving the recipe (:mod:`bayeslmm.recipe`): contrasts,
   column names and every transformation, with nothing learnt from the rows;
3. the sums pass evaluates the recipe on each partition, applies the NA
   policy (counting the dropped rows) and accumulates, per finest group, the
   cross-products of ``[1, Z, X, y]``. Partitions are evaluated in parallel and
   folded into the sums in order, so the sums are those of the whole data in
   row order, to the last bit (:func:`bayeslmm.compressed.accumulate_gram`).

Both passes are Dask computations run by Dask's scheduler: the local one by
default, the user's cluster when a ``dask.distributed.Client`` is active.
Memory is bounded by the partition size and the number of groups, never the
number of rows.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from . import grouping
from .collapsed.structure import MAX_Q, can_collapse
from .compat import Environment
from .compressed import FactorLevels, GroupSums, accumulate_gram, compressed_design
from .design import Design, build_design
from .errors import DataError
from .formula import ParsedFormula
from .modelframe import check_values, is_numeric, uniform_object_column
from .recipe import BlockRecipe, DesignRecipe, EvaluationError, evaluate_component, evaluate_terms, node_columns, term_labels

__all__ = ["design_from_parquet", "design_out_of_core"]

#: Rows of the first non-empty partition used for the template design.
_TEMPLATE_ROWS = 200
#: Recipe nodes whose constants are learnt from the rows (not supported out of core).
_STATEFUL = {"center": "center()", "scale": "scale() / standardize()", "poly": "poly()"}


def design_from_parquet(
    parsed: ParsedFormula, files: list[str], na_action: str = "drop", env: Environment | None = None, closed: bool = False
) -> Design:
    """The out-of-core design of Parquet files, after checking that they agree on the used columns and their types."""
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    cols = sorted(parsed.var_names)
    first: dict[str, Any] = {}
    for f in files:
        try:
            schema = pq.read_schema(f)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError
            raise DataError(f"Cannot read the Parquet file {f!r}: {exc}") from None
        for c in cols:
            if c not in schema.names:
                raise DataError(
                    f"The Parquet file {f!r} has no column {c!r}, which the formula {parsed.text!r} uses "
                    f"(its columns: {schema.names}). Every file must hold every used column."
                )
            t = schema.field(c).type
            if c not in first:
                first[c] = (t, f)
            elif t != first[c][0]:
                raise DataError(
                    f"Column {c!r} has type {t} in the Parquet file {f!r} but {first[c][0]} in {first[c][1]!r}; "
                    "write every file with the same column types."
                )
    ddf = dd.read_parquet(files, columns=cols)
    return design_out_of_core(parsed, ddf, f"{len(files)} Parquet file(s)", na_action=na_action, env=env, closed=closed)


@dataclass(frozen=True)
class _Plan:
    """What each partition task needs (picklable, for a distributed scheduler)."""

    columns: tuple[str, ...]
    recipe: DesignRecipe
    blocks: tuple[BlockRecipe, ...]
    fixed_names: tuple[str, ...]
    finest: FactorLevels
    response: str


def _stateful(node: Any) -> str | None:
    if isinstance(node, tuple) and node:
        if node[0] in _STATEFUL:
            return _STATEFUL[node[0]]
        for part in node[1:]:
            found = _stateful(part)
            if found:
                return found
    return None


def _check_recipe(template: Design, source: str) -> None:
    recipe = template.recipe
    if recipe is None:
        raise DataError(
            f"An out-of-core fit ({source}) evaluates the formula on each partition from its recipe, and "
            f"{template.parsed.text!r} has none: {template.recipe_problem}."
        )
    comps = [c for t in recipe.fixed for c in t.components] + [c for b in recipe.blocks for t in b.terms for c in t.components]
    for c in comps + [recipe.response]:
        found = _stateful(c.node)
        if found:
            raise DataError(
                f"The term {c.name!r} uses {found}, whose constants are learnt from all the rows; out of core "
                f"({source}) add the transformed column to the data instead."
            )


def _structure(template: Design, source: str) -> list[tuple[str, tuple[str, ...]]]:
    """The grouping factors (name, columns), refusing models whose group effects do not collapse."""
    factors: dict[str, tuple[str, ...]] = {}
    q: dict[str, int] = {}
    for b in template.blocks:
        factors.setdefault(b.factor, b.factor_vars)
        q[b.factor] = q.get(b.factor, 0) + b.q
    if len(factors) > 2:
        raise DataError(
            f"An out-of-core fit ({source}) needs the group effects to integrate out: one grouping factor or two "
            f"nested ones; {template.parsed.text!r} has {len(factors)} ({sorted(factors)}). Fit an in-memory data frame."
        )
    wide = [f for f, k in q.items() if k > MAX_Q]
    if wide:
        raise DataError(
            f"An out-of-core fit ({source}) integrates the group effects out, which handles at most {MAX_Q} terms "
            f"per grouping factor; {wide[0]!r} has {q[wide[0]]}. Fit an in-memory data frame."
        )
    return list(factors.items())


def _template_frame(head: pd.DataFrame, dtypes: pd.Series, orders: dict[str, list[Any] | None], levels: dict[str, list[Any]],
                    combos: dict[tuple[str, ...], pd.DataFrame], response: set[str]) -> pd.DataFrame:
    """A few rows holding every level of every categorical column, with at least two levels per factor."""
    most = max([len(v) for v in levels.values()] + [2])
    m = max(len(head), most + 1, 3)
    out = head.iloc[np.arange(m) % len(head)].reset_index(drop=True)
    i = np.arange(m)
    for fvars, D in combos.items():
        k = min(len(D), m - 1)
        for c in fvars:
            out[c] = D[c].to_numpy()[i % k]
    for c, vals in levels.items():
        values = np.asarray(vals, dtype=object)[i % len(vals)]
        dtype = dtypes[c]
        if isinstance(dtype, pd.CategoricalDtype):  # the dtype's level order (R's factor order), unused levels dropped
            cats = orders.get(c) or sorted(vals)
            used = set(vals)
            out[c] = pd.Categorical(values, categories=[x for x in cats if x in used], ordered=dtype.ordered)
        else:
            out[c] = pd.Series(values, dtype=dtype)
    for c in response:  # the template's response only needs to vary
        if c in out.columns and is_numeric(out[c]) and out[c].nunique() < 2:
            out[c] = out[c].astype(float) * (1.0 + 1e-3 * i / m) + 1e-3 * i / m
    return out


def _head(ddf: Any) -> pd.DataFrame:
    for k in range(ddf.npartitions):
        part = ddf.get_partition(k).dropna().head(_TEMPLATE_ROWS, npartitions=1)
        if len(part):
            return part
    raise DataError("No rows are left after dropping rows with missing values.")


def _numeric_categoricals(template: Design, numeric: set[str]) -> set[str]:
    """Numeric columns used as categorical predictors (``C(x)``), whose levels the template must all hold."""
    recipe = template.recipe
    comps = [c for t in recipe.fixed for c in t.components] + [c for b in recipe.blocks for t in b.terms for c in t.components]
    return {col for c in comps if c.categorical for col in node_columns(c.node) if col in numeric}


def design_out_of_core(
    parsed: ParsedFormula, ddf: Any, source: str, na_action: str = "drop", env: Environment | None = None, closed: bool = False
) -> Design:
    """The design of a Dask DataFrame, on compressed rows, from two passes over its partitions.

    Parameters
    ----------
    parsed
        The parsed formula.
    ddf
        A ``dask.dataframe.DataFrame`` holding the used columns.
    source
        The data, as messages name them.
    na_action, env, closed
        As for :func:`bayeslmm.design.build_design`.

    Returns
    -------
    Design
        A design with a :class:`~bayeslmm.rowsummary.RowSummary` (see :mod:`bayeslmm.compressed`).

    Raises
    ------
    DataError
        For a missing column, a model whose group effects do not collapse
        (crossed or more than two factors, too many terms per factor), a
        transformation learnt from the rows (``scale()``, ``poly()``), and
        everything :func:`~bayeslmm.design.build_design` refuses.
    """
    import dask

    if na_action not in ("drop", "raise"):
        raise DataError(f"na_action must be 'drop' or 'raise', got {na_action!r}.")
    cols = sorted(parsed.var_names)
    missing = [c for c in cols if c not in ddf.columns]
    if missing:
        raise DataError(f"Column(s) {missing} used in the formula {parsed.text!r} are not in the data ({source}). "
                        f"Available columns: {[str(c) for c in ddf.columns]}.")
    ddf = ddf[cols]
    dtypes = ddf.dtypes
    # A categorical column's own level order where Dask knows it (else the levels sorted, as formulae sorts).
    orders = {c: (list(ddf[c].cat.categories) if ddf[c].cat.known else None)
              for c in cols if isinstance(dtypes[c], pd.CategoricalDtype)}
    numeric = {c for c in cols if pd.api.types.is_numeric_dtype(dtypes[c]) and not pd.api.types.is_bool_dtype(dtypes[c])}
    complete = ddf.dropna()
    factor_vars = list(dict.fromkeys(rb.factor_vars for rb in parsed.blocks))
    if len(factor_vars) > 2:
        raise DataError(
            f"An out-of-core fit ({source}) needs the group effects to integrate out: one grouping factor or two "
            f"nested ones; {parsed.text!r} has {len(factor_vars)}. Fit an in-memory data frame."
        )
    both = tuple(dict.fromkeys(v for fv in factor_vars for v in fv))
    # Non-numeric columns inside model-matrix terms: the template holds all their levels (contrasts, names).
    in_terms = {str(v) for t in parsed.fixed_terms for v in t.var_names} | {
        str(v) for rb in parsed.blocks for e in rb.exprs for v in e.var_names}
    cat_cols = [c for c in cols if c not in numeric and c in in_terms]

    def distinct(categorical: list[str]) -> tuple[dict[str, list[Any]], dict[tuple[str, ...], pd.DataFrame], pd.DataFrame]:
        tasks = [complete[c].drop_duplicates() for c in categorical] + [complete[list(fv)].drop_duplicates() for fv in factor_vars]
        if len(factor_vars) == 2:  # both factors together: nested or crossed, known before the sums pass
            tasks.append(complete[list(both)].drop_duplicates())
        res = dask.compute(*tasks)
        lv = {c: list(r.tolist()) for c, r in zip(categorical, res)}
        cb = {fv: r.reset_index(drop=True) for fv, r in zip(factor_vars, res[len(categorical):])}
        return lv, cb, res[-1].reset_index(drop=True)

    levels, combos, pairs = distinct(cat_cols)
    head = _head(ddf)
    response = {str(v) for v in getattr(parsed.response.term, "var_names", ())} or {parsed.response_name}
    for _ in range(2):
        frame = _template_frame(head, dtypes, orders, levels, combos, response)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            template = build_design(parsed, frame, na_action="raise", env=env, closed=closed)
        _check_recipe(template, source)
        extra = sorted(_numeric_categoricals(template, numeric) - set(levels))
        if not extra:
            break
        levels.update(distinct(extra)[0])
    factor_list = _structure(template, source)
    factors = {}
    for name, fvars in factor_list:
        _, keys, labels, kinds = grouping.factor_codes(combos[fvars], fvars)
        factors[name] = FactorLevels(name, fvars, keys, labels, kinds)
    parent = None
    if len(factors) == 2:
        outer, inner = sorted(factors.values(), key=lambda f: len(f.keys))
        i_idx = grouping.match_levels(pairs, inner.fvars, inner.keys, inner.kinds)[0]
        o_idx = grouping.match_levels(pairs, outer.fvars, outer.keys, outer.kinds)[0]
        parent = np.full(len(inner.keys), -1, dtype=np.int64)
        parent[i_idx] = o_idx
        if not np.array_equal(parent[i_idx], o_idx):
            bad = inner.labels[int(i_idx[np.flatnonzero(parent[i_idx] != o_idx)[0]])]
            raise DataError(
                f"The grouping factors {outer.name!r} and {inner.name!r} of {parsed.text!r} are crossed (level {bad} of "
                f"{inner.name!r} occurs in more than one level of {outer.name!r}); an out-of-core fit ({source}) needs "
                "one factor or two nested ones, whose group effects integrate out. Fit an in-memory data frame."
            )
    finest = max(factors.values(), key=lambda f: len(f.keys))
    recipe = template.recipe
    plan = _Plan(tuple(cols), recipe, recipe.blocks, tuple(lab for t in recipe.fixed for lab in term_labels(t)), finest,
                 template.response_name)
    sums = _sums_pass(ddf, plan)
    design = compressed_design(template, factors, parent, sums, na_action, source)
    if not can_collapse(design):
        raise DataError(
            f"The group effects of {parsed.text!r} cannot be integrated out (the nesting is too uneven for the collapsed "
            f"layout), which an out-of-core fit ({source}) needs. Fit an in-memory data frame."
        )
    return design


# ---------------------------------------------------------------------------
# The sums pass
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _PartRows:
    """One partition evaluated: the finest group of every complete row and its columns ``[1, Z, X, y]``."""

    idx: np.ndarray
    W: np.ndarray
    rows_read: int
    missing_by_column: dict[str, int]
    n_missing: int


def _partition_rows(part: pd.DataFrame, plan: _Plan, number: int) -> _PartRows:
    """Evaluate the recipe on one partition's complete rows (a Dask task; partitions run in parallel)."""
    frame = part.loc[:, list(plan.columns)].copy()
    for c in plan.columns:
        if frame[c].dtype == object:
            frame[c] = uniform_object_column(frame[c], c)
        if is_numeric(frame[c]):
            vals = frame[c].to_numpy(dtype=float, na_value=np.nan)
            if np.isinf(vals).any():
                raise DataError(f"Column {c!r} has {int(np.isinf(vals).sum())} infinite value(s) in partition {number}; "
                                "replace or remove them before fitting.")
    na = frame.isna()
    drop = na.any(axis=1).to_numpy()
    by_col = {c: int(na[c].sum()) for c in plan.columns}
    frame = frame.loc[~drop].reset_index(drop=True)
    n = frame.shape[0]
    data = {str(c): frame[c].to_numpy() for c in frame.columns}
    try:
        y = evaluate_component(plan.recipe.response, data, n)[:, 0]
        X = evaluate_terms(plan.recipe.fixed, frame)
        Zs = [evaluate_terms(b.terms, frame) for b in plan.blocks]
    except EvaluationError as exc:
        raise DataError(f"In partition {number}, {exc.what!r} {exc.message}.") from None
    check_values("response", [plan.response], y.reshape(n, 1), frame.index)
    check_values("predictor", list(plan.fixed_names), X, frame.index)
    for b, Z in zip(plan.blocks, Zs):
        check_values(f"random-effect column of {b.factor!r}", [lab for t in b.terms for lab in term_labels(t)], Z, frame.index)
    f = plan.finest
    idx, unseen = grouping.match_levels(frame, f.fvars, f.keys, f.kinds)
    if unseen:
        raise DataError(f"Partition {number} has level(s) {unseen[:5]} of {f.name!r} that the distinct-values pass did not see; "
                        "the data changed between the passes.")
    W = np.column_stack([np.ones(n), *Zs, X, y])
    return _PartRows(idx, W, int(part.shape[0]), by_col, int(drop.sum()))


def _fold(acc: GroupSums | None, rows: _PartRows, n_groups: int) -> GroupSums:
    """Add one partition's rows to the running sums (partitions are folded in order; see :func:`accumulate_gram`)."""
    d = rows.W.shape[1]
    gram = np.zeros((n_groups, d, d)) if acc is None else acc.gram.copy()
    accumulate_gram(gram, rows.idx, rows.W)
    y = rows.W[:, -1]
    lo, hi = (float(y.min()), float(y.max())) if y.size else (np.inf, -np.inf)
    if acc is None:
        return GroupSums(rows.rows_read, rows.n_missing, dict(rows.missing_by_column), gram, lo, hi, 1)
    return GroupSums(
        rows_read=acc.rows_read + rows.rows_read,
        n_missing=acc.n_missing + rows.n_missing,
        missing_by_column={c: acc.missing_by_column[c] + k for c, k in rows.missing_by_column.items()},
        gram=gram,
        y_min=min(acc.y_min, lo),
        y_max=max(acc.y_max, hi),
        n_partitions=acc.n_partitions + 1,
    )


def _sums_pass(ddf: Any, plan: _Plan) -> GroupSums:
    """One pass over the partitions on Dask's scheduler: evaluated in parallel, their sums folded in order."""
    import dask

    G = len(plan.finest.keys)
    acc = None
    for k, part in enumerate(ddf.to_delayed()):
        acc = dask.delayed(_fold)(acc, dask.delayed(_partition_rows)(part, plan, k), G)
    (total,) = dask.compute(acc)
    return total
