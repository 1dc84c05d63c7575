"""Reading and writing cryo-EM data in cryoDRGN's and RELION's formats.

* Particle stacks: ``.mrcs``/``.mrc`` (memory-mapped through ``mrcfile``), ``.txt`` (one stack per
  line) and RELION ``.star`` (``_rlnImageName`` entries ``000012@stack.mrcs``), all served by
  :class:`ImageStack` as float32 ``(B, D, D)`` arrays; :class:`StackWriter` streams big stacks out.
* Volumes: :func:`write_mrc` / :func:`read_mrc`, ``(D, D, D)`` indexed ``[z, y, x]``, Å/pixel.
* Pickles (poses, CTF, latents) are data from strangers: :func:`load_pickle` admits only numpy
  arrays, tuples, lists, dicts and scalars. Poses: ``rot (N, 3, 3)``, ``trans (N, 2)`` in fractions
  of the box. CTF: ``(N, 9)`` ``[D, apix, dfu, dfv, dfang, volt, cs, w, phase_shift]``.
* RELION ``.star`` particles: :func:`read_star_particles` / :func:`write_star`.

Every write is atomic (:func:`atomic_path`): a temporary file in the same folder is moved into
place only when it is complete, so an error never leaves a half-written file or loses an old one.
Every problem a user can fix raises :class:`~ampcheck.errors.InputError` naming the file and
what was expected, and nothing else reaches the user: no other exception, and no warning of
mrcfile's or numpy's. MRC files are read strictly: a header whose fields do not describe
exactly the bytes of the file (a field out of range, a truncated file, bytes after the data)
is refused (see :func:`_check_mrc_layout`). CTF rows with a defocus that is not positive are
refused (see :func:`_check_ctf`).
"""

from __future__ import annotations

import contextlib
import linecache
import mmap
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mrcfile
import mrcfile.utils
import numpy as np
import pandas as pd
import starfile
from mrcfile.dtypes import HEADER_DTYPE

from ampcheck.cryoem.ctf import CTF_COLUMNS
from ampcheck.cryoem.rotations import R_from_relion, R_to_relion
from ampcheck.errors import InputError, UnsafePickleError
from ampcheck.files import atomic_path, fsync  # noqa: F401 (re-exported)

__all__ = [
    "atomic_path", "ImageStack", "read_stack", "StackWriter", "write_stack", "read_mrc",
    "write_mrc", "load_pickle", "read_poses", "write_poses", "read_ctf", "write_ctf", "read_z",
    "write_z", "StarParticles", "read_star_particles", "write_star",
]

PathLike = str | os.PathLike

# ----------------------------------------------------------------------------- MRC stacks

_STACK_SUFFIXES = (".mrcs", ".mrc")


@dataclass(frozen=True)
class _StackFile:
    path: Path
    n: int
    D: int
    apix: float | None


def _unreadable(path: Path, reason: str, what: str) -> InputError:
    return InputError(f"{path}: not a readable MRC file ({reason}); expected {what}")


def _read_mrc_header(path: Path, what: str) -> np.recarray:
    """The 1,024-byte MRC header of ``path``, decoded with mrcfile's own header layout
    (:data:`mrcfile.dtypes.HEADER_DTYPE`) and byte-order rule, as ``mrcfile`` decodes it."""
    size = HEADER_DTYPE.itemsize
    try:
        with open(path, "rb") as f:
            raw = f.read(size)
    except OSError as e:
        raise _unreadable(path, str(e), what) from e
    if len(raw) < size:
        raise _unreadable(path, f"{len(raw)} bytes, shorter than the {size}-byte header; the "
                          "file is truncated or not an MRC file", what)
    probe = np.frombuffer(raw, dtype=HEADER_DTYPE)[0]
    if bytes(probe["map"])[:3] != b"MAP":
        raise _unreadable(path, "no map ID 'MAP ' at byte 208; the file is corrupt or not an "
                          "MRC file", what)
    try:
        order = mrcfile.utils.byte_order_from_machine_stamp(probe["machst"])
    except ValueError as e:
        raise _unreadable(path, f"{e}; the header is corrupt", what) from e
    return np.frombuffer(raw, dtype=HEADER_DTYPE.newbyteorder(order)).reshape(()).view(
        np.recarray)


