"""Predictions from a fitted model: ``predict(fm, newdata, re.form)`` with intervals.

A thin layer over the array core (:mod:`bayeslmm.paramdraws`): the rows are
encoded like the training data (:mod:`bayeslmm.newdata`), the linear
predictor is computed per draw by index-gather, and every row is summarised
by :func:`~bayeslmm.paramdraws.summarise`. A posterior gives credible (or,
with ``kind="response"``, prediction) intervals; a point fit (REML/ML) gives
the standard error of the fixed-effect part ``sqrt(x' Var(β̂) x)`` and its
Wald interval: the fixed-effects-only standard error of the GLMM FAQ's
recipe for lme4 predictions (and of ``jtools::predict_merMod(se.fit = TRUE)``),
with the conditional modes taken as known.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .design import Design
from .errors import FormulaError, PredictionError
from .formula import parse_formula
from .newdata import encode_new_data
from .paramdraws import CHUNK_VALUES, ParamDraws, Rows, linear_predictor, sample_new_effects

__all__ = ["resolve_re_form", "predict"]

_NA_STRINGS = {"~0", "0", "NA", "~NA", "~-1"}
_KINDS = ("mean", "response")
_NEW_LEVELS = ("population", "sample", "error")


def _is_na_like(value: Any) -> bool:
    if value is False:
        return True
    if isinstance(value, str):
        return "".join(value.split()) in _NA_STRINGS
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return bool(np.isnan(value)) or value == 0
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def resolve_re_form(design: Design, re_form: Any) -> tuple[bool, ...]:
    """Which blocks' group effects enter, as lme4's ``re.form``.

    Parameters
    ----------
    design
        The training design.
    re_form
        ``None``: all group effects. ``"~0"``, ``"NA"``, ``"0"``, ``nan``,
        ``pd.NA`` or ``False``: none (population-level prediction). A formula
        such as ``"~(1|Subject)"``: the blocks of the grouping factors it
        names (parsed by formulae; the terms left of the bar do not matter).

    Returns
    -------
    tuple of bool
        One entry per block of ``design``.

    Raises
    ------
    PredictionError
        For a value of another type, a formula without a grouping term, or a
        factor the model does not have.
    """
    if re_form is None:
        return tuple(True for _ in design.blocks)
    if _is_na_like(re_form):
        return tuple(False for _ in design.blocks)
    if not isinstance(re_form, str):
        raise PredictionError(
            f"re_form must be None (all group effects), '~0' (none) or a formula such as "
            f"'~(1|{design.blocks[0].factor})'; got {re_form!r}."
        )
    text = re_form.strip()
    if not text.startswith("~"):
        text = "~" + text
    try:
        parsed = parse_formula(f"re_form_response__ {text}")
    except FormulaError as exc:
        raise PredictionError(
            f"Cannot read re_form={re_form!r} as grouping terms like '~(1|{design.blocks[0].factor})': {exc}"
        ) from None
    wanted = {frozenset(rb.factor_vars): rb.factor_name for rb in parsed.blocks}
    have = {frozenset(b.factor_vars) for b in design.blocks}
    unknown = sorted(name for key, name in wanted.items() if key not in have)
    if unknown:
        raise PredictionError(
            f"re_form={re_form!r} names grouping factor(s) {unknown} that the model does not have; "
            f"the model's factors are {sorted(design.factors)}."
        )
    return tuple(frozenset(b.factor_vars) in wanted for b in design.blocks)


# ---------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------
def _kind_text(block: Any) -> str:
    kinds = {"number": "numbers", "string": "strings", "bool": "True/False values"}
    return " and ".join(kinds.get(k, k) for k in block.kinds) or "labels"


def _check_args(kind: str, new_levels: str, level: float) -> None:
    if kind not in _KINDS:
        raise PredictionError(f"kind must be one of {list(_KINDS)}, got {kind!r}.")
    if new_levels not in _NEW_LEVELS:
        raise PredictionError(f"new_levels must be one of {list(_NEW_LEVELS)}, got {new_levels!r}.")
    if isinstance(level, bool) or not isinstance(level, (float, int)) or not 0 < level < 1:
        raise PredictionError(f"level must be a probability between 0 and 1, e.g. 0.95; got {level!r}.")


def predict(
    design: Design,
    params: ParamDraws,
    newdata: pd.DataFrame | None = None,
    re_form: Any = None,
    new_levels: str = "error",
    kind: str = "mean",
    level: float = 0.95,
    random_seed: int | None = None,
) -> pd.DataFrame:
    """Predictions summarised per row (what ``fit.predict`` returns for every fit kind).

    Parameters
    ----------
    design
        The training design.
    params
        The fit's parameter draws (``fit.params``).
    newdata
        Rows to predict for; ``None`` uses the training rows. The response
        column is not needed; with ``re_form`` "~0" the grouping columns are
        not needed either.
    re_form
        Which group effects enter; see :func:`resolve_re_form`.
    new_levels
        Levels of a grouping factor not seen in the fit: ``"error"`` (the
        default, as lme4's ``allow.new.levels = FALSE``) raises, listing
        them; ``"population"`` gives them a group effect of 0; ``"sample"``
        (posterior only) draws a new effect from N(0, T) per posterior draw
        (one per new level, shared by its rows). Values are matched as the
        type the fit saw: a number ``308.0`` is the level ``308``, a string
        ``" 308"`` is not.
    kind
        ``"mean"``: the expected value (credible or confidence interval);
        ``"response"``: a new observation (prediction interval: a posterior adds
        the family's noise per draw, a point fit adds σ² to the variance).
    level
        Interval level.
    random_seed
        Seed for new-level effects and response noise.

    Returns
    -------
    pandas.DataFrame
        Row-aligned with ``newdata`` (or the rows used in the fit). A
        posterior: ``Estimate`` (mean over draws), ``Est.Error`` (sd) and the
        equal-tailed interval (``l-95% CI``, ``u-95% CI``). A point fit:
        ``Estimate``, ``Std. Error`` of the fixed-effect part (the conditional
        modes are taken as known, as lme4 does) and its Wald interval.

    Raises
    ------
    PredictionError
        For a missing column, a bad argument, or an unseen level with
        ``new_levels="error"`` (the message names the factor and the levels).
    """
    _check_args(kind, new_levels, level)
    if params.is_point and new_levels == "sample":
        raise PredictionError(
            "new_levels='sample' draws new group effects from a posterior; this is a point (REML/ML) fit. "
            "Use new_levels='population' or 'error', or fit with method='NUTS'."
        )
    include = resolve_re_form(design, re_form)
    if newdata is None:
        rows, index = Rows.from_design(design), design.frame.index
    else:
        nd = encode_new_data(design, newdata, blocks=any(include))
        if not any(include):
            include = ()  # the blocks were not encoded
        rows, index = Rows.from_new(nd), newdata.index
    rng = np.random.default_rng(random_seed)
    new_effects: list[np.ndarray | None] = []
    for k, levels in enumerate(rows.new_levels):
        if not include[k] or not levels:
            new_effects.append(None)
            continue
        b = design.blocks[k]
        if new_levels == "error":
            shown = ", ".join(levels[:5]) + (f" and {len(levels) - 5} more" if len(levels) > 5 else "")
            raise PredictionError(
                f"newdata has {len(levels)} level(s) of the grouping factor {b.factor!r} that the fit did not see: "
                f"{shown} (values are matched as the type the fit saw: {b.factor!r} held {_kind_text(b)}). "
                "As lme4 does by default (allow.new.levels = FALSE), bayeslmm refuses them; to predict them, pass "
                "new_levels='population' (group effect 0) or new_levels='sample' (new group effects drawn from "
                "the fitted covariance) -- on the command line --new-levels population or sample -- or fix or drop "
                "those rows."
            )
        new_effects.append(sample_new_effects(params.cov[k], len(levels), rng) if new_levels == "sample" else None)

    family = params.family
    if params.is_point:
        mu = family.linkinv(linear_predictor(rows, params, include or None, new_effects))
        se = params.fixed_se(rows.X)
        if kind == "response":
            se = np.sqrt(se**2 + params.sigma[0] ** 2)
        return params.summarise(mu, level, index, se=se)
    q_total = max(1, sum(z.shape[1] for z in rows.Z))
    step = max(1, CHUNK_VALUES // (params.n_draws * q_total))
    parts = []
    for start in range(0, rows.n, step):
        sel = slice(start, min(start + step, rows.n))
        mu = family.linkinv(linear_predictor(rows.take(sel), params, include or None, new_effects))
        if kind == "response":
            mu = family.draw(mu, params.sigma[:, None], rng)
        parts.append(params.summarise(mu, level))
    out = pd.concat(parts, ignore_index=True)
    out.index = index
    return out
