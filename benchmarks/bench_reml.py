"""Time :func:`bayeslmm.reml.fit_reml` on the shared lme4 cases and on large crossed designs.

Run as ``python benchmarks/bench_reml.py`` (``--repeats N`` to change the
number of repeats; the median is reported). Design building (formula parsing
and evaluation) is timed separately from the fit. The lme4 column gives the
reference timings we know of lme4 1.1 on comparable problems.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bayeslmm.design import Design, build_design  # noqa: E402
from bayeslmm.formula import parse_formula  # noqa: E402
from bayeslmm.reml import REMLResult, fit_reml  # noqa: E402

SHARED = REPO / "tests" / "data"  # lme4 results and data shipped with the tests
REFERENCE = SHARED / "reference" / "lme4_reml.json"

#: What we know of lme4's own timings (seconds).
LME4_SECONDS = {
    "sleep_slopes": "0.04",
    "crossed_73k_3f": "~60 (73k rows, 3 crossed factors)",
}


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


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


def _row(name: str, formula: str, data: pd.DataFrame, repeats: int) -> dict:
    parsed = parse_formula(formula)
    t_design, design = _median_time(lambda: build_design(parsed, data), repeats)
    assert isinstance(design, Design)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_fit, fit = _median_time(lambda: fit_reml(design), repeats)
    assert isinstance(fit, REMLResult)
    return {
        "case": name,
        "n": design.nobs,
        "levels": "/".join(str(b.n_levels) for b in design.blocks),
        "design_s": t_design,
        "fit_s": t_fit,
        "evals": fit.n_evals,
        "lme4_s": LME4_SECONDS.get(name, ""),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7, help="repeats for the shared cases (median reported)")
    ap.add_argument("--big-repeats", type=int, default=3, help="repeats for the large synthetic designs")
    args = ap.parse_args(argv)

    rows = []
    cases = json.loads(REFERENCE.read_text())["cases"]
    for name, case in cases.items():
        data = pd.read_csv(SHARED / case["data"])
        rows.append(_row(name, case["formula"], data, args.repeats))
    big = [
        ("crossed_50k_2f", "y ~ x + (1|f1) + (1|f2)", 50_000, (2000, 500)),
        # Shaped like lme4's InstEval (73,421 rows; s, d and dept factors).
        ("crossed_73k_3f", "y ~ x + (1|f1) + (1|f2) + (1|f3)", 73_421, (2972, 1128, 14)),
    ]
    for name, formula, n, levels in big:
        rows.append(_row(name, formula, crossed_data(n, levels, seed=20261122), args.big_repeats))

    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 120, "display.float_format", "{:.4f}".format):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
