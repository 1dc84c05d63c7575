"""Property tests of every reader of user files (issue 13): whatever the bytes, a reader returns a
valid object or raises :class:`InputError` / :class:`ConfigError` whose message names the file;
never another exception, and never a warning that does not name the file (which the command
line would print as lines of library source beside its one-line error).

Inputs: MRC headers with random values in their fields (written with numpy through mrcfile's
own header layout), valid stacks cut or extended at random byte offsets, pickles of random
objects read as poses, CTF and latents, RELION star tables with random missing and extra
columns, truth ``.npz`` files with random contents, ``.txt`` stack lists, and MNIST IDX and
``.npz`` files. ``HYPOTHESIS_PROFILE=full`` runs 400 examples of each.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import starfile
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from mrcfile.dtypes import HEADER_DTYPE

from ampcheck.cryoem import io
from ampcheck.cryoem.rotations import random_rotations
from ampcheck.data.mnist import load_mnist, read_idx
from ampcheck.data.particles import ParticleDataset
from ampcheck.errors import ConfigError, InputError

# Every example rewrites its files in one module-scoped folder.
fuzz = settings(suppress_health_check=[HealthCheck.too_slow])

N, D, APIX = 4, 8, 2.0


def read_or_refuse(read, *files: Path, label: str = ""):
    """``read()``, or None when it raises InputError / ConfigError naming one of ``files``.

    Any other exception propagates (the property fails); so does any warning whose message
    names none of ``files``. Which of the two happened is counted (``--hypothesis-show-
    statistics`` shows it)."""
    names = [f.name for f in files]
    label = label or names[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = read()
        except (InputError, ConfigError) as e:
            assert any(name in str(e) for name in names), f"{e!s} names none of {names}"
            assert "\n" not in str(e), f"a one-line message, got {e!s}"
            result = None
    event(f"{label}: {'refused' if result is None else 'read'}")
    stray = [f"{w.category.__name__}: {w.message}" for w in caught
             if not any(name in str(w.message) for name in names)]
    assert not stray, stray
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with a valid stack ``s.mrcs`` (N images of D x D) and its star ``p.star``."""
    d = tmp_path_factory.mktemp("fuzz")
    rng = np.random.default_rng(0)
    io.write_stack(d / "s.mrcs", rng.normal(size=(N, D, D)).astype(np.float32), APIX)
    io.write_star(d / "p.star", [f"{i + 1:06d}@s.mrcs" for i in range(N)],
                  random_rotations(N, rng), rng.uniform(-0.1, 0.1, (N, 2)), _ctf(N), D, APIX)
    return d


def _ctf(n: int) -> np.ndarray:
    return np.tile([D, APIX, 15000, 14000, 30, 300, 2.7, 0.1, 0], (n, 1)).astype(np.float64)


def _check_stack(stack: io.ImageStack) -> None:
    """A valid stack: images are float32 (B, D, D), finite (or refused when read)."""
    with stack:
        assert len(stack) >= 1 and stack.D >= 2 and stack.D % 2 == 0
        imgs = read_or_refuse(lambda: stack[:], *stack.files, stack.path, label="images")
        if imgs is not None:
            assert imgs.shape == (len(stack), stack.D, stack.D) and imgs.dtype == np.float32
            assert np.isfinite(imgs).all()


# ----------------------------------------------------------------------------- MRC headers

_INT_FIELDS = ["nx", "ny", "nz", "mode", "nxstart", "nystart", "nzstart", "mx", "my", "mz",
               "mapc", "mapr", "maps", "ispg", "nsymbt", "nversion", "nlabl"]
_FLOAT_FIELDS = ["dmin", "dmax", "dmean", "rms"]
_SMALL = st.integers(-3, 3) | st.sampled_from([0, 1, 2, 4, 6, 8, 12, 16, 101, 401, 630, 1024])
_INT32 = st.integers(-2**31, 2**31 - 1)


@st.composite
def _header_edit(draw):
    field = draw(st.sampled_from(_INT_FIELDS + _FLOAT_FIELDS + ["cella", "cellb", "origin",
                                                                 "map", "machst", "exttyp"]))
    if field in _INT_FIELDS:
        return field, draw(_SMALL | _INT32)
    if field in _FLOAT_FIELDS:
        return field, draw(st.floats(width=32))
    if field in ("cella", "cellb", "origin"):
        return field, tuple(draw(st.lists(st.floats(width=32), min_size=3, max_size=3)))
    if field == "machst":  # the byte order: mostly the two valid stamps
        stamp = draw(st.sampled_from([b"DA\x00\x00", b"\x11\x11\x00\x00"])
                     | st.binary(min_size=4, max_size=4))
        return field, np.frombuffer(stamp, np.uint8)
    return field, draw(st.binary(min_size=4, max_size=4))  # map ("MAP "), exttyp


