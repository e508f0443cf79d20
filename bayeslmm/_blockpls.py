"""lme4's penalized least squares as a blocked Cholesky factor updated in place (MixedModels.jl's layout).

The random-effect blocks of a :class:`~bayeslmm.design.Design` are grouped by
grouping factor into *terms* (``(1|g) + (0+x|g)`` is one term of width 2 with
a block-diagonal relative covariance factor λ) and ordered by their number of
random effects, most first. The first term is the *leading* term: its part of
Λ'Z'ZΛ + I is block diagonal (one g×g block per level; a plain diagonal for a
scalar term) and stays so in the factor. Every other term, then the columns
of X, then y, make up the dense *rest* block (R = Q₂ + p + 1 rows, Q₂ the
number of non-leading random effects). The rest-by-leading block is stored
sparse: per leading level, the list of rest rows it touches (whole level
blocks of the other terms, then every X row and the y row) with its values.
Crossed factors fill the rest block in, which is why it is dense.

The cross-products are formed once by :class:`BlockedPLS`; :meth:`BlockedPLS.factor`
overwrites the preallocated factor for a new θ with the compiled kernels of
:mod:`bayeslmm._blockpls_kernels` (the compiled Cholesky for a small rest block, LAPACK's
``potrf`` on the rest block otherwise). :meth:`BlockedPLS.set_response`
installs a new response and touches only the y cross-products.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack

from . import _blockpls_kernels as kern
from .design import Design

__all__ = ["BlockedPLS", "SMALL_REST", "rest_size", "tril_positions"]

#: Rest blocks of at most this many rows are factored inside the compiled kernel; larger ones by LAPACK.
SMALL_REST = 48
#: Largest n × (Q₂ + p) for which the rest columns' cross-products are formed densely.
_DENSE_CROSS = 2_000_000


def tril_positions(q: int) -> list[tuple[int, int]]:
    """Lower-triangle positions of a q×q matrix in column-major order (lme4's θ order)."""
    return [(i, j) for j in range(q) for i in range(j, q)]


def _terms(design: Design) -> list[list[int]]:
    """Design blocks grouped by grouping factor (same levels), most random effects first."""
    groups: list[list[int]] = []
    for k, b in enumerate(design.blocks):
        for grp in groups:
            first = design.blocks[grp[0]]
            if first.factor == b.factor and first.levels == b.levels:
                grp.append(k)
                break
        else:
            groups.append([k])
    size = [design.blocks[grp[0]].n_levels * sum(design.blocks[k].q for k in grp) for grp in groups]
    order = sorted(range(len(groups)), key=lambda i: -size[i])
    return [groups[i] for i in order]


def rest_size(design: Design) -> int:
    """Q₂: the number of random effects outside the leading term (the dense block's size less p + 1)."""
    terms = _terms(design)
    return sum(design.blocks[grp[0]].n_levels * sum(design.blocks[k].q for k in grp) for grp in terms[1:])


class BlockedPLS:
    """Cross-products and the in-place blocked Cholesky factor for one design.

    Parameters
    ----------
    design
        The evaluated design; only ``y``, ``X`` and the blocks are used.

    Notes
    -----
    After :meth:`factor` the attributes ``logdet_L`` (log|L_θ|²), ``logdet_RX``
    (log|R_X|²) and ``r2`` (penalized residual sum of squares) describe θ.
    """

    def __init__(self, design: Design) -> None:
        blocks = design.blocks
        self._blocks = blocks
        X = np.asarray(design.X, dtype=float)
        self.n, self.p = X.shape
        n, p = self.n, self.p
        terms = _terms(design)
        self.terms = terms
        widths = [sum(blocks[k].q for k in grp) for grp in terms]
        self.g = g = widths[0]
        gidx1 = np.asarray(blocks[terms[0][0]].group_idx, dtype=np.int64)
        self.n1 = n1 = blocks[terms[0][0]].n_levels
        Z1 = np.column_stack([np.asarray(blocks[k].Z, dtype=float) for k in terms[0]])
        self._gidx1, self._Z1, self._X = gidx1, Z1, X
        # θ -> (term, row, column) of the term's λ; design block -> (term, first column).
        th_term, th_row, th_col = [], [], []
        self.block_place: list[tuple[int, int]] = [(0, 0)] * len(blocks)
        for t, grp in enumerate(terms):
            c = 0
            for k in grp:
                self.block_place[k] = (t, c)
                c += blocks[k].q
        for k, b in enumerate(blocks):
            t, c = self.block_place[k]
            for i, j in tril_positions(b.q):
                th_term.append(t)
                th_row.append(c + i)
                th_col.append(c + j)
        self.th_term = np.asarray(th_term, dtype=np.int64)
        self.th_row = np.asarray(th_row, dtype=np.int64)
        self.th_col = np.asarray(th_col, dtype=np.int64)
        gm = max(widths)
        self.lam = np.zeros((len(terms), gm, gm))

        # Rest rows: the other terms (level-major), then X, then y.
        rest = terms[1:]
        self.tg = np.asarray(widths[1:], dtype=np.int64)
        self.tlev = np.asarray([blocks[grp[0]].n_levels for grp in rest], dtype=np.int64)
        self.toff = np.concatenate([[0], np.cumsum(self.tg * self.tlev)]).astype(np.int64)
        self.Q2 = Q2 = int(self.toff[-1])
        self.toff = self.toff[:-1].copy()
        self.R = R = Q2 + p + 1
        self.rt = np.repeat(np.arange(len(rest), dtype=np.int64), self.tg * self.tlev)
        self.rc = np.concatenate([np.tile(np.arange(w), lv) for w, lv in zip(self.tg, self.tlev)] or [np.zeros(0)])
        self.rc = self.rc.astype(np.int64)
        self.rs = (np.arange(Q2) - self.rc).astype(np.int64)
        rest_gidx = [np.asarray(blocks[grp[0]].group_idx, dtype=np.int64) for grp in rest]
        rest_Z = [np.column_stack([np.asarray(blocks[k].Z, dtype=float) for k in grp]) for grp in rest]

        # A₁₁: per-level g×g cross-products of the leading term.
        self.A11 = np.zeros((n1, g, g))
        for a in range(g):
            for b in range(a, g):
                self.A11[:, a, b] = self.A11[:, b, a] = np.bincount(gidx1, Z1[:, a] * Z1[:, b], minlength=n1)

        # Pattern of A₂₁: leading level j -> (rest level blocks it meets, then X and y rows).
        nb = self.tlev.sum() if rest else 0
        boff = np.concatenate([[0], np.cumsum(self.tlev)]).astype(np.int64)
        bstart = np.concatenate([self.toff[t] + np.arange(self.tlev[t]) * self.tg[t] for t in range(len(rest))] or [np.zeros(0)])
        bwidth = np.repeat(self.tg, self.tlev) if rest else np.zeros(0, dtype=np.int64)
        if rest:
            keys = np.concatenate([gidx1 * nb + boff[t] + rest_gidx[t] for t in range(len(rest))])
            pairs, inverse = np.unique(keys, return_inverse=True)
        else:
            pairs, inverse = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        pj, pb = pairs // max(nb, 1), pairs % max(nb, 1)
        pw = bwidth[pb].astype(np.int64) if rest else np.zeros(0, dtype=np.int64)
        count = np.bincount(pj, pw, minlength=n1).astype(np.int64) + p + 1
        self.ptr = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
        nnz = int(self.ptr[-1])
        within = np.cumsum(pw) - pw  # offset of each pair within its level's list
        if pairs.size:
            first_of_level = np.searchsorted(pj, pj)
            within = within - within[first_of_level]
        pos0 = self.ptr[pj] + within
        prow = np.empty(nnz, dtype=np.int64)
        for w in np.unique(pw):
            sel = pw == w
            for c in range(int(w)):
                prow[pos0[sel] + c] = bstart[pb[sel]] + c
        xy_pos = self.ptr[1:, None] - (p + 1) + np.arange(p + 1)
        prow[xy_pos.ravel()] = Q2 + np.tile(np.arange(p + 1), n1)
        self.prow = prow
        self.level_of = np.repeat(np.arange(n1, dtype=np.int64), count)
        self.col_k = np.argsort(prow, kind="stable").astype(np.int64)
        self.col_ptr = np.concatenate([[0], np.cumsum(np.bincount(prow, minlength=R))]).astype(np.int64)
        self.scalar_rest = bool(np.all(self.tg == 1))
        self.pval = np.zeros((nnz, g))
        row_start = 0
        for t in range(len(rest)):
            inv_t = inverse[row_start : row_start + n]
            row_start += n
            for c in range(int(self.tg[t])):
                for a in range(g):
                    idx = (pos0[inv_t] + c) * g + a
                    self.pval.ravel()[:] += np.bincount(idx, rest_Z[t][:, c] * Z1[:, a], minlength=nnz * g)
        self._xy_pos = xy_pos
        Xy = np.column_stack([X, np.asarray(design.y, dtype=float)])
        for b in range(p + 1):
            for a in range(g):
                self.pval[xy_pos[:, b], a] = np.bincount(gidx1, Xy[:, b] * Z1[:, a], minlength=n1)

        # A₂₂ = [Z₂ X y]'[Z₂ X y], dense and full; [Z₂ X] is kept (dense when small) for new responses.
        if rest:
            zr, zc, zv = [], [], []
            rows = np.arange(n)
            for t in range(len(rest)):
                for c in range(int(self.tg[t])):
                    zr.append(rows)
                    zc.append(self.toff[t] + rest_gidx[t] * self.tg[t] + c)
                    zv.append(rest_Z[t][:, c])
            if n * (R - 1) <= _DENSE_CROSS:
                W2 = np.zeros((n, R - 1))
                np.add.at(W2, (np.concatenate(zr), np.concatenate(zc)), np.concatenate(zv))
                W2[:, Q2:] = X
                cross = W2.T @ W2
            else:
                Z2 = sp.csc_matrix((np.concatenate(zv), (np.concatenate(zr), np.concatenate(zc))), shape=(n, Q2))
                W2 = sp.hstack([Z2, sp.csc_matrix(X)], format="csc")
                cross = (W2.T @ W2).toarray()
        else:
            W2, cross = X, X.T @ X
        self._W2 = W2
        self.A22 = np.zeros((R, R), order="F")
        self.A22[: R - 1, : R - 1] = cross
        self.set_response(np.asarray(design.y, dtype=float))

        # Workspace, overwritten for every θ.
        self.L11 = np.zeros((n1, g, g))
        self.SA = np.zeros((nnz, g))
        self.L21 = np.zeros((nnz, g))
        self.LA = np.zeros((R, R), order="F")
        self.L22 = np.zeros((R, R), order="F")
        self.tmp = np.zeros((g, g))
        self.out3, self.scale = np.zeros(3), np.zeros(R)
        self.u1, self.b1, self.zr1 = np.zeros((n1, g)), np.zeros((n1, g)), np.zeros((n1, g))
        self.x2, self.b2, self.zr2 = np.zeros(R), np.zeros(Q2), np.zeros(Q2)
        self.W21, self.W11 = np.zeros((nnz, g)), np.zeros((n1, g, g))
        self.Fsum = np.zeros((len(terms), gm, gm))
        self._winv: dict[int, np.ndarray] = {}
        self.logdet_L = self.logdet_RX = self.r2 = np.nan
        self.small = R <= SMALL_REST
        if self.small:  # everything the compiled optimiser (bayeslmm._bfgs) needs, in its order
            k = self.th_term.shape[0]
            self._winv[R - 1] = W = np.zeros((R - 1, R - 1), order="F")
            dims = np.array([Q2, p, design.nobs, int(self.scalar_rest)], dtype=np.int64)  # nobs: compressed rows
            self.small_args = (
                self.th_term, self.th_row, self.th_col, self.lam, self.A11, self.L11, self.ptr, self.prow, self.col_ptr,
                self.col_k, self.level_of, self.pval, self.SA, self.L21, self.rt, self.rc, self.rs, self.tg, self.toff,
                self.tlev, self.A22, self.LA, self.L22, self.tmp, self.scale, self.out3, self.u1, self.x2, self.b1,
                self.b2, self.zr1, self.zr2, W, self.W21, self.W11, self.Fsum, np.empty(k), np.empty(k), dims,
            )

    # ------------------------------------------------------------------
    def set_response(self, y: np.ndarray) -> None:
        """Install a new response vector: only the cross-products with y change."""
        y = np.asarray(y, dtype=float)
        if y.shape != (self.n,):
            raise ValueError(f"response of shape {y.shape}, expected ({self.n},)")
        R, p, g = self.R, self.p, self.g
        for a in range(g):
            self.pval[self._xy_pos[:, p], a] = np.bincount(self._gidx1, y * self._Z1[:, a], minlength=self.n1)
        col = self._W2.T @ y
        self.A22[R - 1, : R - 1] = col
        self.A22[: R - 1, R - 1] = col
        self.A22[R - 1, R - 1] = float(y @ y)

    # ------------------------------------------------------------------
    def factor(self, theta: np.ndarray) -> bool:
        """Update the factor in place for θ; False if a block is not positive definite."""
        theta = np.asarray(theta, dtype=float)
        kern.set_lambda(theta, self.th_term, self.th_row, self.th_col, self.lam)
        ld1 = kern.leading(
            self.lam, self.A11, self.L11, self.ptr, self.prow, self.pval, self.SA, self.L21, self.rt, self.rc,
            self.tg, self.Q2, self.tmp,
        )
        if np.isnan(ld1):
            return False
        kern.schur(self.lam, self.A22, self.LA, self.L22, self.ptr, self.prow, self.col_ptr, self.col_k, self.level_of,
                   self.L21, self.rt, self.rc, self.rs, self.tg, self.Q2, self.scale)
        if self.small:
            if not kern.chol_lower(self.L22, self.R):
                return False
        else:
            _, info = lapack.dpotrf(self.L22, lower=1, clean=0, overwrite_a=1)
            if info != 0:
                return False
        ld2, ldx, r2 = kern.logdets(self.L22, self.Q2, self.p)
        self.logdet_L, self.logdet_RX, self.r2 = ld1 + ld2, ldx, r2
        return True

    def solve(self) -> None:
        """β̂, the spherical modes û, b = Λû and Z'r̂ at the factored θ (into the workspace)."""
        kern.solve(
            self.lam, self.A11, self.L11, self.ptr, self.prow, self.pval, self.L21, self.rt, self.rc, self.rs,
            self.tg, self.Q2, self.p, self.A22, self.L22, self.u1, self.x2, self.b1, self.b2, self.zr1, self.zr2,
        )

    def fixef(self) -> np.ndarray:
        """β̂ at the factored θ."""
        self.solve()
        return self.x2[self.Q2 : self.Q2 + self.p].copy()

    def _inverse(self, m: int) -> np.ndarray:
        """Lower triangle of the inverse of the first m rest rows' block of the factor."""
        W = self._winv.get(m)
        if W is None:
            W = self._winv[m] = np.zeros((m, m), order="F")
        if m == 0:
            return W
        if self.small:
            kern.inverse_from_chol(self.L22, W, m)
            return W
        W[:, :] = self.L22[:m, :m]
        _, info = lapack.dpotri(W, lower=1, overwrite_c=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"potri info {info}")
        return W

    def selected_inverse(self, m: int) -> np.ndarray:
        """M⁻¹ on the factor's pattern for the first m rest rows (Q₂: random effects only; Q₂+p: with β).

        Returns W₂₂ (its lower triangle; all of it when a rest term is not scalar);
        fills ``W21`` and ``W11``.
        """
        W = self._inverse(m)
        kern.selected_inverse(self.L11, self.ptr, self.prow, self.col_ptr, self.col_k, self.level_of, self.L21, W, m,
                              self.W21, self.W11, self.tmp)
        if not self.scalar_rest:
            kern.symmetrize(W, m)
        return W

    def gradient(self, reml: bool) -> tuple[np.ndarray, np.ndarray]:
        """(∂ log|M| / ∂θ, ∂r² / ∂θ) at the factored θ; M includes β for REML."""
        self.solve()
        m = self.Q2 + (self.p if reml else 0)
        W = self.selected_inverse(m)
        k = self.th_term.shape[0]
        g_ld, g_r2 = np.empty(k), np.empty(k)
        kern.gradient(
            self.lam, self.A11, self.A22, self.scale, self.ptr, self.prow, self.pval, self.SA, W, m, self.W21, self.W11, self.LA, self.rt,
            self.rc, self.rs, self.tg, self.toff, self.tlev, self.Q2, self.th_term, self.th_row, self.th_col, self.u1,
            self.x2, self.zr1, self.zr2, self.Fsum, g_ld, g_r2,
        )
        return g_ld, g_r2

    def rx_inverse(self) -> np.ndarray:
        """(R_X'R_X)⁻¹ at the factored θ (σ² times it is vcov(β̂))."""
        Q2, p = self.Q2, self.p
        if p == 0:
            return np.zeros((0, 0))
        RXt = np.tril(self.L22[Q2 : Q2 + p, Q2 : Q2 + p])
        inv, info = lapack.dpotri(np.asfortranarray(RXt), lower=1)
        if info != 0:
            raise np.linalg.LinAlgError(f"potri info {info}")
        return np.tril(inv) + np.tril(inv, -1).T

    def conditional(self, sigma: float, condvar: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Per design block, the conditional modes and (if ``condvar``) their conditional sds at the factored θ."""
        self.solve()
        modes = self._modes()
        return modes, (self._conditional_sds(sigma) if condvar else None)

    def _modes(self) -> list[np.ndarray]:
        out = []
        for k, b in enumerate(self._blocks):
            t, c = self.block_place[k]
            if t == 0:
                out.append(self.b1[:, c : c + b.q].copy())
            else:
                w, off, lev = int(self.tg[t - 1]), int(self.toff[t - 1]), int(self.tlev[t - 1])
                out.append(self.b2[off : off + w * lev].reshape(lev, w)[:, c : c + b.q].copy())
        return out

    def _conditional_sds(self, sigma: float) -> list[np.ndarray]:
        """Per design block, sqrt(diag(σ²ΛA⁻¹Λ')) by level (lme4's condVar)."""
        Wd = self.selected_inverse(self.Q2)
        out = []
        for k, b in enumerate(self._blocks):
            t, c = self.block_place[k]
            lam = self.lam[t]
            if t == 0:
                blocks = self.W11
                lev, w = self.n1, self.g
            else:
                w, off, lev = int(self.tg[t - 1]), int(self.toff[t - 1]), int(self.tlev[t - 1])
                idx = off + np.arange(lev)[:, None] * w + np.arange(w)
                ri, ci = idx[:, :, None], idx[:, None, :]
                blocks = Wd[np.maximum(ri, ci), np.minimum(ri, ci)]
            lam_t = lam[:w, :w]
            cov = lam_t @ blocks @ lam_t.T
            var = sigma**2 * np.diagonal(cov, axis1=1, axis2=2)[:, c : c + b.q]
            out.append(np.sqrt(np.maximum(var, 0.0)))
        return out
