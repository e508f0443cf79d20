"""A compiled projected quasi-Newton minimiser for the small REML problems (the whole fit in one call).

For a small dense block (:data:`bayeslmm._blockpls.SMALL_REST`) one
evaluation of the profiled criterion and its analytic gradient costs a few
microseconds, so a Python optimiser loop would cost more than the algebra.
:func:`minimize_small` runs the optimiser inside the compiled code: BFGS on
the inverse Hessian, with the variables at a bound whose gradient points
outwards held fixed (projected quasi-Newton, Bertsekas 1982), an Armijo
line search along the projected path that backtracks on too small a
decrease and extrapolates while the slope stays steep (the weak Wolfe
conditions), and L-BFGS-B's stopping rules (projected gradient ≤ ``gtol``, or relative decrease ≤ ``ftol``).
The variables are θ·scale (see ``bayeslmm.reml_problem``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._blockpls_kernels import chol_lower, gradient, inverse_from_chol, leading, logdets, schur, selected_inverse, set_lambda, solve, symmetrize

_LOG2PI = float(np.log(2.0 * np.pi))

#: Result codes of :func:`minimize_small`.
CONVERGED_GRADIENT, CONVERGED_DECREASE, STOPPED_MAXITER, STOPPED_LINESEARCH = 0, 1, 2, 3


@njit(cache=True, nogil=True, error_model="numpy")
def minimize_small(x0, lower, scale, reml, ftol, gtol, maxiter, x_out, g_out, th_term, th_row, th_col, lam, A11, L11, ptr,
                   prow, col_ptr, col_k, level_of, pval, SA, L21, rt, rc, rs, tg, toff, tlev, A22, LA, L22, tmp, scale_ws,
                   out, u1, x2, b1, b2, zr1, zr2, W, W21, W11, Fsum, g_ld, g_r2, dims):
    """Minimise the criterion from θ = ``x0``; θ̂ into ``x_out``, its gradient into ``g_out``.

    The arrays after ``g_out`` are ``BlockedPLS.small_args``. Returns (f̂,
    number of evaluations, result code). The loop has a single evaluation
    site (the start, then every line-search trial) calling the leaf kernels
    directly, which keeps the compiled code, and its compile time, small.
    """
    k = x0.shape[0]
    Q2, p, n, scalar_rest = dims[0], dims[1], dims[2], dims[3] == 1
    nu = n - p if reml else n
    m = Q2 + (p if reml else 0)
    th = np.empty(k)
    lo = lower * scale
    y, g, d = np.empty(k), np.empty(k), np.empty(k)
    yt, gt, yn, gn = np.empty(k), np.empty(k), np.empty(k), np.empty(k)
    free = np.empty(k, dtype=np.bool_)
    for i in range(k):
        y[i] = max(x0[i] * scale[i], lo[i])
        yt[i] = y[i]
    H = np.eye(k)
    first, starting, have = True, True, False
    f = fn = np.inf
    alpha = a_lo = slope = dec = 0.0
    a_hi = np.inf
    nfev = it = ls = 0
    code = STOPPED_MAXITER
    while True:
        # The profiled criterion and its gradient at yt / scale (the only evaluation site).
        ft = np.inf
        for i in range(k):
            th[i] = yt[i] / scale[i]
        set_lambda(th, th_term, th_row, th_col, lam)
        ld1 = leading(lam, A11, L11, ptr, prow, pval, SA, L21, rt, rc, tg, Q2, tmp)
        if np.isfinite(ld1):
            schur(lam, A22, LA, L22, ptr, prow, col_ptr, col_k, level_of, L21, rt, rc, rs, tg, Q2, scale_ws)
            if chol_lower(L22, L22.shape[0]):
                ld2, ldx, r2 = logdets(L22, Q2, p)
                r2 = max(r2, 1e-300)
                ft = ld1 + ld2 + (ldx if reml else 0.0) + nu * (1.0 + _LOG2PI + np.log(r2 / nu))
                solve(lam, A11, L11, ptr, prow, pval, L21, rt, rc, rs, tg, Q2, p, A22, L22, u1, x2, b1, b2, zr1, zr2)
                inverse_from_chol(L22, W, m)
                if not scalar_rest:
                    symmetrize(W, m)
                selected_inverse(L11, ptr, prow, col_ptr, col_k, level_of, L21, W, m, W21, W11, tmp)
                gradient(lam, A11, A22, scale_ws, ptr, prow, pval, SA, W, m, W21, W11, LA, rt, rc, rs, tg, toff, tlev, Q2,
                         th_term, th_row, th_col, u1, x2, zr1, zr2, Fsum, g_ld, g_r2)
                for i in range(k):
                    gt[i] = g_ld[i] + nu * g_r2[i] / r2
        nfev += 1
        if starting:  # the start point
            starting = False
            f = ft
            for i in range(k):
                g[i] = gt[i] / scale[i]
        else:  # a line-search trial: weak Wolfe conditions, keeping the best acceptable point
            ls += 1
            done = False
            if not (np.isfinite(ft) and ft <= f + 1e-4 * dec):
                a_hi = alpha
                if have:
                    alpha = 0.5 * (a_lo + a_hi)
                elif not np.isfinite(ft):
                    alpha *= 0.5
                else:
                    alpha *= max(0.1, min(0.5, -0.5 * dec / (ft - f - dec)))
            else:
                slope_t = 0.0
                for i in range(k):
                    slope_t += gt[i] / scale[i] * d[i]
                if not have or ft < fn:
                    have = True
                    fn = ft
                    for i in range(k):
                        yn[i] = yt[i]
                        gn[i] = gt[i] / scale[i]
                if slope_t >= 0.9 * slope:
                    done = True
                else:
                    a_lo = alpha
                    alpha = 4.0 * alpha if a_hi == np.inf else 0.5 * (a_lo + a_hi)
            if not done and ls < 40:
                dec = 0.0
                for i in range(k):
                    yt[i] = max(y[i] + alpha * d[i], lo[i])
                    dec += g[i] * (yt[i] - y[i])
                continue
            if not have:
                code = STOPPED_LINESEARCH
                break
            # BFGS update of the inverse Hessian with s = yn − y, t = gn − g.
            st = ss = tt = 0.0
            for i in range(k):
                si, ti = yn[i] - y[i], gn[i] - g[i]
                st += si * ti
                ss += si * si
                tt += ti * ti
            if st > 1e-10 * np.sqrt(ss * tt):
                if first:
                    H[:, :] = np.eye(k) * (st / tt)
                s_ = yn - y
                t_ = gn - g
                Ht = H @ t_
                tHt = t_ @ Ht
                rho = 1.0 / st
                for i in range(k):
                    for j in range(k):
                        H[i, j] += (rho + rho * rho * tHt) * s_[i] * s_[j] - rho * (Ht[i] * s_[j] + s_[i] * Ht[j])
                first = False
            rel = (f - fn) / max(abs(f), abs(fn), 1.0)
            for i in range(k):
                y[i] = yn[i]
                g[i] = gn[i]
            f = fn
            if rel <= ftol:
                code = CONVERGED_DECREASE
                break
            it += 1
            if it >= maxiter:
                code = STOPPED_MAXITER
                break
        # A new iteration from (y, f, g): projected gradient, direction, first trial.
        pg = 0.0
        for i in range(k):
            free[i] = not (y[i] <= lo[i] and g[i] > 0.0)
            if free[i]:
                pg = max(pg, abs(g[i]))
        if pg <= gtol:
            code = CONVERGED_GRADIENT
            break
        slope = 0.0
        for i in range(k):
            v = 0.0
            if free[i]:
                for j in range(k):
                    if free[j]:
                        v -= H[i, j] * g[j]
            d[i] = v
            slope += v * g[i]
        if not slope < 0.0:  # not a descent direction: restart from steepest descent
            H[:, :] = np.eye(k)
            slope = 0.0
            for i in range(k):
                d[i] = -g[i] if free[i] else 0.0
                slope += d[i] * g[i]
        alpha = 1.0
        if first:
            dn2 = 0.0
            for i in range(k):
                dn2 += d[i] * d[i]
            alpha = min(1.0, 1.0 / np.sqrt(dn2))
        a_lo, a_hi, have, ls, fn = 0.0, np.inf, False, 0, f
        dec = 0.0
        for i in range(k):
            yt[i] = max(y[i] + alpha * d[i], lo[i])
            dec += g[i] * (yt[i] - y[i])
    for i in range(k):
        x_out[i] = y[i] / scale[i]
        g_out[i] = g[i] * scale[i]
    return f, nfev, code
