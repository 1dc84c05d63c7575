"""ampcheck.cryoem.io: stacks, volumes, pickles and RELION star files; round trips and bad input."""

from __future__ import annotations

import argparse
import os
import pickle
import tempfile
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from mrc_header import set_header as _set_header  # tests/ is on the path

from ampcheck.cryoem import io
from ampcheck.cryoem.rotations import R_from_relion, random_rotations
from ampcheck.errors import InputError, UnsafePickleError


def _imgs(n: int, D: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, D, D)).astype(np.float32)


def _ctf(n: int, D: int = 16, apix: float = 1.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ctf = np.tile([D, apix, 15000, 14000, 30, 300, 2.7, 0.1, 0], (n, 1)).astype(np.float64)
    ctf[:, 2:4] += rng.uniform(0, 5000, (n, 2))
    ctf[:, 4] = rng.uniform(-90, 90, n)
    return ctf


def _write_raw_mrc(path: Path, data: np.ndarray) -> None:
    """An MRC file written with mrcfile directly (any shape, no validation of ours)."""
    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)


# ----------------------------------------------------------------------------- atomic writes


def test_atomic_path_replaces_on_success_and_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".txt" and tmp.exists()
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]
    with io.atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_atomic_path_missing_folder(tmp_path):
    with pytest.raises(InputError, match="does not exist"), io.atomic_path(tmp_path / "no" / "x"):
        pass


# ----------------------------------------------------------------------------- stacks


def test_mrcs_round_trip_and_indexing(tmp_path):
    imgs = _imgs(9, 16)
    path = tmp_path / "p.mrcs"
    io.write_stack(path, imgs, apix=1.75)
    with io.read_stack(path) as stack:
        assert (len(stack), stack.D, stack.apix) == (9, 16, 1.75)
        np.testing.assert_array_equal(stack[:], imgs)
        np.testing.assert_array_equal(stack[3], imgs[3])
        np.testing.assert_array_equal(stack[-1], imgs[-1])
        np.testing.assert_array_equal(stack[2:7:2], imgs[2:7:2])
        np.testing.assert_array_equal(stack[[5, 0, 5, 8]], imgs[[5, 0, 5, 8]])
        np.testing.assert_array_equal(stack[np.arange(9) % 2 == 0], imgs[::2])
        assert stack[[1]].dtype == np.float32 and stack[[1]].shape == (1, 16, 16)
        with pytest.raises(IndexError):
            stack[9]
    with mrcfile.open(path) as mrc:  # a float32 image stack with header statistics
        assert mrc.header.mode == 2 and mrc.is_image_stack()
        assert np.isclose(mrc.header.rms, imgs.std(), rtol=1e-5)
        assert np.isclose(mrc.header.dmax, imgs.max())


def test_single_image_mrc_is_a_stack_of_one_and_apix_zero_is_none(tmp_path):
    img = _imgs(1, 8)[0]
    _write_raw_mrc(tmp_path / "one.mrc", img)
    stack = io.read_stack(tmp_path / "one.mrc")
    assert len(stack) == 1 and stack.apix is None
    np.testing.assert_array_equal(stack[:], img[None])


def test_int16_stack_reads_as_float32(tmp_path):
    data = np.arange(2 * 4 * 4, dtype=np.int16).reshape(2, 4, 4)
    _write_raw_mrc(tmp_path / "i.mrcs", data)
    out = io.read_stack(tmp_path / "i.mrcs")[:]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data)


def test_stack_writer_streams_and_is_atomic(tmp_path):
    imgs = _imgs(10, 8)
    path = tmp_path / "s.mrcs"
    with io.StackWriter(path, 10, 8, apix=2.0) as w:
        for s in (6, 0, 3):  # any order
            w.write(s, imgs[s:s + (4 if s == 6 else 3)])
        assert not path.exists()
    np.testing.assert_array_equal(io.read_stack(path)[:], imgs)
    assert io.read_stack(path).apix == 2.0
    # an exception inside the block leaves the old file and no temporary
    with pytest.raises(RuntimeError), io.StackWriter(path, 10, 8) as w:
        w.write(0, np.zeros((10, 8, 8)))
        raise RuntimeError("interrupted")
    np.testing.assert_array_equal(io.read_stack(path)[:], imgs)
    # so does a stack left incomplete
    with pytest.raises(ValueError, match="never written"), io.StackWriter(path, 10, 8) as w:
        w.write(0, np.zeros((9, 8, 8)))
    np.testing.assert_array_equal(io.read_stack(path)[:], imgs)
    assert sorted(os.listdir(tmp_path)) == ["s.mrcs"]


def test_txt_list_round_trip(tmp_path):
    a, b = _imgs(3, 8, 1), _imgs(5, 8, 2)
    (tmp_path / "sub").mkdir()
    io.write_stack(tmp_path / "a.mrcs", a)
    io.write_stack(tmp_path / "sub" / "b.mrcs", b)
    (tmp_path / "list.txt").write_text("a.mrcs\n\nsub/b.mrcs\n")
    stack = io.read_stack(tmp_path / "list.txt")
    both = np.concatenate([a, b])
    assert len(stack) == 8
    np.testing.assert_array_equal(stack[:], both)
    np.testing.assert_array_equal(stack[[7, 0, 3, 2]], both[[7, 0, 3, 2]])


