"""Stage 1: formula text -> :class:`ParsedFormula`.

formulae does the scanning, parsing and term resolution. bayeslmm adds three
small things on top of it, all on formulae's tokens and syntax tree, never by
rewriting the text:

1. lme4's double bar ``(x || g)``, which formulae cannot parse: the two
   ``|`` tokens become one, and the bar is remembered as uncorrelated, so
   that its terms become independent blocks ``(1 | g) + (0 + x | g)``.
2. A bar written without parentheses, ``Yield ~ 1 | Batch``, which R reads as
   ``Yield ~ (1 | Batch)`` and formulae would silently cut at the ``|``: the
   right-hand side is put in parentheses as R does.
3. :class:`_BarResolver` walks formulae's syntax tree and records each bar
   ``(expr | factor)`` as it resolves it, so the terms written inside one bar
   (one correlation block) are known from the formula's own structure and
   never recovered later from term names.

formulae terms are compared with ``==`` and never hashed (formulae 0.9 cannot
hash a call holding a number, such as ``log(Days + 1)``; see
:func:`bayeslmm.compat.lazy_value_hash_works`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from .compat import (
    Binary,
    GroupSpecificTerm,
    Intercept,
    Model,
    Resolver,
    Response,
    Variable,
    make_token,
    parse_tokens,
    scan,
)
from .errors import FormulaError
from .transforms import check_model

__all__ = ["RandomBlock", "ParsedFormula", "parse_formula", "check_closed", "fixed_model", "block_model"]


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
# Tokens: the double bar and the bar without parentheses.
# ---------------------------------------------------------------------------
def _tokens(formula: str) -> tuple[list[Any], set[int]]:
    """The formula's tokens with each ``||`` made one ``|``, and the ids of those ``|`` tokens."""
    try:
        raw = scan(formula)
    except Exception as exc:  # formulae raises ScanError, IndexError, ...
        raise FormulaError(f"formulae cannot read the formula {formula!r}: {exc}") from None
    tokens: list[Any] = []
    doubles: set[int] = set()
    for tok in raw:
        if tok.kind == "PIPE" and tokens and tokens[-1].kind == "PIPE":
            if id(tokens[-1]) in doubles:
                raise FormulaError(f"The formula {formula!r} has '|||'; write '|' or '||'.")
            doubles.add(id(tokens[-1]))
            continue
        tokens.append(tok)
    return tokens, doubles


def _text(tokens: list[Any]) -> str:
    return " ".join(str(t.lexeme) for t in tokens if t.kind != "EOF")


def _parse(formula: str, tokens: list[Any]) -> Any:
    try:
        tree, stop = parse_tokens(tokens)
    except RecursionError:
        raise FormulaError(f"The formula {formula!r} is nested too deeply.") from None
    except Exception as exc:
        raise FormulaError(f"formulae cannot parse the formula {formula!r}: {exc}") from None
    if tokens[stop].kind == "EOF":
        return tree
    if tokens[stop].kind == "PIPE":
        tilde = next((i for i, t in enumerate(tokens) if t.kind == "TILDE"), None)
        start = tilde + 3 if tilde is not None else 2  # after formulae's implicit "1 +"
        if start < stop and not any(t.kind == "PIPE" for t in tokens[stop + 1 : -1]):
            lhs = tokens[start:stop]
            if not all(t.kind == "NUMBER" and t.lexeme in ("1",) for t in lhs):
                left, bar, rhs = _text(tokens[:tilde]), _text(lhs), _text(tokens[start:-1])
                raise FormulaError(
                    f"In {formula!r} the bar is not in parentheses. R reads this as '{left} ~ ({rhs})', in which "
                    f"{bar} gets no fixed effect; write that if it is what you mean, or '{left} ~ {bar} + ({rhs})'."
                )
            wrapped = tokens[:start] + [make_token("LEFT_PAREN", "(")] + tokens[start:-1]
            wrapped += [make_token("RIGHT_PAREN", ")"), tokens[-1]]
            return _parse(formula, wrapped)
    raise FormulaError(
        f"formulae cannot parse the formula {formula!r}: it stops at {str(tokens[stop].lexeme)!r}; "
        "check the parentheses and operators there."
    )


