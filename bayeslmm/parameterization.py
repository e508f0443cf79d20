"""Stage 4a: the choice of parameterization, from cheap moment estimates of the variance components.

:func:`plan_parameterization` decides, per block, between the collapsed model
(:mod:`bayeslmm.collapsed`) and the full model's centered or non-centered form
(:mod:`bayeslmm.model`); :func:`moment_estimates` also gives the collapsed
sampler its default starting values.

No optimisation and no REML: σ² comes from the residual of a joint
no-pooling fit (least squares on X and every block's group-wise columns, by
a few backfitting sweeps), and each block's variances from the spread of its
own no-pooling group estimates minus their sampling variance (the ANOVA
method of moments). That is enough to tell how informative the data of one
group are about its effects:

    κ_block = min over terms t of  median over groups g of  τ̂_t² (Z_g'Z_g)_tt / σ̂²,

the ratio of the prior variance of a group effect to its variance given that
group's data alone (n_g τ̂²/σ̂² for an intercept). With κ ≥ 1 the data dominate
and the centered parameterisation samples well; with κ < 1 the prior dominates
and the non-centered one avoids the funnel (Betancourt & Girolami 2015;
Papaspiliopoulos, Roberts & Sköld 2007).

But τ is uncertain, the more so the fewer levels a factor has, and the
posterior reaches down to τ values at which the centered form meets its
funnel. So the choice uses κ at the lower 99% confidence limit of τ̂²
(the chi-square limit of a variance estimated from J levels):

    κ_low = κ · (J − 1) / χ²₀.₉₉(J − 1),

centered when κ_low ≥ 1. With J = 5 or 6 levels that asks for κ ≳ 3, with
J = 18 (sleepstudy) κ ≳ 2; ``docs/collapsed.md`` gives the evidence for the rule.

A design with crossed factors cannot be collapsed as a whole, but the effects
of its largest factor can be integrated out given the others
(:mod:`bayeslmm.crossed`): that block is then ``"collapsed"`` and the rest
centered or non-centered by the rule above (:func:`fully_collapsed` and
:func:`partly_collapsed` tell the two kinds of plan apart).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Mapping

import numpy as np
from scipy.stats import chi2

from .collapsed.structure import MAX_Q, can_collapse
from .crossed.structure import crossed_structure
from .design import BlockDesign, Design
from .errors import BayesLMMError
from .groupwise import group_least_squares, group_products

__all__ = [
    "Moments", "moment_estimates", "choose_parameterization", "plan_parameterization", "CENTERED_THRESHOLD", "COLLAPSED",
    "fully_collapsed", "partly_collapsed", "full_model_parameterization",
]

#: κ_low at or above which a block is sampled centered.
CENTERED_THRESHOLD = 1.0
#: Confidence level of the lower limit of τ̂² at which κ_low is taken.
KAPPA_CONFIDENCE = 0.99
#: The plan value of a block whose group effects are integrated out.
COLLAPSED = "collapsed"
_SWEEPS = 8
_RIDGE = 1e-8


@dataclass(frozen=True)
class Moments:
    """Moment estimates of one design.

    Attributes
    ----------
    beta
        Fixed effects of the joint no-pooling fit.
    sigma
        Residual sd.
    block_sd
        Per block, the sds of its terms (0 where the moment estimate is negative).
    kappa
        Per block label, the informativeness κ defined in the module docstring.
    kappa_low
        Per block label, κ at the lower 99% confidence limit of τ̂² (module docstring).
    """

    beta: np.ndarray
    sigma: float
    block_sd: tuple[np.ndarray, ...]
    kappa: dict[str, float]
    kappa_low: dict[str, float]


def _group_fit(b: BlockDesign, gram: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Per-level least squares of r on the block's columns, (levels, q); lightly ridged."""
    return group_least_squares(b.group_idx, b.n_levels, b.Z, r, gram=gram, ridge=_RIDGE)[0]


def _fitted(b: BlockDesign, effects: np.ndarray) -> np.ndarray:
    return np.einsum("nq,nq->n", b.Z, effects[b.group_idx])


def moment_estimates(design: Design) -> Moments:
    """Moment estimates of β, σ and every block's sds, and each block's κ (see the module docstring)."""
    X, y = design.X, design.y
    grams = [group_products(b.group_idx, b.n_levels, b.Z) for b in design.blocks]
    effects = [np.zeros((b.n_levels, b.q)) for b in design.blocks]
    beta = np.linalg.lstsq(X, y, rcond=None)[0] if X.shape[1] else np.zeros(0)
    fits = [np.zeros_like(y) for _ in design.blocks]
    for _ in range(_SWEEPS):
        for k, b in enumerate(design.blocks):
            partial = y - X @ beta - sum(f for j, f in enumerate(fits) if j != k)
            effects[k] = _group_fit(b, grams[k], partial)
            fits[k] = _fitted(b, effects[k])
        if X.shape[1]:
            beta = np.linalg.lstsq(X, y - sum(fits), rcond=None)[0]
    resid = y - X @ beta - sum(fits)
    used = X.shape[1] + sum(b.n_levels * b.q for b in design.blocks)
    sigma2 = float(resid @ resid) / max(design.nobs - used, 1)
    if not sigma2 > 0:
        sigma2 = 1e-12 * float(np.var(y)) + 1e-300
    e = y - X @ (np.linalg.lstsq(X, y, rcond=None)[0] if X.shape[1] else np.zeros(0))
    sds, kappa, kappa_low = [], {}, {}
    for b, gram in zip(design.blocks, grams):
        own = _group_fit(b, gram, e)
        full = np.linalg.matrix_rank(gram) == b.q
        if full.sum() < 2:
            sds.append(np.zeros(b.q))
            kappa[b.label] = kappa_low[b.label] = 0.0
            continue
        inv_diag = np.diagonal(np.linalg.inv(gram[full]), axis1=1, axis2=2)
        tau2 = np.maximum(np.var(own[full], axis=0, ddof=1) - sigma2 * inv_diag.mean(axis=0), 0.0)
        info = tau2[None, :] * np.diagonal(gram[full], axis1=1, axis2=2) / sigma2
        sds.append(np.sqrt(tau2))
        kappa[b.label] = float(np.median(info, axis=0).min())
        dof = int(full.sum()) - 1
        kappa_low[b.label] = kappa[b.label] * dof / float(chi2.ppf(KAPPA_CONFIDENCE, dof))
    return Moments(beta=beta, sigma=float(np.sqrt(sigma2)), block_sd=tuple(sds), kappa=kappa, kappa_low=kappa_low)


