"""Plots of a :class:`~bayeslmm.results.BayesFit`, reached as ``fit.plot.<name>(...)``.

Model-checking plots an lme4 user draws by hand (caterpillar, residuals,
QQ, observed vs fitted, group trajectories, shrinkage) are drawn here with
matplotlib. Sampler plots (trace, rank, forest, posterior predictive) are
ArviZ's own: these functions only choose sensible variables and return the
matplotlib figure of ArviZ's ``PlotCollection``.

Single-panel plots take ``ax=`` and return the Axes; multi-panel plots
make their own figure (constrained layout, sized from the number of panels)
and return it -- resize with ``fig.set_size_inches`` before saving.
``bayeslmm.compare(...).plot()`` takes ``fig=`` or ``axes=``.
Every figure is laid out to be saved with ``savefig``'s defaults. Every function takes the fit as its first argument, so
``bayeslmm.plots.caterpillar(fit)`` and ``fit.plot.caterpillar()`` are the same.
The group-level plots live in :mod:`bayeslmm.group_plots` and are re-exported here.
"""

from __future__ import annotations

import functools
from typing import Any
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import stats

from . import naming
from .errors import BayesLMMError
from .group_plots import caterpillar, facet_grid, row_groups, shrinkage, trajectories

__all__ = [
    "caterpillar",
    "residuals",
    "observed_fitted",
    "qq",
    "trajectories",
    "shrinkage",
    "trace",
    "rank",
    "forest",
    "ppc",
    "FitPlots",
]

_POINT = dict(marker="o", linestyle="none", markersize=4)


def _figure_of(pc: Any) -> Figure:
    """The matplotlib figure of an ArviZ ``PlotCollection``, laid out so titles and tick labels do not overlap."""
    fig = pc.viz["figure"].item()
    fig.set_layout_engine("constrained")
    return fig


def _dimension_labels(fit: Any) -> dict[str, str]:
    """Readable headers for the dimension names ArviZ prints (from :mod:`bayeslmm.naming`)."""
    out = {"variable": "parameter", naming.FIXED_DIM: "term"}
    for b in fit.design.blocks:
        out[naming.term_dim(b.label)] = f"{b.label} term"
        out[naming.level_dim(b.label)] = b.factor
        out[naming.term_pair_dim(b.label)] = f"{b.label} terms"
    return out


def _scatter_by(
    fit: Any,
    xv: np.ndarray,
    yv: np.ndarray,
    by: str | None,
    facet: bool,
    ncols: int | None,
    ax: Axes | None,
    labels: tuple[str, str],
    reference: Callable[[Axes], None],
) -> Axes | Figure:
    """Scatter ``yv`` against ``xv``: one panel, coloured by group, or one panel per group."""
    if by is not None and facet:
        factor, groups, levels = row_groups(fit, by)
        fig, axes = facet_grid(len(levels), ncols, sharex=True, sharey=True)
        for a, lev in zip(axes, levels):
            m = groups == lev
            a.scatter(xv[m], yv[m], s=12)
            reference(a)
            a.set_title(f"{factor} {lev}", fontsize=9)
        fig.supxlabel(labels[0])
        fig.supylabel(labels[1])
        return fig
    ax = ax if ax is not None else plt.subplots(figsize=(5, 4), layout="constrained")[1]
    if by is None:
        ax.scatter(xv, yv, s=12)
    else:
        factor, groups, levels = row_groups(fit, by)
        for lev in levels:
            m = groups == lev
            ax.scatter(xv[m], yv[m], s=12, label=str(lev))
        if len(levels) <= 20:
            ncols_legend = 2 if len(levels) > 10 else 1
            ax.legend(title=factor, fontsize=7, ncols=ncols_legend, loc="upper left", bbox_to_anchor=(1.01, 1))
    reference(ax)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    return ax


# ---------------------------------------------------------------------------
# Residuals and fit
# ---------------------------------------------------------------------------
def residuals(
    fit: Any, by: str | None = None, facet: bool = True, ncols: int | None = None, ax: Axes | None = None
) -> Axes | Figure:
    """Residuals against fitted values (posterior means), overall or by group.

    Parameters
    ----------
    fit
        A fitted model.
    by
        Grouping factor. None draws one panel; with a factor, ``facet=True``
        draws one panel per level and ``facet=False`` colours the points by level.
    facet
        Small multiples (True) or colours (False) when ``by`` is given.
    ncols
        Columns of the facet grid.
    ax
        Axes to draw on (single-panel plots only).

    Returns
    -------
    Axes or Figure
        The Axes of a single panel, the Figure of a facet grid.
    """

    def zero(a: Axes) -> None:
        a.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")

    return _scatter_by(
        fit, fit.fitted().to_numpy(), fit.resid().to_numpy(), by, facet, ncols, ax, ("fitted", "residual"), zero
    )


