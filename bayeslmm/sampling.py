"""Stage 5: ``pm.Model`` -> posterior ``DataTree``, with convergence warnings.

NUTS runs through PyMC: its own sampler by default (``sampler="pymc"``), or
nutpie / numpyro when they are installed. PyMC's sampler is set up once and
its chains run in forked processes (:func:`run_chains`). After sampling, divergences, R-hat
above 1.01 and low effective sample sizes are reported as
:class:`~bayeslmm.errors.ConvergenceWarning` with advice.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import multiprocessing
import os
import time
import traceback
import warnings
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Mapping

import arviz as az
import numpy as np
import pymc as pm

from .errors import ConvergenceWarning, SamplingError

__all__ = ["SamplerSettings", "run_nuts", "run_chains", "sample_from_starts", "chain_processes", "diagnose", "Diagnostics"]

SAMPLERS = {"pymc": None, "nutpie": "nutpie", "numpyro": "numpyro"}


@dataclass(frozen=True)
class SamplerSettings:
    """What the user asked the sampler for."""

    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    random_seed: int | None = None
    target_accept: float = 0.8
    sampler: str = "pymc"
    progressbar: bool = True
    cores: int | None = None

    def validate(self) -> None:
        """Raise :class:`SamplingError` for settings NUTS cannot use."""
        for name in ("draws", "chains"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise SamplingError(f"{name} must be a positive integer, got {v!r}.")
        if not isinstance(self.tune, (int, np.integer)) or isinstance(self.tune, bool) or self.tune < 0:
            raise SamplingError(f"tune must be a non-negative integer, got {self.tune!r}.")
        if not (isinstance(self.target_accept, (float, int)) and 0 < self.target_accept < 1):
            raise SamplingError(f"target_accept must be between 0 and 1 (exclusive), got {self.target_accept!r}.")
        if self.random_seed is not None and (
            not isinstance(self.random_seed, (int, np.integer)) or isinstance(self.random_seed, bool)
        ):
            raise SamplingError(f"random_seed must be an integer or None, got {self.random_seed!r}.")
        if self.sampler not in SAMPLERS:
            raise SamplingError(f"sampler must be one of {sorted(SAMPLERS)}, got {self.sampler!r}.")
        module = SAMPLERS[self.sampler]
        if module is not None and importlib.util.find_spec(module) is None:
            raise SamplingError(
                f"sampler={self.sampler!r} needs the {module!r} package; install it with "
                "`pip install 'bayeslmm[fast]'`, or use sampler='pymc'."
            )


#: Largest number of sampled coordinates for which PyMC's NUTS adapts a dense mass matrix.
DENSE_MASS_MAX_DIM = 100


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


def run_nuts(model: pm.Model, settings: SamplerSettings, initvals: Mapping[str, Any] | None = None):
    """Sample a model with NUTS.

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
    """
    settings.validate()
    if settings.sampler == "pymc":
        return _run_pymc_nuts(model, settings, initvals)
    kwargs: dict[str, Any] = dict(
        draws=int(settings.draws),
        tune=int(settings.tune),
        chains=int(settings.chains),
        random_seed=settings.random_seed,
        progressbar=settings.progressbar,
        nuts_sampler=settings.sampler,
        model=model,
        compute_convergence_checks=False,
    )
    if settings.cores is not None:
        kwargs["cores"] = settings.cores
    kwargs["nuts_sampler_kwargs"] = {"target_accept": settings.target_accept}
    if initvals:
        kwargs["initvals"] = dict(initvals)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        warnings.filterwarnings("ignore", message=".*The number of samples is too small.*")
        return pm.sample(**kwargs)


def _run_pymc_nuts(model: pm.Model, settings: SamplerSettings, initvals: Mapping[str, Any] | None):
    """PyMC's NUTS: initialised once as ``pm.sample(init="jitter+adapt_<mass>")`` would, then one chain per call in :func:`run_chains`."""
    chains = int(settings.chains)
    seeds = np.random.SeedSequence(settings.random_seed).spawn(2)
    init_seeds = [int(np.random.default_rng(c).integers(2**30)) for c in seeds[0].spawn(chains)]
    chain_seeds = [int(np.random.default_rng(c).integers(2**30)) for c in seeds[1].spawn(chains)]
    with warnings.catch_warnings():
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


def chain_processes(settings: SamplerSettings) -> int:
    """Processes for the chains: ``settings.cores``, or every available CPU up to the number of chains.

    PyMC's own default is half the CPUs (it assumes hyper-threads); the chains are independent, so use them all.
    """
    return settings.cores if settings.cores is not None else min(settings.chains, available_cpus())


