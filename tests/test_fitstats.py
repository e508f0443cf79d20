"""Log-likelihood at fit time, LOO, WAIC, compare_models, Bayesian R² and ICC."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayeslmm
from bayeslmm import BayesLMMError, fitstats, naming
from bayeslmm.stages import model_design
from bayeslmm.paramdraws import ParamDraws
from conftest import draws
from conftest import bayes_fit, case, case_data


@pytest.fixture(scope="module")
def int_fit():
    """``Reaction ~ Days + (1 | Subject)`` (shared with the lme4 agreement tests)."""
    return bayes_fit("sleep_int")


def _without_log_likelihood(fit):
    tree = fit.idata.copy()
    del tree["log_likelihood"]
    return dataclasses.replace(fit, idata=tree)


def test_log_likelihood_is_stored_at_fit_time(sleep_fit):
    ll = sleep_fit.idata["log_likelihood"][naming.LIKELIHOOD]
    post = sleep_fit.idata.posterior
    assert ll.dims == ("chain", "draw", naming.OBS_DIM)
    assert ll.shape == (post.sizes["chain"], post.sizes["draw"], sleep_fit.design.nobs)
    # Draw (1, 17) by hand: normal log-density of y given X beta + Z gamma and sigma.
    d = sleep_fit.design
    beta = post[naming.FIXED].values[1, 17]
    r = post[naming.ranef("Subject")].values[1, 17]
    sigma = post[naming.SIGMA].values[1, 17]
    mu = d.X @ beta + (r[d.blocks[0].group_idx] * d.blocks[0].Z).sum(axis=1)
    np.testing.assert_allclose(ll.values[1, 17], stats.norm.logpdf(d.y, mu, sigma), rtol=1e-10)


def test_loo_has_one_pointwise_value_per_row(sleep_fit):
    res = sleep_fit.loo()
    assert res.elpd_i.shape == (sleep_fit.design.nobs,)
    assert res.pareto_k.shape == (sleep_fit.design.nobs,)
    assert np.isfinite(res.elpd) and res.p > 0
    np.testing.assert_allclose(float(res.elpd_i.sum()), res.elpd, rtol=1e-10)


def test_log_likelihood_is_computed_when_not_stored(sleep_fit, monkeypatch):
    lazy = _without_log_likelihood(sleep_fit)
    assert "log_likelihood" not in lazy.idata.children
    with pytest.warns(bayeslmm.ConvergenceWarning, match="Pareto k"):  # PSIS alone: no refits needed here
        assert lazy.loo(reloo=False).elpd == pytest.approx(sleep_fit.loo(reloo=False).elpd, rel=1e-12)
    assert lazy.waic().elpd_waic == pytest.approx(sleep_fit.waic().elpd_waic, rel=1e-12)
    assert "log_likelihood" not in lazy.idata.children  # computed, not stored
    monkeypatch.setattr(fitstats, "MAX_STORED_VALUES", 1000)
    assert fitstats.add_log_likelihood(lazy.idata, lazy.design, lazy.params) is False
    assert "log_likelihood" not in lazy.idata.children


def test_waic_formulas_on_a_known_case():
    # With identical draws there is no posterior variance: p_waic = 0, elpd = sum of log-densities.
    ll = np.tile(np.log([0.2, 0.5, 0.1]), (40, 1))
    w = fitstats.waic_from_log_likelihood(ll)
    assert w.p_waic == pytest.approx(0.0, abs=1e-12)
    assert w.elpd_waic == pytest.approx(np.log([0.2, 0.5, 0.1]).sum())
    assert w.waic == pytest.approx(-2 * w.elpd_waic)
    assert not w.warning
    # Two equally likely draws per point: lppd = log of the average likelihood.
    ll2 = np.log(np.array([[0.1, 0.4], [0.3, 0.2]]))
    w2 = fitstats.waic_from_log_likelihood(ll2)
    np.testing.assert_allclose(w2.elpd_i + w2.p_i, np.log([0.2, 0.3]))
    np.testing.assert_allclose(w2.p_i, ll2.var(axis=0, ddof=1))


def test_waic_agrees_with_loo(sleep_fit):
    w = sleep_fit.waic()
    lo = fitstats.psis_loo(sleep_fit.idata, sleep_fit.design, sleep_fit.params)
    assert w.elpd_i.shape == (sleep_fit.design.nobs,)
    # WAIC and PSIS-LOO estimate the same elpd from the same draws (both approximate where k is high).
    assert abs(w.elpd_waic - lo.elpd) < 0.1 * lo.se
    assert "waic" in str(w)


def test_compare_models_prefers_random_slopes(sleep_fit, int_fit):
    table = bayeslmm.compare_models({"slopes": sleep_fit, "intercepts": int_fit})
    assert list(table.index) == ["slopes", "intercepts"]
    assert {"rank", "elpd_diff", "elpd", "se", "weight"} <= set(table.columns)
    assert table.loc["slopes", "elpd_diff"] == 0
    assert table.loc["intercepts", "elpd"] == pytest.approx(int_fit.loo().elpd)
    with pytest.raises(BayesLMMError, match="at least two"):
        bayeslmm.compare_models({"slopes": sleep_fit})
    data = case_data("sleep_slopes").iloc[:170]
    other = dataclasses.replace(sleep_fit, design=model_design(case("sleep_slopes")["formula"], data))
    with pytest.raises(BayesLMMError, match="'short'.*different data"):
        bayeslmm.compare_models({"slopes": sleep_fit, "short": other})


def test_r2(sleep_fit):
    r2 = sleep_fit.r2()
    assert list(r2.index) == ["marginal", "conditional"]
    assert list(r2.columns) == ["Estimate", "Est.Error", "l-95% CI", "u-95% CI"]
    assert r2.loc["conditional", "Estimate"] > r2.loc["marginal", "Estimate"]
    assert ((r2["l-95% CI"] > 0) & (r2["u-95% CI"] < 1)).all()
    d = sleep_fit.r2(summary=False)
    S = sleep_fit.diagnostics.chains * sleep_fit.diagnostics.draws
    assert d.shape == (S, 2)
    np.testing.assert_allclose(r2["Estimate"], d.mean().to_numpy())
    # Draw 0 by hand.
    design, post = sleep_fit.design, sleep_fit.idata.posterior
    beta = post[naming.FIXED].values[0, 0]
    r = post[naming.ranef("Subject")].values[0, 0]
    sigma = post[naming.SIGMA].values[0, 0]
    mu_f = design.X @ beta
    mu = mu_f + (r[design.blocks[0].group_idx] * design.blocks[0].Z).sum(axis=1)
    total = mu.var(ddof=1) + sigma**2
    assert d["conditional"].iloc[0] == pytest.approx(mu.var(ddof=1) / total)
    assert d["marginal"].iloc[0] == pytest.approx(mu_f.var(ddof=1) / total)


def test_icc_matches_lme4_variance_share(int_fit):
    # lme4: as.data.frame(VarCorr(fm)) for Reaction ~ Days + (1 | Subject): vcov 1378.18 and 960.46.
    vc = {row["grp"]: row["vcov"] for row in case("sleep_int")["varcorr"]}
    lme4_icc = vc["Subject"] / (vc["Subject"] + vc["Residual"])
    tab = int_fit.icc()
    assert list(tab.index) == ["Subject"]
    est, sd = tab.loc["Subject", "Estimate"], tab.loc["Subject", "Est.Error"]
    assert abs(est - lme4_icc) < 2 * sd
    assert tab.loc["Subject", "l-95% CI"] < lme4_icc < tab.loc["Subject", "u-95% CI"]
    d = int_fit.icc(summary=False)["Subject"].to_numpy()
    tau = draws(int_fit.idata, naming.sd("Subject")).reshape(-1)
    sigma = draws(int_fit.idata, naming.SIGMA).reshape(-1)
    np.testing.assert_allclose(d, tau**2 / (tau**2 + sigma**2), rtol=1e-12)


def test_icc_uses_the_intercept_variance_of_a_slope_block(sleep_fit):
    d = sleep_fit.icc(summary=False)["Subject"].to_numpy()
    sd = draws(sleep_fit.idata, naming.sd("Subject")).reshape(-1, 2)
    sigma = draws(sleep_fit.idata, naming.SIGMA).reshape(-1)
    np.testing.assert_allclose(d, sd[:, 0] ** 2 / (sd[:, 0] ** 2 + sigma**2), rtol=1e-12)


def test_icc_with_crossed_factors_and_without_intercept():
    rng = np.random.default_rng(3)
    df = pd.DataFrame(
        {"y": rng.normal(size=40), "x": rng.normal(size=40), "a": rng.choice(list("pqr"), 40), "b": rng.choice(list("uv"), 40)}
    )

    def fit_of(formula, variances):
        design = model_design(formula, df)
        params = ParamDraws(
            beta=np.zeros((1, len(design.fixed_names))),
            sigma=np.array([2.0]),
            ranef=tuple(np.zeros((1, b.n_levels, b.q)) for b in design.blocks),
            sd=tuple(np.sqrt(np.array([c])) for c in variances),
            cor=tuple(np.ones((1, 1, 1)) for _ in variances),
        )
        return design, params

    # Crossed factors: each factor's share of the total variance tau_a^2 + tau_b^2 + sigma^2.
    vals = fitstats.icc_draws(*fit_of("y ~ x + (1 | a) + (1 | b)", [[3.0], [1.0]]))
    assert vals["a"][0] == pytest.approx(3 / (3 + 1 + 4))
    assert vals["b"][0] == pytest.approx(1 / (3 + 1 + 4))
    with pytest.raises(BayesLMMError, match="random intercept"):
        fitstats.icc_draws(*fit_of("y ~ x + (0 + x | a)", [[3.0]]))


def test_loo_refits_the_observations_psis_cannot_handle(sleep_fit):
    """brms's loo(fit, reloo = TRUE): flagged rows get their exact leave-one-out density; no warning remains."""
    from bayeslmm.reloo import RELOO_MAX

    psis = fitstats.psis_loo(sleep_fit.idata, sleep_fit.design, sleep_fit.params)
    bad = np.flatnonzero(psis.pareto_k.values > psis.good_k)
    assert 1 <= bad.size <= RELOO_MAX  # sleepstudy has a few influential days (subject 332, 308)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default refits them, so nothing is left to warn about
        lo = sleep_fit.loo()
    assert (lo.pareto_k.values <= lo.good_k).all()
    changed = np.flatnonzero(lo.elpd_i.values != psis.elpd_i.values)
    assert changed.tolist() == bad.tolist()
    assert lo.elpd == pytest.approx(float(lo.elpd_i.sum()), rel=1e-12)
    assert sleep_fit.loo() is lo  # computed once per fit
    with pytest.warns(bayeslmm.ConvergenceWarning, match=f"{bad.size} observation"):
        kept = sleep_fit.loo(reloo=False)
    assert kept.elpd == pytest.approx(psis.elpd)
    with pytest.raises(BayesLMMError, match="reloo"):
        sleep_fit.loo(reloo="yes")


