"""Design stage: X, y, group indices and Z columns for every syntax form, and bad input."""

import warnings

import numpy as np
import pandas as pd
import pytest

from bayeslmm.design import build_design
from bayeslmm.newdata import encode_new_data
from bayeslmm.errors import BayesLMMError, DataError, DataWarning, PredictionError
from bayeslmm.formula import parse_formula


@pytest.fixture(scope="module")
def df():
    rng = np.random.default_rng(7)
    n = 120
    return pd.DataFrame(
        {
            "y": rng.normal(size=n),
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
            "k": rng.integers(0, 3, n),
            "recipe": rng.choice(["A", "B", "C"], n),
            "cat": pd.Categorical(rng.choice(["lo", "mid", "hi"], n), categories=["lo", "mid", "hi"]),
            "g": np.repeat(np.arange(10), 12),
            "h": np.tile(np.arange(6), 20),
            "a": np.repeat(["p", "q", "r", "s"], 30),
            "b": np.tile(np.repeat(["u", "v", "w"], 10), 4),
        }
    )


def design(formula, data):
    return build_design(parse_formula(formula), data)


@pytest.mark.parametrize(
    "formula, fixed",
    [
        ("y ~ x + (1|g)", ["(Intercept)", "x"]),
        ("y ~ x*z + (1|g)", ["(Intercept)", "x", "z", "x:z"]),
        ("y ~ x:z + (1|g)", ["(Intercept)", "x:z"]),
        ("y ~ recipe + (1|g)", ["(Intercept)", "recipeB", "recipeC"]),
        ("y ~ recipe:x + (1|g)", ["(Intercept)", "recipeA:x", "recipeB:x", "recipeC:x"]),
        ("y ~ recipe*x + (1|g)", ["(Intercept)", "recipeB", "recipeC", "x", "recipeB:x", "recipeC:x"]),
        ("y ~ cat + (1|g)", ["(Intercept)", "catmid", "cathi"]),
        ("y ~ C(k) + (1|g)", ["(Intercept)", "C(k)1", "C(k)2"]),
        ("y ~ 0 + recipe + (1|g)", ["recipeA", "recipeB", "recipeC"]),
        ("y ~ -1 + x + (1|g)", ["x"]),
        ("y ~ 1 + x + (1|g)", ["(Intercept)", "x"]),
        ("y ~ 1 + (1|g)", ["(Intercept)"]),
    ],
)
def test_fixed_columns_have_lme4_names(df, formula, fixed):
    d = design(formula, df)
    assert list(d.fixed_names) == fixed
    assert d.X.shape == (len(df), len(fixed))


def test_interaction_columns_are_products(df):
    d = design("y ~ x*z + (1|g)", df)
    j = d.fixed_names.index("x:z")
    np.testing.assert_allclose(d.X[:, j], df.x * df.z)


@pytest.mark.parametrize(
    "formula, blocks",
    [
        ("y ~ x + (1|g)", [("g", ("(Intercept)",))]),
        ("y ~ x + (x|g)", [("g", ("(Intercept)", "x"))]),
        ("y ~ x + (1+x|g)", [("g", ("(Intercept)", "x"))]),
        ("y ~ x + (0+x|g)", [("g", ("x",))]),
        ("y ~ x + (-1+x|g)", [("g", ("x",))]),
        ("y ~ x + (x||g)", [("g", ("(Intercept)",)), ("g.1", ("x",))]),
        ("y ~ 1 + (1|a/b)", [("b:a", ("(Intercept)",)), ("a", ("(Intercept)",))]),
        ("y ~ 1 + (1|g) + (1|h)", [("g", ("(Intercept)",)), ("h", ("(Intercept)",))]),
        ("y ~ x + (recipe|g)", [("g", ("(Intercept)", "recipeB", "recipeC"))]),
        ("y ~ x + (x|g) + (1|h) + (0+z|a)", [("g", ("(Intercept)", "x")), ("h", ("(Intercept)",)), ("a", ("z",))]),
    ],
)
def test_blocks(df, formula, blocks):
    d = design(formula, df)
    assert [(b.label, b.terms) for b in d.blocks] == blocks
    for b in d.blocks:
        assert b.group_idx.shape == (len(df),)
        assert b.Z.shape == (len(df), b.q)
        assert b.group_idx.min() == 0 and b.group_idx.max() == b.n_levels - 1


def test_group_index_and_z_columns(df):
    d = design("y ~ x + (x|g)", df)
    b = d.blocks[0]
    assert b.levels == tuple(str(i) for i in range(10))  # integers are a factor, not a number
    np.testing.assert_array_equal(b.group_idx, df.g.to_numpy())
    np.testing.assert_allclose(b.Z[:, 0], 1.0)
    np.testing.assert_allclose(b.Z[:, 1], df.x)


def test_nested_levels_are_combinations(df):
    d = design("y ~ 1 + (1|a/b)", df)
    inner = d.blocks[0]
    assert inner.factor == "b:a" and inner.n_levels == 12
    assert "u:p" in inner.levels
    labels = np.array(inner.levels)[inner.group_idx]
    np.testing.assert_array_equal(labels, (df.b + ":" + df.a).to_numpy())


def test_integer_grouping_sorted_numerically():
    data = pd.DataFrame({"y": np.arange(30.0) % 7, "g": np.repeat([10, 9, 100], 10)})
    d = design("y ~ 1 + (1|g)", data)
    assert d.blocks[0].levels == ("9", "10", "100")


