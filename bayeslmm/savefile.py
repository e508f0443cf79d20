"""Writing a fit's file, and rebuilding its design from the file's metadata.

The file layout and what loading checks are described in :mod:`bayeslmm.io`, the public
module. This lower module holds what needs no fit class: the fit classes' ``save`` write
through it, and :mod:`bayeslmm.io` adds the reading of the fit objects, so neither fit module
imports the module that constructs them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from . import _plaindata as fj
from ._recipejson import decode_recipe, encode_recipe
from .design import Design
from .errors import BayesLMMError, PersistenceError
from .filecheck import new_file_mode
from .formula import ParsedFormula, check_closed, parse_formula
from .rebuild import rebuild_design
from .recipe import DesignRecipe, strip
from .transforms import NotAllowedError, describe_component

__all__ = ["FORMAT_VERSION", "META_GROUP", "META_VAR", "ENGINE", "FIT_KINDS", "fit_tree", "write_fit", "restore_design"]

FORMAT_VERSION = 2
META_GROUP = "bayeslmm"
META_VAR = "meta_json"
ENGINE = "h5netcdf"
#: The kinds of fit a file can hold (a fit class's ``file_kind``).
FIT_KINDS = ("bayes", "reml")


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------
def _design_meta(design: Design) -> dict[str, Any]:
    if design.recipe is None:
        raise PersistenceError(
            f"This fit cannot be saved: {design.recipe_problem}. A saved fit holds data only, so its formula may use "
            "only data columns and the transformations of bayeslmm.transforms (log, exp, sqrt, I(), poly(), "
            "scale(), C(), ...); compute other transformations as data columns before fitting."
        )
    return {
        "formula": design.parsed.text,
        "frame": fj.encode_frame(design.frame),
        "recipe": encode_recipe(design.recipe),
        "n_dropped_rows": int(design.n_dropped_rows),
    }


def _metadata(fit: Any, kind: str) -> dict[str, Any]:
    from . import __version__
    from .verify import loglik_fingerprint

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
        meta["loglik"] = loglik_fingerprint(fit.design, fit.idata)
    else:
        meta["method"] = fit.result.method
        meta["result"] = fj.encode_dataclass(fit.result)
    return meta

def fit_tree(fit: Any, kind: str) -> xr.DataTree:
    """The fit as the DataTree :func:`write_fit` writes (posterior groups plus ``/bayeslmm``).

    Parameters
    ----------
    fit
        A :class:`~bayeslmm.results.BayesFit` or :class:`~bayeslmm.reml_fit.REMLFit`.
    kind
        Its ``file_kind``, one of :data:`FIT_KINDS`.

    Returns
    -------
    xarray.DataTree
        A new tree; the fit's own ``idata`` is not modified.

    Raises
    ------
    PersistenceError
        If the fit cannot be stored so that :func:`bayeslmm.io.from_tree` restores it
        (its formula uses a function outside the allowlist).
    """
    if kind not in FIT_KINDS:
        raise PersistenceError(f"Unknown kind of fit {kind!r}; a file holds one of {FIT_KINDS}.")
    meta = _metadata(fit, kind)
    text = json.dumps(meta, allow_nan=True, separators=(",", ":"))
    try:
        restore_design(json.loads(text)["design"])  # refuse now what load would refuse later
        if kind == "bayes":
            from .verify import check_posterior

            check_posterior(fit.design, fit.idata)
    except PersistenceError as exc:
        raise PersistenceError(f"This fit cannot be saved so that it loads again: {exc}") from None
    tree = fit.idata.copy() if kind == "bayes" else xr.DataTree()
    tree.attrs = {**tree.attrs, "bayeslmm_format": FORMAT_VERSION, "bayeslmm_kind": kind,
                  "bayeslmm_version": meta["bayeslmm_version"]}
    payload = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    tree[META_GROUP] = xr.DataTree(xr.Dataset({META_VAR: (("meta_byte",), payload)}))
    return tree

def write_fit(fit: Any, kind: str, path: str | os.PathLike) -> Path:
    """Write a fit to one netCDF-4 file.

    The file is written atomically (a temporary file, then renamed) and gets
    the permissions a new file gets (0666 less the umask), or keeps those of
    the file it replaces.

    Parameters
    ----------
    fit
        A :class:`~bayeslmm.results.BayesFit` (or a REML/ML fit).
    kind
        Its ``file_kind``, one of :data:`FIT_KINDS`.
    path
        Destination.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    PersistenceError
        If the fit cannot be stored so that :func:`bayeslmm.io.load` restores it (its
        formula uses a function outside the allowlist), or the file cannot be
        written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise PersistenceError(f"Cannot write {str(path)!r}: the folder {str(path.parent)!r} does not exist.")
    tree = fit_tree(fit, kind)
    try:
        fd, tmp = tempfile.mkstemp(suffix=".nc", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise PersistenceError(f"Could not write {str(path)!r}: {exc.strerror or exc}.") from None
    try:
        tree.to_netcdf(tmp, engine=ENGINE)
        os.chmod(tmp, new_file_mode(path))
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
# Reading: the design, rebuilt from data
# ---------------------------------------------------------------------------
def _signature(components: Any) -> frozenset:
    return frozenset((str(c.name), strip(describe_component(c))) for c in components)


def _recipe_signature(components: Any) -> frozenset:
    return frozenset((c.name, strip(c.node)) for c in components)


def _check_formula_matches(parsed: ParsedFormula, recipe: DesignRecipe, columns: set[str]) -> None:
    """The formula's text must describe the recipe's terms (it is shown to the user)."""
    try:
        resp = parsed.response.term.components
        fixed = _signature(c for t in parsed.fixed_terms for c in getattr(t, "components", ()))
        blocks = Counter(
            (rb.factor_vars, _signature(c for e in rb.exprs for c in getattr(e, "components", ())), rb.has_intercept)
            for rb in parsed.blocks
        )
    except NotAllowedError as exc:
        raise PersistenceError(f"The saved formula uses {exc}.") from None
    r_blocks = Counter(
        (b.factor_vars, _recipe_signature(c for t in b.terms for c in t.components), any(not t.components for t in b.terms))
        for b in recipe.blocks
    )
    same = (
        _signature(resp) == _recipe_signature([recipe.response])
        and fixed == _recipe_signature(c for t in recipe.fixed for c in t.components)
        and blocks == r_blocks
        and set(parsed.var_names) == columns
    )
    if not same:
        raise PersistenceError(
            "The saved formula does not describe the saved recipe and model frame; the file was modified."
        )


def restore_design(dmeta: dict[str, Any]) -> Design:
    """The design of a file's ``design`` metadata, rebuilt from its model frame and recipe, trusting nothing in it."""
    text = fj.field(dmeta, "formula", str)
    frame = fj.decode_frame(fj.field(dmeta, "frame", dict))
    recipe = decode_recipe(fj.field(dmeta, "recipe", dict))
    try:
        parsed = parse_formula(text)  # parsing only: nothing is looked up or evaluated
        check_closed(parsed)
    except BayesLMMError as exc:
        raise PersistenceError(f"The saved formula is not allowed: {exc}") from None
    _check_formula_matches(parsed, recipe, {str(c) for c in frame.columns})
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            design = rebuild_design(parsed, recipe, frame, fj.field(dmeta, "n_dropped_rows", int))
    except BayesLMMError as exc:
        raise PersistenceError(f"The saved recipe and model frame do not rebuild the design: {exc}") from None
    return design
