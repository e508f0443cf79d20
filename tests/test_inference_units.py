"""The pieces of bayeslmm.inference checked against independent computations and known results.

Kenward-Roger is recomputed here with pbkrtest's dense n x n formulas; the
spline and numerical-derivative helpers against closed forms; the engine
adapter's response swap against a fresh engine; the random-term reductions
against lmerTest's labels; and every bad input a user can give gets a
BayesLMMError naming the problem.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayeslmm.stages import model_design
from bayeslmm.errors import BayesLMMError
import bayeslmm

from bayeslmm.inference.engine import refit_response, restore_response
from bayeslmm.inference.kenward_roger import kr_adjust
from bayeslmm.inference.numderiv import hessian, jacobian
from bayeslmm.inference.params import VarLayout
from bayeslmm.inference.parametric_bootstrap import percentile_interval
from bayeslmm.inference.random_terms import reductions
from bayeslmm.inference.report import format_percent
from bayeslmm.inference.rspline import back_spline
from conftest import reference_data


def _fit(formula: str, data: pd.DataFrame, method: str = "REML"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bayeslmm.lmer(formula, data, method=method)


@pytest.fixture(scope="module")
def sleep() -> pd.DataFrame:
    return reference_data("data/sleepstudy.csv")


@pytest.fixture(scope="module")
def slopes(sleep):
    return _fit("Reaction ~ Days + (Days | Subject)", sleep)


@pytest.fixture(scope="module")
def grouped() -> pd.DataFrame:
    """A simulated design with a numeric slope, a 3-level factor and two crossed grouping factors."""
    rng = np.random.default_rng(7)
    n = 240
    g, h = rng.integers(0, 12, n), rng.integers(0, 8, n)
    x, f = rng.normal(size=n), rng.choice(["a", "b", "c"], n)
    y = 1 + 0.5 * x + (f == "b") + rng.normal(0, 0.8, 12)[g] + 0.4 * rng.normal(size=12)[g] * x + rng.normal(0, 0.5, 8)[h]
    return pd.DataFrame({"y": y + rng.normal(size=n), "x": x, "f": f, "g": g.astype(str), "h": h.astype(str)})


# ---------------------------------------------------------------------------
# Parameterisation, splines, derivatives, labels
# ---------------------------------------------------------------------------
def test_sd_cor_names_and_round_trip(grouped) -> None:
    design = model_design("y ~ x + (x + f | g) + (1 | h)", grouped)
    lay = VarLayout.from_design(design)
    assert lay.names[:3] == ("sd_(Intercept)|g", "cor_x.(Intercept)|g", "cor_fb.(Intercept)|g")
    assert lay.names[-1] == "sigma" and lay.names[-2] == "sd_(Intercept)|h"
    rng = np.random.default_rng(1)
    theta = rng.normal(size=lay.n_theta)
    q = design.blocks[0].q
    pos = [(i, j) for j in range(q) for i in range(j, q)]
    on_diag = [k for k, (i, j) in enumerate(pos) if i == j] + [len(pos)]
    theta[on_diag] = np.abs(theta[on_diag])  # the diagonal of each factor is non-negative
    sdcor = lay.to_sdcor(theta, 1.7)
    np.testing.assert_allclose(lay.to_theta(sdcor), theta, atol=1e-12)
    T = np.zeros((q, q))
    for k, (i, j) in enumerate(pos):  # lme4 stores the factor column by column
        T[i, j] = theta[k]
    cov = 1.7**2 * T @ T.T
    assert sdcor[0] == pytest.approx(np.sqrt(cov[0, 0]))
    assert sdcor[1] == pytest.approx(cov[1, 0] / np.sqrt(cov[0, 0] * cov[1, 1]))
    assert sdcor[-2] == pytest.approx(1.7 * theta[-1])


def test_correlation_with_a_zero_sd_is_nan() -> None:
    lay = VarLayout((2,), ("sd_a|g", "cor_b.a|g", "sd_b|g", "sigma"), (False, True, False))
    assert np.isnan(lay.to_sdcor(np.array([0.0, 0.0, 1.0]), 1.0)[1])  # cov2cor of a zero variance


def test_back_spline_inverts_the_natural_spline() -> None:
    x = np.linspace(-2, 3, 12)
    zeta = np.sinh(x)
    inv = back_spline(x, zeta)
    np.testing.assert_allclose(inv(zeta), x, atol=1e-12)  # passes through the knots
    mid = np.array([-1.5, 0.3, 1.7])
    np.testing.assert_allclose(inv(np.sinh(mid)), mid, atol=5e-3)  # close to arcsinh between them
    assert np.isnan(inv(np.array([zeta[0] - 1, zeta[-1] + 1]))).all()  # undefined outside: the bound is used
    with pytest.raises(ValueError, match="monotone"):
        back_spline(x, np.cos(x))


def test_richardson_derivatives_match_closed_forms() -> None:
    def f(v):
        return v[0] ** 2 * v[1] + np.exp(v[1]) + np.sin(v[0] * v[1])

    x = np.array([0.7, 1.3])
    a, b = x
    want = np.array([
        [2 * b - b * b * np.sin(a * b), 2 * a + np.cos(a * b) - a * b * np.sin(a * b)],
        [2 * a + np.cos(a * b) - a * b * np.sin(a * b), np.exp(b) - a * a * np.sin(a * b)],
    ])
    np.testing.assert_allclose(hessian(f, x), want, rtol=1e-7)
    jac = jacobian(lambda v: np.array([v[0] * v[1], np.log(v[0]) + v[1] ** 3]), x)
    np.testing.assert_allclose(jac, [[b, a], [1 / a, 3 * b * b]], rtol=1e-9)


@pytest.mark.parametrize(
    ("probs", "labels"),
    [((0.025, 0.975), ["2.5 %", "97.5 %"]), ((0.05, 0.95), ["5 %", "95 %"]), ((0.005, 0.995), ["0.5 %", "99.5 %"]),
     ((0.0025, 0.9975), ["0.25 %", "99.75 %"])],
)
def test_interval_labels_as_r_formats_them(probs, labels) -> None:
    assert format_percent(list(probs)) == labels  # stats:::format.perc(probs, 3)


def test_percentile_interval_is_boots_norm_inter() -> None:
    t = pd.DataFrame({"a": np.arange(1.0, 1000.0)})  # R = 999: (R + 1) * 0.025 = 25 is an order statistic
    assert percentile_interval(t, 0.95).loc["a"].tolist() == pytest.approx([25.0, 975.0], abs=1e-9)
    t = pd.DataFrame({"a": np.arange(1.0, 1001.0)})  # R = 1000: between the 25th and 26th, on the normal scale
    z, z1, z2 = stats.norm.ppf([0.025, 25 / 1001, 26 / 1001])
    assert percentile_interval(t, 0.95).loc["a", "2.5 %"] == pytest.approx(25 + (z - z1) / (z2 - z1))


# ---------------------------------------------------------------------------
# The engine adapter
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("formula", "data"),
    [("Reaction ~ Days + (Days | Subject)", "sleepstudy"), ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin"),
     ("strength ~ 1 + (1 | batch/cask)", "pastes")],
)
def test_bootstrap_refit_matches_a_fresh_fit(formula: str, data: str) -> None:
    """A refit of a new response through the fit's problem gives the fit of a freshly built design."""
    d = reference_data(f"data/{data}.csv")
    fit = _fit(formula, d)
    st = fit.inference_state
    rng = np.random.default_rng(3)
    y2 = st.design.y + rng.normal(0, st.design.y.std(), st.nobs)
    d2 = d.copy()
    d2[st.design.response_name] = y2
    fresh = _fit(formula, d2)
    try:
        est = refit_response(st, y2)
    finally:
        restore_response(st)
    assert est.criterion == pytest.approx(fresh.REMLcrit(), rel=1e-8)  # REMLcrit(refit(fm, y2))
    np.testing.assert_allclose(est.beta, fresh.result.beta, rtol=1e-5)
    assert st.deviance(st.theta) == pytest.approx(fit.REMLcrit(), rel=1e-12)  # the response was put back


