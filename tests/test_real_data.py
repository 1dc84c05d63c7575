"""Real data as cryoDRGN's ``train_vae`` takes it (issue 15, item 4): ``--particles`` (a RELION
3.1 ``.star`` with two optics groups, a ``.txt``, a ``.mrcs``), ``--poses``, ``--ctf``, ``--ind``
and ``--datadir``, no ground truth.

The "real-data-shaped" fixture is built here from two small synthetic data sets (different
seeds, one recorded at 300 kV and one at 200 kV): their stacks go, renamed, into a folder of
their own (the ``--datadir``); a RELION 3.1 ``.star`` in another folder describes them, with a
``data_optics`` table of two optics groups (same pixel and image size, different voltage and
Cs) and ``_rlnImageName`` entries ``000012@Extract/job007/Movies/mic_a.mrcs`` whose folders
exist only in the RELION project the file came from (found, as cryoDRGN finds them, by bare
name in the ``--datadir``). The star is written from the generator's ``poses.pkl`` and
``ctf.pkl`` with a conversion of this file's own (RELION's Euler-angle formula inverted by
hand, origins in Å = fraction x D x apix), so that reading it back tests the reader against an
independent computation.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ampcheck.cli import main
from ampcheck.cryoem import io
from ampcheck.data.particles import ParticleDataset
from ampcheck.data.synthetic import SynthConfig, generate

N_EACH, D, APIX = 24, 16, 12.0  # two 24-image sets of 16-px images (box 192 Å)
GROUPS = {1: {"kv": 300.0, "cs": 2.7, "w": 0.1}, 2: {"kv": 200.0, "cs": 2.0, "w": 0.1}}


# ----------------------------------------------------------------------------- the fixture


def _euler_from_matrix(rot: np.ndarray) -> np.ndarray:
    """RELION (rot, tilt, psi) in degrees ``(N, 3)`` of matrices ``(N, 3, 3)``: the inverse of
    RELION's ``Euler_angles2matrix``, whose last row is ``(sin b cos a, sin b sin a, cos b)``
    and last column ``(-cos g sin b, sin g sin b, cos b)`` (tilt ``b`` in (0, 180))."""
    b = np.arccos(np.clip(rot[:, 2, 2], -1, 1))
    a = np.arctan2(rot[:, 2, 1], rot[:, 2, 0])
    g = np.arctan2(rot[:, 1, 2], -rot[:, 0, 2])
    return np.rad2deg(np.stack([a, b, g], axis=1))


def _relion_matrix(euler_deg: np.ndarray) -> np.ndarray:
    """RELION's ``Euler_angles2matrix`` for ``(N, 3)`` degrees, written out."""
    a, b, g = np.deg2rad(np.asarray(euler_deg, dtype=np.float64)).T
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    return np.stack([np.stack([cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb], -1),
                     np.stack([-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb], -1),
                     np.stack([sb * ca, sb * sa, cb], -1)], axis=1)


def _star_text(rows: list[dict], optics: dict[int, dict], apix: float, D: int) -> str:
    """A RELION 3.1 particle file, written the way RELION writes one (version comments, two
    tables, a few of the columns that real files carry and cryoDRGN ignores)."""
    out = ["", "# version 30001", "", "data_optics", "", "loop_"]
    ocols = ["rlnOpticsGroupName", "rlnOpticsGroup", "rlnMicrographOriginalPixelSize",
             "rlnVoltage", "rlnSphericalAberration", "rlnAmplitudeContrast",
             "rlnImagePixelSize", "rlnImageSize", "rlnImageDimensionality"]
    out += [f"_{c} #{i + 1}" for i, c in enumerate(ocols)]
    for g, o in optics.items():
        out.append(f"opticsGroup{g} {g} {apix / 4:.6f} {o['kv']:.6f} {o['cs']:.6f} "
                   f"{o['w']:.6f} {apix:.6f} {D} 2")
    out += ["", "", "# version 30001", "", "data_particles", "", "loop_"]
    pcols = ["rlnCoordinateX", "rlnCoordinateY", "rlnImageName", "rlnMicrographName",
             "rlnOpticsGroup", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
             "rlnOriginYAngst", "rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle",
             "rlnPhaseShift", "rlnCtfBfactor", "rlnClassNumber", "rlnRandomSubset"]
    out += [f"_{c} #{i + 1}" for i, c in enumerate(pcols)]
    for r in rows:
        out.append(" ".join(str(r[c]) if isinstance(r[c], str) else f"{r[c]:.6f}"
                            if isinstance(r[c], float) else str(r[c]) for c in pcols))
    return "\n".join(out) + "\n"


