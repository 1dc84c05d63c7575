"""A model trained by ``cryodrgn train_vae`` (cryoDRGN 4.3), behind ampcheck's VAE protocol.

cryoDRGN is optional: it is imported inside the functions that need it, so importing this
module never needs it; without it they raise :class:`~ampcheck.errors.ConfigError` naming
``pip install "ampcheck[cryodrgn]"``. The network is always cryoDRGN's own ``HetOnlyVAE``,
built from the run's ``config.yaml`` by ``HetOnlyVAE.load`` (as ``cryodrgn eval_images`` and
``analyze`` build it); nothing of its architecture is re-implemented here.

An image reaches the encoder exactly as in cryoDRGN's ``eval_z`` (``commands/train_vae.py``),
which writes ``z.pkl`` at the end of training; each step is cryoDRGN's own function:

1. real-space window ``masking.spherical_window_mask(D, window_r, 0.99)`` when
   ``dataset_args.window`` (``dataset.ImageDataset._process``);
2. contrast inversion when ``dataset_args.invert_data``;
3. ``fft.ht2_center`` then ``fft.symmetrize_ht``: the centred Hartley image ``(D+1, D+1)``;
4. ``(h - norm[0]) / norm[1]`` with ``dataset_args.norm`` as stored in the config;
5. when the poses carry translations, ``Lattice.translate_ht`` by the pose's shift
   (``train_vae.preprocess_input``). cryoDRGN's ``PoseTracker.load`` turns the file's
   fractions of the box into pixels with the *symmetrised* size ``D + 1`` (``train_vae``
   passes ``data.D = D + 1``), so its shift is ``frac * (D + 1)``; ampcheck's ``meta["trans"]``
   is ``frac * D``, and is scaled by ``(D + 1) / D`` here to reproduce cryoDRGN's numbers;
6. when the run used a CTF, phase flipping by ``sign(ctf.compute_ctf(...))`` on
   ``lattice.freqs2d / apix``, with ``apix = D_file * apix_file / D`` as
   ``ctf.load_ctf_for_training`` computes it;
7. ``HetOnlyVAE.encode``: the circular encoder mask ``model_args.enc_mask`` and the MLP.

The decoder side (:meth:`CryoDRGNVAE.recon_loss`) is ``train_vae.run_batch`` /
``loss_function`` per image: ``HetOnlyVAE`` evaluated at ``lattice.coords[mask] / extent / 2
@ rot`` on the circular mask of radius ``D/2`` (DC excluded), times the CTF, against the
translated Hartley image; the loss is the mean squared error over the masked pixels.

Volumes (:meth:`CryoDRGNVAE.decode_volume`) are cryoDRGN's own, as ``cryodrgn eval_vol -z``
writes them: the decoder's ``eval_volume`` on the run's lattice (``lattice.coords``,
``lattice.D``, ``lattice.extent``) with the run's ``dataset_args.norm``, so the invariance
checks compare the volumes a cryoDRGN user would look at (``volume_displacement``).

Steps 5-7 and the decoder are :class:`~ampcheck.adapters.cryodrgn_retrain.CryoDRGNNet`'s, the
same code that retrains the run's network for ``evil_twin`` and ``vlt_equivalence``
(``retrain`` of :func:`check_cryodrgn`).
"""

from __future__ import annotations

import copy
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from ..budgets import DEFAULT_BUDGET
from ..errors import ConfigError, InputError, UnsafePickleError, first_line
from .cryodrgn_lib import checkpoint_epoch, import_cryodrgn
from .cryodrgn_retrain import TABLE_LR, CryoDRGNNet, recorded_seed, retrain_config

__all__ = ["CryoDRGNVAE", "RETRAIN_HINT", "check_cryodrgn", "check_cryodrgn_run",
           "cryodrgn_dataset", "cryodrgn_latents", "cryodrgn_run_data", "cryodrgn_split",
           "describe_run", "load_cryodrgn", "open_cryodrgn_run", "read_indices", "saved_epochs"]

PathLike = str | os.PathLike

#: cryoDRGN commands whose output directories are not train_vae's (other models or layouts).
_OTHER_COMMANDS = frozenset({"train_nn", "train_dec", "abinit", "abinit_het", "abinit_homo",
                             "abinit_het_old", "abinit_homo_old", "backproject_voxel"})
_MODEL_KEYS = ("qlayers", "qdim", "players", "pdim", "zdim", "encode_mode", "enc_mask",
               "pe_type", "pe_dim", "domain")


