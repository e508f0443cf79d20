"""The closed allowlist of transformations a formula may use when it is not trusted code.

A formula given to :func:`bayeslmm.lmer` is Python code: formulae evaluates its
calls in the caller's namespace, as R and patsy do. Two places must not run
code: loading a saved fit (:mod:`bayeslmm.io`) and the command line
(:mod:`bayeslmm.cli`), whose formulas may come from someone else. Both accept
only what this module lists:

* data columns (plain or backquoted names) and numeric or string literals;
* arithmetic ``+ - * / **``, unary ``+``/``-`` and comparisons
  ``== != < <= > >=``, inside ``I()`` or ``{}`` or as a function's argument;
* the functions ``log``, ``log1p``, ``log2``, ``log10``, ``exp``, ``sqrt``,
  ``abs``, also written ``np.log`` or ``numpy.log``;
* the stateful transforms ``center(x)``, ``scale(x)``, ``standardize(x)``
  and ``poly(x, degree, raw=False)``, whose learnt centre, scale and
  polynomial coefficients are stored as numbers;
* ``C(x)`` around a whole term, for a categorical predictor.

:func:`describe` walks formulae's resolved objects -- the same objects that are
evaluated -- and returns a plain description (nested tuples, the *nodes* of
:mod:`bayeslmm.recipe`) or raises :class:`NotAllowedError`. Nothing here looks a
name up or evaluates anything.
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np

from .compat import (
    Call,
    GroupSpecificTerm,
    Intercept,
    LazyCall,
    LazyOperator,
    LazyValue,
    LazyVariable,
    Model,
    Term,
    Variable,
    stateful_state,
)
from .errors import FormulaError

__all__ = [
    "FUNCTIONS",
    "STATEFUL",
    "BINARY_OPS",
    "UNARY_OPS",
    "MAX_POLY_DEGREE",
    "MAX_DEPTH",
    "NotAllowedError",
    "canonical_function",
    "describe_component",
    "check_model",
    "closed_namespace",
    "fallback_namespace",
    "allowlist_text",
]

#: Elementwise functions, by their canonical name.
FUNCTIONS: dict[str, Any] = {
    "log": np.log,
    "log1p": np.log1p,
    "log2": np.log2,
    "log10": np.log10,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "abs": np.abs,
}
_PREFIXES = ("np.", "numpy.")
#: Stateful transforms (formulae's), by the names a formula uses.
STATEFUL = ("center", "scale", "standardize", "poly")
BINARY_OPS = ("+", "-", "*", "/", "**", "==", "!=", "<", "<=", ">", ">=")
UNARY_OPS = ("+", "-")
MAX_POLY_DEGREE = 20
#: Deepest nesting of calls and operators accepted.
MAX_DEPTH = 40


class NotAllowedError(Exception):
    """A formula element outside the allowlist (its message says which)."""


def allowlist_text() -> str:
    """One sentence listing what a closed formula may use, for error messages."""
    return (
        "data columns, numbers, + - * / ** and comparisons inside I() or {}, "
        f"{', '.join(FUNCTIONS)} (also as np.<name>), {', '.join(STATEFUL)} and C()"
    )


def canonical_function(callee: str) -> str | None:
    """``"log"`` for ``log``, ``np.log`` and ``numpy.log``; ``None`` if not an allowed function."""
    name = callee
    for prefix in _PREFIXES:
        if callee.startswith(prefix):
            name = callee[len(prefix) :]
            break
    return name if name in FUNCTIONS else None


def _literal(value: Any) -> tuple:
    if isinstance(value, bool):
        return ("num", value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return ("num", value)
    if isinstance(value, str):
        return ("str", value)
    raise NotAllowedError(f"the literal {value!r}")


def _poly_args(call: LazyCall) -> tuple[int | None, bool | None]:
    args, kwargs = list(call.args), dict(call.kwargs)
    if not 1 <= len(args) <= 3 or set(kwargs) - {"degree", "raw"}:
        raise NotAllowedError(f"{call} (write poly(x, degree) or poly(x, degree, raw=True))")
    named = {"degree": args[1] if len(args) > 1 else kwargs.get("degree"), "raw": args[2] if len(args) > 2 else kwargs.get("raw")}
    values: dict[str, Any] = {}
    for key, default in (("degree", 1), ("raw", False)):
        arg = named[key]
        if arg is None:
            values[key] = default
        elif isinstance(arg, LazyValue):
            values[key] = arg.value
        else:
            raise NotAllowedError(f"{call}: the {key} of poly() must be a number written in the formula")
    degree, raw = values["degree"], values["raw"]
    if isinstance(degree, bool) or not isinstance(degree, int) or not 1 <= degree <= MAX_POLY_DEGREE:
        raise NotAllowedError(f"{call}: the degree of poly() must be a whole number from 1 to {MAX_POLY_DEGREE}")
    if not isinstance(raw, bool):
        raise NotAllowedError(f"{call}: raw= of poly() must be True or False")
    return degree, raw


def _state(call: LazyCall, kind: str) -> dict[str, Any]:
    state = stateful_state(call)
    if state is None:
        raise NotAllowedError(f"{call} (its learnt parameters are not available)")
    for key in ("mean", "std"):
        if key in state and not (isinstance(state[key], (float, int, np.floating, np.integer)) and np.isfinite(state[key])):
            raise NotAllowedError(f"{call}: its learnt {key} is {state[key]!r}")
    return state


def _node(obj: Any, fitted: bool, depth: int) -> tuple:
    """The node of a lazy formulae object (see the module docstring)."""
    if depth > MAX_DEPTH:
        raise NotAllowedError(f"an expression nested more than {MAX_DEPTH} levels deep")
    if isinstance(obj, LazyVariable):
        if not isinstance(obj.name, str) or not obj.name:
            raise NotAllowedError(f"the name {obj.name!r}")
        return ("col", obj.name)
    if isinstance(obj, LazyValue):
        return _literal(obj.value)
    if isinstance(obj, LazyOperator):
        if obj.symbol not in BINARY_OPS + UNARY_OPS or len(obj.args) not in (1, 2):
            raise NotAllowedError(f"the operator {obj.symbol!r}")
        args = [_node(a, fitted, depth + 1) for a in obj.args]
        if len(args) == 1:
            if obj.symbol not in UNARY_OPS:
                raise NotAllowedError(f"the unary operator {obj.symbol!r}")
            return ("unary", obj.symbol, args[0])
        return ("op", obj.symbol, args[0], args[1])
    if isinstance(obj, LazyCall):
        return _call_node(obj, fitted, depth)
    raise NotAllowedError(f"the expression {obj}")


def _call_node(call: LazyCall, fitted: bool, depth: int) -> tuple:
    callee = call.callee
    if not isinstance(callee, str):
        raise NotAllowedError(f"the call {call}")
    fn = canonical_function(callee)
    if fn is not None or callee in ("I", "center", "scale", "standardize"):
        if len(call.args) != 1 or call.kwargs:
            raise NotAllowedError(f"{call} ({callee}() takes exactly one argument)")
        inner = _node(call.args[0], fitted, depth + 1)
        if fn is not None:
            return ("fn", fn, inner)
        if callee == "I":
            return inner
        if callee == "center":
            return ("center", inner, float(_state(call, callee)["mean"]) if fitted else None)
        if fitted:
            st = _state(call, callee)
            return ("scale", inner, float(st["mean"]), float(st["std"]))
        return ("scale", inner, None, None)
    if callee == "poly":
        degree, raw = _poly_args(call)
        inner = _node(call.args[0], fitted, depth + 1)
        if not fitted:
            return ("poly", inner, degree, raw, None, None)
        st = _state(call, callee)
        if st["degree"] != degree or st["raw"] != raw:
            raise NotAllowedError(f"{call} (its learnt degree does not match the formula)")
        alpha = tuple(float(a) for a in st["alpha"])
        norms2 = tuple(float(v) for v in st["norms2"])
        if not all(math.isfinite(v) for v in alpha + norms2) or any(v <= 0 for v in norms2):
            raise NotAllowedError(f"{call} (its learnt coefficients are not finite)")
        return ("poly", inner, degree, raw, alpha, norms2)
    if callee == "C":
        raise NotAllowedError(f"{call} inside another expression (C() must be a whole term, as in y ~ C(x))")
    raise NotAllowedError(f"the function {callee!r}")


def describe_component(component: Any, fitted: bool = False) -> tuple:
    """The node of one component of a formulae term.

    Parameters
    ----------
    component
        A formulae ``Variable`` or ``Call``.
    fitted
        Whether the component has been evaluated; then the learnt parameters
        of stateful transforms are read into the node (else they are ``None``).

    Returns
    -------
    tuple
        ``("col", name)``, an expression node, or ``("C", node)`` for ``C(x)``.

    Raises
    ------
    NotAllowedError
        If any part of the component is outside the allowlist.
    """
    if isinstance(component, Variable):
        if not isinstance(component.name, str) or not component.name:
            raise NotAllowedError(f"the term {component.name!r} (a number is not a term; did you mean I({component.name})?)")
        if component.reference is not None:
            raise NotAllowedError(f"{component.name}[{component.reference!r}]")
        return ("col", component.name)
    if isinstance(component, Call):
        call = component.call
        if isinstance(call, LazyCall) and call.callee == "C":
            if len(call.args) != 1 or call.kwargs:
                raise NotAllowedError(f"{call} (C() takes one argument here: the levels and contrasts come from the data)")
            return ("C", _node(call.args[0], fitted, 1))
        return _node(call, fitted, 0)
    raise NotAllowedError(f"the term component {component!r}")


def _term_components(term: Any) -> list[Any]:
    if isinstance(term, Intercept):
        return []
    if isinstance(term, Term):
        return list(term.components)
    raise NotAllowedError(f"the term {term!r}")


def check_model(model: Any, formula: str) -> None:
    """Refuse a resolved formula (or part of one) that uses anything outside the allowlist.

    Parameters
    ----------
    model
        A formulae ``Model`` (response, common and group-specific terms).
    formula
        The formula's text, for the message.

    Raises
    ------
    FormulaError
        Naming the element that is not allowed.
    """
    terms: list[Any] = []
    if isinstance(model, Model):
        if model.response is not None:
            terms.append(model.response.term)
        terms.extend(model.common_terms)
        for gt in model.group_terms:
            terms.extend([gt.expr, gt.factor])
    elif isinstance(model, GroupSpecificTerm):
        terms.extend([model.expr, model.factor])
    else:
        terms.append(model)
    try:
        for term in terms:
            for comp in _term_components(term):
                describe_component(comp, fitted=False)
    except NotAllowedError as exc:
        raise FormulaError(
            f"The formula {formula!r} uses {exc}, which is not allowed here. A formula from the command line "
            f"(or a saved fit) may use only {allowlist_text()}."
        ) from None


def _module(functions: dict[str, Any]) -> types.SimpleNamespace:
    return types.SimpleNamespace(**functions)


def closed_namespace() -> dict[str, Any]:
    """The whole evaluation namespace of a closed formula: the allowlisted functions only.

    No module objects, no builtins: ``np`` and ``numpy`` are plain namespaces
    holding the functions of :data:`FUNCTIONS`.
    """
    ns = _module(dict(FUNCTIONS))
    return {**FUNCTIONS, "np": ns, "numpy": ns}


def fallback_namespace() -> dict[str, Any]:
    """Names searched after the caller's own, so ``log(x)`` works without importing anything."""
    return dict(FUNCTIONS)
