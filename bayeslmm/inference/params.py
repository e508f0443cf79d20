"""The sd/correlation parameterisation of the variance components, as lme4 names it.

lme4 stores the variance components as θ: per block, the lower triangle of
the relative covariance factor T (column by column), with Cov(b) = σ²TT'.
Its profiles, bootstrap statistics and ``confint()`` use instead the standard
deviations and correlations of each block in the same lower-triangle order
(an sd on each diagonal position, a correlation off it), then σ -- lme4's
``Cv_to_Sv`` and ``Sv_to_Cv``. The rows are named as
``confint(fm, oldNames = FALSE)`` names them: ``sd_(Intercept)|Subject``,
``cor_Days.(Intercept)|Subject``, ``sigma``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..design import Design

__all__ = ["VarLayout", "tril_positions"]

SIGMA_NAME = "sigma"


def tril_positions(q: int) -> list[tuple[int, int]]:
    """(row, column) of a q×q lower triangle, column by column (lme4's θ order)."""
    return [(i, j) for j in range(q) for i in range(j, q)]


def _safe_chol(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a positive semi-definite matrix (zero columns where it is singular)."""
    q = cov.shape[0]
    L = np.zeros_like(cov)
    for j in range(q):
        d = cov[j, j] - L[j, :j] @ L[j, :j]
        if d <= 1e-14 * max(1.0, abs(cov[j, j])):
            continue
        L[j, j] = np.sqrt(d)
        for i in range(j + 1, q):
            L[i, j] = (cov[i, j] - L[i, :j] @ L[j, :j]) / L[j, j]
    return L


@dataclass(frozen=True)
class VarLayout:
    """Where each variance parameter sits, for the blocks of one design.

    Attributes
    ----------
    qs
        Terms per block, in design order.
    names
        lme4's names of the sd/correlation parameters and ``sigma`` (``oldNames = FALSE``).
    is_cor
        Whether each sd/correlation parameter (σ excluded) is a correlation.
    varcorr_rows
        For each name, its ``as.data.frame(VarCorr(fm))`` row: (grp, var1, var2), var2 ``None`` for an sd.
    """

    qs: tuple[int, ...]
    names: tuple[str, ...]
    is_cor: tuple[bool, ...]
    varcorr_rows: tuple[tuple[str, str | None, str | None], ...] = ()

    @classmethod
    def from_design(cls, design: Design) -> VarLayout:
        """The layout of a design's blocks."""
        names: list[str] = []
        is_cor: list[bool] = []
        rows: list[tuple[str, str | None, str | None]] = []
        for b in design.blocks:
            for i, j in tril_positions(b.q):
                if i == j:
                    names.append(f"sd_{b.terms[i]}|{b.factor}")
                    rows.append((b.label, b.terms[i], None))
                else:
                    names.append(f"cor_{b.terms[i]}.{b.terms[j]}|{b.factor}")
                    rows.append((b.label, b.terms[j], b.terms[i]))
                is_cor.append(i != j)
        names.append(SIGMA_NAME)
        rows.append(("Residual", None, None))
        return cls(tuple(b.q for b in design.blocks), tuple(names), tuple(is_cor), tuple(rows))

    @property
    def n_theta(self) -> int:
        """Number of θ elements (= sd/correlation parameters)."""
        return len(self.is_cor)

    @property
    def n_var(self) -> int:
        """Number of variance parameters: the sds and correlations, and σ."""
        return self.n_theta + 1

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of (sds and correlations, σ): [0, ∞) and [-1, 1]."""
        cor = np.array(self.is_cor + (False,))
        return np.where(cor, -1.0, 0.0), np.where(cor, 1.0, np.inf)

    def to_sdcor(self, theta: np.ndarray, sigma: float) -> np.ndarray:
        """lme4's ``Cv_to_Sv(theta, s = sigma)``: sds, correlations and σ.

        A correlation with a term whose sd is exactly 0 is NaN, as ``cov2cor`` gives it.
        """
        out = np.empty(self.n_var)
        pos = 0
        for q in self.qs:
            m = q * (q + 1) // 2
            T = np.zeros((q, q))
            for k, (i, j) in enumerate(tril_positions(q)):
                T[i, j] = theta[pos + k]
            cov = sigma**2 * (T @ T.T)
            sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
            for k, (i, j) in enumerate(tril_positions(q)):
                if i == j:
                    out[pos + k] = sd[i]
                else:
                    denom = sd[i] * sd[j]
                    out[pos + k] = cov[i, j] / denom if denom > 0 else np.nan
            pos += m
        out[-1] = sigma
        return out

    def to_theta(self, sdcor: np.ndarray) -> np.ndarray:
        """lme4's ``Sv_to_Cv(sdcor, s = sigma)``: θ from sds, correlations and σ (last)."""
        sigma = float(sdcor[-1])
        theta = np.empty(self.n_theta)
        pos = 0
        for q in self.qs:
            pairs = tril_positions(q)
            if q == 1:
                theta[pos] = sdcor[pos] / sigma
                pos += 1
                continue
            cov = np.eye(q)
            sd = np.ones(q)
            for k, (i, j) in enumerate(pairs):
                if i == j:
                    sd[i] = sdcor[pos + k]
                else:
                    cov[i, j] = cov[j, i] = sdcor[pos + k]
            cov = cov * np.outer(sd, sd) / sigma**2
            L = _safe_chol(cov)
            for k, (i, j) in enumerate(pairs):
                theta[pos + k] = L[i, j]
            pos += len(pairs)
        return theta