def test_many_stacks_keep_a_bounded_number_of_maps_open(tmp_path, monkeypatch):
    parts = [_imgs(3, 8, seed) for seed in range(5)]
    for k, a in enumerate(parts):
        io.write_stack(tmp_path / f"s{k}.mrcs", a)
    (tmp_path / "l.txt").write_text("\n".join(str(tmp_path / f"s{k}.mrcs") for k in range(5)))
    stack = io.read_stack(tmp_path / "l.txt")
    monkeypatch.setattr(stack, "_MAX_OPEN", 2)
    both = np.concatenate(parts)
    idx = np.random.default_rng(0).integers(0, 15, 40)
    np.testing.assert_array_equal(stack[idx], both[idx])
    assert len(stack._open) == 2
    stack.close()
    np.testing.assert_array_equal(stack[::-1], both[::-1])


def _mapped_kib(path: Path) -> int | None:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps); None if unmapped."""
    total, inside = None, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split(None, 5)  # a mapping's first line: range perms offset dev inode [path]
        if head and "-" in head[0] and len(head) >= 5:
            inside = len(head) == 6 and head[5] == str(path)
        elif inside and head and head[0] == "Rss:":
            total = (total or 0) + int(head[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("files", [1, 4])
@pytest.mark.parametrize("release_kib, resident", [(2**20, "all"), (512, "none")])
def test_read_pages_leave_the_resident_set(tmp_path, files, release_kib, resident):
    imgs = _imgs(64, 64)  # 16 KiB an image, 1 MiB in all
    paths = [tmp_path / f"part {k}.mrcs" for k in range(files)]  # a space, as users' paths have
    for k, path in enumerate(paths):
        io.write_stack(path, np.array_split(imgs, files)[k])
    (tmp_path / "list.txt").write_text("\n".join(str(p) for p in paths))
    stack = io.read_stack(paths[0] if files == 1 else tmp_path / "list.txt")
    stack._RELEASE_BYTES = release_kib * 1024
    for start in range(0, 64, 16):  # 256 KiB a batch
        np.testing.assert_array_equal(stack.read(np.arange(start, start + 16)),
                                      imgs[start:start + 16])
    kib = [_mapped_kib(p.resolve()) for p in paths]
    assert None not in kib  # every file is still mapped
    if resident == "all":
        assert sum(kib) >= 1024  # every page read is still counted as this process's memory
    else:
        assert sum(kib) < 64 * files  # dropped after every 512 KiB read from the stack, even
        # where no one file reaches that (header pages may stay)
    np.testing.assert_array_equal(stack.read(np.arange(64)[::-1]), imgs[::-1])  # reads again
    stack.close()


def test_star_stack_resolves_names_and_order(tmp_path):
    a, b = _imgs(3, 8, 1), _imgs(4, 8, 2)
    (tmp_path / "stacks").mkdir()
    io.write_stack(tmp_path / "stacks" / "a.mrcs", a)
    io.write_stack(tmp_path / "stacks" / "b.mrcs", b)
    names = ["000004@stacks/b.mrcs", "000001@stacks/a.mrcs", "3@stacks/a.mrcs",
             "000001@stacks/b.mrcs"]
    n = len(names)
    io.write_star(tmp_path / "p.star", names, random_rotations(n, np.random.default_rng(0)),
                  None, _ctf(n, 8), 8, 1.5)
    expected = np.stack([b[3], a[0], a[2], b[0]])
    np.testing.assert_array_equal(io.read_stack(tmp_path / "p.star")[:], expected)
    # the same star moved elsewhere finds its stacks through datadir (by bare file name too)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "p.star").write_text((tmp_path / "p.star").read_text())
    with pytest.raises(InputError, match="not found"):
        io.read_stack(other / "p.star")
    np.testing.assert_array_equal(io.read_stack(other / "p.star", datadir=tmp_path)[:], expected)
    np.testing.assert_array_equal(
        io.read_stack(other / "p.star", datadir=tmp_path / "stacks")[:], expected)


def test_star_stack_index_beyond_stack(tmp_path):
    io.write_stack(tmp_path / "a.mrcs", _imgs(2, 8))
    io.write_star(tmp_path / "p.star", ["000003@a.mrcs"], np.eye(3)[None], None, _ctf(1, 8), 8,
                  1.0)
    with pytest.raises(InputError, match="asks for image 3"):
        io.read_stack(tmp_path / "p.star")


def test_star_stacks_are_found_as_cryodrgn_finds_them(tmp_path, monkeypatch):
    """cryoDRGN 4.3.1 (``ImageSource.parse_filename``) tries the name as written (relative to
    the current folder: RELION names stacks relative to its project folder), then
    ``datadir/name``, then ``datadir/basename``; the first that exists wins."""
    proj = tmp_path / "proj"
    (proj / "Extract" / "job1").mkdir(parents=True)
    (proj / "Refine").mkdir()
    a = _imgs(3, 8, 1)
    io.write_stack(proj / "Extract" / "job1" / "a.mrcs", a)
    names = ["000002@Extract/job1/a.mrcs", "000003@Extract/job1/a.mrcs"]
    star = proj / "Refine" / "p.star"
    io.write_star(star, names, random_rotations(2, np.random.default_rng(0)), None, _ctf(2, 8),
                  8, 1.5)
    with pytest.raises(InputError, match=r"Extract/job1/a\.mrcs not found .*--datadir"):
        io.read_stack(star)  # from elsewhere, beside the star: not there
    monkeypatch.chdir(proj)  # from the project folder: as written
    stack = io.read_stack(star)
    assert stack.files == [proj / "Extract" / "job1" / "a.mrcs"]  # absolute
    monkeypatch.chdir(tmp_path)
    np.testing.assert_array_equal(stack[:], a[1:])  # still read after the folder changed
    np.testing.assert_array_equal(io.read_stack(star, datadir=proj)[:], a[1:])  # datadir/name
    moved = tmp_path / "moved"
    moved.mkdir()
    io.write_stack(moved / "a.mrcs", a[::-1])
    np.testing.assert_array_equal(io.read_stack(star, datadir=moved)[:], a[::-1][1:])  # basename
    monkeypatch.chdir(proj)  # as written comes first, even with a datadir that has the name
    np.testing.assert_array_equal(io.read_stack(star, datadir=moved)[:], a[1:])
    with pytest.raises(InputError, match=r"nowhere: no such folder \(expected the datadir"):
        io.read_stack(star, datadir=tmp_path / "nowhere")


def test_take_serves_chosen_images_of_the_same_files(tmp_path):
    a, b = _imgs(3, 8, 1), _imgs(4, 8, 2)
    io.write_stack(tmp_path / "a.mrcs", a)
    io.write_stack(tmp_path / "b.mrcs", b)
    (tmp_path / "ab.txt").write_text("a.mrcs\nb.mrcs\n")
    both = np.concatenate([a, b])
    stack = io.read_stack(tmp_path / "ab.txt")
    sub = stack.take([6, 0, 3])
    assert (len(sub), sub.D, sub.path) == (3, 8, stack.path)
    np.testing.assert_array_equal(sub[:], both[[6, 0, 3]])
    np.testing.assert_array_equal(sub.take([2, 0])[:], both[[3, 6]])  # a subset of a subset
    for bad in ([7], [-1]):
        with pytest.raises(IndexError, match="out of range"):
            stack.take(bad)


def test_read_ind_keeps_the_order_and_refuses_what_is_not_an_index_list(tmp_path):
    path = tmp_path / "ind.pkl"
    for obj in (np.array([5, 0, 2], dtype=np.int32), [5, 0, 2], (5, 0, 2)):
        with open(path, "wb") as f:
            pickle.dump(obj, f)
        out = io.read_ind(path, 6)
        assert out.dtype == np.int64 and out.tolist() == [5, 0, 2]
    assert io.read_ind(path).tolist() == [5, 0, 2]  # no stack size: no upper bound
    with pytest.raises(InputError, match=r"ind\.pkl: index 5 is out of range; the stack has 5"):
        io.read_ind(path, 5)
    for obj, match in [(np.array([[1, 2]]), r"array of shape \(1, 2\)"),
                       (np.array([True, False]), "a bool array"),
                       ([1, "2"], "expected a 1-D array of integer image indices")]:
        with open(path, "wb") as f:
            pickle.dump(obj, f)
        with pytest.raises(InputError, match=match):
            io.read_ind(path, 6)
    with open(path, "wb") as f:
        pickle.dump(OSError("x"), f)
    with pytest.raises(UnsafePickleError, match="refusing to load builtins.OSError"):
        io.read_ind(path, 6)


def test_check_finite_and_read_name_the_bad_image(tmp_path):
    imgs = _imgs(6, 8)
    imgs[4, 2, 3] = np.nan
    io.write_stack(tmp_path / "nan.mrcs", imgs)
    stack = io.read_stack(tmp_path / "nan.mrcs")  # opening is cheap and does not scan
    np.testing.assert_array_equal(stack[:4], imgs[:4])
    with pytest.raises(InputError, match=r"nan\.mrcs: image 4 .*NaN or Inf"):
        stack[[1, 4]]
    with pytest.raises(InputError, match=r"nan\.mrcs: image 4"):
        stack.check_finite(chunk=2)
    imgs[4, 2, 3] = np.inf
    io.write_stack(tmp_path / "inf.mrcs", imgs)
    with pytest.raises(InputError, match=r"inf\.mrcs: image 4"):
        io.read_stack(tmp_path / "inf.mrcs").check_finite()


def test_stack_is_picklable_for_worker_processes(tmp_path):
    imgs = _imgs(4, 8)
    io.write_stack(tmp_path / "p.mrcs", imgs)
    stack = io.read_stack(tmp_path / "p.mrcs")
    stack[0]  # opens the memory map
    clone = pickle.loads(pickle.dumps(stack))
    np.testing.assert_array_equal(clone[:], imgs)


@pytest.mark.parametrize("shape, found", [((2, 9, 9), "9 x 9"), ((2, 8, 10), "8 x 10"),
                                          ((7, 7), "7 x 7")])
def test_odd_or_non_square_images_are_refused(tmp_path, shape, found):
    path = tmp_path / "bad.mrcs"
    _write_raw_mrc(path, np.zeros(shape, dtype=np.float32))
    with pytest.raises(InputError, match="expected square images with an even side") as e:
        io.read_stack(path)
    assert "bad.mrcs" in str(e.value) and found in str(e.value)


def test_truncated_stack_is_refused(tmp_path):
    path = tmp_path / "trunc.mrcs"
    io.write_stack(path, _imgs(5, 16))
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(InputError, match=r"trunc\.mrcs.*truncated"):
        io.read_stack(path)


@pytest.mark.parametrize("content", [b"hello, this is text\n" * 100, b"hi", b""])
def test_non_mrc_file_named_mrcs_is_refused(tmp_path, content):
    path = tmp_path / "text.mrcs"
    path.write_bytes(content)
    with pytest.raises(InputError, match=r"text\.mrcs: not a readable MRC file"):
        io.read_stack(path)


def test_missing_files_are_refused(tmp_path):
    for name in ("nope.mrcs", "nope.txt", "nope.star", "nope.pkl"):
        with pytest.raises(InputError, match=f"{name}: file not found"):
            (io.load_pickle if name.endswith(".pkl") else io.read_stack)(tmp_path / name)
    (tmp_path / "list.txt").write_text("missing.mrcs\n")
    with pytest.raises(InputError, match=r"list\.txt: lists missing\.mrcs"):
        io.read_stack(tmp_path / "list.txt")
    (tmp_path / "x.h5").write_text("")
    with pytest.raises(InputError, match=r"x\.h5: unknown particle file type"):
        io.read_stack(tmp_path / "x.h5")


def test_stacks_of_different_sizes_in_a_list_are_refused(tmp_path):
    io.write_stack(tmp_path / "a.mrcs", _imgs(2, 8))
    io.write_stack(tmp_path / "b.mrcs", _imgs(2, 16))
    (tmp_path / "l.txt").write_text("a.mrcs\nb.mrcs\n")
    with pytest.raises(InputError, match="differ in image size"):
        io.read_stack(tmp_path / "l.txt")


# ----------------------------------------------------------------------------- volumes


def test_mrc_volume_round_trip(tmp_path):
    vol = np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32)
    vol[1, 2, 3] = 7.0  # [z, y, x]
    io.write_mrc(tmp_path / "v.mrc", vol, apix=2.5)
    back, apix = io.read_mrc(tmp_path / "v.mrc")
    np.testing.assert_array_equal(back, vol)
    assert apix == 2.5
    with mrcfile.open(tmp_path / "v.mrc") as mrc:
        assert mrc.header.nx == 8 and mrc.data[1, 2, 3] == 7.0


# ----------------------------------------------------------------------------- pickles


@st.composite
def _poses(draw):
    n = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    rot = random_rotations(n, rng)
    trans = rng.uniform(-1, 1, (n, 2)) if draw(st.booleans()) else None
    return rot, trans


@given(_poses())
def test_poses_round_trip(poses):
    rot, trans = poses
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "poses.pkl"
        io.write_poses(path, rot, trans)
        rot2, trans2 = io.read_poses(path, n=len(rot))
        with open(path, "rb") as f:  # cryoDRGN's layout: a tuple, or the bare array
            raw = pickle.load(f)
    assert isinstance(raw, tuple if trans is not None else np.ndarray)
    assert rot2.dtype == np.float32 and rot2.shape == rot.shape
    np.testing.assert_allclose(rot2, rot, atol=1e-6)
    if trans is None:
        assert trans2 is None
    else:
        np.testing.assert_allclose(trans2, trans, atol=1e-6)


@given(st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_ctf_round_trip(n, seed):
    ctf = _ctf(n, seed=seed)
    with tempfile.TemporaryDirectory() as d:
        io.write_ctf(Path(d) / "ctf.pkl", ctf)
        back = io.read_ctf(Path(d) / "ctf.pkl", n=n)
    assert back.shape == (n, 9) and back.dtype == np.float32
    np.testing.assert_allclose(back, ctf, rtol=1e-6)


@given(st.integers(1, 30), st.integers(1, 10), st.integers(0, 2**32 - 1))
def test_z_round_trip(n, zdim, seed):
    rng = np.random.default_rng(seed)
    mu, logvar = rng.normal(size=(n, zdim)), rng.normal(size=(n, zdim))
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "z.pkl"
        io.write_z(path, mu, logvar)
        mu2, logvar2 = io.read_z(path)
        with open(path, "rb") as f:  # two consecutive pickles, as cryoDRGN writes them
            first, second = pickle.load(f), pickle.load(f)
    np.testing.assert_allclose(mu2, mu, rtol=1e-6)
    np.testing.assert_allclose(logvar2, logvar, rtol=1e-6)
    np.testing.assert_allclose(first, mu, rtol=1e-6)
    np.testing.assert_allclose(second, logvar, rtol=1e-6)


def test_load_pickle_admits_nested_plain_data(tmp_path):
    obj = {"a": [np.arange(3), (1, 2.5, "s", None, True)], "b": np.float32(1.5), "c": 1 + 2j,
           "d": np.array([1 + 1j]), "e": np.zeros((2, 2), dtype=[("x", "<f4"), ("y", "<i8")]),
           "f": {1, 2}, "g": b"bytes", "h": np.int64(7)}
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
        back = io.load_pickle(path)
        np.testing.assert_array_equal(back["a"][0], obj["a"][0])
        assert back["a"][1] == obj["a"][1] and back["c"] == obj["c"] and back["f"] == obj["f"]
        assert back["b"] == obj["b"] and back["b"].dtype == np.float32 and back["g"] == b"bytes"
        np.testing.assert_array_equal(back["e"], obj["e"])


def test_load_pickle_numpy1_spelling(tmp_path):
    """Pickles written by numpy 1.x name ``numpy.core.multiarray`` rather than ``numpy._core``."""
    rot = random_rotations(4, np.random.default_rng(1)).astype(np.float32)
    trans = np.full((4, 2), 0.01, dtype=np.float32)
    raw = pickle.dumps((rot, trans, np.float64(2.0)), protocol=3)  # GLOBAL opcodes are text
    old = raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in old and b"numpy._core" not in old
    (tmp_path / "old.pkl").write_bytes(old)
    r, t, s = io.load_pickle(tmp_path / "old.pkl")
    np.testing.assert_array_equal(r, rot)
    np.testing.assert_array_equal(t, trans)
    assert s == 2.0
    (tmp_path / "poses.pkl").write_bytes(
        pickle.dumps((rot, trans), protocol=3).replace(b"numpy._core.", b"numpy.core."))
    np.testing.assert_array_equal(io.read_poses(tmp_path / "poses.pkl")[0], rot)


class _Thing:
    pass


@pytest.mark.parametrize("obj, forbidden", [
    (os.system, "posix.system" if os.name == "posix" else "nt.system"),
    (_Thing(), "_Thing"),
    ((np.eye(3)[None], _Thing), "_Thing"),
    (Path("/etc/passwd"), "pathlib"),
])
def test_forbidden_pickles_are_refused(tmp_path, obj, forbidden):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(UnsafePickleError, match=r"evil\.pkl: refusing to load") as e:
        io.load_pickle(path)
    assert forbidden in str(e.value)
    with pytest.raises(UnsafePickleError):
        io.read_poses(path)


def test_reduce_payload_never_runs(tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UnsafePickleError, match="system"):
        io.load_pickle(tmp_path / "evil.pkl")
    assert not marker.exists()


@pytest.mark.parametrize("content, match", [
    (b"", "empty or truncated"),
    (b"this is not a pickle", "not a valid pickle"),
    (pickle.dumps(np.arange(100))[:-20], "truncated|not a valid pickle"),
])
def test_corrupt_pickles_are_refused(tmp_path, content, match):
    (tmp_path / "bad.pkl").write_bytes(content)
    with pytest.raises(InputError, match=rf"bad\.pkl: .*({match})"):
        io.load_pickle(tmp_path / "bad.pkl")


def test_z_with_a_single_pickle_is_refused(tmp_path):
    (tmp_path / "z.pkl").write_bytes(pickle.dumps(np.zeros((3, 2))))
    with pytest.raises(InputError, match=r"z\.pkl: holds only 1 pickled object"):
        io.read_z(tmp_path / "z.pkl")


def _dump(path: Path, obj) -> Path:
    path.write_bytes(pickle.dumps(obj))
    return path


def test_bad_poses_are_refused(tmp_path):
    rot = random_rotations(5, np.random.default_rng(0))
    p = tmp_path / "poses.pkl"
    with pytest.raises(InputError, match=r"poses\.pkl: translations must be fractions of the box "
                                         r"\(\|t\| <= 1\); found max \|t\| = 3.*pixels"):
        io.read_poses(_dump(p, (rot, np.full((5, 2), 3.0))))
    with pytest.raises(InputError, match=r"poses\.pkl: rotations have shape \(5, 3\); expected "
                                         r"\(N, 3, 3\)"):
        io.read_poses(_dump(p, np.zeros((5, 3))))
    with pytest.raises(InputError, match="not rotations"):
        io.read_poses(_dump(p, rot * np.array([1, 1, -1])[:, None]))  # a reflection
    with pytest.raises(InputError, match="not rotations"):
        io.read_poses(_dump(p, rot * 1.01))
    with pytest.raises(InputError, match=r"holds 5 rotations; expected 6"):
        io.read_poses(_dump(p, rot), n=6)
    with pytest.raises(InputError, match=r"translations have shape \(4, 2\)"):
        io.read_poses(_dump(p, (rot, np.zeros((4, 2)))))
    with pytest.raises(InputError, match="NaN or Inf"):
        io.read_poses(_dump(p, (rot, np.full((5, 2), np.nan))))
    with pytest.raises(InputError, match="expected a tuple"):
        io.read_poses(_dump(p, {"rot": rot}))
    with pytest.raises(InputError, match="translations must be fractions"):
        io.write_poses(p, rot, np.full((5, 2), 2.0))


def test_bad_ctf_and_z_are_refused(tmp_path):
    p = tmp_path / "ctf.pkl"
    with pytest.raises(InputError, match=r"ctf\.pkl: CTF parameters have shape \(4, 8\); "
                                         r"expected \(N, 9\)"):
        io.read_ctf(_dump(p, np.ones((4, 8))))
    with pytest.raises(InputError, match=r"ctf\.pkl: holds 4 CTF rows; expected 3"):
        io.read_ctf(_dump(p, _ctf(4)), n=3)
    bad = _ctf(4)
    bad[2, 3] = np.inf
    with pytest.raises(InputError, match="NaN or Inf"):
        io.read_ctf(_dump(p, bad))
    with pytest.raises(InputError, match="numeric numpy array"):
        io.read_ctf(_dump(p, [[1] * 9]))
    z = tmp_path / "z.pkl"
    z.write_bytes(pickle.dumps(np.zeros((3, 2))) + pickle.dumps(np.zeros((3, 4))))
    with pytest.raises(InputError, match=r"z\.pkl: mu has shape \(3, 2\) but logvar \(3, 4\)"):
        io.read_z(z)


# ----------------------------------------------------------------------------- RELION .star


def test_star_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    n, D, apix = 40, 64, 1.3
    rot = random_rotations(n, rng)
    trans = rng.uniform(-0.2, 0.2, (n, 2))
    ctf = _ctf(n, D, apix, seed=3)
    ctf[:, 8] = rng.uniform(0, 90, n)
    ctf[n // 2:, 5] = 200.0  # two optics groups
    names = [f"{i + 1:06d}@stack.mrcs" for i in range(n)]
    io.write_star(tmp_path / "p.star", names, rot, trans, ctf, D, apix)
    sp = io.read_star_particles(tmp_path / "p.star")
    assert sp.image_names == tuple(names) and (sp.D, sp.apix) == (D, apix) and len(sp) == n
    np.testing.assert_allclose(sp.rot, rot, atol=1e-4)
    np.testing.assert_allclose(sp.trans, trans, atol=1e-6)
    np.testing.assert_allclose(sp.ctf, ctf, rtol=1e-6, atol=1e-3)
    text = (tmp_path / "p.star").read_text()
    assert "data_optics" in text and "data_particles" in text and "_rlnOriginXAngst" in text


_STAR31 = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnImagePixelSize #3
_rlnImageSize #4
_rlnVoltage #5
_rlnSphericalAberration #6
_rlnAmplitudeContrast #7
opticsGroup1 1 1.500000 64 300.0 2.7 0.1
opticsGroup2 2 1.500000 64 200.0 2.0 0.07

# version 30001

data_particles

loop_
_rlnImageName #1
_rlnAngleRot #2
_rlnAngleTilt #3
_rlnAnglePsi #4
_rlnOriginXAngst #5
_rlnOriginYAngst #6
_rlnDefocusU #7
_rlnDefocusV #8
_rlnDefocusAngle #9
_rlnOpticsGroup #10
000001@stack.mrcs 0.0 0.0 0.0 3.0 -1.5 10000.0 9000.0 45.0 1
000002@stack.mrcs 30.0 50.0 -70.0 0.0 0.0 20000.0 21000.0 -10.0 2
"""


