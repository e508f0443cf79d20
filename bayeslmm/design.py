"""Stage 2: ParsedFormula + DataFrame -> :class:`Design`.

The design holds the response, the fixed-effects matrix X, and for every
random-effect block the per-row group index and the block's few Z columns.
No dense Z is ever built: group effects are gathered as ``b[group_idx]``.

formulae evaluates every model matrix (contrasts, interactions, stateful
transforms). From its evaluated terms the stage derives the plain-data
:class:`~bayeslmm.recipe.DesignRecipe` and checks that it reproduces y, X and
Z exactly; new data are then encoded from the recipe (and a saved fit is
rebuilt from it by :func:`bayeslmm.rebuild.rebuild_design`, which evaluates
nothing but the recipe). A formula that calls the user's own functions has no recipe: it is
fitted and predicts through formulae's own encoders, and cannot be saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from . import grouping
from .compat import DesignMatrices, Environment, Intercept
from .errors import DataError, DataWarning, RowsNotKeptError, warn_user
from .formula import ParsedFormula, RandomBlock, block_model, fixed_model
from .modelframe import check_frame, check_levels, check_response, check_response_values, check_values, clean_rows
from .recipe import DesignRecipe, derive_recipe
from .rowsummary import ColumnMoments, RowSummary, moments_from_rows
from .transforms import check_model, fallback_namespace

__all__ = ["BlockDesign", "Design", "Encoders", "build_design", "default_env", "lme4_labels"]


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
        Display labels of the factor's levels, in index order, all distinct
        (see :mod:`bayeslmm.grouping`).
    group_idx
        Integer level index of every row, shape ``(n,)``.
    Z
        The block's model-matrix columns, shape ``(n, q)``.
    level_keys
        The identity of each level: the tuple of its component values.
    kinds
        The value kind of each factor column (``"number"``, ``"string"``, ``"bool"``).
    """

    label: str
    factor: str
    factor_vars: tuple[str, ...]
    terms: tuple[str, ...]
    levels: tuple[str, ...]
    group_idx: np.ndarray
    Z: np.ndarray
    level_keys: tuple[tuple[Any, ...], ...] = ()
    kinds: tuple[str, ...] = ()

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
    """formulae's evaluated matrices, used to encode new data when the design has no recipe."""

    fixed: Any
    blocks: tuple[Any, ...]
    kept_columns: np.ndarray


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
    encoders
        formulae's encoders (``None`` for a design rebuilt from a saved recipe).
    recipe
        The plain-data encoding of the design, or ``None`` when the formula
        uses something outside :mod:`bayeslmm.transforms`' allowlist.
    recipe_problem
        Why there is no recipe (empty when there is one).
    summary
        Set for a design evaluated out of core (:mod:`bayeslmm.outofcore`): the
        rows were never loaded, and ``y``, ``X`` and the blocks' ``Z`` and
        ``group_idx`` hold *compressed rows* instead, a few per group, with the
        same per-group cross-products as the data (all the Gaussian likelihood
        uses). ``None`` for a design that holds its rows.
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
    recipe: DesignRecipe | None = field(default=None, repr=False, compare=False)
    recipe_problem: str = field(default="", repr=False, compare=False)
    summary: RowSummary | None = field(default=None, repr=False, compare=False)

    @property
    def nobs(self) -> int:
        """Number of observations used."""
        return self.summary.n if self.summary is not None else int(self.y.shape[0])

    @cached_property
    def moments(self) -> ColumnMoments:
        """Moments of the response and model-matrix columns (for default priors and starting values)."""
        if self.summary is not None:
            return self.summary.moments
        # Summed per group of the factor with most levels, in the order the out-of-core pass sums.
        finest = max(self.blocks, key=lambda b: b.n_levels, default=None)
        idx = finest.group_idx if finest is not None else np.zeros(self.nobs, dtype=np.int64)
        return moments_from_rows(self.y, self.X, [b.Z for b in self.blocks], idx, finest.n_levels if finest is not None else 1)

    def require_rows(self, what: str) -> None:
        """Refuse ``what`` (e.g. ``"fitted()"``) on a design that does not hold its rows."""
        if self.summary is not None:
            raise RowsNotKeptError(
                f"{what} needs the data rows, and this fit was computed out of core from {self.summary.source} "
                f"({self.summary.n} rows), keeping per-group sums only; the rows are not loaded behind your back. "
                "Use predict(newdata=...) on the rows you need (e.g. one partition at a time), "
                "or fit an in-memory data frame."
            )

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
    """An evaluation environment with numpy (``np.log(y)``) and the allowlisted functions (``log(y)``)."""
    return Environment([{"np": np, "numpy": np}, fallback_namespace()])


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
    out = [""]
    for labels in per_component:
        out = [f"{a}:{b}" if a else b for a in out for b in labels]
    return out


def _matrix_labels(common: Any) -> list[str]:
    return [lab for term in common.terms.values() for lab in lme4_labels(term)]


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
def _evaluate(model: Any, frame: pd.DataFrame, env: Environment, what: str, parsed: ParsedFormula,
              closed: bool) -> DesignMatrices:
    if closed:
        check_model(model, parsed.text)  # the very objects formulae evaluates next
    try:
        with np.errstate(all="ignore"):  # non-finite results are reported by check_values, naming the column
            return DesignMatrices(model, frame, env)
    except Exception as exc:  # formulae raises bare ValueError/KeyError/NameError
        raise DataError(f"Could not evaluate {what} on the data: {exc}") from None


