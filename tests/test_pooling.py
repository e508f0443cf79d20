"""pooling(): complete, no and partial pooling per level, against direct least squares and coef()."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayeslmm import BayesLMMError
from bayeslmm.stages import model_design
from bayeslmm.paramdraws import ParamDraws
from bayeslmm.pooling import no_pooling_fits, pooling_table
from conftest import bayes_fit

COLUMNS = ["grpvar", "grp", "term", "n", "complete_pooling", "no_pooling", "partial_pooling"]


def _point_params(design) -> ParamDraws:
    return ParamDraws(
        beta=np.zeros((1, len(design.fixed_names))),
        sigma=np.ones(1),
        ranef=tuple(np.zeros((1, b.n_levels, b.q)) for b in design.blocks),
        sd=tuple(np.ones((1, b.q)) for b in design.blocks),
        cor=tuple(np.eye(b.q)[None] for b in design.blocks),
    )


def test_layout_and_group_sizes(sleep_fit):
    tab = sleep_fit.pooling()
    assert list(tab.columns) == COLUMNS
    assert (tab["grpvar"] == "Subject").all()
    assert list(tab["term"].unique()) == ["(Intercept)", "Days"]
    assert len(tab) == 2 * 18 and (tab["n"] == 10).all()
    assert tab.attrs["note"] == ""


def test_no_and_complete_pooling_are_least_squares_fits(sleep_fit):
    d = sleep_fit.design
    tab = sleep_fit.pooling().set_index(["term", "grp"])
    frame = d.frame.reset_index(drop=True)
    for level, rows in frame.groupby("Subject", observed=True).groups.items():
        X = np.column_stack([np.ones(len(rows)), frame.loc[rows, "Days"]])
        coef = np.linalg.lstsq(X, frame.loc[rows, "Reaction"].to_numpy(), rcond=None)[0]
        got = [tab.loc[("(Intercept)", str(level)), "no_pooling"], tab.loc[("Days", str(level)), "no_pooling"]]
        np.testing.assert_allclose(got, coef, rtol=1e-9)
    ols = np.linalg.lstsq(d.X, d.y, rcond=None)[0]
    np.testing.assert_allclose(tab.xs("(Intercept)")["complete_pooling"], ols[0], rtol=1e-12)
    np.testing.assert_allclose(tab.xs("Days")["complete_pooling"], ols[1], rtol=1e-12)


def test_partial_pooling_is_coef_and_shrinks(sleep_fit):
    tab = sleep_fit.pooling()
    coef = sleep_fit.coef()["Subject"]
    for term, df in tab.groupby("term", sort=False):
        np.testing.assert_allclose(df["partial_pooling"], coef.loc[df["grp"], term], rtol=1e-10)
        # Partial pooling estimates vary less across groups than no pooling ones.
        assert df["partial_pooling"].std() < df["no_pooling"].std()
    # With correlated intercepts and slopes, shrinkage is toward the centre in two dimensions (one
    # coordinate can overshoot the complete-pooling value), so measure it in the metric of the group
    # covariance T: the BLUP is T(T + S)^-1 (no pooling - complete), a contraction in that metric.
    T = sleep_fit.params.cov[0].mean(axis=0)
    wide = tab.pivot(index="grp", columns="term")
    terms = ["(Intercept)", "Days"]
    c, n, p = (wide[k][terms].to_numpy() for k in ("complete_pooling", "no_pooling", "partial_pooling"))
    dist = lambda v: np.einsum("gi,ij,gj->g", v, np.linalg.inv(T), v)  # noqa: E731
    assert (dist(p - c) < dist(n - c)).mean() >= 0.9


def test_terms_outside_the_block_enter_as_an_offset():
    fit = bayes_fit("sleep_int")  # Reaction ~ Days + (1 | Subject); shared with other modules
    d = fit.design
    tab = fit.pooling()
    assert list(tab["term"].unique()) == ["(Intercept)"]
    ols = np.linalg.lstsq(d.X, d.y, rcond=None)[0]
    frame = d.frame.reset_index(drop=True)
    adjusted = frame["Reaction"] - ols[1] * frame["Days"]
    expected = adjusted.groupby(frame["Subject"].astype(str)).mean()
    np.testing.assert_allclose(tab.set_index("grp")["no_pooling"], expected.loc[tab["grp"]], rtol=1e-10)
    # A random intercept alone shrinks every group part of the way to complete pooling.
    lam = (tab["partial_pooling"] - tab["complete_pooling"]) / (tab["no_pooling"] - tab["complete_pooling"])
    assert ((lam > 0) & (lam < 1)).all()


def test_vectorised_group_fits_match_lstsq():
    rng = np.random.default_rng(11)
    n, groups = 3000, 400
    idx = rng.integers(0, groups, n)
    Z = np.column_stack([np.ones(n), rng.normal(size=n), rng.normal(size=n) * 100])
    y = rng.normal(size=n)
    coefs, sizes = no_pooling_fits(idx, groups, Z, y)
    assert (sizes == np.bincount(idx, minlength=groups)).all()
    for g in range(groups):
        rows = idx == g
        if rows.sum() >= 3:
            np.testing.assert_allclose(coefs[g], np.linalg.lstsq(Z[rows], y[rows], rcond=None)[0], rtol=1e-7, atol=1e-10)
        else:
            assert np.isnan(coefs[g]).all()


def test_groups_that_cannot_be_fit_are_nan_with_a_note():
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"y": rng.normal(size=23), "x": np.r_[np.tile(np.arange(5.0), 4), 1.0, 2.0, 3.0]})
    df["g"] = ["a"] * 5 + ["b"] * 5 + ["c"] * 5 + ["d"] * 5 + ["e", "f", "f"]
    df.loc[df["g"] == "d", "x"] = 2.0  # no spread in x: the slope cannot be estimated
    design = model_design("y ~ x + (x | g)", df)
    with pytest.warns(UserWarning, match="'d', 'e'"):
        tab = pooling_table(design, _point_params(design))
    nan_levels = sorted(tab.loc[tab["no_pooling"].isna(), "grp"].unique())
    assert nan_levels == ["d", "e"]
    assert "d" in tab.attrs["note"] and "e" in tab.attrs["note"]
    assert tab.loc[tab["grp"] == "f", "no_pooling"].notna().all()
    with pytest.raises(BayesLMMError, match="'h'"):
        pooling_table(design, _point_params(design), factor="h")
