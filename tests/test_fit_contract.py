"""One table-driven test of the fit contract: every extractor, on every fit kind, with one signature.

To add a fit kind (a GLMM, a Laplace fit), add a builder to ``KINDS`` and a column
per row of ``COLUMNS``; every test below then runs on it.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import case, case_data

import bayeslmm
from bayeslmm.fitbase import MixedFit
from bayeslmm.reml_fit import REMLFit
from bayeslmm.results import BayesFit
from bayeslmm.summary import ModelSummary

# -- the fit kinds -----------------------------------------------------------
KINDS = {
    "nuts": (BayesFit, lambda request: request.getfixturevalue("sleep_fit")),
    "reml": (REMLFit, lambda request: bayeslmm.lmer(case("sleep_slopes")["formula"], case_data("sleep_slopes"),
                                                    method="REML")),
}

#: Every extractor of the contract; each must have the same signature on every fit kind.
EXTRACTORS = ["fixef", "ranef", "coef", "VarCorr", "fitted", "resid", "predict", "summary", "tidy", "glance",
              "augment", "nobs", "ngrps", "icc", "pooling", "save"]

L, U = "l-90% CI", "u-90% CI"  # every call below asks for level=0.9
BROOM = ["effect", "group", "term", "estimate", "std.error", "conf.low", "conf.high"]
POOL = ["grpvar", "grp", "term", "n", "complete_pooling", "no_pooling", "partial_pooling"]

#: (call, expected columns per kind): the output columns of every table extractor.
COLUMNS = {
    "fixef": (lambda f: f.fixef(level=0.9), {
        "nuts": ["Estimate", "Est.Error", L, U, "Rhat", "Bulk_ESS", "Tail_ESS"],
        # coef(summary(fm)) with lmerTest's Satterthwaite df, and confint(fm, method = "Wald")
        "reml": ["Estimate", "Std. Error", L, U, "df", "t value", "Pr(>|t|)"],
    }),
    "ranef_long": (lambda f: f.ranef(level=0.9, long=True), {
        "nuts": ["grpvar", "term", "grp", "condval", "condsd", L, U],
        "reml": ["grpvar", "term", "grp", "condval", "condsd", L, U],  # as.data.frame(ranef(fm, condVar = TRUE))
    }),
    "coef_long": (lambda f: f.coef(level=0.9, long=True), {
        "nuts": ["grpvar", "grp", "term", "Estimate", "Est.Error", L, U],
        "reml": ["grpvar", "grp", "term", "Estimate"],  # lme4 defines no standard error for coef(fm)
    }),
    "VarCorr": (lambda f: f.VarCorr(level=0.9), {
        "nuts": ["grp", "var1", "var2", "vcov", "sdcor", "Est.Error", L, U],
        "reml": ["grp", "var1", "var2", "vcov", "sdcor"],  # as.data.frame(VarCorr(fm))
    }),
    "predict": (lambda f: f.predict(level=0.9), {
        "nuts": ["Estimate", "Est.Error", L, U],
        "reml": ["Estimate", "Std. Error", L, U],
    }),
    "tidy": (lambda f: f.tidy(level=0.9), {"nuts": BROOM, "reml": [*BROOM[:5], "statistic", "df", "p.value", *BROOM[5:]]}),
    "glance": (lambda f: f.glance(), {
        "nuts": ["nobs", "sigma", "elpd_loo", "p_loo", "looic", "waic", "r2_marginal", "r2_conditional",
                 "divergences", "draws", "chains"],
        "reml": ["nobs", "sigma", "logLik", "AIC", "BIC", "REMLcrit", "df.residual"],  # glance.merMod, REMLcrit(fm)
    }),
    "augment": (lambda f: f.augment(level=0.9).iloc[:, -4:], {
        "nuts": [".fitted", ".resid", ".lower", ".upper"],
        "reml": [".fitted", ".resid", ".lower", ".upper"],
    }),
    "icc": (lambda f: f.icc(level=0.9), {"nuts": ["Estimate", "Est.Error", L, U], "reml": ["Estimate"]}),
    "pooling": (lambda f: f.pooling(), {"nuts": POOL, "reml": POOL}),
}


@pytest.fixture(scope="module", params=list(KINDS))
def kind_fit(request):
    return request.param, KINDS[request.param][1](request)


def test_every_kind_is_a_mixed_fit(kind_fit):
    _, fit = kind_fit
    assert isinstance(fit, MixedFit)
    assert fit.params is fit.params  # the array core is built once and cached


def _shared(sig: inspect.Signature) -> list[inspect.Parameter]:
    return [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.KEYWORD_ONLY]


@pytest.mark.parametrize("name", EXTRACTORS)
def test_same_signature_on_every_kind(name):
    """Every kind takes the contract's arguments; a kind may add keyword-only options of its own.

    Those options are what the kind's method defines: lmerTest's ``ddf=`` for
    the t tests of a likelihood fit, the probability of direction (``pd=``) of a posterior.
    """
    base = inspect.signature(getattr(MixedFit, name))
    sigs = {kind: inspect.signature(getattr(cls, name)) for kind, (cls, _) in KINDS.items()}
    for kind, sig in sigs.items():
        assert _shared(sig) == _shared(base), (kind, sig, base)
    if "level" in base.parameters:
        assert base.parameters["level"].default == 0.95


KIND_OPTIONS = {("fixef", "reml"): {"ddf"}, ("summary", "reml"): {"ddf"}, ("tidy", "reml"): {"ddf"}, ("summary", "nuts"): {"pd"}}


@pytest.mark.parametrize("name", EXTRACTORS)
def test_kind_options_are_the_documented_ones(name):
    for kind, (cls, _) in KINDS.items():
        sig = inspect.signature(getattr(cls, name))
        extra = {p.name for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        assert extra == KIND_OPTIONS.get((name, kind), set()), (name, kind, extra)


@pytest.mark.parametrize("table", list(COLUMNS))
def test_output_columns(kind_fit, table):
    kind, fit = kind_fit
    call, expected = COLUMNS[table]
    out = call(fit)
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == expected[kind]
    assert len(out) > 0


def test_row_aligned_series_and_counts(kind_fit):
    _, fit = kind_fit
    n = case_data("sleep_slopes").shape[0]
    for series in (fit.fitted(), fit.resid()):
        assert isinstance(series, pd.Series) and len(series) == n
    np.testing.assert_allclose(fit.fitted() + fit.resid(), case_data("sleep_slopes")["Reaction"])
    assert fit.nobs() == n and fit.ngrps().to_dict() == {"Subject": 18}  # nobs(fm), ngrps(fm)
    wide = fit.ranef()
    assert list(wide) == ["Subject"] and list(wide["Subject"].columns) == ["(Intercept)", "Days"]
    assert list(fit.coef()["Subject"].columns) == ["(Intercept)", "Days"]


def test_no_interval_collapses_to_the_estimate(kind_fit):
    """Issue 10: no table reports an uncertainty of 0 with both bounds at the estimate."""
    _, fit = kind_fit
    for table in (fit.fixef(), fit.predict(), fit.ranef(long=True)):
        lo, hi = table["l-95% CI"], table["u-95% CI"]
        assert (hi - lo > 0).all()


def test_summary_and_printed_forms(kind_fit):
    _, fit = kind_fit
    s = fit.summary(level=0.9)
    assert isinstance(s, ModelSummary)
    text = str(s)
    assert "Fixed effects:" in text and "Random effects:" in text
    short = str(fit)
    assert short.startswith(s.title) and "Fixed Effects:" in short and "Std.Dev." in short
    assert "<table" in fit._repr_html_() and "<table" in s._repr_html_()


def test_save_round_trip(kind_fit, tmp_path):
    _, fit = kind_fit
    back = bayeslmm.load(fit.save(tmp_path / "fit.nc"))
    assert type(back) is type(fit)
    pd.testing.assert_frame_equal(back.fixef(), fit.fixef())


def test_interval_level_is_one_argument_everywhere(kind_fit):
    _, fit = kind_fit
    with pytest.raises(bayeslmm.BayesLMMError, match="level"):
        fit.fixef(level=95)
    with pytest.raises(bayeslmm.BayesLMMError, match="level"):
        fit.predict(level=1.5)


# -- the boundaries of the after-fit modules ---------------------------------
PACKAGE = Path(bayeslmm.__file__).parent
OUTPUT_MODULES = ["paramdraws", "tables", "summary", "tidy", "predict", "fitstats", "pooling", "compare", "plots",
                  "group_plots", "simulate", "fitbase", "results", "reml_fit", "reloo"]


def _imports(module: str) -> list[tuple[str, list[str]]]:
    """Every ``from .x import a, b`` in a module (function-level ones included): (x, names)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.append((node.module, [a.name for a in node.names]))
            else:
                out += [(a.name, []) for a in node.names]
    return out


def test_no_private_names_cross_the_after_fit_modules():
    for module in OUTPUT_MODULES:
        private = [(m, n) for m, names in _imports(module) for n in names if n.startswith("_")]
        assert not private, f"{module} imports private names {private}"


def test_no_import_cycle_among_the_after_fit_modules():
    graph = {m: {dep for dep, _ in _imports(m) if dep in OUTPUT_MODULES} for m in OUTPUT_MODULES}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for dep in graph[start]:
            if dep == target or (dep not in seen and reaches(dep, target, seen | {dep})):
                return True
        return False

    cycles = [m for m in OUTPUT_MODULES if reaches(m, m, {m})]
    assert not cycles, f"import cycle through {cycles}"
