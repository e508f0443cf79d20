"""Simulation-based calibration of lmer (bayeslmm.check.sbc).

The fast test runs in the default suite; the slow ones (``-m slow``) are the
meaningful check whose results are recorded in docs/calibration.md.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayeslmm import BayesLMMError
from bayeslmm.check import _binned, rank_uniformity, sbc

N01 = {"dist": "Normal", "mu": 0, "sigma": 1}
HN1 = {"dist": "HalfNormal", "sigma": 1}
ALPHA = 0.001


def _grouped(n_groups: int, per_group: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    return pd.DataFrame({"x": rng.normal(size=n), "g": np.repeat([f"g{i}" for i in range(n_groups)], per_group)})


def _assert_calibrated(result, expected_params: list[str]) -> None:
    assert list(result.ranks.columns) == expected_params
    assert result.ranks.shape[0] == result.settings["n_sims"]
    assert result.ranks.min().min() >= 0 and result.ranks.max().max() <= result.thin_to
    p = result.pvalues
    threshold = ALPHA / len(p)
    assert (p > threshold).all(), f"rank histograms not uniform (Bonferroni {threshold:.2g}):\n{result.table()}"


def test_sbc_random_intercept_is_calibrated():
    data = _grouped(8, 5, seed=11)
    before = data.copy()
    priors = {"(Intercept)": N01, "x": N01, "sigma": HN1, "g": HN1}
    result = sbc("y ~ x + (1|g)", data, n_sims=60, priors=priors, draws=200, tune=200, chains=2, random_seed=2026)
    _assert_calibrated(result, ["(Intercept)", "x", "sd((Intercept)|g)", "sigma"])
    assert result.bins == 12
    fig = result.plot()
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4
    assert all(len(ax.patches) == result.bins for ax in visible)
    heights = [bar.get_height() for bar in visible[0].patches]
    assert heights == list(_binned(result.ranks["(Intercept)"].to_numpy(), result.thin_to, result.bins)[0])
    assert sum(heights) == 60
    pd.testing.assert_frame_equal(data, before)  # design_data is not modified (no response added)


def test_sbc_requires_explicit_priors():
    data = _grouped(4, 3, seed=1)
    with pytest.raises(BayesLMMError, match="sigma"):
        sbc("y ~ x + (1|g)", data, n_sims=2, priors={"(Intercept)": N01, "x": N01, "g": HN1})


def test_rank_uniformity_detects_nonuniform_ranks():
    rng = np.random.default_rng(0)
    uniform = rng.integers(0, 101, size=400)
    skewed = np.minimum(rng.integers(0, 101, size=400), rng.integers(0, 101, size=400))
    p = rank_uniformity(pd.DataFrame({"u": uniform, "s": skewed}), thin_to=100, bins=20)["p_value"]
    assert p["u"] > 0.001
    assert p["s"] < 1e-6


@pytest.mark.slow
def test_sbc_correlated_slopes_slow():
    data = _grouped(10, 6, seed=21)
    priors = {"(Intercept)": N01, "x": N01, "sigma": HN1, "g": HN1, "cor|g": {"dist": "LKJ", "eta": 2}}
    result = sbc("y ~ x + (x|g)", data, n_sims=200, priors=priors, draws=250, tune=300, chains=2, random_seed=7)
    print("\nSBC y ~ x + (x|g):", result.settings | {"priors": "see test"}, f"divergent fits: {(result.divergences > 0).sum()}")
    print(result.table().to_string())
    _assert_calibrated(
        result, ["(Intercept)", "x", "sd((Intercept)|g)", "sd(x|g)", "cor((Intercept),x|g)", "sigma"]
    )


@pytest.mark.slow
def test_sbc_crossed_slow():
    rng = np.random.default_rng(31)
    a, b = np.meshgrid([f"a{i}" for i in range(6)], [f"b{j}" for j in range(5)])
    data = pd.DataFrame({"a": np.tile(a.ravel(), 2), "b": np.tile(b.ravel(), 2)})
    data["x"] = rng.normal(size=len(data))
    priors = {"(Intercept)": N01, "x": N01, "sigma": HN1, "a": HN1, "b": HN1}
    result = sbc("y ~ x + (1|a) + (1|b)", data, n_sims=200, priors=priors, draws=250, tune=300, chains=2, random_seed=8)
    print("\nSBC y ~ x + (1|a) + (1|b):", result.settings | {"priors": "see test"},
          f"divergent fits: {(result.divergences > 0).sum()}")
    print(result.table().to_string())
    _assert_calibrated(result, ["(Intercept)", "x", "sd((Intercept)|a)", "sd((Intercept)|b)", "sigma"])


@pytest.mark.slow
def test_sbc_nested_collapsed_slow():
    # the collapsed model's nested algebra: inner groups integrated within each outer group
    rng = np.random.default_rng(41)
    a = np.repeat([f"a{i}" for i in range(8)], 9)
    b = np.tile(np.repeat(["b0", "b1", "b2"], 3), 8)
    data = pd.DataFrame({"a": a, "b": b, "x": rng.normal(size=a.size)})
    priors = {"(Intercept)": N01, "x": N01, "sigma": HN1, "a": HN1, "b:a": HN1}
    result = sbc("y ~ x + (1|a/b)", data, n_sims=200, priors=priors, draws=250, tune=300, chains=2, random_seed=9)
    print("\nSBC y ~ x + (1|a/b):", result.settings | {"priors": "see test"},
          f"divergent fits: {(result.divergences > 0).sum()}")
    print(result.table().to_string())
    assert set(result.settings["parameterization"].values()) == {"collapsed"}
    _assert_calibrated(result, ["(Intercept)", "x", "sd((Intercept)|b:a)", "sd((Intercept)|a)", "sigma"])
