"""The ``bayeslmm`` command line."""

from __future__ import annotations

import sys

import click

from .errors import BayesLMMError


@click.group()
@click.option("--debug", is_flag=True, help="Show full tracebacks on error.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Bayesian linear mixed models from lme4 formulas."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


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
    """Console entry point: runs the CLI, turning bayeslmm errors into a message and exit code 1."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="bayeslmm", standalone_mode=False)
    except click.exceptions.Abort:
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
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