def test_engine_criterion_is_the_fits(slopes) -> None:
    st = slopes.inference_state
    assert st.deviance(st.theta) == pytest.approx(slopes.REMLcrit(), rel=1e-12)  # REMLcrit(fm)
    pls = st.at(st.theta)
    np.testing.assert_allclose(pls.beta, slopes.result.beta, rtol=1e-10)
    np.testing.assert_allclose(st.sigma**2 * pls.rx_inverse, slopes.vcov().to_numpy(), rtol=1e-10)  # vcov(fm)


# ---------------------------------------------------------------------------
# Satterthwaite and Kenward-Roger against known answers and pbkrtest's dense formulas
# ---------------------------------------------------------------------------
def _dense_kr(st):
    """pbkrtest's vcovAdj written out with n x n matrices (Sigma, G_r, SigmaInv)."""
    design = st.design
    n = design.nobs
    G, gamma, pos = [], [], 0
    for b in design.blocks:
        Zk = [np.zeros((n, b.n_levels)) for _ in range(b.q)]
        for t in range(b.q):
            Zk[t][np.arange(n), b.group_idx] = b.Z[:, t]
        T = np.zeros((b.q, b.q))
        idx = [(i, j) for j in range(b.q) for i in range(j, b.q)]
        for k, (i, j) in enumerate(idx):
            T[i, j] = st.theta[pos + k]
        C = st.sigma**2 * T @ T.T
        for i, j in idx:
            G.append(Zk[i] @ Zk[i].T if i == j else Zk[i] @ Zk[j].T + Zk[j] @ Zk[i].T)
            gamma.append(C[i, j])
        pos += len(idx)
    G.append(np.eye(n))
    gamma.append(st.sigma**2)
    Sigma = sum(g * Gm for g, Gm in zip(gamma, G))
    W = np.linalg.inv(Sigma)
    X = design.X
    Phi = np.linalg.inv(X.T @ W @ X)
    H = [Gm @ W for Gm in G]
    O = [h @ X for h in H]
    P = [-(o.T @ W @ X) for o in O]
    m = len(G)
    Q = [[O[r].T @ W @ O[s] for s in range(m)] for r in range(m)]
    info = np.array([[np.trace(H[r] @ H[s]) - 2 * np.sum(Phi * Q[r][s]) + np.sum((Phi @ P[r]) * (P[s] @ Phi))
                      for s in range(m)] for r in range(m)])
    Wg = 2 * np.linalg.inv(info)
    U = sum(Wg[r, s] * (Q[r][s] - P[r] @ Phi @ P[s]) for r in range(m) for s in range(m))
    return Phi + 2 * Phi @ U @ Phi, Wg


