"""Stage 5: a posterior -> ``DataTree`` of named draws, by NUTS.

Two entry points share the seeds, the chain processes and the progress display:

* :func:`sample_target`: any log density with its gradient on an
  unconstrained vector (a :class:`DensityTarget`), under PyMC's NUTS or
  nutpie's; no PyTensor graph is compiled. The collapsed model uses it
  (:mod:`bayeslmm.collapsed.sample`); other models plug in by implementing
  the four members of :class:`DensityTarget`.
* :func:`run_nuts`: a PyMC model (the full model, or any model with
  ``sampler="numpyro"``), initialised as ``pm.sample`` would.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pymc as pm
import xarray as xr
from pymc.step_methods.hmc.quadpotential import QuadPotentialDiagAdapt, QuadPotentialFullAdapt

from .. import naming
from ..compat import CompiledLogpDlogp
from .chains import quiet_pymc, sample_from_starts, uninterrupted
from .progress import Progress
from .settings import SamplerSettings, chain_processes

__all__ = ["DensityTarget", "sample_target", "laplace_sd", "run_nuts", "mass_matrix", "DENSE_MASS_MAX_DIM"]

#: PyMC's jitter: uniform on (−1, 1) in every unconstrained coordinate.
_JITTER = 1.0
#: Largest number of sampled coordinates for which PyMC's NUTS adapts a dense mass matrix.
DENSE_MASS_MAX_DIM = 100


@runtime_checkable
class DensityTarget(Protocol):
    """What :func:`sample_target` samples: a log density on R^size and how its draws become named variables.

    Attributes
    ----------
    size
        Number of unconstrained coordinates.
    dims
        Per named variable, its dimension names after ``(chain, draw)``.
    coords
        Coordinate values of every dimension named in ``dims``.
    """

    size: int
    dims: Mapping[str, tuple[str, ...]]
    coords: Mapping[str, Any]

    def logp_dlogp(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """Log density (up to a constant; ``-inf`` outside the support) and its gradient at ``x``, shape ``(size,)``."""

    def named_draws(self, x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Draws ``x`` ``(S, size)`` -> named variables ``(S, ...)``; ``rng`` draws whatever was integrated out."""


def laplace_sd(value_grad: Any, x: np.ndarray, rel_step: float = 1e-4) -> np.ndarray:
    """Posterior sds of the Laplace approximation at ``x``: sqrt(diag((-H)⁻¹)).

    The Hessian H is taken by central differences of the gradient (2·d
    gradient calls). Where -H is not positive definite (``x`` far from a
    mode), ones are returned, PyMC's own default scale.
    """
    d = x.size
    H = np.empty((d, d))
    for j in range(d):
        h = rel_step * max(1.0, abs(x[j]))
        e = np.zeros(d)
        e[j] = h
        H[:, j] = (value_grad(x + e)[1] - value_grad(x - e)[1]) / (2 * h)
    H = 0.5 * (H + H.T)
    try:
        cov = np.linalg.inv(np.linalg.cholesky(-H))
        sd = np.sqrt(np.einsum("ij,ij->j", cov, cov))
    except np.linalg.LinAlgError:
        return np.ones(d)
    return sd if np.all(np.isfinite(sd)) and np.all(sd > 0) else np.ones(d)


def _chain_starts(target: DensityTarget, start: np.ndarray, chains: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray]:
    """Starting points per chain, and the Laplace sds at ``start`` (the initial mass-matrix scales).

    The chains start at ``start`` plus a uniform jitter of up to two Laplace
    sds per coordinate, capped at PyMC's ±1: over-dispersed for R-hat, but on
    the right scale for every coordinate. Evaluating the target here also
    compiles it (a numba kernel's first call) before any sampler forks or threads.
    """
    target.logp_dlogp(start)
    scale = laplace_sd(target.logp_dlogp, start)
    width = np.minimum(2 * scale, _JITTER)
    return [start + rng.uniform(-1.0, 1.0, start.shape) * width for _ in range(chains)], scale


def sample_target(
    target: DensityTarget, start: np.ndarray, settings: SamplerSettings, what: str = "the posterior", dense_mass: bool = False
) -> xr.DataTree:
    """Sample a :class:`DensityTarget` with NUTS; return a ``DataTree`` of its named draws.

    Parameters
    ----------
    target
        The log density and its naming of draws.
    start
        Central starting point, ``(target.size,)``; chains start jittered
        around it (up to two Laplace-approximation sds, :func:`laplace_sd`,
        which also give the initial mass matrix).
    settings
        Draws, tuning steps, chains, seed, target acceptance, processes,
        progress; ``settings.sampler`` is ``"pymc"`` (PyMC's NUTS, chains in
        forked processes) or ``"nutpie"``.
    what
        Named in the progress display.
    dense_mass
        With PyMC's NUTS, adapt a dense mass matrix (initialised at the
        Laplace variances) instead of a diagonal one; see :func:`mass_matrix`
        for when that pays. nutpie adapts its own.

    Returns
    -------
    xarray.DataTree
        ``posterior`` with the variables of ``target.named_draws`` and
        ``sample_stats``. The same ``settings.random_seed`` gives the same draws.

    Raises
    ------
    KeyboardInterrupt
        If sampling was interrupted: every chain process is stopped first.
    """
    settings.validate()
    seeds = np.random.SeedSequence(settings.random_seed).spawn(3)
    rng = np.random.default_rng(seeds[0])
    starts, scale = _chain_starts(target, np.asarray(start, dtype=float), settings.chains, rng)
    run = _nutpie if settings.sampler == "nutpie" else _pymc_nuts
    idata = run(target, starts, scale, rng, seeds[1], settings, what, dense_mass)
    _name_posterior(idata, target, np.random.default_rng(seeds[2]))
    return idata