def _check_mrc_layout(path: Path, what: str) -> None:
    """Refuse an MRC file whose header does not describe exactly the bytes of the file.

    Checked, before ``mrcfile`` maps the data, are the fields that decide which bytes are which
    pixels: ``nx``, ``ny``, ``nz`` (positive), ``mode`` (one that mrcfile reads), ``mz`` of a
    volume stack, ``nsymbt`` (the extended header's size) and the file's size, which must equal
    header + extended header + data. Fields that do not move a pixel (labels, statistics,
    ``nversion``, cell, axis order) are not checked. A file with bytes beyond its data is
    refused, not read with a warning: the header then disagrees with the file (a wrong ``nz``
    or ``mode``, or two files joined), so the images it describes may be the wrong ones, and
    ``mrcfile.validate`` calls such a file invalid. Without these checks a corrupt count
    reaches ``mrcfile`` as an ``OverflowError`` or ``ZeroDivisionError``, or as an allocation
    of the size the header claims.
    """
    h = _read_mrc_header(path, what)
    dims = {}
    for field, unit in (("nx", "columns"), ("ny", "rows"), ("nz", "sections (images)")):
        dims[field] = int(h[field])
        if dims[field] < 1:
            raise _unreadable(path, f"header field {field} = {dims[field]}, expected a positive "
                              f"number of {unit}", what)
    try:
        dtype = mrcfile.utils.data_dtype_from_header(h)
    except ValueError:
        raise _unreadable(path, f"header field mode = {int(h.mode)}, expected a data mode of "
                          "0, 1, 2, 4, 6 or 12", what) from None
    mz = int(h.mz)
    if mrcfile.utils.spacegroup_is_volume_stack(h.ispg) and (mz < 1 or dims["nz"] % mz):
        raise _unreadable(path, f"header says a volume stack (ispg = {int(h.ispg)}) of nz = "
                          f"{dims['nz']} sections in volumes of mz = {mz}, expected a positive "
                          "mz that divides nz", what)
    extended = int(h.nsymbt)
    if extended < 0:
        raise _unreadable(path, f"header field nsymbt = {extended}, expected an extended "
                          "header of 0 or more bytes", what)
    expected = h.nbytes + extended + dtype.itemsize * dims["nx"] * dims["ny"] * dims["nz"]
    found = path.stat().st_size
    if found != expected:
        layout = (f"{dims['nz']} section(s) of {dims['ny']} x {dims['nx']} {dtype.name} "
                  f"pixels after {h.nbytes + extended} header bytes = {expected} bytes")
        if found < expected:
            raise _unreadable(path, f"{found} bytes, but the header describes {layout}; the "
                              "file is truncated", what)
        raise _unreadable(path, f"{found} bytes, {found - expected} more than the header "
                          f"describes ({layout}): a wrong nz or mode in the header, or bytes "
                          "appended to the file; remove them or fix the header", what)


def _open_mrc(path: Path, what: str = "an MRC image stack") -> Any:
    """``mrcfile.mmap`` read-only, strict, after :func:`_check_mrc_layout`; every failure, and
    any warning ``mrcfile`` would print, becomes one :class:`InputError` naming the file."""
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected {what})")
    _check_mrc_layout(path, what)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mrc = mrcfile.mmap(path, mode="r", permissive=False)
        except (ValueError, OSError, EOFError, OverflowError, MemoryError) as e:
            raise _unreadable(path, str(e), what) from e
    if caught:
        mrc.close()
        raise _unreadable(path, str(caught[0].message), what)
    return mrc


def _apix(mrc: Any) -> float | None:
    """The pixel size in Å (``cella.x / mx``), or None where the header gives none (0, or a
    cell or sampling that makes no size: mx = 0, NaN, Inf)."""
    with np.errstate(all="ignore"):
        apix = float(mrc.voxel_size.x)
    return apix if 0 < apix < np.inf else None