def build_real_set(root: Path) -> dict:
    """The real-data-shaped set under ``root``; returns its paths and, per star row, the
    poses and CTF that the reader must recover (from the generator's own files)."""
    base = SynthConfig.preset("tiny", n=N_EACH, D=D, apix=APIX)
    datadir = root / "stacks"
    datadir.mkdir(parents=True)
    rots, transs, ctfs, names = [], [], [], []
    for key, (g, seed) in {"a": (1, 11), "b": (2, 12)}.items():
        o = GROUPS[g]
        src = root / f"synth_{key}"
        generate(src, replace(base, seed=seed, voltage_kv=o["kv"], cs_mm=o["cs"]),
                 show_progress=False)
        (src / "particles.mrcs").rename(datadir / f"mic_{key}.mrcs")
        with open(src / "poses.pkl", "rb") as f:
            rot, trans = pickle.load(f)
        with open(src / "ctf.pkl", "rb") as f:
            ctf = pickle.load(f)
        rots.append(rot)
        transs.append(trans)
        ctfs.append(ctf)
        names += [(f"{i + 1:06d}@Extract/job007/Movies/mic_{key}.mrcs", g) for i in range(N_EACH)]
    rot, trans, ctf = (np.concatenate(x).astype(np.float64) for x in (rots, transs, ctfs))
    order = np.random.default_rng(0).permutation(len(names))  # the two sets interleaved
    euler = _euler_from_matrix(rot)
    rows = []
    for k in order:
        name, g = names[k]
        rows.append({"rlnCoordinateX": 100.0 + k, "rlnCoordinateY": 200.0, "rlnImageName": name,
                     "rlnMicrographName": f"MotionCorr/job002/Movies/mic_{name[-6]}.mrc",
                     "rlnOpticsGroup": g, "rlnAngleRot": euler[k, 0],
                     "rlnAngleTilt": euler[k, 1], "rlnAnglePsi": euler[k, 2],
                     "rlnOriginXAngst": trans[k, 0] * D * APIX,
                     "rlnOriginYAngst": trans[k, 1] * D * APIX,
                     "rlnDefocusU": ctf[k, 2], "rlnDefocusV": ctf[k, 3],
                     "rlnDefocusAngle": ctf[k, 4], "rlnPhaseShift": ctf[k, 8],
                     "rlnCtfBfactor": 0.0, "rlnClassNumber": 1, "rlnRandomSubset": 1 + k % 2})
    star = root / "relion" / "particles.star"
    star.parent.mkdir()
    star.write_text(_star_text(rows, GROUPS, APIX, D))
    ind = np.sort(np.random.default_rng(1).choice(len(rows), size=40, replace=False))
    ind_path = root / "ind40.pkl"
    with open(ind_path, "wb") as f:
        pickle.dump(ind, f)
    images = np.concatenate([io.read_stack(datadir / f"mic_{k}.mrcs")[:] for k in "ab"])
    return {"star": star, "datadir": datadir, "ind": ind_path, "ind_values": ind,
            "rot": rot[order], "trans": trans[order], "ctf": ctf[order],
            "images": images[order],
            "stack_order": {"rot": rot, "trans": trans, "ctf": ctf, "images": images}}


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict:
    return build_real_set(tmp_path_factory.mktemp("real"))


def _star_dataset(real: dict, **kw) -> ParticleDataset:
    return ParticleDataset.from_files(real["star"], datadir=real["datadir"], **kw)


# ----------------------------------------------------------------------------- reading it


def test_fixture_conversion_is_right():
    """The test's own Euler conversion inverts RELION's formula (else the tests below would
    compare the reader with a wrong expectation)."""
    from ampcheck.cryoem.rotations import random_rotations

    rot = random_rotations(50, np.random.default_rng(3))
    np.testing.assert_allclose(_relion_matrix(_euler_from_matrix(rot)), rot, atol=1e-12)


