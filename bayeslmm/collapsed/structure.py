"""Stage 4 (collapsed model), first step: which designs collapse, and their sufficient statistics.

A design collapses when its blocks belong to one grouping factor, or to two
factors one nested in the other (:func:`collapse_structure`). The collapsed
likelihood then depends on the data only through per-group sums and a few
global ones (:class:`SufficientStats`), computed once in O(n).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..compressed import compress
from ..design import Design
from ..errors import BayesLMMError
from ..groupwise import group_products

__all__ = ["MAX_Q", "CollapsedStructure", "SufficientStats", "collapse_structure", "can_collapse", "sufficient_stats"]

#: Largest number of terms per factor (summed over its blocks) handled by the unrolled algebra.
MAX_Q = 3
#: Largest padding of nested groups (slots / inner levels) before falling back to the full model.
_MAX_PADDING = 8


@dataclass(frozen=True)
class CollapsedStructure:
    """Which blocks are integrated out, and how groups are laid out.

    Attributes
    ----------
    outer
        Indices (into ``design.blocks``) of the blocks of the top-level factor.
    inner
        Indices of the blocks of the factor nested in it (empty if none).
    n_outer
        Number of top-level groups G.
    width
        Slots per top-level group m: the most inner levels any group has (1 without nesting).
    inner_slot
        Slot (in ``0 .. G*m-1``, group-major) of every inner level; empty without nesting.
    """

    outer: tuple[int, ...]
    inner: tuple[int, ...]
    n_outer: int
    width: int
    inner_slot: np.ndarray

    @property
    def n_slots(self) -> int:
        """Length G*m of the padded vector of inner groups."""
        return self.n_outer * self.width


def _parents(inner_idx: np.ndarray, outer_idx: np.ndarray, n_inner: int) -> np.ndarray | None:
    """The outer level of every inner level, or None if some inner level spans two outer levels."""
    parent = np.full(n_inner, -1, dtype=np.int64)
    parent[inner_idx] = outer_idx
    return parent if np.array_equal(parent[inner_idx], outer_idx) else None


def collapse_structure(design: Design) -> CollapsedStructure | None:
    """The collapsed layout of a design, or None if it cannot be collapsed.

    A design can be collapsed when its blocks belong to one grouping factor,
    or to two factors one of which is nested in the other (every level of the
    inner factor lies within one level of the outer, judged from the data),
    and each factor has at most :data:`MAX_Q` terms over its blocks.
    """
    by_factor: dict[str, list[int]] = {}
    for k, b in enumerate(design.blocks):
        by_factor.setdefault(b.factor, []).append(k)
    if not by_factor or len(by_factor) > 2:
        return None
    groups = sorted(by_factor.values(), key=lambda ks: design.blocks[ks[0]].n_levels)
    if any(sum(design.blocks[k].q for k in ks) > MAX_Q for ks in groups):
        return None
    outer = groups[0]
    g_out = design.blocks[outer[0]]
    if len(groups) == 1:
        return CollapsedStructure(tuple(outer), (), g_out.n_levels, 1, np.zeros(0, dtype=np.int64))
    inner = groups[1]
    g_in = design.blocks[inner[0]]
    parent = _parents(g_in.group_idx, g_out.group_idx, g_in.n_levels)
    if parent is None:
        return None
    counts = np.bincount(parent, minlength=g_out.n_levels)
    width = int(counts.max())
    if g_out.n_levels * width > max(_MAX_PADDING * g_in.n_levels, 4096):
        return None
    order = np.argsort(parent, kind="stable")
    starts = np.cumsum(counts) - counts
    slot = np.empty(g_in.n_levels, dtype=np.int64)
    slot[order] = parent[order] * width + (np.arange(g_in.n_levels) - starts[parent[order]])
    return CollapsedStructure(tuple(outer), tuple(inner), g_out.n_levels, width, slot)


def can_collapse(design: Design) -> bool:
    """Whether the group effects of ``design`` can be integrated out (see :func:`collapse_structure`)."""
    return collapse_structure(design) is not None


# ---------------------------------------------------------------------------
# Sufficient statistics (one O(n) pass)
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class SufficientStats:
    """Per-group and global sums the collapsed likelihood needs.

    ``o*`` arrays are per top-level group (G, ...), ``i*`` arrays per padded
    inner slot (G*m, ...), with zeros in unused slots (which then contribute
    exactly nothing). ``e = y − X beta0``.
    """

    structure: CollapsedStructure
    n: int
    beta0: np.ndarray
    ee: float
    Xe: np.ndarray
    XX: np.ndarray
    oo: np.ndarray
    oX: np.ndarray
    oe: np.ndarray
    ii: np.ndarray
    io: np.ndarray
    iX: np.ndarray
    ie: np.ndarray


def _columns(design: Design, blocks: tuple[int, ...]) -> np.ndarray:
    if not blocks:
        return np.zeros((design.nobs, 0))
    return np.column_stack([design.blocks[k].Z for k in blocks])


def sufficient_stats(design: Design, structure: CollapsedStructure | None = None) -> SufficientStats:
    """Compute every sum the collapsed likelihood needs, in one vectorised pass over the rows.

    The sums are taken over the design's compressed rows (:func:`bayeslmm.compressed.compress`):
    a few rows per group with the data's per-group cross-products, which an out-of-core
    design holds instead of its rows; in-memory and out-of-core data thus give the same sums.
    """
    structure = structure or collapse_structure(design)
    if structure is None:
        raise BayesLMMError(f"The design of {design.parsed.text!r} cannot be collapsed (crossed factors or too many terms).")
    design = compress(design)
    X, y = design.X, design.y
    beta0 = np.linalg.lstsq(X, y, rcond=None)[0] if X.shape[1] else np.zeros(0)
    e = y - X @ beta0
    Zo = _columns(design, structure.outer)
    o_idx = design.blocks[structure.outer[0]].group_idx
    G = structure.n_outer
    e2 = e[:, None]
    stats: dict[str, Any] = dict(
        oo=group_products(o_idx, G, Zo),
        oX=group_products(o_idx, G, Zo, X),
        oe=np.ascontiguousarray(group_products(o_idx, G, Zo, e2)[:, :, 0]),
    )
    if structure.inner:
        Zi = _columns(design, structure.inner)
        s_idx = structure.inner_slot[design.blocks[structure.inner[0]].group_idx]
        S = structure.n_slots
        stats.update(
            ii=group_products(s_idx, S, Zi),
            io=group_products(s_idx, S, Zi, Zo),
            iX=group_products(s_idx, S, Zi, X),
            ie=np.ascontiguousarray(group_products(s_idx, S, Zi, e2)[:, :, 0]),
        )
    else:
        stats.update(ii=np.zeros((0, 0, 0)), io=np.zeros((0, 0, Zo.shape[1])), iX=np.zeros((0, 0, X.shape[1])), ie=np.zeros((0, 0)))
    return SufficientStats(
        structure=structure, n=design.nobs, beta0=beta0, ee=float(e @ e), Xe=X.T @ e, XX=X.T @ X, **stats
    )
