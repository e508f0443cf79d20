"""Side-by-side comparison of fits of the same formula (Bayesian and REML/ML, or two priors).

Built only from each fit's ``fixef()`` and ``VarCorr()`` tables, so any fit
object with the lme4 extractors can take part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .errors import BayesLMMError
from .fitbase import MixedFit
from .paramdraws import interval_names
from .reml_fit import REMLFit

__all__ = ["compare", "Comparison", "parameter_label", "REML_INTERVALS"]

#: What ``compare(reml_interval=...)`` accepts: the ``confint`` method for a REML/ML fit's variance components.
REML_INTERVALS = ("profile", "Wald", "boot", None)


def parameter_label(grp: str, var1: Any, var2: Any) -> str:
    """Row label of a VarCorr row: ``sd((Intercept)|Subject)``, ``cor((Intercept),Days|Subject)``, ``sigma``."""
    if grp == "Residual":
        return "sigma"
    if isinstance(var2, str):
        return f"cor({var1},{var2}|{grp})"
    return f"sd({var1}|{grp})"


def _rows(fit: MixedFit, level: float, reml_interval: str | None, boot: dict[str, Any]) -> pd.DataFrame:
    """One row per parameter: kind, Estimate, uncertainty (posterior sd or standard error), interval, its method."""
    lo, hi = interval_names(level)
    fx = fit.fixef(level)
    vc = fit.VarCorr(level)
    nan = pd.Series(np.nan, index=vc.index)
    err = "Std. Error" if fit.params.is_point else "Est.Error"
    fixed_kind = "Wald" if fit.params.is_point else "credible"
    recs = [(term, "fixed", r["Estimate"], r[err], r[lo], r[hi], fixed_kind) for term, r in fx.iterrows()]
    labels = [parameter_label(r["grp"], r["var1"], r["var2"]) for _, r in vc.iterrows()]
    kinds = ["sigma" if lab == "sigma" else ("cor" if lab.startswith("cor(") else "sd") for lab in labels]
    unc = [vc.get(c, nan) for c in ("Est.Error", lo, hi)]
    how = pd.Series("credible" if not fit.params.is_point else "", index=vc.index)
    if isinstance(fit, REMLFit) and reml_interval is not None:
        # confint(fm, parm = "theta_", method = reml_interval), in the VarCorr row order
        ci = fit.varcorr_intervals(reml_interval, level, **(boot if reml_interval == "boot" else {}))
        key = lambda f: [(g, str(a), str(b)) for g, a, b in zip(f["grp"], f["var1"], f["var2"])]  # noqa: E731
        pos = {k: i for i, k in enumerate(key(ci))}
        order = [pos[k] for k in key(vc)]
        unc[1] = pd.Series(ci.iloc[order, -2].to_numpy(), index=vc.index)
        unc[2] = pd.Series(ci.iloc[order, -1].to_numpy(), index=vc.index)
        how = pd.Series(ci.attrs.get("method", reml_interval), index=vc.index).where(unc[1].notna(), "")
    recs += list(zip(labels, kinds, vc["sdcor"], *unc, how))
    columns = ["parameter", "kind", "Estimate", "Uncertainty", "lower", "upper", "interval"]
    return pd.DataFrame(recs, columns=columns).set_index("parameter")


def _normalise(formula: str) -> str:
    return "".join(formula.split())


@dataclass
class Comparison:
    """A side-by-side table of fits; ``.table`` is the DataFrame, ``.plot()`` the chart.

    Attributes
    ----------
    table
        One row per parameter; per fit its estimate, uncertainty and interval.
    names
        The fits' labels.
    level
        The interval level.
    long
        The same numbers, one row per fit and parameter.
    intervals
        Per fit, what its interval is (``"credible"`` or ``"Wald confidence"``).
    """

    table: pd.DataFrame
    names: list[str]
    level: float
    long: pd.DataFrame
    intervals: list[str]

    def __str__(self) -> str:
        return self.table.to_string(float_format=lambda v: f"{v:.4g}")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self.table.to_html(float_format=lambda v: f"{v:.4g}")

    def plot(self, fig: Any = None, axes: Any = None):
        """Dot-and-interval chart: one panel per parameter, one row per fit, with a legend naming each interval.

        Parameters
        ----------
        fig
            A matplotlib Figure to draw in (its axes are replaced); default a new figure.
        axes
            Instead of ``fig``: a sequence of Axes, one per parameter.

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D

        params = list(dict.fromkeys(self.long["parameter"]))
        if axes is None:
            size = (6.5, 1.4 + 0.45 * len(self.names) * len(params))
            fig = fig if fig is not None else plt.figure(figsize=size)
            fig.clear()
            axes = fig.subplots(len(params), 1, squeeze=False)[:, 0]
        else:
            axes = np.atleast_1d(axes).ravel()
            fig = axes[0].figure
        if len(axes) != len(params):
            raise BayesLMMError(f"plot needs {len(params)} axes, one per parameter; got {len(axes)}.")
        for ax, p in zip(axes, params):
            sub = self.long[self.long["parameter"] == p]
            for i, name in enumerate(self.names):
                r = sub[sub["fit"] == name]
                if r.empty:
                    continue
                r = r.iloc[0]
                if np.isfinite(r["lower"]):
                    ax.hlines(i, r["lower"], r["upper"], color=f"C{i}", lw=2)
                ax.plot([r["Estimate"]], [i], "o", color=f"C{i}")
            ax.set_yticks(range(len(self.names)), self.names)
            ax.set_ylim(-0.7, len(self.names) - 0.3)
            ax.set_title(p, fontsize=9, loc="left")
        pct = f"{100 * self.level:g}%"
        handles = [
            Line2D([], [], color=f"C{i}", marker="o", lw=2, label=f"{name}: estimate, {pct} {kind} interval")
            for i, (name, kind) in enumerate(zip(self.names, self.intervals))
        ]
        fig.suptitle(f"Estimates with {pct} intervals (a dot alone: no interval defined)", fontsize=10)
        fig.legend(handles=handles, loc="lower center", ncols=1, fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.03 + 0.035 * len(self.names), 1, 1))
        return fig


