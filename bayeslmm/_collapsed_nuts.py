"""NUTS on the collapsed model, with the log posterior compiled by numba instead of PyTensor.

Compiling any PyTensor graph with an LKJ prior took 40-100 s cold here, in
both the C and the numba backend, and the unrolled collapsed likelihood
4-9 minutes. So the default collapsed fit compiles no PyTensor graph: the
log posterior and its gradient are one numba function
(:func:`bayeslmm._collapsed_kernel.log_posterior`, a few seconds to compile
once, cached on disk), handed to PyMC's own NUTS through its
``logp_dlogp_func`` hook. PyMC runs a one-variable stand-in model (a flat
vector over the unconstrained coordinates) and provides the sampler, its
tuning and the ``DataTree``; the chains run in forked processes
(:func:`bayeslmm.sampling.run_chains`); afterwards the draws are mapped
back to the named variables of the full model. With one grouping factor and
Normal priors on the fixed effects, those are integrated out as well
(:class:`bayeslmm._beta_marginal.BetaMarginalPosterior`) and drawn from their exact conditional.

The coordinates are PyMC's: the intercept at the predictor means and the
slopes as they are; ``log`` of σ and of every sd (the interval map for a
``Uniform`` prior); and, for a correlated block, its canonical partial
correlations z = tanh(x) (Lewandowski, Kurowicka & Joe 2009). Under LKJ(η)
the partial correlation in column j (0-based) is an independent
Beta(b_j, b_j) on (−1, 1) with b_j = η + (q − 2 − j)/2, so its log density in
x is b_j·log(1 − z²) up to a constant: the same prior on the correlation
matrix as PyMC's ``LKJCholeskyCov``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any
from collections.abc import Callable, Mapping

import numpy as np
import pymc as pm
import xarray as xr
from pymc.step_methods.hmc.quadpotential import QuadPotentialDiagAdapt

from . import naming
from ._beta_marginal import BetaMarginalPosterior
from ._collapsed_kernel import log_posterior
from ._moments import moment_estimates
from ._npdensity import LOG, PriorSpec, prior_spec, spec_arrays
from .collapsed import SufficientStats, add_group_effects, sufficient_stats
from .design import Design
from .inits import reml_initvals
from .model import model_coords
from .priors import Prior, Priors, _col_sd
from .reml import REMLResult
from .sampling import SamplerSettings, chain_processes, run_nuts, sample_from_starts

__all__ = ["CollapsedPosterior", "sample_collapsed", "sample_collapsed_model"]

#: PyMC's jitter: uniform on (−1, 1) in every unconstrained coordinate.
_JITTER = 1.0
#: Floor on starting sds, relative to the default prior scale sd(y)/sd(z).
_SD_FLOOR = 0.05


def start_names(design: Design) -> list[str]:
    """The variable names :meth:`CollapsedPosterior.start` reads from its ``initvals``."""
    names = [naming.FIXED, naming.SIGMA]
    for b in design.blocks:
        names += [naming.sd(b.label), naming.chol(b.label)] if b.q > 1 else [naming.sd(b.label)]
    return names


def _corr_chol(z: np.ndarray, q: int) -> np.ndarray:
    """Cholesky factors of correlation matrices from partial correlations ``(..., q(q-1)/2)``."""
    L = np.zeros(z.shape[:-1] + (q, q))
    L[..., 0, 0] = 1.0
    k = 0
    for i in range(1, q):
        rem = np.ones(z.shape[:-1])
        for j in range(i):
            L[..., i, j] = z[..., k] * np.sqrt(rem)
            rem = rem - L[..., i, j] ** 2
            k += 1
        L[..., i, i] = np.sqrt(np.maximum(rem, 0.0))
    return L


def _partial_correlations(C: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_corr_chol` for one factor."""
    z = []
    for i in range(1, C.shape[0]):
        rem = 1.0
        for j in range(i):
            z.append(C[i, j] / math.sqrt(max(rem, 1e-300)))
            rem -= C[i, j] ** 2
    return np.array(z)


