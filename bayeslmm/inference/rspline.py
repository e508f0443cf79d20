"""R's interpolating and inverse splines (package ``splines``), as lme4's profile uses them.

lme4 turns each likelihood profile, a table of the signed square root ζ of
the deviance change against the parameter, into an interval as follows:
``interpSpline(.zeta ~ par)`` -- the natural cubic spline through the points
-- then ``backSpline`` of it -- a piecewise cubic inverse, par as a function
of ζ, that matches the values and the inverse slopes at the knots (quadratic
on the two end pieces, linear there when the quadratic would bend the wrong
way) -- evaluated at ζ = ±qnorm((1 - level)/2). Outside the range of ζ it
reached, the inverse is undefined (NaN) and lme4 reports the parameter's bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

__all__ = ["BackSpline", "back_spline"]


@dataclass(frozen=True)
class BackSpline:
    """A piecewise cubic in polynomial form: on [knots[i], knots[i+1]], Σ_k coef[i, k] (x - knots[i])^k."""

    knots: np.ndarray
    coef: np.ndarray

    def __call__(self, x: np.ndarray | float) -> np.ndarray:
        """Values at ``x``; NaN outside [knots[0], knots[-1]] (as R's ``predict.polySpline``)."""
        x = np.atleast_1d(np.asarray(x, dtype=float))
        k = self.knots
        # R's cut(x, knots): right-closed intervals (k[i], k[i+1]]; x == k[0] belongs to the first.
        i = np.searchsorted(k, x, side="left") - 1
        i = np.where(x == k[0], 0, i)
        out = np.full(x.shape, np.nan)
        ok = (i >= 0) & (i < k.size - 1) & np.isfinite(x)
        d = x[ok] - k[i[ok]]
        c = self.coef[i[ok]]
        out[ok] = c[:, 0] + d * (c[:, 1] + d * (c[:, 2] + d * c[:, 3]))
        return out


def back_spline(x: np.ndarray, y: np.ndarray) -> BackSpline:
    """``backSpline(interpSpline(y ~ x))``: the inverse of the natural spline through (x, y).

    Raises
    ------
    ValueError
        If the x values are not distinct or y is not strictly monotone in x
        (R stops with "spline must be monotone").
    """
    order = np.argsort(x, kind="stable")
    x, y = np.asarray(x, dtype=float)[order], np.asarray(y, dtype=float)[order]
    if np.any(np.diff(x) <= 0):
        raise ValueError("values of 'x' must be distinct")
    if x.size < 2:
        raise ValueError("a spline needs at least two points")
    if x.size == 2:
        slope = np.full(2, (y[1] - y[0]) / (x[1] - x[0]))
    else:
        slope = CubicSpline(x, y, bc_type="natural")(x, 1)
    nk = x.size
    kdiff = np.diff(x)
    adiff = np.diff(y)
    if not (np.all(adiff < 0) or np.all(adiff > 0)):
        raise ValueError("spline must be monotone")
    b = np.zeros((nk, 4))
    b[:, 0] = x
    b[:, 1] = 1.0 / slope
    for i in range(nk - 1):
        a = np.array([[adiff[i] ** 2, adiff[i] ** 3], [2 * adiff[i], 3 * adiff[i] ** 2]])
        rhs = np.array([kdiff[i] - adiff[i] * b[i, 1], b[i + 1, 1] - b[i, 1]])
        b[i, 2:4] = np.linalg.solve(a, rhs)
    b[nk - 1, 1:4] = np.nan
    if nk > 2:
        b[0, 3] = b[nk - 2, 3] = 0.0
        a = np.array([[adiff[0], adiff[0] ** 2], [1.0, 2 * adiff[0]]])
        b[0, 1:3] = np.linalg.solve(a, np.array([kdiff[0], 1.0 / slope[1]]))
        b[nk - 2, 2] = (kdiff[nk - 2] - adiff[nk - 2] * b[nk - 2, 1]) / adiff[nk - 2] ** 2
    if b[0, 2] > 0:
        b[0, 2] = 0.0
        b[0, 1] = kdiff[0] / adiff[0]
    if b[nk - 2, 2] < 0:
        b[nk - 2, 2] = 0.0
        b[nk - 2, 1] = kdiff[nk - 2] / adiff[nk - 2]
    return BackSpline(y.copy(), b)
