"""Per-group sums of products and per-group least squares, by ``np.bincount``.

The collapsed likelihood's sufficient statistics, the moment estimates that
choose a parameterization, and the no-pooling fits all need, for every
level g of a grouping factor, sums over its rows of products of columns
(Z_g'Z_g, Z_g'X_g, Z_g'r_g) and the least-squares coefficients they give.
They are computed here once, in O(n) per pair of columns.
"""

from __future__ import annotations

import numpy as np

__all__ = ["group_products", "group_least_squares"]


def group_products(idx: np.ndarray, n_groups: int, left: np.ndarray, right: np.ndarray | None = None) -> np.ndarray:
    """``out[g, a, b]`` = the sum over the rows i of group g of ``left[i, a] * right[i, b]``.

    Parameters
    ----------
    idx
        Group of every row, ``(n,)`` with values in ``[0, n_groups)``.
    n_groups
        Number of groups.
    left, right
        Columns, ``(n, a)`` and ``(n, b)``; without ``right`` the symmetric
        Gram matrices of ``left`` (each off-diagonal sum computed once).

    Returns
    -------
    numpy.ndarray
        ``(n_groups, a, b)``.
    """
    symmetric = right is None
    right = left if right is None else right
    out = np.zeros((n_groups, left.shape[1], right.shape[1]))
    for a in range(left.shape[1]):
        for b in range(a if symmetric else 0, right.shape[1]):
            out[:, a, b] = np.bincount(idx, weights=left[:, a] * right[:, b], minlength=n_groups)
            if symmetric:
                out[:, b, a] = out[:, a, b]
    return out


def group_least_squares(
    idx: np.ndarray,
    n_groups: int,
    Z: np.ndarray,
    y: np.ndarray,
    *,
    gram: np.ndarray | None = None,
    ridge: float | None = None,
    rtol: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares coefficients of ``y`` on ``Z`` within every group.

    Parameters
    ----------
    idx, n_groups
        Group of every row and number of groups.
    Z
        Predictors, ``(n, q)``.
    y
        Response, ``(n,)``.
    gram
        ``group_products(idx, n_groups, Z)``, if already computed.
    ridge
        None: a group whose scaled ``Z_g'Z_g`` has an eigenvalue below
        ``rtol`` times its largest (or fewer than q rows) cannot be fit and
        gets NaN. A number: every group is fit, with ``ridge`` times the mean
        diagonal of ``Z_g'Z_g`` (at least 1) added to its diagonal.
    rtol
        The eigenvalue ratio of the estimability test (without ``ridge``).

    Returns
    -------
    coefs : numpy.ndarray
        ``(n_groups, q)``.
    sizes : numpy.ndarray
        Rows per group, ``(n_groups,)``.
    """
    q = Z.shape[1]
    sizes = np.bincount(idx, minlength=n_groups)
    G = group_products(idx, n_groups, Z) if gram is None else gram
    rhs = group_products(idx, n_groups, Z, y[:, None])[:, :, 0]
    if ridge is not None:
        scale = np.maximum(np.trace(G, axis1=1, axis2=2) / q, 1.0)
        return np.linalg.solve(G + ridge * scale[:, None, None] * np.eye(q), rhs[:, :, None])[:, :, 0], sizes
    # Scale to unit diagonal so the eigenvalue test does not depend on the columns' units.
    d = np.sqrt(np.einsum("gii->gi", G))
    safe = np.where(d > 0, d, 1.0)
    Gs = G / safe[:, :, None] / safe[:, None, :]
    w = np.linalg.eigvalsh(Gs)
    ok = (sizes >= q) & (d > 0).all(axis=1) & (w[:, 0] > rtol * w[:, -1])
    coefs = np.full((n_groups, q), np.nan)
    if ok.any():
        sol = np.linalg.solve(Gs[ok], (rhs[ok] / safe[ok])[:, :, None])[:, :, 0]
        coefs[ok] = sol / safe[ok]
    return coefs, sizes
