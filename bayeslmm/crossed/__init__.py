"""The crossed posterior: the largest crossed factor's group effects integrated out exactly.

For a Gaussian model with crossed grouping factors (students × lecturers ×
departments, plates × samples), the effects of one factor A are, given β, σ,
the sds and the other factors' effects b, independent per level of A. Their
Gaussian integral is the one-factor algebra of :mod:`bayeslmm.collapsed` on
the residuals r = y − Xβ − Σ_k Z_k b_k: per level a of A, with τ the sd of A's
term z,

    H_a = Σ z², w_a = Σ z r,  D_a = σ² + τ² H_a,
    log p(r_a) = −½[n_a log 2πσ² + log(D_a/σ²) + (r_a'r_a − τ² w_a²/D_a)/σ²].

NUTS then samples β, σ, the sds and the effects of the smaller factors only,
which removes the largest block of coordinates and the strongest posterior
correlations (between the effects of two crossed factors). A's effects are drawn
exactly afterwards from N(τ² w_a/D_a, σ²τ²/D_a), one draw per posterior draw.

1. :mod:`~bayeslmm.crossed.structure`: which designs take this path, and which factor is integrated;
2. :mod:`~bayeslmm.crossed.kernel`: the numba log posterior, its gradient and the exact draws;
3. :mod:`~bayeslmm.crossed.posterior`: that posterior as a sampler target
   (:class:`bayeslmm.sampling.DensityTarget`), and the route from design to ``DataTree``.
"""

from .structure import CrossedStructure, crossed_structure

__all__ = ["CrossedStructure", "crossed_structure"]
