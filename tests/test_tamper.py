"""The tamper suite: crafted saved fits must be refused, and nothing in them may run.

Every crafted file carries payloads that would create a marker file if any
string from it reached an evaluator (``eval``, formulae's evaluation, an
attribute lookup). Each test checks that loading raises ``PersistenceError``
and that the marker does not exist; an autouse fixture checks that formulae's
transforms were not patched (the payload of issue 10 replaced
``formulae.transforms.Offset`` with ``eval`` for the rest of the process).
The files are real netCDF-4 files written and read through ``save``/``load``,
or the same trees through ``to_tree``/``from_tree``.
"""

from __future__ import annotations

import json
import time
import warnings

import formulae.transforms
import h5py
import numpy as np
import pytest
import xarray as xr

import bayeslmm
from bayeslmm import PersistenceError, io, naming


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sleep():
    return bayeslmm.datasets.load("sleepstudy")


FORMULA = "Reaction ~ Days + (Days || Subject)"


@pytest.fixture(scope="module")
def bayes(sleep):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bayeslmm.lmer(FORMULA, sleep, draws=60, tune=60, chains=2, cores=1, random_seed=7, progressbar=False)


@pytest.fixture(scope="module")
def reml(sleep):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bayeslmm.lmer(FORMULA, sleep, method="REML")


@pytest.fixture(params=["bayes", "reml"])
def fit(request, bayes, reml):
    return bayes if request.param == "bayes" else reml


@pytest.fixture(autouse=True)
def formulae_untouched():
    before = (formulae.transforms.Offset, dict(formulae.transforms.TRANSFORMS))
    yield
    assert (formulae.transforms.Offset, dict(formulae.transforms.TRANSFORMS)) == before


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a payload from a crafted file ran"


# ---------------------------------------------------------------------------
# Crafting
# ---------------------------------------------------------------------------
def _meta(tree: xr.DataTree) -> dict:
    return json.loads(bytes(tree[io.META_GROUP][io.META_VAR].values).decode())


def _with_meta(tree: xr.DataTree, meta_bytes: bytes) -> xr.DataTree:
    tree = tree.copy()
    tree[io.META_GROUP] = xr.DataTree(xr.Dataset({io.META_VAR: (("meta_byte",), np.frombuffer(meta_bytes, np.uint8))}))
    return tree


def _edited(fit, edit) -> xr.DataTree:
    tree = io.to_tree(fit)
    meta = _meta(tree)
    edit(meta)
    return _with_meta(tree, json.dumps(meta).encode())


def _refused(tree: xr.DataTree, tmp_path, match: str | None = None) -> None:
    """Refused from the tree, and from a real file written from it."""
    with pytest.raises(PersistenceError, match=match):
        io.from_tree(tree)
    path = tmp_path / "crafted.nc"
    tree.to_netcdf(path, engine="h5netcdf")
    with pytest.raises(PersistenceError, match=match):
        bayeslmm.load(path)


def _payloads(marker) -> dict[str, str]:
    touch = f"__import__('os').system('touch {marker}')"
    return {
        "touch": touch,
        "eval": "eval",
        "open": f"open('{marker}', 'w')",
        # issue 10: the stored formula reached eval through dunder chains on formulae's own objects
        "issue": "np.maximum(offset.__globals__.update(Offset=offset.__builtins__.get(np.maximum.reduce(e))), "
                 "offset(np.maximum.reduce(c)))",
    }


def _add_payload_columns(meta: dict, marker) -> None:
    """The extra model-frame columns of issue 10: e = "eval", c = the command."""
    n = meta["design"]["frame"]["nrow"]
    for name, value in (("e", "eval"), ("c", f"__import__('os').system('touch {marker}')")):
        meta["design"]["frame"]["columns"].append({"name": name, "dtype": "object", "values": [value] * n})


