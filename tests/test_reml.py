"""REML/ML fits (bayeslmm.reml) against lme4 1.1-31 on the shared cases.

The reference file tests/data/reference/lme4_reml.json holds, per case, lme4's
results; each assertion below names the R expression behind the number. A
second group of tests checks the linear algebra against a brute-force dense
computation of the same quantities, for every Schur-complement code path.
"""

from __future__ import annotations

import warnings
from functools import lru_cache, cache

import numpy as np
import pandas as pd
import pytest

import bayeslmm._linalg as linalg
from bayeslmm.design import Design, build_design
from bayeslmm.errors import BayesLMMError, ConvergenceWarning, DataWarning
from bayeslmm.formula import parse_formula
from bayeslmm.reml_problem import REMLProblem
from conftest import reference, reference_data

from bayeslmm.reml import SINGULAR_MESSAGE, REMLResult, block_sd_corr, fit_reml

@lru_cache(maxsize=1)
def _reference() -> dict:
    return reference()["cases"]


CASES = list(_reference())


@cache
def _design(name: str) -> Design:
    case = _reference()[name]
    return build_design(parse_formula(case["formula"]), reference_data(case["data"]))


@cache
def _fit(name: str, method: str) -> REMLResult:
    return fit_reml(_design(name), method=method)


def test_reference_has_the_expected_cases() -> None:
    assert {"sleep_slopes", "sleep_uncorr", "penicillin", "pastes"} <= set(CASES)


# ---------------------------------------------------------------------------
# Parity with lme4, one test per quantity, over every case
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASES)
def test_reml_criterion(name: str) -> None:
    ref, fit = _reference()[name], _fit(name, "REML")
    assert fit.nobs == ref["nobs"]  # nobs(fm)
    assert fit.reml_criterion == pytest.approx(ref["reml_criterion"], abs=1e-3)  # REMLcrit(fm)
    assert fit.loglik == pytest.approx(-ref["reml_criterion"] / 2, abs=1e-3)  # logLik(fm) of a REML fit
    assert fit.singular == ref["singular"]  # isSingular(fm)
    assert fit.converged


@pytest.mark.parametrize("name", CASES)
def test_fixed_effects_and_standard_errors(name: str) -> None:
    ref, fit = _reference()[name], _fit(name, "REML")
    assert list(fit.fixed_names) == list(ref["fixef"])
    want = np.array([ref["fixef"][k] for k in fit.fixed_names])  # fixef(fm)
    np.testing.assert_allclose(fit.beta, want, rtol=1e-4)
    want_se = np.array([ref["fixef_se"][k] for k in fit.fixed_names])  # sqrt(diag(vcov(fm)))
    np.testing.assert_allclose(fit.beta_se, want_se, rtol=1e-4)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.vcov_beta)), fit.beta_se)