@fuzz
@given(edits=st.lists(_header_edit(), min_size=1, max_size=3))
def test_mrc_header_fields(work, edits):
    raw = bytearray((work / "s.mrcs").read_bytes())
    header = np.frombuffer(bytes(raw[:HEADER_DTYPE.itemsize]), dtype=HEADER_DTYPE).copy()
    for field, value in edits:
        header[field] = value
    raw[:HEADER_DTYPE.itemsize] = header.tobytes()
    path = work / "h.mrcs"
    path.write_bytes(bytes(raw))
    stack = read_or_refuse(lambda: io.read_stack(path), path, label="read_stack")
    if stack is not None:
        _check_stack(stack)
    volume = read_or_refuse(lambda: io.read_mrc(path), path, label="read_mrc")
    if volume is not None:
        assert volume[0].dtype == np.float32


@fuzz
@given(data=st.data())
def test_stack_cut_or_extended(work, data):
    """Any cut of a valid stack is refused, and so is any tail appended to it."""
    raw = (work / "s.mrcs").read_bytes()
    cut = data.draw(st.integers(0, len(raw) - 1) | st.just(len(raw)), label="cut")
    tail = data.draw(st.binary(max_size=2 * D * D * 4) if cut == len(raw) else st.just(b""),
                     label="tail")
    assume(cut < len(raw) or tail)
    path = work / "cut.mrcs"
    path.write_bytes(raw[:cut] + tail)
    assert read_or_refuse(lambda: io.read_stack(path), path) is None


@fuzz
@given(lines=st.lists(st.text(max_size=12) | st.sampled_from(["s.mrcs", "h.mrcs", "# x"]),
                      max_size=4), raw=st.none() | st.binary(max_size=64))
def test_txt_stack_list(work, lines, raw):
    path = work / "l.txt"
    path.write_bytes(raw if raw is not None else "\n".join(lines).encode("utf-8", "replace"))
    stack = read_or_refuse(lambda: io.read_stack(path), path, work / "s.mrcs", work / "h.mrcs")
    if stack is not None:
        _check_stack(stack)


# ----------------------------------------------------------------------------- pickles

_DTYPES = (hnp.floating_dtypes() | hnp.integer_dtypes() | hnp.unsigned_integer_dtypes()
           | hnp.boolean_dtypes() | hnp.complex_number_dtypes() | hnp.unicode_string_dtypes()
           | hnp.byte_string_dtypes())
_NEAR_SHAPES = st.sampled_from([(N, 3, 3), (N, 2), (N, 9), (N,), (N, 3), (0, 3, 3), (0, 9),
                                (N + 1, 3, 3), (N, 3, 2), (), (N, 9, 1), (1, 0)])
_ARRAYS = hnp.arrays(_DTYPES, _NEAR_SHAPES | hnp.array_shapes(min_dims=0, max_dims=3,
                                                               max_side=4))
_FLOATS = hnp.arrays(np.float64, _NEAR_SHAPES,
                     elements=st.floats(allow_nan=True, allow_infinity=True)
                     | st.sampled_from([0.0, 1.0, -1.0, 1e39, -15000.0, 15000.0]))
_SPECIAL = st.sampled_from([0.0, -1.0, 1.5, -15000.0, 1e39, np.nan, np.inf])


