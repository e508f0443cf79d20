"""The formulae internals bayeslmm relies on (all reached through bayeslmm.compat) are where they were.

If one of these fails after a formulae upgrade, fix bayeslmm/compat.py: these
are the only places that know formulae's private structure.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayeslmm import compat


def test_tokens_and_the_parser_position():
    tokens = compat.scan("y ~ x + (1 | g)")
    assert [t.kind for t in tokens][:4] == ["IDENTIFIER", "TILDE", "NUMBER", "PLUS"]  # the implicit intercept
    tree, stop = compat.parse_tokens(tokens)
    assert tokens[stop].kind == "EOF" and tree is not None
    # formulae stops silently at a bar outside parentheses; parse_tokens must expose where
    bare = compat.scan("y ~ 1 | g")
    _, stop = compat.parse_tokens(bare)
    assert bare[stop].kind == "PIPE"
    assert compat.make_token("LEFT_PAREN", "(").kind == "LEFT_PAREN"


def test_environment_namespaces():
    env = compat.Environment([{"a": 1}])
    extended = compat.extend_environment(env, {"b": 2})
    assert compat.environment_namespaces(extended) == [{"a": 1}, {"b": 2}]
    assert extended.namespace["b"] == 2


def test_lazy_call_structure():
    model = compat.Resolver(compat.parse_tokens(compat.scan("y ~ poly(x, 2) + log(x + 1)"))[0]).resolve()
    poly, log = (t.components[0] for t in model.common_terms[1:])
    assert isinstance(poly, compat.Call) and isinstance(poly.call, compat.LazyCall)
    assert poly.call.callee == "poly" and isinstance(poly.call.args[0], compat.LazyVariable)
    assert isinstance(poly.call.args[1], compat.LazyValue) and poly.call.args[1].value == 2
    op = log.call.args[0]
    assert isinstance(op, compat.LazyOperator) and op.symbol == "+" and len(op.args) == 2


def test_stateful_transform_state_after_evaluation():
    x = pd.DataFrame({"x": np.arange(10.0), "y": np.arange(10.0) ** 2})
    model = compat.Resolver(compat.parse_tokens(compat.scan("y ~ 0 + center(x) + scale(x) + poly(x, 3)"))[0]).resolve()
    dm = compat.DesignMatrices(model, x, compat.Environment([{}]))
    states = [compat.stateful_state(t.components[0].call) for t in dm.common.terms.values()]
    assert states[0] == {"mean": 4.5}
    assert states[1]["mean"] == 4.5 and states[1]["std"] == np.std(np.arange(10.0))
    assert states[2]["degree"] == 3 and not states[2]["raw"]
    assert len(states[2]["alpha"]) == 3 and len(states[2]["norms2"]) == 4
