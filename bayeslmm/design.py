"""Stage 2: ParsedFormula + DataFrame -> :class:`Design`.

The design holds the response, the fixed-effects matrix X, and for every
random-effect block the per-row group index and the block's few Z columns.
No dense Z is ever built: group effects are gathered as ``b[group_idx]``.

formulae evaluates every model matrix (contrasts, interactions, stateful
transforms). The fitted formulae objects are kept in :class:`Encoders` so new
data are encoded exactly as the training data were.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from formulae.environment import Environment
from formulae.matrices import DesignMatrices
from formulae.terms import Intercept

from .errors import DataError, DataWarning
from .formula import ParsedFormula, RandomBlock, block_model, fixed_model

__all__ = ["BlockDesign", "Design", "build_design", "default_env"]


@dataclass(frozen=True)
class BlockDesign:
    """One random-effect block evaluated on the data.

    Attributes
    ----------
    label
        Unique lme4 label of the block (``"Subject"``, ``"Subject.1"`` for a
        second block on the same factor, as ``VarCorr`` prints it).
    factor
        Grouping factor name (``"Subject"``, ``"cask:batch"``).
    factor_vars
        Data columns that define the factor.
    terms
        lme4 names of the block's columns (``"(Intercept)"``, ``"Days"``).
    levels
        Level labels of the factor, in index order.
    group_idx
        Integer level index of every row, shape ``(n,)``.
    Z
        The block's model-matrix columns, shape ``(n, q)``.
    """

    label: str
    factor: str
    factor_vars: tuple[str, ...]
    terms: tuple[str, ...]
    levels: tuple[str, ...]
    group_idx: np.ndarray
    Z: np.ndarray

    @property
    def q(self) -> int:
        """Number of terms (columns) in the block."""
        return len(self.terms)

    @property
    def n_levels(self) -> int:
        """Number of levels of the grouping factor."""
        return len(self.levels)


@dataclass(frozen=True)
class Encoders:
    """formulae's evaluated matrices, used to encode new data the same way."""

    fixed: Any
    blocks: tuple[Any, ...]
    kept_columns: np.ndarray
    level_maps: tuple[dict, ...]


@dataclass(frozen=True)
class Design:
    """Everything the model stages need, as arrays.

    Attributes
    ----------
    parsed
        The parsed formula.
    y
        Response, shape ``(n,)``.
    X
        Fixed-effects matrix, shape ``(n, p)``, aliased columns removed.
    fixed_names
        lme4 names of the columns of X.
    blocks
        Random-effect blocks, ordered as lme4 orders them (most levels first).
    frame
        The model frame: the used columns of the rows that were kept.
    dropped_fixed
        Names of aliased fixed-effect columns dropped for rank deficiency.
    n_dropped_rows
        Rows dropped because of missing values.
    """

    parsed: ParsedFormula
    y: np.ndarray
    X: np.ndarray
    fixed_names: tuple[str, ...]
    blocks: tuple[BlockDesign, ...]
    frame: pd.DataFrame
    dropped_fixed: tuple[str, ...] = ()
    n_dropped_rows: int = 0
    encoders: Encoders | None = field(default=None, repr=False, compare=False)

    @property
    def nobs(self) -> int:
        """Number of observations used."""
        return int(self.y.shape[0])

    @property
    def response_name(self) -> str:
        """Name of the response."""
        return self.parsed.response_name

    @property
    def factors(self) -> dict[str, tuple[str, ...]]:
        """Grouping factor name -> its levels (one entry per factor)."""
        out: dict[str, tuple[str, ...]] = {}
        for b in self.blocks:
            out.setdefault(b.factor, b.levels)
        return out

    @property
    def intercept_index(self) -> int | None:
        """Column of X holding the intercept, if any."""
        return self.fixed_names.index("(Intercept)") if "(Intercept)" in self.fixed_names else None


def default_env() -> Environment:
    """An evaluation environment with numpy, for formulas like ``np.log(y)``."""
    return Environment([{"np": np, "numpy": np}])


