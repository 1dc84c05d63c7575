"""Synthetic heterogeneous cryo-EM data with full ground truth (SPEC §2.1).

The molecule is a pseudo-atomic assembly of Gaussian blobs in three domains:

* a **core** that never moves;
* an **arm** that swings about a hinge through the core (the *continuous* coordinate
  ``z_continuous`` in [0, 1] maps linearly onto the hinge angle range);
* a **subunit** bound to the core that is present or absent (the *discrete* coordinate
  ``z_class``: 1 present, 0 absent — the assembly-intermediate flavour of EMPIAR-10076).

Each image is an exact projection (Fourier slice of the analytic transform, see
:mod:`ampcheck.cryoem.volumes`) of one conformation in a uniformly random pose, displaced in
plane, modulated by its CTF, and buried in white Gaussian noise.

Conventions of the files written (readable by cryoDRGN as they are):

* **Contrast**: particles are white on a dark background — ``image = −CTF ⊛ projection`` —
  as RELION writes extracted particles, so cryoDRGN's default sign inversion (and
  :class:`~ampcheck.data.particles.ParticleDataset`'s) reads positive density.
* **SNR** is the variance of the noiseless (CTF-modulated) signal inside the circular mask of
  radius ``D/2`` over the noise variance. The noise level is set from a pilot of the first
  ``min(n, 512)`` images; the manifest also records the SNR measured over the whole stack.
* **Poses**: ``trans`` is what centres the particle (cryoDRGN and RELION's origin
  convention): a particle displaced by ``+s`` pixels has ``trans = −s / D``.

The same config and seed give the same bytes (on one machine). The stack is streamed to disk in
chunks, so a paper-size set never needs the whole stack in memory, and the output directory is
built beside the target and renamed into place only when complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from .. import __version__
from .._progress import progress
from ..cryoem import io
from ..cryoem.rotations import rotation_about_axis
from ..cryoem.volumes import BlobVolume, project_blobs_fourier, spectrum_to_images
from ..errors import ConfigError, InputError
from .acquisition import Acquisition, is_integer, noise_generator

GENERATOR_VERSION = 1
#: The ``generator`` of the manifests of ampcheck's data sets: this module's and
#: :mod:`ampcheck.data.structures`' (from atomic models).
GENERATORS = ("ampcheck.data.synthetic", "ampcheck.data.structures")
BOX_ANGSTROMS = 192.0  # physical box edge; apix = BOX_ANGSTROMS / D unless given
MOLECULE_RADIUS_ANGSTROMS = 76.0  # blob centres + 3 sigma, at any hinge angle (tested)
_CHUNK = 256  # images rendered per step; fixed so that output bytes do not depend on it
_PILOT = 512  # images whose clean signal sets the noise level

SIZES: dict[str, dict[str, int]] = {
    "tiny": {"n": 48, "D": 32, "volume_grid": 2},  # committed fixtures
    # `ampcheck run`'s default: 1,000 training and 250 held-out images at 8 Å/px, small enough
    # for the whole battery to train to informative latents in minutes on 2 CPU cores
    "standard": {"n": 1250, "D": 24},
    "ci": {"n": 2000, "D": 64},  # seconds on 2 CPU cores
    "paper": {"n": 50_000, "D": 128},  # for a GPU
}

DOMAIN_CORE, DOMAIN_ARM, DOMAIN_SUBUNIT = 0, 1, 2


@dataclass(frozen=True, kw_only=True)
class SynthConfig(Acquisition):
    """Everything that determines a synthetic data set (units in the names): the acquisition
    (:class:`~ampcheck.data.acquisition.Acquisition`; ``apix`` None is ``BOX_ANGSTROMS / D``)
    and the molecule's heterogeneity.

    ``snr = inf`` gives noiseless images; ``hinge_range_deg = (a, a)`` with ``p_subunit`` 0 or 1
    gives a homogeneous data set.
    """

    _WHAT: ClassVar[str] = "synthetic data"

    molecule_seed: int = 0
    hinge_range_deg: tuple[float, float] = (-30.0, 30.0)
    p_subunit: float = 0.5
    # the share of images whose viewing direction is drawn near their state's preferred view
    # (class 1 near +x, class 0 near +y): a genuine correlation of conformation with pose
    view_preference: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        bad = self.bad
        if not is_integer(self.molecule_seed) or self.molecule_seed < 0:
            bad(f"molecule_seed must be a non-negative integer, got {self.molecule_seed!r}")
        lo, hi = self.hinge_range_deg
        if not (-90 <= lo <= hi <= 90):
            bad(f"hinge_range_deg must be (lo, hi) within [-90, 90], got {self.hinge_range_deg}")
        if not 0 <= self.p_subunit <= 1:
            bad(f"p_subunit must be in [0, 1], got {self.p_subunit}")
        half_box = 0.5 * self.D * self.pixel_size
        reach = MOLECULE_RADIUS_ANGSTROMS + self.shift_px * self.pixel_size
        if reach > half_box:
            bad(f"the molecule (radius {MOLECULE_RADIUS_ANGSTROMS:g} Å, shifted by up to "
                f"{self.shift_px * self.pixel_size:.1f} Å) does not fit a box of "
                f"{2 * half_box:g} Å (D = {self.D} at {self.pixel_size:g} Å/px); raise apix or D")
        if not 0 <= self.view_preference <= 1:
            bad(f"view_preference must be in [0, 1], got {self.view_preference}")

    @classmethod
    def preset(cls, size: str = "standard", **overrides) -> SynthConfig:
        """The ``tiny``, ``standard``, ``ci`` or ``paper`` size, with any field overridden
        (None = keep)."""
        if size not in SIZES:
            raise ConfigError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
        fields = {**SIZES[size], **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**fields)

    @property
    def pixel_size(self) -> float:
        """Å per pixel."""
        return self.apix if self.apix is not None else BOX_ANGSTROMS / self.D



@dataclass(frozen=True)
class Assembly:
    """The blob model of the molecule and its two kinds of heterogeneity.

    Attributes:
        reference: all blobs at hinge angle 0 with the subunit present.
        domain: ``(K,)`` domain of each blob (core 0, arm 1, subunit 2).
        hinge_pivot: ``(3,)`` Å, a point on the hinge axis.
        hinge_axis: ``(3,)`` unit vector of the hinge axis.
    """

    reference: BlobVolume
    domain: np.ndarray
    hinge_pivot: np.ndarray
    hinge_axis: np.ndarray

    @classmethod
    def default(cls, seed: int = 0) -> Assembly:
        """A ~175-blob, 130 Å molecule that stays inside a 192 Å box at every conformation."""
        rng = np.random.default_rng([seed, 7])

        def ellipsoid(n, center, semi_axes):
            d = rng.normal(size=(n, 3))
            d /= np.linalg.norm(d, axis=1, keepdims=True)
            r = rng.uniform(size=(n, 1)) ** (1 / 3)  # uniform in the volume
            return np.asarray(center) + d * r * np.asarray(semi_axes)

        parts = [
            (DOMAIN_CORE, ellipsoid(90, (-12, 0, 0), (32, 26, 24))),
            (DOMAIN_ARM, ellipsoid(50, (40, 0, 0), (20, 10, 10))),
            (DOMAIN_SUBUNIT, ellipsoid(35, (-15, 0, 36), (13, 13, 13))),
        ]
        centers = np.concatenate([p for _, p in parts])
        domain = np.concatenate([np.full(len(p), d) for d, p in parts])
        # Pseudo-atoms of three widths (blobs of one width share a Fourier envelope).
        sigmas = rng.choice([5.0, 6.0, 7.0], size=len(centers))
        weights = rng.uniform(0.8, 1.2, size=len(centers))
        return cls(BlobVolume(centers, sigmas, weights), domain,
                   hinge_pivot=np.array([20.0, 0.0, 0.0]), hinge_axis=np.array([0.0, 0.0, 1.0]))

    def centers(self, hinge_deg: np.ndarray) -> np.ndarray:
        """``(B, K, 3)`` blob centres with the arm turned by ``hinge_deg`` ``(B,)`` degrees."""
        hinge_deg = np.atleast_1d(np.asarray(hinge_deg, dtype=np.float64))
        out = np.repeat(self.reference.centers[None], len(hinge_deg), axis=0)
        arm = self.domain == DOMAIN_ARM
        local = self.reference.centers[arm] - self.hinge_pivot
        turns = rotation_about_axis(self.hinge_axis, hinge_deg)
        out[:, arm] = local @ turns.transpose(0, 2, 1) + self.hinge_pivot
        return out

    def weights(self, z_class: np.ndarray) -> np.ndarray:
        """``(B, K)`` blob amplitudes: the subunit's are zero where ``z_class`` is 0."""
        z_class = np.atleast_1d(np.asarray(z_class))
        present = (self.domain != DOMAIN_SUBUNIT)[None, :] | (z_class[:, None] == 1)
        return self.reference.weights[None, :] * present

    def volume(self, hinge_deg: float, z_class: int) -> BlobVolume:
        """The blob volume of one conformation (absent blobs dropped)."""
        c = self.centers(np.array([hinge_deg]))[0]
        w = self.weights(np.array([z_class]))[0]
        keep = w > 0
        return BlobVolume(c[keep], self.reference.sigmas[keep], w[keep])