def _relion_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's Euler_angles2matrix (src/euler.cpp), written out independently."""
    a, b, g = np.deg2rad([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    return np.array([[cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
                     [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
                     [sb * ca, sb * sa, cb]])


def test_star_conversion_against_hand_computed_values(tmp_path):
    (tmp_path / "p.star").write_text(_STAR31)
    sp = io.read_star_particles(tmp_path / "p.star")
    assert (sp.D, sp.apix) == (64, 1.5)
    np.testing.assert_allclose(sp.rot[0], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(sp.rot[1], _relion_matrix(30, 50, -70), atol=1e-6)
    # 3 Å / 1.5 Å/px = 2 px = 2/64 of the box; -1.5 Å = -1 px; no sign flip (as cryoDRGN)
    np.testing.assert_allclose(sp.trans, [[2 / 64, -1 / 64], [0, 0]], atol=1e-7)
    np.testing.assert_allclose(sp.ctf, [[64, 1.5, 10000, 9000, 45, 300, 2.7, 0.1, 0],
                                        [64, 1.5, 20000, 21000, -10, 200, 2.0, 0.07, 0]],
                               rtol=1e-6)


_STAR30 = """
data_

loop_
_rlnImageName #1
_rlnAngleRot #2
_rlnAngleTilt #3
_rlnAnglePsi #4
_rlnOriginX #5
_rlnOriginY #6
_rlnDefocusU #7
_rlnDefocusV #8
_rlnDefocusAngle #9
_rlnVoltage #10
_rlnSphericalAberration #11
_rlnAmplitudeContrast #12
_rlnPhaseShift #13
1@stack.mrcs 0.0 90.0 0.0 4.0 -8.0 10000.0 9000.0 45.0 300.0 2.7 0.1 5.0
"""


def test_old_single_block_star(tmp_path):
    path = tmp_path / "old.star"
    path.write_text(_STAR30)
    with pytest.raises(InputError, match=r"old\.star: no _rlnImageSize.*pass D="):
        io.read_star_particles(path)
    with pytest.raises(InputError, match=r"old\.star: no _rlnImagePixelSize.*pass apix="):
        io.read_star_particles(path, D=32)
    sp = io.read_star_particles(path, D=32, apix=2.0)
    np.testing.assert_allclose(sp.trans, [[4 / 32, -8 / 32]])  # pixels, then / D
    np.testing.assert_allclose(sp.rot[0], _relion_matrix(0, 90, 0), atol=1e-6)
    np.testing.assert_allclose(sp.ctf[0], [32, 2.0, 10000, 9000, 45, 300, 2.7, 0.1, 5.0])


def _star_with_both_origins(pixels: list[str]) -> str:
    """``_STAR31`` with pixel origins beside its Å ones (3 Å, -1.5 Å at 1.5 Å/px: 2 px, -1 px;
    then 0, 0); ``pixels``: the two particles' ``"x y"`` in pixels."""
    head, rows = _STAR31.split("_rlnOpticsGroup #10\n")
    rows = [f"{row} {px}" for row, px in zip(rows.strip().splitlines(), pixels, strict=True)]
    return head + "_rlnOpticsGroup #10\n_rlnOriginX #11\n_rlnOriginY #12\n" + "\n".join(rows) + "\n"


def test_star_with_pixel_and_angstrom_origins_is_read_from_the_pixel_columns(tmp_path):
    path = tmp_path / "both.star"
    path.write_text(_star_with_both_origins(["2.000001 -1.0", "0 0"]))  # agree, rounded
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sp = io.read_star_particles(path)
    np.testing.assert_allclose(sp.trans, [[2 / 64, -1 / 64], [0, 0]], atol=1e-6)
    path.write_text(_star_with_both_origins(["2.0 -1.0", "0.5 -3.0"]))  # a stale pixel column
    with pytest.warns(UserWarning, match=r"both\.star: _rlnOriginX/Y \(pixels\) and "
                                         r"_rlnOriginX/YAngst .* disagree on 1 particle\(s\), by "
                                         r"up to 3 px \(first: particle 1, .*using _rlnOriginX/Y"):
        sp = io.read_star_particles(path)
    np.testing.assert_allclose(sp.trans, [[2 / 64, -1 / 64], [0.5 / 64, -3 / 64]], atol=1e-7)


@pytest.mark.extras
def test_star_with_both_origins_gives_cryodrgns_poses(tmp_path):
    parse = pytest.importorskip("cryodrgn.commands.parse_pose_star",
                                reason="cryodrgn is not installed in this environment")
    path = tmp_path / "both.star"
    path.write_text(_star_with_both_origins(["2.5 -1.0", "0.5 -3.0"]))
    parse.main(argparse.Namespace(input=str(path), outpkl=str(tmp_path / "poses.pkl"), D=None,
                                  Apix=None))
    with open(tmp_path / "poses.pkl", "rb") as f:
        rot, trans = pickle.load(f)
    with pytest.warns(UserWarning, match="disagree on 2 particle"):
        sp = io.read_star_particles(path)
    np.testing.assert_allclose(sp.trans, trans, atol=1e-6)
    np.testing.assert_allclose(sp.rot, rot, atol=1e-6)


def test_star_missing_columns_are_listed(tmp_path):
    text = _STAR31.replace("_rlnDefocusV #8", "_rlnDefocusX #8").replace(
        "_rlnAngleTilt #3", "_rlnAngleFoo #3")
    (tmp_path / "p.star").write_text(text)
    with pytest.raises(InputError, match=r"p\.star: missing required column\(s\) _rlnAngleTilt, "
                                         r"_rlnDefocusV"):
        io.read_star_particles(tmp_path / "p.star")
    (tmp_path / "q.star").write_text("data_\n\nloop_\n_rlnFoo #1\n1\n")
    with pytest.raises(InputError, match=r"q\.star: no table with an _rlnImageName"):
        io.read_star_particles(tmp_path / "q.star")
    (tmp_path / "r.star").write_text(_STAR31 + "x@s.mrcs 0 0 0 0 0 1 1 1 7\n")
    with pytest.raises(InputError, match=r"optics group\(s\) \[7\]"):
        io.read_star_particles(tmp_path / "r.star")


def test_star_bad_tables_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "p.star"
    for text, found in [
        (_STAR31.replace("10000.0 9000.0", "-10000.0 9000.0"),
         r"CTF column 2 dfu .* must be positive; row 0 \(0-based\) has -10000"),
        (_STAR31.replace("opticsGroup2 2", "opticsGroup2 1"),
         r"defines optics group 1 more than once"),
        (_STAR31.split("000001@")[0], r"the particle table has no rows"),
        (_STAR31.replace(" 64 ", " 63.5 "), r"image size D = 63.5"),
    ]:
        path.write_text(text)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(InputError, match=rf"p\.star: .*{found}"):
                io.read_star_particles(path)
    io.write_stack(tmp_path / "stack.mrcs", _imgs(2, 64))  # 1e30@stack.mrcs: an index too big
    path.write_text(_STAR31.replace("000002@stack.mrcs", "1e30@stack.mrcs"))
    with pytest.raises(InputError, match=r"p\.star: _rlnImageName '1e30@stack.mrcs' asks for "
                                         r"image 1000000000000000019884624838656, but"):
        io.read_stack(path)


def test_a_star_fixed_after_a_failed_read_is_read_afresh(tmp_path):
    """starfile serves a path's old lines (from linecache) after a parse that failed."""
    path = tmp_path / "p.star"
    path.write_text(_STAR31.split("data_particles")[0] + "data_")
    with pytest.raises(InputError, match=r"p\.star: could not parse it"):
        io.read_star_particles(path)
    path.write_text(_STAR31)
    assert len(io.read_star_particles(path)) == 2


# ----------------------------------------------------------------------------- issue 13




@pytest.mark.parametrize("fields, found", [
    (dict(nz=-5), r"header field nz = -5, expected a positive number of sections"),
    (dict(nx=-16), r"header field nx = -16, expected a positive number of columns"),
    (dict(nx=-16, ny=-16), r"header field nx = -16"),
    (dict(ny=0), r"header field ny = 0"),
    (dict(mode=99), r"header field mode = 99, expected a data mode of 0, 1, 2, 4, 6 or 12"),
    (dict(nsymbt=-100), r"header field nsymbt = -100"),
    (dict(nsymbt=2**31 - 1), r"\d+ bytes, but the header describes .*; the file is truncated"),
    (dict(ispg=401, mz=0), r"volume stack \(ispg = 401\) .* mz = 0"),
    (dict(ny=2**31 - 1), r"the file is truncated"),
    (dict(mode=1), r"\d+ more than the header describes"),  # int16: half the bytes
    (dict(machst=np.zeros(4, np.uint8)), r"machine stamp"),
])
def test_corrupt_mrc_header_fields_are_refused_in_one_message(tmp_path, fields, found):
    """Item 11: a negative nz was an OverflowError, ispg 401 with mz 0 a ZeroDivisionError."""
    path = tmp_path / "h.mrcs"
    io.write_stack(path, _imgs(3, 16))
    _set_header(path, **fields)
    for read in (io.read_stack, io.read_mrc):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(InputError, match=rf"h\.mrcs: not a readable MRC file \(.*{found}"):
                read(path)


def test_trailing_bytes_are_refused_without_a_warning(tmp_path):
    """Items 19 and 22: mrcfile read the file and printed `RuntimeWarning: MRC file is 7 bytes
    larger than expected`; ampcheck refuses it (see _check_mrc_layout) in one message."""
    path = tmp_path / "junk.mrcs"
    io.write_stack(path, _imgs(3, 16))
    size = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=rf"junk\.mrcs: not a readable MRC file \({size + 7} "
                                             rf"bytes, 7 more than the header describes .*"
                                             rf"= {size} bytes\)"):
            io.read_stack(path)


def test_header_without_a_pixel_size_reads_without_a_warning(tmp_path):
    """Item 22: mx = 0 made mrcfile's voxel size divide by zero (a RuntimeWarning)."""
    path = tmp_path / "mx.mrcs"
    io.write_stack(path, _imgs(3, 16), apix=1.5)
    _set_header(path, mx=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with io.read_stack(path) as stack:
            assert stack.apix is None and stack[:].shape == (3, 16, 16)


@pytest.mark.parametrize("column, name", [(2, "dfu"), (3, "dfv")])
@pytest.mark.parametrize("value", [-15000.0, 0.0])
def test_non_positive_defocus_is_refused_naming_the_row(tmp_path, column, name, value):
    """Item 19: a negative defocus was accepted (and fitted with a CTF of the wrong sign)."""
    ctf = _ctf(5)
    ctf[3, column] = value
    with pytest.raises(InputError, match=rf"ctf\.pkl: CTF column {column} {name} \(defocus in Å, "
                                         rf"underfocus\) must be positive; row 3 \(0-based\) "
                                         rf"has {value:g}"):
        io.read_ctf(_dump(tmp_path / "ctf.pkl", ctf))


@pytest.mark.parametrize("read, obj", [
    (io.read_poses, np.full((4, 3, 3), 1e300)),
    (io.read_poses, (random_rotations(4, np.random.default_rng(0)), np.full((4, 2), 1e300))),
    (io.read_ctf, _ctf(4) * [1, 1, 1e300, 1, 1, 1, 1, 1, 1]),
    (io.read_ctf, _ctf(4) * [1, 1, 1, 1, 1e39, 1, 1, 1, 1]),  # beyond float32 only
])
def test_values_beyond_float32_are_refused_without_numpy_warnings(tmp_path, read, obj):
    """Item 22: numpy's `overflow encountered in matmul / cast` warnings leaked to stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"x\.pkl: .*"):
            read(_dump(tmp_path / "x.pkl", obj))


def test_complex_volume_is_refused_without_a_warning(tmp_path):
    path = tmp_path / "c.mrc"
    _write_raw_mrc(path, np.ones((4, 4, 4), np.complex64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match=r"c\.mrc: found complex64 values; expected a "
                                             "real-valued MRC volume"):
            io.read_mrc(path)


@pytest.mark.extras
def test_R_from_relion_matches_cryodrgn():
    utils = pytest.importorskip("cryodrgn.utils",
                                reason="cryodrgn is not installed in this environment")
    euler = np.random.default_rng(0).uniform([-180, 0, -180], [180, 180, 180], (50, 3))
    np.testing.assert_allclose(R_from_relion(euler), utils.R_from_relion(euler), atol=1e-10)
