"""Stage 5: posterior draws by NUTS, with convergence diagnostics.

* :mod:`~bayeslmm.sampling.settings`: what the user asked for (:class:`SamplerSettings`);
* :mod:`~bayeslmm.sampling.driver`: the two entry points, :func:`sample_target` for any
  log density with its gradient (:class:`DensityTarget`) and :func:`run_nuts` for a PyMC model;
* :mod:`~bayeslmm.sampling.chains`: chains in forked processes, stopped together on an interrupt;
* :mod:`~bayeslmm.sampling.progress`: one progress display for all chains;
* :mod:`~bayeslmm.sampling.diagnostics`: divergences, R-hat and ESS, with
  :class:`~bayeslmm.errors.ConvergenceWarning` s that give advice.
"""

from .chains import run_chains, sample_from_starts
from .diagnostics import Diagnostics, diagnose
from .driver import DENSE_MASS_MAX_DIM, DensityTarget, laplace_sd, mass_matrix, run_nuts, sample_target
from .settings import SAMPLERS, SamplerSettings, available_cpus, chain_processes

__all__ = [
    "SAMPLERS", "SamplerSettings", "DensityTarget", "sample_target", "run_nuts", "run_chains", "sample_from_starts", "chain_processes",
    "available_cpus", "laplace_sd", "mass_matrix", "DENSE_MASS_MAX_DIM", "diagnose", "Diagnostics",
]
