"""Sampler settings shared by the examples; the test suite shrinks them via environment variables."""

import os

DRAWS = int(os.environ.get("BAYESLMM_EXAMPLE_DRAWS", "1000"))
TUNE = int(os.environ.get("BAYESLMM_EXAMPLE_TUNE", "1000"))
CHAINS = int(os.environ.get("BAYESLMM_EXAMPLE_CHAINS", "4"))
SAMPLING = dict(draws=DRAWS, tune=TUNE, chains=CHAINS, progressbar=False)
