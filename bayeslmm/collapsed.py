"""Stage 4 (collapsed model): Design + Priors -> ``pm.Model`` with the group effects integrated out.

For a Gaussian model whose random-effect blocks all belong to one grouping
factor, or to two factors of which one is nested in the other, the group
effects are integrated out analytically: y ~ N(Xβ, σ²(I + ZΛ̃Λ̃'Z')) with
Λ̃ = Λ/σ the block-diagonal Cholesky factor of the group covariance relative
to σ (lme4's form). Per top-level group g, with the inner groups c nested in it:

* P_c = I + Λ̃ᵢ'Zᵢ'ZᵢΛ̃ᵢ = L_c L_c',  u_c = L_c⁻¹Λ̃ᵢ'Zᵢ'r,  U_c = L_c⁻¹Λ̃ᵢ'Zᵢ'Z_o;
* H_g = Z_o'Z_o − Σ_c U_c'U_c,  w_g = Z_o'r − Σ_c U_c'u_c  (Z_o'W⁻¹Z_o and Z_o'W⁻¹r);
* Q_g = I + Λ̃_o'H_gΛ̃_o = K_g K_g',  v_g = K_g⁻¹Λ̃_o'w_g;
* log p(y) = −½[n log 2πσ² + Σ_c log|P_c| + Σ_g log|Q_g| + (r'r − Σ u'u − Σ v'v)/σ²].

Everything depends on the data only through per-group sums (Z'Z, Z'X, Z'e) and
the global X'X, X'e, e'e, with e = y − Xβ₀ the residual at the least-squares
β₀ (r = e − X(β − β₀), which avoids cancellation). They are computed once by
``np.bincount``; after that a gradient costs O(groups·q³), whatever n is.
Three implementations share this algebra: the numba kernel NUTS calls
(:mod:`bayeslmm._collapsed_kernel`, with the gradient), a PyTensor graph for
``fit.model`` and the optional samplers (:mod:`bayeslmm._collapsed_graph`),
and :func:`_np_marginal` here, vectorised over draws, for the exact draws of
the group effects and for checks.

After sampling, :func:`add_group_effects` draws the group effects of every
posterior draw from their exact Gaussian conditional, so the posterior has the
same variables as the full model's. See ``docs/collapsed.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from . import _smallmat as sm
from . import naming
from ._collapsed_graph import block_factor, graph_loglik
from ._moments import plan_parameterization
from .design import BlockDesign, Design
from .errors import BayesLMMError
from .model import _rv, fixed_effects, model_coords
from .priors import Priors

__all__ = [
    "MAX_Q",
    "CollapsedStructure",
    "SufficientStats",
    "collapse_structure",
    "can_collapse",
    "plan_parameterization",
    "sufficient_stats",
    "build_collapsed_model",
    "collapsed_loglik",
    "add_group_effects",
]

#: Largest number of terms per factor (summed over its blocks) handled by the unrolled algebra.
MAX_Q = 3
#: Largest padding of nested groups (slots / inner levels) before falling back to the full model.
_MAX_PADDING = 8
#: Draws x slots per chunk when drawing group effects (bounds the memory of temporaries).
_CHUNK_VALUES = 2_000_000
_LOG_2PI = float(np.log(2.0 * np.pi))


@dataclass(frozen=True)
class CollapsedStructure:
    """Which blocks are integrated out, and how groups are laid out.

    Attributes
    ----------
    outer
        Indices (into ``design.blocks``) of the blocks of the top-level factor.
    inner
        Indices of the blocks of the factor nested in it (empty if none).
    n_outer
        Number of top-level groups G.
    width
        Slots per top-level group m: the most inner levels any group has (1 without nesting).
    inner_slot
        Slot (in ``0 .. G*m-1``, group-major) of every inner level; empty without nesting.
    """

    outer: tuple[int, ...]
    inner: tuple[int, ...]
    n_outer: int
    width: int
    inner_slot: np.ndarray

    @property
    def n_slots(self) -> int:
        """Length G*m of the padded vector of inner groups."""
        return self.n_outer * self.width


def _parents(inner_idx: np.ndarray, outer_idx: np.ndarray, n_inner: int) -> np.ndarray | None:
    """The outer level of every inner level, or None if some inner level spans two outer levels."""
    parent = np.full(n_inner, -1, dtype=np.int64)
    parent[inner_idx] = outer_idx
    return parent if np.array_equal(parent[inner_idx], outer_idx) else None


def collapse_structure(design: Design) -> CollapsedStructure | None:
    """The collapsed layout of a design, or None if it cannot be collapsed.

    A design can be collapsed when its blocks belong to one grouping factor,
    or to two factors one of which is nested in the other (every level of the
    inner factor lies within one level of the outer, judged from the data),
    and each factor has at most :data:`MAX_Q` terms over its blocks.
    """
    by_factor: dict[str, list[int]] = {}
    for k, b in enumerate(design.blocks):
        by_factor.setdefault(b.factor, []).append(k)
    if not by_factor or len(by_factor) > 2:
        return None
    groups = sorted(by_factor.values(), key=lambda ks: design.blocks[ks[0]].n_levels)
    if any(sum(design.blocks[k].q for k in ks) > MAX_Q for ks in groups):
        return None
    outer = groups[0]
    g_out = design.blocks[outer[0]]
    if len(groups) == 1:
        return CollapsedStructure(tuple(outer), (), g_out.n_levels, 1, np.zeros(0, dtype=np.int64))
    inner = groups[1]
    g_in = design.blocks[inner[0]]
    parent = _parents(g_in.group_idx, g_out.group_idx, g_in.n_levels)
    if parent is None:
        return None
    counts = np.bincount(parent, minlength=g_out.n_levels)
    width = int(counts.max())
    if g_out.n_levels * width > max(_MAX_PADDING * g_in.n_levels, 4096):
        return None
    order = np.argsort(parent, kind="stable")
    starts = np.cumsum(counts) - counts
    slot = np.empty(g_in.n_levels, dtype=np.int64)
    slot[order] = parent[order] * width + (np.arange(g_in.n_levels) - starts[parent[order]])
    return CollapsedStructure(tuple(outer), tuple(inner), g_out.n_levels, width, slot)


def can_collapse(design: Design) -> bool:
    """Whether the group effects of ``design`` can be integrated out (see :func:`collapse_structure`)."""
    return collapse_structure(design) is not None


# ---------------------------------------------------------------------------
# Sufficient statistics (one O(n) pass)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SufficientStats:
    """Per-group and global sums the collapsed likelihood needs.

    ``o*`` arrays are per top-level group (G, ...), ``i*`` arrays per padded
    inner slot (G*m, ...), with zeros in unused slots (which then contribute
    exactly nothing). ``e = y − X beta0``.
    """

    structure: CollapsedStructure
    n: int
    beta0: np.ndarray
    ee: float
    Xe: np.ndarray
    XX: np.ndarray
    oo: np.ndarray
    oX: np.ndarray
    oe: np.ndarray
    ii: np.ndarray
    io: np.ndarray
    iX: np.ndarray
    ie: np.ndarray


def _columns(design: Design, blocks: tuple[int, ...]) -> np.ndarray:
    if not blocks:
        return np.zeros((design.nobs, 0))
    return np.column_stack([design.blocks[k].Z for k in blocks])


def _segment_products(idx: np.ndarray, size: int, left: np.ndarray, right: np.ndarray, symmetric: bool = False) -> np.ndarray:
    """``out[g, a, b] = sum over rows i of group g of left[i, a] * right[i, b]``."""
    out = np.zeros((size, left.shape[1], right.shape[1]))
    for a in range(left.shape[1]):
        for b in range(a if symmetric else 0, right.shape[1]):
            out[:, a, b] = np.bincount(idx, weights=left[:, a] * right[:, b], minlength=size)
            if symmetric:
                out[:, b, a] = out[:, a, b]
    return out


def sufficient_stats(design: Design, structure: CollapsedStructure | None = None) -> SufficientStats:
    """Compute every sum the collapsed likelihood needs, in one vectorised pass over the rows."""
    structure = structure or collapse_structure(design)
    if structure is None:
        raise BayesLMMError(f"The design of {design.parsed.text!r} cannot be collapsed (crossed factors or too many terms).")
    X, y = design.X, design.y
    beta0 = np.linalg.lstsq(X, y, rcond=None)[0] if X.shape[1] else np.zeros(0)
    e = y - X @ beta0
    Zo = _columns(design, structure.outer)
    o_idx = design.blocks[structure.outer[0]].group_idx
    G = structure.n_outer
    e2 = e[:, None]
    stats: dict[str, Any] = dict(
        oo=_segment_products(o_idx, G, Zo, Zo, symmetric=True),
        oX=_segment_products(o_idx, G, Zo, X),
        oe=np.ascontiguousarray(_segment_products(o_idx, G, Zo, e2)[:, :, 0]),
    )
    if structure.inner:
        Zi = _columns(design, structure.inner)
        s_idx = structure.inner_slot[design.blocks[structure.inner[0]].group_idx]
        S = structure.n_slots
        stats.update(
            ii=_segment_products(s_idx, S, Zi, Zi, symmetric=True),
            io=_segment_products(s_idx, S, Zi, Zo),
            iX=_segment_products(s_idx, S, Zi, X),
            ie=np.ascontiguousarray(_segment_products(s_idx, S, Zi, e2)[:, :, 0]),
        )
    else:
        stats.update(ii=np.zeros((0, 0, 0)), io=np.zeros((0, 0, Zo.shape[1])), iX=np.zeros((0, 0, X.shape[1])), ie=np.zeros((0, 0)))
    return SufficientStats(
        structure=structure, n=design.nobs, beta0=beta0, ee=float(e @ e), Xe=X.T @ e, XX=X.T @ X, **stats
    )


# ---------------------------------------------------------------------------
# The marginal likelihood in NumPy, vectorised over draws
# ---------------------------------------------------------------------------
@dataclass
class _Parts:
    """The log-likelihood and the factors the group-effect draws reuse (see :func:`_np_marginal`)."""

    loglik: np.ndarray
    K: sm.Mat
    v: sm.Mat
    L: sm.Mat
    u: sm.Mat
    U: sm.Mat


def _fold(x: Any, width: int) -> Any:
    """Sum padded inner slots into their top-level group (last axis)."""
    if sm.is_zero(x) or width == 1:
        return x
    return x.reshape(x.shape[:-1] + (-1, width)).sum(axis=-1)


def _total(x: Any) -> Any:
    return 0.0 if sm.is_zero(x) else np.sum(x, axis=-1, keepdims=True)


def _np_marginal(st: SufficientStats, delta: np.ndarray, sigma: np.ndarray, lam_o: sm.Mat, lam_i: sm.Mat) -> _Parts:
    """The collapsed log-likelihood in NumPy, for S draws at once (the module docstring gives the algebra).

    Parameters are arrays of shape ``(S, 1)`` (``delta``: ``(S, p)``), or
    ``(1,)`` (``delta``: ``(p,)``) for one point; entries of the small
    matrices are then ``(S, groups)`` or ``(groups,)``. The sampler uses the
    numba twin :func:`bayeslmm._collapsed_kernel.marginal_and_grad`.
    """
    m = st.structure.width
    qo, qi = st.oo.shape[1], st.ii.shape[1]
    s2 = sigma**2
    lt_o = sm.scale(lam_o, 1.0 / sigma)
    H = [[st.oo[:, a, b] for b in range(qo)] for a in range(qo)]
    w = [[st.oe[:, a] - delta @ st.oX[:, a, :].T] for a in range(qo)]
    rr = st.ee - 2.0 * (delta @ st.Xe) + np.sum((delta @ st.XX) * delta, axis=-1)
    rr = np.asarray(rr)[..., None] if np.ndim(rr) else np.asarray([rr])
    logdet: Any = 0.0
    L: sm.Mat = []
    u: sm.Mat = []
    U: sm.Mat = []
    if qi:
        lt_i = sm.scale(lam_i, 1.0 / sigma)
        A = [[st.ii[:, a, b] for b in range(qi)] for a in range(qi)]
        L = sm.cholesky(sm.add(sm.identity(qi), sm.matmul(sm.transpose(lt_i), sm.matmul(A, lt_i))), np)
        Yi = sm.solve_lower(L, sm.transpose(lt_i))
        u = sm.matmul(Yi, [[st.ie[:, a] - delta @ st.iX[:, a, :].T] for a in range(qi)])
        U = sm.matmul(Yi, [[st.io[:, a, b] for b in range(qo)] for a in range(qi)])
        logdet = _total(sm.logdet_chol(L, np))
        rr = rr - _total(sm.sum_squares(u))
        H = sm.sub(H, [[_fold(x, m) for x in row] for row in sm.gram(U, U)])
        w = sm.sub(w, [[_fold(x, m) for x in row] for row in sm.gram(U, u)])
    K = sm.cholesky(sm.add(sm.identity(qo), sm.matmul(sm.transpose(lt_o), sm.matmul(H, lt_o))), np)
    v = sm.solve_lower(K, sm.matmul(sm.transpose(lt_o), w))
    quad = rr - _total(sm.sum_squares(v))
    logdet = logdet + _total(sm.logdet_chol(K, np))
    loglik = -0.5 * (st.n * (_LOG_2PI + np.log(s2)) + logdet + quad / s2)
    return _Parts(loglik, K, v, L, u, U)


def build_collapsed_model(design: Design, priors: Priors) -> pm.Model:
    """Build the collapsed PyMC model: β, σ and the covariance parameters, with the group effects integrated out.

    Variables, dims and priors are those of :func:`bayeslmm.model.build_model`
    except that the group effects (and their offsets) are absent; they are
    added after sampling by :func:`add_group_effects`.

    Raises
    ------
    BayesLMMError
        If the design cannot be collapsed (see :func:`can_collapse`).
    """
    st = sufficient_stats(design)
    structure = st.structure
    coords = {k: v for k, v in model_coords(design).items() if k != naming.OBS_DIM}
    with pm.Model(coords=coords) as model:
        fixed_effects(design, priors)
        delta = model[naming.FIXED] - st.beta0 if design.fixed_names else pt.zeros(0)
        factors = {k: block_factor(b, priors) for k, b in enumerate(design.blocks)}
        lam_o = sm.block_diag([factors[k] for k in structure.outer])
        lam_i = sm.block_diag([factors[k] for k in structure.inner])
        sigma = _rv(naming.SIGMA, [priors.sigma()], None, "sigma")
        pm.Potential(naming.MARGINAL_LIKELIHOOD, graph_loglik(st, delta, sigma, lam_o, lam_i))
    return model


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
    """
    st = sufficient_stats(design)
    lam = [[[np.array([c[i, j]]) if j <= i else 0 for j in range(c.shape[0])] for i in range(c.shape[0])] for c in block_chols]
    lam_o = sm.block_diag([lam[k] for k in st.structure.outer])
    lam_i = sm.block_diag([lam[k] for k in st.structure.inner])
    delta = np.asarray(beta, dtype=float) - st.beta0
    parts = _np_marginal(st, delta, np.array([float(sigma)]), lam_o, lam_i)
    return float(parts.loglik[0])