def choose_parameterization(design: Design, moments: Moments | None = None) -> dict[str, str]:
    """``{block label: "centered" | "noncentered"}`` for the full model, from each block's κ_low (module docstring)."""
    moments = moments or moment_estimates(design)
    return {b.label: "centered" if moments.kappa_low[b.label] >= CENTERED_THRESHOLD else "noncentered" for b in design.blocks}


def plan_parameterization(
    design: Design, collapse: bool | None = None, requested: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Per block label: ``"collapsed"``, ``"centered"`` or ``"noncentered"``.

    Every block is ``"collapsed"`` when the design collapses as a whole
    (:mod:`bayeslmm.collapsed`). With crossed factors and ``collapse=True``,
    the block of the largest factor is ``"collapsed"`` and the others get the
    automatic choice, when :func:`bayeslmm.crossed.crossed_structure` allows it
    (:mod:`bayeslmm.crossed`). By default (``collapse=None``) crossed designs get
    the full model: on InstEval-shaped data the crossed posterior still diverges
    more often than the full model (``docs/crossed.md``), so it is asked for, not assumed.

    Parameters
    ----------
    design
        The design.
    collapse
        True: integrate the group effects out, all of them or, for crossed
        factors, the largest factor's (an error if the design allows neither);
        False: the full model; None: collapse when the design collapses as a
        whole and no ``requested`` parameterization asks for the full model.
    requested
        ``{block label: "centered" | "noncentered"}`` for the full model;
        other blocks get the automatic choice of
        :func:`choose_parameterization`.

    Raises
    ------
    BayesLMMError
        For an unknown label or value, ``collapse=True`` with a design that
        cannot be collapsed, or ``collapse=True`` with a ``requested`` parameterization.
    """
    labels = [b.label for b in design.blocks]
    requested = dict(requested or {})
    for key, value in requested.items():
        if key not in labels or value not in ("centered", "noncentered"):
            raise BayesLMMError(
                f"parameterization must map block labels {sorted(labels)} to 'centered' or 'noncentered'; "
                f"got {key!r}: {value!r}."
            )
    if collapse not in (None, True, False):
        raise BayesLMMError(f"collapse must be True, False or None (automatic), got {collapse!r}.")
    possible = can_collapse(design)
    crossed = crossed_structure(design) if collapse is True and not possible else None
    if collapse is True and not possible and crossed is None:
        raise BayesLMMError(
            f"The group effects of {design.parsed.text!r} cannot be integrated out: that needs one grouping factor, "
            f"or two nested ones, with at most {MAX_Q} terms each, or crossed factors with one scalar term each "
            "whose largest factor has one term. Use collapse=None or False for the full model."
        )
    if collapse is True and requested:
        raise BayesLMMError("parameterization= applies to the full model; drop it or pass collapse=False.")
    if (collapse is True and possible) or (collapse is None and possible and not requested):
        return {label: COLLAPSED for label in labels}
    if crossed is not None:
        auto = choose_parameterization(design)
        return {label: COLLAPSED if k == crossed.integrated else auto[label] for k, label in enumerate(labels)}
    if design.summary is not None:
        raise BayesLMMError(
            f"The full model of {design.parsed.text!r} needs the data rows, which an out-of-core fit "
            f"({design.summary.source}) does not load; drop collapse=False and parameterization= to fit the collapsed model."
        )
    return {**choose_parameterization(design), **requested}


def fully_collapsed(parameterization: Mapping[str, str]) -> bool:
    """Whether a plan integrates every block out (the collapsed model of :mod:`bayeslmm.collapsed`)."""
    return bool(parameterization) and all(v == COLLAPSED for v in parameterization.values())


def partly_collapsed(parameterization: Mapping[str, str]) -> bool:
    """Whether a plan integrates some blocks out and samples others (the crossed posterior of :mod:`bayeslmm.crossed`)."""
    values = set(parameterization.values())
    return COLLAPSED in values and len(values) > 1


def full_model_parameterization(design: Design, parameterization: Mapping[str, str]) -> dict[str, str]:
    """The plan with every ``"collapsed"`` block given the automatic centered/non-centered choice: the full model's version of it."""
    if not any(v == COLLAPSED for v in parameterization.values()):
        return dict(parameterization)
    auto = choose_parameterization(design)
    return {label: auto[label] if v == COLLAPSED else v for label, v in parameterization.items()}
