"""Saving and loading fits: one netCDF-4 (HDF5) file of data; nothing in it is ever evaluated.

File layout (``FORMAT_VERSION`` 2)::

    /                 root attributes: bayeslmm_format (int), bayeslmm_kind, bayeslmm_version
    /posterior, ...   the fit's ArviZ DataTree groups, as ArviZ writes them (Bayesian fits)
    /bayeslmm         one variable ``meta_json``: the UTF-8 bytes of a JSON document

The JSON document holds, as plain data: the formula's text; the *model frame*
(the used columns of the training rows, with their dtypes and category
levels, as lme4 keeps ``fm@frame``); the design's *recipe*
(:mod:`bayeslmm.recipe`: every model-matrix column as a column, an allowlisted
transformation with its learnt constants stored as numbers, or categorical
levels with their contrast matrix; every grouping factor's levels); the
priors, sampler settings and diagnostics and a log-likelihood fingerprint of a
Bayesian fit, or the estimates of a REML/ML fit.

Loading trusts nothing in the file:

* declared array sizes are checked against the bytes the file really holds
  before anything is read (:func:`check_sizes`);
* the JSON is parsed by :mod:`json` and every field's type is checked; the
  recipe may hold only the allowlisted nodes of :mod:`bayeslmm.transforms`;
* the formula's text is parsed by formulae (a parser: nothing is looked up
  or evaluated), must use only the allowlist, and must describe the same
  terms as the recipe; it is never evaluated: y, X and Z are rebuilt from the
  model frame by the recipe alone (:func:`bayeslmm.rebuild.rebuild_design`);
* the numbers must agree with the data (:mod:`bayeslmm.verify`): a REML/ML
  fit is recomputed and compared, a posterior is checked for shape, type,
  range and its log-likelihood.

A fit whose formula calls a function outside the allowlist (the user's own)
cannot be saved; make that column in the data before fitting.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import _plaindata as fj
from .design import Design
from .errors import PersistenceError
from .filecheck import check_sizes, check_writable
from .fitbase import MixedFit
from .savefile import ENGINE, FORMAT_VERSION, META_GROUP, META_VAR, fit_tree, restore_design, write_fit

__all__ = ["FORMAT_VERSION", "META_GROUP", "META_VAR", "ENGINE", "save", "load", "to_tree", "from_tree", "check_sizes", "check_writable"]


# ---------------------------------------------------------------------------
# Writing (the work is done by :mod:`bayeslmm.savefile`)
# ---------------------------------------------------------------------------
def _fit_kind(fit: Any) -> str:
    if not isinstance(fit, MixedFit):
        raise PersistenceError(f"Only bayeslmm fits can be saved, got {type(fit).__name__}.")
    return fit.file_kind


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
        If the fit cannot be stored so that :func:`from_tree` restores it
        (its formula uses a function outside the allowlist).
    """
    return fit_tree(fit, _fit_kind(fit))


