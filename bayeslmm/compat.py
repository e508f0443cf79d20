"""Every use of a library's private or undocumented API, in one place.

formulae documents ``design_matrices`` and ``model_description``; bayeslmm
needs more than that (its tokens, parser and resolver to keep each bar's
structure, the lazy call objects to check a formula against the allowlist of
:mod:`bayeslmm.transforms`, the fitted state of its stateful transforms, and
its evaluation environment). PyMC's NUTS is driven through its compiled
log-density protocol and its step state, and PyTensor's BLAS link flags are
set for a pip install. Every such use is a function or a name in this module,
in one delimited section per library, so a new library version that moves
something breaks here: ``tests/test_compat.py`` (formulae) and
``tests/test_sampling.py`` (PyMC, PyTensor) say what moved.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np


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
    "CompiledLogpDlogp",
    "step_state",
    "set_step_state",
    "pip_blas_ldflags",
    "link_pip_blas",
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


# ===========================================================================
# formulae (tested against 0.9)
# ===========================================================================
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


# ---------------------------------------------------------------------------
# PyMC and PyTensor: the sampler (bayeslmm.sampling, bayeslmm.model)
# ---------------------------------------------------------------------------
class CompiledLogpDlogp:
    """A log density and gradient in the form PyMC's NUTS expects of its compiled function (``logp_dlogp_func``).

    PyMC's ``NUTS(..., logp_dlogp_func=)`` calls ``_pytensor_function`` on
    the raveled point (``_raveled_inputs``) and reads ``dtype`` and
    ``_extra_vars_shared``; none of these is public API. The values are
    remembered for recent points: at every draw PyMC's NUTS evaluates the log
    density again at the point it has just accepted, which it already
    evaluated on the trajectory that reached it.

    Parameters
    ----------
    logp_dlogp
        ``x -> (log density, gradient)`` on float64 vectors.
    """

    _raveled_inputs = True
    dtype = "float64"
    trust_input = True
    #: Points remembered; more than one trajectory of NUTS's default maximum depth (2¹⁰ steps).
    CACHE_SIZE = 1100

    def __init__(self, logp_dlogp: Callable[[np.ndarray], tuple[float, np.ndarray]]) -> None:
        self._logp_dlogp = logp_dlogp
        self._extra_vars_shared: dict[str, Any] = {}
        self._cache: OrderedDict[bytes, tuple[float, np.ndarray]] = OrderedDict()

    def _value_grad(self, q: np.ndarray) -> tuple[float, np.ndarray]:
        key = np.ascontiguousarray(q, dtype=np.float64).tobytes()
        hit = self._cache.get(key)
        if hit is None:
            hit = self._logp_dlogp(q)
            self._cache[key] = hit
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit[0], hit[1].copy()

    def _pytensor_function(self, q: np.ndarray) -> tuple[float, np.ndarray]:
        return self._value_grad(q)

    def __call__(self, q: np.ndarray, extra_vars: Any = None) -> tuple[float, np.ndarray]:
        """The log density and its gradient at ``q``."""
        return self._value_grad(q)

    def set_extra_values(self, extra_vars: Any) -> None:
        """There are no extra variables."""

    def get_extra_values(self) -> dict[str, Any]:
        """There are no extra variables."""
        return {}


def step_state(step: Any) -> Any:
    """The tuning state of a PyMC step method (``step.sampling_state``), to restart every chain from the same one."""
    return step.sampling_state


def set_step_state(step: Any, state: Any) -> None:
    """Restore a state taken by :func:`step_state`, as ``pm.sample`` does before each chain."""
    step.sampling_state = state


def pip_blas_ldflags() -> str:
    """PyTensor BLAS link flags for the OpenBLAS of the ``scipy-openblas32`` wheel, or ``""`` where it is missing.

    PyTensor's C BLAS operations call the Fortran symbols (``dgemm_``); the
    wheel exports them with a ``scipy_`` prefix (``scipy_dgemm_``), so the
    flags map each name of the reference BLAS onto the prefixed one with
    ``-D`` definitions, which PyTensor passes to the compiler of every BLAS op.
    """
    if sys.platform == "win32":
        return ""
    try:
        import scipy_openblas32
    except ImportError:
        return ""
    routines = (
        "rotg rotmg rot rotm swap scal copy axpy dot dotu dotc dsdot sdsdot nrm2 asum "
        "gemv gbmv hemv hbmv hpmv symv sbmv spmv trmv tbmv tpmv trsv tbsv tpsv ger geru gerc her hpr her2 hpr2 syr spr syr2 spr2 "
        "gemm symm hemm syrk herk syr2k her2k trmm trsm"
    ).split()
    names = [f"{t}{r}_" for t in "sdcz" for r in routines] + ["xerbla_"]
    lib = scipy_openblas32.get_lib_dir()
    flags = [f"-L{lib}", f"-l{scipy_openblas32.get_library()}", f"-Wl,-rpath,{lib}"]
    return " ".join(flags + [f"-D{n}=scipy_{n}" for n in names])


def link_pip_blas() -> None:
    """Make PyTensor link its BLAS operations to the ``scipy-openblas32`` wheel when it has no BLAS of its own.

    A pip-installed PyTensor finds no BLAS library to link against (it looks
    for system MKL, OpenBLAS or reference BLAS) and warns that BLAS
    operations "will be severely degraded". This replaces the default of the
    ``blas__ldflags`` setting (computed on its first use) by one that first
    tries :func:`pip_blas_ldflags`, with the same test program PyTensor runs,
    and otherwise falls back to PyTensor's own search. A value the user set
    (``PYTENSOR_FLAGS``, ``.pytensorrc``) or one already computed is left alone. The default sits
    in the setting's private ``_default``.
    """
    import pytensor
    from pytensor.link.c import cmodule

    param = pytensor.config._config_var_dict.get("blas__ldflags")
    if param is None or hasattr(param, "val") or getattr(param, "_bayeslmm", False):
        return
    pytensor_default = param.default

    def ldflags() -> str:
        flags = pip_blas_ldflags()
        if flags and pytensor.config.cxx and cmodule.try_blas_flag(flags.split()):
            _one_blas_thread()
            return flags
        return pytensor_default() if callable(pytensor_default) else pytensor_default

    param._default = ldflags
    param._bayeslmm = True


def _one_blas_thread() -> None:
    """One thread for the wheel's OpenBLAS, unless ``OPENBLAS_NUM_THREADS`` says otherwise.

    The chains already run one per CPU; with OpenBLAS's own threads on top,
    Penicillin fits took more CPU time than without a linked BLAS.
    """
    import os

    import scipy_openblas32

    if "OPENBLAS_NUM_THREADS" not in os.environ:
        scipy_openblas32.dll.scipy_openblas_set_num_threads(1)