def _inspect_stack(path: Path) -> _StackFile:
    """Open ``path`` once to validate its header and size; returns its shape and pixel size."""
    with _open_mrc(path) as mrc:
        data = mrc.data
        if data is None or data.ndim not in (2, 3):
            shape = None if data is None else data.shape
            raise InputError(f"{path}: found data of shape {shape}; expected an image stack "
                             "(N, D, D) or a single image (D, D)")
        if not np.issubdtype(data.dtype, np.integer) and not np.issubdtype(data.dtype,
                                                                             np.floating):
            raise InputError(f"{path}: found {data.dtype} pixels; expected real-valued images")
        n = 1 if data.ndim == 2 else data.shape[0]
        ny, nx = data.shape[-2:]
        if ny != nx or nx % 2:
            raise InputError(f"{path}: found images of {ny} x {nx} pixels (rows x columns); "
                             "expected square images with an even side")
        if n == 0:
            raise InputError(f"{path}: the stack holds no images")
        return _StackFile(path, n, int(nx), _apix(mrc))


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

    def __init__(self, path: PathLike, files: Sequence[_StackFile],
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
            self._open[f] = _open_mrc(self._files[f].path)
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

    A ``.txt`` lists one MRC stack per line, relative to its own folder. A ``.star`` names images
    ``000012@stack.mrcs`` (1-based), stacks relative to ``datadir`` (default: the star's folder);
    where that fails the stack's bare file name is tried under the same folder, as cryoDRGN does.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in _STACK_SUFFIXES:
        return ImageStack(path, [_inspect_stack(path)])
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a particle stack)")
    if suffix == ".txt":
        return _read_txt_stack(path)
    if suffix == ".star":
        blocks = _read_star_blocks(path)
        particles, _ = _particle_tables(blocks, path)
        return _star_stack(path, particles["rlnImageName"], datadir)
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
        files.append(_inspect_stack(p))
    return ImageStack(path, files)


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
    base = Path(datadir) if datadir is not None else path.parent
    files = []
    for name in uniq:
        p = Path(name)
        candidates = [p] if p.is_absolute() else [base / p]
        candidates.append(base / p.name)
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise InputError(f"{path}: image stack {name} not found (looked for "
                             f"{', '.join(map(str, dict.fromkeys(candidates)))}); pass datadir= "
                             "the folder that holds the stacks")
        files.append(_inspect_stack(found))
    number = index.to_numpy(dtype=np.float64)  # 1-based; compared before any integer cast
    counts = np.array([f.n for f in files])
    over = number > counts[file_of]
    if over.any():
        k = int(np.nonzero(over)[0][0])
        raise InputError(f"{path}: _rlnImageName {names.iloc[k]!r} asks for image "
                         f"{number[k]:.0f}, but {files[file_of[k]].path} holds "
                         f"{counts[file_of[k]]} images")
    return ImageStack(path, files, file_of, number.astype(np.int64) - 1)


# ----------------------------------------------------------------------------- writing MRC


def _set_header(mrc: Any, apix: float | None) -> None:
    """Voxel size, and one fixed label in place of mrcfile's timestamped default, so that the
    same data always gives the same bytes."""
    if apix:
        mrc.voxel_size = float(apix)
    mrc.header.label[0] = b"ampcheck"
    mrc.header.nlabl = 1


class StackWriter:
    """Stream a float32 ``(n, D, D)`` stack into an MRC file, atomically.

    Use as a context manager; :meth:`write` fills images ``[start, start + B)``. The file appears
    at ``path`` only when the block exits without an exception and every image was written.

    >>> with StackWriter("particles.mrcs", n=1000, D=64, apix=1.5) as w:  # doctest: +SKIP
    ...     for start in range(0, 1000, 100):
    ...         w.write(start, images[start:start + 100])
    """

    def __init__(self, path: PathLike, n: int, D: int, apix: float | None = None):
        if int(n) < 1 or int(D) < 2 or int(D) % 2:
            raise ValueError(f"StackWriter needs n >= 1 and an even D >= 2, got n={n}, D={D}")
        self.path, self.n, self.D, self.apix = Path(path), int(n), int(D), apix
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> StackWriter:
        with contextlib.ExitStack() as stack:
            self._tmp = stack.enter_context(atomic_path(self.path))
            # mrcfile lays out the header (and a sparse data block); the images then go in with
            # positioned writes, not through a memory map, so that written pages stay in the
            # page cache instead of the process's resident memory.
            with mrcfile.new_mmap(self._tmp, shape=(self.n, self.D, self.D), mrc_mode=2,
                                  overwrite=True) as mrc:
                mrc.set_image_stack()
                _set_header(mrc, self.apix)
                self._dtype = mrc.data.dtype
                self._offset = mrc.header.nbytes + mrc.extended_header.nbytes
            self._fh = stack.enter_context(open(self._tmp, "r+b"))
            self._written = np.zeros(self.n, dtype=bool)
            self._rewritten = False
            self._min, self._max, self._sum, self._sumsq = np.inf, -np.inf, 0.0, 0.0
            self._stack = stack.pop_all()
        return self

    def write(self, start: int, images: np.ndarray) -> None:
        """Write ``images`` ``(B, D, D)`` (or one ``(D, D)``) at ``start .. start + B - 1``."""
        if self._stack is None:
            raise RuntimeError("StackWriter.write outside its `with` block")
        images = np.asarray(images, dtype=np.float32)
        if images.ndim == 2:
            images = images[None]
        if images.shape[1:] != (self.D, self.D):
            raise ValueError(f"expected images of shape (B, {self.D}, {self.D}), "
                             f"got {images.shape}")
        start, stop = int(start), int(start) + len(images)
        if start < 0 or stop > self.n:
            raise ValueError(f"images [{start}, {stop}) do not fit a stack of {self.n}")
        self._fh.seek(self._offset + start * self.D * self.D * self._dtype.itemsize)
        self._fh.write(np.ascontiguousarray(images, dtype=self._dtype).tobytes())
        self._rewritten |= bool(self._written[start:stop].any())
        self._written[start:stop] = True
        if images.size:
            x = images.astype(np.float64)
            self._min, self._max = min(self._min, x.min()), max(self._max, x.max())
            self._sum += x.sum()
            self._sumsq += np.square(x).sum()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        stack, self._stack = self._stack, None
        if exc_type is not None:  # close and remove the temporary file; the error propagates
            stack.__exit__(exc_type, exc, tb)
            return
        with stack:  # closes the file, then moves it into place (or removes it on error)
            if not self._written.all():
                missing = int((~self._written).sum())
                raise ValueError(f"{self.path}: {missing} of {self.n} images were never written")
            self._fh.flush()
            with mrcfile.mmap(self._tmp, mode="r+") as mrc:
                self._set_header_stats(mrc)

    def _set_header_stats(self, mrc: Any) -> None:
        data, h = mrc.data, mrc.header
        if self._rewritten:  # running sums double-count rewritten images: one pass instead
            self._min, self._max, self._sum, self._sumsq = np.inf, -np.inf, 0.0, 0.0
            for s in range(0, self.n, 1024):
                x = np.asarray(data[s:s + 1024], dtype=np.float64)
                self._min, self._max = min(self._min, x.min()), max(self._max, x.max())
                self._sum, self._sumsq = self._sum + x.sum(), self._sumsq + np.square(x).sum()
        count = data.size
        with np.errstate(invalid="ignore"):  # NaN pixels give NaN statistics, no warning
            mean = self._sum / count
            h.dmin, h.dmax, h.dmean = self._min, self._max, mean
            h.rms = np.sqrt(max(self._sumsq / count - mean**2, 0.0))


def write_stack(path: PathLike, images: np.ndarray, apix: float | None = None) -> None:
    """Write images ``(N, D, D)`` as a float32 MRC stack, atomically, voxel size ``apix`` Å."""
    images = np.asarray(images)
    if images.ndim != 3:
        raise ValueError(f"expected images of shape (N, D, D), got {images.shape}")
    with StackWriter(path, len(images), images.shape[-1], apix) as w:
        for s in range(0, len(images), 4096):
            w.write(s, images[s:s + 4096])


def write_mrc(path: PathLike, vol: np.ndarray, apix: float | None = None) -> None:
    """Write a volume ``(D, D, D)`` indexed ``[z, y, x]`` as float32 MRC, voxel size ``apix`` Å."""
    vol = np.asarray(vol, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"expected a volume of shape (D, D, D), got {vol.shape}")
    with atomic_path(path) as tmp, mrcfile.new(tmp, overwrite=True) as mrc:
        mrc.set_data(vol)
        _set_header(mrc, apix)


def read_mrc(path: PathLike) -> tuple[np.ndarray, float | None]:
    """Read an MRC file into memory: (float32 data, e.g. a volume ``(D, D, D)`` ``[z, y, x]``,
    pixel size in Å or None where the header says 0)."""
    path = Path(path)
    with _open_mrc(path, "an MRC volume") as mrc:
        if not np.issubdtype(mrc.data.dtype, np.number) or np.iscomplexobj(mrc.data):
            raise InputError(f"{path}: found {mrc.data.dtype} values; expected a real-valued "
                             "MRC volume")
        return np.array(mrc.data, dtype=np.float32), _apix(mrc)


# ----------------------------------------------------------------------------- pickles


def _safe_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core import multiarray, numeric
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric  # type: ignore[no-redef]
    import _codecs

    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "complex"): complex,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "bytearray"): bytearray,
        ("_codecs", "encode"): _codecs.encode,  # bytes in protocol-2 pickles
    }
    for core in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x spellings
        allowed[(f"{core}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{core}.multiarray", "scalar")] = multiarray.scalar
        allowed[(f"{core}.numeric", "_frombuffer")] = numeric._frombuffer  # protocol 5
    return allowed


