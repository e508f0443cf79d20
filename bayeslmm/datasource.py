"""Stage 2, entry: what ``data=`` may be, and which design stage each kind goes to.

In memory (evaluated by :func:`bayeslmm.design.build_design`):

* a pandas DataFrame;
* a polars DataFrame or a pyarrow Table, converted column by column through
  narwhals (Arrow buffers, never row by row); every fit method then works as
  on the pandas frame with the same columns.

Out of core (evaluated by :func:`bayeslmm.outofcore.design_out_of_core`, one
Dask pass over the partitions, for models whose group effects collapse):

* a path, a directory or a glob of Parquet files (or a list of paths);
* a ``dask.dataframe.DataFrame``.

polars, pyarrow, narwhals and Dask are optional (``pip install 'bayeslmm[data]'``).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from typing import Any

import pandas as pd

from .compat import Environment
from .design import Design, build_design
from .errors import DataError
from .formula import ParsedFormula

__all__ = ["data_kind", "to_pandas", "parquet_files", "design_from_data", "OUT_OF_CORE_KINDS"]

#: Input kinds fitted by the out-of-core pass.
OUT_OF_CORE_KINDS = frozenset({"parquet", "dask"})


def _module(data: Any) -> str:
    return type(data).__module__.split(".")[0]


def data_kind(data: Any) -> str:
    """``"pandas"``, ``"polars"``, ``"arrow"``, ``"parquet"`` or ``"dask"``; a :class:`DataError` for anything else."""
    if isinstance(data, pd.DataFrame):
        return "pandas"
    mod = _module(data)
    if mod == "polars" and type(data).__name__ == "DataFrame":
        return "polars"
    if mod == "polars" and type(data).__name__ == "LazyFrame":
        raise DataError("data is a polars LazyFrame; collect it (lf.collect()), or write it to Parquet for an out-of-core fit.")
    if mod == "pyarrow" and type(data).__name__ == "Table":
        return "arrow"
    if mod in ("dask", "dask_expr") and hasattr(data, "npartitions") and hasattr(data, "columns"):
        return "dask"
    if isinstance(data, (str, os.PathLike)) or (
        isinstance(data, Sequence) and not isinstance(data, (str, bytes)) and data and all(isinstance(p, (str, os.PathLike)) for p in data)
    ):
        return "parquet"
    raise DataError(
        f"data must be a pandas or polars DataFrame, a pyarrow Table, a path or glob of Parquet files, "
        f"or a dask DataFrame; got {type(data).__name__}."
    )


def _need(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DataError(f"{what} needs the optional package {module!r}: pip install 'bayeslmm[data]'.") from None


def to_pandas(data: Any) -> pd.DataFrame:
    """A polars DataFrame or pyarrow Table as a pandas DataFrame, converted by columns (narwhals, or the library's own)."""
    kind = data_kind(data)
    if kind == "pandas":
        return data
    if kind not in ("polars", "arrow"):
        raise DataError(f"{kind} data are not held in memory; they are fitted out of core.")
    try:
        import narwhals as nw
    except ImportError:  # each library's own columnar conversion
        _need("pyarrow", "Converting a polars or Arrow table")
        return data.to_pandas()
    return nw.from_native(data, eager_only=True).to_pandas()


def parquet_files(data: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The Parquet files a path, a directory (its ``*.parquet`` files), a glob, or a list of these name, sorted."""
    items = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    files: list[str] = []
    for item in items:
        path = os.fspath(item)
        if os.path.isdir(path):
            found = sorted(glob.glob(os.path.join(path, "*.parquet")))
        elif glob.has_magic(path):
            found = sorted(glob.glob(path))
        else:
            found = [path] if os.path.isfile(path) else []
        if not found:
            raise DataError(f"No Parquet file found at {path!r}; give a file, a directory of *.parquet files or a glob.")
        files.extend(found)
    return files


def design_from_data(
    parsed: ParsedFormula, data: Any, na_action: str = "drop", env: Environment | None = None, closed: bool = False
) -> Design:
    """The design of ``parsed`` on data of any supported kind (see the module docstring).

    Parameters
    ----------
    parsed
        The parsed formula.
    data
        A pandas or polars DataFrame, a pyarrow Table, Parquet path(s) or glob, or a dask DataFrame.
    na_action, env, closed
        As for :func:`bayeslmm.design.build_design`.

    Returns
    -------
    Design
        Holding its rows for in-memory kinds; for out-of-core kinds, holding
        compressed rows and a :class:`~bayeslmm.rowsummary.RowSummary`.

    Raises
    ------
    DataError
        For an unsupported kind, a missing optional package, a missing file,
        and everything :func:`~bayeslmm.design.build_design` refuses.
    """
    kind = data_kind(data)
    if kind in ("pandas", "polars", "arrow"):
        return build_design(parsed, to_pandas(data), na_action=na_action, env=env, closed=closed)
    _need("dask.dataframe", "An out-of-core fit")
    from . import outofcore

    if kind == "parquet":
        return outofcore.design_from_parquet(parsed, parquet_files(data), na_action=na_action, env=env, closed=closed)
    return outofcore.design_out_of_core(parsed, data, "a dask DataFrame", na_action=na_action, env=env, closed=closed)
