"""Stage 1: formula text -> :class:`ParsedFormula`.

formulae does the scanning, parsing and term resolution. bayeslmm adds two
small things on top of it:

1. :func:`expand_double_bars` rewrites lme4's ``(x || g)`` -- which formulae
   cannot parse -- into independent bars ``(1 | g) + (0 + x | g)``.
2. :class:`_BarResolver` walks formulae's syntax tree and records each bar
   ``(expr | factor)`` as it resolves it, so that the terms written inside one
   bar (one correlation block) are known from the formula's own structure and
   never recovered later from term names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from formulae.expr import Binary
from formulae.parser import Parser
from formulae.resolver import Resolver
from formulae.scanner import Scanner
from formulae.terms import Intercept, Model, Term
from formulae.terms.terms import GroupSpecificTerm, Response

from .errors import FormulaError

__all__ = ["RandomBlock", "ParsedFormula", "parse_formula", "expand_double_bars"]


@dataclass(frozen=True)
class RandomBlock:
    """One correlation block: the terms of one bar for one grouping factor.

    Attributes
    ----------
    factor_vars
        Data columns whose level combinations define the groups, in the
        order lme4 uses for the name (``("cask", "batch")`` for ``batch/cask``).
    factor_name
        lme4's name of the grouping factor, e.g. ``"Subject"`` or ``"cask:batch"``.
    exprs
        formulae terms of the bar's left-hand side (``Intercept()`` and ``Term``).
    """

    factor_vars: tuple[str, ...]
    factor_name: str
    exprs: tuple[Any, ...]

    @property
    def has_intercept(self) -> bool:
        """Whether the block contains a random intercept."""
        return any(isinstance(e, Intercept) for e in self.exprs)


@dataclass(frozen=True)
class ParsedFormula:
    """The structure of an lme4 formula.

    Attributes
    ----------
    text
        The formula as the user wrote it.
    rewritten
        The formula after the rewriting step that formulae actually parsed.
    response
        formulae's response term.
    fixed_terms
        formulae terms of the fixed part (including ``Intercept()`` if present).
    blocks
        The random-effect correlation blocks, in the order written.
    var_names
        Every data column the formula refers to.
    """

    text: str
    rewritten: str
    response: Any
    fixed_terms: tuple[Any, ...]
    blocks: tuple[RandomBlock, ...]
    var_names: frozenset[str]

    @property
    def response_name(self) -> str:
        """Name of the response column."""
        return self.response.term.name

    @property
    def has_intercept(self) -> bool:
        """Whether the fixed part has an intercept."""
        return any(isinstance(t, Intercept) for t in self.fixed_terms)


# ---------------------------------------------------------------------------
# Rewriting step: things formulae does not know.
# ---------------------------------------------------------------------------
def _matching_open(text: str, pos: int) -> int:
    depth = 0
    for i in range(pos, -1, -1):
        if text[i] == ")":
            depth += 1
        elif text[i] == "(":
            if depth == 0:
                return i
            depth -= 1
    raise FormulaError(f"Unbalanced parentheses around '||' in formula {text!r}.")


def _matching_close(text: str, pos: int) -> int:
    depth = 0
    for i in range(pos, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            if depth == 0:
                return i
            depth -= 1
    raise FormulaError(f"Unbalanced parentheses around '||' in formula {text!r}.")


def expand_double_bars(formula: str) -> str:
    """Rewrite every ``(expr || g)`` into independent single bars.

    ``(1 + x + z || g)`` becomes ``(1 | g) + (0 + x | g) + (0 + z | g)``, which is
    what lme4 means by the double bar. The left-hand side is resolved by
    formulae, so interactions and ``0 +`` are understood as formulae does.

    Parameters
    ----------
    formula
        An lme4-style formula.

    Returns
    -------
    str
        The formula with no ``||`` left.
    """
    text = formula
    while "||" in text:
        pos = text.index("||")
        start = _matching_open(text, pos - 1)
        end = _matching_close(text, pos + 2)
        lhs = text[start + 1 : pos].strip()
        rhs = text[pos + 2 : end].strip()
        if not lhs or not rhs:
            raise FormulaError(
                f"The double bar in {text[start:end + 1]!r} needs terms on both sides, "
                "as in '(x || g)'."
            )
        model = _resolve_text(f"lhs ~ {lhs}", where=f"the left side of {text[start:end + 1]!r}")
        terms = model.common_terms if isinstance(model, Model) else []
        intercept = any(isinstance(t, Intercept) for t in terms)
        parts = []
        if intercept:
            parts.append(f"(1 | {rhs})")
        for t in terms:
            if isinstance(t, Intercept):
                continue
            parts.append(f"(0 + {t.name} | {rhs})")
        if not parts:
            raise FormulaError(f"{text[start:end + 1]!r} has no random terms; remove it or add a term.")
        text = text[:start] + " + ".join(parts) + text[end + 1 :]
    return text


def _resolve_text(text: str, where: str) -> Any:
    try:
        return Resolver(Parser(Scanner(text).scan()).parse()).resolve()
    except Exception as exc:  # formulae raises several unrelated classes
        raise FormulaError(f"Cannot parse {where}: {exc}") from None


# ---------------------------------------------------------------------------
# Structure-keeping resolution.
# ---------------------------------------------------------------------------
class _BarResolver(Resolver):
    """formulae's resolver that also records each bar it resolves."""

    def __init__(self, expr: Any) -> None:
        super().__init__(expr)
        self.bars: list[tuple[list[GroupSpecificTerm], bool]] = []

    def visitGroupingExpr(self, expr: Any) -> Any:  # noqa: N802 - formulae's visitor API
        inner = expr.expression
        if isinstance(inner, Binary) and inner.operator.kind == "PIPE":
            resolved = inner.left.accept(self) | inner.right.accept(self)
            terms = resolved.group_terms if isinstance(resolved, Model) else [resolved]
            nested = isinstance(inner.right, Binary) and inner.right.operator.kind == "SLASH"
            self.bars.append((list(terms), nested))
            return resolved
        return super().visitGroupingExpr(expr)


