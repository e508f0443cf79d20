"""Build the example notebooks from the example scripts, so the two never drift apart.

The scripts are written in the "percent" format: ``# %%`` starts a code cell,
``# %% [markdown]`` a markdown cell whose lines are comments. The module
docstring becomes the first markdown cell (its first line the title; a
paragraph starting with ``lme4:`` becomes a code block).

Usage, from the repository root::

    .venv/bin/python examples/_notebooks.py            # rebuild every notebook, without outputs
    .venv/bin/python examples/_notebooks.py --execute  # and run them (full draws) to store the outputs

``tests/test_notebooks.py`` checks that every notebook's cells equal what this
builds from its script, and runs the notebooks with tiny draw counts.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

EXAMPLES = Path(__file__).resolve().parent
NOTEBOOK_SCRIPTS = ("sleepstudy.py", "salary.py", "reading.py")
"""The scripts that also exist as notebooks (the ones with figures to look at)."""

KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}


def _docstring_markdown(doc: str) -> str:
    title, _, rest = doc.strip().partition("\n")
    parts = [f"# {title.strip()}"]
    for para in rest.strip().split("\n\n"):
        para = para.strip("\n")
        if para.lstrip().startswith("lme4:"):
            parts.append("```\n" + "\n".join(line.rstrip() for line in para.splitlines()) + "\n```")
        elif para:
            parts.append(" ".join(line.strip() for line in para.splitlines()))
    return "\n\n".join(parts)


def cells_from_script(path: Path) -> list[tuple[str, str]]:
    """The ``(cell_type, source)`` pairs of a percent-format script."""
    text = path.read_text()
    module = ast.parse(text)
    cells: list[tuple[str, str]] = []
    body_start = 0
    doc = ast.get_docstring(module)
    if doc is not None:
        cells.append(("markdown", _docstring_markdown(doc)))
        body_start = module.body[0].end_lineno
    kind, lines = None, []

    def flush() -> None:
        source = "\n".join(lines).strip("\n")
        if kind is not None and source:
            cells.append((kind, source))

    for line in text.splitlines()[body_start:]:
        if line.startswith("# %%"):
            flush()
            kind, lines = ("markdown" if "[markdown]" in line else "code"), []
        elif kind == "markdown":
            lines.append(line[2:] if line.startswith("# ") else line.lstrip("#"))
        elif kind == "code":
            lines.append(line)
    flush()
    return cells


def build_notebook(script: Path) -> nbformat.NotebookNode:
    """A notebook (without outputs) whose cells are those of ``script``."""
    cells = [
        new_markdown_cell(src) if kind == "markdown" else new_code_cell(src) for kind, src in cells_from_script(script)
    ]
    return new_notebook(cells=cells, metadata={"kernelspec": KERNEL, "language_info": {"name": "python"}})


def main(argv: list[str]) -> None:
    """Write ``<script>.ipynb`` next to every script of :data:`NOTEBOOK_SCRIPTS`."""
    execute = "--execute" in argv
    for name in NOTEBOOK_SCRIPTS:
        script = EXAMPLES / name
        nb = build_notebook(script)
        if execute:
            from nbclient import NotebookClient

            resources = {"metadata": {"path": str(EXAMPLES)}}
            NotebookClient(nb, timeout=3600, kernel_name="python3", resources=resources).execute()
        out = script.with_suffix(".ipynb")
        nbformat.write(nb, out)
        print(f"wrote {out.relative_to(EXAMPLES.parent)}")


if __name__ == "__main__":
    main(sys.argv[1:])
