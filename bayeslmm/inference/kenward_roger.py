"""Kenward-Roger's adjusted covariance and degrees of freedom, as pbkrtest computes them.

The marginal covariance of y is Σ = Σ_r γ_r G_r: γ runs over the entries
(i ≤ j) of each block's covariance matrix and σ², with G_r = Z_k E_ij Z_k'
(E_ij the symmetric unit matrix, repeated over the block's levels) and I for
σ². With W = Σ⁻¹, Φ = (X'WX)⁻¹ = vcov(β̂), P_r = -X'WG_rWX and
Q_rs = X'WG_rWG_sWX, pbkrtest's ``vcovAdj`` forms the expected REML
information of γ, I_rs = tr(WG_rWG_s) - 2tr(ΦQ_rs) + tr(ΦP_rΦP_s),
its inverse 𝒲 = 2I⁻¹, and the adjusted covariance

    Φ_A = Φ + 2Φ (Σ_rs 𝒲_rs (Q_rs - P_r Φ P_s)) Φ

(Kenward & Roger 1997; the second-derivative terms vanish for a covariance
linear in γ). For H₀: Lβ = 0 of rank q, ``Lb_ddf`` / ``KRmodcomp`` give the
denominator df and the F scaling from A₁ = Σ 𝒲_rs tr(ΘΦP_rΦ) tr(ΘΦP_sΦ) and
A₂ = Σ 𝒲_rs tr(ΘΦP_rΦΘΦP_sΦ), Θ = L'(LΦL')⁻¹L.

pbkrtest works with dense n×n matrices; here every product is taken in the
space of the random effects (Q = Σ levels × terms), through
W = σ⁻²(I - ZKZ'), K = Λ(Λ'Z'ZΛ + I)⁻¹Λ', which also holds at a singular fit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import BayesLMMError
from .engine import FitState
from .params import tril_positions

__all__ = ["KRAdjustment", "kr_adjust", "kr_ddf", "kr_ftest"]


@dataclass(frozen=True)
class KRAdjustment:
    """pbkrtest's ``vcovAdj``: Φ_A with its P matrices and 𝒲."""

    vcov_adj: np.ndarray
    vcov: np.ndarray
    P: tuple[np.ndarray, ...]
    W: np.ndarray
    beta: np.ndarray
    sigma: float


def _random_design(state: FitState) -> tuple[sp.csr_matrix, np.ndarray, list[list[np.ndarray]]]:
    """Z (n × Q, columns by block, level, term), Λ (Q × Q) and, per γ_r of each block, its index pairs."""
    design = state.design
    n = design.nobs
    cols, rows, vals, lam_blocks, pairs = [], [], [], [], []
    off, pos = 0, 0
    for b in design.blocks:
        q, m = b.q, b.n_levels
        for t in range(q):
            rows.append(np.arange(n))
            cols.append(off + b.group_idx * q + t)
            vals.append(np.asarray(b.Z[:, t], dtype=float))
        T = np.zeros((q, q))
        for k, (i, j) in enumerate(tril_positions(q)):
            T[i, j] = state.theta[pos + k]
        lam_blocks.append(sp.kron(sp.identity(m), T))
        base = off + np.arange(m) * q
        block_pairs = []
        for i, j in tril_positions(q):
            if i == j:
                block_pairs.append(np.stack([base + i, base + i]))
            else:
                block_pairs.append(np.stack([np.r_[base + i, base + j], np.r_[base + j, base + i]]))
        pairs.append(block_pairs)
        off += m * q
        pos += q * (q + 1) // 2
    Z = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, off))
    return Z, sp.block_diag(lam_blocks).toarray(), pairs


