"""Chains in forked processes: each chain from its own start and seed, joined into one ``DataTree``.

:func:`sample_from_starts` runs a prepared PyMC step method once per chain
(``pm.sample(chains=1, ...)``), :func:`run_chains` spreads those calls over
processes. An interrupt (Ctrl-C, SIGINT) stops every process and raises
:class:`KeyboardInterrupt`: PyMC would otherwise return the draws made so far
as if the run were complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import pymc as pm

from ..compat import set_step_state, step_state
from ..errors import SamplingError
from .progress import Progress
from .settings import SamplerSettings, chain_processes

__all__ = ["INTERRUPTED", "sample_from_starts", "run_chains", "uninterrupted", "quiet_pymc"]

#: The message of the :class:`KeyboardInterrupt` an interrupted run raises.
INTERRUPTED = "Sampling was interrupted; no fit was returned."
#: Seconds a chain process is given to end after it is told to, before it is killed.
_STOP_GRACE = 1.0

_log = logging.getLogger("pymc")


def check_complete(tree: Any, draws: int) -> Any:
    """Return ``tree``, or raise :class:`KeyboardInterrupt` if it has fewer than ``draws`` draws per chain."""
    if int(tree["posterior"].sizes["draw"]) < int(draws):
        raise KeyboardInterrupt(INTERRUPTED)
    return tree


def uninterrupted(run: Callable[[], Any], draws: int) -> Any:
    """``run()`` (a sampler call), raising :class:`KeyboardInterrupt` if SIGINT arrived while it ran.

    PyMC and nutpie catch an interrupt and return the draws made so far as if
    the run were complete, or fail on them later (PyMC: "Not enough samples
    to build a trace"); this notes the signal itself and checks the length.
    """
    hit: list[bool] = []

    def handler(signum: int, frame: Any) -> None:
        hit.append(True)
        raise KeyboardInterrupt

    install = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous = signal.signal(signal.SIGINT, handler) if install else None
    try:
        tree = run()
    except BaseException:
        if hit:
            raise KeyboardInterrupt(INTERRUPTED) from None
        raise
    finally:
        if install:
            signal.signal(signal.SIGINT, previous)
    if hit:
        raise KeyboardInterrupt(INTERRUPTED)
    return check_complete(tree, draws)


@contextlib.contextmanager
def quiet_pymc():
    """Silence PyMC's per-call messages ("Sequential sampling (1 chains ...)"), which would come once per chain."""
    level = _log.level
    _log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        _log.setLevel(level)


def sample_from_starts(
    model: pm.Model, step: Any, starts: list[dict], chain_seeds: list[int], settings: SamplerSettings, what: str, size: int
) -> Any:
    """Run PyMC's NUTS ``step`` once per chain c, from ``starts[c]`` with seed ``chain_seeds[c]``, via :func:`run_chains`.

    Every chain starts from the step's tuning state as it is now, as in
    ``pm.sample``. Progress is shown once for all chains
    (:class:`~bayeslmm.sampling.progress.Progress`), headed by ``what`` and
    its ``size`` coordinates.
    """
    initial_state = step_state(step)
    cores = max(1, min(int(chain_processes(settings)), len(starts)))
    progress = Progress(
        f"NUTS (PyMC) on {what} ({size} coordinates)", len(starts), settings.tune, settings.draws, cores, settings.progressbar
    )

    def run_chain(c: int):
        set_step_state(step, initial_state)
        with quiet_pymc():
            return uninterrupted(
                lambda: pm.sample(
                    draws=int(settings.draws),
                    tune=int(settings.tune),
                    chains=1,
                    cores=1,
                    step=step,
                    initvals=starts[c],
                    random_seed=chain_seeds[c],
                    progressbar=False,
                    callback=progress.callback(c),
                    compute_convergence_checks=False,
                    model=model,
                ),
                settings.draws,
            )

    return run_chains(run_chain, len(starts), cores, progress)


def run_chains(run_chain: Callable[[int], Any], chains: int, cores: int, progress: Progress | None = None) -> Any:
    """Run ``run_chain(c)`` for c = 0..chains-1, on ``cores`` processes, and join the ``DataTree`` s along ``chain``.

    ``run_chain`` runs one chain with PyMC (``pm.sample(chains=1, ...)``)
    and must depend on c alone, so the draws do not depend on ``cores``.
    Chain c runs in process c mod ``cores``: this one and ``cores - 1``
    forked children, each running its chains one after another and sending
    back its ``posterior`` and ``sample_stats`` at the end (PyMC's own
    parallel sampling sends every draw to the parent and waits for the reply,
    which for a posterior as cheap as the collapsed one costs more than the
    sampling). Without ``fork`` (Windows) the chains run here in turn.

    The children ignore SIGINT and die with this process; on an interrupt or
    an error here they are ended before the exception propagates.
    """
    cores = max(1, min(int(cores), int(chains)))
    if cores > 1 and "fork" not in multiprocessing.get_all_start_methods():
        cores = 1
    start = time.perf_counter()
    children: list[tuple[Any, Any]] = []
    try:
        if cores > 1:
            ctx = multiprocessing.get_context("fork")
            for w in range(1, cores):
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_chain_worker, args=(run_chain, list(range(w, chains, cores)), send), daemon=True)
                proc.start()
                send.close()
                children.append((proc, receive))
        with progress or contextlib.nullcontext():
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
    except KeyboardInterrupt as exc:  # also one that came while waiting for the chain processes
        raise (exc if exc.args else KeyboardInterrupt(INTERRUPTED)) from None
    finally:
        _stop(children)
    return _join_chains([parts[c] for c in range(chains)], time.perf_counter() - start)


def _stop(children: list[tuple[Any, Any]]) -> None:
    """End the chain processes still running (an interrupt or an error here), without waiting for their chains."""
    for proc, _ in children:
        if proc.is_alive():
            proc.terminate()
    deadline = time.monotonic() + _STOP_GRACE
    for proc, receive in children:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
        receive.close()


def _die_with_parent() -> None:  # pragma: no cover - child process
    """On Linux, have the kernel end this process when its parent dies (``prctl(PR_SET_PDEATHSIG, SIGTERM)``)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def _chain_parts(tree: Any) -> tuple[Any, Any, dict]:
    """(posterior, sample_stats, the other groups such as ``observed_data``, which do not vary by chain)."""
    others = {name: tree[name].to_dataset() for name in tree.children if name not in ("posterior", "sample_stats")}
    return tree["posterior"].to_dataset(), tree["sample_stats"].to_dataset(), others


def _chain_worker(run_chain: Callable[[int], Any], ids: list[int], send: Any) -> None:  # pragma: no cover - child process
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops this process on an interrupt
    _die_with_parent()
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