def test_star_with_two_optics_groups_recovers_the_generators_poses_and_ctf(real):
    ds = _star_dataset(real, norm=(0.0, 1.0))
    n = 2 * N_EACH
    assert (len(ds), ds.D) == (n, D)
    assert ds.truth == {}  # real data: no ground truth
    np.testing.assert_allclose(ds.rot, real["rot"], atol=1e-5)
    np.testing.assert_allclose(ds.trans_frac, real["trans"], atol=1e-6)
    # D and apix from the optics table; voltage, cs, w per optics group; defocus per particle
    np.testing.assert_allclose(ds.ctf, real["ctf"], rtol=1e-6)
    np.testing.assert_allclose(np.unique(ds.ctf[:, 5:7], axis=0), [[200, 2.0], [300, 2.7]],
                               rtol=1e-6)
    # the images are the stacks' images, in the star's order (from the bare names in datadir)
    np.testing.assert_array_equal(ds.images(np.arange(n)), real["images"])


def test_ind_selects_images_poses_and_ctf_in_its_order(real):
    ind = real["ind_values"]
    ds = _star_dataset(real, ind=real["ind"], norm=(0.0, 1.0))
    assert len(ds) == len(ind)
    np.testing.assert_array_equal(ds.images(np.arange(len(ind))), real["images"][ind])
    np.testing.assert_allclose(ds.rot, real["rot"][ind], atol=1e-5)
    np.testing.assert_allclose(ds.ctf, real["ctf"][ind], rtol=1e-6)
    batch = ds.get_batch([0, 5])
    np.testing.assert_allclose(batch["trans"].numpy(), real["trans"][ind[[0, 5]]] * D,
                               atol=1e-5)  # pixels in batches


def test_ind_in_a_chosen_order_and_with_filtered_poses(real, tmp_path):
    """cryoDRGN keeps ``--ind``'s order, and takes poses already filtered (one row per index)
    as they are; CTF of the whole stack is filtered."""
    ind = np.array([7, 3, 40, 0])
    with open(tmp_path / "ind.pkl", "wb") as f:
        pickle.dump(ind, f)
    rot, trans = real["rot"][ind], real["trans"][ind]
    with open(tmp_path / "pose.pkl", "wb") as f:
        pickle.dump((rot, trans), f)
    ds = _star_dataset(real, ind=tmp_path / "ind.pkl", poses=tmp_path / "pose.pkl",
                       norm=(0.0, 1.0))
    np.testing.assert_array_equal(ds.images(np.arange(4)), real["images"][ind])
    np.testing.assert_allclose(ds.rot, rot, atol=1e-6)
    np.testing.assert_allclose(ds.ctf, real["ctf"][ind], rtol=1e-6)


def test_normalisation_is_estimated_on_the_selected_images(real):
    full = _star_dataset(real)
    sub = _star_dataset(real, ind=real["ind"])
    assert sub.norm != full.norm  # cryoDRGN estimates it after filtering
    from ampcheck.data.particles import estimate_normalization

    assert sub.norm == estimate_normalization(
        io.read_stack(real["star"], real["datadir"]).take(real["ind_values"]))


# ----------------------------------------------------------------------------- the command line