def save(fit: Any, path: str | os.PathLike) -> Path:
    """Write a fit to one netCDF-4 file.

    The file is written atomically (a temporary file, then renamed) and gets
    the permissions a new file gets (0666 less the umask), or keeps those of
    the file it replaces.

    Parameters
    ----------
    fit
        A :class:`~bayeslmm.results.BayesFit` (or a REML/ML fit).
    path
        Destination.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    PersistenceError
        If the fit cannot be stored so that :func:`load` restores it (its
        formula uses a function outside the allowlist), or the file cannot be
        written.
    """
    return write_fit(fit, _fit_kind(fit), path)


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------
def _open(path: Path) -> xr.DataTree:
    if not path.is_file():
        raise PersistenceError(f"No saved fit at {str(path)!r}: the file does not exist.")
    try:
        check_sizes(path)
    except ImportError as exc:
        raise PersistenceError(f"Reading {str(path)!r} needs h5py for the {ENGINE} engine: {exc}") from None
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
    if int(fmt) < FORMAT_VERSION:
        raise PersistenceError(
            f"{source!r} was written in bayeslmm file format {int(fmt)}, which stored a formula to be evaluated on "
            "load; this version loads only files that hold their encoding as data (format 2). Refit and save again."
        )
    node = tree[META_GROUP]
    if META_VAR not in node.variables or node[META_VAR].dtype != np.uint8 or node[META_VAR].ndim != 1:
        raise PersistenceError(f"{source!r} has no valid bayeslmm metadata.")
    try:
        meta = json.loads(bytes(np.asarray(node[META_VAR].values)).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PersistenceError(f"The metadata of {source!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise PersistenceError(f"The metadata of {source!r} is nested too deeply to be a saved fit.") from None
    meta = fj.expect(meta, dict, "metadata")
    if fj.field(meta, "format", int) != int(fmt):
        raise PersistenceError(f"The metadata of {source!r} disagrees with the file's format version.")
    return meta

# ---------------------------------------------------------------------------
# Reading: the fit
# ---------------------------------------------------------------------------
def _restore_bayes(meta: dict[str, Any], design: Design, tree: xr.DataTree):
    from .model import build_model
    from .parameterization import full_model_parameterization, fully_collapsed
    from .results import BayesFit
    from .sampling import Diagnostics, SamplerSettings
    from .verify import check_loglik, check_posterior

    priors = fj.decode_priors(fj.field(meta, "priors", dict))
    param = fj.field(meta, "parameterization", dict)
    labels = {b.label for b in design.blocks}
    if set(param) != labels or not all(v in ("centered", "noncentered", "collapsed") for v in param.values()):
        raise PersistenceError(f"Invalid parameterization {param!r} for blocks {sorted(labels)}.")
    settings = SamplerSettings(**fj.decode_dataclass(fj.field(meta, "settings", dict), SamplerSettings))
    diagnostics = Diagnostics(**fj.decode_dataclass(fj.field(meta, "diagnostics", dict), Diagnostics))
    idata = tree.drop_nodes(META_GROUP)
    idata.attrs = {k: v for k, v in idata.attrs.items() if not k.startswith("bayeslmm_")}
    check_posterior(design, idata)
    if (diagnostics.chains, diagnostics.draws) != (idata.posterior.sizes["chain"], idata.posterior.sizes["draw"]):
        raise PersistenceError("The saved diagnostics do not match the number of chains and draws of the posterior.")
    check_loglik(design, idata, meta.get("loglik"))
    try:
        if fully_collapsed(param):
            from .collapsed import build_collapsed_model

            model = build_collapsed_model(design, priors)
        else:
            model = build_model(design, priors, full_model_parameterization(design, param))
    except Exception as exc:  # untrusted priors may still be rejected by PyMC
        raise PersistenceError(f"The saved priors do not build a model: {type(exc).__name__}: {exc}") from None
    return BayesFit(design=design, priors=priors, model_factory=lambda: model, idata=idata, settings=settings,
                    diagnostics=diagnostics, parameterization=param)


def _restore_reml(meta: dict[str, Any], design: Design, tree: xr.DataTree):
    from .reml import REMLResult
    from .reml_fit import REMLFit
    from .verify import check_reml

    if set(tree.children) != {META_GROUP}:
        raise PersistenceError("A saved REML/ML fit holds no posterior; this file has unexpected groups.")
    result = REMLResult(**fj.decode_dataclass(fj.field(meta, "result", dict), REMLResult))
    if fj.field(meta, "method", str) != result.method:
        raise PersistenceError("The saved method does not match the saved estimates.")
    check_reml(design, result)
    return REMLFit(design=design, result=result)


def from_tree(tree: xr.DataTree, source: str = "<memory>"):
    """Rebuild a fit from the DataTree :func:`to_tree` makes (what :func:`load` reads from a file).

    Parameters
    ----------
    tree
        The stored tree; nothing in it is trusted, and nothing in it is evaluated.
    source
        Where the tree came from, for error messages.

    Returns
    -------
    BayesFit or REMLFit

    Raises
    ------
    PersistenceError
        For anything that is not a consistent saved fit (see the module docstring).
    """
    try:
        meta = _read_meta(tree, source)
        kind = fj.field(meta, "kind", str)
        if kind not in ("bayes", "reml") or kind != tree.attrs.get("bayeslmm_kind"):
            raise PersistenceError(f"{source!r} holds an unknown kind of fit {kind!r}.")
        design = restore_design(fj.field(meta, "design", dict))
        if kind == "bayes":
            return _restore_bayes(meta, design, tree)
        return _restore_reml(meta, design, tree)
    except PersistenceError:
        raise
    except (RecursionError, ValueError, TypeError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        # Every check above names what it refuses; this catches what a crafted file reaches past them.
        raise PersistenceError(
            f"{source!r} is not a valid saved fit (corrupt or modified): {type(exc).__name__}: {str(exc)[:200]}"
        ) from None


def load(path: str | os.PathLike):
    """Read a fit written by :func:`save` (or ``fit.save``).

    Parameters
    ----------
    path
        A file written by ``fit.save(path)``.

    Returns
    -------
    BayesFit or REMLFit
        The fit, with its design rebuilt from the stored model frame and
        recipe (so ``predict`` encodes new data exactly as before) and, for a
        Bayesian fit, the PyMC model rebuilt from the design and priors.

    Raises
    ------
    PersistenceError
        If the file does not exist, is not a bayeslmm file, is corrupt or was
        modified (see :mod:`bayeslmm.verify` for what is checked), or was
        written by another file format.
    """
    path = Path(path)
    return from_tree(_open(path), str(path))
