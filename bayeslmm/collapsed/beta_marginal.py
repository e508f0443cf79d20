"""The collapsed posterior with the fixed effects integrated out as well.

With one grouping factor and independent Normal priors on the fixed
parameters (the defaults), the collapsed log posterior is exactly quadratic
in them, so they integrate out in closed form: NUTS then samples σ and the
covariance parameters only, and each draw gets its fixed effects afterwards
from their Gaussian conditional. This module holds the numba kernels
(:func:`beta_marginal_and_grad` and its callers, built from
:mod:`bayeslmm.collapsed.kernels`) and :class:`BetaMarginalPosterior`, the
sampler target :mod:`bayeslmm.collapsed.sample` uses in place of
:class:`~bayeslmm.collapsed.posterior.CollapsedPosterior` where it applies.
The algebra is written out in ``docs/collapsed.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit

from .densities import constrain
from .kernels import LOG_2PI, chol_inverse, chol_product, covariance, covariance_prior, factor1, factor2, relative_factor
from .posterior import CollapsedPosterior, IntegratedFixed

__all__ = ["BetaMarginalPosterior", "beta_marginal_and_grad", "log_posterior_beta_marginal", "beta_conditionals"]


@njit(cache=True, nogil=True, error_model="numpy")
def _small_marginal_pass(oo, oX, oe, lam, inv_s, s2, s0, SX, Gz, A, b):  # pragma: no cover - compiled
    """The first group pass of :func:`beta_marginal_and_grad` for q ≤ 2, written out in scalars.

    Same algebra as the general loop there (Y = K⁻¹Λ̃', v₀ = Y Z'e, V_X = Y Z'X,
    R = Y Z'Z), about as much faster as the unrolled loop of
    :func:`bayeslmm.collapsed.likelihood.marginal_and_grad` is for the sampled-β likelihood. Subtracts V_X'V_X from ``A`` (lower triangle) and
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
            ld, y00, r00 = factor1(l00, h00)
            logdet += ld
            v0 = y00 * w0
            quad += v0 * v0
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
        ld, y00, y01, y10, y11, r00, r01, r10, r11 = factor2(l00, l10, l11, h00, h01, h11)
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
    T = chol_product(lam)
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
        ld = relative_factor(lam, oo[g], inv_s, Pm, Y, q)  # Y = K⁻¹Λ̃', KK' = I + Λ̃'HΛ̃
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
    ok, logdet_h, Ginv = chol_inverse(H)
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
    loglik = -0.5 * (n * (LOG_2PI + 2.0 * math.log(sigma)) + logdet + quad + prior_quad + logdet_h - logdet_prior)
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
    sd, C, lam_o, lam_i = covariance(theta, transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, q_outer, 0)
    loglik, g_sigma, G_o, _, _ = beta_marginal_and_grad(oo, oX, oe, ee, Xe, XX, n, prior_mu, prior_prec, sigma, lam_o)
    if not math.isfinite(loglik):
        return -math.inf, grad[p:]
    lp = loglik + covariance_prior(
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
        _, _, lam_o, _ = covariance(thetas[s], transforms, prm, blk_q, blk_side, blk_off, blk_sd, blk_cpc, q_outer, 0)
        _, _, _, delta, Ginv = beta_marginal_and_grad(oo, oX, oe, ee, Xe, XX, n, prior_mu, prior_prec, sigma, lam_o, False)
        mean[s] = delta
        cov[s] = Ginv
    return mean, cov


class BetaMarginalPosterior:
    """The collapsed posterior with the fixed effects integrated out too; NUTS then runs on σ and the covariances only.

    With one grouping factor and independent Normal priors on the fixed
    parameters (the defaults), the fixed parameters f are Gaussian given the
    rest, so they integrate out exactly (:func:`beta_marginal_and_grad`), and
    after sampling each draw gets its f from that Gaussian conditional
    (:meth:`complete`), as the group effects do. NUTS sampling f jointly with
    the sds meets the posterior dependence of f on them (the uncertainty of a
    slope grows with the sd of the group slopes), which costs it tree depth
    and effective samples; here it never sees it. A sampler target
    (:class:`bayeslmm.sampling.DensityTarget`) whose named draws are the base
    posterior's. Use :meth:`build`.
    """

    def __init__(self, inputs: IntegratedFixed, base: CollapsedPosterior) -> None:
        self.base = base
        lay, st, p = inputs.layout, inputs.stats, inputs.layout.p
        T = inputs.fixed.matrix(p)  # β = T f
        self.f0 = np.linalg.solve(T, st.beta0)
        self.oX = np.ascontiguousarray(st.oX @ T)
        self.Xe = T.T @ st.Xe
        self.XX = T.T @ st.XX @ T
        self.prior_mu = inputs.prior_mean - self.f0
        self.prior_prec = inputs.prior_sd**-2.0
        self.p = p
        self.size = lay.size - p
        self.dims, self.coords = base.dims, base.coords
        self._layout = (lay.transforms, lay.prm, lay.blk_q, lay.blk_off, lay.blk_sd, lay.blk_cpc, lay.q_outer)
        self._data = (self.prior_mu, self.prior_prec, st.oo, self.oX, st.oe, st.ee, self.Xe, self.XX, float(st.n))
        self._args = (p, lay.codes, *self._layout[:-1], lay.lkj_b, lay.q_outer, *self._data)

    @classmethod
    def build(cls, base: CollapsedPosterior) -> BetaMarginalPosterior | None:
        """The integrated posterior, or None unless there is one grouping factor and every fixed prior is Normal."""
        inputs = base.integrated_fixed()
        return None if inputs is None else cls(inputs, base)

    def logp_dlogp(self, v: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior of σ and the covariance coordinates ``v`` (f integrated out), and its gradient."""
        return log_posterior_beta_marginal(v, *self._args)

    def start(self, initvals: Mapping[str, Any] | None = None) -> np.ndarray:
        """The base posterior's starting point without its fixed parameters."""
        return self.base.start(initvals)[self.p :]

    def complete(self, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Draws ``v`` (S, size) -> the base posterior's draws (S, p + size), with f drawn from its exact conditional."""
        theta = np.concatenate([np.zeros((v.shape[0], self.p)), v], axis=1)
        mean, cov = beta_conditionals(theta, self.p, *self._layout, *self._data)
        L = np.linalg.cholesky(cov)
        theta[:, : self.p] = self.f0 + mean + np.einsum("sij,sj->si", L, rng.standard_normal(mean.shape))
        return theta

    def named_draws(self, v: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The base posterior's named variables, with f drawn from its conditional (:meth:`complete`)."""
        return self.base.named_draws(self.complete(v, rng), rng)
