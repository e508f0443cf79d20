"""The Laplace (and adaptive Gauss-Hermite) fit of a GLMM, as lme4's ``glmer``.

With spherical group effects ``u ~ N(0, I)``, ``b = Λ_θ u`` and the linear
predictor ``η = offset + X β + Z Λ_θ u``, the engine

1. finds the conditional modes ``û(θ, β)`` by penalized iteratively
   reweighted least squares (PIRLS): Fisher-scoring steps on
   ``-2 log p(y | u) + u'u`` with step halving;
2. evaluates the Laplace deviance, lme4's objective at ``nAGQ = 1``,
   ``-2 log p(y | û) + û'û + log |L|²``, where ``L`` is the Cholesky factor
   of ``Λ'Z'WZΛ + I`` with the Fisher working weights ``W`` at ``û``;
3. minimises it over θ and β jointly (lme4's second optimisation stage),
   from the GLM fit of β and ``θ = 1``;
4. gives ``vcov(β̂)`` as lme4 does by default: twice the β block of the
   inverse of the deviance's Hessian over ``(θ, β)``, by central differences.

For one scalar random-effect term, ``nagq > 1`` replaces the Laplace
deviance by adaptive Gauss-Hermite quadrature over each group's effect,
centred at its mode and scaled by its conditional sd, as lme4's ``nAGQ``.

The cross-products ``Λ'Z'WZΛ`` are formed from a sparse ``Z`` (one nonzero
per row and term); the penalized system is solved densely, its size is the
number of group effects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import optimize, sparse
from scipy.sparse import linalg as splinalg

from ..errors import BayesLMMError
from .families import GLMFamily

__all__ = ["GLMMData", "LaplaceResult", "LaplaceEngine", "fit_laplace", "glm_start"]


@dataclass(frozen=True)
class GLMMData:
    """The numbers a GLMM fit needs, as arrays.

    Attributes
    ----------
    y
        Response: proportion of successes (binomial) or count, ``(n,)``.
    weights
        Prior weights: the trials (binomial), 1 for counts, ``(n,)``.
    offset
        Offset on the link scale, ``(n,)``.
    X
        Fixed-effects matrix ``(n, p)``.
    group_idx, Z, n_levels
        Per random-effect block: level index per row ``(n,)``, the block's
        columns ``(n, q)``, and its number of levels.
    """

    y: np.ndarray
    weights: np.ndarray
    offset: np.ndarray
    X: np.ndarray
    group_idx: tuple[np.ndarray, ...]
    Z: tuple[np.ndarray, ...]
    n_levels: tuple[int, ...]

    @property
    def q(self) -> tuple[int, ...]:
        """Terms per block."""
        return tuple(z.shape[1] for z in self.Z)


@dataclass(frozen=True)
class LaplaceResult:
    """The estimates of a Laplace/AGQ fit.

    ``theta`` are lme4's relative covariance factors (lower-triangular
    elements per block, column by column), ``sd``/``cor`` per block,
    ``ranef`` the conditional modes ``b̂ = Λ û`` per block ``(levels, q)``,
    ``condsd`` their conditional sds, ``objective`` the minimised Laplace
    (or AGQ) deviance ``-2 logLik``, ``deviance`` lme4's ``deviance(fm)``
    (the sum of the deviance residuals at the modes), ``phi`` the negative
    binomial's dispersion (``inf`` otherwise).
    """

    beta: np.ndarray
    theta: np.ndarray
    sd: tuple[np.ndarray, ...]
    cor: tuple[np.ndarray, ...]
    ranef: tuple[np.ndarray, ...]
    condsd: tuple[np.ndarray, ...]
    vcov_beta: np.ndarray
    objective: float
    deviance: float
    eta: np.ndarray
    working_weights: np.ndarray
    phi: float
    nagq: int
    singular: bool
    converged: bool
    message: str

    @property
    def loglik(self) -> float:
        """``logLik(fm)``."""
        return -0.5 * self.objective


def _lower_triangle(q: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of a q x q lower triangle, column by column (lme4's order of θ)."""
    cols, rows = np.triu_indices(q)  # (i <= j) row by row is the lower triangle's (j, i) column by column
    return rows, cols


class _SparseFactor:
    """A sparse LU factor of the symmetric positive-definite ``H = Λ'Z'WZΛ + I``: solves and ``log |H|``."""

    def __init__(self, H: sparse.csc_matrix):
        self.H = H
        self.lu = splinalg.splu(H, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                options={"SymmetricMode": True})

    def solve(self, b: np.ndarray) -> np.ndarray:
        return self.lu.solve(b)

    @property
    def logdet(self) -> float:
        """``log |H|`` (= ``log |L|²`` of its Cholesky factor)."""
        return float(np.sum(np.log(np.abs(self.lu.U.diagonal()))))


