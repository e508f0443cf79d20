"""REML-side inference against lme4 1.1-31, lmerTest and pbkrtest (tests/data/reference/lme4_inference.json).

Every number in the reference file is checked here, each assertion naming
the R expression behind it (the file's ``_about`` gives the details):
profile and Wald intervals, Satterthwaite and Kenward-Roger coefficient
tables, type-III F tests, ``ranova``, ``anova(m0, m1)`` with and without the
ML refit, and the parametric-bootstrap percentile intervals.

Two things limit the agreement and are checked as such:

* The Satterthwaite and Kenward-Roger df depend on the estimate of θ, and
  lme4's optimiser stops a little short of the REML minimum on some cases
  (Penicillin: 8e-9 above ours). The methods are therefore checked twice:
  at lme4's own estimates (read from lme4_reml.json), where they reproduce
  lmerTest/pbkrtest to about 1e-7, and from our fit, at the issue's targets.
* Bootstrap intervals are Monte Carlo estimates (lme4's from 1000 replicates).
  They are compared on the probability scale: the share of our replicates
  below lme4's endpoint must be within 4 standard errors of the nominal
  tail probability p, the standard error sqrt(p(1-p)(1/N + 1/1000)) combining
  both simulations' binomial error (equivalent to the quantile's error divided
  by the replicate density there, and valid at a point mass such as an sd at 0).
  For the balanced cake split-plot the bootstrap distribution of the REML
  sds is known exactly (χ² mean squares); our replicates follow it, and
  lme4's interval for the group sd does not (see NOT_THE_BOOTSTRAP).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayeslmm
from bayeslmm.inference import coef_table
from bayeslmm.inference.params import VarLayout, tril_positions
from conftest import reference_data, reference_json

REF = reference_json("lme4_inference")
REML_REF = reference_json("lme4_reml")["cases"]
CASES = list(REF["cases"])
PAIRS = list(REF["anova"])
_CI = ("2.5 %", "97.5 %")


def _data(name: str) -> pd.DataFrame:
    if name == "cake":  # lme4::cake with temperature as an unordered factor (the reference's _about)
        d = reference_data("data/cake.csv")
        d["temperature"] = d["temperature"].astype(str)
        return d
    return reference_data(REML_REF[name]["data"])


def _fit(formula: str, data: pd.DataFrame, method: str = "REML"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bayeslmm.lmer(formula, data, method=method)


@pytest.fixture(scope="module")
def fits() -> dict:
    return {name: _fit(REF["cases"][name]["formula"], _data(name)) for name in CASES}


def _close(got: float, want: float, rel: float, abs_: float = 0.0) -> bool:
    return abs(got - want) <= max(rel * abs(want), abs_)


# ---------------------------------------------------------------------------
# Confidence intervals
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASES)
def test_profile_intervals(fits, name: str) -> None:
    rows = REF["cases"][name]["confint_profile"]
    ci = fits[name].confint(method="profile")  # confint(fm, method="profile", oldNames=FALSE)
    assert list(ci.columns) == list(_CI)
    assert sorted(ci.index) == sorted(r["term"] for r in rows)
    var_rows = [r["term"] for r in rows if r["term"].startswith(("sd_", "cor_")) or r["term"] == "sigma"]
    assert [t for t in ci.index if t in var_rows] == var_rows  # lme4's order of the variance parameters
    for r in rows:
        for col in _CI:
            want, got = r[col], ci.loc[r["term"], col]
            near_zero = r["term"].startswith("cor_") or abs(want) < 1e-2
            assert _close(got, want, 1e-3, 1e-3 if near_zero else 0.0), (name, r["term"], col, got, want)


@pytest.mark.parametrize("name", CASES)
def test_wald_intervals(fits, name: str) -> None:
    ci = fits[name].confint(method="Wald")
    for r in REF["cases"][name]["confint_wald"]:  # confint(fm, method="Wald", parm="beta_")
        for col in _CI:
            assert ci.loc[r["term"], col] == pytest.approx(r[col], rel=1e-4), (name, r["term"], col)
    var_rows = [n for n in ci.index if n not in {r["term"] for r in REF["cases"][name]["confint_wald"]}]
    assert ci.loc[var_rows].isna().all().all()  # confint(fm, method="Wald"): NA for the variance parameters
    beta_only = fits[name].confint(parm="beta_", method="Wald")
    assert list(beta_only.index) == list(fits[name].design.fixed_names)


# ---------------------------------------------------------------------------
# t tests: Satterthwaite and Kenward-Roger
# ---------------------------------------------------------------------------
def _at_lme4_optimum(fit, name: str):
    """The fit's state moved to lme4's estimates of θ and σ (as.data.frame(VarCorr(fm))), β and vcov(β) at them."""
    st = fit.inference_state
    rows = REML_REF[name]["varcorr"]
    sd = {(r["grp"], r["var1"]): r["sdcor"] for r in rows if not r["var2"]}
    cor = {(r["grp"], frozenset((r["var1"], r["var2"]))): r["sdcor"] for r in rows if r["var2"]}
    sigma = sd[("Residual", "")]
    vals = []
    for b in st.design.blocks:
        for i, j in tril_positions(b.q):
            vals.append(sd[(b.label, b.terms[i])] if i == j else cor[(b.label, frozenset((b.terms[i], b.terms[j])))])
    theta = VarLayout.from_design(st.design).to_theta(np.array([*vals, sigma]))
    pls = st.at(theta)
    return dataclasses.replace(st, theta=theta, sigma=sigma, beta=pls.beta, vcov_beta=sigma**2 * pls.rx_inverse)


TESTS = [("Satterthwaite", "satterthwaite"), ("Kenward-Roger", "kenward_roger")]


@pytest.mark.parametrize(("ddf", "key"), TESTS)
@pytest.mark.parametrize("name", [c for c in CASES if c in REML_REF])
def test_t_tests_at_lme4_estimates(fits, name: str, ddf: str, key: str) -> None:
    """At lme4's own θ and σ the methods reproduce lmerTest's tables (numerical differentiation limits Satterthwaite)."""
    tab = coef_table(_at_lme4_optimum(fits[name], name), ddf=ddf)
    df_rel, p_rel = (1e-6, 1e-5) if ddf == "Satterthwaite" else (1e-9, 1e-8)
    for r in REF["cases"][name][key]:  # coef(summary(fm, ddf=...))
        row = tab.loc[r["term"]]
        assert row["Estimate"] == pytest.approx(r["Estimate"], rel=1e-9)
        assert row["Std. Error"] == pytest.approx(r["Std. Error"], rel=1e-9)
        assert row["t value"] == pytest.approx(r["t value"], rel=1e-9)
        assert row["df"] == pytest.approx(r["df"], rel=df_rel)
        assert row["Pr(>|t|)"] == pytest.approx(r["Pr(>|t|)"], rel=p_rel)


@pytest.mark.parametrize(("ddf", "key"), TESTS)
@pytest.mark.parametrize("name", CASES)
def test_t_tests_from_our_fit(fits, name: str, ddf: str, key: str) -> None:
    """From our REML fit: df within 1e-3, p within 1e-3 (1e-12 absolute when tiny).

    Where lme4's REML criterion is above ours (its optimiser stopped short), the
    remaining p-value difference must be the df's alone: the p-value at our t
    and lmerTest's df matches to 1e-3.
    """
    tab = fits[name].fixef(ddf=ddf)
    ours = fits[name].REMLcrit()
    lme4_short = name in REML_REF and REML_REF[name]["reml_criterion"] > ours + 1e-9  # REMLcrit(fm)
    for r in REF["cases"][name][key]:  # coef(summary(fm, ddf=...))
        row = tab.loc[r["term"]]
        assert row["Estimate"] == pytest.approx(r["Estimate"], rel=1e-6)
        assert row["Std. Error"] == pytest.approx(r["Std. Error"], rel=1e-4)
        assert row["t value"] == pytest.approx(r["t value"], rel=1e-4)
        assert row["df"] == pytest.approx(r["df"], rel=1e-3)
        p, want = row["Pr(>|t|)"], r["Pr(>|t|)"]
        if not _close(p, want, 1e-3, 1e-12):
            assert lme4_short, (name, r["term"], p, want)
            assert 2 * stats.t.sf(abs(row["t value"]), r["df"]) == pytest.approx(want, rel=1e-3)


@pytest.mark.parametrize(("ddf", "key"), TESTS)
def test_tidy_has_lmertest_statistic_df_and_p(fits, ddf: str, key: str) -> None:
    """broom.mixed's tidy(fm, ddf.method=...) of an lmerTest fit: statistic, df, p.value on the fixed rows."""
    name = "sleep_slopes"
    tab = fits[name].tidy(ddf=ddf)
    fixed = tab[tab["effect"] == "fixed"].set_index("term")
    assert list(tab.columns[3:8]) == ["estimate", "std.error", "statistic", "df", "p.value"]
    for r in REF["cases"][name][key]:  # coef(summary(fm, ddf=...))
        assert fixed.loc[r["term"], "statistic"] == pytest.approx(r["t value"], rel=1e-4)
        assert fixed.loc[r["term"], "df"] == pytest.approx(r["df"], rel=1e-3)
        assert _close(fixed.loc[r["term"], "p.value"], r["Pr(>|t|)"], 1e-3, 1e-12)
    assert tab.loc[tab["effect"] != "fixed", ["statistic", "df", "p.value"]].isna().all().all()
    lme4_style = fits[name].tidy("fixed", ddf="lme4")  # tidy of an lme4 (not lmerTest) fit: statistic only
    assert lme4_style["statistic"].notna().all() and lme4_style[["df", "p.value"]].isna().all().all()


