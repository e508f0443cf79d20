"""Random-effect terms of a design, and the reduced designs lmerTest's ``ranova`` fits.

lmerTest reduces each random-effect term ``(lhs | g)`` (after lme4's
``findbars``: ``||`` split into independent bars, ``g1/g2`` into ``g2:g1`` and
``g1``) in turn:

* a term whose left side has no variable, ``(1 | g)``, is removed;
* otherwise every variable term of the left side that no other one contains
  (``drop.scope``) is dropped in turn; when it was the only one, the term
  becomes ``(1 | g)`` -- also for ``(0 + x | g)``.

A reduced term identical to one already in the model is not repeated (R's
formula algebra merges them). The reduced design keeps the original's
response, fixed effects and rows; its blocks are re-ordered and labelled as
:func:`bayeslmm.design.build_design` orders and labels them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..design import BlockDesign, Design

__all__ = ["RandomTerm", "Reduction", "random_terms", "reductions", "sd_count"]


@dataclass(frozen=True)
class RandomTerm:
    """One random-effect term (one bar) of a design.

    Attributes
    ----------
    block
        Index of its block in ``design.blocks``.
    factor
        The grouping factor's name.
    intercept
        Whether the term has a random intercept.
    exprs
        Names of its variable terms (``"Days"``, ``"x:f"``), in order.
    variables
        For each of them, the variables it involves.
    columns
        For each of them, its columns in the block's Z.
    """

    block: int
    factor: str
    intercept: bool
    exprs: tuple[str, ...]
    variables: tuple[frozenset[str], ...]
    columns: tuple[tuple[int, ...], ...]

    def label(self) -> str:
        """The term as lme4 deparses it: ``(Days | Subject)``, ``(0 + Days | Subject)``, ``(1 | g)``."""
        if not self.exprs:
            lhs = "1"
        elif self.intercept:
            lhs = " + ".join(self.exprs)
        else:
            lhs = "0 + " + " + ".join(self.exprs)
        return f"({lhs} | {self.factor})"


@dataclass(frozen=True)
class Reduction:
    """One row of ``ranova``: a label and the reduced design."""

    label: str
    design: Design
    removed_sd: int


def random_terms(design: Design) -> list[RandomTerm]:
    """The design's random-effect terms in the order lme4's ``findbars`` lists them."""
    enc = design.encoders
    terms = []
    for k, b in enumerate(design.blocks):
        block_enc = enc.blocks[k] if enc is not None and k < len(enc.blocks) else None
        exprs, variables, columns, intercept = [], [], [], False
        if block_enc is None:
            intercept = "(Intercept)" in b.terms
            for j, t in enumerate(b.terms):
                if t != "(Intercept)":
                    exprs.append(t)
                    variables.append(frozenset([t]))
                    columns.append((j,))
        else:
            for name, term in block_enc.terms.items():
                comps = getattr(term, "components", None)
                sl = block_enc.slices[name]
                if not comps:
                    intercept = True
                    continue
                exprs.append(str(name))
                variables.append(frozenset(str(c.name) for c in comps))
                columns.append(tuple(range(sl.start, sl.stop)))
        terms.append(RandomTerm(k, b.factor, intercept, tuple(exprs), tuple(variables), tuple(columns)))
    return _written_order(design, terms)


def _written_order(design: Design, terms: list[RandomTerm]) -> list[RandomTerm]:
    """Terms in the order of the formula; a nested ``g1/g2`` lists ``g2:g1`` before ``g1``, as ``findbars`` does."""
    parsed = list(design.parsed.blocks)
    used: set[int] = set()
    order = []
    for rb in parsed:
        for t in terms:
            b = design.blocks[t.block]
            if t.block not in used and b.factor_vars == rb.factor_vars and len(rb.exprs) == int(t.intercept) + len(t.exprs):
                used.add(t.block)
                order.append(t)
                break
    order += [t for t in terms if t.block not in used]
    i = 0
    out: list[RandomTerm] = []
    while i < len(order):
        chain = [order[i]]
        while i + len(chain) < len(order):
            prev = design.blocks[chain[-1].block].factor_vars
            nxt = design.blocks[order[i + len(chain)].block].factor_vars
            if len(nxt) == len(prev) + 1 and nxt[1:] == prev:
                chain.append(order[i + len(chain)])
            else:
                break
        out += chain[::-1]
        i += len(chain)
    return out


def _droppable(term: RandomTerm) -> list[int]:
    """Indices of the variable terms no other term of the same bar contains (R's ``drop.scope``)."""
    out = []
    for i, v in enumerate(term.variables):
        if not any(j != i and v < w for j, w in enumerate(term.variables)):
            out.append(i)
    return out


def _label_blocks(blocks: list[BlockDesign]) -> list[BlockDesign]:
    blocks = sorted(blocks, key=lambda b: -b.n_levels)
    seen: dict[str, int] = {}
    out = []
    for b in blocks:
        k = seen.get(b.factor, 0)
        seen[b.factor] = k + 1
        out.append(replace(b, label=b.factor if k == 0 else f"{b.factor}.{k}"))
    return out


def _same(a: BlockDesign, b: BlockDesign) -> bool:
    return a.factor_vars == b.factor_vars and a.terms == b.terms and np.array_equal(a.Z, b.Z)


def _with_blocks(design: Design, blocks: list[BlockDesign]) -> Design:
    unique: list[BlockDesign] = []
    for b in blocks:
        if not any(_same(b, u) for u in unique):
            unique.append(b)
    return replace(design, blocks=tuple(_label_blocks(unique)), encoders=None)


def _reduced_block(b: BlockDesign, term: RandomTerm, drop: int) -> BlockDesign:
    keep = [i for i in range(len(term.exprs)) if i != drop]
    if not keep:
        return replace(b, terms=("(Intercept)",), Z=np.ones((b.Z.shape[0], 1)))
    cols = ([b.terms.index("(Intercept)")] if term.intercept else []) + [c for i in keep for c in term.columns[i]]
    return replace(b, terms=tuple(b.terms[c] for c in cols), Z=b.Z[:, cols])


def sd_count(design: Design) -> int:
    """Number of random-effect standard deviations of a design."""
    return sum(b.q for b in design.blocks)


def reductions(design: Design, reduce_terms: bool = True) -> list[Reduction]:
    """The reduced designs of lmerTest's ``ranova(fm, reduce.terms = ...)``, in its row order."""
    out = []
    blocks = list(design.blocks)
    n_sd = sd_count(design)
    for term in random_terms(design):
        others = [b for k, b in enumerate(blocks) if k != term.block]
        scope = _droppable(term) if reduce_terms else []
        if not term.exprs or not scope:
            reduced = _with_blocks(design, others)
            out.append(Reduction(term.label(), reduced, n_sd - sd_count(reduced)))
            continue
        for i in scope:
            new = _reduced_block(blocks[term.block], term, i)
            reduced = _with_blocks(design, [*others[: term.block], new, *others[term.block :]])
            out.append(Reduction(f"{term.exprs[i]} in {term.label()}", reduced, n_sd - sd_count(reduced)))
    return out
