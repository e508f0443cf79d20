"""bayeslmm against Bambi: wall time, effective sample size per second, divergences.

Run as ``python benchmarks/bench_sampling.py`` after ``bash benchmarks/setup_bambi.sh``
(Bambi 0.21 pins formulae<0.7, so it lives in its own venv,
``benchmarks/.venv-bambi``, with nutpie). Every fit runs in a fresh subprocess of
its own system's Python, with default settings except the seed: 4 chains × 1000
draws after 1000 tuning steps. Bambi runs once per sampler in
``--bambi-samplers`` (default ``pymc nutpie``), each as
``model.fit(inference_method=SAMPLER, ...)``; the ratio column compares
bayeslmm with Bambi's best sampler on each case, the one with the highest
ESS/s. Options: ``--cases`` (a subset), ``--skip-bambi``,
``--bambi-samplers``, ``--bambi-timeout``, ``--skip-scale``, ``--skip-cold``,
``--json PATH`` (save the raw results).

Inside each subprocess the data are made first, then one untimed warm-up fit
of the same formula on at most 500 rows (2 draws, 1 chain) compiles what can be
compiled (PyMC's C code, or nutpie's numba functions), then the timed fit
runs: "wall s" is formula -> posterior of that fit. ESS is the minimum bulk ESS (``arviz.ess``) over the population-level
parameters both systems have: fixed effects, group-level sds and
correlations, residual sd (not the group effects). ESS/s = ESS / wall s.

Two more rows: ``scale`` fits 1,000,000 rows × 10,000 groups ``(x | g)`` with
bayeslmm alone and reports wall time and the peak resident memory of that
subprocess (``ru_maxrss``); ``cold`` runs ``bayeslmm demo`` in a new process
with empty PyTensor and numba caches.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO / "tests" / "data" / "data"  # the lme4 data sets shipped with the tests
OURS = REPO / ".venv" / "bin" / "python"
BAMBI = HERE / ".venv-bambi" / "bin" / "python"

CASES: dict[str, tuple[str, str]] = {
    "sleepstudy": ("Reaction ~ Days + (Days | Subject)", "sleepstudy"),
    "penicillin": ("diameter ~ 1 + (1 | plate) + (1 | sample)", "penicillin"),
    "pastes": ("strength ~ 1 + (1 | batch/cask)", "pastes"),
    "sim_20k": ("y ~ x + (x | g)", "sim:20000:500"),
    "sim_100k": ("y ~ x + (x | g)", "sim:100000:2000"),
}
SCALE = ("y ~ x + (x | g)", "sim:1000000:10000")
SEED = 20261122
SETTINGS = dict(draws=1000, tune=1000, chains=4)
BAMBI_SAMPLERS = ("pymc", "nutpie")  # values of Bambi's ``inference_method``


# ---------------------------------------------------------------------------
# Worker side (runs under either Python)
# ---------------------------------------------------------------------------
def simulate(n: int, groups: int, seed: int = 1) -> pd.DataFrame:
    """``y = 2 + 0.7 x + b0[g] + b1[g] x + e``: sds 1 and 0.5, correlation 0.3, residual sd 1."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, size=n)
    x = rng.normal(size=n)
    cov = np.array([[1.0, 0.15], [0.15, 0.25]])
    b = rng.multivariate_normal([0.0, 0.0], cov, size=groups)
    y = 2.0 + 0.7 * x + b[g, 0] + b[g, 1] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": np.char.add("g", g.astype(str)).astype(object)})


def load(source: str) -> pd.DataFrame:
    if source.startswith("sim:"):
        _, n, groups = source.split(":")
        return simulate(int(n), int(groups))
    return pd.read_csv(SHARED / f"{source}.csv")


def _min_ess(arrays: list[np.ndarray]) -> float:
    import arviz as az

    if np.asarray(arrays[0]).shape[1] < 4:  # the warm-up fit
        return float("nan")
    out = []
    for a in arrays:
        a = np.asarray(a, dtype=float)
        a = a.reshape(a.shape[0], a.shape[1], -1)
        for k in range(a.shape[2]):
            if np.std(a[:, :, k]) > 0:
                out.append(float(az.ess(a[:, :, k], method="bulk")))
    return min(out)


def _fit_bayeslmm(formula: str, data: pd.DataFrame, **kw: Any) -> tuple[Any, float, int, dict]:
    import bayeslmm
    from bayeslmm import naming

    fit = bayeslmm.lmer(formula, data, progressbar=False, **kw)
    post = fit.idata.posterior
    arrays = [post[naming.FIXED].values, post[naming.SIGMA].values]
    for b in fit.design.blocks:
        arrays.append(post[naming.sd(b.label)].values)
        if b.q > 1:
            iu = np.triu_indices(b.q, 1)
            arrays.append(post[naming.cor(b.label)].values[..., iu[0], iu[1]])
    div = int(np.asarray(fit.idata.sample_stats["diverging"]).sum())
    return fit, _min_ess(arrays), div, dict(fit.parameterization)


