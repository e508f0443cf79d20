"""Simulation-based calibration of glmer's NUTS fits (slow): a Bernoulli (1 + x | g) and a Poisson (1 | g) model.

Each simulation draws the parameters from the priors the fit uses, simulates a response on a fixed
design, fits it, and ranks the true value among thinned posterior draws; the ranks of a calibrated
fit are uniform (Talts et al. 2018), tested by :func:`bayeslmm.check.rank_uniformity` with a
Bonferroni-corrected level.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm.check import rank_uniformity

N01 = {"dist": "Normal", "mu": 0, "sigma": 1}
HN1 = {"dist": "HalfNormal", "sigma": 1}
ALPHA = 0.001
THIN_TO, BINS = 99, 10


def _ranks(formula: str, data: pd.DataFrame, family: str, priors: dict, truth: dict, seed: int) -> dict[str, int]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bayeslmm.glmer(formula, data, family, priors=priors, intercept_prior="x0", draws=300, tune=300,
                             chains=2, random_seed=seed, progressbar=False, cores=1)
    p = fit.params
    draws = {"(Intercept)": p.beta[:, 0], "sd_g": p.sd[0][:, 0]}
    if p.beta.shape[1] > 1:
        draws["x"] = p.beta[:, 1]
        draws["sd_x"] = p.sd[0][:, 1]
        draws["cor"] = p.cor[0][:, 0, 1]
    keep = np.linspace(0, p.n_draws - 1, THIN_TO).astype(int)
    return {k: int(np.sum(v[keep] < truth[k])) for k, v in draws.items()}


def _check(ranks: list[dict[str, int]]) -> None:
    table = rank_uniformity(pd.DataFrame(ranks), THIN_TO, BINS)
    assert (table["p_value"] > ALPHA / len(table)).all(), table


@pytest.mark.slow
def test_sbc_bernoulli_random_slopes():
    rng = np.random.default_rng(20261129)
    n_g, per = 12, 10
    g = np.repeat(np.arange(n_g), per)
    x = rng.normal(size=g.size)
    ranks = []
    for sim in range(60):
        b0, b1 = rng.normal(size=2)
        sd = np.abs(rng.normal(size=2))
        r = 2 * rng.beta(2.0, 2.0) - 1  # LKJ(eta = 2) for a 2 x 2 correlation
        L = np.linalg.cholesky(np.array([[1.0, r], [r, 1.0]]))
        u = (rng.normal(size=(n_g, 2)) @ L.T) * sd
        eta = b0 + u[g, 0] + (b1 + u[g, 1]) * x
        y = rng.binomial(1, 1 / (1 + np.exp(-eta)))
        if y.min() == y.max():
            y[0] = 1 - y[0]  # a constant response has no information: keep the design fittable
        data = pd.DataFrame({"y": y, "x": x, "g": [f"g{i}" for i in g]})
        priors = {"(Intercept)": N01, "x": N01, "g": HN1, "cor|g": {"dist": "LKJ", "eta": 2.0}}
        truth = {"(Intercept)": b0, "x": b1, "sd_g": sd[0], "sd_x": sd[1], "cor": r}
        ranks.append(_ranks("y ~ x + (1 + x | g)", data, "bernoulli", priors, truth, sim))
    _check(ranks)


@pytest.mark.slow
def test_sbc_poisson_random_intercept():
    rng = np.random.default_rng(20261130)
    n_g, per = 10, 6
    g = np.repeat(np.arange(n_g), per)
    ranks = []
    for sim in range(60):
        b0 = rng.normal()
        sd = abs(rng.normal())
        y = rng.poisson(np.exp(b0 + sd * rng.normal(size=n_g)[g]))
        if y.max() == 0:
            y[0] = 1
        data = pd.DataFrame({"y": y, "g": [f"g{i}" for i in g]})
        priors = {"(Intercept)": N01, "g": HN1}
        ranks.append(_ranks("y ~ 1 + (1 | g)", data, "poisson", priors, {"(Intercept)": b0, "sd_g": sd}, sim))
    _check(ranks)