def build_design(
    parsed: ParsedFormula,
    data: pd.DataFrame,
    na_action: str = "drop",
    env: Environment | None = None,
    closed: bool = False,
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
    closed
        Refuse, before evaluating anything, a formula that uses anything
        outside :mod:`bayeslmm.transforms`' allowlist (for formulas that are
        not trusted code).

    Returns
    -------
    Design

    Raises
    ------
    DataError
        For a missing column, a non-numeric or constant response, infinite
        values (in the data or after a transformation), a grouping factor with
        a single level, or no rows.
    FormulaError
        With ``closed=True``, for a formula outside the allowlist.
    """
    if na_action not in ("drop", "raise"):
        raise DataError(f"na_action must be 'drop' or 'raise', got {na_action!r}.")
    env = env if env is not None else default_env()
    check_frame(parsed, data)
    frame, n_dropped = clean_rows(parsed, data, na_action)
    check_response(parsed, frame)
    n = frame.shape[0]
    eval_frame = frame.reset_index(drop=True)

    dm = _evaluate(fixed_model(parsed), eval_frame, env, f"the fixed part of {parsed.text!r}", parsed, closed)
    y = np.asarray(dm.response.design_matrix, dtype=float).reshape(-1)
    check_response_values(parsed, y, n, frame.index)
    if dm.common is not None:
        X_full = np.asarray(dm.common.design_matrix, dtype=float).reshape(n, -1)
        names_full = _matrix_labels(dm.common)
    else:
        X_full = np.zeros((n, 0))
        names_full = []
    check_values("predictor", names_full, X_full, frame.index)
    keep = _independent_columns(X_full)
    dropped = tuple(names_full[i] for i in range(len(names_full)) if i not in set(keep.tolist()))
    if dropped:
        warn_user(
            f"fixed-effect model matrix is rank deficient so dropping {len(dropped)} column(s) / "
            f"coefficient(s): {list(dropped)}.",
            DataWarning,
        )
    built = [_build_block(rb, eval_frame, env, parsed, closed, frame.index) for rb in parsed.blocks]
    # lme4 orders the random-effect terms by decreasing number of levels.
    built.sort(key=lambda item: -item[0].n_levels)
    blocks = _label_blocks([b for b, _ in built])
    block_commons = tuple(c for _, c in built)

    recipe, problem = derive_recipe(
        dm.response.term.term,
        list(dm.common.terms.values()) if dm.common is not None else [],
        [(b, list(c.terms.values())) for b, c in zip(blocks, block_commons)],
        keep, eval_frame, y, X_full, names_full,
    )
    return Design(
        parsed=parsed,
        y=y,
        X=X_full[:, keep],
        fixed_names=tuple(names_full[i] for i in keep),
        blocks=tuple(blocks),
        frame=frame,
        dropped_fixed=dropped,
        n_dropped_rows=n_dropped,
        encoders=Encoders(fixed=dm.common, blocks=block_commons, kept_columns=keep),
        recipe=recipe,
        recipe_problem=problem,
    )


def _warn_zero_columns(fname: str, terms: tuple[str, ...], Z: np.ndarray) -> None:
    zero = [t for t, col in zip(terms, Z.T) if not col.any()]
    if zero:
        warn_user(
            f"The random-effect column(s) {zero} of {fname!r} are all zero; their sd is not "
            "identified by the data (only by its prior). Remove the term.",
            DataWarning,
        )


def _build_block(
    rb: RandomBlock, frame: pd.DataFrame, env: Environment, parsed: ParsedFormula, closed: bool, index: pd.Index
) -> tuple[BlockDesign, Any]:
    n = frame.shape[0]
    try:
        codes, keys, labels, kinds = grouping.factor_codes(frame, rb.factor_vars)
    except ValueError as exc:
        raise DataError(f"The grouping factor {rb.factor_name!r}: {exc}.") from None
    check_levels(rb.factor_name, len(keys), n)
    bdm = _evaluate(block_model(rb), frame, env, f"the random term of {rb.factor_name!r}", parsed, closed)
    Z = np.asarray(bdm.common.design_matrix, dtype=float).reshape(n, -1)
    terms = tuple(_matrix_labels(bdm.common))
    if len(set(terms)) != len(terms):
        raise DataError(f"The random term for {rb.factor_name!r} has repeated columns {terms}.")
    check_values(f"random-effect column of {rb.factor_name!r}", list(terms), Z, index)
    _warn_zero_columns(rb.factor_name, terms, Z)
    bd = BlockDesign(rb.factor_name, rb.factor_name, rb.factor_vars, terms, labels, codes, Z, keys, kinds)
    return bd, bdm.common


def _label_blocks(blocks: list[BlockDesign]) -> list[BlockDesign]:
    """Give repeated factors lme4's ``.1``, ``.2`` suffixes (``Subject``, ``Subject.1``)."""
    seen: dict[str, int] = {}
    out = []
    for b in blocks:
        k = seen.get(b.factor, 0)
        seen[b.factor] = k + 1
        label = b.factor if k == 0 else f"{b.factor}.{k}"
        out.append(BlockDesign(label, b.factor, b.factor_vars, b.terms, b.levels, b.group_idx, b.Z, b.level_keys, b.kinds))
    return out