def _hostile_formulas(marker) -> list[str]:
    p = _payloads(marker)
    issue, touch = p["issue"], p["touch"]
    return [
        # the exact formula of issue 10, then the same payload in a || term, a / term and backquoted names
        f"Reaction ~ Days + (`{issue}` || Subject)",
        f"Reaction ~ Days + (1 + `{touch}` || Subject)",
        f"Reaction ~ Days + (1 | Subject/`{issue}`)",
        f"Reaction ~ Days + (Days | Subject/`{touch}`)",
        f"Reaction ~ `{issue}` + (Days || Subject)",
        f"`{touch}` ~ Days + (Days || Subject)",
        f"Reaction ~ Days + (1 | `{touch}`)",
        # the payload as code, anywhere formulae would evaluate it
        f"Reaction ~ Days + {issue} + (Days || Subject)",
        f"Reaction ~ Days + ({issue} || Subject)",
        f"Reaction ~ Days + (1 | Subject/{issue})",
        f"Reaction ~ Days + I({touch}) + (Days || Subject)",
        f"Reaction ~ Days + C({touch}) + (Days || Subject)",
        f"Reaction ~ Days + poly(Days, {touch}) + (Days || Subject)",
        f"{touch} ~ Days + (Days || Subject)",
        f"Reaction ~ Days + np.lib.npyio.os.system('touch {marker}') + (Days || Subject)",
        f"Reaction ~ Days + np.log.__class__('touch {marker}') + (Days || Subject)",
        f"Reaction ~ Days + offset.__globals__.get('os').system('touch {marker}') + (Days || Subject)",
        f"Reaction ~ Days + eval(\"open('{marker}', 'w')\") + (Days || Subject)",
        f"Reaction ~ Days + 1 | {touch}",
        f"Reaction ~ Days + (Days || Subject) + exec(\"import os; os.system('touch {marker}')\")",
    ]


# ---------------------------------------------------------------------------
# Formulas and frames holding code
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("k", range(20))
def test_hostile_formula_is_refused_and_does_not_run(fit, marker, tmp_path, k):
    hostile = _hostile_formulas(marker)[k]

    def edit(meta):
        meta["design"]["formula"] = hostile
        _add_payload_columns(meta, marker)

    _refused(_edited(fit, edit), tmp_path)


def test_issue_payload_with_a_consistent_frame_is_only_data(bayes, marker, tmp_path):
    # Even a frame that really has a column named like the payload gives a file whose recipe and formula disagree.
    issue = _payloads(marker)["issue"]

    def edit(meta):
        meta["design"]["formula"] = f"Reaction ~ Days + (`{issue}` || Subject)"
        _add_payload_columns(meta, marker)
        n = meta["design"]["frame"]["nrow"]
        meta["design"]["frame"]["columns"].append({"name": issue, "dtype": "float64", "values": [1.0] * n})

    _refused(_edited(bayes, edit), tmp_path, match="does not describe")


