"""Group-level plots: caterpillar, per-group trajectories, shrinkage; and the helpers all plots share.

Reached through ``fit.plot`` (see :mod:`bayeslmm.plots`, which re-exports them).
"""

from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from .design import BlockDesign
from .errors import BayesLMMError, DataError
from .paramdraws import coef_draws, interval_names

__all__ = ["caterpillar", "trajectories", "shrinkage"]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
def facet_grid(
    n: int, ncols: int | None = None, size: tuple[float, float] = (2.4, 2.0), **kw: Any
) -> tuple[Figure, list[Axes]]:
    """A figure with exactly ``n`` axes in a grid of ``ncols`` columns (6 by default); unused cells are removed.

    ``size`` is the size of one panel in inches; ``kw`` goes to :func:`matplotlib.pyplot.subplots`.
    """
    ncols = ncols or min(n, 6)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False, layout="constrained", **kw
    )
    flat = list(axes.flat)
    for i in range(n, len(flat)):
        fig.delaxes(flat[i])
        if i >= ncols:  # the panel above an empty cell is the bottom of its column: label its x axis
            flat[i - ncols].xaxis.set_tick_params(labelbottom=True)
    return fig, flat[:n]


def factor_block(fit: Any, factor: str | None) -> BlockDesign:
    """The first random-effect block of a grouping factor (the first block when ``factor`` is None)."""
    blocks = fit.design.blocks
    if not blocks:
        raise BayesLMMError("This model has no random effects to plot by group.")
    if factor is None:
        return blocks[0]
    for b in blocks:
        if b.factor == factor:
            return b
    raise BayesLMMError(f"{factor!r} is not a grouping factor of this model; use one of {sorted(fit.design.factors)}.")


def row_groups(fit: Any, factor: str | None) -> tuple[str, np.ndarray, tuple[str, ...]]:
    """Factor name, the level label of every row, and the levels in order."""
    b = factor_block(fit, factor)
    return b.factor, np.asarray(b.levels, dtype=object)[b.group_idx], b.levels


def x_values(fit: Any, x: str) -> np.ndarray:
    """The values of data column ``x`` for the rows used in the fit, as floats."""
    frame = fit.design.frame
    if x not in frame.columns:
        raise DataError(f"{x!r} is not a column used by the model; use one of {sorted(map(str, frame.columns))}.")
    return frame[x].to_numpy(dtype=float)


# ---------------------------------------------------------------------------
# Group effects
# ---------------------------------------------------------------------------
def caterpillar(
    fit: Any, factor: str | None = None, terms: Sequence[str] | None = None, level: float = 0.95, sort: str = "each"
) -> Figure:
    """Caterpillar plot of the group effects with posterior intervals, as lme4's ``dotplot(ranef(fm))``.

    Parameters
    ----------
    fit
        A fitted model.
    factor
        Grouping factor to show; all factors when None.
    terms
        Terms to show (``"(Intercept)"``, ``"Days"``); all when None.
    level
        Level of the interval drawn around each estimate (posterior: equal-tailed; REML: Wald from the conditional sd).
    sort
        ``"each"`` sorts every panel by its own estimates, ``"first"`` orders every
        panel of a factor by its first term (lme4's dotplot), ``"none"`` keeps level order.

    Returns
    -------
    Figure
        One panel per factor and term, one point and interval per level.
    """
    if sort not in ("each", "first", "none"):
        raise BayesLMMError(f"sort must be 'each', 'first' or 'none', got {sort!r}.")
    tab = fit.ranef(level=level, long=True)
    lo, hi = interval_names(level)
    factors = [factor_block(fit, factor).factor] if factor is not None else list(dict.fromkeys(tab["grpvar"]))
    panels = [
        (f, t)
        for f in factors
        for t in dict.fromkeys(tab.loc[tab["grpvar"] == f, "term"])
        if terms is None or t in terms
    ]
    if not panels:
        raise BayesLMMError(f"No group effects match terms={list(terms or [])}.")
    most_levels = max(factor_block(fit, f).n_levels for f in factors)
    fig, axes = facet_grid(len(panels), ncols=len(panels), size=(3.2, 1.0 + 0.18 * most_levels))
    first: dict[str, list[str]] = {}
    for a, (f, t) in zip(axes, panels):
        sub = tab[(tab["grpvar"] == f) & (tab["term"] == t)]
        if sort == "each":
            sub = sub.sort_values("condval")
        elif sort == "first":
            first.setdefault(f, list(sub.sort_values("condval")["grp"]))
            sub = sub.set_index("grp").loc[first[f]].reset_index()
        est = sub["condval"].to_numpy()
        pos = np.arange(len(sub))
        err = np.vstack([est - sub[lo].to_numpy(), sub[hi].to_numpy() - est])
        a.errorbar(est, pos, xerr=err, fmt="o", markersize=3, elinewidth=1, capsize=0)
        a.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
        a.set_yticks(pos, [str(g) for g in sub["grp"]], fontsize=7)
        a.set_title(f"{f}: {t}", fontsize=10)
    fig.supxlabel(f"group effect (estimate and {100 * level:g}% {fit.interval_kind} interval)")
    return fig


