"""The collapsed log-likelihood and its gradient as one numba loop over groups.

This is what NUTS calls at every leapfrog step: a loop over the top-level
groups (and, when a factor is nested, over each group's padded inner slots)
with q×q algebra on small work arrays, so a gradient costs O(groups·q³) and
no Python runs per group. It is the algebra of :mod:`bayeslmm.collapsed`
(:func:`bayeslmm.collapsed.marginal.marginal_parts` evaluates it in NumPy);
the tests check the two against each other, against finite differences, and
against a dense multivariate normal.

Gradient: with s = Z'V⁻¹r per group, ∂ℓ/∂T = ½ Σ (s s' − Z'V⁻¹Z) for each
factor's covariance T; X'V⁻¹r = (X'r − Σ X'Z T s)/σ²; and for σ the scaling
identity σ²∂ℓ/∂σ² + Σ⟨∂ℓ/∂T, T⟩ = −n/2 + ½ r'V⁻¹r.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .densities import constrain, fixed_values_and_beta, unconstrained_logp
from .kernels import LOG_2PI, chol_product, covariance, covariance_prior, factor1, factor2, relative_factor

__all__ = ["marginal_and_grad", "log_posterior"]


@njit(cache=True, nogil=True, error_model="numpy")
def _small_factor_pass(oo, oX, oe, delta, lam, inv_s, s2, T, G_o, g_x):  # pragma: no cover - compiled
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
            ld, y00, r00 = factor1(l00, h00)
            v0 = y00 * w0
            logdet += ld
            quad -= v0 * v0
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
        ld, y00, y01, y10, y11, r00, r01, r10, r11 = factor2(l00, l10, l11, h00, h01, h11)
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

    Arguments are the fields of :class:`bayeslmm.collapsed.structure.SufficientStats`
    (``ii``, ``io``, ``iX``, ``ie`` with zero length when nothing is nested),
    δ = β − β₀, σ and the two block-diagonal Cholesky factors.
    """
    G, qo, p = oX.shape
    qi = ii.shape[1]
    inv_s = 1.0 / sigma
    s2 = sigma * sigma
    T_o = chol_product(lam_o)
    T_i = chol_product(lam_i)
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
        logdet, quad = _small_factor_pass(oo, oX, oe, delta, lam_o, inv_s, s2, T_o, G_o, g_x)
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
                ld = relative_factor(lam_i, ii[c], inv_s, P_i, Y_i[m], qi)
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
            ld = relative_factor(lam_o, H, inv_s, P_o, Y_o, qo)
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
    loglik = -0.5 * (n * (LOG_2PI + 2.0 * math.log(sigma)) + logdet + quad / s2)
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
    :mod:`bayeslmm.collapsed.densities`); ``lkj_b[j]`` is the LKJ exponent of a partial
    correlation at position j. Blocks are described by ``blk_*`` arrays:
    size, side (0 = top-level factor, 1 = nested factor), offset in its
    side's factor, and positions of its sds and partial correlations.
    """
    grad = np.zeros(theta.shape[0])
    values, beta = fixed_values_and_beta(theta, p, centered, idx, slopes, xbar, transforms, prm)
    sigma = constrain(transforms[p], prm[p, 3], prm[p, 4], theta[p])
    if not (sigma > 0.0 and math.isfinite(sigma)):
        return -math.inf, grad
    sd, C, lam_o, lam_i = covariance(theta, transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, q_outer, q_inner)
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
    lp += covariance_prior(
        theta, grad, p, codes, transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, lkj_b, sd, C, lam_o, lam_i,
        g_sigma, G_o, G_i,
    )
    if not math.isfinite(lp):
        return -math.inf, grad
    return lp, grad
