"""The REML/ML fit object: lme4's extractors, summary, comparison with a Bayesian fit, REML inits."""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import case, case_data, reference_json

import bayeslmm
from bayeslmm.stages import model_design
from bayeslmm.compare import compare
from bayeslmm.inits import reml_initvals
from bayeslmm.model import build_model
from bayeslmm.priors import make_priors
from bayeslmm.reml import fit_reml


@pytest.fixture(scope="module")
def reml():
    return bayeslmm.lmer(case("sleep_slopes")["formula"], case_data("sleep_slopes"), method="REML")


def test_extractors_have_lme4_shapes(reml):
    ref = case("sleep_slopes")
    fx = reml.fixef(ddf="lme4")  # summary(fm) of an lmerMod: no df, no p-values
    assert list(fx.columns) == ["Estimate", "Std. Error", "l-95% CI", "u-95% CI", "t value"]
    # lmerTest's coef(summary(fm)) adds the Satterthwaite df and p-values by default
    assert list(reml.fixef().columns) == ["Estimate", "Std. Error", "l-95% CI", "u-95% CI", "df", "t value", "Pr(>|t|)"]
    np.testing.assert_allclose(fx["Estimate"], [ref["fixef"]["(Intercept)"], ref["fixef"]["Days"]], rtol=1e-4)  # fixef(fm)
    np.testing.assert_allclose(fx["t value"], fx["Estimate"] / fx["Std. Error"])
    z = 1.959963984540054  # qnorm(0.975): confint(fm, parm = "beta_", method = "Wald")
    np.testing.assert_allclose(fx["l-95% CI"], fx["Estimate"] - z * fx["Std. Error"], rtol=1e-12)
    np.testing.assert_allclose(fx["u-95% CI"], fx["Estimate"] + z * fx["Std. Error"], rtol=1e-12)
    vc = reml.VarCorr()  # as.data.frame(VarCorr(fm))
    assert list(vc.columns) == ["grp", "var1", "var2", "vcov", "sdcor"]
    assert vc.shape[0] == 4
    re = reml.ranef()["Subject"]  # ranef(fm)$Subject
    assert re.shape == (18, 2)
    long = reml.ranef(long=True)  # as.data.frame(ranef(fm, condVar = TRUE))
    assert list(long.columns) == ["grpvar", "term", "grp", "condval", "condsd", "l-95% CI", "u-95% CI"]
    np.testing.assert_allclose(long["u-95% CI"] - long["condval"], z * long["condsd"], rtol=1e-12)  # dotplot(ranef(fm))
    co = reml.coef()["Subject"]  # coef(fm)$Subject
    np.testing.assert_allclose(co.to_numpy(), re.to_numpy() + fx["Estimate"].to_numpy())
    np.testing.assert_allclose(reml.fitted() + reml.resid(), case_data("sleep_slopes")["Reaction"])


def test_criteria(reml):
    ref = case("sleep_slopes")
    assert reml.REMLcrit() == pytest.approx(ref["reml_criterion"], abs=1e-3)  # REMLcrit(fm)
    assert reml.logLik() == pytest.approx(-ref["reml_criterion"] / 2, abs=1e-3)  # logLik(fm)
    assert reml.AIC() == pytest.approx(ref["reml_criterion"] + 2 * 6, abs=1e-3)  # AIC(fm): 6 parameters
    assert reml.BIC() == pytest.approx(ref["reml_criterion"] + np.log(180) * 6, abs=1e-3)  # BIC(fm)
    assert reml.isSingular() is False  # isSingular(fm)
    with pytest.raises(bayeslmm.BayesLMMError, match="ML fits"):
        reml.deviance()
    ml = bayeslmm.lmer(ref["formula"], case_data("sleep_slopes"), method="ML")
    assert ml.logLik() == pytest.approx(ref["ml_loglik"], abs=1e-3)  # logLik(update(fm, REML = FALSE))
    assert ml.deviance() == pytest.approx(-2 * ref["ml_loglik"], abs=2e-3)  # deviance(fm_ml)


