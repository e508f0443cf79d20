"""Seeded draws of representative fits, saved and compared bitwise across a refactor.

    python scripts/seeded_draws.py save draws.npz      # at the commit before the change
    python scripts/seeded_draws.py compare draws.npz   # after it: exit 1 on any difference

The cases cover every sampling route of ``lmer``: the collapsed posterior with the fixed effects
integrated out (sleepstudy), the collapsed posterior with them sampled (sleepstudy with a StudentT
prior on the slope; Pastes, nested), the full model (Penicillin, crossed; sleepstudy), nutpie on the
collapsed posterior, and the PyTensor graph of the collapsed model (a prior without a numba form).
Chains outnumber processes so that the forked chain runner is exercised.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np

import bayeslmm

OPTS = dict(draws=150, tune=150, chains=3, cores=2, random_seed=7, progressbar=False)
CASES = {
    "sleepstudy_beta_integrated": ("sleepstudy", "Reaction ~ Days + (Days | Subject)", {}),
    "sleepstudy_beta_sampled": (
        "sleepstudy", "Reaction ~ Days + (Days | Subject)", {"priors": {"Days": {"dist": "StudentT", "nu": 3, "mu": 0, "sigma": 10}}}
    ),
    "pastes_nested": ("pastes", "strength ~ 1 + (1 | batch/cask)", {}),
    "penicillin_full": ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", {}),
    "sleepstudy_nutpie": ("sleepstudy", "Reaction ~ Days + (Days | Subject)", {"sampler": "nutpie"}),
    "sleepstudy_full": ("sleepstudy", "Reaction ~ Days + (Days | Subject)", {"collapse": False}),
    "pastes_pytensor_graph": (
        "pastes", "strength ~ 1 + (1 | batch/cask)", {"priors": {"sigma": {"dist": "Gamma", "mu": 2.0, "sigma": 1.0}}}
    ),
}


def draws() -> dict[str, np.ndarray]:
    """Every posterior and sample-stats variable of every case, keyed ``case/group/variable``."""
    out = {}
    for name, (data, formula, kwargs) in CASES.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = bayeslmm.lmer(formula, bayeslmm.datasets.load(data), **OPTS, **kwargs)
        for group in ("posterior", "sample_stats"):
            ds = fit.idata[group]
            for var in ds.data_vars:
                values = np.asarray(ds[var].values)
                if values.dtype.kind in "fiub":
                    out[f"{name}/{group}/{var}"] = values
        print(name, dict(fit.parameterization), file=sys.stderr)
    return out


def timing(key: str) -> bool:
    """Wall-clock statistics, which differ between any two runs."""
    return key.rsplit("/", 1)[-1] in ("perf_counter_diff", "perf_counter_start", "process_time_diff")


def main() -> int:
    """Save or compare, as the command line says."""
    mode, path = sys.argv[1], sys.argv[2]
    got = draws()
    if mode == "save":
        np.savez(path, **got)
        print(f"saved {len(got)} arrays to {path}")
        return 0
    ref = dict(np.load(path))
    bad = sorted(set(ref) ^ set(got))
    for key in sorted(set(ref) & set(got)):
        if timing(key):
            continue
        if ref[key].shape != got[key].shape or not np.array_equal(ref[key], got[key], equal_nan=True):
            bad.append(key)
    skipped = [k for k in ref if timing(k)]
    print(f"compared {len(set(ref) & set(got)) - len(skipped)} arrays; {len(bad)} differ")
    for key in bad:
        print("  DIFFERS:", key)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
