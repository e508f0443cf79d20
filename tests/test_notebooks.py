"""The example notebooks match their scripts and run headless, with tiny draw counts, without a cell erroring."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
TINY = {"BAYESLMM_EXAMPLE_DRAWS": "60", "BAYESLMM_EXAMPLE_TUNE": "60", "BAYESLMM_EXAMPLE_CHAINS": "2"}


def _builder():
    spec = importlib.util.spec_from_file_location("example_notebooks", EXAMPLES / "_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_listed_notebook_exists():
    names = {p.name for p in NOTEBOOKS}
    assert "sleepstudy.ipynb" in names
    assert names == {Path(s).with_suffix(".ipynb").name for s in _builder().NOTEBOOK_SCRIPTS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_matches_its_script(path):
    nb = nbformat.read(path, as_version=4)
    built = _builder().cells_from_script(path.with_suffix(".py"))
    assert [(c.cell_type, c.source) for c in nb.cells] == built, (
        f"{path.name} is out of date with {path.with_suffix('.py').name}; run .venv/bin/python examples/_notebooks.py"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    for key, value in TINY.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("BAYESLMM_EXAMPLE_OUTPUT", raising=False)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's inline backend captures the figures
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": str(EXAMPLES)}}
    )
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [
        f"cell {i}: {o.ename}: {o.evalue}"
        for i, c in enumerate(code)
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert not errors, "\n".join(errors)
    assert all(c.execution_count is not None for c in code), "every code cell ran"
    text = "".join(o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream")
    assert "Fixed effects:" in text
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 2, "the figures are shown inline"
    if path.name == "sleepstudy.ipynb":  # a cell holding the fit, and one holding its summary, show as HTML
        html = [o["data"]["text/html"] for c in code for o in c.outputs if "text/html" in o.get("data", {})]
        assert any("Bayesian linear mixed model" in h and "Std.Dev." in h and "<table" in h for h in html)
        assert any("Fixed effects" in h and "Rhat" in h and "Priors" in h for h in html)
    warned = [o.get("text", "") for c in code for o in c.outputs if o.output_type == "stream" and o.name == "stderr"]
    # ArviZ's bare Pareto-k warning never leaks: loo() refits flagged rows (with full draws the examples
    # run clean) or says how to (with these tiny draw counts, many rows are flagged)
    assert not any("Estimated shape parameter of Pareto" in w for w in warned)
