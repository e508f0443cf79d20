"""Every plot renders under Agg and draws what it should: one mark per level, row or draw, at the right place."""

from __future__ import annotations

import dataclasses
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.figure import Figure
from matplotlib.text import Annotation

import bayeslmm
from bayeslmm import plots
from bayeslmm.errors import BayesLMMError

N_SUBJECTS, N_DAYS = 18, 10


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def int_fit():
    """A random-intercept model whose fixed part is not a straight line in Days."""
    d = bayeslmm.datasets.load("sleepstudy")
    d["phase"] = np.where(d["Days"] >= 5, "late", "early")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bayeslmm.lmer(
            "Reaction ~ Days + phase + (1 | Subject)", d, draws=60, tune=60, chains=2, random_seed=3, progressbar=False
        )


def scatter_points(ax: Axes) -> list[np.ndarray]:
    return [c.get_offsets() for c in ax.collections if isinstance(c, PathCollection)]


def panels(fig: Figure) -> list[Axes]:
    """Axes that show something (ArviZ leaves empty cells of its grid with the axis off)."""
    return [a for a in fig.axes if a.axison]


# ---------------------------------------------------------------------------
# Group effects
# ---------------------------------------------------------------------------
def test_caterpillar_one_sorted_point_and_interval_per_level(sleep_fit):
    fig = sleep_fit.plot.caterpillar(level=0.9)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    tab = sleep_fit.ranef(level=0.9, long=True)
    for ax, term in zip(fig.axes, ["(Intercept)", "Days"]):
        assert term in ax.get_title()
        x = ax.lines[0].get_xdata()
        assert len(x) == N_SUBJECTS
        assert np.all(np.diff(x) >= 0), "each panel is sorted by its estimates"
        sub = tab[tab.term == term].set_index("grp")
        labels = [t.get_text() for t in ax.get_yticklabels()]
        np.testing.assert_allclose(x, sub.loc[labels, "condval"].to_numpy())
        bars = ax.collections[0].get_segments()
        assert len(bars) == N_SUBJECTS
        lo = np.array([seg[:, 0].min() for seg in bars])
        np.testing.assert_allclose(lo, sub.loc[labels, "l-90% CI"].to_numpy())


def test_caterpillar_first_term_order_and_filters(sleep_fit):
    fig = plots.caterpillar(sleep_fit, sort="first")
    a, b = ([t.get_text() for t in ax.get_yticklabels()] for ax in fig.axes)
    assert a == b
    assert np.all(np.diff(fig.axes[0].lines[0].get_xdata()) >= 0)
    fig = sleep_fit.plot.caterpillar(terms=["Days"], sort="none")
    assert len(fig.axes) == 1
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == list(sleep_fit.design.blocks[0].levels)
    with pytest.raises(BayesLMMError, match="sort"):
        sleep_fit.plot.caterpillar(sort="alphabetical")
    with pytest.raises(BayesLMMError, match="grouping factor"):
        sleep_fit.plot.caterpillar(factor="Days")


def test_trajectories_one_panel_per_subject_with_coef_lines(sleep_fit):
    fig = sleep_fit.plot.trajectories("Days", level=0.9)
    assert len(fig.axes) == N_SUBJECTS
    coef = sleep_fit.coef()["Subject"]
    fixef = sleep_fit.fixef()["Estimate"]
    for ax, level in zip(fig.axes, coef.index):
        assert ax.get_title() == f"Subject {level}"
        (pts,) = scatter_points(ax)
        assert pts.shape == (N_DAYS, 2)
        group_line, pop_line = ax.lines
        x, y = group_line.get_xdata(), group_line.get_ydata()
        np.testing.assert_allclose(y, coef.loc[level, "(Intercept)"] + coef.loc[level, "Days"] * x)
        np.testing.assert_allclose(pop_line.get_ydata(), fixef["(Intercept)"] + fixef["Days"] * x)
        assert sum(isinstance(c, PolyCollection) for c in ax.collections) == 1


