"""The ``bayeslmm`` command line.

::

    bayeslmm dataset [NAME] [--out FILE.csv]
    bayeslmm fit DATA.csv "Reaction ~ Days + (Days | Subject)" [--method nuts|REML|ML]
                 [--draws N] [--tune N] [--chains N] [--seed S] [--out fit.nc]
    bayeslmm summary fit.nc
    bayeslmm predict fit.nc NEW.csv [--out pred.csv] [--re-form "~0"] [--new-levels error|population|sample]
                 [--kind mean|response] [--interval 0.95] [--seed S]
    bayeslmm demo

A formula given on the command line may come from someone else (a web form, a
batch service), so it is not run as code: it may use only data columns and the
transformations of :mod:`bayeslmm.transforms`, checked before anything is
evaluated, in a namespace holding nothing else (``lmer(..., formula_env="closed")``).

Errors print ``Error: <message>`` on stderr and exit with status 1 (2 for a
usage error); ``bayeslmm --debug ...`` shows the full traceback instead.
Warnings from the fit (dropped rows, convergence) are printed on stderr as
``Warning: <message>``. Heavy libraries are imported only by the command that
needs them, so ``bayeslmm --help`` starts at once.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any
from collections.abc import Callable

import click

from .errors import BayesLMMError, DataError

METHODS = ("nuts", "REML", "ML")
#: Prefix given to the prediction columns when NEW.csv already has a column of the same name.
PREDICTION_PREFIX = "pred_"


def _read_csv(path: str, what: str):
    """Read a CSV with pandas, turning every reading problem into a :class:`DataError`."""
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise DataError(f"The {what} file {path!r} does not exist.")
    if p.is_dir():
        raise DataError(f"The {what} path {path!r} is a folder, not a CSV file.")
    try:
        return pd.read_csv(p)
    except pd.errors.EmptyDataError:
        raise DataError(f"The {what} file {path!r} is empty.") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"The {what} file {path!r} is not a readable CSV file: {exc}") from None
    except OSError as exc:
        raise DataError(f"The {what} file {path!r} cannot be read: {exc.strerror or exc}") from None


def _with_warnings(run: Callable[[], Any]) -> Any:
    """Run ``run()``, then print the warnings it raised as ``Warning: ...`` lines on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        result = run()
    seen = set()
    for w in caught:
        text = str(w.message)
        if text not in seen:
            seen.add(text)
            click.echo(f"Warning: {text}", err=True)
    return result