@pytest.mark.parametrize("name", CASES)
def test_varcorr(name: str) -> None:
    ref, fit = _reference()[name], _fit(name, "REML")
    sd_corr = dict(zip(fit.block_labels, block_sd_corr(fit)))
    terms = dict(zip(fit.block_labels, fit.block_terms))
    for row in ref["varcorr"]:  # as.data.frame(VarCorr(fm))
        if row["grp"] == "Residual":
            assert fit.sigma == pytest.approx(row["sdcor"], rel=1e-3)  # sigma(fm)
            continue
        sd, corr = sd_corr[row["grp"]]
        i = terms[row["grp"]].index(row["var1"])
        if row["var2"]:
            j = terms[row["grp"]].index(row["var2"])
            assert corr[i, j] == pytest.approx(row["sdcor"], abs=1e-3)
        else:
            assert sd[i] == pytest.approx(row["sdcor"], rel=1e-3)
    n_rows = sum(1 for r in ref["varcorr"] if r["grp"] != "Residual")
    assert n_rows == sum(q * (q + 1) // 2 for q in (len(t) for t in fit.block_terms))


@pytest.mark.parametrize("name", CASES)
def test_ml_loglik(name: str) -> None:
    ref, fit = _reference()[name], _fit(name, "ML")
    assert fit.method == "ML" and fit.reml_criterion is None
    assert fit.loglik == pytest.approx(ref["ml_loglik"], abs=1e-3)  # logLik(update(fm, REML=FALSE))
    assert fit.deviance == pytest.approx(-2 * ref["ml_loglik"], abs=2e-3)  # deviance(update(fm, REML=FALSE))


@pytest.mark.parametrize("name", CASES)
def test_conditional_modes_and_sds(name: str) -> None:
    ref, fit = _reference()[name], _fit(name, "REML")
    design = _design(name)
    seen = 0
    for row in ref["ranef"]:  # as.data.frame(ranef(fm, condVar=TRUE))
        [k] = [k for k, b in enumerate(design.blocks) if b.factor == row["grpvar"] and row["term"] in b.terms]
        block = design.blocks[k]
        j, t = block.levels.index(row["grp"]), block.terms.index(row["term"])
        assert fit.ranef[k][j, t] == pytest.approx(row["condval"], abs=1e-3)  # condval
        assert fit.condsd[k][j, t] == pytest.approx(row["condsd"], rel=1e-3)  # condsd
        seen += 1
    assert seen == sum(b.n_levels * b.q for b in design.blocks)


@pytest.mark.parametrize("name", CASES)
def test_fitted_and_counts(name: str) -> None:
    fit, design = _fit(name, "REML"), _design(name)
    zb = sum(np.einsum("ij,ij->i", b.Z, m[b.group_idx]) for b, m in zip(design.blocks, fit.ranef))
    np.testing.assert_allclose(fit.fitted, design.X @ fit.beta + zb)  # fitted(fm)
    assert fit.n_params == design.X.shape[1] + fit.theta.size + 1  # attr(logLik(fm), "df")
    assert fit.aic == pytest.approx(-2 * fit.loglik + 2 * fit.n_params)  # AIC(fm)
    assert fit.bic == pytest.approx(-2 * fit.loglik + np.log(fit.nobs) * fit.n_params)  # BIC(fm)
    for cov, (sd, corr) in zip(fit.block_cov, block_sd_corr(fit)):
        np.testing.assert_allclose(cov, np.outer(sd, sd) * corr, atol=1e-12)


# ---------------------------------------------------------------------------
# Singular fits, rank deficiency, bad input
# ---------------------------------------------------------------------------
def _no_group_variance(seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = 200
    x = rng.normal(size=n)
    return pd.DataFrame({"y": 1.0 + x + rng.normal(size=n), "x": x, "g": rng.integers(0, 10, size=n)})


def test_singular_fit_is_flagged_and_warns() -> None:
    design = build_design(parse_formula("y ~ x + (1 | g)"), _no_group_variance())
    with pytest.warns(ConvergenceWarning, match=r"boundary \(singular\) fit"):
        fit = fit_reml(design)
    assert fit.singular
    assert fit.warning == SINGULAR_MESSAGE
    assert fit.theta[0] < 1e-4
    np.testing.assert_allclose(fit.ranef[0], 0.0, atol=1e-3)


def test_regular_fit_does_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        fit = fit_reml(_design("sleep_slopes"))
    assert not fit.singular and fit.warning is None


def test_rank_deficient_fixed_effects() -> None:
    data = _reference()["sleep_slopes"]
    df = reference_data(data["data"])
    df["Days2"] = 2.0 * df["Days"]  # aliased with Days: lme4 drops it
    with pytest.warns(DataWarning, match="rank deficient"):
        design = build_design(parse_formula("Reaction ~ Days + Days2 + (Days | Subject)"), df)
    fit = fit_reml(design)
    assert fit.fixed_names == ("(Intercept)", "Days")
    np.testing.assert_allclose(fit.beta, _fit("sleep_slopes", "REML").beta, rtol=1e-6)
    assert fit.reml_criterion == pytest.approx(_fit("sleep_slopes", "REML").reml_criterion, abs=1e-6)


def test_rank_deficient_matrix_passed_directly_raises() -> None:
    # build_design drops aliased columns; a hand-made rank-deficient X gets a clear error, not NaNs.
    design = _design("sleep_int")
    bad = Design(design.parsed, design.y, np.column_stack([design.X, 2 * design.X[:, 1]]),
                 design.fixed_names + ("Days2",), design.blocks, design.frame)
    with pytest.raises(BayesLMMError, match="rank deficient"):
        fit_reml(bad)


def test_bad_method() -> None:
    with pytest.raises(BayesLMMError, match="REML"):
        fit_reml(_design("dyestuff"), method="bayes")


# ---------------------------------------------------------------------------
# The linear algebra against brute force, for every code path
# ---------------------------------------------------------------------------
@cache
def _dense_reference_for(which: str, theta_key: tuple[float, ...], sigma: float):
    design = _crossed_correlated() if which == "crossed_correlated" else _design(which)
    return _dense_reference(design, np.array(theta_key), sigma)


def _dense_reference(design: Design, theta: np.ndarray, sigma: float, method: str = "REML"):
    """REML criterion (ML deviance), β, modes and conditional sds from dense Z, Λ and V (no tricks)."""
    layout = linalg.ThetaLayout.from_q(tuple(b.q for b in design.blocks))
    zs, lams = [], []
    for k, b in enumerate(design.blocks):
        Zk = np.zeros((design.nobs, b.n_levels * b.q))
        for t in range(b.q):
            Zk[np.arange(design.nobs), b.group_idx * b.q + t] = b.Z[:, t]
        zs.append(Zk)
        lams.append(np.kron(np.eye(b.n_levels), layout.block_factor(theta, k)))
    Z = np.hstack(zs)
    Lam = np.zeros((Z.shape[1], Z.shape[1]))
    off = 0
    for lam in lams:
        Lam[off : off + lam.shape[0], off : off + lam.shape[0]] = lam
        off += lam.shape[0]
    X, y = design.X, design.y
    n, p = X.shape
    V0 = np.eye(n) + Z @ Lam @ Lam.T @ Z.T
    Vi = np.linalg.inv(V0)
    XtViX = X.T @ Vi @ X
    beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
    r = y - X @ beta
    r2 = r @ Vi @ r
    if method == "REML":
        crit = (np.linalg.slogdet(V0)[1] + np.linalg.slogdet(XtViX)[1]
                + (n - p) * (1 + np.log(2 * np.pi * r2 / (n - p))))
    else:
        crit = np.linalg.slogdet(V0)[1] + n * (1 + np.log(2 * np.pi * r2 / n))
    A = Lam.T @ Z.T @ Z @ Lam + np.eye(Z.shape[1])
    b = Lam @ np.linalg.solve(A, Lam.T @ Z.T @ r)
    condsd = np.sqrt(sigma**2 * np.diag(Lam @ np.linalg.solve(A, Lam.T)))
    return crit, beta, b, condsd


@cache
def _crossed_correlated(seed: int = 11) -> Design:
    """Three crossed factors, two of them with correlated random slopes."""
    rng = np.random.default_rng(seed)
    n = 300
    f1, f2, f3 = rng.integers(0, 40, n), rng.integers(0, 12, n), rng.integers(0, 5, n)
    x = rng.normal(size=n)
    y = (x + rng.normal(size=40)[f1] + rng.normal(size=12)[f2] * (1 + x) + rng.normal(size=5)[f3]
         + rng.normal(size=n))
    df = pd.DataFrame({"y": y, "x": x, "f1": f1, "f2": f2, "f3": f3})
    return build_design(parse_formula("y ~ x + (1 + x | f1) + (1 + x | f2) + (1 | f3)"), df)


PATHS = {  # (small-dense limit, dense Schur limit, pair limit) -> mode
    "small": (10**9, 3000, 10**9),
    "pairs": (0, 3000, 10**9),
    "sparse-dense": (0, 3000, 0),
    "sparse-lu": (0, 0, 10**9),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("which", ["penicillin", "pastes", "sleep_slopes", "crossed_correlated"])
def test_linear_algebra_matches_brute_force(monkeypatch, path: str, which: str) -> None:
    small, dense, pairs = PATHS[path]
    monkeypatch.setattr(linalg, "_SMALL_DENSE", small)
    monkeypatch.setattr(linalg, "DENSE_SCHUR_MAX", dense)
    monkeypatch.setattr(linalg, "_MAX_PAIRS", pairs)
    design = _crossed_correlated() if which == "crossed_correlated" else _design(which)
    problem = REMLProblem.from_design(design, "REML", engine="sparse")
    pls = problem.engine.pls
    if pls.rest:
        expected = {"small": "small", "pairs": "pairs"}.get(path, "sparse")
        assert pls.mode == expected and pls.dense_schur == (path != "sparse-lu")
    theta = pls.layout.start() * 0.7 + np.where(np.isfinite(pls.layout.lower), 0.0, 0.3)
    criterion = problem.deviance(theta)
    modes, sds = problem.engine.conditional(sigma=1.7, condvar=True)
    crit, beta, b, condsd = _dense_reference_for(which, tuple(theta), 1.7)
    assert criterion == pytest.approx(crit, abs=1e-8)
    np.testing.assert_allclose(problem.engine.fixef(), beta, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(np.concatenate([m.ravel() for m in modes]), b, atol=1e-8)
    np.testing.assert_allclose(np.concatenate([s.ravel() for s in sds]), condsd, rtol=1e-8)


def test_fit_is_the_same_on_every_path(monkeypatch) -> None:
    design = _crossed_correlated()
    fits = {}
    for path, (small, dense, pairs) in PATHS.items():
        monkeypatch.setattr(linalg, "_SMALL_DENSE", small)
        monkeypatch.setattr(linalg, "DENSE_SCHUR_MAX", dense)
        monkeypatch.setattr(linalg, "_MAX_PAIRS", pairs)
        problem = REMLProblem.from_design(design, "REML", engine="sparse")
        fits[path] = problem.result(problem.optimize())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        base = fit_reml(design)  # the blocked engine
    for fit in fits.values():
        assert fit.reml_criterion == pytest.approx(base.reml_criterion, abs=1e-6)
        np.testing.assert_allclose(fit.beta_se, base.beta_se, rtol=1e-4)


@pytest.mark.parametrize("seed", [1, 2, 5])
def test_not_trapped_on_the_boundary(seed):
    """d crit / d theta is exactly 0 at theta = 0, so a gradient method that steps onto the
    bound would stop there; the fit must still find the interior minimum (as lme4's BOBYQA does)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(50), 5)
    x = rng.normal(size=g.size)
    y = 3 + 0.75 * x + rng.normal(0, 0.5, 50)[g] + rng.normal(0, 1, g.size)
    design = build_design(parse_formula("y ~ x + (1|g)"), pd.DataFrame({"y": y, "x": x, "g": g}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = fit_reml(design)
    problem = REMLProblem.from_design(design, "REML")
    grid = min(problem.deviance(np.array([t])) for t in np.linspace(0, 2, 201))
    assert fit.criterion <= grid + 1e-8
    assert not fit.singular


# ---------------------------------------------------------------------------
# The blocked Cholesky engine (bayeslmm._blockpls) against brute force
# ---------------------------------------------------------------------------
BLOCKED_DESIGNS = ["penicillin", "pastes", "sleep_slopes", "sleep_uncorr", "crossed_correlated", "crossed_reordered"]


@cache
def _any_design(which: str) -> Design:
    if which == "crossed_correlated":
        return _crossed_correlated()
    if which == "crossed_reordered":  # vector-valued terms in the dense block, a scalar term leading
        d = _crossed_correlated()
        return build_design(parse_formula("y ~ x + (1 | f1) + (1 + x | f2) + (0 + x | f3)"), d.frame)
    return _design(which)


def _theta_probe(problem: REMLProblem) -> np.ndarray:
    lower = problem.layout.lower
    return np.where(np.isfinite(lower), 0.6 + 0.1 * np.arange(lower.size), 0.25)


@pytest.mark.parametrize("kernel", ["compiled", "lapack"])
@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("which", BLOCKED_DESIGNS)
def test_blocked_engine_matches_brute_force(monkeypatch, kernel: str, method: str, which: str) -> None:
    import bayeslmm._blockpls as blockpls

    monkeypatch.setattr(blockpls, "SMALL_REST", 10**6 if kernel == "compiled" else 0)
    design = _any_design(which)
    problem = REMLProblem.from_design(design, method, engine="blocked")
    assert problem.engine.small == (kernel == "compiled")
    theta = _theta_probe(problem)
    crit, beta, b, condsd = _dense_reference(design, theta, 1.7, method)
    assert problem.deviance(theta) == pytest.approx(crit, abs=1e-8)
    np.testing.assert_allclose(problem.beta(theta), beta, rtol=1e-8, atol=1e-10)
    modes, sds = problem.engine.conditional(sigma=1.7, condvar=True)
    np.testing.assert_allclose(np.concatenate([m.ravel() for m in modes]), b, atol=1e-8)
    np.testing.assert_allclose(np.concatenate([s.ravel() for s in sds]), condsd, rtol=1e-8)


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("which", BLOCKED_DESIGNS)
def test_analytic_gradient_matches_differences(method: str, which: str) -> None:
    design = _any_design(which)
    problem = REMLProblem.from_design(design, method)
    assert problem.analytic_gradient
    theta = _theta_probe(problem)
    crit, grad = problem.deviance_and_gradient(theta)
    assert crit == pytest.approx(_dense_criterion(design, theta, method), abs=1e-8)
    h = 1e-4
    for i in range(theta.size):  # fourth-order central difference of the brute-force criterion
        e = np.zeros_like(theta)
        e[i] = h
        f = [_dense_criterion(design, theta + k * e, method) for k in (-2, -1, 1, 2)]
        fd = (f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * h)
        assert grad[i] == pytest.approx(fd, abs=1e-5 * max(1.0, abs(fd)))


_PIECES: dict[int, tuple] = {}


def _dense_pieces(design: Design):
    """Dense Z (n × q, lme4's column order) and the cross-products of [Z X y], for the brute-force criterion."""
    if id(design) in _PIECES:
        return _PIECES[id(design)][1:]
    zs = []
    for b in design.blocks:
        Zk = np.zeros((design.nobs, b.n_levels * b.q))
        for t in range(b.q):
            Zk[np.arange(design.nobs), b.group_idx * b.q + t] = b.Z[:, t]
        zs.append(Zk)
    Z = np.hstack(zs)
    G = np.column_stack([Z, design.X, design.y])
    _PIECES[id(design)] = (design, Z.shape[1], G.T @ G)  # the design is kept alive with its id
    return Z.shape[1], G.T @ G


def _dense_criterion(design: Design, theta: np.ndarray, method: str) -> float:
    """The profiled criterion from one dense Cholesky of [ΛZ X y]'[ΛZ X y] + blockdiag(I, 0): brute force in q."""
    layout = linalg.ThetaLayout.from_q(tuple(b.q for b in design.blocks))
    lams = [np.kron(np.eye(b.n_levels), layout.block_factor(theta, k)) for k, b in enumerate(design.blocks)]
    q, GG = _dense_pieces(design)
    P = np.eye(GG.shape[0])
    off = 0
    for lam in lams:
        P[off : off + lam.shape[0], off : off + lam.shape[0]] = lam
        off += lam.shape[0]
    Om = P.T @ GG @ P
    Om[np.arange(q), np.arange(q)] += 1.0
    L = np.linalg.cholesky(Om)
    d = 2 * np.log(np.diag(L))
    n, p = design.X.shape
    r2 = L[-1, -1] ** 2
    if method == "REML":
        return float(d[: q + p].sum() + (n - p) * (1 + np.log(2 * np.pi * r2 / (n - p))))
    return float(d[:q].sum() + n * (1 + np.log(2 * np.pi * r2 / n)))


def _dense_optimum(design: Design, method: str, start: np.ndarray) -> float:
    """The criterion minimised by brute force: Nelder-Mead on the dense computation, from ``start``."""
    from scipy.optimize import minimize

    layout = linalg.ThetaLayout.from_q(tuple(b.q for b in design.blocks))
    bounds = [(0.0, None) if np.isfinite(lo) else (None, None) for lo in layout.lower]
    res = minimize(lambda t: _dense_criterion(design, np.maximum(t, layout.lower), method), start,
                   method="Nelder-Mead", bounds=bounds, options={"xatol": 1e-9, "fatol": 1e-11, "maxfev": 1000})
    return float(res.fun)


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("name", CASES)
def test_new_engine_finds_the_old_optimum(method: str, name: str) -> None:
    """The blocked engine's optimum is the one the sparse engine (the previous path) and brute force find."""
    design = _design(name)
    new = REMLProblem.from_design(design, method, engine="blocked").optimize()
    old = REMLProblem.from_design(design, method, engine="sparse").optimize()
    assert new.criterion == pytest.approx(old.criterion, abs=1e-6)
    np.testing.assert_allclose(new.theta, old.theta, atol=2e-4)
    assert new.criterion <= _dense_optimum(design, method, new.theta) + 1e-7


# ---------------------------------------------------------------------------
# The engine object: refits and the variance-parameter scale
# ---------------------------------------------------------------------------
def test_refit_equals_a_fresh_fit() -> None:
    design = _design("sleep_slopes")
    problem = REMLProblem.from_design(design, "REML")
    first = problem.optimize()
    rng = np.random.default_rng(7)
    y_new = design.y + rng.normal(0, 25, design.nobs)
    again = problem.refit(y_new, start=first.theta)
    fresh = fit_reml(Design(design.parsed, y_new, design.X, design.fixed_names, design.blocks, design.frame))
    assert again.criterion == pytest.approx(fresh.criterion, abs=1e-6)
    np.testing.assert_allclose(again.beta, fresh.beta, rtol=1e-5)
    assert again.sigma == pytest.approx(fresh.sigma, rel=1e-5)
    problem.set_response(design.y)  # back to the data: the original optimum again
    assert problem.deviance(first.theta) == pytest.approx(first.criterion, abs=1e-9)


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("name", ["sleep_slopes", "penicillin", "pastes"])
def test_variance_parameter_scale(method: str, name: str) -> None:
    design = _design(name)
    problem = REMLProblem.from_design(design, method)
    est = problem.optimize()
    result = problem.result(est)
    vp = problem.varpar(est.theta, est.sigma)
    info = problem.varpar_info()
    assert len(vp) == len(info) == est.theta.size + 1 and info[-1].kind == "sigma"
    theta, sigma = problem.theta_sigma(vp)
    np.testing.assert_allclose(theta, est.theta, atol=1e-10)
    assert sigma == est.sigma
    sd_corr = block_sd_corr(result)
    for value, what in zip(vp, info):  # VarCorr(fm) on the sd/cor scale
        if what.kind == "sd":
            terms = design.blocks[what.block].terms
            assert value == pytest.approx(sd_corr[what.block][0][terms.index(what.term1)], rel=1e-10)
        elif what.kind == "cor":
            terms = design.blocks[what.block].terms
            i, j = terms.index(what.term1), terms.index(what.term2)
            assert value == pytest.approx(sd_corr[what.block][1][i, j], abs=1e-10)
    # At σ̂ the σ-fixed deviance equals the profiled criterion, and σ̂ minimises it.
    assert problem.deviance_varpar(vp) == pytest.approx(est.criterion, abs=1e-8)
    for f in (0.98, 1.02):
        assert problem.deviance_sigma(est.theta, f * est.sigma) > est.criterion
    np.testing.assert_allclose(problem.beta(est.theta), result.beta, rtol=1e-10)
    np.testing.assert_allclose(problem.vcov_beta(est.theta), result.vcov_beta, rtol=1e-10)
    np.testing.assert_allclose(problem.vcov_beta(est.theta, 2 * est.sigma), 4 * result.vcov_beta, rtol=1e-10)


def test_engine_object_rejects_bad_input() -> None:
    problem = REMLProblem.from_design(_design("sleep_slopes"), "REML")
    with pytest.raises(BayesLMMError, match="theta has shape"):
        problem.deviance(np.ones(2))
    with pytest.raises(BayesLMMError, match="observations"):
        problem.set_response(np.ones(3))
    with pytest.raises(BayesLMMError, match="engine"):
        REMLProblem.from_design(_design("sleep_slopes"), "REML", engine="dense")


@pytest.mark.parametrize("engine", ["blocked", "sparse"])
def test_engine_object_pickles_for_worker_processes(engine: str) -> None:
    import pickle

    design = _design("penicillin")
    problem = REMLProblem.from_design(design, "REML", engine=engine)
    est = problem.optimize()
    copy = pickle.loads(pickle.dumps(problem))
    y_new = design.y[::-1].copy()
    a, b = copy.refit(y_new, start=est.theta), problem.refit(y_new, start=est.theta)
    assert a.criterion == pytest.approx(b.criterion, abs=1e-10)
    np.testing.assert_allclose(a.theta, b.theta, atol=1e-8)
