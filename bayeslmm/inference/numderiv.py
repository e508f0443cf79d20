"""Richardson-extrapolated finite differences, as R's ``numDeriv`` computes them.

lmerTest takes the Hessian of the deviance and the Jacobian of vcov(β) with
respect to the variance parameters with ``numDeriv::hessian`` and
``numDeriv::jacobian`` at their defaults: central differences with initial
step h = d|x| (10⁻⁴ where |x| < 1.8·10⁻⁵), d = 0.1 for the Hessian and 10⁻⁴
for the Jacobian, halved three times, combined by Richardson extrapolation. The same scheme is used here, so the Satterthwaite
degrees of freedom follow lmerTest's numerically as well as in method.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["hessian", "jacobian"]

_EPS = 1e-4
_D_JACOBIAN = 1e-4
_D_HESSIAN = 0.1
_ZERO_TOL = float(np.sqrt(np.finfo(float).eps / 7e-7))
_R = 4
_V = 2.0


def _initial_steps(x: np.ndarray, d: float) -> np.ndarray:
    return np.abs(d * x) + _EPS * (np.abs(x) < _ZERO_TOL)


def _extrapolate(a: np.ndarray) -> np.ndarray:
    """Richardson extrapolation along axis 0 (successive halvings of the step)."""
    a = np.array(a, dtype=float, copy=True)
    for m in range(1, _R):
        a = (a[1:] * 4.0**m - a[:-1]) / (4.0**m - 1.0)
    return a[0]


def jacobian(func: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    """``numDeriv::jacobian(func, x)``: shape (len(func(x)), len(x))."""
    x = np.asarray(x, dtype=float)
    h0 = _initial_steps(x, _D_JACOBIAN)
    cols = []
    for i in range(x.size):
        est = []
        h = h0.copy()
        for _ in range(_R):
            e = np.zeros_like(x)
            e[i] = h[i]
            est.append((np.asarray(func(x + e)) - np.asarray(func(x - e))) / (2.0 * h[i]))
            h = h / _V
        cols.append(_extrapolate(np.array(est)))
    return np.column_stack(cols)


def hessian(func: Callable[[np.ndarray], float], x: np.ndarray) -> np.ndarray:
    """``numDeriv::hessian(func, x)`` (``genD`` with Richardson extrapolation)."""
    x = np.asarray(x, dtype=float)
    p = x.size
    f0 = float(func(x))
    h0 = _initial_steps(x, _D_HESSIAN)
    H = np.zeros((p, p))
    for i in range(p):
        est = []
        h = h0.copy()
        for _ in range(_R):
            e = np.zeros(p)
            e[i] = h[i]
            est.append((func(x + e) - 2.0 * f0 + func(x - e)) / h[i] ** 2)
            h = h / _V
        H[i, i] = _extrapolate(np.array(est))
    for i in range(p):
        for j in range(i):
            est = []
            h = h0.copy()
            for _ in range(_R):
                e = np.zeros(p)
                e[i], e[j] = h[i], h[j]
                f1, f2 = func(x + e), func(x - e)
                est.append((f1 - 2.0 * f0 + f2 - H[i, i] * h[i] ** 2 - H[j, j] * h[j] ** 2) / (2.0 * h[i] * h[j]))
                h = h / _V
            H[i, j] = H[j, i] = _extrapolate(np.array(est))
    return H
