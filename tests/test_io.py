"""Saving and loading fits (bayeslmm.io): exact round trips, and files that must not run code.

Most tests go through ``to_tree``/``from_tree`` -- the same code as
``save``/``load`` minus the netCDF write and read -- and edit the stored tree
directly; the file tests write and read real netCDF-4 files.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bayeslmm
from bayeslmm import PersistenceError, PredictionError, io



def _data() -> pd.DataFrame:
    rng = np.random.default_rng(4)
    n = 48
    g = np.repeat([f"s{i}" for i in range(8)], 6)
    d = pd.DataFrame(
        {
            "x": rng.normal(size=n),
            "g": g,
            "k": pd.Categorical(rng.choice(["lo", "mid", "hi"], n), categories=["mid", "lo", "hi", "unused"]),
            "w": rng.integers(0, 3, n),
        }
    )
    d["y"] = np.exp(1 + 0.5 * d["x"] + rng.normal(size=8)[np.repeat(range(8), 6)] + 0.3 * rng.normal(size=n))
    d.index = [f"row{i}" for i in range(n)]
    d.loc["row3", "x"] = np.nan  # one dropped row: n_dropped_rows must survive the round trip
    return d


FORMULA = "np.log(y) ~ x + k + C(w) + (1 + x | g)"


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return _data()


@pytest.fixture(scope="module")
def fit(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bayeslmm.lmer(FORMULA, data, draws=60, tune=60, chains=2, cores=1, random_seed=3, progressbar=False)


def _newdata(data: pd.DataFrame) -> pd.DataFrame:
    nd = data.drop(columns="y").dropna().iloc[:6].copy()
    nd.loc[nd.index[0], "g"] = "never-seen"
    return nd


def _assert_same_fit(a, b, data) -> None:
    pd.testing.assert_frame_equal(a.fixef(), b.fixef())
    pd.testing.assert_frame_equal(a.VarCorr(), b.VarCorr())
    pd.testing.assert_series_equal(a.fitted(), b.fitted())
    for factor, table in a.ranef().items():
        pd.testing.assert_frame_equal(table, b.ranef()[factor])
    nd = _newdata(data)
    for kwargs in (
        {"new_levels": "population"},
        {"re_form": "~0"},
        {"kind": "response", "random_seed": 5, "new_levels": "population"},
        {"new_levels": "sample", "random_seed": 2},
    ):
        pd.testing.assert_frame_equal(a.predict(nd, **kwargs), b.predict(nd, **kwargs))
    with pytest.raises(PredictionError, match="never-seen"):
        b.predict(nd)  # unseen levels are refused by default, before and after saving
    assert str(a.summary()) == str(b.summary())


def _tampered(tree: xr.DataTree, edit) -> xr.DataTree:
    """A copy of a stored tree whose JSON metadata went through ``edit(meta)``."""
    tree = tree.copy()
    meta = json.loads(bytes(tree[io.META_GROUP][io.META_VAR].values).decode())
    edit(meta)
    payload = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tree[io.META_GROUP] = xr.DataTree(xr.Dataset({io.META_VAR: (("meta_byte",), payload)}))
    return tree


# ---------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------
def test_tree_round_trip_restores_everything(fit, data):
    before = data.copy()
    back = io.from_tree(io.to_tree(fit))
    _assert_same_fit(fit, back, data)
    pd.testing.assert_frame_equal(back.design.frame, fit.design.frame)
    np.testing.assert_array_equal(back.design.X, fit.design.X)
    np.testing.assert_array_equal(back.design.y, fit.design.y)
    assert back.design.n_dropped_rows == fit.design.n_dropped_rows == 1
    assert back.priors == fit.priors
    assert back.settings == fit.settings
    assert back.diagnostics == fit.diagnostics
    assert back.parameterization == fit.parameterization  # collapsed, when lmer picks the collapsed model
    assert sorted(v.name for v in back.model.free_RVs) == sorted(v.name for v in fit.model.free_RVs)
    assert io.META_GROUP not in back.idata.children
    assert io.META_GROUP not in fit.idata.children and "bayeslmm_format" not in fit.idata.attrs  # to_tree copies
    assert not any(k.startswith("bayeslmm_") for k in back.idata.attrs)
    pd.testing.assert_frame_equal(data, before)


def test_tree_round_trip_of_a_full_model(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        crossed = bayeslmm.lmer("np.log(y) ~ x + (1 | g) + (1 | k)", data, draws=40, tune=40, chains=1,
                                random_seed=5, progressbar=False, collapse=False)
    assert "collapsed" not in crossed.parameterization.values()  # collapse=False: the full model
    back = io.from_tree(io.to_tree(crossed))
    _assert_same_fit(crossed, back, data)
    assert back.parameterization == crossed.parameterization


def test_tree_round_trip_of_a_reml_fit(data):
    reml = bayeslmm.lmer("np.log(y) ~ x + (1 | g)", data, method="REML")
    back = io.from_tree(io.to_tree(reml))
    assert type(back) is type(reml)
    pd.testing.assert_frame_equal(back.fixef(), reml.fixef())
    pd.testing.assert_frame_equal(back.VarCorr(), reml.VarCorr())
    pd.testing.assert_series_equal(back.fitted(), reml.fitted())
    assert back.REMLcrit() == reml.REMLcrit()
    assert io.to_tree(back)[io.META_GROUP].identical(io.to_tree(reml)[io.META_GROUP])


def test_formula_with_a_user_function_is_refused_at_save(data):
    def double(v):
        return 2 * v

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bayeslmm.lmer("y ~ double(x) + (1 | g)", data, method="REML")
    with pytest.raises(PersistenceError, match="the function 'double'.*data columns before fitting"):
        io.to_tree(fit)
    assert fit.design.recipe is None and "double" in fit.design.recipe_problem
    # In the session the fit still predicts, through formulae's own encoders.
    rows = data.dropna().iloc[:3]
    pred = fit.predict(rows)
    pred = pred["Estimate"] if isinstance(pred, pd.DataFrame) else pred
    np.testing.assert_allclose(pred.to_numpy(), fit.fitted().iloc[:3].to_numpy(), rtol=1e-10)


def test_file_round_trip(fit, data, tmp_path):
    path = tmp_path / "fit.nc"
    assert fit.save(path) == path
    assert [p.name for p in tmp_path.iterdir()] == ["fit.nc"]  # one file, no temporary left
    back = bayeslmm.load(path)
    _assert_same_fit(fit, back, data)
    assert back.priors == fit.priors and back.settings == fit.settings
    plain = xr.open_datatree(path, engine="h5netcdf")  # a plain netCDF-4 file ArviZ can read
    assert {"posterior", "sample_stats", io.META_GROUP} <= set(plain.children)
    plain.close()


def test_reml_file_round_trip_and_prediction(data, tmp_path):
    reml = bayeslmm.lmer("np.log(y) ~ x + k + (1 | g)", data.dropna(), method="ML")
    assert reml.save(tmp_path / "reml.nc") == tmp_path / "reml.nc"  # the method, as on a Bayesian fit
    back = bayeslmm.load(tmp_path / "reml.nc")
    assert back.method == "ML"
    pd.testing.assert_frame_equal(back.fixef(), reml.fixef())
    nd = _newdata(data)
    pd.testing.assert_frame_equal(back.predict(nd, new_levels="population"), reml.predict(nd, new_levels="population"))


def test_save_to_a_bad_place(fit, tmp_path):
    with pytest.raises(PersistenceError, match="does not exist"):
        fit.save(tmp_path / "no" / "such" / "dir" / "fit.nc")
    with pytest.raises(PersistenceError, match="Could not write"):
        fit.save(tmp_path)  # a folder
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------
# Files that are not saved fits (the crafted ones are in test_tamper.py)
# ---------------------------------------------------------------------------
def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(PersistenceError, match="does not exist"):
        bayeslmm.load(tmp_path / "nothing.nc")
    junk = tmp_path / "junk.nc"
    junk.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(PersistenceError):
        bayeslmm.load(junk)
    text = tmp_path / "fit.nc"
    text.write_text("Reaction,Days\n1,2\n")
    with pytest.raises(PersistenceError):
        bayeslmm.load(text)
    other = tmp_path / "other.nc"
    xr.Dataset({"a": ("x", np.arange(3))}).to_netcdf(other, engine="h5netcdf")
    with pytest.raises(PersistenceError, match="not a saved bayeslmm fit"):
        bayeslmm.load(other)


def test_a_datatree_that_is_not_a_bayeslmm_fit(fit):
    with pytest.raises(PersistenceError, match="not a saved bayeslmm fit"):
        io.from_tree(fit.idata)


def test_newer_and_older_formats_are_refused_clearly(fit):
    tree = io.to_tree(fit)
    tree.attrs["bayeslmm_format"] = io.FORMAT_VERSION + 1
    with pytest.raises(PersistenceError, match="newer.*upgrade bayeslmm"):
        io.from_tree(tree)
    tree.attrs["bayeslmm_format"] = 1  # format 1 stored a formula that was evaluated on load
    with pytest.raises(PersistenceError, match="format 1.*Refit and save again"):
        io.from_tree(tree)


def test_saved_file_follows_the_umask(fit, tmp_path):
    import os

    old = os.umask(0o022)
    try:
        path = fit.save(tmp_path / "shared.nc")
        assert path.stat().st_mode & 0o777 == 0o644  # 0666 less the umask, as open() gives a new file
        os.umask(0o077)
        assert fit.save(tmp_path / "private.nc").stat().st_mode & 0o777 == 0o600
        os.chmod(path, 0o640)
        fit.save(path)  # replacing a file keeps its mode
        assert path.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


def test_unwritable_destinations_are_one_clean_error(fit, tmp_path):
    with pytest.raises(PersistenceError, match="does not exist"):
        io.check_writable(tmp_path / "no" / "fit.nc")
    with pytest.raises(PersistenceError, match="is a folder"):
        io.check_writable(tmp_path)
    with pytest.raises(PersistenceError, match="Cannot write"):
        io.check_writable("/proc/x.nc")  # the folder exists but holds no new files, even for root
    with pytest.raises(PersistenceError):
        fit.save("/proc/x.nc")
