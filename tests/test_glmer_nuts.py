"""GLMMs by NUTS: cbpp (binomial) against its Laplace fit, a simulated Poisson (1 + x | g) with an offset,
the negative binomial's φ, and the intercept prior at x = 0. Small draw counts; the tolerances are in
posterior sds and Monte Carlo standard errors."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm.glmm.fit import GLMMBayesFit

from test_glmer import cbpp

SETTINGS = dict(chains=2, draws=300, tune=300, random_seed=20261129, progressbar=False, cores=1)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def cbpp_nuts():
    return _quiet(bayeslmm.glmer, "cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp(), **SETTINGS)


@pytest.fixture(scope="module")
def sim_poisson() -> pd.DataFrame:
    """Poisson counts, log link, (1 + x | g) with correlation 0.5, exposure t: 40 groups x 8 rows."""
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(40), 8)
    x = rng.normal(size=g.size)
    t = rng.uniform(0.5, 3.0, size=g.size)
    L = np.linalg.cholesky(np.array([[0.5**2, 0.5 * 0.5 * 0.3], [0.5 * 0.5 * 0.3, 0.3**2]]))
    b = rng.normal(size=(40, 2)) @ L.T
    eta = 0.3 + 0.4 * x + b[g, 0] + b[g, 1] * x + np.log(t)
    return pd.DataFrame({"y": rng.poisson(np.exp(eta)), "x": x, "g": [f"g{i}" for i in g], "t": t})


def test_cbpp_posterior_agrees_with_laplace(cbpp_nuts):
    fit = cbpp_nuts
    assert isinstance(fit, GLMMBayesFit)
    assert fit.diagnostics.divergences == 0  # the target: 0 divergences on cbpp with default settings
    assert fit.laplace is not None
    post, lap = fit.fixef(), fit.laplace.fixef()
    # The posterior of β under weak priors is close to N(β̂, vcov(fm)): its mean differs from the
    # Laplace estimate by a small fraction of a posterior sd (plus Monte Carlo error, 4 MCSE).
    mcse = post["Est.Error"] / np.sqrt(post["Bulk_ESS"])
    assert np.all(np.abs(post["Estimate"] - lap["Estimate"]) < 0.5 * post["Est.Error"] + 4 * mcse)
    # posterior sd against the Wald SE (sqrt(diag(vcov(fm)))): within 25%, the sd's MC error being a few %
    np.testing.assert_allclose(post["Est.Error"], lap["Std. Error"], rtol=0.25)
    assert (post["Rhat"] < 1.05).all()


def test_cbpp_outputs(cbpp_nuts):
    fit = cbpp_nuts
    vc = fit.VarCorr()
    assert list(vc["grp"]) == ["herd"]  # as.data.frame(VarCorr(fm)): no Residual row
    pred = fit.predict()
    lo, hi = pred["l-95% CI"], pred["u-95% CI"]
    assert ((lo > 0) & (hi < 1) & (lo < pred["Estimate"]) & (pred["Estimate"] < hi)).all()  # probabilities
    link = fit.predict(type="link")
    assert (link["Estimate"] < 0).all()  # every herd-period's incidence is below 1/2 on the logit scale
    icc = fit.icc()["Estimate"]["herd"]
    tau2 = fit.params.sd[0][:, 0] ** 2
    assert icc == pytest.approx(np.mean(tau2 / (tau2 + np.pi**2 / 3)))  # latent-scale ICC, logit
    r2 = fit.r2()["Estimate"]
    assert 0 < r2["marginal"] < r2["conditional"] < 1
    lo_ = fit.loo()
    assert len(np.asarray(lo_.elpd_i)) == 56
    assert "Family: binomial  ( logit )" in str(fit.summary())
    assert "herd" in fit.parameterization
    # posterior predictive draws are numbers of cases, on the scale of the observed data
    yrep = np.asarray(fit.posterior_predictive(random_seed=1).posterior_predictive["y"].values)
    obs = np.asarray(fit.idata.observed_data["y"].values)
    assert yrep.shape[-1] == obs.shape[-1] == 56
    assert np.all(yrep == np.round(yrep)) and np.all(yrep <= cbpp()["size"].to_numpy())
    np.testing.assert_array_equal(obs, cbpp()["incidence"].to_numpy())


def test_poisson_offset_and_slopes(sim_poisson):
    fit = _quiet(bayeslmm.glmer, "y ~ x + offset(log(t)) + (1 + x | g)", sim_poisson, "poisson", **SETTINGS)
    lap = fit.laplace
    assert lap.glmm.has_offset
    post = fit.fixef()
    mcse = post["Est.Error"] / np.sqrt(post["Bulk_ESS"])
    assert np.all(np.abs(post["Estimate"] - lap.fixef()["Estimate"]) < 0.5 * post["Est.Error"] + 4 * mcse)
    # the simulated truth (0.3, 0.4) within 3 posterior sds
    assert np.all(np.abs(post["Estimate"].to_numpy() - [0.3, 0.4]) < 3 * post["Est.Error"].to_numpy())
    assert fit.diagnostics.divergences == 0
    assert set(fit.VarCorr()["var2"].dropna()) == {"x"}  # the correlation row of the (1 + x | g) block
    # the log-likelihood includes the offset: it matches a direct evaluation at the posterior draws
    ll = fit.pointwise_log_likelihood()
    assert np.isfinite(ll).all() and ll.shape == (600, len(sim_poisson))


def test_negative_binomial_phi_and_prior_override(sim_poisson):
    fit = _quiet(
        bayeslmm.glmer, "y ~ x + (1 | g)", sim_poisson, "negative_binomial",
        priors={"phi": {"dist": "Gamma", "alpha": 2.0, "beta": 0.1}}, **SETTINGS,
    )
    table = fit.priors.table()
    assert table.loc[table["class"] == "phi", "source"].item() == "user"
    assert fit.phi_draws is not None and (fit.phi_draws > 0).all()
    lap = bayeslmm.glmer("y ~ x + (1 | g)", sim_poisson, "negative_binomial", method="Laplace")
    assert np.isfinite(lap.result.phi) and lap.result.phi > 0


def test_intercept_prior_at_x0(sim_poisson):
    """brms's ``0 + Intercept``: a tight prior on β0 at x = 0 pins β0 itself; the default places it at mean(x)."""
    tight = {"(Intercept)": {"dist": "Normal", "mu": 2.0, "sigma": 0.01}}
    d = sim_poisson.assign(x=sim_poisson["x"] + 3.0)  # mean(x) far from 0
    opts = dict(SETTINGS, chains=1)
    at0 = _quiet(bayeslmm.glmer, "y ~ x + (1 | g)", d, "poisson", priors=tight, intercept_prior="x0", **opts)
    assert not at0.priors.intercept_centered
    b0 = at0.fixef()["Estimate"]["(Intercept)"]
    assert b0 == pytest.approx(2.0, abs=0.05)  # five prior sds
    centered = _quiet(bayeslmm.glmer, "y ~ x + (1 | g)", d, "poisson", priors=tight, **opts)
    beta = centered.params.beta
    at_mean = beta[:, 0] + beta[:, 1] * d["x"].mean()
    assert at_mean.mean() == pytest.approx(2.0, abs=0.05)
