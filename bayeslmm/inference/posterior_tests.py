"""Posterior tests of the fixed effects, as brms's ``hypothesis()`` and bayestestR's probability of direction.

A hypothesis is written ``"<linear combination> <sign> <linear combination>"``
over the coefficient names (``"Days > 0"``, ``"Days = 0"``,
``"Days + Days:groupB = 0"``, ``"2 * recipeB - recipeC < 1"``); names that
are awkward to type can be quoted with backticks, and ``Intercept`` stands for
``(Intercept)``. It is read by a small recursive-descent parser -- never
evaluated -- into h = (left) - (right). As in brms:

* Estimate and Est.Error are the posterior mean and sd of h; the interval is
  equal-tailed for ``=`` and one-sided for ``<`` and ``>`` (at ``level``);
* for ``<`` / ``>`` the evidence ratio is P(H | y) / P(not H | y) from the
  draws, and Post.Prob = P(H | y);
* for ``=`` the evidence ratio is the Savage-Dickey density ratio
  p(h = 0 | y) / p(h = 0) -- the Bayes factor of the point hypothesis against
  the model -- with Post.Prob = ER / (1 + ER). The posterior density is a
  Gaussian kernel estimate (bandwidth by R's ``bw.nrd0``); the prior density is
  exact when every prior involved is Normal, else a kernel estimate from
  prior draws;
* Star marks hypotheses whose interval excludes 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from ..design import Design
from ..errors import BayesLMMError
from ..paramdraws import check_level
from ..priors import Priors

__all__ = ["Linear", "PriorOfCombination", "parse_hypothesis", "hypothesis", "probability_of_direction"]

_NUMBER = re.compile(r"\d+(\.\d*)?([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_.]")
_SIGNS = {"=": "=", "==": "=", "<": "<", "<=": "<", ">": ">", ">=": ">"}


@dataclass(frozen=True)
class Linear:
    """A linear combination Σ coef[name]·β_name + const."""

    coef: dict[str, float] = field(default_factory=dict)
    const: float = 0.0

    def scaled(self, k: float) -> Linear:
        """The combination times ``k``."""
        return Linear({n: k * v for n, v in self.coef.items()}, k * self.const)

    def plus(self, other: Linear, sign: float = 1.0) -> Linear:
        """The sum with ``sign`` times ``other``."""
        coef = dict(self.coef)
        for n, v in other.coef.items():
            coef[n] = coef.get(n, 0.0) + sign * v
        return Linear(coef, self.const + sign * other.const)

    @property
    def is_constant(self) -> bool:
        """Whether no coefficient enters."""
        return all(v == 0 for v in self.coef.values())


class _Parser:
    """Recursive descent over names, numbers, + - * / and parentheses."""

    def __init__(self, text: str, names: Sequence[str]) -> None:
        self.text = text
        self.pos = 0
        self.order = list(names)
        self.names = sorted(set(names), key=len, reverse=True)
        self.aliases = {"Intercept": "(Intercept)"} if "(Intercept)" in names else {}

    def error(self, what: str) -> BayesLMMError:
        return BayesLMMError(f"Cannot read the hypothesis {self.text!r} at position {self.pos}: {what}.")

    def skip(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def name(self) -> str | None:
        t, i = self.text, self.pos
        if t.startswith("`", i):
            end = t.find("`", i + 1)
            if end < 0:
                raise self.error("an opening backtick has no closing one")
            name = t[i + 1 : end]
            if name not in self.names:
                raise BayesLMMError(
                    f"The hypothesis {self.text!r} names {name!r}, which is not a fixed effect of this model; "
                    f"the fixed effects are {self.order}."
                )
            self.pos = end + 1
            return name
        for cand in list(self.names) + list(self.aliases):
            end = i + len(cand)
            if t.startswith(cand, i) and (end >= len(t) or not _NAME_CHAR.match(t[end])):
                self.pos = end
                return self.aliases.get(cand, cand)
        return None

    def factor(self) -> Linear:
        c = self.peek()
        if c in "+-" and c:
            self.pos += 1
            return self.factor().scaled(-1.0 if c == "-" else 1.0)
        name = self.name()
        if name is not None:
            return Linear({name: 1.0})
        m = _NUMBER.match(self.text, self.pos)
        if m:
            self.pos = m.end()
            return Linear({}, float(m.group()))
        if c == "(":
            self.pos += 1
            inner = self.expr()
            if self.peek() != ")":
                raise self.error("a parenthesis is not closed")
            self.pos += 1
            return inner
        if not c:
            raise self.error("the expression ends too early")
        word = re.match(r"[^\s+\-*/()<>=]+", self.text[self.pos :])
        token = word.group() if word else c
        raise BayesLMMError(
            f"The hypothesis {self.text!r} refers to {token!r}, which is not a fixed effect of this model; "
            f"the fixed effects are {self.order} (quote unusual names with backticks)."
        )

    def term(self) -> Linear:
        out = self.factor()
        while self.peek() in ("*", "/") and self.peek():
            op = self.text[self.pos]
            self.pos += 1
            right = self.factor()
            if op == "*":
                if not out.is_constant and not right.is_constant:
                    raise self.error("a product of two coefficients is not a linear hypothesis")
                out = right.scaled(out.const) if out.is_constant else out.scaled(right.const)
            else:
                if not right.is_constant or right.const == 0:
                    raise self.error("division is only by a non-zero number")
                out = out.scaled(1.0 / right.const)
        return out

    def expr(self) -> Linear:
        out = self.term()
        while self.peek() in ("+", "-") and self.peek():
            op = self.text[self.pos]
            self.pos += 1
            out = out.plus(self.term(), 1.0 if op == "+" else -1.0)
        return out


def parse_hypothesis(text: str, names: Sequence[str]) -> tuple[Linear, str, str]:
    """Parse ``"lhs <sign> rhs"`` into (h = lhs - rhs, sign, brms's label).

    Raises
    ------
    BayesLMMError
        For anything but one comparison between linear combinations of the named coefficients.
    """
    if not isinstance(text, str) or not text.strip():
        raise BayesLMMError(f"A hypothesis is a string such as 'Days > 0'; got {text!r}.")
    parser = _Parser(text, names)
    lhs = parser.expr()
    parser.skip()
    start = parser.pos
    m = re.compile(r"==|<=|>=|=|<|>").match(text, start)
    if m is None:
        raise BayesLMMError(
            f"The hypothesis {text!r} needs one comparison ('=', '<' or '>') between two sides, e.g. 'Days > 0'"
            + (f"; found {text[start:].strip()!r} where the comparison should be." if text[start:].strip() else ".")
        )
    parser.pos = m.end()
    rhs = parser.expr()
    if parser.peek():
        raise BayesLMMError(
            f"The hypothesis {text!r} has {text[parser.pos:].strip()!r} after its right side; "
            "write one comparison between two linear combinations."
        )
    lhs_txt, rhs_txt = re.sub(r"\s+", "", text[:start]), re.sub(r"\s+", "", text[m.end() :])
    sign = _SIGNS[m.group()]
    label = f"({lhs_txt})" + (f"-({rhs_txt})" if rhs_txt != "0" else "") + f" {sign} 0"
    return lhs.plus(rhs, -1.0), sign, label


def _bw_nrd0(x: np.ndarray) -> float:
    """R's ``bw.nrd0``: 0.9 · min(sd, IQR/1.34) · n^(-1/5)."""
    sd = float(np.std(x, ddof=1))
    iqr = float(np.subtract(*np.percentile(x, [75, 25])))
    lo = min(sd, iqr / 1.34) if iqr > 0 else sd
    lo = lo if lo > 0 else (abs(x[0]) if x[0] != 0 else 1.0)
    return 0.9 * lo * x.size ** (-0.2)


def _density_at(x: np.ndarray, point: float) -> float:
    x = x[np.isfinite(x)]
    if x.size < 2 or np.ptp(x) == 0:
        return float("nan")
    bw = _bw_nrd0(x)
    return float(np.mean(stats.norm.pdf((point - x) / bw)) / bw)


class PriorOfCombination:
    """The prior of a linear combination of the fixed effects, from a fit's priors."""

    def __init__(self, design: Design, priors: Priors, n_draws: int, seed: int | None) -> None:
        self.names = list(design.fixed_names)
        self.priors = [priors.fixed(n) for n in self.names]
        self.idx = design.intercept_index if priors.intercept_centered else None
        others = [j for j in range(len(self.names)) if j != self.idx]
        self.xbar = dict(zip(others, np.asarray(design.X, dtype=float)[:, others].mean(axis=0))) if self.idx is not None else {}
        self.n_draws, self.seed = n_draws, seed

    def weights(self, h: Linear) -> np.ndarray:
        """Weights of h on the sampled parameters (the centred intercept and the slopes)."""
        c = np.array([h.coef.get(n, 0.0) for n in self.names])
        if self.idx is None:
            return c
        w = c.copy()
        for j, xb in self.xbar.items():
            w[j] = c[j] - c[self.idx] * xb
        return w

    def density_at_zero(self, h: Linear) -> float:
        """The prior density of h at 0: exact when every prior involved is Normal, else a kernel estimate from prior draws."""
        w = self.weights(h)
        used = [j for j in range(w.size) if w[j] != 0]
        if all(self.priors[j].dist == "Normal" for j in used):
            mean = h.const + sum(w[j] * self.priors[j].kwargs["mu"] for j in used)
            sd = float(np.sqrt(sum((w[j] * self.priors[j].kwargs["sigma"]) ** 2 for j in used)))
            return float(stats.norm.pdf(0.0, mean, sd)) if sd > 0 else float("nan")
        import pymc as pm

        rng = np.random.default_rng(self.seed)
        total = np.full(self.n_draws, h.const)
        for j in used:
            p = self.priors[j]
            total += w[j] * np.asarray(pm.draw(getattr(pm, p.dist).dist(**p.kwargs), draws=self.n_draws, random_seed=rng))
        return _density_at(total, 0.0)


def hypothesis(
    design: Design,
    beta: np.ndarray,
    priors: Priors,
    hypotheses: str | Sequence[str],
    level: float = 0.95,
    prior_draws: int = 20000,
    seed: int | None = None,
) -> pd.DataFrame:
    """Posterior tests of hypotheses, brms's ``hypothesis(fit, ...)``, for the fixed effects of a Bayesian fit.

    The entry point is :meth:`bayeslmm.results.BayesFit.hypothesis`.

    Parameters
    ----------
    design
        The fit's design (the coefficient names and, for a centred intercept, the column means).
    beta
        Posterior draws of the fixed effects, ``(draws, p)`` in ``design.fixed_names`` order.
    priors
        The fit's priors (for the Savage-Dickey density ratio).
    hypotheses
        One hypothesis or several, e.g. ``"Days > 0"``, ``"Days = 0"``, ``"Days + Days:groupB = 0"``.
    level
        Credible level of the intervals (one-sided for ``<`` and ``>``).
    prior_draws, seed
        Prior draws (and their seed) for the Savage-Dickey ratio when a prior is not Normal.

    Returns
    -------
    pandas.DataFrame
        Columns ``Hypothesis``, ``Estimate``, ``Est.Error``, ``CI.Lower``, ``CI.Upper``,
        ``Evid.Ratio``, ``Post.Prob``, ``Star``.
    """
    level = check_level(level)
    names = list(design.fixed_names)
    if not names:
        raise BayesLMMError("The model has no fixed effects, so there is no coefficient to test.")
    if isinstance(prior_draws, bool) or not isinstance(prior_draws, (int, np.integer)) or prior_draws < 100:
        raise BayesLMMError(f"prior_draws must be an integer of at least 100, got {prior_draws!r}.")
    post = np.asarray(beta, dtype=float).reshape(-1, len(names))
    items = [hypotheses] if isinstance(hypotheses, str) else list(hypotheses)
    if not items or not all(isinstance(t, str) for t in items):
        raise BayesLMMError(f"hypotheses must be a string or a list of strings such as 'Days > 0', got {hypotheses!r}.")
    prior = PriorOfCombination(design, priors, int(prior_draws), seed)
    alpha = 1.0 - level
    rows = []
    for text in items:
        h, sign, label = parse_hypothesis(text, names)
        c = np.array([h.coef.get(n, 0.0) for n in names])
        x = post @ c + h.const
        if sign == "=":
            lo, hi = np.quantile(x, [alpha / 2, 1 - alpha / 2])
            er = _density_at(x, 0.0) / prior.density_at_zero(h)
            prob = er / (1 + er) if np.isfinite(er) else np.nan
        else:
            yes = np.mean(x < 0) if sign == "<" else np.mean(x > 0)
            er = yes / (1 - yes) if yes < 1 else np.inf
            prob = yes
            lo, hi = (-np.inf, np.quantile(x, 1 - alpha)) if sign == "<" else (np.quantile(x, alpha), np.inf)
        rows.append({
            "Hypothesis": label, "Estimate": float(x.mean()), "Est.Error": float(x.std(ddof=1)),
            "CI.Lower": float(lo), "CI.Upper": float(hi), "Evid.Ratio": float(er), "Post.Prob": float(prob),
            "Star": "*" if not (lo <= 0 <= hi) else "",
        })
    out = pd.DataFrame(rows)
    out.attrs["level"] = level
    return out


def probability_of_direction(names: Sequence[str], beta: np.ndarray) -> pd.Series:
    """Probability of direction of each fixed effect: max(P(β > 0 | y), P(β < 0 | y)) (bayestestR's ``pd``).

    ``beta`` holds the posterior draws ``(draws, p)`` of the coefficients ``names``.
    """
    names = list(names)
    if not names:
        return pd.Series([], index=pd.Index([], name="term"), name="pd", dtype=float)
    post = np.asarray(beta, dtype=float).reshape(-1, len(names))
    pd_ = np.maximum((post > 0).mean(axis=0), (post < 0).mean(axis=0))
    return pd.Series(pd_, index=pd.Index(names, name="term"), name="pd")
