"""Stage 3: Design -> :class:`Priors`.

Defaults are scaled from the data in the manner of rstanarm and Bambi, so they
are weakly informative whatever the units (see ``docs/priors.md`` for the exact
rule). Users override any of them with ``priors={key: spec}``; the keys are
the names an lme4/Bambi user would write: ``"Days"``, ``"(Intercept)"``,
``"sigma"``, a grouping factor ``"Subject"`` (every sd of that factor), one sd
``"Days|Subject"``, or a correlation prior ``"cor|Subject"``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from collections.abc import Mapping

import numpy as np
import pandas as pd

from . import naming
from .design import Design
from .errors import PriorError

__all__ = ["Prior", "PriorEntry", "Priors", "make_priors"]

REAL_DISTS = frozenset({"Normal", "StudentT", "Cauchy", "Laplace", "Logistic", "Uniform", "Flat"})
POSITIVE_DISTS = frozenset(
    {"HalfNormal", "HalfCauchy", "HalfStudentT", "Exponential", "Gamma", "InverseGamma", "LogNormal", "Weibull", "HalfFlat"}
)
CORR_DISTS = frozenset({"LKJ"})


@dataclass(frozen=True)
class Prior:
    """A distribution spec: a PyMC distribution name and its parameters.

    Examples
    --------
    >>> Prior("Normal", mu=0, sigma=10)
    Normal(mu=0, sigma=10)
    >>> Prior("LKJ", eta=2)
    LKJ(eta=2)
    """

    dist: str
    params: tuple[tuple[str, float], ...]

    def __init__(self, dist: str, **params: float) -> None:
        object.__setattr__(self, "dist", dist)
        object.__setattr__(self, "params", tuple((k, params[k]) for k in params))

    @property
    def kwargs(self) -> dict[str, Any]:
        """Parameters as a dict."""
        return dict(self.params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params)
        return f"{self.dist}({args})"

    __str__ = __repr__

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, ``{"dist": ..., **params}``."""
        return {"dist": self.dist, **{k: _plain(v) for k, v in self.params}}

    @classmethod
    def from_spec(cls, spec: Any, key: str) -> Prior:
        """Build a Prior from a Prior, or a dict ``{"dist": "Normal", "mu": 0, ...}``."""
        if isinstance(spec, Prior):
            return spec
        if isinstance(spec, Mapping):
            spec = dict(spec)
            dist = spec.pop("dist", None)
            if not isinstance(dist, str):
                raise PriorError(
                    f"The prior for {key!r} needs a 'dist' entry naming a distribution, e.g. "
                    "{'dist': 'Normal', 'mu': 0, 'sigma': 10}."
                )
            for k, v in spec.items():
                if not isinstance(v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
                    raise PriorError(f"Parameter {k!r} of the prior for {key!r} must be a finite number, got {v!r}.")
            return cls(dist, **{k: float(v) for k, v in spec.items()})
        raise PriorError(
            f"The prior for {key!r} must be a bayeslmm.Prior or a dict like "
            f"{{'dist': 'Normal', 'mu': 0, 'sigma': 10}}, got {type(spec).__name__}."
        )


def _plain(v: Any) -> Any:
    return float(v) if isinstance(v, (np.floating, np.integer)) else v


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    return repr(v)


@dataclass(frozen=True)
class PriorEntry:
    """One row of the prior table.

    Attributes
    ----------
    cls
        ``"fixed"``, ``"sigma"``, ``"sd"`` or ``"cor"``.
    block
        Block label for ``sd``/``cor`` rows.
    term
        Fixed term or block term name.
    prior
        The distribution used.
    source
        ``"default"`` or ``"user"``.
    """

    cls: str
    block: str | None
    term: str | None
    prior: Prior
    source: str = "default"


@dataclass(frozen=True)
class Priors:
    """The priors used by a model, one entry per parameter."""

    entries: tuple[PriorEntry, ...]
    intercept_centered: bool

    def fixed(self, term: str) -> Prior:
        """Prior of fixed effect ``term``."""
        return self._find("fixed", None, term)

    def sigma(self) -> Prior:
        """Prior of the residual sd."""
        return self._find("sigma", None, None)

    def phi(self) -> Prior:
        """Prior of the negative binomial's dispersion φ (GLMMs)."""
        return self._find("phi", None, None)

    def sd(self, block: str, term: str) -> Prior:
        """Prior of the sd of ``term`` in block ``block``."""
        return self._find("sd", block, term)

    def cor(self, block: str) -> Prior:
        """LKJ prior of a block's correlations."""
        return self._find("cor", block, None)

    def _find(self, cls: str, block: str | None, term: str | None) -> Prior:
        for e in self.entries:
            if e.cls == cls and e.block == block and e.term == term:
                return e.prior
        raise KeyError((cls, block, term))

    def table(self) -> pd.DataFrame:
        """The priors as a brms ``prior_summary``-like table."""
        rows = []
        for e in self.entries:
            rows.append(
                {
                    "class": {"fixed": "b", "sigma": "sigma", "sd": "sd", "cor": "cor", "phi": "phi"}[e.cls],
                    "group": e.block or "",
                    "coef": e.term or "",
                    "prior": str(e.prior),
                    "source": e.source,
                }
            )
        return pd.DataFrame(rows)

    def __str__(self) -> str:
        note = (
            "\n(Intercept) prior is on the intercept at the means of the other predictors, as in brms/rstanarm."
            if self.intercept_centered
            else ""
        )
        return self.table().to_string(index=False) + note

    def _repr_html_(self) -> str:
        return self.table().to_html(index=False)

    def to_list(self) -> list[dict[str, Any]]:
        """Plain-data form for saving."""
        return [
            {"cls": e.cls, "block": e.block, "term": e.term, "prior": e.prior.to_dict(), "source": e.source}
            for e in self.entries
        ]

    @classmethod
    def from_list(cls, rows: list[dict[str, Any]], intercept_centered: bool) -> Priors:
        """Inverse of :meth:`to_list`."""
        entries = tuple(
            PriorEntry(r["cls"], r["block"], r["term"], Prior.from_spec(r["prior"], str(r["term"])), r["source"])
            for r in rows
        )
        return cls(entries, intercept_centered)


# ---------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------
def default_priors(design: Design) -> Priors:
    """Data-scaled default priors (documented in ``docs/priors.md``).

    * ``(Intercept)`` (at the means of the other predictors): Normal(mean(y), 2.5 sd(y)).
    * other fixed effects: Normal(0, 2.5 sd(y) / sd(x)); without an intercept
      the root mean square of y replaces sd(y), so level means are not pulled to 0.
    * sigma: HalfCauchy(sd(y)).
    * group-level sd of term z: HalfCauchy(sd(y) / sd(z)), or sd(y) for a constant column.
    * correlations: LKJ(eta=1), uniform over correlation matrices.
    """
    mom = design.moments  # from the rows, or from the sums of an out-of-core pass
    sy = mom.y_sd
    has_int = design.intercept_index is not None
    scale_y = sy if has_int else mom.y_rms
    entries: list[PriorEntry] = []
    for j, name in enumerate(design.fixed_names):
        if j == design.intercept_index:
            entries.append(PriorEntry("fixed", None, name, Prior("Normal", mu=mom.y_mean, sigma=2.5 * sy)))
        else:
            entries.append(
                PriorEntry("fixed", None, name, Prior("Normal", mu=0.0, sigma=2.5 * scale_y / float(mom.x_scale[j])))
            )
    entries.append(PriorEntry("sigma", None, None, Prior("HalfCauchy", beta=sy)))
    for kb, b in enumerate(design.blocks):
        for k, term in enumerate(b.terms):
            entries.append(PriorEntry("sd", b.label, term, Prior("HalfCauchy", beta=sy / float(mom.z_scale[kb][k]))))
        if b.q > 1:
            entries.append(PriorEntry("cor", b.label, None, Prior("LKJ", eta=1.0)))
    return Priors(tuple(entries), intercept_centered=has_int and len(design.fixed_names) > 1)


def _override_targets(design: Design, priors: Priors) -> dict[str, list[int]]:
    """Every key a user may write, mapped to the entries it sets."""
    targets: dict[str, list[int]] = {}
    for i, e in enumerate(priors.entries):
        keys: list[str] = []
        if e.cls == "fixed":
            keys = [e.term]
        elif e.cls == "sigma":
            keys = [naming.SIGMA_KEY]
        elif e.cls == "phi":
            keys = [naming.DISPERSION]
        elif e.cls == "sd":
            block = next(b for b in design.blocks if b.label == e.block)
            keys = [b_key for b_key in {block.factor, block.label}]
            keys.append(naming.sd_key(e.term, block.factor))
            if e.term == "(Intercept)":
                keys.append(naming.sd_key("1", block.factor))
        elif e.cls == "cor":
            block = next(b for b in design.blocks if b.label == e.block)
            keys = list({naming.cor_key(block.label), naming.cor_key(block.factor)})
        for k in keys:
            targets.setdefault(k, []).append(i)
    return targets


def make_priors(design: Design, overrides: Mapping[str, Any] | None = None, defaults: Priors | None = None) -> Priors:
    """Default priors with the user's overrides merged in.

    Parameters
    ----------
    design
        The model design.
    overrides
        ``{key: Prior or dict}``. Keys: a fixed term (``"Days"``), ``"sigma"``,
        a grouping factor or block label (``"Subject"``) for all its sds, one
        sd (``"Days|Subject"``, ``"1|Subject"``), or ``"cor|Subject"``.
    defaults
        The default priors to start from (a GLMM's link-scale defaults); None: :func:`default_priors`.

    Returns
    -------
    Priors

    Raises
    ------
    PriorError
        For an unknown key or a distribution that does not fit the parameter.
    """
    priors = default_priors(design) if defaults is None else defaults
    if not overrides:
        return priors
    if not isinstance(overrides, Mapping):
        raise PriorError(f"priors must be a dict from parameter name to prior, got {type(overrides).__name__}.")
    targets = _override_targets(design, priors)
    entries = list(priors.entries)
    for key, spec in overrides.items():
        if key not in targets:
            raise PriorError(f"Unknown prior key {key!r}. Valid keys: {sorted(targets)}.")
        prior = Prior.from_spec(spec, str(key))
        for i in targets[key]:
            _check_support(entries[i], prior, key)
            entries[i] = replace(entries[i], prior=prior, source="user")
    return Priors(tuple(entries), priors.intercept_centered)


def _check_support(entry: PriorEntry, prior: Prior, key: str) -> None:
    allowed = {"fixed": REAL_DISTS, "sigma": POSITIVE_DISTS, "sd": POSITIVE_DISTS, "cor": CORR_DISTS,
               "phi": POSITIVE_DISTS}[entry.cls]
    if prior.dist not in allowed:
        raise PriorError(
            f"The prior {prior} for {key!r} does not fit a {entry.cls} parameter; use one of {sorted(allowed)}."
        )
    check_prior_params(prior, key)


def check_prior_params(prior: Prior, key: str) -> None:
    """Raise :class:`PriorError` if ``prior`` has parameters its distribution does not take, or lacks required ones.

    PyMC silently ignores unknown keyword arguments such as ``sd=``, so they are checked here.
    """
    import inspect

    import pymc as pm

    if prior.dist in CORR_DISTS:
        takes, required = {"eta"}, set()
    else:
        params = inspect.signature(getattr(pm, prior.dist).dist).parameters.values()
        named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        takes = {p.name for p in named}
        required = {p.name for p in named if p.default is p.empty}
    unknown = sorted(set(prior.kwargs) - takes)
    missing = sorted(required - set(prior.kwargs))
    if unknown or missing:
        problem = f"unknown parameter(s) {unknown}" if unknown else f"no value for {missing}"
        raise PriorError(f"The prior {prior} for {key!r} has {problem}; {prior.dist} takes {sorted(takes)}.")
    positive = {"sigma", "tau", "lam", "nu", "b", "s", "eta", "scale", "beta"}
    if prior.dist != "Cauchy":  # Cauchy's alpha is its location
        positive.add("alpha")
    bad = sorted(k for k, v in prior.params if k in positive and not v > 0)
    if bad or (prior.dist == "Uniform" and not prior.kwargs.get("lower", 0.0) < prior.kwargs.get("upper", 1.0)):
        what = f"parameter(s) {bad} must be positive" if bad else "needs lower < upper"
        raise PriorError(f"The prior {prior} for {key!r} is not a valid {prior.dist}: {what}.")
    if prior.dist not in CORR_DISTS:
        try:
            getattr(pm, prior.dist).dist(**prior.kwargs)
        except Exception as exc:  # PyMC's own check of the parameterization (e.g. Gamma with no parameter)
            raise PriorError(f"The prior {prior} for {key!r} is not a valid {prior.dist}: {exc}") from None
