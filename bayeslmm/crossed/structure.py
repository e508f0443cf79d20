"""Which designs take the crossed path, and which factor is integrated out.

A design qualifies when its blocks belong to at least two grouping factors
(it is not collapsible by :func:`bayeslmm.collapsed.can_collapse`), every
block has a single term (``(1 | g)``, ``(0 + x | g)``), and the factor with the
most levels carries exactly one block: that block is integrated out. The
other blocks are sampled, each centered or non-centered by the rule of
:mod:`bayeslmm.parameterization`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..design import Design

__all__ = ["CrossedStructure", "crossed_structure"]


@dataclass(frozen=True)
class CrossedStructure:
    """Which block is integrated out and which are sampled.

    Attributes
    ----------
    integrated
        Index (into ``design.blocks``) of the block whose effects are integrated out.
    sampled
        Indices of the other blocks, in design order.
    """

    integrated: int
    sampled: tuple[int, ...]


def crossed_structure(design: Design) -> CrossedStructure | None:
    """The crossed layout of ``design``, or None if it does not qualify (module docstring).

    Parameters
    ----------
    design
        The design, with its rows in memory.

    Returns
    -------
    CrossedStructure or None
    """
    blocks = design.blocks
    if design.summary is not None or len({b.factor for b in blocks}) < 2 or any(b.q != 1 for b in blocks):
        return None
    largest = max(range(len(blocks)), key=lambda k: blocks[k].n_levels)
    if sum(b.factor == blocks[largest].factor for b in blocks) != 1:
        return None
    return CrossedStructure(largest, tuple(k for k in range(len(blocks)) if k != largest))