# ---------------------------------------------------------------------------
# Structure-keeping resolution.
# ---------------------------------------------------------------------------
class _BarResolver(Resolver):
    """formulae's resolver that also records each bar it resolves."""

    def __init__(self, expr: Any, doubles: set[int]) -> None:
        super().__init__(expr)
        self.doubles = doubles
        self.bars: list[tuple[list[GroupSpecificTerm], bool, bool]] = []

    def visitGroupingExpr(self, expr: Any) -> Any:  # noqa: N802 - formulae's visitor API
        inner = expr.expression
        if isinstance(inner, Binary) and inner.operator.kind == "PIPE":
            resolved = inner.left.accept(self) | inner.right.accept(self)
            terms = resolved.group_terms if isinstance(resolved, Model) else [resolved]
            nested = isinstance(inner.right, Binary) and inner.right.operator.kind == "SLASH"
            self.bars.append((list(terms), nested, id(inner.operator) in self.doubles))
            return resolved
        return super().visitGroupingExpr(expr)


def _factor_vars(term: GroupSpecificTerm, formula: str) -> tuple[str, ...]:
    names = []
    for comp in term.factor.components:
        if not isinstance(comp, Variable) or not isinstance(comp.name, str):
            raise FormulaError(
                f"The grouping factor {term.factor.name!r} in {formula!r} is not a data column "
                "(a function call or a number); make it a column of the data frame and group by that column."
            )
        names.append(comp.name)
    return tuple(names)


def _blocks(bars: list[tuple[list[Any], bool, bool]], formula: str) -> list[RandomBlock]:
    blocks: list[RandomBlock] = []
    seen: list[Any] = []  # compared with ==: formulae terms with literals cannot be hashed
    for terms, nested, double in bars:
        by_factor: list[tuple[Any, list[Any]]] = []
        for gt in terms:
            if any(gt.expr == e and gt.factor == f for e, f in seen):
                raise FormulaError(f"The random term '{gt.name}' appears more than once in {formula!r}; write it once.")
            seen.append((gt.expr, gt.factor))
            group = next((g for f, g in by_factor if f == gt.factor), None)
            if group is None or double:  # each term of a double bar is its own block
                by_factor.append((gt.factor, [gt]))
            else:
                group.append(gt)
        for _, gts in by_factor:
            fvars = _factor_vars(gts[0], formula)
            if nested:
                fvars = tuple(reversed(fvars))
            blocks.append(RandomBlock(factor_vars=fvars, factor_name=":".join(fvars), exprs=tuple(gt.expr for gt in gts)))
    return blocks


def parse_formula(formula: str) -> ParsedFormula:
    """Parse an lme4 formula into fixed terms and random-effect blocks.

    Parsing only builds formulae's description of the formula; nothing in it
    is looked up or evaluated.

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
    tokens, doubles = _tokens(formula)
    tree = _parse(formula, tokens)
    resolver = _BarResolver(tree, doubles)
    try:
        model = resolver.resolve()
    except RecursionError:
        raise FormulaError(f"The formula {formula!r} is nested too deeply.") from None
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
    blocks = _blocks(resolver.bars, formula)
    try:
        var_names = frozenset(str(v) for v in model.var_names if v != "")  # "" stands for a literal
    except Exception as exc:
        raise FormulaError(f"formulae cannot list the columns of {formula!r}: {exc}") from None
    return ParsedFormula(
        text=formula,
        response=model.response,
        fixed_terms=tuple(model.common_terms),
        blocks=tuple(blocks),
        var_names=var_names,
    )


def fixed_model(parsed: ParsedFormula) -> Model:
    """A fresh formulae ``Model`` of the response and the fixed terms."""
    terms = copy.deepcopy(list(parsed.fixed_terms))
    return Model(*terms, response=copy.deepcopy(parsed.response))


def block_model(block: RandomBlock) -> Model:
    """A fresh formulae ``Model`` of a block's left-hand-side terms."""
    return Model(*copy.deepcopy(list(block.exprs)))


def check_closed(parsed: ParsedFormula) -> None:
    """Refuse a formula that uses anything outside :mod:`bayeslmm.transforms`' allowlist.

    Raises
    ------
    FormulaError
        Naming the element that is not allowed.
    """
    check_model(Model(*parsed.fixed_terms, response=parsed.response), parsed.text)
    for rb in parsed.blocks:
        check_model(Model(*rb.exprs), parsed.text)