def test_summary_prints_like_lme4(reml):
    text = str(reml.summary())
    for piece in ["Linear mixed model fit by REML", "REML criterion at convergence: 1743.6", "Scaled residuals:",
                  "Min", "Median", "Random effects:", "Std.Dev.", "Corr", "Residual",
                  "Number of obs: 180, groups:  Subject, 18", "Fixed effects:", "Std. Error", "t value"]:
        assert piece in text, piece
    ml = bayeslmm.lmer("Reaction ~ Days + (Days | Subject)", case_data("sleep_slopes"), method="ML")
    assert "fit by maximum likelihood" in str(ml.summary()) and "deviance" in str(ml.summary())


def test_singular_fit_warns_and_is_flagged():
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"g": np.repeat(np.arange(10), 8), "x": rng.normal(size=80)})
    data["y"] = 1 + data.x + rng.normal(size=80)  # no group variance at all
    with pytest.warns(bayeslmm.ConvergenceWarning, match="singular"):
        fit = bayeslmm.lmer("y ~ x + (x | g)", data, method="REML")
    assert fit.isSingular()
    assert "singular" in str(fit.summary())


def test_bayes_fit_reml_and_compare(sleep_fit):
    reml = sleep_fit.reml()
    assert reml is sleep_fit.reml()  # computed once
    assert reml.REMLcrit() == pytest.approx(case("sleep_slopes")["reml_criterion"], abs=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas: no partial-key column assignment on a MultiIndex frame
        cmp = compare(sleep_fit, reml)
    t = cmp.table
    assert list(t.index) == ["(Intercept)", "Days", "sd((Intercept)|Subject)", "sd(Days|Subject)",
                             "cor((Intercept),Days|Subject)", "sigma"]
    assert {("NUTS", "Estimate"), ("NUTS", "Est.Error"), ("NUTS", "l-95% CI"), ("REML", "Std. Error")} <= set(t.columns)
    inside = t[("REML in NUTS CI", "")]
    est = t[("REML", "Estimate")]
    assert (inside == ((est >= t[("NUTS", "l-95% CI")]) & (est <= t[("NUTS", "u-95% CI")]))).all()
    assert inside.all()  # on sleepstudy every REML estimate lies inside the 95% credible interval
    fig = cmp.plot()
    assert len(fig.axes) == 6
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "NUTS: estimate, 95% credible interval",
        "REML: estimate, 95% confidence (Wald for fixed effects, profile for variance components) interval",
    ]
    assert "95% intervals" in fig.get_suptitle()
    for ax in fig.axes:
        assert len(ax.lines) == 2  # one dot per fit
        assert len(ax.collections) == 2  # the credible interval and the REML interval (Wald or profile)
    # the REML intervals of the variance components are lme4's profile intervals: confint(fm, oldNames = FALSE)
    ref = {r["term"]: r for r in reference_json("lme4_inference")["cases"]["sleep_slopes"]["confint_profile"]}
    rows = {"sd((Intercept)|Subject)": "sd_(Intercept)|Subject", "sd(Days|Subject)": "sd_Days|Subject",
            "cor((Intercept),Days|Subject)": "cor_Days.(Intercept)|Subject", "sigma": "sigma"}
    for ours, theirs in rows.items():
        got = t.loc[ours, [("REML", "l-95% CI"), ("REML", "u-95% CI")]].to_numpy(dtype=float)
        np.testing.assert_allclose(got, [ref[theirs]["2.5 %"], ref[theirs]["97.5 %"]], rtol=1e-3, atol=1e-3)
        assert t.loc[ours, ("REML", "interval")] == "profile"
    assert (t.loc[t["kind"] == "fixed", ("REML", "interval")] == "Wald").all()
    assert (t[("NUTS", "interval")] == "credible").all()
    none = compare(sleep_fit, reml, reml_interval=None).table
    assert none.loc[list(rows), ("REML", "l-95% CI")].isna().all()  # lme4 has no Wald interval for an sd
    with pytest.raises(bayeslmm.BayesLMMError, match="reml_interval"):
        compare(sleep_fit, reml, reml_interval="bayes")
    boot = compare(sleep_fit, reml, reml_interval="boot", nsim=20, seed=1).table  # confint(fm, method = "boot")
    assert (boot.loc[list(rows), ("REML", "interval")] == "boot").all()
    want = reml.confint(parm="theta_", method="boot", nsim=20, seed=1, progressbar=False)
    np.testing.assert_allclose(boot.loc["sigma", [("REML", "l-95% CI"), ("REML", "u-95% CI")]].to_numpy(dtype=float),
                               want.loc["sigma"].to_numpy())  # the same replicates for the same seed
    fx = t[t["kind"] == "fixed"]
    gap = ((fx[("NUTS", "Estimate")] - fx[("REML", "Estimate")]).abs() / fx[("NUTS", "Est.Error")])
    assert (gap < 0.5).all()


