"""Output directories: one writer at a time, reports replaced in one step, leftovers swept.

* :class:`OutputDir` holds a directory for one command: it validates the path before any work,
  takes an advisory lock (a second writer is refused at once, with the holder named), puts back
  what a killed predecessor left half-moved and removes its stale temporary files.
* :func:`staged` replaces a set of entries of a directory (a report's ``report.json``,
  ``report.html`` and ``arrays/``) by those of a staging folder in one step: the directory is
  swapped with the staging folder by ``renameat2(RENAME_EXCHANGE)`` (Linux) or
  ``renamex_np(RENAME_SWAP)`` (macOS), after the entries that are not replaced (``data/``, the
  user's own files) were moved across. Where no atomic swap exists two renames are used, and a
  kill between them is repaired by the next :class:`OutputDir`.

The lock is ``.<name>.ampcheck-lock`` beside the directory (so that the directory itself can be
swapped), held with ``flock`` for the life of the command and removed when it ends. It is
advisory: it keeps ampcheck processes apart, not other programs. Torch-free.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import secrets
import shutil
import socket
import sys
import time
from collections.abc import Collection, Iterator
from pathlib import Path

from .errors import BusyError, ConfigError
from .files import fsync, is_temporary, output_error

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a second writer is not detected there
    fcntl = None

__all__ = ["OutputDir", "reading", "staged", "STAGE_MARKER"]

STAGE_MARKER = ".ampcheck-stage"  # in a staging folder: the entries it replaces (JSON list)


def _lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.ampcheck-lock"


def _stage_pattern(out: Path) -> re.Pattern[str]:
    return re.compile(rf"^\.{re.escape(out.name)}\.[0-9a-f]{{8}}\.tmp$")


def _holder(lock: Path) -> str:
    """Who holds ``lock``, as its holder wrote it: ``pid 123 on host, `ampcheck train`, since
    21:03:05``."""
    try:
        h = json.loads(lock.read_text())
        return (f"pid {h['pid']} on {h['host']}, `{h['command']}`, since "
                f"{time.strftime('%H:%M:%S', time.localtime(h['since']))}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not said who it is yet"


def _flock(lock: Path, exclusive: bool, create: bool) -> int | None:
    """An open descriptor of ``lock`` holding ``flock``; None when ``lock`` does not exist and
    ``create`` is false. Raises :class:`BlockingIOError` when another process holds it."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | (os.O_CREAT if create else 0), 0o666)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            # a holder that released between our open and flock has unlinked the file we opened
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _release(lock: Path, fd: int) -> None:
    """Remove ``lock`` if no other process holds it, then let go of it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)
    except BlockingIOError:  # a reader still holds it: it removes the file when it is done
        pass
    finally:
        os.close(fd)


def _writable(path: Path, what: str) -> None:
    """Raise a :class:`ConfigError` unless ``path`` could be created and written."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; expected a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot create {what} {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} {path}: {existing} is not writable")
    if existing == path and not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} {path}: its folder {path.parent} is not "
                          "writable (ampcheck keeps its lock and swaps reports there)")


