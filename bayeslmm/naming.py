"""The one place where PyMC variable and dimension names are made.

Every other module asks this module for a name; none builds a name by string
formatting or recovers meaning by splitting one. Block labels (``"Subject"``,
``"Subject.1"``, ``"cask:batch"``) come from :class:`bayeslmm.design.BlockDesign`.
"""

from __future__ import annotations

# Fixed effects ----------------------------------------------------------------
FIXED = "beta"
"""Fixed-effect coefficients in lme4's parameterisation (dim :data:`FIXED_DIM`)."""
FIXED_DIM = "fixed"
INTERCEPT_CENTERED = "Intercept_centered"
"""The intercept at the means of the other predictors (what its prior is placed on)."""
SLOPES = "beta_slopes"
"""Non-intercept coefficients, sampled directly (dim :data:`SLOPE_DIM`)."""
SLOPE_DIM = "slope"

# Residual -------------------------------------------------------------------------
SIGMA = "sigma"
DISPERSION = "phi"
"""The negative binomial's dispersion φ (Var = μ + μ²/φ); also its prior key."""
OBS_DIM = "obs"
LIKELIHOOD = "y"
MARGINAL_LIKELIHOOD = "y_marginal"
"""Potential holding the collapsed (group effects integrated out) log-likelihood."""
UNCONSTRAINED = "theta_unconstrained"
"""The collapsed sampler's unconstrained parameter vector (internal; replaced by named variables after sampling)."""


# Random-effect blocks --------------------------------------------------------------
def sd(block: str) -> str:
    """Standard deviations of a block's terms (dim :func:`term_dim`)."""
    return f"sd_{block}"


def cor(block: str) -> str:
    """Correlation matrix of a correlated block (dims :func:`term_dim`, :func:`term_dim2`)."""
    return f"cor_{block}"


def chol(block: str) -> str:
    """Cholesky factor of a correlated block's covariance."""
    return f"chol_{block}"


def offset(block: str) -> str:
    """Standard-normal offsets of the non-centered parameterisation."""
    return f"z_{block}"


def ranef(block: str) -> str:
    """Group effects of a block (dims :func:`level_dim`, :func:`term_dim`)."""
    return f"r_{block}"


def level_dim(block: str) -> str:
    """Dimension of a block's factor levels."""
    return f"{block}__level"


def term_dim(block: str) -> str:
    """Dimension of a block's terms."""
    return f"{block}__term"


def term_dim2(block: str) -> str:
    """Second term dimension, for correlation matrices."""
    return f"{block}__term_"


def term_pair_dim(block: str) -> str:
    """Dimension of a block's off-diagonal correlation pairs (used by trace/rank plots)."""
    return f"{block}__term_pair"


# Keys users write in ``priors={...}`` ---------------------------------------------
SIGMA_KEY = "sigma"


def sd_key(term: str, factor: str) -> str:
    """Prior key for one group-level sd, Bambi-style: ``"Days|Subject"``."""
    return f"{term}|{factor}"


def cor_key(block: str) -> str:
    """Prior key for a block's LKJ correlation prior: ``"cor|Subject"``."""
    return f"cor|{block}"
