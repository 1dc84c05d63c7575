"""MNIST for the classic-VAE control (SPEC §2.3; the paper's App. B), with an offline stand-in.

:func:`load_mnist` reads real MNIST from local files, named by ``path`` or by the environment
variable ``AMPCHECK_MNIST`` (a file or a folder):

- IDX files, gzipped or not: ``train-images-idx3-ubyte[.gz]`` / ``train-labels-idx1-ubyte[.gz]``
  (``t10k-...`` for ``split="test"``; the ``train-images.idx3-ubyte`` spelling is accepted too),
  in the folder itself, in torchvision's ``<root>/MNIST/raw/`` or in ``<root>/raw/``;
- keras's ``mnist.npz`` (``x_train, y_train, x_test, y_test``), read with ``allow_pickle=False``.

Without either, it falls back to the offline control: scikit-learn's bundled handwritten digits
(1,797 images, 8 x 8, values 0..16) rescaled to [0, 1] and brought to MNIST's geometry, each digit
zoomed bilinearly to 20 x 20 and centred in a 28 x 28 frame, as MNIST's digits sit in a 20 x 20
box in a 28 x 28 frame. Its split is fixed: image ``i`` is a test image when ``i % 5 == 4``
(359 images), a training image otherwise (1,438). :attr:`MnistData.source` always says which data
set was read, so that every report can.

:class:`MnistDataset` serves the images to the training loop with the interface of
:class:`~ampcheck.data.particles.ParticleDataset` (``get_batch``, ``subset``, ``split``, ...).
"""

from __future__ import annotations

import gzip
import math
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ampcheck.data.views import IndexedView
from ampcheck.errors import ConfigError, InputError

__all__ = ["ENV_VAR", "MnistData", "MnistDataset", "load_digits_standin", "load_mnist",
           "read_idx"]

ENV_VAR = "AMPCHECK_MNIST"
SIDE = 28  # MNIST's image side in pixels
DIGIT_BOX = 20  # MNIST's digits are size-normalised to a 20 x 20 box, centred in 28 x 28
SPLITS = {"train": "train", "test": "t10k"}  # split -> IDX file prefix
IDX_MAGIC = {2051: ("images", 3), 2049: ("labels", 1)}  # unsigned bytes, 3 or 1 dimensions
_IDX_NAME = re.compile(r"^(train|t10k)-(images|labels)([-.])idx([13])-ubyte(\.gz)?$")

PathLike = str | os.PathLike


@dataclass(frozen=True, eq=False)
class MnistData:
    """Images and labels of one split.

    Attributes:
        images: ``(N, 28, 28)`` float32 in [0, 1] (ink is 1).
        labels: ``(N,)`` int64, the digit.
        source: which data set was read, e.g. ``"MNIST train (IDX, /data/train-images...)"``.
    """

    images: np.ndarray
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.labels)


