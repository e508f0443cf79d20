"""The README's layout table matches the package: every module is listed, every listed path exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bayeslmm"


def layout_rows(readme: str) -> list[str]:
    """The module cells (second column) of the table under ``## Layout``."""
    section = readme.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|") and not line.startswith("|---")]
    return [row.strip("|").rsplit("|", 1)[1] for row in rows[1:]]  # rows[0] is the header


def listed_paths(cell: str) -> set[str]:
    """The files a cell names, relative to the repository.

    ``bayeslmm/x.py`` and ``x.py`` (short for ``bayeslmm/x.py``) name a module; ``bayeslmm/sub/``
    names a subpackage's ``__init__.py``, and the names in parentheses after it
    (``bayeslmm/sub/`` (``a``, ``b``)) its modules.
    """
    paths = set()
    for token, inside in re.findall(r"`([^`]+)`(?:\s*\(([^)]*)\))?", cell):
        if token.endswith("/"):
            paths.add(token + "__init__.py")
            paths.update(f"{token}{name}.py" for name in re.findall(r"`([^`]+)`", inside))
        elif token.endswith(".py"):
            paths.add(token if "/" in token else f"bayeslmm/{token}")
    return paths


def test_listed_paths_parse():
    cell = " `bayeslmm/a.py`, `b.py` | `bayeslmm/sub/` (`x`, `y`) "
    assert listed_paths(cell) == {"bayeslmm/a.py", "bayeslmm/b.py", "bayeslmm/sub/__init__.py", "bayeslmm/sub/x.py", "bayeslmm/sub/y.py"}


def test_readme_layout_matches_the_tree():
    listed = set().union(*map(listed_paths, layout_rows((ROOT / "README.md").read_text(encoding="utf-8"))))
    modules = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py")} - {"bayeslmm/__init__.py"}
    assert sorted(listed - modules) == [], "listed in the README's layout but not in the package"
    assert sorted(modules - listed) == [], "in the package but not in the README's layout"
