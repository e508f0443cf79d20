"""Numba primitives shared by the collapsed log posteriors: small Cholesky algebra, the LKJ map, the priors.

:mod:`bayeslmm.collapsed.likelihood` (fixed effects sampled) and
:mod:`bayeslmm.collapsed.beta_marginal` (fixed effects integrated out) are
built from these; each is written once here. Arrays are small (q×q, q ≤ 3
per factor), so everything is explicit loops that numba compiles to scalar code.

The correlation matrix of a block is parameterised by its canonical partial
correlations z (Lewandowski, Kurowicka & Joe 2009), z = tanh(x) in the
unconstrained coordinates; :func:`corr_chol` maps them to the Cholesky factor
of the correlation matrix. Under LKJ(η) the partial correlation in column j
(0-based) is an independent Beta(b_j, b_j) on (−1, 1) with
b_j = η + (q − 2 − j)/2 (:func:`lkj_exponents`), so its log density in x is
b_j·log(1 − z²) up to a constant (:func:`covariance_prior`).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .densities import constrain, unconstrained_logp

__all__ = [
    "LOG_2PI", "chol_inplace", "relative_factor", "chol_product", "factor1", "factor2", "chol_inverse", "corr_chol", "corr_chols",
    "lkj_exponents", "covariance", "covariance_prior",
]

LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True, nogil=True, error_model="numpy")
def chol_inplace(A: np.ndarray, q: int) -> bool:  # pragma: no cover - compiled
    """In-place lower Cholesky factor of the q×q symmetric A (upper part zeroed)."""
    for j in range(q):
        s = A[j, j]
        for k in range(j):
            s -= A[j, k] * A[j, k]
        if not s > 0.0:
            return False
        A[j, j] = math.sqrt(s)
        for i in range(j + 1, q):
            t = A[i, j]
            for k in range(j):
                t -= A[i, k] * A[j, k]
            A[i, j] = t / A[j, j]
        for i in range(j):
            A[i, j] = 0.0
    return True


@njit(cache=True, nogil=True, error_model="numpy")
def relative_factor(Lam: np.ndarray, S: np.ndarray, inv_sigma: float, P: np.ndarray, Y: np.ndarray, q: int) -> float:  # pragma: no cover
    """For P = I + Λ̃'SΛ̃ (Λ̃ = Λ/σ): Y = chol(P)⁻¹Λ̃' in place; returns log|P| (NaN if not PD)."""
    for a in range(q):  # Y = Λ'S for now (Λ is lower triangular)
        for b in range(q):
            t = 0.0
            for k in range(a, q):
                t += Lam[k, a] * S[k, b]
            Y[a, b] = t
    for a in range(q):  # P = I + (Λ'S)Λ/σ², lower triangle
        for b in range(a + 1):
            t = 0.0
            for k in range(b, q):
                t += Y[a, k] * Lam[k, b]
            P[a, b] = t * inv_sigma * inv_sigma + (1.0 if a == b else 0.0)
    if not chol_inplace(P, q):
        return math.nan
    logdet = 0.0
    for a in range(q):
        logdet += 2.0 * math.log(P[a, a])
    for c in range(q):
        for a in range(q):
            t = Lam[c, a] * inv_sigma
            for k in range(a):
                t -= P[a, k] * Y[k, c]
            Y[a, c] = t / P[a, a]
    return logdet


@njit(cache=True, nogil=True, error_model="numpy")
def chol_product(L: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """L L'."""
    q = L.shape[0]
    out = np.zeros((q, q))
    for a in range(q):
        for b in range(q):
            for k in range(q):
                out[a, b] += L[a, k] * L[b, k]
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def factor1(l00, h00):  # pragma: no cover - compiled
    """One group's q = 1 factorisation: for Λ̃ = l00 and H = h00, (log Q, y00 = Λ̃/K, r00 = y00·h00), Q = K² = 1 + Λ̃²H."""
    k00 = math.sqrt(1.0 + l00 * l00 * h00)
    y00 = l00 / k00
    return 2.0 * math.log(k00), y00, y00 * h00


