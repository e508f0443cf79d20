"""Model stage without sampling: variable names, dims and coords for every syntax form, and priors."""

import numpy as np
import pandas as pd
import pymc as pm
import pytest

import bayeslmm
from bayeslmm import naming
from bayeslmm.design import build_design
from bayeslmm.errors import PriorError
from bayeslmm.formula import parse_formula
from bayeslmm.model import build_model
from bayeslmm.priors import Prior, make_priors


@pytest.fixture(scope="module")
def df():
    rng = np.random.default_rng(3)
    n = 96
    return pd.DataFrame(
        {
            "y": rng.normal(10, 2, size=n),
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
            "recipe": rng.choice(["A", "B"], n),
            "g": np.repeat(np.arange(8), 12),
            "h": np.tile(np.arange(4), 24),
            "a": np.repeat(["p", "q", "r"], 32),
            "b": np.tile(np.repeat(["u", "v"], 16), 3),
        }
    )


def build(formula, data, priors=None, parameterization=None):
    d = build_design(parse_formula(formula), data)
    return d, build_model(d, make_priors(d, priors), parameterization)


def free_names(model):
    return {v.name for v in model.free_RVs}


def all_names(model):
    return set(model.named_vars)


CASES = [
    # formula, free RVs (besides sigma), deterministic outputs
    ("y ~ x + (1|g)", {"Intercept_centered", "beta_slopes", "sd_g", "z_g"}, {"beta", "r_g"}),
    ("y ~ x + (x|g)", {"Intercept_centered", "beta_slopes", "chol_g", "z_g"}, {"beta", "r_g", "sd_g", "cor_g"}),
    ("y ~ x + (1+x|g)", {"Intercept_centered", "beta_slopes", "chol_g", "z_g"}, {"r_g", "cor_g"}),
    ("y ~ x + (0+x|g)", {"Intercept_centered", "beta_slopes", "sd_g", "z_g"}, {"r_g"}),
    ("y ~ x + (-1+x|g)", {"Intercept_centered", "beta_slopes", "sd_g", "z_g"}, {"r_g"}),
    ("y ~ x + (x||g)", {"Intercept_centered", "beta_slopes", "sd_g", "z_g", "sd_g.1", "z_g.1"}, {"r_g", "r_g.1"}),
    ("y ~ 1 + (1|a/b)", {"beta", "sd_a", "z_a", "sd_b:a", "z_b:a"}, {"r_a", "r_b:a"}),
    ("y ~ 1 + (1|g) + (1|h)", {"beta", "sd_g", "sd_h", "z_g", "z_h"}, {"r_g", "r_h"}),
    ("y ~ 0 + recipe + (1|g)", {"beta", "sd_g", "z_g"}, {"r_g"}),
    ("y ~ x*recipe + (x|g) + (1|h)", {"Intercept_centered", "beta_slopes", "chol_g", "sd_h"}, {"beta", "cor_g", "r_h"}),
]


@pytest.mark.parametrize("formula, free, det", CASES)
def test_variable_names(df, formula, free, det):
    _, m = build(formula, df)
    assert free | {"sigma"} <= free_names(m)
    assert det <= all_names(m)


@pytest.mark.parametrize("formula, free, det", CASES)
def test_dims_and_coords_carry_labels(df, formula, free, det):
    d, m = build(formula, df)
    assert list(m.coords[naming.FIXED_DIM]) == list(d.fixed_names)
    for b in d.blocks:
        r = naming.ranef(b.label)
        assert m.named_vars_to_dims[r] == (naming.level_dim(b.label), naming.term_dim(b.label))
        assert list(m.coords[naming.level_dim(b.label)]) == list(b.levels)
        assert list(m.coords[naming.term_dim(b.label)]) == list(b.terms)
        assert m.named_vars_to_dims[naming.sd(b.label)] == (naming.term_dim(b.label),)
        if b.q > 1:
            assert m.named_vars_to_dims[naming.cor(b.label)] == (naming.term_dim(b.label), naming.term_dim2(b.label))
    assert m.named_vars_to_dims[naming.LIKELIHOOD] == (naming.OBS_DIM,)


def test_prior_predictive_shapes(df):
    d, m = build("y ~ x + (x|g) + (1|h)", df)
    with m:
        prior = pm.sample_prior_predictive(draws=20, random_seed=1)
    assert prior.prior["r_g"].shape == (1, 20, 8, 2)
    assert prior.prior["beta"].shape == (1, 20, 2)
    assert prior.prior_predictive["y"].shape == (1, 20, len(df))
    # the deterministic intercept undoes the centering: X beta equals alpha + Xc beta_s
    beta = prior.prior["beta"].values[0]
    alpha = prior.prior["Intercept_centered"].values[0]
    xbar = df.x.mean()
    np.testing.assert_allclose(beta[:, 0] + xbar * beta[:, 1], alpha)


