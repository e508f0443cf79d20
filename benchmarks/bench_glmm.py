"""bayeslmm's ``glmer`` (NUTS) against Bambi on binomial and count GLMMs: ESS per second, divergences.

Run as ``python benchmarks/bench_glmm.py`` after ``bash benchmarks/setup_bambi.sh``. It follows
``bench_sampling.py`` (whose subprocess driver, ESS and table code it reuses): every fit runs in a
fresh subprocess of its own system's Python with default settings except the seed (4 chains ×
1000 draws after 1000 tuning steps), after one untimed warm-up fit on at most 500 rows; Bambi runs
once per sampler in ``--bambi-samplers`` and the ratio column compares bayeslmm with Bambi's best
sampler on each case. ESS is the minimum bulk ESS over the population-level parameters (fixed
effects and group-level sds).

Cases (both systems get the same formula, in Bambi's ``p(successes, trials)`` form for the
binomial):

* ``cbpp``: ``p(incidence, size) ~ period + (1 | herd)``, binomial (lme4's cbpp);
* ``grouseticks``: ``TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)``, Poisson, with YEAR a
  factor and HEIGHT standardised (lme4's grouseticks);
* ``bern_20k`` (``--cases bern_20k``, slow): ``y ~ x + (x | g)``, Bernoulli, 20,000 rows × 500 groups.
"""

from __future__ import annotations

import argparse
import functools
import json
import resource
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_sampling as common  # noqa: E402  (the sibling benchmark's driver, ESS and tables)

CASES: dict[str, tuple[str, str, str]] = {  # name -> (formula, family, source)
    "cbpp": ("p(incidence, size) ~ period + (1 | herd)", "binomial", "cbpp"),
    "grouseticks": ("TICKS ~ YEAR + HEIGHT + (1 | BROOD) + (1 | LOCATION)", "poisson", "grouseticks"),
    "bern_20k": ("y ~ x + (x | g)", "bernoulli", "bern:20000:500"),
}
DEFAULT_CASES = ("cbpp", "grouseticks")


def load(source: str) -> pd.DataFrame:
    """The case's data: the lme4 data shipped with the tests, or the synthetic Bernoulli set."""
    if source.startswith("bern:"):
        _, n, groups = source.split(":")
        rng = np.random.default_rng(1)
        g = rng.integers(0, int(groups), size=int(n))
        x = rng.normal(size=int(n))
        b = rng.multivariate_normal([0.0, 0.0], [[1.0, 0.15], [0.15, 0.25]], size=int(groups))
        eta = -0.5 + 0.7 * x + b[g, 0] + b[g, 1] * x
        y = (rng.random(int(n)) < 1 / (1 + np.exp(-eta))).astype(int)
        return pd.DataFrame({"y": y, "x": x, "g": np.char.add("g", g.astype(str)).astype(object)})
    d = pd.read_csv(common.SHARED / f"{source}.csv")
    if source == "cbpp":
        d["period"] = d["period"].astype(str)
        d["herd"] = d["herd"].astype(str)
    if source == "grouseticks":
        for c in ("YEAR", "BROOD", "LOCATION"):
            d[c] = d[c].astype(str)
        d["HEIGHT"] = (d["HEIGHT"] - d["HEIGHT"].mean()) / d["HEIGHT"].std()
    return d


def _fit_bayeslmm(formula: str, family: str, data: pd.DataFrame, **kw: Any) -> tuple[float, int]:
    import bayeslmm
    from bayeslmm import naming

    fit = bayeslmm.glmer(formula, data, family=family, progressbar=False, **kw)
    post = fit.idata.posterior
    arrays = [post[naming.FIXED].values] + [post[naming.sd(b.label)].values for b in fit.design.blocks]
    return common._min_ess(arrays), int(np.asarray(fit.idata.sample_stats["diverging"]).sum())


def _fit_bambi(formula: str, family: str, data: pd.DataFrame, sampler: str = "pymc", **kw: Any) -> tuple[float, int]:
    import bambi as bmb

    model = bmb.Model(formula, data, family=family)
    idata = model.fit(inference_method=sampler, random_seed=kw.pop("random_seed"), progressbar=False, **kw)
    arrays = [da.values for da in idata.posterior.data_vars.values()
              if not any(str(d).endswith(("__factor_dim", "__obs__")) for d in da.dims)]
    return common._min_ess(arrays), int(np.asarray(idata.sample_stats["diverging"]).sum())


def worker(system: str, case: str) -> dict:
    """Fit once untimed on ≤500 rows, then time the real fit; return the row as a dict."""
    warnings.simplefilter("ignore")
    formula, family, source = CASES[case]
    data = load(source)
    sampler = system.partition(":")[2] or "pymc"
    fit_fn = functools.partial(_fit_bayeslmm if system == "bayeslmm" else functools.partial(_fit_bambi, sampler=sampler),
                               formula, family)
    small = data.sample(n=500, random_state=0) if len(data) > 500 else data
    fit_fn(small, draws=2, tune=2, chains=1, random_seed=1)
    t0 = time.perf_counter()
    ess, div = fit_fn(data, random_seed=common.SEED, **common.SETTINGS)
    wall = time.perf_counter() - t0
    return {"system": system, "wall_s": wall, "min_bulk_ess": ess, "ess_per_s": ess / wall, "divergences": div,
            "parameterization": {}, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "nobs": len(data)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES), choices=list(CASES))
    ap.add_argument("--skip-bambi", action="store_true")
    ap.add_argument("--bambi-samplers", nargs="+", default=list(common.BAMBI_SAMPLERS), metavar="SAMPLER")
    ap.add_argument("--bambi-timeout", type=float, default=3600.0)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", nargs=2, metavar=("SYSTEM", "CASE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(*args.worker)), flush=True)
        return 0
    script = [str(Path(__file__).resolve())]
    ours, bambi = {}, {s: {} for s in args.bambi_samplers}
    for case in args.cases:
        ours[case] = _run(common.OURS, script, ["--worker", "bayeslmm", case], 7200)
        print(case, "bayeslmm", ours[case], flush=True)
        if not args.skip_bambi:
            for s in args.bambi_samplers:
                bambi[s][case] = _run(common.BAMBI, script, ["--worker", f"bambi:{s}", case], args.bambi_timeout)
                print(case, f"bambi {s}", bambi[s][case], flush=True)
    best = common.best_bambi(ours, bambi) if not args.skip_bambi else None
    print()
    print(common.fmt_table(ours, "bayeslmm glmer, NUTS (defaults)", best))
    for s in ([] if args.skip_bambi else args.bambi_samplers):
        print()
        print(common.fmt_table(bambi[s], f"Bambi 0.21, inference_method={s!r} (defaults)"))
    if args.json:
        args.json.write_text(json.dumps({"bayeslmm": ours, "bambi": bambi}, indent=1))
    return 0


def _run(python: Path, script: list[str], args: list[str], timeout: float) -> dict:
    """One worker subprocess of ``python`` running this file (``bench_sampling.run_sub`` runs its own file)."""
    import subprocess

    try:
        proc = subprocess.run([str(python), *script, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"did not finish within {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (proc.stderr or proc.stdout)[-2000:]}


if __name__ == "__main__":
    raise SystemExit(main())
