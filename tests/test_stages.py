"""``lmer`` is the composition of the stages of :mod:`bayeslmm.stages`: run by hand they give the same fit."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from bayeslmm import BayesLMMError, ConvergenceWarning, DataWarning, lmer, stages
from bayeslmm.compat import environment_namespaces
from bayeslmm.datasets import load
from bayeslmm.parameterization import plan_parameterization
from bayeslmm.priors import make_priors
from bayeslmm.reml_fit import fit_frequentist
from bayeslmm.results import fit_posterior

FORMULA = "Reaction ~ Days + (Days | Subject)"
SETTINGS = dict(draws=30, tune=30, chains=1, random_seed=11, target_accept=0.8, sampler="pymc", progressbar=False, cores=1)


@pytest.mark.parametrize("collapse", [None, False])
def test_stages_by_hand_give_lmers_draws(collapse):
    data = load("sleepstudy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit = lmer(FORMULA, data, collapse=collapse, **SETTINGS)
    convergence = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert convergence and {w.filename for w in convergence} == {__file__}  # one chain: R-hat is not checked; the user's line

    design = stages.model_design(FORMULA, data)
    settings = stages.sampler_settings(**SETTINGS)
    priors = make_priors(design)
    param = plan_parameterization(design, collapse)
    start = stages.start_values(design, param, "reml")
    factory = stages.model_factory(design, priors, param)
    idata = stages.sample(design, priors, param, factory, settings, start)
    by_hand = fit_posterior(design, priors, param, factory, settings, idata)

    assert by_hand.parameterization == fit.parameterization
    assert ("collapsed" in param.values()) == (collapse is None)
    for name, values in fit.idata["posterior"].data_vars.items():
        np.testing.assert_array_equal(by_hand.idata["posterior"][name].values, values.values)
    assert "log_likelihood" in by_hand.idata.children


def test_likelihood_route():
    data = load("sleepstudy")
    design = stages.model_design(FORMULA, data)
    assert stages.check_method("reml") == "REML"
    np.testing.assert_array_equal(fit_frequentist(design, "REML").fixef().to_numpy(), lmer(FORMULA, data, method="REML").fixef().to_numpy())


def test_data_warnings_name_the_users_line():
    data = load("sleepstudy").copy()
    data.loc[3, "Days"] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lmer(FORMULA, data, method="REML")
    dropped = [w for w in caught if issubclass(w.category, DataWarning)]
    assert len(dropped) == 1 and "Dropped 1 of 180" in str(dropped[0].message) and dropped[0].filename == __file__


def test_check_method_and_init():
    assert [stages.check_method(m) for m in ("NUTS", "mcmc", "Bayes", "ml")] == ["NUTS", "NUTS", "NUTS", "ML"]
    with pytest.raises(BayesLMMError, match="method must be"):
        stages.check_method("laplace")
    design = stages.model_design(FORMULA, load("sleepstudy"))
    with pytest.raises(BayesLMMError, match="init must be"):
        stages.start_values(design, {"Subject": "collapsed"}, "zero")
    assert stages.start_values(design, {"Subject": "collapsed"}, "prior") is None


def test_formula_environment_frames():
    def inner(frames_up):
        my_offset = 7.0  # noqa: F841 - looked up by the namespace
        return stages.formula_environment("caller", frames_up)

    my_offset = 100.0  # noqa: F841 - looked up by the namespace
    for frames_up, expected in [(0, 7.0), (1, 100.0)]:
        env, closed = inner(frames_up)
        assert not closed and environment_namespaces(env)[0]["my_offset"] == expected
    assert stages.formula_environment("closed")[1] is True
    with pytest.raises(BayesLMMError, match="formula_env"):
        stages.formula_environment("global")


def test_check_is_reachable_from_the_package():
    """``bayeslmm.check.sbc`` (documented in the README) is found after ``import bayeslmm`` alone."""
    code = "import bayeslmm; print(bayeslmm.check.sbc.__module__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "bayeslmm.check"
