"""Stage 1 of a GLMM: the response forms and offsets of a formula, as lme4 and Bambi write them.

The left-hand side of the formula may be

* a 0/1, boolean or two-level column (the second level is "success", as R);
* ``cbind(successes, failures)`` (lme4);
* ``p(successes, trials)`` (Bambi);
* any numeric expression with ``weights=`` giving the trials (lme4's
  proportion form ``incidence/size``), or a count for count families.

Top-level ``offset(expr)`` terms on the right-hand side are taken out of the
formula and evaluated, as is the ``offset=`` argument (a column name or one
number per row). Expressions are evaluated with :meth:`pandas.DataFrame.eval`
(columns, arithmetic and the functions ``log``, ``exp``, ``sqrt``...).

The result is a :class:`GLMMResponse`: the response, trials and offset of
every row, and the formula rewritten with a placeholder response column that
holds each row's position, so that the design stage drops exactly the rows
whose response, trials or offset is missing and the kept rows are known.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError, DataWarning, FormulaError
from .families import GLMFamily

__all__ = ["GLMMResponse", "PLACEHOLDER", "parse_response", "split_top"]

#: Name of the placeholder response column the design stage sees.
PLACEHOLDER = "glmer_row_"

_CALL = re.compile(r"^\s*(cbind|p)\s*\((.*)\)\s*$", re.S)
_OFFSET = re.compile(r"^\s*offset\s*\((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class GLMMResponse:
    """The response of a GLMM, row-aligned with the data given.

    Attributes
    ----------
    y
        Proportion of successes (binomial) or count, ``(n,)``; NaN where missing.
    weights
        Trials (binomial) or 1, ``(n,)``.
    offset
        Offset on the link scale, ``(n,)`` (0 without one).
    formula
        The formula the design stage evaluates: the placeholder response, no offset terms.
    original
        The formula as written.
    label
        How the response is named in messages and summaries.
    offsets
        The offset expressions (for printing).
    """

    y: np.ndarray
    weights: np.ndarray
    offset: np.ndarray
    formula: str
    original: str
    label: str
    offsets: tuple[str, ...]

    @property
    def has_offset(self) -> bool:
        """Whether the model has a nonzero offset."""
        return bool(np.any(np.nan_to_num(self.offset) != 0))


def split_top(text: str, sep: str) -> list[str]:
    """Split ``text`` at ``sep`` characters outside parentheses/brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _evaluate(expr: str, data: pd.DataFrame, what: str) -> pd.Series:
    expr = expr.strip()
    if expr in data.columns:
        return data[expr]
    try:
        with np.errstate(all="ignore"):
            value = data.eval(expr, engine="python")
    except Exception as exc:  # pandas raises many kinds for a bad expression
        raise DataError(
            f"Could not evaluate {what} {expr!r} on the data: {exc}. Use column names, arithmetic and "
            "functions such as log, exp, sqrt."
        ) from None
    if np.ndim(value) == 0:
        value = pd.Series(np.full(len(data), float(value)), index=data.index)
    return pd.Series(np.asarray(value), index=data.index)


def _rows(mask: np.ndarray, index: pd.Index) -> str:
    bad = list(index[np.flatnonzero(mask)])
    shown = ", ".join(repr(v) for v in bad[:8])
    return f"{len(bad)} row(s): {shown}" + (" ..." if len(bad) > 8 else "")


