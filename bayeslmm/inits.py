"""REML estimates as NUTS starting values.

The REML fit of the same design gives β, σ, each block's covariance and the
conditional modes. Mapped onto the model's variables (by the names in
:mod:`bayeslmm.naming`), they start every chain near the posterior bulk;
PyMC's jitter then spreads the chains.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pymc as pm

from . import naming
from .design import Design
from .reml import REMLResult

__all__ = ["reml_initvals"]

#: Floor on sds taken from a (possibly singular) REML fit, relative to sd(y).
_SD_FLOOR = 0.05


def reml_initvals(variables: pm.Model | Collection[str], design: Design, result: REMLResult) -> dict[str, np.ndarray]:
    """Initial values for a model's free variables from a REML fit.

    Only the variables named (those of ``variables``, a model or a collection
    of names from :mod:`bayeslmm.naming`) are set, so the same function serves
    the full and the collapsed model. Zero variance components (singular fits)
    are floored at 5% of sd(y) so every start is inside the support.

    Parameters
    ----------
    variables
        The PyMC model, or the names of the variables wanted.
    design
        Its design.
    result
        REML fit of the same design.

    Returns
    -------
    dict
        ``{variable name: value}`` for ``pm.sample(initvals=...)``.
    """
    names = {v.name for v in variables.free_RVs} if isinstance(variables, pm.Model) else set(variables)
    init: dict[str, np.ndarray] = {}
    beta = np.asarray(result.beta, dtype=float)
    idx = design.intercept_index
    if naming.INTERCEPT_CENTERED in names and idx is not None:
        slopes = [j for j in range(len(beta)) if j != idx]
        xbar = design.moments.x_mean[slopes]
        init[naming.INTERCEPT_CENTERED] = np.asarray(beta[idx] + xbar @ beta[slopes])
        init[naming.SLOPES] = beta[slopes]
    elif naming.FIXED in names:
        init[naming.FIXED] = beta
    floor = _SD_FLOOR * design.moments.y_sd
    if naming.SIGMA in names:
        init[naming.SIGMA] = np.asarray(max(result.sigma, floor))
    for k, b in enumerate(design.blocks):
        cov = np.asarray(result.block_cov[k], dtype=float)
        sd = np.maximum(np.sqrt(np.clip(np.diag(cov), 0, None)), floor)
        corr = cov / np.outer(np.sqrt(np.clip(np.diag(cov), 1e-300, None)), np.sqrt(np.clip(np.diag(cov), 1e-300, None)))
        corr = np.clip(np.nan_to_num(corr), -0.9, 0.9)
        np.fill_diagonal(corr, 1.0)
        L = np.linalg.cholesky(np.outer(sd, sd) * corr)
        modes = np.asarray(result.ranef[k], dtype=float)
        if naming.sd(b.label) in names:
            init[naming.sd(b.label)] = sd
        if naming.chol(b.label) in names:
            init[naming.chol(b.label)] = L[np.tril_indices(b.q)]
        if naming.offset(b.label) in names:
            init[naming.offset(b.label)] = np.linalg.solve(L, modes.T).T
        if naming.ranef(b.label) in names:
            init[naming.ranef(b.label)] = modes
    return init
