"""A printable inference table: heading lines, a data frame, and notes (as R prints an ``anova`` object)."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["InferenceTable", "format_percent", "significance_stars", "SIGNIF_LEGEND"]

#: The legend R prints under a coefficient table with stars (``printCoefmat``).
SIGNIF_LEGEND = "---\nSignif. codes:  0 '***' 0.001 '**' 0.01 '*' 0.05 '.' 0.1 ' ' 1"


def format_percent(probs: list[float]) -> list[str]:
    """Column labels of an interval, as R's ``format.perc(probs, 3)``: ``["2.5 %", "97.5 %"]``.

    Three significant digits, with the decimals shared by the labels (R formats a vector with common decimals).
    """
    pct = [100.0 * p for p in probs]
    decimals = 0
    for v in pct:
        s = f"{float(f'{v:.3g}'):f}".rstrip("0").rstrip(".")
        decimals = max(decimals, len(s.split(".")[1]) if "." in s else 0)
    return [f"{v:.{decimals}f} %" for v in pct]


def significance_stars(p: float) -> str:
    """R's significance stars for a p-value: ``***`` below 0.001, ``**``, ``*``, ``.`` below 0.1, else blank."""
    if not np.isfinite(p):
        return ""
    for cut, star in ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, ".")):
        if p < cut:
            return star
    return ""


def _cell(v: Any) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    v = float(v)
    if v != 0 and (abs(v) < 1e-4 or abs(v) >= 1e7):
        return f"{v:.4g}"
    return f"{v:.6g}"


@dataclass(frozen=True)
class InferenceTable:
    """A result table with its heading and notes.

    Attributes
    ----------
    table
        The numbers, one row per model, term or hypothesis.
    heading
        Lines printed above the table (the method, the models).
    notes
        Lines printed below it (caveats, what was refitted).
    """

    table: pd.DataFrame
    heading: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def to_frame(self) -> pd.DataFrame:
        """A copy of the table."""
        return self.table.copy()

    def __getattr__(self, name: str) -> Any:
        # Data-frame access (``res.loc[...]``, ``res["Chisq"]``) goes to the table.
        if name.startswith("__") or name in ("table", "heading", "notes"):
            raise AttributeError(name)
        return getattr(self.table, name)

    def __getitem__(self, key: Any) -> Any:
        return self.table[key]

    def __len__(self) -> int:
        return len(self.table)

    def __str__(self) -> str:
        body = self.table.to_string(formatters={c: _cell for c in self.table.columns}, na_rep="")
        return "\n".join([*self.heading, body, *self.notes])

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        head = "".join(f"<p>{html.escape(h)}</p>" for h in self.heading)
        notes = "".join(f"<p><small>{html.escape(n)}</small></p>" for n in self.notes)
        return head + self.table.to_html(na_rep="", float_format=lambda v: _cell(v)) + notes
