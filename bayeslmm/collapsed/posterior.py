"""The collapsed log posterior over PyMC's unconstrained coordinates, as a sampler target.

:class:`CollapsedPosterior` evaluates the log posterior and its gradient in
one numba call (:func:`bayeslmm.collapsed.likelihood.log_posterior`) and maps
draws back to the full model's named variables, so
:func:`bayeslmm.sampling.sample_target` can run NUTS on it without any
PyTensor graph.

The coordinates are PyMC's: the intercept at the predictor means and the
slopes as they are; ``log`` of σ and of every sd (the interval map for a
``Uniform`` prior); and, for a correlated block, its canonical partial
correlations z = tanh(x), whose LKJ prior :mod:`bayeslmm.collapsed.kernels`
gives: the same prior on the correlation matrix as PyMC's ``LKJCholeskyCov``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from collections.abc import Mapping

import numpy as np

from .. import naming
from ..design import Design
from ..model import model_coords
from ..parameterization import moment_estimates
from ..priors import Prior, Priors
from .densities import LOG, NONE, NORMAL, PriorSpec, prior_spec, spec_arrays
from .kernels import corr_chols, lkj_exponents
from .likelihood import log_posterior
from .structure import SufficientStats, sufficient_stats

__all__ = ["ThetaLayout", "FixedMap", "IntegratedFixed", "CollapsedPosterior", "start_names"]

#: Floor on starting sds, relative to the default prior scale sd(y)/sd(z).
_SD_FLOOR = 0.05


@dataclass(frozen=True)
class ThetaLayout:
    """Where each parameter sits in the unconstrained vector θ, and its prior, as arrays for the numba kernels.

    θ holds the p fixed parameters, σ's coordinate, then per block k its sds'
    coordinates (from ``blk_sd[k]``) and its partial correlations' atanh (from
    ``blk_cpc[k]``). ``codes``, ``transforms`` and ``prm`` encode every
    coordinate's prior (:func:`bayeslmm.collapsed.densities.spec_arrays`);
    ``lkj_b`` the LKJ exponent at each partial correlation; ``blk_side[k]`` is
    0 for the top-level factor and 1 for the nested one, ``blk_off[k]`` the
    block's offset in its factor's covariance, of size ``q_outer`` or ``q_inner``.
    """

    p: int
    codes: np.ndarray
    transforms: np.ndarray
    prm: np.ndarray
    blk_q: np.ndarray
    blk_side: np.ndarray
    blk_off: np.ndarray
    blk_sd: np.ndarray
    blk_cpc: np.ndarray
    lkj_b: np.ndarray
    q_outer: int
    q_inner: int

    @property
    def size(self) -> int:
        """Length of θ."""
        return int(self.codes.shape[0])


@dataclass(frozen=True)
class FixedMap:
    """β = T f, f the sampled fixed parameters: with ``centered``, the intercept at the predictor means ``xbar`` and the slopes."""

    centered: bool
    idx: int
    slope_index: np.ndarray
    xbar: np.ndarray

    @classmethod
    def from_design(cls, design: Design) -> FixedMap:
        """The map of a design: centered when it has an intercept and at least one other fixed effect."""
        p, idx = len(design.fixed_names), design.intercept_index
        centered = idx is not None and p > 1
        slopes = np.array([j for j in range(p) if j != idx] if centered else [], dtype=np.int64)
        return cls(centered, idx if idx is not None else 0, slopes, design.moments.x_mean[slopes] if centered else np.zeros(0))

    def matrix(self, p: int) -> np.ndarray:
        """T, ``(p, p)``."""
        if not self.centered:
            return np.eye(p)
        T = np.zeros((p, p))
        T[self.idx, 0] = 1.0
        for j, col in enumerate(self.slope_index):
            T[col, 1 + j] = 1.0
            T[self.idx, 1 + j] = -self.xbar[j]
        return T

    def beta(self, f: np.ndarray) -> np.ndarray:
        """lme4 β from f ``(..., p)``."""
        if not self.centered:
            return f
        beta = np.empty_like(f)
        beta[..., self.slope_index] = f[..., 1:]
        beta[..., self.idx] = f[..., 0] - f[..., 1:] @ self.xbar
        return beta


@dataclass(frozen=True)
class IntegratedFixed:
    """What :class:`bayeslmm.collapsed.beta_marginal.BetaMarginalPosterior` needs: the layout, β = T f, the data and f's Normal priors."""

    layout: ThetaLayout
    fixed: FixedMap
    stats: SufficientStats
    prior_mean: np.ndarray
    prior_sd: np.ndarray


