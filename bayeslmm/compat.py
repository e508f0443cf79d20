"""The one place where bayeslmm touches the internals of the libraries it builds on.

formulae documents ``design_matrices`` and ``model_description``; bayeslmm
needs more than that (its tokens, parser and resolver to keep each bar's
structure, the lazy call objects to check a formula against the allowlist of
:mod:`bayeslmm.transforms`, the fitted state of its stateful transforms, and
its evaluation environment). Every such use is a function or a name in this
module, so a new formulae version that moves something breaks here, and
``tests/test_compat.py`` says what moved.

Other parts of the package may add their own sections below; keep each
library's section delimited.
"""

from __future__ import annotations

from typing import Any

# ===========================================================================
# formulae (tested against 0.9)
# ===========================================================================
from formulae.environment import Environment
from formulae.expr import Binary
from formulae.matrices import DesignMatrices
from formulae.parser import Parser
from formulae.resolver import Resolver
from formulae.scanner import Scanner
from formulae.terms import Intercept, Model, Term
from formulae.terms.call import Call
from formulae.terms.call_resolver import LazyCall, LazyOperator, LazyValue, LazyVariable
from formulae.terms.terms import GroupSpecificTerm, Response
from formulae.terms.variable import Variable
from formulae.token import Token
from formulae.transforms import Center, Polynomial, Scale

__all__ = [
    "Environment",
    "Binary",
    "DesignMatrices",
    "Resolver",
    "Intercept",
    "Model",
    "Term",
    "Call",
    "Variable",
    "GroupSpecificTerm",
    "Response",
    "LazyCall",
    "LazyOperator",
    "LazyValue",
    "LazyVariable",
    "scan",
    "make_token",
    "parse_tokens",
    "extend_environment",
    "environment_namespaces",
    "stateful_state",
    "lazy_value_hash_works",
]


def scan(text: str) -> list[Any]:
    """The tokens formulae makes of a formula (with the implicit intercept inserted after ``~``)."""
    return Scanner(text).scan()


def make_token(kind: str, lexeme: str) -> Any:
    """A formulae token such as ``make_token("LEFT_PAREN", "(")``."""
    return Token(kind, lexeme)


def parse_tokens(tokens: list[Any]) -> tuple[Any, int]:
    """Parse tokens into formulae's syntax tree.

    Returns the tree and the index of the first token the parser did not
    consume: formulae's parser stops silently at a token it cannot continue
    with (``y ~ 1 | g`` parses as ``y ~ 1``), so the caller must check it
    reached ``EOF``.
    """
    parser = Parser(tokens)
    tree = parser.parse()
    return tree, parser.current


def environment_namespaces(env: Environment) -> list[Any]:
    """The namespaces (dicts searched in order) of a formulae ``Environment``."""
    return list(env._namespaces)


def extend_environment(env: Environment, *namespaces: dict[str, Any]) -> Environment:
    """A formulae ``Environment`` that searches ``env`` first, then ``namespaces``."""
    return Environment(environment_namespaces(env) + list(namespaces))


def stateful_state(call: LazyCall) -> dict[str, Any] | None:
    """The learnt parameters of an evaluated stateful transform, as numbers.

    ``center(x)``: ``{"mean"}``; ``scale(x)``/``standardize(x)``: ``{"mean", "std"}``;
    ``poly(x, d)``: ``{"degree", "raw", "alpha", "norms2"}`` (the three-term
    recurrence of the orthogonal polynomials, ``alpha[0..d-1]`` and
    ``norms2[0..d]``). ``None`` if the call is not one of these or was not
    evaluated.
    """
    st = getattr(call, "stateful_transform", None)
    if isinstance(st, Center):
        return {"mean": st.mean} if st.params_set else None
    if isinstance(st, Scale):
        return {"mean": st.mean, "std": st.std} if st.params_set else None
    if isinstance(st, Polynomial):
        degree, raw = st.degree, bool(st.raw)
        if raw:
            return {"degree": degree, "raw": True, "alpha": (), "norms2": ()}
        try:
            alpha = tuple(st.alpha[k] for k in range(degree))
            norms2 = tuple(st.norms2[k] for k in range(degree + 1))
        except (KeyError, TypeError):
            return None
        return {"degree": degree, "raw": False, "alpha": alpha, "norms2": norms2}
    return None


def lazy_value_hash_works() -> bool:
    """Whether formulae can hash a literal inside a call (``log(x + 1)``).

    formulae 0.9's ``LazyValue.__hash__`` calls ``hash(value, lexeme)``, a
    ``TypeError``, so no term holding a numeric literal inside a call can be
    put in a set or used as a dict key. bayeslmm never hashes formulae terms
    (it compares them with ``==``); ``tests/test_compat.py`` reports when
    formulae fixes this.
    """
    try:
        hash(LazyValue(1, "1"))
    except TypeError:
        return False
    return True
