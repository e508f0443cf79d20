"""The Bayesian answers: brms-style hypothesis() and the probability of direction.

The posterior side is checked against the draws themselves and against an
independent density estimate; the prior side against closed forms (and, for
a non-Normal prior, against scipy's density within the Monte Carlo error of
the prior draws). Tolerances are Monte Carlo standard errors computed from
the draws' effective sample size.
"""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
from scipy import stats

import bayeslmm
from bayeslmm import naming
from bayeslmm.errors import BayesLMMError
from bayeslmm.inference.posterior_tests import Linear, PriorOfCombination
from bayeslmm.priors import Prior, PriorEntry, Priors
from conftest import draws


@pytest.fixture(scope="module")
def beta(sleep_fit):
    return draws(sleep_fit.idata, naming.FIXED)  # (chain, draw, fixed effect)


def _ess(x: np.ndarray) -> float:
    return float(az.ess(x[..., None], method="bulk")[0])


def test_one_sided_hypotheses_are_shares_of_the_draws(sleep_fit, beta) -> None:
    days = beta[..., 1].ravel()
    res = sleep_fit.hypothesis(["Days > 0", "Days < 10"], level=0.9)
    up, down = res.iloc[0], res.iloc[1]
    assert up["Hypothesis"] == "(Days) > 0" and down["Hypothesis"] == "(Days)-(10) < 0"
    assert up["Estimate"] == pytest.approx(days.mean()) and up["Est.Error"] == pytest.approx(days.std(ddof=1))
    assert up["CI.Lower"] == pytest.approx(np.quantile(days, 0.1)) and up["CI.Upper"] == np.inf  # one-sided at 90%
    assert down["CI.Lower"] == -np.inf and down["CI.Upper"] == pytest.approx(np.quantile(days - 10, 0.9))
    share = np.mean(days - 10 < 0)
    assert down["Post.Prob"] == pytest.approx(share) and down["Evid.Ratio"] == pytest.approx(share / (1 - share))
    assert up["Star"] == "*"  # sleep deprivation slows reactions: the whole posterior is above 0


def test_linear_combinations(sleep_fit, beta) -> None:
    res = sleep_fit.hypothesis("Intercept + 5 * Days = 300").iloc[0]
    combo = (beta[..., 0] + 5 * beta[..., 1] - 300).ravel()
    assert res["Estimate"] == pytest.approx(combo.mean())
    assert [res["CI.Lower"], res["CI.Upper"]] == pytest.approx(np.quantile(combo, [0.025, 0.975]).tolist())
    assert res["Hypothesis"] == "(Intercept+5*Days)-(300) = 0"


def test_savage_dickey_ratio_against_an_independent_density_estimate(sleep_fit, beta) -> None:
    """Evid.Ratio of ``Days = 10`` = posterior density / prior density at Days = 10.

    The posterior density is compared with the share of draws within ±w of 10
    over 2w (binomial error with the draws' effective size; w is small
    against the posterior sd, so its smoothing bias is below 1%); the prior
    density is the default Normal(0, 2.5 sd(y)/sd(Days)) prior's, exactly.
    """
    res = sleep_fit.hypothesis("Days = 10").iloc[0]
    days = beta[..., 1]
    prior = sleep_fit.priors.fixed("Days")
    prior_density = stats.norm.pdf(10, prior.kwargs["mu"], prior.kwargs["sigma"])
    w = 0.15 * days.std()
    inside = np.abs(days.ravel() - 10) < w
    window = inside.mean() / (2 * w)
    n_eff = _ess(days)
    se = np.sqrt(inside.mean() * (1 - inside.mean()) / n_eff) / (2 * w)
    assert res["Evid.Ratio"] * prior_density == pytest.approx(window, abs=4 * se + 0.01 * window)
    assert res["Post.Prob"] == pytest.approx(res["Evid.Ratio"] / (1 + res["Evid.Ratio"]))


