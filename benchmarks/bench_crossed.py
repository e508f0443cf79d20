"""Crossed designs: the crossed posterior (largest factor integrated out) against the full model, in the same run.

Run ``.venv/bin/python benchmarks/bench_crossed.py``. Options: ``--cases``
(``insteval_shaped``, ``penicillin``), ``--draws``, ``--tune``, ``--chains``,
``--json PATH``.

Each fit runs in a fresh subprocess: the data are made, one untimed warm-up
fit on at most 2,000 rows compiles what can be compiled (numba kernels, PyTensor's C code),
then the timed ``lmer`` call runs with default settings except the seed and
``collapse=True`` (the crossed posterior) or ``collapse=False`` (the full model). "wall s" is that whole call (formula
to fit object, REML start included); ESS is the minimum bulk ESS over the
population-level parameters (fixed effects, sds, residual sd); "CPU s" the
user + system time of the worker and its chain processes, so "ESS/CPU s" does
not depend on what else the machine runs; "peak MB" the worker's peak resident
memory (the chain processes are separate). Ratios compare the two paths in this
run; absolute times on a shared machine are not comparable between runs.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

CASES = {
    "insteval_shaped": "y ~ service + (1|s) + (1|d) + (1|dept)",
    "penicillin": "diameter ~ 1 + (1 | plate) + (1 | sample)",
}


def _data(case: str) -> pd.DataFrame:
    if case == "insteval_shaped":
        from bench_reml import insteval_shaped

        return insteval_shaped()
    return pd.read_csv(REPO / "tests" / "data" / "data" / "penicillin.csv")


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the chain processes)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _worker(case: str, path: str, draws: int, tune: int, chains: int) -> dict:
    import arviz as az

    import bayeslmm
    from bayeslmm import naming

    df = _data(case)
    opts = dict(random_seed=20261129, progressbar=False, collapse=path == "crossed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bayeslmm.lmer(CASES[case], df.iloc[:2000], draws=5, tune=5, chains=1, **opts)
        t, cpu = time.perf_counter(), _cpu_seconds()
        fit = bayeslmm.lmer(CASES[case], df, draws=draws, tune=tune, chains=chains, **opts)
        wall, cpu = time.perf_counter() - t, _cpu_seconds() - cpu
    post = fit.idata.posterior
    names = [naming.FIXED, naming.SIGMA] + [naming.sd(b.label) for b in fit.design.blocks]
    ess = {}
    for name in names:
        arr = post[name].values.reshape(post.sizes["chain"], post.sizes["draw"], -1)
        for j in range(arr.shape[2]):
            ess[f"{name}[{j}]"] = float(az.ess(arr[:, :, j], method="bulk"))
    weakest = min(ess, key=ess.get)
    return {
        "case": case, "path": path, "parameterization": fit.parameterization, "wall_s": wall, "cpu_s": cpu,
        "min_ess_bulk": ess[weakest], "weakest": weakest, "ess_per_s": ess[weakest] / wall, "ess_per_cpu_s": ess[weakest] / cpu,
        "divergences": int(fit.diagnostics.divergences), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="*", default=list(CASES))
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--json")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(*args.worker, args.draws, args.tune, args.chains)))
        return
    rows = []
    for case in args.cases:
        for path in ("crossed", "full"):
            cmd = [sys.executable, __file__, "--worker", case, path, "--draws", str(args.draws), "--tune", str(args.tune),
                   "--chains", str(args.chains)]
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'case':<16} {'path':<8} {'wall s':>8} {'CPU s':>8} {'min ESS':>8} {'ESS/s':>8} {'ESS/CPU s':>9} {'div':>4} "
          f"{'peak MB':>8}  weakest")
    for r in rows:
        print(f"{r['case']:<16} {r['path']:<8} {r['wall_s']:8.1f} {r['cpu_s']:8.1f} {r['min_ess_bulk']:8.0f} {r['ess_per_s']:8.2f} "
              f"{r['ess_per_cpu_s']:9.2f} {r['divergences']:4d} {r['peak_mb']:8.0f}  {r['weakest']}")
    for case in args.cases:
        by = {r["path"]: r for r in rows if r["case"] == case}
        if len(by) == 2:
            c, f = by["crossed"], by["full"]
            print(f"{case}: ESS/s crossed / full = {c['ess_per_s'] / f['ess_per_s']:.2f}, "
                  f"ESS per CPU s crossed / full = {c['ess_per_cpu_s'] / f['ess_per_cpu_s']:.2f}, "
                  f"wall crossed / full = {c['wall_s'] / f['wall_s']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
