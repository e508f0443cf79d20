"""Unrolled algebra on small matrices whose entries are vectors over groups.

A "small matrix" here is a list of rows, each a list of entries. An entry is
either an array-like expression (a PyTensor tensor or a NumPy array, usually a
vector over groups, possibly broadcast against draws) or the Python number
``0`` for a structural zero, which every function skips. The same code thus
builds elementwise PyTensor graphs (which compile in seconds, where batched
``pt.linalg`` ops took minutes cold) and runs vectorised NumPy computations
over draws and groups.

Only ``+``, ``-``, ``*``, ``/`` and the backend's ``sqrt`` and ``log`` are used;
pass the backend module (``numpy`` or ``pytensor.tensor``) as ``xp``.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

__all__ = [
    "Mat", "is_zero", "zeros", "identity", "transpose", "matmul", "add", "sub", "scale", "gram", "cholesky", "solve_lower",
    "solve_lower_t", "logdet_chol", "sum_squares", "block_diag",
]

Mat = list[list[Any]]
"""Row-major nested list of entries."""


def is_zero(x: Any) -> bool:
    """Whether ``x`` is a structural zero (the Python number ``0``)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == 0


def _add(a: Any, b: Any) -> Any:
    if is_zero(a):
        return b
    if is_zero(b):
        return a
    return a + b


def _mul(a: Any, b: Any) -> Any:
    if is_zero(a) or is_zero(b):
        return 0
    if isinstance(a, (int, float)) and a == 1:
        return b
    if isinstance(b, (int, float)) and b == 1:
        return a
    return a * b


def _neg_add(a: Any, b: Any) -> Any:
    """``a - b`` with structural zeros."""
    if is_zero(b):
        return a
    if is_zero(a):
        return -b
    return a - b


def _sum(terms: Sequence[Any]) -> Any:
    out: Any = 0
    for t in terms:
        out = _add(out, t)
    return out


def zeros(rows: int, cols: int) -> Mat:
    """A ``rows x cols`` matrix of structural zeros."""
    return [[0 for _ in range(cols)] for _ in range(rows)]


def identity(q: int) -> Mat:
    """The ``q x q`` identity, with Python ``1.0`` on the diagonal."""
    return [[1.0 if i == j else 0 for j in range(q)] for i in range(q)]


def transpose(A: Mat) -> Mat:
    """``A'``."""
    if not A:
        return []
    return [[A[i][j] for i in range(len(A))] for j in range(len(A[0]))]


def matmul(A: Mat, B: Mat) -> Mat:
    """``A B``."""
    inner = len(B)
    cols = len(B[0]) if B else 0
    return [[_sum([_mul(A[i][k], B[k][j]) for k in range(inner)]) for j in range(cols)] for i in range(len(A))]


def add(A: Mat, B: Mat) -> Mat:
    """``A + B``."""
    return [[_add(a, b) for a, b in zip(ra, rb)] for ra, rb in zip(A, B)]


def sub(A: Mat, B: Mat) -> Mat:
    """``A - B``."""
    return [[_neg_add(a, b) for a, b in zip(ra, rb)] for ra, rb in zip(A, B)]


def scale(A: Mat, s: Any) -> Mat:
    """``s A`` for a scalar (or broadcastable) ``s``."""
    return [[_mul(a, s) for a in row] for row in A]


def gram(A: Mat, B: Mat) -> Mat:
    """``A' B`` without forming ``A'``."""
    return matmul(transpose(A), B)


def cholesky(A: Mat, xp: Any) -> Mat:
    """Lower Cholesky factor ``L`` of a symmetric positive-definite ``A`` (``A = L L'``).

    Only the lower triangle of ``A`` is read.
    """
    q = len(A)
    L: Mat = zeros(q, q)
    for j in range(q):
        pivot = _neg_add(A[j][j], _sum([_mul(L[j][k], L[j][k]) for k in range(j)]))
        L[j][j] = xp.sqrt(pivot)
        for i in range(j + 1, q):
            num = _neg_add(A[i][j], _sum([_mul(L[i][k], L[j][k]) for k in range(j)]))
            L[i][j] = 0 if is_zero(num) else num / L[j][j]
    return L


def solve_lower(L: Mat, B: Mat) -> Mat:
    """``L^{-1} B`` for lower-triangular ``L`` (forward substitution)."""
    q = len(L)
    cols = len(B[0]) if B else 0
    X: Mat = zeros(q, cols)
    for c in range(cols):
        for i in range(q):
            num = _neg_add(B[i][c], _sum([_mul(L[i][k], X[k][c]) for k in range(i)]))
            X[i][c] = 0 if is_zero(num) else num / L[i][i]
    return X


def solve_lower_t(L: Mat, B: Mat) -> Mat:
    """``L'^{-1} B`` for lower-triangular ``L`` (back substitution)."""
    q = len(L)
    cols = len(B[0]) if B else 0
    X: Mat = zeros(q, cols)
    for c in range(cols):
        for i in reversed(range(q)):
            num = _neg_add(B[i][c], _sum([_mul(L[k][i], X[k][c]) for k in range(i + 1, q)]))
            X[i][c] = 0 if is_zero(num) else num / L[i][i]
    return X


def logdet_chol(L: Mat, xp: Any) -> Any:
    """``log |L L'| = 2 sum_i log L_ii``."""
    return 2.0 * _sum([xp.log(L[i][i]) for i in range(len(L))])


def sum_squares(A: Mat) -> Any:
    """Sum of the squared entries of ``A`` (``u'u`` for a column ``u``)."""
    return _sum([_mul(a, a) for row in A for a in row])


def block_diag(blocks: Sequence[Mat]) -> Mat:
    """Block-diagonal matrix of square blocks."""
    q = sum(len(b) for b in blocks)
    out: Mat = zeros(q, q)
    off = 0
    for b in blocks:
        for i, row in enumerate(b):
            for j, v in enumerate(row):
                out[off + i][off + j] = v
        off += len(b)
    return out
