"""bayeslmm: Bayesian linear mixed models from lme4 formulas.

>>> import bayeslmm
>>> fit = bayeslmm.lmer("Reaction ~ Days + (Days | Subject)", bayeslmm.datasets.load("sleepstudy"))
>>> print(fit.summary())

The public names are imported when first used, so ``import bayeslmm`` (and
``bayeslmm --help``) does not load PyMC, ArviZ or pandas until a fit needs them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

from .errors import (
    BayesLMMError,
    ConvergenceWarning,
    DataError,
    DataWarning,
    FormulaError,
    InferenceError,
    ParameterError,
    PersistenceError,
    PredictionError,
    PriorError,
    SamplingError,
)

__version__ = "0.1.0"

#: Public name -> (submodule, attribute; None for the submodule itself).
_LAZY: dict[str, tuple[str, str | None]] = {
    "lmer": ("api", "lmer"),
    "glmer": ("glmm.entry", "glmer"),
    "load": ("io", "load"),
    "simulate": ("simulate", "simulate"),
    "compare_models": ("fitstats", "compare_models"),
    "compare": ("compare", "compare"),
    "anova": ("reml_fit", "anova"),
    "Prior": ("priors", "Prior"),
    "datasets": ("datasets", None),
    "check": ("check", None),
}

__all__ = [
    "lmer",
    "glmer",
    "load",
    "simulate",
    "compare_models",
    "compare",
    "anova",
    "datasets",
    "check",
    "Prior",
    "BayesLMMError",
    "FormulaError",
    "InferenceError",
    "ParameterError",
    "DataError",
    "PriorError",
    "SamplingError",
    "PredictionError",
    "PersistenceError",
    "DataWarning",
    "ConvergenceWarning",
]


class _Package(types.ModuleType):
    """The package module: public names load on first use.

    ``bayeslmm.simulate`` and ``bayeslmm.compare`` are functions that share
    their name with the submodule defining them; importing that submodule
    (which sets the package attribute to the module) must not replace them.
    """

    def __getattr__(self, name: str) -> Any:
        if name not in _LAZY:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        module, attr = _LAZY[name]
        mod = importlib.import_module(f"{self.__name__}.{module}")
        value = mod if attr is None else getattr(mod, attr)
        types.ModuleType.__setattr__(self, name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        lazy = _LAZY.get(name)
        if lazy is not None and lazy[1] is not None and isinstance(value, types.ModuleType):
            return  # the submodule of the same name being imported: keep the function
        types.ModuleType.__setattr__(self, name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_LAZY))


sys.modules[__name__].__class__ = _Package
