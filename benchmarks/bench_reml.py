"""REML fits of bayeslmm against the Python peers lme-python and mixedlm, in the same run.

Run ``bash benchmarks/setup_reml_peers.sh`` once (each peer in its own venv),
then ``.venv/bin/python benchmarks/bench_reml.py``. Options: ``--cases NAME
...``, ``--skip-peers``, ``--skip-big``, ``--cold`` (cold-start rows),
``--bootstrap`` (1,000 parametric-bootstrap refits of sleepstudy),
``--json PATH``.

Every system fits every case in a fresh subprocess of its own Python (see
``reml_worker.py``): it reads the data, fits once untimed, then the median of
the timed repeats is reported. For bayeslmm three times are given: ``design``
(formula parsing and evaluation), ``fit`` (:func:`bayeslmm.reml.fit_reml`
on the design: the REML engine) and ``total`` (``lmer(formula, data,
method="REML")``, data frame to fit object). The peers' times are their whole
``lmer`` call. ``criterion diff`` is the largest difference between a peer's
REML criterion and ours (positive: the peer stopped higher).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bayeslmm.formula import parse_formula  # noqa: E402

SHARED = REPO / "tests" / "data"  # lme4 results and data shipped with the tests
REFERENCE = SHARED / "reference" / "lme4_reml.json"
WORKER = Path(__file__).resolve().parent / "reml_worker.py"
PEERS = {
    "lme-python": Path(__file__).resolve().parent / ".venv-lme" / "bin" / "python",
    "mixedlm": Path(__file__).resolve().parent / ".venv-mixedlm" / "bin" / "python",
}


def crossed_data(n: int, levels: tuple[int, ...], seed: int) -> pd.DataFrame:
    """Simulate ``y = 1 + 0.5 x + sum_k u_k[f_k] + e`` with crossed factors ``f1, f2, ...``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    y = 1.0 + 0.5 * x + rng.normal(size=n)
    cols: dict[str, object] = {}
    for k, nlev in enumerate(levels, start=1):
        idx = rng.integers(0, nlev, size=n)
        y += rng.normal(0.0, 1.0 / k, size=nlev)[idx]
        cols[f"f{k}"] = np.char.add(f"l{k}_", idx.astype(str))
    return pd.DataFrame({"y": y, "x": x, **cols})


def insteval_shaped(seed: int = 20261128) -> pd.DataFrame:
    """Shaped like lme4's InstEval: 73,421 ratings by 2,972 students of 1,128 lecturers in 14 departments.

    Every lecturer belongs to one department; ``service`` is a two-level
    factor. The sds are those of the InstEval fit (students 0.33, lecturers
    0.52, departments 0.08, residual 1.18).
    """
    rng = np.random.default_rng(seed)
    n, ns, nd, ndept = 73_421, 2_972, 1_128, 14
    s, d = rng.integers(0, ns, n), rng.integers(0, nd, n)
    dept_of = rng.integers(0, ndept, nd)
    service = rng.integers(0, 2, n)
    y = (3.2 - 0.07 * service + rng.normal(0, 0.33, ns)[s] + rng.normal(0, 0.52, nd)[d]
         + rng.normal(0, 0.08, ndept)[dept_of[d]] + rng.normal(0, 1.18, n))
    return pd.DataFrame({"y": y, "service": np.where(service == 1, "1", "0"), "s": np.char.add("s", s.astype(str)),
                         "d": np.char.add("d", d.astype(str)), "dept": np.char.add("dept", dept_of[d].astype(str))})


def slopes_data(n: int, groups: int, seed: int) -> pd.DataFrame:
    """``y ~ x + (x | g)``: sds 1 and 0.5, correlation 0.3, residual sd 1."""
    rng = np.random.default_rng(seed)
    g = rng.integers(0, groups, n)
    cov = np.array([[1.0, 0.15], [0.15, 0.25]])
    b = rng.multivariate_normal([0, 0], cov, size=groups)
    x = rng.normal(size=n)
    y = 1.0 + 0.5 * x + b[g, 0] + b[g, 1] * x + rng.normal(size=n)
    return pd.DataFrame({"y": y, "x": x, "g": np.char.add("g", g.astype(str))})


def _cases(names: list[str] | None, skip_big: bool, workdir: Path) -> list[dict]:
    cases = []
    for name, case in json.loads(REFERENCE.read_text())["cases"].items():
        cases.append({"case": name, "formula": case["formula"], "data": str(SHARED / case["data"]), "repeats": 7})
    if not skip_big:
        big = [
            ("crossed_50k_2f", "y ~ x + (1|f1) + (1|f2)", lambda: crossed_data(50_000, (2000, 500), 20261122), 3),
            ("insteval_shaped", "y ~ service + (1|s) + (1|d) + (1|dept)", insteval_shaped, 3),
            ("slopes_1M", "y ~ x + (x|g)", lambda: slopes_data(1_000_000, 10_000, 20261123), 2),
        ]
        for name, formula, make, repeats in big:
            if names and name not in names:
                continue
            path = workdir / f"{name}.csv"
            make().to_csv(path, index=False)
            cases.append({"case": name, "formula": formula, "data": str(path), "repeats": repeats})
    if names:
        cases = [c for c in cases if c["case"] in names]
    for c in cases:  # grouping factors are read as strings by every system
        parsed = parse_formula(c["formula"])
        c["dtypes"] = sorted({v for rb in parsed.blocks for v in rb.factor_vars})
    return cases


