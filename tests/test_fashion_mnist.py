"""Fashion-MNIST from tiny IDX files written here (plain and gzip, in torchvision's raw layout, in
`DATA_DIR/fashion-mnist` and in a stand-in for Debian's system folder). No test downloads: the
system folders are replaced by an empty one, and torchvision's class by one that never reaches
the network."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

import datasets
from datasets import images
from datasets.images import FASHION_CLASSES, FASHION_FILES

N_TRAIN, N_TEST = 120, 40
DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    return magic.to_bytes(4, "big") + dims + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion(folder: Path, n_train: int = N_TRAIN, n_test: int = N_TEST, gz: bool = True, seed: int = 0):
    """The four IDX files of Fashion-MNIST, tiny: random 28x28 images whose class sets their
    brightness (so a model can learn it). Returns the raw (images, labels) of train and test."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        imgs = rng.integers(0, 128, (n, 28, 28), dtype=np.uint8) + (labels * 12)[:, None, None]
        for kind, array, magic in (("images-idx3", imgs, 0x803), ("labels-idx1", labels, 0x801)):
            data = idx_bytes(array, magic)
            name = f"{prefix}-{kind}-ubyte"
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (folder / name).write_bytes(data)
        out[prefix] = (imgs, labels)
    return out


@pytest.fixture(autouse=True)
def system_dir(tmp_path, monkeypatch):
    """An empty stand-in for /usr/share/datasets/fashion-mnist, and a torchvision that cannot download."""
    import torchvision

    system = tmp_path / "system" / "fashion-mnist"
    monkeypatch.setattr(images, "FASHION_SYSTEM_DIRS", (system,))

    def no_network(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", no_network)
    return system


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


def one_line_error(call, *args, **kwargs) -> str:
    with pytest.raises(datasets.DatasetError) as e:
        call(*args, **kwargs)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_fashion_mnist_is_listed_and_exported():
    assert "fashion_mnist" in datasets.IMAGE_DATASETS
    assert datasets.available is images.available and "available" in datasets.__all__


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_loads_shapes_dtypes_classes_and_split(data_dir, gz):
    write_fashion(data_dir / "FashionMNIST" / "raw", gz=gz)
    d = datasets.load_images("fashion_mnist", data_dir)
    assert d.shape == (1, 28, 28) and d.classes == FASHION_CLASSES and len(d.classes) == 10
    assert d.classes[0] == "T-shirt/top" and d.classes[9] == "Ankle boot"
    n_val = N_TRAIN // 12
    assert (len(d.train_x), len(d.val_x), len(d.test_x)) == (N_TRAIN - n_val, n_val, N_TEST)
    assert (len(d.train_y), len(d.val_y), len(d.test_y)) == (N_TRAIN - n_val, n_val, N_TEST)
    for x in (d.train_x, d.val_x, d.test_x):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
    for y in (d.train_y, d.val_y, d.test_y):
        assert y.dtype == torch.long and 0 <= y.min() and y.max() <= 9


def test_split_is_fixed_disjoint_and_keeps_every_image(data_dir):
    raw = write_fashion(data_dir / "FashionMNIST" / "raw")
    a = datasets.load_images("fashion_mnist", data_dir)
    b = datasets.load_images("fashion_mnist", data_dir)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    assert sorted(torch.cat([a.train_y, a.val_y]).tolist()) == sorted(raw["train"][1].tolist())
    assert torch.equal(a.test_y, torch.from_numpy(raw["t10k"][1].astype(np.int64)))  # test keeps its order
    train_rows = {tuple(r.tolist()) for r in a.train_x.flatten(1)}
    assert not any(tuple(r.tolist()) in train_rows for r in a.val_x.flatten(1))


def test_normalised_from_pixels_in_unit_range(data_dir):
    raw = write_fashion(data_dir / "FashionMNIST" / "raw", gz=False)
    d = datasets.load_images("fashion_mnist", data_dir)
    assert abs(d.train_x.mean().item()) < 1e-4 and abs(d.train_x.std().item() - 1) < 1e-3
    # the test images are the raw pixels / 255 through the train split's affine normalisation
    pixels = torch.from_numpy(raw["t10k"][0].astype(np.float32)).unsqueeze(1) / 255
    scale = (d.test_x.max() - d.test_x.min()) / (pixels.max() - pixels.min())
    assert torch.allclose(d.test_x, (pixels - pixels.min()) * scale + d.test_x.min(), atol=1e-4)
    # learnable: brightness grows with the class
    assert d.train_x[d.train_y == 9].mean() > d.train_x[d.train_y == 0].mean() + 1


def test_n_train_caps_the_training_images_only(data_dir):
    write_fashion(data_dir / "FashionMNIST" / "raw")
    d = datasets.load_images("fashion_mnist", data_dir, n_train=25)
    assert (len(d.train_x), len(d.train_y), len(d.val_x), len(d.test_x)) == (25, 25, N_TRAIN // 12, N_TEST)


def test_lookup_order_raw_then_fashion_mnist_folder_then_system(data_dir, system_dir):
    write_fashion(system_dir, n_train=48, n_test=12)
    assert len(datasets.load_images("fashion_mnist", data_dir).test_x) == 12  # DATA_DIR empty: system folder
    write_fashion(data_dir / "fashion-mnist", n_train=72, n_test=16, gz=False)
    assert len(datasets.load_images("fashion_mnist", data_dir).test_x) == 16  # DATA_DIR/fashion-mnist beats it
    raw = data_dir / "FashionMNIST" / "raw"
    write_fashion(raw)
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()  # an incomplete set is passed over
    assert len(datasets.load_images("fashion_mnist", data_dir).test_x) == 16
    write_fashion(raw)
    assert len(datasets.load_images("fashion_mnist", data_dir).test_x) == N_TEST  # torchvision's layout first


def test_plain_file_is_preferred_to_its_gz(data_dir):
    raw = data_dir / "FashionMNIST" / "raw"
    write_fashion(raw, gz=True)
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(b"torchvision keeps the archive, never read")
    write_fashion(raw, gz=False)
    assert len(datasets.load_images("fashion_mnist", data_dir).test_x) == N_TEST


@pytest.mark.parametrize(
    "damage", ["not gzip", "truncated gzip", "bad magic", "short data", "count mismatch", "bad label", "not 28x28"]
)
def test_corrupted_file_is_refused_naming_the_file(data_dir, damage):
    raw = data_dir / "FashionMNIST" / "raw"
    write_fashion(raw, gz=damage in ("not gzip", "truncated gzip"))
    suffix = ".gz" if damage in ("not gzip", "truncated gzip") else ""
    bad = raw / f"train-images-idx3-ubyte{suffix}"
    if damage == "not gzip":
        bad.write_bytes(b"not a gzip file")
    elif damage == "truncated gzip":
        bad.write_bytes(bad.read_bytes()[:500])
    elif damage == "bad magic":
        bad.write_bytes(b"\x00\x00\x08\x01" + bad.read_bytes()[4:])
    elif damage == "short data":
        bad.write_bytes(bad.read_bytes()[:-1])
    elif damage == "count mismatch":
        bad = raw / "train-labels-idx1-ubyte"
        bad.write_bytes(idx_bytes(np.zeros(N_TRAIN - 1, np.uint8), 0x801))
    elif damage == "bad label":
        bad = raw / "t10k-labels-idx1-ubyte"
        bad.write_bytes(idx_bytes(np.full(N_TEST, 10, np.uint8), 0x801))
    elif damage == "not 28x28":
        bad.write_bytes(idx_bytes(np.zeros((N_TRAIN, 32, 32), np.uint8), 0x803))
    for call in (datasets.prepare, datasets.load_images):
        msg = one_line_error(call, "fashion_mnist", data_dir)
        assert str(bad.resolve()) in msg and "delete" in msg
    assert not datasets.available("fashion_mnist", data_dir)


def test_corrupted_system_file_says_to_reinstall_the_package(data_dir, system_dir):
    write_fashion(system_dir)
    bad = system_dir / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    msg = one_line_error(datasets.load_images, "fashion_mnist", data_dir)
    assert str(bad) in msg and "apt-get install --reinstall dataset-fashion-mnist" in msg


def test_missing_everywhere_offline_says_where_to_put_it(data_dir, system_dir):
    for call, kwargs in ((datasets.prepare, {"download": False}), (datasets.load_images, {})):
        msg = one_line_error(call, "fashion_mnist", data_dir, **kwargs)
        assert str(data_dir.resolve() / "FashionMNIST" / "raw") in msg and str(system_dir) in msg
        assert "apt-get install dataset-fashion-mnist" in msg and "--dataset digits" in msg
    assert not data_dir.exists()


def test_failed_download_leaves_nothing_behind(tmp_path):
    data_dir = tmp_path / "new" / "data"
    msg = one_line_error(datasets.prepare, "fashion_mnist", data_dir)
    assert "could not be downloaded" in msg and "(OSError)" in msg
    assert not (tmp_path / "new").exists()


def test_failed_download_into_existing_folder_removes_only_its_own(data_dir):
    data_dir.mkdir()
    (data_dir / "keep").write_text("other data")
    one_line_error(datasets.prepare, "fashion_mnist", data_dir)
    assert sorted(p.name for p in data_dir.iterdir()) == ["keep"]


def test_download_goes_through_torchvision_into_its_raw_layout(data_dir, monkeypatch):
    import torchvision

    calls = []

    class FakeFashionMNIST:  # what torchvision leaves: the archives and the extracted files
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            raw = Path(root) / "FashionMNIST" / "raw"
            write_fashion(raw, gz=True)
            write_fashion(raw, gz=False)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeFashionMNIST)
    datasets.prepare("fashion_mnist", data_dir)
    assert calls == [(str(data_dir.resolve()), True, True), (str(data_dir.resolve()), False, True)]
    assert len(datasets.load_images("fashion_mnist", data_dir).test_x) == N_TEST


def test_files_found_are_never_downloaded(data_dir, system_dir, monkeypatch):
    import torchvision

    def must_not_download(*a, **k):
        raise AssertionError("downloaded although the files are there")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", must_not_download)
    write_fashion(system_dir)
    datasets.prepare("fashion_mnist", data_dir)  # download=True, yet the system folder is enough


def test_available(data_dir, system_dir, cifar_dir):
    assert datasets.available("digits", data_dir)  # ships with scikit-learn
    assert not datasets.available("fashion_mnist", data_dir)  # and does not try to download
    assert not data_dir.exists()
    write_fashion(system_dir)
    assert datasets.available("fashion_mnist", data_dir)
    assert datasets.available("cifar10", cifar_dir) and not datasets.available("cifar10", data_dir)
    assert not datasets.available("mnist", data_dir)


@pytest.mark.skipif(
    not all((DEBIAN / f"{f}.gz").is_file() for f in FASHION_FILES),
    reason="Debian's dataset-fashion-mnist is not installed",
)
def test_debian_package_loads_the_real_dataset(data_dir, monkeypatch):
    monkeypatch.setattr(images, "FASHION_SYSTEM_DIRS", (DEBIAN,))
    assert datasets.available("fashion_mnist", data_dir)
    d = datasets.load_images("fashion_mnist", data_dir)
    assert (len(d.train_x), len(d.val_x), len(d.test_x)) == (55_000, 5_000, 10_000)
    assert d.test_y.bincount().tolist() == [1000] * 10
