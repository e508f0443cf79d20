"""data= of every kind: pandas, polars, pyarrow (in memory); Parquet files and dask frames (out of core).

REML fits are checked against lme4 (tests/data/reference) for every input kind, and
against the in-memory pandas fit to 1e-10 (issue 16's identity target); NUTS draws of
the same seed are checked to be the same numbers. The Dask computations run on Dask's
local scheduler.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import dask
import dask.dataframe as dd
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import bayeslmm
from bayeslmm.compressed import accumulate_gram
from bayeslmm.errors import BayesLMMError, DataError, DataWarning, RowsNotKeptError
from bayeslmm.groupwise import group_products
from conftest import case, case_data

KINDS = ["pandas", "polars", "arrow", "parquet", "dask"]
#: The shared lme4 cases whose group effects collapse (one factor, or two nested).
COLLAPSIBLE = ["sleep_slopes", "sleep_uncorr", "sleep_int", "clark_sim", "pastes", "dyestuff"]


def write_parquet(df: pd.DataFrame, folder: Path, n_files: int) -> str:
    """``df`` as ``n_files`` Parquet files in row order; returns their glob."""
    folder.mkdir(parents=True, exist_ok=True)
    for k, rows in enumerate(np.array_split(np.arange(len(df)), n_files)):
        df.iloc[rows].to_parquet(folder / f"part{k:03d}.parquet", index=False)
    return str(folder / "*.parquet")


def as_kind(df: pd.DataFrame, kind: str, folder: Path) -> object:
    if kind == "pandas":
        return df
    if kind == "polars":
        return pl.from_pandas(df)
    if kind == "arrow":
        return pa.Table.from_pandas(df, preserve_index=False)
    if kind == "parquet":
        return write_parquet(df, folder, 4)
    return dd.from_pandas(df, npartitions=3)


def quiet_lmer(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bayeslmm.lmer(*args, **kwargs)


# ---------------------------------------------------------------------------
# REML against lme4, and against the in-memory fit, for every kind
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", COLLAPSIBLE)
def test_reml_on_every_input_kind(name: str, kind: str, tmp_path: Path) -> None:
    ref, df = case(name), case_data(name)
    fit = quiet_lmer(ref["formula"], as_kind(df, kind, tmp_path), method="REML")
    base = quiet_lmer(ref["formula"], df, method="REML")
    r, b = fit.result, base.result
    assert r.reml_criterion == pytest.approx(ref["reml_criterion"], abs=1e-3)  # REMLcrit(fm)
    assert list(r.fixed_names) == list(ref["fixef"])
    np.testing.assert_allclose(r.beta, [ref["fixef"][k] for k in r.fixed_names], rtol=1e-4)  # fixef(fm)
    np.testing.assert_allclose(r.beta_se, [ref["fixef_se"][k] for k in r.fixed_names], rtol=1e-4)  # sqrt(diag(vcov(fm)))
    resid = next(v for v in ref["varcorr"] if v["grp"] == "Residual")
    assert r.sigma == pytest.approx(resid["sdcor"], rel=1e-3)  # sigma(fm)
    assert fit.nobs() == ref["nobs"]  # nobs(fm)
    # The identity target (the same estimates as the in-memory pandas fit to 1e-10), met exactly:
    # both fit the same compressed rows.
    np.testing.assert_array_equal(r.theta, b.theta)
    np.testing.assert_array_equal(r.beta, b.beta)
    assert r.sigma == b.sigma
    assert r.block_labels == b.block_labels and r.block_levels == b.block_levels
    for m1, m2 in zip(r.ranef, b.ranef):  # ranef(fm)
        np.testing.assert_array_equal(m1, m2)


def test_ml_out_of_core_matches_lme4(tmp_path: Path) -> None:
    ref, df = case("sleep_slopes"), case_data("sleep_slopes")
    fit = quiet_lmer(ref["formula"], write_parquet(df, tmp_path, 5), method="ML")
    assert fit.logLik() == pytest.approx(ref["ml_loglik"], abs=1e-3)  # logLik(update(fm, REML=FALSE))


# ---------------------------------------------------------------------------
# NUTS: the same draws for the same seed, in memory and out of core
# ---------------------------------------------------------------------------
def _synthetic(n: int, groups: int, seed: int = 11) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    x = rng.normal(size=n)
    u = rng.normal(size=(groups, 2)) * [1.0, 0.4]
    y = 2.0 + 0.5 * x + u[g, 0] + u[g, 1] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": [f"g{k:03d}" for k in g], "c": rng.choice(["lo", "mid", "hi"], n)})


@pytest.fixture(scope="module")
def nuts_fits(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """20,000 rows as 20 Parquet files: the identity target of issue 16 at a test-suite size."""
    df = _synthetic(20_000, 50)
    folder = tmp_path_factory.mktemp("nuts_parquet")
    path = write_parquet(df, folder, 20)
    kw = dict(draws=150, tune=150, chains=2, cores=1, random_seed=20261128, progressbar=False)
    formula = "y ~ x + c + (x | g)"
    return {
        "pandas": quiet_lmer(formula, df, **kw),
        "polars": quiet_lmer(formula, pl.from_pandas(df), **kw),
        "parquet": quiet_lmer(formula, path, **kw),
        "dask": quiet_lmer(formula, dd.read_parquet(path), **kw),
        "df": df,
        "path": path,
    }


@pytest.mark.parametrize("kind", ["polars", "parquet", "dask"])
def test_nuts_draws_are_identical_across_input_kinds(nuts_fits: dict, kind: str) -> None:
    base, fit = nuts_fits["pandas"].idata.posterior, nuts_fits[kind].idata.posterior
    assert set(fit.data_vars) == set(base.data_vars)
    for v in base.data_vars:  # the same numbers, not just the same distribution
        np.testing.assert_array_equal(fit[v].values, base[v].values, err_msg=v)


def test_out_of_core_fit_keeps_no_rows_and_refuses_row_extractors(nuts_fits: dict) -> None:
    fit, df = nuts_fits["parquet"], nuts_fits["df"]
    assert fit.nobs() == len(df)  # nobs(fm)
    assert fit.design.X.shape[0] < 1000  # compressed rows: a few per group, not 20,000
    obs = fit.idata.children.get("observed_data")
    assert (obs is None or not obs.data_vars) and "log_likelihood" not in fit.idata.children  # no rows stored
    for call in (fit.fitted, fit.resid, fit.augment, fit.loo, fit.waic, fit.r2, fit.posterior_predictive,
                 lambda: fit.predict(), lambda: fit.save("never.nc")):
        with pytest.raises(RowsNotKeptError, match="out of core from 20 Parquet file"):
            call()


def test_out_of_core_sampling_holds_nothing_per_row(nuts_fits: dict) -> None:
    """The collapsed target's coordinates are labels of terms and levels, none per row.

    (Row labels of the observation dimension, unused by the collapsed model, once made the
    sampling phase's memory grow with the rows: gigabytes at 10⁸ rows.)
    """
    from bayeslmm.collapsed.posterior import CollapsedPosterior

    fit = nuts_fits["parquet"]
    post = CollapsedPosterior.build(fit.design, fit.priors)
    longest = max(len(v) for v in post.coords.values())
    assert longest <= max(b.n_levels for b in fit.design.blocks) < fit.nobs()


def test_out_of_core_fit_tables_match_the_in_memory_fit(nuts_fits: dict) -> None:
    fit, base = nuts_fits["dask"], nuts_fits["pandas"]
    pd.testing.assert_frame_equal(fit.VarCorr(), base.VarCorr())  # as.data.frame(VarCorr(fm))
    pd.testing.assert_frame_equal(fit.ranef(long=True), base.ranef(long=True))  # ranef(fm)
    pd.testing.assert_frame_equal(fit.tidy(), base.tidy())  # broom.mixed::tidy(fm)
    pd.testing.assert_frame_equal(fit.icc(), base.icc())
    g = fit.glance()
    assert int(g["nobs"].iloc[0]) == 20_000 and np.isnan(g["elpd_loo"].iloc[0])  # no rows, no pointwise LOO
    assert "20000 observations" in str(fit.summary())


def test_out_of_core_predicts_new_rows_like_the_in_memory_fit(nuts_fits: dict) -> None:
    new = nuts_fits["df"].head(25)
    a = nuts_fits["parquet"].predict(new, random_seed=1)
    b = nuts_fits["pandas"].predict(new, random_seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert nuts_fits["parquet"].fixef().equals(nuts_fits["pandas"].fixef())  # fixef(fm)


# ---------------------------------------------------------------------------
# The data pass: NA policy, categorical levels, schema checks, refusals
# ---------------------------------------------------------------------------
def test_missing_values_are_dropped_with_the_same_count(tmp_path: Path) -> None:
    df = case_data("sleep_slopes")
    df.loc[[3, 50, 51], "Days"] = np.nan
    df.loc[100, "Reaction"] = np.nan
    with pytest.warns(DataWarning, match=r"Dropped 4 of 180 row\(s\)") as rec:
        fit = bayeslmm.lmer("Reaction ~ Days + (Days | Subject)", write_parquet(df, tmp_path, 3), method="REML")
    (msg,) = [str(w.message) for w in rec if issubclass(w.category, DataWarning)]
    assert "'Days'" in msg and "'Reaction'" in msg
    base = quiet_lmer("Reaction ~ Days + (Days | Subject)", df, method="REML")
    assert fit.nobs() == base.nobs() == 176  # nobs(fm) after na.omit
    np.testing.assert_allclose(fit.result.theta, base.result.theta, atol=1e-10)
    with pytest.raises(DataError, match="4 row"):
        bayeslmm.lmer("Reaction ~ Days + (Days | Subject)", dd.from_pandas(df, npartitions=2), method="REML", na_action="raise")


def test_a_level_seen_only_in_a_late_partition(tmp_path: Path) -> None:
    df = _synthetic(3000, 30)
    df = df.sort_values("c", kind="stable").reset_index(drop=True)  # 'mid' rows only in the last files
    fit = quiet_lmer("y ~ x + c + (1 | g)", write_parquet(df, tmp_path, 6), method="REML")
    base = quiet_lmer("y ~ x + c + (1 | g)", df, method="REML")
    assert fit.result.fixed_names == base.result.fixed_names == ("(Intercept)", "x", "clo", "cmid")
    np.testing.assert_allclose(fit.result.beta, base.result.beta, rtol=1e-10)


def test_a_numeric_column_as_a_factor_with_a_late_level(tmp_path: Path) -> None:
    df = _synthetic(3000, 30)
    df["k"] = np.where(np.arange(len(df)) >= 2500, 7, np.arange(len(df)) % 3)  # the level 7 only in the last file
    fit = quiet_lmer("y ~ C(k) + x + (1 | g)", write_parquet(df, tmp_path, 6), method="REML")
    base = quiet_lmer("y ~ C(k) + x + (1 | g)", df, method="REML")
    assert fit.result.fixed_names == base.result.fixed_names  # names(fixef(fm)), C(k)7 included
    assert any(name.endswith("7") for name in fit.result.fixed_names)
    np.testing.assert_array_equal(fit.result.beta, base.result.beta)


def test_a_categorical_columns_level_order_is_kept() -> None:
    df = _synthetic(2000, 20)
    df["c"] = pd.Categorical(df["c"], categories=["mid", "lo", "hi"])  # R's factor(c, levels = ...): 'mid' the reference
    fit = quiet_lmer("y ~ x + c + (1 | g)", dd.from_pandas(df, npartitions=4), method="REML")
    base = quiet_lmer("y ~ x + c + (1 | g)", df, method="REML")
    assert fit.result.fixed_names == base.result.fixed_names == ("(Intercept)", "x", "clo", "chi")  # names(fixef(fm))
    np.testing.assert_allclose(fit.result.beta, base.result.beta, rtol=1e-10)


def test_parquet_file_missing_a_column_is_named(tmp_path: Path) -> None:
    df = _synthetic(600, 10)
    path = write_parquet(df, tmp_path, 3)
    pq.write_table(pa.Table.from_pandas(df.drop(columns="x").head(50), preserve_index=False), tmp_path / "part999.parquet")
    with pytest.raises(DataError, match=r"part999\.parquet.*no column 'x'"):
        bayeslmm.lmer("y ~ x + (1 | g)", path, method="REML")


def test_parquet_files_with_mismatched_types_are_named(tmp_path: Path) -> None:
    df = _synthetic(600, 10)
    path = write_parquet(df, tmp_path, 3)
    odd = df.head(50).assign(x=df["x"].head(50).astype(str))
    odd.to_parquet(tmp_path / "part999.parquet", index=False)
    with pytest.raises(DataError, match=r"Column 'x' has type .* in the Parquet file .*part999\.parquet"):
        bayeslmm.lmer("y ~ x + (1 | g)", path, method="REML")


def test_no_parquet_file_found(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="No Parquet file"):
        bayeslmm.lmer("y ~ x + (1 | g)", str(tmp_path / "nothing*.parquet"), method="REML")


def test_crossed_factors_out_of_core_name_the_reason(tmp_path: Path) -> None:
    ref, df = case("penicillin"), case_data("penicillin")
    with pytest.raises(DataError, match="crossed"):
        bayeslmm.lmer(ref["formula"], write_parquet(df, tmp_path, 2), method="REML")
    three = "y ~ x + (1 | g) + (1 | c) + (1 | h)"
    with pytest.raises(DataError, match="one grouping factor or two nested ones"):
        bayeslmm.lmer(three, dd.from_pandas(_synthetic(300, 5).assign(h=lambda d: d["g"]), npartitions=2), method="REML")


def test_transformations_learnt_from_the_rows_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"scale\(\)"):
        quiet_lmer("y ~ scale(x) + (1 | g)", dd.from_pandas(_synthetic(300, 5), npartitions=2), method="REML")


def test_full_model_needs_the_rows() -> None:
    data = dd.from_pandas(_synthetic(300, 5), npartitions=2)
    with pytest.raises(BayesLMMError, match="needs the data rows"):
        quiet_lmer("y ~ x + (1 | g)", data, collapse=False, draws=10, tune=10, chains=1, progressbar=False)


def test_transformed_columns_and_nested_factors_out_of_core(tmp_path: Path) -> None:
    df = _synthetic(2000, 20)
    df["h"] = df["g"] + "/" + np.where(np.arange(len(df)) % 2 == 0, "a", "b")
    df["y"] = np.exp(df["y"] / 4)
    formula = "log(y) ~ x + I(x**2) + (1 | g/h)"
    fit = quiet_lmer(formula, write_parquet(df, tmp_path, 5), method="REML")
    base = quiet_lmer(formula, df, method="REML")
    assert fit.result.block_labels == base.result.block_labels == ("h:g", "g")
    np.testing.assert_allclose(fit.result.theta, base.result.theta, atol=1e-10)
    np.testing.assert_allclose(fit.result.beta, base.result.beta, rtol=1e-10, atol=1e-12)


def test_the_users_dask_scheduler_is_used() -> None:
    data = dd.from_pandas(case_data("sleep_slopes"), npartitions=4)
    with dask.config.set(scheduler="synchronous"):
        fit = quiet_lmer("Reaction ~ Days + (Days | Subject)", data, method="REML")
    assert fit.result.reml_criterion == pytest.approx(case("sleep_slopes")["reml_criterion"], abs=1e-3)  # REMLcrit(fm)


def test_partition_tasks_run_in_other_processes() -> None:
    """Dask's process scheduler pickles every task, as a dask.distributed cluster does."""
    data = dd.from_pandas(case_data("sleep_slopes"), npartitions=3)
    with dask.config.set(scheduler="processes", num_workers=2):
        fit = quiet_lmer("Reaction ~ Days + (Days | Subject)", data, method="REML")
    assert fit.result.reml_criterion == pytest.approx(case("sleep_slopes")["reml_criterion"], abs=1e-3)  # REMLcrit(fm)


def test_unsupported_data_kind() -> None:
    with pytest.raises(DataError, match="must be a pandas or polars DataFrame"):
        bayeslmm.lmer("y ~ x + (1 | g)", {"y": [1.0, 2.0]}, method="REML")
    with pytest.raises(DataError, match="LazyFrame"):
        bayeslmm.lmer("y ~ x + (1 | g)", pl.from_pandas(_synthetic(50, 5)).lazy(), method="REML")


def test_partitioned_sums_equal_the_whole_datas_to_the_last_bit() -> None:
    rng = np.random.default_rng(5)
    idx = rng.integers(0, 17, 5000)
    W = np.column_stack([np.ones(5000), rng.normal(size=(5000, 3)) * [1.0, 1e3, 1e-3]])
    whole = group_products(idx, 17, W)
    acc = np.zeros_like(whole)
    for rows in np.array_split(np.arange(5000), 7):
        accumulate_gram(acc, idx[rows], W[rows])
    iu = np.triu_indices(4)
    np.testing.assert_array_equal(acc[:, iu[0], iu[1]], whole[:, iu[0], iu[1]])


@pytest.mark.slow
def test_identity_target_at_full_size(tmp_path: Path) -> None:
    """Issue 16's target: 1,000,000 rows as 20 Parquet files give lme4's REML to 1e-10 and the same NUTS draws."""
    df = _synthetic(1_000_000, 1000)
    path = write_parquet(df, tmp_path, 20)
    formula = "y ~ x + c + (x | g)"
    a, b = quiet_lmer(formula, df, method="REML").result, quiet_lmer(formula, dd.read_parquet(path), method="REML").result
    np.testing.assert_allclose(b.theta, a.theta, atol=1e-10)
    np.testing.assert_allclose(b.beta, a.beta, rtol=1e-10)
    kw = dict(draws=200, tune=200, chains=2, cores=1, random_seed=3, progressbar=False)
    pa_, pb = quiet_lmer(formula, df, **kw).idata.posterior, quiet_lmer(formula, path, **kw).idata.posterior
    for v in pa_.data_vars:
        np.testing.assert_array_equal(pb[v].values, pa_[v].values, err_msg=v)


def test_out_of_core_reml_inference_needs_only_the_sums(tmp_path: Path) -> None:
    ref, df = case("sleep_slopes"), case_data("sleep_slopes")
    fit = quiet_lmer(ref["formula"], write_parquet(df, tmp_path, 5), method="REML")
    base = quiet_lmer(ref["formula"], df, method="REML")
    # summary(fm) with lmerTest's Satterthwaite df: a function of the cross-products only
    got, want = fit.fixef(), base.fixef()
    np.testing.assert_allclose(got[["df", "t value"]], want[["df", "t value"]], rtol=1e-6)
    # far-tail p-values (1e-17) magnify the optimiser's last digits: relative agreement to 1e-4
    np.testing.assert_allclose(got["Pr(>|t|)"], want["Pr(>|t|)"], rtol=1e-4)
    # confint(fm, method="profile") for the variance parameters: also from the sums
    np.testing.assert_allclose(fit.confint(parm=["sigma"]), base.confint(parm=["sigma"]), rtol=1e-5)
    # bootMer simulates responses row by row: refused rather than simulated on the compressed rows
    with pytest.raises(RowsNotKeptError, match="bootstrap"):
        fit.bootstrap(nsim=2)
    with pytest.raises(RowsNotKeptError, match="boot"):
        fit.confint(method="boot", nsim=2)