def test_trajectories_without_population_or_band(sleep_fit):
    fig = plots.trajectories(sleep_fit, "Days", population=False, ncols=4)
    assert len(fig.axes) == N_SUBJECTS
    assert all(len(ax.lines) == 1 and len(ax.collections) == 1 for ax in fig.axes)
    assert fig.axes[4].get_subplotspec().rowspan.start == 1, "four columns"
    fig.canvas.draw()
    labelled = [any(t.get_visible() and t.get_text() for t in ax.get_xticklabels()) for ax in fig.axes]
    assert [i for i, on in enumerate(labelled) if on] == [14, 15, 16, 17], "the bottom panel of every column"
    with pytest.raises(bayeslmm.DataError, match="Hours"):
        sleep_fit.plot.trajectories("Hours")
    with pytest.raises(BayesLMMError, match="not a grouping factor"):
        sleep_fit.plot.trajectories("Days", group="Days")


def test_trajectories_fall_back_to_fitted_values(int_fit):
    fig = int_fit.plot.trajectories("Days")
    fitted = int_fit.fitted().to_numpy()
    levels = int_fit.design.blocks[0].levels
    groups = np.asarray(levels)[int_fit.design.blocks[0].group_idx]
    for ax, level in zip(fig.axes, levels):
        group_line = ax.lines[0]
        assert len(group_line.get_xdata()) == N_DAYS
        np.testing.assert_allclose(np.sort(group_line.get_ydata()), np.sort(fitted[groups == level]))
        jump = np.diff(ax.lines[1].get_ydata())
        assert np.ptp(jump) > 0, "the population line has the phase step, so it is not straight"


def test_shrinkage_arrows_from_no_to_partial_pooling(sleep_fit):
    fig = sleep_fit.plot.shrinkage()
    assert len(fig.axes) == 2, "intercept and slope panels"
    pool = sleep_fit.pooling()
    for ax, term in zip(fig.axes, ["(Intercept)", "Days"]):
        assert ax.get_title() == term
        sub = pool[pool.term == term].sort_values("no_pooling")
        arrows = [c for c in ax.get_children() if isinstance(c, Annotation)]
        assert len(arrows) == N_SUBJECTS
        start, end = scatter_points(ax)
        np.testing.assert_allclose(start[:, 1], sub["no_pooling"], err_msg="equal sizes: levels sorted by no pooling")
        np.testing.assert_allclose(end[:, 1], sub["partial_pooling"])
        np.testing.assert_allclose([a.xyann[1] for a in arrows], sub["no_pooling"])
        np.testing.assert_allclose([a.xy[1] for a in arrows], sub["partial_pooling"])
        assert [t.get_text() for t in ax.get_xticklabels()] == list(sub["grp"])
        assert ax.lines[0].get_ydata()[0] == pytest.approx(sub["complete_pooling"].iloc[0])


def test_shrinkage_intercept_only_has_one_panel(int_fit):
    fig = int_fit.plot.shrinkage(x="size")
    assert len(fig.axes) == 1
    start, end = scatter_points(fig.axes[0])
    assert len(start) == len(end) == N_SUBJECTS
    np.testing.assert_allclose(start[:, 0], N_DAYS)
    assert fig.axes[0].get_xlabel() == "observations per Subject"
    with pytest.raises(BayesLMMError, match="'auto', 'size' or 'level'"):
        int_fit.plot.shrinkage(x="n")
    with pytest.raises(BayesLMMError, match="not a grouping factor"):
        int_fit.plot.shrinkage(factor="phase")


# ---------------------------------------------------------------------------
# Residuals
# ---------------------------------------------------------------------------
def test_residuals_single_panel(sleep_fit):
    _, ax = plt.subplots()
    out = sleep_fit.plot.residuals(ax=ax)
    assert out is ax
    (pts,) = scatter_points(ax)
    np.testing.assert_allclose(pts, np.column_stack([sleep_fit.fitted(), sleep_fit.resid()]))
    assert ax.lines[0].get_ydata()[0] == 0.0


def test_residuals_faceted_and_coloured_by_subject(sleep_fit):
    fig = sleep_fit.plot.residuals(by="Subject")
    assert len(fig.axes) == N_SUBJECTS
    assert all(scatter_points(ax)[0].shape == (N_DAYS, 2) for ax in fig.axes)
    ax = sleep_fit.plot.residuals(by="Subject", facet=False)
    groups = scatter_points(ax)
    assert len(groups) == N_SUBJECTS and sum(len(g) for g in groups) == sleep_fit.nobs()
    assert len(ax.get_legend().get_texts()) == N_SUBJECTS