@st.composite
def _near_valid(draw, kinds=("poses", "rot", "ctf", "z")):
    """Valid poses ``(rot, trans)``, rotations alone, a valid CTF or latents ``(N, 2)``, maybe
    with one entry replaced by a special value."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(kinds))
    parts = {"poses": [random_rotations(N, rng), rng.uniform(-0.1, 0.1, (N, 2))],
             "rot": [random_rotations(N, rng)], "ctf": [_ctf(N)],
             "z": [rng.normal(size=(N, 2))]}[kind]
    if draw(st.booleans()):
        a = parts[draw(st.integers(0, len(parts) - 1))]
        a[tuple(draw(st.integers(0, s - 1)) for s in a.shape)] = draw(_SPECIAL)
    return tuple(parts) if kind == "poses" else parts[0]


_LEAVES = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
           | st.binary(max_size=8) | st.complex_numbers() | _ARRAYS | _FLOATS | _near_valid())
_OBJECTS = st.recursive(
    _LEAVES,
    lambda inner: (st.lists(inner, max_size=3) | st.tuples(inner, inner) | st.tuples(inner)
                   | st.dictionaries(st.text(max_size=4), inner, max_size=3)
                   | st.frozensets(st.integers() | st.text(max_size=4), max_size=3)),
    max_leaves=6)


@fuzz
@given(obj=_near_valid() | _OBJECTS, second=_near_valid(("z",)) | _OBJECTS,
       protocol=st.integers(0, pickle.HIGHEST_PROTOCOL))
def test_pickles_as_poses_ctf_and_latents(work, obj, second, protocol):
    path = work / "x.pkl"
    path.write_bytes(pickle.dumps(obj, protocol) + pickle.dumps(second, protocol))
    poses = read_or_refuse(lambda: io.read_poses(path), path, label="read_poses")
    if poses is not None:
        rot, trans = poses
        assert rot.dtype == np.float32 and rot.ndim == 3 and rot.shape[1:] == (3, 3)
        assert trans is None or (trans.dtype == np.float32 and trans.shape == (len(rot), 2))
    ctf = read_or_refuse(lambda: io.read_ctf(path), path, label="read_ctf")
    if ctf is not None:
        assert ctf.dtype == np.float32 and ctf.shape[1:] == (9,) and np.isfinite(ctf).all()
        assert (ctf[:, 2:4] > 0).all()
    z = read_or_refuse(lambda: io.read_z(path), path, label="read_z")
    if z is not None:
        assert z[0].shape == z[1].shape and z[0].ndim == 2


@fuzz
@given(poses=_near_valid(("poses", "rot")) | _OBJECTS, ctf=_near_valid(("ctf",)) | _OBJECTS)
def test_pickles_through_the_dataset(work, poses, ctf):
    pp, cp = work / "poses.pkl", work / "ctf.pkl"
    pp.write_bytes(pickle.dumps(poses))
    cp.write_bytes(pickle.dumps(ctf))
    ds = read_or_refuse(lambda: ParticleDataset.from_files(work / "s.mrcs", poses=pp, ctf=cp,
                                                           norm=(0.0, 1.0)),
                        pp, cp, work / "s.mrcs")
    if ds is not None:
        batch = ds.get_batch(range(N))
        assert batch["rot"].shape == (N, 3, 3) and batch["ctf"].shape == (N, 9)


# ----------------------------------------------------------------------------- RELION .star

_KNOWN = ["rlnImageName", "rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi", "rlnOriginXAngst",
          "rlnOriginYAngst", "rlnOriginX", "rlnOriginY", "rlnDefocusU", "rlnDefocusV",
          "rlnDefocusAngle", "rlnPhaseShift", "rlnOpticsGroup", "rlnVoltage",
          "rlnSphericalAberration", "rlnAmplitudeContrast", "rlnImageSize", "rlnImagePixelSize",
          "rlnDetectorPixelSize", "rlnMagnification", "rlnOpticsGroupName"]
_STAR_TEXT = st.text("abcXYZ019_.@-", min_size=1, max_size=10)
_STAR_VALUE = (st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10, 2**40)
               | _STAR_TEXT | st.sampled_from(["1@s.mrcs", "5@s.mrcs", "0@s.mrcs", "s.mrcs",
                                               "1e30@s.mrcs", "1@nope.mrcs", "2@h.mrcs"]))
_STAR_NAMES = st.sampled_from(_KNOWN) | _STAR_TEXT.map(lambda s: "rln" + s.replace("@", "_"))


@st.composite
def _table_edit(draw, columns: list[str]):
    drop = draw(st.sets(st.sampled_from(columns), max_size=3))
    extra = draw(st.dictionaries(_STAR_NAMES, st.lists(_STAR_VALUE, min_size=1, max_size=1)
                                 | st.lists(_STAR_VALUE, min_size=N, max_size=N), max_size=2))
    return drop, extra


@fuzz
@given(data=st.data())
def test_star_tables_with_missing_or_extra_columns(work, data):
    """Columns dropped from and added to both tables (or no optics table), maybe cut short."""
    blocks = starfile.read(work / "p.star", always_dict=True)
    for name in list(blocks):
        table = blocks[name]
        drop, extra = data.draw(_table_edit(list(table.columns)), label=name)
        table = table.drop(columns=list(drop))
        for col, values in extra.items():
            table[col] = values * (len(table) // len(values)) if len(values) == 1 else \
                values[:len(table)] + values[:1] * (len(table) - len(values))
        blocks[name] = table
    if data.draw(st.booleans(), label="drop optics"):
        del blocks["optics"]
    path = work / "q.star"
    starfile.write(blocks, path)
    text = path.read_bytes()
    cut = data.draw(st.none() | st.integers(0, len(text)), label="cut")
    path.write_bytes(text[:cut])
    particles = read_or_refuse(lambda: io.read_star_particles(path), path,
                               label="read_star_particles")
    if particles is not None:
        n = len(particles)
        assert particles.rot.shape == (n, 3, 3) and particles.ctf.shape == (n, 9)
        assert particles.trans.shape == (n, 2) and particles.D % 2 == 0 and particles.apix > 0
    stack = read_or_refuse(lambda: io.read_stack(path), path, work / "s.mrcs", work / "h.mrcs",
                           label="read_stack")
    if stack is not None:
        _check_stack(stack)


# ----------------------------------------------------------------------------- truth .npz

_TRUTH_KEYS = st.sampled_from(["z_continuous", "z_class", "hinge_deg"]) | st.text(
    "abcdefghij_", min_size=1, max_size=8)
_TRUTH_SHAPES = st.sampled_from([(N,), (N, 2), (N + 1,), (), (N, 0), (0,), (1, N)])
_TRUTH_ARRAYS = hnp.arrays(
    hnp.floating_dtypes() | hnp.integer_dtypes() | hnp.boolean_dtypes()
    | hnp.complex_number_dtypes() | hnp.unicode_string_dtypes(), _TRUTH_SHAPES)


@fuzz
@given(arrays=st.dictionaries(_TRUTH_KEYS, _TRUTH_ARRAYS, max_size=3),
       cut=st.none() | st.integers(0, 400))
def test_truth_npz(work, arrays, cut):
    path = work / "truth.npz"
    np.savez(path, **arrays)
    if cut is not None:
        path.write_bytes(path.read_bytes()[:cut])
    ds = read_or_refuse(lambda: ParticleDataset.from_files(work / "s.mrcs", truth=path,
                                                           norm=(0.0, 1.0)), path)
    if ds is not None:
        for key, value in ds.truth.items():
            assert len(value) == N and np.isfinite(value).all()
            assert value.ndim == 1 or key not in ("z_continuous", "z_class")
            assert value.dtype.kind in "biuf"


# ----------------------------------------------------------------------------- MNIST


@st.composite
def _idx_bytes(draw):
    """An IDX file: a magic number, dimensions and data, often of the size they describe."""
    magic = draw(st.just(2051) | st.just(2049) | st.integers(0, 2**32 - 1))
    dims = draw(st.lists(st.integers(0, 5), min_size=3, max_size=3)
                | st.lists(st.integers(0, 2**32 - 1), max_size=4))
    size = int(np.prod(dims)) if dims and max(dims) <= 5 else 0
    data = draw(st.binary(min_size=size, max_size=size) | st.binary(max_size=200))
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + data


@fuzz
@given(raw=_idx_bytes(), packing=st.sampled_from(["plain", "gzip", "cut gzip"]))
def test_idx_files(work, raw, packing):
    import gzip

    packed = raw if packing == "plain" else gzip.compress(raw, mtime=0)
    path = work / "train-images-idx3-ubyte"
    path.write_bytes(packed[:len(packed) // 2] if packing == "cut gzip" else packed)
    images = read_or_refuse(lambda: read_idx(path, 2051), path, label="read_idx")
    if images is not None:
        assert images.dtype == np.uint8 and images.ndim == 3


@fuzz
@given(arrays=st.dictionaries(st.sampled_from(["x_train", "y_train", "x_test", "other"]),
                              hnp.arrays(hnp.floating_dtypes() | hnp.integer_dtypes()
                                         | hnp.boolean_dtypes() | hnp.unicode_string_dtypes(),
                                         st.sampled_from([(2, 28, 28), (2, 784), (2,), (3,),
                                                          (), (0, 28, 28), (2, 27, 28)])),
                              max_size=3))
def test_mnist_npz(work, arrays):
    path = work / "mnist.npz"
    valid = {"x_train": np.zeros((2, 28, 28), np.uint8), "y_train": np.array([3, 1])}
    np.savez(path, **{**valid, **arrays})
    data = read_or_refuse(lambda: load_mnist(path), path)
    if data is not None:
        assert data.images.shape[1:] == (28, 28) and data.images.dtype == np.float32
        assert len(data.labels) == len(data.images)
        assert ((data.images >= 0) & (data.images <= 1)).all()


# ----------------------------------------------------------------------------- checkpoints
_SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, max_side=4)
_TENSORS = (hnp.arrays(np.float32, _SHAPES, elements=st.floats(-2, 2, width=32) | st.just(np.nan))
            | hnp.arrays(np.int64, _SHAPES, elements=st.integers(-3, 3))).map(
    lambda a: __import__("torch").from_numpy(np.ascontiguousarray(a)))
_PLAIN = st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                      | st.text(max_size=6) | _TENSORS,
                      lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=5)
# An edit: a path of choices down the state's dicts, delete (True) or replace, the new value.
_EDITS = st.lists(st.tuples(st.lists(st.integers(0, 99), min_size=1, max_size=3), st.booleans(),
                            _PLAIN), min_size=1, max_size=3)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A one-epoch VAE on a tiny data set: its checkpoint's state and the training set."""
    import torch

    from ampcheck.checkpoints import CHECKPOINT
    from ampcheck.data.synthetic import SynthConfig, generate
    from ampcheck.train import budget_config, train

    d = tmp_path_factory.mktemp("ckpt")
    data = ParticleDataset.from_dir(generate(d / "data", SynthConfig.preset("tiny"),
                                             show_progress=False).out)
    train(budget_config("smoke", epochs=1), data, out=d, show_progress=False)
    return _Trained(torch.load(d / CHECKPOINT, weights_only=True), data, d)