@dataclass(frozen=True)
class ImageParameters:
    """Per-image ground truth drawn before any image is rendered."""

    rot: np.ndarray  # (N, 3, 3)
    shift_px: np.ndarray  # (N, 2) particle displacement (dx, dy) in pixels
    ctf: np.ndarray  # (N, 9) ctf.pkl rows
    z_continuous: np.ndarray  # (N,) in [0, 1]
    z_class: np.ndarray  # (N,) 0 or 1
    hinge_deg: np.ndarray  # (N,)


def draw_parameters(cfg: SynthConfig) -> ImageParameters:
    """Draw poses, shifts, CTFs and conformations from independent seeded streams."""
    n = cfg.n
    rot, shift, ctf, conf_rng = cfg.draw(cfg.pixel_size)
    z = conf_rng.uniform(size=n)
    z_class = (conf_rng.uniform(size=n) < cfg.p_subunit).astype(np.int64)
    lo, hi = cfg.hinge_range_deg
    if cfg.view_preference > 0:  # its own stream: the other draws stay as they were
        rot = _prefer_views(rot, z_class, cfg.view_preference,
                            np.random.default_rng(np.random.SeedSequence(cfg.seed).spawn(6)[5]))
    return ImageParameters(rot, shift, ctf, z, z_class, lo + z * (hi - lo))