def test_compare_refuses_different_formulas(sleep_fit):
    other = bayeslmm.lmer("Reaction ~ Days + (1 | Subject)", case_data("sleep_slopes"), method="REML")
    with pytest.raises(bayeslmm.BayesLMMError, match="same formula"):
        compare(sleep_fit, other)
    with pytest.raises(bayeslmm.BayesLMMError, match="at least two"):
        compare(sleep_fit)


def test_reml_initvals_reproduce_the_reml_estimates():
    d = model_design("Reaction ~ Days + (Days | Subject)", case_data("sleep_slopes"))
    m = build_model(d, make_priors(d))
    r = fit_reml(d)
    for name, value in reml_initvals(m, d, r).items():
        m.set_initval(m[name], value)
    outs = m.replace_rvs_by_values([m["beta"], m["sd_Subject"], m["cor_Subject"], m["r_Subject"], m["sigma"]])
    beta, sd, cor, re, sigma = m.compile_fn(outs, inputs=m.value_vars, on_unused_input="ignore")(m.initial_point())
    np.testing.assert_allclose(beta, r.beta, rtol=1e-8)
    np.testing.assert_allclose(sd, np.sqrt(np.diag(r.block_cov[0])), rtol=1e-8)
    assert cor[0, 1] == pytest.approx(r.block_cov[0][0, 1] / np.prod(sd), rel=1e-6)
    np.testing.assert_allclose(re, r.ranef[0], atol=1e-8)
    assert sigma == pytest.approx(r.sigma)


def test_reml_predict_matches_lme4_semantics(reml):
    np.testing.assert_allclose(reml.predict()["Estimate"], reml.fitted())  # predict(fm) == fitted(fm)
    new = pd.DataFrame({"Days": [0, 5], "Subject": [308, 999]})
    beta = reml.fixef()["Estimate"]
    pop = reml.predict(new, re_form="~0")  # predict(fm, newdata, re.form = NA)
    np.testing.assert_allclose(pop["Estimate"], beta["(Intercept)"] + beta["Days"] * new.Days)
    # the fixed-effect-part standard error sqrt(x' vcov(fm) x), never 0
    X = np.column_stack([np.ones(2), new.Days])
    np.testing.assert_allclose(pop["Std. Error"], np.sqrt(np.einsum("ij,jk,ik->i", X, reml.vcov().to_numpy(), X)))
    assert (pop["Std. Error"] > 0).all() and (pop["u-95% CI"] > pop["l-95% CI"]).all()
    cond = reml.predict(new, new_levels="population")["Estimate"]  # allow.new.levels = TRUE: unseen subject 999 gets the population line
    co = reml.coef()["Subject"].loc["308"]
    assert cond.iloc[0] == pytest.approx(co["(Intercept)"])
    assert cond.iloc[1] == pytest.approx(pop["Estimate"].iloc[1])
    with pytest.raises(bayeslmm.PredictionError, match="999"):
        reml.predict(new)  # lme4's default allow.new.levels = FALSE refuses it
    with pytest.raises(bayeslmm.PredictionError, match="NUTS"):
        reml.predict(new, new_levels="sample")
