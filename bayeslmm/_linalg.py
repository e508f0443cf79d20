"""Linear algebra behind the REML/ML fit: lme4's penalized least squares on cross-products.

With the relative covariance factor Λ_θ (block-diagonal, one lower-triangular
q×q factor ``T_k`` per level of block k) lme4 factors

    A_θ = Λ'Z'ZΛ + I = L_θ L_θ'

and profiles β and σ out of the likelihood. Everything needed per θ is a
function of the cross-products Z'Z, Z'[X y] and [X y]'[X y], which are formed
once here; Z itself is only ever sparse.

Without a sparse Cholesky (CHOLMOD) we use the structure lme4's term ordering
gives: the blocks on the first grouping factor (the one with most levels) form
the *leading* part, whose Z'Z is block-diagonal with one g×g block per level
(g = number of terms of that factor). It is factored level by level with
batched dense Cholesky, and the remaining random effects enter through the
Schur complement S = A₂₂ − A₂₁A₁₁⁻¹A₁₂, which is dense-factored (LAPACK
Cholesky) up to :data:`DENSE_SCHUR_MAX` non-leading effects and sparse-LU
factored (SuperLU, symmetric mode, minimum-degree ordering) beyond. With
B = L₁⁻¹A₁₂ the full factor is ``L = [[L₁, 0], [B', L₂]]`` with ``L₂L₂' = S``,
so log|L|² = log|L₁|² + log|S|.

A₂₁A₁₁⁻¹A₁₂ = Λ₂'G₁₂'WG₁₂Λ₂ (W = blockdiag(M_j'M_j), M_j = L₁ⱼ⁻¹T') is formed in
one of three ways (``PLSProblem.mode``): all dense for small problems; from
precomputed products of pairs of non-zeros of G₁₂ = Z₁'Z₂ with one
``bincount`` per θ (large problems with a dense S); or by sparse products.
All paths are tested against each other and against brute force.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
from scipy.linalg import lapack
from scipy.sparse.linalg import splu

from .design import Design
from .groupwise import group_products

__all__ = ["ThetaLayout", "PLSProblem", "Factorization", "SparseEngine", "DENSE_SCHUR_MAX", "chol", "chol_solve"]

#: Largest Schur complement (number of non-leading random effects) factored densely.
DENSE_SCHUR_MAX = 3000
#: Budget (number of doubles) for the dense chunks used by the conditional variances.
_CHUNK_DOUBLES = 4_000_000
#: Largest leading-by-rest cross-product block handled with dense arrays.
_SMALL_DENSE = 50_000
#: Most precomputed non-zero pairs kept for the "pairs" Schur-complement mode.
_MAX_PAIRS = 5_000_000


def chol(A: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a symmetric positive-definite matrix (LAPACK ``potrf``)."""
    L, info = lapack.dpotrf(A, lower=1, clean=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"matrix not positive definite (potrf info {info})")
    return L


