"""Tables of a Bayesian fit: shapes, lme4 vocabulary, per-draw coef, summary text, diagnostics."""

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import naming
from bayeslmm.errors import ConvergenceWarning, DataWarning
from conftest import draws


def test_fixef_columns_follow_brms(sleep_fit):
    fx = sleep_fit.fixef()
    assert list(fx.columns) == ["Estimate", "Est.Error", "l-95% CI", "u-95% CI", "Rhat", "Bulk_ESS", "Tail_ESS"]
    assert list(fx.index) == ["(Intercept)", "Days"]
    beta = draws(sleep_fit.idata, naming.FIXED).reshape(-1, 2)
    np.testing.assert_allclose(fx["Estimate"], beta.mean(0))
    np.testing.assert_allclose(fx["l-95% CI"], np.quantile(beta, 0.025, axis=0))
    assert (fx["Rhat"] < 1.05).all() and (fx["Bulk_ESS"] > 100).all()


def test_interval_level_is_settable(sleep_fit):
    fx = sleep_fit.fixef(level=0.9)
    assert "l-90% CI" in fx.columns
    assert (fx["u-90% CI"] < sleep_fit.fixef()["u-95% CI"]).all()


def test_ranef_wide_and_long(sleep_fit):
    re = sleep_fit.ranef()
    assert list(re) == ["Subject"]
    assert re["Subject"].shape == (18, 2) and list(re["Subject"].columns) == ["(Intercept)", "Days"]
    long = sleep_fit.ranef(long=True)
    assert list(long.columns[:5]) == ["grpvar", "term", "grp", "condval", "condsd"]
    assert len(long) == 36
    r = draws(sleep_fit.idata, naming.ranef("Subject")).reshape(-1, 18, 2)
    np.testing.assert_allclose(re["Subject"].to_numpy(), r.mean(0))


def test_coef_is_summarised_per_draw(sleep_fit):
    co = sleep_fit.coef()["Subject"]
    fx = sleep_fit.fixef()["Estimate"]
    re = sleep_fit.ranef()["Subject"]
    np.testing.assert_allclose(co.to_numpy(), re.to_numpy() + fx.to_numpy(), rtol=1e-10)
    long = sleep_fit.coef(long=True)
    beta = draws(sleep_fit.idata, naming.FIXED).reshape(-1, 2)
    r = draws(sleep_fit.idata, naming.ranef("Subject")).reshape(-1, 18, 2)
    per_draw = beta[:, None, :] + r
    row = long[(long.grp == "309") & (long.term == "Days")].iloc[0]
    assert row["Est.Error"] == pytest.approx(per_draw[:, 1, 1].std(ddof=1))
    # the sd of a sum is not the sum of sds: per-draw summary differs from adding the parts
    assert row["Est.Error"] != pytest.approx(
        sleep_fit.fixef().loc["Days", "Est.Error"] + sleep_fit.ranef(long=True).set_index(["term", "grp"]).loc[("Days", "309"), "condsd"]
    )


def test_varcorr_shape(sleep_fit):
    vc = sleep_fit.VarCorr()
    assert list(vc["grp"]) == ["Subject", "Subject", "Subject", "Residual"]
    assert vc["var2"].isna().tolist() == [True, True, False, True]
    sd = draws(sleep_fit.idata, naming.sd("Subject")).reshape(-1, 2)
    assert vc["sdcor"].iloc[0] == pytest.approx(sd[:, 0].mean())
    assert vc["vcov"].iloc[0] == pytest.approx((sd[:, 0] ** 2).mean())
    assert {"l-95% CI", "u-95% CI", "Est.Error"} <= set(vc.columns)


def test_fitted_and_resid_are_row_aligned(sleep_fit):
    d = bayeslmm.datasets.load("sleepstudy")
    f, r = sleep_fit.fitted(), sleep_fit.resid()
    assert len(f) == len(d) and (f.index == d.index).all()
    np.testing.assert_allclose(f + r, d["Reaction"])
    # fitted is the posterior mean of X beta + Z gamma, row by row
    beta = draws(sleep_fit.idata, naming.FIXED).reshape(-1, 2)
    r_sub = draws(sleep_fit.idata, naming.ranef("Subject")).reshape(-1, 18, 2)
    i = 37
    b = sleep_fit.design.blocks[0]
    mu_i = beta @ sleep_fit.design.X[i] + r_sub[:, b.group_idx[i]] @ b.Z[i]
    assert f.iloc[i] == pytest.approx(mu_i.mean())


def test_summary_reads_like_lme4(sleep_fit):
    s = sleep_fit.summary()
    text = str(s)
    for piece in ["Formula: Reaction ~ Days + (Days | Subject)", "Random effects:", "Std.Dev.", "Corr",
                  "Residual", "Number of obs: 180, groups:  Subject, 18", "Fixed effects:", "(Intercept)",
                  "Divergences:", "max R-hat", "4 chains x 1000 draws"]:
        assert piece in text, piece
    html = s._repr_html_()
    assert "<table" in html and "Fixed effects" in html
    # brms prints Rhat with two decimals and ESS as whole numbers, not 0.99985 / 1876.0
    fixed_lines = text.split("Fixed effects:")[1].splitlines()[2:4]
    for line in fixed_lines:
        rhat, bulk, tail = line.split()[-3:]
        assert rhat in ("1.00", "1.01") and bulk.isdigit() and tail.isdigit(), line
    # the CLI cannot reach fit.priors, so the summary lists the priors itself
    assert "Priors:" in text and "HalfCauchy" in text and "see fit.priors" not in text