class _Trained(tuple):
    """``(state, train_set, folder)``, shown briefly in hypothesis's reports."""

    def __new__(cls, *parts):
        return super().__new__(cls, parts)

    def __repr__(self) -> str:
        return "<a trained tiny VAE>"


def _damage(state: dict, edits) -> dict:
    """``state`` with each edit applied: the entry its path leads to (the first choice picks
    a top-level key, each next one a key of the dict found there) deleted or replaced."""
    import copy

    state = copy.deepcopy(state)
    for path, delete, value in edits:
        node = state
        for depth, choice in enumerate(path):
            keys = sorted(node, key=str)
            key = keys[choice % len(keys)]
            if depth + 1 < len(path) and isinstance(node[key], dict) and node[key]:
                node = node[key]
                continue
            if delete:
                del node[key]
            else:
                node[key] = value
            break
    return state


@fuzz
@given(edits=_EDITS, cut=st.none() | st.floats(0, 1))
def test_checkpoints(trained_run, edits, cut):
    import torch

    from ampcheck.train import TrainedModel

    state, train_set, d = trained_run
    path = d / "fuzzed.pt"
    torch.save(_damage(state, edits), path)
    if cut is not None:
        raw = path.read_bytes()
        path.write_bytes(raw[:int(cut * len(raw))])
    read_or_refuse(lambda: TrainedModel.load(path, train_set, device="cpu"), path,
                   label="checkpoint")


