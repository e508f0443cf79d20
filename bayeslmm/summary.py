"""lme4-style printed output, shared by every fit kind: the summary and the short print of a fit.

A :class:`ModelSummary` is plain data (header lines, a random-effects table,
a fixed-effects table, footer lines) with a ``str`` that reads like
``summary(lmer(...))`` and an HTML repr for notebooks. Numbers are formatted
as R formats a column (:func:`format_column`): every entry with the same
number of decimals, enough for ``digits`` significant digits of the entry
that needs most, so lme4's ``42.00`` prints as ``42.00``, not ``42``.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .design import Design

__all__ = ["ModelSummary", "random_effects_block", "groups_line", "format_column"]

#: Columns printed with a fixed number of decimals or as integers (brms's layout).
_FIXED_DECIMALS = {"Rhat": 2}
_INTEGER = ("Bulk_ESS", "Tail_ESS")
_TEXT = ("Groups", "Name", "Corr")


def _sig_decimals(x: float, digits: int) -> int:
    """Decimals R shows for ``x`` at ``digits`` significant digits, trailing zeros dropped."""
    if x == 0 or not math.isfinite(x):
        return 0
    e = math.floor(math.log10(abs(x)))
    dec = max(0, digits - 1 - e)
    text = f"{x:.{dec}f}"
    if "." in text:
        dec = len(text.rstrip("0").split(".")[1])
    return dec


def format_column(values, digits: int = 4) -> list[str]:
    """Format numbers as R's ``format(x, digits = 4)`` formats a column.

    Each finite entry needs a number of decimals to show ``digits``
    significant digits (trailing zeros dropped); every entry gets the largest
    of these (at most 10). Missing values print as empty strings; numbers of
    1e15 or more in scientific notation.
    """
    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    if finite.size and np.abs(finite).max() >= 1e15:
        return ["" if not np.isfinite(v) else f"{v:.{digits - 1}e}" for v in arr]
    dec = min(10, max((_sig_decimals(float(v), digits) for v in finite), default=0))
    return ["" if not np.isfinite(v) else f"{v:.{dec}f}" for v in arr]


def _format_table(df: pd.DataFrame, joint: tuple[str, ...] = (), digits: int = 4) -> pd.DataFrame:
    """A copy of ``df`` with every numeric column as strings; the columns in ``joint`` share their decimals."""
    out = df.copy().astype(object)
    shared = [c for c in df.columns if c in joint]
    if shared:
        cells = format_column(df[shared].to_numpy(dtype=float).ravel(), digits)
        for i, c in enumerate(shared):
            out[c] = cells[i :: len(shared)]
    for c in df.columns:
        if c in shared or c in _TEXT or not pd.api.types.is_numeric_dtype(df[c]):
            continue
        v = df[c].to_numpy(dtype=float)
        if str(c).startswith("Pr("):  # p-values as R's format.pval
            out[c] = ["" if not np.isfinite(x) else ("< 2e-16" if x < 2.220446e-16 else f"{x:.3g}") for x in v]
        elif c in _INTEGER:
            out[c] = ["" if not np.isfinite(x) else f"{x:.0f}" for x in v]
        elif c in _FIXED_DECIMALS:
            out[c] = ["" if not np.isfinite(x) else f"{x:.{_FIXED_DECIMALS[c]}f}" for x in v]
        else:
            out[c] = format_column(v, digits)
    return out


def random_effects_block(
    design: Design, varcorr: pd.DataFrame, extra: list[str] | None = None, variance: bool = True
) -> pd.DataFrame:
    """lme4's random-effects block (``Groups Name Variance Std.Dev. Corr``) from a VarCorr table, as numbers.

    Parameters
    ----------
    design
        The design (gives block order and terms).
    varcorr
        Output of a ``VarCorr()`` method.
    extra
        Additional VarCorr columns to show next to ``Std.Dev.`` (e.g. intervals).
    variance
        Whether to show the ``Variance`` column (the short print of a fit shows only sds).
    """
    extra = extra or []
    rows = []
    sd_rows = varcorr[varcorr["var2"].isna() & varcorr["var1"].notna()]
    cor_rows = varcorr[varcorr["var2"].notna()]

    def row(group: str, name: str, r: pd.Series, corr: str) -> dict:
        out = {"Groups": group, "Name": name}
        if variance:
            out["Variance"] = r["vcov"]
        out["Std.Dev."] = r["sdcor"]
        out.update({e: r[e] for e in extra})
        out["Corr"] = corr
        return out

    for b in design.blocks:
        for k, term in enumerate(b.terms):
            r = sd_rows[(sd_rows["grp"] == b.label) & (sd_rows["var1"] == term)].iloc[0]
            corr = []
            for j in range(k):
                c = cor_rows[(cor_rows["grp"] == b.label) & (cor_rows["var1"] == b.terms[j]) & (cor_rows["var2"] == term)]
                corr.append(f"{c['sdcor'].iloc[0]:.2f}" if len(c) else "")
            rows.append(row(b.label if k == 0 else "", term, r, " ".join(corr)))
    residual = varcorr[varcorr["grp"] == "Residual"]
    if len(residual):  # a GLMM's VarCorr has no residual row
        rows.append(row("Residual", "", residual.iloc[0], ""))
    df = pd.DataFrame(rows)
    if not (df["Corr"] != "").any():
        df = df.drop(columns="Corr")
    return df


def groups_line(design: Design) -> str:
    """``Number of obs: 180, groups:  Subject, 18``."""
    parts = [f"{f}, {len(levels)}" for f, levels in design.factors.items()]
    return f"Number of obs: {design.nobs}, groups:  " + "; ".join(parts)


def _text_table(df: pd.DataFrame, left: tuple[str, ...], index: bool = False) -> str:
    """Plain-text table: text columns left-aligned, numbers right-aligned, as R prints."""
    cols = ([""] if index else []) + [str(c) for c in df.columns]
    body = [([str(i)] if index else []) + ["" if v is None else str(v) for v in row]
            for i, row in zip(df.index, df.itertuples(index=False))]
    cells = [cols] + body
    widths = [max(len(r[j]) for r in cells) for j in range(len(cols))]
    lines = []
    for r in cells:
        parts = [
            r[j].ljust(widths[j]) if (index and j == 0) or cols[j] in left else r[j].rjust(widths[j])
            for j in range(len(cols))
        ]
        lines.append((" " if not index else "") + " ".join(parts).rstrip())
    return "\n".join(lines)


def _html_table(df: pd.DataFrame, index: bool) -> str:
    return df.to_html(index=index, escape=True, na_rep="", border=0, classes="bayeslmm")


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
        The random-effects block (numbers; :func:`random_effects_block`).
    groups
        The ``Number of obs`` line.
    fixed
        The fixed-effects table (numbers).
    footer
        Lines after the fixed effects (sampling diagnostics, warnings).
    blocks
        Extra titled text blocks (e.g. scaled residuals) placed before the random effects.
    after
        Extra titled tables placed after the fixed effects (e.g. the priors).
    """

    title: str
    header: list[str]
    random: pd.DataFrame
    groups: str
    fixed: pd.DataFrame
    footer: list[str] = field(default_factory=list)
    blocks: list[tuple[str, str]] = field(default_factory=list)
    after: list[tuple[str, pd.DataFrame]] = field(default_factory=list)

    def _random_text(self) -> pd.DataFrame:
        joint = tuple(c for c in self.random.columns if c not in _TEXT and c != "Variance")
        return _format_table(self.random, joint=joint)

    def _fixed_text(self) -> pd.DataFrame:
        stat = ("Rhat", "Bulk_ESS", "Tail_ESS", "t value", "z value", "df", "Pr(>|t|)", "Pr(>|z|)", "pd", "")
        joint = tuple(c for c in self.fixed.columns if c not in stat)
        out = _format_table(self.fixed, joint=joint)
        out.index = [str(i) for i in self.fixed.index]
        return out

    def __str__(self) -> str:
        out = [self.title] + self.header + [""]
        for name, text in self.blocks:
            out += [f"{name}:", text, ""]
        out.append("Random effects:")
        out.append(_text_table(self._random_text(), left=_TEXT))
        out.append(self.groups)
        out.append("")
        out.append("Fixed effects:")
        out.append(_text_table(self._fixed_text(), left=(), index=True))
        for name, table in self.after:
            out += ["", f"{name}:", _text_table(table.astype(str), left=tuple(table.columns))]
        if self.footer:
            out.append("")
            out += self.footer
        return "\n".join(out)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        parts = [f"<h4>{html.escape(self.title)}</h4>"]
        parts += [f"<div><pre style='margin:0'>{html.escape(h)}</pre></div>" for h in self.header if h.strip()]
        for name, text in self.blocks:
            parts.append(f"<h5>{html.escape(name)}</h5><pre>{html.escape(text)}</pre>")
        parts.append("<h5>Random effects</h5>" + _html_table(self._random_text(), index=False))
        parts.append(f"<div>{html.escape(self.groups)}</div>")
        parts.append("<h5>Fixed effects</h5>" + _html_table(self._fixed_text(), index=True))
        for name, table in self.after:
            parts.append(f"<h5>{html.escape(name)}</h5>" + _html_table(table, index=False))
        parts += [f"<div>{html.escape(f)}</div>" for f in self.footer]
        return "\n".join(parts)


