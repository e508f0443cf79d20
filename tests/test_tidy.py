"""broom.mixed-style tidy(), glance() and augment()."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayeslmm import BayesLMMError, naming
from conftest import draws

BROOM = ["effect", "group", "term", "estimate", "std.error", "conf.low", "conf.high"]


def test_default_tidy_is_fixed_and_ran_pars_with_broom_names(sleep_fit):
    t = sleep_fit.tidy()
    assert list(t.columns) == BROOM
    assert list(t["effect"]) == ["fixed"] * 2 + ["ran_pars"] * 4
    assert list(t["term"]) == ["(Intercept)", "Days", "sd__(Intercept)", "cor__(Intercept).Days", "sd__Days", "sd__Observation"]
    assert t["group"].iloc[:2].isna().all()
    assert list(t["group"].iloc[2:]) == ["Subject", "Subject", "Subject", "Residual"]
    fx = sleep_fit.fixef()
    np.testing.assert_allclose(t["estimate"].iloc[:2], fx["Estimate"], rtol=1e-12)
    np.testing.assert_allclose(t["std.error"].iloc[:2], fx["Est.Error"], rtol=1e-12)
    np.testing.assert_allclose(t["conf.low"].iloc[:2], fx["l-95% CI"], rtol=1e-12)
    vc = sleep_fit.VarCorr()
    np.testing.assert_allclose(
        t.set_index("term").loc[["sd__(Intercept)", "sd__Days", "sd__Observation"], "estimate"],
        vc.loc[vc["var2"].isna(), "sdcor"],
        rtol=1e-10,
    )
    cor = draws(sleep_fit.idata, naming.cor("Subject"))[..., 0, 1].reshape(-1)
    row = t.set_index("term").loc["cor__(Intercept).Days"]
    assert row["estimate"] == pytest.approx(cor.mean(), rel=1e-10)
    assert row["conf.high"] == pytest.approx(np.quantile(cor, 0.975), rel=1e-10)


def test_ran_vals_and_ran_coefs(sleep_fit):
    t = sleep_fit.tidy(["ran_vals", "ran_coefs"])
    assert list(t.columns) == ["effect", "group", "level", "term", "estimate", "std.error", "conf.low", "conf.high"]
    vals = t[t["effect"] == "ran_vals"]
    re = sleep_fit.ranef(long=True)
    assert list(vals["level"]) == list(re["grp"]) and list(vals["term"]) == list(re["term"])
    np.testing.assert_allclose(vals["estimate"], re["condval"], rtol=1e-10)
    np.testing.assert_allclose(vals["std.error"], re["condsd"], rtol=1e-10)
    coefs = t[t["effect"] == "ran_coefs"].set_index(["level", "term"])
    co = sleep_fit.coef(long=True).set_index(["grp", "term"])
    np.testing.assert_allclose(coefs["estimate"], co.loc[coefs.index, "Estimate"], rtol=1e-10)
    np.testing.assert_allclose(coefs["std.error"], co.loc[coefs.index, "Est.Error"], rtol=1e-10)
    assert (t["group"] == "Subject").all()


def test_level_and_bad_arguments(sleep_fit):
    wide = sleep_fit.tidy("fixed", level=0.99)
    narrow = sleep_fit.tidy("fixed", level=0.5)
    assert ((wide["conf.high"] - wide["conf.low"]) > (narrow["conf.high"] - narrow["conf.low"])).all()
    with pytest.raises(BayesLMMError, match="ran_par"):
        sleep_fit.tidy("ran_par")
    with pytest.raises(BayesLMMError, match="level"):
        sleep_fit.tidy(level=95)


def test_glance(sleep_fit):
    g = sleep_fit.glance()
    assert list(g.columns) == [
        "nobs", "sigma", "elpd_loo", "p_loo", "looic", "waic", "r2_marginal", "r2_conditional",
        "divergences", "draws", "chains",
    ]  # fmt: skip
    row = g.iloc[0]
    assert len(g) == 1 and row["nobs"] == 180
    assert row["sigma"] == pytest.approx(sleep_fit.sigma)
    assert row["looic"] == pytest.approx(-2 * row["elpd_loo"])
    assert row["elpd_loo"] == pytest.approx(sleep_fit.loo().elpd)
    assert row["waic"] == pytest.approx(sleep_fit.waic().waic)
    assert row["r2_conditional"] == pytest.approx(sleep_fit.r2().loc["conditional", "Estimate"])
    assert (row["draws"], row["chains"]) == (sleep_fit.diagnostics.draws, sleep_fit.diagnostics.chains)


def test_augment(sleep_fit):
    a = sleep_fit.augment()
    assert list(a.columns[-4:]) == [".fitted", ".resid", ".lower", ".upper"]
    assert a.index.equals(sleep_fit.design.frame.index)
    np.testing.assert_allclose(a[".fitted"], sleep_fit.fitted(), rtol=1e-10)
    np.testing.assert_allclose(a[".resid"], sleep_fit.resid(), rtol=1e-10, atol=1e-9)
    assert ((a[".lower"] < a[".fitted"]) & (a[".fitted"] < a[".upper"])).all()
    nd = pd.DataFrame({"Days": [1, 2], "Subject": [308, 309]}, index=[10, 20])
    b = sleep_fit.augment(nd)
    assert ".resid" not in b.columns and list(b.index) == [10, 20]
    np.testing.assert_allclose(b[".fitted"], sleep_fit.predict(nd)["Estimate"])
