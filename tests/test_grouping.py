"""Grouping levels: identity by typed component values, unambiguous labels, unseen levels in new data.

Issue 10 §3: with ``(1|a:b)`` or ``(1|a/b)``, the levels ``a = "p:q", b = "r"``
and ``a = "p", b = "q:r"`` were both labelled ``p:q:r`` and predicted alike,
though their true effects are +10 and -10. Issue 11 §3: a level the fit never
saw fell back to the population line without a word, and ``308.0``, ``"308.0"``
and ``" 308"`` were all unseen when the fit saw the integer 308.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm import PredictionError, io
from bayeslmm.grouping import factor_codes, level_label, match_levels


def _estimate(pred) -> np.ndarray:
    """The point predictions, whether predict returned a Series (REML) or a table with an Estimate column."""
    return np.asarray(pred["Estimate"] if isinstance(pred, pd.DataFrame) else pred, dtype=float)


# ---------------------------------------------------------------------------
# Labels and matching
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, label",
    [
        ((308,), "308"),
        ((308.0,), "308"),  # R prints the level 308
        ((2.5,), "2.5"),
        (("A",), "A"),
        (("p:q",), "p:q"),  # one factor: no joining, nothing to quote
        (("u", "p"), "u:p"),  # lme4's label
        (("p:q", "r"), '"p:q":r'),
        (("p", "q:r"), 'p:"q:r"'),
        (('say "hi"', "x"), '"say \\"hi\\"":x'),
        ((True, 3), "True:3"),
    ],
)
def test_level_labels(key, label):
    assert level_label(key) == label


def test_colliding_components_get_distinct_labels():
    frame = pd.DataFrame({"a": ["p:q", "p", "p:q", "p"], "b": ["r", "q:r", "r", "q:r"]})
    codes, keys, labels, kinds = factor_codes(frame, ("a", "b"))
    assert set(keys) == {("p:q", "r"), ("p", "q:r")}
    assert len(set(labels)) == 2 and kinds == ("string", "string")
    assert codes[0] == codes[2] != codes[1] == codes[3]


def test_new_values_match_by_the_type_the_fit_saw():
    train = pd.DataFrame({"s": [308, 309, 310]})
    _, keys, _, kinds = factor_codes(train, ("s",))
    new = pd.DataFrame({"s": pd.Series([308.0, " 308", "308", "308.0", True, 310, 311], dtype=object)})
    idx, unseen = match_levels(new, ("s",), keys, kinds)
    assert idx.tolist() == [0, -1, -1, -1, -1, 2, -1]
    assert unseen == [(" 308",), ("308",), ("308.0",), (True,), (311,)]
    strings = pd.DataFrame({"s": ["308", "A"]})
    _, skeys, _, skinds = factor_codes(strings, ("s",))
    assert match_levels(pd.DataFrame({"s": [308, "308"]}).astype(object), ("s",), skeys, skinds)[0].tolist() == [-1, 0]


# ---------------------------------------------------------------------------
# The collision of issue 10, through REML, NUTS and save/load
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def collide() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for a, b, effect in [("p:q", "r", 10.0), ("p", "q:r", -10.0), ("s", "t", 0.0), ("u", "v", 0.0), ("w", "x", 0.0),
                         ("p", "t", 0.0)]:
        for _ in range(12):
            rows.append({"a": a, "b": b, "x": rng.normal(), "y": 5 + effect + rng.normal()})
    return pd.DataFrame(rows)


NEW = pd.DataFrame({"a": ["p:q", "p"], "b": ["r", "q:r"], "x": [0.0, 0.0]})


def _check(fit, factor: str, first: str, second: str, effects: bool = True) -> None:
    table = fit.ranef()[factor]
    assert table.index.is_unique and len(table) == 6 and {first, second} <= set(table.index)
    effect = table.iloc[:, 0]
    if effects:
        assert effect[first] == pytest.approx(10, abs=1.0) and effect[second] == pytest.approx(-10, abs=1.0)
    pred = _estimate(fit.predict(NEW))
    assert pred[0] == pytest.approx(15, abs=1.0) and pred[1] == pytest.approx(-5, abs=1.0)
    back = io.from_tree(io.to_tree(fit))
    np.testing.assert_allclose(_estimate(back.predict(NEW)), _estimate(fit.predict(NEW)), rtol=1e-10)
    assert list(back.ranef()[factor].index) == list(table.index)


@pytest.mark.parametrize("method", ["REML", "NUTS"])
def test_colliding_interaction_levels_are_distinct_groups(collide, method):
    opts = {} if method == "REML" else dict(draws=300, tune=300, chains=2, cores=1, random_seed=2, progressbar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bayeslmm.lmer("y ~ x + (1|a:b)", collide, method=method, **opts)
    _check(fit, "a:b", '"p:q":r', 'p:"q:r"')


def test_colliding_nested_levels_are_distinct_groups(collide):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bayeslmm.lmer("y ~ x + (1|b/a)", collide, method="REML")  # blocks b and a:b, as lme4 names them
    # Here b alone identifies both groups, so the +10/-10 may sit in either block; the predictions may not move.
    _check(fit, "a:b", '"p:q":r', 'p:"q:r"', effects=False)


# ---------------------------------------------------------------------------
# Unseen levels in predict
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sleep_reml():
    return bayeslmm.lmer("Reaction ~ Days + (Days | Subject)", bayeslmm.datasets.load("sleepstudy"), method="REML")


def test_unseen_levels_are_refused_by_default_listing_five(sleep_reml, sleep_fit):
    new = pd.DataFrame({"Days": 3, "Subject": [308, 1, 2, 3, 4, 5, 6, 7]})
    for fit in (sleep_reml, sleep_fit):
        with pytest.raises(PredictionError, match=r"7 level\(s\) of the grouping factor 'Subject'.*: 1, 2, 3, 4, 5 and 2 "
                                                  r"more.*allow\.new\.levels.*new_levels='population'.*new_levels='sample'"):
            fit.predict(new)


def test_integer_level_given_as_float_is_the_same_level(sleep_reml):
    as_int = _estimate(sleep_reml.predict(pd.DataFrame({"Days": [3], "Subject": [308]})))
    as_float = _estimate(sleep_reml.predict(pd.DataFrame({"Days": [3], "Subject": [308.0]})))
    np.testing.assert_array_equal(as_int, as_float)
    assert as_int[0] != pytest.approx(_estimate(sleep_reml.predict(pd.DataFrame({"Days": [3]}), re_form="~0"))[0])


@pytest.mark.parametrize("value", ["308.0", " 308", "308"])
def test_text_is_not_the_integer_level(sleep_reml, value):
    new = pd.DataFrame({"Days": [3], "Subject": [value]})
    with pytest.raises(PredictionError, match=rf"{value!r}.*'Subject' held numbers"):
        sleep_reml.predict(new)
    population = _estimate(sleep_reml.predict(new, new_levels="population"))
    assert population[0] == pytest.approx(_estimate(sleep_reml.predict(new, re_form="~0"))[0])


def test_unseen_levels_allowed_explicitly(sleep_fit):
    new = pd.DataFrame({"Days": [3, 3], "Subject": [308, 999]})
    pop = sleep_fit.predict(new, new_levels="population")
    smp = sleep_fit.predict(new, new_levels="sample", random_seed=1)
    pd.testing.assert_frame_equal(pop.iloc[:1], smp.iloc[:1])
    assert smp["Est.Error"].iloc[1] > 1.5 * pop["Est.Error"].iloc[1]