def test_prior_of_a_combination_is_exact_for_normal_priors(sleep_fit) -> None:
    """The (Intercept) prior is on the intercept at mean(Days): (Intercept) = α - mean(Days)·Days."""
    pri = PriorOfCombination(sleep_fit.design, sleep_fit.priors, 1000, 0)
    a, d = sleep_fit.priors.fixed("(Intercept)").kwargs, sleep_fit.priors.fixed("Days").kwargs
    xbar = sleep_fit.design.X[:, 1].mean()
    h = Linear({"(Intercept)": 1.0, "Days": 2.0}, -250.0)  # (Intercept) + 2 Days - 250
    mean = a["mu"] - 250 + (2 - xbar) * d["mu"]
    sd = np.hypot(a["sigma"], (2 - xbar) * d["sigma"])
    assert pri.density_at_zero(h) == pytest.approx(stats.norm.pdf(0, mean, sd), rel=1e-12)


def test_prior_density_from_draws_for_other_priors(sleep_fit) -> None:
    """A StudentT prior has no closed-form combination here: its density comes from prior draws (KDE)."""
    entries = tuple(
        PriorEntry("fixed", None, "Days", Prior("StudentT", nu=3.0, mu=1.0, sigma=2.0)) if e.term == "Days" else e
        for e in sleep_fit.priors.entries
    )
    other = Priors(entries, sleep_fit.priors.intercept_centered)
    n = 20000
    got = PriorOfCombination(sleep_fit.design, other, n, 3).density_at_zero(Linear({"Days": 1.0}, -0.5))  # density of Days at 0.5
    want = stats.t.pdf(0.5, 3, loc=1.0, scale=2.0)
    # kernel estimate: sd = sqrt(R(K) f / (n h)), R(K) = 1/(2 sqrt(pi)); bias ~ h^2 f''/2, bounded by 3% here
    h = 0.9 * min(stats.t.std(3, scale=2.0), stats.t.ppf(0.75, 3, scale=2.0) * 2 / 1.34) * n**-0.2
    se = np.sqrt(want / (2 * np.sqrt(np.pi)) / (n * h))
    assert got == pytest.approx(want, abs=4 * se + 0.03 * want)


def test_probability_of_direction(sleep_fit, beta) -> None:
    pd_ = sleep_fit.summary(pd=True).fixed["pd"]
    flat = beta.reshape(-1, beta.shape[-1])
    want = np.maximum((flat > 0).mean(axis=0), (flat < 0).mean(axis=0))
    np.testing.assert_allclose(pd_.to_numpy(), want)
    assert pd_["Days"] == pytest.approx(sleep_fit.hypothesis("Days > 0")["Post.Prob"].iloc[0])


def test_bad_hypotheses_and_fits(sleep_fit) -> None:
    with pytest.raises(BayesLMMError, match="'Dayz'"):
        sleep_fit.hypothesis("Dayz > 0")
    with pytest.raises(BayesLMMError, match="comparison"):
        sleep_fit.hypothesis("Days")
    with pytest.raises(BayesLMMError, match="linear"):
        sleep_fit.hypothesis("Days * Intercept > 0")
    with pytest.raises(BayesLMMError, match="level"):
        sleep_fit.hypothesis("Days > 0", level=95)
    with pytest.raises(BayesLMMError, match="prior_draws"):
        sleep_fit.hypothesis("Days = 0", prior_draws=0)
    with pytest.raises(BayesLMMError, match="compare_models"):
        bayeslmm.anova(sleep_fit, sleep_fit.reml())  # a Bayesian fit has no likelihood-ratio test


def test_summary_prints_the_probability_of_direction(sleep_fit) -> None:
    text = str(sleep_fit.summary(pd=True))
    assert "pd" in text.split("Fixed effects:")[1].splitlines()[1]  # the header row of the table
    assert "probability of direction" in text
    assert "pd" not in sleep_fit.summary().fixed.columns