def chol_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve (LL')x = b from the lower Cholesky factor L (LAPACK ``potrs``)."""
    x, info = lapack.dpotrs(L, b, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"potrs info {info}")
    return x


def _dense(a: Any) -> np.ndarray:
    """A dense copy of a dense or sparse matrix."""
    return a.toarray() if sp.issparse(a) else np.asarray(a)


def _tril_positions(q: int) -> list[tuple[int, int]]:
    """Lower-triangle positions of a q×q matrix in column-major order (lme4's θ order)."""
    return [(i, j) for j in range(q) for i in range(j, q)]


@dataclass(frozen=True)
class ThetaLayout:
    """Where the elements of θ sit: block k owns the lower triangle of its T_k.

    Attributes
    ----------
    q
        Number of terms of every block.
    offsets
        Index of the first θ element of every block.
    lower
        Lower bound of every θ element: 0 on diagonals, ``-inf`` off them.
    """

    q: tuple[int, ...]
    offsets: tuple[int, ...]
    lower: np.ndarray

    @classmethod
    def from_q(cls, qs: tuple[int, ...]) -> ThetaLayout:
        """Layout of θ for blocks with ``qs`` terms each."""
        offsets, lower, pos = [], [], 0
        for q in qs:
            offsets.append(pos)
            lower.extend(0.0 if i == j else -np.inf for i, j in _tril_positions(q))
            pos += q * (q + 1) // 2
        return cls(tuple(qs), tuple(offsets), np.asarray(lower, dtype=float))

    @property
    def size(self) -> int:
        """Number of θ elements."""
        return int(self.lower.shape[0])

    def start(self) -> np.ndarray:
        """lme4's default start: 1 on the diagonals, 0 off them."""
        return np.where(np.isfinite(self.lower), 1.0, 0.0)

    def block_factor(self, theta: np.ndarray, k: int) -> np.ndarray:
        """The lower-triangular relative covariance factor T_k of block k."""
        q = self.q[k]
        T = np.zeros((q, q))
        for m, (i, j) in enumerate(_tril_positions(q)):
            T[i, j] = theta[self.offsets[k] + m]
        return T


@dataclass
class Factorization:
    """Everything computed from one θ that the profiled criterion and the modes need."""

    logdet_L: float
    K: np.ndarray  # Gram matrix of c = L⁻¹Λ'Z'[X y], shape (p+1, p+1)
    T: np.ndarray  # leading g×g relative covariance factor
    L1: np.ndarray  # (n1, g, g) per-level Cholesky factors of A₁₁
    M: np.ndarray  # (n1, g, g) L₁⁻¹T'
    Lam2: Any = None  # Λ of the non-leading random effects (dense or sparse)
    B: Any = None  # L₁⁻¹A₁₂ (dense or sparse; formed lazily in "pairs" mode)
    s_solve: Callable[[np.ndarray], np.ndarray] | None = None  # v -> S⁻¹v


class PLSProblem:
    """lme4's penalized least-squares problem for one :class:`Design`, as cross-products.

    Parameters
    ----------
    design
        The evaluated design. Only ``y``, ``X`` and the blocks are used.
    """

    def __init__(self, design: Design) -> None:
        blocks = design.blocks
        X, y = np.asarray(design.X, dtype=float), np.asarray(design.y, dtype=float)
        self.n, self.p = X.shape
        self.layout = ThetaLayout.from_q(tuple(b.q for b in blocks))
        Xy = np.column_stack([X, y])
        self.XyXy = Xy.T @ Xy
        lead_factor = blocks[0].factor
        self.lead = [k for k, b in enumerate(blocks) if b.factor == lead_factor]
        self.rest = [k for k, b in enumerate(blocks) if b.factor != lead_factor]

        # Leading part: per-level g×g blocks; column order = lead blocks' terms.
        gidx = np.asarray(blocks[0].group_idx, dtype=np.int64)
        self.n1 = n1 = blocks[0].n_levels
        Z1 = np.column_stack([blocks[k].Z for k in self.lead])
        self.g = g = Z1.shape[1]
        self.lead_cols: list[slice] = []
        t_rows, t_cols, t_idx, c = [], [], [], 0
        for k in self.lead:
            q = blocks[k].q
            self.lead_cols.append(slice(c, c + q))
            for m, (i, j) in enumerate(_tril_positions(q)):
                t_rows.append(c + i)
                t_cols.append(c + j)
                t_idx.append(self.layout.offsets[k] + m)
            c += q
        self._t_pos = (np.array(t_rows), np.array(t_cols), np.array(t_idx))
        self.G11 = group_products(gidx, n1, Z1)
        rows = np.arange(self.n)
        Z1s = sp.csr_matrix(
            (Z1.ravel(), ((gidx * g)[:, None] + np.arange(g)).ravel(), np.arange(0, self.n * g + 1, g)),
            shape=(self.n, n1 * g),
        )
        self.ZtXy1 = np.asarray(Z1s.T @ Xy).reshape(n1, g, self.p + 1)

        # Non-leading part, in lme4's order: block, then level, then term.
        self.Q2 = 0
        self.rest_offsets: list[int] = []
        self.rest_levels = [blocks[k].n_levels for k in self.rest]
        self.mode, self.dense_schur = "none", True
        if not self.rest:
            return
        zc, zr, zv, lr, lc, li = [], [], [], [], [], []
        for k in self.rest:
            b = blocks[k]
            self.rest_offsets.append(self.Q2)
            bidx = np.asarray(b.group_idx, dtype=np.int64)
            for t in range(b.q):
                zr.append(rows)
                zc.append(self.Q2 + bidx * b.q + t)
                zv.append(np.asarray(b.Z[:, t], dtype=float))
            base = self.Q2 + np.arange(b.n_levels) * b.q
            for m, (i, j) in enumerate(_tril_positions(b.q)):
                lr.append(base + i)
                lc.append(base + j)
                li.append(np.full(b.n_levels, self.layout.offsets[k] + m))
            self.Q2 += b.n_levels * b.q
        Q2 = self.Q2
        Z2 = sp.csr_matrix((np.concatenate(zv), (np.concatenate(zr), np.concatenate(zc))), shape=(self.n, Q2))
        self.G12 = (Z1s.T @ Z2).tocsr()
        self.G12.sort_indices()
        self.G22 = (Z2.T @ Z2).tocsc()
        self.dense_schur = Q2 <= DENSE_SCHUR_MAX
        # How A₂₁A₁₁⁻¹A₁₂ is formed: "small" (all dense: sparse-matrix overhead
        # dominates tiny problems), "pairs" (dense S accumulated from precomputed
        # products, see _prepare_pairs) or "sparse" (sparse products).
        if self.dense_schur and n1 * g * Q2 <= _SMALL_DENSE:
            self.mode = "small"
            self.G12 = self.G12.toarray().reshape(n1, g, Q2)
        elif self.dense_schur and self._prepare_pairs():
            self.mode = "pairs"
        else:
            self.mode = "sparse"
        if self.mode != "sparse":
            self.G22 = self.G22.toarray()
        self.ZtXy2 = np.asarray(Z2.T @ Xy)
        # Λ₂'s fixed sparsity pattern; data = θ[lind] (lme4's Lind).
        pattern = sp.csc_matrix(
            (np.concatenate(li).astype(float) + 1.0, (np.concatenate(lr), np.concatenate(lc))), shape=(Q2, Q2)
        )
        pattern.sort_indices()
        self._lam2 = (pattern.indices.copy(), pattern.indptr.copy(), pattern.data.astype(np.int64) - 1)
        self._eye2 = sp.identity(Q2, format="csc")

    def _prepare_pairs(self) -> bool:
        """Precompute H = G₁₂'WG₁₂ as one ``bincount`` per θ, W = blockdiag(M_j'M_j).

        For every level j of the leading factor and every pair of non-zeros
        (j,a,k), (j,b,l) of G₁₂ (s ≤ t in storage order) keep the product of
        the two values, the index of W_j[a,b] and the flat index of H[k,l];
        then H = Hh + Hh' with Hh the bincount (diagonal pairs weighted ½).
        Returns False (and keeps nothing) if there would be too many pairs.
        """
        G, g, Q2 = self.G12, self.g, self.Q2
        level_ptr = G.indptr[::g]
        counts = np.diff(level_ptr)
        if int((counts * (counts + 1) // 2).sum()) > _MAX_PAIRS:
            return False
        rows = np.repeat(np.arange(G.shape[0]), np.diff(G.indptr))
        lev, a = rows // g, rows % g
        first = np.arange(G.nnz)
        num = level_ptr[lev + 1] - first
        s_idx = np.repeat(first, num)
        t_idx = s_idx + np.arange(int(num.sum())) - np.repeat(np.cumsum(num) - num, num)
        coef = G.data[s_idx] * G.data[t_idx]
        coef[s_idx == t_idx] *= 0.5
        target = G.indices[s_idx].astype(np.intp) * Q2 + G.indices[t_idx]
        order = np.argsort(target, kind="stable")
        self._pairs = (
            target[order],
            coef[order],
            (lev[s_idx] * g * g + a[s_idx] * g + a[t_idx]).astype(np.intp)[order],
        )
        return True

    def lam2t(self, theta: np.ndarray, V: np.ndarray) -> np.ndarray:
        """Λ₂'V for a dense V with Q₂ rows, block by block (no sparse matrix)."""
        out = np.array(V, dtype=float, order="C", copy=True)
        for k, off, n_lev in zip(self.rest, self.rest_offsets, self.rest_levels):
            q = self.layout.q[k]
            T = self.layout.block_factor(theta, k)
            sl = slice(off, off + n_lev * q)
            if q == 1:
                out[sl] *= T[0, 0]
            else:
                part = out[sl].reshape(n_lev, q, -1)
                out[sl] = np.einsum("ba,jbm->jam", T, part).reshape(n_lev * q, -1)
        return out

    # ------------------------------------------------------------------
    def lead_factor(self, theta: np.ndarray) -> np.ndarray:
        """The g×g relative covariance factor shared by every level of the leading factor."""
        T = np.zeros((self.g, self.g))
        r, c, i = self._t_pos
        T[r, c] = theta[i]
        return T

    def lambda2(self, theta: np.ndarray) -> Any:
        """Λ of the non-leading random effects (dense for small problems, else sparse)."""
        indices, indptr, lind = self._lam2
        lam = sp.csc_matrix((theta[lind], indices, indptr), shape=(self.Q2, self.Q2))
        return lam.toarray() if self.mode == "small" else lam

    def factorize(self, theta: np.ndarray) -> Factorization:
        """Factor A_θ and form the Gram matrix of L_θ⁻¹Λ_θ'Z'[X y]."""
        theta = np.asarray(theta, dtype=float)
        T = self.lead_factor(theta)
        A11 = T.T @ self.G11 @ T
        A11[:, np.arange(self.g), np.arange(self.g)] += 1.0
        L1 = np.linalg.cholesky(A11)
        logdet = 2.0 * float(np.log(np.diagonal(L1, axis1=1, axis2=2)).sum())
        M = np.linalg.solve(L1, np.broadcast_to(T.T, L1.shape))
        c1 = (M @ self.ZtXy1).reshape(self.n1 * self.g, self.p + 1)
        K = c1.T @ c1
        fac = Factorization(logdet, K, T, L1, M)
        if not self.rest:
            return fac
        Lam2 = self.lambda2(theta)
        B = None
        if self.mode == "small":
            B = (M @ self.G12).reshape(self.n1 * self.g, self.Q2) @ Lam2
            S = Lam2.T @ self.G22 @ Lam2 - B.T @ B
            h = Lam2.T @ self.ZtXy2 - B.T @ c1
        elif self.mode == "pairs":
            Mt = np.swapaxes(M, 1, 2)
            target, coef, widx = self._pairs
            Hh = np.bincount(target, coef * (Mt @ M).ravel()[widx], minlength=self.Q2**2).reshape(self.Q2, -1)
            D = self.G22 - Hh - Hh.T
            S = self.lam2t(theta, self.lam2t(theta, D).T)  # Λ₂'DΛ₂ (D symmetric)
            Mtc = (Mt @ c1.reshape(self.n1, self.g, -1)).reshape(self.n1 * self.g, -1)
            h = self.lam2t(theta, self.ZtXy2 - self.G12.T @ Mtc)
        else:
            B = self._b_sparse(M, Lam2)
            S = Lam2.T @ self.G22 @ Lam2 - B.T @ B
            h = Lam2.T @ self.ZtXy2 - B.T @ c1
            if self.dense_schur:
                S = S.toarray()
        if self.dense_schur:
            S[np.diag_indices_from(S)] += 1.0
            L2 = chol(S)
            logdet += 2.0 * float(np.log(np.diag(L2)).sum())
            fac.K = K + h.T @ chol_solve(L2, h)

            def s_solve(v: np.ndarray) -> np.ndarray:
                return chol_solve(L2, v)

        else:
            S = (S + self._eye2).tocsc()
            lu = splu(S, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
            logdet += float(np.log(np.abs(lu.U.diagonal())).sum())
            fac.K = K + h.T @ lu.solve(np.asfortranarray(h))

            def s_solve(v: np.ndarray) -> np.ndarray:
                return lu.solve(np.asfortranarray(v))

        fac.logdet_L, fac.Lam2, fac.B, fac.s_solve = logdet, Lam2, B, s_solve
        return fac

    def _b_sparse(self, M: np.ndarray, Lam2: Any) -> sp.csc_matrix:
        """B = L₁⁻¹A₁₂ = blockdiag(M_j)G₁₂Λ₂ as a sparse matrix."""
        Mb = sp.bsr_matrix((M, np.arange(self.n1), np.arange(self.n1 + 1)), shape=(self.n1 * self.g,) * 2)
        return ((Mb @ self.G12) @ sp.csc_matrix(Lam2)).tocsc()

    # ------------------------------------------------------------------
    def conditional(
        self, fac: Factorization, beta: np.ndarray, sigma: float, condvar: bool = True
    ) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Conditional modes b = Λu and their conditional sds, per block.

        Parameters
        ----------
        fac
            The factorization at the estimate of θ.
        beta
            The fixed effects at which u solves the penalized least squares.
        sigma
            Residual sd.
        condvar
            Whether to compute the conditional sds.

        Returns
        -------
        modes, sds
            Per block (in design order), arrays of shape (levels, q): the modes
            and sqrt(diag(σ²ΛA⁻¹Λ')), the conditional sds of b given β, θ and σ
            (lme4's ``condVar``). ``sds`` is ``None`` if not computed.
        """
        n1, g = self.n1, self.g
        r1 = self.ZtXy1[..., self.p] - self.ZtXy1[..., : self.p] @ beta
        c1 = np.einsum("jab,jb->ja", fac.M, r1)
        ztr = c1
        u2 = None
        if self.rest and fac.B is None:
            fac.B = self._b_sparse(fac.M, fac.Lam2)
        if self.rest:
            r2 = self.ZtXy2[:, self.p] - self.ZtXy2[:, : self.p] @ beta
            u2 = fac.s_solve(fac.Lam2.T @ r2 - fac.B.T @ c1.ravel())
            ztr = c1 - (fac.B @ u2).reshape(n1, g)
        u1 = np.linalg.solve(np.swapaxes(fac.L1, 1, 2), ztr[..., None])[..., 0]
        b1 = u1 @ fac.T.T
        b2 = fac.Lam2 @ u2 if self.rest else None
        var1 = var2 = None
        if condvar:
            inner = np.broadcast_to(np.eye(g), (n1, g, g)).copy()
            if self.rest:
                step = max(1, _CHUNK_DOUBLES // max(self.Q2, 1) // g)
                for s in range(0, n1, step):
                    e = min(n1, s + step)
                    Bc = _dense(fac.B[s * g : e * g])
                    F = fac.s_solve(Bc.T).T
                    inner[s:e] += np.einsum("jak,jbk->jab", Bc.reshape(e - s, g, -1), F.reshape(e - s, g, -1))
                var2 = np.empty(self.Q2)
                LamT = sp.csc_matrix(fac.Lam2.T)
                step2 = max(1, _CHUNK_DOUBLES // self.Q2)
                for s in range(0, self.Q2, step2):
                    e = min(self.Q2, s + step2)
                    W = fac.s_solve(LamT[:, s:e].toarray())
                    var2[s:e] = np.asarray(LamT[:, s:e].multiply(W).sum(axis=0)).ravel()
                var2 *= sigma**2
            cv = np.swapaxes(fac.M, 1, 2) @ inner @ fac.M
            var1 = sigma**2 * np.diagonal(cv, axis1=1, axis2=2)
        modes: list[np.ndarray] = [np.empty(0)] * (len(self.lead) + len(self.rest))
        sds: list[np.ndarray] = [np.empty(0)] * len(modes)
        for k, cols in zip(self.lead, self.lead_cols):
            modes[k] = b1[:, cols].copy()
            if condvar:
                sds[k] = np.sqrt(np.maximum(var1[:, cols], 0.0))
        for k, off, n_lev in zip(self.rest, self.rest_offsets, self.rest_levels):
            q = self.layout.q[k]
            modes[k] = b2[off : off + n_lev * q].reshape(n_lev, q)
            if condvar:
                sds[k] = np.sqrt(np.maximum(var2[off : off + n_lev * q], 0.0)).reshape(n_lev, q)
        return modes, (sds if condvar else None)


class SparseEngine:
    """:class:`PLSProblem` behind the interface of :class:`bayeslmm._blockpls.BlockedPLS`.

    The REML problem uses it when the non-leading random effects are too many
    for a dense block (Q₂ > :data:`DENSE_SCHUR_MAX`); it has no analytic
    gradient (``gradient`` returns ``None``), so the optimiser differences the
    criterion instead.
    """

    def __init__(self, design: Design) -> None:
        self._design = design
        self.pls = PLSProblem(design)
        self.n, self.p = self.pls.n, self.pls.p
        self._fac: Factorization | None = None
        self._beta = np.zeros(self.p)
        self._RXt = np.zeros((0, 0))
        self.logdet_L = self.logdet_RX = self.r2 = np.nan

    def set_response(self, y: np.ndarray) -> None:
        """Install a new response (the cross-products are formed again)."""
        from dataclasses import replace

        self._design = replace(self._design, y=np.asarray(y, dtype=float))
        self.pls = PLSProblem(self._design)

    def factor(self, theta: np.ndarray) -> bool:
        """Factor at θ; False if a factorization fails."""
        try:
            fac = self.pls.factorize(np.asarray(theta, dtype=float))
            p = self.p
            G = self.pls.XyXy - fac.K
            if p:
                RXt = chol(G[:p, :p])
                beta = chol_solve(RXt, G[:p, p])
                ldx = 2.0 * float(np.log(np.diag(RXt)).sum())
            else:
                RXt, beta, ldx = np.zeros((0, 0)), np.zeros(0), 0.0
        except (np.linalg.LinAlgError, ValueError):
            return False
        self._fac, self._beta, self._RXt = fac, beta, RXt
        self.logdet_L, self.logdet_RX = fac.logdet_L, ldx
        self.r2 = max(float(G[p, p] - G[:p, p] @ beta), np.finfo(float).tiny)
        return True

    def gradient(self, reml: bool) -> None:
        """No analytic gradient on this path."""
        return None

    def fixef(self) -> np.ndarray:
        """β̂ at the factored θ."""
        return self._beta.copy()

    def rx_inverse(self) -> np.ndarray:
        """(R_X'R_X)⁻¹ at the factored θ."""
        return chol_solve(self._RXt, np.eye(self.p)) if self.p else np.zeros((0, 0))

    def conditional(self, sigma: float, condvar: bool) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
        """Per design block, the conditional modes and (if ``condvar``) their conditional sds."""
        return self.pls.conditional(self._fac, self._beta, sigma, condvar=condvar)
