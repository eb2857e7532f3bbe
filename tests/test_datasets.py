import pickle

import pytest
import torch

import datasets
from datasets.images import augment
from datasets.palindrome import generator
from studies.engine.config import full_config
from studies.engine.tasks import load_images


def test_palindromes_target_is_first_digit_and_sequence_mirrors():
    x, y = datasets.palindromes(1000, 9, generator(0, 0))
    assert x.shape == (1000, 9) and y.shape == (1000,) and x.dtype == torch.float32
    assert torch.equal(y, x[:, 0].long())  # N = 10 digits: last equals first
    full = torch.cat([x, y[:, None].float()], 1)
    assert torch.equal(full, full.flip(1))
    assert set(y.tolist()) == set(range(10))


def test_palindromes_are_fixed_per_seed_and_stream():
    a = datasets.palindromes(64, 5, generator(3, 2))
    b = datasets.palindromes(64, 5, generator(3, 2))
    c = datasets.palindromes(64, 5, generator(3, 1))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])


def test_n_val_sizes_the_validation_set_and_n_eval_the_test_set():
    d = load_images(
        full_config({"task": "image", "dataset": "digits", "n_eval": 300, "n_val": 100}), torch.device("cpu")
    )
    assert (len(d.val[0]), len(d.test[0])) == (100, 300)
    whole = datasets.load_images("digits")
    assert torch.equal(d.val[0], whole.val_x[:100]) and torch.equal(d.test[0], whole.test_x[:300])  # the first n
    d = load_images(full_config({"task": "image", "dataset": "digits", "n_eval": 300}), torch.device("cpu"))
    assert (len(d.val[0]), len(d.test[0])) == (300, 300)  # n_val None: n_eval


def test_digits_split_is_fixed_and_disjoint():
    d = datasets.load_images("digits")
    assert d.shape == (1, 8, 8)
    assert (len(d.train_x), len(d.val_x), len(d.test_x)) == (1079, 359, 359)
    again = datasets.load_images("digits")
    assert torch.equal(d.test_x, again.test_x)
    rows = {tuple(r.tolist()) for r in d.train_x.flatten(1)}
    assert sum(tuple(r.tolist()) in rows for r in d.test_x.flatten(1)) < 20  # digits has a few duplicates
    assert abs(d.train_x.mean().item()) < 1e-4


def test_cifar_fixture_through_torchvision_loader(cifar_dir):
    d = datasets.load_images("cifar10", cifar_dir)
    assert d.shape == (3, 32, 32) and d.classes[1] == "automobile"
    assert (len(d.train_x), len(d.val_x), len(d.test_x)) == (90, 10, 40)
    assert d.train_y.dtype == torch.long and 0 <= d.train_y.min() and d.train_y.max() <= 9


def test_cifar_missing_offline_names_the_folder_and_the_offline_dataset(tmp_path, monkeypatch):
    import torchvision

    def no_network(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", no_network)
    with pytest.raises(datasets.DatasetError) as e:
        datasets.prepare("cifar10", tmp_path)
    msg = str(e.value)
    assert "cifar-10-batches-py" in msg and "--dataset digits" in msg and "\n" not in msg


def test_cifar_corrupted_file_is_refused(tmp_path):
    from tests.conftest import write_cifar

    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(datasets.DatasetError, match="data_batch_3 is corrupted"):
        datasets.prepare("cifar10", tmp_path)


def test_unknown_dataset_is_refused():
    with pytest.raises(datasets.DatasetError, match="unknown dataset 'mnist'"):
        datasets.prepare("mnist", ".")


def test_augment_flips_and_shifts_without_changing_content():
    x = torch.arange(4 * 3 * 8 * 8, dtype=torch.float32).view(4, 3, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = augment(x, g, pad=2)
    assert out.shape == x.shape
    for i in range(4):  # every output pixel is an input pixel of the same image, or padding
        vals = set(out[i].flatten().tolist()) - {0.0}
        assert vals <= set(x[i].flatten().tolist())
    assert not torch.equal(out, x)


def test_pickle_format_matches_torchvision(cifar_dir):
    with open(cifar_dir / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        b = pickle.load(f, encoding="latin1")
    assert b["data"].shape == (20, 3072)