def test_kenward_roger_on_ml_fit_is_refused() -> None:
    ml = _fit("Reaction ~ Days + (Days | Subject)", _data("sleep_slopes"), "ML")
    from bayeslmm.errors import BayesLMMError

    with pytest.raises(BayesLMMError, match="REML"):
        ml.fixef(ddf="KR")  # summary(fm, ddf="Kenward-Roger") on an ML fit: lmerTest refuses it
    with pytest.raises(BayesLMMError, match="REML"):
        ml.anova(ddf="Kenward-Roger")
    with pytest.raises(BayesLMMError, match="REML"):
        ml.summary(ddf="Kenward-Roger")
    assert "df" in ml.fixef(ddf="Satterthwaite")  # Satterthwaite works on ML fits, as in lmerTest


def test_lme4_ddf_has_no_tests(fits) -> None:
    tab = fits["sleep_slopes"].fixef(ddf="lme4")  # coef(summary(fm, ddf="lme4")) with confint(fm, method="Wald")
    assert list(tab.columns) == ["Estimate", "Std. Error", "l-95% CI", "u-95% CI", "t value"]
    a = fits["cake"].anova(ddf="lme4").table  # anova(fm, ddf="lme4"): lme4's sequential table
    assert list(a.columns) == ["npar", "Sum Sq", "Mean Sq", "F value"]
    want = {r["term"]: r for r in REF["cases"]["cake"]["anova_type3_satterthwaite"]}
    # balanced data: the sequential sums of squares are the type-III ones
    assert a["Sum Sq"].to_numpy() == pytest.approx([want[t]["Sum Sq"] for t in a.index], rel=1e-6)