# ----------------------------------------------------------------------------- the run directory
def saved_epochs(run_dir: PathLike) -> dict[int, Path]:
    """The numbered weights of a ``train_vae`` run, ``{epoch: weights.<epoch>.pkl}`` in epoch
    order (cryoDRGN numbers them from 1 and keeps every ``--checkpoint``-th)."""
    numbered = {}
    for p in Path(run_dir).iterdir():
        m = re.fullmatch(r"weights\.(\d+)\.pkl", p.name)
        if m and p.is_file():
            numbered[int(m.group(1))] = p
    return dict(sorted(numbered.items()))


def _weights_path(run: Path, epoch: int | None) -> tuple[Path, int | None]:
    """``weights.pkl`` (or the highest ``weights.N.pkl``) for ``epoch=None``, else
    ``weights.<epoch>.pkl``; returns the path and its epoch (None: the final weights)."""
    numbered = saved_epochs(run)
    if epoch is None:
        if (run / "weights.pkl").is_file():
            return run / "weights.pkl", None
        if numbered:
            last = max(numbered)
            return numbered[last], last
        raise InputError(f"{run}: no weights.pkl or weights.N.pkl; expected the output "
                         "directory of cryodrgn train_vae")
    if isinstance(epoch, bool) or not isinstance(epoch, int | np.integer) or epoch < 1:
        raise ConfigError(f"epoch must be a positive integer or None (the final weights), "
                          f"got {epoch!r}")
    if int(epoch) not in numbered:
        have = ", ".join(map(str, sorted(numbered))) or "none"
        raise InputError(f"{run}: no weights.{epoch}.pkl; epochs saved: {have}")
    return numbered[int(epoch)], int(epoch)


def _read_config(run: Path) -> dict[str, Any]:
    """config.yaml of a train_vae run, checked for what the adapter needs."""
    path = run / "config.yaml"
    if not path.is_file():
        old = " (config.pkl is from cryoDRGN < 1.0; not supported)" \
            if (run / "config.pkl").is_file() else ""
        raise InputError(f"{run}: no config.yaml{old}; expected the output directory of "
                         "cryodrgn train_vae")
    import yaml  # a dependency of cryodrgn, imported after it

    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not readable as YAML ({first_line(e)})") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: holds a {type(cfg).__name__}; expected a mapping with "
                         "dataset_args, lattice_args and model_args (cryodrgn train_vae)")
    cmd = cfg.get("cmd")
    command = next((str(a) for a in cmd if str(a) in _OTHER_COMMANDS), None) \
        if isinstance(cmd, list) else None
    if command is not None:
        raise InputError(f"{path}: written by cryodrgn {command}; expected a cryodrgn "
                         "train_vae run (a heterogeneous VAE with an encoder)")
    sections = {"dataset_args": ("norm",), "lattice_args": ("D", "extent"),
                "model_args": _MODEL_KEYS}
    for section, keys in sections.items():
        part = cfg.get(section)
        missing = [k for k in keys if not isinstance(part, dict) or k not in part]
        if missing:
            raise InputError(f"{path}: no {section}: {', '.join(missing)}; expected the "
                             "config.yaml of cryodrgn train_vae (a heterogeneous VAE)")
    mode = cfg["model_args"]["encode_mode"]
    if mode not in ("resid", "mlp"):
        why = {"conv": "its encoder reads real-space images normalised by statistics that "
                       "config.yaml does not store",
               "tilt": "tilt-series models are not supported"}.get(mode, "unknown mode")
        raise InputError(f"{path}: encode_mode {mode!r} ({why}); expected 'resid' or 'mlp'")
    norm = cfg["dataset_args"]["norm"]
    ok = isinstance(norm, list | tuple) and len(norm) == 2 and all(
        isinstance(v, int | float) and np.isfinite(v) for v in norm) and norm[1] > 0
    if not ok:
        raise InputError(f"{path}: dataset_args.norm is {norm!r}; expected [mean, std] with "
                         "std > 0")
    D = cfg["lattice_args"]["D"]
    if not isinstance(D, int) or D < 3 or D % 2 == 0:
        raise InputError(f"{path}: lattice_args.D is {D!r}; expected an odd size D + 1")
    return cfg


def _beta(cfg: dict[str, Any], path: Path) -> float:
    """The KL weight of the run: ``--beta`` of its recorded command line, else ``1/zdim``
    (cryoDRGN's default; config.yaml does not store beta itself)."""
    cmd = cfg.get("cmd") if isinstance(cfg.get("cmd"), list) else []
    for i, arg in enumerate(map(str, cmd)):
        value = cmd[i + 1] if arg == "--beta" and i + 1 < len(cmd) else \
            arg.partition("=")[2] if arg.startswith("--beta=") else None
        if value is None:
            continue
        try:
            return float(value)
        except (TypeError, ValueError):
            warnings.warn(f"{path}: trained with the beta schedule {value!r}; the KL weight "
                          "uses beta = 1/zdim", stacklevel=3)
            break
    return 1.0 / float(cfg["model_args"]["zdim"])