#: The preferred viewing direction of each class (``view_preference``): away from the poles,
#: where the in-plane angle is well defined.
PREFERRED_VIEWS = {1: np.array([1.0, 0.0, 0.0]), 0: np.array([0.0, 1.0, 0.0])}
_VIEW_SPREAD = 0.25  # the spread of a preferred view's directions about it (about 14°)


def _prefer_views(rot: np.ndarray, z_class: np.ndarray, share: float,
                  rng: np.random.Generator) -> np.ndarray:
    """``rot`` with a ``share`` of the images re-posed near their class's preferred viewing
    direction (the third row of the pose, :mod:`ampcheck.cryoem.nuisance`), each with a
    uniform in-plane angle."""
    from ..cryoem.rotations import inplane_rotation

    n = len(rot)
    chosen = rng.uniform(size=n) < share
    pref = np.stack([PREFERRED_VIEWS[int(c)] for c in z_class])
    v = pref + _VIEW_SPREAD * rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    helper = np.where(np.abs(v[:, 2:3]) < 0.9, [[0.0, 0.0, 1.0]], [[1.0, 0.0, 0.0]])
    e1 = np.cross(helper, v)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    base = np.stack([e1, np.cross(v, e1), v], axis=1)  # rows: a right-handed frame, third v
    posed = inplane_rotation(rng.uniform(0, 360, size=n)) @ base
    out = rot.copy()
    out[chosen] = posed[chosen]
    return out


def render_clean(assembly: Assembly, params: ImageParameters, idx: slice,
                 cfg: SynthConfig) -> np.ndarray:
    """Noiseless images ``(B, D, D)`` float64 for ``params[idx]``: ``−CTF ⊛ projection``."""
    spec = project_blobs_fourier(assembly.centers(params.hinge_deg[idx]), assembly.reference.sigmas,
                                 assembly.weights(params.z_class[idx]), params.rot[idx],
                                 cfg.D, cfg.pixel_size, params.shift_px[idx])
    return -spectrum_to_images(spec, cfg.D, cfg.pixel_size, params.ctf[idx])


def signal_mask(D: int) -> np.ndarray:
    """``(D, D)`` the circular mask of radius ``D/2`` in which the SNR's signal is measured."""
    ax = np.arange(D) - D // 2
    return np.hypot(*np.meshgrid(ax, ax, indexing="ij")) <= D / 2