def kr_adjust(state: FitState) -> KRAdjustment:
    """The Kenward-Roger adjustment of a REML fit (pbkrtest's ``vcovAdj``).

    Raises
    ------
    BayesLMMError
        For an ML fit (lmerTest refuses Kenward-Roger there; refit with REML).
    """
    if not state.reml:
        raise BayesLMMError(
            "The Kenward-Roger method is defined for REML fits, and this fit is ML (lmerTest refuses it too). "
            "Refit with method='REML', or use ddf='Satterthwaite'."
        )
    X = np.asarray(state.design.X, dtype=float)
    n = X.shape[0]
    Z, Lam, pairs = _random_design(state)
    s2 = state.sigma**2
    S = (Z.T @ Z).toarray()
    ZX = np.asarray(Z.T @ X)
    XX = X.T @ X
    M = Lam.T @ S @ Lam + np.eye(S.shape[0])
    K = Lam @ np.linalg.solve(M, Lam.T)
    KS, KZX = K @ S, K @ ZX
    # Z'WZ, Z'WX, X'WX and the W², W³ products, all over the Q random effects.
    Mzz = (S - S @ KS) / s2
    Mzx = (ZX - S @ KZX) / s2
    SKS = S @ KS
    Wzz2 = (S - 2 * SKS + SKS @ KS) / s2**2
    Wzx2 = (ZX - 2 * S @ KZX + SKS @ KZX) / s2**2
    Wxx = (XX - ZX.T @ KZX) / s2
    Wxx2 = (XX - 2 * ZX.T @ KZX + KZX.T @ S @ KZX) / s2**2
    KSKZX = KS @ KZX
    Wxx3 = (XX - 3 * ZX.T @ KZX + 3 * KZX.T @ S @ KZX - KZX.T @ S @ KSKZX) / s2**3
    trW2 = (n - 2 * np.trace(KS) + np.sum(KS * KS.T)) / s2**2
    Phi = np.linalg.inv(Wxx)

    gam = [pr for block in pairs for pr in block]
    g = len(gam) + 1  # the last one is σ²
    P = [-(Mzx[I].T @ Mzx[J]) for I, J in gam] + [-Wxx2]
    R = [(I, J) for I, J in gam]

    def Q(r: int, s: int) -> np.ndarray:
        if r < g - 1 and s < g - 1:
            (Ir, Jr), (Is, Js) = R[r], R[s]
            return Mzx[Jr].T @ Mzz[np.ix_(Ir, Is)] @ Mzx[Js]
        if r < g - 1:
            Ir, Jr = R[r]
            return Mzx[Jr].T @ Wzx2[Ir]
        if s < g - 1:
            Is, Js = R[s]
            return Wzx2[Is].T @ Mzx[Js]
        return Wxx3

    def ktrace(r: int, s: int) -> float:
        if r < g - 1 and s < g - 1:
            (Ir, Jr), (Is, Js) = R[r], R[s]
            return float(np.sum(Mzz[np.ix_(Jr, Is)] * Mzz[np.ix_(Js, Ir)].T))
        if r < g - 1 or s < g - 1:
            I, J = R[r] if r < g - 1 else R[s]
            return float(np.sum(Wzz2[J, I]))
        return float(trW2)

    Qs = {(r, s): Q(r, s) for r in range(g) for s in range(r, g)}
    info = np.empty((g, g))
    for r in range(g):
        PhiPr = Phi @ P[r]
        for s in range(r, g):
            info[r, s] = info[s, r] = ktrace(r, s) - 2 * np.sum(Phi * Qs[(r, s)]) + np.sum(PhiPr * (P[s] @ Phi))
    evals = np.linalg.eigvalsh(info)
    Wg = 2 * np.linalg.inv(info) if np.min(np.abs(evals)) > 1e-10 else 2 * np.linalg.pinv(info)
    U = np.zeros_like(Phi)
    for r in range(g):
        for s in range(g):
            Qrs = Qs[(r, s)] if r <= s else Qs[(s, r)].T
            U += Wg[r, s] * (Qrs - P[r] @ Phi @ P[s])
    Phi_A = Phi + 2 * Phi @ U @ Phi
    return KRAdjustment(0.5 * (Phi_A + Phi_A.T), Phi, tuple(P), Wg, state.beta, state.sigma)


def _a1_a2(kr: KRAdjustment, L: np.ndarray) -> tuple[float, float]:
    Phi = kr.vcov
    Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
    u = [Theta @ Phi @ Pr @ Phi for Pr in kr.P]
    tr = np.array([np.trace(x) for x in u])
    A1 = float(tr @ kr.W @ tr)
    A2 = float(sum(kr.W[r, s] * np.sum(u[r] * u[s].T) for r in range(len(u)) for s in range(len(u))))
    return A1, A2


def _div_zero(x: float, y: float, tol: float = 1e-14) -> float:
    return 1.0 if abs(x) < tol and abs(y) < tol else x / y


def kr_ddf(kr: KRAdjustment, L: np.ndarray) -> tuple[float, float]:
    """(denominator df, F scaling) of H₀: Lβ = 0 (pbkrtest's ``Lb_ddf`` / ``.KR_adjust``)."""
    L = np.atleast_2d(np.asarray(L, dtype=float))
    q = int(np.linalg.matrix_rank(L))
    A1, A2 = _a1_a2(kr, L)
    B = (A1 + 6 * A2) / (2 * q)
    gg = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
    den = 3 * q + 2 * (1 - gg)
    c1, c2, c3 = gg / den, (q - gg) / den, (q + 2 - gg) / den
    V0, V1, V2 = 1 + c1 * B, 1 - c2 * B, 1 - c3 * B
    V0 = 0.0 if abs(V0) < 1e-10 else V0
    rho = (1.0 / q) * _div_zero(1 - A2 / q, V1) ** 2 * V0 / V2
    df2 = 4 + (q + 2) / (q * rho - 1)
    scaling = 1.0 if abs(df2 - 2) < 1e-2 else df2 * (1 - A2 / q) / (df2 - 2)
    return float(df2), float(scaling)


def kr_ftest(kr: KRAdjustment, L: np.ndarray) -> tuple[float, float, int, float, float]:
    """(unscaled F, scaled F, numerator df, denominator df, scaling) of H₀: Lβ = 0 (``KRmodcomp``)."""
    L = np.atleast_2d(np.asarray(L, dtype=float))
    q = int(np.linalg.matrix_rank(L))
    Lb = L @ kr.beta
    wald = float(Lb @ np.linalg.solve(L @ kr.vcov_adj @ L.T, Lb))
    ddf, scaling = kr_ddf(kr, L)
    F_u = wald / q
    return F_u, F_u * scaling, q, ddf, scaling
