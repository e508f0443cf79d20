"""Fuzzing the front end: every failure is a BayesLMMError that names the culprit.

Random formulas and frames go through the stages where bad input is caught
(parse_formula -> build_design -> make_priors -> build_model), the REML/ML
fit, prediction and the table functions; a few go through a real tiny NUTS
``lmer``. A bare KeyError/ValueError/TypeError/IndexError escaping from
formulae, pandas, PyMC or pytensor is a bug. Rows are never dropped without
a warning giving the count, and inputs are never modified.

The default run is derandomized (the same cases every run, so the suite is
reproducible); ``BAYESLMM_FUZZ_RANDOM=1`` draws new cases each run, and
``BAYESLMM_FUZZ_SCALE=10`` runs ten times as many.
"""

from __future__ import annotations

import copy
import os
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import bayeslmm
from bayeslmm import BayesLMMError, DataWarning
from bayeslmm.design import build_design
from bayeslmm.formula import parse_formula
from bayeslmm.model import build_model
from bayeslmm.priors import make_priors

FUZZ = settings(
    deadline=None,
    derandomize=not os.environ.get("BAYESLMM_FUZZ_RANDOM"),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
                           HealthCheck.filter_too_much],
)
UNKNOWN = ("nope", "zz")


def scaled(n: int) -> int:
    """``n`` examples, times ``$BAYESLMM_FUZZ_SCALE`` for a deeper local run (the default run has 312 generated cases)."""
    return max(1, round(n * float(os.environ.get("BAYESLMM_FUZZ_SCALE", "1"))))


def base_frame(seed: int, n_groups: int = 5, per_group: int = 4) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_groups * per_group
    g = np.repeat([f"g{i}" for i in range(n_groups)], per_group)
    return pd.DataFrame(
        {
            "y": rng.normal(size=n) + rng.normal(size=n_groups)[np.repeat(range(n_groups), per_group)],
            "x": rng.normal(size=n),
            "z": rng.normal(size=n),
            "k": rng.choice(["a", "b", "c"], n),
            "w": rng.integers(0, 3, n),
            "g": g,
            "h": rng.permutation(np.resize(["u", "v", "s"], n)),  # every level present: n >= 4 rows
        }
    )


def run_stages(formula: str, data: pd.DataFrame, priors=None):
    """Stages 1-4 of lmer, stopping before sampling; returns the model."""
    design = build_design(parse_formula(formula), data)
    return build_model(design, make_priors(design, priors))


def outcome(fn, *args, **kwargs):
    """``(result, error, warnings)`` of a call; any non-BayesLMMError exception propagates (a bug)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return fn(*args, **kwargs), None, caught
        except BayesLMMError as exc:
            return None, exc, caught


def frames_equal(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Deep equality, including column order, dtypes and the index (inputs are never mutated)."""
    assert list(a.columns) == list(b.columns)
    for i in range(a.shape[1]):
        pd.testing.assert_series_equal(a.iloc[:, i], b.iloc[:, i])
    pd.testing.assert_index_equal(a.index, b.index)


# ---------------------------------------------------------------------------
# Random formulas
# ---------------------------------------------------------------------------
RESPONSES = ["y", "y", "y", "np.log(y + 10)", "nope", "x", "", "y + x", "k"]
FIXED = ["x", "z", "k", "C(w)", "x:z", "x*k", "0", "1", "-1", "x + x", "np.exp(x)", "center(x)", "I(x**2)", "k:k", "w"]
FIXED_BAD = ["nope", "zz:x", "g", "(x)", "x |", "||", "~ x", "C(nope)"]
RANDOM = ["(1|g)", "(x|g)", "(1||g)", "(x||g)", "(1|g/h)", "(1|g:h)", "(0+x|g)", "(-1+x|g)", "(1|h)", "(x+z|g)",
          "(k|g)", "(1|g) + (x|g)", "(x*z|h)", "(1 + 1|g)"]
