"""Likelihood profiles of a linear mixed model, as ``lme4::profile`` computes them.

For each parameter -- the sds and correlations of the random effects, σ, and
the fixed effects -- the parameter is held at a sequence of values and the ML
deviance is minimised over the others; the profile is the signed square root
ζ = sign(x - x̂) √(deviance(x) - deviance(x̂)). As in lme4:

* the profile is always of the ML deviance: a REML fit is refitted by ML first
  (lme4's ``devfun2`` calls ``refitML``);
* the variance parameters are profiled on the sd/correlation scale (with σ
  free), the fixed effects with θ re-optimised and σ profiled out;
* the grid starts 1% from the estimate (10⁻³ for an estimate at 0), then steps
  so that ζ moves by about δ = ζ_max/8 per step, where ζ_max =
  √χ²(0.99, all parameters), until |ζ| > ζ_max or the parameter's bound is
  reached (steps grow at most tenfold);
* intervals come from the inverse spline of ζ at ±qnorm((1 - level)/2)
  (:mod:`bayeslmm.inference.rspline`); where the profile stops at a bound before
  reaching the cut-off, the interval ends at the bound (an sd at 0, a
  correlation at ±1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.stats import chi2, norm

from ..errors import BayesLMMError, ConvergenceWarning
from .engine import HUGE, FitState, fit_method, fit_state, single_threaded_blas
from .params import VarLayout
from .rspline import BackSpline, back_spline

__all__ = ["ParameterProfile", "Profile", "profile"]

_LOG2PI = float(np.log(2.0 * np.pi))
_MAXPTS = 100
_MAXMULT = 10.0
_MINSTEP = 1e-6


@dataclass(frozen=True)
class ParameterProfile:
    """The profile of one parameter: its values, ζ, and the other parameters at each point."""

    name: str
    values: np.ndarray
    zeta: np.ndarray
    others: pd.DataFrame
    lower: float
    upper: float

    def inverse(self) -> BackSpline | None:
        """The inverse spline of ζ (None when ζ is not monotone in the parameter)."""
        ok = np.isfinite(self.zeta)
        try:
            return back_spline(self.values[ok], self.zeta[ok])
        except ValueError:
            return None

    def interval(self, zeta: np.ndarray) -> np.ndarray:
        """Parameter values where the profile crosses ``zeta`` (the bound where it never does)."""
        if np.isfinite(self.zeta).sum() < 2:
            return np.full(np.shape(zeta), np.nan)
        inv = self.inverse()
        if inv is not None:
            out = inv(zeta)
        else:
            warnings.warn(
                f"The profile of {self.name} is not monotone; its interval is linearly interpolated.",
                ConvergenceWarning,
                stacklevel=3,
            )
            ok = np.isfinite(self.zeta)
            z, v = self.zeta[ok], self.values[ok]
            out = np.interp(zeta, z, v, left=np.nan, right=np.nan)
        out = np.asarray(out, dtype=float)
        bounds = np.where(np.asarray(zeta) < 0, self.lower, self.upper)
        return np.where(np.isnan(out), bounds, out)


@dataclass(frozen=True)
class Profile:
    """Likelihood profiles of a fit (``profile(fm)``), one per parameter."""

    parameters: dict[str, ParameterProfile]
    base_deviance: float
    method_note: str = field(default="")

    def table(self) -> pd.DataFrame:
        """lme4's long profile table: ``.zeta``, the parameters, and ``.par`` naming the one profiled."""
        parts = []
        for name, pp in self.parameters.items():
            df = pp.others.copy()
            df.insert(0, ".zeta", pp.zeta)
            df[".par"] = name
            parts.append(df)
        return pd.concat(parts, ignore_index=True)