# ---------------------------------------------------------------------------
# F tests
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", [c for c in CASES if REF["cases"][c]["anova_type3_satterthwaite"]])
def test_type3_f_tests(fits, name: str) -> None:
    tab = fits[name].anova(type=3).table  # anova(fm, type=3) with lmerTest
    rows = REF["cases"][name]["anova_type3_satterthwaite"]
    assert sorted(tab.index) == sorted(r["term"] for r in rows)
    for r in rows:
        for col in ("Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"):
            assert tab.loc[r["term"], col] == pytest.approx(r[col], rel=1e-4), (name, r["term"], col)


def test_f_tests_of_a_fit_loaded_from_a_file(fits, tmp_path) -> None:
    """A saved fit has no formulae encoders; its terms come from the design's recipe, with the same tests."""
    back = bayeslmm.load(fits["cake"].save(tmp_path / "cake.nc"))
    tab = back.anova().table
    for r in REF["cases"]["cake"]["anova_type3_satterthwaite"]:  # anova(fm, type=3)
        for col in ("Sum Sq", "NumDF", "DenDF", "F value", "Pr(>F)"):
            assert tab.loc[r["term"], col] == pytest.approx(r[col], rel=1e-4)


def test_type3_f_tests_do_not_depend_on_the_coding() -> None:
    """Sum-to-zero coding S(recipe) gives lmerTest's treatment-coded type-III table (the contrasts are mapped)."""
    fit = _fit("angle ~ S(recipe) * temperature + (1 | recipe:replicate)", _data("cake"))
    tab = fit.anova().table
    for r in REF["cases"]["cake"]["anova_type3_satterthwaite"]:  # anova(fm, type=3)
        term = r["term"].replace("recipe", "S(recipe)")
        for col in ("Sum Sq", "NumDF", "DenDF", "F value", "Pr(>F)"):
            assert tab.loc[term, col] == pytest.approx(r[col], rel=1e-4)