def _fit_bambi(formula: str, data: pd.DataFrame, sampler: str = "pymc", **kw: Any) -> tuple[Any, float, int, dict]:
    """Fit with Bambi's defaults; ``sampler`` is ``inference_method`` ("pymc", "nutpie", ...)."""
    import bambi as bmb

    model = bmb.Model(formula, data)
    idata = model.fit(inference_method=sampler, random_seed=kw.pop("random_seed"), progressbar=False, **kw)
    post = idata.posterior
    arrays = []
    for da in post.data_vars.values():
        if any(str(d).endswith("__factor_dim") or str(d).endswith("__obs__") for d in da.dims):
            continue
        arrays.append(da.values)
    div = int(np.asarray(idata.sample_stats["diverging"]).sum())
    return idata, _min_ess(arrays), div, {}


def worker(system: str, formula: str, source: str) -> dict:
    """Fit once untimed on ≤500 rows, then time the real fit; return the row as a dict.

    ``system`` is ``bayeslmm`` or ``bambi:SAMPLER`` (SAMPLER is Bambi's ``inference_method``).
    """
    warnings.simplefilter("ignore")
    data = load(source)
    if system.startswith("bayeslmm"):
        fit_fn = functools.partial(_fit_bayeslmm, sampler=system.partition(":")[2] or "pymc")
    else:
        fit_fn = functools.partial(_fit_bambi, sampler=system.partition(":")[2] or "pymc")
    small = data.sample(n=500, random_state=0) if len(data) > 500 else data
    fit_fn(formula, small, draws=2, tune=2, chains=1, random_seed=1)
    t0 = time.perf_counter()
    _, ess, div, param = fit_fn(formula, data, random_seed=SEED, **SETTINGS)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"system": system, "wall_s": wall, "min_bulk_ess": ess, "ess_per_s": ess / wall,
            "divergences": div, "parameterization": param, "peak_mb": peak_mb, "nobs": len(data)}


def scale_worker(formula: str, source: str) -> dict:
    """The 1M-row fit, timed from formula to posterior, with this process's peak memory."""
    warnings.simplefilter("ignore")
    data = load(source)
    t0 = time.perf_counter()
    _, ess, div, param = _fit_bayeslmm(formula, data, random_seed=SEED, **SETTINGS)
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"system": "bayeslmm", "wall_s": wall, "min_bulk_ess": ess, "ess_per_s": ess / wall,
            "divergences": div, "parameterization": param, "peak_mb": peak_mb, "nobs": len(data)}


# ---------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------
def run_sub(python: Path, args: list[str], env: dict | None = None, timeout: float = 7200) -> dict:
    cmd = [str(python), str(Path(__file__).resolve()), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr or proc.stdout)[-2000:]}


def cold_start() -> dict:
    """``bayeslmm demo`` in a new process with empty PyTensor and numba caches."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        env["PYTENSOR_FLAGS"] = f"base_compiledir={tmp}/pytensor"
        env["NUMBA_CACHE_DIR"] = f"{tmp}/numba"
        env["JAX_COMPILATION_CACHE_DIR"] = f"{tmp}/jax"
        t0 = time.perf_counter()
        proc = subprocess.run([str(REPO / ".venv" / "bin" / "bayeslmm"), "demo"], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    div = next((ln for ln in proc.stdout.splitlines() if ln.startswith("Divergences")), "")
    return {"wall_s": wall, "returncode": proc.returncode, "diagnostics": div}


def fmt_table(rows: dict[str, dict], title: str, best: dict[str, dict] | None = None) -> str:
    """One system's rows; with ``best``, add bayeslmm's ESS/s ratio to Bambi's best sampler."""
    head = f"{'case':<12}{'wall s':>9}{'min ESS':>10}{'ESS/s':>10}{'diverg.':>9}"
    if best is not None:
        head += f"{'ours/Bambi':>12}  {'best Bambi':<11}"
    lines = [title, head + "  model"]
    for case, r in rows.items():
        if "error" in r:
            lines.append(f"{case:<12}  error: {r['error'].splitlines()[-1] if r['error'] else '?'}")
            continue
        line = f"{case:<12}{r['wall_s']:>9.1f}{r['min_bulk_ess']:>10.0f}{r['ess_per_s']:>10.1f}{r['divergences']:>9d}"
        if best is not None:
            b = best.get(case)
            line += f"{b['ratio']:>11.1f}x  {b['sampler']:<11}" if b else f"{'':>12}  {'':<11}"
        model = ", ".join(sorted(set(r.get("parameterization", {}).values()))) or "default"
        lines.append(f"{line}  {model}")
    return "\n".join(lines)