class _Profiler:
    """Profiles the ML deviance of one fit; holds the optimum and the step rules."""

    def __init__(self, ml: FitState, alphamax: float, min_cutoff: float) -> None:
        self.ml = ml
        self.layout = VarLayout.from_design(ml.design)
        self.n = ml.nobs
        # A correlation with a zero-sd term is undefined (NaN); any value gives the same θ, so start from 0.
        self.vp_opt = self.layout.to_sdcor(ml.theta, ml.sigma)
        self.undefined = {self.layout.names[k] for k in np.flatnonzero(~np.isfinite(self.vp_opt))}
        self.vp_opt = np.nan_to_num(self.vp_opt, nan=0.0)
        self.names = list(self.layout.names) + list(ml.design.fixed_names)
        self.opt = np.concatenate([self.vp_opt, ml.beta])
        self.stderr = np.sqrt(np.diag(ml.vcov_beta))
        self.base = ml.deviance(ml.theta)
        cutoff = float(np.sqrt(chi2.ppf(1.0 - alphamax, self.opt.size)))
        self.cutoff = max(cutoff, min_cutoff)
        self.delta = self.cutoff / 8.0
        self.lower, self.upper = self.layout.bounds()

    # -- deviance functions ---------------------------------------------------
    def dev_sdcor(self, pars: np.ndarray) -> float:
        """ML deviance at sds/correlations and σ (β profiled out), lme4's ``devfun2``."""
        if not pars[-1] > 0:
            return HUGE
        try:
            theta = self.layout.to_theta(pars)
        except (np.linalg.LinAlgError, ValueError):
            return HUGE
        return self.ml.deviance_sigma(theta, pars[-1])

    def fixed_profile(self, j: int, value: float, theta: np.ndarray) -> tuple[float, np.ndarray, float]:
        """ML deviance, β and σ with β_j held at ``value`` and the other β profiled out, at θ."""
        pls = self.ml.at(theta)
        if pls is None:
            raise ValueError("theta could not be factored")
        # Minimising (β - β̂)'A(β - β̂) subject to β_j = value: β = β̂ + A⁻¹e_j d / (A⁻¹)_jj with d = value - β̂_j,
        # and the penalized RSS grows by d² / (A⁻¹)_jj.
        Ainv, d = pls.rx_inverse, value - pls.beta[j]
        beta = pls.beta + Ainv[:, j] * (d / Ainv[j, j])
        beta[j] = value
        r2 = max(pls.r2 + d * d / Ainv[j, j], np.finfo(float).tiny)
        dev = pls.logdet_L + self.n * (1.0 + _LOG2PI + np.log(r2 / self.n))
        return float(dev), beta, float(np.sqrt(r2 / self.n))

    # -- the grid ---------------------------------------------------------------
    def _next(self, rows: list[np.ndarray], col: int, lo: float, hi: float) -> float:
        """lme4's ``nextpar``: a step that moves ζ by about δ, capped at ten times the last step."""
        p0, p1 = rows[-2][col + 1], rows[-1][col + 1]
        z0, z1 = rows[-2][0], rows[-1][0]
        num, denom = p1 - p0, z1 - z0
        if not np.isfinite(denom) or denom == 0:
            step = _MINSTEP
        else:
            step = self.delta * num / denom
            if step < 0:
                step = _MINSTEP
            elif abs(step) > _MAXMULT * abs(num):
                step = _MAXMULT * abs(num)
        return float(min(hi, max(lo, p1 + np.sign(num) * step)))

    def _fill(self, rows: list[np.ndarray], col: int, lo: float, hi: float, zeta_fn: Callable) -> list[np.ndarray]:
        """lme4's ``fillmat``: extend the profile from the last two rows until the cut-off or a bound."""
        while len(rows) < _MAXPTS:
            cur = rows[-1]
            z = cur[0]
            if not (lo < cur[col + 1] < hi) or (np.isfinite(z) and abs(z) > self.cutoff):
                break
            rows.append(zeta_fn(self._next(rows, col, lo, hi), rows[-1]))
        return rows

    def _profile(self, col: int, lo: float, hi: float, zeta_fn: Callable, shift: float) -> ParameterProfile:
        start = np.concatenate([[0.0], self.opt])
        shifted = zeta_fn(shift, start)
        up = self._fill([start, shifted], col, lo, hi, zeta_fn)
        rows = list(up)
        if self.opt[col] > lo:
            down = self._fill([shifted, start], col, lo, hi, zeta_fn)
            rows += down
        mat = np.unique(np.array(rows), axis=0)
        mat = mat[np.argsort(mat[:, col + 1], kind="stable")]
        _, keep = np.unique(mat[:, col + 1], return_index=True)
        mat = mat[np.sort(keep)]
        name = self.names[col]
        others = pd.DataFrame(mat[:, 1:], columns=self.names)
        return ParameterProfile(name, mat[:, col + 1].copy(), mat[:, 0].copy(), others, lo, hi)

    def variance_parameter(self, w: int) -> ParameterProfile:
        """Profile of sd/correlation/σ number ``w``, the others re-optimised within their bounds."""
        nvp = self.layout.n_var
        free = np.arange(nvp) != w
        bounds = [(lo, hi if np.isfinite(hi) else None) for lo, hi in zip(self.lower[free], self.upper[free])]
        pw = self.vp_opt[w]

        def zeta_fn(x: float, prev: np.ndarray) -> np.ndarray:
            pars = prev[1 : nvp + 1].copy()
            pars[w] = x

            def fun(v: np.ndarray) -> float:
                pars[free] = v
                return self.dev_sdcor(pars)

            x0 = np.clip(prev[1 : nvp + 1][free], self.lower[free], self.upper[free])
            res = _minimize(fun, x0, bounds)
            pars[free] = res.x
            devdiff = max(0.0, float(res.fun) - self.base)
            pls = self.ml.at(self.layout.to_theta(pars))
            beta = pls.beta if pls is not None else np.full(self.ml.beta.size, np.nan)
            return np.concatenate([[np.sign(x - pw) * np.sqrt(devdiff)], pars, beta])

        shift = 1e-3 if pw == 0 else pw * 1.01
        return self._profile(w, self.lower[w], self.upper[w], zeta_fn, shift)

    def fixed_effect(self, j: int) -> ParameterProfile:
        """Profile of fixed effect ``j``: θ re-optimised from the ML optimum at every point."""
        nvp = self.layout.n_var
        est = self.ml.beta[j]
        lower = self.ml.lower
        bounds = [(lo, None) if np.isfinite(lo) else (None, None) for lo in lower]

        def zeta_fn(x: float, prev: np.ndarray) -> np.ndarray:
            def fun(th: np.ndarray) -> float:
                try:
                    return self.fixed_profile(j, x, th)[0]
                except (np.linalg.LinAlgError, ValueError):
                    return HUGE

            res = _minimize(fun, self.ml.theta.copy(), bounds)
            theta = np.where(np.isfinite(lower), np.maximum(res.x, lower), res.x)
            dev, beta, sig = self.fixed_profile(j, x, theta)
            diff = dev - self.base
            z = np.sign(x - est) * np.sqrt(diff) if diff >= 0 else np.nan
            return np.concatenate([[z], self.layout.to_sdcor(theta, sig), beta])

        return self._profile(nvp + j, -np.inf, np.inf, zeta_fn, est + self.delta * self.stderr[j])