def _run(system: str, python: str, case: dict, workdir: Path, timeout: float) -> dict:
    path = workdir / f"case_{case['case']}.json"
    path.write_text(json.dumps(case))
    try:
        out = subprocess.run([python, str(WORKER), system, str(path)], capture_output=True, text=True, timeout=timeout,
                             cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish in {timeout:.0f} s"}
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:200]}
    return json.loads(lines[-1])


def _cold_start() -> dict:
    """A new process with an empty numba cache, then a second one with the cache just written."""
    code = (
        "import time; t0 = time.perf_counter(); import warnings, pandas as pd, bayeslmm; t1 = time.perf_counter();"
        "d = pd.read_csv('tests/data/data/sleepstudy.csv'); warnings.simplefilter('ignore');"
        "bayeslmm.lmer('Reaction ~ Days + (Days | Subject)', d, method='REML'); t2 = time.perf_counter();"
        "print(round(t1 - t0, 3), round(t2 - t1, 3))"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        rows = {}
        for label in ("empty numba cache", "warm numba cache"):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
            imp, first = out.stdout.split()
            rows[label] = {"import_s": float(imp), "first_fit_s": float(first)}
    return rows


def _bootstrap(nsim: int = 1000, processes: int = 2) -> dict:
    """Parametric bootstrap of sleepstudy: simulate from the REML fit, refit each response with the engine object."""
    from bayeslmm.design import build_design
    from bayeslmm.reml import REMLProblem
    import multiprocessing as mp

    df = pd.read_csv(SHARED / "data" / "sleepstudy.csv")
    design = build_design(parse_formula("Reaction ~ Days + (Days | Subject)"), df)
    problem = REMLProblem.from_design(design, "REML")
    est = problem.optimize()
    fit = problem.result(est, condvar=False)
    rng = np.random.default_rng(20261128)
    block = design.blocks[0]
    L = np.linalg.cholesky(fit.block_cov[0])
    ys = []
    for _ in range(nsim):
        b = rng.normal(size=(block.n_levels, block.q)) @ L.T
        ys.append(design.X @ fit.beta + np.einsum("ij,ij->i", block.Z, b[block.group_idx])
                  + rng.normal(0, fit.sigma, design.nobs))
    t0 = time.perf_counter()
    chunks = np.array_split(np.arange(nsim), processes)
    with mp.get_context("fork").Pool(processes) as pool:
        out = pool.starmap(_refit_chunk, [(problem, [ys[i] for i in c], est.theta) for c in chunks])
    wall = time.perf_counter() - t0
    lme4 = json.loads((SHARED / "reference" / "lme4_inference.json").read_text())["cases"]["sleep_slopes"]["boot_seconds"]
    return {"nsim": nsim, "processes": processes, "wall_s": wall, "converged": int(sum(out)), "lme4_s": lme4,
            "lme4_over_ours": lme4 / wall}


def _refit_chunk(problem, ys, start) -> int:
    return sum(problem.refit(y, start=start).converged for y in ys)


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=None)
    ap.add_argument("--skip-peers", action="store_true")
    ap.add_argument("--skip-big", action="store_true")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--bootstrap", action="store_true")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per system and case")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    peers = {} if args.skip_peers else {k: v for k, v in PEERS.items() if v.exists()}
    missing = sorted(set(PEERS) - set(peers)) if not args.skip_peers else []
    if missing:
        print(f"peers not installed (run benchmarks/setup_reml_peers.sh): {missing}")
    rows, raw = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for case in _cases(args.cases, args.skip_big, workdir):
            res = {"bayeslmm": _run("bayeslmm", sys.executable, case, workdir, args.timeout)}
            for name, python in peers.items():
                res[name] = _run(name, str(python), case, workdir, args.timeout)
            raw[case["case"]] = res
            ours = res["bayeslmm"]
            row = {"case": case["case"]}
            for key in ("design_s", "fit_s", "total_s", "evals"):
                row[f"ours {key}"] = ours.get(key, np.nan)
            best = np.inf
            diffs = []
            for name in peers:
                r = res[name]
                row[name] = r.get("total_s", r.get("error", "?"))
                if "total_s" in r:
                    best = min(best, r["total_s"])
                    if "criterion" in ours:
                        diffs.append(r["criterion"] - ours["criterion"])
            if np.isfinite(best) and "fit_s" in ours:
                row["fastest peer / ours fit"] = best / ours["fit_s"]
                row["fastest peer / ours total"] = best / ours["total_s"]
            row["criterion diff"] = max(diffs, key=abs) if diffs else np.nan
            if "error" in ours:
                row["ours error"] = ours["error"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20, "display.float_format", "{:.4g}".format):
        print(table.to_string(index=False))
    extra = {}
    if args.cold:
        extra["cold_start"] = _cold_start()
        print("cold start:", json.dumps(extra["cold_start"]))
    if args.bootstrap:
        extra["bootstrap"] = _bootstrap()
        print("bootstrap:", json.dumps(extra["bootstrap"]))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "raw": raw, **extra}, indent=1, default=float))


if __name__ == "__main__":
    main()
