"""Sampler settings shared by the examples; the test suite shrinks them via environment variables."""

import os

DRAWS = int(os.environ.get("BAYESLMM_EXAMPLE_DRAWS", "1000"))
TUNE = int(os.environ.get("BAYESLMM_EXAMPLE_TUNE", "1000"))
CHAINS = int(os.environ.get("BAYESLMM_EXAMPLE_CHAINS", "4"))
SAMPLING = dict(draws=DRAWS, tune=TUNE, chains=CHAINS, progressbar=False)

OUTPUT = os.environ.get("BAYESLMM_EXAMPLE_OUTPUT")
"""Directory to write the examples' figures to; unset (the default) means build them without saving."""


def save_figure(fig, name: str) -> None:
    """Save ``fig`` as ``<BAYESLMM_EXAMPLE_OUTPUT>/<name>.png`` when that variable is set, then close it."""
    import matplotlib.pyplot as plt

    if OUTPUT:
        os.makedirs(OUTPUT, exist_ok=True)
        fig.savefig(os.path.join(OUTPUT, f"{name}.png"), dpi=100, bbox_inches="tight")
    if not _in_notebook():
        plt.close(fig)


def _in_notebook() -> bool:
    """Whether the caller runs in a Jupyter kernel (where open figures are shown inline)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"
