"""REML/ML fits of linear mixed models, as lme4 computes them.

:func:`fit_reml` is the fit stage used by ``lmer(method="REML")``: it builds
the design's :class:`~bayeslmm.reml_problem.REMLProblem` (cross-products
formed once, the blocked Cholesky factor updated in place per θ), minimises
the profiled criterion and returns the numbers as a :class:`REMLResult`.
The algorithm and the criteria are described in :mod:`bayeslmm.reml_problem`.
"""

from __future__ import annotations

import warnings

from .design import Design
from .errors import ConvergenceWarning
from .reml_problem import REMLEstimate, REMLProblem
from .reml_result import SINGULAR_MESSAGE, SINGULAR_TOL, REMLResult, block_sd_corr

__all__ = [
    "REMLResult",
    "REMLProblem",
    "REMLEstimate",
    "fit_reml",
    "block_sd_corr",
    "SINGULAR_MESSAGE",
    "SINGULAR_TOL",
]


def fit_reml(design: Design, method: str = "REML", condvar: bool = True) -> REMLResult:
    """Fit a linear mixed model by REML or ML, exactly as ``lme4::lmer`` does.

    Parameters
    ----------
    design
        The evaluated design (:func:`bayeslmm.design.build_design`).
    method
        ``"REML"`` (lmer's default) or ``"ML"`` (``REML = FALSE``).
    condvar
        Whether to compute the conditional sds of the random effects.

    Returns
    -------
    REMLResult

    Raises
    ------
    BayesLMMError
        If ``method`` is neither ``"REML"`` nor ``"ML"``, the design has no
        random-effect block, X is rank deficient, or there are no residual
        degrees of freedom.

    Warns
    -----
    ConvergenceWarning
        ``"boundary (singular) fit: see help('isSingular')"`` for a singular fit,
        and a separate warning if the optimiser did not converge.
    """
    problem = REMLProblem.from_design(design, method)
    est = problem.optimize()
    result = problem.result(est, condvar=condvar)
    if result.singular:
        warnings.warn(SINGULAR_MESSAGE, ConvergenceWarning, stacklevel=2)
    if not result.converged:
        warnings.warn(
            f"The {result.method} optimiser did not converge ({result.optimizer_message}); the estimates may be inaccurate.",
            ConvergenceWarning,
            stacklevel=2,
        )
    return result