# ----------------------------------------------------------------------------- IDX


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (whatever its name)."""
    gz = False
    try:
        with open(path, "rb") as f:
            gz = f.read(2) == b"\x1f\x8b"
        if gz:
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{path}: could not read it ({e}); expected a complete "
                         f"{'gzip-compressed ' if gz else ''}IDX file") from e


def read_idx(path: PathLike, magic: int) -> np.ndarray:
    """One IDX file of unsigned bytes (gzipped or not) as a uint8 array of its dimensions.

    The format: a big-endian int32 magic number (``2051`` for 3-D images, ``2049`` for 1-D
    labels: two zero bytes, ``0x08`` for unsigned bytes, the number of dimensions), one big-endian
    int32 per dimension, then the data in C order.
    """
    path = Path(path)
    what, ndim = IDX_MAGIC[magic]
    expected = f"an IDX {what} file (magic {magic}, {ndim} dimension{'s' * (ndim > 1)})"
    buf = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise InputError(f"{path}: {len(buf)} bytes, shorter than the {header}-byte header of "
                         f"{expected}")
    found = int.from_bytes(buf[:4], "big")
    if found != magic:
        raise InputError(f"{path}: magic number {found} (0x{found:08x}); expected {expected}")
    dims = tuple(int.from_bytes(buf[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = math.prod(dims)  # Python ints: a corrupt header cannot overflow it
    if len(buf) - header != size:
        kind = "truncated" if len(buf) - header < size else "too long"
        raise InputError(f"{path}: {len(buf) - header} data bytes after the header, expected "
                         f"{size} for dimensions {dims} ({kind})")
    return np.frombuffer(buf, np.uint8, size, header).reshape(dims)


def _check_pair(images: np.ndarray, labels: np.ndarray, img_name: str, lab_name: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise InputError(f"{img_name}: images of shape {images.shape[1:]}; expected "
                         f"{SIDE} x {SIDE} MNIST images")
    if labels.ndim != 1:
        raise InputError(f"{lab_name}: labels of shape {labels.shape}; expected one per image")
    if len(images) != len(labels):
        raise InputError(f"{img_name} has {len(images)} images but {lab_name} has "
                         f"{len(labels)} labels; expected one label per image")


def _load_idx_pair(img_path: Path, lab_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(img_path, 2051)
    labels = read_idx(lab_path, 2049)
    _check_pair(images, labels, str(img_path), str(lab_path))
    return images.astype(np.float32) / np.float32(255), labels.astype(np.int64)


def _idx_candidates(folder: Path, prefix: str, what: str) -> list[Path]:
    n = "3" if what == "images" else "1"
    names = [f"{prefix}-{what}{sep}idx{n}-ubyte{gz}" for sep in "-." for gz in ("", ".gz")]
    return [folder / name for name in names]


def _find_in_folder(root: Path, split: str) -> tuple[str, Path, Path | None]:
    """``("idx", images, labels)`` or ``("npz", mnist.npz, None)`` for a folder."""
    prefix = SPLITS[split]
    for folder in (root, root / "MNIST" / "raw", root / "raw"):
        imgs = [p for p in _idx_candidates(folder, prefix, "images") if p.is_file()]
        labs = [p for p in _idx_candidates(folder, prefix, "labels") if p.is_file()]
        if imgs or labs:
            if not imgs:
                raise InputError(f"{folder}: has {labs[0].name} but no {prefix}-images-idx3-ubyte"
                                 "[.gz]; expected the images next to the labels")
            if not labs:
                raise InputError(f"{folder}: has {imgs[0].name} but no {prefix}-labels-idx1-ubyte"
                                 "[.gz]; expected the labels next to the images")
            return "idx", imgs[0], labs[0]  # uncompressed first: torchvision keeps both
    if (root / "mnist.npz").is_file():
        return "npz", root / "mnist.npz", None
    raise InputError(f"{root}: no MNIST {split} files; expected {prefix}-images-idx3-ubyte[.gz] "
                     f"and {prefix}-labels-idx1-ubyte[.gz] in it, in MNIST/raw/ or raw/, "
                     "or a mnist.npz")


def _resolve_file(path: Path, split: str) -> tuple[str, Path, Path | None]:
    if path.suffix.lower() == ".npz":
        return "npz", path, None
    m = _IDX_NAME.match(path.name)
    if m is None:
        raise InputError(f"{path}: not a recognised MNIST file; expected an IDX file named like "
                         "train-images-idx3-ubyte[.gz], a .npz with x_train, y_train, x_test, "
                         "y_test, or a folder holding them")
    prefix, what, sep, _, gz = m.groups()
    if prefix != SPLITS[split]:
        raise ConfigError(f"{path} holds the {'test' if prefix == 't10k' else 'train'} split "
                          f"but split={split!r} was asked; pass the folder, or the split's file")
    gz = gz or ""
    img = path.with_name(f"{prefix}-images{sep}idx3-ubyte{gz}")
    lab = path.with_name(f"{prefix}-labels{sep}idx1-ubyte{gz}")
    for p, kind in ((img, "images"), (lab, "labels")):
        if not p.is_file():
            raise InputError(f"{p}: file not found; expected the {kind} next to {path.name}")
    return "idx", img, lab


# ----------------------------------------------------------------------------- npz


def _load_npz(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    xk, yk = f"x_{split}", f"y_{split}"
    try:
        obj = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InputError(f"{path}: could not read it as an .npz ({e}); expected keras's "
                         "mnist.npz with x_train, y_train, x_test, y_test") from e
    if not isinstance(obj, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: holds a single array; expected an .npz with x_train, "
                         "y_train, x_test, y_test")
    with obj:
        missing = [k for k in (xk, yk) if k not in obj.files]
        if missing:
            raise InputError(f"{path}: no {', '.join(missing)} (it has "
                             f"{', '.join(obj.files) or 'no arrays'}); expected x_train, "
                             "y_train, x_test, y_test as in keras's mnist.npz")
        try:
            x, y = obj[xk], obj[yk]
        except Exception as e:  # object arrays need pickle, which is refused
            raise InputError(f"{path}: could not read {xk} / {yk} ({e}); expected plain "
                             "numeric arrays") from e
    if x.ndim == 2 and x.shape[1] == SIDE * SIDE:
        x = x.reshape(-1, SIDE, SIDE)
    _check_pair(x, y, f"{path} [{xk}]", f"{path} [{yk}]")
    if not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"{path}: {yk} has dtype {y.dtype}; expected integer labels")
    return _to_unit(x, f"{path} [{xk}]"), y.astype(np.int64)


def _to_unit(x: np.ndarray, name: str) -> np.ndarray:
    """Integer pixels 0..255 -> /255; float pixels must already be in [0, 1]."""
    if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
        if x.size and (x.min() < 0 or x.max() > 255):
            raise InputError(f"{name}: integer pixels from {x.min()} to {x.max()}; expected "
                             "0..255")
        return x.astype(np.float32) / np.float32(255)
    if not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{name}: pixels of dtype {x.dtype}; expected uint8 or float in [0, 1]")
    finite = np.isfinite(x)
    if not finite.all():
        raise InputError(f"{name}: {int((~finite).sum())} pixels are NaN or Inf; expected "
                         "finite pixels in [0, 1]")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise InputError(f"{name}: float pixels must be in [0, 1] (found {x.min()} to "
                         f"{x.max()})")
    return x.astype(np.float32)


# ----------------------------------------------------------------------------- digits


def load_digits_standin(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8 x 8 digits in MNIST's geometry: ``(N, 28, 28)`` float32, ``(N,)`` int64.

    Pixels ``/ 16`` to [0, 1]; each digit zoomed to 20 x 20 (``scipy.ndimage.zoom``, order 1,
    corners aligned) and clipped to [0, 1], in rows and columns 4..23 of a zero 28 x 28 frame
    (centre 13.5, as MNIST's box). Split: image ``i`` is in "test" when ``i % 5 == 4``.
    """
    from scipy.ndimage import zoom
    from sklearn.datasets import load_digits

    _check_split(split)
    digits = load_digits()
    keep = (np.arange(len(digits.target)) % 5 == 4) == (split == "test")
    small = digits.images[keep] / 16.0  # (N, 8, 8), 0..16 -> [0, 1]
    box = np.clip(zoom(small, (1, DIGIT_BOX / 8, DIGIT_BOX / 8), order=1), 0, 1)
    images = np.zeros((len(small), SIDE, SIDE), np.float32)
    o = (SIDE - DIGIT_BOX) // 2
    images[:, o:o + DIGIT_BOX, o:o + DIGIT_BOX] = box
    return images, digits.target[keep].astype(np.int64)