def observed_fitted(
    fit: Any, by: str | None = None, facet: bool = False, ncols: int | None = None, ax: Axes | None = None
) -> Axes | Figure:
    """Observed response against fitted values (posterior means), with the identity line.

    Parameters
    ----------
    fit
        A fitted model.
    by
        Grouping factor to colour (``facet=False``) or facet (``facet=True``) by.
    facet
        One panel per level instead of colours.
    ncols
        Columns of the facet grid.
    ax
        Axes to draw on (single-panel plots only).

    Returns
    -------
    Axes or Figure
    """
    fitted = fit.fitted().to_numpy()
    y = np.asarray(fit.design.y, dtype=float)
    lim = (float(min(fitted.min(), y.min())), float(max(fitted.max(), y.max())))

    def diag(a: Axes) -> None:
        a.plot(lim, lim, color="grey", linewidth=0.8, linestyle="--")

    return _scatter_by(fit, fitted, y, by, facet, ncols, ax, ("fitted", fit.design.response_name), diag)


def qq(fit: Any, which: str = "all", ncols: int | None = None) -> Figure:
    """Normal QQ plots of the residuals and of each group effect (posterior means).

    Parameters
    ----------
    fit
        A fitted model.
    which
        ``"all"``, ``"resid"`` (residuals only) or ``"ranef"`` (group effects only).
    ncols
        Columns of the grid.

    Returns
    -------
    Figure
        One panel for the residuals (one point per observation) and one per
        factor and term (one point per level), each with the reference line
        of :func:`scipy.stats.probplot`.
    """
    if which not in ("all", "resid", "ranef"):
        raise BayesLMMError(f"which must be 'all', 'resid' or 'ranef', got {which!r}.")
    series: list[tuple[str, np.ndarray]] = []
    if which in ("all", "resid"):
        series.append(("Residuals", fit.resid().to_numpy()))
    if which in ("all", "ranef"):
        for factor, df in fit.ranef().items():
            series.extend((f"{factor}: {term}", df[term].to_numpy()) for term in df.columns)
    if not series:
        raise BayesLMMError("This model has no group effects for a QQ plot.")
    fig, axes = facet_grid(len(series), ncols or min(len(series), 3), size=(3.2, 3.0))
    for a, (title, values) in zip(axes, series):
        (osm, osr), (slope, intercept, _) = stats.probplot(values)
        a.plot(osm, osr, **_POINT)
        a.plot(osm, slope * osm + intercept, color="grey", linewidth=1)
        a.set_title(title, fontsize=10)
        a.set_xlabel("normal quantiles")
        a.set_ylabel("sample quantiles")
    return fig


# ---------------------------------------------------------------------------
# ArviZ plots
# ---------------------------------------------------------------------------
def _parameters(fit: Any, correlations: bool = True) -> list[str]:
    """The model's parameters in lme4's parameterisation: beta, sigma, sd_*, cor_*."""
    names = [naming.FIXED] if fit.design.fixed_names else []
    names.append(naming.SIGMA)
    for b in fit.design.blocks:
        names.append(naming.sd(b.label))
        if correlations and naming.cor(b.label) in fit.idata.posterior:
            names.append(naming.cor(b.label))
    return names


def _with_correlation_pairs(fit: Any, names: Sequence[str]) -> Any:
    """The fit's DataTree, with each requested ``cor_`` matrix replaced by its off-diagonal pairs.

    The diagonal of a correlation matrix is constantly 1, which ArviZ cannot
    draw a density for; the pairs get a dimension ``<block>__term_pair``
    labelled ``"(Intercept), Days"``.
    """
    import xarray as xr

    post = fit.idata.posterior
    cors = {naming.cor(b.label): b for b in fit.design.blocks if naming.cor(b.label) in names}
    if not cors:
        return fit.idata
    ds = post.to_dataset()[[n for n in names if n not in cors]]
    for name, b in cors.items():
        i, j = np.triu_indices(b.q, k=1)
        dim = naming.term_pair_dim(b.label)
        labels = [f"{b.terms[a]}, {b.terms[c]}" for a, c in zip(i, j)]
        ds[name] = xr.DataArray(post[name].values[:, :, i, j], dims=("chain", "draw", dim), coords={dim: labels})
    groups = {"posterior": ds}
    if "sample_stats" in fit.idata.children:
        groups["sample_stats"] = fit.idata.sample_stats.to_dataset()
    return xr.DataTree.from_dict(groups)


def trace(fit: Any, var_names: Sequence[str] | None = None, compact: bool = False, **kwargs: Any) -> Figure:
    """Trace and marginal-density plots by :func:`arviz.plot_trace_dist`.

    Parameters
    ----------
    fit
        A fitted model.
    var_names
        Posterior variables; by default ``beta``, ``sigma`` and every ``sd_``/``cor_``
        (correlations as their off-diagonal pairs).
    compact
        Overlay the coordinates of a variable in one panel (ArviZ's ``compact``);
        by default every scalar gets its own row, since an intercept and a slope rarely share a scale.
    **kwargs
        Passed to :func:`arviz.plot_trace_dist`.

    Returns
    -------
    Figure
    """
    import arviz as az

    names = list(var_names) if var_names is not None else _parameters(fit)
    dt = _with_correlation_pairs(fit, names)
    return _figure_of(az.plot_trace_dist(dt, var_names=names, compact=compact, backend="matplotlib", **kwargs))