def sample_from_starts(
    model: pm.Model, step: Any, starts: list[dict], chain_seeds: list[int], settings: SamplerSettings, what: str, size: int
) -> Any:
    """Run PyMC's NUTS ``step`` once per chain c, from ``starts[c]`` with seed ``chain_seeds[c]``, via :func:`run_chains`.

    Every chain starts from the step's tuning state as it is now, as in
    ``pm.sample``; PyMC's per-call messages are replaced by one line naming
    ``what`` and its ``size`` coordinates.
    """
    initial_state = step.sampling_state
    parent = os.getpid()

    def run_chain(c: int):
        step.sampling_state = initial_state
        with _quiet_pymc():
            return pm.sample(
                draws=int(settings.draws),
                tune=int(settings.tune),
                chains=1,
                cores=1,
                step=step,
                initvals=starts[c],
                random_seed=chain_seeds[c],
                progressbar=settings.progressbar and os.getpid() == parent,
                compute_convergence_checks=False,
                model=model,
            )

    cores = chain_processes(settings)
    _log_chains(what, size, len(starts), cores, settings.progressbar)
    return run_chains(run_chain, len(starts), cores)


_log = logging.getLogger("pymc")


@contextlib.contextmanager
def _quiet_pymc():
    """Silence PyMC's per-call messages, which would come once per chain.

    ("Sequential sampling (1 chains ...)", "Only 10 samples per chain ..."); :func:`diagnose`
    reports on all chains together.
    """
    level = _log.level
    _log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        _log.setLevel(level)


def _log_chains(what: str, size: int, chains: int, cores: int, progressbar: bool) -> None:
    """One INFO line, through PyMC's logger, in place of PyMC's per-call ones."""
    jobs = max(1, min(int(cores), int(chains)))
    _log.info(
        "NUTS (PyMC) on %s (%d coordinates): %d chains in %d process(es)%s",
        what, size, chains, jobs, "; progress shown for this process's chains" if jobs > 1 and progressbar else "",
    )


def run_chains(run_chain: Callable[[int], Any], chains: int, cores: int) -> Any:
    """Run ``run_chain(c)`` for c = 0..chains-1, on ``cores`` processes, and join the ``DataTree`` s along ``chain``.

    ``run_chain`` runs one chain with PyMC (``pm.sample(chains=1, ...)``)
    and must depend on c alone, so the draws do not depend on ``cores``.
    Chain c runs in process c mod ``cores``: this one (with the progress bar,
    if any) and ``cores - 1`` forked children, each running its chains one
    after another and sending back its ``posterior`` and ``sample_stats`` at
    the end. PyMC's own parallel sampling sends every draw to the parent and
    waits for the reply, which for a posterior as cheap as the collapsed one
    (microseconds per gradient) made the 4-chain sleepstudy fit barely faster
    on 2 cores than one chain after another. Without ``fork`` (Windows) the
    chains run here in turn.
    """
    cores = max(1, min(int(cores), int(chains)))
    if cores > 1 and "fork" not in multiprocessing.get_all_start_methods():
        cores = 1
    start = time.perf_counter()
    children = []
    if cores > 1:
        ctx = multiprocessing.get_context("fork")
        for w in range(1, cores):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_chain_worker, args=(run_chain, list(range(w, chains, cores)), send), daemon=True)
            proc.start()
            send.close()
            children.append((proc, receive))
    try:
        parts = {c: _chain_parts(run_chain(c)) for c in range(0, chains, cores)}
        for proc, receive in children:
            try:
                result = receive.recv()
            except EOFError:
                result = ("error", "a sampling process ended without returning its chains")
            proc.join()
            if result[0] == "error":
                raise SamplingError(f"Sampling failed in a worker process: {result[1]}")
            parts.update(result[1])
    finally:  # an error or a KeyboardInterrupt here must not leave children sampling in the background
        for proc, _ in children:
            if proc.is_alive():
                proc.terminate()
                proc.join()
    return _join_chains([parts[c] for c in range(chains)], time.perf_counter() - start)


def _chain_parts(tree: Any) -> tuple[Any, Any, dict]:
    """(posterior, sample_stats, the other groups such as ``observed_data``, which do not vary by chain)."""
    others = {name: tree[name].to_dataset() for name in tree.children if name not in ("posterior", "sample_stats")}
    return tree["posterior"].to_dataset(), tree["sample_stats"].to_dataset(), others


