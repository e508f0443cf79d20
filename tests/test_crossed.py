"""The crossed posterior (bayeslmm.crossed): the largest crossed factor's group effects integrated out.

Checked against outside references: the log posterior against a dense
multivariate normal density (scipy) plus the priors, its gradient against finite
differences, the posterior against the full PyMC model on the same priors
(within Monte Carlo error) on Penicillin and on a simulated design with a
nested factor, and lme4's REML fit of Penicillin in tests/test_lme4_agreement.py
(the default Penicillin fit takes this path).
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import bayeslmm
from bayeslmm import io, naming
from bayeslmm.stages import model_design
from bayeslmm.collapsed.densities import unconstrained_logp
from bayeslmm.crossed import crossed_structure
from bayeslmm.crossed.posterior import CrossedPosterior
from bayeslmm.parameterization import full_model_parameterization, fully_collapsed, partly_collapsed, plan_parameterization
from bayeslmm.priors import make_priors
from conftest import bayes_fit, case, case_data

FAMILY_LEVEL = 2 * stats.norm.sf(3.0)  # the two-sided level of one 3-MCSE check
SIM_FORMULA = "y ~ x + (1 | subj) + (1 | item) + (1 | cat)"


def bonferroni_z(k: int) -> float:
    """|z| bound for k simultaneous comparisons at the family-wise level of one 3-sigma check."""
    return float(stats.norm.isf(FAMILY_LEVEL / (2 * k)))


def simulated(seed: int = 3) -> pd.DataFrame:
    """Subjects × items, items nested in categories: 30 subjects rate 12 of 24 items each (360 rows), 8 categories."""
    rng = np.random.default_rng(seed)
    cat_of = np.arange(24) % 8
    subj = np.repeat(np.arange(30), 12)
    item = np.concatenate([rng.choice(24, 12, replace=False) for _ in range(30)])
    x = rng.normal(size=subj.size)
    y = (1.0 + 0.4 * x + rng.normal(0, 0.7, 30)[subj] + rng.normal(0, 0.5, 24)[item] + rng.normal(0, 0.8, 8)[cat_of[item]]
         + rng.normal(0, 1.0, subj.size))
    return pd.DataFrame({"y": y, "x": x, "subj": [f"s{i}" for i in subj], "item": [f"i{i}" for i in item],
                         "cat": [f"c{i}" for i in cat_of[item]]})


def _fit(formula: str, data: pd.DataFrame, **kwargs):
    opts = dict(draws=1000, tune=1000, chains=4, random_seed=20261129, progressbar=False)
    opts.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bayeslmm.lmer(formula, data, **opts)


@pytest.fixture(scope="module")
def sim_pair():
    df = simulated()
    return _fit(SIM_FORMULA, df, collapse=True), _fit(SIM_FORMULA, df, collapse=False)


# ---------------------------------------------------------------------------
# Which designs, and the plan
# ---------------------------------------------------------------------------
def test_structure_and_plan():
    pen = model_design(case("penicillin")["formula"], case_data("penicillin"))
    s = crossed_structure(pen)
    assert pen.blocks[s.integrated].label == "plate" and [pen.blocks[k].label for k in s.sampled] == ["sample"]
    assert "collapsed" not in plan_parameterization(pen).values()  # the default: the full model
    plan = plan_parameterization(pen, collapse=True)
    assert plan["plate"] == "collapsed" and plan["sample"] in ("centered", "noncentered")
    assert partly_collapsed(plan) and not fully_collapsed(plan)
    assert "collapsed" not in full_model_parameterization(pen, plan).values()
    assert "collapsed" not in plan_parameterization(pen, collapse=False).values()
    assert "collapsed" not in plan_parameterization(pen, requested={"plate": "centered"}).values()
    sim = model_design(SIM_FORMULA, simulated())
    assert sim.blocks[crossed_structure(sim).integrated].label == "subj"
    # a correlated slope block, or a one-factor design, does not take this path
    df = simulated().assign(z=lambda d: d.x * 2)
    assert crossed_structure(model_design("y ~ x + (x | subj) + (1 | item)", df)) is None
    assert crossed_structure(model_design("y ~ x + (1 | subj)", df)) is None


# ---------------------------------------------------------------------------
# The log posterior
# ---------------------------------------------------------------------------
def _posteriors():
    sim = model_design(SIM_FORMULA, simulated())
    pen = model_design(case("penicillin")["formula"], case_data("penicillin"))
    out = []
    for design in (sim, pen):
        for how in ("centered", "noncentered"):
            param = {b.label: how for b in design.blocks}
            out.append(CrossedPosterior.build(design, make_priors(design, None), param))
    return out


@pytest.mark.parametrize("k", range(4))
def test_gradient_matches_finite_differences(k):
    post = _posteriors()[k]
    rng = np.random.default_rng(k)
    theta = post.start() + 0.1 * rng.standard_normal(post.size)
    _, grad = post.logp_dlogp(theta)
    h = 1e-6
    num = np.array([(post.logp_dlogp(theta + e)[0] - post.logp_dlogp(theta - e)[0]) / (2 * h) for e in np.eye(post.size) * h])
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k", range(4))
def test_log_posterior_is_dense_normal_plus_priors(k):
    # log p = log N(y; Xβ + Σ_k Z_k b_k, σ²I + τ² z z') (the integrated block, R: mvtnorm::dmvnorm)
    #         + the priors of β, σ and the sds in their unconstrained coordinates + Σ log N(b_k; 0, sd_k²)
    post = _posteriors()[k]
    design = post.design
    rng = np.random.default_rng(10 + k)
    theta = post.start() + 0.1 * rng.standard_normal(post.size)
    lp, _ = post.logp_dlogp(theta)
    named = post.named_draws(theta[None], np.random.default_rng(0))
    beta, sigma = named[naming.FIXED][0], float(named[naming.SIGMA][0])
    mean = design.X @ beta
    prior = 0.0
    for j, kk in enumerate(post.structure.sampled):
        b = design.blocks[kk]
        eff = named[naming.ranef(b.label)][0, :, 0]
        sd = float(named[naming.sd(b.label)][0, 0])
        mean = mean + b.Z[:, 0] * eff[b.group_idx]
        if post.noncentered[j]:  # the coordinates are standard normal offsets: N(u; 0, 1) with b = sd u
            prior += stats.norm.logpdf(eff / sd).sum()
        else:
            prior += stats.norm.logpdf(eff, 0, sd).sum()
    a = design.blocks[post.structure.integrated]
    tau = float(named[naming.sd(a.label)][0, 0])
    Za = np.zeros((design.nobs, a.n_levels))
    Za[np.arange(design.nobs), a.group_idx] = a.Z[:, 0]
    cov = sigma**2 * np.eye(design.nobs) + tau**2 * Za @ Za.T
    loglik = stats.multivariate_normal(mean, cov).logpdf(design.y)
    for i in range(post.p + 1 + len(design.blocks)):
        spec = post.specs[i]
        row = np.array(list(spec.params) + [spec.lower, spec.upper])
        prior += unconstrained_logp(spec.code, spec.transform, row, float(theta[i]), 0.0)[0]
    assert lp == pytest.approx(loglik + prior, rel=1e-9, abs=1e-7)


def test_start_maps_back_to_the_values_given():
    post = _posteriors()[0]  # centered: hierarchical centering on the intercept and on the nesting factor
    design = post.design
    assert list(post.parent) == [1, -1]  # items centered on their category, categories on the intercept
    rng = np.random.default_rng(1)
    init = {naming.FIXED: np.array([0.8, 0.3]), naming.SIGMA: 1.1}
    for b in design.blocks:
        init[naming.sd(b.label)] = np.array([0.4])
        if b.label != "subj":
            init[naming.ranef(b.label)] = rng.normal(size=(b.n_levels, 1))
    named = post.named_draws(post.start(init)[None], np.random.default_rng(0))
    np.testing.assert_allclose(named[naming.FIXED][0], init[naming.FIXED])
    assert float(named[naming.SIGMA][0]) == pytest.approx(1.1)
    for b in design.blocks:
        assert float(named[naming.sd(b.label)][0, 0]) == pytest.approx(0.4)
        if b.label != "subj":
            np.testing.assert_allclose(named[naming.ranef(b.label)][0], init[naming.ranef(b.label)])


# ---------------------------------------------------------------------------
# The posterior against the full model
# ---------------------------------------------------------------------------
def _parameter_draws(fit) -> dict[str, np.ndarray]:
    post = fit.idata.posterior
    out = {f"beta[{n}]": post[naming.FIXED].values[..., j] for j, n in enumerate(fit.design.fixed_names)}
    out["sigma"] = post[naming.SIGMA].values
    for b in fit.design.blocks:
        out[f"sd[{b.label}]"] = post[naming.sd(b.label)].values[..., 0]
        for j, level in enumerate(b.levels):
            out[f"r[{b.label}, {level}]"] = post[naming.ranef(b.label)].values[..., j, 0]
    return out


def _assert_same_posterior(crossed, full):
    assert partly_collapsed(crossed.parameterization) and "collapsed" not in full.parameterization.values()
    a, b = _parameter_draws(crossed), _parameter_draws(full)
    assert set(a) == set(b)
    zmax = bonferroni_z(len(a))
    for key in a:  # posterior means agree within Monte Carlo error (Bonferroni over every parameter and group effect)
        se = np.hypot(float(az.mcse(a[key], method="mean")), float(az.mcse(b[key], method="mean")))
        assert abs(float(a[key].mean() - b[key].mean())) < zmax * se, (key, a[key].mean(), b[key].mean(), se)
    for key in [k for k in a if not k.startswith("r[")]:  # and so do the posterior sds, to 10%
        assert a[key].std() == pytest.approx(b[key].std(), rel=0.1), key


def test_penicillin_matches_the_full_model():
    # Penicillin (24 plates × 6 samples): plates integrated out, samples sampled
    crossed, full = bayes_fit("penicillin", collapse=True), bayes_fit("penicillin")
    assert crossed.parameterization["plate"] == "collapsed"
    assert crossed.diagnostics.divergences == 0
    _assert_same_posterior(crossed, full)


def test_simulated_nested_and_crossed_matches_the_full_model(sim_pair):
    crossed, full = sim_pair
    assert crossed.parameterization["subj"] == "collapsed"
    _assert_same_posterior(crossed, full)


def test_fit_object_outputs(sim_pair):
    crossed, _ = sim_pair
    footer = str(crossed.summary())
    assert "crossed (group effects of subj integrated out) model" in footer
    assert crossed.ranef()["subj"].shape == (30, 1)
    back = io.from_tree(io.to_tree(crossed))
    assert back.parameterization == crossed.parameterization
    np.testing.assert_array_equal(back.idata.posterior[naming.SIGMA].values, crossed.idata.posterior[naming.SIGMA].values)
    assert {v.name for v in back.model.free_RVs} == {v.name for v in crossed.model.free_RVs}


def test_seeded_fits_repeat():
    df = simulated()
    a = _fit(SIM_FORMULA, df.iloc[:150], draws=50, tune=50, chains=2, collapse=True)
    b = _fit(SIM_FORMULA, df.iloc[:150], draws=50, tune=50, chains=2, collapse=True)
    np.testing.assert_array_equal(a.idata.posterior[naming.ranef("subj")].values, b.idata.posterior[naming.ranef("subj")].values)
