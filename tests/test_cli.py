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
    # Subject 999 is not in the fit: refused by default, as lme4 does, with the option that allows it
    assert_clean_error(run("predict", str(out), str(new_csv), "--out", str(pred_csv)), "Subject", "999",
                       "--new-levels population")
    assert not pred_csv.exists()
    done = run("predict", str(out), str(new_csv), "--out", str(pred_csv), "--new-levels", "population")
    assert done.returncode == 0, done.stderr
    pred = pd.read_csv(pred_csv)
    assert list(pred.columns[:2]) == ["Days", "Subject"] and "Estimate" in pred.columns and "u-95% CI" in pred.columns
    expected = bayeslmm.load(out).predict(pd.read_csv(new_csv), new_levels="population")
    np.testing.assert_allclose(pred["Estimate"], expected["Estimate"], rtol=1e-12)

    missing = tmp_path / "missing.csv"
    new.drop(columns="Days").to_csv(missing, index=False)
    assert_clean_error(run("predict", str(out), str(missing)), "Days")


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


# ---------------------------------------------------------------------------
# A formula on the command line is not code (issue 10 §2)
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "term, culprit",
    [
        ("click.utils.os.system('touch {marker}')", "click.utils.os.system"),
        ("os.system('touch {marker}')", "os.system"),
        ("sys.modules['os'].system('touch {marker}')", ""),
        ("offset.__globals__.get('os').system('touch {marker}')", ""),
        ("np.log.__class__.__subclasses__()", "np.log.__class__.__subclasses__"),
        ("np.__class__('os')", "np.__class__"),
        ("C.__globals__.get('os')", "C.__globals__.get"),
        ("I.__globals__['__builtins__']", "I.__globals__"),
        ("scale.__init__.__globals__.get('os')", "scale.__init__.__globals__.get"),
        ("log(Days).__class__", ""),
        ("eval(\"__import__('os').system('touch {marker}')\")", ""),
        ("__import__('os').system('touch {marker}')", ""),
        ("exec('import os')", ""),
        ("np.maximum(offset.__globals__.update(Offset=offset.__builtins__.get(np.maximum.reduce(Subject))))", ""),
    ],
)
def test_cli_formula_namespace_is_closed(sleep_csv, tmp_path, capsys, term, culprit):
    marker = tmp_path / "pwned"
    formula = "Reaction ~ Days + " + term.format(marker=marker) + " + (1 | Subject)"
    for method in ("REML", "nuts"):
        res = run_main(capsys, "fit", str(sleep_csv), formula, "--method", method, *TINY[:2])
        assert_clean_error(res, culprit)
        assert res.returncode == 1 and "Internal error" not in res.stderr
    assert not marker.exists()
    # the same formula shape with an allowlisted transformation fits
    ok = run_main(capsys, "fit", str(sleep_csv), "log(Reaction) ~ poly(Days, 2) + (log(Days + 1) | Subject)",
                  "--method", "REML")
    assert ok.returncode == 0, ok.stderr


def test_cli_payload_in_a_bar_does_not_run(sleep_csv, tmp_path, capsys):
    marker = tmp_path / "pwned"
    for formula in (
        f"Reaction ~ Days + (np.sum(os.system('touch {marker}')) || Subject)",
        f"Reaction ~ Days + (1 | Subject/os.system('touch {marker}'))",
        f"Reaction ~ Days + (`os.system('touch {marker}')` || Subject)",  # a column name, looked up in the data
        f"Reaction ~ Days + 1 | os.system('touch {marker}')",
    ):
        assert_clean_error(run_main(capsys, "fit", str(sleep_csv), formula, "--method", "REML"))
    assert not marker.exists()


# ---------------------------------------------------------------------------
# --out, output columns, data sets, start-up (issue 10 §5, issue 11 §6)
# ---------------------------------------------------------------------------
def test_out_is_checked_before_the_fit(sleep_csv, tmp_path, capsys):
    for bad, needle in (("/proc/x.nc", "/proc/x.nc"), (str(tmp_path / "no" / "fit.nc"), "does not exist"),
                        (str(tmp_path), "is a folder")):
        res = run_main(capsys, "fit", str(sleep_csv), "Reaction ~ Days + (1 | Subject)", *TINY, "--out", bad)
        assert_clean_error(res, needle)
        assert res.stderr.count("\n") == 1  # one line
        assert "Formula:" not in res.stdout  # no fit was run
    # the fit is not even started when the data are fine but --out is not: a missing data file is not reached
    res = run_main(capsys, "fit", str(tmp_path / "absent.csv"), "y ~ x + (1|g)", "--out", "/proc/x.nc")
    assert_clean_error(res, "/proc/x.nc")


def test_prediction_columns_never_silently_renamed(sleep_csv, tmp_path, capsys):
    out = tmp_path / "fit.nc"
    assert run_main(capsys, "fit", str(sleep_csv), "Reaction ~ Days + (1 | Subject)", "--method", "REML",
                    "--out", str(out)).returncode == 0
    new = tmp_path / "new.csv"
    pd.DataFrame({"Days": [1, 2], "Subject": [308, 309], "Estimate": ["mine", "mine"]}).to_csv(new, index=False)
    res = run_main(capsys, "predict", str(out), str(new))
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(io.StringIO(res.stdout))
    assert list(table.columns) == ["Days", "Subject", "Estimate", "pred_Estimate", "pred_Std. Error", "pred_l-95% CI",
                                   "pred_u-95% CI"]
    assert (table["Estimate"] == "mine").all()
    assert "already have the column(s) ['Estimate']" in res.stderr and "pred_Estimate" in res.stderr


def test_dataset_command(tmp_path, capsys):
    listing = run_main(capsys, "dataset")
    assert listing.returncode == 0 and listing.stdout.split() == bayeslmm.datasets.available()
    out = tmp_path / "sleep.csv"
    res = run_main(capsys, "dataset", "sleepstudy", "--out", str(out))
    assert res.returncode == 0 and "180 rows" in res.stdout
    pd.testing.assert_frame_equal(pd.read_csv(out), bayeslmm.datasets.load("sleepstudy"))
    assert_clean_error(run_main(capsys, "dataset", "nope"), "nope", "sleepstudy")


def test_readme_cli_example_runs(tmp_path, capsys, monkeypatch):
    """The README's command-line block, run as written (fewer draws), from an empty folder."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("```bash\n.venv/bin/bayeslmm dataset", 1)[1].split("```", 1)[0]
    lines = [".venv/bin/bayeslmm dataset" + block.splitlines()[0]] + block.splitlines()[1:]
    commands = [line.split("#")[0].strip() for line in lines if line.startswith(".venv/bin/bayeslmm")]
    assert len(commands) >= 5
    import shlex

    monkeypatch.chdir(tmp_path)
    for command in commands:
        args = shlex.split(command)[1:]
        if args[0] == "demo":
            continue  # the demo's full fit is run by `make demo`
        args = [a if a != "1000" else "30" for a in args]
        if args[0] == "fit" and "--method" not in args:
            args += ["--tune", "30", "--chains", "1"]
        res = run_main(capsys, *args)
        assert res.returncode == 0, (command, res.stderr)


def test_help_starts_without_the_heavy_libraries():
    code = (
        "import sys\n"
        "from bayeslmm.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('pymc', 'pytensor', 'arviz', 'pandas', 'numpy', 'formulae', 'xarray', 'scipy') "
        "if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "Commands:" in proc.stdout and "HEAVY []" in proc.stdout, proc.stdout + proc.stderr
