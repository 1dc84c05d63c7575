"""Particle images with poses and CTF, served lazily and preprocessed as cryoDRGN does.

:class:`ParticleDataset` reads images from an :class:`~ampcheck.cryoem.stack.ImageStack` on demand
(so a stack larger than memory trains with bounded memory) and turns each real-space image
``(D, D)`` into the symmetrised, normalised centred Hartley image ``(D+1, D+1)`` that cryoDRGN
trains on, exactly as cryoDRGN 4.3.1's ``ImageDataset._process``:

1. multiply by a soft circular window (1 inside ``window_r``, 0 beyond 0.99 of the half box);
2. invert the contrast (``x -1``; on by default, as ``cryodrgn train_vae --invert-data``);
3. centred 2-D Hartley transform, then pad to ``(D+1, D+1)`` (:func:`symmetrize_ht`);
4. ``(h - 0) / std``, with ``std`` the standard deviation of the Hartley images of an evenly
   strided sample of up to 1,000 images (cryoDRGN's ``estimate_normalization``, which neither
   windows nor needs to invert its sample), unless ``norm=(mean, std)`` is given.

Poses come in as the files hold them (translations in fractions of the box) and go out in pixels
(``fraction * D``), as cryoDRGN uses them. CTF rows whose ``D`` column differs from the stack's
(a downsampled stack) are rescaled to the stack's size at the same box size in Å, as cryoDRGN's
``load_ctf_for_training`` does.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ampcheck.contracts import TruthVolume
from ampcheck.cryoem.fft import ht2_center, symmetrize_ht
from ampcheck.cryoem.indices import read_ind
from ampcheck.cryoem.lattice import radial_window
from ampcheck.cryoem.poses import check_ctf, check_poses, read_ctf, read_poses
from ampcheck.cryoem.stack import ImageStack, read_stack
from ampcheck.cryoem.star import read_star_particles
from ampcheck.data.synthetic import GENERATORS
from ampcheck.data.views import IndexedView
from ampcheck.errors import ConfigError, InputError, first_line

__all__ = ["ParticleDataset", "estimate_normalization"]

PathLike = str | os.PathLike


def _preprocess(imgs: torch.Tensor, window: torch.Tensor | None, invert: bool) -> torch.Tensor:
    """Real-space images ``(B, D, D)`` -> symmetrised centred Hartley images ``(B, D+1, D+1)``."""
    if window is not None:
        imgs = imgs * window
    if invert:
        imgs = -imgs
    return symmetrize_ht(ht2_center(imgs))


def estimate_normalization(stack: ImageStack, n: int = 1000, chunk: int = 256
                           ) -> tuple[float, float]:
    """cryoDRGN's Hartley-space normalisation ``(0, std)`` of a stack.

    ``std`` is the (unbiased) standard deviation over all pixels of the symmetrised centred
    Hartley transforms of images ``0, s, 2s, ...`` with ``s = N // min(n, N)``, unwindowed (as
    cryoDRGN 4.3.1; contrast inversion does not change it). Computed in chunks, in float64.
    """
    N = len(stack)
    idx = np.arange(0, N, N // min(n, N))
    count, mean, m2 = 0, 0.0, 0.0
    for s in range(0, len(idx), chunk):
        h = _preprocess(torch.from_numpy(stack.read(idx[s:s + chunk])), None, False).double()
        c, cm = h.numel(), float(h.mean())
        cm2 = float(((h - cm) ** 2).sum())
        delta, total = cm - mean, count + c
        m2 += cm2 + delta**2 * count * c / total  # Chan et al.'s parallel variance update
        mean += delta * c / total
        count = total
    return 0.0, float(np.sqrt(m2 / max(count - 1, 1)))


class ParticleDataset(IndexedView):
    """Particle images (lazy) with optional poses, CTF and ground truth.

    Args:
        stack: the images, ``N`` real-space ``(D, D)``.
        rot: ``(N, 3, 3)`` rotation matrices. trans: ``(N, 2)`` translations, fractions of the box.
        ctf: ``(N, 9)`` ``[D, apix, dfu, dfv, dfang, volt, cs, w, phase_shift]``.
        truth: per-image ground truth, arrays with a leading ``N`` (e.g. ``z_continuous``).
        invert: multiply images by -1 (cryoDRGN's ``--invert-data``; on by default).
        window, window_r: the soft circular real-space window and its inner radius.
        norm: ``(mean, std)`` for the Hartley images; estimated from the stack when None.
        seed: the default seed of :meth:`split`.

    Items (``ds[i]``) are dicts: ``y`` float32 ``(D+1, D+1)`` processed Hartley image, ``index``
    (the image's index in the file), ``rot (3, 3)``, ``trans (2,)`` in pixels, ``ctf (9,)``;
    parts not given are omitted. :meth:`get_batch` returns the same with a leading batch axis.
    """

    family = "cryoem"  # the kind of images (ampcheck.kinds.data_kind)
    _draw: int | None = None  # a noise draw's view serves re-noised clean images (noise_draw)

    def __init__(self, stack: ImageStack, rot: np.ndarray | None = None,
                 trans: np.ndarray | None = None, ctf: np.ndarray | None = None,
                 truth: Mapping[str, np.ndarray] | None = None, *, invert: bool = True,
                 window: bool = True, window_r: float = 0.85,
                 norm: tuple[float, float] | None = None, seed: int = 0,
                 _names: Mapping[str, str] | None = None):
        names = {"stack": str(stack.path), "poses": "the poses", "ctf": "the CTF",
                 "truth": "the ground truth", **(_names or {})}
        N, D = len(stack), stack.D
        self._stack = stack
        self.invert, self.seed = bool(invert), int(seed)

        def check_count(what: str, found: int, unit: str) -> None:
            if found != N:
                raise InputError(f"{names['stack']} has {N} images but {names[what]} has {found} "
                                 f"{unit}; expected one per image")

        self._rot = self._trans = self._ctf = None
        if rot is not None:
            self._rot, self._trans = check_poses(names["poses"], np.asarray(rot),
                                                  None if trans is None else np.asarray(trans),
                                                  None)
            check_count("poses", len(self._rot), "poses")
        elif trans is not None:
            raise InputError(f"{names['poses']}: translations given without rotations")
        if ctf is not None:
            self._ctf = self._rescale_ctf(check_ctf(names["ctf"], np.asarray(ctf), None),
                                          D, names["ctf"])
            check_count("ctf", len(self._ctf), "CTF rows")
        self._truth = {}
        for key, value in (truth or {}).items():
            value = _check_truth(names["truth"], str(key), value)
            check_count("truth", len(value), f"values of {key!r}")
            self._truth[str(key)] = value
        if window and not 0 < window_r <= 0.99:
            raise ConfigError(f"window_r must be in (0, 0.99], got {window_r}")
        self._window = (torch.from_numpy(radial_window(D, window_r, 0.99).astype(np.float32))
                        if window else None)
        if norm is None:
            norm = estimate_normalization(stack)
        mean, std = (float(x) for x in norm)
        if not np.isfinite([mean, std]).all() or std <= 0:
            raise InputError(f"{names['stack']}: normalisation (mean, std) = ({mean}, {std}); "
                             "expected a finite mean and a positive std (are the images blank, "
                             "or their values too large?)")
        self._norm = (mean, std)
        self._idx = np.arange(N)
        _warn_apix_mismatch(self)

    @staticmethod
    def _rescale_ctf(ctf: np.ndarray, D: int, name: str) -> np.ndarray:
        """Express CTF rows for ``D``-pixel images (same box in Å), as cryoDRGN does."""
        if not len(ctf):
            return ctf
        box = ctf[:, 0].astype(np.float64) * ctf[:, 1]
        if np.abs(box - box[0]).max() > 1e-3 * box[0]:
            raise InputError(f"{name}: CTF rows describe boxes of different sizes (D x apix from "
                             f"{box.min():.4g} to {box.max():.4g} Å); expected one box size")
        ctf = ctf.copy()
        ctf[:, 1] = box / D
        ctf[:, 0] = D
        return ctf

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_files(cls, particles: PathLike, poses: PathLike | None = None,
                   ctf: PathLike | None = None, truth: PathLike | None = None,
                   datadir: PathLike | None = None, star_D: int | None = None,
                   star_apix: float | None = None, ind: PathLike | None = None,
                   **kw: Any) -> ParticleDataset:
        """Open particles as cryoDRGN's ``train_vae`` takes them: a stack (``.mrcs``/``.mrc``,
        a ``.txt`` list, a RELION ``.star``) with poses and CTF pickles, an optional index
        file ``ind`` and an optional ground truth ``.npz``.

        A ``.star`` supplies poses and CTF itself (its image size and pixel size from its
        optics table; ``star_D`` / ``star_apix`` override them, and an old single-block star
        without them takes the stack's); ``poses`` / ``ctf`` files given override it.
        ``datadir``: where the stacks that a ``.star`` names live (see
        :func:`~ampcheck.cryoem.stack.read_stack`; not used for other files, as in cryoDRGN).
        ``ind`` (cryoDRGN's ``--ind``): a pickled index array; the data set is then images
        ``ind`` of the stack, in that order, and poses, CTF and truth that hold one row per
        image of the whole stack are taken at ``ind`` too (rows already selected, one per
        index, are taken as they are). ``kw`` go to the constructor (normalisation, when
        estimated, is estimated on the selected images, as cryoDRGN's).
        """
        stack = read_stack(particles, datadir)
        is_star = Path(particles).suffix.lower() == ".star"
        if datadir is not None and not is_star:
            warnings.warn(f"datadir {datadir} is not used: it says where the stacks named by a "
                          f".star live, and {particles} is not a .star", stacklevel=2)
        rot = trans = ctf_params = None
        names = {}
        if is_star and (poses is None or ctf is None):
            sp = read_star_particles(particles, D=star_D, apix=star_apix,
                                     fallback_D=stack.D, fallback_apix=stack.apix)
            rot, trans, ctf_params = sp.rot, sp.trans, sp.ctf
            names = {"poses": str(particles), "ctf": str(particles)}
        if poses is not None:
            rot, trans = read_poses(poses)
            names["poses"] = str(poses)
        if ctf is not None:
            ctf_params = read_ctf(ctf)
            names["ctf"] = str(ctf)
        truth_arrays = None
        if truth is not None:
            truth_arrays, names["truth"] = _load_truth(Path(truth)), str(truth)
        if ind is not None:
            keep = read_ind(ind, len(stack))
            pick = functools.partial(_select, keep=keep, n=len(stack), where=(particles, ind))
            rot = pick(rot, names.get("poses"), "poses")
            trans = pick(trans, names.get("poses"), "translations")
            ctf_params = pick(ctf_params, names.get("ctf"), "CTF rows")
            if truth_arrays is not None:
                truth_arrays = {k: pick(v, names["truth"], f"values of {k!r}")
                                for k, v in truth_arrays.items()}
            stack = stack.take(keep)
        return cls(stack, rot, trans, ctf_params, truth_arrays, _names=names, **kw)

    @classmethod
    def from_dir(cls, directory: PathLike, **kw: Any) -> ParticleDataset:
        """Open a data set folder in the synthetic layout, for training: ``particles.mrcs`` and
        ``poses.pkl`` (required: the decoder renders each image at its pose), and where
        present ``ctf.pkl`` (without it the images are taken to have no CTF) and
        ``truth.npz`` (``z_continuous``, ``z_class``, ``hinge_deg``).

        A missing required file raises :class:`InputError` naming the path it looked for,
        here rather than in the first training batch. (The constructor and
        :meth:`from_files` take poses as optional, for uses that need only the images.)
        """
        d = Path(directory)
        layout = ("expected a data set folder with particles.mrcs and poses.pkl (the pose of "
                  "every image: training needs them), and ctf.pkl and truth.npz where known")
        if not (d / "particles.mrcs").is_file():
            raise InputError(f"{d}: no particles.mrcs; {layout}")
        if not (d / "poses.pkl").is_file():
            raise InputError(f"{d / 'poses.pkl'}: file not found; {layout}")

        def opt(name: str) -> Path | None:
            return d / name if (d / name).is_file() else None

        return cls.from_files(d / "particles.mrcs", opt("poses.pkl"), opt("ctf.pkl"),
                              opt("truth.npz"), **kw)

    # ------------------------------------------------------------------ access
    def get_batch(self, indices: Sequence[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Items ``indices`` with a leading batch axis: ``y (B, D+1, D+1)``, ``index (B,)``,
        ``rot (B, 3, 3)``, ``trans (B, 2)`` pixels, ``ctf (B, 9)``.

        The images are read in one go (sorted, one memory-map read per file) and preprocessed
        together in torch; the batch keeps the order asked for.
        """
        orig = self._idx[self._local(indices)]
        raw = self._stack.read(orig) if self._draw is None else self._renoised(orig)
        out = {"y": self.preprocess(torch.from_numpy(raw)),
               "index": torch.from_numpy(orig.astype(np.int64))}
        if self._rot is not None:
            out["rot"] = torch.from_numpy(self._rot[orig])
            if self._trans is not None:
                out["trans"] = torch.from_numpy(self._trans[orig] * np.float32(self.D))
        if self._ctf is not None:
            out["ctf"] = torch.from_numpy(self._ctf[orig])
        return out

    def preprocess(self, imgs: torch.Tensor) -> torch.Tensor:
        """Real-space images ``(B, D, D)`` -> the ``y`` that :meth:`get_batch` serves.

        Window, contrast inversion, centred Hartley transform, symmetrisation to
        ``(B, D+1, D+1)`` and this data set's normalisation: for images that are not in the
        stack (a transformed copy, a noise twin) to reach a model exactly as the stack's do.
        """
        mean, std = self._norm
        window = None if self._window is None else self._window.to(imgs.dtype)
        return (_preprocess(imgs, window, self.invert) - mean) / std

    @property
    def windowed(self) -> bool:
        """Whether :meth:`preprocess` multiplies images by the soft circular window."""
        return self._window is not None

    def without_window(self) -> ParticleDataset:
        """The same view with windowing off (normalisation unchanged: it is estimated without
        the window anyway, as cryoDRGN does)."""
        view = copy.copy(self)
        view._window = None
        return view

    def images(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Raw real-space images ``(B, D, D)`` float32, no preprocessing (in a
        :meth:`noise_draw` view: the clean images under that draw's noise)."""
        orig = self._idx[self._local(indices)]
        return self._stack.read(orig) if self._draw is None else self._renoised(orig)

    # ------------------------------------------------------------------ re-noising
    def resample_noise_problem(self) -> str | None:
        """Why this data set's clean images cannot be re-noised (None when they can): they
        can for a stack that ampcheck's generator wrote, read whole, with its
        ``manifest.json`` beside it (:class:`~ampcheck.data.synthetic.Renoiser`)."""
        manifest = self._stack.path.parent / "manifest.json"
        if not manifest.is_file():
            return ("no clean images: the data set was not generated by ampcheck (no "
                    "manifest.json beside its stack) and gives no generator")
        return _renoiser(str(manifest), manifest.stat().st_mtime_ns, str(self._stack.path),
                         len(self._stack), self.D)[1]

    def noise_draw(self, draw: int) -> ParticleDataset:
        """The same view whose images are the clean images under noise draw ``draw`` at the
        data set's own noise level (same poses, CTF and truth); a ConfigError naming the
        reason where that cannot be (:meth:`resample_noise_problem`)."""
        problem = self.resample_noise_problem()
        if problem is not None:
            raise ConfigError(f"{self.source}: cannot re-noise its images: {problem}")
        view = copy.copy(self)
        view._draw = int(draw)
        return view

    def _renoised(self, orig: np.ndarray) -> np.ndarray:
        manifest = self._stack.path.parent / "manifest.json"
        renoiser = _renoiser(str(manifest), manifest.stat().st_mtime_ns, str(self._stack.path),
                             len(self._stack), self.D)[0]
        return renoiser.noisy(orig, self._draw)

    # ------------------------------------------------------------------ properties
    @property
    def D(self) -> int:
        """Image side in pixels (even); processed images are ``(D+1, D+1)``."""
        return self._stack.D

    @property
    def apix(self) -> float | None:
        """Pixel size in Å: the CTF's (rescaled to this ``D``), else the stack header's."""
        return float(self._ctf[0, 1]) if self._ctf is not None and len(self._ctf) \
            else self._stack.apix

    @property
    def norm(self) -> tuple[float, float]:
        """``(mean, std)`` of the Hartley images, shared by every view."""
        return self._norm

    @property
    def stack(self) -> ImageStack:
        return self._stack

    @property
    def rot(self) -> np.ndarray | None:
        """``(n, 3, 3)`` float32 rotations, or None."""
        return None if self._rot is None else self._rot[self._idx]

    @property
    def trans_frac(self) -> np.ndarray | None:
        """``(n, 2)`` float32 translations in fractions of the box (batches give pixels)."""
        return None if self._trans is None else self._trans[self._idx]

    @property
    def ctf(self) -> np.ndarray | None:
        """``(n, 9)`` float32 CTF parameters (D and apix columns for this stack's ``D``)."""
        return None if self._ctf is None else self._ctf[self._idx]

    @property
    def truth(self) -> dict[str, np.ndarray]:
        """Per-image ground truth of this dataset's images (empty when none was given)."""
        return {k: v[self._idx] for k, v in self._truth.items()}

    @property
    def source(self) -> str:
        """The file the images come from (``.mrcs``, ``.txt`` or ``.star``)."""
        return str(self._stack.path)

    def has_truth_volumes(self) -> bool:
        """Whether :meth:`truth_volumes` has any, from the manifest alone (no map is read):
        it lists volumes with a conformation whose files exist, on this stack's grid."""
        listed = self._listed_volumes()
        return listed is not None and bool(listed[1]) and listed[0] == self.D

    def truth_volumes(self) -> tuple[TruthVolume, ...]:
        """The ground-truth volumes ``(D, D, D)`` at known conformations: those the
        ``manifest.json`` of an ampcheck synthetic data set beside the stack lists (with a
        ``z_continuous`` and ``z_class``, on this stack's pixel grid); empty for any other data
        (real stacks have none). Read when first asked for, once per manifest version, and
        shared by every view."""
        if not self.has_truth_volumes():
            return ()
        manifest = self._stack.path.parent / "manifest.json"
        return tuple(v for v in _manifest_volumes(str(manifest), manifest.stat().st_mtime_ns)
                     if v.volume.shape == (self.D,) * 3)

    def _listed_volumes(self) -> tuple[int | None, tuple[tuple[float, int, Path], ...]] | None:
        """:func:`_manifest_listing` of the manifest beside the stack; None without one."""
        manifest = self._stack.path.parent / "manifest.json"
        if not manifest.is_file():
            return None
        return _manifest_listing(str(manifest), manifest.stat().st_mtime_ns)

    def __repr__(self) -> str:
        parts = [p for p, a in (("poses", self._rot), ("ctf", self._ctf)) if a is not None]
        return (f"ParticleDataset({str(self._stack.path)!r}, n={self.n}, D={self.D}, "
                f"apix={self.apix}, with={parts + sorted(self._truth)})")


_TRUTH_1D = {"z_continuous": "one conformation coordinate per image",
             "z_class": "one integer class per image"}


def _check_truth(where: str, key: str, value: Any) -> np.ndarray:
    """One ground-truth array, as the checks use it: finite real numbers (or booleans) with one
    entry per image along the first axis; ``z_continuous`` and ``z_class`` 1-D ``(N,)``, and
    ``z_class`` whole numbers."""
    value = np.asarray(value)
    if not (value.dtype == bool or np.issubdtype(value.dtype, np.integer)
            or np.issubdtype(value.dtype, np.floating)):
        raise InputError(f"{where}: {key!r} holds {value.dtype} values; expected real numbers, "
                         "one per image")
    if value.ndim == 0:
        raise InputError(f"{where}: {key!r} is a scalar; expected one value per image")
    if key in _TRUTH_1D and value.ndim != 1:
        raise InputError(f"{where}: {key!r} has shape {value.shape}; expected a 1-D array "
                         f"(N,), {_TRUTH_1D[key]}")
    if value.size and not np.isfinite(value).all():
        k = int(np.flatnonzero(~np.isfinite(value).reshape(len(value), -1).all(axis=1))[0])
        raise InputError(f"{where}: {key!r} holds NaN or Inf (first at image {k}, 0-based); "
                         "expected finite values")
    if key == "z_class" and np.any(value != np.round(value)):
        k = int(np.flatnonzero(value != np.round(value))[0])
        raise InputError(f"{where}: 'z_class' of image {k} (0-based) is {value[k]}; expected "
                         "whole-number classes")
    return value


@functools.lru_cache(maxsize=16)
def _manifest_listing(manifest: str, mtime_ns: int
                      ) -> tuple[int | None, tuple[tuple[float, int, Path], ...]]:
    """``(D, volumes)`` of a synthetic data set's manifest: its image size and the volumes it
    lists with a conformation whose files exist, ``(z_continuous, z_class, path)``; ``(None,
    ())`` for a manifest not ampcheck's (``mtime_ns`` keys the cache: a regenerated set is
    read again)."""
    try:
        entries = json.loads(Path(manifest).read_text())
    except (OSError, ValueError):
        return None, ()
    if not isinstance(entries, dict) or entries.get("generator") not in GENERATORS:
        return None, ()
    root = Path(manifest).parent
    D = entries.get("D")
    return (D if isinstance(D, int) else None,
            tuple((float(v["z_continuous"]), int(v["z_class"]), root / v["file"])
                  for v in entries.get("volumes", [])
                  if v.get("z_continuous") is not None and v.get("z_class") is not None
                  and (root / v["file"]).is_file()))


@functools.lru_cache(maxsize=4)
def _manifest_volumes(manifest: str, mtime_ns: int) -> tuple[TruthVolume, ...]:
    """The volumes of :func:`_manifest_listing`, read (the maps: only when a check needs
    them)."""
    from ampcheck.cryoem.mrc import read_mrc

    return tuple(TruthVolume(z, cls, read_mrc(path)[0])
                 for z, cls, path in _manifest_listing(manifest, mtime_ns)[1])


@functools.lru_cache(maxsize=4)
def _renoiser(manifest: str, mtime_ns: int, stack: str, n: int, D: int):
    """``(Renoiser, None)`` for the stack ``stack`` (``n`` images of ``D`` px) beside the
    synthetic data set's ``manifest``, or ``(None, why not)``. The re-rendering is checked
    against the stack: its first images must be the generator's, clean signal and noise
    stream (a stack re-indexed or rewritten since is not)."""
    from ampcheck.data.synthetic import Renoiser

    try:
        entries = json.loads(Path(manifest).read_text())
        renoiser = Renoiser.from_manifest(entries)
    except (OSError, ValueError, InputError) as err:
        return None, f"no clean images: {manifest} cannot be read back ({first_line(err)})"
    cfg = renoiser.cfg
    if Path(stack).name != (entries.get("files") or {}).get("particles") or n != cfg.n \
            or D != cfg.D:
        return None, (f"no clean images: the stack ({n} images of {D} px) is not the whole "
                      f"stack that {manifest} describes ({cfg.n} of {cfg.D} px)")
    from ampcheck.cryoem.stack import read_stack

    if not renoiser.reproduces(read_stack(stack).read(np.arange(min(4, n)))):
        return None, (f"no clean images: the stack does not match what {manifest} describes "
                      "(its first images are not the generator's)")
    return renoiser, None


def _select(value: np.ndarray | None, name: str | None, what: str, *, keep: np.ndarray, n: int,
            where: tuple[PathLike, PathLike]) -> np.ndarray | None:
    """Rows ``keep`` of ``value``, a per-image array of an ``n``-image stack filtered by an
    index file (``where``: the stack and the index file, for messages). ``value`` with one row
    per image of the stack is indexed; one with a row per index (already filtered, as
    cryoDRGN accepts for poses) is taken as it is; any other count is refused."""
    if value is None:
        return None
    value = np.asarray(value)
    if value.ndim == 0:  # not per-image: the constructor says what was expected
        return value
    if len(value) == n:
        return value[keep]
    if len(value) == len(keep):
        return value
    stack, ind = where
    raise InputError(f"{name or 'the ' + what}: holds {len(value)} {what}; expected {n} (one per "
                     f"image of {stack}) or {len(keep)} (one per index of {ind})")


def _load_truth(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise InputError(f"{path}: file not found (expected a ground-truth .npz)")
    try:
        obj = np.load(path, allow_pickle=False)
    except Exception as e:
        raise InputError(f"{path}: could not read it as an .npz of per-image arrays ({e})") from e
    if not isinstance(obj, np.lib.npyio.NpzFile):
        raise InputError(f"{path}: holds a single array; expected an .npz of named per-image "
                         "arrays")
    with obj:
        try:
            return {k: obj[k] for k in obj.files}
        except Exception as e:
            raise InputError(f"{path}: could not read its arrays ({e})") from e


def _warn_apix_mismatch(ds: ParticleDataset) -> None:
    """Warn when the stack header's pixel size disagrees with the CTF's (the CTF's is used)."""
    if ds._ctf is not None and ds.stack.apix and len(ds._ctf):
        a = float(ds._ctf[0, 1])
        if abs(a - ds.stack.apix) > 0.01 * a:
            warnings.warn(f"{ds.stack.path}: header pixel size {ds.stack.apix} Å differs from "
                          f"the CTF's {a:.4g} Å (for D = {ds.D}); the CTF's is used", stacklevel=3)
