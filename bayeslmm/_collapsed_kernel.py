"""The collapsed log-likelihood and its gradient as one numba loop over groups.

This is what NUTS calls at every leapfrog step: a loop over the top-level
groups (and, when a factor is nested, over each group's padded inner slots)
with q×q algebra on small work arrays, so a gradient costs O(groups·q³) and
no Python runs per group. It is the same algebra as
:func:`bayeslmm.collapsed._np_marginal` (see the docstring there); the tests
check the two against each other, against finite differences, and against a
dense multivariate normal.

Gradient: with s = Z'V⁻¹r per group, ∂ℓ/∂T = ½ Σ (s s' − Z'V⁻¹Z) for each
factor's covariance T; X'V⁻¹r = (X'r − Σ X'Z T s)/σ²; and for σ the scaling
identity σ²∂ℓ/∂σ² + Σ⟨∂ℓ/∂T, T⟩ = −n/2 + ½ r'V⁻¹r.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._npdensity import constrain, unconstrained_logp

__all__ = ["marginal_and_grad", "log_posterior", "beta_marginal_and_grad", "log_posterior_beta_marginal", "beta_conditionals"]

_LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True, nogil=True, error_model="numpy")
def _chol(A: np.ndarray, q: int) -> bool:  # pragma: no cover - compiled
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
def _factor(Lam: np.ndarray, S: np.ndarray, inv_sigma: float, P: np.ndarray, Y: np.ndarray, q: int) -> float:  # pragma: no cover
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
    if not _chol(P, q):
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
def _outer(L: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """L L'."""
    q = L.shape[0]
    out = np.zeros((q, q))
    for a in range(q):
        for b in range(q):
            for k in range(q):
                out[a, b] += L[a, k] * L[b, k]
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _factor2(l00, l10, l11, h00, h01, h11):  # pragma: no cover - compiled
    """One group's q = 2 algebra in scalars, shared by the unrolled group loops.

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
def _one_small_factor(oo, oX, oe, delta, lam, inv_s, s2, T, G_o, g_x):  # pragma: no cover - compiled
    """The group loop of :func:`marginal_and_grad` for one factor with q ≤ 2, written out in scalars.

    Same algebra as the general loop (Q = I + Λ̃'HΛ̃ = KK', Y = K⁻¹Λ̃', v = Yw,
    R = YH, s = (w − R'v)/σ², ∂ℓ/∂T += ½(ss' − (H − R'R)/σ²)), about five
    times faster for the most common models. Returns (log-determinant sum,
    −Σ v'v); adds into ``G_o`` and ``g_x``.
    """
    G, q, p = oX.shape
    l00 = lam[0, 0] * inv_s
    l10 = lam[1, 0] * inv_s if q == 2 else 0.0
    l11 = lam[1, 1] * inv_s if q == 2 else 0.0
    logdet = 0.0
    quad = 0.0
    for g in range(G):
        w0 = oe[g, 0]
        for j in range(p):
            w0 -= oX[g, 0, j] * delta[j]
        h00 = oo[g, 0, 0]
        if q == 1:
            k00 = math.sqrt(1.0 + l00 * l00 * h00)
            y00 = l00 / k00
            v0 = y00 * w0
            logdet += 2.0 * math.log(k00)
            quad -= v0 * v0
            r00 = y00 * h00
            s0 = (w0 - r00 * v0) / s2
            G_o[0, 0] += 0.5 * (s0 * s0 - (h00 - r00 * r00) / s2)
            ts0 = T[0, 0] * s0
            for j in range(p):
                g_x[j] -= oX[g, 0, j] * ts0
            continue
        w1 = oe[g, 1]
        for j in range(p):
            w1 -= oX[g, 1, j] * delta[j]
        h01 = oo[g, 0, 1]
        h11 = oo[g, 1, 1]
        ld, y00, y01, y10, y11, r00, r01, r10, r11 = _factor2(l00, l10, l11, h00, h01, h11)
        if math.isnan(ld):
            return math.nan, 0.0
        logdet += ld
        v0 = y00 * w0 + y01 * w1
        v1 = y10 * w0 + y11 * w1
        quad -= v0 * v0 + v1 * v1
        s0 = (w0 - r00 * v0 - r10 * v1) / s2
        s1 = (w1 - r01 * v0 - r11 * v1) / s2
        G_o[0, 0] += 0.5 * (s0 * s0 - (h00 - r00 * r00 - r10 * r10) / s2)
        c01 = 0.5 * (s0 * s1 - (h01 - r00 * r01 - r10 * r11) / s2)
        G_o[0, 1] += c01
        G_o[1, 0] += c01
        G_o[1, 1] += 0.5 * (s1 * s1 - (h11 - r01 * r01 - r11 * r11) / s2)
        ts0 = T[0, 0] * s0 + T[0, 1] * s1
        ts1 = T[1, 0] * s0 + T[1, 1] * s1
        for j in range(p):
            g_x[j] -= oX[g, 0, j] * ts0 + oX[g, 1, j] * ts1
    return logdet, quad


@njit(cache=True, nogil=True, error_model="numpy")
def marginal_and_grad(oo, oX, oe, ii, io, iX, ie, width, ee, Xe, XX, n, delta, sigma, lam_o, lam_i):  # pragma: no cover
    """Collapsed log-likelihood, ∂/∂δ, ∂/∂σ, and ∂/∂T for the outer and inner covariances.

    Arguments are the fields of :class:`bayeslmm.collapsed.SufficientStats`
    (``ii``, ``io``, ``iX``, ``ie`` with zero length when nothing is nested),
    δ = β − β₀, σ and the two block-diagonal Cholesky factors.
    """
    G, qo, p = oX.shape
    qi = ii.shape[1]
    inv_s = 1.0 / sigma
    s2 = sigma * sigma
    T_o = _outer(lam_o)
    T_i = _outer(lam_i)
    G_o = np.zeros((qo, qo))
    G_i = np.zeros((qi, qi))
    g_x = np.zeros(p)
    H = np.empty((qo, qo))
    w = np.empty(qo)
    P_o = np.empty((qo, qo))
    Y_o = np.empty((qo, qo))
    P_i = np.empty((qi, qi))
    Y_i = np.empty((width, qi, qi))
    r_i = np.empty((width, qi))
    U = np.empty((width, qi, qo))
    B_o = np.empty((qo, qo))
    Bw = np.empty(qo)
    s_o = np.empty(qo)
    vv = np.empty(qo)
    B_i = np.empty((qi, qi))
    IAB = np.empty((qi, qi))
    E = np.empty((qi, qo))
    s_c = np.empty(qi)
    tmp = np.empty((max(qi, qo), max(qi, qo)))
    logdet = 0.0
    quad = 0.0
    if qi == 0 and qo <= 2:
        logdet, quad = _one_small_factor(oo, oX, oe, delta, lam_o, inv_s, s2, T_o, G_o, g_x)
        if math.isnan(logdet):
            return -math.inf, g_x, 0.0, G_o, G_i
    else:
        for g in range(G):
            for a in range(qo):
                t = oe[g, a]
                for j in range(p):
                    t -= oX[g, a, j] * delta[j]
                w[a] = t
                for b in range(qo):
                    H[a, b] = oo[g, a, b]
            for m in range(width if qi > 0 else 0):
                c = g * width + m
                ld = _factor(lam_i, ii[c], inv_s, P_i, Y_i[m], qi)
                if math.isnan(ld):
                    return -math.inf, g_x, 0.0, G_o, G_i
                logdet += ld
                for a in range(qi):
                    t = ie[c, a]
                    for j in range(p):
                        t -= iX[c, a, j] * delta[j]
                    r_i[m, a] = t
                for a in range(qi):
                    u = 0.0
                    for k in range(qi):
                        u += Y_i[m, a, k] * r_i[m, k]
                    quad -= u * u
                    for b in range(qo):
                        t = 0.0
                        for k in range(qi):
                            t += Y_i[m, a, k] * io[c, k, b]
                        U[m, a, b] = t
                    for b in range(qo):
                        w[b] -= U[m, a, b] * u
                for a in range(qo):
                    for b in range(qo):
                        t = 0.0
                        for k in range(qi):
                            t += U[m, k, a] * U[m, k, b]
                        H[a, b] -= t
            ld = _factor(lam_o, H, inv_s, P_o, Y_o, qo)
            if math.isnan(ld):
                return -math.inf, g_x, 0.0, G_o, G_i
            logdet += ld
            for a in range(qo):  # v = Y_o w, with Y_o = K⁻¹Λ̃'
                t = 0.0
                for k in range(qo):
                    t += Y_o[a, k] * w[k]
                vv[a] = t
                quad -= t * t
            # gradient pieces: with R = Y_o H, H B_o w = R'v and H B_o H = R'R (B_o = Y_o'Y_o)
            for a in range(qo):
                for b in range(qo):
                    t = 0.0
                    for k in range(qo):
                        t += Y_o[a, k] * H[k, b]
                    tmp[a, b] = t
            for a in range(qo):
                t = 0.0
                u = 0.0
                for k in range(qo):
                    t += tmp[k, a] * vv[k]
                    u += Y_o[k, a] * vv[k]
                s_o[a] = (w[a] - t) / s2
                Bw[a] = u
            for a in range(qo):
                for b in range(a + 1):
                    t = H[a, b]
                    for k in range(qo):
                        t -= tmp[k, a] * tmp[k, b]
                    t = 0.5 * (s_o[a] * s_o[b] - t / s2)
                    G_o[a, b] += t
                    if b < a:
                        G_o[b, a] += t
            if qi > 0:
                for a in range(qo):
                    for b in range(qo):
                        t = 0.0
                        for k in range(qo):
                            t += Y_o[k, a] * Y_o[k, b]
                        B_o[a, b] = t
            for a in range(qo):
                t = 0.0
                for k in range(qo):
                    t += T_o[a, k] * s_o[k]
                for j in range(p):
                    g_x[j] -= oX[g, a, j] * t
            for m in range(width if qi > 0 else 0):
                c = g * width + m
                for a in range(qi):  # B_i = Y_i'Y_i
                    for b in range(qi):
                        t = 0.0
                        for k in range(qi):
                            t += Y_i[m, k, a] * Y_i[m, k, b]
                        B_i[a, b] = t
                for a in range(qi):  # IAB = I − A B_i
                    for b in range(qi):
                        t = 1.0 if a == b else 0.0
                        for k in range(qi):
                            t -= ii[c, a, k] * B_i[k, b]
                        IAB[a, b] = t
                for a in range(qi):  # E = IAB io ; s_c = (IAB r − E B_o w)/σ²
                    for b in range(qo):
                        t = 0.0
                        for k in range(qi):
                            t += IAB[a, k] * io[c, k, b]
                        E[a, b] = t
                    t = 0.0
                    for k in range(qi):
                        t += IAB[a, k] * r_i[m, k]
                    for k in range(qo):
                        t -= E[a, k] * Bw[k]
                    s_c[a] = t / s2
                for a in range(qi):  # zvz = A − A B_i A − E B_o E'
                    for b in range(qi):
                        t = 0.0
                        for k in range(qi):
                            t += ii[c, a, k] * B_i[k, b]
                        tmp[a, b] = t
                for a in range(qi):
                    for b in range(qi):
                        t = ii[c, a, b]
                        for k in range(qi):
                            t -= tmp[a, k] * ii[c, k, b]
                        for k in range(qo):
                            for l in range(qo):
                                t -= E[a, k] * B_o[k, l] * E[b, l]
                        G_i[a, b] += 0.5 * (s_c[a] * s_c[b] - t / s2)
                for a in range(qi):
                    t = 0.0
                    for k in range(qi):
                        t += T_i[a, k] * s_c[k]
                    for j in range(p):
                        g_x[j] -= iX[c, a, j] * t
    rr = ee
    for j in range(p):
        rr -= 2.0 * delta[j] * Xe[j]
        for k in range(p):
            rr += delta[j] * XX[j, k] * delta[k]
    quad += rr
    loglik = -0.5 * (n * (_LOG_2PI + 2.0 * math.log(sigma)) + logdet + quad / s2)
    for j in range(p):
        t = Xe[j]
        for k in range(p):
            t -= XX[j, k] * delta[k]
        g_x[j] = (g_x[j] + t) / s2
    trace = 0.0
    for a in range(qo):
        for b in range(qo):
            trace += G_o[a, b] * T_o[a, b]
    for a in range(qi):
        for b in range(qi):
            trace += G_i[a, b] * T_i[a, b]
    g_sigma = 2.0 * (-0.5 * n + 0.5 * quad / s2 - trace) / sigma
    return loglik, g_x, g_sigma, G_o, G_i


@njit(cache=True, nogil=True, error_model="numpy")
def _covariance(theta, transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, q_outer, q_inner):  # pragma: no cover
    """Each block's sds and correlation Cholesky factor, and the outer and inner Λ, from ``theta``."""
    nb = blk_q.shape[0]
    qmax = 1
    for k in range(nb):
        qmax = max(qmax, blk_q[k])
    C = np.zeros((nb, qmax, qmax))
    sd = np.zeros((nb, qmax))
    lam_o = np.zeros((q_outer, q_outer))
    lam_i = np.zeros((q_inner, q_inner))
    for k in range(nb):
        q = blk_q[k]
        for t in range(q):
            s = blk_sd[k] + t
            sd[k, t] = constrain(transforms[s], prm[s, 3], prm[s, 4], theta[s])
        C[k, 0, 0] = 1.0
        pos = blk_cpc[k]
        for i in range(1, q):
            rem = 1.0
            for j in range(i):
                C[k, i, j] = math.tanh(theta[pos]) * math.sqrt(rem)
                rem -= C[k, i, j] * C[k, i, j]
                pos += 1
            C[k, i, i] = math.sqrt(max(rem, 0.0))
        off = blk_off[k]
        for i in range(q):
            for j in range(i + 1):
                if blk_side[k] == 0:
                    lam_o[off + i, off + j] = sd[k, i] * C[k, i, j]
                else:
                    lam_i[off + i, off + j] = sd[k, i] * C[k, i, j]
    return sd, C, lam_o, lam_i


@njit(cache=True, nogil=True, error_model="numpy")
def _covariance_prior(
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


@njit(cache=True, nogil=True, error_model="numpy")
def log_posterior(
    theta, p, centered, idx, slopes, xbar, codes, transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, lkj_b,
    q_outer, q_inner, beta0, oo, oX, oe, ii, io, iX, ie, width, ee, Xe, XX, n,
):  # pragma: no cover - compiled
    """Log posterior density of the collapsed model and its gradient at one unconstrained point.

    ``theta`` holds, in order: the p fixed parameters (the intercept at the
    predictor means first when ``centered``), log σ (or the coordinate of
    σ's prior transform), and per block its sds' coordinates then its
    partial correlations' atanh. Every scalar with a prior has an entry in
    ``codes``/``transforms``/``prm`` at its position (see
    :mod:`bayeslmm._npdensity`); ``lkj_b[j]`` is the LKJ exponent of a partial
    correlation at position j. Blocks are described by ``blk_*`` arrays:
    size, side (0 = top-level factor, 1 = nested factor), offset in its
    side's factor, and positions of its sds and partial correlations.
    """
    grad = np.zeros(theta.shape[0])
    values = np.empty(p)
    for i in range(p):
        values[i] = constrain(transforms[i], prm[i, 3], prm[i, 4], theta[i])
    beta = values.copy()
    if centered:
        beta[idx] = values[0]
        for j in range(p - 1):
            beta[slopes[j]] = values[1 + j]
            beta[idx] -= xbar[j] * values[1 + j]
    sigma = constrain(transforms[p], prm[p, 3], prm[p, 4], theta[p])
    if not (sigma > 0.0 and math.isfinite(sigma)):
        return -math.inf, grad
    sd, C, lam_o, lam_i = _covariance(theta, transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, q_outer, q_inner)
    loglik, g_beta, g_sigma, G_o, G_i = marginal_and_grad(
        oo, oX, oe, ii, io, iX, ie, width, ee, Xe, XX, n, beta - beta0, sigma, lam_o, lam_i
    )
    if not math.isfinite(loglik):  # an extreme proposal: NUTS counts it as a divergence
        return -math.inf, grad
    lp = loglik
    g_values = g_beta.copy()
    if centered:
        g_values[0] = g_beta[idx]
        for j in range(p - 1):
            g_values[1 + j] = g_beta[slopes[j]] - xbar[j] * g_beta[idx]
    for i in range(p):
        lpi, grad[i] = unconstrained_logp(codes[i], transforms[i], prm[i], theta[i], g_values[i])
        lp += lpi
    lp += _covariance_prior(
        theta, grad, p, codes, transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, lkj_b, sd, C, lam_o, lam_i,
        g_sigma, G_o, G_i,
    )
    if not math.isfinite(lp):
        return -math.inf, grad
    return lp, grad


# ---------------------------------------------------------------------------
# The fixed effects integrated out as well (one grouping factor, Normal priors)
# ---------------------------------------------------------------------------
@njit(cache=True, nogil=True, error_model="numpy")
def _chol_inverse(M: np.ndarray) -> tuple[bool, float, np.ndarray]:  # pragma: no cover - compiled
    """(ok, log|M|, M⁻¹) of a small symmetric positive definite matrix, by Cholesky."""
    p = M.shape[0]
    L = M.copy()
    inv = np.zeros((p, p))
    if not _chol(L, p):
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
def _small_marginal_pass(oo, oX, oe, lam, inv_s, s2, s0, SX, Gz, A, b):  # pragma: no cover - compiled
    """The first group pass of :func:`beta_marginal_and_grad` for q ≤ 2, written out in scalars.

    Same algebra as the general loop there (Y = K⁻¹Λ̃', v₀ = Y Z'e, V_X = Y Z'X,
    R = Y Z'Z), about as much faster as :func:`_one_small_factor` is for the
    sampled-β likelihood. Subtracts V_X'V_X from ``A`` (lower triangle) and
    V_X'v₀ from ``b``, fills ``s0``, ``SX`` and ``Gz``; returns (Σ log|Q_g|, Σ v₀'v₀).
    """
    G, q, p = oX.shape
    l00 = lam[0, 0] * inv_s
    l10 = lam[1, 0] * inv_s if q == 2 else 0.0
    l11 = lam[1, 1] * inv_s if q == 2 else 0.0
    vx0 = np.empty(p)
    vx1 = np.empty(p)
    logdet = 0.0
    quad = 0.0
    for g in range(G):
        h00 = oo[g, 0, 0]
        w0 = oe[g, 0]
        if q == 1:
            k00 = math.sqrt(1.0 + l00 * l00 * h00)
            y00 = l00 / k00
            logdet += 2.0 * math.log(k00)
            v0 = y00 * w0
            quad += v0 * v0
            r00 = y00 * h00
            s0[g, 0] = (w0 - r00 * v0) / s2
            Gz[0, 0] += (h00 - r00 * r00) / s2
            for j in range(p):
                vx0[j] = y00 * oX[g, 0, j]
                SX[g, 0, j] = (oX[g, 0, j] - r00 * vx0[j]) / s2
                b[j] -= vx0[j] * v0
                for l in range(j + 1):
                    A[j, l] -= vx0[j] * vx0[l]
            continue
        h01 = oo[g, 0, 1]
        h11 = oo[g, 1, 1]
        w1 = oe[g, 1]
        ld, y00, y01, y10, y11, r00, r01, r10, r11 = _factor2(l00, l10, l11, h00, h01, h11)
        if math.isnan(ld):
            return math.nan, 0.0
        logdet += ld
        v0 = y00 * w0 + y01 * w1
        v1 = y10 * w0 + y11 * w1
        quad += v0 * v0 + v1 * v1
        s0[g, 0] = (w0 - r00 * v0 - r10 * v1) / s2
        s0[g, 1] = (w1 - r01 * v0 - r11 * v1) / s2
        Gz[0, 0] += (h00 - r00 * r00 - r10 * r10) / s2
        Gz[1, 0] += (h01 - r00 * r01 - r10 * r11) / s2
        Gz[1, 1] += (h11 - r01 * r01 - r11 * r11) / s2
        for j in range(p):
            x0 = oX[g, 0, j]
            x1 = oX[g, 1, j]
            vx0[j] = y00 * x0 + y01 * x1
            vx1[j] = y10 * x0 + y11 * x1
            SX[g, 0, j] = (x0 - r00 * vx0[j] - r10 * vx1[j]) / s2
            SX[g, 1, j] = (x1 - r01 * vx0[j] - r11 * vx1[j]) / s2
            b[j] -= vx0[j] * v0 + vx1[j] * v1
            for l in range(j + 1):
                A[j, l] -= vx0[j] * vx0[l] + vx1[j] * vx1[l]
    return logdet, quad


@njit(cache=True, nogil=True, error_model="numpy")
def beta_marginal_and_grad(oo, oX, oe, ee, Xe, XX, n, prior_mu, prior_prec, sigma, lam, grad=True):  # pragma: no cover
    """One grouping factor: the likelihood with the group effects *and* the fixed effects integrated out.

    The fixed effects f (coordinates of ``oX``, ``Xe``, ``XX``; centred at
    the stats' reference f₀, so ``prior_mu`` is the prior mean minus f₀) have
    independent Normal priors with precisions ``prior_prec``. With
    A = X'V⁻¹X, b = X'V⁻¹e and H = A + diag(prior_prec), the integral over f
    of likelihood × prior is exact:

        ℓ_m = −½[n log 2πσ² + Σ_g log|I + Λ̃'Z_g'Z_gΛ̃| + r̂'V⁻¹r̂ + (δ̂−μ)'P(δ̂−μ) + log|H| − log|P|]

    at δ̂ = H⁻¹(b + Pμ), the conditional mean of f − f₀, with r̂ = e − Xδ̂.
    Derivatives: ∂ℓ_m/∂T is the fixed-f derivative at δ̂ (the envelope
    theorem) plus ½ Σ_g S_g H⁻¹ S_g' from −½log|H|, where S_g = Z_g'V⁻¹X_g;
    for σ² the scaling identity gains ½ tr(H⁻¹A).

    Returns
    -------
    (ℓ_m, ∂/∂σ, ∂/∂T, δ̂, H⁻¹); ℓ_m is −inf where a factorisation fails.
    With ``grad=False`` the second pass over the groups is skipped and the
    two derivatives are returned as zeros (for :func:`beta_conditionals`).
    """
    G, q, p = oX.shape
    inv_s = 1.0 / sigma
    s2 = sigma * sigma
    T = _outer(lam)
    Pm = np.empty((q, q))
    Y = np.empty((q, q))
    R = np.empty((q, q))
    v0 = np.empty(q)
    VX = np.empty((q, p))
    s0 = np.empty((G, q))
    SX = np.empty((G, q, p))
    Gz = np.zeros((q, q))
    A = XX.copy()
    b = Xe.copy()
    quad0 = ee
    logdet = 0.0
    Ginv = np.zeros((p, p))
    delta = np.zeros(p)
    Gt = np.zeros((q, q))
    if q <= 2:
        logdet, small_quad = _small_marginal_pass(oo, oX, oe, lam, inv_s, s2, s0, SX, Gz, A, b)
        if math.isnan(logdet):
            return -math.inf, 0.0, Gt, delta, Ginv
        quad0 -= small_quad
    for g in range(G if q > 2 else 0):
        ld = _factor(lam, oo[g], inv_s, Pm, Y, q)  # Y = K⁻¹Λ̃', KK' = I + Λ̃'HΛ̃
        if math.isnan(ld):
            return -math.inf, 0.0, Gt, delta, Ginv
        logdet += ld
        for a in range(q):
            t = 0.0
            for k in range(q):
                t += Y[a, k] * oe[g, k]
            v0[a] = t
            quad0 -= t * t
            for j in range(p):
                t = 0.0
                for k in range(q):
                    t += Y[a, k] * oX[g, k, j]
                VX[a, j] = t
            for c in range(q):
                t = 0.0
                for k in range(q):
                    t += Y[a, k] * oo[g, k, c]
                R[a, c] = t
        for j in range(p):
            t = 0.0
            for a in range(q):
                t += VX[a, j] * v0[a]
            b[j] -= t
            for l in range(j + 1):
                t = 0.0
                for a in range(q):
                    t += VX[a, j] * VX[a, l]
                A[j, l] -= t
        for c in range(q):  # s0 = Z'V⁻¹e, SX = Z'V⁻¹X, Gz += Z'V⁻¹Z (all × σ²)
            t = oe[g, c]
            for a in range(q):
                t -= R[a, c] * v0[a]
            s0[g, c] = t / s2
            for j in range(p):
                t = oX[g, c, j]
                for a in range(q):
                    t -= R[a, c] * VX[a, j]
                SX[g, c, j] = t / s2
            for d in range(c + 1):
                t = oo[g, c, d]
                for a in range(q):
                    t -= R[a, c] * R[a, d]
                Gz[c, d] += t / s2
    for j in range(p):
        b[j] /= s2
        for l in range(j + 1):
            A[j, l] /= s2
            A[l, j] = A[j, l]
    quad0 /= s2
    H = A.copy()
    rhs = b.copy()
    logdet_prior = 0.0
    for j in range(p):
        H[j, j] += prior_prec[j]
        rhs[j] += prior_prec[j] * prior_mu[j]
        logdet_prior += math.log(prior_prec[j])
    ok, logdet_h, Ginv = _chol_inverse(H)
    if not ok:
        return -math.inf, 0.0, Gt, delta, Ginv
    for j in range(p):
        t = 0.0
        for l in range(p):
            t += Ginv[j, l] * rhs[l]
        delta[j] = t
    quad = quad0
    prior_quad = 0.0
    trace_ga = 0.0
    for j in range(p):
        quad -= 2.0 * b[j] * delta[j]
        prior_quad += prior_prec[j] * (delta[j] - prior_mu[j]) ** 2
        for l in range(p):
            quad += delta[j] * A[j, l] * delta[l]
            trace_ga += Ginv[j, l] * A[l, j]
    loglik = -0.5 * (n * (_LOG_2PI + 2.0 * math.log(sigma)) + logdet + quad + prior_quad + logdet_h - logdet_prior)
    if not grad:
        return loglik, 0.0, Gt, delta, Ginv
    w = np.empty(q)
    M = np.empty((q, p))
    for g in range(G):  # ∂/∂T = ½ Σ_g (s s' − Z'V⁻¹Z + S H⁻¹ S'), s = s0 − S δ̂
        for c in range(q):
            t = s0[g, c]
            for j in range(p):
                t -= SX[g, c, j] * delta[j]
            w[c] = t
            for j in range(p):
                t = 0.0
                for l in range(p):
                    t += SX[g, c, l] * Ginv[l, j]
                M[c, j] = t
        for c in range(q):
            for d in range(c + 1):
                t = w[c] * w[d]
                for j in range(p):
                    t += M[c, j] * SX[g, d, j]
                Gt[c, d] += t
    trace = 0.0
    for c in range(q):
        for d in range(c + 1):
            Gt[c, d] = 0.5 * (Gt[c, d] - Gz[c, d])
            Gt[d, c] = Gt[c, d]
    for c in range(q):
        for d in range(q):
            trace += Gt[c, d] * T[c, d]
    g_sigma = 2.0 * (-0.5 * n + 0.5 * quad + 0.5 * trace_ga - trace) / sigma
    return loglik, g_sigma, Gt, delta, Ginv


@njit(cache=True, nogil=True, error_model="numpy")
def log_posterior_beta_marginal(
    v, p, codes, transforms, prm, blk_q, blk_off, blk_sd, blk_cpc, lkj_b, q_outer, prior_mu, prior_prec,
    oo, oX, oe, ee, Xe, XX, n,
):  # pragma: no cover - compiled
    """:func:`log_posterior` with the fixed effects integrated out (:func:`beta_marginal_and_grad`).

    ``v`` is :func:`log_posterior`'s ``theta`` without its first p entries
    (σ's coordinate first); the gradient is returned in the same layout. One
    grouping factor only.
    """
    theta = np.zeros(p + v.shape[0])
    theta[p:] = v
    grad = np.zeros(theta.shape[0])
    sigma = constrain(transforms[p], prm[p, 3], prm[p, 4], theta[p])
    if not (sigma > 0.0 and math.isfinite(sigma)):
        return -math.inf, grad[p:]
    blk_side = np.zeros(blk_q.shape[0], dtype=np.int64)
    sd, C, lam_o, lam_i = _covariance(theta, transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, q_outer, 0)
    loglik, g_sigma, G_o, _, _ = beta_marginal_and_grad(oo, oX, oe, ee, Xe, XX, n, prior_mu, prior_prec, sigma, lam_o)
    if not math.isfinite(loglik):
        return -math.inf, grad[p:]
    lp = loglik + _covariance_prior(
        theta, grad, p, codes, transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, lkj_b, sd, C, lam_o, lam_i,
        g_sigma, G_o, np.zeros((0, 0)),
    )
    if not math.isfinite(lp):
        return -math.inf, grad[p:]
    return lp, grad[p:]


@njit(cache=True, nogil=True, error_model="numpy")
def beta_conditionals(
    thetas, p, transforms, prm, blk_q, blk_off, blk_sd, blk_cpc, q_outer, prior_mu, prior_prec, oo, oX, oe, ee, Xe, XX, n
):  # pragma: no cover - compiled
    """Per row of ``thetas`` (S, size), the mean (minus f₀) and covariance of the fixed effects given the rest."""
    S = thetas.shape[0]
    mean = np.zeros((S, p))
    cov = np.zeros((S, p, p))
    blk_side = np.zeros(blk_q.shape[0], dtype=np.int64)
    for s in range(S):
        sigma = constrain(transforms[p], prm[p, 3], prm[p, 4], thetas[s, p])
        _, _, lam_o, _ = _covariance(thetas[s], transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, q_outer, 0)
        _, _, _, delta, Ginv = beta_marginal_and_grad(oo, oX, oe, ee, Xe, XX, n, prior_mu, prior_prec, sigma, lam_o, False)
        mean[s] = delta
        cov[s] = Ginv
    return mean, cov
