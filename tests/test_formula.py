"""Formula stage: bar structure from formulae's syntax tree, lme4's ``||`` and bare bars, closed formulas."""

import pytest

from bayeslmm.errors import FormulaError
from bayeslmm.formula import check_closed, parse_formula


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
        # transformed terms inside bars (formulae cannot hash them; bayeslmm never does)
        ("y ~ (log(x+1)|g)", [("g", ["Intercept()", "Term([Call(log(x + 1))])"])]),
        ("y ~ (I(x/2)|g)", [("g", ["Intercept()", "Term([Call(I(x / 2))])"])]),
    ],
)
def test_bars_keep_their_structure(formula, blocks):
    assert _blocks(formula) == blocks


@pytest.mark.parametrize(
    "double, single",
    [
        ("y ~ x + (x || g)", "y ~ x + (1 | g) + (0 + x | g)"),
        ("y ~ x + (1 + x + z || g)", "y ~ x + (1 | g) + (0 + x | g) + (0 + z | g)"),
        ("y ~ x + (0 + x + z || g)", "y ~ x + (0 + x | g) + (0 + z | g)"),
        ("y ~ (x||g) + (1|h)", "y ~ (1 | g) + (0 + x | g) + (1|h)"),
        ("y ~ (x || a/b)", "y ~ (1 | a/b) + (0 + x | a/b)"),
    ],
)
def test_double_bar_is_independent_single_bars(double, single):
    # lme4's (x || g) means (1 | g) + (0 + x | g)
    assert sorted(_blocks(double)) == sorted(_blocks(single))


def test_double_bar_is_read_from_tokens_not_rewritten_text():
    # A backquoted name in a || bar stays a column name: the text is never rewritten into code.
    payload = "np.maximum(offset.__globals__.update(Offset=offset.__builtins__.get(np.maximum.reduce(e))))"
    p = parse_formula(f"y ~ x + (`{payload}` || g)")
    assert payload in p.var_names
    assert [str(e) for b in p.blocks for e in b.exprs] == ["Intercept()", f"Term([Variable({payload})])"]


@pytest.mark.parametrize("formula", ["Yield ~ 1|Batch", "Yield ~ 1 | Batch", "Yield~1|Batch"])
def test_bar_without_parentheses_is_read_as_r_reads_it(formula):
    # R parses `Yield ~ 1 | Batch` as `Yield ~ (1 | Batch)` (lme4's Dyestuff example)
    p, q = parse_formula(formula), parse_formula("Yield ~ (1 | Batch)")
    assert _blocks(formula) == _blocks("Yield ~ (1 | Batch)")
    assert p.fixed_terms == q.fixed_terms and p.var_names == q.var_names


def test_bar_without_parentheses_and_slopes_says_what_to_write():
    with pytest.raises(FormulaError, match=r"'y ~ \(x \| g\)'.*'y ~ x \+ \(x \| g\)'"):
        parse_formula("y ~ x | g")


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
        ("y ~ x + (1|g))", r"stops at '\)'"),
        ("y ~ x + ( || g)", "cannot parse"),
        ("y ~ x + (x ||| g)", "'|||'"),
        ("y ~ (x|g) + (x|g)", "more than once"),
        ("y ~ x + (1|log(g))", "not a data column"),
        ("y ~ x + (1|g) + `unterminated", "cannot read"),
        ("y ~ " + "(" * 3000 + "x" + ")" * 3000 + " + (1|g)", "nested too deeply|cannot parse"),
    ],
)
def test_bad_formulas(formula, message):
    with pytest.raises(FormulaError, match=message):
        parse_formula(formula)


def test_var_names():
    p = parse_formula("Reaction ~ Days + (Days | Subject)")
    assert p.var_names == {"Reaction", "Days", "Subject"}
    # a literal is not a column
    assert parse_formula("Reaction ~ I(Days**2) + poly(Days, 2) + (1 | Subject)").var_names == {"Reaction", "Days", "Subject"}


@pytest.mark.parametrize(
    "formula",
    [
        "log(y) ~ log(x + 1) + I(x**2) + {x / 2} + poly(x, 2) + scale(x) + center(x) + standardize(x) + (1 | g)",
        "np.sqrt(y) ~ np.log1p(x) + numpy.exp(x) + abs(x - 1) + log2(x + 1) + log10(x + 1) + C(x > 0) + (x | g)",
        "y ~ poly(x, degree=3, raw=True) + C(k) + (1 + I(x * 2) || g)",
    ],
)
def test_allowlisted_formulas_pass_the_closed_check(formula):
    check_closed(parse_formula(formula))


@pytest.mark.parametrize(
    "formula, culprit",
    [
        ("y ~ x + os.system('touch m') + (1|g)", "os.system"),
        ("y ~ x + click.utils.os.system('touch m') + (1|g)", "click.utils.os.system"),
        ("y ~ offset.__globals__.get('os') + (1|g)", "offset.__globals__.get"),
        ("y ~ np.log.__class__('x') + (1|g)", "np.log.__class__"),
        ("y ~ I.__globals__['os'] + (1|g)", "I.__globals__"),
        ("y ~ x + (np.__class__.__subclasses__() | g)", "np.__class__.__subclasses__"),
        ("y ~ x + (1 | g) + eval('1')", "eval"),
        ("y ~ log(x, base) + (1|g)", "exactly one argument"),
        ("y ~ poly(x, 200) + (1|g)", "degree"),
        ("y ~ C(x, Sum) + (1|g)", "C()"),
        ("y ~ log(C(x)) + (1|g)", "C()"),
        ("os.system('touch m') ~ x + (1|g)", "os.system"),
    ],
)
def test_closed_check_refuses_everything_else(formula, culprit):
    with pytest.raises(FormulaError, match="not allowed") as err:
        check_closed(parse_formula(formula))
    assert culprit in str(err.value)
