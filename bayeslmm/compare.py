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
from .tables import interval_names

__all__ = ["compare", "Comparison", "parameter_label"]


def parameter_label(grp: str, var1: Any, var2: Any) -> str:
    """Row label of a VarCorr row: ``sd((Intercept)|Subject)``, ``cor((Intercept),Days|Subject)``, ``sigma``."""
    if grp == "Residual":
        return "sigma"
    if isinstance(var2, str):
        return f"cor({var1},{var2}|{grp})"
    return f"sd({var1}|{grp})"


def _is_bayes(fit: Any) -> bool:
    return hasattr(fit, "idata")


def _rows(fit: Any, prob: float) -> pd.DataFrame:
    """One row per parameter: kind, Estimate, uncertainty (SE or posterior sd), interval."""
    lo, hi = interval_names(prob)
    fx = fit.fixef(prob) if _is_bayes(fit) else fit.fixef()
    vc = fit.VarCorr(prob) if _is_bayes(fit) else fit.VarCorr()
    recs = []
    for term, r in fx.iterrows():
        if _is_bayes(fit):
            recs.append((term, "fixed", r["Estimate"], r["Est.Error"], r[lo], r[hi]))
        else:
            z = _z(prob)
            se = r["Std. Error"]
            recs.append((term, "fixed", r["Estimate"], se, r["Estimate"] - z * se, r["Estimate"] + z * se))
    for _, r in vc.iterrows():
        label = parameter_label(r["grp"], r["var1"], r["var2"])
        kind = "sigma" if label == "sigma" else ("cor" if label.startswith("cor(") else "sd")
        if _is_bayes(fit):
            recs.append((label, kind, r["sdcor"], r["Est.Error"], r[lo], r[hi]))
        else:
            recs.append((label, kind, r["sdcor"], np.nan, np.nan, np.nan))
    return pd.DataFrame(recs, columns=["parameter", "kind", "Estimate", "Uncertainty", "lower", "upper"]).set_index(
        "parameter"
    )


def _z(prob: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + prob / 2))


def _normalise(formula: str) -> str:
    return "".join(formula.split())


@dataclass
class Comparison:
    """A side-by-side table of fits; ``.table`` is the DataFrame, ``.plot()`` the chart."""

    table: pd.DataFrame
    names: list[str]
    prob: float
    long: pd.DataFrame

    def __str__(self) -> str:
        return self.table.to_string(float_format=lambda v: f"{v:.4g}")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return self.table.to_html(float_format=lambda v: f"{v:.4g}")

    def plot(self, axes=None):
        """Dot-and-interval chart: one panel per parameter, one row per fit.

        Parameters
        ----------
        axes
            Optional array of matplotlib Axes, one per parameter.

        Returns
        -------
        matplotlib.figure.Figure
        """
        import matplotlib.pyplot as plt

        params = list(dict.fromkeys(self.long["parameter"]))
        if axes is None:
            fig, axes = plt.subplots(len(params), 1, figsize=(6, 0.9 + 0.45 * len(self.names) * len(params)),
                                     squeeze=False)
            axes = axes[:, 0]
        else:
            axes = np.atleast_1d(axes)
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
        fig.tight_layout()
        return fig


def compare(*fits: Any, names: list[str] | None = None, prob: float = 0.95) -> Comparison:
    """Compare fits of the same formula side by side.

    Parameters
    ----------
    *fits
        Two or more fits (``BayesFit`` and/or ``REMLFit``) of the same formula and data.
    names
        Column labels; default ``"NUTS"``, ``"REML"``, ``"ML"`` (numbered if repeated).
    prob
        Interval probability.

    Returns
    -------
    Comparison
        ``.table``: one row per parameter (every fixed effect, sd, correlation
        and sigma); per fit the estimate and its uncertainty (SE, or posterior
        sd and interval). When a REML fit sits beside Bayesian fits, a column
        ``REML in <name> CI`` says whether the REML estimate lies inside each
        credible interval.
    """
    if len(fits) < 2:
        raise BayesLMMError("compare needs at least two fits.")
    forms = {_normalise(f.formula) for f in fits}
    if len(forms) != 1:
        raise BayesLMMError(f"compare needs fits of the same formula; got {[f.formula for f in fits]}.")
    if names is None:
        base = [("NUTS" if _is_bayes(f) else f.method) for f in fits]
        names = [b if base.count(b) == 1 else f"{b}{base[:i + 1].count(b)}" for i, b in enumerate(base)]
    if len(names) != len(fits) or len(set(names)) != len(names):
        raise BayesLMMError(f"names must be {len(fits)} distinct labels, got {names!r}.")
    lo, hi = interval_names(prob)
    parts, longs = [], []
    for name, fit in zip(names, fits):
        r = _rows(fit, prob)
        longs.append(r.reset_index().assign(fit=name))
        if _is_bayes(fit):
            cols = r[["Estimate", "Uncertainty", "lower", "upper"]].set_axis(["Estimate", "Est.Error", lo, hi], axis=1)
        else:
            cols = r[["Estimate", "Uncertainty"]].set_axis(["Estimate", "Std. Error"], axis=1)
        parts.append(pd.concat({name: cols}, axis=1))
    table = pd.concat(parts, axis=1)
    table.insert(0, "kind", longs[0].set_index("parameter")["kind"].reindex(table.index))
    reml = [(n, f) for n, f in zip(names, fits) if not _is_bayes(f) and getattr(f, "method", "") == "REML"]
    if reml:
        rname = reml[0][0]
        for name, fit in zip(names, fits):
            if _is_bayes(fit):
                est = table[(rname, "Estimate")]
                inside = (est >= table[(name, lo)]) & (est <= table[(name, hi)])
                table[(f"REML in {name} CI", "")] = inside
    return Comparison(table=table, names=names, prob=prob, long=pd.concat(longs, ignore_index=True))