@dataclass(frozen=True)
class SynthResult:
    """What :func:`generate` wrote and measured."""

    out: Path
    manifest: dict
    seconds: float

    def summary(self) -> str:
        m = self.manifest
        cls = m["truth"]["fraction_class1"]
        lo, hi = m["hinge_range_deg"]
        size = sum(f.stat().st_size for f in self.out.rglob("*") if f.is_file())
        lines = [
            f"Synthetic heterogeneous data set in {self.out}",
            f"  images    {m['n']:,} × {m['D']}×{m['D']} px at {m['apix']:.3f} Å/px "
            f"(box {m['D'] * m['apix']:.0f} Å), {size / 2**20:.1f} MiB",
            f"  noise     SNR {m['snr']:g} requested, {m['snr_measured']:.4g} measured "
            f"(signal variance in the mask / noise variance)",
            f"  hetero    continuous: hinge {lo:g}..{hi:g}°"
            f"; discrete: subunit present in {100 * cls:.1f}% of images",
            f"  poses     {_pose_text(m)}; shifts up to ±{m['max_shift_px']:.2f} px; "
            f"defocus {m['defocus_range_angstroms'][0] / 1e4:g}–"
            f"{m['defocus_range_angstroms'][1] / 1e4:g} µm, {m['voltage_kv']:g} kV",
            f"  volumes   {len(m['volumes'])} ground-truth maps in volumes/",
            f"  took      {self.seconds:.1f} s ({m['n'] / self.seconds:,.0f} images/s)",
        ]
        return "\n".join(lines)


def _pose_text(manifest: dict) -> str:
    share = manifest.get("view_preference", 0.0)
    if not share:
        return "uniform on SO(3)"
    return f"{100 * share:.0f}% near their class's preferred view, the rest uniform on SO(3)"