def _numeric(s: pd.Series, what: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(s):
        return s.to_numpy(dtype=float)
    try:
        return pd.to_numeric(s).to_numpy(dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"The {what} is not numeric (dtype {s.dtype}); convert it, e.g. with pd.to_numeric.") from None


def _binary(s: pd.Series, name: str, index: pd.Index) -> np.ndarray:
    """A 0/1, boolean or two-level column as 0/1 (NaN where missing); the second level is success, as R."""
    present = s.dropna()
    if pd.api.types.is_bool_dtype(s) or (present.map(type).isin([bool, np.bool_]).all() and len(present)):
        return s.map(lambda v: np.nan if pd.isna(v) else float(bool(v))).to_numpy(dtype=float)
    if pd.api.types.is_numeric_dtype(s):
        values = s.to_numpy(dtype=float)
        bad = ~np.isnan(values) & ~np.isin(values, (0.0, 1.0))
        if bad.any():
            raise DataError(
                f"The binary response {name!r} must be 0/1, boolean or two-level; it has the values "
                f"{sorted(set(values[bad].tolist()))[:5]} in {_rows(bad, index)}. For counts of successes out of "
                "trials write cbind(successes, failures) or pass weights= with a proportion."
            )
        return values
    levels = list(s.cat.categories) if isinstance(s.dtype, pd.CategoricalDtype) else sorted(present.unique().tolist(), key=str)
    if len(levels) != 2:
        raise DataError(
            f"The binary response {name!r} must have two levels; it has {len(levels)}: {levels[:6]}. "
            "Recode it to two levels (the second is counted as success, as in R)."
        )
    return s.map(lambda v: np.nan if pd.isna(v) else float(v == levels[1])).to_numpy(dtype=float)


def _check_counts(values: np.ndarray, what: str, index: pd.Index) -> None:
    ok = ~np.isnan(values)
    neg = ok & (values < 0)
    if neg.any():
        raise DataError(f"The {what} must be non-negative; it is negative in {_rows(neg, index)}.")
    frac = ok & (np.abs(values - np.round(values)) > 1e-8)
    if frac.any():
        raise DataError(f"The {what} must be whole numbers; it is not in {_rows(frac, index)}.")


def parse_response(
    formula: str, data: pd.DataFrame, family: GLMFamily, weights: Any = None, offset: Any = None
) -> GLMMResponse:
    """Evaluate the response, trials and offset of a GLMM formula on the data.

    Parameters
    ----------
    formula
        The lme4 formula as written.
    data
        The data (not modified).
    family
        The response family.
    weights
        Trials of a proportion response (binomial family): a column name or one number per row.
    offset
        An offset on the link scale: a column name or one number per row (added to any ``offset()`` terms).

    Returns
    -------
    GLMMResponse

    Raises
    ------
    FormulaError
        For a formula without ``~`` or a malformed ``cbind``/``p``.
    DataError
        For a response that does not fit the family (the message names the column and the rows).
    """
    if not isinstance(formula, str) or formula.count("~") < 1:
        raise FormulaError(f"The formula must be a string 'response ~ terms'; got {formula!r}.")
    lhs, _, rhs = formula.partition("~")
    lhs = lhs.strip()
    if PLACEHOLDER in data.columns:
        raise DataError(f"The data has a column named {PLACEHOLDER!r}, which glmer uses internally; rename it.")
    index = data.index
    m = _CALL.match(lhs)
    trials: np.ndarray | None = None
    if m is not None:
        args = split_top(m.group(2), ",")
        if len(args) != 2:
            raise FormulaError(f"{m.group(1)}() on the left of {formula!r} takes two arguments; got {len(args)}.")
        if not family.is_binomial:
            raise FormulaError(
                f"{lhs!r} is a binomial response (successes and trials); the {family.name} family needs a count. "
                "Use family='binomial'."
            )
        if weights is not None:
            raise DataError(f"Pass either weights= or {m.group(1)}() on the left of the formula, not both.")
        succ = _numeric(_evaluate(args[0], data, "successes"), f"successes {args[0].strip()!r}")
        other = _numeric(_evaluate(args[1], data, "trials"), f"{'failures' if m.group(1) == 'cbind' else 'trials'} {args[1].strip()!r}")
        _check_counts(succ, f"number of successes {args[0].strip()!r}", index)
        _check_counts(other, f"{'number of failures' if m.group(1) == 'cbind' else 'number of trials'} {args[1].strip()!r}", index)
        trials = succ + other if m.group(1) == "cbind" else other
        over = ~np.isnan(succ) & ~np.isnan(trials) & (succ > trials)
        if over.any():
            raise DataError(
                f"The successes {args[0].strip()!r} exceed the trials {args[1].strip()!r} in {_rows(over, index)}."
            )
        with np.errstate(all="ignore"):
            y = np.where(trials > 0, succ / np.where(trials > 0, trials, 1.0), np.nan)
        zero = trials == 0
        if zero.any():
            raise DataError(f"The number of trials is 0 in {_rows(zero, index)}; such rows carry no information, remove them.")
    else:
        raw = _evaluate(lhs, data, "response")
        if family.is_binomial and weights is None:
            y = _binary(raw, lhs, index)
            trials = np.ones(len(data))
        else:
            y = _numeric(raw, f"response {lhs!r}")
            if family.is_binomial:
                trials = _numeric(_evaluate(weights, data, "weights") if isinstance(weights, str)
                                  else pd.Series(np.asarray(weights, dtype=float), index=index), "weights")
                if trials.shape[0] != len(data):
                    raise DataError(f"weights= must give one number per row ({len(data)}); got {trials.shape[0]}.")
                _check_counts(trials, "number of trials (weights=)", index)
                bad = ~np.isnan(y) & ((y < 0) | (y > 1))
                if bad.any():
                    raise DataError(
                        f"With weights= the binomial response {lhs!r} is a proportion in [0, 1]; it is not in "
                        f"{_rows(bad, index)}."
                    )
                succ = y * trials
                frac = ~np.isnan(succ) & (np.abs(succ - np.round(succ)) > 1e-6)
                if frac.any():
                    raise DataError(
                        f"The proportion {lhs!r} times the trials (weights=) is not a whole number of successes "
                        f"in {_rows(frac, index)}."
                    )
            else:
                if weights is not None:
                    raise DataError(
                        f"weights= gives the trials of a binomial response; the {family.name} family takes none. "
                        "For exposure, use offset(log(exposure)) in the formula or offset=."
                    )
                _check_counts(y, f"count response {lhs!r}", index)
                trials = np.ones(len(data))
    # offsets
    terms = split_top(rhs, "+")
    kept, offsets = [], []
    total = np.zeros(len(data))
    for t in terms:
        om = _OFFSET.match(t)
        if om is None:
            kept.append(t)
            continue
        expr = om.group(1).strip()
        offsets.append(expr)
        val = _numeric(_evaluate(expr, data, "offset"), f"offset {expr!r}")
        _check_offset(val, expr, data, index)
        total = total + val
    if offset is not None:
        val = _numeric(_evaluate(offset, data, "offset") if isinstance(offset, str)
                       else pd.Series(np.asarray(offset, dtype=float).reshape(-1), index=index), "offset=")
        if val.shape[0] != len(data):
            raise DataError(f"offset= must give one number per row ({len(data)}); got {val.shape[0]}.")
        _check_offset(val, "offset=", data, index)
        offsets.append(offset if isinstance(offset, str) else "offset=")
        total = total + val
    if not kept or not "".join(kept).strip():
        kept = ["1"]
    used = ~np.isnan(y) & ~np.isnan(trials) & ~np.isnan(total)
    if used.any():
        yy = y[used]
        if np.all(yy == 0) or (family.is_binomial and np.all(yy == 1)):
            warnings.warn(
                f"The response {lhs!r} is {'0' if np.all(yy == 0) else '1'} in every row; the data carry no "
                "information on the intercept (its estimate runs to the boundary).",
                DataWarning,
                stacklevel=3,
            )
    return GLMMResponse(
        y=y, weights=trials, offset=total, formula=f"{PLACEHOLDER} ~ {'+'.join(kept).strip()}",
        original=formula, label=lhs, offsets=tuple(offsets),
    )


def _check_offset(val: np.ndarray, expr: str, data: pd.DataFrame, index: pd.Index) -> None:
    """Refuse a non-finite offset; for ``log(exposure)``, name the rows where the exposure is not positive."""
    inner = re.match(r"^\s*log\s*\((.*)\)\s*$", expr)
    if inner is not None:
        x = _numeric(_evaluate(inner.group(1), data, "exposure"), f"exposure {inner.group(1).strip()!r}")
        neg = ~np.isnan(x) & (x <= 0)
        if neg.any():
            raise DataError(
                f"The exposure {inner.group(1).strip()!r} in the offset {expr!r} must be positive; "
                f"it is not in {_rows(neg, index)}."
            )
    bad = np.isinf(val)
    if bad.any():
        raise DataError(f"The offset {expr!r} is not finite in {_rows(bad, index)}.")
