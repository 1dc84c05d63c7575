"""Atomic file writes: a reader sees the old file or the new one, never half of either.

Torch-free and numpy-free, so that reports, baselines and the plugin's configuration can write
without importing the training harness.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import InputError, OutputError, first_line

__all__ = ["fsync", "atomic_path", "read_json", "write_json_atomic", "is_temporary",
           "output_error"]

PathLike = str | os.PathLike

# ``.<name>.<8 hex>.tmp[<suffix>]``: what atomic_path writes beside its target (and the staging
# folders of :mod:`ampcheck.outdir`); only ever a leftover of a killed process once no ampcheck
# process holds the folder.
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp(\.[^./]+)?$")


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of ampcheck's temporary files or folders."""
    return _TEMPORARY.match(name) is not None


def temporary_name(path: Path) -> Path:
    """A fresh temporary path beside ``path`` (with its suffix), matching :func:`is_temporary`."""
    return path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp{path.suffix}"


def fsync(path: PathLike) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def output_error(path: PathLike, err: BaseException) -> OutputError:
    """An :class:`OutputError` that names ``path``: ``cannot write P: <why>``.

    Writers that fail deep inside a library (``torch.save``'s ``inline_container.cc`` on a full
    disk, ``np.savez`` raising a bare ``[Errno 28]``) lose the file's name; this puts it back.
    """
    if isinstance(err, OSError) and err.strerror:
        why = err.strerror[0].lower() + err.strerror[1:]
    else:  # torch's RuntimeError holds a C++ backtrace after its first line
        why = first_line(err)
        if "enforce fail" in why or "file write failed" in why.lower():
            why = "the write failed (is the disk full or the file too large?)"
    return OutputError(f"cannot write {path}: {why}")


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` if the block succeeds.

    The temporary file exists (empty) on entry and keeps ``path``'s suffix. On an exception it is
    removed and any old ``path`` is left untouched; an :class:`OSError` of the write (a full disk,
    a file-size limit) becomes an :class:`~ampcheck.errors.OutputError` that names ``path``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"cannot write {path}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a folder, expected a file name")
    tmp = temporary_name(path)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # honours the umask
    except OSError as err:
        raise output_error(path, err) from None
    try:
        yield tmp
        fsync(tmp)
        os.replace(tmp, path)
        fsync(path.parent)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and not isinstance(err, FileNotFoundError | PermissionError):
            raise output_error(path, err) from None
        raise


def write_json_atomic(path: PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON to ``path`` through a temporary file and a rename, so
    that a reader never sees half a file and an old file survives a failed write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"  # fails before anything is written
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: PathLike, missing: str, what: str) -> Any:
    """The JSON value in ``path``; :class:`~ampcheck.errors.InputError` naming it when it is
    absent (``path: <missing>``) or not JSON (``path is not <what> (<why>)``)."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: {missing}") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not {what} ({err})") from None
