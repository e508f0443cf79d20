"""Time one system's REML fits of one case, in its own process and environment (used by bench_reml.py).

Run as ``python reml_worker.py SYSTEM CASE_JSON``. SYSTEM is ``bayeslmm``,
``lme-python`` or ``mixedlm``; CASE_JSON names a file with ``data`` (a CSV
path), ``formula``, ``dtypes`` (columns read as strings) and ``repeats``. The
worker reads the data, fits once untimed (imports, compilation), then times
``repeats`` fits of formula + data frame -> REML fit and prints one JSON line:
the times, and the REML criterion the system reports (to check that every
system found the same optimum). Only the standard library, the data-frame
library and the system itself are imported, so it runs in each peer's venv.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import warnings


def _time(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def run_bayeslmm(case):
    import pandas as pd

    import bayeslmm
    from bayeslmm.design import build_design
    from bayeslmm.formula import parse_formula
    from bayeslmm.reml import fit_reml

    warnings.simplefilter("ignore")
    df = pd.read_csv(case["data"], dtype={c: str for c in case["dtypes"]})
    f = case["formula"]
    bayeslmm.lmer(f, df, method="REML")  # warm-up
    parsed = parse_formula(f)
    t_design, design = _time(lambda: build_design(parsed, df), case["repeats"])
    t_fit, fit = _time(lambda: fit_reml(design, "REML"), case["repeats"])
    t_total, _ = _time(lambda: bayeslmm.lmer(f, df, method="REML"), case["repeats"])
    return {"design_s": t_design, "fit_s": t_fit, "total_s": t_total, "criterion": fit.criterion, "evals": fit.n_evals}


def run_lme_python(case):
    import lme_python
    import polars as pl

    df = pl.read_csv(case["data"], schema_overrides={c: pl.Utf8 for c in case["dtypes"]})
    f = case["formula"]
    lme_python.lmer(f, data=df, reml=True)
    t, fit = _time(lambda: lme_python.lmer(f, data=df, reml=True), case["repeats"])
    return {"total_s": t, "criterion": float(fit.reml_criterion)}


def run_mixedlm(case):
    import mixedlm
    import pandas as pd

    warnings.simplefilter("ignore")
    df = pd.read_csv(case["data"], dtype={c: str for c in case["dtypes"]})
    f = case["formula"]
    mixedlm.lmer(f, df, REML=True)
    t, fit = _time(lambda: mixedlm.lmer(f, df, REML=True), case["repeats"])
    crit = fit.REMLcrit() if callable(fit.REMLcrit) else fit.REMLcrit
    return {"total_s": t, "criterion": float(crit)}


def main() -> None:
    system, path = sys.argv[1], sys.argv[2]
    case = json.loads(open(path).read())
    runner = {"bayeslmm": run_bayeslmm, "lme-python": run_lme_python, "mixedlm": run_mixedlm}[system]
    try:
        out = runner(case)
    except Exception as exc:  # report, do not hide: the table says which system failed on which case
        out = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
