"""``ampcheck synth --structures / --trajectory`` (needs the optional ``structures`` extra:
gemmi, MDAnalysis, and MDAnalysisTests, whose data files hold adenylate kinase's open and closed
structures and a 98-frame trajectory of its closing, read from the installed package, never
downloaded). The backprojection test also needs cryoDRGN (``AMPCHECK_CRYODRGN``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ampcheck.cli import main
from ampcheck.cryoem import io

pytestmark = pytest.mark.extras
EXTRA = "needs the structures extra: pip install 'ampcheck[structures]'"
CORE = "1-29,60-121,160-214"  # adenylate kinase's CORE domain; the LID and NMP domains move


@pytest.fixture(scope="module")
def adk():
    """MDAnalysisTests' data files (skips, with the reason, without the extra)."""
    for module in ("gemmi", "MDAnalysis", "MDAnalysisTests"):
        pytest.importorskip(module, reason=EXTRA)
    from MDAnalysisTests import datafiles

    return datafiles


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def test_a_list_of_models_writes_the_synthetic_sets_files_with_the_truth_of_each_image(
        tmp_path, adk, capsys):
    from ampcheck.cryoem.volumes import project_blobs_fourier, spectrum_to_images
    from ampcheck.data.atoms import atom_sigma
    from ampcheck.data.particles import ParticleDataset
    from ampcheck.data.structure_files import load_ensemble

    out = tmp_path / "adk"
    assert main(["synth", "--out", str(out), "--structures", adk.PDB_small, adk.PDB_closed,
                 "--core", CORE, "--box", "32", "--n", "400", "--weights", "1", "3",
                 "--snr", "inf", "--star", "--quiet"]) == 0
    assert "2 models, 1,656–1,656 atoms (heavy)" in capsys.readouterr().out
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {"particles.mrcs", "poses.pkl", "ctf.pkl", "truth.npz", "particles.star",
                     "manifest.json", "volumes/state0000.mrc", "volumes/state0001.mrc",
                     "volumes/average.mrc"}
    m = json.loads((out / "manifest.json").read_text())
    assert m["generator"] == "ampcheck.data.structures" and m["seconds"] > 0
    assert m["images_per_second"] == pytest.approx(400 / m["seconds"])
    data = ParticleDataset.from_dir(out)  # the training loader reads it as it is
    assert (len(data), data.D) == (400, 32) and data.apix == pytest.approx(m["apix"], rel=1e-6)
    truth = np.load(out / "truth.npz")
    assert np.bincount(truth["z_class"]).tolist() == [100, 300]  # weights 1:3, exactly
    assert np.array_equal(truth["z_continuous"], truth["z_class"].astype(float))
    assert len(data.truth_volumes()) == 2  # the fits' checks find the states' maps

    # Each noiseless image is its own model's exact projection (the analytic transform of the
    # same Gaussian atoms on its slice, at its pose, shift and CTF as written), not the other's.
    ens = load_ensemble([adk.PDB_small, adk.PDB_closed], core=CORE)
    images, _ = io.read_mrc(out / "particles.mrcs")
    rot, trans = io.read_poses(out / "poses.pkl")
    ctf = io.read_ctf(out / "ctf.pkl")
    D, apix, sigma = 32, m["apix"], atom_sigma(m["resolution"])
    pick = np.arange(0, 400, 10)
    own, other = [], []
    for state in (0, 1):
        amp = ens.weights[state] / (2 * np.pi * sigma**2) ** 1.5
        spec = project_blobs_fourier(ens.coords[state], np.full(len(amp), sigma), amp,
                                     rot[pick], D, apix, -trans[pick] * D)
        proj = -spectrum_to_images(spec, D, apix, ctf[pick])
        for j, i in enumerate(pick):
            (own if truth["z_class"][i] == state else other).append(_corr(images[i], proj[j]))
    assert min(own) > 0.98, min(own)
    assert max(other) < min(own) - 0.01, (max(other), min(own))


