"""ampcheck.data.particles: cryoDRGN's preprocessing, batching, views and input validation."""

from __future__ import annotations

import argparse
import pickle

import numpy as np
import pytest
import torch
from mrc_header import set_header as _set_header  # tests/ is on the path
from torch.utils.data import DataLoader

from ampcheck.cryoem import io
from ampcheck.cryoem.rotations import random_rotations
from ampcheck.data.particles import ParticleDataset, estimate_normalization
from ampcheck.errors import ConfigError, InputError

N, D, APIX = 24, 16, 2.0


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1.3e-6, atol: float = 1e-5) -> None:
    """``torch.testing.assert_close`` without its second of lazy imports."""
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=rtol, atol=atol)


def _ctf(n: int, D: int = D, apix: float = APIX) -> np.ndarray:
    ctf = np.tile([D, apix, 15000, 14000, 30, 300, 2.7, 0.1, 0], (n, 1)).astype(np.float64)
    ctf[:, 2] += np.arange(n)
    return ctf


@pytest.fixture
def data_dir(tmp_path):
    """The synthetic layout: particles.mrcs, poses.pkl, ctf.pkl, truth.npz (written here)."""
    rng = np.random.default_rng(0)
    imgs = (rng.normal(size=(N, D, D)) * 2 + 0.5).astype(np.float32)
    io.write_stack(tmp_path / "particles.mrcs", imgs, APIX)
    io.write_poses(tmp_path / "poses.pkl", random_rotations(N, rng), rng.uniform(-0.1, 0.1, (N, 2)))
    io.write_ctf(tmp_path / "ctf.pkl", _ctf(N))
    np.savez(tmp_path / "truth.npz", z_continuous=rng.uniform(size=N),
             z_class=rng.integers(0, 2, N), hinge_deg=rng.uniform(0, 30, N))
    return tmp_path


# ----------------------------------------------------------------------------- preprocessing


def _reference_y(img: np.ndarray, std: float, invert: bool = True, window_r: float = 0.85):
    """cryoDRGN's ImageDataset._process written out step by step in numpy, float64."""
    D = img.shape[-1]
    x = np.arange(D) * 2.0 / D - 1.0  # pixel centres on [-1, 1): the centre is pixel D/2
    r = np.sqrt(x[:, None] ** 2 + x[None, :] ** 2)
    window = np.clip((0.99 - r) / (0.99 - window_r), 0, 1)
    img = img.astype(np.float64) * window * (-1 if invert else 1)
    f = np.fft.fftshift(np.fft.fft2(np.fft.fftshift(img)))
    h = f.real - f.imag
    h = np.concatenate([h, h[:1]], axis=0)
    h = np.concatenate([h, h[:, :1]], axis=1)
    return h / std


