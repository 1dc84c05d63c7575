"""Particle stacks from atomic models: a list of structures or a trajectory (SPEC §2.1's
formats, with per-image truth).

:func:`generate` writes the files that :func:`ampcheck.data.synthetic.generate` writes, in the
same layout and conventions (white particles, ``trans`` centres the particle, SNR measured in
the circular mask over a pilot of the first 512 images), from an
:class:`~ampcheck.data.structure_files.Ensemble`:

* ``truth.npz``: for a list of models ``z_class`` (the model's index) and ``z_continuous``
  (its position in the list, ``index / (M − 1)``: a conformation coordinate where the list is
  ordered along a path) and ``model``; for a trajectory ``z_continuous`` (the frame's
  position along the frames used, in [0, 1]) and ``frame`` (the trajectory's frame number);
* ``volumes/``: the map of every model (a trajectory: of ``volume_grid`` frames evenly spaced)
  on the images' grid, and ``average.mrc`` weighted by the images of each state;
* ``manifest.json``: ``generator`` ``ampcheck.data.structures``, the sources, the selection,
  the alignment's core RMSD, the physics, and ``seconds`` and ``images_per_second``.

Images: each state's map (:func:`~ampcheck.data.atoms.rasterize_atoms`, the same as the one in
``volumes/``) is projected by :class:`~ampcheck.data.atoms.SliceProjector`, then CTF and noise
as in the synthetic generator. States get exact image counts (``n`` split by the weights by
largest remainders), shuffled over the stack.

Speed: the noiseless images are rendered by worker processes side by side
(:func:`render_plan`: a state, or a run of a state's chunks of ``_CHUNK`` images, per task),
written straight into a shared ``.npy`` file; the noise, which one seeded stream draws in the
stack's order, is added afterwards in this process. Every chunk is rendered alike whoever
renders it, so the bytes are the same whatever the number of workers.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, NamedTuple

import numpy as np

from .. import __version__
from .._progress import progress
from ..cryoem import io
from ..cryoem.volumes import spectrum_to_images
from ..errors import ConfigError
from .acquisition import Acquisition, noise_generator
from .atoms import CUTOFF_SIGMAS, SIGMA_PER_RESOLUTION, SliceProjector, padding, rasterize_atoms
from .structure_files import Ensemble
from .synthetic import _CHUNK, _PILOT, publish, signal_mask
from .workers import ordered_map, resolve_workers

GENERATOR = "ampcheck.data.structures"
GENERATOR_VERSION = 1
DEFAULT_RESOLUTION_PX = 4.0  # resolution in pixels when not given: σ = 0.9 px
FILL = 0.9  # the default pixel size puts the molecule, its 3σ and its shifts in 90% of D/2


@dataclass(frozen=True, kw_only=True)
class AtomicSynthConfig(Acquisition):
    """The images' settings (units in the names; the acquisition's are
    :class:`~ampcheck.data.acquisition.Acquisition`'s); the molecule comes as an Ensemble.

    ``apix`` None: from the molecule's size (see :func:`default_apix`); ``resolution`` None:
    ``4 × apix``; ``state_weights`` None: every state alike (a trajectory's frames always).
    """

    _WHAT: ClassVar[str] = "data from atomic models"
    _DEFOCUS: ClassVar[str] = "the defocus range"

    resolution: float | None = None
    state_weights: tuple[float, ...] | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.resolution is not None and not self.resolution > 0:
            self.bad(f"resolution must be positive, got {self.resolution}")
        if self.state_weights is not None and (
                any(not (w >= 0 and math.isfinite(w)) for w in self.state_weights)
                or not sum(self.state_weights) > 0):
            self.bad(f"state weights must be non-negative with a positive sum, got "
                     f"{list(self.state_weights)}")


def default_apix(radius: float, cfg: AtomicSynthConfig) -> float:
    """The pixel size (Å) at which the molecule (atom centres within ``radius`` Å), 3σ of its
    atoms and the largest shift fill ``FILL`` of the half box."""
    if cfg.resolution is None:  # σ = 0.9 px scales with the pixel
        room = FILL * cfg.D / 2 - cfg.shift_px - 3 * SIGMA_PER_RESOLUTION * DEFAULT_RESOLUTION_PX
        return radius / room
    return (radius + 3 * SIGMA_PER_RESOLUTION * cfg.resolution) / (FILL * cfg.D / 2
                                                                      - cfg.shift_px)


def geometry(ens: Ensemble, cfg: AtomicSynthConfig) -> tuple[float, float, float]:
    """``(apix, resolution, sigma)`` in Å; refuses a box too small for the molecule."""
    apix = cfg.apix if cfg.apix is not None else default_apix(ens.radius, cfg)
    resolution = cfg.resolution if cfg.resolution is not None else DEFAULT_RESOLUTION_PX * apix
    sigma = SIGMA_PER_RESOLUTION * resolution
    reach = ens.radius + 3 * sigma + cfg.shift_px * apix
    if reach > cfg.D / 2 * apix:
        raise ConfigError(
            f"the molecule (atoms within {ens.radius:.1f} Å of its centre, plus 3σ = "
            f"{3 * sigma:.1f} Å and shifts up to {cfg.shift_px * apix:.1f} Å) does not fit a "
            f"box of {cfg.D * apix:.1f} Å (D = {cfg.D} at {apix:.3g} Å/px); raise --apix or "
            "--box, or leave --apix out for a pixel size that fits")
    return apix, resolution, sigma


def state_counts(n: int, weights: np.ndarray) -> np.ndarray:
    """``n`` images split in proportion to ``weights`` by largest remainders (exact counts)."""
    share = n * np.asarray(weights, float) / np.sum(weights)
    counts = np.floor(share).astype(np.int64)
    counts[np.argsort(-(share - counts), kind="stable")[: n - counts.sum()]] += 1
    return counts


@dataclass(frozen=True)
class AtomicSynthResult:
    """What :func:`generate` wrote and measured."""

    out: Path
    manifest: dict

    def summary(self) -> str:
        m = self.manifest
        src, states = m["source"], m["states"]
        size = sum(f.stat().st_size for f in self.out.rglob("*") if f.is_file())
        what = (f"{len(states)} models" if src["kind"] == "structures"
                else f"{len(states)} frames of {Path(src['trajectory']).name}")
        counts = [s["images"] for s in states]
        return "\n".join([
            f"Heterogeneous data set from atomic models in {self.out}",
            f"  images    {m['n']:,} × {m['D']}×{m['D']} px at {m['apix']:.3f} Å/px "
            f"(box {m['D'] * m['apix']:.0f} Å), {size / 2**20:.1f} MiB",
            f"  molecule  {what}, {min(src['atoms_per_state']):,}–"
            f"{max(src['atoms_per_state']):,} atoms ({src['atoms']}); core RMSD after "
            f"alignment ≤ {m['alignment']['core_rmsd_max']:.2g} Å",
            f"  physics   Gaussian atoms at {m['resolution']:.1f} Å resolution "
            f"(σ {m['atom_sigma']:.2f} Å), weights f_e(0)",
            f"  states    {min(counts)}–{max(counts)} images each",
            f"  noise     SNR {m['snr']:g} requested, {m['snr_measured']:.4g} measured",
            f"  volumes   {len(m['volumes'])} ground-truth maps in volumes/",
            f"  took      {m['seconds']:.1f} s ({m['images_per_second']:,.0f} images/s, "
            f"{m['workers']} {'process' if m['workers'] == 1 else 'processes'})",
        ])


def generate(out: str | os.PathLike, ensemble: Ensemble, cfg: AtomicSynthConfig | None = None,
             *, force: bool = False, star: bool = False, show_progress: bool = True,
             workers: int | None = None) -> AtomicSynthResult:
    """Write the data set of ``ensemble`` to ``out`` (see the module's docstring); built
    beside ``out`` and renamed into place when complete, as the synthetic generator's.
    ``workers``: processes that render the images side by side (default: the cores this
    process may use); the bytes written are the same whatever their number."""
    cfg = cfg or AtomicSynthConfig()
    workers = resolve_workers(workers, "data from atomic models")
    S = len(ensemble.coords)
    if cfg.state_weights is not None and len(cfg.state_weights) != S:
        raise ConfigError(f"{len(cfg.state_weights)} weights for {S} models; give one "
                          "weight per model")
    if ensemble.kind == "trajectory" and cfg.state_weights is not None:
        raise ConfigError("state weights are for a list of models (--structures); a "
                          "trajectory's frames are weighted alike")
    geometry(ensemble, cfg)  # refuse before any folder is made
    out, manifest = publish(out, force, lambda tmp: _write(tmp, ensemble, cfg, star,
                                                           show_progress, workers))
    return AtomicSynthResult(out, manifest)


class _Job(NamedTuple):
    """What :func:`_render` reads (forked workers inherit it): the states' atoms ``(K, 3)``
    Å and weights ``(K,)``, σ (Å), the box, every image's pose ``(n, 3, 3)``, shift ``(n, 2)``
    px and CTF row ``(n, 9)``, each state's images, and the ``(n, D, D)`` float32 ``.npy``
    file of the noiseless images."""

    coords: list
    weights: list
    sigma: float
    D: int
    apix: float
    rot: np.ndarray
    shift: np.ndarray
    ctf: np.ndarray
    members: list
    clean_path: Path


#: The rendering in progress (:func:`_write`), which forked workers inherit.
_JOB: _Job | None = None


def render_plan(counts: np.ndarray, workers: int) -> list[tuple[int, int, int]]:
    """The parts ``(state, first chunk, end chunk)`` of the rendering, in the states' order:
    each state's images in chunks of ``_CHUNK`` (fixed: the bytes do not depend on the plan),
    its chunks in ``round(workers × its share of the images)`` runs (at least one; one per
    state where there are more states than workers, so that a state's map is made once)."""
    n, plan = int(np.sum(counts)), []
    for s, k in enumerate(counts):
        chunks = -(-int(k) // _CHUNK)
        runs = max(1, min(chunks, round(workers * int(k) / n)))
        edges = np.linspace(0, chunks, runs + 1).round().astype(int)
        plan += [(s, int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return plan


def _render(part: tuple[int, int, int]) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Render chunks ``first .. end − 1`` of a state's images into the noiseless stack (one
    FFT thread: the processes are the parallelism). Returns the state's map ``(D, D, D)``
    where ``first`` is 0 (the part that :func:`_write` takes it from, else None), the images
    rendered ``(B,)`` and the variance of each in the SNR's mask ``(B,)``, of its float32
    values (as written)."""
    s, first, end = part
    job = _JOB
    vol = rasterize_atoms(job.coords[s], job.weights[s], job.sigma, job.D, job.apix)
    idx = job.members[s][first * _CHUNK:end * _CHUNK]
    var = np.empty(len(idx))
    if len(idx):
        projector = SliceProjector(vol, job.apix, fft_threads=1)
        clean = np.load(job.clean_path, mmap_mode="r+")
        mask = signal_mask(job.D)
        for c in range(0, len(idx), _CHUNK):
            i = idx[c:c + _CHUNK]
            x = (-spectrum_to_images(projector.spectra(job.rot[i], job.shift[i]), job.D,
                                     job.apix, job.ctf[i], fft_threads=1)).astype(np.float32)
            clean[i] = x
            var[c:c + len(i)] = x.astype(np.float64)[:, mask].var(axis=1)
        del clean  # shared pages: the main process reads them without a sync to disk
    return (vol if first == 0 else None), idx, var


def _write(folder: Path, ens: Ensemble, cfg: AtomicSynthConfig, star: bool,
           show_progress: bool, workers: int) -> dict:
    start = time.perf_counter()
    D, n, S = cfg.D, cfg.n, len(ens.coords)
    apix, resolution, sigma = geometry(ens, cfg)
    rot, shift, ctf, conf_rng = cfg.draw(apix)
    counts = state_counts(n, cfg.state_weights if cfg.state_weights is not None else np.ones(S))
    state = conf_rng.permutation(np.repeat(np.arange(S), counts))
    grid = (set(range(S)) if ens.kind == "structures" else
            set(np.rint(np.linspace(0, S - 1, min(cfg.volume_grid, S))).astype(int).tolist()))
    position = np.arange(S) / max(S - 1, 1)

    (folder / "volumes").mkdir()
    clean_path = folder / ".clean.f32"
    np.lib.format.open_memmap(clean_path, mode="w+", dtype=np.float32, shape=(n, D, D)).flush()
    global _JOB
    _JOB = _Job(ens.coords, ens.weights, sigma, D, apix, rot, shift, ctf,
                [np.flatnonzero(state == s) for s in range(S)], clean_path)
    average, volumes, per_image_var = np.zeros((D,) * 3), [], np.empty(n)
    plan = render_plan(counts, workers)
    results = ordered_map(_render, plan, workers)
    try:
        done = zip(plan, results, strict=True)
        for (s, _, _), (vol, idx, var) in progress(done, len(plan), "projecting states",
                                                   unit="part", enabled=show_progress):
            per_image_var[idx] = var
            if vol is None:  # a later part of a state: its map came with the first
                continue
            average += vol * counts[s] / n  # in the states' order, whoever rendered them
            if s in grid:
                name = f"state{s:04d}.mrc"
                io.write_mrc(folder / "volumes" / name, vol.astype(np.float32), apix)
                volumes.append({"file": f"volumes/{name}", "z_continuous": float(position[s]),
                                "z_class": s if ens.kind == "structures" else 0,
                                "state": ens.labels[s]})
    finally:
        results.close()  # the workers end here, even on an error
        _JOB = None
    io.write_mrc(folder / "volumes" / "average.mrc", average.astype(np.float32), apix)
    volumes.append({"file": "volumes/average.mrc", "z_continuous": None, "z_class": None,
                    "note": "mean of the states' maps weighted by their images"})
    clean = np.load(clean_path, mmap_mode="r")

    signal_var = float(per_image_var[:min(n, _PILOT)].mean())
    noise_std = 0.0 if math.isinf(cfg.snr) else math.sqrt(signal_var / cfg.snr)
    noise_rng = noise_generator(cfg.seed)
    with io.StackWriter(folder / "particles.mrcs", n, D, apix) as stack:
        for s0 in range(0, n, _CHUNK):
            x = np.asarray(clean[s0:s0 + _CHUNK], dtype=np.float64)
            stack.write(s0, (x + noise_std * noise_rng.standard_normal(x.shape))
                        .astype(np.float32))
    del clean
    clean_path.unlink()

    rot32, trans = rot.astype(np.float32), (-shift / D).astype(np.float32)
    io.write_poses(folder / "poses.pkl", rot32, trans)
    io.write_ctf(folder / "ctf.pkl", ctf.astype(np.float32))
    files = {"particles": "particles.mrcs", "poses": "poses.pkl", "ctf": "ctf.pkl",
             "truth": "truth.npz"}
    if star:
        names = [f"{i + 1:06d}@particles.mrcs" for i in range(n)]
        io.write_star(folder / "particles.star", names, rot32, trans, ctf, D, apix)
        files["star"] = "particles.star"
    if ens.kind == "structures":
        truth = {"z_class": state.astype(np.int64), "z_continuous": position[state],
                 "model": state.astype(np.int64)}
        truth_note = {"z_class": "the model's index in the list",
                      "z_continuous": "the model's position in the list, index / (M - 1)"}
    else:
        truth = {"z_continuous": position[state], "frame": np.asarray(ens.frames)[state]}
        truth_note = {"z_continuous": "the frame's position along the frames used, in [0, 1]",
                      "frame": "the trajectory's frame number"}
    np.savez(folder / "truth.npz", **truth)
    seconds = time.perf_counter() - start
    manifest = {
        "generator": GENERATOR,
        "generator_version": GENERATOR_VERSION,
        "ampcheck_version": __version__,
        "config": asdict(cfg),
        "n": n, "D": D, "apix": apix, "snr": cfg.snr, "seed": cfg.seed,
        "resolution": resolution, "atom_sigma": sigma, "max_shift_px": cfg.shift_px,
        "snr_measured": float(per_image_var.mean() / noise_std**2) if noise_std else math.inf,
        "noise_std": noise_std,
        "signal_variance": signal_var,
        "contrast": "white particles: image = -CTF * projection (cryoDRGN's default inverts)",
        "snr_definition": "variance of the noiseless signal inside the circular mask of radius "
                          "D/2 over the noise variance",
        "physics": {
            "atoms": f"isotropic Gaussians, sigma = {SIGMA_PER_RESOLUTION:.4f} x resolution "
                     "(Chimera molmap), integral f_e(0): the electron scattering factor at "
                     "zero angle (International Tables Vol. C 4.3.2.2, via gemmi), cut at "
                     f"{CUTOFF_SIGMAS} sigma",
            "projection": f"central slices of the map's transform, zero-padded x{padding(D)}, "
                          "gridding-corrected, trilinear",
        },
        "source": {"kind": ens.kind, **ens.sources, "atoms_per_state": ens.n_atoms,
                   **ens.selection},
        "alignment": {"core_atoms": ens.core_atoms,
                      "core_rmsd_max": float(ens.core_rmsd.max()),
                      "rmsd_to_first_max": (None if np.isnan(ens.rmsd).any()
                                            else float(ens.rmsd.max()))},
        "states": [{"state": lab, "images": int(k)} for lab, k in zip(ens.labels, counts,
                                                                        strict=True)],
        "files": files,
        "truth": {**truth_note, "per_image": sorted(truth)},
        "volumes": volumes,
        "seconds": seconds,
        "images_per_second": n / seconds,
        "workers": workers,
    }
    with io.atomic_path(folder / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(manifest, indent=2, default=float) + "\n")
    return manifest
