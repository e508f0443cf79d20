"""Saving and loading fits: one netCDF-4 (HDF5) file, no pickle, no eval.

File layout (``FORMAT_VERSION`` 1)::

    /                 root attributes: bayeslmm_format (int), bayeslmm_kind, bayeslmm_version
    /posterior, ...   the fit's ArviZ DataTree groups, as ArviZ writes them (Bayesian fits)
    /bayeslmm         one variable ``meta_json``: the UTF-8 bytes of a JSON document

The JSON document holds, as plain data, everything needed to rebuild the fit
and predict on new data: the formula, the *model frame* (the used columns of
the training rows, with their dtypes and category levels -- re-running the
design stage on it restores formulae's encodings exactly, as lme4 does with
``fm@frame``), the design's names and levels (checked after the rebuild), the
priors, sampler settings, diagnostics and parameterization, or for a REML/ML
fit (``kind = "reml"``) its point estimates. The PyMC model is rebuilt from
the design and the priors.

Reading trusts nothing in the file: JSON is parsed with :mod:`json` and every
field's type is checked; the formula is parsed again by formulae (a parser,
not ``eval``), and calls in it are evaluated in a restricted environment
holding a whitelist of numpy functions only (:func:`safe_env`), so a formula
can use ``np.log(x)`` but no builtin and no module attribute. A formula that
called the user's own functions therefore cannot be saved; make the column in
the data before fitting.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import types
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from formulae.environment import Environment
from formulae.scanner import Scanner

from . import _plaindata as fj
from .design import Design, build_design
from .errors import PersistenceError
from .formula import parse_formula

__all__ = ["FORMAT_VERSION", "save", "load", "to_tree", "from_tree", "safe_env"]

FORMAT_VERSION = 1
META_GROUP = "bayeslmm"
META_VAR = "meta_json"
ENGINE = "h5netcdf"

#: numpy functions a saved formula may call (``np.log(x)``, ``numpy.sqrt(x)``).
SAFE_NUMPY = (
    "abs absolute sign sqrt cbrt square power exp exp2 expm1 log log2 log10 log1p sin cos tan arcsin arccos "
    "arctan sinh cosh tanh arcsinh arccosh arctanh floor ceil round rint trunc clip maximum minimum reciprocal"
).split()


def safe_env() -> Environment:
    """The formulae environment used when loading: ``np``/``numpy`` with :data:`SAFE_NUMPY` only."""
    ns = types.SimpleNamespace(**{name: getattr(np, name) for name in SAFE_NUMPY})
    return Environment([{"np": ns, "numpy": ns}])


def _check_identifiers(formula: str) -> None:
    """Refuse dotted names that reach for private attributes (``np._core``, ``np.log.__class__``).

    A plain name is only ever looked up in the data and in :func:`safe_env`, so
    ``__import__`` cannot resolve; a dotted name is resolved by ``getattr``, which
    must never be handed ``_private`` or ``__dunder__`` attributes.
    """
    try:
        tokens = Scanner(formula).scan()
    except Exception as exc:
        raise PersistenceError(f"The saved formula {formula!r} cannot be scanned: {exc}") from None
    for tok in tokens:
        if tok.kind == "IDENTIFIER" and any(part.startswith("_") for part in tok.lexeme.split(".")[1:]):
            raise PersistenceError(f"The saved formula {formula!r} uses the name {tok.lexeme!r}, which is not allowed.")


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------
def _fit_kind(fit: Any) -> str:
    from .reml_fit import REMLFit
    from .results import BayesFit

    if isinstance(fit, BayesFit):
        return "bayes"
    if isinstance(fit, REMLFit):
        return "reml"
    raise PersistenceError(f"Only bayeslmm fits can be saved, got {type(fit).__name__}.")


def _block_records(design: Design) -> list[dict[str, Any]]:
    """The names and levels of the random-effect blocks (stored, and compared after the rebuild)."""
    return [
        {"label": b.label, "factor": b.factor, "terms": list(b.terms), "levels": list(b.levels)}
        for b in design.blocks
    ]


def _design_meta(design: Design) -> dict[str, Any]:
    return {
        "formula": design.parsed.text,
        "frame": fj.encode_frame(design.frame),
        "fixed_names": list(design.fixed_names),
        "dropped_fixed": list(design.dropped_fixed),
        "n_dropped_rows": int(design.n_dropped_rows),
        "blocks": _block_records(design),
    }


def _metadata(fit: Any, kind: str) -> dict[str, Any]:
    from . import __version__

    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "bayeslmm_version": __version__,
        "kind": kind,
        "design": _design_meta(fit.design),
    }
    if kind == "bayes":
        meta["method"] = "NUTS"
        meta["priors"] = {"entries": fit.priors.to_list(), "intercept_centered": bool(fit.priors.intercept_centered)}
        meta["settings"] = fj.plain(dataclasses.asdict(fit.settings))
        meta["diagnostics"] = fj.plain(dataclasses.asdict(fit.diagnostics))
        meta["parameterization"] = dict(fit.parameterization)
    else:
        meta["method"] = fit.result.method
        meta["result"] = fj.encode_dataclass(fit.result)
    return meta


def to_tree(fit: Any) -> xr.DataTree:
    """The fit as the DataTree that :func:`save` writes (posterior groups plus ``/bayeslmm``).

    Parameters
    ----------
    fit
        A :class:`~bayeslmm.results.BayesFit` or :class:`~bayeslmm.reml_fit.REMLFit`.

    Returns
    -------
    xarray.DataTree
        A new tree; the fit's own ``idata`` is not modified.

    Raises
    ------
    PersistenceError
        If the fit cannot be stored so that :func:`from_tree` restores it exactly
        (e.g. its formula calls a function outside :data:`SAFE_NUMPY`).
    """
    kind = _fit_kind(fit)
    meta = _metadata(fit, kind)
    text = json.dumps(meta, allow_nan=True, separators=(",", ":"))
    try:
        _restore_design(json.loads(text)["design"])  # refuse now what load would refuse later
    except PersistenceError as exc:
        raise PersistenceError(
            f"This fit cannot be saved so that it loads again: {exc} (A saved formula may call only numpy "
            "functions such as np.log; compute other transformations as data columns before fitting.)"
        ) from None
    tree = fit.idata.copy() if kind == "bayes" else xr.DataTree()
    tree.attrs = {**tree.attrs, "bayeslmm_format": FORMAT_VERSION, "bayeslmm_kind": kind,
                  "bayeslmm_version": meta["bayeslmm_version"]}
    payload = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    tree[META_GROUP] = xr.DataTree(xr.Dataset({META_VAR: (("meta_byte",), payload)}))
    return tree


def save(fit: Any, path: str | os.PathLike) -> Path:
    """Write a fit to one netCDF-4 file.

    Parameters
    ----------
    fit
        A :class:`~bayeslmm.results.BayesFit` (or a REML/ML fit).
    path
        Destination; written atomically (a temporary file, then renamed).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    PersistenceError
        If the fit cannot be stored so that :func:`load` restores it exactly
        (e.g. its formula calls a function outside :data:`SAFE_NUMPY`), or the
        file cannot be written.
    """
    tree = to_tree(fit)
    path = Path(path)
    if not path.parent.is_dir():
        raise PersistenceError(f"Cannot write {str(path)!r}: the folder {str(path.parent)!r} does not exist.")
    fd, tmp = tempfile.mkstemp(suffix=".nc", dir=path.parent)
    os.close(fd)
    try:
        tree.to_netcdf(tmp, engine=ENGINE)
        os.replace(tmp, path)
    except ImportError as exc:
        raise PersistenceError(f"Writing {str(path)!r} needs h5py for the {ENGINE} engine: {exc}") from None
    except Exception as exc:
        raise PersistenceError(f"Could not write {str(path)!r}: {type(exc).__name__}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------
def _open(path: Path) -> xr.DataTree:
    if not path.is_file():
        raise PersistenceError(f"No saved fit at {str(path)!r}: the file does not exist.")
    try:
        with xr.open_datatree(path, engine=ENGINE) as tree:
            return tree.load()
    except ImportError as exc:
        raise PersistenceError(f"Reading {str(path)!r} needs h5py for the {ENGINE} engine: {exc}") from None
    except Exception as exc:
        raise PersistenceError(
            f"{str(path)!r} is not a readable netCDF-4 file (corrupt, or not written by bayeslmm): "
            f"{type(exc).__name__}: {exc}"
        ) from None


def _read_meta(tree: xr.DataTree, source: str) -> dict[str, Any]:
    fmt = tree.attrs.get("bayeslmm_format")
    if fmt is None or META_GROUP not in tree.children:
        raise PersistenceError(f"{source!r} is a netCDF file but not a saved bayeslmm fit.")
    if not isinstance(fmt, (int, np.integer)) or isinstance(fmt, (bool, np.bool_)):
        raise PersistenceError(f"{source!r} has an invalid format version {fmt!r}.")
    if int(fmt) > FORMAT_VERSION:
        raise PersistenceError(
            f"{source!r} was written in bayeslmm file format {int(fmt)}, newer than this version reads "
            f"(up to {FORMAT_VERSION}); upgrade bayeslmm to load it."
        )
    node = tree[META_GROUP]
    if META_VAR not in node.variables or node[META_VAR].dtype != np.uint8 or node[META_VAR].ndim != 1:
        raise PersistenceError(f"{source!r} has no valid bayeslmm metadata.")
    try:
        meta = json.loads(bytes(np.asarray(node[META_VAR].values)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PersistenceError(f"The metadata of {source!r} is not valid JSON: {exc}") from None
    meta = fj.expect(meta, dict, "metadata")
    if fj.field(meta, "format", int) != int(fmt):
        raise PersistenceError(f"The metadata of {source!r} disagrees with the file's format version.")
    return meta


def _restore_design(dmeta: dict[str, Any]) -> Design:
    formula = fj.field(dmeta, "formula", str)
    _check_identifiers(formula)
    frame = fj.decode_frame(fj.field(dmeta, "frame", dict))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            design = build_design(parse_formula(formula), frame, na_action="raise", env=safe_env())
    except Exception as exc:  # the file is untrusted: whatever fails, it is the file's fault
        raise PersistenceError(f"The saved formula and model frame no longer build a design: {exc}") from None
    if (
        list(design.fixed_names) != fj.field(dmeta, "fixed_names", list)
        or list(design.dropped_fixed) != fj.field(dmeta, "dropped_fixed", list)
        or _block_records(design) != fj.field(dmeta, "blocks", list)
    ):
        raise PersistenceError(
            "The model frame in the file does not rebuild the saved design (fixed names, levels or terms differ); "
            "the file was modified or written by an incompatible version."
        )
    n_dropped = fj.field(dmeta, "n_dropped_rows", int)
    return dataclasses.replace(design, n_dropped_rows=n_dropped)


def _check_posterior(design: Design, idata: xr.DataTree) -> None:
    from . import naming

    if "posterior" not in idata.children:
        raise PersistenceError("The file has no posterior group.")
    post = idata.posterior
    expected = {naming.SIGMA: None}
    if design.fixed_names:
        expected[naming.FIXED] = (naming.FIXED_DIM, list(design.fixed_names))
    for b in design.blocks:
        expected[naming.ranef(b.label)] = (naming.level_dim(b.label), list(b.levels))
        expected[naming.sd(b.label)] = (naming.term_dim(b.label), list(b.terms))
    for var, coord in expected.items():
        if var not in post.variables:
            raise PersistenceError(f"The posterior in the file lacks the variable {var!r}.")
        if coord is not None and (coord[0] not in post.coords or [str(v) for v in post.coords[coord[0]].values] != coord[1]):
            raise PersistenceError(f"The posterior coordinate {coord[0]!r} does not match the saved design.")


def _restore_bayes(meta: dict[str, Any], design: Design, tree: xr.DataTree):
    from .model import build_model
    from .results import BayesFit
    from .sampling import Diagnostics, SamplerSettings

    priors = fj.decode_priors(fj.field(meta, "priors", dict))
    param = fj.field(meta, "parameterization", dict)
    labels = {b.label for b in design.blocks}
    if set(param) != labels or not all(v in ("centered", "noncentered", "collapsed") for v in param.values()):
        raise PersistenceError(f"Invalid parameterization {param!r} for blocks {sorted(labels)}.")
    settings = SamplerSettings(**fj.decode_dataclass(fj.field(meta, "settings", dict), SamplerSettings))
    diagnostics = Diagnostics(**fj.decode_dataclass(fj.field(meta, "diagnostics", dict), Diagnostics))
    idata = tree.drop_nodes(META_GROUP)
    idata.attrs = {k: v for k, v in idata.attrs.items() if not k.startswith("bayeslmm_")}
    _check_posterior(design, idata)
    try:
        if "collapsed" in param.values():
            from .collapsed import build_collapsed_model

            model = build_collapsed_model(design, priors)
        else:
            model = build_model(design, priors, param)
    except Exception as exc:  # untrusted priors may still be rejected by PyMC
        raise PersistenceError(f"The saved priors do not build a model: {type(exc).__name__}: {exc}") from None
    return BayesFit(design=design, priors=priors, model_factory=lambda: model, idata=idata, settings=settings,
                    diagnostics=diagnostics, parameterization=param)


def _restore_reml(meta: dict[str, Any], design: Design):
    from .reml import REMLResult
    from .reml_fit import REMLFit

    result = REMLResult(**fj.decode_dataclass(fj.field(meta, "result", dict), REMLResult))
    if tuple(result.fixed_names) != design.fixed_names or tuple(result.block_labels) != tuple(
        b.label for b in design.blocks
    ):
        raise PersistenceError("The saved REML estimates do not match the saved design.")
    return REMLFit(design=design, result=result)


def from_tree(tree: xr.DataTree, source: str = "<memory>"):
    """Rebuild a fit from the DataTree :func:`to_tree` makes (what :func:`load` reads from a file).

    Parameters
    ----------
    tree
        The stored tree; nothing in it is trusted.
    source
        Where the tree came from, for error messages.

    Returns
    -------
    BayesFit or REMLFit
    """
    meta = _read_meta(tree, source)
    kind = fj.field(meta, "kind", str)
    if kind not in ("bayes", "reml") or kind != tree.attrs.get("bayeslmm_kind"):
        raise PersistenceError(f"{source!r} holds an unknown kind of fit {kind!r}.")
    design = _restore_design(fj.field(meta, "design", dict))
    if kind == "bayes":
        return _restore_bayes(meta, design, tree)
    return _restore_reml(meta, design)


def load(path: str | os.PathLike):
    """Read a fit written by :func:`save` (or ``fit.save``).

    Parameters
    ----------
    path
        A file written by ``fit.save(path)``.

    Returns
    -------
    BayesFit or REMLFit
        The fit, with its design rebuilt from the stored model frame (so
        ``predict`` on new data encodes exactly as before) and, for a Bayesian
        fit, the PyMC model rebuilt from the design and priors.

    Raises
    ------
    PersistenceError
        If the file does not exist, is not a bayeslmm file, is corrupt or was
        modified, or was written by a newer file format.
    """
    path = Path(path)
    return from_tree(_open(path), str(path))