RANDOM_BAD = ["(g|x)", "(1|)", "(|g)", "(1|nope)", "(1|g) + (1|g)", "x|g", "((1|g))", "(1|g|h)", "(1|np.log(g))",
              "(nope|g)", "(1|zz/g)", "(0|g)", "(x||)"]


def _mostly(good: list[str], bad: list[str]):
    """Good pieces three times out of four."""
    return st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(good), st.sampled_from(bad))


@st.composite
def formulas(draw) -> str:
    if draw(st.integers(0, 9)) == 0:  # pure junk text now and then
        return draw(st.text(alphabet="yxgk~+|()*:/01 -", max_size=30))
    if draw(st.booleans()):  # a plausible formula: its parts are each valid
        fixed = draw(st.lists(st.sampled_from(FIXED), max_size=3, unique=True))
        return f"y ~ {' + '.join(fixed + [draw(st.sampled_from(RANDOM))])}"
    lhs = draw(st.sampled_from(RESPONSES))
    fixed = draw(st.lists(_mostly(FIXED, FIXED_BAD), max_size=3))
    rhs = fixed + draw(st.lists(_mostly(RANDOM, RANDOM_BAD), min_size=int(draw(st.integers(0, 4)) > 0), max_size=3))
    rhs = draw(st.permutations(rhs)) if rhs else ["1"]
    return f"{lhs} ~ {' + '.join(rhs)}"


@settings(FUZZ, max_examples=scaled(90))
@given(formula=formulas(), seed=st.integers(0, 2**16))
def test_random_formulas(formula, seed):
    data = base_frame(seed)
    before = data.copy(deep=True)
    model, err, _ = outcome(run_stages, formula, data)
    frames_equal(data, before)
    event("built" if err is None else type(err).__name__)
    if err is None:
        assert model.free_RVs
        return
    try:
        parsed = parse_formula(formula)
    except BayesLMMError:
        return  # a syntax error: reported as such, with the offending part (checked in the table below)
    for bad in UNKNOWN:
        if bad in parsed.var_names:
            assert bad in str(err), f"{formula!r}: {err}"


@pytest.mark.parametrize(
    "formula, culprit",
    [
        ("y ~ x + (1|nope)", "nope"),
        ("y ~ nope + (1|g)", "nope"),
        ("nope ~ x + (1|g)", "nope"),
        ("y ~ x + (nope|g)", "nope"),
        ("y ~ C(nope) + (1|g)", "nope"),
        ("y ~ x + (g|x)", "x"),
        ("y ~ x + (1|)", "(1|)"),
        ("y ~ x + (|g)", "(|g)"),
        ("y ~ x + (1|g) + (1|g)", "1|g"),
        ("y ~ x", "random-effect"),
        ("y ~ x + (1|np.log(g))", "np.log(g)"),
        ("y ~ x + (x||)", "(x||)"),
        ("k ~ x + (1|g)", "k"),
        ("y ~ x + (1|g|h)", "(1|g|h)"),
    ],
)
def test_formula_errors_name_the_culprit(formula, culprit):
    _, err, _ = outcome(run_stages, formula, base_frame(0))
    assert err is not None, formula
    assert culprit in str(err), str(err)


# ---------------------------------------------------------------------------
# Random prior overrides
# ---------------------------------------------------------------------------
PRIOR_KEYS = ["(Intercept)", "x", "sigma", "g", "1|g", "x|g", "(Intercept)|g", "cor|g", "nope", "x|nope", "cor|x", ""]
DISTS = ["Normal", "HalfNormal", "HalfCauchy", "StudentT", "Cauchy", "Exponential", "Gamma", "Uniform", "LKJ",
         "Flat", "HalfFlat", "set_data", "Foo", "__class__", 3, None]
