"""bayeslmm: Bayesian linear mixed models from lme4 formulas.

>>> import bayeslmm
>>> fit = bayeslmm.lmer("Reaction ~ Days + (Days | Subject)", bayeslmm.datasets.load("sleepstudy"))
>>> print(fit.summary())
"""

from . import datasets
from .api import lmer
from .errors import (
    BayesLMMError,
    ConvergenceWarning,
    DataError,
    DataWarning,
    FormulaError,
    PersistenceError,
    PredictionError,
    PriorError,
    SamplingError,
)
from .priors import Prior

__version__ = "0.1.0"

__all__ = [
    "lmer",
    "datasets",
    "Prior",
    "BayesLMMError",
    "FormulaError",
    "DataError",
    "PriorError",
    "SamplingError",
    "PredictionError",
    "PersistenceError",
    "DataWarning",
    "ConvergenceWarning",
]
