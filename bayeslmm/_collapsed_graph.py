"""The collapsed model as a PyTensor graph: ``fit.model``, saved fits, and the optional samplers.

The default sampler never compiles this graph (see
:mod:`bayeslmm._collapsed_nuts`), but the PyMC model of a collapsed fit is
built from it, so users can inspect and extend it and ``sampler="nutpie"`` or
``"numpyro"`` can run it. The q×q algebra of :mod:`bayeslmm.collapsed` is
unrolled into elementwise expressions over the vector of groups
(:mod:`bayeslmm._smallmat`); variables, dims and priors are the full model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from . import _smallmat as sm
from . import naming
from .design import BlockDesign
from .model import _dist, _rv
from .priors import Priors

if TYPE_CHECKING:
    from .collapsed import SufficientStats

__all__ = ["graph_loglik", "block_factor"]

_LOG_2PI = float(np.log(2.0 * np.pi))


class _TensorOps:
    """PyTensor side of :func:`_graph_loglik`: entries are vectors over groups, parameters scalars."""

    def __init__(self, width: int) -> None:
        self.width = width

    @staticmethod
    def const(a: np.ndarray) -> Any:
        return pt.constant(np.ascontiguousarray(a, dtype=float))

    def resid(self, base: np.ndarray, M: np.ndarray, delta: Any) -> Any:
        return self.const(base) - pt.dot(self.const(M), delta) if M.shape[1] else self.const(base)

    def fold(self, x: Any) -> Any:
        return x if sm.is_zero(x) or self.width == 1 else x.reshape((-1, self.width)).sum(axis=1)

    @staticmethod
    def total(x: Any) -> Any:
        return 0 if sm.is_zero(x) else pt.sum(x)


def graph_loglik(st: SufficientStats, delta: Any, sigma: Any, lam_o: sm.Mat, lam_i: sm.Mat) -> Any:
    """The collapsed log-likelihood as a PyTensor expression (the algebra of :mod:`bayeslmm.collapsed`)."""
    ops = _TensorOps(st.structure.width)
    qo, qi = st.oo.shape[1], st.ii.shape[1]
    lt_o = sm.scale(lam_o, 1.0 / sigma)
    H = [[ops.const(st.oo[:, a, b]) for b in range(qo)] for a in range(qo)]
    w = [[ops.resid(st.oe[:, a], st.oX[:, a, :], delta)] for a in range(qo)]
    rr = st.ee
    if st.XX.shape[0]:
        rr = st.ee - 2.0 * pt.dot(delta, st.Xe) + pt.dot(delta, pt.dot(ops.const(st.XX), delta))
    logdet: Any = 0
    if qi:
        lt_i = sm.scale(lam_i, 1.0 / sigma)
        A = [[ops.const(st.ii[:, a, b]) for b in range(qi)] for a in range(qi)]
        L = sm.cholesky(sm.add(sm.identity(qi), sm.matmul(sm.transpose(lt_i), sm.matmul(A, lt_i))), pt)
        Y = sm.solve_lower(L, sm.transpose(lt_i))
        u = sm.matmul(Y, [[ops.resid(st.ie[:, a], st.iX[:, a, :], delta)] for a in range(qi)])
        U = sm.matmul(Y, [[ops.const(st.io[:, a, b]) for b in range(qo)] for a in range(qi)])
        logdet = ops.total(sm.logdet_chol(L, pt))
        rr = rr - ops.total(sm.sum_squares(u))
        H = sm.sub(H, [[ops.fold(x) for x in row] for row in sm.gram(U, U)])
        w = sm.sub(w, [[ops.fold(x) for x in row] for row in sm.gram(U, u)])
    K = sm.cholesky(sm.add(sm.identity(qo), sm.matmul(sm.transpose(lt_o), sm.matmul(H, lt_o))), pt)
    v = sm.solve_lower(K, sm.matmul(sm.transpose(lt_o), w))
    quad = rr - ops.total(sm.sum_squares(v))
    logdet = logdet + ops.total(sm.logdet_chol(K, pt))
    return -0.5 * (st.n * (_LOG_2PI + 2.0 * pt.log(sigma)) + logdet + quad / sigma**2)


def block_factor(block: BlockDesign, priors: Priors) -> sm.Mat:
    """Create a block's sd (and LKJ) variables, named as in the full model; return its Cholesky factor."""
    label = block.label
    tdim = naming.term_dim(label)
    sd_priors = [priors.sd(label, t) for t in block.terms]
    if block.q == 1:
        sd = _rv(naming.sd(label), sd_priors, tdim, f"block {label!r}")
        return [[sd[0]]]
    chol, corr, stds = pm.LKJCholeskyCov(
        naming.chol(label),
        n=block.q,
        eta=priors.cor(label).kwargs.get("eta", 1.0),
        sd_dist=_dist(sd_priors, f"block {label!r}"),
        compute_corr=True,
        store_in_trace=False,
    )
    pm.Deterministic(naming.sd(label), stds, dims=tdim)
    pm.Deterministic(naming.cor(label), corr, dims=(tdim, naming.term_dim2(label)))
    return [[chol[i, j] if j <= i else 0 for j in range(block.q)] for i in range(block.q)]
