"""Shared fixtures: the outside references in tests/data and fitted models reused across modules."""

from __future__ import annotations

import json
import warnings
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
#: lme4's results and the data they came from, shipped with the tests (see tests/data/README.md).
REFERENCE_DIR = Path(__file__).resolve().parent / "data"
REFERENCE_FILE = REFERENCE_DIR / "reference" / "lme4_reml.json"


def reference_json(name: str) -> dict:
    """One of the reference files in ``tests/data/reference``; a missing file is an error, never a skip."""
    path = REFERENCE_DIR / "reference" / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"The reference file {path} is missing from the repository (see tests/data/README.md).")
    return json.loads(path.read_text())


def reference_data(relpath: str) -> pd.DataFrame:
    """A data set named by a reference file's ``data`` field (``"data/sleepstudy.csv"``)."""
    return pd.read_csv(REFERENCE_DIR / relpath)


@lru_cache(maxsize=1)
def reference() -> dict:
    """lme4 1.1-31 results for the shared cases (see the file's ``_about``)."""
    return reference_json("lme4_reml")


def case_names() -> list[str]:
    return list(reference()["cases"])


def case(name: str) -> dict:
    return reference()["cases"][name]


def case_data(name: str) -> pd.DataFrame:
    return reference_data(case(name)["data"])


_FITS: dict = {}


def bayes_fit(name: str, **kwargs):
    """A Bayesian fit of a shared case, computed once per test session."""
    import bayeslmm

    key = (name, tuple(sorted(kwargs.items())))
    if key not in _FITS:
        opts = dict(draws=1000, tune=1000, chains=4, random_seed=20261122, progressbar=False)
        opts.update(kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _FITS[key] = bayeslmm.lmer(case(name)["formula"], case_data(name), **opts)
    return _FITS[key]


@pytest.fixture(scope="session")
def sleep_fit():
    """``Reaction ~ Days + (Days | Subject)`` on sleepstudy, shared by many test modules."""
    return bayes_fit("sleep_slopes")


def draws(idata, name: str):
    """Posterior draws of a variable as an array ``(chain, draw, ...)``."""
    import numpy as np

    return np.asarray(idata.posterior[name].values, dtype=float)