def _node_edit(path: tuple, value):
    def edit(meta):
        node = meta["design"]["recipe"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


def _deep(depth: int) -> list:
    node: list = ["col", "Days"]
    for _ in range(depth):
        node = ["unary", "-", node]
    return node


@pytest.mark.parametrize(
    "path, value",
    [
        (("fixed", 1, 0, "node"), ["fn", "system", ["str", "touch {marker}"]]),
        (("fixed", 1, 0, "node"), ["fn", "eval", ["str", "__import__('os').system('touch {marker}')"]]),
        (("fixed", 1, 0, "node"), ["call", "os.system", ["str", "touch {marker}"]]),
        (("fixed", 1, 0, "node"), ["fn", "np.log.__class__", ["col", "Days"]]),
        (("fixed", 1, 0, "node"), ["op", "__class__", ["col", "Days"], ["num", 1]]),
        (("fixed", 1, 0, "node"), ["col", "__import__('os').system('touch {marker}')"]),
        (("fixed", 1, 0, "node"), ["num", "__import__('os')"]),
        (("fixed", 1, 0, "node"), ["poly", ["col", "Days"], 10**9, True, [], []]),
        (("fixed", 1, 0, "node"), ["scale", ["col", "Days"], 0.0, -1.0]),
        (("fixed", 1, 0, "node"), ["center", ["col", "Days"], "nan"]),
        (("fixed", 1, 0, "node"), ["fn", "log", ["C", ["col", "Days"]]]),
        (("fixed", 1, 0, "node"), _deep(500)),
        (("fixed", 1, 0, "name"), "Days2"),
        (("fixed", 1, 0, "ncol"), 3),
        (("fixed", 1, 0, "levels"), ["a", "b"]),
        (("response", "node"), ["op", "+", ["col", "Reaction"], ["num", 1000]]),
        (("kept",), [0, 1, 7]),
        (("blocks", 0, "levels", 0, 0), "__import__('os').system('touch {marker}')"),
        (("blocks", 0, "levels"), [[308]] * 18),
        (("blocks", 0, "factor"), "Days"),
        (("blocks", 0, "kinds"), ["eval"]),
        (("blocks", 0, "terms", 0), [{"name": "x", "node": ["fn", "exec", ["col", "Days"]], "ncol": 1,
                                      "levels": None, "contrast": None, "contrast_labels": None}]),
        (("blocks",), []),
    ],
)
def test_tampered_recipe_is_refused(fit, marker, tmp_path, path, value):
    value = json.loads(json.dumps(value).replace("{marker}", str(marker)))
    _refused(_edited(fit, _node_edit(path, value)), tmp_path)


def test_deeply_nested_json_is_a_persistence_error(fit, tmp_path):
    # json.loads raises RecursionError on this; it must be reported as a bad file
    _refused(_with_meta(io.to_tree(fit), b"[" * 200_000 + b"]" * 200_000), tmp_path, match="nested too deeply")
    text = json.dumps(_meta(io.to_tree(fit)), separators=(",", ":"))
    nested = '["unary","-",' * 5000 + '["col","Reaction"]' + "]" * 5000  # deep inside the recipe
    assert '"node":["col","Reaction"]' in text
    deep = text.replace('"node":["col","Reaction"]', '"node":' + nested, 1)
    _refused(_with_meta(io.to_tree(fit), deep.encode()), tmp_path, match="nested too deeply")


# ---------------------------------------------------------------------------
# Numbers that do not agree with the data
# ---------------------------------------------------------------------------
def _shift_response(meta):
    col = next(c for c in meta["design"]["frame"]["columns"] if c["name"] == "Reaction")
    col["values"] = [v + 1000 for v in col["values"]]


def test_response_shifted_by_1000_is_refused(fit, tmp_path):
    # the estimates stay as they were; the data no longer agree with them
    _refused(_edited(fit, _shift_response), tmp_path, match="modified")


def test_response_shifted_in_frame_and_observed_data_is_refused(bayes, tmp_path):
    tree = _edited(bayes, _shift_response)
    tree["observed_data"] = xr.DataTree(tree["observed_data"].to_dataset() + 1000)
    _refused(tree, tmp_path, match="log-likelihood")


def test_frame_with_a_renamed_level_is_refused(fit, tmp_path):
    def edit(meta):
        col = next(c for c in meta["design"]["frame"]["columns"] if c["name"] == "Subject")
        col["values"] = [999 if v == 308 else v for v in col["values"]]

    _refused(_edited(fit, edit), tmp_path, match="do not rebuild|levels")


def _set_posterior(tree: xr.DataTree, name: str, da) -> xr.DataTree:
    tree = tree.copy()
    post = tree["posterior"].to_dataset()
    post = post.drop_vars(name) if da is None else post.assign({name: da})
    tree["posterior"] = xr.DataTree(post)
    return tree


def test_posterior_tampering_is_refused(bayes, tmp_path):
    tree = io.to_tree(bayes)
    post = tree["posterior"].to_dataset()
    sigma = post[naming.SIGMA]
    beta = post[naming.FIXED]
    cases = {
        "negative sigma": (naming.SIGMA, sigma.where(sigma.draw != 3, -sigma)),
        "NaN sigma": (naming.SIGMA, sigma.where(sigma.draw != 3, np.nan)),
        "missing sigma": (naming.SIGMA, None),
        "integer sigma": (naming.SIGMA, sigma.astype(int)),
        "string sigma": (naming.SIGMA, sigma.astype(str)),
        "no chain dimension": (naming.SIGMA, sigma.isel(chain=0)),
        "draw dimension first": (naming.SIGMA, sigma.transpose("draw", "chain")),
        "beta with renamed coefficients": (naming.FIXED, beta.assign_coords({naming.FIXED_DIM: ["a", "b"]})),
        "beta changed": (naming.FIXED, beta + 5.0),
    }
    for what, (name, da) in cases.items():
        with pytest.raises(PersistenceError):
            io.from_tree(_set_posterior(tree, name, da))
        assert what  # each case is refused
    # issue 10: beta stored with shape [1] was printed as 1.0 for both coefficients
    short = post.drop_vars([naming.FIXED, naming.FIXED_DIM]).assign({naming.FIXED: beta.isel({naming.FIXED_DIM: [0]})})
    assert short[naming.FIXED].shape[-1] == 1
    tree_short = tree.copy()
    tree_short["posterior"] = xr.DataTree(short)
    with pytest.raises(PersistenceError, match="coordinate 'fixed'"):
        io.from_tree(tree_short)
    sd = post[naming.sd("Subject")]
    with pytest.raises(PersistenceError, match="negative"):
        io.from_tree(_set_posterior(tree, naming.sd("Subject"), -sd))


def test_bit_flips_in_the_log_likelihood_are_refused(bayes, tmp_path):
    tree = io.to_tree(bayes)
    ll = tree["log_likelihood"].to_dataset()
    raw = ll["y"].values.copy().reshape(-1)
    bits = raw.view(np.uint64)
    bits[1000:1251] ^= np.uint64(1 << 40)  # issue 10: a bit flip changed 251 values
    ll["y"].values[...] = raw.reshape(ll["y"].shape)
    tree["log_likelihood"] = xr.DataTree(ll)
    _refused(tree, tmp_path, match="251 value")


def test_extra_groups_and_object_arrays_are_refused(bayes, tmp_path):
    tree = io.to_tree(bayes)
    tree["evil"] = xr.DataTree(xr.Dataset({"x": ("i", np.arange(3))}))
    with pytest.raises(PersistenceError, match="unexpected group"):
        io.from_tree(tree)
    tree = io.to_tree(bayes)
    stats = tree["sample_stats"].to_dataset()
    stats["note"] = stats["diverging"].astype(str)
    tree["sample_stats"] = xr.DataTree(stats)
    with pytest.raises(PersistenceError, match="dtype"):
        io.from_tree(tree)


@pytest.mark.parametrize(
    "field, change",
    [
        ("beta", lambda v: {**v, "data": [v["data"][0] + 2.0, v["data"][1]]}),  # about one standard error
        ("sigma", lambda v: v * 2),
        ("criterion", lambda v: v - 1.0),
        ("theta", lambda v: {**v, "data": [x * 1.5 for x in v["data"]]}),
        ("fitted", lambda v: {**v, "data": [x + 1.0 for x in v["data"]]}),
        ("ranef", lambda v: [{**r, "data": [x + 1.0 for x in r["data"]]} for r in v]),
        ("block_labels", lambda v: ["Subject", "Days"]),
        ("nobs", lambda v: v + 1),
    ],
)
def test_reml_estimates_that_the_data_do_not_give_are_refused(reml, tmp_path, field, change):
    def edit(meta):
        meta["result"][field] = change(meta["result"][field])

    _refused(_edited(reml, edit), tmp_path)


# ---------------------------------------------------------------------------
# Sizes declared before anything is read
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("compression", [None, "gzip"])
def test_a_small_file_claiming_a_huge_array_is_refused_cheaply(bayes, tmp_path, compression):
    path = bayes.save(tmp_path / "fit.nc")
    with h5py.File(path, "a") as fh:
        # 3 GiB declared, nothing written: the chunks are never allocated
        fh["posterior"].create_dataset("huge", shape=(402_653_184,), dtype="f8", chunks=(1_048_576,),
                                       compression=compression)
    assert path.stat().st_size < 2_000_000
    start = time.perf_counter()
    with pytest.raises(PersistenceError, match="declares 3,221,225,472 bytes"):
        bayeslmm.load(path)
    assert time.perf_counter() - start < 5  # refused before reading, not after allocating 3 GiB


def test_the_cli_refuses_a_crafted_file_in_one_line(bayes, marker, tmp_path, capsys):
    from bayeslmm.cli import main

    def edit(meta):
        meta["design"]["formula"] = _hostile_formulas(marker)[0]
        _add_payload_columns(meta, marker)

    path = tmp_path / "evil.nc"
    _edited(bayes, edit).to_netcdf(path, engine="h5netcdf")
    new = tmp_path / "new.csv"
    bayeslmm.datasets.load("sleepstudy").head().to_csv(new, index=False)
    for args in (["summary", str(path)], ["predict", str(path), str(new)]):
        assert main(args) == 1
        err = capsys.readouterr().err
        assert err.startswith("Error: ") and "Traceback" not in err


def test_arrays_stored_outside_the_file_are_refused(bayes, tmp_path):
    path = bayes.save(tmp_path / "fit.nc")
    with h5py.File(path, "a") as fh:
        fh["posterior"].create_dataset("secret", shape=(8,), dtype="u1", external=[("/etc/hostname", 0, 8)])
    with pytest.raises(PersistenceError, match="takes its data from outside the file"):
        bayeslmm.load(path)