# ----------------------------------------------------------------------------- the model
class CryoDRGNVAE(torch.nn.Module):
    """cryoDRGN's ``HetOnlyVAE`` with cryoDRGN's own preprocessing, as an ampcheck VAE.

    Made by :func:`load_cryodrgn`. ``x`` is a batch of raw real-space images ``(B, D, D)``
    float32 as stored in the particle stack (possibly transformed: a roll, a 90° rotation);
    ``meta`` holds ``rot (B, 3, 3)``, ``trans (B, 2)`` in pixels (``fraction * D``), ``ctf (B, 9)``
    ``[D, apix, dfu, dfv, dfang, volt, cs, w, phase_shift]`` and ``index (B,)``; ``ctf`` may be
    absent for a run without CTF, ``trans`` for poses without translations.

    Objective scale: :meth:`recon_loss` is cryoDRGN's ``gen_loss`` per image, the mean squared
    error over the ``n_pix`` pixels of the decoder's circular mask (Hartley units of the
    normalised images), and ``kl_weight = beta / n_pix``, so that ``recon_loss + kl_weight *
    KL`` is, per image, the loss that ``train_vae`` minimises (``gen_loss + beta * kld /
    mask.sum()``); ``beta`` is the run's ``--beta`` or ``1/zdim``.

    The model is for evaluation: parameters are frozen and it stays on the device it was loaded
    on (load again with another ``device`` to move it).
    """

    def __init__(self, net: torch.nn.Module, lattice: Any, cfg: dict[str, Any], *,
                 cd: SimpleNamespace, beta: float, run_dir: Path, weights: Path,
                 epoch: int | None, device: torch.device):
        super().__init__()
        ds = cfg["dataset_args"]
        self.uses_ctf = ds.get("ctf") is not None
        # cryoDRGN's steps from the Hartley image on (translation, CTF, encoder, decoder),
        # shared with the retrained variants (adapters.cryodrgn_retrain)
        self.core = CryoDRGNNet(net, lattice, use_ctf=self.uses_ctf, cd=cd)
        self.config = cfg
        self.run_dir, self.weights_path, self.epoch = run_dir, weights, epoch
        self.device = device
        self._cd = cd
        self.D, self.zdim = self.core.D, self.core.zdim  # images D x D; Hartley D + 1
        self.invert = bool(ds.get("invert_data", True))
        self.norm = (float(ds["norm"][0]), float(ds["norm"][1]))
        self.window_r = float(ds.get("window_r", 0.85))
        self.window = (cd.window_mask(D=self.D, in_rad=self.window_r, out_rad=0.99).to(device)
                       if ds.get("window", True) else None)
        self.n_pix = self.core.n_pixels  # run_batch's decoder mask
        self.beta = float(beta)
        self.kl_weight = self.beta / self.n_pix

    def __repr__(self) -> str:
        at = "final" if self.epoch is None else f"epoch {self.epoch}"
        return (f"CryoDRGNVAE({str(self.run_dir)!r}, {at}, D={self.D}, zdim={self.zdim}, "
                f"encode_mode={self.config['model_args']['encode_mode']!r}, "
                f"ctf={self.uses_ctf}, device={self.device})")

    # ------------------------------------------------------------------ preprocessing
    def hartley(self, x: torch.Tensor, meta: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw images ``(B, D, D)`` -> cryoDRGN's translated, normalised, symmetrised centred
        Hartley images ``(B, D+1, D+1)`` (steps 1-5 of the module docstring)."""
        x = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.D, self.D):
            raise InputError(f"images of shape {tuple(x.shape)}; the cryoDRGN model in "
                             f"{self.run_dir} expects (B, {self.D}, {self.D})")
        B, D1 = x.shape[0], self.D + 1
        if self.window is not None:
            x = x * self.window
        if self.invert:
            x = -x
        fft = self._cd.fft
        # symmetrize_ht drops the batch axis of a single image, hence the reshape
        y = fft.symmetrize_ht(fft.ht2_center(x)).reshape(B, D1, D1)
        y = (y - self.norm[0]) / self.norm[1]
        trans = meta.get("trans")
        return y if trans is None else self.core.translate(y, trans)

    def ctf(self, meta: Mapping[str, torch.Tensor], B: int) -> torch.Tensor | None:
        """The CTF ``(B, D+1, D+1)`` on the lattice, or None for a run without CTF."""
        if self.uses_ctf and meta.get("ctf") is None:
            raise InputError(f"the cryoDRGN model in {self.run_dir} was trained with CTF "
                             f"parameters ({self.config['dataset_args']['ctf']}); give the CTF "
                             "file of the particles")
        return self.core.ctf(meta.get("ctf"))

    # ------------------------------------------------------------------ the VAE protocol
    def encode(self, x: torch.Tensor, meta: Mapping[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)``, each ``(B, zdim)``, as cryoDRGN's ``eval_z`` computes them."""
        y = self.hartley(x, meta)
        c = self.ctf(meta, y.shape[0])
        return self.core.encode(y if c is None else y * c.sign())  # phase flip, as eval_z

    def recon_loss(self, x: torch.Tensor, z: torch.Tensor,
                   meta: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Per-image mean squared error ``(B,)`` over the decoder mask, differentiable in
        ``z (B, zdim)``: cryoDRGN's ``gen_loss`` image by image."""
        y = self.hartley(x, meta)
        prep = {"target": y, **({"rot": meta["rot"]} if "rot" in meta else {})}
        c = self.ctf(meta, y.shape[0])
        if c is not None:
            prep["ctf"] = c
        return self.core.recon_loss(prep, z)

    @torch.no_grad()
    def decode_volume(self, z: np.ndarray | torch.Tensor) -> np.ndarray:
        """The real-space volume ``(D, D, D)`` float32 (indexed ``[z, y, x]``) at latent
        ``z (zdim,)``: what ``cryodrgn eval_vol --weights <w> -c config.yaml -z <z>`` writes
        (without its ``--flip``, ``--invert``, ``--low-pass``, ``--crop``, ``--downsample``),
        computed by the run's own decoder (``eval_volume``) on its lattice and normalisation."""
        try:
            return self.core.decode_volume(z, self.norm)
        except InputError:
            raise InputError(f"a latent of shape {np.shape(z)}; the cryoDRGN model in "
                             f"{self.run_dir} decodes finite latents of shape "
                             f"({self.zdim},)") from None


def load_cryodrgn(run_dir: PathLike, *, epoch: int | None = None, device: str = "auto",
                  beta: float | None = None) -> CryoDRGNVAE:
    """Load a ``cryodrgn train_vae`` output directory as a :class:`CryoDRGNVAE`.

    Args:
        run_dir: the directory with ``config.yaml`` and ``weights.pkl`` / ``weights.N.pkl``.
        epoch: which ``weights.N.pkl``; None: ``weights.pkl`` (the final weights, whose
            latents are ``z.pkl``), else the highest ``weights.N.pkl``.
        device: ``auto``, ``cpu`` or ``cuda[:N]``.
        beta: the KL weight of the run; None: its recorded ``--beta``, else ``1/zdim``.

    The checkpoint is read with ``torch.load(weights_only=True)``. Raises
    :class:`ConfigError` without cryodrgn, :class:`InputError` for a missing or unreadable
    directory, config or weights, and for a config that is not train_vae's.
    """
    cd = import_cryodrgn()
    from ..train import resolve_device

    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: not a directory; expected the output directory of cryodrgn "
                         "train_vae (config.yaml, weights.pkl)")
    cfg = _read_config(run)
    weights, found_epoch = _weights_path(run, epoch)
    dev = resolve_device(device)
    try:  # old configs: defaults for feat_sigma and activation, as cryoDRGN's analysis does
        cfg_model = cd.config.update_config_v1(copy.deepcopy(cfg))
        net, lattice = cd.HetOnlyVAE.load(cfg_model, weights=None, device=dev)
    except (AssertionError, KeyError, RuntimeError, ValueError, TypeError) as e:
        raise InputError(f"{run / 'config.yaml'}: cryodrgn {cd.version} cannot build the model "
                         f"it describes ({type(e).__name__}: {e})") from None
    try:
        ckpt = torch.load(weights, map_location=dev, weights_only=True)
    except Exception as e:  # a refused global, a truncated or non-torch file
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise UnsafePickleError(f"{weights}: refusing to load it (it holds more than "
                                    "tensors and plain data)") from None
        raise InputError(f"{weights}: not a readable torch checkpoint ({type(e).__name__}: "
                         f"{first_line(e)})") from None
    state = ckpt.get("model_state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise InputError(f"{weights}: no model_state_dict; expected a cryodrgn train_vae "
                         "checkpoint")
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise InputError(f"{weights}: the weights do not fit the model in config.yaml "
                         f"({first_line(e)})") from None
    net.requires_grad_(False)  # checks optimise latents only
    beta = _beta(cfg, run / "config.yaml") if beta is None else float(beta)
    model = CryoDRGNVAE(net, lattice, cfg, cd=cd, beta=beta, run_dir=run, weights=weights,
                        epoch=found_epoch, device=dev)
    return model.eval()


# ----------------------------------------------------------------------------- data and checks
def read_indices(path: PathLike, n: int) -> np.ndarray:
    """A cryoDRGN ``--ind`` pickle of distinct image indices in ``[0, n)``
    (:func:`ampcheck.cryoem.indices.read_ind`), sorted."""
    from ..cryoem.indices import read_ind

    return np.sort(read_ind(path, n))


def cryodrgn_dataset(model: CryoDRGNVAE, particles: PathLike, poses: PathLike | None,
                     ctf: PathLike | None = None, truth: PathLike | None = None, *,
                     datadir: PathLike | None = None):
    """The ``ParticleDataset`` of ``particles`` (with poses, CTF, optional truth ``.npz``;
    ``datadir``: where the stacks a ``.star`` names live, as cryoDRGN's ``--datadir``),
    checked against ``model``: same image size, CTF given when the run used one. Its
    window, contrast and normalisation are the run's, so its ``y`` is what cryoDRGN trained
    on (before shifts), and what the retrained variants train on."""
    from ..data.particles import ParticleDataset

    # the run's own preprocessing: the data set's y then matches the model's, and no pass
    # over the stack is spent estimating another normalisation
    data = ParticleDataset.from_files(particles, poses=poses, ctf=ctf, truth=truth,
                                      datadir=datadir, norm=model.norm, invert=model.invert,
                                      window=model.window is not None, window_r=model.window_r)
    D1 = model.D + 1
    if data.D != model.D:
        raise InputError(f"{particles}: images are {data.D} x {data.D} pixels but the cryoDRGN "
                         f"model in {model.run_dir} was trained on {model.D} x {model.D} "
                         f"(config.yaml lattice_args.D = {D1}); expected its particle stack")
    if data.rot is None:
        raise InputError(f"{particles}: no poses; give the poses file the model was trained "
                         "with")
    if model.uses_ctf and data.ctf is None:
        raise InputError(f"the cryoDRGN model in {model.run_dir} was trained with CTF "
                         f"parameters ({model.config['dataset_args']['ctf']}); give ctf=")
    if model.config["dataset_args"].get("do_pose_sgd") and \
            Path(poses or "").name != "pose.pkl":
        warnings.warn(f"the cryoDRGN run in {model.run_dir} refined its poses (--do-pose-sgd); "
                      "its latents used the refined ones: give poses=<run>/pose.pkl",
                      stacklevel=3)
    if not model.uses_ctf and data.ctf is not None:
        warnings.warn(f"the cryoDRGN model in {model.run_dir} was trained without CTF; the "
                      "CTF given is not used", stacklevel=3)
    return data


def check_cryodrgn(run_dir: PathLike, particles: PathLike, poses: PathLike | None,
                   ctf: PathLike | None = None, *, truth: PathLike | None = None,
                   heldout_ind: PathLike | None = None, ind: PathLike | None = None,
                   datadir: PathLike | None = None, checks: Iterable[str] | None = None,
                   epoch: int | None = None, device: str = "auto",
                   thresholds: Mapping[str, float] | None = None, budget: str = DEFAULT_BUDGET,
                   options: Mapping[str, Any] | None = None, retrain: int | str | None = None,
                   table_lr: float | None = None, show_progress: bool = False) -> list:
    """Run ampcheck's checks on a ``cryodrgn train_vae`` run; one ``CheckResult`` each.

    Args:
        run_dir: the run's output directory (see :func:`load_cryodrgn`).
        particles, poses, ctf: the stack (``.mrcs``, ``.txt``, ``.star``), poses ``.pkl`` and
            CTF ``.pkl`` the run was trained on (a ``.star`` may supply poses and CTF).
        truth: optional ground truth ``.npz`` (``z_continuous`` / ``z_class``), needed by
            ``heldout_generalisation``.
        heldout_ind: a pickled index array (cryoDRGN's ``--ind`` format) of the images the
            run did NOT train on; the rest are its training images (or those of ``ind``).
        ind: the ``--ind`` the run was trained with: its training images. Without
            ``heldout_ind`` every other image of the stack is held out, so a run trained on a
            subset is checked on training against held-out images with no other file.
        datadir: where the stacks a ``.star`` names live (cryoDRGN's ``--datadir``).
        checks: names; default: the whole battery, in its order, where the encoder checks
            run (``shift_invariance``, ``rotation_invariance``; ``amortization_gap`` on
            training and held-out images, and ``heldout_generalisation`` with ``truth``,
            when ``heldout_ind`` or ``ind`` is given; ``evil_twin`` and
            ``vlt_equivalence`` with ``retrain``) and the others are ``SKIP`` results that
            say what they need. A check named here that cannot run is an error.
        retrain: ``evil_twin`` and ``vlt_equivalence`` train the run's network again, three
            times (two evil twins and a lookup table), with its architecture and settings
            (:func:`~ampcheck.adapters.cryodrgn_retrain.retrain_config`) on its training
            images. ``"run"``: for the epochs its weights were trained for, and the run itself
            is their reference; a number of epochs: fewer (cheaper), and the run's ``vae`` is
            retrained at that number too, as their reference. None (default): they are
            ``SKIP`` in the default battery, and ``"run"`` when named in ``checks``.
        table_lr: the retrained lookup table's learning rate (default:
            :data:`~ampcheck.adapters.cryodrgn_retrain.TABLE_LR`, the table's own rate, not
            the run's; the option ``table_lr`` in ``options`` says the same).
        epoch, device: as :func:`load_cryodrgn`. thresholds, budget, options: as
            :func:`ampcheck.checks.check_vae`. show_progress: log each retraining's epochs.
    """
    model, data = open_cryodrgn_run(run_dir, particles, poses, ctf, truth=truth, ind=ind,
                                    datadir=datadir, epoch=epoch, device=device)
    return check_cryodrgn_run(model, data, particles=particles, heldout_ind=heldout_ind, ind=ind,
                              checks=checks, thresholds=thresholds, budget=budget,
                              options=options, retrain=retrain, table_lr=table_lr,
                              show_progress=show_progress)


def open_cryodrgn_run(run_dir: PathLike, particles: PathLike, poses: PathLike | None,
                      ctf: PathLike | None = None, *, truth: PathLike | None = None,
                      ind: PathLike | None = None, datadir: PathLike | None = None,
                      epoch: int | None = None, device: str = "auto"):
    """``(model, data)`` of :func:`check_cryodrgn`: the run's weights and the whole stack
    (with ``ind`` (--ind), a count mismatch says that held-out images need poses too)."""
    model = load_cryodrgn(run_dir, epoch=epoch, device=device)
    return model, cryodrgn_run_data(model, particles, poses, ctf, truth=truth, ind=ind,
                                    datadir=datadir)


def cryodrgn_run_data(model: CryoDRGNVAE, particles: PathLike, poses: PathLike | None,
                      ctf: PathLike | None = None, *, truth: PathLike | None = None,
                      ind: PathLike | None = None, datadir: PathLike | None = None):
    """The whole stack of :func:`open_cryodrgn_run` for a ``model`` already loaded."""
    try:
        data = cryodrgn_dataset(model, particles, poses, ctf, truth, datadir=datadir)
    except InputError as e:
        if ind is None:
            raise
        # cryoDRGN accepts poses already filtered to --ind; held-out images need their own
        raise InputError(f"{e}; with ind (--ind), give the poses and CTF of the whole stack: "
                         "the held-out images are checked at their poses too") from None
    return data


def check_cryodrgn_run(model: CryoDRGNVAE, data, *, particles: PathLike,
                       heldout_ind: PathLike | None = None, ind: PathLike | None = None,
                       checks: Iterable[str] | None = None,
                       thresholds: Mapping[str, float] | None = None, budget: str = DEFAULT_BUDGET,
                       options: Mapping[str, Any] | None = None,
                       retrain: int | str | None = None, table_lr: float | None = None,
                       show_progress: bool = False, cache=None, settings=None) -> list:
    """The checks of :func:`check_cryodrgn` on a run opened by :func:`open_cryodrgn_run`
    (``cache``: a :class:`~ampcheck.checks.TrainingCache` that keeps the retrained variants,
    for a report that lists them; ``settings``: as :func:`~ampcheck.checks.check_vae`'s)."""
    from dataclasses import replace

    from ..checks import TrainingCache, check_vae, resolve_checks
    from ..kinds import validate_options

    n = len(data)  # the whole stack's
    data, train_idx, in_stack = cryodrgn_split(data, particles=particles,
                                               heldout_ind=heldout_ind, ind=ind)
    names = resolve_checks(checks)
    options = validate_options(options)
    if table_lr is not None and options.get("table_lr") not in (None, table_lr):
        raise ConfigError(f"table_lr {table_lr} and the option table_lr "
                          f"{options['table_lr']} disagree; give one")
    given_lr = table_lr if table_lr is not None else options.get("table_lr")
    if given_lr is not None and (isinstance(given_lr, bool)
                                 or not isinstance(given_lr, int | float)
                                 or not given_lr > 0 or not np.isfinite(given_lr)):
        raise ConfigError(f"table_lr must be a positive number, got {given_lr!r}")
    # the table learns at its own rate, not the run's (module cryodrgn_retrain, TABLE_LR)
    options["table_lr"] = float(TABLE_LR if given_lr is None else given_lr)
    if retrain is None and checks is not None and {"evil_twin", "vlt_equivalence"} & set(names):
        retrain = "run"
    if retrain is not None and retrain != "run" and (
            isinstance(retrain, bool) or not isinstance(retrain, int | np.integer)
            or retrain < 1):
        raise ConfigError(f"retrain must be 'run' or a positive number of epochs, got "
                          f"{retrain!r}")
    cache = cache if cache is not None else TrainingCache(show_progress=show_progress)
    # the seed train_vae recorded (given or drawn): the variants start as the run did
    seed = recorded_seed(getattr(model, "config", None) or {}) or 0
    cfg = None
    if retrain is not None and {"evil_twin", "vlt_equivalence"} & set(names):
        _same_training_images(model, in_stack, n)
        cfg = retrain_config(model, epochs=None if retrain == "run" else int(retrain),
                             device=str(model.device), seed=seed)
    # the run itself is the variants' reference when they train as long as it did
    same = cfg is None or retrain == "run" or cfg.epochs == checkpoint_epoch(
        model.weights_path, model.epoch)
    skip = None if checks is not None else _left_out(data, train_idx is not None,
                                                     retrain is not None)
    results = check_vae(model, data, checks=checks, budget=budget, seeds=[seed],
                        thresholds=thresholds, train_indices=train_idx, name="cryodrgn",
                        cache=cache, options=options, skip=skip, variant_config=cfg,
                        model_is_variant=same, settings=settings)
    source = ("given (table_lr, --table-lr)" if given_lr is not None else
              "ampcheck's rate for a cryoDRGN run's table (cryodrgn_retrain.TABLE_LR), not the "
              "run's learning rate: a table row moves once per epoch")
    return [replace(r, details={**r.details, "table": {**r.details["table"], "lr_from": source}})
            if "table" in r.details and not r.details["table"].get("frozen") else r
            for r in results]


def cryodrgn_split(data, *, particles: PathLike, heldout_ind: PathLike | None = None,
                   ind: PathLike | None = None):
    """``(data, train_idx, in_stack)``: the images checked (with both ``ind`` and
    ``heldout_ind``, only theirs), the positions in it of the run's training images (None:
    every image, none held out) and those positions in the whole stack (None: not given).
    Held-out indices that overlap the training ones are refused."""
    train_idx, in_stack, n = None, None, len(data)
    held = None if heldout_ind is None else read_indices(heldout_ind, n)
    if ind is not None:
        train_idx = read_indices(ind, n)
        in_stack = train_idx  # the run's training images, as positions in the stack
        if held is not None:  # both given: the images of neither are not checked
            both = np.intersect1d(train_idx, held)
            if len(both):
                raise InputError(f"{heldout_ind}: image {int(both[0])} is also in {ind}; "
                                 "expected held-out images the run did not train on")
            keep = np.union1d(train_idx, held)
            data, train_idx = data.subset(keep), np.searchsorted(keep, train_idx)
        if len(train_idx) == len(data):
            train_idx = None  # the run trained on every image: none is held out
    elif held is not None:
        train_idx = in_stack = np.setdiff1d(np.arange(n), held)
        if not len(train_idx):
            raise InputError(f"{heldout_ind}: holds every image of {particles}; expected only "
                             "the held-out ones")
    return data, train_idx, in_stack


def _same_training_images(model: CryoDRGNVAE, in_stack: np.ndarray | None, n: int) -> None:
    """Refuse to retrain the run's variants on other images than it trained on: ``in_stack``
    (positions in the stack of ``n`` images; None: not given) against the ``--ind`` its
    ``config.yaml`` records (compared by content where that file is still readable)."""
    recorded = model.config["dataset_args"].get("ind")
    where = model.run_dir / "config.yaml"
    if recorded is None:
        if in_stack is not None and len(in_stack) != n:
            raise ConfigError(f"{where} records no --ind: the run trained on all {n} images, "
                              f"but {len(in_stack)} are given as its training images; the "
                              "variants must train on the run's own images")
        return
    if in_stack is None:
        raise ConfigError(f"the run trained on the images of its --ind ({recorded}, as "
                          f"{where} records); give ind (--ind) so that its variants train on "
                          "the same images")
    try:
        theirs = read_indices(recorded, n) if Path(recorded).is_file() else None
    except InputError:
        theirs = None  # unreadable now: the checks go by the indices given
    if theirs is not None and not np.array_equal(theirs, in_stack):
        raise ConfigError(f"the training images given ({len(in_stack)}) are not those of the "
                          f"run's --ind {recorded} ({len(theirs)}); the variants must train on "
                          "the run's own images")


#: Why a cryoDRGN run's default battery leaves out the checks that retrain it.
RETRAIN_HINT = ("trains the run's network three more times (two evil twins and a lookup table) "
                "with its architecture and settings: give retrain='run' (--retrain) for the "
                "epochs its weights were trained for, or retrain=E (--retrain E) for fewer "
                "(its vae is then retrained at E epochs too, as their reference)")


#: How a cryoDRGN run's checks get held-out images, and ground truth, in the adapter's own
#: arguments (what a ``SKIP`` result says in place of ``check_vae``'s).
GIVE_HELDOUT = ("give ind (--ind), the indices the run was trained on (cryoDRGN's --ind), or "
                "heldout_ind (--heldout-ind), those it did not train on")
GIVE_TRUTH = "give truth= (--truth), an .npz with z_continuous and/or z_class"


def _left_out(data, heldout: bool, retrain: bool = False) -> dict[str, str]:
    """The default battery's checks that a cryoDRGN run cannot take, each with the reason
    its ``SKIP`` result gives (:func:`~ampcheck.checks.missing_reason`, said in the adapter's
    own arguments)."""
    from ..checks import missing_reason, usable_truth

    give_heldout = missing_reason("heldout", how=GIVE_HELDOUT)
    no_truth = None if usable_truth(data.truth) else missing_reason("truth", data.truth,
                                                                     how=GIVE_TRUTH)
    skip = {} if retrain else {"evil_twin": RETRAIN_HINT, "vlt_equivalence": RETRAIN_HINT}
    if not heldout:
        skip["amortization_gap"] = ("compares training with held-out images, so it needs them: "
                                    + GIVE_HELDOUT)
    if not heldout or no_truth:
        skip["heldout_generalisation"] = "; ".join(
            r for r in (None if heldout else give_heldout, no_truth) if r)
    return skip


def describe_run(model: CryoDRGNVAE, data=None) -> dict[str, Any]:
    """What a report says of the cryoDRGN run ``model`` was loaded from (``runs["cryodrgn"]``
    of ``report.json``), as plain JSON values:

    * ``run_dir``, ``weights`` (absolute paths) and ``epoch``: the epoch of the weights used,
      as their checkpoint records it (for ``weights.pkl`` too: the run's last epoch);
    * ``cryodrgn_version`` and ``command``: what trained it, from ``config.yaml``;
    * ``architecture``: ``encoder`` (``layers``, ``width``, ``mode``, ``mask_radius``),
      ``decoder`` (``layers``, ``width``), ``zdim``, ``pe_type``, ``pe_dim``, ``domain``,
      ``activation`` and ``D`` (image side, pixels);
    * ``preprocessing``: ``window`` (with ``window_r``), ``invert_data``, ``norm``, ``ctf``
      (whether the run used one), ``translations`` (whether the poses checked with carry
      them; None without ``data``) and ``do_pose_sgd``;
    * ``beta``: the KL weight the checks use;
    * ``trained_on``: the files ``config.yaml`` records (``particles``, ``poses``, ``ctf``,
      ``ind``, ``datadir``), as cryoDRGN wrote them.

    ``data``: the data set checked (:func:`cryodrgn_dataset`), for ``translations``.
    """
    cfg = model.config
    m, ds = cfg["model_args"], cfg["dataset_args"]
    cmd = cfg.get("cmd")
    return {
        "run_dir": str(Path(model.run_dir).resolve()),
        "weights": str(Path(model.weights_path).resolve()),
        "epoch": checkpoint_epoch(Path(model.weights_path), model.epoch),
        "cryodrgn_version": None if cfg.get("version") is None else str(cfg["version"]),
        "command": [str(a) for a in cmd] if isinstance(cmd, list) else None,
        "architecture": {
            "encoder": {"layers": m["qlayers"], "width": m["qdim"], "mode": m["encode_mode"],
                        "mask_radius": m["enc_mask"]},
            "decoder": {"layers": m["players"], "width": m["pdim"]},
            "zdim": model.zdim, "pe_type": m["pe_type"], "pe_dim": m["pe_dim"],
            "domain": m["domain"], "activation": m.get("activation", "relu"), "D": model.D},
        "preprocessing": {
            "window": model.window is not None, "window_r": ds.get("window_r", 0.85),
            "invert_data": model.invert, "norm": list(model.norm), "ctf": model.uses_ctf,
            "translations": None if data is None else data.trans_frac is not None,
            "do_pose_sgd": bool(ds.get("do_pose_sgd", False))},
        "beta": model.beta,
        "trained_on": {k: None if ds.get(k) is None else str(ds[k])
                       for k in ("particles", "poses", "ctf", "ind", "datadir")},
    }


def cryodrgn_latents(run_dir: PathLike, particles: PathLike, poses: PathLike | None,
                     ctf: PathLike | None = None, epoch: int | None = None, *,
                     device: str = "auto", batch_size: int = 256) -> np.ndarray:
    """The adapter's ``mu (N, zdim)`` float32 for every image of the stack (untransformed), in
    stack order: for comparison with the run's ``z.pkl`` (``epoch=None``) or ``z.N.pkl``."""
    from ..checks import ProtocolModel

    model = load_cryodrgn(run_dir, epoch=epoch, device=device)
    data = cryodrgn_dataset(model, particles, poses, ctf)
    mu, _ = ProtocolModel(model, batch_size=batch_size).encode(data)
    return mu
