"""The crossed log posterior and its gradient in one compiled call, and the exact draws of the integrated effects.

:func:`log_posterior` is what NUTS calls at every leapfrog step (value and
gradient), with no Python per level and no BLAS: the data enter through cross-products
computed once (two sparse products per call, O(nonzeros)). The algebra is in the
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

from ..collapsed.densities import constrain, fixed_values_and_beta, unconstrained_logp

__all__ = ["log_posterior", "integrated_draws"]

_LOG_2PI = math.log(2.0 * math.pi)


@njit(cache=True, nogil=True, error_model="numpy")
def _coefficients(theta, values, beta, beta0, sds, eff_off, eff_len, noncentered, i0, parent, plevel, m):  # pragma: no cover
    """The coefficients c = (β − β₀, b_1, ..., b_K) from the coordinates (see :func:`log_posterior` for b_k)."""
    p = beta.shape[0]
    c = np.empty(m)
    for j in range(p):
        c[j] = beta[j] - beta0[j]
    at = p
    for k in range(eff_off.shape[0]):
        for j in range(eff_len[k]):
            x = theta[eff_off[k] + j]
            if noncentered[k]:
                x *= sds[k]
            elif parent[k] == -1:
                x -= values[i0]
            elif parent[k] >= 0:
                x -= theta[eff_off[parent[k]] + plevel[at - p + j]]
            c[at + j] = x
        at += eff_len[k]
    return c


@njit(cache=True, nogil=True, error_model="numpy")
def _csr_matvec(indptr, indices, data, x, out):  # pragma: no cover - compiled
    for a in range(indptr.shape[0] - 1):
        t = 0.0
        for j in range(indptr[a], indptr[a + 1]):
            t += data[j] * x[indices[j]]
        out[a] = t


@njit(cache=True, nogil=True, error_model="numpy")
def log_posterior(
    theta, p, centered, idx, slopes, xbar, codes, transforms, prm, sd_pos, a_sd, eff_off, eff_len, noncentered, i0, parent,
    plevel, beta0, ee0, Me, mm_ptr, mm_idx, mm_val, Ae, a_ptr, a_idx, a_val, Ha, na, n,
):  # pragma: no cover - compiled
    """Log posterior density of the crossed model and its gradient at one unconstrained point.

    ``theta`` holds the p fixed parameters (the intercept at the predictor
    means first when ``centered``), σ's coordinate, the sds' coordinates of
    the sampled blocks (at ``sd_pos``) and of the integrated block (at
    ``a_sd``), then the effects of sampled block k at ``eff_off[k] + level``
    (b_k itself, or the standard-normal offsets when ``noncentered[k]``).
    ``codes``/``transforms``/``prm`` encode the prior of every scalar at its
    position (:mod:`bayeslmm.collapsed.densities`).

    A centered block k with ``parent[k] >= -1`` is hierarchically centered
    (Gelfand, Sahu & Carlin 1995): its coordinates hold its effects plus its
    parent's coordinate, b_k[l] = θ_k[l] − θ_parent[``plevel`` of l], where the
    parent is another centered sampled block (``parent[k]``, its index) in
    which k's factor is nested, or, with ``parent[k] == -1``, the intercept's
    value at position ``i0``. A linear change of coordinates with unit
    Jacobian: it removes the posterior ridges between an intercept and the
    mean of its effects, and between a nested factor's effects and those of
    the factor it nests in, of which the data pin down only the sums.

    The data enter through cross-products only (:class:`bayeslmm.crossed.posterior.CrossedStats`):
    with M = [X, Z_1, ..., Z_K] the sampled columns, e = y − Xβ₀ and c = (β − β₀, b_1, ..., b_K),
    the residual r = e − Mc has r'r = e'e − 2c'M'e + c'M'Mc (``ee0``, ``Me``, ``M'M`` in CSR)
    and the integrated factor's sums w = Z_a'e − Z_a'M c (``Ae``, ``Z_a'M`` in CSR); ``Ha``
    and ``na`` are its per-level Σz² and row counts, ``n`` the number of rows.
    """
    size = theta.shape[0]
    grad = np.zeros(size)
    K = eff_off.shape[0]
    m = Me.shape[0]
    J = Ha.shape[0]
    sigma = constrain(transforms[p], prm[p, 3], prm[p, 4], theta[p])
    tau = constrain(transforms[a_sd], prm[a_sd, 3], prm[a_sd, 4], theta[a_sd])
    if not (sigma > 0.0 and math.isfinite(sigma) and tau >= 0.0 and math.isfinite(tau)):
        return -math.inf, grad
    sds = np.empty(K)
    for k in range(K):
        sds[k] = constrain(transforms[sd_pos[k]], prm[sd_pos[k], 3], prm[sd_pos[k], 4], theta[sd_pos[k]])
        if not (sds[k] > 0.0 and math.isfinite(sds[k])):
            return -math.inf, grad
    values, beta = fixed_values_and_beta(theta, p, centered, idx, slopes, xbar, transforms, prm)
    c = _coefficients(theta, values, beta, beta0, sds, eff_off, eff_len, noncentered, i0, parent, plevel, m)
    u = np.empty(m)
    _csr_matvec(mm_ptr, mm_idx, mm_val, c, u)
    rr = ee0
    for j in range(m):
        rr += c[j] * (u[j] - 2.0 * Me[j])
    w = np.empty(J)
    _csr_matvec(a_ptr, a_idx, a_val, c, w)
    s2 = sigma * sigma
    t2 = tau * tau
    logdet = n * math.log(s2)
    quad = rr
    g_t2 = 0.0
    trace = 0.0
    cw = 0.0
    ch = 0.0
    cond = np.empty(J)
    for a in range(J):
        wa = Ae[a] - w[a]
        D = s2 + t2 * Ha[a]
        logdet += math.log(D / s2)
        ca = t2 * wa / D
        cond[a] = ca
        quad -= ca * wa
        cw += ca * wa
        ch += ca * ca * Ha[a]
        s_a = wa / D
        g_t2 += 0.5 * (s_a * s_a - Ha[a] / D)
        if na[a] > 0:
            trace += (na[a] - 1.0) / s2 + 1.0 / D
    loglik = -0.5 * (n * _LOG_2PI + logdet + quad / s2)
    if not math.isfinite(loglik):
        return -math.inf, grad
    # ∂ℓ/∂c = M'(r − z_a∘cond)/σ² = (M'e − M'Mc − (Z_a'M)'cond)/σ²
    g_c = np.empty(m)
    for j in range(m):
        g_c[j] = Me[j] - u[j]
    for a in range(J):
        for j in range(a_ptr[a], a_ptr[a + 1]):
            g_c[a_idx[j]] -= a_val[j] * cond[a]
    for j in range(m):
        g_c[j] /= s2
    ee = (rr - 2.0 * cw + ch) / (s2 * s2)
    g_sigma = sigma * (ee - trace)
    lp = loglik
    g_sd = np.zeros(K)
    g_values = g_c[:p].copy()
    if centered:
        g_values[0] = g_c[idx]
        for j in range(p - 1):
            g_values[1 + j] = g_c[slopes[j]] - xbar[j] * g_c[idx]
    at = p
    for k in range(K):
        sd = sds[k]
        for j in range(eff_len[k]):
            pos = eff_off[k] + j
            gb = g_c[at + j]
            if noncentered[k]:
                x = theta[pos]
                lp -= 0.5 * (x * x + _LOG_2PI)
                g_sd[k] += x * gb
                grad[pos] += sd * gb - x
                continue
            b = c[at + j]
            lp -= 0.5 * (b * b / (sd * sd) + _LOG_2PI) + math.log(sd)
            g_sd[k] += b * b / (sd * sd * sd) - 1.0 / sd
            gb -= b / (sd * sd)
            grad[pos] += gb
            if parent[k] == -1:
                g_values[i0] -= gb
            elif parent[k] >= 0:
                grad[eff_off[parent[k]] + plevel[at - p + j]] -= gb
        at += eff_len[k]
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
    thetas, noise, p, centered, idx, slopes, xbar, transforms, prm, sd_pos, a_sd, eff_off, eff_len, noncentered, i0, parent,
    plevel, beta0, Ae, a_ptr, a_idx, a_val, Ha,
):  # pragma: no cover - compiled
    """Exact draws of the integrated block's effects, one per row of ``thetas`` (S, size).

    Given draw s, level a's effect is N(τ² w_a/D_a, σ²τ²/D_a); ``noise`` (S, levels) holds the standard normals.
    """
    S = thetas.shape[0]
    K = eff_off.shape[0]
    J = Ha.shape[0]
    m = p + int(eff_len.sum())
    out = np.empty((S, J))
    sds = np.empty(K)
    w = np.empty(J)
    for s in range(S):
        theta = thetas[s]
        sigma = constrain(transforms[p], prm[p, 3], prm[p, 4], theta[p])
        tau = constrain(transforms[a_sd], prm[a_sd, 3], prm[a_sd, 4], theta[a_sd])
        for k in range(K):
            sds[k] = constrain(transforms[sd_pos[k]], prm[sd_pos[k], 3], prm[sd_pos[k], 4], theta[sd_pos[k]])
        values, beta = fixed_values_and_beta(theta, p, centered, idx, slopes, xbar, transforms, prm)
        c = _coefficients(theta, values, beta, beta0, sds, eff_off, eff_len, noncentered, i0, parent, plevel, m)
        _csr_matvec(a_ptr, a_idx, a_val, c, w)
        s2 = sigma * sigma
        t2 = tau * tau
        for a in range(J):
            D = s2 + t2 * Ha[a]
            out[s, a] = t2 * (Ae[a] - w[a]) / D + math.sqrt(s2 * t2 / D) * noise[s, a]
    return out