class LaplaceEngine:
    """The deviance function of one data set and family (lme4's ``devfun``), with PIRLS inside.

    Parameters
    ----------
    data
        The arrays of the fit.
    family
        Response family and link.
    """

    def __init__(self, data: GLMMData, family: GLMFamily):
        self.data, self.family = data, family
        n = data.y.shape[0]
        rows, cols, vals = [], [], []
        self.offsets = []
        start = 0
        for idx, Z, L in zip(data.group_idx, data.Z, data.n_levels):
            q = Z.shape[1]
            self.offsets.append(start)
            for j in range(q):
                rows.append(np.arange(n))
                cols.append(start + idx * q + j)
                vals.append(Z[:, j])
            start += L * q
        self.n_u = start
        self.Zs = sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, start)
        ) if rows else sparse.csr_matrix((n, 0))
        #: per block, the (row, column) indices of T's lower triangle in θ's order
        self.tri = [_lower_triangle(q) for q in data.q]
        self.n_theta = sum(q * (q + 1) // 2 for q in data.q)
        self.theta_lower = np.concatenate(
            [np.where(r == c, 0.0, -np.inf) for r, c in self.tri]
        ) if self.tri else np.zeros(0)
        self._u = np.zeros(self.n_u)

    # -- Λ -------------------------------------------------------------------
    def factors(self, theta: np.ndarray) -> list[np.ndarray]:
        """Per block the lower-triangular relative factor T (b = (I ⊗ T) u per level)."""
        out, k = [], 0
        for q, (r, c) in zip(self.data.q, self.tri):
            T = np.zeros((q, q))
            m = len(r)
            T[r, c] = theta[k:k + m]
            out.append(T)
            k += m
        return out

    def lam(self, theta: np.ndarray) -> sparse.spmatrix:
        """Λ_θ as a sparse block-diagonal matrix."""
        mats = [sparse.kron(sparse.identity(L), sparse.csr_matrix(T)) for L, T in zip(self.data.n_levels, self.factors(theta))]
        return sparse.block_diag(mats, format="csr") if mats else sparse.csr_matrix((0, 0))

    # -- PIRLS ---------------------------------------------------------------
    def pirls(self, theta: np.ndarray, beta: np.ndarray, phi: float = np.inf, u0: np.ndarray | None = None,
              tol: float = 1e-12, maxit: int = 200):
        """Conditional modes û at (θ, β): returns ``(u, A, eta, W, chol_factor)``."""
        d, fam = self.data, self.family
        A = (self.Zs @ self.lam(theta)).tocsc()
        fixed = d.offset + d.X @ beta
        u = (self._u if u0 is None else u0).copy()
        At = A.T.tocsr()

        def penalized(u: np.ndarray) -> float:
            eta = fixed + A @ u
            return float(np.sum(fam.unit_deviance(d.y, fam.link.linkinv(eta), d.weights, phi)) + u @ u)

        pdev = penalized(u)
        for _ in range(maxit):
            eta = fixed + A @ u
            mu = fam.link.linkinv(eta)
            me = fam.link.mu_eta(eta)
            var = fam.variance(mu, phi)
            W = d.weights * me * me / var
            r = d.weights * (d.y - mu) * me / var
            g = At @ r - u
            delta = self._factor(At, A, W).solve(g)
            decrement = float(g @ delta)
            step = 1.0
            for _ in range(30):
                cand = u + step * delta
                pnew = penalized(cand)
                if pnew <= pdev + 1e-10 * (abs(pdev) + 1.0):
                    break
                step /= 2
            u, pdev = cand, pnew
            if decrement < tol:
                break
        eta = fixed + A @ u
        W = fam.working_weights(eta, d.weights, phi)
        factor = self._factor(At, A, W)
        self._u = u
        return u, A, eta, W, factor

    def _factor(self, At: sparse.spmatrix, A: sparse.spmatrix, W: np.ndarray) -> _SparseFactor:
        H = (At @ A.multiply(W[:, None]).tocsc()) + sparse.identity(self.n_u, format="csc")
        return _SparseFactor(sparse.csc_matrix(H))

    # -- objectives ------------------------------------------------------------
    def laplace(self, theta: np.ndarray, beta: np.ndarray, phi: float = np.inf) -> float:
        """The Laplace deviance ``-2 log p(y | û) + û'û + log |L|²`` at (θ, β)."""
        d, fam = self.data, self.family
        u, _, eta, _, cf = self.pirls(theta, beta, phi)
        ll = np.sum(fam.logpdf(d.y, fam.link.linkinv(eta), d.weights, phi))
        return float(-2.0 * ll + u @ u + cf.logdet)

    def agq(self, theta: np.ndarray, beta: np.ndarray, nagq: int, phi: float = np.inf) -> float:
        """Adaptive Gauss-Hermite deviance with ``nagq`` nodes (one scalar random-effect term)."""
        d, fam = self.data, self.family
        u, _, eta, _, cf = self.pirls(theta, beta, phi)
        idx, L = d.group_idx[0], d.n_levels[0]
        zcol = d.Z[0][:, 0]
        s = 1.0 / np.sqrt(cf.H.diagonal())  # conditional sd of each spherical mode (H is diagonal)
        z, w = np.polynomial.hermite_e.hermegauss(nagq)
        w = w / np.sqrt(2 * np.pi)
        base = eta - theta[0] * zcol * u[idx]
        terms = np.empty((nagq, L))
        for k in range(nagq):
            uk = u + s * z[k]
            ll = fam.logpdf(d.y, fam.link.linkinv(base + theta[0] * zcol * uk[idx]), d.weights, phi)
            terms[k] = np.log(w[k]) + np.bincount(idx, ll, minlength=L) - 0.5 * uk**2 + 0.5 * z[k] ** 2
        mx = terms.max(axis=0)
        log_int = np.log(s) + mx + np.log(np.exp(terms - mx).sum(axis=0))
        return float(-2.0 * log_int.sum())

    def objective(self, pars: np.ndarray, nagq: int = 1) -> float:
        """The deviance at ``pars`` = (θ, β[, log φ])."""
        theta, beta, phi = self.split(pars)
        if nagq > 1:
            return self.agq(theta, beta, nagq, phi)
        return self.laplace(theta, beta, phi)

    def split(self, pars: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(θ, β, φ)`` from the optimiser's vector."""
        t, p = self.n_theta, self.data.X.shape[1]
        phi = float(np.exp(pars[t + p])) if self.family.has_dispersion else np.inf
        return pars[:t], pars[t:t + p], phi


def glm_start(data: GLMMData, family: GLMFamily, phi: float = np.inf, maxit: int = 100) -> np.ndarray:
    """β of the GLM without group effects (IRLS), the optimiser's start."""
    X, y, w = data.X, data.y, data.weights
    mu = (w * y + 0.5) / (w + 1.0) if family.is_binomial else y + 0.1
    eta = family.link.linkfun(mu)
    beta = np.zeros(X.shape[1])
    for _ in range(maxit):
        me = family.link.mu_eta(eta)
        var = family.variance(family.link.linkinv(eta), phi)
        W = w * me * me / var
        z = eta - data.offset + (y - family.link.linkinv(eta)) / me
        new = np.linalg.lstsq(X * np.sqrt(W)[:, None], z * np.sqrt(W), rcond=None)[0]
        if np.max(np.abs(new - beta)) < 1e-10:
            beta = new
            break
        beta = new
        eta = data.offset + X @ beta
    return beta


def _gradient(f, x: np.ndarray, lower: np.ndarray, h: float = 1e-5) -> np.ndarray:
    g = np.empty_like(x)
    for i in range(x.size):
        step = h * max(1.0, abs(x[i]))
        up, dn = x.copy(), x.copy()
        up[i] += step
        if x[i] - step < lower[i]:  # one-sided at a bound
            g[i] = (f(up) - f(x)) / step
            continue
        dn[i] -= step
        g[i] = (f(up) - f(dn)) / (2 * step)
    return g


def _hessian(f, x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    k = x.size
    H = np.empty((k, k))
    f0 = f(x)
    steps = h * np.maximum(1.0, np.abs(x))
    for i in range(k):
        ei = np.zeros(k)
        ei[i] = steps[i]
        H[i, i] = (f(x + ei) - 2 * f0 + f(x - ei)) / steps[i] ** 2
        for j in range(i):
            ej = np.zeros(k)
            ej[j] = steps[j]
            H[i, j] = H[j, i] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (4 * steps[i] * steps[j])
    return H


def fit_laplace(data: GLMMData, family: GLMFamily, nagq: int = 1) -> LaplaceResult:
    """Fit a GLMM by the Laplace approximation (``nagq=1``) or adaptive Gauss-Hermite quadrature.

    Parameters
    ----------
    data
        The arrays of the fit.
    family
        Response family and link.
    nagq
        Quadrature nodes per group effect; above 1 only for one scalar random-effect term.

    Returns
    -------
    LaplaceResult

    Raises
    ------
    BayesLMMError
        For ``nagq > 1`` with more than one random-effect term or a vector term, or ``nagq < 1``.
    """
    if not isinstance(nagq, (int, np.integer)) or nagq < 1:
        raise BayesLMMError(f"nAGQ must be a positive integer, got {nagq!r}.")
    if nagq > 1 and (len(data.Z) != 1 or data.Z[0].shape[1] != 1):
        raise BayesLMMError(
            f"nAGQ = {nagq} (adaptive Gauss-Hermite quadrature) needs exactly one scalar random-effect term, "
            f"such as (1 | g); this model has {len(data.Z)} term(s) with {list(data.q)} columns. Use nAGQ=1 (Laplace)."
        )
    engine = LaplaceEngine(data, family)
    t, p = engine.n_theta, data.X.shape[1]
    beta0 = glm_start(data, family)
    theta0 = np.concatenate([np.where(r == c, 1.0, 0.0) for r, c in engine.tri]) if t else np.zeros(0)
    extra = [0.0] if family.has_dispersion else []
    x0 = np.concatenate([theta0, beta0, extra])
    lower = np.concatenate([engine.theta_lower, np.full(p + len(extra), -np.inf)])
    bounds = [(lo if np.isfinite(lo) else None, None) for lo in lower]

    def f(x: np.ndarray) -> float:
        return engine.objective(np.maximum(x, lower), nagq)

    def fg(x: np.ndarray) -> tuple[float, np.ndarray]:
        return f(x), _gradient(f, x, lower)

    res = optimize.minimize(fg, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": 1000, "ftol": 1e-15, "gtol": 1e-8})
    x = np.maximum(res.x, lower)
    # polish with Nelder-Mead-free Newton steps on the interior coordinates (the gradient is by differences)
    free = ~(np.isfinite(lower) & (x <= lower + 1e-8))
    for _ in range(5):
        g = _gradient(f, x, lower)[free]
        if np.max(np.abs(g)) < 1e-7:
            break
        Hf = _hessian(lambda z, x=x: f(_put(x, free, z)), x[free])
        try:
            step = np.linalg.solve(Hf, g)
        except np.linalg.LinAlgError:
            break
        cand = _put(x, free, x[free] - step)
        cand = np.maximum(cand, lower)
        if f(cand) < f(x):
            x = cand
        else:
            break
    theta, beta, phi = engine.split(x)
    objective = f(x)
    H = _hessian(f, x)
    singular = bool(np.any(np.isfinite(engine.theta_lower) & (theta < 1e-4)))
    try:
        inv = np.linalg.inv(H)
        vcov = 2.0 * inv[t:t + p, t:t + p]
        vcov = 0.5 * (vcov + vcov.T)
        if np.any(np.diag(vcov) <= 0):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        Hb = H[t:t + p, t:t + p]
        vcov = 2.0 * np.linalg.pinv(Hb)
    u, A, eta, W, cf = engine.pirls(theta, beta, phi)
    fam = family
    dev = float(np.sum(fam.unit_deviance(data.y, fam.link.linkinv(eta), data.weights, phi)))
    # conditional sds of b = Λu: sqrt(diag(Λ H⁻¹ Λ'))
    Lam = engine.lam(theta).toarray()
    Hinv = cf.solve(np.eye(engine.n_u))
    cond_var = np.einsum("ij,jk,ik->i", Lam, Hinv, Lam)
    b = Lam @ u
    ranef, condsd, sds, cors = [], [], [], []
    for off, L, q, T in zip(engine.offsets, data.n_levels, data.q, engine.factors(theta)):
        ranef.append(b[off:off + L * q].reshape(L, q))
        condsd.append(np.sqrt(np.maximum(cond_var[off:off + L * q], 0.0)).reshape(L, q))
        S = T @ T.T
        sd = np.sqrt(np.diag(S))
        with np.errstate(invalid="ignore", divide="ignore"):
            C = S / np.outer(sd, sd)
        C[~np.isfinite(C)] = 0.0
        np.fill_diagonal(C, 1.0)
        sds.append(sd)
        cors.append(C)
    return LaplaceResult(
        beta=beta, theta=theta, sd=tuple(sds), cor=tuple(cors), ranef=tuple(ranef), condsd=tuple(condsd),
        vcov_beta=vcov, objective=objective, deviance=dev, eta=eta, working_weights=W, phi=phi, nagq=int(nagq),
        singular=singular, converged=bool(res.success), message=str(res.message),
    )


def _put(x: np.ndarray, mask: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[mask] = values
    return out