def test_crossed_blocks_ordered_by_levels_like_lme4(df):
    d = design("y ~ 1 + (1|h) + (1|g)", df)
    assert [b.label for b in d.blocks] == ["g", "h"]  # 10 levels before 6


def test_missing_rows_dropped_with_count(df):
    data = df.copy()
    data.loc[[3, 5, 8], "x"] = np.nan
    with pytest.warns(DataWarning, match="Dropped 3 of 120 row"):
        d = design("y ~ x + (1|g)", data)
    assert d.nobs == 117 and d.n_dropped_rows == 3
    assert 3 not in d.frame.index


def test_na_action_raise(df):
    data = df.copy()
    data.loc[0, "y"] = np.nan
    with pytest.raises(DataError, match="1 row"):
        build_design(parse_formula("y ~ x + (1|g)"), data, na_action="raise")


def test_unused_columns_with_missing_values_are_ignored(df):
    data = df.copy()
    data["unused"] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert design("y ~ x + (1|g)", data).nobs == 120


def test_input_not_mutated(df):
    before = df.copy(deep=True)
    design("y ~ recipe*x + (x|g)", df)
    pd.testing.assert_frame_equal(df, before)


def test_rank_deficient_x_drops_later_column(df):
    data = df.assign(x2=2 * df.x)
    with pytest.warns(DataWarning, match="rank deficient so dropping 1"):
        d = design("y ~ x + x2 + (1|g)", data)
    assert d.fixed_names == ("(Intercept)", "x") and d.dropped_fixed == ("x2",)


@pytest.mark.parametrize(
    "mutate, formula, error, message",
    [
        (lambda d: d, "y ~ nope + (1|g)", DataError, "nope"),
        (lambda d: d.assign(y=d.recipe), "y ~ x + (1|g)", DataError, "not numeric"),
        (lambda d: d.assign(one="same"), "y ~ x + (1|one)", DataError, "only 1 level"),
        (lambda d: d.iloc[:0], "y ~ x + (1|g)", DataError, "empty"),
        (lambda d: d.assign(y=1.0), "y ~ x + (1|g)", DataError, "constant"),
        (lambda d: d.assign(x=np.where(d.index == 4, np.inf, d.x)), "y ~ x + (1|g)", DataError, "infinite"),
        (lambda d: d.assign(uniq=np.arange(len(d))), "y ~ x + (1|uniq)", DataError, "levels for 120 observations"),
        (lambda d: d.assign(x=np.nan), "y ~ x + (1|g)", DataError, "No rows"),
    ],
)
def test_bad_data(df, mutate, formula, error, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        with pytest.raises(error, match=message):
            design(formula, mutate(df))


def test_duplicate_columns(df):
    data = pd.concat([df[["y", "x"]], df[["x", "g"]]], axis=1)
    with pytest.raises(DataError, match="duplicate column"):
        design("y ~ x + (1|g)", data)


def test_not_a_dataframe():
    with pytest.raises(BayesLMMError, match="DataFrame"):
        design("y ~ x + (1|g)", {"y": [1, 2]})


def test_new_data_encoding(df):
    d = design("y ~ recipe*x + (x|g)", df)
    new = pd.DataFrame({"recipe": ["C", "A"], "x": [1.0, 2.0], "g": [3, 99]})
    nd = encode_new_data(d, new)
    np.testing.assert_allclose(nd.X[0], [1, 0, 1, 1, 0, 1])  # (Intercept) recipeB recipeC x recipeB:x recipeC:x
    np.testing.assert_array_equal(nd.group_idx[0], [3, -1])
    assert nd.new_levels[0] == ("99",)
    with pytest.raises(PredictionError, match="lacks column"):
        encode_new_data(d, new.drop(columns="x"))


def test_closed_design_checks_the_formula_before_evaluating_it(df):
    from bayeslmm.compat import Environment
    from bayeslmm.errors import FormulaError

    called = []

    def spy(v):
        called.append(1)
        return v

    env = Environment([{"spy": spy}])
    with pytest.raises(FormulaError, match="'spy'"):
        build_design(parse_formula("y ~ spy(x) + (1|g)"), df, env=env, closed=True)
    assert not called
    d = build_design(parse_formula("y ~ spy(x) + (1|g)"), df, env=env)  # a trusted formula calls the caller's function
    assert called and d.recipe is None and "'spy'" in d.recipe_problem


def test_recipe_reproduces_the_design_and_encodes_new_data(df):
    d = design("np.log(y + 10) ~ poly(x, 2) + scale(z) * recipe + C(k > 0) + (I(x / 2) | g) + (1 | a/b)", df)
    assert d.recipe is not None, d.recipe_problem
    nd = encode_new_data(d, df)  # the training rows, encoded from the recipe alone
    np.testing.assert_allclose(nd.X, d.X, rtol=1e-12, atol=1e-12)
    for b, idx, Z in zip(d.blocks, nd.group_idx, nd.Z):
        np.testing.assert_array_equal(idx, b.group_idx)
        np.testing.assert_allclose(Z, b.Z, rtol=1e-12)


def test_new_data_with_an_unknown_category_or_a_bad_value_names_the_term(df):
    d = design("y ~ recipe + np.log(x + 10) + (1|g)", df)
    with pytest.raises(PredictionError, match=r"'recipe'.*'Z'"):
        encode_new_data(d, pd.DataFrame({"recipe": ["Z"], "x": [1.0], "g": [1]}))
    with pytest.raises(PredictionError, match=r"'np.log\(x \+ 10\)' has 1 non-finite"):
        encode_new_data(d, pd.DataFrame({"recipe": ["A"], "x": [-11.0], "g": [1]}))