# ---------------------------------------------------------------------------
# Names
# ---------------------------------------------------------------------------
def _component_labels(comp: Any) -> list[str]:
    cm = getattr(comp, "contrast_matrix", None)
    if cm is not None:
        return [f"{comp.name}{lab}" for lab in cm.labels]
    value = np.asarray(comp.value)
    if value.ndim == 2 and value.shape[1] > 1:
        return [f"{comp.name}{i + 1}" for i in range(value.shape[1])]
    return [str(comp.name)]


def lme4_labels(term: Any) -> list[str]:
    """lme4's column names for an evaluated formulae term.

    Built from the term's components (``recipe`` with level ``B`` times
    ``temperature`` gives ``recipeB:temperature``), in formulae's column order.
    """
    if isinstance(term, Intercept):
        return ["(Intercept)"]
    per_component = [_component_labels(c) for c in term.components]
    return [":".join(parts) for parts in itertools.product(*per_component)]


def _matrix_labels(common: Any) -> list[str]:
    return [lab for term in common.terms.values() for lab in lme4_labels(term)]


# ---------------------------------------------------------------------------
# Validation and cleaning
# ---------------------------------------------------------------------------
def _check_frame(parsed: ParsedFormula, data: Any) -> None:
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


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def _value_kind(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "bool"
    if isinstance(v, (int, float, np.integer, np.floating)):
        return "number"
    return "string" if isinstance(v, str) else type(v).__name__


def _uniform_object_column(s: pd.Series, name: str) -> pd.Series:
    """An object column as one type: numbers -> float, booleans -> bool, strings kept; mixed -> DataError."""
    kinds = {_value_kind(v) for v in s.dropna()}
    if len(kinds) > 1 or (kinds and kinds.pop() not in ("number", "bool", "string")):
        found = sorted({_value_kind(v) for v in s.dropna()})
        raise DataError(
            f"Column {name!r} mixes values of different types ({', '.join(found)}); make it one type, "
            f"e.g. data[{name!r}].astype(str) for a factor or pd.to_numeric(data[{name!r}]) for a number."
        )
    kind = _value_kind(s.dropna().iloc[0]) if s.notna().any() else "string"
    if kind == "number":
        return s.astype(float)
    if kind == "bool" and s.notna().all():
        return s.astype(bool)
    return s


def _clean_rows(parsed: ParsedFormula, data: pd.DataFrame, na_action: str) -> tuple[pd.DataFrame, int]:
    cols = sorted(parsed.var_names)
    frame = data.loc[:, cols].copy()
    for c in cols:
        if frame[c].dtype == object:
            frame[c] = _uniform_object_column(frame[c], c)
        s = frame[c]
        if _is_numeric(s):
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
        warnings.warn(
            f"Dropped {n_na} of {len(frame)} row(s) with missing values in column(s) {which}.",
            DataWarning,
            stacklevel=4,
        )
        frame = frame.loc[~na]
    if frame.shape[0] == 0:
        raise DataError("No rows are left after dropping rows with missing values.")
    return _ordered_categoricals(frame), n_na


def _ordered_categoricals(frame: pd.DataFrame) -> pd.DataFrame:
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


def _check_response(parsed: ParsedFormula, frame: pd.DataFrame) -> None:
    name = parsed.response_name
    if name in frame.columns and not _is_numeric(frame[name]):
        raise DataError(
            f"The response {name!r} is not numeric (dtype {frame[name].dtype}); "
            "a linear mixed model needs a numeric response. Convert it, e.g. with pd.to_numeric."
        )


# ---------------------------------------------------------------------------
# Grouping factors
# ---------------------------------------------------------------------------
def _sorted_levels(s: pd.Series) -> list[Any]:
    if isinstance(s.dtype, pd.CategoricalDtype):
        present = set(s.dropna().unique())
        return [c for c in s.cat.categories if c in present]
    uniq = pd.unique(s.dropna())
    try:
        return sorted(uniq)
    except TypeError:
        return sorted(uniq, key=str)


def _factor_codes(frame: pd.DataFrame, fvars: tuple[str, ...]) -> tuple[np.ndarray, tuple[str, ...], dict]:
    """Integer codes and level labels of the (interaction of the) factor columns."""
    per_codes = []
    per_levels = []
    for v in fvars:
        lev = _sorted_levels(frame[v])
        per_codes.append(np.asarray(pd.Categorical(frame[v], categories=lev).codes, dtype=np.int64))
        per_levels.append([str(x) for x in lev])
    if len(fvars) == 1:
        codes, labels = per_codes[0], tuple(per_levels[0])
        return codes, labels, {lab: i for i, lab in enumerate(labels)}
    stacked = np.column_stack(per_codes)
    uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
    labels = tuple(":".join(per_levels[j][k] for j, k in enumerate(row)) for row in uniq)
    return inverse.reshape(-1).astype(np.int64), labels, {lab: i for i, lab in enumerate(labels)}


def _factor_labels(frame: pd.DataFrame, fvars: tuple[str, ...]) -> list[str]:
    cols = [frame[v].astype(str).to_numpy() for v in fvars]
    if len(cols) == 1:
        return list(cols[0])
    return [":".join(parts) for parts in zip(*cols)]


# ---------------------------------------------------------------------------
# Rank deficiency
# ---------------------------------------------------------------------------
def _independent_columns(X: np.ndarray, tol: float = 1e-7) -> np.ndarray:
    """Indices of the columns to keep.

    Each column is kept unless it is a linear combination of the columns before it
    (lme4 keeps the earlier columns too).
    """
    # Gram-Schmidt against the kept columns only (twice, for stability). Unlike the diagonal of an
    # unpivoted QR, this stays right after a dependent column and when there are more columns than rows.
    keep: list[int] = []
    basis = np.zeros((X.shape[0], 0))
    for j in range(X.shape[1]):
        norm = np.linalg.norm(X[:, j])
        resid = X[:, j] - basis @ (basis.T @ X[:, j])
        resid = resid - basis @ (basis.T @ resid)
        r = np.linalg.norm(resid)
        if norm > 0 and r > tol * norm:
            keep.append(j)
            basis = np.column_stack([basis, resid / r])
    return np.asarray(keep, dtype=int)


# ---------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------
def _evaluate(model: Any, frame: pd.DataFrame, env: Environment, what: str) -> DesignMatrices:
    try:
        return DesignMatrices(model, frame, env)
    except Exception as exc:  # formulae raises bare ValueError/KeyError/NameError
        raise DataError(f"Could not evaluate {what} on the data: {exc}") from None


def build_design(
    parsed: ParsedFormula,
    data: pd.DataFrame,
    na_action: str = "drop",
    env: Environment | None = None,
) -> Design:
    """Evaluate a parsed formula on a data frame.

    Parameters
    ----------
    parsed
        Output of :func:`bayeslmm.formula.parse_formula`.
    data
        The data. It is never modified.
    na_action
        ``"drop"`` drops rows with missing values in the used columns with a
        warning giving the count; ``"raise"`` raises instead.
    env
        formulae evaluation environment for function calls in the formula.

    Returns
    -------
    Design

    Raises
    ------
    DataError
        For a missing column, a non-numeric or constant response, infinite
        values, a grouping factor with a single level, or no rows.
    """
    if na_action not in ("drop", "raise"):
        raise DataError(f"na_action must be 'drop' or 'raise', got {na_action!r}.")
    env = env if env is not None else default_env()
    _check_frame(parsed, data)
    frame, n_dropped = _clean_rows(parsed, data, na_action)
    _check_response(parsed, frame)
    n = frame.shape[0]
    eval_frame = frame.reset_index(drop=True)

    dm = _evaluate(fixed_model(parsed), eval_frame, env, f"the fixed part of {parsed.text!r}")
    y = np.asarray(dm.response.design_matrix, dtype=float).reshape(-1)
    if y.shape[0] != n:
        raise DataError(f"The response {parsed.response_name!r} must give one number per row.")
    if not np.all(np.isfinite(y)):
        raise DataError(f"The response {parsed.response_name!r} has non-finite values after evaluation.")
    if np.ptp(y) == 0:
        raise DataError(
            f"The response {parsed.response_name!r} is constant ({float(y[0])!r}); there is no variation to model."
        )
    if dm.common is not None:
        X_full = np.asarray(dm.common.design_matrix, dtype=float).reshape(n, -1)
        names_full = _matrix_labels(dm.common)
    else:
        X_full = np.zeros((n, 0))
        names_full = []
    keep = _independent_columns(X_full)
    dropped = tuple(names_full[i] for i in range(len(names_full)) if i not in set(keep.tolist()))
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} column(s) / "
            f"coefficient(s): {list(dropped)}.",
            DataWarning,
            stacklevel=3,
        )
    X = X_full[:, keep]
    fixed_names = tuple(names_full[i] for i in keep)

    blocks: list[BlockDesign] = []
    block_encoders: list[Any] = []
    level_maps: list[dict] = []
    for rb in parsed.blocks:
        bd, enc, lmap = _build_block(rb, eval_frame, env, parsed)
        blocks.append(bd)
        block_encoders.append(enc)
        level_maps.append(lmap)

    # lme4 orders the random-effect terms by decreasing number of levels.
    order = sorted(range(len(blocks)), key=lambda i: -blocks[i].n_levels)
    blocks = [blocks[i] for i in order]
    block_encoders = [block_encoders[i] for i in order]
    level_maps = [level_maps[i] for i in order]
    blocks = _label_blocks(blocks)

    return Design(
        parsed=parsed,
        y=y,
        X=X,
        fixed_names=fixed_names,
        blocks=tuple(blocks),
        frame=frame,
        dropped_fixed=dropped,
        n_dropped_rows=n_dropped,
        encoders=Encoders(
            fixed=dm.common, blocks=tuple(block_encoders), kept_columns=keep, level_maps=tuple(level_maps)
        ),
    )