_SAFE_GLOBALS = _safe_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path):
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # protocol 0-2 pickles spell builtins the Python 2 way
            module = "builtins"
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path}: refusing to load {module}.{name} from this pickle; expected only "
                "numpy arrays, tuples, lists, dicts and scalars (the file may be unsafe)"
            ) from None


def _load_pickles(path: PathLike, count: int) -> list[Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a pickle)")
    out = []
    with open(path, "rb") as f:
        for i in range(count):
            try:
                out.append(_RestrictedUnpickler(f, path).load())
            except UnsafePickleError:
                raise
            except EOFError as e:
                found = "is empty or truncated" if i == 0 else f"holds only {i} pickled object(s)"
                raise InputError(f"{path}: {found}; expected {count} pickled object(s)") from e
            except Exception as e:
                raise InputError(f"{path}: not a valid pickle ({type(e).__name__}: {e})") from e
    return out


def load_pickle(path: PathLike) -> Any:
    """Load one pickled object of numpy arrays, tuples, lists, dicts and scalars only.

    Anything else raises :class:`UnsafePickleError` naming the forbidden ``module.name``.
    """
    return _load_pickles(path, 1)[0]


def _dump_pickles(path: PathLike, *objs: Any) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for obj in objs:
            pickle.dump(obj, f, protocol=4)


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _float_array(x: Any, path: PathLike, what: str, ndim: int) -> np.ndarray:
    """``x`` if it is a finite integer or float array of ``ndim`` dimensions whose values fit
    float32 (every array read is stored as float32)."""
    if not isinstance(x, np.ndarray) or not (np.issubdtype(x.dtype, np.floating)
                                            or np.issubdtype(x.dtype, np.integer)):
        kind = f"an array of {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        raise InputError(f"{path}: {what} is {kind}; expected a numeric numpy array")
    if x.ndim != ndim:
        raise InputError(f"{path}: {what} has shape {x.shape}; expected {ndim} dimensions")
    if not np.isfinite(x).all():
        raise InputError(f"{path}: {what} holds NaN or Inf values; expected finite numbers")
    big = float(np.abs(x).max(initial=0))
    if big > _FLOAT32_MAX:
        raise InputError(f"{path}: {what} holds a value of magnitude {big:.3g}; expected "
                         f"numbers that fit float32 (|x| <= {_FLOAT32_MAX:.3g})")
    return x


