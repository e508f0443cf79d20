"""The crossed posterior as a sampler target, and the route from design to posterior ``DataTree``.

:class:`CrossedPosterior` evaluates :func:`bayeslmm.crossed.kernel.log_posterior`
over PyMC's unconstrained coordinates (the intercept at the predictor means and
the slopes, σ's and every sd's coordinate under its prior's transform, then the
sampled blocks' effects, centered or non-centered) and maps draws back to the
full model's named variables, drawing the integrated block's effects exactly.
:func:`sample_crossed_model` runs it through :func:`bayeslmm.sampling.sample_target`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import xarray as xr

from .. import naming
from ..collapsed.densities import LOG, PriorSpec, prior_spec, spec_arrays
from ..collapsed.posterior import FixedMap
from ..design import BlockDesign, Design
from ..inits import reml_initvals
from ..model import model_coords
from ..parameterization import moment_estimates
from ..priors import Priors
from ..reml import REMLResult
from ..sampling import DENSE_MASS_MAX_DIM, SamplerSettings, sample_target
from .kernel import integrated_draws, log_posterior
from .structure import CrossedStructure, crossed_structure

__all__ = ["CrossedStats", "crossed_stats", "CrossedPosterior", "sample_crossed_model"]

#: The name of an intercept term.
INTERCEPT_TERM = "(Intercept)"
#: Floor on starting sds, relative to the default prior scale sd(y)/sd(z).
_SD_FLOOR = 0.05
#: Draws per call of the compiled exact-draw pass (bounds its memory to one residual vector per call).
_DRAW_CHUNK = 256


@dataclass(frozen=True)
class CrossedStats:
    """The cross-products the crossed posterior reads, computed once from the rows.

    With M = [X, Z_1, ..., Z_K] (the fixed-effect columns and the sampled
    blocks' term columns, one column per level), z_a the integrated block's
    term column and e = y − Xβ₀ (β₀ the least-squares fit):

    Attributes
    ----------
    n
        Number of rows.
    beta0
        β₀.
    ee
        e'e.
    Me
        M'e.
    MM
        M'M in CSR form, ``(indptr, indices, data)``.
    Ae
        Z_a'e, per level of the integrated block.
    AM
        Z_a'M in CSR form.
    H
        Per level of the integrated block, Σ z_a².
    counts
        Per level of the integrated block, its number of rows.
    """

    n: int
    beta0: np.ndarray
    ee: float
    Me: np.ndarray
    MM: tuple[np.ndarray, np.ndarray, np.ndarray]
    Ae: np.ndarray
    AM: tuple[np.ndarray, np.ndarray, np.ndarray]
    H: np.ndarray
    counts: np.ndarray


def _csr(A: sp.spmatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    A = sp.csr_matrix(A)
    A.sum_duplicates()
    A.sort_indices()
    return A.indptr.astype(np.int64), A.indices.astype(np.int64), A.data.astype(float)


def _term_columns(block: BlockDesign) -> sp.csr_matrix:
    """The block's one term as a sparse (n, levels) matrix: z_i at column g_i."""
    n = block.group_idx.shape[0]
    return sp.csr_matrix((np.asarray(block.Z[:, 0], dtype=float), (np.arange(n), block.group_idx)), shape=(n, block.n_levels))


def crossed_stats(design: Design, structure: CrossedStructure) -> CrossedStats:
    """Compute :class:`CrossedStats` in one pass of sparse products over the rows."""
    X = np.asarray(design.X, dtype=float)
    y = np.asarray(design.y, dtype=float)
    beta0 = np.linalg.lstsq(X, y, rcond=None)[0] if X.shape[1] else np.zeros(0)
    e = y - X @ beta0
    M = sp.hstack([sp.csr_matrix(X)] + [_term_columns(design.blocks[k]) for k in structure.sampled], format="csr")
    a = design.blocks[structure.integrated]
    Za = _term_columns(a)
    z = np.asarray(a.Z[:, 0], dtype=float)
    return CrossedStats(
        n=design.nobs, beta0=beta0, ee=float(e @ e), Me=np.asarray(M.T @ e, dtype=float), MM=_csr(M.T @ M),
        Ae=np.asarray(Za.T @ e, dtype=float), AM=_csr(Za.T @ M),
        H=np.bincount(a.group_idx, weights=z * z, minlength=a.n_levels),
        counts=np.bincount(a.group_idx, minlength=a.n_levels).astype(float),
    )


def _hierarchy(design: Design, structure: CrossedStructure, noncentered: np.ndarray, has_intercept: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per sampled block, the parent it is hierarchically centered on, and each effect's parent level (flat over the blocks).

    Only centered intercept blocks take part. A block's parent is the centered
    intercept block with the most levels, fewer than its own, in which its
    factor is nested (every level inside one parent level, judged from the
    data); failing that the intercept (-1) if the model has one; else none (-2).
    """
    blocks = design.blocks
    sampled = structure.sampled
    eligible = [not noncentered[j] and blocks[k].terms[0] == INTERCEPT_TERM for j, k in enumerate(sampled)]
    parent = np.full(len(sampled), -2, dtype=np.int64)
    plevel = np.full(sum(blocks[k].n_levels for k in sampled), -1, dtype=np.int64)
    at = 0
    for j, k in enumerate(sampled):
        b = blocks[k]
        if eligible[j]:
            candidates = sorted((blocks[kk].n_levels, jj) for jj, kk in enumerate(sampled)
                                if eligible[jj] and blocks[kk].n_levels < b.n_levels)
            for _, jj in reversed(candidates):
                up = np.full(b.n_levels, -1, dtype=np.int64)
                up[b.group_idx] = blocks[sampled[jj]].group_idx
                if np.array_equal(up[b.group_idx], blocks[sampled[jj]].group_idx) and up.min() >= 0:
                    parent[j] = jj
                    plevel[at : at + b.n_levels] = up
                    break
            else:
                parent[j] = -1 if has_intercept else -2
        at += b.n_levels
    return parent, plevel


class CrossedPosterior:
    """The crossed model's log posterior over an unconstrained vector, a :class:`bayeslmm.sampling.DensityTarget`.

    Use :meth:`build`. The vector holds the p fixed parameters, σ's
    coordinate, one sd coordinate per block (design order), then the effects
    of each sampled block, ``levels`` values each.
    """

    def __init__(self, design: Design, structure: CrossedStructure, specs: list[PriorSpec], noncentered: list[bool]) -> None:
        self.design = design
        self.structure = structure
        blocks = design.blocks
        p = len(design.fixed_names)
        self.fixed = FixedMap.from_design(design)
        self.p = p
        nb = len(blocks)
        self.sd_of_block = np.arange(p + 1, p + 1 + nb, dtype=np.int64)
        sampled = structure.sampled
        sizes = [blocks[k].n_levels for k in sampled]
        self.eff_off = (p + 1 + nb + np.concatenate([[0], np.cumsum(sizes)[:-1]])).astype(np.int64)
        self.size = int(p + 1 + nb + sum(sizes))
        self.specs = list(specs)
        self.noncentered = np.array(noncentered, dtype=np.bool_)
        codes, transforms, prm = spec_arrays(self.specs)
        pad = self.size - len(self.specs)
        codes = np.concatenate([codes, np.zeros(pad, dtype=np.int64)])
        transforms = np.concatenate([transforms, np.zeros(pad, dtype=np.int64)])
        prm = np.vstack([prm, np.zeros((pad, 5))])
        self.stats = crossed_stats(design, structure)
        fx = self.fixed
        self._head = (p, fx.centered, fx.idx, fx.slope_index, fx.xbar)
        self._prior = (codes, transforms, prm)
        eff_len = np.array(sizes, dtype=np.int64)
        # hierarchical centering of the centered intercept blocks (kernel.log_posterior)
        idx = design.intercept_index
        self.intercept_coordinate = (0 if self.fixed.centered else int(idx)) if idx is not None else -1
        self.parent, self.plevel = _hierarchy(design, structure, self.noncentered, self.intercept_coordinate >= 0)
        self._layout = (self.sd_of_block[list(sampled)], int(self.sd_of_block[structure.integrated]), self.eff_off, eff_len,
                        self.noncentered, self.intercept_coordinate, self.parent, self.plevel)
        self._levels = blocks[structure.integrated].n_levels
        self.coords = model_coords(design)
        self.dims: dict[str, tuple[str, ...]] = {
            naming.INTERCEPT_CENTERED: (),
            naming.SLOPES: (naming.SLOPE_DIM,),
            naming.FIXED: (naming.FIXED_DIM,),
            naming.SIGMA: (),
        }
        for b in blocks:
            self.dims[naming.sd(b.label)] = (naming.term_dim(b.label),)
            self.dims[naming.ranef(b.label)] = (naming.level_dim(b.label), naming.term_dim(b.label))
            self.coords = {**self.coords, naming.level_dim(b.label): list(b.levels), naming.term_dim(b.label): list(b.terms)}

    @classmethod
    def build(cls, design: Design, priors: Priors, parameterization: Mapping[str, str]) -> CrossedPosterior | None:
        """The posterior of a design on the crossed path, or None if it does not qualify or a prior has no compiled density.

        Parameters
        ----------
        design
            The design.
        priors
            Its priors.
        parameterization
            ``"centered"`` or ``"noncentered"`` per sampled block label (other entries are ignored).
        """
        structure = crossed_structure(design)
        if structure is None:
            return None
        names = list(design.fixed_names)
        idx = design.intercept_index
        order = [idx] + [j for j in range(len(names)) if j != idx] if idx is not None and len(names) > 1 else list(range(len(names)))
        chosen = [priors.fixed(names[j]) for j in order] + [priors.sigma()]
        chosen += [priors.sd(b.label, b.terms[0]) for b in design.blocks]
        specs = [prior_spec(pr) for pr in chosen]
        if any(s is None for s in specs):
            return None
        if any(s.transform != LOG for s in specs[len(names) + 1:]):  # sds must be able to approach 0 continuously
            return None
        noncentered = [parameterization.get(design.blocks[k].label) == "noncentered" for k in structure.sampled]
        return cls(design, structure, specs, noncentered)  # type: ignore[arg-type]

    def logp_dlogp(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior density (up to a constant) and its gradient at one unconstrained point."""
        st = self.stats
        return log_posterior(theta, *self._head, *self._prior, *self._layout, st.beta0, st.ee, st.Me, *st.MM, st.Ae, *st.AM,
                             st.H, st.counts, float(st.n))

    def _value(self, theta: np.ndarray, position: int) -> np.ndarray:
        return self.specs[position].backward_array(theta[:, position])

    def named_draws(self, theta: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """The full model's named variables from unconstrained draws ``(S, size)``; ``rng`` draws the integrated effects."""
        theta = np.ascontiguousarray(theta, dtype=float)
        S = theta.shape[0]
        p = self.p
        out: dict[str, np.ndarray] = {}
        fixed_values = np.column_stack([self._value(theta, i) for i in range(p)]) if p else theta[:, :0]
        if self.fixed.centered:
            out[naming.INTERCEPT_CENTERED] = fixed_values[:, 0]
            out[naming.SLOPES] = fixed_values[:, 1:]
        if p:
            out[naming.FIXED] = self.fixed.beta(fixed_values)
        out[naming.SIGMA] = self._value(theta, p)
        blocks = self.design.blocks
        for k, b in enumerate(blocks):
            out[naming.sd(b.label)] = self._value(theta, int(self.sd_of_block[k]))[:, None]
        at = 0
        for j, k in enumerate(self.structure.sampled):
            lo, nl = int(self.eff_off[j]), blocks[k].n_levels
            u = theta[:, lo : lo + nl]
            if self.noncentered[j]:
                u = u * out[naming.sd(blocks[k].label)]
            elif self.parent[j] == -1:
                u = u - fixed_values[:, self.intercept_coordinate : self.intercept_coordinate + 1]
            elif self.parent[j] >= 0:
                u = u - theta[:, int(self.eff_off[self.parent[j]]) + self.plevel[at : at + nl]]
            out[naming.ranef(blocks[k].label)] = u[:, :, None]
            at += nl
        noise = rng.standard_normal((S, self._levels))
        parts = [
            integrated_draws(theta[s : s + _DRAW_CHUNK], noise[s : s + _DRAW_CHUNK], *self._head, self._prior[1], self._prior[2],
                             *self._layout, self.stats.beta0, self.stats.Ae, *self.stats.AM, self.stats.H)
            for s in range(0, S, _DRAW_CHUNK)
        ]
        out[naming.ranef(blocks[self.structure.integrated].label)] = np.concatenate(parts)[:, :, None]
        return out

    def start_names(self) -> list[str]:
        """The variable names :meth:`start` reads from its ``initvals``."""
        names = [naming.FIXED, naming.SIGMA] + [naming.sd(b.label) for b in self.design.blocks]
        return names + [naming.ranef(self.design.blocks[k].label) for k in self.structure.sampled]

    def start(self, initvals: Mapping[str, Any] | None = None) -> np.ndarray:
        """A starting point from ``initvals`` (β, σ, sds and the sampled blocks' effects, as from the REML fit) or moment estimates."""
        design, init, fx, p = self.design, dict(initvals or {}), self.fixed, self.p
        mom = moment_estimates(design)
        sy = design.moments.y_sd
        beta = np.asarray(init.get(naming.FIXED, mom.beta), dtype=float)
        values = np.concatenate([[beta[fx.idx] + beta[fx.slope_index] @ fx.xbar], beta[fx.slope_index]]) if fx.centered else beta
        theta = np.zeros(self.size)
        for i, v in enumerate(values):
            theta[i] = self._coordinate(i, float(v))
        theta[p] = self._coordinate(p, float(init.get(naming.SIGMA, max(mom.sigma, _SD_FLOOR * sy))))
        sds = []
        for k, b in enumerate(design.blocks):
            sd = float(np.atleast_1d(init.get(naming.sd(b.label), mom.block_sd[k]))[0])
            sd = max(sd, _SD_FLOOR * sy / float(design.moments.z_scale[k][0]))
            sds.append(sd)
            theta[self.sd_of_block[k]] = self._coordinate(int(self.sd_of_block[k]), sd)
        sampled = self.structure.sampled
        first = np.concatenate([[0], np.cumsum([design.blocks[k].n_levels for k in sampled])]).astype(int)
        for j in sorted(range(len(sampled)), key=lambda j: design.blocks[sampled[j]].n_levels):  # parents first
            b = design.blocks[sampled[j]]
            modes = np.asarray(init.get(naming.ranef(b.label), np.zeros((b.n_levels, 1))), dtype=float).reshape(b.n_levels)
            if self.noncentered[j]:
                modes = modes / sds[sampled[j]]
            elif self.parent[j] == -1:
                modes = modes + values[self.intercept_coordinate]
            elif self.parent[j] >= 0:
                modes = modes + theta[int(self.eff_off[self.parent[j]]) + self.plevel[first[j] : first[j + 1]]]
            theta[int(self.eff_off[j]) : int(self.eff_off[j]) + b.n_levels] = modes
        return theta

    def _coordinate(self, position: int, value: float) -> float:
        spec = self.specs[position]
        if not spec.contains(value):
            value = 1e-8 if spec.transform == LOG else 0.5 * (spec.lower + spec.upper)
        return spec.forward(value)


def sample_crossed_model(posterior: CrossedPosterior, settings: SamplerSettings, start: REMLResult | None = None) -> xr.DataTree:
    """Sample a crossed posterior with NUTS; return a ``DataTree`` with the full model's variables.

    Parameters
    ----------
    posterior
        The target (:meth:`CrossedPosterior.build`).
    settings
        The sampler settings (``sampler`` ``"pymc"`` or ``"nutpie"``).
    start
        The REML fit of the design, for starting values; None starts from moment estimates.

    Returns
    -------
    xarray.DataTree
        ``posterior`` (fixed effects, σ, sds and every block's group effects),
        ``sample_stats`` and ``observed_data``.
    """
    design = posterior.design
    initvals = reml_initvals(posterior.start_names(), design, start) if start is not None else None
    # a small target adapts a dense mass matrix, as the full model does (bayeslmm.sampling.mass_matrix): it follows
    # the ridge between the intercept and the mean of a centered factor's effects
    dense = posterior.size <= DENSE_MASS_MAX_DIM
    idata = sample_target(posterior, posterior.start(initvals), settings, "the crossed posterior", dense_mass=dense)
    obs = xr.Dataset({naming.LIKELIHOOD: ((naming.OBS_DIM,), design.y)}, coords={naming.OBS_DIM: np.arange(design.nobs)})
    idata["observed_data"] = xr.DataTree(obs)
    return idata