def _chain_worker(run_chain: Callable[[int], Any], ids: list[int], send: Any) -> None:  # pragma: no cover - child process
    try:
        send.send(("ok", {c: _chain_parts(run_chain(c)) for c in ids}))
    except BaseException:  # the parent re-raises it as a SamplingError
        send.send(("error", traceback.format_exc(limit=3)))
    finally:
        send.close()


def _join_chains(parts: list[tuple[Any, Any, dict]], seconds: float) -> Any:
    import xarray as xr

    groups = {}
    for i, name in enumerate(("posterior", "sample_stats")):
        data = xr.concat([part[i] for part in parts], dim="chain")
        data = data.assign_coords(chain=np.arange(len(parts)))
        data.attrs = {**parts[0][i].attrs, "sampling_time": seconds}
        groups[name] = xr.DataTree(data)
    groups.update({name: xr.DataTree(data) for name, data in parts[0][2].items()})
    return xr.DataTree(children=groups)


@dataclass(frozen=True)
class Diagnostics:
    """Sampling diagnostics of a fit."""

    divergences: int
    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    draws: int
    chains: int
    tune: int


def diagnose(idata, var_names: list[str], tune: int, target_accept: float, warn: bool = True) -> Diagnostics:
    """Compute divergences, max R-hat and min ESS over ``var_names``, and warn.

    Parameters
    ----------
    idata
        The posterior DataTree.
    var_names
        Parameters to check (the model's free parameters and their transforms).
    tune
        Number of tuning steps (reported only).
    target_accept
        Used in the advice about divergences.
    warn
        Whether to emit :class:`ConvergenceWarning`.
    """
    post = idata.posterior
    chains, draws = int(post.sizes["chain"]), int(post.sizes["draw"])
    div = int(np.asarray(idata.sample_stats["diverging"]).sum()) if "diverging" in idata.sample_stats else 0
    rhats, bulk, tail = [], [], []
    for v in var_names:
        arr = np.asarray(post[v].values, dtype=float).reshape(chains, draws, -1)
        keep = np.nanstd(arr, axis=(0, 1)) > 0
        if not keep.any():
            continue
        arr = arr[:, :, keep]
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            if chains > 1 and draws >= 4:
                rhats.append(np.atleast_1d(az.rhat(arr)))
            if draws >= 4:
                bulk.append(np.atleast_1d(az.ess(arr, method="bulk")))
                tail.append(np.atleast_1d(az.ess(arr, method="tail", prob=(0.05, 0.95))))
    max_rhat = float(np.nanmax(np.concatenate(rhats))) if rhats else float("nan")
    min_bulk = float(np.nanmin(np.concatenate(bulk))) if bulk else float("nan")
    min_tail = float(np.nanmin(np.concatenate(tail))) if tail else float("nan")
    diag = Diagnostics(div, max_rhat, min_bulk, min_tail, draws, chains, tune)
    if warn:
        _warn(diag, target_accept)
    return diag


def _warn(d: Diagnostics, target_accept: float) -> None:
    total = d.draws * d.chains
    if d.divergences:
        warnings.warn(
            f"There were {d.divergences} divergent transitions after tuning ({100 * d.divergences / total:.1f}% "
            f"of draws). The posterior may be biased. Try target_accept={min(0.99, target_accept + 0.1):.2f} "
            "or higher, more informative priors on the group-level sds, or, for the full model, the other "
            "parameterization of a grouping factor (fit.parameterization shows the choice made): "
            "parameterization={'<factor>': 'noncentered'} when its levels have few rows or its sd may be small, "
            "'centered' when each level's data pin its effect down.",
            ConvergenceWarning,
            stacklevel=4,
        )
    if np.isfinite(d.max_rhat) and d.max_rhat > 1.01:
        warnings.warn(
            f"The largest R-hat is {d.max_rhat:.3f} (> 1.01): the chains have not mixed. "
            "Run more tuning steps and draws (tune=, draws=) and check the trace plots.",
            ConvergenceWarning,
            stacklevel=4,
        )
    low = 100 * d.chains
    if np.isfinite(d.min_ess_bulk) and min(d.min_ess_bulk, d.min_ess_tail) < low:
        warnings.warn(
            f"Low effective sample size (bulk ESS {d.min_ess_bulk:.0f}, tail ESS {d.min_ess_tail:.0f}; "
            f"want at least {low}, 100 per chain). Posterior means and intervals may be unreliable; "
            "run more draws.",
            ConvergenceWarning,
            stacklevel=4,
        )


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