# ---------------------------------------------------------------------------
# Likelihood-ratio tests
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASES)
def test_ranova(fits, name: str) -> None:
    res = fits[name].ranova()  # lmerTest::ranova(fm)
    rows = REF["cases"][name]["ranova"]
    assert list(res.table.index) == [r["term"] for r in rows]
    for r in rows:
        for col in ("npar", "logLik", "AIC", "LRT", "Df", "Pr(>Chisq)"):
            got = res.table.loc[r["term"], col]
            if r[col] is None:
                assert np.isnan(got)
            else:
                assert got == pytest.approx(r[col], rel=1e-6), (name, r["term"], col)
    one_sd = res.table["Pr(>Chisq) mix"].dropna()
    for term, p in one_sd.items():  # the 50:50 mixture halves the chi-square(1) tail, or mixes chi2(Df-1) and chi2(Df)
        lrt, df = res.table.loc[term, "LRT"], int(res.table.loc[term, "Df"])
        lower = stats.chi2.sf(lrt, df - 1) if df > 1 else 0.0
        assert p == pytest.approx(0.5 * stats.chi2.sf(lrt, df) + 0.5 * lower)
    assert any("boundary" in n for n in res.notes) == (len(one_sd) > 0)


@pytest.mark.parametrize("refit", [True, False])
@pytest.mark.parametrize("pair", PAIRS)
def test_anova_lrt(pair: str, refit: bool) -> None:
    spec = REF["anova"][pair]
    data = _data("cake" if pair.startswith("cake") else "sleep_slopes")
    m0, m1 = _fit(spec["m0"], data), _fit(spec["m1"], data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bayeslmm.anova(m1, m0, refit=refit, names=["m1", "m0"])  # anova(m0, m1) / anova(m0, m1, refit=FALSE)
    rows = spec["refit_ml" if refit else "refit_false"]
    assert list(res.table.index) == [r["term"] for r in rows]  # ordered by npar
    for r in rows:
        for col in ("npar", "AIC", "BIC", "logLik", "deviance", "Chisq", "Df", "Pr(>Chisq)"):
            got = res.table.loc[r["term"], col]
            if r[col] is None:
                assert np.isnan(got)
            else:
                assert got == pytest.approx(r[col], rel=1e-6), (pair, refit, r["term"], col)
    assert any("refitting" in h for h in res.heading) == refit


# ---------------------------------------------------------------------------
# Parametric bootstrap
# ---------------------------------------------------------------------------
def _exact_split_plot_bootstrap(fit, n_draws: int = 2_000_000) -> dict[str, np.ndarray]:
    """The exact parametric-bootstrap distribution of the REML sds of the (balanced) cake split-plot.

    With 45 recipe:replicate groups of 6 (one per temperature), REML is the ANOVA estimator:
    σ̂² = MSW ~ σ²χ²(210)/210 and σ̂_b² = max(0, (MSB - MSW)/6), MSB ~ (σ² + 6σ_b²)χ²(42)/42,
    independent. Drawn here at the fitted σ_b and σ.
    """
    st = fit.inference_state
    sb, s = st.sigma * st.theta[0], st.sigma
    rng = np.random.default_rng(0)
    msb = (s**2 + 6 * sb**2) * rng.chisquare(42, n_draws) / 42
    msw = s**2 * rng.chisquare(210, n_draws) / 210
    return {"sd_(Intercept)|recipe:replicate": np.sqrt(np.maximum(0.0, (msb - msw) / 6)), "sigma": np.sqrt(msw)}


def _within_mc_error(t: np.ndarray, q: float, p: float, n_ref: float) -> tuple[bool, str]:
    """Whether endpoint q of a reference with n_ref replicates is the p-quantile of our replicates t, at 4 sd."""
    tol = 4 * np.sqrt(p * (1 - p) * (1 / t.size + 1 / n_ref))
    below, at_or_below = np.mean(t < q - 1e-12), np.mean(t <= q + 1e-12)
    return below - tol <= p <= at_or_below + tol, f"q={q}, share below {below:.4f} (<= {at_or_below:.4f}), tol {tol:.4f}"


#: lme4's reference interval for this row is not the parametric bootstrap of the fitted model: for the
#: balanced split-plot the bootstrap distribution of the REML sd is exact (_exact_split_plot_bootstrap),
#: its 2.5% and 97.5% points are 4.96 and 7.95, and lme4's 5.26 and 8.25 sit at its 6.1% and 99.0% points
#: (5 Monte Carlo sd away). Our replicates are checked against the exact distribution instead.
NOT_THE_BOOTSTRAP = {("cake", "sd_(Intercept)|recipe:replicate")}


def _check_bootstrap(fit, name: str, nsim: int, seed: int) -> None:
    res = fit.bootstrap(nsim=nsim, seed=seed, progressbar=False)
    assert res.n_failed <= nsim // 100
    exact = _exact_split_plot_bootstrap(fit) if name == "cake" else {}
    for r in REF["cases"][name]["confint_boot_perc_nsim1000"]:  # confint(fm, method="boot", nsim=1000, boot.type="perc")
        t = res.replicates[r["term"]].to_numpy()
        t = t[np.isfinite(t)]
        for col, p in zip(_CI, (0.025, 0.975)):
            if (name, r["term"]) in NOT_THE_BOOTSTRAP:
                ok, why = _within_mc_error(t, float(np.quantile(exact[r["term"]], p)), p, len(exact[r["term"]]))
            else:
                ok, why = _within_mc_error(t, r[col], p, 1000)
            assert ok, (name, r["term"], col, why)


def test_bootstrap_matches_the_exact_split_plot_distribution(fits) -> None:
    """cake's REML sds have an exact bootstrap distribution (χ² mean squares); 200 replicates must follow it."""
    res = fits["cake"].bootstrap(nsim=200, seed=3, progressbar=False)
    for term, exact in _exact_split_plot_bootstrap(fits["cake"]).items():
        t = res.replicates[term].to_numpy()
        for p in (0.025, 0.25, 0.5, 0.75, 0.975):
            ok, why = _within_mc_error(t, float(np.quantile(exact, p)), p, exact.size)
            assert ok, (term, p, why)


@pytest.mark.parametrize("name", ["sleep_slopes", "sleep_int", "dyestuff"])
def test_bootstrap_intervals_at_200_replicates(fits, name: str) -> None:
    """The default suite's check: 200 replicates (tolerance 4·sqrt(p(1-p)(1/200 + 1/1000)) = 0.048 at p = 0.025)."""
    _check_bootstrap(fits[name], name, nsim=200, seed=20261128)


@pytest.mark.slow
@pytest.mark.parametrize("name", CASES)
def test_bootstrap_intervals_at_1000_replicates(fits, name: str) -> None:
    _check_bootstrap(fits[name], name, nsim=1000, seed=20261128)
