"""Peak memory of out-of-core fits: it follows the partition size and the number of groups, not the rows.

Writes ``y ~ x + (x | g)`` data as Parquet files (``--part-rows`` rows per
file) and fits each configuration in a fresh process, so each peak resident
set size (``ru_maxrss`` of the process and of its chain processes) is that
fit's alone:

* ``outofcore``: ``lmer(formula, "<dir>/*.parquet")`` with NUTS at its
  default settings: the Dask pass over the files, then sampling;
* ``pandas``: the peer in the same run, ``pd.read_parquet`` of the same files
  and the in-memory fit of the same model.

The pass (both Dask passes: distinct values, then the sums) is timed
separately (``model_design`` on the same files in its own process) and
reported as rows per second (its peak as ``pass MB``); ``rest`` is the rest of the fit (REML start
and NUTS sampling). ``import MB`` is the process's size after importing
bayeslmm (PyMC, PyTensor, numba), before any data.

Usage::

    .venv/bin/python benchmarks/bench_outofcore.py --rows 1000000 4000000 --groups 1000
    .venv/bin/python benchmarks/bench_outofcore.py --identity   # issue 16's 1e6-row identity check

Results of a run are in ``docs/large_data.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

FORMULA = "y ~ x + (x | g)"


def write_data(folder: Path, rows: int, groups: int, part_rows: int, seed: int = 1) -> str:
    """``rows`` rows in files of ``part_rows``, generated a file at a time (the generator's memory stays small)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(groups, 2)) * [1.0, 0.3]
    for k, start in enumerate(range(0, rows, part_rows)):
        m = min(part_rows, rows - start)
        g = rng.integers(0, groups, m)
        x = rng.normal(size=m)
        y = 1.0 + 0.5 * x + u[g, 0] + u[g, 1] * x + rng.normal(size=m)
        pd.DataFrame({"y": y, "x": x, "g": g.astype(np.int64)}).to_parquet(folder / f"part{k:05d}.parquet", index=False)
    return str(folder / "*.parquet")


def peak_mb() -> float:
    """Peak resident set size of this process and of its (waited-for) children, in MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def worker(kind: str, path: str) -> dict:
    import warnings

    warnings.simplefilter("ignore")
    import bayeslmm
    from bayeslmm.stages import model_design

    base = peak_mb()
    t0 = time.perf_counter()
    if kind == "pass":
        design = model_design(FORMULA, path)
        return {"seconds": time.perf_counter() - t0, "nobs": design.nobs, "peak_mb": peak_mb(), "import_mb": base}
    data = path if kind == "outofcore" else pd.read_parquet(sorted(Path(path).parent.glob("*.parquet")))
    fit = bayeslmm.lmer(FORMULA, data, progressbar=False, random_seed=1)
    return {"seconds": time.perf_counter() - t0, "nobs": fit.nobs(), "peak_mb": peak_mb(), "import_mb": base,
            "sigma": float(fit.sigma)}


def run(kind: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--worker", kind, path], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def identity(folder: Path) -> None:
    """1,000,000 rows as 20 Parquet files through Dask vs the in-memory pandas fit: REML to 1e-10, NUTS draws equal."""
    import warnings

    import dask.dataframe as dd

    import bayeslmm

    warnings.simplefilter("ignore")
    path = write_data(folder, 1_000_000, 1000, 50_000)
    df = pd.read_parquet(sorted(folder.glob("*.parquet")))
    a = bayeslmm.lmer(FORMULA, df, method="REML").result
    b = bayeslmm.lmer(FORMULA, dd.read_parquet(path), method="REML").result
    print(f"REML max |theta diff| {np.max(np.abs(a.theta - b.theta)):.2e}, max |beta diff| {np.max(np.abs(a.beta - b.beta)):.2e}, "
          f"|sigma diff| {abs(a.sigma - b.sigma):.2e}")
    pa_ = bayeslmm.lmer(FORMULA, df, progressbar=False, random_seed=5).idata.posterior
    pb = bayeslmm.lmer(FORMULA, path, progressbar=False, random_seed=5).idata.posterior
    same = all(np.array_equal(pa_[v].values, pb[v].values) for v in pa_.data_vars)
    print(f"NUTS draws identical for the same seed: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 4_000_000])
    ap.add_argument("--groups", type=int, nargs="+", default=[1000])
    ap.add_argument("--part-rows", type=int, nargs="+", default=[250_000])
    ap.add_argument("--no-peer", action="store_true", help="skip the in-memory pandas peer")
    ap.add_argument("--identity", action="store_true", help="run issue 16's identity check instead")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        if args.identity:
            identity(Path(tmp) / "identity")
            return
        print(f"{'rows':>10} {'groups':>7} {'part rows':>9} {'files':>5} | {'fit':<9} {'import MB':>9} {'peak MB':>8} "
              f"{'total s':>8} {'pass MB':>8} {'pass s':>7} {'rows/s':>10} {'rest s':>7}")
        for groups in args.groups:
            for part in args.part_rows:
                for rows in args.rows:
                    folder = Path(tmp) / f"r{rows}_g{groups}_p{part}"
                    path = write_data(folder, rows, groups, part)
                    files = len(list(folder.glob("*.parquet")))
                    p = run("pass", path)
                    kinds = ["outofcore"] + ([] if args.no_peer else ["pandas"])
                    for kind in kinds:
                        r = run(kind, path)
                        extra = (f"{p['peak_mb']:8.0f} {p['seconds']:7.1f} {rows / p['seconds']:10.3g} {r['seconds'] - p['seconds']:7.1f}"
                                 if kind == "outofcore" else "")
                        print(f"{rows:>10} {groups:>7} {part:>9} {files:>5} | {kind:<9} {r['import_mb']:9.0f} {r['peak_mb']:8.0f} "
                              f"{r['seconds']:8.1f} {extra}", flush=True)
                    for f in folder.glob("*.parquet"):
                        f.unlink()


if __name__ == "__main__":
    main()
