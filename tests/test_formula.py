"""Formula stage: the ``||`` rewriting step and bar structure from formulae's syntax tree."""

import pytest

from bayeslmm.errors import FormulaError
from bayeslmm.formula import expand_double_bars, parse_formula


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("y ~ x + (x || g)", "y ~ x + (1 | g) + (0 + x | g)"),
        ("y ~ x + (1 + x + z || g)", "y ~ x + (1 | g) + (0 + x | g) + (0 + z | g)"),
        ("y ~ x + (0 + x + z || g)", "y ~ x + (0 + x | g) + (0 + z | g)"),
        ("y ~ (x||g) + (1|h)", "y ~ (1 | g) + (0 + x | g) + (1|h)"),
        ("y ~ x + (x | g)", "y ~ x + (x | g)"),
    ],
)
def test_expand_double_bars(formula, expected):
    assert expand_double_bars(formula) == expected


def test_double_bar_without_terms_is_an_error():
    with pytest.raises(FormulaError, match="needs terms on both sides"):
        expand_double_bars("y ~ ( || g)")


def _blocks(formula):
    return [(b.factor_name, [str(e) for e in b.exprs]) for b in parse_formula(formula).blocks]


@pytest.mark.parametrize(
    "formula, blocks",
    [
        ("y ~ x + (1|g)", [("g", ["Intercept()"])]),
        ("y ~ x + (x|g)", [("g", ["Intercept()", "Term([Variable(x)])"])]),
        ("y ~ x + (1+x|g)", [("g", ["Intercept()", "Term([Variable(x)])"])]),
        ("y ~ x + (0+x|g)", [("g", ["Term([Variable(x)])"])]),
        ("y ~ x + (-1+x|g)", [("g", ["Term([Variable(x)])"])]),
        # (x||g) is (1|g) + (0+x|g): two independent blocks on one factor
        ("y ~ x + (x||g)", [("g", ["Intercept()"]), ("g", ["Term([Variable(x)])"])]),
        # nested (1|a/b) is (1|a) + (1|a:b), named as lme4 names it (b:a)
        ("y ~ (1|a/b)", [("a", ["Intercept()"]), ("b:a", ["Intercept()"])]),
        ("y ~ (1|a) + (1|b)", [("a", ["Intercept()"]), ("b", ["Intercept()"])]),
        ("y ~ (1|a:b)", [("a:b", ["Intercept()"])]),
        (
            "y ~ x + (x|g) + (1|h) + (0+z|g)",
            [("g", ["Intercept()", "Term([Variable(x)])"]), ("h", ["Intercept()"]), ("g", ["Term([Variable(z)])"])],
        ),
    ],
)
def test_bars_keep_their_structure(formula, blocks):
    assert _blocks(formula) == blocks


@pytest.mark.parametrize(
    "formula, has_intercept, n_fixed",
    [
        ("y ~ x*z + (1|g)", True, 4),  # Intercept, x, z, x:z
        ("y ~ x:z + (1|g)", True, 2),
        ("y ~ 1 + x + (1|g)", True, 2),
        ("y ~ 0 + x + (1|g)", False, 1),
        ("y ~ -1 + x + (1|g)", False, 1),
        ("y ~ C(k) + (1|g)", True, 2),
        ("y ~ 1 + (1|g)", True, 1),
    ],
)
def test_fixed_terms(formula, has_intercept, n_fixed):
    p = parse_formula(formula)
    assert p.has_intercept is has_intercept
    assert len(p.fixed_terms) == n_fixed
    assert p.response_name == "y"


@pytest.mark.parametrize(
    "formula, message",
    [
        ("y ~ x", "no random-effect term"),
        ("x + (1|g)", "no '~'"),
        ("", "non-empty string"),
        ("y ~ x + (|g)", "cannot parse"),
        ("y ~ x + (1|g", "cannot parse"),
        ("y ~ (x|g) + (x|g)", "more than once"),
        ("y ~ x + (1|log(g))", "function call"),
    ],
)
def test_bad_formulas(formula, message):
    with pytest.raises(FormulaError, match=message):
        parse_formula(formula)


def test_var_names():
    p = parse_formula("Reaction ~ Days + (Days | Subject)")
    assert p.var_names == {"Reaction", "Days", "Subject"}