@dataclass
class FitPrint:
    """The short print of a fit, as lme4's ``print(fm)``: title, formula, random-effect sds, fixed effects."""

    title: str
    header: list[str]
    random: pd.DataFrame
    groups: str
    fixed: pd.Series

    def _fixed_frame(self) -> pd.DataFrame:
        cells = format_column(self.fixed.to_numpy(dtype=float), 4)
        return pd.DataFrame([cells], columns=[str(i) for i in self.fixed.index])

    def __str__(self) -> str:
        random = _format_table(self.random, joint=tuple(c for c in self.random.columns if c not in _TEXT))
        out = [self.title, *self.header, "Random effects:", _text_table(random, left=_TEXT), self.groups]
        out += ["Fixed Effects:", _text_table(self._fixed_frame(), left=()).replace("\n ", "\n")[1:]]
        return "\n".join(out)

    def _repr_html_(self) -> str:
        random = _format_table(self.random, joint=tuple(c for c in self.random.columns if c not in _TEXT))
        parts = [f"<h4>{html.escape(self.title)}</h4>"]
        parts += [f"<div><pre style='margin:0'>{html.escape(h)}</pre></div>" for h in self.header]
        parts.append("<h5>Random effects</h5>" + _html_table(random, index=False))
        parts.append(f"<div>{html.escape(self.groups)}</div>")
        parts.append("<h5>Fixed effects</h5>" + _html_table(self._fixed_frame(), index=False))
        return "\n".join(parts)