def _reference_std(imgs: np.ndarray) -> float:
    """cryoDRGN's estimate_normalization: strided sample, no window, std of Hartley images."""
    n = min(1000, len(imgs))
    sample = imgs[::len(imgs) // n].astype(np.float64)
    f = np.fft.fftshift(np.fft.fft2(np.fft.fftshift(sample, axes=(-2, -1))), axes=(-2, -1))
    h = f.real - f.imag
    h = np.concatenate([h, h[:, :1]], axis=1)
    h = np.concatenate([h, h[:, :, :1]], axis=2)
    return float(h.std(ddof=1))


def test_preprocessing_matches_an_independent_computation(data_dir):
    ds = ParticleDataset.from_dir(data_dir)
    imgs = io.read_stack(data_dir / "particles.mrcs")[:]
    std = _reference_std(imgs)
    assert ds.norm[0] == 0.0
    assert ds.norm[1] == pytest.approx(std, rel=1e-6)
    for i in (0, 5, N - 1):
        y = ds[i]["y"]
        assert y.dtype == torch.float32 and y.shape == (D + 1, D + 1)
        np.testing.assert_allclose(y.numpy(), _reference_y(imgs[i], std), atol=2e-5)


def test_preprocessing_options(data_dir):
    imgs = io.read_stack(data_dir / "particles.mrcs")[:]
    ds = ParticleDataset.from_dir(data_dir, invert=False, window_r=0.5, norm=(0.0, 10.0))
    np.testing.assert_allclose(ds[3]["y"].numpy(),
                               _reference_y(imgs[3], 10.0, invert=False, window_r=0.5), atol=2e-5)
    ds = ParticleDataset.from_dir(data_dir, window=False, norm=(1.0, 10.0))
    f = np.fft.fftshift(np.fft.fft2(np.fft.fftshift(-imgs[3].astype(np.float64))))
    h = np.pad(f.real - f.imag, ((0, 1), (0, 1)), mode="wrap")
    np.testing.assert_allclose(ds[3]["y"].numpy(), (h - 1.0) / 10.0, atol=2e-5)


def test_normalization_uses_a_strided_sample_of_at_most_1000(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(2100, 4, 4)).astype(np.float32)
    imgs[1::2] *= 10  # odd images are loud; stride 2 samples only the quiet ones
    io.write_stack(tmp_path / "s.mrcs", imgs)
    _, std = estimate_normalization(io.read_stack(tmp_path / "s.mrcs"))
    assert std == pytest.approx(_reference_std(imgs), rel=1e-6)
    assert std == pytest.approx(_reference_std(imgs[::2]), rel=1e-6)


def test_blank_images_are_refused(tmp_path):
    io.write_stack(tmp_path / "blank.mrcs", np.zeros((3, 8, 8)))
    with pytest.raises(InputError, match=r"blank\.mrcs: normalisation"):
        ParticleDataset(io.read_stack(tmp_path / "blank.mrcs"))


# ----------------------------------------------------------------------------- items and batches


def test_items_and_batches(data_dir):
    ds = ParticleDataset.from_dir(data_dir)
    rot, trans = io.read_poses(data_dir / "poses.pkl")
    ctf = io.read_ctf(data_dir / "ctf.pkl")
    item = ds[7]
    assert set(item) == {"y", "index", "rot", "trans", "ctf"} and item["index"] == 7
    np.testing.assert_allclose(item["rot"].numpy(), rot[7])
    np.testing.assert_allclose(item["trans"].numpy(), trans[7] * D, rtol=1e-6)  # pixels
    np.testing.assert_allclose(item["ctf"].numpy(), ctf[7])
    order = [9, 2, 2, 17, 0]  # unsorted, with a repeat: the batch keeps the order asked for
    batch = ds.get_batch(order)
    assert batch["y"].shape == (5, D + 1, D + 1) and batch["rot"].shape == (5, 3, 3)
    assert batch["trans"].shape == (5, 2) and batch["ctf"].shape == (5, 9)
    assert batch["index"].tolist() == order
    for b, i in enumerate(order):
        single = ds[i]
        for key in ("y", "rot", "trans", "ctf"):
            _close(batch[key][b], single[key])
    _close(ds[[9, 2]]["y"], batch["y"][:2])
    _close(ds[-1]["y"], ds[N - 1]["y"])
    with pytest.raises(IndexError):
        ds[N]
    raw = io.read_stack(data_dir / "particles.mrcs")
    np.testing.assert_array_equal(ds.images([3, 1]), raw[[3, 1]])


def test_missing_parts_are_omitted(data_dir):
    ds = ParticleDataset(io.read_stack(data_dir / "particles.mrcs"))
    assert set(ds[0]) == {"y", "index"} and ds.truth == {} and ds.apix == APIX
    rot, _ = io.read_poses(data_dir / "poses.pkl")
    assert set(ParticleDataset(ds.stack, rot)[0]) == {"y", "index", "rot"}


def test_dataloader_and_pickling(data_dir):
    ds = ParticleDataset.from_dir(data_dir)
    batch = next(iter(DataLoader(ds, batch_size=6, shuffle=False)))
    _close(batch["y"], ds.get_batch(range(6))["y"])
    assert batch["index"].tolist() == list(range(6))
    clone = pickle.loads(pickle.dumps(ds))
    _close(clone[4]["y"], ds[4]["y"])


def test_downsampled_stack_rescales_ctf_like_cryodrgn(data_dir):
    """A ctf.pkl made for the original 64-px images still describes the same box in Å."""
    io.write_ctf(data_dir / "ctf.pkl", _ctf(N, D=64, apix=APIX / 4))
    ds = ParticleDataset.from_dir(data_dir, norm=(0, 1))
    assert ds.apix == pytest.approx(APIX)
    np.testing.assert_allclose(ds[0]["ctf"].numpy()[:2], [D, APIX], rtol=1e-6)
    np.testing.assert_allclose(ds.ctf[:, 2:], _ctf(N)[:, 2:], rtol=1e-6)
    io.write_ctf(data_dir / "ctf.pkl", _ctf(N, D=64, apix=APIX / 3))  # disagrees with the header
    with pytest.warns(UserWarning, match=r"header pixel size 2.0 Å differs from the CTF's 2.667"):
        ds = ParticleDataset.from_dir(data_dir, norm=(0, 1))
    assert ds.apix == pytest.approx(APIX * 4 / 3)


# ----------------------------------------------------------------------------- files, views


def test_from_files_star_equals_pickles(data_dir):
    rot, trans = io.read_poses(data_dir / "poses.pkl")
    ctf = io.read_ctf(data_dir / "ctf.pkl")
    names = [f"{i + 1:06d}@particles.mrcs" for i in range(N)]
    io.write_star(data_dir / "p.star", names, rot, trans, ctf, D, APIX)
    a = ParticleDataset.from_dir(data_dir)
    b = ParticleDataset.from_files(data_dir / "p.star")
    assert b.norm == pytest.approx(a.norm)
    batch_a, batch_b = a.get_batch(range(N)), b.get_batch(range(N))
    _close(batch_a["y"], batch_b["y"])
    _close(batch_a["rot"], batch_b["rot"], atol=1e-4, rtol=0)
    _close(batch_a["trans"], batch_b["trans"], atol=1e-4, rtol=0)
    _close(batch_a["ctf"], batch_b["ctf"], atol=1e-2, rtol=1e-6)
    # explicit pickles override the star's own poses
    c = ParticleDataset.from_files(data_dir / "p.star", poses=data_dir / "poses.pkl")
    _close(c.get_batch(range(N))["rot"], batch_a["rot"])


def test_truth_subset_and_split(data_dir):
    ds = ParticleDataset.from_dir(data_dir, seed=3)
    truth = dict(np.load(data_dir / "truth.npz"))
    assert set(ds.truth) == {"z_continuous", "z_class", "hinge_deg"}
    sub = ds.subset([5, 1, 20])
    assert sub.n == len(sub) == 3 and sub.norm == ds.norm and sub.stack is ds.stack
    assert sub[0]["index"] == 5 and sub.indices.tolist() == [5, 1, 20]
    np.testing.assert_array_equal(sub.truth["z_class"], truth["z_class"][[5, 1, 20]])
    _close(sub[2]["y"], ds[20]["y"])
    _close(sub.subset([2])[0]["y"], ds[20]["y"])  # a view of a view

    train, held = ds.split(0.25, seed=1)
    assert (train.n, held.n) == (18, 6)
    t, h = set(train.indices.tolist()), set(held.indices.tolist())
    assert not t & h and t | h == set(range(N))
    assert list(train.indices) == sorted(t)
    again = ds.split(0.25, seed=1)[1]
    np.testing.assert_array_equal(again.indices, held.indices)
    assert not np.array_equal(ds.split(0.25, seed=2)[1].indices, held.indices)
    np.testing.assert_array_equal(ds.split(0.25)[1].indices, ds.split(0.25, seed=3)[1].indices)
    np.testing.assert_array_equal(held.truth["hinge_deg"], truth["hinge_deg"][held.indices])
    for bad in (0.0, 1.0, 1.5, 0.001):
        with pytest.raises(ConfigError):
            ds.split(bad)


# ----------------------------------------------------------------------------- bad input


def test_count_mismatches_name_both_files(data_dir):
    rng = np.random.default_rng(1)
    io.write_poses(data_dir / "short.pkl", random_rotations(N - 1, rng))
    with pytest.raises(InputError, match=rf"particles\.mrcs has {N} images but .*short\.pkl has "
                                         rf"{N - 1} poses"):
        ParticleDataset.from_files(data_dir / "particles.mrcs", poses=data_dir / "short.pkl")
    io.write_ctf(data_dir / "ctf5.pkl", _ctf(5))
    with pytest.raises(InputError, match=rf"particles\.mrcs has {N} images but .*ctf5\.pkl has 5 "
                                         "CTF rows"):
        ParticleDataset.from_files(data_dir / "particles.mrcs", ctf=data_dir / "ctf5.pkl")
    np.savez(data_dir / "t.npz", z_class=np.zeros(N + 2))
    with pytest.raises(InputError, match=rf"particles\.mrcs has {N} images but .*t\.npz has "
                                         rf"{N + 2} values of 'z_class'"):
        ParticleDataset.from_files(data_dir / "particles.mrcs", truth=data_dir / "t.npz")


def test_bad_files_through_the_dataset(data_dir):
    rot = random_rotations(N, np.random.default_rng(0))
    (data_dir / "big.pkl").write_bytes(pickle.dumps((rot, np.full((N, 2), 5.0))))
    with pytest.raises(InputError, match=r"big\.pkl: translations must be fractions of the box"):
        ParticleDataset.from_files(data_dir / "particles.mrcs", poses=data_dir / "big.pkl")
    (data_dir / "euler.pkl").write_bytes(pickle.dumps(np.zeros((N, 3))))
    with pytest.raises(InputError, match=r"euler\.pkl: rotations have shape \(24, 3\)"):
        ParticleDataset.from_files(data_dir / "particles.mrcs", poses=data_dir / "euler.pkl")
    mixed = _ctf(N)
    mixed[3, 1] = 3.0
    io.write_ctf(data_dir / "mixed.pkl", mixed)
    with pytest.raises(InputError, match=r"mixed\.pkl: CTF rows describe boxes of different"):
        ParticleDataset.from_files(data_dir / "particles.mrcs", ctf=data_dir / "mixed.pkl")
    with pytest.raises(InputError, match="no particles.mrcs"):
        ParticleDataset.from_dir(data_dir / "ctf.pkl")
    (data_dir / "t.npz").write_text("junk")
    with pytest.raises(InputError, match=r"t\.npz: could not read"):
        ParticleDataset.from_files(data_dir / "particles.mrcs", truth=data_dir / "t.npz")


def test_nan_pixels_surface_when_read(tmp_path):
    imgs = np.random.default_rng(0).normal(size=(6, 8, 8)).astype(np.float32)
    imgs[2, 0, 0] = np.nan
    io.write_stack(tmp_path / "nan.mrcs", imgs)
    ds = ParticleDataset(io.read_stack(tmp_path / "nan.mrcs"), norm=(0, 1))
    ds[1]
    with pytest.raises(InputError, match=r"nan\.mrcs: image 2"):
        ds.get_batch([0, 2])
    with pytest.raises(InputError, match=r"nan\.mrcs: image 2"):  # estimating the norm reads it
        ParticleDataset(io.read_stack(tmp_path / "nan.mrcs"))


# ----------------------------------------------------------------------------- issue 13: one line
# Each bad input below reaches the command line as exit status 2 and one line naming the file,
# raised when the data set is opened, before any training.


def _cli_error(capsys, *args: str) -> str:
    """Run ``ampcheck ARGS``; assert exit status 2 and one stderr line; return that line."""
    from ampcheck.cli import main

    capsys.readouterr()
    assert main(list(args)) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ampcheck: error: "), lines
    return lines[0]


def _train(data_dir, tmp_path) -> tuple[str, ...]:
    return ("train", "--data", str(data_dir), "--out", str(tmp_path / "run"), "--quiet",
            "--budget", "smoke")


def test_a_folder_without_poses_is_refused_naming_the_file(data_dir, tmp_path, capsys):
    """Item 9: was KeyError: 'rot' in the first training batch."""
    (data_dir / "poses.pkl").unlink()
    expected = str(data_dir / "poses.pkl")
    with pytest.raises(InputError, match=rf"{expected}: file not found; .*poses\.pkl"):
        ParticleDataset.from_dir(data_dir)
    assert expected in _cli_error(capsys, *_train(data_dir, tmp_path))
    assert expected in _cli_error(capsys, "run", "--data", str(data_dir), "--out",
                                  str(tmp_path / "report"), "--budget", "smoke", "--quiet")


@pytest.mark.parametrize("truth, found", [
    (dict(z_continuous=np.where(np.arange(N) == 5, np.nan, 0.5)),
     r"'z_continuous' holds NaN or Inf \(first at image 5"),
    (dict(z_continuous=np.array(["0.5"] * N)), r"'z_continuous' holds <U3 values; expected real"),
    (dict(z_class=np.full(N, 0.5)), r"'z_class' of image 0 \(0-based\) is 0.5; expected whole"),
    (dict(hinge_deg=np.full(N, np.inf)), r"'hinge_deg' holds NaN or Inf"),
    (dict(z_continuous=np.zeros(N, complex)), r"'z_continuous' holds complex128 values"),
])
def test_bad_truth_values_are_refused_when_read(data_dir, tmp_path, capsys, truth, found):
    """Item 10: NaN or strings in truth.npz surfaced later, in scikit-learn, naming no file."""
    np.savez(data_dir / "truth.npz", **truth)
    with pytest.raises(InputError, match=rf"truth\.npz: {found}"):
        ParticleDataset.from_dir(data_dir)
    assert str(data_dir / "truth.npz") in _cli_error(capsys, *_train(data_dir, tmp_path))


@pytest.mark.parametrize("key", ["z_continuous", "z_class"])
def test_two_dimensional_truth_is_refused_naming_the_file_and_key(data_dir, tmp_path, capsys,
                                                                   key):
    """Item 21: was `y must have shape (N,) ...` from the metrics, naming no file."""
    np.savez(data_dir / "truth.npz", **{key: np.zeros((N, 2), int)})
    with pytest.raises(InputError, match=rf"truth\.npz: '{key}' has shape \({N}, 2\); expected "
                                         r"a 1-D array \(N,\)"):
        ParticleDataset.from_dir(data_dir)
    line = _cli_error(capsys, *_train(data_dir, tmp_path))
    assert str(data_dir / "truth.npz") in line and key in line


def test_truth_given_as_arrays_is_checked_too(data_dir):
    stack = io.read_stack(data_dir / "particles.mrcs")
    with pytest.raises(InputError, match=r"the ground truth: 'z_continuous' has shape"):
        ParticleDataset(stack, truth={"z_continuous": np.zeros((N, 3))}, norm=(0, 1))
    ds = ParticleDataset(stack, truth={"z_class": np.arange(N) % 2 == 0, "extra": np.ones((N, 2))},
                         norm=(0, 1))
    assert set(ds.truth) == {"z_class", "extra"}




def test_a_corrupt_mrc_header_gives_one_line(data_dir, tmp_path, capsys):
    """Item 11: a negative nz was an OverflowError from inside mrcfile."""
    _set_header(data_dir / "particles.mrcs", nz=-5)
    line = _cli_error(capsys, *_train(data_dir, tmp_path))
    assert str(data_dir / "particles.mrcs") in line and "nz = -5" in line


def test_trailing_bytes_give_one_line_and_no_warning(data_dir, tmp_path, capsys):
    """Items 19 and 22: a stack with bytes after its data was read with mrcfile's two-line
    RuntimeWarning on stderr; it is refused in one line naming the file."""
    with open(data_dir / "particles.mrcs", "ab") as f:
        f.write(b"junk" * 10)
    line = _cli_error(capsys, *_train(data_dir, tmp_path))
    assert str(data_dir / "particles.mrcs") in line and "40 more than the header" in line


def test_negative_defocus_gives_one_line(data_dir, tmp_path, capsys):
    """Item 19: a negative defocus in ctf.pkl was accepted."""
    ctf = _ctf(N)
    ctf[7, 3] = -14000
    (data_dir / "ctf.pkl").write_bytes(pickle.dumps(ctf))
    line = _cli_error(capsys, *_train(data_dir, tmp_path))
    assert str(data_dir / "ctf.pkl") in line and "dfv" in line and "row 7" in line


@pytest.mark.parametrize("name, bad", [("poses.pkl", np.full((N, 3, 3), 1e300)),
                                       ("ctf.pkl", _ctf(N) * [1, 1, 1e300, 1, 1, 1, 1, 1, 1])])
def test_overflowing_values_give_one_line_without_numpy_warnings(data_dir, tmp_path, capsys,
                                                                 name, bad):
    """Item 22: numpy's `overflow encountered` RuntimeWarnings were printed beside the error."""
    (data_dir / name).write_bytes(pickle.dumps(bad))
    line = _cli_error(capsys, *_train(data_dir, tmp_path))
    assert str(data_dir / name) in line and "fit float32" in line


@pytest.mark.parametrize("seed", ["99999999999999999999999", str(2**31), "-1"])
def test_seeds_out_of_range_are_argument_errors(data_dir, tmp_path, capsys, seed):
    """Item 12: --seed 99999999999999999999999 was `ValueError: Overflow when unpacking long
    long` from torch, after the data set was read."""
    from ampcheck import _argtypes
    from ampcheck.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([*_train(data_dir, tmp_path), "--seed", seed])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.splitlines()[-1]
    assert f"argument --seed: expected a seed, an integer from 0 to {2**31 - 1}, got {seed}" \
        in last
    with pytest.raises(argparse.ArgumentTypeError, match="a seed, an integer from 0 to"):
        _argtypes.seed(seed)
    assert _argtypes.seed(str(2**31 - 1)) == 2**31 - 1
