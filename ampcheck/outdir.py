"""Output directories: one writer at a time, reports replaced whole, leftovers repaired.

* :class:`OutputDir` holds a directory for one command: it validates the path before any work,
  takes an advisory lock (a second ampcheck writer is refused at once, with the holder named),
  finishes or discards what a killed predecessor left half-done, and removes its temporaries.
* :func:`staged` replaces a set of entries of a directory (a report's ``report.json``,
  ``report.html`` and ``arrays/``) by those of a staging folder:

  - **in one step** when the directory holds nothing but those entries (the usual report
    folder): the directory is swapped with a staging folder beside it by
    ``renameat2(RENAME_EXCHANGE)`` (Linux) or ``renamex_np(RENAME_SWAP)`` (macOS);
  - **entry by entry, rolled forward** otherwise (``ampcheck run``'s folder also holds its data
    set, ``--out .`` holds anything; also a mount point, the working directory, or a system
    without an atomic swap): the staging folder is inside the directory and records when its
    commit began; ``report.json`` is replaced last. A kill during those renames leaves the
    report mixed only until the next ampcheck command on the directory, which finishes the
    commit (and ``ampcheck report`` refuses a mixed report meanwhile). Nothing else in the
    directory is ever moved.

The lock is the file ``.ampcheck-lock`` in the directory, held with ``flock`` for the life of
the command and removed when it ends. It is advisory: it keeps ampcheck processes apart, not
other programs. Paths are resolved (symlinks followed) first, so that two spellings of one
directory share one lock. Torch-free.
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
from .files import fsync, is_temporary, output_error, write_json_atomic

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; a second writer is not detected there
    fcntl = None

__all__ = ["OutputDir", "reading", "repair", "staged", "LOCK", "STAGE_MARKER"]

LOCK = ".ampcheck-lock"
STAGE_MARKER = ".ampcheck-stage"  # in a staging folder: its owner, what it replaces, its state
_HOST = socket.gethostname()


def _real(path: str | os.PathLike) -> Path:
    return Path(os.path.realpath(path))


def _alive(pid: object, host: object) -> bool:
    """Whether process ``pid`` of this host still runs (other hosts' are taken as alive)."""
    if host != _HOST or not isinstance(pid, int):
        return host != _HOST
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _holder(lock: Path) -> str:
    """Who holds ``lock``, as its holder wrote it: ``pid 123 on host, `ampcheck train`, since
    21:03:05`` (a process reading the folder does not write it)."""
    try:
        h = json.loads(lock.read_text())
        if not _alive(h["pid"], h["host"]):
            return "a process reading it, e.g. `ampcheck check --run`"
        return (f"pid {h['pid']} on {h['host']}, `{h['command']}`, since "
                f"{time.strftime('%H:%M:%S', time.localtime(h['since']))}")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process reading it, or one that has not said who it is yet"


def _flock(lock: Path, exclusive: bool) -> int | None:
    """An open descriptor of ``lock`` holding ``flock``; None where a reader may neither create
    nor open it (another user's folder: reading it is not refused). Raises
    :class:`BlockingIOError` when another process holds it."""
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        except PermissionError:
            if exclusive:
                raise
            try:
                fd = os.open(lock, os.O_RDONLY)
            except OSError:
                return None
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            # a holder that released between our open and flock has unlinked the file we opened
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd
        except FileNotFoundError:
            pass
        except BlockingIOError:
            os.close(fd)
            if lock.exists():
                raise
            continue  # it was being released: try the new file
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _release(lock: Path, fd: int) -> None:
    """Remove ``lock`` if no other process holds it, then let go of it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with contextlib.suppress(OSError):
            os.unlink(lock)
    except BlockingIOError:  # a reader still holds it: it removes the file when it is done
        pass
    finally:
        os.close(fd)


def _writable(path: Path, what: str) -> None:
    """Raise a :class:`ConfigError` unless ``path`` is (or can be made) a writable folder."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; expected a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"cannot create {what} {path}: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write {what} {path}: {existing} is not writable")


class OutputDir:
    """An output directory held by this process for one command (a context manager).

    On entry the path is validated (a folder, writable), created, and locked (a second ampcheck
    writer gets :class:`~ampcheck.errors.BusyError` naming this one, at once or after waiting
    ``wait`` seconds for it to finish); a report commit that a killed predecessor began is
    finished, its other leftovers are removed. On exit the lock is released, and a directory
    this command created and left empty is removed.
    """

    def __init__(self, path: str | os.PathLike, command: str, what: str = "--out", *,
                 wait: float = 0.0):
        self.path = _real(path)
        self.command, self.what, self.wait = command, what, float(wait)
        self._fd: int | None = None
        self._created = False

    def __enter__(self) -> OutputDir:
        out = self.path
        _writable(out, self.what)
        self._created = not out.exists()
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise output_error(out, err) from None
        if fcntl is not None:
            deadline = time.monotonic() + self.wait
            while self._fd is None:
                try:
                    self._fd = _flock(out / LOCK, exclusive=True)
                except BlockingIOError:
                    if time.monotonic() < deadline:
                        time.sleep(0.05)
                        continue
                    self._drop_created()
                    waited = f" for {self.wait:g} s" if self.wait else ""
                    raise BusyError(f"{out} is in use by another ampcheck process "
                                    f"({_holder(out / LOCK)}){waited}; wait for it to finish "
                                    f"or choose another {self.what}") from None
                except FileNotFoundError as err:  # the holder we waited for removed it, empty
                    if out.is_dir():
                        raise output_error(out / LOCK, err) from None
                    out.mkdir(parents=True, exist_ok=True)
                    self._created = True
                except OSError as err:
                    raise output_error(out / LOCK, err) from None
            os.ftruncate(self._fd, 0)
            os.write(self._fd, json.dumps({"pid": os.getpid(), "host": _HOST,
                                           "command": self.command,
                                           "since": time.time()}).encode())
        try:
            repair(out)
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._unlock()
        self._drop_created()

    def _drop_created(self) -> None:
        if self._created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only if this command left it empty

    def _unlock(self) -> None:
        if self._fd is not None:
            _release(self.path / LOCK, self._fd)
            self._fd = None


def _holds_anything(folder: Path) -> bool:
    """Whether ``folder`` exists with an entry that is not ampcheck's lock or a temporary."""
    return folder.is_dir() and any(e.name != LOCK and not is_temporary(e.name)
                                   for e in folder.iterdir())


def _marker(stage: Path) -> dict | None:
    try:
        m = json.loads((stage / STAGE_MARKER).read_text())
        return m if isinstance(m, dict) else None
    except (OSError, ValueError):
        return None


def repair(out: Path) -> None:
    """Finish or discard what killed ampcheck processes left in and beside ``out``: report
    commits (finished), staging folders (removed unless their owner still runs), temporary
    files, and a data set that ``generate`` had moved aside (put back)."""
    name = re.escape(out.name)
    beside = re.compile(rf"^\.{name}\.([0-9a-f]{{8}}\.tmp|[a-z0-9_]{{8}}|old-\d+)$")
    if out.parent != out and out.parent.is_dir():
        for p in sorted(out.parent.iterdir()):
            if not beside.match(p.name) or p.is_symlink() or not p.is_dir():
                continue
            m = _marker(p)
            if m is not None and _alive(m.get("pid"), m.get("host")):
                continue  # a report being written by a library call that holds no lock
            if p.name.startswith(f".{out.name}.old-") and not _holds_anything(out):
                # generate() was killed between its two renames: the old data set goes back
                out.mkdir(exist_ok=True)
                for entry in p.iterdir():
                    os.rename(entry, out / entry.name)
                p.rmdir()
                continue
            shutil.rmtree(p, ignore_errors=True)
    if not out.is_dir():
        return
    with contextlib.suppress(FileNotFoundError):
        (out / STAGE_MARKER).unlink()  # a whole swap killed just after it happened
    for entry in sorted(out.iterdir()):
        if entry.is_symlink() or not is_temporary(entry.name):
            continue
        if entry.is_file():
            entry.unlink()
        elif entry.is_dir():
            m = _marker(entry)
            if m is not None and _alive(m.get("pid"), m.get("host")):
                continue
            if m is not None and m.get("committing"):
                _roll_forward(out, entry, m["replaces"])
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def reading(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Read ``path`` (a run directory) only while no ampcheck process writes it: a writer
    holding it gets :class:`~ampcheck.errors.BusyError`, and none can start until the block
    ends."""
    path = _real(path)
    if fcntl is None or not path.is_dir():
        yield
        return
    try:
        fd = _flock(path / LOCK, exclusive=False)
    except BlockingIOError:
        raise BusyError(f"{what} {path} is being written by another ampcheck process "
                        f"({_holder(path / LOCK)}); wait for it to finish") from None
    try:
        yield
    finally:
        if fd is not None:
            _release(path / LOCK, fd)


def _swap(a: Path, b: Path) -> bool:
    """Exchange the names ``a`` and ``b`` (two folders) atomically; False where the system or
    the file system offers no such call, or refuses it here (a mount point, another device)."""
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
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV,
               errno.EBUSY, errno.EPERM, errno.EACCES):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _whole(out: Path, replaces: set[str]) -> bool:
    """Whether ``out`` may be swapped as a whole: it holds only the entries replaced (and
    ampcheck's own), it is on its parent's device, and it is not the working directory."""
    try:
        if os.stat(out).st_dev != os.stat(out.parent).st_dev or out == _real(os.getcwd()) \
                or not os.access(out.parent, os.W_OK | os.X_OK):
            return False
    except OSError:
        return False
    return all(e.name in replaces or e.name == LOCK or is_temporary(e.name)
               for e in out.iterdir())


@contextlib.contextmanager
def staged(out: str | os.PathLike, replaces: Collection[str]) -> Iterator[Path]:
    """Yield an empty staging folder; when the block succeeds, ``out``'s entries named in
    ``replaces`` become the staging folder's (see the module's docstring for how).

    Entries of ``out`` not named in ``replaces`` are kept where they are. A failure before the
    commit leaves ``out`` as it was; an interruption during an entry-by-entry commit is
    finished by the next :class:`OutputDir` on ``out``.
    """
    out, replaces = _real(out), set(replaces)
    out.mkdir(parents=True, exist_ok=True)
    whole = _whole(out, replaces)
    stage = (out.parent / f".{out.name}.{secrets.token_hex(4)}.tmp" if whole
             else out / f".report.{secrets.token_hex(4)}.tmp")
    stage.mkdir()
    marker = {"pid": os.getpid(), "host": _HOST, "replaces": sorted(replaces),
              "committing": False}
    committing = False
    try:
        write_json_atomic(stage / STAGE_MARKER, marker)
        yield stage
        for folder in [p for p in stage.rglob("*") if p.is_dir()] + [stage]:
            fsync(folder)  # every entry of the new report on disk before it appears
        if whole and _whole(out, replaces) and _swap(stage, out):
            fsync(out.parent)
            (out / STAGE_MARKER).unlink()
            for entry in stage.iterdir():  # anything that appeared since the check goes back
                if entry.name not in replaces | {LOCK} and not is_temporary(entry.name) \
                        and not (out / entry.name).exists():
                    os.rename(entry, out / entry.name)
            shutil.rmtree(stage, ignore_errors=True)  # the old report
            return
        if whole:  # no atomic swap here after all: entry by entry, from a stage inside
            inner = out / f".report.{secrets.token_hex(4)}.tmp"
            os.rename(stage, inner)
            stage = inner
        write_json_atomic(stage / STAGE_MARKER, {**marker, "committing": True})
        committing = True  # from here on, a kill is finished by the next command
        _roll_forward(out, stage, replaces)
        shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        if not committing:
            shutil.rmtree(stage, ignore_errors=True)
        raise


def _roll_forward(out: Path, stage: Path, replaces: Collection[str]) -> None:
    """Move each staged entry into ``out`` (what it replaces set aside into the stage), the
    report's ``report.json`` last; every step can be repeated after a kill."""
    names = sorted(n for n in replaces if (stage / n).exists())
    names.sort(key=lambda n: n == "report.json")  # the commit point comes last
    for name in names:
        new, old = stage / name, out / name
        if new.is_dir() and not new.is_symlink():
            if old.exists() or old.is_symlink():
                aside = stage / f".old-{name}"
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(old, aside)
            os.rename(new, old)
        else:
            os.replace(new, old)
    fsync(out)