@pytest.mark.parametrize("formula", ["y ~ x + f + (x | g)", "y ~ x + (1 | g) + (1 | h)", "y ~ f + (x || g)"])
def test_kenward_roger_matches_pbkrtests_dense_computation(grouped, formula: str) -> None:
    st = _fit(formula, grouped).inference_state
    kr = kr_adjust(st)
    Phi_A, Wg = _dense_kr(st)
    np.testing.assert_allclose(kr.vcov_adj, Phi_A, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(kr.W, Wg, rtol=1e-6)


def test_balanced_random_intercept_gives_the_classical_df(sleep) -> None:
    """A within-subject slope in a balanced random-intercept design has N - m - 1 = 180 - 18 - 1 df."""
    fit = _fit("Reaction ~ Days + (1 | Subject)", sleep)
    assert fit.fixef(ddf="Satterthwaite").loc["Days", "df"] == pytest.approx(161, rel=1e-6)
    assert fit.fixef(ddf="Kenward-Roger").loc["Days", "df"] == pytest.approx(161, rel=1e-9)


def test_contest_matches_the_coefficient_table(slopes) -> None:
    tab = slopes.fixef(ddf="Satterthwaite")
    one = slopes.contest([0, 1], joint=False)  # contest1D(L, fm)
    assert one.loc[0, "df"] == pytest.approx(tab.loc["Days", "df"])
    assert one.loc[0, "Pr(>|t|)"] == pytest.approx(tab.loc["Days", "Pr(>|t|)"])
    f = slopes.contest([[0, 1]])  # contestMD: F = t^2 for one row
    assert f.loc[0, "F value"] == pytest.approx(tab.loc["Days", "t value"] ** 2)
    both = slopes.contest(np.eye(2), ddf="KR")
    assert both.loc[0, "NumDF"] == 2
    with pytest.raises(BayesLMMError, match="3 columns"):
        slopes.contest([0, 1, 0])


def test_type3_equals_type2_without_interactions(grouped) -> None:
    fit = _fit("y ~ x + f + (1 | g)", grouped)
    t3, t2 = fit.anova(type=3).table, fit.anova(type="II").table
    np.testing.assert_allclose(t3.to_numpy(), t2.to_numpy(), rtol=1e-8)
    # without containment type III is the marginal test of the term's own coefficients
    joint = fit.contest(np.eye(4)[2:4])
    assert t3.loc["f", "F value"] == pytest.approx(joint.loc[0, "F value"], rel=1e-10)
    with pytest.raises(BayesLMMError, match="type"):
        fit.anova(type=4)


# ---------------------------------------------------------------------------
# Random-term reductions and likelihood-ratio tests
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("formula", "labels"),
    [
        ("y ~ x + (x | g)", ["x in (x | g)"]),
        ("y ~ x + (x || g)", ["(1 | g)", "x in (0 + x | g)"]),
        ("y ~ x + (0 + x | g)", ["x in (0 + x | g)"]),
        ("y ~ x + (1 | g/h)", ["(1 | h:g)", "(1 | g)"]),
        ("y ~ x + (x + f | g) + (1 | h)", ["x in (x + f | g)", "f in (x + f | g)", "(1 | h)"]),
    ],
)
def test_ranova_reductions_are_lmertests(grouped, formula: str, labels: list[str]) -> None:
    design = model_design(formula, grouped)
    assert [r.label for r in reductions(design)] == labels  # rownames(lmerTest::ranova(fm))[-1]


