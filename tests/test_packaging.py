"""The project metadata builds without deprecation warnings from setuptools."""

from __future__ import annotations

import warnings
from pathlib import Path

from setuptools.config.pyprojecttoml import read_configuration

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_reads_without_setuptools_warnings() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = read_configuration(PYPROJECT)
    assert config["project"]["license"] == "MIT"  # an SPDX expression, not the deprecated table form
    messages = [str(w.message) for w in caught if "setuptools" in (w.filename or "") or "license" in str(w.message)]
    assert messages == []
