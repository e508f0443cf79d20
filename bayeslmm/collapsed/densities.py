"""Prior log-densities and their derivatives, compiled with numba, for the collapsed sampler.

The collapsed sampler evaluates its whole log posterior in one numba call,
so each prior of :mod:`bayeslmm.priors` is encoded as a :class:`PriorSpec`: a
family code, canonical parameters, and PyMC's default transform (identity for
real parameters, ``log`` for positive ones, the logistic map onto the
interval for ``Uniform``). Densities are exact, normalising constants
included, and parameterised as PyMC's distributions of the same name;
``tests/test_collapsed.py`` checks them against scipy. A prior written
with parameters not listed in ``_FAMILIES`` (say ``Gamma(mu=, sigma=)``) has
no spec, and the caller falls back to the PyTensor model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable

import numpy as np
from numba import njit

from ..priors import Prior

__all__ = [
    "PriorSpec", "prior_spec", "spec_arrays", "family_logp", "constrain", "fixed_values_and_beta", "unconstrained_logp",
    "NONE", "LOG", "INTERVAL",
]

NONE, LOG, INTERVAL = 0, 1, 2
(NORMAL, STUDENT_T, CAUCHY, LAPLACE, LOGISTIC, CONSTANT, HALF_NORMAL, HALF_CAUCHY, HALF_STUDENT_T,
 EXPONENTIAL, GAMMA, INVERSE_GAMMA, LOGNORMAL, WEIBULL) = range(14)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG2 = math.log(2.0)


@dataclass(frozen=True)
class PriorSpec:
    """A prior on one scalar as the collapsed sampler evaluates it.

    Attributes
    ----------
    prior
        The prior it encodes.
    code
        Family code (module constants such as ``NORMAL``).
    transform
        ``NONE``, ``LOG`` or ``INTERVAL``.
    params
        Canonical parameters, padded to three.
    lower, upper
        Bounds of the ``INTERVAL`` transform.
    """

    prior: Prior
    code: int
    transform: int
    params: tuple[float, float, float]
    lower: float = 0.0
    upper: float = 0.0

    def forward(self, x: float) -> float:
        """Constrained value -> unconstrained coordinate."""
        if self.transform == LOG:
            return math.log(x)
        if self.transform == INTERVAL:
            t = (x - self.lower) / (self.upper - self.lower)
            return math.log(t) - math.log1p(-t)
        return float(x)

    def backward_array(self, theta: np.ndarray) -> np.ndarray:
        """Unconstrained coordinates -> constrained values."""
        theta = np.asarray(theta, dtype=float)
        if self.transform == LOG:
            return np.exp(theta)
        if self.transform == INTERVAL:
            return self.lower + (self.upper - self.lower) / (1.0 + np.exp(-theta))
        return theta

    def contains(self, x: float) -> bool:
        """Whether ``x`` is strictly inside the support of the transform."""
        if self.transform == LOG:
            return x > 0
        if self.transform == INTERVAL:
            return self.lower < x < self.upper
        return bool(np.isfinite(x))


# family -> [(accepted parameter names, defaults, p -> (code, transform, canonical params))]
_Builder = Callable[[dict[str, float]], tuple[int, int, tuple[float, ...]]]
_FAMILIES: dict[str, list[tuple[frozenset[str], dict[str, float], _Builder]]] = {
    "Normal": [
        (frozenset({"mu", "sigma"}), {"mu": 0.0, "sigma": 1.0}, lambda p: (NORMAL, NONE, (p["mu"], p["sigma"]))),
        (frozenset({"mu", "tau"}), {"mu": 0.0}, lambda p: (NORMAL, NONE, (p["mu"], p["tau"] ** -0.5))),
    ],
    "StudentT": [
        (frozenset({"nu", "mu", "sigma"}), {"mu": 0.0, "sigma": 1.0}, lambda p: (STUDENT_T, NONE, (p["nu"], p["mu"], p["sigma"]))),
    ],
    "Cauchy": [(frozenset({"alpha", "beta"}), {}, lambda p: (CAUCHY, NONE, (p["alpha"], p["beta"])))],
    "Laplace": [(frozenset({"mu", "b"}), {}, lambda p: (LAPLACE, NONE, (p["mu"], p["b"])))],
    "Logistic": [(frozenset({"mu", "s"}), {"mu": 0.0, "s": 1.0}, lambda p: (LOGISTIC, NONE, (p["mu"], p["s"])))],
    "Uniform": [
        (
            frozenset({"lower", "upper"}),
            {"lower": 0.0, "upper": 1.0},
            lambda p: (CONSTANT, INTERVAL, (-math.log(p["upper"] - p["lower"]),)),
        )
    ],
    "Flat": [(frozenset(), {}, lambda p: (CONSTANT, NONE, (0.0,)))],
    "HalfNormal": [
        (frozenset({"sigma"}), {"sigma": 1.0}, lambda p: (HALF_NORMAL, LOG, (p["sigma"],))),
        (frozenset({"tau"}), {}, lambda p: (HALF_NORMAL, LOG, (p["tau"] ** -0.5,))),
    ],
    "HalfCauchy": [(frozenset({"beta"}), {}, lambda p: (HALF_CAUCHY, LOG, (p["beta"],)))],
    "HalfStudentT": [
        (frozenset({"nu", "sigma"}), {"nu": 1.0, "sigma": 1.0}, lambda p: (HALF_STUDENT_T, LOG, (p["nu"], p["sigma"])))
    ],
    "Exponential": [
        (frozenset({"lam"}), {}, lambda p: (EXPONENTIAL, LOG, (p["lam"],))),
        (frozenset({"scale"}), {}, lambda p: (EXPONENTIAL, LOG, (1.0 / p["scale"],))),
    ],
    "Gamma": [(frozenset({"alpha", "beta"}), {}, lambda p: (GAMMA, LOG, (p["alpha"], p["beta"])))],
    "InverseGamma": [(frozenset({"alpha", "beta"}), {"beta": 1.0}, lambda p: (INVERSE_GAMMA, LOG, (p["alpha"], p["beta"])))],
    "LogNormal": [(frozenset({"mu", "sigma"}), {"mu": 0.0, "sigma": 1.0}, lambda p: (LOGNORMAL, LOG, (p["mu"], p["sigma"])))],
    "Weibull": [(frozenset({"alpha", "beta"}), {}, lambda p: (WEIBULL, LOG, (p["alpha"], p["beta"])))],
    "HalfFlat": [(frozenset(), {}, lambda p: (CONSTANT, LOG, (0.0,)))],
}


def prior_spec(prior: Prior) -> PriorSpec | None:
    """The spec of a prior, or None if its family or parameterisation is not implemented here."""
    given = {k: float(v) for k, v in prior.params}
    for names, defaults, build in _FAMILIES.get(prior.dist, []):
        params = {**defaults, **given}
        if set(given) <= names and set(params) == names:
            code, transform, canonical = build(params)
            padded = (tuple(canonical) + (0.0, 0.0, 0.0))[:3]
            bounds = (params["lower"], params["upper"]) if transform == INTERVAL else (0.0, 0.0)
            return PriorSpec(prior, code, transform, padded, *bounds)
    return None


def spec_arrays(specs: list[PriorSpec]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(codes, transforms, params (k, 5))`` with the bounds in params[:, 3:5], for the numba kernel."""
    codes = np.array([s.code for s in specs], dtype=np.int64)
    transforms = np.array([s.transform for s in specs], dtype=np.int64)
    params = np.array([list(s.params) + [s.lower, s.upper] for s in specs], dtype=float).reshape(len(specs), 5)
    return codes, transforms, params


