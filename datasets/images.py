"""Image datasets held as tensors in device memory: batches are slices of a permutation.

- `cifar10`: torchvision's CIFAR-10 loader in `data_dir`, downloaded there when missing and the
  network allows; 45k train / 5k validation (fixed split) / 10k test.
- `digits`: scikit-learn's 8x8 handwritten digits (1797 images, ship with the package), the
  offline dataset of the quick budgets; 60/20/20 fixed split.
"""

from __future__ import annotations

import pickle
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

IMAGE_DATASETS = ("digits", "cifar10")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
SPLIT_SEED = 0  # the train/validation split is fixed, whatever the trial seed


class DatasetError(Exception):
    """A dataset that cannot be used, with a one-line message that says what to do."""


@dataclass
class ImageData:
    train_x: torch.Tensor  # (N, C, H, W) float, normalised per channel
    train_y: torch.Tensor  # (N,) long
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def to(self, device) -> ImageData:
        """Copy to `device`; to a GPU through pinned memory, without blocking."""
        pin = torch.device(device).type == "cuda"
        moved = {k: (getattr(self, k).pin_memory() if pin else getattr(self, k)).to(device, non_blocking=True)
                 for k in self.__dataclass_fields__ if k != "classes"}
        return ImageData(**moved, classes=self.classes)


def _split(x: torch.Tensor, y: torch.Tensor, n_val: int):
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    val, train = perm[:n_val], perm[n_val:]
    return x[train], y[train], x[val], y[val]


def _normalise(train_x: torch.Tensor, *others: torch.Tensor):
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train_x, *others)]


def _digits() -> ImageData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16  # (1797, 1, 8, 8)
    y = torch.tensor(d.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SPLIT_SEED))
    n_test = n_val = len(x) // 5
    test, rest = perm[:n_test], perm[n_test:]
    train_x, train_y, val_x, val_y = _split(x[rest], y[rest], n_val)
    train_x, val_x, test_x = _normalise(train_x, val_x, x[test])
    return ImageData(train_x, train_y, val_x, val_y, test_x, y[test], tuple(str(i) for i in range(10)))


def _cifar_dataset():
    import torchvision

    class CIFAR10(torchvision.datasets.CIFAR10):
        """torchvision's loader; the files' presence is checked here and their content by
        unpickling, so that any file in the python batch format loads (the tests write tiny ones)."""

        def _check_integrity(self) -> bool:
            return all((Path(self.root) / self.base_folder / f).is_file() for f in CIFAR_FILES)

        def _load_meta(self) -> None:
            self.classes = list(CIFAR_CLASSES)
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return CIFAR10


def _cifar_missing(data_dir: Path) -> str:
    return (f"CIFAR-10 is not in {data_dir / CIFAR_DIR} and could not be downloaded: put the python "
            f"version there (extract cifar-10-python.tar.gz into {data_dir}), or use --dataset digits, "
            "which ships with scikit-learn and needs no network")


def prepare(name: str, data_dir: str | Path, download: bool = True) -> None:
    """Make sure dataset `name` can be loaded, downloading it if needed; raise DatasetError if not.

    Runs in the driver before Ray starts, so that trials never download."""
    if name not in IMAGE_DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(IMAGE_DATASETS)}")
    if name != "cifar10":
        return
    data_dir = Path(data_dir).expanduser().resolve()
    folder = data_dir / CIFAR_DIR
    if not all((folder / f).is_file() for f in CIFAR_FILES):
        if not download:
            raise DatasetError(_cifar_missing(data_dir))
        import torchvision

        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)  # an unreachable network fails in seconds, not minutes
        created = next((a for a in [*reversed(data_dir.parents), data_dir] if not a.exists()), None)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            torchvision.datasets.CIFAR10(str(data_dir), train=True, download=True)
        except Exception as e:  # URLError, socket timeout, HTTP errors: all mean "no download"
            if created is not None:  # leave nothing behind
                shutil.rmtree(created, ignore_errors=True)
            raise DatasetError(f"{_cifar_missing(data_dir)} ({type(e).__name__})") from None
        finally:
            socket.setdefaulttimeout(old)
    for f in CIFAR_FILES:
        try:
            with open(folder / f, "rb") as fh:
                batch = pickle.load(fh, encoding="latin1")
            assert {"data", "labels"} <= set(batch)
        except Exception:
            raise DatasetError(f"CIFAR-10 file {folder / f} is corrupted: delete {folder} and run again "
                               "to download it, or copy an intact python-version CIFAR-10 there") from None


def _cifar10(data_dir: str | Path) -> ImageData:
    CIFAR10 = _cifar_dataset()
    root = str(Path(data_dir).expanduser().resolve())
    tr, te = CIFAR10(root, train=True), CIFAR10(root, train=False)

    def tensors(ds):
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float() / 255  # (N, 3, 32, 32)
        return x, torch.tensor(ds.targets, dtype=torch.long)

    x, y = tensors(tr)
    test_x, test_y = tensors(te)
    train_x, train_y, val_x, val_y = _split(x, y, n_val=len(x) // 10)
    train_x, val_x, test_x = _normalise(train_x, val_x, test_x)
    return ImageData(train_x, train_y, val_x, val_y, test_x, test_y, CIFAR_CLASSES)


def load_images(name: str, data_dir: str | Path = "data", n_train: int | None = None) -> ImageData:
    """Load dataset `name` as CPU tensors; `n_train` keeps the first n training images."""
    prepare(name, data_dir, download=False)
    data = _digits() if name == "digits" else _cifar10(data_dir)
    if n_train is not None:
        data.train_x, data.train_y = data.train_x[:n_train], data.train_y[:n_train]
    return data


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random horizontal flip and random translation by up to `pad` pixels per image, batched on
    the device with no host sync."""
    B, _, H, W = x.shape
    dev = x.device
    flip = torch.rand(B, generator=generator, device=dev) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, B, 1), generator=generator, device=dev)
    rows = dy + torch.arange(H, device=dev)  # (B, H)
    cols = dx + torch.arange(W, device=dev)  # (B, W)
    out = padded[torch.arange(B, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)
