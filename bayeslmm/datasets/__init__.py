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
    "cbpp": "cbpp.csv",
    "grouseticks": "grouseticks.csv",
}

#: Columns read as factors (text), as R holds them.
_FACTORS = {
    "cbpp": {"herd": str, "period": str},
    "grouseticks": {"INDEX": str, "BROOD": str, "YEAR": str, "LOCATION": str},
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
        * ``"pastes"``: paste strength, casks nested in 10 batches;
        * ``"cbpp"``: contagious bovine pleuropneumonia, ``incidence`` new cases out of ``size``
          animals per herd (15) and period (4) (Lesnoff et al. 2004);
        * ``"grouseticks"``: ticks counted on red grouse chicks, by ``BROOD`` (118) within
          ``LOCATION`` (63), ``YEAR`` and ``HEIGHT`` (Elston et al. 2001).

        Factor columns (``herd``, ``period``, ``BROOD``, ``YEAR``, ``LOCATION``, ``INDEX``) are read as text.

    Returns
    -------
    pandas.DataFrame
    """
    if name not in _FILES:
        raise BayesLMMError(f"Unknown data set {name!r}; available: {available()}.")
    with resources.files(__name__).joinpath(_FILES[name]).open("r") as fh:
        return pd.read_csv(fh, dtype=_FACTORS.get(name))