class OutputDir:
    """An output directory held by this process for one command (a context manager).

    On entry the path is validated (not a file, writable), the directory is locked (a second
    ampcheck writer gets :class:`~ampcheck.errors.BusyError` naming this one), what a killed
    predecessor left is repaired or removed, and the directory exists. On exit the lock is
    released, and a directory this command created and left empty is removed.
    """

    def __init__(self, path: str | os.PathLike, command: str, what: str = "--out"):
        self.path = Path(os.path.abspath(path))
        self.command, self.what = command, what
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> OutputDir:
        out = self.path
        _writable(out, self.what)
        out.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is not None:
            lock = _lock_path(out)
            try:
                self._fd = _flock(lock, exclusive=True, create=True)
            except BlockingIOError:
                raise BusyError(f"{out} is in use by another ampcheck process ({_holder(lock)}); "
                                f"wait for it to finish or choose another {self.what}") from None
            except OSError as err:
                raise output_error(lock, err) from None
            os.ftruncate(self._fd, 0)
            os.write(self._fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                           "command": self.command,
                                           "since": time.time()}).encode())
        try:
            self._repair()
            self._created = not out.exists()
            out.mkdir(exist_ok=True)
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if this command left it empty
        self._unlock()

    def _unlock(self) -> None:
        if self._fd is not None:
            _release(_lock_path(self.path), self._fd)
            self._fd = None

    def _repair(self) -> None:
        """Undo what a killed ampcheck process left: a report swap stopped half-way (the
        directory missing, or its other entries still in the staging folder), staging folders
        and temporary files."""
        out, pattern = self.path, _stage_pattern(self.path)
        stale = [p for p in out.parent.iterdir() if pattern.match(p.name) and p.is_dir()]
        staging = [p for p in stale if (p / STAGE_MARKER).is_file()]
        if not out.exists() and staging:  # killed between the two renames of the fallback swap
            os.rename(staging[0], out)
            stale.remove(staging[0])
        for folder in stale:
            if (folder / STAGE_MARKER).is_file():  # killed while moving entries across
                replaced = set(json.loads((folder / STAGE_MARKER).read_text()))
                for entry in folder.iterdir():
                    if entry.name not in replaced | {STAGE_MARKER} \
                            and not (out / entry.name).exists():
                        os.rename(entry, out / entry.name)
            shutil.rmtree(folder)
        if out.is_dir():
            with contextlib.suppress(FileNotFoundError):
                (out / STAGE_MARKER).unlink()  # killed just after a swap
            for entry in out.iterdir():
                if is_temporary(entry.name) and entry.is_file():
                    entry.unlink()


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Read ``path`` (a run directory) only while no ampcheck process writes it: a writer
    holding it gets :class:`~ampcheck.errors.BusyError`, and none can start until the block
    ends."""
    path = Path(os.path.abspath(path))
    lock = _lock_path(path)
    if fcntl is None or not path.parent.is_dir():
        yield
        return
    try:
        fd = _flock(lock, exclusive=False, create=os.access(path.parent, os.W_OK))
    except BlockingIOError:
        raise BusyError(f"{what} {path} is being written by another ampcheck process "
                        f"({_holder(lock)}); wait for it to finish") from None
    try:
        yield
    finally:
        if fd is not None:
            _release(lock, fd)


def _swap(a: Path, b: Path) -> bool:
    """Exchange the names ``a`` and ``b`` (two folders) atomically; False where the system or
    the file system offers no such call."""
    fa, fb = os.fsencode(a), os.fsencode(b)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform.startswith("linux"):
            fn = libc.renameat2
            fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                           ctypes.c_uint]
            at_fdcwd, exchange = -100, 2  # AT_FDCWD, RENAME_EXCHANGE
            result = fn(at_fdcwd, fa, at_fdcwd, fb, exchange)
        elif sys.platform == "darwin":
            fn = libc.renamex_np
            fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
            result = fn(fa, fb, 0x2)  # RENAME_SWAP
        else:
            return False
    except (AttributeError, OSError):  # an older C library
        return False
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextlib.contextmanager
def staged(out: str | os.PathLike, replaces: Collection[str]) -> Iterator[Path]:
    """Yield an empty staging folder beside ``out``; when the block succeeds, ``out``'s entries
    named in ``replaces`` become the staging folder's entries, all in one step.

    Entries of ``out`` not named in ``replaces`` are kept. A failure or a kill anywhere leaves
    ``out`` as it was or as it is after the swap; never a mix. The caller holds ``out`` through
    :class:`OutputDir`.
    """
    out = Path(os.path.abspath(out))
    stage = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
    stage.mkdir()
    try:
        (stage / STAGE_MARKER).write_text(json.dumps(sorted(replaces)))
        yield stage
        _commit(out, stage, set(replaces))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _commit(out: Path, stage: Path, replaces: set[str]) -> None:
    for folder in [p for p in stage.rglob("*") if p.is_dir()] + [stage]:
        fsync(folder)  # every entry of the new report on disk before it appears
    if not out.exists():
        os.rename(stage, out)
    else:
        for entry in out.iterdir():  # what stays: moved across first (repaired if killed)
            if entry.name not in replaces:
                os.rename(entry, stage / entry.name)
        fsync(out)
        fsync(stage)
        if _swap(stage, out):
            old = stage
        else:
            old = out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp"
            os.rename(out, old)
            os.rename(stage, out)
        fsync(out.parent)
        shutil.rmtree(old)
    (out / STAGE_MARKER).unlink()
