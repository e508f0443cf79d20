"""The sampler driver: interrupts, the progress display, diagnostics messages, and the library internals it uses."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pymc as pm
import pytest
import xarray as xr

import bayeslmm
from bayeslmm import compat
from bayeslmm.errors import ConvergenceWarning
from bayeslmm.sampling import DensityTarget, SamplerSettings, diagnose, sample_target
from bayeslmm.sampling.progress import Progress

SLEEP = "Reaction ~ Days + (Days | Subject)"


# ---------------------------------------------------------------------------
# Ctrl-C: a real SIGINT to a process that is sampling
# ---------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def interrupt(args: list[str], marker: str, group: bool) -> tuple[subprocess.CompletedProcess, float, float, list[int]]:
    """Start ``args``, wait until ``marker`` is on stderr and a second of sampling has passed, send SIGINT.

    ``group``: to the whole process group, as a terminal's Ctrl-C does; else to the parent process alone.
    Returns the finished process (its stderr includes the lines before the signal), the time of the
    signal and the time every process had ended and closed its output (``time.monotonic()``, which is
    CLOCK_MONOTONIC, shared by the processes of one machine), and the chain processes seen.
    """
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    head = []
    try:
        for line in proc.stderr:
            head.append(line)
            if marker in line:
                break
        else:
            pytest.fail(f"sampling did not start: {''.join(head)}")
        time.sleep(1.0)
        assert proc.poll() is None, "the run ended before the interrupt"
        kids = _children(proc.pid)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT) if group else proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        ended = time.monotonic()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(args, proc.returncode, out, "".join(head) + err), sent, ended, kids


def lmer_script(chains: int) -> list[str]:
    """A script that fits sleepstudy with far too many draws, and on KeyboardInterrupt reports when and how many chain processes live."""
    code = (
        "import multiprocessing, sys, time\n"
        "import bayeslmm\n"
        "try:\n"
        f"    fit = bayeslmm.lmer({SLEEP!r}, bayeslmm.datasets.load('sleepstudy'), draws=200_000, chains={chains}, "
        f"cores={chains}, random_seed=1)\n"
        "except KeyboardInterrupt:\n"
        "    print('RAISED', time.monotonic(), len(multiprocessing.active_children()), file=sys.stderr, flush=True)\n"
        "    raise\n"
        "print('RETURNED', fit)\n"
    )
    return [sys.executable, "-c", code]


#: The requirement: KeyboardInterrupt is raised, every chain process stopped, within this many seconds of SIGINT.
STOP_SECONDS = 2.0
#: ... and the process has exited (interpreter shutdown of PyMC, PyTensor and numba included) within this many.
EXIT_SECONDS = 10.0


@pytest.mark.parametrize("chains, group", [(1, False), (2, False), (2, True)], ids=["1 chain", "2 chains", "2 chains, Ctrl-C"])
def test_an_interrupt_stops_every_chain_and_returns_no_fit(chains, group):
    done, sent, ended, kids = interrupt(lmer_script(chains), "NUTS (PyMC)", group)
    assert "RETURNED" not in done.stdout  # no fit that looks complete
    assert "KeyboardInterrupt: Sampling was interrupted; no fit was returned." in done.stderr, done.stderr[-2000:]
    raised, alive = [line.split()[1:] for line in done.stderr.splitlines() if line.startswith("RAISED")][0]
    assert int(alive) == 0  # every chain process had stopped when the exception reached the caller
    assert float(raised) - sent < STOP_SECONDS
    assert done.returncode != 0
    assert len(kids) >= chains - 1  # the forked chain processes were running
    assert not [k for k in kids if _running(k)]  # no orphans
    assert ended - sent < EXIT_SECONDS


def test_the_cli_exits_130_with_one_line_on_an_interrupt(tmp_path):
    csv = tmp_path / "sleep.csv"
    bayeslmm.datasets.load("sleepstudy").to_csv(csv, index=False)
    args = [sys.executable, "-m", "bayeslmm.cli", "fit", str(csv), SLEEP, "--draws", "200000", "--chains", "2",
            "--progressbar", "--out", str(tmp_path / "fit.nc")]
    done, sent, ended, kids = interrupt(args, "NUTS (PyMC)", group=True)
    assert done.returncode == 130, done.stderr
    after = done.stderr.split("in 2 processes\n", 1)[1]  # what came after the progress headline
    assert [line for line in after.splitlines() if line.strip()] == ["Interrupted (Ctrl-C): stopped before finishing."]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert not (tmp_path / "fit.nc").exists()
    assert not [k for k in kids if _running(k)]
    assert ended - sent < EXIT_SECONDS
