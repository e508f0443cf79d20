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

from ._blockpls_kernels import evaluate_small

#: Result codes of :func:`minimize_small`.
CONVERGED_GRADIENT, CONVERGED_DECREASE, STOPPED_MAXITER, STOPPED_LINESEARCH = 0, 1, 2, 3


@njit(cache=True, nogil=True, error_model="numpy")
def minimize_small(x0, lower, scale, reml, ftol, gtol, maxiter, S, x_out, g_out):
    """Minimise the criterion from θ = ``x0``; θ̂ into ``x_out``, its gradient into ``g_out``.

    Returns (f̂, number of evaluations, result code).
    """
    k = x0.shape[0]
    lo = lower * scale
    y = np.maximum(x0 * scale, lo)
    g = np.empty(k)
    gt = np.empty(k)
    f = evaluate_small(y / scale, reml, gt, S)
    nfev = 1
    for i in range(k):
        g[i] = gt[i] / scale[i]
    H = np.eye(k)
    first = True
    code = STOPPED_MAXITER
    yn = np.empty(k)
    yt = np.empty(k)
    gn = np.empty(k)
    d = np.empty(k)
    free = np.empty(k, dtype=np.bool_)
    for _ in range(maxiter):
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
            s = 0.0
            if free[i]:
                for j in range(k):
                    if free[j]:
                        s -= H[i, j] * g[j]
            d[i] = s
            slope += s * g[i]
        if not slope < 0.0:  # not a descent direction: restart from steepest descent
            H[:, :] = np.eye(k)
            slope = 0.0
            for i in range(k):
                d[i] = -g[i] if free[i] else 0.0
                slope += d[i] * g[i]
        alpha = 1.0
        if first:
            gn2 = 0.0
            for i in range(k):
                gn2 += d[i] * d[i]
            alpha = min(1.0, 1.0 / np.sqrt(gn2))
        # Weak Wolfe line search: backtrack (safeguarded quadratic) while the decrease is
        # too small, extrapolate while the slope is still steep; keep the best acceptable point.
        a_lo, a_hi = 0.0, np.inf
        have = False
        fn = f
        for _ls in range(40):
            dec = 0.0
            for i in range(k):
                yt[i] = max(y[i] + alpha * d[i], lo[i])
                dec += g[i] * (yt[i] - y[i])
            ft = evaluate_small(yt / scale, reml, gt, S)
            nfev += 1
            if not (np.isfinite(ft) and ft <= f + 1e-4 * dec):
                a_hi = alpha
                if have:
                    alpha = 0.5 * (a_lo + a_hi)
                elif not np.isfinite(ft):
                    alpha *= 0.5
                else:
                    alpha *= max(0.1, min(0.5, -0.5 * dec / (ft - f - dec)))
                continue
            slope_t = 0.0
            for i in range(k):
                slope_t += gt[i] / scale[i] * d[i]
            if not have or ft < fn:
                have = True
                fn = ft
                for i in range(k):
                    yn[i] = yt[i]
                    gn[i] = gt[i] / scale[i]
            if slope_t >= 0.9 * slope:  # curvature condition: done
                break
            a_lo = alpha
            alpha = 4.0 * alpha if a_hi == np.inf else 0.5 * (a_lo + a_hi)
        if not have:
            code = STOPPED_LINESEARCH
            break
        # BFGS update of the inverse Hessian with s = yn − y, t = gn − g.
        s = yn - y
        t = gn - g
        st = 0.0
        ss = 0.0
        tt = 0.0
        for i in range(k):
            st += s[i] * t[i]
            ss += s[i] * s[i]
            tt += t[i] * t[i]
        if st > 1e-10 * np.sqrt(ss * tt):
            if first:
                H[:, :] = np.eye(k) * (st / tt)
            Ht = H @ t
            tHt = t @ Ht
            rho = 1.0 / st
            for i in range(k):
                for j in range(k):
                    H[i, j] += (rho + rho * rho * tHt) * s[i] * s[j] - rho * (Ht[i] * s[j] + s[i] * Ht[j])
            first = False
        rel = (f - fn) / max(abs(f), abs(fn), 1.0)
        for i in range(k):
            y[i] = yn[i]
            g[i] = gn[i]
        f = fn
        if rel <= ftol:
            code = CONVERGED_DECREASE
            break
    for i in range(k):
        x_out[i] = y[i] / scale[i]
        g_out[i] = g[i] * scale[i]
    return f, nfev, code
