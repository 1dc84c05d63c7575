"""The committed tiny data set in fixtures/: it loads every way, and the generator recreates it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ampcheck.cryoem import io
from ampcheck.data.particles import ParticleDataset
from ampcheck.data.synthetic import SynthConfig, generate

TINY = Path(__file__).resolve().parents[1] / "fixtures" / "tiny"


def test_fixture_loads_from_pickles_and_from_star_identically():
    from_pkl = ParticleDataset.from_dir(TINY)
    from_star = ParticleDataset.from_files(TINY / "particles.star")
    assert len(from_pkl) == len(from_star) == 48 and from_pkl.D == 32
    a, b = from_pkl.get_batch(np.arange(48)), from_star.get_batch(np.arange(48))
    np.testing.assert_array_equal(a["y"].numpy(), b["y"].numpy())
    np.testing.assert_allclose(a["rot"].numpy(), b["rot"].numpy(), atol=1e-5)
    np.testing.assert_allclose(a["trans"].numpy(), b["trans"].numpy(), atol=1e-4)
    np.testing.assert_allclose(a["ctf"].numpy(), b["ctf"].numpy(), rtol=1e-5)
    assert set(from_pkl.truth) == {"z_continuous", "z_class", "hinge_deg"}


def test_generator_recreates_the_fixture(tmp_path):
    manifest = json.loads((TINY / "manifest.json").read_text())
    again = generate(tmp_path / "tiny", SynthConfig(**manifest["config"]), star=True,
                     show_progress=False)
    for name in ("poses.pkl", "ctf.pkl", "truth.npz"):  # pure random draws: identical bytes
        assert (again.out / name).read_bytes() == (TINY / name).read_bytes(), name
    # Images go through BLAS and FFT kernels that may round differently on another CPU.
    np.testing.assert_allclose(io.read_stack(again.out / "particles.mrcs")[:],
                               io.read_stack(TINY / "particles.mrcs")[:], rtol=1e-5, atol=1e-3)
    for entry in manifest["volumes"]:
        new, apix = io.read_mrc(again.out / entry["file"])
        old, _ = io.read_mrc(TINY / entry["file"])
        np.testing.assert_allclose(new, old, rtol=1e-5, atol=1e-6)
        assert apix == pytest.approx(manifest["apix"])