PARAMS = ["mu", "sigma", "beta", "eta", "nu", "lam", "alpha", "lower", "upper", "sd", "__init__"]
VALUES = [-1, 0, 1, 2.5, 10, float("nan"), float("inf"), "1", None, True, [1.0]]
GOOD_SPECS = {"fixed": {"dist": "Normal", "mu": 0, "sigma": 2}, "scale": {"dist": "HalfNormal", "sigma": 1},
              "cor": {"dist": "LKJ", "eta": 2}}


@st.composite
def prior_overrides(draw):
    out = {}
    for key in draw(st.lists(st.sampled_from(PRIOR_KEYS), max_size=3, unique=True)):
        if draw(st.booleans()):  # a valid spec for the kind of key
            kind = "cor" if key.startswith("cor") else ("fixed" if key in ("(Intercept)", "x") else "scale")
            out[key] = GOOD_SPECS[kind]
            continue
        if draw(st.integers(0, 5)) == 0:
            out[key] = draw(st.sampled_from([3, "Normal(0, 1)", None, ["Normal"]]))
            continue
        spec = {"dist": draw(st.sampled_from(DISTS))} if draw(st.integers(0, 9)) else {}
        for name in draw(st.lists(st.sampled_from(PARAMS), max_size=3, unique=True)):
            spec[name] = draw(st.sampled_from(VALUES))
        out[key] = spec
    return out


@settings(FUZZ, max_examples=scaled(40))
@given(overrides=prior_overrides())
def test_random_priors(overrides):
    data = base_frame(3)
    before = repr(overrides)
    model, err, _ = outcome(run_stages, "y ~ x + (x|g)", data, overrides)
    assert repr(overrides) == before
    event("built" if err is None else type(err).__name__)
    if err is None:
        assert model.free_RVs
        return
    assert isinstance(err, bayeslmm.PriorError), err
    bad_keys = [k for k in overrides if k in ("nope", "x|nope", "cor|x", "")]
    if bad_keys:
        assert any(repr(k) in str(err) for k in overrides), str(err)


# ---------------------------------------------------------------------------
# Random frames
# ---------------------------------------------------------------------------
def _set_some(draw, rng, d: pd.DataFrame, col: str, value) -> int:
    k = draw(st.integers(1, len(d)))
    rows = rng.choice(len(d), size=k, replace=False)
    d[col] = d[col].astype(object) if not isinstance(value, float) else d[col]
    d.iloc[rows, d.columns.get_loc(col)] = value
    return k


DEFECTS = {
    # defect: (outcome, column the error must name, text a warning must contain)
    "none": ("ok", None, None),
    "nan_x": ("maybe", None, "Dropped"),
    "nan_y": ("maybe", None, "Dropped"),
    "none_g": ("maybe", None, "Dropped"),
    "inf_x": ("error", "x", None),
    "inf_y": ("error", "y", None),
    "constant_y": ("error", "y", None),
    "string_y": ("error", "y", None),
    "numeric_strings_y": ("error", "y", None),
    "constant_x": ("ok", None, "rank deficient"),
    "zero_x": ("ok", None, "rank deficient"),
    "collinear": ("ok", None, "rank deficient"),
    "one_level_g": ("error", "g", None),
    "unique_g": ("error", "g", None),
    "zero_rows": ("error", None, None),
    "dup_column": ("error", "x", None),
    "mixed_object_g": ("error", "g", None),
    "int_g": ("ok", None, None),
    "bool_x": ("ok", None, None),
    "categorical_k": ("ok", None, None),
    "mixed_object_k": ("error", "k", None),
    "object_floats_x": ("ok", None, None),
    "object_bools_x": ("ok", None, None),
    "object_numbers_x": ("error", "x", None),
    "all_nan_x": ("error", None, "Dropped"),
}
FRAME_FORMULAS = ["y ~ x + (1|g)", "y ~ x + k + (x|g)", "y ~ k + x + (1|g) + (1|h)", "y ~ x + (x||g)"]