def _pymc_nuts(target: DensityTarget, starts: list, scale: np.ndarray, rng: Any, seed: Any, settings: SamplerSettings, what: str,
               dense_mass: bool = False) -> Any:
    """PyMC's NUTS on a stand-in model with one flat vector, through its ``logp_dlogp_func`` hook."""
    with pm.Model() as proxy:
        theta = pm.Flat(naming.UNCONSTRAINED, shape=target.size)
    value = proxy.rvs_to_values[theta]
    if dense_mass:
        potential = QuadPotentialFullAdapt(target.size, np.mean(starts, axis=0), np.diag(scale**2), 10, rng=rng)
    else:
        potential = QuadPotentialDiagAdapt(target.size, np.mean(starts, axis=0), scale**2, 10, rng=rng)
    step = pm.NUTS(
        [value],
        model=proxy,
        logp_dlogp_func=CompiledLogpDlogp(target.logp_dlogp),
        potential=potential,
        target_accept=settings.target_accept,
        initial_point={value.name: starts[0]},
        rng=np.random.default_rng(seed),
    )
    chain_seeds = [int(np.random.default_rng(c).integers(2**31)) for c in seed.spawn(settings.chains)]
    return sample_from_starts(proxy, step, [{naming.UNCONSTRAINED: s} for s in starts], chain_seeds, settings, what, target.size)


def _nutpie(target: DensityTarget, starts: list, scale: np.ndarray, rng: Any, seed: Any, settings: SamplerSettings, what: str,
            dense_mass: bool = False) -> Any:
    """The NUTS of nutpie (the ``fast`` extra) on the same function, through ``nutpie.compiled_pyfunc.from_pyfunc``.

    Its Rust sampler's per-step overhead is far below PyMC's Python NUTS, but
    its chains are threads that share the GIL while the Python callback runs.
    """
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc

    value_grad = target.logp_dlogp

    def make_logp():
        def logp(x: np.ndarray, **_: Any) -> tuple[float, np.ndarray]:
            return value_grad(np.asarray(x, dtype=np.float64))

        return logp

    def make_expand(_seed1: int, _seed2: int, _chain: int):
        def expand(x: np.ndarray, **_: Any) -> dict[str, np.ndarray]:
            return {naming.UNCONSTRAINED: np.array(x, dtype=np.float64)}

        return expand

    def initial_point(chain_seed: int) -> np.ndarray:
        return starts[int(chain_seed) % len(starts)] if chain_seed is not None else starts[0]

    compiled = from_pyfunc(
        target.size, make_logp, make_expand, [np.dtype("float64")], [(target.size,)], [naming.UNCONSTRAINED],
        make_initial_point_fn=initial_point,
    )
    shown = settings.progressbar and _is_terminal()
    with Progress(f"NUTS (nutpie) on {what} ({target.size} coordinates)", settings.chains, settings.tune, settings.draws,
                  1, enabled=settings.progressbar and not shown, counted=False):
        return uninterrupted(
            lambda: nutpie.sample(
                compiled,
                draws=int(settings.draws),
                tune=int(settings.tune),
                chains=int(settings.chains),
                cores=chain_processes(settings),
                seed=int(np.random.default_rng(seed).integers(2**31)),
                save_warmup=False,
                progress_bar=shown,
                target_accept=settings.target_accept,
            ),
            settings.draws,
        )


def _is_terminal() -> bool:
    """Whether a sampler's own live progress bar renders properly: standard error is a terminal, or a notebook shows it."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)()) or "ipykernel" in sys.modules


def _name_posterior(idata: Any, target: DensityTarget, rng: np.random.Generator) -> None:
    """Replace the stand-in vector in ``idata.posterior`` by the target's named variables."""
    old = idata.posterior
    chains, ndraw = int(old.sizes["chain"]), int(old.sizes["draw"])
    x = np.asarray(old[naming.UNCONSTRAINED].values, dtype=float).reshape(chains * ndraw, -1)
    data = {}
    for name, arr in target.named_draws(x, rng).items():
        d = target.dims[name]
        data[name] = xr.DataArray(
            arr.reshape((chains, ndraw) + arr.shape[1:]),
            dims=("chain", "draw") + d,
            coords={"chain": old["chain"].values, "draw": old["draw"].values, **{k: target.coords[k] for k in d}},
        )
    idata["posterior"] = xr.DataTree(xr.Dataset(data, attrs=dict(old.attrs)))


