"""What the user asked the sampler for, checked, and how many processes the chains get."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from ..errors import SamplingError

__all__ = ["SAMPLERS", "SamplerSettings", "available_cpus", "chain_processes"]

#: NUTS implementations by name, and the module each needs (None: PyMC's own).
SAMPLERS = {"pymc": None, "nutpie": "nutpie", "numpyro": "numpyro"}


@dataclass(frozen=True)
class SamplerSettings:
    """What the user asked the sampler for."""

    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    random_seed: int | None = None
    target_accept: float = 0.8
    sampler: str = "pymc"
    progressbar: bool = True
    cores: int | None = None

    def validate(self) -> None:
        """Raise :class:`SamplingError` for settings NUTS cannot use."""
        for name in ("draws", "chains"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise SamplingError(f"{name} must be a positive integer, got {v!r}.")
        if not isinstance(self.tune, (int, np.integer)) or isinstance(self.tune, bool) or self.tune < 0:
            raise SamplingError(f"tune must be a non-negative integer, got {self.tune!r}.")
        if not (isinstance(self.target_accept, (float, int)) and 0 < self.target_accept < 1):
            raise SamplingError(f"target_accept must be between 0 and 1 (exclusive), got {self.target_accept!r}.")
        if self.random_seed is not None and (
            not isinstance(self.random_seed, (int, np.integer)) or isinstance(self.random_seed, bool)
        ):
            raise SamplingError(f"random_seed must be an integer or None, got {self.random_seed!r}.")
        if self.sampler not in SAMPLERS:
            raise SamplingError(f"sampler must be one of {sorted(SAMPLERS)}, got {self.sampler!r}.")
        module = SAMPLERS[self.sampler]
        if module is not None and importlib.util.find_spec(module) is None:
            raise SamplingError(
                f"sampler={self.sampler!r} needs the {module!r} package; install it with "
                "`pip install 'bayeslmm[fast]'`, or use sampler='pymc'."
            )


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, not the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def chain_processes(settings: SamplerSettings) -> int:
    """Processes for the chains: ``settings.cores``, or every available CPU up to the number of chains.

    PyMC's own default is half the CPUs (it assumes hyper-threads); the chains are independent, so use them all.
    """
    return settings.cores if settings.cores is not None else min(settings.chains, available_cpus())
