"""Shared fixtures: the outside references in ../shared and fitted models reused across modules."""

from __future__ import annotations

import json
import os
import warnings
from functools import lru_cache
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BAYESLMM_SHARED", REPO.parent / "shared"))
REFERENCE_FILE = SHARED / "reference" / "lme4_reml.json"


@lru_cache(maxsize=1)
def reference() -> dict:
    """lme4 1.1-31 results for the shared cases (see the file's ``_about``)."""
    if not REFERENCE_FILE.exists():
        raise FileNotFoundError(
            f"The lme4 reference file {REFERENCE_FILE} is missing; tests need ../shared beside the repo "
            "(or set BAYESLMM_SHARED)."
        )
    return json.loads(REFERENCE_FILE.read_text())


def case_names() -> list[str]:
    return list(reference()["cases"])


def case(name: str) -> dict:
    return reference()["cases"][name]


def case_data(name: str) -> pd.DataFrame:
    return pd.read_csv(SHARED / case(name)["data"])


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