class CollapsedPosterior:
    """The collapsed model's log posterior over the unconstrained vector (see the module docstring).

    The vector holds the p fixed parameters (the intercept at the predictor
    means first when there are slopes), σ's coordinate, then per block its
    sds' coordinates and its partial correlations' atanh. Use :meth:`build`.
    """

    def __init__(self, design: Design, stats: SufficientStats, specs: list[PriorSpec], lkj_eta: list[float]) -> None:
        self.design = design
        self.stats = stats
        blocks = design.blocks
        p = len(design.fixed_names)
        idx = design.intercept_index
        self.p = p
        self.centered = idx is not None and p > 1
        self.idx = idx if idx is not None else 0
        self.slope_index = np.array([j for j in range(p) if j != idx] if self.centered else [], dtype=np.int64)
        self.xbar = design.X[:, self.slope_index].mean(axis=0) if self.centered else np.zeros(0)
        self.blk_side = np.zeros(len(blocks), dtype=np.int64)
        self.blk_off = np.zeros(len(blocks), dtype=np.int64)
        for side, keys in ((0, stats.structure.outer), (1, stats.structure.inner)):
            off = 0
            for k in keys:
                self.blk_side[k], self.blk_off[k] = side, off
                off += blocks[k].q
        self.q_outer = int(sum(blocks[k].q for k in stats.structure.outer))
        self.q_inner = int(sum(blocks[k].q for k in stats.structure.inner))
        self.blk_q = np.array([b.q for b in blocks], dtype=np.int64)
        sizes = self.blk_q + self.blk_q * (self.blk_q - 1) // 2
        self.blk_sd = (p + 1 + np.concatenate([[0], np.cumsum(sizes)[:-1]])).astype(np.int64)
        self.blk_cpc = self.blk_sd + self.blk_q
        self.size = int(p + 1 + sizes.sum())
        flat = prior_spec(Prior("Flat"))
        self.specs: list[PriorSpec] = [flat] * self.size
        self.specs[: p + 1] = specs[: p + 1]
        sd_specs = iter(specs[p + 1 :])
        self.lkj_b = np.zeros(self.size)
        for k, b in enumerate(blocks):
            for t in range(b.q):
                self.specs[self.blk_sd[k] + t] = next(sd_specs)
            pos = self.blk_cpc[k]
            for i in range(1, b.q):
                for j in range(i):
                    self.lkj_b[pos] = lkj_eta[k] + (b.q - 2 - j) / 2.0
                    pos += 1
        self.codes, self.transforms, self.prm = spec_arrays(self.specs)
        st = stats
        self._args = (
            self.p, self.centered, self.idx, self.slope_index, self.xbar, self.codes, self.transforms, self.prm,
            self.blk_q, self.blk_side, self.blk_off, self.blk_sd, self.blk_cpc, self.lkj_b, self.q_outer, self.q_inner,
            st.beta0, st.oo, st.oX, st.oe, st.ii, st.io, st.iX, st.ie, st.structure.width, st.ee, st.Xe, st.XX, float(st.n),
        )

    @classmethod
    def build(cls, design: Design, priors: Priors) -> CollapsedPosterior | None:
        """The posterior of a collapsible design, or None if some prior has no spec in :mod:`bayeslmm._npdensity`."""
        names = list(design.fixed_names)
        idx = design.intercept_index
        order = [idx] + [j for j in range(len(names)) if j != idx] if idx is not None and len(names) > 1 else list(range(len(names)))
        chosen = [priors.fixed(names[j]) for j in order] + [priors.sigma()]
        chosen += [priors.sd(b.label, t) for b in design.blocks for t in b.terms]
        specs = [prior_spec(pr) for pr in chosen]
        if any(s is None for s in specs):
            return None
        eta = [float(priors.cor(b.label).kwargs.get("eta", 1.0)) if b.q > 1 else 1.0 for b in design.blocks]
        return cls(design, sufficient_stats(design), specs, eta)  # type: ignore[arg-type]

    def logp_dlogp(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """Log posterior density (up to a constant) and its gradient at one unconstrained point."""
        return log_posterior(theta, *self._args)

    def _beta(self, fixed_values: np.ndarray) -> np.ndarray:
        """lme4 β from the sampled fixed parameters (..., p)."""
        if not self.centered:
            return fixed_values
        beta = np.empty_like(fixed_values)
        beta[..., self.slope_index] = fixed_values[..., 1:]
        beta[..., self.idx] = fixed_values[..., 0] - fixed_values[..., 1:] @ self.xbar
        return beta

    def _values(self, theta: np.ndarray, start: int, count: int) -> np.ndarray:
        return np.column_stack([self.specs[start + i].backward_array(theta[:, start + i]) for i in range(count)]) if count else theta[:, :0]

    def named_draws(self, theta: np.ndarray) -> dict[str, np.ndarray]:
        """The full model's named variables from unconstrained draws ``(S, size)``."""
        fixed_values = self._values(theta, 0, self.p)
        out: dict[str, np.ndarray] = {}
        if self.centered:
            out[naming.INTERCEPT_CENTERED] = fixed_values[:, 0]
            out[naming.SLOPES] = fixed_values[:, 1:]
        if self.p:
            out[naming.FIXED] = self._beta(fixed_values)
        out[naming.SIGMA] = self._values(theta, self.p, 1)[:, 0]
        for k, b in enumerate(self.design.blocks):
            out[naming.sd(b.label)] = self._values(theta, int(self.blk_sd[k]), b.q)
            if b.q > 1:
                cpc = theta[:, self.blk_cpc[k] : self.blk_cpc[k] + b.q * (b.q - 1) // 2]
                C = _corr_chol(np.tanh(cpc), b.q)
                out[naming.cor(b.label)] = C @ np.swapaxes(C, -1, -2)
        return out

    def start(self, initvals: Mapping[str, Any] | None = None) -> np.ndarray:
        """A starting point from ``initvals`` (named as in the PyTensor collapsed model) or the moment estimates."""
        design, init = self.design, dict(initvals or {})
        mom = moment_estimates(design)
        sy = float(np.std(design.y, ddof=1))
        beta = mom.beta
        if naming.FIXED in init:
            beta = np.asarray(init[naming.FIXED], dtype=float)
        elif naming.INTERCEPT_CENTERED in init and naming.SLOPES in init:
            beta = self._beta(np.concatenate([[float(init[naming.INTERCEPT_CENTERED])], np.asarray(init[naming.SLOPES], dtype=float)]))
        values = np.concatenate([[beta[self.idx] + beta[self.slope_index] @ self.xbar], beta[self.slope_index]]) if self.centered else beta
        wanted = list(values) + [float(init.get(naming.SIGMA, max(mom.sigma, _SD_FLOOR * sy)))]
        theta = np.zeros(self.size)
        for k, b in enumerate(design.blocks):
            sd = np.maximum(mom.block_sd[k], [_SD_FLOOR * sy / _col_sd(b.Z[:, t]) for t in range(b.q)])
            z = np.zeros(b.q * (b.q - 1) // 2)
            if naming.chol(b.label) in init:
                L = np.zeros((b.q, b.q))
                L[np.tril_indices(b.q)] = np.asarray(init[naming.chol(b.label)], dtype=float)
                sd = np.sqrt(np.sum(L**2, axis=1))
                z = _partial_correlations(L / sd[:, None])
            elif naming.sd(b.label) in init:
                sd = np.atleast_1d(np.asarray(init[naming.sd(b.label)], dtype=float))
            for t in range(b.q):
                theta[self.blk_sd[k] + t] = self._coordinate(int(self.blk_sd[k]) + t, float(sd[t]))
            theta[self.blk_cpc[k] : self.blk_cpc[k] + len(z)] = np.arctanh(np.clip(z, -0.95, 0.95))
        for i, v in enumerate(wanted):
            theta[i] = self._coordinate(i, float(v))
        return theta

    def _coordinate(self, position: int, value: float) -> float:
        """Unconstrained coordinate of a starting value, moved inside the support if needed."""
        spec = self.specs[position]
        if not spec.contains(value):
            value = 1e-8 if spec.transform == LOG else 0.5 * (spec.lower + spec.upper)
        return spec.forward(value)


def laplace_sd(value_grad, x: np.ndarray, rel_step: float = 1e-4) -> np.ndarray:
    """Posterior sds of the Laplace approximation at ``x``: sqrt(diag((-H)⁻¹)).

    The Hessian H is taken by central differences of the gradient (2·d
    gradient calls). Where -H is not positive definite (``x`` far from a
    mode), ones are returned, PyMC's own default scale.
    """
    d = x.size
    H = np.empty((d, d))
    for j in range(d):
        h = rel_step * max(1.0, abs(x[j]))
        e = np.zeros(d)
        e[j] = h
        H[:, j] = (value_grad(x + e)[1] - value_grad(x - e)[1]) / (2 * h)
    H = 0.5 * (H + H.T)
    try:
        cov = np.linalg.inv(np.linalg.cholesky(-H))
        sd = np.sqrt(np.einsum("ij,ij->j", cov, cov))
    except np.linalg.LinAlgError:
        return np.ones(d)
    return sd if np.all(np.isfinite(sd)) and np.all(sd > 0) else np.ones(d)


def _chain_starts(
    posterior: CollapsedPosterior, initvals: Mapping[str, Any] | None, chains: int, rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray]:
    """Starting points per chain, and the Laplace sds at the start (the initial mass-matrix scales).

    The chains start at ``initvals`` (or the moment estimates) plus a uniform
    jitter of up to two Laplace sds per coordinate, capped at PyMC's ±1:
    over-dispersed for R-hat, but on the right scale for every coordinate.
    Compiles the numba kernel (first call) before any sampler forks or threads.
    """
    base = posterior.start(initvals)
    posterior.logp_dlogp(base)
    scale = laplace_sd(posterior.logp_dlogp, base)
    width = np.minimum(2 * scale, _JITTER)
    return [base + rng.uniform(-1.0, 1.0, base.shape) * width for _ in range(chains)], scale


class _ValueGrad:
    """What PyMC's NUTS expects of its compiled logp/dlogp function, backed by numba.

    It remembers the points of recent trajectories: at every draw PyMC's NUTS
    evaluates the log posterior again at the point it has just accepted,
    which was already evaluated on the trajectory that reached it (on the
    1M-row data set that repeat was a fifth of all evaluations).
    """

    _raveled_inputs = True
    dtype = "float64"
    trust_input = True
    #: Points remembered; more than one trajectory of NUTS's default maximum depth (2¹⁰ steps).
    CACHE_SIZE = 1100

    def __init__(self, posterior: CollapsedPosterior | BetaMarginalPosterior) -> None:
        self._posterior = posterior
        self._extra_vars_shared: dict[str, Any] = {}
        self._cache: OrderedDict[bytes, tuple[float, np.ndarray]] = OrderedDict()

    def _value_grad(self, q: np.ndarray) -> tuple[float, np.ndarray]:
        key = np.ascontiguousarray(q, dtype=np.float64).tobytes()
        hit = self._cache.get(key)
        if hit is None:
            hit = self._posterior.logp_dlogp(q)
            self._cache[key] = hit
            if len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit[0], hit[1].copy()

    def _pytensor_function(self, q: np.ndarray) -> tuple[float, np.ndarray]:
        return self._value_grad(q)

    def __call__(self, q: np.ndarray, extra_vars: Any = None) -> tuple[float, np.ndarray]:
        return self._value_grad(q)

    def set_extra_values(self, extra_vars: Any) -> None:
        """There are no extra variables."""

    def get_extra_values(self) -> dict[str, Any]:
        """There are no extra variables."""
        return {}


def sample_collapsed(
    posterior: CollapsedPosterior,
    settings: SamplerSettings,
    initvals: Mapping[str, Any] | None = None,
):
    """Run PyMC's NUTS on the collapsed posterior; return a ``DataTree`` with the full model's variables.

    Chains start at ``initvals`` (or the moment estimates) plus a jitter of up
    to two Laplace-approximation sds (:func:`laplace_sd`, which also gives the
    initial mass matrix), and run in parallel on every available CPU unless ``settings.cores`` says
    otherwise. Where :class:`BetaMarginalPosterior` applies, NUTS samples σ and the covariances only and the
    fixed effects are drawn from their exact conditional afterwards; the
    group effects are then drawn exactly by
    :func:`bayeslmm.collapsed.add_group_effects`. The same seed gives the same draws.
    """
    settings.validate()
    seeds = np.random.SeedSequence(settings.random_seed).spawn(3)
    rng = np.random.default_rng(seeds[0])
    target = _target(posterior)
    starts, scale = _chain_starts(target, initvals, settings.chains, rng)
    with pm.Model() as proxy:
        theta = pm.Flat(naming.UNCONSTRAINED, shape=target.size)
    value = proxy.rvs_to_values[theta]
    step = pm.NUTS(
        [value],
        model=proxy,
        logp_dlogp_func=_ValueGrad(target),
        potential=QuadPotentialDiagAdapt(target.size, np.mean(starts, axis=0), scale**2, 10, rng=rng),
        target_accept=settings.target_accept,
        initial_point={value.name: starts[0]},
        rng=np.random.default_rng(seeds[1]),
    )
    chain_seeds = [int(np.random.default_rng(c).integers(2**31)) for c in seeds[1].spawn(settings.chains)]
    idata = sample_from_starts(
        proxy, step, [{naming.UNCONSTRAINED: s} for s in starts], chain_seeds, settings, "the collapsed posterior", target.size
    )
    _rename_posterior(idata, posterior, _draws(idata, target, np.random.default_rng(seeds[2])))
    add_group_effects(posterior.design, idata, settings.random_seed, posterior.stats)
    return idata


def sample_collapsed_nutpie(posterior: CollapsedPosterior, settings: SamplerSettings, initvals: Mapping[str, Any] | None = None):
    """Run nutpie's NUTS on the numba log posterior; return a ``DataTree`` like :func:`sample_collapsed`'s.

    nutpie (the ``fast`` extra) calls :meth:`CollapsedPosterior.logp_dlogp`
    through its Python-function interface (``nutpie.compiled_pyfunc.from_pyfunc``),
    so nothing is compiled but the numba kernel, and its Rust sampler's
    per-step overhead is far below PyMC's Python NUTS. Chains start at the
    same jittered points as with PyMC; the group effects are drawn exactly
    afterwards.
    """
    import nutpie
    from nutpie.compiled_pyfunc import from_pyfunc

    settings.validate()
    seeds = np.random.SeedSequence(settings.random_seed).spawn(3)
    rng = np.random.default_rng(seeds[0])
    target = _target(posterior)
    starts, _ = _chain_starts(target, initvals, settings.chains, rng)
    value_grad = target.logp_dlogp

    def make_logp():
        def logp(x: np.ndarray, **_: Any) -> tuple[float, np.ndarray]:
            return value_grad(np.asarray(x, dtype=np.float64))

        return logp

    def make_expand(_seed1: int, _seed2: int, _chain: int):
        def expand(x: np.ndarray, **_: Any) -> dict[str, np.ndarray]:
            return {naming.UNCONSTRAINED: np.array(x, dtype=np.float64)}

        return expand

    def initial_point(seed: int) -> np.ndarray:
        return starts[int(seed) % len(starts)] if seed is not None else starts[0]

    compiled = from_pyfunc(
        target.size, make_logp, make_expand, [np.dtype("float64")], [(target.size,)], [naming.UNCONSTRAINED],
        make_initial_point_fn=initial_point,
    )
    idata = nutpie.sample(
        compiled,
        draws=int(settings.draws),
        tune=int(settings.tune),
        chains=int(settings.chains),
        cores=chain_processes(settings),
        seed=int(np.random.default_rng(seeds[1]).integers(2**31)),
        save_warmup=False,
        progress_bar=settings.progressbar,
        target_accept=settings.target_accept,
    )
    _rename_posterior(idata, posterior, _draws(idata, target, np.random.default_rng(seeds[2])))
    add_group_effects(posterior.design, idata, settings.random_seed, posterior.stats)
    return idata


def sample_collapsed_model(
    design: Design,
    priors: Priors,
    model_factory: Callable[[], pm.Model],
    settings: SamplerSettings,
    start: REMLResult | None = None,
):
    """Sample the collapsed model of ``design``, by the fastest route available.

    With priors that :mod:`bayeslmm._npdensity` implements (every default),
    the numba log posterior, under PyMC's NUTS (:func:`sample_collapsed`) or
    nutpie's (:func:`sample_collapsed_nutpie`), and no PyTensor model is
    built; otherwise, and for numpyro, the model from ``model_factory``
    (:func:`bayeslmm.collapsed.build_collapsed_model`) through
    :func:`bayeslmm.sampling.run_nuts`, then the exact group-effect draws.
    ``start``, the REML fit of the design, gives the starting values.
    """
    posterior = CollapsedPosterior.build(design, priors) if settings.sampler in ("pymc", "nutpie") else None
    if posterior is not None:
        initvals = reml_initvals(start_names(design), design, start) if start is not None else None
        run = sample_collapsed if settings.sampler == "pymc" else sample_collapsed_nutpie
        idata = run(posterior, settings, initvals)
    else:
        model = model_factory()
        idata = run_nuts(model, settings, initvals=reml_initvals(model, design, start) if start is not None else None)
        add_group_effects(design, idata, settings.random_seed)
    _add_observed(design, idata)
    return idata


def _add_observed(design: Design, idata: Any) -> None:
    """The ``observed_data`` group the full model's fit has (``y`` over ``obs``), for posterior predictive checks."""
    obs = xr.Dataset({naming.LIKELIHOOD: ((naming.OBS_DIM,), design.y)}, coords={naming.OBS_DIM: np.arange(design.nobs)})
    idata["observed_data"] = xr.DataTree(obs)


def _target(posterior: CollapsedPosterior) -> CollapsedPosterior | BetaMarginalPosterior:
    """What NUTS samples: the posterior with the fixed effects integrated out where that is exact, else ``posterior``."""
    marginal = BetaMarginalPosterior.build(posterior)
    return marginal if marginal is not None else posterior


def _draws(idata: Any, target: CollapsedPosterior | BetaMarginalPosterior, rng: np.random.Generator) -> np.ndarray:
    """The sampled vectors (chain-major, draws × the collapsed posterior's size), fixed effects drawn in if integrated."""
    old = idata.posterior
    theta = np.asarray(old[naming.UNCONSTRAINED].values, dtype=float).reshape(int(old.sizes["chain"]) * int(old.sizes["draw"]), -1)
    return target.complete(theta, rng) if isinstance(target, BetaMarginalPosterior) else theta


def _rename_posterior(idata: Any, posterior: CollapsedPosterior, theta: np.ndarray) -> None:
    """Replace the stand-in vector in ``idata.posterior`` by the full model's named variables (from ``theta``)."""
    old = idata.posterior
    chains, ndraw = int(old.sizes["chain"]), int(old.sizes["draw"])
    coords = model_coords(posterior.design)
    dims: dict[str, tuple[str, ...]] = {
        naming.INTERCEPT_CENTERED: (),
        naming.SLOPES: (naming.SLOPE_DIM,),
        naming.FIXED: (naming.FIXED_DIM,),
        naming.SIGMA: (),
    }
    for b in posterior.design.blocks:
        dims[naming.sd(b.label)] = (naming.term_dim(b.label),)
        dims[naming.cor(b.label)] = (naming.term_dim(b.label), naming.term_dim2(b.label))
    data = {}
    for name, arr in posterior.named_draws(theta).items():
        d = dims[name]
        data[name] = xr.DataArray(
            arr.reshape((chains, ndraw) + arr.shape[1:]),
            dims=("chain", "draw") + d,
            coords={"chain": old["chain"].values, "draw": old["draw"].values, **{k: coords[k] for k in d}},
        )
    idata["posterior"] = xr.DataTree(xr.Dataset(data, attrs=dict(old.attrs)))