# ---------------------------------------------------------------------------- re-noising
@dataclass(frozen=True)
class Renoiser:
    """A written data set's clean images under fresh noise at its own level (its SNR).

    Rebuilt from the ``manifest.json`` that :func:`generate` wrote: the same config draws the
    same poses, CTFs and conformations, so :meth:`clean` renders image ``k``'s noiseless
    signal exactly (the stack holds it plus noise); :meth:`noisy` adds the noise of draw
    ``draw``, seeded by ``(seed, draw, k)`` alone (the same whatever the batch), independent of
    the stack's own noise.
    """

    cfg: SynthConfig
    params: ImageParameters
    assembly: Assembly
    noise_std: float
    _clean: dict = field(default_factory=dict, compare=False, repr=False)  # the last few

    @classmethod
    def from_manifest(cls, manifest: dict) -> Renoiser:
        """From a manifest's ``config`` and ``noise_std``; an InputError for one not ours."""
        if not isinstance(manifest, dict) or manifest.get("generator") != \
                "ampcheck.data.synthetic" or not isinstance(manifest.get("config"), dict):
            raise InputError("not a manifest of an ampcheck synthetic data set")
        if manifest.get("generator_version") != GENERATOR_VERSION:
            raise InputError(f"written by generator version {manifest.get('generator_version')}"
                             f", not {GENERATOR_VERSION}: its images cannot be re-rendered")
        fields = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in manifest["config"].items()}
        try:
            cfg = SynthConfig(**fields)
            noise_std = float(manifest["noise_std"])
        except (TypeError, KeyError, ValueError, ConfigError) as err:
            raise InputError(f"its manifest's config cannot be read back ({err})") from None
        return cls(cfg, draw_parameters(cfg), Assembly.default(cfg.molecule_seed), noise_std)

    def clean(self, index: np.ndarray) -> np.ndarray:
        """Noiseless images ``(B, D, D)`` float64 of images ``index`` of the full set."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        key = index.tobytes()
        if key in self._clean:  # a model asked for images and batch of the same particles
            return self._clean[key]
        p = self.params
        parts = []
        for s in range(0, len(index), _CHUNK):
            i = index[s:s + _CHUNK]
            sub = ImageParameters(p.rot[i], p.shift_px[i], p.ctf[i], p.z_continuous[i],
                                  p.z_class[i], p.hinge_deg[i])
            parts.append(render_clean(self.assembly, sub, slice(None), self.cfg))
        out = np.concatenate(parts) if parts else np.zeros((0, self.cfg.D, self.cfg.D))
        if len(self._clean) >= 8:
            self._clean.pop(next(iter(self._clean)))
        self._clean[key] = out
        return out

    def reproduces(self, first: np.ndarray) -> bool:
        """Whether ``first`` ``(k, D, D)``, the first ``k <= 256`` images of a stack, are
        this set's first images as :func:`generate` wrote them (clean signal plus the
        generator's own noise stream, to float32 rounding)."""
        k = len(first)
        if not 0 < k <= _CHUNK or first.shape[1:] != (self.cfg.D, self.cfg.D):
            return False
        rng = np.random.default_rng(np.random.SeedSequence(self.cfg.seed).spawn(5)[4])
        noise = rng.standard_normal((k, self.cfg.D, self.cfg.D))  # the stream's start
        expected = (self.clean(np.arange(k)) + self.noise_std * noise).astype(np.float32)
        scale = float(np.abs(expected).max()) or 1.0
        return bool(np.allclose(first, expected, rtol=0, atol=1e-5 * scale))

    def noisy(self, index: np.ndarray, draw: int) -> np.ndarray:
        """Images ``index`` ``(B, D, D)`` float32 under noise draw ``draw``."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        clean = self.clean(index)
        shape = (self.cfg.D, self.cfg.D)
        noise = np.stack([np.random.default_rng([self.cfg.seed, 0x5EED, int(draw), int(k)])
                          .standard_normal(shape) for k in index]) if len(index) else 0.0
        return (clean + self.noise_std * noise).astype(np.float32)


def _ours(name: str) -> bool:
    """An entry ampcheck keeps in any output folder (its lock, a leftover temporary file)."""
    from ampcheck.files import is_temporary
    from ampcheck.outdir import LOCK

    return name == LOCK or is_temporary(name)


def generate(out: str | os.PathLike, cfg: SynthConfig | None = None, *, force: bool = False,
             star: bool = False, show_progress: bool = True) -> SynthResult:
    """Write a synthetic data set to the directory ``out`` (SPEC §2.1).

    Files: ``particles.mrcs``, ``poses.pkl``, ``ctf.pkl``, ``truth.npz`` (``z_continuous``,
    ``z_class``, ``hinge_deg``), ``volumes/*.mrc`` and ``manifest.json``; with ``star=True`` also
    ``particles.star``, the same particles, poses and CTF as RELION 3.1 describes them.
    The set is built in a temporary directory beside ``out`` and renamed into place when
    complete; an existing non-empty ``out`` is replaced only with ``force=True``.
    """
    cfg = cfg or SynthConfig()
    start = time.perf_counter()
    out, manifest = publish(out, force, lambda tmp: _write(tmp, cfg, star, show_progress))
    return SynthResult(out, manifest, time.perf_counter() - start)


def publish(out: str | os.PathLike, force: bool, write):
    """Build a data set with ``write(tmp)`` in a temporary directory beside ``out`` and rename
    it into place when complete; returns ``(out, write's result)``. An existing non-empty
    ``out`` is replaced only with ``force`` and only if it holds an ampcheck data set; on any
    error nothing is left behind and ``out`` is as it was."""
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(not _ours(e.name) for e in out.iterdir()):
        if not force:
            raise InputError(f"{out}: directory exists and is not empty; choose another or "
                             "use --force to replace an ampcheck data set")
        if not _is_synthetic_set(out):
            raise InputError(f"{out}: refusing to replace a directory that does not hold an "
                             "ampcheck synthetic data set (no manifest.json of ours), even with "
                             "--force; choose another directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; a data set is shared like any folder
    try:
        result = write(tmp)
        for f in tmp.rglob("*"):  # everything on disk before the directory appears
            io.fsync(f)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            out.rename(old)
            try:
                tmp.rename(out)
            except BaseException:
                old.rename(out)  # put the user's data set back
                raise
            shutil.rmtree(old)
        else:
            tmp.rename(out)
        io.fsync(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out, result


def _is_synthetic_set(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("generator") in GENERATORS


def _write(folder: Path, cfg: SynthConfig, star: bool, show_progress: bool) -> dict:
    D, apix = cfg.D, cfg.pixel_size
    assembly = Assembly.default(cfg.molecule_seed)
    params = draw_parameters(cfg)
    mask = signal_mask(D)

    n_pilot = min(cfg.n, _PILOT)
    pilot = np.concatenate([render_clean(assembly, params, slice(s, min(s + _CHUNK, n_pilot)), cfg)
                            for s in range(0, n_pilot, _CHUNK)])
    signal_var = float(pilot[:, mask].var(axis=1).mean())
    noise_std = 0.0 if math.isinf(cfg.snr) else math.sqrt(signal_var / cfg.snr)
    noise_rng = noise_generator(cfg.seed)

    per_image_var = np.empty(cfg.n)
    chunks = range(0, cfg.n, _CHUNK)
    with io.StackWriter(folder / "particles.mrcs", cfg.n, D, apix) as stack:
        for start in progress(chunks, len(chunks), "synthesising", unit="chunk",
                              enabled=show_progress):
            idx = slice(start, min(start + _CHUNK, cfg.n))
            clean = pilot[idx] if idx.stop <= len(pilot) else render_clean(assembly, params,
                                                                             idx, cfg)
            per_image_var[idx] = clean[:, mask].var(axis=1)
            noisy = clean + noise_std * noise_rng.standard_normal(clean.shape)
            stack.write(start, noisy.astype(np.float32))

    rot, trans = params.rot.astype(np.float32), (-params.shift_px / D).astype(np.float32)
    io.write_poses(folder / "poses.pkl", rot, trans)
    io.write_ctf(folder / "ctf.pkl", params.ctf.astype(np.float32))
    files = {"particles": "particles.mrcs", "poses": "poses.pkl", "ctf": "ctf.pkl",
             "truth": "truth.npz"}
    if star:
        names = [f"{i + 1:06d}@particles.mrcs" for i in range(cfg.n)]
        io.write_star(folder / "particles.star", names, rot, trans, params.ctf, D, apix)
        files["star"] = "particles.star"
    np.savez(folder / "truth.npz", z_continuous=params.z_continuous, z_class=params.z_class,
             hinge_deg=params.hinge_deg)
    volumes = _write_volumes(folder / "volumes", assembly, cfg, params.z_class.mean())

    manifest = {
        "generator": "ampcheck.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "ampcheck_version": __version__,
        "config": asdict(cfg),  # exactly what reproduces these bytes
        **asdict(cfg),
        "apix": apix,
        "max_shift_px": cfg.shift_px,
        "snr_measured": float(per_image_var.mean() / noise_std**2) if noise_std else math.inf,
        "noise_std": noise_std,
        "signal_variance": signal_var,
        "contrast": "white particles: image = -CTF * projection (cryoDRGN's default inverts)",
        "snr_definition": "variance of the noiseless signal inside the circular mask of radius "
                          "D/2 over the noise variance",
        "files": files,
        "truth": {"z_continuous": "uniform in [0, 1]; hinge_deg = lo + z * (hi - lo)",
                  "z_class": "1 = subunit present",
                  "fraction_class1": float(params.z_class.mean())},
        "volumes": volumes,
    }
    with io.atomic_path(folder / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2, default=float) + "\n")
    return manifest


def _write_volumes(folder: Path, assembly: Assembly, cfg: SynthConfig, frac1: float) -> list:
    """Ground-truth maps on a grid of conformations, and their dataset-weighted average."""
    folder.mkdir()
    lo, hi = cfg.hinge_range_deg
    entries, average = [], np.zeros((cfg.D,) * 3)
    zs = np.linspace(0.0, 1.0, cfg.volume_grid) if cfg.volume_grid > 1 else np.array([0.5])
    for z_class in (0, 1):
        for z in zs:
            vol = assembly.volume(lo + z * (hi - lo), z_class).rasterize(cfg.D, cfg.pixel_size)
            name = f"class{z_class}_z{z:.3f}.mrc"
            io.write_mrc(folder / name, vol.astype(np.float32), cfg.pixel_size)
            entries.append({"file": f"volumes/{name}", "z_continuous": float(z),
                            "z_class": z_class, "hinge_deg": float(lo + z * (hi - lo))})
            average += vol * (frac1 if z_class else 1 - frac1) / len(zs)
    io.write_mrc(folder / "average.mrc", average.astype(np.float32), cfg.pixel_size)
    entries.append({"file": "volumes/average.mrc", "z_continuous": None, "z_class": None,
                    "hinge_deg": None, "note": "mean over the grid, classes weighted by the "
                                               "fraction of images in each"})
    return entries