def shrinkage(fit: Any, factor: str | None = None, x: str = "auto") -> Figure:
    """Arrows from no-pooling to partial-pooling estimates, one panel per term.

    Uses :meth:`BayesFit.pooling`: for every level, an arrow runs from the
    separate per-group estimate (no pooling) to the model's estimate (partial
    pooling); the dashed line is the complete-pooling estimate.

    Parameters
    ----------
    fit
        A fitted model.
    factor
        Grouping factor; the first when None.
    x
        Horizontal position of each level: ``"size"`` (group size, where small
        groups shrink most), ``"level"`` (levels sorted by the no-pooling
        estimate), or ``"auto"`` (size when sizes differ, else level).

    Returns
    -------
    Figure
        One panel per term with a group effect (two for intercept and slope).
    """
    if x not in ("auto", "size", "level"):
        raise BayesLMMError(f"x must be 'auto', 'size' or 'level', got {x!r}.")
    b = factor_block(fit, factor)
    pool = _pooling_frame(fit, b.factor)
    fig, axes = facet_grid(len(pool), ncols=len(pool), size=(4.5, 3.6))
    for a, (term, df) in zip(axes, pool.items()):
        use_size = x == "size" or (x == "auto" and df["n"].nunique() > 1)
        if use_size:
            pos = df["n"].to_numpy(dtype=float)
            a.set_xlabel(f"observations per {b.factor}")
        else:
            df = df.sort_values("no_pooling")
            pos = np.arange(len(df), dtype=float)
            a.set_xticks(pos, [str(v) for v in df.index], rotation=90, fontsize=7)
            a.set_xlabel(b.factor)
        start, end = df["no_pooling"].to_numpy(dtype=float), df["partial_pooling"].to_numpy(dtype=float)
        a.scatter(pos, start, s=14, facecolors="none", edgecolors="C0", label="no pooling")
        a.scatter(pos, end, s=14, color="C1", label="partial pooling")
        for p, s0, s1 in zip(pos, start, end):
            if np.isfinite(s0):  # levels too small to fit alone have no no-pooling estimate
                a.annotate("", xy=(p, s1), xytext=(p, s0), arrowprops=dict(arrowstyle="->", color="grey", lw=0.8))
        complete = float(df["complete_pooling"].iloc[0])
        a.axhline(complete, color="k", linestyle="--", linewidth=1, label="complete pooling")
        a.set_title(term)
        a.set_ylabel("estimate")
    axes[0].legend(fontsize=8)
    return fig


def _pooling_frame(fit: Any, factor: str) -> dict[str, pd.DataFrame]:
    """Per term, :meth:`BayesFit.pooling` indexed by level (``n``, ``no_pooling``, ``partial_pooling``, ...)."""
    tab = fit.pooling(factor=factor)
    return {str(term): df.set_index("grp") for term, df in tab.groupby("term", sort=False)}


