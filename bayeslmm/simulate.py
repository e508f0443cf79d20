"""Simulate a response from a mixed model with known parameters.

``simulate(formula, data, params, seed)`` evaluates the formula's design on
``data`` (the response column need not exist) and draws

    γ_k ~ MVN(0, T_k) per level of block k,   y = Xβ + Σ_k (Z_k γ_k[group]).sum(1) + N(0, σ²).

The format of ``params`` is documented on :func:`simulate` (``help(bayeslmm.simulate)``).
"""

from __future__ import annotations

from typing import Any
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .design import BlockDesign, Design, build_design, default_env
from .errors import BayesLMMError, ParameterError
from .formula import parse_formula

__all__ = ["ParameterError", "simulate", "check_params"]



def _expected(design: Design) -> str:
    blocks = ", ".join(f"{b.label!r} (terms {list(b.terms)})" for b in design.blocks)
    return f"'beta' (terms {list(design.fixed_names)}), 'sigma', and one entry per block: {blocks}"


def _beta(design: Design, value: Any) -> np.ndarray:
    names = list(design.fixed_names)
    if isinstance(value, Mapping):
        missing = [n for n in names if n not in value]
        extra = [k for k in value if k not in names]
        if missing or extra:
            raise ParameterError(
                f"params['beta'] must give every fixed effect {names}; "
                f"missing {missing}, unknown {extra}."
            )
        arr = np.array([value[n] for n in names], dtype=float)
    else:
        arr = np.asarray(value, dtype=float).reshape(-1)
        if arr.shape[0] != len(names):
            raise ParameterError(
                f"params['beta'] has {arr.shape[0]} value(s) but the design has {len(names)} fixed effects {names}."
            )
    if not np.all(np.isfinite(arr)):
        raise ParameterError(f"params['beta'] has non-finite values: {arr.tolist()}.")
    return arr


def _matrix(value: Any, q: int, what: str) -> np.ndarray:
    m = np.asarray(value, dtype=float)
    if m.shape != (q, q) or not np.all(np.isfinite(m)):
        raise ParameterError(f"{what} must be a finite {q}x{q} matrix, got shape {m.shape}.")
    if not np.allclose(m, m.T):
        raise ParameterError(f"{what} must be symmetric.")
    if np.linalg.eigvalsh(m)[0] < -1e-8 * max(1.0, float(np.abs(m).max())):
        raise ParameterError(f"{what} is not positive semi-definite.")
    return m


def _block_cov(b: BlockDesign, value: Any) -> np.ndarray:
    where = f"params[{b.label!r}]"
    if isinstance(value, Mapping):
        keys = set(value)
        if keys - {"sd", "cor", "cov"} or not keys or ("cov" in keys and keys & {"sd", "cor"}) or keys == {"cor"}:
            raise ParameterError(
                f"{where} must be {{'sd': [...], 'cor': q x q}} ('cor' optional) or {{'cov': q x q}}; "
                f"got keys {sorted(map(str, keys))}."
            )
        if "cov" in value:
            return _matrix(value["cov"], b.q, f"{where}['cov']")
        sd = np.asarray(value["sd"], dtype=float).reshape(-1)
        if sd.shape[0] != b.q or not np.all(np.isfinite(sd)) or (sd < 0).any():
            raise ParameterError(
                f"{where}['sd'] must give {b.q} non-negative sd(s), one per term {list(b.terms)}; got {sd.tolist()}."
            )
        cor = _matrix(value.get("cor", np.eye(b.q)), b.q, f"{where}['cor']")
        if not np.allclose(np.diag(cor), 1.0):
            raise ParameterError(f"{where}['cor'] must have ones on the diagonal.")
        return sd[:, None] * cor * sd[None, :]
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0 and b.q == 1:
        if not np.isfinite(arr) or arr < 0:
            raise ParameterError(f"{where} must be a non-negative sd, got {value!r}.")
        return arr.reshape(1, 1) ** 2
    return _matrix(arr, b.q, f"{where} (a covariance matrix of terms {list(b.terms)})")