def _minimize(fun: Callable[[np.ndarray], float], x0: np.ndarray, bounds: list) -> Any:
    """Minimise within bounds: L-BFGS-B with central differences; a bounded Nelder-Mead polish if it stalls."""
    if x0.size == 0:
        return _Point(x0, fun(x0))
    opts = {"ftol": 1e-12, "gtol": 1e-7, "maxiter": 2000}
    res = minimize(fun, x0, method="L-BFGS-B", jac="3-point", bounds=bounds, options=opts)
    if res.success:
        return res
    polish = minimize(
        fun, res.x, method="Nelder-Mead", bounds=bounds,
        options={"xatol": 1e-10, "fatol": 1e-12, "maxfev": 400 * x0.size, "initial_simplex": _simplex(res.x, bounds)},
    )
    return polish if polish.fun < res.fun else res


@dataclass(frozen=True)
class _Point:
    x: np.ndarray
    fun: float


def _simplex(x: np.ndarray, bounds: list) -> np.ndarray:
    pts = [x]
    for i in range(x.size):
        step = np.zeros_like(x)
        step[i] = max(1e-5, 1e-4 * abs(x[i]))
        lo, hi = bounds[i]
        cand = x + step
        if hi is not None and cand[i] > hi:
            cand = x - step
        if lo is not None and cand[i] < lo:
            cand[i] = lo
        pts.append(cand)
    return np.array(pts)


def profile(
    fit: Any,
    which: Sequence[str] | None = None,
    alphamax: float = 0.01,
    min_cutoff: float = 0.0,
) -> Profile:
    """Likelihood profiles of a REML/ML fit, ``profile(fm, which = ...)``.

    Parameters
    ----------
    fit
        A REML or ML fit's state, ``fit.inference_state`` (the entry point is the fit's method).
    which
        Names of the parameters to profile (as :func:`confint` names them);
        ``None`` profiles all.
    alphamax
        The profiles extend to ζ = √χ²(1 - alphamax, number of parameters), lme4's default 0.01.
    min_cutoff
        Extend the profiles at least to this |ζ| (for intervals wider than the default cut-off gives).

    Returns
    -------
    Profile
    """
    state = fit_state(fit)
    ml = state if state.method == "ML" else fit_method(state.design, "ML", quiet=True, start=state.theta)
    with single_threaded_blas():
        prof = _Profiler(ml, alphamax, min_cutoff)
        names = prof.names if which is None else list(which)
        unknown = [n for n in names if n not in prof.names]
        if unknown:
            raise BayesLMMError(f"Cannot profile {unknown}: not parameters of this model. Choose from {prof.names}.")
        out: dict[str, ParameterProfile] = {}
        nvp = prof.layout.n_var
        for name in names:
            k = prof.names.index(name)
            if name in prof.undefined:
                warnings.warn(
                    f"{name} is undefined at the estimate (one of its terms has sd 0), so it has no profile; "
                    "its interval is NaN.",
                    ConvergenceWarning,
                    stacklevel=2,
                )
                empty = np.array([np.nan])
                out[name] = ParameterProfile(name, empty, empty, pd.DataFrame(columns=prof.names), np.nan, np.nan)
                continue
            out[name] = prof.variance_parameter(k) if k < nvp else prof.fixed_effect(k - nvp)
    note = "" if state.method == "ML" else "profiles of the ML deviance (the REML fit was refitted by ML, as lme4 does)"
    return Profile(out, prof.base, note)


def profile_confint(fit: Any, names: Sequence[str], level: float) -> np.ndarray:
    """Profile intervals (rows: ``names``; columns: lower, upper) at ``level``."""
    a = (1.0 - level) / 2.0
    zeta = norm.ppf([a, 1.0 - a])
    prof = profile(fit, which=names, min_cutoff=float(abs(zeta[0])) * 1.05)
    return np.array([prof.parameters[n].interval(zeta) for n in names])
