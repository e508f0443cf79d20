"""lme4-style printed summaries, shared by the Bayesian and the REML fit.

A :class:`ModelSummary` is plain data (header lines, a random-effects table,
a fixed-effects table, footer lines) with a ``str`` that reads like
``summary(lmer(...))`` and an HTML repr for notebooks.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .design import Design

__all__ = ["ModelSummary", "random_effects_block", "groups_line"]


def _num(v: float, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return ""
    return f"{v:.{digits}g}" if abs(v) < 1e5 else f"{v:.6g}"


def random_effects_block(design: Design, varcorr: pd.DataFrame, extra: list[str] | None = None) -> pd.DataFrame:
    """lme4's random-effects block (``Groups Name Std.Dev. Corr``) from a VarCorr table.

    Parameters
    ----------
    design
        The design (gives block order and terms).
    varcorr
        Output of a ``VarCorr()`` method.
    extra
        Additional VarCorr columns to show next to ``Std.Dev.`` (e.g. intervals).
    """
    extra = extra or []
    rows = []
    sd_rows = varcorr[varcorr["var2"].isna() & varcorr["var1"].notna()]
    cor_rows = varcorr[varcorr["var2"].notna()]
    for b in design.blocks:
        for k, term in enumerate(b.terms):
            r = sd_rows[(sd_rows["grp"] == b.label) & (sd_rows["var1"] == term)].iloc[0]
            corr = []
            for j in range(k):
                c = cor_rows[(cor_rows["grp"] == b.label) & (cor_rows["var1"] == b.terms[j]) & (cor_rows["var2"] == term)]
                corr.append(f"{c['sdcor'].iloc[0]:.2f}" if len(c) else "")
            rows.append(
                {
                    "Groups": b.label if k == 0 else "",
                    "Name": term,
                    "Variance": _num(r["vcov"]),
                    "Std.Dev.": _num(r["sdcor"]),
                    **{e: _num(r[e]) for e in extra},
                    "Corr": " ".join(corr),
                }
            )
    res = varcorr[varcorr["grp"] == "Residual"].iloc[0]
    rows.append(
        {
            "Groups": "Residual",
            "Name": "",
            "Variance": _num(res["vcov"]),
            "Std.Dev.": _num(res["sdcor"]),
            **{e: _num(res[e]) for e in extra},
            "Corr": "",
        }
    )
    df = pd.DataFrame(rows)
    if not (df["Corr"] != "").any():
        df = df.drop(columns="Corr")
    return df


def groups_line(design: Design) -> str:
    """``Number of obs: 180, groups:  Subject, 18``."""
    parts = [f"{f}, {len(levels)}" for f, levels in design.factors.items()]
    return f"Number of obs: {design.nobs}, groups:  " + "; ".join(parts)


def _text_table(df: pd.DataFrame, left: tuple[str, ...]) -> str:
    """Plain-text table: text columns left-aligned, numbers right-aligned, as R prints."""
    cols = list(df.columns)
    cells = [[str(c) for c in cols]] + [["" if v is None else str(v) for v in row] for row in df.itertuples(index=False)]
    widths = [max(len(r[j]) for r in cells) for j in range(len(cols))]
    lines = []
    for r in cells:
        parts = [r[j].ljust(widths[j]) if cols[j] in left else r[j].rjust(widths[j]) for j in range(len(cols))]
        lines.append(" " + " ".join(parts).rstrip())
    return "\n".join(lines)


@dataclass
class ModelSummary:
    """A printable model summary.

    Attributes
    ----------
    title
        First line, e.g. ``"Linear mixed model fit by REML"``.
    header
        Lines after the title (formula, data, criterion, ...).
    random
        The random-effects block.
    groups
        The ``Number of obs`` line.
    fixed
        The fixed-effects table.
    footer
        Lines after the fixed effects (sampling diagnostics, warnings).
    blocks
        Extra titled text blocks (e.g. scaled residuals) placed before the random effects.
    """

    title: str
    header: list[str]
    random: pd.DataFrame
    groups: str
    fixed: pd.DataFrame
    footer: list[str] = field(default_factory=list)
    blocks: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        out = [self.title] + self.header + [""]
        for name, text in self.blocks:
            out += [f"{name}:", text, ""]
        out.append("Random effects:")
        out.append(_text_table(self.random, left=("Groups", "Name", "Corr")))
        out.append(self.groups)
        out.append("")
        out.append("Fixed effects:")
        with pd.option_context("display.float_format", lambda v: _num(v, 5)):
            fixed = self.fixed.copy()
            fixed.index.name = None
            out.append(fixed.to_string())
        if self.footer:
            out.append("")
            out += self.footer
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        parts = [f"<h4>{html.escape(self.title)}</h4>"]
        parts += [f"<div>{html.escape(h)}</div>" for h in self.header if h.strip()]
        for name, text in self.blocks:
            parts.append(f"<h5>{html.escape(name)}</h5><pre>{html.escape(text)}</pre>")
        parts.append("<h5>Random effects</h5>" + self.random.to_html(index=False))
        parts.append(f"<div>{html.escape(self.groups)}</div>")
        parts.append("<h5>Fixed effects</h5>" + self.fixed.to_html(float_format=lambda v: _num(v, 5)))
        parts += [f"<div>{html.escape(f)}</div>" for f in self.footer]
        return "\n".join(parts)
