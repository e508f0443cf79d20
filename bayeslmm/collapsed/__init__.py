"""The collapsed model: the group effects (and, where exact, the fixed effects) integrated out.

For a Gaussian model whose random-effect blocks all belong to one grouping
factor, or to two factors of which one is nested in the other, the group
effects are integrated out analytically: y ~ N(Xβ, σ²(I + ZΛ̃Λ̃'Z')) with
Λ̃ = Λ/σ the block-diagonal Cholesky factor of the group covariance relative
to σ (lme4's form). Per top-level group g, with the inner groups c nested in it:

* P_c = I + Λ̃ᵢ'Zᵢ'ZᵢΛ̃ᵢ = L_c L_c',  u_c = L_c⁻¹Λ̃ᵢ'Zᵢ'r,  U_c = L_c⁻¹Λ̃ᵢ'Zᵢ'Z_o;
* H_g = Z_o'Z_o − Σ_c U_c'U_c,  w_g = Z_o'r − Σ_c U_c'u_c  (Z_o'W⁻¹Z_o and Z_o'W⁻¹r);
* Q_g = I + Λ̃_o'H_gΛ̃_o = K_g K_g',  v_g = K_g⁻¹Λ̃_o'w_g;
* log p(y) = −½[n log 2πσ² + Σ_c log|P_c| + Σ_g log|Q_g| + (r'r − Σ u'u − Σ v'v)/σ²],

with r = e − X(β − β₀) and e = y − Xβ₀ the residual at the least-squares β₀.
The pipeline, one module per step (``docs/collapsed.md`` has the details):

1. :mod:`~bayeslmm.collapsed.structure`: which designs collapse; the per-group sums;
2. :mod:`~bayeslmm.collapsed.marginal`: the algebra above, once for NumPy and PyTensor,
   and the exact draws of the group effects;
3. :mod:`~bayeslmm.collapsed.graph`: the PyMC model (``fit.model``, other samplers);
4. :mod:`~bayeslmm.collapsed.kernels`, :mod:`~bayeslmm.collapsed.likelihood`,
   :mod:`~bayeslmm.collapsed.beta_marginal`, :mod:`~bayeslmm.collapsed.densities`:
   the numba log posterior and gradient NUTS calls;
5. :mod:`~bayeslmm.collapsed.posterior`: that posterior as a sampler target;
6. :mod:`~bayeslmm.collapsed.sample`: the route from design to posterior ``DataTree``.

This package imports steps 1-3 only; the numba steps load when a fit needs them.
"""

from .graph import build_collapsed_model
from .marginal import add_group_effects, collapsed_loglik
from .structure import MAX_Q, CollapsedStructure, SufficientStats, can_collapse, collapse_structure, sufficient_stats

__all__ = [
    "MAX_Q", "CollapsedStructure", "SufficientStats", "collapse_structure", "can_collapse", "sufficient_stats", "build_collapsed_model",
    "collapsed_loglik", "add_group_effects",
]
