"""Example data sets shipped with bayeslmm.

>>> from bayeslmm import datasets
>>> datasets.load("sleepstudy").shape
(180, 3)
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from ..errors import BayesLMMError

__all__ = ["load", "available"]

_FILES = {
    "sleepstudy": "sleepstudy.csv",
    "dyestuff": "dyestuff.csv",
    "penicillin": "penicillin.csv",
    "pastes": "pastes.csv",
}


def available() -> list[str]:
    """Names of the packaged data sets."""
    return sorted(_FILES)


def load(name: str) -> pd.DataFrame:
    """Load a packaged data set by name.

    Parameters
    ----------
    name
        One of :func:`available`, as shipped with R's lme4:

        * ``"sleepstudy"``: reaction time by days of sleep deprivation, 18 subjects (Belenky et al. 2003);
        * ``"dyestuff"``: yield of dyestuff by batch, 6 batches x 5 (Davies 1947);
        * ``"penicillin"``: penicillin potency, 24 plates crossed with 6 samples;
        * ``"pastes"``: paste strength, casks nested in 10 batches.

    Returns
    -------
    pandas.DataFrame
    """
    if name not in _FILES:
        raise BayesLMMError(f"Unknown data set {name!r}; available: {available()}.")
    with resources.files(__name__).joinpath(_FILES[name]).open("r") as fh:
        return pd.read_csv(fh)
