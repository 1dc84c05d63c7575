"""Retraining a cryoDRGN run's model in ampcheck's training loop: its evil twins and its lookup
table (paper §3.2-3.3, which modified cryoDRGN to train them).

Importing this module registers the model family ``cryodrgn`` (:data:`FAMILY`,
:mod:`ampcheck.families`): a ``TrainConfig(model="cryodrgn", architecture=...)`` trains
cryoDRGN's network as any of ampcheck's families trains. :class:`CryoDRGNNet` is cryoDRGN's
own ``HetOnlyVAE``, built from the run's ``config.yaml`` by ``HetOnlyVAE.load``, behind the
training loop's model interface (``prepare``, ``encode``, ``recon_loss``, ``kl_weight``,
``decode_volume``); each step of a batch is cryoDRGN's ``train_vae.train_batch``:

1. ``y``: the data set's symmetrised, normalised centred Hartley image ``(B, D+1, D+1)``
   (windowed and inverted as the run's ``dataset_args`` say; :func:`cryodrgn_dataset`
   opens the stack so);
2. ``Lattice.translate_ht`` by the pose's shift, in cryoDRGN's pixels ``frac * (D + 1)``;
3. encoder input: ``y * sign(ctf)`` (``ctf.compute_ctf`` on ``lattice.freqs2d / apix``) when
   the run used a CTF, then ``HetOnlyVAE.encode`` (its circular mask and MLP);
4. decoder: ``HetOnlyVAE`` at ``lattice.coords[mask] / extent / 2 @ rot`` on the circular
   mask of radius ``D/2``, times the CTF; per-image mean squared error over the mask;
5. the loop's ``recon.mean() + beta * KL.mean() / mask.sum()`` is ``loss_function``'s
   ``gen_loss + beta * kld / mask.sum()``; Adam at the run's ``--lr`` and ``--wd``,
   batches of its ``-b``, weights initialised after ``torch.manual_seed(seed)`` as
   ``train_vae`` does.

The training loop is ampcheck's (:func:`ampcheck.train.train`), so that the variants differ
from the run only in where the latent comes from. Its state-dict keys are cryoDRGN's
(``encoder.*``, ``decoder.*``): a retrained network loads into ``HetOnlyVAE``.
``tests/test_cryodrgn_retrain.py`` compares the untouched ``vae`` variant trained so with
``cryodrgn train_vae`` itself at the same settings.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError, InputError
from ..families import Family, register_family
from .cryodrgn_lib import checkpoint_epoch, import_cryodrgn, logging_kept

__all__ = ["FAMILY", "TABLE_LR", "CryoDRGNNet", "RunSettings", "architecture_of", "build_net",
           "recorded_seed", "retrain_config", "run_settings"]

#: The retrained lookup table's learning rate (sparse Adam, N(0, 1) rows), whatever the run's.
#: A row gets one update per epoch, so it moves a few times its rate per epoch: at cryoDRGN's
#: default 1e-4 it barely leaves its initial value, and 100 x that rate (ampcheck's default for
#: its own models) moves it too little in a run's few epochs. 0.1 is the rate of ampcheck's
#: ``standard`` budget, where the table learns the conformation; the paper allows the table "a
#: separate optimization scheme or learning rate" (§3.2). The measurements: README, "A cryoDRGN
#: model".
TABLE_LR = 0.1


class CryoDRGNNet(nn.Module):
    """cryoDRGN's ``HetOnlyVAE`` as a model of ampcheck's training loop (module docstring).

    ``encoder`` and ``decoder`` are the network's own modules (its parameters, named as in a
    cryoDRGN ``weights.pkl``); the lattice lives on the device the network was built on.
    """

    def __init__(self, net: nn.Module, lattice: Any, *, use_ctf: bool, cd: Any):
        super().__init__()
        self.encoder, self.decoder = net.encoder, net.decoder
        object.__setattr__(self, "net", net)  # its encode/decode, not a second set of names
        self.lattice, self._cd = lattice, cd
        self.D = int(lattice.D) - 1  # the images' side; Hartley images are D + 1
        self.zdim = int(net.zdim)
        self.use_ctf = bool(use_ctf)
        self.recon_mask = lattice.get_circular_mask(self.D // 2)  # run_batch's decoder mask
        self.n_pixels = int(self.recon_mask.sum())
        self.kl_weight = 1.0 / self.n_pixels  # loss_function: beta * kld / mask.sum()

    # ------------------------------------------------------------------ cryoDRGN's steps
    def translate(self, y: torch.Tensor, trans_px: torch.Tensor) -> torch.Tensor:
        """``preprocess_input``: Hartley images ``(B, D+1, D+1)`` shifted by ``trans_px (B, 2)``
        in ampcheck's pixels (``frac * D``), as cryoDRGN shifts them (``frac * (D + 1)``:
        ``PoseTracker.load`` gets the symmetrised size)."""
        B, D1 = y.shape[0], self.D + 1
        t = trans_px.to(y.device, torch.float32) * (D1 / self.D)
        return self.lattice.translate_ht(y.reshape(B, -1), t.unsqueeze(1)).reshape(B, D1, D1)

    def ctf(self, params: torch.Tensor | None) -> torch.Tensor | None:
        """The CTF ``(B, D+1, D+1)`` on the lattice from rows ``[D, apix, dfu, dfv, dfang,
        volt, cs, w, phase_shift]`` (``apix`` rescaled to ``D`` pixels as
        ``ctf.load_ctf_for_training``), or None for a run without CTF."""
        if not self.use_ctf:
            return None
        if params is None:
            raise InputError("the cryoDRGN model was trained with CTF parameters; give the CTF "
                             "file of the particles")
        params = params.to(self.lattice.freqs2d.device, torch.float32)
        B = params.shape[0]
        apix = params[:, 0] * params[:, 1] / self.D
        freqs = self.lattice.freqs2d.unsqueeze(0).expand(B, *self.lattice.freqs2d.shape) \
            / apix.view(B, 1, 1)
        c = self._cd.ctf.compute_ctf(freqs, *torch.split(params[:, 2:9], 1, 1))
        return c.view(B, self.D + 1, self.D + 1)

    # ------------------------------------------------------------------ the loop's interface
    def prepare(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Translate and phase-flip a batch of the data set (steps 2-3), in float32."""
        y = batch["y"].float()
        if "trans" in batch:
            y = self.translate(y, batch["trans"])
        c = self.ctf(batch.get("ctf"))
        prep = {"target": y, "x_enc": y if c is None else y * c.sign()}
        if "rot" in batch:
            prep["rot"] = batch["rot"]
        if c is not None:
            prep["ctf"] = c
        return prep

    def encode(self, x_enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``HetOnlyVAE.encode``: ``(mu, logvar)``, each ``(B, zdim)``."""
        return self.net.encode(x_enc)

    def recon_loss(self, prep: Mapping[str, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """Per-image mean squared error ``(B,)`` over the decoder mask (step 4)."""
        if "rot" not in prep:
            raise InputError("the cryoDRGN decoder needs poses (meta['rot']); give the poses "
                             "file")
        y, mask, lat = prep["target"], self.recon_mask, self.lattice
        B = y.shape[0]
        coords = lat.coords[mask] / lat.extent / 2 @ prep["rot"].to(y.device, torch.float32)
        y_recon = self.net(coords, z.to(y.device, torch.float32)).view(B, -1)
        if "ctf" in prep:
            y_recon = y_recon * prep["ctf"].view(B, -1)[:, mask]
        return ((y_recon - y.view(B, -1)[:, mask]) ** 2).mean(dim=1)

    @torch.no_grad()
    def decode_volume(self, z: np.ndarray | torch.Tensor, norm: tuple[float, float]
                      ) -> np.ndarray:
        """The real-space volume ``(D, D, D)`` float32 at latent ``z (zdim,)``, as
        ``cryodrgn eval_vol -z`` writes it (the decoder's ``eval_volume`` with the data's
        normalisation ``norm``)."""
        zval = np.asarray(torch.as_tensor(z).detach().cpu(), dtype=np.float32).reshape(-1)
        if zval.shape != (self.zdim,) or not np.isfinite(zval).all():
            raise InputError(f"a latent of shape {np.shape(z)}; this cryoDRGN model decodes "
                             f"finite latents of shape ({self.zdim},)")
        lat = self.lattice
        vol = self.net.decoder.eval_volume(lat.coords, lat.D, lat.extent, tuple(norm), zval)
        return vol.detach().float().cpu().numpy()


# ----------------------------------------------------------------------------- the architecture
def architecture_of(cfg: Mapping[str, Any]) -> str:
    """The ``TrainConfig.architecture`` of a run's ``config.yaml``: JSON of its
    ``lattice_args`` and ``model_args`` (defaults of old configs filled in as cryoDRGN's
    analysis does) and whether it used a CTF; what :func:`build_net` builds."""
    cd = import_cryodrgn()
    full = cd.config.update_config_v1({k: json.loads(json.dumps(cfg[k]))
                                       for k in ("lattice_args", "model_args")})
    return json.dumps({"lattice_args": full["lattice_args"], "model_args": full["model_args"],
                       "use_ctf": cfg["dataset_args"].get("ctf") is not None}, sort_keys=True)


def build_net(architecture: str, seed: int, device: torch.device) -> CryoDRGNNet:
    """A :class:`CryoDRGNNet` of ``architecture`` (:func:`architecture_of`), its weights
    initialised as ``train_vae`` initialises them after ``torch.manual_seed(seed)`` (the
    CPU random state is left as it was; CUDA generators are reseeded, as ``train_vae`` does)."""
    cd = import_cryodrgn()
    arch = parse_architecture(architecture)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            net, lattice = cd.HetOnlyVAE.load(arch, weights=None, device=device)
        except (AssertionError, KeyError, RuntimeError, ValueError, TypeError) as e:
            raise ConfigError(f"cryodrgn {cd.version} cannot build the architecture "
                              f"({type(e).__name__}: {e})") from None
    return CryoDRGNNet(net, lattice, use_ctf=arch["use_ctf"], cd=cd)


def parse_architecture(architecture: str) -> dict[str, Any]:
    """The mapping :func:`architecture_of` wrote; a :class:`ConfigError` for anything else."""
    try:
        arch = json.loads(architecture)
    except (TypeError, ValueError):
        arch = None
    ok = isinstance(arch, dict) and isinstance(arch.get("lattice_args"), dict) \
        and isinstance(arch.get("model_args"), dict) and isinstance(arch.get("use_ctf"), bool)
    if not ok:
        raise ConfigError("architecture must be the JSON of a cryoDRGN config's lattice_args, "
                          "model_args and use_ctf (ampcheck.adapters.cryodrgn_retrain."
                          f"architecture_of), got {str(architecture)[:60]!r}")
    return arch


# ----------------------------------------------------------------------------- the run's settings
@dataclass(frozen=True)
class RunSettings:
    """How ``train_vae`` trained a run, from the command line its ``config.yaml`` records
    (parsed by cryoDRGN's own parser, so its defaults fill what was not given)."""

    batch_size: int
    lr: float
    weight_decay: float
    seed: int | None  # config.yaml's seed (the one drawn when none was given), else --seed
    num_epochs: int
    multigpu: bool
    from_command: bool  # False: config.yaml records no command line; cryoDRGN's defaults


def recorded_seed(cfg: Mapping[str, Any]) -> int | None:
    """The seed ``config.yaml`` records (``train_vae`` writes the one it used, given or
    drawn), or None when it records none."""
    seed = cfg.get("seed")
    ok = isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0
    return seed if ok else None


def run_settings(cfg: Mapping[str, Any]) -> RunSettings:
    """The training settings of a run (:class:`RunSettings`); cryoDRGN's defaults with a
    warning when its command line is missing or cannot be parsed."""
    cd = import_cryodrgn()
    try:
        with logging_kept():
            from cryodrgn.commands import train_vae
    except ImportError as e:
        raise ConfigError(f"cryodrgn {cd.version}'s train_vae cannot be imported ({e}); it is "
                          "needed to read the run's training settings") from None
    parser = argparse.ArgumentParser(add_help=False)
    train_vae.add_args(parser)
    cmd = cfg.get("cmd")
    argv = [str(a) for a in cmd] if isinstance(cmd, list) else None
    if argv is not None:  # [program, "train_vae", args...] or [program, args...]
        argv = argv[argv.index("train_vae") + 1:] if "train_vae" in argv else argv[1:]
    parsed = None
    if argv is not None:
        try:  # argparse says a line does not parse on stderr, then by SystemExit
            with contextlib.redirect_stderr(io.StringIO()):
                parsed, _ = parser.parse_known_args(argv)
        except SystemExit:
            parsed = None
    given = parsed is not None
    if not given:
        warnings.warn("config.yaml records no train_vae command line that parses; the "
                      "retrained variants use cryoDRGN's default batch size, learning rate "
                      "and weight decay", stacklevel=3)
        parsed = argparse.Namespace(**{k: parser.get_default(k) for k in (
            "batch_size", "lr", "wd", "num_epochs", "multigpu")})
    seed = recorded_seed(cfg)
    if seed is None:
        seed_given = given and any(a == "--seed" or a.startswith("--seed=") for a in argv)
        seed = int(parsed.seed) if seed_given else None
    return RunSettings(batch_size=int(parsed.batch_size), lr=float(parsed.lr),
                       weight_decay=float(parsed.wd), seed=seed,
                       num_epochs=int(parsed.num_epochs), multigpu=bool(parsed.multigpu),
                       from_command=given)


def retrain_config(model, *, epochs: int | None = None, device: str = "auto", seed: int = 0):
    """The :class:`~ampcheck.train.TrainConfig` that trains variants of the cryoDRGN run
    ``model`` (a :class:`~ampcheck.adapters.cryodrgn.CryoDRGNVAE`) with its architecture, batch
    size, learning rate, weight decay and KL weight, for ``epochs`` (None: the epochs its
    weights were trained for).

    Refused, with the reason: runs that refined their poses (``--do-pose-sgd``: the variants
    would train on poses the run did not end with) and runs with a beta schedule or
    ``--beta-control`` (a KL weight that is not one number)."""
    from ..train import TrainConfig

    cfg = model.config
    where = model.run_dir / "config.yaml"
    if cfg["dataset_args"].get("do_pose_sgd"):
        raise ConfigError(f"{where}: the run refined its poses (--do-pose-sgd); retraining its "
                          "variants on fixed poses would not compare like with like")
    cmd = [str(a) for a in cfg.get("cmd") or []]
    if any(a.startswith("--beta-control") for a in cmd):
        raise ConfigError(f"{where}: the run trained with --beta-control (a KL target, not a "
                          "weight); its variants cannot be trained at the same objective")
    settings = run_settings(cfg)
    if settings.multigpu:
        warnings.warn(f"{where}: the run trained with --multigpu, whose batch is -b times the "
                      "number of GPUs; the variants train with -b "
                      f"{settings.batch_size}", stacklevel=2)
    if epochs is None:
        epochs = checkpoint_epoch(model.weights_path, model.epoch)
        if epochs is None:
            raise ConfigError(f"{model.weights_path}: records no epoch; give the number of "
                              "epochs to retrain for")
    if isinstance(epochs, bool) or not isinstance(epochs, int | np.integer) or epochs < 1:
        raise ConfigError(f"retrain epochs must be a positive integer, got {epochs!r}")
    return TrainConfig(model=FAMILY.name, architecture=architecture_of(cfg), epochs=int(epochs),
                       batch_size=settings.batch_size, lr=settings.lr,
                       weight_decay=settings.weight_decay, beta=model.beta, seed=int(seed),
                       device=device)


def _build(config: Any, data: Any, device: torch.device) -> CryoDRGNNet:
    """The family's ``build``: the network of ``config.architecture`` on ``device`` (its
    lattice is not a module's buffer), for ``data`` of the size it was made for."""
    net = build_net(config.architecture, config.seed, device)
    if net.D != data.D:
        raise ConfigError(f"the cryoDRGN architecture is for {net.D}-pixel images; the data "
                          f"set's are {data.D} pixels")
    return net


#: cryoDRGN's ``HetOnlyVAE`` as a model family: its defaults are ``train_vae``'s (learning
#: rate 1e-4, batch 8, beta 1/zdim), and it trains at no named budget (:func:`retrain_config`
#: gives a run's own settings).
FAMILY = register_family(Family(
    "cryodrgn", "cryoDRGN's HetOnlyVAE", data_kind="cryoem", build=_build, lr=1e-4,
    batch_size=8, beta=None, architecture=True, needs_poses=True,
    encoder_name="the cryoDRGN run's"))