def _error(capsys, argv: list[str]) -> str:
    """The one line that ``ampcheck argv`` prints as it fails with status 2 (no traceback)."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ampcheck: error: "), err
    return err


def _pickle(path: Path, obj) -> Path:
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def _star_args(real: dict, *more: str) -> list[str]:
    return ["--particles", str(real["star"]), "--datadir", str(real["datadir"]), *more]


def test_run_reads_a_star_with_datadir_and_ind(real, tmp_path, capsys):
    argv = ["run", "--data-only", "--out", str(tmp_path / "o"), *_star_args(real)]
    assert main(argv) == 0
    assert "48 images of 16 x 16 px at 12.0 Å/px, with poses and CTF; ground truth: none" \
        in capsys.readouterr().out
    assert main([*argv, "--ind", str(real["ind"])]) == 0
    assert "Particles" in (out := capsys.readouterr().out) and "40 images" in out


def test_txt_list_and_mrcs_with_poses_and_ctf_files(real, tmp_path, capsys):
    """A ``.txt`` lists stacks relative to its own folder; ``--poses`` / ``--ctf`` are
    cryoDRGN's pickles (here ``pose.pkl``, a name of cryoDRGN's own, not ``poses.pkl``)."""
    s = real["stack_order"]
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "all.txt").write_text("../stacks/mic_a.mrcs\n../stacks/mic_b.mrcs\n")
    for name in ("mic_a.mrcs", "mic_b.mrcs"):
        (tmp_path / "stacks").mkdir(exist_ok=True)
        (tmp_path / "stacks" / name).symlink_to(real["datadir"] / name)
    pose = _pickle(tmp_path / "pose.pkl", (s["rot"], s["trans"]))
    ctf = _pickle(tmp_path / "ctf.128.pkl", s["ctf"].astype(np.float32))
    ind = _pickle(tmp_path / "ind.pkl", np.array([47, 0, 24]))
    ds = ParticleDataset.from_files(lists / "all.txt", poses=pose, ctf=ctf, ind=ind,
                                    norm=(0.0, 1.0))
    np.testing.assert_array_equal(ds.images(np.arange(3)), s["images"][[47, 0, 24]])
    np.testing.assert_allclose(ds.ctf[:, 5], [200, 300, 200])  # b, a, b
    assert main(["run", "--data-only", "--out", str(tmp_path / "o"), "--particles",
                 str(lists / "all.txt"), "--poses", str(pose), "--ctf", str(ctf),
                 "--ind", str(ind)]) == 0
    assert "3 images of 16 x 16 px" in capsys.readouterr().out
    # one .mrcs: the first stack's 24 images with the first 24 poses
    pose_a = _pickle(tmp_path / "pose_a.pkl", (s["rot"][:N_EACH], s["trans"][:N_EACH]))
    assert main(["run", "--data-only", "--out", str(tmp_path / "o"), "--particles",
                 str(real["datadir"] / "mic_a.mrcs"), "--poses", str(pose_a)]) == 0
    assert "24 images of 16 x 16 px at 12.0 Å/px, with poses;" in capsys.readouterr().out


def test_train_records_the_particle_files_and_check_reopens_them(real, tmp_path, capsys):
    """``train --particles`` records the files (absolute paths) in run.json; ``check --run``
    reads the same images from them (its fingerprint check would refuse others)."""
    run = tmp_path / "run"
    assert main(["train", *_star_args(real, "--ind", str(real["ind"])), "--out", str(run),
                 "--epochs", "1", "--quiet", "--budget", "smoke"]) == 0
    data = json.loads((run / "run.json").read_text())["data"]
    assert data == {"particles": str(real["star"]), "poses": None, "ctf": None,
                    "ind": str(real["ind"]), "datadir": str(real["datadir"])}
    from ampcheck.runs import open_run

    _, _, ds, _, _ = open_run(run, "cpu")
    assert len(ds) == 40
    np.testing.assert_allclose(ds.rot, real["rot"][real["ind_values"]], atol=1e-5)


def test_run_with_particles_runs_the_battery_on_them(real, tmp_path, monkeypatch, capsys):
    """The wiring of ``run --particles``: the battery gets the particles' data set, and the
    report names the files (the battery itself is :func:`test_full_battery...`'s)."""
    import ampcheck.checks as checks
    from ampcheck.checks import CheckResult

    seen = {}

    def battery(data, **kw):
        seen["n"], seen["truth"] = len(data), data.truth
        return [CheckResult.skipped("heldout_generalisation", "cryoem:base", "stub", [0])]

    monkeypatch.setattr(checks, "main_battery", battery)
    out = tmp_path / "o"
    assert main(["run", "--out", str(out), "--quiet", "--device", "cpu",
                 *_star_args(real, "--ind", str(real["ind"]))]) == 0
    assert seen == {"n": 40, "truth": {}}
    dataset = json.loads((out / "report.json").read_text())["dataset"]
    assert dataset["path"] == str(real["star"]) and dataset["ind"] == str(real["ind"])
    assert not (out / "data").exists()  # nothing generated


# ----------------------------------------------------------------------------- bad input


def test_data_and_particles_together_is_a_usage_error(real, tmp_path, capsys):
    for cmd in (["run", "--data", str(tmp_path)], ["train", "--data", str(tmp_path)]):
        err = _error(capsys, [*cmd, "--out", str(tmp_path / "o"), *_star_args(real)])
        assert "either --data" in err and "--particles" in err and "not both" in err


def test_companions_without_particles_and_neither_data_nor_particles(real, tmp_path, capsys):
    err = _error(capsys, ["run", "--out", str(tmp_path / "o"), "--ind", str(real["ind"])])
    assert "--ind given without --particles" in err
    err = _error(capsys, ["train", "--out", str(tmp_path / "r"), "--data", str(tmp_path),
                          "--poses", "p.pkl", "--datadir", "d", "--budget", "smoke"])
    assert "--poses, --datadir given without --particles" in err
    err = _error(capsys, ["train", "--out", str(tmp_path / "r"), "--budget", "smoke"])
    assert "give --data DIR|mnist" in err and "--particles STACK" in err
    err = _error(capsys, ["check", "--run", str(tmp_path), "--out", str(tmp_path / "c"),
                          "--particles", str(real["star"])])
    assert "--particles given with --run" in err and "run.json" in err
    err = _error(capsys, ["train", "--out", str(tmp_path / "r"), "--model", "mnist",
                          *_star_args(real), "--budget", "smoke"])
    assert f"--model mnist does not match --particles {real['star']} (a cryoem data set)" in err


def test_missing_files_are_named(real, tmp_path, capsys):
    base = ["run", "--data-only", "--out", str(tmp_path / "o")]
    err = _error(capsys, [*base, "--particles", str(tmp_path / "none.star")])
    assert f"{tmp_path / 'none.star'}: file not found" in err
    err = _error(capsys, [*base, *_star_args(real), "--poses", str(tmp_path / "none.pkl")])
    assert f"{tmp_path / 'none.pkl'}: file not found" in err
    err = _error(capsys, [*base, *_star_args(real), "--ind", str(tmp_path / "none.pkl")])
    assert f"{tmp_path / 'none.pkl'}: file not found" in err
    err = _error(capsys, [*base, "--particles", str(real["star"]), "--datadir",
                          str(tmp_path / "nowhere")])
    assert f"{tmp_path / 'nowhere'}: no such folder" in err and "datadir" in err
    # without --datadir the stacks are looked for beside the star, and the message says so
    err = _error(capsys, [*base, "--particles", str(real["star"])])
    assert "image stack Extract/job007/Movies/mic_a.mrcs not found" in err
    assert str(real["star"].parent / "mic_a.mrcs") in err and "--datadir" in err
    # a stack without poses cannot be trained on
    err = _error(capsys, [*base, "--particles", str(real["datadir"] / "mic_a.mrcs")])
    assert "mic_a.mrcs: no poses" in err and "--poses" in err


def test_counts_that_do_not_match_the_ind_file(real, tmp_path, capsys):
    base = ["run", "--data-only", "--out", str(tmp_path / "o"), *_star_args(real)]
    err = _error(capsys, [*base, "--ind", str(_pickle(tmp_path / "big.pkl", np.array([3, 48])))])
    assert "big.pkl: index 48 is out of range; the stack has 48 images" in err
    s = real["stack_order"]
    short = _pickle(tmp_path / "pose10.pkl", (s["rot"][:10], s["trans"][:10]))
    err = _error(capsys, [*base, "--ind", str(real["ind"]), "--poses", str(short)])
    assert "pose10.pkl: holds 10 poses; expected 48 (one per image of" in err
    assert "or 40 (one per index of" in err
    ctf = _pickle(tmp_path / "ctf10.pkl", s["ctf"][:10].astype(np.float32))
    err = _error(capsys, [*base, "--ind", str(real["ind"]), "--ctf", str(ctf)])
    assert "ctf10.pkl: holds 10 CTF rows; expected 48" in err
    # without --ind, a count that differs from the stack's is refused as before
    err = _error(capsys, [*base, "--poses", str(short)])
    assert "has 48 images but" in err and "pose10.pkl has 10 poses" in err


@pytest.mark.parametrize("content, expected", [
    (np.array([1.0, 2.0]), "holds a float64 array of shape (2,); expected a 1-D array of integer"),
    (np.zeros(0, dtype=int), "holds no indices"),
    (np.array([4, 2, 4, 4]), "holds 2 repeated indices (first: 4)"),
    (np.array([-1, 2]), "index -1 is out of range"),
    ({"ind": [1, 2]}, "holds dict; expected a 1-D array"),
])
def test_bad_ind_files(real, tmp_path, capsys, content, expected):
    ind = _pickle(tmp_path / "ind.pkl", content)
    err = _error(capsys, ["run", "--data-only", "--out", str(tmp_path / "o"), *_star_args(real),
                          "--ind", str(ind)])
    assert f"{ind}: {expected}" in err


@pytest.mark.parametrize("column, value, name", [
    ("rlnImagePixelSize", "10.000000", "pixel sizes (12 and 10)"),
    ("rlnImageSize", "18", "image sizes (16 and 18)"),
])
def test_optics_groups_of_different_pixel_or_image_sizes_are_refused(real, tmp_path, capsys,
                                                                     column, value, name):
    """Two optics groups may differ in voltage, Cs, amplitude contrast (the fixture's do);
    not in pixel size or image size: one model has one lattice and one box."""
    lines = real["star"].read_text().splitlines()
    header = [ln for ln in lines if ln.startswith("_rlnOpticsGroupName")][0]
    start = lines.index(header)
    cols = [ln.split()[0][1:] for ln in lines[start:start + 9]]
    row = next(i for i, ln in enumerate(lines) if ln.startswith("opticsGroup2"))
    fields = lines[row].split()
    fields[cols.index(column)] = value
    lines[row] = " ".join(fields)
    star = tmp_path / "two.star"
    star.write_text("\n".join(lines) + "\n")
    err = _error(capsys, ["run", "--data-only", "--out", str(tmp_path / "o"), "--particles",
                          str(star), "--datadir", str(real["datadir"])])
    assert f"{star}: optics groups" in err and f"have different {name}" in err
    assert "one image size and one pixel size" in err
    assert f"expected one {name.split(' (')[0][:-1]} for the whole data set" in err


def test_datadir_with_a_stack_that_is_not_a_star_is_said_to_be_unused(real, tmp_path, capsys):
    s = real["stack_order"]
    pose = _pickle(tmp_path / "pose.pkl", (s["rot"][:N_EACH], s["trans"][:N_EACH]))
    assert main(["run", "--data-only", "--out", str(tmp_path / "o"), "--particles",
                 str(real["datadir"] / "mic_a.mrcs"), "--poses", str(pose), "--datadir",
                 str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"ampcheck: warning: datadir {tmp_path} is not used" in err


# ----------------------------------------------------------------------------- end to end


def test_full_battery_end_to_end_on_real_shaped_data(real, tmp_path, capsys, monkeypatch):
    """``train`` + ``check`` on the star (two optics groups, stacks in --datadir, --ind, no
    truth): every check of the default battery is in the report; the one that needs ground
    truth is a SKIP that says so, and every truth-free one ran and measured a number.

    The HTML page is not rendered (a placeholder stands in): its UMAP embedding compiles with
    numba for 20-30 s in every new process, and the page is ``test_report``'s subject."""
    import ampcheck.render as render_module

    def placeholder(folder):
        (Path(folder) / "report.html").write_text("<p>not rendered in this test</p>")
        return Path(folder) / "report.html"

    monkeypatch.setattr(render_module, "render_html", placeholder)
    run, rep = tmp_path / "run", tmp_path / "rep"
    assert main(["train", *_star_args(real, "--ind", str(real["ind"])), "--out", str(run),
                 "--budget", "smoke", "--device", "cpu", "--quiet"]) == 0
    assert main(["check", "--run", str(run), "--out", str(rep), "--quiet"]) == 0
    report = json.loads((rep / "report.json").read_text())
    from ampcheck.checks import DEFAULT_CHECKS, missing_reason

    results = {r["check"]: r for r in report["checks"]}
    assert list(results) == list(DEFAULT_CHECKS)
    skipped = {k for k, r in results.items() if r["verdict"] == "SKIP"}
    assert skipped == {"heldout_generalisation", "pose_leakage", "noise_resampling"}
    assert results["heldout_generalisation"]["explanation"] == missing_reason("truth")
    # 32 training images are too few to cross-validate; a real stack has no clean images
    assert results["pose_leakage"]["explanation"].startswith("needs at least 100 training")
    assert results["noise_resampling"]["explanation"] == missing_reason("clean")
    for name in set(results) - skipped:
        governed = results[name]["threshold"]["metric"]
        assert np.isfinite(results[name]["metrics"][governed]["value"]), name
    assert report["dataset"]["n"] == 40 and report["dataset"]["datadir"] == str(real["datadir"])
    out = capsys.readouterr().out
    assert "heldout_generalisation   SKIP  needs ground truth" in out