@click.group()
@click.option("--debug", is_flag=True, help="Show full tracebacks on error.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Bayesian linear mixed models from lme4 formulas."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@cli.command()
@click.argument("data", metavar="DATA.csv")
@click.argument("formula")
@click.option("--method", type=click.Choice(METHODS, case_sensitive=False), default="nuts", show_default=True,
              help="NUTS (Bayesian) or the REML/ML point estimates.")
@click.option("--draws", default=1000, show_default=True, type=click.IntRange(min=1), help="Posterior draws per chain.")
@click.option("--tune", default=1000, show_default=True, type=click.IntRange(min=0), help="Tuning steps per chain.")
@click.option("--chains", default=4, show_default=True, type=click.IntRange(min=1), help="Number of chains.")
@click.option("--seed", default=None, type=int, help="Random seed (the same seed gives the same draws).")
@click.option("--out", default=None, metavar="FIT.nc", help="Also save the fit to this file.")
@click.option("--progressbar/--no-progressbar", default=False, show_default=True, help="Show the sampler's progress bar.")
def fit(data: str, formula: str, method: str, draws: int, tune: int, chains: int, seed: int | None,
        out: str | None, progressbar: bool) -> None:
    """Fit FORMULA to DATA.csv and print the summary.

    FORMULA may use data columns and the transformations log, log1p, log2, log10, exp, sqrt, abs
    (also as np.log ...), I() or {} arithmetic, poly, scale, center, standardize and C(); nothing else
    in it is evaluated.
    """
    from .api import lmer

    if out is not None:
        from .io import check_writable

        check_writable(out)  # before the fit, not after it
    frame = _read_csv(data, "data")
    if method.lower() == "nuts":
        opts: dict[str, Any] = dict(draws=draws, tune=tune, chains=chains, random_seed=seed, progressbar=progressbar)
    else:
        opts = {}
    result = _with_warnings(lambda: lmer(formula, frame, method=method, formula_env="closed", **opts))
    click.echo(str(result.summary()))
    if out is not None:
        from .io import save

        save(result, out)
        click.echo(f"\nSaved the fit to {out}.")


@cli.command()
@click.argument("fit_file", metavar="FIT.nc")
def summary(fit_file: str) -> None:
    """Print the summary of a saved fit."""
    from .io import load

    click.echo(str(load(fit_file).summary()))


@cli.command()
@click.argument("fit_file", metavar="FIT.nc")
@click.argument("newdata", metavar="NEW.csv")
@click.option("--out", default=None, metavar="PRED.csv", help="Write the predictions here (default: standard output).")
@click.option("--re-form", "re_form", default=None, help='Group effects to include, e.g. "~0" for none (default: all).')
@click.option("--new-levels", type=click.Choice(["error", "population", "sample"]), default="error",
              show_default=True, help="Grouping levels not seen in the fit: refuse them (as lme4 does), predict "
              "them without a group effect, or draw new group effects.")
@click.option("--kind", type=click.Choice(["mean", "response"]), default="mean", show_default=True,
              help="Expected value (credible interval) or new observation (prediction interval).")
@click.option("--interval", default=0.95, show_default=True, type=float, help="Interval probability.")
@click.option("--seed", default=None, type=int, help="Random seed for new levels and response noise.")
def predict(fit_file: str, newdata: str, out: str | None, re_form: str | None, new_levels: str, kind: str,
            interval: float, seed: int | None) -> None:
    """Predict for the rows of NEW.csv with a saved fit.

    The output has the columns of NEW.csv followed by Estimate, its uncertainty (Est.Error for a Bayesian fit,
    Std. Error for REML/ML) and the interval bounds (each prefixed with "pred_" if NEW.csv already has a column
    of that name).
    """
    from .io import check_writable, load

    if out is not None:
        check_writable(out, "the predictions")
    fitted = load(fit_file)
    rows = _read_csv(newdata, "new data")
    pred = fitted.predict(rows, re_form=re_form, new_levels=new_levels, kind=kind, level=interval, random_seed=seed)
    table = rows.join(_without_clashes(pred, rows))
    if out is None:
        click.echo(table.to_csv(index=False), nl=False)
    else:
        try:
            table.to_csv(out, index=False)
        except OSError as exc:
            raise DataError(f"Cannot write the predictions to {out!r}: {exc.strerror or exc}") from None
        click.echo(f"Wrote {len(table)} predictions to {out}.")


def _without_clashes(pred: Any, rows: Any) -> Any:
    """The prediction columns, all prefixed with "pred_" if any of them is already a column of the new data."""
    clash = [c for c in pred.columns if c in rows.columns]
    if not clash:
        return pred
    renamed = pred.add_prefix(PREDICTION_PREFIX)
    still = [c for c in renamed.columns if c in rows.columns]
    if still:
        raise DataError(
            f"The new data already have the column(s) {still}, the names the predictions would be written under; "
            "rename them in NEW.csv."
        )
    click.echo(
        f"Warning: the new data already have the column(s) {clash}; the prediction columns are written as "
        f"{list(renamed.columns)}.",
        err=True,
    )
    return renamed


@cli.command()
@click.argument("name", required=False)
@click.option("--out", default=None, metavar="FILE.csv", help="Write the data set here (default: standard output).")
def dataset(name: str | None, out: str | None) -> None:
    """Write the packaged data set NAME as CSV (without NAME: list the data sets)."""
    from . import datasets

    if name is None:
        click.echo("\n".join(datasets.available()))
        return
    frame = datasets.load(name)
    if out is None:
        click.echo(frame.to_csv(index=False), nl=False)
        return
    from .io import check_writable

    check_writable(out, "the data set")
    frame.to_csv(out, index=False)
    click.echo(f"Wrote {name} ({frame.shape[0]} rows, columns {', '.join(map(str, frame.columns))}) to {out}.")


@cli.command()
@click.option("--draws", default=1000, show_default=True, help="Posterior draws per chain.")
@click.option("--chains", default=4, show_default=True, help="Number of chains.")
@click.option("--seed", default=1, show_default=True, help="Random seed.")
def demo(draws: int, chains: int, seed: int) -> None:
    """Fit Reaction ~ Days + (Days | Subject) to the packaged sleepstudy data and print the summary."""
    from . import datasets, lmer

    data = datasets.load("sleepstudy")
    click.echo("Fitting Reaction ~ Days + (Days | Subject) to sleepstudy (180 rows, 18 subjects)...")
    fit = lmer("Reaction ~ Days + (Days | Subject)", data, draws=draws, chains=chains, random_seed=seed)
    click.echo(str(fit.summary()))


def main(argv: list[str] | None = None) -> int:
    """Console entry point: runs the CLI, turning errors into a message and a non-zero exit code.

    Parameters
    ----------
    argv
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 1 for an error in the input or the fit, 2 for a usage error,
        3 for an unexpected internal error, 130 when interrupted (Ctrl-C).
    """
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="bayeslmm", standalone_mode=False)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            click.echo("Interrupted (Ctrl-C): stopped before finishing.", err=True)
            return 130
        click.echo("Aborted.", err=True)
        return 1
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except BayesLMMError as exc:
        if debug:
            raise
        click.echo(f"Error: {exc}", err=True)
        return 1
    except Exception as exc:  # a bug: say so briefly, full traceback with --debug
        if debug:
            raise
        click.echo(f"Internal error: {type(exc).__name__}: {exc}\nRun with --debug for the traceback, "
                   "and please report it.", err=True)
        return 3
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
