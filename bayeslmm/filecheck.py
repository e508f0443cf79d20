"""Files: whether a destination can be written, what mode a new file gets, and whether an HDF5 file is sane.

Used by :mod:`bayeslmm.io` (saving and loading fits) and :mod:`bayeslmm.cli`
(checking ``--out`` before any work).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PersistenceError

__all__ = ["MAX_COMPRESSION_RATIO", "MAX_OBJECTS", "new_file_mode", "check_writable", "check_sizes"]

#: A compressed array may declare at most this many times the bytes it occupies.
MAX_COMPRESSION_RATIO = 200
#: At most this many arrays and groups in a file.
MAX_OBJECTS = 10_000


def new_file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would give: an existing file's, else 0o666 less the umask."""
    if path.exists():
        return path.stat().st_mode & 0o7777
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_writable(path: str | os.PathLike, what: str = "the fit") -> Path:
    """Refuse, before any work, a destination that cannot be written.

    Parameters
    ----------
    path
        The file to be written.
    what
        What will be written there, for the message.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    PersistenceError
        If the folder does not exist, the path is a folder, or a file cannot be
        created in that folder.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise PersistenceError(f"Cannot write {what} to {str(path)!r}: the folder {str(path.parent)!r} does not exist.")
    if path.is_dir():
        raise PersistenceError(f"Cannot write {what} to {str(path)!r}: it is a folder.")
    try:
        fd, tmp = tempfile.mkstemp(suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise PersistenceError(f"Cannot write {what} to {str(path)!r}: {exc.strerror or exc}.") from None
    return path


def check_sizes(path: str | os.PathLike) -> None:
    """Refuse a file whose arrays declare more data than the file holds, before reading any.

    An uncompressed array must occupy at least the bytes its shape and type
    declare; a compressed one at least 1/:data:`MAX_COMPRESSION_RATIO` of them;
    no array may take its data from another file (HDF5 external or virtual
    storage). So reading a file never takes much more memory than the file's
    size, and reads nothing but the file.

    Raises
    ------
    PersistenceError
        Naming the array that claims more than the file holds.
    """
    import h5py

    problems: list[str] = []
    count = [0]

    def visit(name: str, obj: Any) -> None:
        count[0] += 1
        if count[0] > MAX_OBJECTS:
            raise PersistenceError(f"{str(path)!r} holds more than {MAX_OBJECTS} arrays and groups; it is not a saved fit.")
        if not isinstance(obj, h5py.Dataset) or problems:
            return
        if obj.external or obj.is_virtual:
            problems.append(f"{name!r} takes its data from outside the file")
            return
        if str(obj.attrs.get("NAME", b"")).find("not a netCDF variable") >= 0:
            return  # a bare dimension: netCDF never reads its (unwritten) values
        itemsize = obj.dtype.itemsize if obj.dtype.kind not in "OV" or obj.dtype.itemsize else 8
        declared = int(np.prod(obj.shape, dtype=np.float64)) * max(itemsize, 1) if obj.shape else itemsize
        if declared == 0:
            return
        stored = int(obj.id.get_storage_size())
        compressed = obj.compression is not None or obj.scaleoffset is not None
        limit = stored * (MAX_COMPRESSION_RATIO if compressed else 1)
        if declared > limit and obj.dtype.kind != "O":
            problems.append(f"{name!r} declares {declared:,} bytes but occupies {stored:,} in the file")

    try:
        with h5py.File(path, "r") as fh:
            fh.visititems(visit)
    except PersistenceError:
        raise
    except Exception as exc:
        raise PersistenceError(
            f"{str(path)!r} is not a readable netCDF-4 file (corrupt, or not written by bayeslmm): {type(exc).__name__}: {exc}"
        ) from None
    if problems:
        raise PersistenceError(f"{str(path)!r} is not a valid saved fit: the array {problems[0]}.")