def rank(fit: Any, var_names: Sequence[str] | None = None, **kwargs: Any) -> Figure:
    """Rank (fractional ECDF) plots of the chains by :func:`arviz.plot_rank`.

    Parameters
    ----------
    fit
        A fitted model.
    var_names
        Posterior variables; by default ``beta``, ``sigma`` and every ``sd_``/``cor_``
        (correlations as their off-diagonal pairs).
    **kwargs
        Passed to :func:`arviz.plot_rank`.

    Returns
    -------
    Figure
    """
    import arviz as az

    names = list(var_names) if var_names is not None else _parameters(fit)
    dt = _with_correlation_pairs(fit, names)
    return _figure_of(az.plot_rank(dt, var_names=names, backend="matplotlib", **kwargs))


def forest(fit: Any, var_names: Sequence[str] | None = None, level: float = 0.95, **kwargs: Any) -> Figure:
    """Forest plot of posterior intervals by :func:`arviz.plot_forest` (chains combined, equal-tailed).

    Parameters
    ----------
    fit
        A fitted model.
    var_names
        Posterior variables; by default ``beta``, ``sigma`` and every ``sd_``.
        Use ``["r_Subject"]`` for the group effects.
    level
        Level of the outer interval (the inner one is 50%); the point is the posterior mean,
        so the intervals and points match :meth:`BayesFit.fixef` and :meth:`BayesFit.ranef`.
        A dashed line marks zero.
    **kwargs
        Passed to :func:`arviz.plot_forest`.

    Returns
    -------
    Figure
    """
    import arviz as az

    names = list(var_names) if var_names is not None else _parameters(fit, correlations=False)
    opts = dict(combined=True, ci_kind="eti", ci_probs=(0.5, level), point_estimate="mean", backend="matplotlib")
    opts.update(kwargs)
    pc = az.plot_forest(fit.idata, var_names=names, **opts)
    fig = _figure_of(pc)
    headers = _dimension_labels(fit)
    forest_axes = {line.axes for var in pc.viz["twig"].data_vars for line in np.ravel(pc.viz["twig"][var].values)}
    for ax in fig.axes:
        if ax in forest_axes:
            ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--", zorder=0)
            ax.set_xlabel(f"posterior mean, 50% and {100 * level:g}% intervals")
        else:
            ticks = ax.get_xticks()
            ax.set_xticks(ticks, [headers.get(t.get_text(), t.get_text()) for t in ax.get_xticklabels()])
    return fig


def ppc(fit: Any, num_samples: int = 50, random_seed: int | None = None, **kwargs: Any) -> Figure:
    """Posterior predictive check by :func:`arviz.plot_ppc_dist`: densities of replicated data over the observed.

    Draws the posterior predictive (``fit.posterior_predictive()``) first when
    the fit does not hold it yet.

    Parameters
    ----------
    fit
        A fitted model.
    num_samples
        Number of replicated data sets drawn.
    random_seed
        Seed of the posterior predictive draws, when they are made here.
    **kwargs
        Passed to :func:`arviz.plot_ppc_dist`.

    Returns
    -------
    Figure
    """
    import arviz as az
    from matplotlib.lines import Line2D

    if "posterior_predictive" not in fit.idata.children:
        fit.posterior_predictive(random_seed=random_seed)
    fig = _figure_of(az.plot_ppc_dist(fit.idata, num_samples=num_samples, backend="matplotlib", **kwargs))
    for ax in fig.axes:
        ax.set_title(f"Posterior predictive check: {fit.design.response_name}")
        ax.set_xlabel(fit.design.response_name)
        ax.set_ylabel("density")
        ax.legend(
            handles=[
                Line2D([], [], color="black", label="observed data"),
                Line2D([], [], color="C0", alpha=0.5, label=f"{num_samples} replicated data sets"),
            ],
            fontsize=8,
            frameon=False,
        )
    return fig


# ---------------------------------------------------------------------------
# The accessor
# ---------------------------------------------------------------------------
def _method(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def method(self: FitPlots, *args: Any, **kwargs: Any) -> Any:
        return func(self._fit, *args, **kwargs)

    return method


class FitPlots:
    """``fit.plot``: every plot of :mod:`bayeslmm.plots`, bound to one fit.

    >>> fit.plot.trajectories("Days")      # doctest: +SKIP
    >>> fit.plot.caterpillar()             # doctest: +SKIP
    """

    def __init__(self, fit: Any) -> None:
        self._fit = fit

    caterpillar = _method(caterpillar)
    residuals = _method(residuals)
    observed_fitted = _method(observed_fitted)
    qq = _method(qq)
    trajectories = _method(trajectories)
    shrinkage = _method(shrinkage)
    trace = _method(trace)
    rank = _method(rank)
    forest = _method(forest)
    ppc = _method(ppc)

    def __repr__(self) -> str:
        names = ", ".join(n for n in __all__ if n != "FitPlots")
        return f"<plots of {self._fit!r}: {names}>"