def compare(
    *fits: MixedFit,
    names: list[str] | None = None,
    level: float = 0.95,
    reml_interval: str | None = "profile",
    nsim: int = 1000,
    seed: int | None = None,
) -> Comparison:
    """Compare fits of the same formula side by side.

    Parameters
    ----------
    *fits
        Two or more fits (``BayesFit`` and/or ``REMLFit``) of the same formula and data.
    names
        Column labels; default the fits' methods ``"NUTS"``, ``"REML"``, ``"ML"`` (numbered if repeated).
    level
        Interval level.
    reml_interval
        The confidence interval of a REML/ML fit's variance components:
        ``"profile"`` (default, ``confint(fm)``), ``"boot"`` (parametric
        bootstrap, ``nsim`` replicates from ``seed``), ``"Wald"`` or ``None``
        (none: lme4 defines no Wald interval for them). Fixed effects get the
        Wald interval.
    nsim, seed
        Replicates and seed for ``reml_interval="boot"``.

    Returns
    -------
    Comparison
        ``.table``: one row per parameter (every fixed effect, sd, correlation
        and sigma); per fit the estimate, its uncertainty (posterior sd, or
        standard error where the method defines one) and interval (credible,
        or Wald). When a REML fit sits beside fits with credible intervals, a
        column ``REML in <name> CI`` says whether the REML estimate lies
        inside each credible interval. Per fit, the ``interval`` column names
        each row's interval (``credible``, ``Wald``, ``profile``, ``boot``).
    """
    if reml_interval not in REML_INTERVALS:
        raise BayesLMMError(f"reml_interval must be 'profile', 'Wald', 'boot' or None, got {reml_interval!r}.")
    if len(fits) < 2:
        raise BayesLMMError("compare needs at least two fits.")
    bad = [type(f).__name__ for f in fits if not isinstance(f, MixedFit)]
    if bad:
        raise BayesLMMError(f"compare needs bayeslmm fits (from lmer); got {bad}.")
    forms = {_normalise(f.formula) for f in fits}
    if len(forms) != 1:
        raise BayesLMMError(f"compare needs fits of the same formula; got {[f.formula for f in fits]}.")
    if names is None:
        base = [f.method for f in fits]
        names = [b if base.count(b) == 1 else f"{b}{base[:i + 1].count(b)}" for i, b in enumerate(base)]
    if len(names) != len(fits) or len(set(names)) != len(names):
        raise BayesLMMError(f"names must be {len(fits)} distinct labels, got {names!r}.")
    lo, hi = interval_names(level)
    parts, longs = [], []
    for name, fit in zip(names, fits):
        r = _rows(fit, level, reml_interval, {"nsim": nsim, "seed": seed, "progressbar": False})
        longs.append(r.reset_index().assign(fit=name))
        err = "Std. Error" if fit.params.is_point else "Est.Error"
        cols = r[["Estimate", "Uncertainty", "lower", "upper", "interval"]].set_axis(
            ["Estimate", err, lo, hi, "interval"], axis=1
        )
        parts.append(pd.concat({name: cols}, axis=1))
    reml = [n for n, f in zip(names, fits) if f.method == "REML"]
    if reml:
        est = parts[names.index(reml[0])][(reml[0], "Estimate")]
        for name, fit in zip(names, fits):
            if not fit.params.is_point:
                p = parts[names.index(name)]
                inside = (est >= p[(name, lo)]) & (est <= p[(name, hi)])
                parts.append(pd.DataFrame({(f"REML in {name} CI", ""): inside}))
    table = pd.concat(parts, axis=1)
    table.insert(0, ("kind", ""), longs[0].set_index("parameter")["kind"].reindex(table.index))
    return Comparison(
        table=table, names=names, level=level, long=pd.concat(longs, ignore_index=True),
        intervals=[_interval_kind(f, reml_interval) for f in fits],
    )


def _interval_kind(fit: MixedFit, reml_interval: str | None) -> str:
    """The legend's name of a fit's intervals."""
    if isinstance(fit, REMLFit) and reml_interval not in (None, "Wald"):
        return f"confidence (Wald for fixed effects, {reml_interval} for variance components)"
    return fit.interval_kind