# ---------------------------------------------------------------------------
# Trajectories
# ---------------------------------------------------------------------------
def _coef_draws(fit: Any, factor: str, terms: Sequence[str]) -> dict[str, np.ndarray]:
    """Per term, draws of fixed + group effect, shape ``(samples, levels)`` (a term not in the model: 0)."""
    names, total = coef_draws(fit.design, fit.params, factor)
    return {t: total[:, :, names.index(t)] if t in names else np.zeros(total.shape[:2]) for t in terms}


def trajectories(
    fit: Any,
    x: str,
    group: str | None = None,
    population: bool = True,
    level: float | None = None,
    ncols: int | None = None,
) -> Figure:
    """Small multiples of the response against ``x`` per group, with each group's fitted line.

    When the fixed part is a straight line in ``x`` (``y ~ x`` or ``y ~ 1``),
    each group's line is its ``coef()`` intercept + slope * x over the panel's
    range, and ``level`` adds its posterior band. Otherwise the line joins the
    group's posterior-mean fitted values in order of ``x``.

    Parameters
    ----------
    fit
        A fitted model.
    x
        Column of the data for the horizontal axis (``"Days"``).
    group
        Grouping factor; the first when None.
    population
        Also draw the population line (fixed effects only, ``re.form=NA``), dashed.
    level
        Level of a posterior band around each group's line (straight-line models only).
    ncols
        Columns of the grid.

    Returns
    -------
    Figure
        One panel per level with its observed points.
    """
    design = fit.design
    xv = x_values(fit, x)
    factor, groups, levels = row_groups(fit, group)
    straight = set(design.fixed_names) <= {"(Intercept)", x}
    fig, axes = facet_grid(len(levels), ncols, sharex=True, sharey=True)
    beta_mean = fit.params.beta.mean(axis=0)
    if straight:
        grid = np.linspace(xv.min(), xv.max(), 50)
        coefs = _coef_draws(fit, factor, ["(Intercept)", x])
        fixed = dict(zip(design.fixed_names, beta_mean))
        pop_line = fixed.get("(Intercept)", 0.0) + fixed.get(x, 0.0) * grid
    else:
        fitted = fit.fitted().to_numpy()
        pop = design.X @ beta_mean
    for i, (a, lev) in enumerate(zip(axes, levels)):
        m = groups == lev
        a.scatter(xv[m], design.y[m], s=12, color="C0")
        if straight:
            curves = coefs["(Intercept)"][:, i, None] + coefs[x][:, i, None] * grid
            a.plot(grid, curves.mean(axis=0), color="C1")
            if level is not None:
                lo, hi = np.quantile(curves, [(1 - level) / 2, (1 + level) / 2], axis=0)
                a.fill_between(grid, lo, hi, color="C1", alpha=0.25, linewidth=0)
            if population:
                a.plot(grid, pop_line, color="grey", linestyle="--", linewidth=1)
        else:
            order = np.argsort(xv[m], kind="stable")
            a.plot(xv[m][order], fitted[m][order], color="C1")
            if population:
                a.plot(xv[m][order], pop[m][order], color="grey", linestyle="--", linewidth=1)
        a.set_title(f"{factor} {lev}", fontsize=9)
    fig.supxlabel(x)
    fig.supylabel(design.response_name)
    handles = [
        Line2D([], [], color="C0", marker="o", linestyle="none", markersize=4, label="observed"),
        Line2D([], [], color="C1", label=f"{factor}'s fitted line" + (" (coef)" if straight else "")),
    ]
    if straight and level is not None:
        handles.append(Patch(color="C1", alpha=0.25, label=f"{100 * level:g}% {fit.interval_kind} band"))
    if population:
        handles.append(Line2D([], [], color="grey", linestyle="--", label="population line (fixed effects)"))
    fig.legend(handles=handles, loc="outside upper center", ncols=len(handles), fontsize=8, frameon=False)
    return fig