def best_bambi(ours: dict[str, dict], bambi: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per case, Bambi's sampler with the highest ESS/s and bayeslmm's ESS/s ratio to it.

    ``bambi`` maps sampler -> case -> row. Cases where bayeslmm failed or every
    Bambi sampler failed are left out.
    """
    best: dict[str, dict] = {}
    for case, r in ours.items():
        ok = {s: rows[case] for s, rows in bambi.items() if case in rows and "error" not in rows[case]}
        if "error" in r or not ok:
            continue
        sampler = max(ok, key=lambda s: ok[s]["ess_per_s"])
        best[case] = {"sampler": sampler, "ess_per_s": ok[sampler]["ess_per_s"],
                      "ratio": r["ess_per_s"] / ok[sampler]["ess_per_s"]}
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--skip-bambi", action="store_true")
    ap.add_argument("--bambi-samplers", nargs="+", default=list(BAMBI_SAMPLERS), metavar="SAMPLER",
                    help="Bambi inference_method values to run, one subprocess each (default: %(default)s)")
    ap.add_argument("--ours-nutpie", action="store_true",
                    help="also time bayeslmm with sampler='nutpie' (the `fast` extra), reported apart from the defaults")
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-cold", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--bambi-timeout", type=float, default=3600.0, help="seconds per Bambi fit before it is reported as an error")
    ap.add_argument("--worker", nargs=3, metavar=("SYSTEM", "FORMULA", "SOURCE"), help=argparse.SUPPRESS)
    ap.add_argument("--scale-worker", nargs=2, metavar=("FORMULA", "SOURCE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(*args.worker)), flush=True)
        return 0
    if args.scale_worker:
        print("RESULT " + json.dumps(scale_worker(*args.scale_worker)), flush=True)
        return 0
    if not args.skip_bambi and not BAMBI.exists():
        print(f"{BAMBI} is missing: run `bash benchmarks/setup_bambi.sh` first, or pass --skip-bambi.", file=sys.stderr)
        return 1
    samplers = [] if args.skip_bambi else args.bambi_samplers
    # results["bambi"][sampler][case] is one Bambi row; results["best"][case] names the best sampler.
    results: dict[str, Any] = {"ours": {}, "bambi": {s: {} for s in samplers}}
    if not args.skip_cold:
        results["cold"] = cold_start()
        print("cold", results["cold"], flush=True)
    if not args.skip_scale:
        results["scale"] = run_sub(OURS, ["--scale-worker", *SCALE])
        print("scale", results["scale"], flush=True)
    for case in args.cases:
        formula, source = CASES[case]
        results["ours"][case] = run_sub(OURS, ["--worker", "bayeslmm", formula, source])
        print(case, "bayeslmm", results["ours"][case], flush=True)
        if args.ours_nutpie:
            row = run_sub(OURS, ["--worker", "bayeslmm:nutpie", formula, source])
            results.setdefault("ours_nutpie", {})[case] = row
            print(case, "bayeslmm nutpie", row, flush=True)
        for sampler in samplers:
            row = run_sub(BAMBI, ["--worker", f"bambi:{sampler}", formula, source], timeout=args.bambi_timeout)
            results["bambi"][sampler][case] = row
            print(case, f"bambi {sampler}", row, flush=True)
    results["best"] = best_bambi(results["ours"], results["bambi"])
    print()
    title = f"bayeslmm (defaults; {sys.version.split()[0]}, {os.cpu_count()} cores)"
    print(fmt_table(results["ours"], title, results["best"] if samplers else None))
    if "ours_nutpie" in results:
        print()
        best_np = best_bambi(results["ours_nutpie"], results["bambi"])
        print(fmt_table(results["ours_nutpie"], "bayeslmm, sampler='nutpie' (the fast extra; not the default)",
                        best_np if samplers else None))
    for sampler, rows in results["bambi"].items():
        print()
        print(fmt_table(rows, f"Bambi 0.21, inference_method={sampler!r} (defaults)"))
    if "scale" in results and "error" not in results["scale"]:
        s = results["scale"]
        print(f"\nscale: 1,000,000 rows x 10,000 groups (x | g): {s['wall_s']:.1f} s, peak memory {s['peak_mb']:.0f} MB, "
              f"min ESS {s['min_bulk_ess']:.0f}, divergences {s['divergences']}")
    elif "scale" in results:
        print("\nscale: error", results["scale"]["error"][-500:])
    if "cold" in results:
        c = results["cold"]
        print(f"cold start: `bayeslmm demo` with empty PyTensor/numba caches: {c['wall_s']:.1f} s (exit {c['returncode']}); {c['diagnostics']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