def test_reduced_slope_term_is_a_random_intercept(grouped) -> None:
    red = reductions(model_design("y ~ x + (0 + x | g)", grouped))[0]
    [block] = red.design.blocks
    assert block.terms == ("(Intercept)",) and np.all(block.Z == 1)
    assert [r.label for r in reductions(model_design("y ~ x + (x | g)", grouped), reduce_terms=False)] == ["(x | g)"]


def test_ranova_without_random_effects_left_uses_the_linear_models_likelihood(sleep) -> None:
    fit = _fit("Reaction ~ Days + (1 | Subject)", sleep)
    row = fit.ranova().table.loc["(1 | Subject)"]
    X = np.column_stack([np.ones(len(sleep)), sleep["Days"]])
    n, p = X.shape
    resid = sleep["Reaction"] - X @ np.linalg.lstsq(X, sleep["Reaction"], rcond=None)[0]
    s2 = resid @ resid / (n - p)
    reml_ll = -0.5 * ((n - p) * np.log(2 * np.pi * s2) + (n - p) + np.linalg.slogdet(X.T @ X)[1])
    assert row["logLik"] == pytest.approx(reml_ll, rel=1e-10)  # logLik(lm(Reaction ~ Days), REML = TRUE)
    assert row["npar"] == 3


def test_anova_refuses_what_it_cannot_test(sleep, slopes) -> None:
    intercept_only_fixed = _fit("Reaction ~ 1 + (Days | Subject)", sleep)
    days_intercept = _fit("Reaction ~ Days + (1 | Subject)", sleep)
    with pytest.raises(BayesLMMError, match="not nested"):
        bayeslmm.anova(days_intercept, intercept_only_fixed)
    fewer = _fit("Reaction ~ Days + (1 | Subject)", sleep.iloc[:-10])
    with pytest.raises(BayesLMMError, match="same rows"):
        bayeslmm.anova(fewer, slopes)
    logged = _fit("np.log(Reaction) ~ Days + (1 | Subject)", sleep)
    with pytest.raises(BayesLMMError, match="different responses"):
        bayeslmm.anova(logged, slopes)
    with pytest.raises(BayesLMMError, match="two or more"):
        bayeslmm.anova(slopes)

    with pytest.raises(BayesLMMError, match="compare_models"):
        bayeslmm.anova(slopes.params, slopes)  # not a fit at all