def _factor_vars(term: GroupSpecificTerm, formula: str) -> tuple[str, ...]:
    names = []
    for comp in term.factor.components:
        if type(comp).__name__ != "Variable":
            raise FormulaError(
                f"The grouping factor {term.factor.name!r} in {formula!r} is a function call; "
                "make it a column of the data frame and group by that column."
            )
        names.append(str(comp.name))
    return tuple(names)


def parse_formula(formula: str) -> ParsedFormula:
    """Parse an lme4 formula into fixed terms and random-effect blocks.

    Parameters
    ----------
    formula
        For example ``"Reaction ~ Days + (Days | Subject)"``.

    Returns
    -------
    ParsedFormula

    Raises
    ------
    FormulaError
        If the text is not a formula formulae can parse, has no response, or
        has no random-effect term.
    """
    if not isinstance(formula, str) or not formula.strip():
        raise FormulaError(f"The formula must be a non-empty string like 'y ~ x + (1 | g)', got {formula!r}.")
    if "~" not in formula:
        raise FormulaError(f"The formula {formula!r} has no '~'; write it as 'response ~ terms'.")
    rewritten = expand_double_bars(formula)
    try:
        tree = Parser(Scanner(rewritten).scan()).parse()
    except Exception as exc:
        raise FormulaError(f"formulae cannot parse the formula {formula!r}: {exc}") from None
    resolver = _BarResolver(tree)
    try:
        model = resolver.resolve()
    except Exception as exc:
        raise FormulaError(f"formulae cannot resolve the formula {formula!r}: {exc}") from None
    if not isinstance(model, Model):
        model = Model(model)
    if model.response is None or not isinstance(model.response, Response):
        raise FormulaError(f"The formula {formula!r} has no response on the left of '~'.")
    if not resolver.bars:
        raise FormulaError(
            f"The formula {formula!r} has no random-effect term such as '(1 | group)'. "
            "bayeslmm fits mixed models; add a grouping term."
        )

    blocks: list[RandomBlock] = []
    seen: set[tuple[Any, Any]] = set()
    for terms, nested in resolver.bars:
        by_factor: dict[Any, list[Any]] = {}
        for gt in terms:
            key = (gt.expr, gt.factor)
            if key in seen:
                raise FormulaError(
                    f"The random term '{gt.name}' appears more than once in {formula!r}; write it once."
                )
            seen.add(key)
            by_factor.setdefault(gt.factor, []).append(gt)
        for gts in by_factor.values():
            fvars = _factor_vars(gts[0], formula)
            if nested:
                fvars = tuple(reversed(fvars))
            blocks.append(
                RandomBlock(
                    factor_vars=fvars,
                    factor_name=":".join(fvars),
                    exprs=tuple(gt.expr for gt in gts),
                )
            )

    fixed_terms = tuple(model.common_terms)
    return ParsedFormula(
        text=formula,
        rewritten=rewritten,
        response=model.response,
        fixed_terms=fixed_terms,
        blocks=tuple(blocks),
        var_names=frozenset(str(v) for v in model.var_names),
    )


def fixed_model(parsed: ParsedFormula) -> Model:
    """A fresh formulae ``Model`` of the response and the fixed terms."""
    import copy

    terms = copy.deepcopy(list(parsed.fixed_terms))
    return Model(*terms, response=copy.deepcopy(parsed.response))


def block_model(block: RandomBlock) -> Model:
    """A fresh formulae ``Model`` of a block's left-hand-side terms."""
    import copy

    return Model(*copy.deepcopy(list(block.exprs)))


def term_is_intercept(term: Any) -> bool:
    """Whether a formulae term is the intercept."""
    return isinstance(term, Intercept)


def is_term(term: Any) -> bool:
    """Whether a formulae object is a regular (non-intercept) term."""
    return isinstance(term, Term)