@njit(cache=True, nogil=True, error_model="numpy")
def _log_sigmoid(t: float) -> float:  # pragma: no cover - compiled
    return -math.log1p(math.exp(-t)) if t >= 0 else t - math.log1p(math.exp(t))


@njit(cache=True, nogil=True, error_model="numpy")
def family_logp(code: int, a: float, b: float, c: float, x: float) -> tuple[float, float]:  # pragma: no cover
    """``(log p(x), d log p / dx)`` of a family with canonical parameters (a, b, c)."""
    if code == NORMAL:
        z = (x - a) / b
        return -0.5 * z * z - math.log(b) - _HALF_LOG_2PI, -z / b
    if code == STUDENT_T or code == HALF_STUDENT_T:
        nu, mu, s = (a, b, c) if code == STUDENT_T else (a, 0.0, b)
        d = x - mu
        k = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi) - math.log(s)
        k += _LOG2 if code == HALF_STUDENT_T else 0.0
        return k - (nu + 1) / 2 * math.log1p(d * d / (nu * s * s)), -(nu + 1) * d / (nu * s * s + d * d)
    if code == CAUCHY or code == HALF_CAUCHY:
        loc, s = (a, b) if code == CAUCHY else (0.0, a)
        d = x - loc
        k = -math.log(math.pi * s) + (_LOG2 if code == HALF_CAUCHY else 0.0)
        return k - math.log1p((d / s) ** 2), -2.0 * d / (s * s + d * d)
    if code == LAPLACE:
        d = x - a
        return -math.log(2.0 * b) - abs(d) / b, (-1.0 if d > 0 else (1.0 if d < 0 else 0.0)) / b
    if code == LOGISTIC:
        z = (x - a) / b
        return -z - math.log(b) + 2.0 * _log_sigmoid(z), -math.tanh(z / 2) / b
    if code == CONSTANT:
        return a, 0.0
    if code == HALF_NORMAL:
        return _LOG2 - _HALF_LOG_2PI - math.log(a) - 0.5 * (x / a) ** 2, -x / (a * a)
    if code == EXPONENTIAL:
        return math.log(a) - a * x, -a
    if code == GAMMA:
        return a * math.log(b) - math.lgamma(a) + (a - 1) * math.log(x) - b * x, (a - 1) / x - b
    if code == INVERSE_GAMMA:
        return a * math.log(b) - math.lgamma(a) - (a + 1) * math.log(x) - b / x, -(a + 1) / x + b / (x * x)
    if code == LOGNORMAL:
        lx = math.log(x)
        z = (lx - a) / b
        return -lx - math.log(b) - _HALF_LOG_2PI - 0.5 * z * z, -1.0 / x - z / (b * x)
    # WEIBULL
    r = (x / b) ** a
    return math.log(a) - a * math.log(b) + (a - 1) * math.log(x) - r, (a - 1) / x - a * r / x