def test_anova_of_three_models_orders_by_npar_and_mixes_on_the_boundary(sleep, slopes) -> None:
    m0 = _fit("Reaction ~ Days + (1 | Subject)", sleep)
    m1 = _fit("Reaction ~ Days + (Days || Subject)", sleep)
    res = bayeslmm.anova(slopes, m0, m1, names=["slopes", "int", "uncorr"])
    assert list(res.table.index) == ["int", "uncorr", "slopes"]
    row = res.table.loc["uncorr"]  # one sd added: 50:50 mixture of chi2(0) and chi2(1)
    assert row["Pr(>Chisq) mix"] == pytest.approx(0.5 * stats.chi2.sf(row["Chisq"], 1))
    assert np.isnan(res.table.loc["slopes", "Pr(>Chisq) mix"])  # only a correlation added: no mixture given
    with pytest.warns(UserWarning, match="not comparable"):
        bayeslmm.anova(slopes, _fit("Reaction ~ 1 + (Days | Subject)", sleep), refit=False)


# ---------------------------------------------------------------------------
# Bad input to the tables and intervals
# ---------------------------------------------------------------------------
def test_confint_rejects_bad_input(slopes) -> None:
    with pytest.raises(BayesLMMError, match="'Dayz'"):
        slopes.confint(parm="Dayz", method="Wald")
    for level in (0, 1, 1.5, -0.2, True, "0.95"):
        with pytest.raises(BayesLMMError, match="level"):
            slopes.confint(level=level, method="Wald")
    with pytest.raises(BayesLMMError, match="method"):
        slopes.confint(method="bayes")
    with pytest.raises(BayesLMMError, match="boot_type"):
        slopes.confint(method="boot", boot_type="bca", nsim=2)
    with pytest.raises(BayesLMMError, match="ddf"):
        slopes.fixef(ddf="Welch")


def test_profile_intervals_widen_with_the_level(sleep) -> None:
    fit = _fit("Reaction ~ Days + (1 | Subject)", sleep)
    lo = fit.confint(parm=["sigma", "Days"], level=0.5)
    mid = fit.confint(parm=["sigma", "Days"], level=0.95)
    hi = fit.confint(parm=["sigma", "Days"], level=0.9999)
    assert list(hi.columns) == ["0.005 %", "99.995 %"]
    assert np.all(lo.iloc[:, 0].to_numpy() > mid.iloc[:, 0].to_numpy())
    assert np.all(mid.iloc[:, 0].to_numpy() > hi.iloc[:, 0].to_numpy())
    assert np.all(mid.iloc[:, 1].to_numpy() < hi.iloc[:, 1].to_numpy())


# ---------------------------------------------------------------------------
# The bootstrap's mechanics
# ---------------------------------------------------------------------------
def test_bootstrap_replicates_do_not_depend_on_the_processes(slopes) -> None:
    one = slopes.bootstrap(nsim=6, seed=11, progressbar=False, cores=1)
    two = slopes.bootstrap(nsim=6, seed=11, progressbar=False, cores=2)
    pd.testing.assert_frame_equal(one.replicates, two.replicates)
    other = slopes.bootstrap(nsim=6, seed=12, progressbar=False, cores=1)
    assert not np.allclose(one.replicates.to_numpy(), other.replicates.to_numpy())
    assert list(one.replicates.columns) == list(slopes.confint(method="Wald").index)
    assert one.t0["Days"] == pytest.approx(slopes.result.beta[1])