def start_names(design: Design) -> list[str]:
    """The variable names :meth:`CollapsedPosterior.start` reads from its ``initvals``."""
    names = [naming.FIXED, naming.SIGMA]
    for b in design.blocks:
        names += [naming.sd(b.label), naming.chol(b.label)] if b.q > 1 else [naming.sd(b.label)]
    return names


def _partial_correlations(C: np.ndarray) -> np.ndarray:
    """Inverse of :func:`bayeslmm.collapsed.kernels.corr_chol` for one factor."""
    z = []
    for i in range(1, C.shape[0]):
        rem = 1.0
        for j in range(i):
            z.append(C[i, j] / math.sqrt(max(rem, 1e-300)))
            rem -= C[i, j] ** 2
    return np.array(z)


class CollapsedPosterior:
    """The collapsed model's log posterior over the unconstrained vector θ (:class:`ThetaLayout`).

    A sampler target (:class:`bayeslmm.sampling.DensityTarget`). Use :meth:`build`.
    """

    def __init__(self, design: Design, stats: SufficientStats, specs: list[PriorSpec], lkj_eta: list[float]) -> None:
        self.design = design
        self.stats = stats
        blocks = design.blocks
        p = len(design.fixed_names)
        self.fixed = FixedMap.from_design(design)
        self.p = p
        blk_side = np.zeros(len(blocks), dtype=np.int64)
        blk_off = np.zeros(len(blocks), dtype=np.int64)
        for side, keys in ((0, stats.structure.outer), (1, stats.structure.inner)):
            off = 0
            for k in keys:
                blk_side[k], blk_off[k] = side, off
                off += blocks[k].q
        blk_q = np.array([b.q for b in blocks], dtype=np.int64)
        sizes = blk_q + blk_q * (blk_q - 1) // 2
        blk_sd = (p + 1 + np.concatenate([[0], np.cumsum(sizes)[:-1]])).astype(np.int64)
        blk_cpc = blk_sd + blk_q
        self.size = int(p + 1 + sizes.sum())
        self.specs: list[PriorSpec] = [prior_spec(Prior("Flat"))] * self.size
        self.specs[: p + 1] = specs[: p + 1]
        sd_specs = iter(specs[p + 1 :])
        lkj_b = np.zeros(self.size)
        for k, b in enumerate(blocks):
            for t in range(b.q):
                self.specs[blk_sd[k] + t] = next(sd_specs)
            lkj_b[blk_cpc[k] : blk_cpc[k] + b.q * (b.q - 1) // 2] = lkj_exponents(b.q, lkj_eta[k])
        self.layout = ThetaLayout(
            p, *spec_arrays(self.specs), blk_q, blk_side, blk_off, blk_sd, blk_cpc, lkj_b,
            int(sum(blocks[k].q for k in stats.structure.outer)), int(sum(blocks[k].q for k in stats.structure.inner)),
        )
        lay, fx, st = self.layout, self.fixed, stats
        self._args = (
            p, fx.centered, fx.idx, fx.slope_index, fx.xbar, lay.codes, lay.transforms, lay.prm, lay.blk_q, lay.blk_side,
            lay.blk_off, lay.blk_sd, lay.blk_cpc, lay.lkj_b, lay.q_outer, lay.q_inner,
            st.beta0, st.oo, st.oX, st.oe, st.ii, st.io, st.iX, st.ie, st.structure.width, st.ee, st.Xe, st.XX, float(st.n),
        )
        self.coords = model_coords(design, observations=False)
        self.dims: dict[str, tuple[str, ...]] = {
            naming.INTERCEPT_CENTERED: (),
            naming.SLOPES: (naming.SLOPE_DIM,),
            naming.FIXED: (naming.FIXED_DIM,),
            naming.SIGMA: (),
        }
        for b in blocks:
            self.dims[naming.sd(b.label)] = (naming.term_dim(b.label),)
            self.dims[naming.cor(b.label)] = (naming.term_dim(b.label), naming.term_dim2(b.label))

    @classmethod
    def build(cls, design: Design, priors: Priors) -> CollapsedPosterior | None:
        """The posterior of a collapsible design, or None if some prior has no spec in :mod:`bayeslmm.collapsed.densities`."""
        names = list(design.fixed_names)
        idx = design.intercept_index
        order = [idx] + [j for j in range(len(names)) if j != idx] if idx is not None and len(names) > 1 else list(range(len(names)))
        chosen = [priors.fixed(names[j]) for j in order] + [priors.sigma()]
        chosen += [priors.sd(b.label, t) for b in design.blocks for t in b.terms]
        specs = [prior_spec(pr) for pr in chosen]
        if any(s is None for s in specs):
            return None
        eta = [float(priors.cor(b.label).kwargs.get("eta", 1.0)) if b.q > 1 else 1.0 for b in design.blocks]
        return cls(design, sufficient_stats(design), specs, eta)  # type: ignore[arg-type]

    def logp_dlogp(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior density (up to a constant) and its gradient at one unconstrained point."""
        return log_posterior(theta, *self._args)

    def integrated_fixed(self) -> IntegratedFixed | None:
        """The inputs of the fixed-effects-integrated posterior, or None unless one factor and Normal priors on every fixed parameter."""
        p = self.p
        if p == 0 or self.stats.structure.inner:
            return None
        if not all(spec.code == NORMAL and spec.transform == NONE for spec in self.specs[:p]):
            return None
        mean = np.array([spec.params[0] for spec in self.specs[:p]])
        sd = np.array([spec.params[1] for spec in self.specs[:p]])
        return IntegratedFixed(self.layout, self.fixed, self.stats, mean, sd)

    def _values(self, theta: np.ndarray, start: int, count: int) -> np.ndarray:
        return np.column_stack([self.specs[start + i].backward_array(theta[:, start + i]) for i in range(count)]) if count else theta[:, :0]

    def named_draws(self, theta: np.ndarray, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        """The full model's named variables from unconstrained draws ``(S, size)`` (``rng`` is not used)."""
        lay = self.layout
        fixed_values = self._values(theta, 0, self.p)
        out: dict[str, np.ndarray] = {}
        if self.fixed.centered:
            out[naming.INTERCEPT_CENTERED] = fixed_values[:, 0]
            out[naming.SLOPES] = fixed_values[:, 1:]
        if self.p:
            out[naming.FIXED] = self.fixed.beta(fixed_values)
        out[naming.SIGMA] = self._values(theta, self.p, 1)[:, 0]
        for k, b in enumerate(self.design.blocks):
            out[naming.sd(b.label)] = self._values(theta, int(lay.blk_sd[k]), b.q)
            if b.q > 1:
                cpc = theta[:, lay.blk_cpc[k] : lay.blk_cpc[k] + b.q * (b.q - 1) // 2]
                C = corr_chols(np.tanh(cpc), b.q)
                out[naming.cor(b.label)] = C @ np.swapaxes(C, -1, -2)
        return out

    def start(self, initvals: Mapping[str, Any] | None = None) -> np.ndarray:
        """A starting point from ``initvals`` (named as in the PyTensor collapsed model) or the moment estimates."""
        design, init, lay, fx = self.design, dict(initvals or {}), self.layout, self.fixed
        mom = moment_estimates(design)
        sy = design.moments.y_sd
        beta = mom.beta
        if naming.FIXED in init:
            beta = np.asarray(init[naming.FIXED], dtype=float)
        elif naming.INTERCEPT_CENTERED in init and naming.SLOPES in init:
            beta = fx.beta(np.concatenate([[float(init[naming.INTERCEPT_CENTERED])], np.asarray(init[naming.SLOPES], dtype=float)]))
        values = np.concatenate([[beta[fx.idx] + beta[fx.slope_index] @ fx.xbar], beta[fx.slope_index]]) if fx.centered else beta
        wanted = list(values) + [float(init.get(naming.SIGMA, max(mom.sigma, _SD_FLOOR * sy)))]
        theta = np.zeros(self.size)
        for k, b in enumerate(design.blocks):
            sd = np.maximum(mom.block_sd[k], _SD_FLOOR * sy / design.moments.z_scale[k])
            z = np.zeros(b.q * (b.q - 1) // 2)
            if naming.chol(b.label) in init:
                L = np.zeros((b.q, b.q))
                L[np.tril_indices(b.q)] = np.asarray(init[naming.chol(b.label)], dtype=float)
                sd = np.sqrt(np.sum(L**2, axis=1))
                z = _partial_correlations(L / sd[:, None])
            elif naming.sd(b.label) in init:
                sd = np.atleast_1d(np.asarray(init[naming.sd(b.label)], dtype=float))
            for t in range(b.q):
                theta[lay.blk_sd[k] + t] = self._coordinate(int(lay.blk_sd[k]) + t, float(sd[t]))
            theta[lay.blk_cpc[k] : lay.blk_cpc[k] + len(z)] = np.arctanh(np.clip(z, -0.95, 0.95))
        for i, v in enumerate(wanted):
            theta[i] = self._coordinate(i, float(v))
        return theta

    def _coordinate(self, position: int, value: float) -> float:
        """Unconstrained coordinate of a starting value, moved inside the support if needed."""
        spec = self.specs[position]
        if not spec.contains(value):
            value = 1e-8 if spec.transform == LOG else 0.5 * (spec.lower + spec.upper)
        return spec.forward(value)
