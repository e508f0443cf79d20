"""Bayesian fits against lme4's REML fits of the shared cases (tests/data/reference/lme4_reml.json).

Tolerances are statistical: distances are measured in posterior sds, and the
reference values are lme4 1.1-31's. Each assertion names the R expression.
"""

import numpy as np
import pytest
from conftest import bayes_fit, case, case_names

from bayeslmm import naming
from conftest import draws


@pytest.mark.parametrize("name", case_names())
def test_fixed_effects_within_half_posterior_sd(name):
    fit = bayes_fit(name)
    ref = case(name)["fixef"]  # fixef(fm)
    fx = fit.fixef()
    assert set(fx.index) == set(ref)
    for term, value in ref.items():
        est, sd = fx.loc[term, "Estimate"], fx.loc[term, "Est.Error"]
        assert abs(est - value) < 0.5 * sd, (name, term, est, value, sd)


@pytest.mark.parametrize("name", case_names())
def test_varcorr_rows_match_lme4_shape(name):
    fit = bayes_fit(name)
    ref = case(name)["varcorr"]  # as.data.frame(VarCorr(fm))
    vc = fit.VarCorr()
    assert list(vc.columns[:5]) == ["grp", "var1", "var2", "vcov", "sdcor"]
    ours = {(r.grp, "" if r.var1 != r.var1 else r.var1, "" if r.var2 != r.var2 else r.var2) for r in vc.itertuples()}
    theirs = {(r["grp"], r["var1"], r["var2"]) for r in ref}
    assert ours == theirs


@pytest.mark.parametrize("name", case_names())
def test_variance_components_near_lme4_in_posterior_sds(name):
    """Posterior medians of every sd and sigma within 2 posterior sds of lme4's REML estimate.

    Small-sample variance components are where Bayes and REML legitimately
    differ (Dyestuff has 6 batches, Penicillin 6 samples), so this is a
    sanity bound; the tight checks are the sleepstudy and Clark tests below.
    """
    fit = bayes_fit(name)
    for r in case(name)["varcorr"]:  # as.data.frame(VarCorr(fm))$sdcor
        if r["var2"]:
            continue
        d = _sd_draws(fit, r["grp"], r["var1"])
        assert abs(np.median(d) - r["sdcor"]) < 2 * d.std(), (name, r, np.median(d), d.std())


def _sd_draws(fit, grp, var1):
    if grp == "Residual":
        return draws(fit.idata, naming.SIGMA).reshape(-1)
    block = next(b for b in fit.design.blocks if b.label == grp)
    return draws(fit.idata, naming.sd(grp)).reshape(-1, block.q)[:, block.terms.index(var1)]


def test_sleepstudy_sds_within_15_percent():
    fit = bayes_fit("sleep_slopes")
    ref = case("sleep_slopes")["varcorr"]  # as.data.frame(VarCorr(fm))
    for r in ref:
        if r["var2"]:
            continue
        med = np.median(_sd_draws(fit, r["grp"], r["var1"]))
        assert abs(med - r["sdcor"]) / r["sdcor"] < 0.15, (r, med)
    vc = fit.VarCorr()
    cor = vc[vc["var2"].notna()]
    assert len(cor) == 1 and (cor["var1"].iloc[0], cor["var2"].iloc[0]) == ("(Intercept)", "Days")
    assert -1 < cor["sdcor"].iloc[0] < 1


def test_clark_simulation_recovers_tau_and_sigma():
    """Seed notes: lme4 gives tau = 0.518 and sigma = 1.002 on Clark's simulation."""
    fit = bayes_fit("clark_sim")
    tau = _sd_draws(fit, "clus", "(Intercept)")  # attr(VarCorr(fm)$clus, "stddev")
    sigma = _sd_draws(fit, "Residual", "")  # sigma(fm)
    assert abs(np.median(tau) - 0.518) < 0.5 * tau.std()
    assert abs(np.median(sigma) - 1.002) < 0.5 * sigma.std()


def test_sleepstudy_ranef_correlates_with_conditional_modes():
    fit = bayes_fit("sleep_slopes")
    ours = fit.ranef(long=True).set_index(["grpvar", "term", "grp"])["condval"]
    ref = case("sleep_slopes")["ranef"]  # as.data.frame(ranef(fm, condVar=TRUE))$condval
    for term in ("(Intercept)", "Days"):
        theirs = {r["grp"]: r["condval"] for r in ref if r["term"] == term}
        a = np.array([ours[("Subject", term, g)] for g in theirs])
        b = np.array(list(theirs.values()))
        assert np.corrcoef(a, b)[0, 1] > 0.99


@pytest.mark.parametrize("name", case_names())
def test_ranef_levels_and_terms_match_lme4(name):
    fit = bayes_fit(name)
    ref = case(name)["ranef"]  # as.data.frame(ranef(fm, condVar=TRUE))
    ours = fit.ranef(long=True)
    assert {(r["grpvar"], r["term"], r["grp"]) for r in ref} == set(zip(ours.grpvar, ours.term, ours.grp))


def test_nobs_and_ngrps():
    fit = bayes_fit("pastes")
    assert fit.nobs() == case("pastes")["nobs"]  # nobs(fm)
    assert fit.ngrps().to_dict() == {"cask:batch": 30, "batch": 10}  # ngrps(fm)
