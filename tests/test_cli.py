"""The ``bayeslmm`` command line, end to end in subprocesses."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayeslmm
from bayeslmm.cli import main

TINY = ["--draws", "40", "--tune", "40", "--chains", "1", "--seed", "3"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m bayeslmm.cli ARGS`` with captured text output."""
    return subprocess.run(
        [sys.executable, "-m", "bayeslmm.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def assert_clean_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    """Non-zero exit, an ``Error:`` message naming each needle, and no traceback."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "Error" in proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def sleep_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "sleep.csv"
    bayeslmm.datasets.load("sleepstudy").to_csv(path, index=False)
    return path


def test_fit_prints_the_summary(sleep_csv):
    proc = run("fit", str(sleep_csv), "Reaction ~ Days + (1 | Subject)", *TINY)
    assert proc.returncode == 0, proc.stderr
    assert "Bayesian linear mixed model fit by NUTS" in proc.stdout
    assert "Formula: Reaction ~ Days + (1 | Subject)" in proc.stdout
    assert "Days" in proc.stdout and "Subject" in proc.stdout and "Residual" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_fit_by_reml_save_summary_predict(sleep_csv, tmp_path, capsys):
    out = tmp_path / "reml.nc"
    proc = run("fit", str(sleep_csv), "Reaction ~ Days + (Days | Subject)", "--method", "REML", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "REML" in proc.stdout
    assert "251.4" in proc.stdout  # fixef(fm)["(Intercept)"] = 251.405 in lme4
    again = run_main(capsys, "summary", str(out))
    assert again.returncode == 0 and again.stdout.strip() == proc.stdout.split("Saved the fit")[0].strip()
    new_csv = tmp_path / "new.csv"
    pd.DataFrame({"Days": [0, 10], "Subject": [308, 308]}).to_csv(new_csv, index=False)
    done = run_main(capsys, "predict", str(out), str(new_csv), "--re-form", "~0")
    assert done.returncode == 0, done.stderr
    pred = pd.read_csv(io.StringIO(done.stdout))
    np.testing.assert_allclose(pred["Estimate"], [251.405, 251.405 + 10 * 10.467], atol=0.01)  # fixef(fm) in lme4
    # a REML prediction carries the fixed-part standard error, never Est.Error 0 with both bounds at the estimate
    assert "Est.Error" not in pred.columns
    np.testing.assert_allclose(pred["Std. Error"].iloc[0], 6.825, atol=0.001)  # sqrt(vcov(fm)[1, 1]) in lme4
    assert (pred["u-95% CI"] - pred["l-95% CI"] > 1).all()


def test_fit_save_summary_predict(sleep_csv, tmp_path):
    out = tmp_path / "fit.nc"
    proc = run("fit", str(sleep_csv), "Reaction ~ Days + (1 | Subject)", *TINY, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and f"Saved the fit to {out}" in proc.stdout

    again = run("summary", str(out))
    assert again.returncode == 0, again.stderr
    fitted_part = proc.stdout.split("Saved the fit")[0].strip()
    assert again.stdout.strip() == fitted_part

    new = pd.DataFrame({"Days": [0, 5, 9], "Subject": [308, 309, 999]})
    new_csv = tmp_path / "new.csv"
    new.to_csv(new_csv, index=False)
    pred_csv = tmp_path / "pred.csv"
    done = run("predict", str(out), str(new_csv), "--out", str(pred_csv))
    assert done.returncode == 0, done.stderr
    pred = pd.read_csv(pred_csv)
    assert list(pred.columns[:2]) == ["Days", "Subject"] and "Estimate" in pred.columns and "u-95% CI" in pred.columns
    expected = bayeslmm.load(out).predict(pd.read_csv(new_csv))
    np.testing.assert_allclose(pred["Estimate"], expected["Estimate"], rtol=1e-12)

    missing = tmp_path / "missing.csv"
    new.drop(columns="Days").to_csv(missing, index=False)
    assert_clean_error(run("predict", str(out), str(missing)), "Days")
    assert_clean_error(
        run("predict", str(out), str(new_csv), "--new-levels", "error"), "Subject", "999"
    )


def test_missing_data_file(tmp_path):
    assert_clean_error(run("fit", str(tmp_path / "absent.csv"), "y ~ x + (1|g)"), "absent.csv", "does not exist")


def test_debug_shows_the_traceback(tmp_path):
    debug = run("--debug", "fit", str(tmp_path / "absent.csv"), "y ~ x + (1|g)")
    assert debug.returncode != 0
    assert "Traceback" in debug.stderr and "DataError" in debug.stderr


# The remaining error paths run main() in-process: the same code as the console script, minus the start-up.
def run_main(capsys, *args: str) -> subprocess.CompletedProcess:
    code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(list(args), code, out.out, out.err)


def test_unreadable_csv(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b'a,b\n1,"2\n3,4,5,6\n\xff\xfe\x00')
    assert_clean_error(run_main(capsys, "fit", str(bad), "a ~ b + (1|c)"), "bad.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert_clean_error(run_main(capsys, "fit", str(empty), "a ~ b + (1|c)"), "empty")
    assert_clean_error(run_main(capsys, "fit", str(tmp_path), "a ~ b + (1|c)"), "folder")


def test_bad_formula_and_unknown_column(sleep_csv, capsys):
    assert_clean_error(run_main(capsys, "fit", str(sleep_csv), "Reaction ~ Days + (1 | Subject"), "cannot parse")
    assert_clean_error(run_main(capsys, "fit", str(sleep_csv), "Reaction ~ Nights + (1 | Subject)", *TINY), "Nights")


def test_summary_of_a_file_that_is_not_a_fit(tmp_path, sleep_csv, capsys):
    assert_clean_error(run_main(capsys, "summary", str(tmp_path / "nothing.nc")), "does not exist")
    assert_clean_error(run_main(capsys, "summary", str(sleep_csv)), "sleep.csv")


def test_usage_error(sleep_csv, capsys):
    usage = run_main(capsys, "fit", str(sleep_csv))
    assert usage.returncode == 2 and "Usage" in usage.stderr and "Traceback" not in usage.stderr
    bad_option = run_main(capsys, "fit", str(sleep_csv), "y ~ x + (1|g)", "--draws", "0")
    assert bad_option.returncode == 2 and "--draws" in bad_option.stderr