@st.composite
def defective_frames(draw):
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    d = base_frame(seed, n_groups=draw(st.integers(2, 6)), per_group=draw(st.integers(2, 5)))
    defect = draw(st.sampled_from(sorted(DEFECTS)))
    n_nan = 0
    if defect == "nan_x":
        n_nan = _set_some(draw, rng, d, "x", np.nan)
    elif defect == "nan_y":
        n_nan = _set_some(draw, rng, d, "y", np.nan)
    elif defect == "none_g":
        n_nan = _set_some(draw, rng, d, "g", None)
    elif defect == "all_nan_x":
        d["x"] = np.nan
        n_nan = len(d)
    elif defect in ("inf_x", "inf_y"):
        _set_some(draw, rng, d, defect[-1], draw(st.sampled_from([np.inf, -np.inf])))
    elif defect == "constant_y":
        d["y"] = draw(st.sampled_from([0.0, 3.5, -1e9]))
    elif defect == "string_y":
        d["y"] = d["y"].astype(str) + "kg"
    elif defect == "numeric_strings_y":
        d["y"] = d["y"].astype(str)
    elif defect == "constant_x":
        d["x"] = 2.0
    elif defect == "zero_x":
        d["x"] = 0.0
    elif defect == "collinear":
        d["x"] = 2 * d["z"] + 1
        d["z"] = d["z"]
    elif defect == "one_level_g":
        d["g"] = "only"
    elif defect == "unique_g":
        d["g"] = [f"u{i}" for i in range(len(d))]
    elif defect == "zero_rows":
        d = d.iloc[:0]
    elif defect == "dup_column":
        d = pd.concat([d, d[["x"]]], axis=1)
    elif defect == "mixed_object_g":
        d["g"] = pd.Series([int(v[1:]) if int(v[1:]) % 2 else v for v in d["g"]], dtype=object)
    elif defect == "int_g":
        d["g"] = d["g"].str[1:].astype(int)
    elif defect == "bool_x":
        d["x"] = d["x"] > 0
    elif defect == "categorical_k":
        d["k"] = pd.Categorical(d["k"], categories=["c", "b", "a", "never"])
    elif defect == "mixed_object_k":
        d["k"] = pd.Series([1] + list(d["k"].iloc[1:]), dtype=object)
    elif defect == "object_floats_x":
        d["x"] = pd.Series(list(d["x"]), dtype=object)
    elif defect == "object_bools_x":
        d["x"] = pd.Series(list(d["x"] > 0), dtype=object)
    elif defect == "object_numbers_x":
        d["x"] = pd.Series([str(v) if i == 0 else v for i, v in enumerate(d["x"])], dtype=object)
    return d, defect, n_nan


@settings(FUZZ, max_examples=scaled(80))
@given(case=defective_frames(), formula=st.sampled_from(FRAME_FORMULAS))
def test_random_frames(case, formula):
    data, defect, n_nan = case
    expect, culprit, warn_text = DEFECTS[defect]
    if defect == "collinear":
        formula = formula.replace(" x", " z + x", 1)
    if defect.endswith("_k") and "k" not in formula:
        formula = formula.replace(" x", " k + x", 1)
    before = copy.deepcopy(data)
    model, err, caught = outcome(run_stages, formula, data)
    frames_equal(data, before)
    event("built" if err is None else type(err).__name__)
    messages = [str(w.message) for w in caught]
    if expect == "ok":
        assert err is None, f"{defect}: {err}"
    if expect == "error":
        assert err is not None, defect
    if err is not None and culprit is not None:
        assert repr(culprit) in str(err) or f"'{culprit}'" in str(err) or culprit in str(err), f"{defect}: {err}"
    if warn_text == "Dropped":
        dropped = [m for m in messages if m.startswith("Dropped")]
        assert dropped and f"Dropped {n_nan} of {len(data)} row(s)" in dropped[0], (defect, messages, err)
    elif warn_text is not None and err is None:
        assert any(warn_text in m for m in messages), (defect, messages)
        assert any(issubclass(w.category, DataWarning) for w in caught)
    if not n_nan:
        assert not any(m.startswith("Dropped") for m in messages)


