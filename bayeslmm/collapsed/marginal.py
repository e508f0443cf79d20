"""The collapsed marginal likelihood written once for NumPy and PyTensor, and the exact group-effect draws.

:func:`marginal_parts` evaluates the algebra of :mod:`bayeslmm.collapsed`
on small matrices whose entries are vectors over groups
(:mod:`bayeslmm.collapsed.smallmat`). With :data:`NUMPY` it runs vectorised
over posterior draws, for :func:`add_group_effects` and
:func:`collapsed_loglik`; with :data:`PYTENSOR` it builds the graph of the
collapsed PyMC model (:mod:`bayeslmm.collapsed.graph`). The numba kernels
NUTS calls (:mod:`bayeslmm.collapsed.likelihood`) loop over groups instead,
and the tests check them against :func:`collapsed_loglik`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytensor.tensor as pt
import xarray as xr

from .. import naming
from ..design import BlockDesign, Design
from . import smallmat as sm
from .structure import SufficientStats, sufficient_stats

__all__ = ["MarginalParts", "NUMPY", "PYTENSOR", "marginal_parts", "collapsed_loglik", "add_group_effects"]

#: Draws x slots per chunk when drawing group effects (bounds the memory of temporaries).
_CHUNK_VALUES = 2_000_000
_LOG_2PI = float(np.log(2.0 * np.pi))


class _NumpyOps:
    """NumPy backend: parameters ``(S, 1)`` (δ: ``(S, p)``) or ``(1,)``; entries ``(S, groups)`` or ``(groups,)``."""

    xp, zero = np, 0.0

    @staticmethod
    def const(a: np.ndarray) -> Any:
        return a

    @staticmethod
    def resid(base: np.ndarray, M: np.ndarray, delta: Any) -> Any:
        return base - delta @ M.T

    @staticmethod
    def resid_ss(st: SufficientStats, delta: Any) -> Any:
        rr = st.ee - 2.0 * (delta @ st.Xe) + np.sum((delta @ st.XX) * delta, axis=-1)
        return np.asarray(rr)[..., None] if np.ndim(rr) else np.asarray([rr])

    @staticmethod
    def fold(x: Any, width: int) -> Any:
        return x if sm.is_zero(x) or width == 1 else x.reshape(x.shape[:-1] + (-1, width)).sum(axis=-1)

    @staticmethod
    def total(x: Any) -> Any:
        return 0.0 if sm.is_zero(x) else np.sum(x, axis=-1, keepdims=True)

    @staticmethod
    def loglik(n: int, sigma: Any, logdet: Any, quad: Any) -> Any:
        s2 = sigma**2
        return -0.5 * (n * (_LOG_2PI + np.log(s2)) + logdet + quad / s2)


class _TensorOps:
    """PyTensor backend: entries are vectors over groups, parameters scalars."""

    xp, zero = pt, 0

    @staticmethod
    def const(a: np.ndarray) -> Any:
        return pt.constant(np.ascontiguousarray(a, dtype=float))

    @staticmethod
    def resid(base: np.ndarray, M: np.ndarray, delta: Any) -> Any:
        return _TensorOps.const(base) - pt.dot(_TensorOps.const(M), delta) if M.shape[1] else _TensorOps.const(base)

    @staticmethod
    def resid_ss(st: SufficientStats, delta: Any) -> Any:
        if not st.XX.shape[0]:
            return st.ee
        return st.ee - 2.0 * pt.dot(delta, st.Xe) + pt.dot(delta, pt.dot(_TensorOps.const(st.XX), delta))

    @staticmethod
    def fold(x: Any, width: int) -> Any:
        return x if sm.is_zero(x) or width == 1 else x.reshape((-1, width)).sum(axis=1)

    @staticmethod
    def total(x: Any) -> Any:
        return 0 if sm.is_zero(x) else pt.sum(x)

    @staticmethod
    def loglik(n: int, sigma: Any, logdet: Any, quad: Any) -> Any:
        return -0.5 * (n * (_LOG_2PI + 2.0 * pt.log(sigma)) + logdet + quad / sigma**2)


#: The backends of :func:`marginal_parts`.
NUMPY = _NumpyOps()
PYTENSOR = _TensorOps()


@dataclass(frozen=True)
class MarginalParts:
    """The log-likelihood and the factors the group-effect draws reuse (names as in :mod:`bayeslmm.collapsed`).

    ``L``, ``u`` and ``U`` are empty without a nested factor.
    """

    loglik: Any
    K: sm.Mat
    v: sm.Mat
    L: sm.Mat
    u: sm.Mat
    U: sm.Mat


def marginal_parts(st: SufficientStats, delta: Any, sigma: Any, lam_o: sm.Mat, lam_i: sm.Mat, backend: Any = NUMPY) -> MarginalParts:
    """The collapsed log-likelihood at δ = β − β₀, σ and the outer and inner Cholesky factors Λ.

    ``backend`` is :data:`NUMPY` (arrays, vectorised over draws) or
    :data:`PYTENSOR` (a graph); the entries of ``lam_o`` and ``lam_i``
    broadcast against the groups.
    """
    ops, xp, m = backend, backend.xp, st.structure.width
    qo, qi = st.oo.shape[1], st.ii.shape[1]
    lt_o = sm.scale(lam_o, 1.0 / sigma)
    H = [[ops.const(st.oo[:, a, b]) for b in range(qo)] for a in range(qo)]
    w = [[ops.resid(st.oe[:, a], st.oX[:, a, :], delta)] for a in range(qo)]
    rr = ops.resid_ss(st, delta)
    logdet: Any = ops.zero
    L: sm.Mat = []
    u: sm.Mat = []
    U: sm.Mat = []
    if qi:
        lt_i = sm.scale(lam_i, 1.0 / sigma)
        A = [[ops.const(st.ii[:, a, b]) for b in range(qi)] for a in range(qi)]
        L = sm.cholesky(sm.add(sm.identity(qi), sm.matmul(sm.transpose(lt_i), sm.matmul(A, lt_i))), xp)
        Y = sm.solve_lower(L, sm.transpose(lt_i))
        u = sm.matmul(Y, [[ops.resid(st.ie[:, a], st.iX[:, a, :], delta)] for a in range(qi)])
        U = sm.matmul(Y, [[ops.const(st.io[:, a, b]) for b in range(qo)] for a in range(qi)])
        logdet = ops.total(sm.logdet_chol(L, xp))
        rr = rr - ops.total(sm.sum_squares(u))
        H = sm.sub(H, [[ops.fold(x, m) for x in row] for row in sm.gram(U, U)])
        w = sm.sub(w, [[ops.fold(x, m) for x in row] for row in sm.gram(U, u)])
    K = sm.cholesky(sm.add(sm.identity(qo), sm.matmul(sm.transpose(lt_o), sm.matmul(H, lt_o))), xp)
    v = sm.solve_lower(K, sm.matmul(sm.transpose(lt_o), w))
    quad = rr - ops.total(sm.sum_squares(v))
    logdet = logdet + ops.total(sm.logdet_chol(K, xp))
    return MarginalParts(ops.loglik(st.n, sigma, logdet, quad), K, v, L, u, U)


def _chol_entries(chols: list[np.ndarray], keys: tuple[int, ...]) -> sm.Mat:
    """The block-diagonal factor of the blocks ``keys`` as a small matrix; ``chols[k]`` is ``(..., q, q)``."""
    mats = []
    for k in keys:
        c = chols[k]
        q = c.shape[-1]
        mats.append([[c[..., i, j][..., None] if j <= i else 0 for j in range(q)] for i in range(q)])
    return sm.block_diag(mats)


def collapsed_loglik(design: Design, beta: np.ndarray, sigma: float, block_chols: list[np.ndarray]) -> float:
    """The collapsed log-likelihood at one parameter point, in NumPy (for checks).

    Parameters
    ----------
    design
        A collapsible design.
    beta
        Fixed effects (order of ``design.fixed_names``).
    sigma
        Residual sd.
    block_chols
        Per block of ``design.blocks``, the lower Cholesky factor of its group covariance.

    Returns
    -------
    float
        log p(y | β, σ, covariances) with the group effects integrated out.
    """
    st = sufficient_stats(design)
    chols = [np.asarray(c, dtype=float) for c in block_chols]
    lam_o, lam_i = _chol_entries(chols, st.structure.outer), _chol_entries(chols, st.structure.inner)
    delta = np.asarray(beta, dtype=float) - st.beta0
    return float(marginal_parts(st, delta, np.array([float(sigma)]), lam_o, lam_i).loglik[0])


def _posterior_factor(block: BlockDesign, post: Any) -> np.ndarray:
    """Per draw, the block's Cholesky factor ``(S, q, q)`` rebuilt from its sds and correlations."""
    sd = np.asarray(post[naming.sd(block.label)].values, dtype=float).reshape(-1, block.q)
    if block.q == 1:
        return sd[:, :, None]
    corr = np.asarray(post[naming.cor(block.label)].values, dtype=float).reshape(-1, block.q, block.q)
    try:
        chol = np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:  # a correlation of ±1 to machine precision in some draw
        chol = np.linalg.cholesky(corr + 1e-12 * np.eye(block.q))
    return sd[:, :, None] * chol


