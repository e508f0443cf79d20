"""Every script in examples/ runs to completion with tiny draw counts."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_example_runs(script):
    env = dict(os.environ, BAYESLMM_EXAMPLE_DRAWS="60", BAYESLMM_EXAMPLE_TUNE="60", BAYESLMM_EXAMPLE_CHAINS="2",
               MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, script.name], cwd=EXAMPLES, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Fixed effects:" in proc.stdout or "Estimate" in proc.stdout