def test_print_and_html_of_the_fit(sleep_fit):
    text = str(sleep_fit)  # lme4's print(fm): title, formula, random-effect sds, fixed effects
    lines = text.splitlines()
    assert lines[0].startswith("Bayesian linear mixed model fit by NUTS")
    assert "Formula: Reaction ~ Days + (Days | Subject)" in text and "Std.Dev." in text and "Variance" not in text
    assert lines[-2].split() == ["(Intercept)", "Days"]
    np.testing.assert_allclose([float(v) for v in lines[-1].split()], sleep_fit.fixef()["Estimate"], atol=0.006)
    assert repr(sleep_fit) == text
    html = sleep_fit._repr_html_()
    assert html.count("<table") == 2 and "Random effects" in html and "(Intercept)" in html


def test_numbers_are_formatted_as_r_formats_a_column():
    from bayeslmm.summary import format_column

    assert format_column([612.09, 35.07, 654.94]) == ["612.09", "35.07", "654.94"]  # lme4's Variance column
    assert format_column([24.7404, 5.92213, 25.5918]) == ["24.740", "5.922", "25.592"]  # 4 digits of 5.922
    assert format_column([42.0, 5.25]) == ["42.00", "5.25"]  # format(c(42, 5.25), digits = 4)
    assert format_column([41.99999, 1.234]) == ["42.000", "1.234"]
    assert format_column([1.0, np.nan]) == ["1", ""]


def test_idata_and_model_exposed(sleep_fit):
    import arviz as az
    import pymc as pm

    assert isinstance(sleep_fit.model, pm.Model)
    summ = az.summary(sleep_fit.idata, var_names=["sigma"], round_to="none")
    assert summ.shape[0] == 1
    assert list(sleep_fit.idata.posterior["r_Subject"].coords["Subject__level"].values[:2]) == ["308", "309"]
    assert sleep_fit.nobs() == 180 and sleep_fit.ngrps()["Subject"] == 18


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(11)
    g = np.repeat(np.arange(8), 6)
    x = rng.normal(size=g.size)
    y = 1 + 0.5 * x + rng.normal(0, 0.7, 8)[g] + rng.normal(0, 1, g.size)
    return pd.DataFrame({"y": y, "x": x, "g": g})


def test_same_seed_same_draws(small):
    kw = dict(draws=60, tune=60, chains=2, random_seed=5, progressbar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = bayeslmm.lmer("y ~ x + (1|g)", small, **kw)
        b = bayeslmm.lmer("y ~ x + (1|g)", small, **kw)
        c = bayeslmm.lmer("y ~ x + (1|g)", small, **{**kw, "random_seed": 6})
    np.testing.assert_array_equal(a.idata.posterior["sigma"].values, b.idata.posterior["sigma"].values)
    assert not np.array_equal(a.idata.posterior["sigma"].values, c.idata.posterior["sigma"].values)


def test_low_ess_warns(small):
    with pytest.warns(ConvergenceWarning, match="effective sample size"):
        bayeslmm.lmer("y ~ x + (1|g)", small, draws=30, tune=30, chains=2, random_seed=1, progressbar=False)


def test_divergences_warn_with_advice():
    """diagnose() on a posterior with divergent draws: count, share and what to change."""
    import xarray as xr

    from bayeslmm.sampling import diagnose

    rng = np.random.default_rng(0)
    diverging = np.zeros((2, 50), dtype=bool)
    diverging[0, :3] = True
    idata = xr.DataTree(children={
        "posterior": xr.DataTree(xr.Dataset({"sigma": (("chain", "draw"), rng.normal(size=(2, 50)))})),
        "sample_stats": xr.DataTree(xr.Dataset({"diverging": (("chain", "draw"), diverging)})),
    })
    with pytest.warns(ConvergenceWarning, match=r"3 divergent transitions .*3\.0% .*target_accept=0\.90.*'noncentered'"):
        diag = diagnose(idata, ["sigma"], tune=50, target_accept=0.8)
    assert diag.divergences == 3


def test_missing_rows_warn_with_count_through_lmer(small):
    data = small.copy()
    data.loc[[0, 1], "x"] = np.nan
    with pytest.warns(DataWarning, match="Dropped 2 of 48"):
        fit = bayeslmm.lmer("y ~ x + (1|g)", data, draws=50, tune=50, chains=1, random_seed=1, progressbar=False)
    assert fit.nobs() == 46
    text = str(fit.summary())  # one chain: no R-hat, and the summary says why
    assert "max R-hat: not computed (one chain)" in text and "R-hat compares chains" in text
    assert "1 chain x 50 draws" in text
    assert list(fit.fitted().index) == list(data.index[2:])
    with pytest.raises(bayeslmm.DataError, match="2 row"):
        bayeslmm.lmer("y ~ x + (1|g)", data, na_action="raise")
