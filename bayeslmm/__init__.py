"""bayeslmm: Bayesian linear mixed models from lme4 formulas.

>>> import bayeslmm
>>> fit = bayeslmm.lmer("Reaction ~ Days + (Days | Subject)", bayeslmm.datasets.load("sleepstudy"))
>>> print(fit.summary())
"""

from . import datasets
from .api import lmer
from .fitstats import compare_models
from .compare import compare
from .errors import (
    BayesLMMError,
    ConvergenceWarning,
    DataError,
    DataWarning,
    FormulaError,
    ParameterError,
    PersistenceError,
    PredictionError,
    PriorError,
    SamplingError,
)
from .io import load
from .priors import Prior
from .simulate import simulate

__version__ = "0.1.0"

__all__ = [
    "lmer",
    "load",
    "simulate",
    "compare_models",
    "compare",
    "datasets",
    "Prior",
    "BayesLMMError",
    "FormulaError",
    "ParameterError",
    "DataError",
    "PriorError",
    "SamplingError",
    "PredictionError",
    "PersistenceError",
    "DataWarning",
    "ConvergenceWarning",
]
