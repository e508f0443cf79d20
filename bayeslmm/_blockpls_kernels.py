"""Compiled kernels of the blocked Cholesky factor behind :mod:`bayeslmm._blockpls`.

The random-effect terms are grouped by grouping factor. The term with most
random effects (the *leading* term, n₁ levels of width g) keeps a
block-diagonal factor, one g×g block per level; every other term, the
fixed effects and the response form the *rest*, R = Q₂ + p + 1 rows stored
as one dense matrix. With Λ the relative covariance factor and
A = [Z X y]'[Z X y] the cross-products (formed once), the factor of

    Ω_θ = P'AP + J,  P = blockdiag(Λ, I),  J = blockdiag(I_q, 0)

is L = [[L₁₁, 0], [L₂₁, L₂₂]]: L₁₁ block-diagonal, L₂₁ with the sparsity of
A₂₁ (stored per leading level as the list of its non-zero rest rows) and L₂₂
dense. Per θ the kernels overwrite preallocated arrays; nothing is allocated.

:func:`gradient` gives the analytic gradient of the profiled criterion:
∂ log|M| = 2 tr(M⁻¹P'A ∂P) needs only the diagonal blocks of
F = M⁻¹[Λ'Z'Z; X'Z], which need M⁻¹ on the sparsity pattern of L (the
selected inverse: W₂₂ dense, W₂₁ on the pattern of L₂₁, the diagonal blocks
of W₁₁); ∂r² = −2 r̂'Z ∂Λ û (the penalized residual sum of squares is a
minimum over u and β, so only Λ's direct effect counts). M is the upper
(q + p) block of Ω for REML and the upper q block for ML.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_OPTS = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**_OPTS)
def set_lambda(theta, th_term, th_row, th_col, lam):
    """Write θ into the per-term lower-triangular factors ``lam[term]``."""
    lam[:] = 0.0
    for i in range(theta.shape[0]):
        lam[th_term[i], th_row[i], th_col[i]] = theta[i]


@njit(**_OPTS)
def chol_lower(A, m):
    """In-place lower Cholesky factor of ``A[:m, :m]``; False if not positive definite."""
    for j in range(m):
        s = A[j, j]
        for k in range(j):
            s -= A[j, k] * A[j, k]
        if not s > 0.0:
            return False
        d = np.sqrt(s)
        A[j, j] = d
        for i in range(j + 1, m):
            t = A[i, j]
            for k in range(j):
                t -= A[i, k] * A[j, k]
            A[i, j] = t / d
    return True


@njit(**_OPTS)
def inverse_from_chol(L, W, m):
    """Lower triangle of (LL')⁻¹ for the lower factor ``L[:m, :m]``, written into ``W``."""
    for c in range(m):  # W[:, c] = column c of L⁻¹ (lower triangular)
        for r in range(c):
            W[r, c] = 0.0
        W[c, c] = 1.0 / L[c, c]
        for r in range(c + 1, m):
            s = 0.0
            for k in range(c, r):
                s -= L[r, k] * W[k, c]
            W[r, c] = s / L[r, r]
    # (L⁻¹)'L⁻¹, lower triangle, in place: entry (r, c) reads rows k >= r of columns r and c,
    # which still hold L⁻¹ when columns are done in ascending order and rows within them too.
    for c in range(m):
        for r in range(c, m):
            s = 0.0
            for k in range(r, m):
                s += W[k, r] * W[k, c]
            W[r, c] = s


@njit(**_OPTS)
def symmetrize(W, m):
    """Copy the lower triangle of ``W[:m, :m]`` to its upper triangle."""
    for c in range(m):
        for r in range(c + 1, m):
            W[c, r] = W[r, c]


@njit(**_OPTS)
def leading(lam, A11, L11, ptr, prow, pval, SA, L21, rt, rc, tg, Q2, tmp):
    """Factor the leading blocks and form L₂₁; returns log|L₁₁|² (NaN if not positive definite)."""
    n1, g = A11.shape[0], A11.shape[1]
    lam1 = lam[0]
    logdet = 0.0
    for j in range(n1):
        for a in range(g):  # tmp = A11_j λ₁
            for c in range(g):
                s = 0.0
                for e in range(c, g):
                    s += A11[j, a, e] * lam1[e, c]
                tmp[a, c] = s
        for a in range(g):  # L11_j = λ₁' A11_j λ₁ + I (lower)
            for c in range(a + 1):
                s = 0.0
                for d in range(a, g):
                    s += lam1[d, a] * tmp[d, c]
                L11[j, a, c] = s + (1.0 if a == c else 0.0)
            for c in range(a + 1, g):
                L11[j, a, c] = 0.0
        if not chol_lower(L11[j], g):
            return np.nan
        for a in range(g):
            logdet += 2.0 * np.log(L11[j, a, a])
        for k in range(ptr[j], ptr[j + 1]):
            r = prow[k]
            if r < Q2:  # row of Λ₂'A₂₁: combine the rows of this level's block
                t, cc = rt[r], rc[r]
                k0 = k - cc
                for a in range(g):
                    s = 0.0
                    for e in range(cc, tg[t]):
                        s += lam[1 + t, e, cc] * pval[k0 + e, a]
                    SA[k, a] = s
            else:
                for a in range(g):
                    SA[k, a] = pval[k, a]
            for c in range(g):  # (SA λ₁) solved against L11_j'
                s = 0.0
                for d in range(c, g):
                    s += SA[k, d] * lam1[d, c]
                for b in range(c):
                    s -= L11[j, c, b] * L21[k, b]
                L21[k, c] = s / L11[j, c, c]
    return logdet


@njit(**_OPTS)
def schur(lam, A22, LA, L22, ptr, prow, col_ptr, col_k, level_of, L21, rt, rc, rs, tg, Q2, scale):
    """L₂₂ before its factorization: Λ₂'A₂₂Λ₂ + I − L₂₁L₂₁' (lower triangle); LA = Λ₂'A₂₂.

    ``scale`` (length R) receives Λ₂'s diagonal when every rest term is scalar.
    ``col_ptr``/``col_k`` list the pattern positions by rest row, ``level_of`` their leading level.
    """
    R = A22.shape[0]
    g = L21.shape[1]
    scalar = True
    for t in range(tg.shape[0]):
        if tg[t] != 1:
            scalar = False
    if scalar:  # Λ₂ = diag(scale)
        for r in range(R):
            scale[r] = lam[1 + rt[r], 0, 0] if r < Q2 else 1.0
        for c in range(R):
            sc = scale[c]
            for r in range(R):
                LA[r, c] = scale[r] * A22[r, c]
            for r in range(c, R):
                L22[r, c] = LA[r, c] * sc
    else:
        for c in range(R):
            for r in range(R):
                if r < Q2:
                    t, cc, s0 = rt[r], rc[r], rs[r]
                    s = 0.0
                    for e in range(cc, tg[t]):
                        s += lam[1 + t, e, cc] * A22[s0 + e, c]
                    LA[r, c] = s
                else:
                    LA[r, c] = A22[r, c]
        for c in range(R):
            if c < Q2:
                t, cc, s0 = rt[c], rc[c], rs[c]
                for r in range(c, R):
                    s = 0.0
                    for e in range(cc, tg[t]):
                        s += LA[r, s0 + e] * lam[1 + t, e, cc]
                    L22[r, c] = s
            else:
                for r in range(c, R):
                    L22[r, c] = LA[r, c]
    for c in range(Q2):
        L22[c, c] += 1.0
    # The sparse downdate, column by column: every write of one column stays in that column.
    for r2 in range(R):
        for q in range(col_ptr[r2], col_ptr[r2 + 1]):
            k2 = col_k[q]
            end = ptr[level_of[k2] + 1]
            if g == 1:
                v = L21[k2, 0]
                for k1 in range(k2, end):
                    L22[prow[k1], r2] -= L21[k1, 0] * v
            else:
                for k1 in range(k2, end):
                    s = 0.0
                    for a in range(g):
                        s += L21[k1, a] * L21[k2, a]
                    L22[prow[k1], r2] -= s


@njit(**_OPTS)
def logdets(L22, Q2, p):
    """(log|L₂₂|² over the random effects, log|R_X|², r²) from the factored L₂₂."""
    R = L22.shape[0]
    ld2 = 0.0
    for r in range(Q2):
        ld2 += 2.0 * np.log(L22[r, r])
    ldx = 0.0
    for r in range(Q2, Q2 + p):
        ldx += 2.0 * np.log(L22[r, r])
    return ld2, ldx, L22[R - 1, R - 1] ** 2


@njit(**_OPTS)
def solve(lam, A11, L11, ptr, prow, pval, L21, rt, rc, rs, tg, Q2, p, A22, L22, u1, x2, b1, b2, zr1, zr2):
    """Conditional modes û (u1, x2[:Q₂]) and β̂ (x2[Q₂:Q₂+p]), b = Λû, and Z'r̂ (zr1, zr2)."""
    R = L22.shape[0]
    n1, g = u1.shape[0], u1.shape[1]
    lam1 = lam[0]
    for r in range(R - 1):
        x2[r] = L22[R - 1, r]
    for r in range(R - 2, -1, -1):
        s = x2[r]
        for c in range(r + 1, R - 1):
            s -= L22[c, r] * x2[c]
        x2[r] = s / L22[r, r]
    for j in range(n1):
        ky = ptr[j + 1] - 1  # the response row is last in every level's list
        for a in range(g):
            u1[j, a] = L21[ky, a]
        for k in range(ptr[j], ky):
            xr = x2[prow[k]]
            for a in range(g):
                u1[j, a] -= L21[k, a] * xr
        for a in range(g - 1, -1, -1):
            s = u1[j, a]
            for b in range(a + 1, g):
                s -= L11[j, b, a] * u1[j, b]
            u1[j, a] = s / L11[j, a, a]
        for a in range(g):
            s = 0.0
            for e in range(a + 1):
                s += lam1[a, e] * u1[j, e]
            b1[j, a] = s
    for r in range(Q2):
        t, cc, s0 = rt[r], rc[r], rs[r]
        s = 0.0
        for e in range(cc + 1):
            s += lam[1 + t, cc, e] * x2[s0 + e]
        b2[r] = s
    # Z'r̂ = Z'y − Z'Xβ − Z'Zb, from the cross-products
    for c in range(Q2):
        s = A22[R - 1, c]
        for b in range(p):
            s -= A22[Q2 + b, c] * x2[Q2 + b]
        for r in range(Q2):
            s -= A22[r, c] * b2[r]
        zr2[c] = s
    for j in range(n1):
        ky = ptr[j + 1] - 1
        for a in range(g):
            s = pval[ky, a]
            for d in range(g):
                s -= A11[j, a, d] * b1[j, d]
            zr1[j, a] = s
        for k in range(ptr[j], ky):
            r = prow[k]
            if r < Q2:
                w = b2[r]
                for a in range(g):
                    zr1[j, a] -= pval[k, a] * w
                    zr2[r] -= pval[k, a] * b1[j, a]
            else:
                w = x2[r]
                for a in range(g):
                    zr1[j, a] -= pval[k, a] * w


@njit(**_OPTS)
def selected_inverse(L11, ptr, prow, col_ptr, col_k, level_of, L21, W, m, W21, W11, tmp):
    """M⁻¹ on the pattern of L, given W, the inverse of the first m rest rows' block (lower triangle).

    Fills W21 = −W₂₂L₂₁L₁₁⁻¹ on the pattern's rows below m and the diagonal
    blocks W11 of the leading part. W₂₂ is read column by column, lower
    triangle only.
    """
    n1, g = L11.shape[0], L11.shape[2]
    W21[:] = 0.0
    for r in range(m):
        for q in range(col_ptr[r], col_ptr[r + 1]):
            k = col_k[q]
            for k2 in range(k, ptr[level_of[k] + 1]):
                r2 = prow[k2]
                if r2 >= m:
                    break
                w = W[r2, r]
                for a in range(g):
                    W21[k, a] -= w * L21[k2, a]
                if k2 != k:
                    for a in range(g):
                        W21[k2, a] -= w * L21[k, a]
    for j in range(n1):
        for k in range(ptr[j], ptr[j + 1]):
            if prow[k] >= m:
                break
            for a in range(g - 1, -1, -1):  # W21[k] L11 = v
                s = W21[k, a]
                for b in range(a + 1, g):
                    s -= W21[k, b] * L11[j, b, a]
                W21[k, a] = s / L11[j, a, a]
        # W11_jj = L11⁻ᵀ (L11⁻¹ − Σ_k L21[k]' W21[k])
        for a in range(g):  # tmp = L11⁻¹ (lower)
            for c in range(g):
                tmp[a, c] = 0.0
        for c in range(g):
            tmp[c, c] = 1.0 / L11[j, c, c]
            for r in range(c + 1, g):
                s = 0.0
                for k in range(c, r):
                    s -= L11[j, r, k] * tmp[k, c]
                tmp[r, c] = s / L11[j, r, r]
        for a in range(g):
            for c in range(g):
                s = tmp[a, c]
                for k in range(ptr[j], ptr[j + 1]):
                    if prow[k] >= m:
                        break
                    s -= L21[k, a] * W21[k, c]
                W11[j, a, c] = s
        for c in range(g):  # W11_jj = L11⁻ᵀ · (column c), by back substitution
            for a in range(g - 1, -1, -1):
                s = W11[j, a, c]
                for b in range(a + 1, g):
                    s -= L11[j, b, a] * W11[j, b, c]
                W11[j, a, c] = s / L11[j, a, a]


@njit(**_OPTS)
def gradient(lam, A11, A22, scale, ptr, prow, pval, SA, W, m, W21, W11, LA, rt, rc, rs, tg, toff, tlev, Q2,
             th_term, th_row, th_col, u1, x2, zr1, zr2, Fsum, grad_ld, grad_r2):
    """∂ log|M| / ∂θ (grad_ld) and ∂r² / ∂θ (grad_r2) from the selected inverse.

    W is read from its lower triangle when every rest term is scalar, else it must be symmetric.
    """
    n1, g = A11.shape[0], A11.shape[1]
    lam1 = lam[0]
    Fsum[:] = 0.0
    for j in range(n1):
        for b in range(g):  # F_jj = W11_jj λ₁'A11_j + Σ_k W21[k]' SA[k]
            for c in range(g):
                s = 0.0
                for a in range(g):
                    t = 0.0
                    for d in range(a, g):
                        t += lam1[d, a] * A11[j, d, c]
                    s += W11[j, b, a] * t
                for k in range(ptr[j], ptr[j + 1]):
                    if prow[k] < m:
                        s += W21[k, b] * SA[k, c]
                Fsum[0, b, c] += s
        for kb in range(ptr[j], ptr[j + 1]):  # the level's share of the rest terms' blocks
            rb = prow[kb]
            if rb >= Q2:
                break
            t, cb = rt[rb], rc[rb]
            k0 = kb - cb
            for cc in range(tg[t]):
                kc = k0 + cc
                s = 0.0
                for a in range(g):
                    pl = 0.0
                    for d in range(a, g):
                        pl += pval[kc, d] * lam1[d, a]
                    s += W21[kb, a] * pl
                Fsum[1 + t, cb, cc] += s
    scalar = True
    for t in range(tg.shape[0]):
        if tg[t] != 1:
            scalar = False
    if scalar:  # F[b, b] = Σ_a W[a, b] s_a A22[a, b], from W's lower triangle
        for b in range(min(m, Q2)):
            for a in range(b, m):
                w = W[a, b] * A22[a, b]
                Fsum[1 + rt[b], 0, 0] += w * scale[a]
                if a != b and a < Q2:
                    Fsum[1 + rt[a], 0, 0] += w * scale[b]
    else:  # W symmetric here
        for rb in range(Q2):
            t, cb, s0 = rt[rb], rc[rb], rs[rb]
            for cc in range(tg[t]):
                c = s0 + cc
                s = 0.0
                for a in range(m):
                    s += W[a, rb] * LA[a, c]
                Fsum[1 + t, cb, cc] += s
    for i in range(th_term.shape[0]):
        term, r, c = th_term[i], th_row[i], th_col[i]
        grad_ld[i] = 2.0 * Fsum[term, c, r]
        s = 0.0
        if term == 0:
            for j in range(n1):
                s += zr1[j, r] * u1[j, c]
        else:
            t = term - 1
            w = tg[t]
            for lv in range(tlev[t]):
                o = toff[t] + lv * w
                s += zr2[o + r] * x2[o + c]
        grad_r2[i] = -2.0 * s