def test_exact_refit_agrees_with_psis_where_psis_is_reliable(sleep_fit):
    """The refit machinery on a row where PSIS works (smallest k): both estimate log p(y_i | y_-i)."""
    import copy

    from bayeslmm.reloo import refit_loo

    psis = fitstats.psis_loo(sleep_fit.idata, sleep_fit.design, sleep_fit.params)
    j = int(np.argmin(psis.pareto_k.values))
    forced = copy.deepcopy(psis)
    forced.pareto_k.values[:] = 0.0
    forced.pareto_k.values[j] = 1.0
    out = refit_loo(forced, sleep_fit.idata, sleep_fit.design, sleep_fit.priors, sleep_fit.parameterization,
                    sleep_fit.settings)
    # Monte Carlo sd of each estimate is about 0.02 nats with 4000 draws; 0.1 is five of them.
    assert abs(float(out.elpd_i.values[j]) - float(psis.elpd_i.values[j])) < 0.1
    others = np.arange(sleep_fit.design.nobs) != j
    np.testing.assert_array_equal(out.elpd_i.values[others], psis.elpd_i.values[others])


def test_reloo_of_a_group_left_without_rows():
    """Dropping the only row of a group keeps the level with its prior: its effect is then a draw from N(0, T)."""
    import copy

    from bayeslmm.reloo import drop_rows, refit_loo

    rng = np.random.default_rng(1)
    g = np.r_[np.repeat(np.arange(6), 5), 6]
    x = rng.normal(size=g.size)
    d = pd.DataFrame({"y": 1 + 0.5 * x + rng.normal(0, 1, 7)[g] + rng.normal(size=g.size), "x": x, "g": g})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bayeslmm.lmer("y ~ x + (1|g)", d, draws=200, tune=200, chains=2, random_seed=3, progressbar=False)
    smaller = drop_rows(fit.design, [30])
    assert smaller.nobs == 30 and smaller.blocks[0].levels == fit.design.blocks[0].levels
    assert not (smaller.blocks[0].group_idx == 6).any()
    psis = fitstats.psis_loo(fit.idata, fit.design, fit.params)
    forced = copy.deepcopy(psis)
    forced.pareto_k.values[:] = 0.0
    forced.pareto_k.values[30] = 1.0
    out = refit_loo(forced, fit.idata, fit.design, fit.priors, fit.parameterization, fit.settings)
    assert np.isfinite(out.elpd_i.values[30]) and out.pareto_k.values[30] == 0
