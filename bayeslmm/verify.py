"""Checks that a loaded fit is what was saved: its numbers agree with its own data.

MixedModels.jl restores a fit by recomputing its objective at the stored
parameters and comparing it with the stored value. :mod:`bayeslmm.io` does the
same, after the design has been rebuilt from the stored model frame and recipe:

* **REML/ML fit**: the fit is recomputed on the rebuilt design (lme4's
  algorithm, :func:`bayeslmm.reml.fit_reml`) and every stored estimate must
  agree with it -- the criterion to 1e-4, β to 1% of its standard error, σ,
  the covariances, conditional modes and fitted values to 0.1% of σ.
* **Posterior**: every variable the fit needs is present with exactly the
  dimensions ``(chain, draw, ...)`` and coordinates the design implies, as
  finite floating-point numbers, with σ > 0, sds >= 0 and correlations in
  [-1, 1]; every other variable is numeric with chain and draw dimensions;
  the stored observed response equals the model frame's; and the pointwise
  log-likelihood recomputed from the model frame and the posterior agrees
  with the stored one at every value (and, always, with the stored total
  log-likelihood of a spread of draws, which covers fits too large to keep
  the pointwise values).

These checks establish that the file is consistent, not who wrote it: a file
rewritten consistently by hand (posterior and log-likelihood together) still
loads. Nothing in a file is ever evaluated.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import xarray as xr

from . import naming
from .design import Design
from .errors import BayesLMMError, PersistenceError

__all__ = ["ALLOWED_GROUPS", "check_posterior", "loglik_fingerprint", "check_loglik", "check_reml"]

#: DataTree groups a saved Bayesian fit may hold (besides the metadata group).
ALLOWED_GROUPS = ("posterior", "sample_stats", "log_likelihood", "observed_data", "posterior_predictive")
_DRAW_GROUPS = ("posterior", "sample_stats", "log_likelihood", "posterior_predictive")
#: Number of draws whose total log-likelihood is stored in the metadata.
FINGERPRINT_DRAWS = 64
_LL_RTOL = 1e-8


def _fail(message: str) -> PersistenceError:
    return PersistenceError(f"The saved posterior {message}; the file was modified or is corrupt.")


def _expected(design: Design) -> dict[str, tuple[tuple[str, list[str]], ...]]:
    """Variable -> its non-sample dimensions and their coordinates."""
    out: dict[str, tuple[tuple[str, list[str]], ...]] = {naming.SIGMA: ()}
    if design.fixed_names:
        out[naming.FIXED] = ((naming.FIXED_DIM, list(design.fixed_names)),)
    for b in design.blocks:
        ldim, tdim = naming.level_dim(b.label), naming.term_dim(b.label)
        out[naming.ranef(b.label)] = ((ldim, list(b.levels)), (tdim, list(b.terms)))
        out[naming.sd(b.label)] = ((tdim, list(b.terms)),)
        if b.q > 1:
            out[naming.cor(b.label)] = ((tdim, list(b.terms)), (naming.term_dim2(b.label), list(b.terms)))
    return out


def _check_groups(idata: xr.DataTree) -> None:
    unknown = sorted(set(idata.children) - set(ALLOWED_GROUPS))
    if unknown:
        raise _fail(f"has unexpected group(s) {unknown}")
    if "posterior" not in idata.children:
        raise _fail("is missing (no posterior group)")
    for name, node in idata.children.items():
        if node.children:
            raise _fail(f"group {name!r} has subgroups")
        for var, da in node.data_vars.items():
            if da.dtype.kind not in "biuf":
                raise _fail(f"variable {name}/{var} has dtype {da.dtype}, not numbers")
            if name in _DRAW_GROUPS and da.dims[:2] != ("chain", "draw"):
                raise _fail(f"variable {name}/{var} has dimensions {da.dims}, not (chain, draw, ...)")
            if name == "posterior" and not np.all(np.isfinite(np.asarray(da.values, dtype=float))):
                raise _fail(f"variable {var!r} has non-finite values")
        for dim in ("chain", "draw"):
            if dim in node.coords and node.coords[dim].dtype.kind not in "iu":
                raise _fail(f"group {name!r} numbers its {dim}s with {node.coords[dim].dtype}, not integers")


def check_posterior(design: Design, idata: xr.DataTree) -> None:
    """Refuse a posterior that does not fit the design (see the module docstring).

    Raises
    ------
    PersistenceError
        Naming the variable at fault.
    """
    _check_groups(idata)
    post = idata.posterior
    for var, extra in _expected(design).items():
        if var not in post.data_vars:
            raise _fail(f"lacks the variable {var!r}")
        da = post[var]
        dims = ("chain", "draw") + tuple(d for d, _ in extra)
        if da.dims != dims:
            raise _fail(f"variable {var!r} has dimensions {da.dims}, not {dims}")
        for d, labels in extra:
            if d not in post.coords or [str(v) for v in post.coords[d].values] != labels:
                raise _fail(f"coordinate {d!r} of {var!r} does not match the design")
        if da.dtype.kind != "f":
            raise _fail(f"variable {var!r} has dtype {da.dtype}, not floating point")
        values = np.asarray(da.values)
        if not np.all(np.isfinite(values)):
            raise _fail(f"variable {var!r} has non-finite values")
        if var == naming.SIGMA and not np.all(values > 0):
            raise _fail("has sigma draws that are not positive")
        if var in {naming.sd(b.label) for b in design.blocks} and not np.all(values >= 0):
            raise _fail(f"has negative draws of {var!r}")
        if var in {naming.cor(b.label) for b in design.blocks}:
            diag = np.diagonal(values, axis1=-2, axis2=-1)
            if np.any(np.abs(values) > 1 + 1e-9) or np.any(np.abs(diag - 1) > 1e-6):
                raise _fail(f"has correlation draws of {var!r} outside [-1, 1] or without a unit diagonal")
    if post.sizes["chain"] < 1 or post.sizes["draw"] < 1:
        raise _fail("has no draws")
    if "observed_data" in idata.children:
        obs = idata.observed_data
        y = obs.get(naming.LIKELIHOOD)
        if y is None or y.dims != (naming.OBS_DIM,) or not np.array_equal(np.asarray(y.values, dtype=float), design.y):
            raise _fail("observed response differs from the response of the saved model frame")


def _totals(design: Design, idata: xr.DataTree, flat: np.ndarray) -> np.ndarray:
    from .fitstats import pointwise_log_likelihood
    from .paramdraws import ParamDraws

    p = ParamDraws.from_posterior(design, idata)
    sub = ParamDraws(
        p.beta[flat], p.sigma[flat], tuple(r[flat] for r in p.ranef), tuple(s[flat] for s in p.sd), tuple(c[flat] for c in p.cor)
    )
    return pointwise_log_likelihood(design, sub).sum(axis=1)


def loglik_fingerprint(design: Design, idata: xr.DataTree) -> dict[str, list]:
    """The total log-likelihood of a spread of draws, stored with a saved fit.

    Returns
    -------
    dict
        ``{"draws": flat draw indices, "values": Σ_i log p(y_i | draw)}``.
    """
    post = idata.posterior
    S = int(post.sizes["chain"]) * int(post.sizes["draw"])
    flat = np.unique(np.linspace(0, S - 1, min(S, FINGERPRINT_DRAWS)).round().astype(int))
    return {"draws": flat.tolist(), "values": _totals(design, idata, flat).tolist()}


def check_loglik(design: Design, idata: xr.DataTree, fingerprint: Any) -> None:
    """Refuse a posterior whose log-likelihood disagrees with the model frame.

    Parameters
    ----------
    design
        The design rebuilt from the saved model frame.
    idata
        The saved posterior (already checked by :func:`check_posterior`).
    fingerprint
        The stored :func:`loglik_fingerprint` (untrusted).

    Raises
    ------
    PersistenceError
        If the stored pointwise log-likelihood, or the stored totals, differ
        from those recomputed from the model frame and the posterior.
    """
    post = idata.posterior
    S = int(post.sizes["chain"]) * int(post.sizes["draw"])
    if not isinstance(fingerprint, dict) or set(fingerprint) != {"draws", "values"}:
        raise _fail("lacks its log-likelihood fingerprint")
    draws, values = fingerprint["draws"], fingerprint["values"]
    if (
        not isinstance(draws, list) or not isinstance(values, list) or len(draws) != len(values) or not draws
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < S for d in draws)
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    ):
        raise _fail("has a malformed log-likelihood fingerprint")
    got = _totals(design, idata, np.asarray(draws, dtype=int))
    if not np.allclose(got, np.asarray(values, dtype=float), rtol=_LL_RTOL, atol=1e-8):
        raise _fail("does not reproduce its log-likelihood from the saved model frame (the data or the draws changed)")
    if "log_likelihood" not in idata.children:
        return
    from .fitstats import pointwise_log_likelihood
    from .paramdraws import ParamDraws

    ll = idata.log_likelihood.get(naming.LIKELIHOOD)
    dims = ("chain", "draw", naming.OBS_DIM)
    if ll is None or ll.dims != dims or ll.shape != (post.sizes["chain"], post.sizes["draw"], design.nobs):
        raise _fail(f"log-likelihood is not a (chain, draw, obs) array of {design.nobs} observations")
    recomputed = pointwise_log_likelihood(design, ParamDraws.from_posterior(design, idata))
    stored = np.asarray(ll.values, dtype=float).reshape(S, design.nobs)
    bad = ~np.isclose(stored, recomputed, rtol=_LL_RTOL, atol=1e-8)
    if bad.any():
        raise _fail(f"pointwise log-likelihood differs from the one recomputed from the saved model frame at {int(bad.sum())} value(s)")


def _close(name: str, stored: Any, refit: Any, atol: Any, rtol: float = 0.0) -> None:
    a = np.asarray(stored, dtype=float)
    b = np.asarray(refit, dtype=float)
    if a.shape != b.shape or not np.all(np.isfinite(a)) or not np.allclose(a, b, rtol=rtol, atol=atol):
        raise PersistenceError(
            f"The saved REML/ML estimate {name!r} differs from the fit recomputed from the saved model frame; "
            "the file was modified or is corrupt."
        )


def check_reml(design: Design, stored: Any) -> None:
    """Refuse a REML/ML result that the saved design does not reproduce.

    Parameters
    ----------
    design
        The design rebuilt from the saved model frame.
    stored
        The saved :class:`~bayeslmm.reml.REMLResult` (untrusted).

    Raises
    ------
    PersistenceError
        Naming the first estimate that differs.
    """
    from .reml import fit_reml

    if stored.method not in ("REML", "ML"):
        raise PersistenceError(f"The saved fit has an unknown method {stored.method!r}.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refit = fit_reml(design, stored.method, condvar=stored.condsd is not None)
    except BayesLMMError as exc:
        raise PersistenceError(f"The saved model frame no longer gives a {stored.method} fit: {exc}") from None
    for name in ("nobs", "n_fixed", "n_params", "fixed_names", "block_labels", "block_factors", "block_terms", "block_levels"):
        if getattr(stored, name) != getattr(refit, name):
            raise PersistenceError(f"The saved REML/ML fit's {name!r} does not match its design; the file was modified.")
    if any(len(getattr(stored, f) or ()) != len(getattr(refit, f) or ()) for f in ("block_cov", "ranef", "condsd")):
        raise PersistenceError("The saved REML/ML fit has the wrong number of blocks; the file was modified.")
    sigma = refit.sigma
    crit_tol = 1e-4 + 1e-8 * abs(refit.criterion)
    for name in ("criterion", "loglik", "reml_criterion", "deviance"):
        a, b = getattr(stored, name), getattr(refit, name)
        if (a is None) != (b is None):
            raise PersistenceError(f"The saved REML/ML fit's {name!r} does not match its method; the file was modified.")
        if a is not None:
            _close(name, a, b, crit_tol)
    _close("beta", stored.beta, refit.beta, 1e-2 * refit.beta_se + 1e-10)
    _close("beta_se", stored.beta_se, refit.beta_se, 1e-12, rtol=1e-2)
    _close("vcov_beta", stored.vcov_beta, refit.vcov_beta, 1e-2 * np.outer(refit.beta_se, refit.beta_se) + 1e-300)
    _close("sigma", stored.sigma, sigma, 1e-3 * sigma)
    _close("theta", stored.theta, refit.theta, 1e-2)
    _close("fitted", stored.fitted, refit.fitted, 1e-3 * sigma)
    for k, label in enumerate(refit.block_labels):
        _close(f"block_cov of {label}", stored.block_cov[k], refit.block_cov[k], 1e-2 * sigma**2, rtol=1e-2)
        _close(f"ranef of {label}", stored.ranef[k], refit.ranef[k], 1e-3 * sigma)
        if refit.condsd is not None:
            _close(f"condsd of {label}", stored.condsd[k], refit.condsd[k], 1e-3 * sigma)