# ---------------------------------------------------------------------------
# REML / ML fits of random frames (fast, so real fits)
# ---------------------------------------------------------------------------
@settings(FUZZ, max_examples=scaled(30))
@given(case=defective_frames(), formula=st.sampled_from(FRAME_FORMULAS), method=st.sampled_from(["REML", "ML"]))
def test_reml_on_random_frames(case, formula, method):
    data, defect, _ = case
    before = copy.deepcopy(data)
    fit, err, _ = outcome(bayeslmm.lmer, formula, data, method=method)
    frames_equal(data, before)
    if err is None:
        assert np.isfinite(fit.sigma) and fit.sigma >= 0
        assert np.isfinite(fit.fixef()["Estimate"]).all()
        assert np.isfinite(fit.VarCorr()["sdcor"].dropna()).all()


def test_singular_fit_fits_and_warns():
    rng = np.random.default_rng(1)
    d = pd.DataFrame({"g": np.repeat(list("abcdef"), 5), "x": rng.normal(size=30)})
    d["y"] = d["x"] + rng.normal(size=30)  # no group effect at all
    d.loc[:, "y"] = d["y"] - d.groupby("g")["y"].transform("mean") + d["y"].mean()  # group means exactly equal
    _, err, caught = outcome(bayeslmm.lmer, "y ~ x + (1|g)", d, method="REML")
    assert err is None
    assert any("singular" in str(w.message) for w in caught)