# ----------------------------------------------------------------------------- reports
_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                     | st.text(max_size=6),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


@fuzz
@given(data=st.data())
def test_reports(work, data):
    import json
    import shutil

    from faults import small_report

    from ampcheck.report import load_report, write_report

    out = work / "report"
    shutil.rmtree(out, ignore_errors=True)
    write_report(out, small_report("fuzz"), {}, {})
    report = json.loads((out / "report.json").read_text())
    what = data.draw(st.sampled_from(["json", "key", "arrays", "npz bytes"]))
    if what == "json":  # any JSON at all
        (out / "report.json").write_text(json.dumps(data.draw(_JSON)))
    elif what == "key":  # one top-level entry replaced
        report[data.draw(st.sampled_from(sorted(report)))] = data.draw(_JSON)
        (out / "report.json").write_text(json.dumps(report))
    elif what == "arrays":  # the list of array files replaced
        report["arrays"] = data.draw(st.dictionaries(
            st.sampled_from(["shift_invariance", "x", ""]), st.text(max_size=64), max_size=3))
        (out / "report.json").write_text(json.dumps(report))
    else:  # an array file cut, with the list removed (a report from before it existed)
        npz = out / "arrays" / "shift_invariance.npz"
        npz.write_bytes(npz.read_bytes()[:data.draw(st.integers(0, npz.stat().st_size))])
        del report["arrays"]
        (out / "report.json").write_text(json.dumps(report))
    files = [out / "report.json", *(out / "arrays").glob("*.npz"), out]
    read_or_refuse(lambda: load_report(out), *files, label=f"report ({what})")
