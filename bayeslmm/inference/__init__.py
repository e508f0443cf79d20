"""Inference for linear mixed models.

On the REML/ML side, what lme4, lmerTest and pbkrtest give: profile, Wald and
bootstrap confidence intervals (:func:`confint`, :func:`profile`), the
parametric bootstrap (:func:`bootstrap`), t tests with Satterthwaite or
Kenward-Roger degrees of freedom (:func:`coef_table`), F tests of the
fixed-effect terms (:func:`anova_table`, :func:`contest`), likelihood-ratio
tests of nested models (:func:`anova`) and of the random-effect terms
(:func:`ranova`). On the Bayesian side, what brms gives: :func:`hypothesis`
and the probability of direction.

Users call these through the fits: the methods of
:class:`~bayeslmm.reml_fit.REMLFit` (``fit.confint()``, ``fit.anova()``, ...),
of :class:`~bayeslmm.results.BayesFit` (``fit.hypothesis()``,
``fit.summary(pd=True)``) and :func:`bayeslmm.anova`. The REML-side functions
here take a fit's :class:`~bayeslmm.inference.engine.FitState`
(``fit.inference_state``); the REML engine is reached only through
:mod:`bayeslmm.inference.engine`.
"""

from .parametric_bootstrap import BootReplicate, BootstrapResult, bootstrap
from .intervals import confint, varcorr_intervals
from .fixed_tests import DDF_METHODS, anova_table, coef_table, contest, ddf_note, normalize_ddf
from .posterior_tests import hypothesis, probability_of_direction
from .lrt import anova, ranova
from .likelihood_profile import Profile, profile
from .report import SIGNIF_LEGEND, InferenceTable, significance_stars

__all__ = [
    "confint",
    "varcorr_intervals",
    "normalize_ddf",
    "ddf_note",
    "DDF_METHODS",
    "significance_stars",
    "SIGNIF_LEGEND",
    "profile",
    "Profile",
    "bootstrap",
    "BootstrapResult",
    "BootReplicate",
    "coef_table",
    "anova_table",
    "contest",
    "anova",
    "ranova",
    "hypothesis",
    "probability_of_direction",
    "InferenceTable",
]
