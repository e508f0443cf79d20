"""Column moments of a design, from its rows or from sums accumulated over data that were never loaded.

Default priors, starting values and the centring of the intercept use a few
moments of the data: the mean, sd and root mean square of the response and
the mean and scale of every model-matrix column. :class:`ColumnMoments` holds
them; :func:`moments_from_rows` computes them from a design's arrays, and the
out-of-core pass (:mod:`bayeslmm.outofcore`) computes the same numbers from
sums over the partitions, kept in a :class:`RowSummary` in place of the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .groupwise import group_products

__all__ = [
    "ColumnMoments", "RowSummary", "column_scale", "sd_from_sums", "scale_from_sums", "moments_from_gram", "gram_layout",
    "moments_from_rows",
]


@dataclass(frozen=True)
class ColumnMoments:
    """Moments of the response and of the model-matrix columns.

    Attributes
    ----------
    y_mean, y_sd, y_rms
        Mean, sd (n − 1 denominator) and root mean square of the response.
    x_mean
        Mean of every column of X.
    x_scale
        :func:`column_scale` of every column of X.
    z_scale
        Per design block, :func:`column_scale` of each of its Z columns.
    """

    y_mean: float
    y_sd: float
    y_rms: float
    x_mean: np.ndarray
    x_scale: np.ndarray
    z_scale: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class RowSummary:
    """What a design evaluated out of core keeps instead of its rows.

    Attributes
    ----------
    n
        Number of rows used (after rows with missing values were dropped).
    moments
        The column moments of those rows.
    source
        The data the rows came from, as shown in messages (``"20 Parquet files"``).
    n_partitions
        Number of partitions the pass read.
    """

    n: int
    moments: ColumnMoments
    source: str
    n_partitions: int


def column_scale(v: np.ndarray) -> float:
    """The scale of a predictor column for default priors: its sd, else its mean absolute value, else 1."""
    s = float(np.std(v, ddof=1)) if v.shape[0] > 1 else 0.0
    m = float(np.abs(v).mean())
    return s if s > 0 else (m if m > 0 else 1.0)  # an all-zero column scales like a constant 1


def sd_from_sums(n: float, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """The sd (n − 1 denominator) of columns known by their sums and sums of squares; 0 for a constant column."""
    s1, s2 = np.asarray(s1, float), np.asarray(s2, float)
    ss = np.maximum(s2 - n * (s1 / n) ** 2, 0.0)
    # A constant column leaves only rounding in s2 - n mean^2: count it as 0, as np.std gives.
    ss = np.where(ss <= 1e-13 * np.maximum(s2, 1e-300), 0.0, ss)
    return np.sqrt(ss / max(n - 1.0, 1.0))


def scale_from_sums(n: float, s1: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """:func:`column_scale` of columns known by their sums and sums of squares.

    A column with sd 0 is constant, so its mean absolute value is the absolute value of its mean.
    """
    sd = sd_from_sums(n, s1, s2)
    mabs = np.abs(np.asarray(s1, float)) / n
    return np.where(sd > 0, sd, np.where(mabs > 0, mabs, 1.0))


def moments_from_gram(S: np.ndarray, zcols: list[list[int]], xcols: list[int], yc: int) -> ColumnMoments:
    """:class:`ColumnMoments` from the cross-products S = W'W of ``W = [1, ...]``, the first column all ones.

    ``zcols`` (per block), ``xcols`` and ``yc`` are the columns of W holding Z, X and y.
    """
    n = float(S[0, 0])
    diag = np.diagonal(S)
    sy, syy = float(S[0, yc]), float(S[yc, yc])
    return ColumnMoments(
        y_mean=sy / n,
        y_sd=float(sd_from_sums(n, np.asarray([sy]), np.asarray([syy]))[0]),
        y_rms=float(np.sqrt(syy / n)),
        x_mean=S[0, xcols] / n,
        x_scale=scale_from_sums(n, S[0, xcols], diag[xcols]),
        z_scale=tuple(scale_from_sums(n, S[0, zc], diag[zc]) for zc in zcols),
    )


def gram_layout(qs: list[int], p: int) -> tuple[list[list[int]], list[int], int]:
    """Columns of ``W = [1, Z_1, ..., Z_K, X, y]`` for blocks of ``qs`` terms and p fixed effects: (zcols, xcols, yc)."""
    zcols, c = [], 1
    for q in qs:
        zcols.append(list(range(c, c + q)))
        c += q
    return zcols, list(range(c, c + p)), c + p


def moments_from_rows(y: np.ndarray, X: np.ndarray, Zs: list[np.ndarray], idx: np.ndarray, n_groups: int) -> ColumnMoments:
    """:class:`ColumnMoments` of a design's arrays, summed per group ``idx`` and then over groups.

    The order of the sums is the out-of-core pass's (:mod:`bayeslmm.outofcore`), so
    both give the same numbers to the last bit for the same rows in the same order.
    """
    W = np.column_stack([np.ones(y.shape[0]), *Zs, X, y])
    S = group_products(idx, n_groups, W).sum(axis=0)
    zcols, xcols, yc = gram_layout([Z.shape[1] for Z in Zs], X.shape[1])
    return moments_from_gram(S, zcols, xcols, yc)