@njit(cache=True, nogil=True, error_model="numpy")
def factor2(l00, l10, l11, h00, h01, h11):  # pragma: no cover - compiled
    """One group's q = 2 factorisation in scalars, shared by the unrolled group loops.

    For Λ̃ = [[l00, 0], [l10, l11]] and H = Z_g'Z_g: Q = I + Λ̃'HΛ̃ = KK',
    Y = K⁻¹Λ̃' and R = YH. Returns (log|Q|, y00, y01, y10, y11, r00, r01,
    r10, r11); log|Q| is NaN where Q is not positive definite.
    """
    m00 = l00 * h00 + l10 * h01
    m01 = l00 * h01 + l10 * h11
    m10 = l11 * h01
    m11 = l11 * h11
    p00 = 1.0 + m00 * l00 + m01 * l10
    p10 = m10 * l00 + m11 * l10
    p11 = 1.0 + m11 * l11
    k00 = math.sqrt(p00)
    k10 = p10 / k00
    d = p11 - k10 * k10
    if not d > 0.0:
        return math.nan, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    k11 = math.sqrt(d)
    y00 = l00 / k00
    y01 = l10 / k00
    y10 = -k10 * y00 / k11
    y11 = (l11 - k10 * y01) / k11
    r00 = y00 * h00 + y01 * h01
    r01 = y00 * h01 + y01 * h11
    r10 = y10 * h00 + y11 * h01
    r11 = y10 * h01 + y11 * h11
    return 2.0 * math.log(k00 * k11), y00, y01, y10, y11, r00, r01, r10, r11



@njit(cache=True, nogil=True, error_model="numpy")
def chol_inverse(M: np.ndarray) -> tuple[bool, float, np.ndarray]:  # pragma: no cover - compiled
    """(ok, log|M|, M⁻¹) of a small symmetric positive definite matrix, by Cholesky."""
    p = M.shape[0]
    L = M.copy()
    inv = np.zeros((p, p))
    if not chol_inplace(L, p):
        return False, math.nan, inv
    logdet = 0.0
    for a in range(p):
        logdet += 2.0 * math.log(L[a, a])
    Li = np.zeros((p, p))  # L⁻¹, lower triangular
    for c in range(p):
        for a in range(c, p):
            t = 1.0 if a == c else 0.0
            for k in range(c, a):
                t -= L[a, k] * Li[k, c]
            Li[a, c] = t / L[a, a]
    for a in range(p):
        for b in range(p):
            t = 0.0
            for k in range(max(a, b), p):
                t += Li[k, a] * Li[k, b]
            inv[a, b] = t
    return True, logdet, inv



@njit(cache=True, nogil=True, error_model="numpy")
def corr_chol(z: np.ndarray, q: int, C: np.ndarray) -> None:  # pragma: no cover - compiled
    """Fill the lower triangle of ``C`` (q×q) with the Cholesky factor of the correlation matrix of partial correlations ``z``."""
    C[0, 0] = 1.0
    k = 0
    for i in range(1, q):
        rem = 1.0
        for j in range(i):
            C[i, j] = z[k] * math.sqrt(rem)
            rem -= C[i, j] * C[i, j]
            k += 1
        C[i, i] = math.sqrt(max(rem, 0.0))


@njit(cache=True, nogil=True, error_model="numpy")
def _corr_chols(z: np.ndarray, q: int) -> np.ndarray:  # pragma: no cover - compiled
    out = np.zeros((z.shape[0], q, q))
    for s in range(z.shape[0]):
        corr_chol(z[s], q, out[s])
    return out


def corr_chols(z: np.ndarray, q: int) -> np.ndarray:
    """:func:`corr_chol` over partial correlations ``(..., q(q-1)/2)``; returns ``(..., q, q)``."""
    z = np.asarray(z, dtype=float)
    flat = np.ascontiguousarray(z.reshape(-1, z.shape[-1]))
    return _corr_chols(flat, q).reshape(z.shape[:-1] + (q, q))


def lkj_exponents(q: int, eta: float) -> np.ndarray:
    """The Beta exponents b_j = η + (q − 2 − j)/2 of the partial correlations of a q×q LKJ(η), in :func:`corr_chol`'s order."""
    return np.array([eta + (q - 2 - j) / 2.0 for i in range(1, q) for j in range(i)])



