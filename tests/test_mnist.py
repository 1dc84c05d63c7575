"""ampcheck.data.mnist and ampcheck.models.mnist: file formats, the offline stand-in, the VAE."""

from __future__ import annotations

import gzip
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ampcheck.data.mnist import ENV_VAR, MnistData, MnistDataset, load_mnist
from ampcheck.errors import ConfigError, InputError
from ampcheck.models.mnist import MnistVAE


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    """Tests see the offline default unless they set the variable themselves."""
    monkeypatch.delenv(ENV_VAR, raising=False)


# ----------------------------------------------------------------------------- fake files


def _idx_bytes(arr: np.ndarray, magic: int | None = None) -> bytes:
    """The IDX format written out by hand: big-endian int32 magic and dims, then uint8 data."""
    arr = np.asarray(arr, dtype=np.uint8)
    magic = (2051 if arr.ndim == 3 else 2049) if magic is None else magic
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return head + arr.tobytes()


def _write(path, data: bytes, gz: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def _fake(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def _write_split(folder, prefix: str, n: int, seed: int, gz: bool):
    imgs, labels = _fake(n, seed)
    _write(folder / f"{prefix}-images-idx3-ubyte", _idx_bytes(imgs), gz)
    _write(folder / f"{prefix}-labels-idx1-ubyte", _idx_bytes(labels), gz)
    return imgs, labels


def _check(data: MnistData, imgs: np.ndarray, labels: np.ndarray) -> None:
    assert data.images.dtype == np.float32 and data.labels.dtype == np.int64
    assert data.images.shape == imgs.shape
    np.testing.assert_allclose(data.images, imgs / 255.0, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(data.labels, labels)
    assert 0 <= data.images.min() and data.images.max() <= 1


# ----------------------------------------------------------------------------- real formats


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_round_trip(tmp_path, gz):
    train = _write_split(tmp_path, "train", 7, 0, gz)
    test = _write_split(tmp_path, "t10k", 3, 1, gz)
    d = load_mnist(tmp_path)
    _check(d, *train)
    assert d.source.startswith("MNIST train (IDX, ") and str(tmp_path) in d.source
    _check(load_mnist(str(tmp_path), split="test"), *test)
    # the images file itself finds its labels next to it
    name = "train-images-idx3-ubyte" + ".gz" * gz
    _check(load_mnist(tmp_path / name), *train)


def test_torchvision_layout_and_env_var(tmp_path, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    train = _write_split(raw, "train", 5, 2, gz=True)
    test = _write_split(raw, "t10k", 4, 3, gz=False)
    _check(load_mnist(tmp_path), *train)
    _check(load_mnist(tmp_path, "test"), *test)
    _check(load_mnist(tmp_path / "MNIST", "test"), *test)  # <root>/MNIST: raw/ inside it
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    d = load_mnist(split="test")
    _check(d, *test)
    assert str(raw / "t10k-images-idx3-ubyte") in d.source
    monkeypatch.setenv(ENV_VAR, str(raw / "train-labels-idx1-ubyte.gz"))  # a file works too
    _check(load_mnist(), *train)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match=f"nowhere.*{ENV_VAR}"):
        load_mnist()


def test_npz_layout_and_limit(tmp_path):
    (xtr, ytr), (xte, yte) = _fake(6, 4), _fake(5, 5)
    np.savez(tmp_path / "mnist.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    _check(load_mnist(tmp_path / "mnist.npz"), xtr, ytr)
    d = load_mnist(tmp_path, "test")  # a folder holding mnist.npz
    _check(d, xte, yte)
    assert d.source.startswith("MNIST test (npz, ")
    d = load_mnist(tmp_path, "test", limit=2)
    _check(d, xte[:2], yte[:2])
    assert "first 2 of 5" in d.source
    _check(load_mnist(tmp_path, limit=100), xtr, ytr)  # more than there are: all of them


# ----------------------------------------------------------------------------- bad input


def _bad_magic(p):
    imgs, labels = _fake(3, 0)
    _write(p / "train-images-idx3-ubyte", _idx_bytes(imgs, magic=2049), False)
    _write(p / "train-labels-idx1-ubyte", _idx_bytes(labels), False)
    return "train-images-idx3-ubyte", "magic number 2049.*expected.*2051"


def _truncated(p):
    imgs, labels = _fake(3, 0)
    _write(p / "train-images-idx3-ubyte", _idx_bytes(imgs)[:-10], False)
    _write(p / "train-labels-idx1-ubyte", _idx_bytes(labels), False)
    return "train-images-idx3-ubyte", "truncated"


def _truncated_gz(p):
    imgs, labels = _fake(3, 0)
    _write(p / "t", _idx_bytes(imgs), True)
    (p / "train-images-idx3-ubyte.gz").write_bytes((p / "t.gz").read_bytes()[:-30])
    _write(p / "train-labels-idx1-ubyte", _idx_bytes(labels), True)
    return "train-images-idx3-ubyte.gz", "could not read"


def _short_header(p):
    _write(p / "train-images-idx3-ubyte", b"\x00\x00\x08", False)
    _write(p / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(3)), False)
    return "train-images-idx3-ubyte", "header"


def _count_mismatch(p):
    imgs, labels = _fake(3, 0)
    _write(p / "train-images-idx3-ubyte", _idx_bytes(imgs), False)
    _write(p / "train-labels-idx1-ubyte", _idx_bytes(labels[:2]), False)
    return "train-labels-idx1-ubyte", "3 images.*2 labels"


def _wrong_size(p):
    rng = np.random.default_rng(0)
    _write(p / "train-images-idx3-ubyte", _idx_bytes(rng.integers(0, 255, (3, 32, 32))), False)
    _write(p / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(3)), False)
    return "train-images-idx3-ubyte", "28 x 28"


def _missing_labels(p):
    imgs, _ = _fake(3, 0)
    _write(p / "train-images-idx3-ubyte", _idx_bytes(imgs), True)
    return "train-labels-idx1-ubyte", "no train-labels"


def _empty_folder(p):
    return str(p), "no MNIST train files"


def _npz_missing_keys(p):
    imgs, labels = _fake(3, 0)
    np.savez(p / "mnist.npz", x_train=imgs, y_test=labels)
    return "mnist.npz", "no y_train.*x_train, y_train, x_test, y_test"


def _npz_pickled(p):
    imgs, _ = _fake(3, 0)
    np.savez(p / "mnist.npz", x_train=imgs, y_train=np.array([1, "a", None], dtype=object))
    return "mnist.npz", "could not read"


def _npz_float_range(p):
    imgs, labels = _fake(3, 0)
    np.savez(p / "mnist.npz", x_train=imgs.astype(np.float32), y_train=labels)
    return "mnist.npz", r"\[0, 1\]"


def _not_npz(p):
    (p / "mnist.npz").write_bytes(b"not a zip file at all")
    return "mnist.npz", "could not read it as an .npz"


BAD = [_bad_magic, _truncated, _truncated_gz, _short_header, _count_mismatch, _wrong_size,
       _missing_labels, _empty_folder, _npz_missing_keys, _npz_pickled, _npz_float_range,
       _not_npz]


@pytest.mark.parametrize("make", BAD, ids=lambda f: f.__name__.strip("_"))
def test_bad_files_name_the_file(tmp_path, make):
    name, why = make(tmp_path)
    with pytest.raises(InputError, match=why) as e:
        load_mnist(tmp_path)
    assert name in str(e.value)


def test_bad_paths_and_options(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_mnist(tmp_path / "missing")
    (tmp_path / "digits.bin").write_bytes(b"\x00" * 16)
    with pytest.raises(InputError, match="digits.bin: not a recognised MNIST file"):
        load_mnist(tmp_path / "digits.bin")
    _write_split(tmp_path, "t10k", 2, 0, gz=False)
    with pytest.raises(ConfigError, match="test split but split='train'"):
        load_mnist(tmp_path / "t10k-images-idx3-ubyte")
    for kw in ({"split": "validation"}, {"limit": 0}, {"limit": 2.5}, {"limit": True}):
        with pytest.raises(ConfigError):
            load_mnist(**kw)


# ----------------------------------------------------------------------------- offline digits


def test_offline_digits_standin():
    from sklearn.datasets import load_digits

    tr, te = load_mnist(), load_mnist(split="test")
    assert (len(tr), len(te)) == (1438, 359)  # 80/20 of 1,797: every fifth image is test
    raw = load_digits()
    np.testing.assert_array_equal(te.labels, raw.target[4::5])
    np.testing.assert_array_equal(np.bincount(tr.labels) + np.bincount(te.labels),
                                  np.bincount(raw.target))
    for d in (tr, te):
        assert "digits" in d.source and "stand-in" in d.source
        assert d.images.shape == (len(d), 28, 28) and d.images.dtype == np.float32
        assert d.labels.dtype == np.int64 and set(d.labels.tolist()) == set(range(10))
        assert d.images.min() == 0 and 0.99 < d.images.max() <= 1
        # the 20 x 20 box sits in rows/columns 4..23; nothing outside it
        outside = d.images.copy()
        outside[:, 4:24, 4:24] = 0
        assert not outside.any()
        # ink's centre of mass near the frame's centre (13.5, 13.5), as MNIST's
        yy, xx = np.mgrid[:28, :28]
        mass = d.images.sum(axis=(1, 2))
        cy = (d.images * yy).sum(axis=(1, 2)) / mass
        cx = (d.images * xx).sum(axis=(1, 2)) / mass
        assert abs(cy.mean() - 13.5) < 2 and abs(cx.mean() - 13.5) < 2
        assert np.all(np.hypot(cy - 13.5, cx - 13.5) < 4)
    # linear zoom with aligned corners: the box's corners are the 8 x 8 image's corners / 16
    first = raw.images[0] / 16
    np.testing.assert_allclose(tr.images[0][[4, 4, 23, 23], [4, 23, 4, 23]],
                               first[[0, 0, 7, 7], [0, 7, 0, 7]], atol=1e-6)
    np.testing.assert_array_equal(load_mnist(limit=10).images, tr.images[:10])


# ----------------------------------------------------------------------------- dataset


def _dataset(n: int = 20, seed: int = 0) -> MnistDataset:
    imgs, labels = _fake(n, seed)
    return MnistDataset(imgs, labels, source="fake")


def test_dataset_batches_and_views():
    imgs, labels = _fake(20, 0)
    ds = MnistDataset.from_data(MnistData(imgs / np.float32(255), labels, "fake"))
    assert (len(ds), ds.n, ds.D, ds.source) == (20, 20, 28, "fake")
    b = ds.get_batch([3, 1, 3])
    assert set(b) == {"y", "index", "label"}
    assert b["y"].dtype == torch.float32 and b["y"].shape == (3, 28, 28)
    assert b["index"].dtype == torch.int64 and b["index"].tolist() == [3, 1, 3]
    assert b["label"].dtype == torch.int64 and b["label"].tolist() == labels[[3, 1, 3]].tolist()
    np.testing.assert_allclose(b["y"].numpy(), imgs[[3, 1, 3]] / 255.0, atol=1e-7)
    assert torch.equal(ds.preprocess(b["y"]), b["y"])
    sub = ds.subset([5, 2, 9])
    assert sub.n == 3 and sub.get_batch([0])["index"].tolist() == [5]
    np.testing.assert_array_equal(sub.images([2, 0]), ds.images([9, 5]))
    assert sub.images([0]).dtype == np.float32
    np.testing.assert_array_equal(sub.truth["z_class"], labels[[5, 2, 9]])
    item = sub[1]
    assert item["index"] == 2 and item["y"].shape == (28, 28)
    with pytest.raises(IndexError):
        sub.get_batch([3])
    loaded = MnistDataset.load(limit=30)
    assert loaded.n == 30 and "stand-in" in loaded.source


@given(n=st.integers(2, 200), frac=st.floats(0.01, 0.99), seed=st.integers(0, 2**32 - 1))
def test_split_disjoint_covering_seeded(n, frac, seed):
    ds = MnistDataset(np.zeros((n, 28, 28), np.float32), np.zeros(n, np.int64))
    k = round(frac * n)
    if not 0 < k < n:
        with pytest.raises(ConfigError):
            ds.split(frac, seed)
        return
    tr, ho = ds.split(frac, seed)
    a, b = tr.indices, ho.indices
    assert len(b) == k and not set(a) & set(b)
    np.testing.assert_array_equal(np.sort(np.concatenate([a, b])), np.arange(n))
    np.testing.assert_array_equal(ds.split(frac, seed)[1].indices, b)


def test_split_depends_on_seed_and_bad_data():
    ds = _dataset(100)
    assert not np.array_equal(ds.split(0.2, 0)[1].indices, ds.split(0.2, 1)[1].indices)
    np.testing.assert_array_equal(ds.split(0.2)[1].indices, ds.split(0.2, ds.seed)[1].indices)
    with pytest.raises(ConfigError):
        ds.split(1.0)
    with pytest.raises(InputError, match="expected \\(N, D, D\\)"):
        MnistDataset(np.zeros((3, 28, 27), np.float32))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        MnistDataset(np.full((3, 28, 28), np.nan, np.float32))
    with pytest.raises(InputError, match="labels"):
        MnistDataset(np.zeros((3, 28, 28), np.float32), np.zeros(2, np.int64))
    assert MnistDataset(np.zeros((3, 28, 28), np.float32)).truth == {}


# ----------------------------------------------------------------------------- the VAE


def _bernoulli_nll(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """-sum_pixels [t log p + (1 - t) log(1 - p)], p = sigmoid(logits), in float64 numpy."""
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    p = np.clip(p, 1e-12, 1 - 1e-12)
    t = target.astype(np.float64)
    return -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum(-1)


def test_vae_shapes_and_protocol():
    model = MnistVAE()
    assert model.zdim == 2 and model.kl_weight == 1.0
    ds = _dataset(5)
    prep = model.prepare(ds.get_batch(range(5)))
    assert set(prep) == {"x_enc", "target"}
    assert prep["x_enc"].shape == prep["target"].shape == (5, 784)
    assert torch.equal(prep["target"].reshape(5, 28, 28), ds.get_batch(range(5))["y"])
    mu, logvar = model.encode(prep["x_enc"])
    assert mu.shape == logvar.shape == (5, 2)
    assert model.decode(mu).shape == (5, 784)
    probs = model.decode_images(mu)
    assert probs.shape == (5, 28, 28) and 0 <= probs.min() and probs.max() <= 1
    assert model.recon_loss(prep, mu).shape == (5,)
    assert MnistVAE(zdim=5, hidden=16, image_size=8).encode(torch.zeros(3, 64))[0].shape == (3, 5)
    with pytest.raises(InputError, match="28 x 28"):
        model.prepare({"y": torch.zeros(2, 27, 27)})
    # seeded and independent of the global random state
    torch.manual_seed(123)
    a = MnistVAE(seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), MnistVAE(seed=1).parameters(),
                                                 strict=True))
    assert not torch.equal(a.mu_head.weight, MnistVAE(seed=2).mu_head.weight)


def test_recon_loss_matches_independent_bernoulli():
    torch.manual_seed(0)
    model = MnistVAE(zdim=3)
    with torch.no_grad():  # push some logits far out, where a naive log(sigmoid) would fail
        model.decoder[-1].bias.mul_(30)
    ds = MnistDataset.load(limit=8)
    prep = model.prepare(ds.get_batch(range(8)))
    z = torch.randn(8, 3)
    with torch.no_grad():
        got = model.recon_loss(prep, z).numpy()
        logits = model.decode(z).numpy()
    want = _bernoulli_nll(logits, prep["target"].numpy())
    np.testing.assert_allclose(got, want, rtol=1e-4)
    # also for binary targets, the usual binarised MNIST
    prep_bin = {"target": (prep["target"] > 0.5).float()}
    with torch.no_grad():
        got = model.recon_loss(prep_bin, z).numpy()
    np.testing.assert_allclose(got, _bernoulli_nll(logits, prep_bin["target"].numpy()),
                               rtol=1e-4)


def test_recon_loss_of_a_coin_is_784_log_2():
    model = MnistVAE()
    with torch.no_grad():
        model.decoder[-1].weight.zero_()
        model.decoder[-1].bias.zero_()  # logits 0: every pixel 0.5
    prep = model.prepare(MnistDataset.load(limit=4).get_batch(range(4)))
    loss = model.recon_loss(prep, torch.randn(4, 2))
    np.testing.assert_allclose(loss.detach().numpy(), 784 * math.log(2), rtol=1e-6)


def test_vae_parameter_count_and_bad_sizes():
    def linear(i, o):
        return i * o + o

    for zdim, hidden in ((2, 256), (8, 32)):
        encoder = linear(784, hidden) + 2 * linear(hidden, hidden) + 2 * linear(hidden, zdim)
        decoder = linear(zdim, hidden) + linear(hidden, hidden) + linear(hidden, 784)
        model = MnistVAE(zdim=zdim, hidden=hidden)
        assert sum(p.numel() for p in model.parameters()) == encoder + decoder
    assert sum(isinstance(m, torch.nn.Linear) for m in MnistVAE().encoder) == 3
    for kw in ({"zdim": 0}, {"hidden": -1}, {"zdim": 1.5}, {"hidden": "big"},
               {"image_size": 0}, {"zdim": True}):
        with pytest.raises(ConfigError):
            MnistVAE(**kw)


def test_vae_learns_a_little():
    """Plain gradient steps on the ELBO lower it: gradients reach every part."""
    torch.manual_seed(0)
    model = MnistVAE(hidden=64)
    prep = model.prepare(MnistDataset.load(limit=64).get_batch(range(64)))

    def elbo_loss():
        mu, logvar = model.encode(prep["x_enc"])
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        kl = 0.5 * (mu.square() + logvar.exp() - 1 - logvar).sum(-1)
        return (model.recon_loss(prep, z) + model.kl_weight * kl).mean()

    first = elbo_loss().item()
    for _ in range(30):  # plain SGD: importing torch.optim costs seconds
        model.zero_grad()
        elbo_loss().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        with torch.no_grad():
            for p in model.parameters():
                p -= 1e-2 * p.grad
    assert elbo_loss().item() < 0.7 * first