def _check_count(path: PathLike, what: str, found: int, n: int | None) -> None:
    if n is not None and found != n:
        raise InputError(f"{path}: holds {found} {what}; expected {n} (one per image)")


def _check_poses(path: PathLike, rot: Any, trans: Any, n: int | None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate poses; return float32 ``rot (N, 3, 3)`` and ``trans (N, 2)`` (fractions) | None."""
    if isinstance(rot, np.ndarray) and rot.ndim != 3:
        hint = " (Euler angles? convert them to matrices)" if rot.shape[-1:] == (3,) else ""
        raise InputError(f"{path}: rotations have shape {rot.shape}; expected (N, 3, 3) rotation "
                         f"matrices{hint}")
    rot = _float_array(rot, path, "rotations", 3).astype(np.float64)
    if rot.shape[1:] != (3, 3):
        raise InputError(f"{path}: rotations have shape {rot.shape}; expected (N, 3, 3)")
    with np.errstate(all="ignore"):  # huge entries overflow to inf: refused just below
        err = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2), initial=0.0)
        det = np.linalg.det(rot) if len(rot) else np.ones(0)
    bad = ~((err <= 1e-3) & (np.abs(det - 1) <= 1e-3))  # NaN is bad too
    if bad.any():
        k = int(np.nonzero(bad)[0][0])
        raise InputError(f"{path}: {int(bad.sum())} of {len(rot)} matrices are not rotations "
                         f"(first: #{k}, max |R R^T - I| = {err[k]:.3g}, det = {det[k]:.4g}); "
                         "expected orthonormal matrices with determinant +1")
    _check_count(path, "rotations", len(rot), n)
    if trans is None:
        return rot.astype(np.float32), None
    trans = _float_array(trans, path, "translations", 2)
    if trans.shape != (len(rot), 2):
        raise InputError(f"{path}: translations have shape {trans.shape}; expected "
                         f"({len(rot)}, 2) to match the {len(rot)} rotations")
    tmax = float(np.abs(trans).max(initial=0.0))
    if tmax > 1:
        raise InputError(f"{path}: translations must be fractions of the box (|t| <= 1); found "
                         f"max |t| = {tmax:.4g}; did you save pixels?")
    return rot.astype(np.float32), trans.astype(np.float32)


def read_poses(path: PathLike, n: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a cryoDRGN poses pickle: ``(rot (N, 3, 3), trans (N, 2) | None)``, float32.

    The file holds a tuple ``(rot, trans)`` or a bare ``(N, 3, 3)`` array (rotations only);
    ``trans`` is in fractions of the box. ``n``: the expected number of poses.
    """
    obj = load_pickle(path)
    if isinstance(obj, (tuple, list)) and len(obj) in (1, 2):
        return _check_poses(path, obj[0], obj[1] if len(obj) == 2 else None, n)
    if isinstance(obj, np.ndarray):
        return _check_poses(path, obj, None, n)
    kind = f"a {type(obj).__name__} of length {len(obj)}" if isinstance(obj, (tuple, list)) \
        else type(obj).__name__
    raise InputError(f"{path}: holds {kind}; expected a tuple (rot (N, 3, 3), trans (N, 2)) or "
                     "an (N, 3, 3) array of rotations")


def write_poses(path: PathLike, rot: np.ndarray, trans: np.ndarray | None = None) -> None:
    """Write poses as cryoDRGN does: a pickled tuple ``(rot, trans)``, or ``rot`` alone.

    ``rot (N, 3, 3)``; ``trans (N, 2)`` in fractions of the box. Validated before writing.
    """
    rot, trans = _check_poses(path, np.asarray(rot), None if trans is None else np.asarray(trans),
                              None)
    _dump_pickles(path, rot if trans is None else (rot, trans))




def _check_ctf(path: PathLike, ctf: Any, n: int | None) -> np.ndarray:
    """Validate CTF parameters ``(N, 9)``; return them as float32.

    Refused: a shape other than ``(N, 9)``, non-finite values, and per row a non-positive
    ``D``, ``apix``, ``volt`` or defocus (``dfu``, ``dfv``), a negative ``cs`` and ``w``
    outside [0, 1]. Defocus is in Å with underfocus positive (cryoDRGN's and RELION's
    convention). Zero or negative defocus (in focus, or overfocus) is not how single-particle
    images are taken but what a sign flip or a failed fit writes, and a model trained with it
    fits the wrong CTF; so it is refused, naming the row, rather than used silently.
    """
    ctf = _float_array(ctf, path, "CTF parameters", 2)
    if ctf.shape[1] != 9:
        raise InputError(f"{path}: CTF parameters have shape {ctf.shape}; expected (N, 9) columns "
                         f"[{', '.join(CTF_COLUMNS)}]")
    checks = [(0, lambda c: c > 0, "D (image size) must be positive"),
              (1, lambda c: c > 0, "apix (Å/pixel) must be positive"),
              (2, lambda c: c > 0, "dfu (defocus in Å, underfocus) must be positive"),
              (3, lambda c: c > 0, "dfv (defocus in Å, underfocus) must be positive"),
              (5, lambda c: c > 0, "volt (kV) must be positive"),
              (6, lambda c: c >= 0, "cs (mm) must be non-negative"),
              (7, lambda c: (c >= 0) & (c <= 1), "w (amplitude contrast) must be in [0, 1]")]
    for col, ok, what in checks:
        bad = np.flatnonzero(~ok(ctf[:, col]))
        if bad.size:
            raise InputError(f"{path}: CTF column {col} {what}; row {bad[0]} (0-based) has "
                             f"{ctf[bad[0], col]:g} (columns: {', '.join(CTF_COLUMNS)})")
    _check_count(path, "CTF rows", len(ctf), n)
    return ctf.astype(np.float32)


def read_ctf(path: PathLike, n: int | None = None) -> np.ndarray:
    """Read a cryoDRGN CTF pickle: float32 ``(N, 9)`` ``[D, apix, dfu, dfv, dfang, volt, cs, w,
    phase_shift]`` (pixels, Å, Å, Å, degrees, kV, mm, ratio, degrees)."""
    return _check_ctf(path, load_pickle(path), n)


def write_ctf(path: PathLike, ctf: np.ndarray) -> None:
    """Write CTF parameters ``(N, 9)`` as a float32 pickle (cryoDRGN's ``ctf.pkl``)."""
    _dump_pickles(path, _check_ctf(path, np.asarray(ctf), None))


def _check_z(path: PathLike, mu: Any, logvar: Any) -> tuple[np.ndarray, np.ndarray]:
    mu = _float_array(mu, path, "mu", 2)
    logvar = _float_array(logvar, path, "logvar", 2)
    if mu.shape != logvar.shape:
        raise InputError(f"{path}: mu has shape {mu.shape} but logvar {logvar.shape}; expected "
                         "the same (N, zdim)")
    return mu.astype(np.float32), logvar.astype(np.float32)


def read_z(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read cryoDRGN latents: two consecutive pickles ``mu (N, zdim)``, ``logvar (N, zdim)``."""
    return _check_z(path, *_load_pickles(path, 2))


def write_z(path: PathLike, mu: np.ndarray, logvar: np.ndarray) -> None:
    """Write latents as cryoDRGN's ``z.pkl``: ``mu (N, zdim)`` then ``logvar``, two pickles."""
    _dump_pickles(path, *_check_z(path, np.asarray(mu), np.asarray(logvar)))


# ----------------------------------------------------------------------------- RELION .star


@dataclass(frozen=True, eq=False)
class StarParticles:
    """Particles of a RELION ``.star`` file, in cryoDRGN's conventions.

    Attributes:
        image_names: ``_rlnImageName`` entries, ``000012@stack.mrcs``.
        rot: ``(N, 3, 3)`` float32 rotation matrices.
        trans: ``(N, 2)`` float32 translations in fractions of the box.
        ctf: ``(N, 9)`` float32 CTF parameters (columns as :data:`CTF_COLUMNS`).
        D: image side in pixels; apix: pixel size in Å (both of the images the star describes).
    """

    image_names: tuple[str, ...]
    rot: np.ndarray
    trans: np.ndarray
    ctf: np.ndarray
    D: int
    apix: float

    def __len__(self) -> int:
        return len(self.image_names)


_OPTICS_COLUMNS = ("rlnImagePixelSize", "rlnImageSize", "rlnVoltage", "rlnSphericalAberration",
                   "rlnAmplitudeContrast")
_REQUIRED = ("rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnDefocusU",
             "rlnDefocusV", "rlnDefocusAngle", "rlnVoltage", "rlnSphericalAberration",
             "rlnAmplitudeContrast")


def _read_star_blocks(path: Path) -> dict[str, pd.DataFrame]:
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a RELION .star file)")
    # starfile reads lines through the linecache module and empties that cache only after a
    # parse that succeeds: after one that fails, the next read of the same path would be
    # served the old lines, even once the file is fixed. So the cache is checked before and
    # emptied after every read.
    linecache.checkcache(str(path))
    try:
        blocks = starfile.read(path, always_dict=True)
    except Exception as e:
        raise InputError(f"{path}: could not parse it as a RELION .star file ({e})") from e
    finally:
        linecache.clearcache()
    return {k: v if isinstance(v, pd.DataFrame) else pd.DataFrame([v]) for k, v in blocks.items()}


def _particle_tables(blocks: dict[str, pd.DataFrame], path: Path
                     ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The particles table (with ``rlnImageName``, one row or more) and the optics table."""
    tables = [blocks["particles"]] if "particles" in blocks else []
    found = next((df for df in tables + list(blocks.values()) if "rlnImageName" in df.columns),
                 None)
    if found is None:
        raise InputError(f"{path}: no table with an _rlnImageName column; expected a RELION "
                         "particle table (data_particles, or a single data_ block)")
    if found.empty:
        raise InputError(f"{path}: the particle table has no rows; expected one per image")
    return found, blocks.get("optics")


def _merge_optics(p: pd.DataFrame, optics: pd.DataFrame | None, path: Path) -> pd.DataFrame:
    """Copy each particle's optics-group values into ``p`` (particle values take precedence)."""
    if optics is None or optics.empty:
        return p
    p = p.copy()
    if "rlnOpticsGroup" not in p.columns or "rlnOpticsGroup" not in optics.columns:
        if len(optics) != 1:
            raise InputError(f"{path}: {len(optics)} optics groups but no _rlnOpticsGroup column "
                             "to tell them apart")
        for col in _OPTICS_COLUMNS:
            if col in optics.columns and col not in p.columns:
                p[col] = optics[col].iloc[0]
        return p
    table = optics.set_index("rlnOpticsGroup")
    twice = table.index[table.index.duplicated()]
    if len(twice):
        raise InputError(f"{path}: data_optics defines optics group {twice[0]} more than "
                         "once; expected one row per _rlnOpticsGroup")
    unknown = set(p["rlnOpticsGroup"]) - set(table.index)
    if unknown:
        raise InputError(f"{path}: particles refer to optics group(s) "
                         f"{sorted(unknown, key=str)} that data_optics does not define")
    for col in _OPTICS_COLUMNS:
        if col in table.columns and col not in p.columns:
            p[col] = p["rlnOpticsGroup"].map(table[col]).to_numpy()
    return p


def _numeric(p: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    x = pd.to_numeric(p[col], errors="coerce").to_numpy(dtype=np.float64)
    if not np.isfinite(x).all():
        raise InputError(f"{path}: column _{col} has missing or non-numeric values")
    return x


def _one_value(x: np.ndarray, name: str, path: Path, rtol: float = 0.0) -> float:
    with np.errstate(over="ignore"):  # a spread past float64's range is still a spread
        spread = np.abs(x - x[0]).max()  # x has a value: tables without rows are refused
    if spread > rtol * abs(x[0]):
        raise InputError(f"{path}: particles have different {name} ({np.unique(x)[:5]}); "
                         f"expected one {name} for the whole data set")
    return float(x[0])


def read_star_particles(path: PathLike, D: int | None = None,
                        apix: float | None = None) -> StarParticles:
    """Read poses and CTF of a RELION 3.0 or 3.1+ ``.star`` file, as cryoDRGN's parse scripts do.

    Angles ``(_rlnAngleRot, _rlnAngleTilt, _rlnAnglePsi)`` become rotations (:func:`R_from_relion`);
    translations ``_rlnOriginX/YAngst`` (Å, / apix) or ``_rlnOriginX/Y`` (pixels), divided by
    ``D``, become fractions of the box (no sign flip); missing origins are 0. ``D`` and ``apix``
    (image size in pixels and Å/pixel of the images the star describes) come from the optics table;
    the arguments override it and are required for an old single-block file without them.
    """
    path = Path(path)
    particles, optics = _particle_tables(_read_star_blocks(path), path)
    p = _merge_optics(particles, optics, path)
    missing = [f"_{c}" for c in _REQUIRED if c not in p.columns]
    if missing:
        raise InputError(f"{path}: missing required column(s) {', '.join(missing)}")
    n = len(p)
    if D is None:
        if "rlnImageSize" not in p.columns:
            raise InputError(f"{path}: no _rlnImageSize (an old single-block RELION file?); "
                             "pass D= (the image size in pixels)")
        D = _one_value(_numeric(p, "rlnImageSize", path), "image sizes", path)
    if apix is None:
        if "rlnImagePixelSize" in p.columns:
            px = _numeric(p, "rlnImagePixelSize", path)
        elif {"rlnDetectorPixelSize", "rlnMagnification"} <= set(p.columns):  # RELION 3.0
            px = (_numeric(p, "rlnDetectorPixelSize", path) * 1e4
                  / _numeric(p, "rlnMagnification", path))
        else:
            raise InputError(f"{path}: no _rlnImagePixelSize (an old single-block RELION file?); "
                             "pass apix= (the pixel size in Å)")
        apix = _one_value(px, "pixel sizes", path, rtol=1e-4)
    if not (D >= 2 and D % 2 == 0 and apix > 0):  # D: a whole even number
        raise InputError(f"{path}: image size D = {D:g} and pixel size {apix:g} Å; expected an "
                         "even D and a positive pixel size")
    D = int(D)
    euler = np.stack([_numeric(p, c, path) for c in ("rlnAngleRot", "rlnAngleTilt",
                                                      "rlnAnglePsi")], axis=1)
    rot = R_from_relion(euler)
    trans = np.zeros((n, 2))
    with np.errstate(all="ignore"):  # an overflow is non-finite and refused by _check_poses
        if {"rlnOriginXAngst", "rlnOriginYAngst"} <= set(p.columns):
            trans[:, 0] = _numeric(p, "rlnOriginXAngst", path) / apix
            trans[:, 1] = _numeric(p, "rlnOriginYAngst", path) / apix
        elif {"rlnOriginX", "rlnOriginY"} <= set(p.columns):
            trans[:, 0] = _numeric(p, "rlnOriginX", path)
            trans[:, 1] = _numeric(p, "rlnOriginY", path)
        trans /= D
    rot32, trans32 = _check_poses(path, rot, trans, None)
    phase = _numeric(p, "rlnPhaseShift", path) if "rlnPhaseShift" in p.columns else np.zeros(n)
    ctf = np.stack([np.full(n, float(D)), np.full(n, apix),
                    *(_numeric(p, c, path) for c in ("rlnDefocusU", "rlnDefocusV",
                                                     "rlnDefocusAngle", "rlnVoltage",
                                                     "rlnSphericalAberration",
                                                     "rlnAmplitudeContrast")),
                    phase], axis=1)
    names = tuple(p["rlnImageName"].astype(str))
    return StarParticles(names, rot32, trans32, _check_ctf(path, ctf, None), D, float(apix))


def write_star(path: PathLike, image_names: Sequence[str], rot: np.ndarray,
               trans: np.ndarray | None, ctf: np.ndarray, D: int, apix: float) -> None:
    """Write particles as a RELION 3.1 ``.star`` (data_optics + data_particles), atomically.

    ``rot (N, 3, 3)``; ``trans (N, 2)`` fractions of the box (written as ``_rlnOriginX/YAngst``);
    ``ctf (N, 9)`` (its voltage, cs and amplitude contrast form the optics groups; its D and apix
    columns are ignored in favour of ``D`` and ``apix``). :func:`read_star_particles` reads it back.
    """
    names = [str(s) for s in image_names]
    n = len(names)
    rot, trans = _check_poses(path, np.asarray(rot), None if trans is None else np.asarray(trans),
                              n)
    ctf = _check_ctf(path, np.asarray(ctf), n).astype(np.float64)
    trans = np.zeros((n, 2)) if trans is None else trans.astype(np.float64)
    with warnings.catch_warnings():  # tilt 0 or 180: any split of rot + psi is a valid answer
        warnings.filterwarnings("ignore", "Gimbal lock", UserWarning)
        euler = R_to_relion(rot.astype(np.float64))
    groups, group_of = np.unique(ctf[:, 5:8], axis=0, return_inverse=True)
    optics = pd.DataFrame({
        "rlnOpticsGroupName": [f"opticsGroup{g + 1}" for g in range(len(groups))],
        "rlnOpticsGroup": np.arange(1, len(groups) + 1),
        "rlnImagePixelSize": float(apix),
        "rlnImageSize": int(D),
        "rlnImageDimensionality": 2,
        "rlnVoltage": groups[:, 0],
        "rlnSphericalAberration": groups[:, 1],
        "rlnAmplitudeContrast": groups[:, 2],
    })
    particles = pd.DataFrame({
        "rlnImageName": names,
        "rlnAngleRot": euler[:, 0], "rlnAngleTilt": euler[:, 1], "rlnAnglePsi": euler[:, 2],
        "rlnOriginXAngst": trans[:, 0] * D * apix, "rlnOriginYAngst": trans[:, 1] * D * apix,
        "rlnDefocusU": ctf[:, 2], "rlnDefocusV": ctf[:, 3], "rlnDefocusAngle": ctf[:, 4],
        "rlnPhaseShift": ctf[:, 8],
        "rlnOpticsGroup": group_of.reshape(-1) + 1,
    })
    with atomic_path(path) as tmp:
        starfile.write({"optics": optics, "particles": particles}, tmp)