def test_group_effects_are_gathered_not_dense(df):
    """The model's log-density equals a hand computation with r[group_idx]."""
    d, m = build("y ~ x + (x|g)", df)
    pt = m.initial_point()
    rng = np.random.default_rng(0)
    pt = {k: v + rng.normal(scale=0.1, size=np.shape(v)) for k, v in pt.items()}
    logp = m.compile_logp(vars=[m["y"]], sum=True)(pt)
    outs = m.replace_rvs_by_values([m["beta"], m["r_g"], m["sigma"]])
    fn = m.compile_fn(outs, inputs=m.value_vars, on_unused_input="ignore")
    beta, r, sigma = fn(pt)
    mu = d.X @ beta + (r[d.blocks[0].group_idx] * d.blocks[0].Z).sum(1)
    from scipy.stats import norm

    np.testing.assert_allclose(logp, norm.logpdf(d.y, mu, sigma).sum(), rtol=1e-8)


def test_mass_matrix_is_dense_for_small_models(df, monkeypatch):
    from bayeslmm.sampling import driver as sampling

    _, m = build("y ~ x + (1|g) + (1|h)", df)  # 2 + 1 + 8 + 1 + 4 + 1 (sigma) = 17 coordinates
    assert sum(v.size for v in m.initial_point().values()) == 17
    assert sampling.mass_matrix(m) == "full"
    monkeypatch.setattr(sampling, "DENSE_MASS_MAX_DIM", 16)
    assert sampling.mass_matrix(m) == "diag"


def test_centered_parameterization(df):
    _, m = build("y ~ x + (x|g) + (1|h)", df, parameterization={"g": "centered", "h": "centered"})
    assert {"r_g", "r_h"} <= free_names(m)
    assert "z_g" not in all_names(m)


def test_default_prior_scales(df):
    d = build_design(parse_formula("y ~ x + (x|g)"), df)
    p = make_priors(d)
    sy = df.y.std()
    assert p.fixed("x").kwargs["sigma"] == pytest.approx(2.5 * sy / df.x.std())
    assert p.fixed("(Intercept)").kwargs == pytest.approx({"mu": df.y.mean(), "sigma": 2.5 * sy})
    assert p.sigma() == Prior("HalfCauchy", beta=pytest.approx(sy))
    assert p.sd("g", "x").kwargs["beta"] == pytest.approx(sy / df.x.std())
    assert p.sd("g", "(Intercept)").kwargs["beta"] == pytest.approx(sy)
    assert p.cor("g").dist == "LKJ"


def test_prior_overrides(df):
    d = build_design(parse_formula("y ~ x + (x|g) + (1|h)"), df)
    p = make_priors(
        d,
        {
            "x": Prior("StudentT", nu=3, mu=0, sigma=1),
            "sigma": {"dist": "HalfNormal", "sigma": 2},
            "g": {"dist": "HalfNormal", "sigma": 3},
            "1|h": {"dist": "Exponential", "lam": 1},
            "cor|g": {"dist": "LKJ", "eta": 2},
        },
    )
    assert p.fixed("x").dist == "StudentT"
    assert p.sigma().kwargs == {"sigma": 2.0}
    assert p.sd("g", "x") == p.sd("g", "(Intercept)") == Prior("HalfNormal", sigma=3.0)
    assert p.sd("h", "(Intercept)").dist == "Exponential"
    assert p.cor("g").kwargs == {"eta": 2.0}
    table = p.table()
    assert (table["source"] == "user").sum() == 6
    model = build_model(d, p)
    assert "sigma" in free_names(model)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"nope": {"dist": "Normal", "mu": 0, "sigma": 1}}, "Unknown prior key 'nope'"),
        ({"sigma": {"dist": "Normal", "mu": 0, "sigma": 1}}, "does not fit a sigma"),
        ({"x": {"mu": 0}}, "needs a 'dist'"),
        ({"x": {"dist": "Normal", "mu": "zero", "sigma": 1}}, "finite number"),
        ({"x": 3.0}, "must be a bayeslmm.Prior"),
    ],
)
def test_bad_priors(df, overrides, message):
    d = build_design(parse_formula("y ~ x + (x|g)"), df)
    with pytest.raises(PriorError, match=message):
        make_priors(d, overrides)


def test_fit_priors_is_shown(sleep_fit):
    text = str(sleep_fit.priors)
    assert "HalfCauchy" in text and "LKJ" in text and "Days" in text


def test_lmer_rejects_bad_settings(df):
    with pytest.raises(bayeslmm.SamplingError, match="draws"):
        bayeslmm.lmer("y ~ x + (1|g)", df, draws=0)
    with pytest.raises(bayeslmm.SamplingError, match="sampler"):
        bayeslmm.lmer("y ~ x + (1|g)", df, sampler="stan")
    with pytest.raises(bayeslmm.BayesLMMError, match="method"):
        bayeslmm.lmer("y ~ x + (1|g)", df, method="OLS")
