"""The checkpoint file of a training: ``checkpoint.pt``, written and read back safely.

A checkpoint is a dict of tensors and plain data, readable with ``torch.load(...,
weights_only=True)``: ``format`` (:data:`FORMAT`), ``config`` (the ``TrainConfig`` as a dict),
``data`` (``n``, ``D`` and the fingerprint of the images it trained on), ``run_id``, the
``model``'s, ``table``'s and ``twins``' state dicts, the ``history`` of epochs and, for a
training that can resume, its ``optimizers``' states and random ``generator``.
:class:`ampcheck.train.TrainedModel` makes and restores it; this module names the file,
writes it atomically and refuses, in one line that names the file, anything that is not one.
Importing it loads no torch.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

from .errors import InputError, first_line
from .files import atomic_path, output_error

__all__ = ["CHECKPOINT", "FORMAT", "check_moments", "epoch_checkpoint", "epoch_checkpoints",
           "read_checkpoint", "write_checkpoint"]

CHECKPOINT = "checkpoint.pt"  # what ampcheck.train.train(out=...) writes in its directory
FORMAT = 1
_NUMBERED = re.compile(r"checkpoint\.(\d+)\.pt")


def epoch_checkpoint(run_dir, epoch: int) -> Path:
    """``run_dir/checkpoint.<epoch>.pt``: the weights after ``epoch`` that ``ampcheck train
    --checkpoint-every`` keeps (a checkpoint without optimiser state, read as any other)."""
    return Path(run_dir) / f"checkpoint.{int(epoch)}.pt"


def epoch_checkpoints(run_dir) -> dict[int, Path]:
    """The numbered checkpoints of a run directory, ``{epoch: path}`` in epoch order."""
    found = {}
    for p in Path(run_dir).iterdir():
        m = _NUMBERED.fullmatch(p.name)
        if m and p.is_file():
            found[int(m.group(1))] = p
    return dict(sorted(found.items()))


def write_checkpoint(path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically; a failed write (a full disk) raises
    :class:`~ampcheck.errors.OutputError` and leaves the old file."""
    import torch

    try:
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
    except RuntimeError as err:  # torch's writer: "[enforce fail at inline_container.cc]"
        raise output_error(path, err) from None


_KEYS = {"config": dict, "data": dict, "model": dict, "history": list}


def read_checkpoint(path) -> dict:
    """The state in ``path``, loaded with ``weights_only=True`` and its layout checked; every
    problem is one :class:`~ampcheck.errors.InputError` line that names the file."""
    import torch

    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise InputError(f"{path}: an empty file, not an ampcheck checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise InputError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError as err:  # never pass on torch's advice to load it unsafely
        if "Unsupported global" in str(err):
            raise InputError(f"{path}: refused, it asks for objects other than tensors and "
                             "plain data (not an ampcheck checkpoint)") from None
        raise InputError(f"{path}: not an ampcheck checkpoint (not a torch checkpoint "
                         "file)") from None
    except (RuntimeError, OSError, ValueError, EOFError, AttributeError, KeyError,
            IndexError, TypeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not an ampcheck checkpoint ({first_line(err)[:160]})") \
            from None
    if not isinstance(state, dict) or type(state.get("format")) is not int \
            or state["format"] != FORMAT:
        raise InputError(f"{path}: not an ampcheck checkpoint (format 1 expected)")
    for key, kind in _KEYS.items():
        if not isinstance(state.get(key), kind):
            raise InputError(f"{path}: not a complete ampcheck checkpoint ('{key}' missing or "
                             f"not a {kind.__name__})")
    data = state["data"]
    if not (type(data.get("n")) is int and type(data.get("D")) is int
            and isinstance(data.get("fingerprint"), str | None)
            and isinstance(state.get("run_id"), str | None)):
        raise InputError(f"{path}: not a complete ampcheck checkpoint ('data' needs the "
                         "integers n and D; the fingerprint and run id are text)")
    return state


def check_moments(saved: dict, params: list) -> None:
    """Refuse an optimiser state whose moments do not match the parameters' shapes: fused Adam
    would read past them (a crash, not an exception). A ValueError says which."""
    import torch

    ids = [i for g in saved["param_groups"] for i in g["params"]]
    if len(ids) != len(params):
        raise ValueError(f"{len(ids)} parameters saved for {len(params)}")
    for i, p in zip(ids, params, strict=True):
        for name, value in saved["state"].get(i, {}).items():
            if name == "step":
                continue
            if not (torch.is_tensor(value) and value.is_floating_point()
                    and value.shape == p.shape):
                raise ValueError(f"{name} of parameter {i} does not match its shape "
                                 f"{tuple(p.shape)}")
