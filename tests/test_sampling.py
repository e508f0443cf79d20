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
from types import SimpleNamespace

import arviz as az
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


# ---------------------------------------------------------------------------
# The sampler driver on any target
# ---------------------------------------------------------------------------
class Gaussian:
    """A correlated bivariate normal, named ``"x"`` over dimension ``"coord"``: the smallest DensityTarget."""

    size = 2
    dims = {"x": ("coord",)}
    coords = {"coord": ["a", "b"]}
    mean = np.array([3.0, -1.0])
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])

    def logp_dlogp(self, x):
        r = x - self.mean
        g = -np.linalg.solve(self.cov, r)
        return 0.5 * float(r @ g), g

    def named_draws(self, x, rng):
        return {"x": x}


@pytest.mark.parametrize("sampler", ["pymc", "nutpie"])
def test_any_density_target_is_sampled_and_named(sampler):
    if sampler == "nutpie":
        pytest.importorskip("nutpie")
    target = Gaussian()
    assert isinstance(target, DensityTarget)
    settings = SamplerSettings(draws=1000, tune=500, chains=2, random_seed=3, progressbar=False, sampler=sampler)
    tree = sample_target(target, np.zeros(2), settings)
    x = tree.posterior["x"]
    assert x.dims == ("chain", "draw", "coord") and list(x.coord.values) == ["a", "b"] and x.shape == (2, 1000, 2)
    draws = x.values.reshape(-1, 2)
    # the exact mean, within 4 Monte Carlo standard errors of each coordinate
    ess = np.array([float(az.ess(x.values[..., j])) for j in range(2)])
    assert np.all(np.abs(draws.mean(axis=0) - target.mean) < 4 * np.sqrt(np.diag(target.cov) / ess))
    again = sample_target(target, np.zeros(2), settings)
    np.testing.assert_array_equal(again.posterior["x"].values, x.values)  # the same seed, the same draws


# ---------------------------------------------------------------------------
# Progress: one display for every chain; plain lines off a terminal; silence on request
# ---------------------------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self):
        return True


def run_progress(stream, enabled=True):
    progress = Progress("NUTS (PyMC) on a test", chains=2, tune=10, draws=30, processes=2, enabled=enabled, stream=stream)
    with progress:
        for chain in range(2):
            count = progress.callback(chain)
            for i in range(40):
                stats = [{"diverging": chain == 1 and i in (20, 30)}]
                if count is not None:
                    count(draw=SimpleNamespace(draw_idx=i, tuning=i < 10, stats=stats))
                time.sleep(0.01)
    return stream.getvalue()


def test_progress_in_a_terminal_is_one_line_for_all_chains():
    out = run_progress(Terminal())
    head, rest = out.split("\n", 1)
    assert head == "NUTS (PyMC) on a test: 2 chains x 40 iterations (10 tuning) in 2 processes"
    assert rest.count("\n") == 1 and rest.endswith("\n")  # one line, rewritten in place
    updates = rest.split("\r")[1:]
    assert len(updates) >= 3 and "chains " in updates[0]  # redrawn, with each chain's share
    assert updates[-1].startswith("Sampled 2 chains x 30 draws after 10 tuning steps in ") and "2 divergences" in updates[-1]


def test_progress_off_a_terminal_is_a_few_plain_lines_and_silent_when_off():
    out = run_progress(io.StringIO())
    lines = out.splitlines()
    assert "\r" not in out and "\x1b" not in out
    assert lines[0].startswith("NUTS (PyMC) on a test: 2 chains") and lines[-1].startswith("Sampled 2 chains")
    assert 2 <= len(lines) <= 5
    assert run_progress(io.StringIO(), enabled=False) == ""


