"""predict() and posterior_predictive(): agreement with fitted(), re_form, new levels, intervals, chunking."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

import arviz as az
from bayeslmm import PredictionError, naming, predict as predict_mod
from bayeslmm.stages import model_design
from bayeslmm.paramdraws import ParamDraws, sample_new_effects
from conftest import draws


@pytest.fixture(scope="module")
def crossed():
    """A two-factor design with known parameters (three "draws"), no sampling."""
    rng = np.random.default_rng(7)
    n = 60
    df = pd.DataFrame(
        {
            "y": rng.normal(size=n),
            "x": rng.normal(size=n),
            "a": rng.choice(list("pqrs"), n),
            "b": rng.choice(["u", "v", "w"], n),
        }
    )
    design = model_design("y ~ x + (1 + x | a) + (1 | b)", df)
    S = 3
    params = ParamDraws(
        beta=rng.normal(size=(S, 2)),
        sigma=np.abs(rng.normal(size=S)) + 0.5,
        ranef=tuple(rng.normal(size=(S, b.n_levels, b.q)) for b in design.blocks),
        sd=tuple(np.ones((S, b.q)) for b in design.blocks),
        cor=tuple(np.broadcast_to(np.eye(b.q), (S, b.q, b.q)).copy() for b in design.blocks),
    )
    return df, design, params


def test_training_prediction_equals_fitted(sleep_fit):
    p = sleep_fit.predict()
    assert list(p.columns) == ["Estimate", "Est.Error", "l-95% CI", "u-95% CI"]
    assert p.index.equals(sleep_fit.design.frame.index)
    np.testing.assert_allclose(p["Estimate"], sleep_fit.fitted(), rtol=1e-10)
    assert (p["l-95% CI"] < p["Estimate"]).all() and (p["Estimate"] < p["u-95% CI"]).all()
    # Re-encoding the training rows as new data gives the same numbers.
    again = sleep_fit.predict(newdata=sleep_fit.design.frame)
    np.testing.assert_allclose(again.to_numpy(), p.to_numpy(), rtol=1e-10)


@pytest.mark.parametrize("na", ["~0", "NA", "0", " ~ 0 ", float("nan"), pd.NA, False])
def test_population_prediction_is_x_times_mean_beta(sleep_fit, na):
    p = sleep_fit.predict(re_form=na)
    beta = draws(sleep_fit.idata, naming.FIXED).reshape(-1, 2)
    np.testing.assert_allclose(p["Estimate"], sleep_fit.design.X @ beta.mean(axis=0), rtol=1e-10)
    # Per draw the population prediction is X beta, so its sd is that of X beta.
    np.testing.assert_allclose(p["Est.Error"], (beta @ sleep_fit.design.X.T).std(axis=0, ddof=1), rtol=1e-10)


def test_population_prediction_needs_no_grouping_column(sleep_fit):
    nd = pd.DataFrame({"Days": [0.0, 4.5]}, index=["a", "b"])
    p = sleep_fit.predict(nd, re_form="~0")
    assert list(p.index) == ["a", "b"]
    beta = draws(sleep_fit.idata, naming.FIXED).reshape(-1, 2).mean(axis=0)
    np.testing.assert_allclose(p["Estimate"], beta[0] + beta[1] * nd["Days"].to_numpy(), rtol=1e-10)


def test_re_form_formula_picks_factors(crossed):
    df, design, p = crossed
    ka = [k for k, b in enumerate(design.blocks) if b.factor == "a"][0]
    kb = 1 - ka
    gather = lambda k: np.einsum(  # noqa: E731
        "snq,nq->sn", p.ranef[k][:, design.blocks[k].group_idx], design.blocks[k].Z
    )
    only_a = p.beta @ design.X.T + gather(ka)
    np.testing.assert_allclose(predict_mod.predict(design, p, re_form="~(1|a)")["Estimate"], only_a.mean(axis=0), rtol=1e-12)
    # Only the factor matters, not the terms left of the bar.
    np.testing.assert_allclose(
        predict_mod.predict(design, p, re_form="(x|a)")["Estimate"], only_a.mean(axis=0), rtol=1e-12
    )
    both = predict_mod.predict(design, p)
    np.testing.assert_allclose(both["Estimate"], (only_a + gather(kb)).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(predict_mod.predict(design, p, re_form="~(1|a) + (1|b)")["Estimate"], both["Estimate"])
    with pytest.raises(PredictionError, match="'c'"):
        predict_mod.predict(design, p, re_form="~(1|c)")
    with pytest.raises(PredictionError, match="re_form"):
        predict_mod.predict(design, p, re_form=3.5)


def test_response_intervals_are_wider_than_mean_intervals(sleep_fit):
    mean = sleep_fit.predict(kind="mean")
    resp = sleep_fit.predict(kind="response", random_seed=3)
    assert ((resp["u-95% CI"] - resp["l-95% CI"]) > (mean["u-95% CI"] - mean["l-95% CI"])).all()
    # The noise has sd sigma, so the predictive sd is about sqrt(sd_mean^2 + sigma^2).
    sigma = draws(sleep_fit.idata, naming.SIGMA).reshape(-1)
    expected = np.sqrt(mean["Est.Error"] ** 2 + np.mean(sigma**2))
    assert np.median(np.abs(resp["Est.Error"] / expected - 1)) < 0.05
    again = sleep_fit.predict(kind="response", random_seed=3)
    pd.testing.assert_frame_equal(resp, again)
    assert not resp.equals(sleep_fit.predict(kind="response", random_seed=4))


def test_new_levels(sleep_fit):
    nd = pd.DataFrame({"Days": [3, 3, 3, 3], "Subject": [308, 1001, 1001, 1002]})
    pop = sleep_fit.predict(nd, new_levels="population")
    smp = sleep_fit.predict(nd, new_levels="sample", random_seed=1)
    seen = sleep_fit.predict(nd.iloc[:1])
    pd.testing.assert_frame_equal(pop.iloc[:1], seen)
    pd.testing.assert_frame_equal(smp.iloc[:1], seen)
    # Unseen levels: population prediction, or wider with sampled group effects.
    popu = sleep_fit.predict(nd.iloc[1:], re_form="~0")
    np.testing.assert_allclose(pop.iloc[1:].to_numpy(), popu.to_numpy())
    width = lambda d: d["u-95% CI"] - d["l-95% CI"]  # noqa: E731
    assert (width(smp.iloc[1:]) > 1.5 * width(pop.iloc[1:])).all()
    # Rows of one new level share its sampled effect; different new levels do not.
    pd.testing.assert_series_equal(smp.iloc[1], smp.iloc[2], check_names=False)
    assert smp.iloc[3]["Estimate"] != smp.iloc[1]["Estimate"]
    with pytest.raises(PredictionError, match=r"2 level\(s\) of the grouping factor 'Subject'.*: 1001, 1002 "):
        sleep_fit.predict(nd, new_levels="error")
    # Excluding the factor makes unseen levels irrelevant.
    sleep_fit.predict(nd, re_form="~0", new_levels="error")


def test_sampled_new_effects_have_the_group_covariance(sleep_fit):
    cov = sleep_fit.params.cov[0][:50]
    new = sample_new_effects(cov, 4000, np.random.default_rng(0))
    emp = np.einsum("snq,snr->sqr", new, new) / new.shape[1]
    se = np.sqrt((cov**2 + np.einsum("sqq,srr->sqr", cov, cov)) / new.shape[1])
    assert np.all(np.abs(emp - cov) < 5 * se)


def test_bad_arguments_raise(sleep_fit):
    with pytest.raises(PredictionError, match="Days"):
        sleep_fit.predict(pd.DataFrame({"Subject": ["308"]}))
    with pytest.raises(PredictionError, match="kind"):
        sleep_fit.predict(kind="link")
    with pytest.raises(PredictionError, match="new_levels"):
        sleep_fit.predict(new_levels="zero")
    with pytest.raises(PredictionError, match="level"):
        sleep_fit.predict(level=95)


def test_chunking_does_not_change_results(sleep_fit, monkeypatch):
    nd = sleep_fit.design.frame.iloc[:37]
    whole = sleep_fit.predict(nd, level=0.9)
    monkeypatch.setattr(predict_mod, "CHUNK_VALUES", 4000 * 2 * 5)  # 5 rows per chunk
    chunked = sleep_fit.predict(nd, level=0.9)
    pd.testing.assert_frame_equal(whole, chunked)
    assert list(whole.columns[2:]) == ["l-90% CI", "u-90% CI"]


def test_posterior_predictive_group(sleep_fit):
    fit = dataclasses.replace(sleep_fit, idata=sleep_fit.idata.copy())
    tree = fit.posterior_predictive(random_seed=5)
    assert tree is fit.idata and "posterior_predictive" in tree.children
    assert "posterior_predictive" not in sleep_fit.idata.children
    y_rep = tree["posterior_predictive"][naming.LIKELIHOOD]
    post = tree.posterior
    assert y_rep.dims == ("chain", "draw", naming.OBS_DIM)
    assert y_rep.shape == (post.sizes["chain"], post.sizes["draw"], fit.design.nobs)
    # y_rep = mu + noise: its mean over draws is near fitted(), within Monte Carlo error.
    sigma = float(draws(fit.idata, naming.SIGMA).mean())
    S = y_rep.shape[0] * y_rep.shape[1]
    diff = y_rep.values.reshape(S, -1).mean(axis=0) - fit.fitted().to_numpy()
    assert np.abs(diff).max() < 5 * sigma / np.sqrt(S)
    az.plot_ppc_dist(tree, num_samples=20)