def test_bootstrap_custom_statistic_and_failure_summary(slopes) -> None:
    calls = []

    def stat(rep):
        calls.append(rep.converged)
        if len(calls) == 3:
            raise ValueError("no statistic for this one")
        return {"days": rep.beta["Days"], "ratio": rep.sdcor["sd_Days|Subject"] / rep.sigma}

    res = slopes.bootstrap(func=stat, nsim=5, seed=2, progressbar=False, cores=1)
    assert list(res.replicates.columns) == ["days", "ratio"]
    assert res.replicates.isna().any(axis=1).sum() == 1 and res.n_failed == 1
    assert "1 did not converge" in res.summary() and "no statistic for this one" in res.summary()
    with pytest.raises(BayesLMMError, match="nsim"):
        slopes.bootstrap(nsim=0)


def test_bootstrap_keeping_the_modes_removes_the_between_group_variation(slopes) -> None:
    new = slopes.bootstrap(nsim=60, seed=5, progressbar=False)
    kept = slopes.bootstrap(nsim=60, seed=5, progressbar=False, use_u=True)
    # with the modes fixed only the residual noise remains, so the intercept varies far less
    assert kept.replicates["(Intercept)"].std() < 0.7 * new.replicates["(Intercept)"].std()
    assert abs(kept.replicates["(Intercept)"].mean() - kept.t0["(Intercept)"]) < 4 * kept.replicates["(Intercept)"].std() / np.sqrt(60)


def test_varcorr_intervals_follow_vcorrs_layout(slopes) -> None:
    vc = slopes.VarCorr()  # as.data.frame(VarCorr(fm))
    iv = slopes.varcorr_intervals(method="profile")
    ci = slopes.confint(parm="theta_")
    assert len(iv) == len(vc)
    key = lambda df: sorted(zip(df["grp"], df["var1"].fillna(""), df["var2"].fillna("")))  # noqa: E731
    assert key(iv) == key(vc)
    np.testing.assert_allclose(iv[["2.5 %", "97.5 %"]].to_numpy(), ci.to_numpy())


def test_default_statistic_is_the_replicates_own(slopes) -> None:
    """The default statistic (computed without building a BootReplicate) equals BootReplicate.default_statistic."""
    fast = slopes.bootstrap(nsim=4, seed=9, progressbar=False, cores=1)
    slow = slopes.bootstrap(func=lambda rep: rep.default_statistic(), nsim=4, seed=9, progressbar=False, cores=1)
    pd.testing.assert_frame_equal(fast.replicates, slow.replicates)
    pd.testing.assert_series_equal(fast.t0, slow.t0)


def test_degenerate_fit_gives_na_df_with_a_warning() -> None:
    """A four-row ML fit whose optimum has σ̂ → 0 and θ̂ ~ 4e7 cannot be factored a step away from θ̂.

    lmerTest then prints lme4's table; the Satterthwaite df and p-values are NA and a warning says why.
    Found by ``test_fuzz.test_reml_on_random_frames``.
    """
    d = pd.DataFrame(
        {
            "y": [0.6218681250697862, 1.8213279349640712, 0.40850369851719925, 1.4835376610714934],
            "x": [False, False, True, True],
            "k": ["c", "c", "a", "a"],
            "g": ["g0", "g0", "g1", "g1"],
            "h": ["s", "u", "v", "u"],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bayeslmm.lmer("y ~ k + x + (1|g) + (1|h)", d, method="ML")
    with pytest.warns(bayeslmm.ConvergenceWarning, match="could not be factored.*NA"):
        table = fit.fixef()
    assert np.isfinite(table["Estimate"]).all() and np.isfinite(table["Std. Error"]).all()
    assert table["df"].isna().all() and table["Pr(>|t|)"].isna().all()
    # the Satterthwaite F test cannot be computed either, and says so
    with pytest.raises(bayeslmm.InferenceError, match="ddf='lme4'"):
        fit.anova()