# ----------------------------------------------------------------------------- entry point


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")


def load_mnist(path: PathLike | None = None, split: str = "train",
               limit: int | None = None) -> MnistData:
    """Images and labels of MNIST's ``split`` (``"train"`` or ``"test"``).

    Args:
        path: a folder (IDX files, torchvision's ``MNIST/raw/``, or else ``mnist.npz``), an IDX file
            of the split (its partner is found next to it) or an ``.npz``. None: the environment
            variable ``AMPCHECK_MNIST``; when that is unset or empty, the offline scikit-learn
            digits stand-in (see the module's docstring).
        split: ``"train"`` or ``"test"`` (``t10k`` files).
        limit: keep only the first ``limit`` images.

    Raises:
        InputError: a missing, malformed or inconsistent file (the message names it).
        ConfigError: a bad ``split`` or ``limit``, or an IDX file of the other split.
    """
    _check_split(split)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer))
                              or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    origin = ""
    if path is None and os.environ.get(ENV_VAR):
        path, origin = os.environ[ENV_VAR], f" (from ${ENV_VAR})"
    if path is None:
        images, labels = load_digits_standin(split)
        desc = (f"scikit-learn digits upsampled to 28x28 (offline stand-in for MNIST), {split} "
                "split (every 5th image is test)")
    else:
        p = Path(path).expanduser()
        if not p.exists():
            raise InputError(f"{p}{origin}: not found; expected an MNIST folder, IDX file or "
                             ".npz")
        kind, first, second = _find_in_folder(p, split) if p.is_dir() else _resolve_file(p, split)
        if kind == "idx":
            assert second is not None
            images, labels = _load_idx_pair(first, second)
        else:
            images, labels = _load_npz(first, split)
        desc = f"MNIST {split} ({kind.upper() if kind == 'idx' else 'npz'}, {first})"
    total = len(labels)
    if limit is not None and limit < total:
        images, labels = images[:limit], labels[:limit]
        desc += f", first {limit} of {total} images"
    return MnistData(np.ascontiguousarray(images), np.ascontiguousarray(labels), desc)