def check_params(design: Design, params: Mapping[str, Any]) -> tuple[np.ndarray, float, list[np.ndarray]]:
    """Validate ``params`` against a design.

    Returns
    -------
    beta : numpy.ndarray
        In the order of ``design.fixed_names``.
    sigma : float
    covs : list of numpy.ndarray
        Per block, its q×q covariance.

    Raises
    ------
    ParameterError
        Naming the missing or unknown key, or the malformed value.
    """
    if not isinstance(params, Mapping):
        raise ParameterError(f"params must be a dict with {_expected(design)}; got {type(params).__name__}.")
    needed = ["sigma"] + (["beta"] if design.fixed_names else []) + [b.label for b in design.blocks]
    missing = [k for k in needed if k not in params]
    extra = [k for k in params if k not in needed]
    if missing or extra:
        raise ParameterError(f"params is missing {missing} and has unknown key(s) {extra}; it needs {_expected(design)}.")
    beta = _beta(design, params["beta"]) if design.fixed_names else np.zeros(0)
    try:
        sigma = float(params["sigma"])
    except (TypeError, ValueError):
        raise ParameterError(f"params['sigma'] must be a positive number, got {params['sigma']!r}.") from None
    if not np.isfinite(sigma) or sigma <= 0:
        raise ParameterError(f"params['sigma'] must be a positive number, got {params['sigma']!r}.")
    return beta, sigma, [_block_cov(b, params[b.label]) for b in design.blocks]


def _placeholder_design(formula: str, data: pd.DataFrame) -> Design:
    parsed = parse_formula(formula)
    name = parsed.response_name
    used = sorted(v for v in parsed.var_names if v != name and v in data.columns)
    na = [c for c in used if data[c].isna().any()]
    if na:
        raise BayesLMMError(f"Column(s) {na} have missing values; remove those rows before simulating.")
    frame = data.copy()
    # The response is what we simulate: any non-constant numbers let the design be built.
    frame[name] = np.arange(len(frame), dtype=float)
    return build_design(parsed, frame, na_action="raise", env=default_env())


def simulate(
    formula: str,
    data: pd.DataFrame,
    params: Mapping[str, Any],
    seed: int | None = None,
    return_effects: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Simulate the response of a linear mixed model with known parameters.

    Parameters
    ----------
    formula
        lme4 formula; its response must be a plain column name.
    data
        The predictors and grouping columns; the response column may be
        absent (it is added) or present (it is replaced). Not modified.
    params
        The true parameters, keyed by the names lme4 prints::

            {
                "beta": {"(Intercept)": 250, "Days": 10},     # or an array in fixef() order
                "sigma": 25,
                "Subject": {"sd": [24, 6], "cor": [[1, 0.07], [0.07, 1]]},
            }

        * ``"beta"``: every fixed-effect column of the design (names as
          ``fixef()`` prints them, aliased columns excluded), as a dict or an
          array in that order;
        * ``"sigma"``: the residual sd (> 0);
        * one entry per random-effect block, keyed by its label as ``VarCorr()``
          prints it (``"Subject"``; ``"Subject.1"`` for the second block of a
          factor, e.g. the slope of ``(Days || Subject)``; ``"cask:batch"`` for
          nested factors). The value is a dict ``{"sd": [...], "cor": q×q}``
          (``cor`` optional, default identity), a dict ``{"cov": q×q}``, a q×q
          covariance matrix, or, for a one-term block, a single sd.
    seed
        Seed of the random generator.
    return_effects
        Also return the simulated group effects.

    Returns
    -------
    pandas.DataFrame or (pandas.DataFrame, dict)
        A copy of ``data`` with the simulated response; with
        ``return_effects=True`` also ``{block label: levels x terms}`` of the
        true group effects.

    Raises
    ------
    ParameterError
        If ``params`` lacks a key, has an unknown one, or a value has the
        wrong shape or is not a valid sd/correlation/covariance.
    BayesLMMError
        For a bad formula or data (missing column, missing values, ...).
    """
    design = _placeholder_design(formula, data)
    beta, sigma, covs = check_params(design, params)
    rng = np.random.default_rng(seed)
    y = design.X @ beta
    effects: dict[str, pd.DataFrame] = {}
    for b, cov in zip(design.blocks, covs):
        w, V = np.linalg.eigh(cov)
        root = V * np.sqrt(np.clip(w, 0.0, None))
        gamma = rng.standard_normal((b.n_levels, b.q)) @ root.T
        y = y + np.einsum("nq,nq->n", b.Z, gamma[b.group_idx])
        effects[b.label] = pd.DataFrame(gamma, index=pd.Index(list(b.levels), name=b.factor), columns=list(b.terms))
    y = y + sigma * rng.standard_normal(design.nobs)
    out = data.copy()
    out[design.response_name] = y
    if return_effects:
        return out, effects
    return out
