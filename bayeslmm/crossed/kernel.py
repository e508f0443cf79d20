"""The crossed log posterior and its gradient in one compiled pass over the rows, and the exact draws.

:func:`log_posterior` is what NUTS calls at every leapfrog step: two loops over
the rows (residuals and per-level sums of the integrated factor, then the
gradient), O(n) with no Python per row and no BLAS. The algebra is in the
docstring of :mod:`bayeslmm.crossed`; the gradient follows from
∂ℓ/∂r_i = −e_i with e_i = (r_i − z_i c_a)/σ² and c_a = τ² w_a/D_a (the
conditional mean of A's effect):

* ∂ℓ/∂β = X'e and ∂ℓ/∂b_k[l] = Σ_{i in level l} z_{k,i} e_i;
* ∂ℓ/∂τ = τ Σ_a (s_a² − H_a/D_a) with s_a = w_a/D_a;
* ∂ℓ/∂σ² = ½(e'e − tr V⁻¹), tr V⁻¹ = Σ_a [(n_a − 1)/σ² + 1/D_a].

Priors reuse :mod:`bayeslmm.collapsed.densities`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ..collapsed.densities import constrain, unconstrained_logp

__all__ = ["log_posterior", "integrated_draws"]

_LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True, nogil=True, error_model="numpy")
def _fixed_beta(theta, p, centered, idx, slopes, xbar, transforms, prm):  # pragma: no cover - compiled
    values = np.empty(p)
    for i in range(p):
        values[i] = constrain(transforms[i], prm[i, 3], prm[i, 4], theta[i])
    beta = values.copy()
    if centered:
        beta[idx] = values[0]
        for j in range(p - 1):
            beta[slopes[j]] = values[1 + j]
            beta[idx] -= xbar[j] * values[1 + j]
    return values, beta


@njit(cache=True, nogil=True, error_model="numpy")
def _residuals(theta, beta, sds, X, y, zs, gs, eff_off, noncentered):  # pragma: no cover - compiled
    """The residuals r = y − Xβ − Σ_k z_k b_k[g_k], with b_k = u_k (centered) or sd_k u_k (non-centered)."""
    n, p = X.shape
    K = zs.shape[0]
    r = np.empty(n)
    for i in range(n):
        t = y[i]
        for j in range(p):
            t -= X[i, j] * beta[j]
        for k in range(K):
            b = theta[eff_off[k] + gs[k, i]]
            if noncentered[k]:
                b *= sds[k]
            t -= zs[k, i] * b
        r[i] = t
    return r


@njit(cache=True, nogil=True, error_model="numpy")
def log_posterior(
    theta, p, centered, idx, slopes, xbar, codes, transforms, prm, sd_pos, a_sd, eff_off, noncentered,
    X, y, zs, gs, za, ga, Ha, na, n_a_levels,
):  # pragma: no cover - compiled
    """Log posterior density of the crossed model and its gradient at one unconstrained point.

    ``theta`` holds the p fixed parameters (the intercept at the predictor
    means first when ``centered``), σ's coordinate, the sds' coordinates of
    the sampled blocks (at ``sd_pos``) and of the integrated block (at
    ``a_sd``), then the effects of sampled block k at ``eff_off[k] + level``
    (b_k itself, or the standard-normal offsets when ``noncentered[k]``).
    ``codes``/``transforms``/``prm`` encode the prior of every scalar at its
    position (:mod:`bayeslmm.collapsed.densities`). The data: X, y; the
    sampled blocks' term columns ``zs`` (K, n) and level indices ``gs``; the
    integrated block's column ``za``, levels ``ga``, and per level
    H_a = Σ z² (``Ha``) and row counts ``na``.
    """
    size = theta.shape[0]
    grad = np.zeros(size)
    n = X.shape[0]
    K = zs.shape[0]
    values, beta = _fixed_beta(theta, p, centered, idx, slopes, xbar, transforms, prm)
    sigma = constrain(transforms[p], prm[p, 3], prm[p, 4], theta[p])
    tau = constrain(transforms[a_sd], prm[a_sd, 3], prm[a_sd, 4], theta[a_sd])
    if not (sigma > 0.0 and math.isfinite(sigma) and tau >= 0.0 and math.isfinite(tau)):
        return -math.inf, grad
    sds = np.empty(K)
    for k in range(K):
        sds[k] = constrain(transforms[sd_pos[k]], prm[sd_pos[k], 3], prm[sd_pos[k], 4], theta[sd_pos[k]])
        if not (sds[k] > 0.0 and math.isfinite(sds[k])):
            return -math.inf, grad
    r = _residuals(theta, beta, sds, X, y, zs, gs, eff_off, noncentered)
    s2 = sigma * sigma
    t2 = tau * tau
    w = np.zeros(n_a_levels)
    rr = 0.0
    for i in range(n):
        w[ga[i]] += za[i] * r[i]
        rr += r[i] * r[i]
    logdet = n * math.log(s2)
    quad = rr
    g_t2 = 0.0
    trace = 0.0
    c = np.empty(n_a_levels)
    for a in range(n_a_levels):
        D = s2 + t2 * Ha[a]
        logdet += math.log(D / s2)
        quad -= t2 * w[a] * w[a] / D
        c[a] = t2 * w[a] / D
        s_a = w[a] / D
        g_t2 += 0.5 * (s_a * s_a - Ha[a] / D)
        trace += (na[a] - 1.0) / s2 + 1.0 / D if na[a] > 0 else 0.0
    loglik = -0.5 * (n * _LOG_2PI + logdet + quad / s2)
    if not math.isfinite(loglik):
        return -math.inf, grad
    g_beta = np.zeros(p)
    g_b = np.zeros(size)  # ∂ℓ/∂b_k at the effects' positions
    ee = 0.0
    for i in range(n):
        e = (r[i] - za[i] * c[ga[i]]) / s2
        ee += e * e
        for j in range(p):
            g_beta[j] += X[i, j] * e
        for k in range(K):
            g_b[eff_off[k] + gs[k, i]] += zs[k, i] * e
    g_sigma = 2.0 * sigma * 0.5 * (ee - trace)
    lp = loglik
    # the sampled blocks' effects and their prior
    g_sd = np.zeros(K)
    for k in range(K):
        lo = eff_off[k]
        hi = eff_off[k + 1] if k + 1 < K else size
        sd = sds[k]
        for j in range(lo, hi):
            u = theta[j]
            if noncentered[k]:
                lp -= 0.5 * (u * u + _LOG_2PI)
                g_sd[k] += u * g_b[j]
                grad[j] = sd * g_b[j] - u
            else:
                lp -= 0.5 * (u * u / (sd * sd) + _LOG_2PI) + math.log(sd)
                g_sd[k] += u * u / (sd * sd * sd) - 1.0 / sd
                grad[j] = g_b[j] - u / (sd * sd)
    g_values = g_beta.copy()
    if centered:
        g_values[0] = g_beta[idx]
        for j in range(p - 1):
            g_values[1 + j] = g_beta[slopes[j]] - xbar[j] * g_beta[idx]
    for i in range(p):
        lpi, grad[i] = unconstrained_logp(codes[i], transforms[i], prm[i], theta[i], g_values[i])
        lp += lpi
    lpi, grad[p] = unconstrained_logp(codes[p], transforms[p], prm[p], theta[p], g_sigma)
    lp += lpi
    lpi, grad[a_sd] = unconstrained_logp(codes[a_sd], transforms[a_sd], prm[a_sd], theta[a_sd], 2.0 * tau * g_t2)
    lp += lpi
    for k in range(K):
        j = sd_pos[k]
        lpi, grad[j] = unconstrained_logp(codes[j], transforms[j], prm[j], theta[j], g_sd[k])
        lp += lpi
    if not math.isfinite(lp):
        return -math.inf, grad
    return lp, grad


@njit(cache=True, nogil=True, error_model="numpy")
def integrated_draws(
    thetas, noise, p, centered, idx, slopes, xbar, transforms, prm, sd_pos, a_sd, eff_off, noncentered,
    X, y, zs, gs, za, ga, Ha, n_a_levels,
):  # pragma: no cover - compiled
    """Exact draws of the integrated block's effects, one per row of ``thetas`` (S, size).

    Given draw s, level a's effect is N(τ² w_a/D_a, σ²τ²/D_a); ``noise`` (S, levels) holds the standard normals.
    """
    S = thetas.shape[0]
    K = zs.shape[0]
    out = np.empty((S, n_a_levels))
    sds = np.empty(K)
    for s in range(S):
        theta = thetas[s]
        _, beta = _fixed_beta(theta, p, centered, idx, slopes, xbar, transforms, prm)
        sigma = constrain(transforms[p], prm[p, 3], prm[p, 4], theta[p])
        tau = constrain(transforms[a_sd], prm[a_sd, 3], prm[a_sd, 4], theta[a_sd])
        for k in range(K):
            sds[k] = constrain(transforms[sd_pos[k]], prm[sd_pos[k], 3], prm[sd_pos[k], 4], theta[sd_pos[k]])
        r = _residuals(theta, beta, sds, X, y, zs, gs, eff_off, noncentered)
        w = np.zeros(n_a_levels)
        for i in range(r.shape[0]):
            w[ga[i]] += za[i] * r[i]
        s2 = sigma * sigma
        t2 = tau * tau
        for a in range(n_a_levels):
            D = s2 + t2 * Ha[a]
            out[s, a] = t2 * w[a] / D + math.sqrt(s2 * t2 / D) * noise[s, a]
    return out
