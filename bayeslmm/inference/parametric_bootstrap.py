"""Parametric bootstrap of a REML/ML fit, as lme4's ``bootMer``.

Each replicate simulates a response from the fitted model -- new group
effects b = σΛu, u ~ N(0, I) (``use_u=False``, lme4's default), or the
conditional modes kept (``use_u=True``) -- plus σε, refits it by the same
criterion starting from the original optimum, and evaluates the statistic.
Replicate i draws from its own seed, ``SeedSequence(seed).spawn(nsim)[i]``,
so the results do not depend on how many processes share the work.
Percentile intervals follow ``boot::boot.ci(type = "perc")``: order statistics
interpolated on the normal quantile scale (``norm.inter``).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
from scipy.stats import norm

from ..errors import BayesLMMError
from .engine import FitState, fit_state, refit_response, restore_response, single_threaded_blas
from .params import VarLayout, tril_positions
from .report import format_percent

__all__ = ["BootReplicate", "BootstrapResult", "bootstrap", "percentile_interval", "norm_inter"]


@dataclass(frozen=True)
class BootReplicate:
    """One refit, as a bootstrap statistic sees it (also the original fit, for ``t0``).

    Attributes
    ----------
    method
        ``"REML"`` or ``"ML"``.
    theta
        The relative covariance parameters θ.
    beta
        The fixed effects, indexed by name.
    sigma
        The residual sd.
    sdcor
        The sds and correlations of the random effects and σ, named as :func:`confint` names them.
    converged
        Whether the refit's optimiser converged.
    """

    method: str
    theta: np.ndarray
    beta: pd.Series
    sigma: float
    sdcor: pd.Series
    converged: bool = True

    def default_statistic(self) -> pd.Series:
        """sds, correlations, σ, then the fixed effects (lme4's statistic for ``confint(method = "boot")``)."""
        return pd.concat([self.sdcor, self.beta])


def _default(rep: BootReplicate) -> pd.Series:
    return rep.default_statistic()


@dataclass(frozen=True)
class BootstrapResult:
    """Replicates of a parametric bootstrap (lme4's ``bootMer`` object).

    Attributes
    ----------
    t0
        The statistic on the original fit.
    replicates
        One row per replicate, one column per statistic (NaN where a refit failed).
    converged
        Whether each replicate's optimiser converged.
    failures
        Counts of the optimiser messages of the replicates that did not converge or failed.
    seed
        The seed the replicate seeds were spawned from (the entropy drawn when ``seed=None``).
    use_u
        Whether the conditional modes were kept.
    """

    t0: pd.Series
    replicates: pd.DataFrame
    converged: np.ndarray
    failures: Mapping[str, int]
    seed: int
    use_u: bool

    @property
    def nsim(self) -> int:
        """Number of replicates."""
        return len(self.replicates)

    @property
    def n_failed(self) -> int:
        """Replicates whose refit did not converge or failed."""
        return int((~self.converged).sum())

    def summary(self) -> str:
        """One line on the replicates, and one per kind of convergence failure."""
        lines = [f"Parametric bootstrap: {self.nsim} replicates (seed {self.seed}, use_u={self.use_u}); "
                 f"{self.n_failed} did not converge."]
        lines += [f"  {count} x {msg}" for msg, count in self.failures.items()]
        return "\n".join(lines)

    def percentile_interval(self, level: float = 0.95) -> pd.DataFrame:
        """Percentile intervals of every statistic (``boot.ci(type = "perc")``)."""
        return percentile_interval(self.replicates, level)

    def __repr__(self) -> str:
        return self.summary()


def norm_inter(t: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``boot:::norm.inter``: quantiles interpolated between order statistics on the normal scale."""
    t = np.sort(t[np.isfinite(t)])
    R = t.size
    if R == 0:
        return np.full(alpha.shape, np.nan)
    rk = (R + 1) * alpha
    k = np.trunc(rk).astype(int)
    out = np.empty(alpha.shape)
    for i, (a, kk, r) in enumerate(zip(alpha, k, rk)):
        if kk == r:
            out[i] = t[min(max(kk, 1), R) - 1]
        elif kk == 0:
            out[i] = t[0]
        elif kk >= R:
            out[i] = t[-1]
        else:
            z, z1, z2 = norm.ppf(a), norm.ppf(kk / (R + 1)), norm.ppf((kk + 1) / (R + 1))
            out[i] = t[kk - 1] + (z - z1) / (z2 - z1) * (t[kk] - t[kk - 1])
    return out


def percentile_interval(replicates: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Percentile bootstrap intervals of each column, labelled by ``level`` (``2.5 %``, ``97.5 %``)."""
    a = (1.0 - level) / 2.0
    alpha = np.array([a, 1.0 - a])
    rows = [norm_inter(replicates[c].to_numpy(dtype=float), alpha) for c in replicates.columns]
    return pd.DataFrame(rows, index=replicates.columns, columns=format_percent([a, 1.0 - a]))


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs; set before forking so the children inherit it."""

    state: FitState
    layout: VarLayout
    seeds: tuple[np.random.SeedSequence, ...]
    use_u: bool
    func: Callable[[BootReplicate], Any]
    columns: tuple[str, ...]
    mean: np.ndarray


_JOB: _Job | None = None


def _simulate(job: _Job, rng: np.random.Generator) -> np.ndarray:
    state = job.state
    y = job.mean.copy()
    if not job.use_u:
        pos = 0
        for b in state.design.blocks:
            q = b.q
            T = np.zeros((q, q))
            for k, (i, j) in enumerate(tril_positions(q)):
                T[i, j] = state.theta[pos + k]
            pos += q * (q + 1) // 2
            u = rng.standard_normal((b.n_levels, q))
            bvals = state.sigma * (u @ T.T)
            y += np.einsum("ij,ij->i", b.Z, bvals[b.group_idx])
    return y + state.sigma * rng.standard_normal(y.shape[0])


def _as_row(value: Any, columns: tuple[str, ...]) -> np.ndarray:
    if isinstance(value, pd.Series):
        return value.reindex(list(columns)).to_numpy(dtype=float)
    if isinstance(value, Mapping):
        return np.array([float(value[c]) for c in columns])
    return np.asarray(value, dtype=float).reshape(-1)


def _replicate(job: _Job, theta: np.ndarray, beta: np.ndarray, sigma: float, converged: bool) -> BootReplicate:
    names = list(job.state.design.fixed_names)
    return BootReplicate(
        job.state.method, theta, pd.Series(beta, index=names), sigma,
        pd.Series(job.layout.to_sdcor(theta, sigma), index=list(job.layout.names)), converged,
    )


def _run(indices: list[int]) -> tuple[list[int], np.ndarray, np.ndarray, list[str]]:
    job = _JOB
    assert job is not None
    out = np.full((len(indices), len(job.columns)), np.nan)
    ok = np.zeros(len(indices), dtype=bool)
    messages = []
    with single_threaded_blas():
        for r, i in enumerate(indices):
            rng = np.random.default_rng(job.seeds[i])
            try:
                refit = refit_response(job.state, _simulate(job, rng))
                if job.func is _default:  # the default statistic, in its column order, without building Series
                    out[r] = np.concatenate([job.layout.to_sdcor(refit.theta, refit.sigma), refit.beta])
                else:
                    rep = _replicate(job, refit.theta, refit.beta, refit.sigma, refit.converged)
                    out[r] = _as_row(job.func(rep), job.columns)
                ok[r] = refit.converged
                if not refit.converged:
                    messages.append(refit.message)
            except (np.linalg.LinAlgError, ValueError, FloatingPointError, BayesLMMError) as exc:
                messages.append(f"refit failed: {exc}")
    return indices, out, ok, messages


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    except ImportError:  # pragma: no cover - rich comes with PyMC
        return None
    return Progress(TextColumn("bootstrap"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())


def bootstrap(
    fit: Any,
    func: Callable[[BootReplicate], Any] | None = None,
    nsim: int = 1000,
    seed: int | None = None,
    use_u: bool = False,
    progressbar: bool = True,
    cores: int | None = None,
) -> BootstrapResult:
    """Parametric bootstrap of a REML/ML fit (lme4's ``bootMer``).

    Parameters
    ----------
    fit
        A REML or ML fit's state, ``fit.inference_state`` (the entry point is the fit's method).
    func
        Statistic of one refit: a function of a :class:`BootReplicate` returning a
        pandas Series, a mapping or an array. Default: the sds and correlations,
        σ and the fixed effects (:meth:`BootReplicate.default_statistic`). With
        ``cores > 1`` it runs in forked worker processes.
    nsim
        Number of replicates.
    seed
        Seed of the replicates; the same seed gives the same replicates for any ``cores``.
    use_u
        False: simulate new group effects (lme4's default); True: keep the conditional modes.
    progressbar
        Show a progress bar.
    cores
        Worker processes (default: every available CPU; 1 runs here).

    Returns
    -------
    BootstrapResult
    """
    global _JOB
    if isinstance(nsim, bool) or not isinstance(nsim, (int, np.integer)) or nsim < 1:
        raise BayesLMMError(f"nsim must be a positive integer, got {nsim!r}.")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise BayesLMMError(f"seed must be an integer or None, got {seed!r}.")
    state = fit_state(fit)
    layout = VarLayout.from_design(state.design)
    func = func if func is not None else _default
    ss = np.random.SeedSequence(seed)
    mean = state.design.X @ state.beta
    if use_u:
        for b, m in zip(state.design.blocks, state.modes):
            mean = mean + np.einsum("ij,ij->i", b.Z, m[b.group_idx])
    job0 = _Job(state, layout, (), use_u, func, (), mean)
    t0_raw = func(_replicate(job0, state.theta, state.beta, state.sigma, state.converged))
    if isinstance(t0_raw, pd.Series):
        columns = tuple(str(c) for c in t0_raw.index)
    elif isinstance(t0_raw, Mapping):
        columns = tuple(str(c) for c in t0_raw)
    else:
        columns = tuple(f"t{i + 1}" for i in range(np.asarray(t0_raw).size))
    t0 = pd.Series(_as_row(t0_raw, columns), index=list(columns))
    _JOB = _Job(state, layout, tuple(ss.spawn(int(nsim))), use_u, func, columns, mean)
    n_cores = max(1, min(int(cores) if cores is not None else len(os.sched_getaffinity(0)), int(nsim)))
    if n_cores > 1 and "fork" not in multiprocessing.get_all_start_methods():
        n_cores = 1
    size = max(1, min(25, int(nsim) // (4 * n_cores)))
    chunks = [list(range(s, min(int(nsim), s + size))) for s in range(0, int(nsim), size)]
    values = np.full((int(nsim), len(columns)), np.nan)
    ok = np.zeros(int(nsim), dtype=bool)
    failures: Counter = Counter()
    # Fork the workers before the progress bar starts its refresh thread.
    pool = multiprocessing.get_context("fork").Pool(n_cores) if n_cores > 1 else None
    bar = _progress(progressbar, int(nsim))
    try:
        task = bar.add_task("bootstrap", total=int(nsim)) if bar is not None else None
        if bar is not None:
            bar.start()
        results = pool.imap_unordered(_run, chunks) if pool is not None else map(_run, chunks)
        for idx, out, good, msgs in results:
            values[idx], ok[idx] = out, good
            failures.update(msgs)
            if bar is not None:
                bar.update(task, advance=len(idx))
    finally:
        if bar is not None:
            bar.stop()
        if pool is not None:
            pool.terminate()
            pool.join()
        _JOB = None
        restore_response(state)  # the in-process refits replaced the problem's response
    return BootstrapResult(t0, pd.DataFrame(values, columns=list(columns)), ok, dict(failures), int(ss.entropy), use_u)