def test_a_fit_without_progressbar_writes_nothing(capfd):
    data = bayeslmm.datasets.load("sleepstudy")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bayeslmm.lmer(SLEEP, data, draws=30, tune=30, chains=2, random_seed=1, progressbar=False)
        bayeslmm.lmer("Reaction ~ Days + (1 | Subject)", data, draws=30, tune=30, chains=2, random_seed=1, progressbar=False,
                      collapse=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


# ---------------------------------------------------------------------------
# Diagnostics say what they can and cannot check
# ---------------------------------------------------------------------------
def posterior(chains: int, draws: int, diverging: int = 0):
    rng = np.random.default_rng(0)
    flags = np.zeros((chains, draws), dtype=bool)
    flags[0, :diverging] = True
    return xr.DataTree(children={
        "posterior": xr.DataTree(xr.Dataset({"sigma": (("chain", "draw"), rng.normal(size=(chains, draws)))})),
        "sample_stats": xr.DataTree(xr.Dataset({"diverging": (("chain", "draw"), flags)})),
    })


def test_one_chain_says_rhat_needs_two_and_asks_for_its_own_ess():
    with pytest.warns(ConvergenceWarning) as caught:
        diag = diagnose(posterior(1, 50), ["sigma"], tune=50, target_accept=0.8)
    messages = [str(w.message) for w in caught]
    assert np.isnan(diag.max_rhat) and diag.rhat_note == "R-hat needs 2 or more chains (this fit has 1)"
    assert any(m.startswith("R-hat needs 2 or more chains (this fit has 1)") and "NaN" in m for m in messages)
    low = [m for m in messages if "effective sample size" in m]
    assert low and "want at least 100)" in low[0] and "per chain" not in low[0]
    with pytest.warns(ConvergenceWarning, match=r"want at least 400 \(100 per chain\)"):
        diagnose(posterior(4, 20), ["sigma"], tune=50, target_accept=0.8)
    assert diagnose(posterior(4, 20), ["sigma"], tune=50, target_accept=0.8, warn=False).rhat_note == ""


def test_divergence_advice_follows_the_parameterization():
    with pytest.warns(ConvergenceWarning, match=r"integrated out here, so there is no funnel") as caught:
        diagnose(posterior(2, 100, diverging=2), ["sigma"], tune=50, target_accept=0.8, parameterization={"Subject": "collapsed"})
    assert not any("parameterization={" in str(w.message) for w in caught)
    with pytest.warns(ConvergenceWarning, match=r"parameterization=\{'plate': 'noncentered'\}"):
        diagnose(posterior(2, 100, diverging=2), ["sigma"], tune=50, target_accept=0.8,
                 parameterization={"plate": "centered", "sample": "centered"})


# ---------------------------------------------------------------------------
# Library internals (bayeslmm.compat): these fail loudly when PyMC or PyTensor move them
# ---------------------------------------------------------------------------
def test_pymc_nuts_runs_a_compiled_logp_dlogp_and_restores_its_state():
    target = Gaussian()
    with pm.Model() as proxy:
        theta = pm.Flat("theta", shape=2)
    value = proxy.rvs_to_values[theta]
    step = pm.NUTS([value], model=proxy, logp_dlogp_func=compat.CompiledLogpDlogp(target.logp_dlogp),
                   initial_point={value.name: np.zeros(2)})
    state = compat.step_state(step)
    tree = pm.sample(draws=200, tune=200, chains=1, cores=1, step=step, initvals={"theta": np.zeros(2)}, random_seed=1,
                     progressbar=False, compute_convergence_checks=False, model=proxy)
    assert tree.posterior["theta"].shape == (1, 200, 2)
    compat.set_step_state(step, state)
    again = pm.sample(draws=200, tune=200, chains=1, cores=1, step=step, initvals={"theta": np.zeros(2)}, random_seed=1,
                      progressbar=False, compute_convergence_checks=False, model=proxy)
    np.testing.assert_array_equal(again.posterior["theta"].values, tree.posterior["theta"].values)


def test_pytensor_blas_setting_is_where_link_pip_blas_expects_it():
    import pytensor
    from pytensor.link.c import cmodule

    param = pytensor.config._config_var_dict["blas__ldflags"]
    assert hasattr(param, "_default") and callable(cmodule.try_blas_flag) and callable(cmodule.default_blas_ldflags)


BLAS_SCRIPT = """
import warnings
warnings.simplefilter("error", UserWarning)  # PyTensor's "could not link to a BLAS installation" is a UserWarning
import numpy as np, pytensor, pytensor.tensor as pt
from pytensor.compile.mode import Mode
import bayeslmm.model
x, y = pt.dmatrix("x"), pt.dmatrix("y")
f = pytensor.function([x, y], x @ y, mode=Mode(linker="cvm", optimizer="fast_run"))  # C, with PyTensor's BLAS ops
a = np.arange(6.0).reshape(2, 3)
assert np.allclose(f(a, a.T), a @ a.T)
print([type(node.op).__name__ for node in f.maker.fgraph.toposort()])
print(pytensor.config.blas__ldflags)
"""


def test_pytensor_links_a_blas_in_a_fresh_process():
    pytest.importorskip("scipy_openblas32")
    done = subprocess.run([sys.executable, "-c", BLAS_SCRIPT], capture_output=True, text=True, timeout=600,
                          env={k: v for k, v in os.environ.items() if k != "PYTENSOR_FLAGS"})
    assert done.returncode == 0, done.stderr
    assert "could not link to a BLAS" not in done.stderr
    ops, flags = done.stdout.splitlines()[-2:]
    assert "Dot22" in ops or "Gemm" in ops, ops  # the product ran in PyTensor's C BLAS operation
    assert "scipy_openblas" in flags and "-Ddgemm_=scipy_dgemm_" in flags


# ---------------------------------------------------------------------------
# Boundaries of the sampler and the collapsed engine
# ---------------------------------------------------------------------------
PACKAGE = Path(bayeslmm.__file__).parent
#: Modules of the sampler and the collapsed engine (and what they build on) held to the import rules.
OWN = ["collapsed", "crossed", "sampling", "parameterization", "groupwise", "compat", "model", "inits", "check", "api"]


def module_imports() -> dict[str, set[str]]:
    """For every module of the package, the package modules it imports anywhere in its text."""
    import ast

    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_pkg else parts)
        package = name if is_pkg else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):  # imports inside functions count too
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
                deps.add(target)
                deps.update(f"{target}.{a.name}" for a in node.names)
        graph[name] = deps
    # a package that contains the importer is already being imported: not an edge
    return {k: {d for d in v if d in graph and not k.startswith(d + ".")} for k, v in graph.items()}


def test_no_import_cycle_through_the_sampler_or_the_collapsed_engine():
    graph = module_imports()
    own = {m for m in graph if any(m.startswith(f"bayeslmm.{o}") for o in OWN)}

    def edges(module):  # importing a.b.c also runs the __init__ of a.b, unless the importer is inside it
        for target in graph[module]:
            yield target
            parent = target.rsplit(".", 1)[0]
            if parent in graph and not module.startswith(parent + ".") and parent != module:
                yield parent

    def reaches(start, goal, seen):
        for step in edges(start):
            if step == goal:
                return True
            if step not in seen:
                seen.add(step)
                if reaches(step, goal, seen):
                    return True
        return False

    cycles = [m for m in sorted(own) if reaches(m, m, set())]
    assert not cycles


def test_no_private_names_imported_across_modules():
    import ast

    bad = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if not any(rel.startswith(o) for o in OWN):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("bayeslmm")):
                bad += [f"{rel}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert not bad