def test_a_trajectory_gives_each_image_its_frames_position(tmp_path, adk):
    from ampcheck.data.structure_files import load_ensemble
    from ampcheck.data.structures import AtomicSynthConfig, generate

    ens = load_ensemble(trajectory=adk.DCD, topology=adk.PSF, core=CORE, stride=7)
    assert ens.kind == "trajectory" and ens.frames.tolist() == list(range(0, 98, 7))
    res = generate(tmp_path / "traj", ens, AtomicSynthConfig(n=280, D=24), show_progress=False)
    truth = np.load(res.out / "truth.npz")
    assert sorted(truth) == ["frame", "z_continuous"]
    assert np.bincount(truth["frame"] // 7).tolist() == [20] * 14  # frames weighted alike
    assert np.allclose(truth["z_continuous"], truth["frame"] / 91)
    maps = [v for v in res.manifest["volumes"] if v["z_continuous"] is not None]
    assert [v["state"] for v in maps] == [f"frame {f}" for f in (0, 21, 42, 70, 91)]
    assert res.manifest["source"]["kind"] == "trajectory"
    # the closing motion is real: the last frame's atoms are far from the first's
    assert res.manifest["alignment"]["rmsd_to_first_max"] > 5


def test_the_same_seed_gives_the_same_bytes_whatever_the_number_of_workers(tmp_path, adk):
    from dataclasses import replace

    from ampcheck.data.structure_files import load_ensemble
    from ampcheck.data.structures import AtomicSynthConfig, generate, render_plan

    ens = load_ensemble([adk.PDB_small, adk.PDB_closed], core=CORE)
    # 150 and 450 images: with two or three workers the second state is rendered in parts
    cfg = AtomicSynthConfig(n=600, D=32, state_weights=(1.0, 3.0))
    assert [len(render_plan(np.array([150, 450]), w)) for w in (1, 2, 3)] == [2, 3, 3]

    def written(res) -> dict[str, bytes]:
        return {p.relative_to(res.out).as_posix(): p.read_bytes()
                for p in res.out.rglob("*") if p.is_file() and p.name != "manifest.json"}

    sets = {w: generate(tmp_path / f"w{w}", ens, cfg, show_progress=False, workers=w)
            for w in (1, 2, 3)}
    one = written(sets[1])
    assert len(one) == 7  # the stack, poses, CTF, truth, two states' maps and their average
    timing = {"seconds", "images_per_second", "workers"}
    for w in (2, 3):
        assert written(sets[w]) == one, w
        assert sets[w].manifest["workers"] == w
        assert ({k: v for k, v in sets[w].manifest.items() if k not in timing}
                == {k: v for k, v in sets[1].manifest.items() if k not in timing})
    # control: the comparison sees another seed's images, poses, CTFs and truth
    other = written(generate(tmp_path / "seed1", ens, replace(cfg, seed=1),
                             show_progress=False, workers=2))
    assert {k for k in one if other[k] != one[k]} >= {"particles.mrcs", "poses.pkl", "ctf.pkl",
                                                      "truth.npz"}


def test_images_per_state(tmp_path, adk):
    out = tmp_path / "each"
    assert main(["synth", "--out", str(out), "--structures", "MDAnalysisTests:adk_open.pdb",
                 "MDAnalysisTests:adk_closed.pdb", "--per-state", "30", "--box", "24",
                 "--quiet"]) == 0
    assert np.bincount(np.load(out / "truth.npz")["z_class"]).tolist() == [30, 30]


def test_alignment_on_the_core_removes_the_rigid_motion_and_keeps_the_internal_one(
        tmp_path, adk):
    import gemmi

    from ampcheck.cryoem.rotations import random_rotations
    from ampcheck.data.structure_files import load_ensemble, read_structure

    # a copy of the open structure with its LID (122-159) turned 40° about an axis through
    # its centre, then the whole molecule turned and moved; written as mmCIF
    st = gemmi.read_structure(adk.PDB_small)
    rec = read_structure(adk.PDB_small)
    lid = (rec.resnum >= 122) & (rec.resnum <= 159)
    centre = rec.coords[0][lid].mean(0)
    c, s = np.cos(np.radians(40)), np.sin(np.radians(40))
    turn = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    whole = random_rotations(1, np.random.default_rng(5))[0]
    for res in st[0][0]:
        for at in res:
            p = np.array([at.pos.x, at.pos.y, at.pos.z])
            if 122 <= res.seqid.num <= 159:
                p = (p - centre) @ turn.T + centre
            p = p @ whole.T + np.array([30.0, -12.0, 7.0])
            at.pos = gemmi.Position(*p)
    moved = tmp_path / "moved.cif"
    st.setup_entities()
    st.make_mmcif_document().write_file(str(moved))

    def rmsd(ens, keep):
        keep = keep[rec.element != "H"]
        d = ens.coords[1][keep] - ens.coords[0][keep]
        return float(np.sqrt((d**2).sum(1).mean()))

    def core_rmsd(ens):
        return rmsd(ens, ~((rec.resnum >= 30) & (rec.resnum <= 159)))

    aligned = load_ensemble([adk.PDB_small, moved], core=CORE)
    assert aligned.core_rmsd.max() < 2e-3 and core_rmsd(aligned) < 2e-3  # coordinates: 1e-3 Å
    assert rmsd(aligned, lid) > 4  # the LID's motion stays
    # controls: no alignment keeps the rigid motion; alignment on every atom spreads the LID's
    # motion over the core (measured 0.49 Å, hundreds of times the core alignment's)
    assert core_rmsd(load_ensemble([adk.PDB_small, moved], align=False)) > 10
    assert core_rmsd(load_ensemble([adk.PDB_small, moved])) > 0.2


@pytest.mark.parametrize("case, message", [
    ("not_a_structure", "not a structure gemmi can read"),
    ("empty_selection", "no atom matches the selection"),
    ("different_atoms", "the models hold different atoms"),
    ("box_too_small", "does not fit a box"),
    ("bad_topology", "MDAnalysis cannot read them"),
    ("weights_count", "3 weights for 2 models"),
    ("per_state_and_n", "--per-state and --n both"),
    ("no_such_package_file", "no file 'adk.pdb' in MDAnalysisTests' data"),
])
def test_bad_input_gives_one_line_and_writes_nothing(tmp_path, adk, capsys, case, message):
    junk = tmp_path / "junk.txt"
    junk.write_text("this is not a structure\n")
    two = [adk.PDB_small, adk.PDB_closed]
    args = {
        "not_a_structure": ["--structures", adk.PDB_small, str(junk)],
        "empty_selection": ["--structures", *two, "--residues", "A:1-20"],
        "different_atoms": ["--structures", adk.PDB_small, adk.PDB_small.replace(
            "adk_open.pdb", "adk_open_10res.pdb")],
        "box_too_small": ["--structures", *two, "--box", "32", "--apix", "1.5"],
        "bad_topology": ["--trajectory", adk.DCD, "--topology", str(junk)],
        "weights_count": ["--structures", *two, "--weights", "1", "2", "3"],
        "per_state_and_n": ["--structures", *two, "--per-state", "3", "--n", "6"],
        "no_such_package_file": ["--structures", "MDAnalysisTests:adk.pdb"],
    }[case]
    out = tmp_path / "out"
    assert main(["synth", "--out", str(out), *args, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["junk.txt"]


CRYODRGN = os.environ.get("AMPCHECK_CRYODRGN") or shutil.which("cryodrgn")


@pytest.mark.skipif(not CRYODRGN, reason="cryoDRGN is not installed; set AMPCHECK_CRYODRGN to "
                                         "the `cryodrgn` executable of its virtual environment")
def test_cryodrgn_backprojects_the_stack_to_the_ground_truth_map(tmp_path, adk):
    from scipy.ndimage import gaussian_filter

    from ampcheck.data.structure_files import load_ensemble
    from ampcheck.data.structures import AtomicSynthConfig, generate

    # one state (the closed structure), so that its map is the whole truth; shifts of up to
    # 5 px make the translation convention matter
    ens = load_ensemble([adk.PDB_closed])
    res = generate(tmp_path / "set", ens, AtomicSynthConfig(n=1000, D=64, seed=3,
                                                             max_shift_px=5.0),
                   show_progress=False)
    # the map of atoms 0.9 px wide is sharper than what 1,000 images at SNR 0.1 reconstruct:
    # both maps are compared after the same one-voxel low-pass
    truth = gaussian_filter(io.read_mrc(res.out / "volumes" / "average.mrc")[0].astype(float), 1.0)
    rot, trans = io.read_poses(res.out / "poses.pkl")
    corr = {}
    for name, t in {"as_written": trans, "flipped": -trans}.items():
        io.write_poses(tmp_path / f"{name}.pkl", rot, t)
        proc = subprocess.run([CRYODRGN, "backproject_voxel", str(res.out / "particles.mrcs"),
                               "--poses", str(tmp_path / f"{name}.pkl"), "--ctf",
                               str(res.out / "ctf.pkl"), "-o", name, "--no-half-maps"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        vol = io.read_mrc(tmp_path / name / "backproject.mrc")[0].astype(float)
        corr[name] = _corr(gaussian_filter(vol, 1.0), truth)
    print("correlation with the ground-truth map:", corr)
    # measured with cryoDRGN 4.3.1: 0.971 as written, 0.777 with the shifts' sign flipped
    assert corr["as_written"] > 0.95, corr
    assert corr["as_written"] > corr["flipped"] + 0.1, corr
    assert Path(res.out / "manifest.json").is_file()