# ---------------------------------------------------------------------------
# Prediction and tables on fitted models
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fits():
    d = base_frame(7, n_groups=6, per_group=5)
    d["k"] = pd.Categorical(d["k"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nuts = bayeslmm.lmer("y ~ x + k + (x|g)", d, draws=30, tune=30, chains=1, random_seed=1, progressbar=False)
        reml = bayeslmm.lmer("y ~ x + k + (x|g)", d, method="REML")
    return {"nuts": nuts, "reml": reml, "data": d}


NEWDATA_DEFECTS = ["none", "missing_x", "missing_g", "missing_k", "unseen_k", "unseen_g", "nan_x", "zero_rows",
                   "string_x", "inf_x", "extra_columns", "no_response", "int_g", "dup_x", "mixed_x", "object_x"]


@settings(FUZZ, max_examples=scaled(40))
@given(
    defect=st.sampled_from(NEWDATA_DEFECTS),
    which=st.sampled_from(["nuts", "reml"]),
    n=st.integers(1, 8),
    re_form=st.sampled_from([None, "~0", "NA", "~(1|g)", "~(1|nope)", 3, "(x|g)"]),
    new_levels=st.sampled_from(["population", "sample", "error", "bogus"]),
    kind=st.sampled_from(["mean", "response", "bogus"]),
    interval=st.sampled_from([0.95, 0.5, 0.0, 1.0, -1.0, float("nan")]),
)
def test_predict_on_random_newdata(fits, defect, which, n, re_form, new_levels, kind, interval):
    nd = fits["data"].sample(n=n, random_state=n, replace=True).reset_index(drop=True)
    culprit = None
    if defect.startswith("missing_"):
        culprit = defect.split("_")[1]
        nd = nd.drop(columns=culprit)
    elif defect == "unseen_k":
        nd["k"] = "never"
        culprit = "k"
    elif defect == "unseen_g":
        nd["g"] = "new-group"
    elif defect == "nan_x":
        nd.loc[0, "x"] = np.nan
        culprit = "x"
    elif defect == "inf_x":
        nd.loc[0, "x"] = np.inf
        culprit = "x"
    elif defect == "zero_rows":
        nd = nd.iloc[:0]
    elif defect == "string_x":
        nd["x"] = "lots"
        culprit = "x"
    elif defect == "extra_columns":
        nd["extra"] = 1
    elif defect == "no_response":
        nd = nd.drop(columns="y")
    elif defect == "int_g":
        nd["g"] = 3
    elif defect == "dup_x":
        nd = pd.concat([nd, nd[["x"]]], axis=1)
        culprit = "x"
    elif defect == "mixed_x":
        nd["x"] = pd.Series(["a"] + list(nd["x"].iloc[1:]), dtype=object)
        culprit = "x"
    elif defect == "object_x":
        nd["x"] = nd["x"].astype(object)
    before = copy.deepcopy(nd)
    pred, err, _ = outcome(fits[which].predict, nd, re_form=re_form, new_levels=new_levels, kind=kind,
                           level=interval, random_seed=1)
    frames_equal(nd, before)
    if err is None:
        assert len(pred) == len(nd) and np.isfinite(pred.to_numpy()).all()
        assert culprit is None or (culprit == "g" and re_form in ("~0", "NA"))
    elif culprit is not None and "newdata" in str(err):
        assert culprit in str(err), f"{defect}: {err}"


@pytest.mark.parametrize(
    "change, culprit",
    [
        (lambda nd: nd.drop(columns="x"), "x"),
        (lambda nd: nd.drop(columns="k"), "k"),
        (lambda nd: nd.assign(k="never"), "k"),
        (lambda nd: nd.assign(x=np.nan), "x"),
        (lambda nd: nd.assign(x=np.inf), "x"),
        (lambda nd: nd.assign(x="lots"), "x"),
        (lambda nd: pd.concat([nd, nd[["k"]]], axis=1), "k"),
        (lambda nd: nd.assign(x=pd.Series(["a"] + [1.0] * (len(nd) - 1), dtype=object, index=nd.index)), "x"),
    ],
)
@pytest.mark.parametrize("which", ["nuts", "reml"])
def test_predict_errors_name_the_column(fits, change, culprit, which):
    from bayeslmm import PredictionError

    with pytest.raises(PredictionError, match=f"'{culprit}'"):
        fits[which].predict(change(fits["data"].iloc[:4].copy()))


PROBS = [0.95, 0.5, 0.999, 0.0, 1.0, -0.5, 2, float("nan"), "0.9", None, True]


@settings(FUZZ, max_examples=scaled(30))
@given(prob=st.sampled_from(PROBS), which=st.sampled_from(["fixef", "ranef", "coef", "VarCorr", "summary", "ranef_long"]))
def test_tables_with_random_prob(fits, prob, which):
    fit = fits["nuts"]
    method = getattr(fit, which.replace("_long", ""))
    kwargs = {"long": True} if which.endswith("_long") else {}
    result, err, _ = outcome(method, prob, **kwargs)
    valid = isinstance(prob, float) and 0 < prob < 1
    assert (err is None) == valid, (prob, err)
    if valid:
        assert result is not None


def test_summary_with_a_string_prob(fits):
    # found by fuzzing: interval_names used to format prob before it was checked
    with pytest.raises(BayesLMMError, match="level"):
        fits["nuts"].summary("0.9")


# ---------------------------------------------------------------------------
# A few real NUTS fits of random (valid or degenerate) frames
# ---------------------------------------------------------------------------
@settings(FUZZ, max_examples=scaled(2))
@given(case=defective_frames().filter(lambda c: DEFECTS[c[1]][0] != "error"))
def test_nuts_on_random_frames(case):
    data, defect, _ = case
    before = copy.deepcopy(data)
    fit, err, _ = outcome(bayeslmm.lmer, "y ~ x + (1|g)", data, draws=15, tune=15, chains=1, progressbar=False,
                          random_seed=1)
    frames_equal(data, before)
    if err is None:
        assert fit.fixef().shape[0] >= 1
        assert np.isfinite(fit.fitted()).all()