@njit(cache=True, nogil=True, error_model="numpy")
def covariance(theta, transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, q_outer, q_inner):  # pragma: no cover
    """Each block's sds and correlation Cholesky factor, and the outer and inner Λ, from ``theta``.

    ``theta`` is laid out as :class:`bayeslmm.collapsed.posterior.ThetaLayout` describes: per block
    k, its sds' coordinates from ``blk_sd[k]`` and its partial correlations' atanh from ``blk_cpc[k]``;
    ``blk_side[k]`` puts the block in the outer (0) or the nested (1) factor, at offset ``blk_off[k]``.
    """
    nb = blk_q.shape[0]
    qmax = 1
    for k in range(nb):
        qmax = max(qmax, blk_q[k])
    C = np.zeros((nb, qmax, qmax))
    sd = np.zeros((nb, qmax))
    lam_o = np.zeros((q_outer, q_outer))
    lam_i = np.zeros((q_inner, q_inner))
    z = np.empty(qmax * (qmax - 1) // 2)
    for k in range(nb):
        q = blk_q[k]
        for t in range(q):
            s = blk_sd[k] + t
            sd[k, t] = constrain(transforms[s], prm[s, 3], prm[s, 4], theta[s])
        for t in range(q * (q - 1) // 2):
            z[t] = math.tanh(theta[blk_cpc[k] + t])
        corr_chol(z, q, C[k])
        off = blk_off[k]
        for i in range(q):
            for j in range(i + 1):
                if blk_side[k] == 0:
                    lam_o[off + i, off + j] = sd[k, i] * C[k, i, j]
                else:
                    lam_i[off + i, off + j] = sd[k, i] * C[k, i, j]
    return sd, C, lam_o, lam_i


@njit(cache=True, nogil=True, error_model="numpy")
def covariance_prior(
    theta, grad, p, codes, transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, lkj_b, sd, C, lam_o, lam_i,
    g_sigma, G_o, G_i,
):  # pragma: no cover - compiled
    """Log prior (with Jacobians) of σ, the sds and the partial correlations; fills their entries of ``grad``.

    ``g_sigma``, ``G_o`` and ``G_i`` are the likelihood's derivatives in σ and
    in the outer and inner covariances; they are carried to the coordinates.
    """
    lp, grad[p] = unconstrained_logp(codes[p], transforms[p], prm[p], theta[p], g_sigma)
    nb = blk_q.shape[0]
    qmax = sd.shape[1]
    gC = np.zeros((qmax, qmax))
    for k in range(nb):
        q, off = blk_q[k], blk_off[k]
        for i in range(q):
            g_sd = 0.0
            for j in range(i + 1):
                g = 0.0
                for m in range(q):  # (2 G Λ)[off+i, off+j]; Λ is zero outside the block
                    if blk_side[k] == 0:
                        g += 2.0 * G_o[off + i, off + m] * lam_o[off + m, off + j]
                    else:
                        g += 2.0 * G_i[off + i, off + m] * lam_i[off + m, off + j]
                g_sd += g * C[k, i, j]
                gC[i, j] = g * sd[k, i]
            s = blk_sd[k] + i
            lpi, grad[s] = unconstrained_logp(codes[s], transforms[s], prm[s], theta[s], g_sd)
            lp += lpi
        pos = blk_cpc[k]
        for i in range(1, q):
            rem = 1.0
            for j in range(i):
                x = theta[pos]
                z = math.tanh(x)
                tail = 0.0
                for jj in range(j + 1, i + 1):
                    tail += gC[i, jj] * C[k, i, jj]
                grad[pos] = gC[i, j] * math.sqrt(rem) * (1.0 - z * z) - z * tail - 2.0 * lkj_b[pos] * z
                a = abs(x)
                lp += lkj_b[pos] * 2.0 * (math.log(2.0) - a - math.log1p(math.exp(-2.0 * a)))
                rem *= 1.0 - z * z
                pos += 1
    return lp
