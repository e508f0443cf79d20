"""Exceptions and warnings a user can trigger.

Every error raised for bad input is a :class:`BayesLMMError` subclass whose
message names the column, term or value at fault and says what to do.
"""

from __future__ import annotations

import os
import warnings


class BayesLMMError(Exception):
    """Base class of every error bayeslmm raises for user input."""


class FormulaError(BayesLMMError):
    """The formula cannot be parsed or does not describe a mixed model."""


class DataError(BayesLMMError):
    """The data frame does not fit the formula (missing column, bad values, ...)."""


class PriorError(BayesLMMError):
    """A prior override names an unknown parameter or has an invalid spec."""


class SamplingError(BayesLMMError):
    """Sampler settings are invalid or the requested sampler is not installed."""


class PredictionError(BayesLMMError):
    """New data cannot be used for prediction (missing column, unseen level, ...)."""


class RowsNotKeptError(BayesLMMError):
    """The operation needs the data rows, which an out-of-core fit does not keep."""


class PersistenceError(BayesLMMError):
    """A saved fit cannot be read (corrupt, tampered, or from a newer format)."""


class ParameterError(BayesLMMError):
    """The ``params`` given to :func:`bayeslmm.simulate` do not match the formula's design."""


class InferenceError(BayesLMMError):
    """A frequentist test or interval cannot be computed for this fit (e.g. a degenerate optimum)."""


class DataWarning(UserWarning):
    """Data were changed on the way in, e.g. rows with missing values dropped."""


class ConvergenceWarning(UserWarning):
    """The sampler or optimiser reported a problem (divergences, R-hat, ESS, singular fit)."""


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def warn_user(message: str, category: type[Warning]) -> None:
    """Warn, attributing the warning to the first frame outside bayeslmm (the user's call).

    However deep in the pipeline the warning arises (``lmer`` → its stages → the design),
    ``warnings`` shows the user's own line, and the default filter shows it once per line.

    Parameters
    ----------
    message
        What happened and what to do.
    category
        :class:`DataWarning`, :class:`ConvergenceWarning` or another warning class.
    """
    warnings.warn(message, category, skip_file_prefixes=(_PACKAGE_DIR,))