def add_group_effects(design: Design, idata: Any, random_seed: int | None = None, stats: SufficientStats | None = None) -> None:
    """Draw every block's group effects from p(γ | β, σ, Λ, y) for each posterior draw.

    With a = Λ⁻¹γ_g the outer effects are a = K_g⁻ᵀ(v_g/σ + ε), reusing the
    factors of the likelihood, and a nested factor's effects are then drawn
    given them: a_c = L_c⁻ᵀ((u_c − U_cγ_o)/σ + ε_c). The draws are added to
    ``idata.posterior`` as :func:`bayeslmm.naming.ranef` variables with dims
    ``(chain, draw, level, term)`` and the coordinates of the full model, so
    every table works unchanged.

    Parameters
    ----------
    design
        The collapsible design the posterior was sampled for.
    idata
        The posterior ``DataTree``; modified in place.
    random_seed
        Seed of the draws (the fit's seed); None draws fresh entropy.
    stats
        The design's sufficient statistics, if already computed.
    """
    st = stats or sufficient_stats(design)
    structure = st.structure
    post = idata.posterior
    chains, ndraw = int(post.sizes["chain"]), int(post.sizes["draw"])
    S = chains * ndraw
    beta = np.asarray(post[naming.FIXED].values, dtype=float).reshape(S, -1) if design.fixed_names else np.zeros((S, 0))
    sigma = np.asarray(post[naming.SIGMA].values, dtype=float).reshape(S, 1)
    chols = [_posterior_factor(b, post) for b in design.blocks]
    out = {k: np.empty((S, b.n_levels, b.q)) for k, b in enumerate(design.blocks)}
    rng = np.random.default_rng(None if random_seed is None else [int(random_seed), 0x5EED])
    step = max(1, _CHUNK_VALUES // max(structure.n_slots, structure.n_outer))
    for start in range(0, S, step):
        sel = slice(start, min(S, start + step))
        part = [c[sel] for c in chols]
        lam_o, lam_i = _chol_entries(part, structure.outer), _chol_entries(part, structure.inner)
        s = sigma[sel]
        parts = marginal_parts(st, beta[sel] - st.beta0, s, lam_o, lam_i)
        n_sel = s.shape[0]
        noise = [[v[0] / s + rng.standard_normal((n_sel, structure.n_outer))] for v in parts.v]
        gamma_o = sm.matmul(lam_o, sm.solve_lower_t(parts.K, noise))
        _scatter(out, design, structure.outer, gamma_o, sel, None)
        if structure.inner:
            slots = [[np.repeat(g[0], structure.width, axis=-1)] for g in gamma_o]
            shift = sm.sub(parts.u, sm.matmul(parts.U, slots))
            noise_i = [[x[0] / s + rng.standard_normal((n_sel, structure.n_slots))] for x in shift]
            gamma_i = sm.matmul(lam_i, sm.solve_lower_t(parts.L, noise_i))
            _scatter(out, design, structure.inner, gamma_i, sel, structure.inner_slot)
    for k, b in enumerate(design.blocks):
        ldim, tdim = naming.level_dim(b.label), naming.term_dim(b.label)
        da = xr.DataArray(
            out[k].reshape(chains, ndraw, b.n_levels, b.q),
            dims=("chain", "draw", ldim, tdim),
            coords={"chain": post["chain"].values, "draw": post["draw"].values, ldim: list(b.levels), tdim: list(b.terms)},
        )
        idata.posterior[naming.ranef(b.label)] = da


def _scatter(out: dict[int, np.ndarray], design: Design, keys: tuple[int, ...], gamma: sm.Mat, sel: slice, slot: np.ndarray | None) -> None:
    """Copy the rows of the stacked effect vector ``gamma`` into each block's output array."""
    row = 0
    for k in keys:
        for t in range(design.blocks[k].q):
            values = gamma[row][0]
            out[k][sel, :, t] = values if slot is None else values[:, slot]
            row += 1