@njit(cache=True, nogil=True, error_model="numpy")
def constrain(transform: int, lower: float, upper: float, theta: float) -> float:  # pragma: no cover
    """Unconstrained coordinate -> value."""
    if transform == LOG:
        return math.exp(theta)
    if transform == INTERVAL:
        return lower + (upper - lower) * math.exp(_log_sigmoid(theta))
    return theta


@njit(cache=True, nogil=True, error_model="numpy")
def fixed_values_and_beta(theta, p, centered, idx, slopes, xbar, transforms, prm):  # pragma: no cover - compiled
    """The fixed parameters' values from their coordinates ``theta[:p]``, and lme4's β from them.

    With ``centered`` the first value is the intercept at the predictor means ``xbar``, the others
    the slopes of columns ``slopes``; β's intercept is then ``values[0] - xbar · slopes``.
    """
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
def unconstrained_logp(code: int, transform: int, prm: np.ndarray, theta: float, grad_x: float) -> tuple[float, float]:  # pragma: no cover
    """Log prior in the unconstrained coordinate (Jacobian included) and its derivative.

    ``grad_x`` is the derivative of the rest of the log posterior with respect
    to the constrained value; it is chained into the returned derivative.
    """
    x = constrain(transform, prm[3], prm[4], theta)
    lp, dx = family_logp(code, prm[0], prm[1], prm[2], x)
    dx += grad_x
    if transform == LOG:
        return lp + theta, dx * x + 1.0
    if transform == INTERVAL:
        s = math.exp(_log_sigmoid(theta))
        width = prm[4] - prm[3]
        return lp + math.log(width) + _log_sigmoid(theta) + _log_sigmoid(-theta), dx * width * s * (1.0 - s) + 1.0 - 2.0 * s
    return lp, dx