def test_observed_vs_fitted(sleep_fit):
    ax = sleep_fit.plot.observed_fitted()
    (pts,) = scatter_points(ax)
    np.testing.assert_allclose(pts, np.column_stack([sleep_fit.fitted(), sleep_fit.design.y]))
    x, y = ax.lines[0].get_data()
    np.testing.assert_allclose(x, y)
    fig = sleep_fit.plot.observed_fitted(by="Subject", facet=True)
    assert len(fig.axes) == N_SUBJECTS
    assert sum(len(scatter_points(a)[0]) for a in fig.axes) == sleep_fit.nobs()


def test_qq_residuals_and_each_random_effect(sleep_fit):
    fig = sleep_fit.plot.qq()
    assert [a.get_title() for a in fig.axes] == ["Residuals", "Subject: (Intercept)", "Subject: Days"]
    points = [a.lines[0].get_ydata() for a in fig.axes]
    assert [len(p) for p in points] == [sleep_fit.nobs(), N_SUBJECTS, N_SUBJECTS]
    np.testing.assert_allclose(points[0], np.sort(sleep_fit.resid()))
    np.testing.assert_allclose(points[2], np.sort(sleep_fit.ranef()["Subject"]["Days"]))
    assert all(len(a.lines) == 2 for a in fig.axes), "points and reference line"
    assert len(plots.qq(sleep_fit, which="ranef").axes) == 2
    with pytest.raises(BayesLMMError, match="which"):
        sleep_fit.plot.qq(which="fixef")


# ---------------------------------------------------------------------------
# ArviZ
# ---------------------------------------------------------------------------
def test_trace_one_row_per_scalar_one_line_per_chain(sleep_fit):
    n_chains = sleep_fit.idata.posterior.sizes["chain"]
    fig = sleep_fit.plot.trace(var_names=["beta", "sigma"])
    assert len(fig.axes) == 2 * 3, "beta[2] and sigma; density and trace columns"
    assert all(len(a.lines) == n_chains for a in fig.axes)
    draws = sleep_fit.idata.posterior.sizes["draw"]
    assert any(len(a.lines[0].get_xdata()) == draws for a in fig.axes), "a trace line has every draw"
    default = sleep_fit.plot.trace()
    assert len(default.axes) == 2 * (2 + 1 + 2 + 1), "beta[2], sigma, sd_Subject[2], cor_Subject off-diagonal"
    compact = sleep_fit.plot.trace(compact=True)
    assert len(compact.axes) == 2 * 4
    assert sorted(len(a.lines) for a in compact.axes)[-1] == 2 * n_chains, "beta's two terms overlaid"


def test_rank_one_panel_per_scalar_parameter(sleep_fit):
    fig = sleep_fit.plot.rank()
    shown = panels(fig)
    assert len(shown) == 2 + 1 + 2 + 1, "beta[2], sigma, sd_Subject[2], one correlation"
    assert all(len(a.lines) == sleep_fit.idata.posterior.sizes["chain"] for a in shown)


def test_forest_points_and_intervals_match_ranef(sleep_fit):
    fig = sleep_fit.plot.forest(var_names=["r_Subject"], coords={"Subject__term": ["Days"]})
    ax = fig.axes[-1]
    points = np.array([c.get_offsets()[0, 0] for c in ax.collections])
    tab = sleep_fit.ranef(long=True)
    days = tab[tab.term == "Days"]
    np.testing.assert_allclose(points, days["condval"])
    twigs = sorted((line.get_xdata() for line in ax.lines), key=np.ptp)[-N_SUBJECTS:]
    np.testing.assert_allclose(sorted(t[0] for t in twigs), np.sort(days["l-95% CI"]), rtol=1e-6)
    fig = sleep_fit.plot.forest()
    assert len(fig.axes[-1].collections) == 2 + 1 + 2, "beta[2], sigma, sd_Subject[2]"


def test_ppc_draws_replicates_over_observed(int_fit):
    fig = int_fit.plot.ppc(num_samples=15, random_seed=1)
    assert "posterior_predictive" in int_fit.idata.children
    (ax,) = panels(fig)
    assert len(ax.lines) == 15 + 1


def test_accessor_lists_every_plot(sleep_fit):
    text = repr(sleep_fit.plot)
    for name in plots.__all__:
        if name != "FitPlots":
            assert name in text
            assert getattr(sleep_fit.plot, name).__doc__ == getattr(plots, name).__doc__


