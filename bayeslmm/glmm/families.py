"""Response families and links of a generalized linear mixed model.

A :class:`GLMFamily` is the plain-NumPy definition the Laplace engine, the
PyMC model and the after-fit outputs share: the inverse link and its
derivative, the variance function, the log-density and the unit deviance.
The response is written as R's ``glm`` writes it: for the binomial family
``y`` is the proportion of successes and the prior weights are the trials;
for counts ``y`` is the count and the weights are 1.

Families and links (``family(fm)`` in R):

========================  ================================  ===========
family                    links                             extra
========================  ================================  ===========
``binomial``              ``logit``, ``probit``, ``cloglog``
``poisson``               ``log``, ``identity``, ``sqrt``
``negative_binomial``     ``log``                           φ (NB2: Var = μ + μ²/φ)
========================  ================================  ===========

``bernoulli`` is the binomial family with one trial per row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats

from ..errors import BayesLMMError
from ..paramdraws import Family

__all__ = ["Link", "GLMFamily", "LINKS", "FAMILY_LINKS", "get_family", "array_family"]

_EPS = float(np.finfo(float).eps)


@dataclass(frozen=True)
class Link:
    """A link function: ``linkfun`` (μ → η), ``linkinv`` (η → μ) and ``mu_eta`` = dμ/dη."""

    name: str
    linkfun: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    linkinv: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    mu_eta: Callable[[np.ndarray], np.ndarray] = field(repr=False)


def _logit_inv(eta: np.ndarray) -> np.ndarray:
    return special.expit(np.clip(eta, -30.0, 30.0))


def _logit_mu_eta(eta: np.ndarray) -> np.ndarray:
    p = _logit_inv(eta)
    return np.maximum(p * (1.0 - p), _EPS)


def _probit_inv(eta: np.ndarray) -> np.ndarray:
    t = -stats.norm.ppf(_EPS)
    return stats.norm.cdf(np.clip(eta, -t, t))


def _probit_mu_eta(eta: np.ndarray) -> np.ndarray:
    return np.maximum(stats.norm.pdf(eta), _EPS)


def _cloglog_inv(eta: np.ndarray) -> np.ndarray:
    return np.clip(-np.expm1(-np.exp(np.minimum(eta, 700.0))), _EPS, 1.0 - _EPS)


def _cloglog_mu_eta(eta: np.ndarray) -> np.ndarray:
    eta = np.minimum(eta, 700.0)
    return np.maximum(np.exp(eta - np.exp(eta)), _EPS)


def _log_inv(eta: np.ndarray) -> np.ndarray:
    return np.maximum(np.exp(np.minimum(eta, 700.0)), _EPS)


LINKS: dict[str, Link] = {
    "logit": Link("logit", special.logit, _logit_inv, _logit_mu_eta),
    "probit": Link("probit", stats.norm.ppf, _probit_inv, _probit_mu_eta),
    "cloglog": Link("cloglog", lambda mu: np.log(-np.log1p(-mu)), _cloglog_inv, _cloglog_mu_eta),
    "log": Link("log", np.log, _log_inv, _log_inv),
    "identity": Link("identity", lambda mu: np.asarray(mu, dtype=float), lambda eta: np.asarray(eta, dtype=float),
                     lambda eta: np.ones_like(np.asarray(eta, dtype=float))),
    "sqrt": Link("sqrt", np.sqrt, lambda eta: np.asarray(eta, dtype=float) ** 2, lambda eta: 2.0 * np.asarray(eta, dtype=float)),
}

#: Family name -> the links it accepts, the first being the default.
FAMILY_LINKS: dict[str, tuple[str, ...]] = {
    "binomial": ("logit", "probit", "cloglog"),
    "bernoulli": ("logit", "probit", "cloglog"),
    "poisson": ("log", "identity", "sqrt"),
    "negative_binomial": ("log",),
}


def _binom_logpdf(y: np.ndarray, mu: np.ndarray, n: np.ndarray, phi: float) -> np.ndarray:
    k = np.round(n * y)
    mu = np.clip(mu, _EPS, 1.0 - _EPS)
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1) + k * np.log(mu) + (n - k) * np.log1p(-mu)


def _binom_dev(y: np.ndarray, mu: np.ndarray, n: np.ndarray, phi: float) -> np.ndarray:
    mu = np.clip(mu, _EPS, 1.0 - _EPS)
    return 2.0 * n * (special.xlogy(y, y / mu) + special.xlogy(1.0 - y, (1.0 - y) / (1.0 - mu)))


def _pois_logpdf(y: np.ndarray, mu: np.ndarray, n: np.ndarray, phi: float) -> np.ndarray:
    return special.xlogy(y, mu) - mu - special.gammaln(y + 1)


def _pois_dev(y: np.ndarray, mu: np.ndarray, n: np.ndarray, phi: float) -> np.ndarray:
    return 2.0 * (special.xlogy(y, y / mu) - (y - mu))


def _nb_logpdf(y: np.ndarray, mu: np.ndarray, n: np.ndarray, phi: float) -> np.ndarray:
    return (
        special.gammaln(y + phi) - special.gammaln(phi) - special.gammaln(y + 1)
        + phi * np.log(phi / (phi + mu)) + special.xlogy(y, mu / (phi + mu))
    )


def _nb_dev(y: np.ndarray, mu: np.ndarray, n: np.ndarray, phi: float) -> np.ndarray:
    return 2.0 * (special.xlogy(y, y / mu) - (y + phi) * np.log((y + phi) / (mu + phi)))


@dataclass(frozen=True)
class GLMFamily:
    """A response family with its link.

    Attributes
    ----------
    name
        ``"binomial"``, ``"bernoulli"``, ``"poisson"`` or ``"negative_binomial"``.
    link
        The :class:`Link`.
    """

    name: str
    link: Link

    @property
    def is_binomial(self) -> bool:
        """Whether the response is a proportion of trials (binomial or Bernoulli)."""
        return self.name in ("binomial", "bernoulli")

    @property
    def has_dispersion(self) -> bool:
        """Whether the family has a dispersion parameter φ (the negative binomial)."""
        return self.name == "negative_binomial"

    def variance(self, mu: np.ndarray, phi: float = np.inf) -> np.ndarray:
        """The variance function V(μ) per unit of prior weight."""
        if self.is_binomial:
            return np.maximum(mu * (1.0 - mu), _EPS)
        if self.has_dispersion:
            return np.maximum(mu + mu * mu / phi, _EPS)
        return np.maximum(mu, _EPS)

    def logpdf(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray, phi: float = np.inf) -> np.ndarray:
        """Row-wise ``log p(y_i | μ_i)``: binomial counts ``round(n y)`` of ``n`` trials, or counts."""
        fn = _binom_logpdf if self.is_binomial else (_nb_logpdf if self.has_dispersion else _pois_logpdf)
        return fn(y, mu, weights, phi)

    def unit_deviance(self, y: np.ndarray, mu: np.ndarray, weights: np.ndarray, phi: float = np.inf) -> np.ndarray:
        """Row-wise deviance contributions, weighted (R's ``family$dev.resids``)."""
        fn = _binom_dev if self.is_binomial else (_nb_dev if self.has_dispersion else _pois_dev)
        return fn(y, mu, weights, phi)

    def working_weights(self, eta: np.ndarray, weights: np.ndarray, phi: float = np.inf) -> np.ndarray:
        """The Fisher (expected) weights ``w (dμ/dη)² / V(μ)`` that PIRLS and the Laplace determinant use."""
        mu = self.link.linkinv(eta)
        return weights * self.link.mu_eta(eta) ** 2 / self.variance(mu, phi)

    def lme4_name(self) -> str:
        """R's name of the family (``"binomial"`` for Bernoulli, ``"Negative Binomial"``)."""
        return {"bernoulli": "binomial", "negative_binomial": "Negative Binomial"}.get(self.name, self.name)


def get_family(family: str, link: str | None = None) -> GLMFamily:
    """The family named ``family`` with ``link`` (default: its canonical link).

    Raises
    ------
    BayesLMMError
        For an unknown family, or a link the family does not accept.
    """
    if not isinstance(family, str) or family.lower() not in FAMILY_LINKS:
        raise BayesLMMError(
            f"family must be one of {sorted(FAMILY_LINKS)}, got {family!r}. "
            "A Gaussian response is fitted with bayeslmm.lmer."
        )
    name = family.lower()
    links = FAMILY_LINKS[name]
    link = links[0] if link is None else link
    if link not in links:
        raise BayesLMMError(f"The {name} family accepts the links {list(links)}; got link={link!r}.")
    return GLMFamily(name, LINKS[link])


def array_family(fam: GLMFamily, weights: np.ndarray, phi: float = np.inf) -> Family:
    """The family as the array core consults it (:class:`bayeslmm.paramdraws.Family`).

    ``log_density(y, μ, ·)`` and ``draw(μ, ·, rng)`` use the training rows'
    trials ``weights`` when the row count matches, and one trial per row
    otherwise (a prediction for new rows is then the success probability; a
    drawn response is a proportion of one trial). The third argument, the
    residual sd of a Gaussian model, is ignored.
    """
    weights = np.asarray(weights, dtype=float)

    def trials(shape: tuple[int, ...]) -> np.ndarray:
        return weights if shape and shape[-1] == weights.shape[0] else np.ones(shape[-1] if shape else 1)

    def log_density(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> np.ndarray:
        return fam.logpdf(y, mu, trials(np.shape(mu)), phi)

    def draw(mu: np.ndarray, sigma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if fam.is_binomial:
            n = trials(np.shape(mu))
            return rng.binomial(n.astype(np.int64), np.clip(mu, 0.0, 1.0)) / n
        if fam.has_dispersion:
            return rng.poisson(rng.gamma(phi, mu / phi))
        return rng.poisson(mu).astype(float)

    return Family(fam.lme4_name(), fam.link.name, fam.link.linkinv, log_density, draw, statistic="z value")
