"""ampcheck: does your VAE's encoder really amortize inference?

The public API is re-exported here lazily, so that ``import ampcheck`` (and the pytest plugin)
costs nothing until a name is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "AmpcheckError": "ampcheck.errors",
    "InputError": "ampcheck.errors",
    "ConfigError": "ampcheck.errors",
    "UnsafePickleError": "ampcheck.errors",
    "SynthConfig": "ampcheck.data.synthetic",
    "generate_synthetic": ("ampcheck.data.synthetic", "generate"),
    "ParticleDataset": "ampcheck.data.particles",
    "read_stack": "ampcheck.cryoem.io",
    "read_poses": "ampcheck.cryoem.io",
    "read_ctf": "ampcheck.cryoem.io",
    "read_z": "ampcheck.cryoem.io",
    "BlobVolume": "ampcheck.cryoem.volumes",
    "compute_ctf": "ampcheck.cryoem.ctf",
    "TrainConfig": "ampcheck.train",
    "check_vae": "ampcheck.checks",
    "check_epochs": "ampcheck.checks.over_epochs",
    "CheckResult": "ampcheck.checks",
    "CHECKS": "ampcheck.checks",
    "VAE": "ampcheck.contracts",
    "Dataset": "ampcheck.contracts",
    "MnistDataset": "ampcheck.data.mnist",
    "keep_freed_memory": "ampcheck.allocator",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'ampcheck' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
