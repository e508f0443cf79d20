"""simulate(): the generative model, the params format and its errors, and recovery by a fit."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import BayesLMMError, naming
from bayeslmm.errors import ParameterError
from conftest import draws

FORMULA = "Reaction ~ Days + (Days | Subject)"
# Close to lme4's REML fit of sleepstudy.
PARAMS = {
    "beta": {"(Intercept)": 250.0, "Days": 10.0},
    "sigma": 25.0,
    "Subject": {"sd": [24.0, 6.0], "cor": [[1.0, 0.1], [0.1, 1.0]]},
}


@pytest.fixture(scope="module")
def predictors():
    return bayeslmm.datasets.load("sleepstudy").drop(columns="Reaction")


def test_generative_model(predictors):
    out, eff = bayeslmm.simulate(FORMULA, predictors, PARAMS, seed=1, return_effects=True)
    assert "Reaction" not in predictors.columns  # data not modified
    assert list(out.columns) == list(predictors.columns) + ["Reaction"]
    assert out.index.equals(predictors.index)
    gamma = eff["Subject"]
    assert list(gamma.columns) == ["(Intercept)", "Days"] and len(gamma) == 18
    # y minus the known mean structure is the residual noise.
    g = gamma.loc[out["Subject"].astype(str)].to_numpy()
    mean = 250 + 10 * out["Days"] + g[:, 0] + g[:, 1] * out["Days"]
    noise = out["Reaction"] - mean
    n = len(noise)
    assert abs(noise.std(ddof=0) - 25) < 4 * 25 / np.sqrt(2 * n)
    again = bayeslmm.simulate(FORMULA, predictors, PARAMS, seed=1)
    pd.testing.assert_frame_equal(out, again)
    assert not out.equals(bayeslmm.simulate(FORMULA, predictors, PARAMS, seed=2))


def test_group_effects_have_the_requested_covariance():
    levels = 4000
    data = pd.DataFrame({"g": np.repeat(np.arange(levels), 2), "x": np.tile([0.0, 1.0], levels)})
    sd, rho = np.array([2.0, 0.5]), -0.4
    cov = np.array([[4.0, rho * 1.0], [rho * 1.0, 0.25]])
    params = {"beta": [1.0, 0.0], "sigma": 1.0, "g": {"sd": sd, "cor": [[1, rho], [rho, 1]]}}
    _, eff = bayeslmm.simulate("y ~ x + (x | g)", data, params, seed=3, return_effects=True)
    gam = eff["g"].to_numpy()
    emp = gam.T @ gam / levels
    se = np.sqrt((cov**2 + np.outer(np.diag(cov), np.diag(cov))) / levels)
    assert np.all(np.abs(emp - cov) < 4 * se)
    # The same covariance given as a matrix, or as {"cov": ...}, gives the same draws.
    a = bayeslmm.simulate("y ~ x + (x | g)", data, params, seed=3)
    b = bayeslmm.simulate("y ~ x + (x | g)", data, dict(params, g=cov), seed=3)
    c = bayeslmm.simulate("y ~ x + (x | g)", data, dict(params, g={"cov": cov}), seed=3)
    np.testing.assert_allclose(a["y"], b["y"], rtol=1e-10)
    np.testing.assert_allclose(a["y"], c["y"], rtol=1e-10)


def test_block_labels_and_scalar_sd(predictors):
    params = {"beta": [250.0, 10.0], "sigma": 25.0, "Subject": 24.0, "Subject.1": 6.0}
    out, eff = bayeslmm.simulate("Reaction ~ Days + (Days || Subject)", predictors, params, seed=4, return_effects=True)
    assert sorted(eff) == ["Subject", "Subject.1"]
    assert list(eff["Subject.1"].columns) == ["Days"]
    assert out["Reaction"].notna().all()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sigma": None}, r"missing \['sigma'\]"),
        ({"Subjekt": 3.0}, r"unknown key\(s\) \['Subjekt'\]"),
        ({"beta": {"(Intercept)": 250.0}}, r"missing \['Days'\]"),
        ({"beta": {"(Intercept)": 250.0, "Days": 10.0, "days": 1.0}}, r"unknown \['days'\]"),
        ({"beta": [1.0, 2.0, 3.0]}, "3 value"),
        ({"sigma": -1.0}, "sigma"),
        ({"Subject": {"sd": [24.0]}}, r"params\['Subject'\]\['sd'\].*2"),
        ({"Subject": {"sd": [24.0, 6.0], "cor": [[1, 2], [2, 1]]}}, "positive semi-definite"),
        ({"Subject": {"sd": [24.0, 6.0], "cor": [[2, 0], [0, 2]]}}, "diagonal"),
        ({"Subject": {"sd": [24.0, 6.0], "cov": np.eye(2)}}, "keys"),
        ({"Subject": 5.0}, "2x2"),
    ],
)
def test_bad_params_name_the_culprit(predictors, change, message):
    params = {k: v for k, v in {**PARAMS, **change}.items() if v is not None}
    with pytest.raises(ParameterError, match=message):
        bayeslmm.simulate(FORMULA, predictors, params, seed=1)
    assert issubclass(ParameterError, BayesLMMError)


def test_bad_data(predictors):
    with pytest.raises(BayesLMMError, match="Days"):
        bayeslmm.simulate(FORMULA, predictors.drop(columns="Days"), PARAMS)
    holes = predictors.copy()
    holes.loc[3, "Days"] = np.nan
    with pytest.raises(BayesLMMError, match="missing values"):
        bayeslmm.simulate(FORMULA, holes, PARAMS)


def test_parameters_are_recovered_by_a_fit(predictors):
    data = bayeslmm.simulate(FORMULA, predictors, PARAMS, seed=20261122)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bayeslmm.lmer(FORMULA, data, draws=500, tune=500, chains=2, random_seed=20261122, progressbar=False)
    post = fit.idata.posterior
    S = post.sizes["chain"] * post.sizes["draw"]
    beta = draws(fit.idata, naming.FIXED).reshape(S, 2)
    sd = draws(fit.idata, naming.sd("Subject")).reshape(S, 2)
    recovered = {
        "(Intercept)": (beta[:, 0], 250.0),
        "Days": (beta[:, 1], 10.0),
        "sigma": (draws(fit.idata, naming.SIGMA).reshape(S), 25.0),
        "sd (Intercept)": (sd[:, 0], 24.0),
        "sd Days": (sd[:, 1], 6.0),
        "cor": (draws(fit.idata, naming.cor("Subject")).reshape(S, 2, 2)[:, 0, 1], 0.1),
    }
    for name, (x, truth) in recovered.items():
        lo, hi = np.quantile(x, [0.025, 0.975])
        assert lo < truth < hi, (name, lo, hi)


def test_help_documents_the_params_format():
    doc = bayeslmm.simulate.__doc__  # what help(bayeslmm.simulate) shows
    for piece in ['"beta"', '"sigma"', '"sd"', '"cor"', '{"cov": q×q}', '"Subject.1"', "single sd"]:
        assert piece in doc, piece