def mass_matrix(model: pm.Model) -> str:
    """``"full"`` (dense) for models of at most :data:`DENSE_MASS_MAX_DIM` coordinates, else ``"diag"``.

    In the full model with centered blocks, the intercept and the mean of a
    factor's group effects are strongly (negatively) correlated a posteriori:
    only their sum is well determined. A diagonal mass matrix cannot follow that
    ridge, so NUTS takes tiny steps and deep trees and diverges now and then
    (crossed Penicillin: step size 0.05, tree depth 6, divergences). A dense
    mass matrix removes the linear correlation (tree depth 3, no divergences,
    about 5 times the ESS). Its adaptation costs O(d³) per tuning step, hence the cap.
    """
    dim = sum(int(np.prod(v.shape)) for v in model.initial_point().values())
    return "full" if dim <= DENSE_MASS_MAX_DIM else "diag"


def run_nuts(model: pm.Model, settings: SamplerSettings, initvals: Mapping[str, Any] | None = None) -> xr.DataTree:
    """Sample a PyMC model with NUTS.

    Parameters
    ----------
    model
        The PyMC model.
    settings
        Draws, tuning steps, chains, seed, target acceptance and backend.
    initvals
        Optional starting values (e.g. from the REML fit), in the model's
        value-variable space.

    Returns
    -------
    xarray.DataTree
        The ArviZ posterior.

    Raises
    ------
    KeyboardInterrupt
        If sampling was interrupted.
    """
    settings.validate()
    if settings.sampler == "pymc":
        return _run_pymc_nuts(model, settings, initvals)
    size = sum(int(np.prod(v.shape)) for v in model.initial_point().values())
    shown = settings.progressbar and _is_terminal()
    kwargs: dict[str, Any] = dict(
        draws=int(settings.draws),
        tune=int(settings.tune),
        chains=int(settings.chains),
        random_seed=settings.random_seed,
        progressbar=shown,
        nuts_sampler=settings.sampler,
        model=model,
        compute_convergence_checks=False,
    )
    if settings.cores is not None:
        kwargs["cores"] = settings.cores
    kwargs["nuts_sampler_kwargs"] = {"target_accept": settings.target_accept}
    if initvals:
        kwargs["initvals"] = dict(initvals)
    with (
        Progress(f"NUTS ({settings.sampler}) on the model ({size} coordinates)", settings.chains, settings.tune,
                 settings.draws, 1, enabled=settings.progressbar and not shown, counted=False),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*The number of samples is too small.*")
        return uninterrupted(lambda: pm.sample(**kwargs), settings.draws)


def _run_pymc_nuts(model: pm.Model, settings: SamplerSettings, initvals: Mapping[str, Any] | None) -> Any:
    """PyMC's NUTS: initialised once as ``pm.sample(init="jitter+adapt_<mass>")`` would, then one chain per call.

    PyMC's "Initializing NUTS ..." message comes with the progress display only.
    """
    chains = int(settings.chains)
    seeds = np.random.SeedSequence(settings.random_seed).spawn(2)
    init_seeds = [int(np.random.default_rng(c).integers(2**30)) for c in seeds[0].spawn(chains)]
    chain_seeds = [int(np.random.default_rng(c).integers(2**30)) for c in seeds[1].spawn(chains)]
    with warnings.catch_warnings(), (contextlib.nullcontext() if settings.progressbar else quiet_pymc()):
        warnings.filterwarnings("ignore", message=".*QuadPotentialFullAdapt is an experimental feature.*")
        points, step = pm.init_nuts(
            init=f"jitter+adapt_{mass_matrix(model)}",
            chains=chains,
            model=model,
            random_seed=init_seeds,
            progressbar=False,
            initvals=dict(initvals) if initvals else None,
            tune=int(settings.tune),
            target_accept=settings.target_accept,
        )
    # pm.sample takes starting values on the variables' own scale (it cannot back-transform every
    # transform from a value-space point), so map init_nuts' jittered points back once
    free = list(model.free_RVs)
    to_rvs = model.compile_fn(
        model.replace_rvs_by_values(free), inputs=model.value_vars, on_unused_input="ignore", mode="FAST_COMPILE"
    )
    starts = [{rv.name: np.asarray(v) for rv, v in zip(free, to_rvs(point))} for point in points]
    size = int(sum(np.size(v) for v in points[0].values()))
    with warnings.catch_warnings():  # inherited by the forked chain processes
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        return sample_from_starts(model, step, starts, chain_seeds, settings, "the full model", size)