# ---------------------------------------------------------------------------
# Report-ready at savefig's defaults: no text cut off, no title over tick labels
# ---------------------------------------------------------------------------
def _texts(fig):
    from matplotlib.text import Text

    fig.canvas.draw()
    out = []
    for ax in fig.axes:
        titles = [c for c in ax.get_children() if isinstance(c, Text) and c.get_text()]
        labels = [
            t
            for axis, ticks in ((ax.xaxis, ax.get_xticklabels()), (ax.yaxis, ax.get_yticklabels()))
            if ax.axison and axis.get_visible()
            for t in (axis.label, *ticks)
        ]
        out += [(ax, "title", t) for t in titles] + [(ax, "label", t) for t in labels if t.get_text()]
    return [(ax, kind, t) for ax, kind, t in out if t.get_visible()]


def assert_report_ready(fig):
    renderer = fig.canvas.get_renderer()
    texts = _texts(fig)
    inside = lambda b: b.x0 >= -1 and b.y0 >= -1 and b.x1 <= fig.bbox.width + 1 and b.y1 <= fig.bbox.height + 1  # noqa: E731
    drawn = {ax: ax.get_tightbbox(renderer) for ax in fig.axes if ax.axison}  # what each panel draws
    for ax, box in drawn.items():  # inside the saved area (savefig's default bbox is the figure)
        assert inside(box), f"panel {ax.get_title()!r} extends outside the figure: {box}"
    for legend in fig.legends:
        assert inside(legend.get_window_extent(renderer))
    boxes = [(ax, kind, t, t.get_window_extent(renderer)) for ax, kind, t in texts if ax in drawn]
    boxes = [(ax, kind, t, b) for ax, kind, t, b in boxes if drawn[ax].contains(*b.p0) or kind == "title"]
    for ax, kind, t, b in boxes:
        if kind != "title":
            continue
        for other_ax, other_kind, u, c in boxes:
            if other_ax is not ax and other_kind == "label":
                assert not b.overlaps(c), f"title {t.get_text()!r} overlaps {u.get_text()!r}"


@pytest.mark.parametrize(
    "draw",
    [
        lambda f: f.plot.rank(),
        lambda f: f.plot.trace(),
        lambda f: f.plot.residuals().figure,
        lambda f: f.plot.residuals(by="Subject"),
        lambda f: f.plot.observed_fitted(by="Subject", facet=False).figure,
        lambda f: f.plot.qq(),
        lambda f: f.plot.caterpillar(),
        lambda f: f.plot.shrinkage(),
        lambda f: f.plot.trajectories("Days", level=0.9),
        lambda f: f.plot.forest(),
        lambda f: dataclasses.replace(f, idata=f.idata.copy()).plot.ppc(num_samples=10, random_seed=1),
        lambda f: bayeslmm.compare(f, f.reml()).plot(),
    ],
    ids=["rank", "trace", "residuals", "residuals_by", "observed_fitted", "qq", "caterpillar", "shrinkage",
         "trajectories", "forest", "ppc", "compare"],
)
def test_every_plot_is_report_ready(sleep_fit, draw):
    assert_report_ready(draw(sleep_fit))


def test_ppc_names_observed_and_replicated(int_fit):
    fig = int_fit.plot.ppc(num_samples=10, random_seed=1)
    (ax,) = panels(fig)
    assert ax.get_xlabel() == "Reaction" and ax.get_ylabel() == "density"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["observed data", "10 replicated data sets"]


def test_forest_has_readable_headers_and_a_zero_line(sleep_fit):
    fig = sleep_fit.plot.forest(var_names=["r_Subject"])
    headers = [t.get_text() for ax in fig.axes[:-1] for t in ax.get_xticklabels()]
    assert headers == ["parameter", "Subject", "Subject term"]  # not Subject__level / Subject__term
    zero = [line for line in fig.axes[-1].lines if list(line.get_xdata()) == [0.0, 0.0]]
    assert len(zero) == 1


def test_trajectories_legend_names_each_line(sleep_fit):
    fig = sleep_fit.plot.trajectories("Days", level=0.9)
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "observed", "Subject's fitted line (coef)", "90% credible band", "population line (fixed effects)"
    ]
