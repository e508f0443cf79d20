"""Inference for linear mixed models.

On the REML/ML side, what lme4, lmerTest and pbkrtest give: profile, Wald and
bootstrap confidence intervals (:func:`confint`, :func:`profile`), the
parametric bootstrap (:func:`bootstrap`), t tests with Satterthwaite or
Kenward-Roger degrees of freedom (:func:`coef_table`), F tests of the
fixed-effect terms (:func:`anova_table`, :func:`contest`), likelihood-ratio
tests of nested models (:func:`anova`) and of the random-effect terms
(:func:`ranova`). On the Bayesian side, what brms gives: :func:`hypothesis`
and the probability of direction. Each function takes a fit; the REML engine
is reached only through :mod:`bayeslmm.inference.engine`.
"""

from .parametric_bootstrap import BootReplicate, BootstrapResult, bootstrap
from .intervals import confint
from .fixed_tests import anova_table, coef_table, contest
from .posterior_tests import hypothesis, probability_of_direction
from .lrt import anova, ranova
from .likelihood_profile import Profile, profile
from .report import InferenceTable

__all__ = [
    "confint",
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
