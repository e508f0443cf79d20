"""A design rebuilt from its recipe and model frame: what loading a saved fit does instead of evaluating a formula.

:func:`rebuild_design` evaluates nothing but the recipe (:mod:`bayeslmm.recipe`)
on the stored model frame, and applies to the result the checks a new fit
gets (:mod:`bayeslmm.modelframe`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import grouping
from .design import BlockDesign, Design
from .errors import DataError
from .formula import ParsedFormula
from .modelframe import check_levels, check_response_values, check_values
from .recipe import DesignRecipe, EvaluationError, evaluate_component, evaluate_terms, term_labels

__all__ = ["rebuild_design"]


def rebuild_design(parsed: ParsedFormula, recipe: DesignRecipe, frame: pd.DataFrame, n_dropped_rows: int = 0) -> Design:
    """A design from its recipe and model frame, evaluating nothing but the recipe.

    Parameters
    ----------
    parsed
        The parsed formula (for its text and names; it is not evaluated).
    recipe
        The design's recipe.
    frame
        The model frame the design was built from.
    n_dropped_rows
        Rows dropped when the design was first built.

    Returns
    -------
    Design

    Raises
    ------
    DataError
        If the recipe does not evaluate on the frame, or the result fails the
        checks a new fit would get (non-finite or constant response, a level
        the frame does not have, a frame row of no known level).
    """
    n = frame.shape[0]
    data = {str(c): frame[c].to_numpy() for c in frame.columns}
    try:
        y = evaluate_component(recipe.response, data, n)[:, 0]
        X_full = evaluate_terms(recipe.fixed, frame)
    except (EvaluationError, KeyError) as exc:
        raise DataError(f"The saved recipe does not evaluate on the saved model frame: {exc}") from None
    check_response_values(parsed, y, n, frame.index)
    names_full = [lab for t in recipe.fixed for lab in term_labels(t)]
    if X_full.shape[1] != len(names_full) or any(not 0 <= k < len(names_full) for k in recipe.kept):
        raise DataError("The saved fixed-effect columns do not match their recipe.")
    check_values("predictor", names_full, X_full, frame.index)
    blocks = []
    for br in recipe.blocks:
        idx, unseen = grouping.match_levels(frame, br.factor_vars, br.level_keys, br.kinds)
        if unseen or len(np.unique(idx)) != len(br.level_keys):
            raise DataError(f"The saved levels of {br.factor!r} do not match the saved model frame.")
        check_levels(br.factor, len(br.level_keys), n)
        try:
            Z = evaluate_terms(br.terms, frame)
        except (EvaluationError, KeyError) as exc:
            raise DataError(f"The saved recipe of {br.label!r} does not evaluate on the saved model frame: {exc}") from None
        terms = tuple(lab for t in br.terms for lab in term_labels(t))
        if Z.shape[1] != len(terms) or len(set(terms)) != len(terms):
            raise DataError(f"The saved random-effect columns of {br.label!r} do not match their recipe.")
        check_values(f"random-effect column of {br.factor!r}", list(terms), Z, frame.index)
        labels = tuple(grouping.level_label(k) for k in br.level_keys)
        if len(set(labels)) != len(labels):
            raise DataError(f"The saved levels of {br.factor!r} are not distinct.")
        blocks.append(BlockDesign(br.label, br.factor, br.factor_vars, terms, labels, idx, Z, br.level_keys, br.kinds))
    kept = list(recipe.kept)
    return Design(
        parsed=parsed,
        y=y,
        X=X_full[:, kept],
        fixed_names=tuple(names_full[i] for i in kept),
        blocks=tuple(blocks),
        frame=frame,
        dropped_fixed=tuple(names_full[i] for i in range(len(names_full)) if i not in set(kept)),
        n_dropped_rows=n_dropped_rows,
        encoders=None,
        recipe=recipe,
    )
