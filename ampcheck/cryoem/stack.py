"""Particle stacks served lazily: :class:`ImageStack` and :func:`read_stack`.

A stack is a ``.mrcs``/``.mrc`` file, a ``.txt`` listing such files (one per line, relative to
the list's folder) or a RELION ``.star`` whose ``_rlnImageName`` entries ``000012@stack.mrcs``
name an image (1-based) of a stack; all are served as float32 ``(B, D, D)`` arrays read on
demand, so that a stack larger than memory trains with bounded memory. The MRC files are opened
through :mod:`ampcheck.cryoem.mrc`; the ``.star`` tables through :mod:`ampcheck.cryoem.star`.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ampcheck.cryoem.mrc import STACK_SUFFIXES, StackFile, inspect_stack, open_mrc
from ampcheck.cryoem.star import read_image_names
from ampcheck.errors import InputError

__all__ = ["ImageStack", "read_stack"]

PathLike = str | os.PathLike

class ImageStack:
    """A lazy particle stack: ``N`` real-space images ``(D, D)`` read on demand from MRC files.

    Indexing copies only the requested images: ``stack[i]`` is ``(D, D)``, ``stack[a:b]`` and
    ``stack[index_array]`` are ``(B, D, D)``; always float32. Reading an image with a NaN or Inf
    pixel raises :class:`InputError` naming the file and image; :meth:`check_finite` scans all.

    Attributes:
        path: the file opened (``.mrcs``, ``.txt`` or ``.star``).
        files: the MRC files holding the images.
        D: image side in pixels (even).
        apix: pixel size in Å from the first MRC header, None where the header says 0.
    """

    _MAX_OPEN = 64  # memory maps kept open at once (a .star may name thousands of stacks)
    # Pages of a map that was read stay in the process's resident set until the map closes, so
    # an epoch over a large stack would count the whole stack as this process's memory. After
    # this many bytes read from the stack, the pages of its open maps are dropped (the kernel
    # keeps them in its page cache; a later read finds them there).
    _RELEASE_BYTES = 64 * 2**20

    def __init__(self, path: PathLike, files: Sequence[StackFile],
                 file_of: np.ndarray | None = None, local: np.ndarray | None = None):
        self.path = Path(path)
        self._files = list(files)
        if not self._files:
            raise InputError(f"{self.path}: names no image stacks")
        Ds = {f.D for f in self._files}
        if len(Ds) > 1:
            other = next(f for f in self._files if f.D != self._files[0].D)
            raise InputError(f"{self.path}: its stacks differ in image size ({self._files[0].path}"
                             f" has D = {self._files[0].D}, {other.path} has D = {other.D}); "
                             "expected one image size")
        self.D = self._files[0].D
        self.apix = next((f.apix for f in self._files if f.apix is not None), None)
        if file_of is None:  # images are the files' images in order
            self._offsets = np.cumsum([0] + [f.n for f in self._files])
            self._file_of = self._local = None
            self._n = int(self._offsets[-1])
        else:
            self._file_of = np.asarray(file_of, dtype=np.int64)
            self._local = np.asarray(local, dtype=np.int64)
            self._n = len(self._file_of)
        self._open: OrderedDict[int, Any] = OrderedDict()
        self._unreleased = 0  # bytes read since the open maps' pages were last dropped

    @property
    def files(self) -> list[Path]:
        return [f.path for f in self._files]

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        return f"ImageStack({str(self.path)!r}, n={self._n}, D={self.D}, apix={self.apix})"

    # -- indexing
    def __getitem__(self, key: int | slice | np.ndarray | Sequence[int]) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if not -self._n <= i < self._n:
                raise IndexError(f"image {i} is out of range for {self.path} ({self._n} images)")
            return self.read(np.array([i % self._n]))[0]
        if isinstance(key, slice):
            return self.read(np.arange(*key.indices(self._n)))
        return self.read(key)

    def read(self, indices: np.ndarray | Sequence[int]) -> np.ndarray:
        """Images ``indices`` (ints, negatives allowed, or a boolean mask) as float32 ``(B, D, D)``.

        Reads each file's images in sorted order (one memory-map read per file, a plain slice
        when they are contiguous) and returns them in the order asked for.
        """
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (self._n,):
                raise IndexError(f"boolean index of shape {idx.shape} for {self._n} images")
            idx = np.nonzero(idx)[0]
        idx = idx.astype(np.int64, copy=False).reshape(-1)
        if idx.size and (idx.min() < -self._n or idx.max() >= self._n):
            raise IndexError(f"image index out of range for {self.path} ({self._n} images)")
        idx = idx % max(self._n, 1)
        out = np.empty((idx.size, self.D, self.D), dtype=np.float32)
        fid, loc = self._locate(idx)
        for f in np.unique(fid):
            sel = np.nonzero(fid == f)[0]
            order = np.argsort(loc[sel], kind="stable")
            sel, ls = sel[order], loc[sel][order]
            data = self._data(int(f))
            if ls[-1] - ls[0] + 1 == ls.size and (ls.size == 1 or np.all(np.diff(ls) == 1)):
                out[sel] = data[ls[0]:ls[-1] + 1]
            else:
                out[sel] = data[ls]
            self._unreleased += ls.size * data[0].nbytes
        if self._unreleased >= self._RELEASE_BYTES:
            self._release()
        if not np.isfinite(out).all():
            b = int(np.nonzero(~np.isfinite(out).reshape(len(out), -1).all(axis=1))[0][0])
            f, i = int(fid[b]), int(loc[b])
            where = "" if self._files[f].path == self.path else f" (entry {idx[b]} of {self.path})"
            raise InputError(f"{self._files[f].path}: image {i} (0-based){where} has NaN or Inf "
                             "pixels; expected finite values")
        return out

    def check_finite(self, chunk: int = 1024) -> None:
        """Read all images, ``chunk`` at a time; :class:`InputError` at the first non-finite one."""
        for start in range(0, self._n, chunk):
            self.read(np.arange(start, min(start + chunk, self._n)))

    def take(self, indices: np.ndarray | Sequence[int]) -> ImageStack:
        """A stack of images ``indices`` (0-based, in that order) of this one, read from the
        same files: image ``k`` of the result is image ``indices[k]`` here (cryoDRGN's
        ``--ind``). Nothing is read; the files were validated when this stack was opened."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self._n):
            raise IndexError(f"image index out of range for {self.path} ({self._n} images)")
        file_of, local = self._locate(idx)
        return ImageStack(self.path, self._files, file_of, local)

    def _locate(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._file_of is not None:
            return self._file_of[idx], self._local[idx]
        f = np.searchsorted(self._offsets, idx, side="right") - 1
        return f, idx - self._offsets[f]

    def _data(self, f: int) -> np.ndarray:
        """The memory-mapped ``(n, D, D)`` data of file ``f`` (kept open; least recent closed)."""
        if f in self._open:
            self._open.move_to_end(f)
        else:
            if len(self._open) >= self._MAX_OPEN:
                self._open.popitem(last=False)[1].close()
            self._open[f] = open_mrc(self._files[f].path)
        data = self._open[f].data
        return data.reshape(1, *data.shape) if data.ndim == 2 else data

    def _release(self) -> None:
        """Drop the pages of every open map from this process's resident set."""
        self._unreleased = 0
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        for mrc in self._open.values():
            mapped = getattr(mrc.data, "_mmap", None)  # numpy.memmap's mmap.mmap
            if mapped is not None:
                mapped.madvise(mmap.MADV_DONTNEED)

    # -- resources
    def close(self) -> None:
        """Close the memory maps (reading again reopens them)."""
        self._unreleased = 0
        while self._open:
            self._open.popitem()[1].close()

    def __enter__(self) -> ImageStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def __getstate__(self) -> dict:  # picklable for DataLoader workers: maps reopen lazily
        state = self.__dict__.copy()
        state["_open"], state["_unreleased"] = OrderedDict(), 0
        return state


def read_stack(path: PathLike, datadir: PathLike | None = None) -> ImageStack:
    """Open a particle stack lazily: ``.mrcs``/``.mrc``, ``.txt`` or RELION ``.star``.

    A ``.txt`` lists one MRC stack per line, relative to its own folder (``datadir`` is not
    used, as in cryoDRGN). A ``.star`` names images ``000012@stack.mrcs`` (1-based); each stack
    is looked for as cryoDRGN 4.3.1 does: as written (absolute, or relative to the current
    folder), then relative to ``datadir`` (default: the star's folder), then as its bare file
    name in ``datadir`` (see :func:`_find_stack`).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in STACK_SUFFIXES:
        return ImageStack(path, [inspect_stack(path)])
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a particle stack)")
    if suffix == ".txt":
        return _read_txt_stack(path)
    if suffix == ".star":
        return _star_stack(path, read_image_names(path), datadir)
    raise InputError(f"{path}: unknown particle file type {path.suffix!r}; expected .mrcs, .mrc, "
                     ".txt (a list of stacks) or .star (RELION)")


def _read_txt_stack(path: Path) -> ImageStack:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: could not read it as a text list of stacks ({e})") from e
    names = [s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#")]
    if not names:
        raise InputError(f"{path}: lists no stacks; expected one .mrcs path per line")
    files = []
    for name in names:
        p = Path(name) if Path(name).is_absolute() else path.parent / name
        if not p.is_file():
            raise InputError(f"{path}: lists {name}, but {p} does not exist")
        files.append(inspect_stack(p))
    return ImageStack(path, files)


def _find_stack(path: Path, name: str, base: Path, given: bool) -> Path:
    """The file of stack ``name`` that ``path`` (a .star) names, looked for as cryoDRGN 4.3.1
    does (``ImageSource``'s ``parse_filename``): the name as written (absolute, or relative
    to the current folder: a star written by RELION names its stacks relative to the project
    folder it runs in), then under ``base`` (the datadir, or the star's folder) with the name's
    folders, then under ``base`` with its bare file name (stacks moved out of the project's
    folder tree). ``given``: whether ``base`` was given as the datadir (for the message)."""
    p = Path(name)
    candidates = list(dict.fromkeys([p, base / p, base / p.name]))
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        hint = ("" if given else "; pass the folder that holds the stacks as datadir "
                "(--datadir)")
        raise InputError(f"{path}: image stack {name} not found (looked for "
                         f"{', '.join(map(str, candidates))}){hint}")
    return Path(os.path.abspath(found))  # not moved by a later change of the current folder


def _star_stack(path: Path, image_names: pd.Series, datadir: PathLike | None) -> ImageStack:
    names = image_names.astype(str)
    parts = names.str.split("@", n=1, expand=True)
    if parts.shape[1] == 1:  # no "@" anywhere: one image per file
        parts = pd.DataFrame({0: "1", 1: parts[0]})
    no_at = parts[1].isna()
    parts.loc[no_at, 1], parts.loc[no_at, 0] = parts.loc[no_at, 0], "1"
    index = pd.to_numeric(parts[0], errors="coerce")
    wrong = index.isna() | (index < 1) | (index % 1 != 0)
    if wrong.any():
        bad = names[wrong].iloc[0]
        raise InputError(f"{path}: _rlnImageName {bad!r} is not of the form 000012@stack.mrcs "
                         "(a 1-based index, '@', a stack file)")
    uniq, file_of = np.unique(parts[1].to_numpy(dtype=str), return_inverse=True)
    if datadir is not None and not Path(datadir).is_dir():
        raise InputError(f"{datadir}: no such folder (expected the datadir that holds the image "
                         f"stacks that {path} names)")
    base = Path(datadir) if datadir is not None else path.parent
    files = [inspect_stack(_find_stack(path, name, base, datadir is not None))
             for name in uniq]
    number = index.to_numpy(dtype=np.float64)  # 1-based; compared before any integer cast
    counts = np.array([f.n for f in files])
    over = number > counts[file_of]
    if over.any():
        k = int(np.nonzero(over)[0][0])
        raise InputError(f"{path}: _rlnImageName {names.iloc[k]!r} asks for image "
                         f"{number[k]:.0f}, but {files[file_of[k]].path} holds "
                         f"{counts[file_of[k]]} images")
    return ImageStack(path, files, file_of, number.astype(np.int64) - 1)
