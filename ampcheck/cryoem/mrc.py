"""MRC files: particle stacks and volumes, read memory-mapped through ``mrcfile`` and written
atomically.

* :func:`write_stack` / :class:`StackWriter`: float32 image stacks ``(N, D, D)`` (the writer
  streams a stack larger than memory); :func:`write_mrc` / :func:`read_mrc`: volumes
  ``(D, D, D)`` indexed ``[z, y, x]``; the voxel size is in Å/pixel.
* :func:`open_mrc` / :func:`inspect_stack`: the strict opening that every reader of an MRC
  file goes through (:mod:`ampcheck.cryoem.stack` serves the images through them).

MRC files are read strictly: a header whose fields do not describe exactly the bytes of the file
(a field out of range, a truncated file, bytes after the data) is refused (see
:func:`_check_mrc_layout`), and every problem becomes one :class:`~ampcheck.errors.InputError`
naming the file; no warning of mrcfile's reaches the user.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mrcfile
import mrcfile.utils
import numpy as np
from mrcfile.dtypes import HEADER_DTYPE

from ampcheck.errors import InputError
from ampcheck.files import atomic_path

__all__ = ["StackWriter", "write_stack", "write_mrc", "read_mrc", "open_mrc", "inspect_stack",
           "StackFile", "STACK_SUFFIXES"]

PathLike = str | os.PathLike

STACK_SUFFIXES = (".mrcs", ".mrc")  # file names read as one MRC stack


@dataclass(frozen=True)
class StackFile:
    """One validated MRC stack: ``n`` images of ``D x D`` pixels of ``apix`` Å (None: the
    header gives no size)."""

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


def open_mrc(path: Path, what: str = "an MRC image stack") -> Any:
    """``path`` memory-mapped read-only by ``mrcfile`` (strict, after
    :func:`_check_mrc_layout`): the open ``MrcMmap``, a context manager the caller closes.
    Every failure, and any warning ``mrcfile`` would print, becomes one :class:`InputError`
    naming the file and ``what`` it should hold."""
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


def inspect_stack(path: Path) -> StackFile:
    """Open ``path`` once to validate it as an image stack ``(N, D, D)`` (or one image
    ``(D, D)``) of real, square, even-sided images; its count, size and pixel size. Raises
    :class:`InputError` naming the file otherwise."""
    with open_mrc(path) as mrc:
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
        return StackFile(path, n, int(nx), _apix(mrc))


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
    with open_mrc(path, "an MRC volume") as mrc:
        if not np.issubdtype(mrc.data.dtype, np.number) or np.iscomplexobj(mrc.data):
            raise InputError(f"{path}: found {mrc.data.dtype} values; expected a real-valued "
                             "MRC volume")
        return np.array(mrc.data, dtype=np.float32), _apix(mrc)