# ---------------------------------------------------------------------------
# Group effects from their exact conditional
# ---------------------------------------------------------------------------
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

    The draws are added to ``idata.posterior`` as :func:`bayeslmm.naming.ranef`
    variables with dims ``(chain, draw, level, term)`` and the coordinates of
    the full model, so every table works unchanged.

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
    chols = {k: _posterior_factor(b, post) for k, b in enumerate(design.blocks)}
    out = {k: np.empty((S, b.n_levels, b.q)) for k, b in enumerate(design.blocks)}
    rng = np.random.default_rng(None if random_seed is None else [int(random_seed), 0x5EED])
    step = max(1, _CHUNK_VALUES // max(structure.n_slots, structure.n_outer))
    for start in range(0, S, step):
        sel = slice(start, min(S, start + step))

        def lam(keys: tuple[int, ...], sel: slice = sel) -> sm.Mat:
            mats = []
            for k in keys:
                c = chols[k][sel]
                mats.append([[c[:, i, j][:, None] if j <= i else 0 for j in range(c.shape[1])] for i in range(c.shape[1])])
            return sm.block_diag(mats)

        lam_o, lam_i = lam(structure.outer), lam(structure.inner)
        s = sigma[sel]
        parts = _np_marginal(st, beta[sel] - st.beta0, s, lam_o, lam_i)
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
