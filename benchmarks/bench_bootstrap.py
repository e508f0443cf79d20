"""Time the parametric bootstrap (``REMLFit.bootstrap``) against lme4's recorded ``bootMer`` times.

Run as ``python benchmarks/bench_bootstrap.py`` (``--cases sleep_slopes``,
``--nsim 1000``, ``--cores N``, ``--json PATH``). For each case the REML fit
and a 5-replicate warm-up are untimed; the timed run is
``fit.bootstrap(nsim=nsim, seed=20261128, progressbar=False, cores=cores)``; each
replicate is a refit through the fit's ``REMLProblem`` (only the response
cross-products change), started from the original θ̂.
The lme4 column is ``boot_seconds`` of tests/data/reference/lme4_inference.json:
``confint(fm, method="boot", nsim=1000)`` with lme4 1.1-31 on a 2-core machine
(R cannot run here, so lme4 is not re-timed in the same run). Run it on an
otherwise idle machine; the ratio is lme4's time over ours.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import bayeslmm  # noqa: E402

DATA = REPO / "tests" / "data"
INFERENCE = json.loads((DATA / "reference" / "lme4_inference.json").read_text())["cases"]
REML = json.loads((DATA / "reference" / "lme4_reml.json").read_text())["cases"]


def _data(name: str) -> pd.DataFrame:
    if name == "cake":  # temperature as an unordered factor, as in the reference
        d = pd.read_csv(DATA / "data" / "cake.csv")
        d["temperature"] = d["temperature"].astype(str)
        return d
    return pd.read_csv(DATA / REML[name]["data"])


def run(name: str, nsim: int, cores: int | None) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bayeslmm.lmer(INFERENCE[name]["formula"], _data(name), method="REML")
    fit.bootstrap(nsim=5, seed=1, progressbar=False, cores=cores)
    t0 = time.perf_counter()
    res = fit.bootstrap(nsim=nsim, seed=20261128, progressbar=False, cores=cores)
    seconds = time.perf_counter() - t0
    lme4 = float(INFERENCE[name]["boot_seconds"]) * nsim / 1000
    return {"case": name, "nsim": nsim, "seconds": seconds, "lme4_seconds": lme4, "lme4/ours": lme4 / seconds,
            "not_converged": res.n_failed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", default=list(INFERENCE))
    parser.add_argument("--nsim", type=int, default=1000)
    parser.add_argument("--cores", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = [run(name, args.nsim, args.cores) for name in args.cases]
    table = pd.DataFrame(rows).set_index("case")
    print(table.to_string(float_format=lambda v: f"{v:.2f}"))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