def _build_block(
    rb: RandomBlock, frame: pd.DataFrame, env: Environment, parsed: ParsedFormula
) -> tuple[BlockDesign, Any, dict]:
    n = frame.shape[0]
    codes, levels, lmap = _factor_codes(frame, rb.factor_vars)
    if len(levels) < 2:
        raise DataError(
            f"The grouping factor {rb.factor_name!r} has only {len(levels)} level; a random effect "
            "needs at least two groups. Remove the term or fit it as a fixed effect."
        )
    if len(levels) >= n:
        raise DataError(
            f"The grouping factor {rb.factor_name!r} has {len(levels)} levels for {n} observations; "
            "every row is its own group, so the group effect cannot be told apart from the residual. "
            "Remove the term or group at a coarser level."
        )
    bdm = _evaluate(block_model(rb), frame, env, f"the random term of {rb.factor_name!r}")
    Z = np.asarray(bdm.common.design_matrix, dtype=float).reshape(n, -1)
    terms = tuple(_matrix_labels(bdm.common))
    if len(set(terms)) != len(terms):
        raise DataError(f"The random term for {rb.factor_name!r} has repeated columns {terms}.")
    zero = [t for t, col in zip(terms, Z.T) if not col.any()]
    if zero:
        warnings.warn(
            f"The random-effect column(s) {zero} of {rb.factor_name!r} are all zero; their sd is not "
            "identified by the data (only by its prior). Remove the term.",
            DataWarning,
            stacklevel=4,
        )
    bd = BlockDesign(
        label=rb.factor_name,
        factor=rb.factor_name,
        factor_vars=rb.factor_vars,
        terms=terms,
        levels=levels,
        group_idx=codes,
        Z=Z,
    )
    return bd, bdm.common, lmap


def _label_blocks(blocks: list[BlockDesign]) -> list[BlockDesign]:
    """Give repeated factors lme4's ``.1``, ``.2`` suffixes (``Subject``, ``Subject.1``)."""
    seen: dict[str, int] = {}
    out = []
    for b in blocks:
        k = seen.get(b.factor, 0)
        seen[b.factor] = k + 1
        label = b.factor if k == 0 else f"{b.factor}.{k}"
        out.append(BlockDesign(label, b.factor, b.factor_vars, b.terms, b.levels, b.group_idx, b.Z))
    return out