# ----------------------------------------------------------------------------- dataset


class MnistDataset(IndexedView):
    """Digit images with labels, served as the training loop expects of any data set.

    Args:
        images: ``(N, D, D)`` pixels, floats in [0, 1] or integers 0..255 (divided by 255);
            kept as float32.
        labels: ``(N,)`` integer digits, or None.
        source: which data set the images are (reports print it).
        seed: the default seed of :meth:`split`.

    Items (``ds[i]``) are dicts: ``y`` float32 ``(D, D)`` image, ``index`` (its index in the
    full data set), ``label``; :meth:`get_batch` returns the same with a leading batch axis.
    """

    family = "mnist"  # the kind of images (ampcheck.kinds.data_kind)

    def __init__(self, images: np.ndarray, labels: np.ndarray | None = None, *,
                 source: str = "arrays", seed: int = 0):
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1] != images.shape[2] or images.shape[1] < 1:
            raise InputError(f"{source}: images of shape {images.shape}; expected (N, D, D)")
        images = _to_unit(images, source) if images.dtype != np.float32 else images
        if not np.isfinite(images).all() or (images.size and (images.min() < 0
                                                              or images.max() > 1)):
            raise InputError(f"{source}: pixels must be finite and in [0, 1] (Bernoulli "
                             "targets)")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(images),) or not np.issubdtype(labels.dtype, np.integer):
                raise InputError(f"{source}: labels of shape {labels.shape} and dtype "
                                 f"{labels.dtype}; expected ({len(images)},) integers")
            labels = labels.astype(np.int64)
        self._images, self._labels = images, labels
        self.source, self.seed = str(source), int(seed)
        self._idx = np.arange(len(images))

    @classmethod
    def from_data(cls, data: MnistData, seed: int = 0) -> MnistDataset:
        return cls(data.images, data.labels, source=data.source, seed=seed)

    @classmethod
    def load(cls, path: PathLike | None = None, split: str = "train", limit: int | None = None,
             seed: int = 0) -> MnistDataset:
        """:func:`load_mnist` then wrap it."""
        return cls.from_data(load_mnist(path, split, limit), seed=seed)

    # ------------------------------------------------------------------ access
    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """``y (B, D, D)`` float32 images, ``index (B,)`` and ``label (B,)`` int64, in the
        order asked for."""
        orig = self._idx[self._local(indices)]
        out = {"y": self.preprocess(torch.from_numpy(self._images[orig])),
               "index": torch.from_numpy(orig.astype(np.int64))}
        if self._labels is not None:
            out["label"] = torch.from_numpy(self._labels[orig])
        return out

    def preprocess(self, imgs: torch.Tensor) -> torch.Tensor:
        """Raw images ``(B, D, D)`` -> the ``y`` of :meth:`get_batch`: the identity here (the
        hook through which transformed copies and twins reach a model as the data's do)."""
        return imgs

    def images(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Raw images ``(B, D, D)`` float32 (a copy)."""
        return self._images[self._idx[self._local(indices)]]

    # ------------------------------------------------------------------ properties
    @property
    def D(self) -> int:
        """Image side in pixels (28 for MNIST)."""
        return int(self._images.shape[1])

    @property
    def labels(self) -> np.ndarray | None:
        """``(n,)`` int64 digits, or None."""
        return None if self._labels is None else self._labels[self._idx]

    @property
    def truth(self) -> dict[str, np.ndarray]:
        """``{"z_class": labels}``: the digit is the discrete ground truth (empty without)."""
        return {} if self._labels is None else {"z_class": self._labels[self._idx]}

    def __repr__(self) -> str:
        return f"MnistDataset({self.source!r}, n={self.n}, D={self.D})"
