"""Image datasets held as tensors in device memory: batches are slices of a permutation.

- `cifar10`: torchvision's CIFAR-10 loader in `data_dir`, downloaded there when missing and the
  network allows; 45k train / 5k validation (fixed split) / 10k test.
- `digits`: scikit-learn's 8x8 handwritten digits (1797 images, ship with the package), the
  offline dataset of the quick budgets; 60/20/20 fixed split.
- `fashion_mnist`: Zalando's Fashion-MNIST, 28x28 greyscale clothes in 10 classes; 55k train /
  5k validation (fixed split) / 10k test. The four IDX files (`train-images-idx3-ubyte`,
  `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`, each plain or
  `.gz`) are read here with numpy, from the first folder that holds all four of:
  `data_dir/FashionMNIST/raw` (torchvision's layout), `data_dir/fashion-mnist`, then
  `FASHION_SYSTEM_DIRS` (Debian's package `dataset-fashion-mnist`: /usr/share/datasets/fashion-mnist).
  When none does, `prepare` downloads them with torchvision into `data_dir/FashionMNIST/raw`.
  Debian's files are recompressed, so they never go through torchvision's MD5 checks.
"""

from __future__ import annotations

import gzip
import math
import pickle
import shutil
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE_DATASETS = ("digits", "cifar10", "fashion_mnist")
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_DIR = "cifar-10-batches-py"
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
FASHION_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)  # Debian's dataset-fashion-mnist
FASHION_PACKAGE = "dataset-fashion-mnist"
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801  # IDX magic: uint8 data, 3 dims / 1 dim
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
        moved = {
            k: (getattr(self, k).pin_memory() if pin else getattr(self, k)).to(device, non_blocking=True)
            for k in self.__dataclass_fields__
            if k != "classes"
        }
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


def _fashion_dirs(data_dir: Path) -> list[Path]:
    """The folders searched for Fashion-MNIST, in order."""
    return [data_dir / "FashionMNIST" / "raw", data_dir / "fashion-mnist", *map(Path, FASHION_SYSTEM_DIRS)]


def _fashion_paths(data_dir: str | Path) -> list[Path] | None:
    """The four IDX files of the first folder that holds them all (each plain, else `.gz`), or None."""
    data_dir = Path(data_dir).expanduser().resolve()
    for folder in _fashion_dirs(data_dir):
        paths = []
        for f in FASHION_FILES:
            path = next((p for p in (folder / f, folder / f"{f}.gz") if p.is_file()), None)
            if path is None:
                break
            paths.append(path)
        else:
            return paths
    return None


def _fashion_missing(data_dir: Path) -> str:
    raw = data_dir / "FashionMNIST" / "raw"
    *others, last = (str(d) for d in _fashion_dirs(data_dir)[1:])
    return (
        f"Fashion-MNIST is not in {', '.join([str(raw), *others])} or {last} and could not be downloaded: "
        f"install it offline with "
        f"`apt-get install {FASHION_PACKAGE}` (Debian/Ubuntu), or put the four IDX files "
        f"({', '.join(FASHION_FILES)}, plain or .gz) in {raw}, or use --dataset digits, "
        "which ships with scikit-learn and needs no network"
    )


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX file (plain or gzip) as a uint8 array of its dims; DatasetError if it is not one."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        ndim = magic & 0xFF
        if len(raw) < 4 + 4 * ndim:
            raise ValueError(f"{len(raw)} bytes, too short for an IDX header")
        found = int.from_bytes(raw[:4], "big")
        if found != magic:
            raise ValueError(f"magic number 0x{found:08x}, expected 0x{magic:08x}")
        dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        if len(data) != math.prod(dims):
            raise ValueError(f"{len(data)} data bytes for dims {dims}")
        return data.reshape(dims)
    except (OSError, EOFError, zlib.error, ValueError) as e:
        raise DatasetError(f"Fashion-MNIST file {path} is corrupted ({_one_line(e)}): {_fashion_fix(path)}") from None


def _one_line(e: Exception) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())


def _fashion_fix(path: Path) -> str:
    if any(path.parent == Path(d) for d in FASHION_SYSTEM_DIRS):
        return f"reinstall it with `apt-get install --reinstall {FASHION_PACKAGE}`"
    return f"delete {path.parent} and run again to download it, or copy intact IDX files there, or use --dataset digits"


def _fashion_arrays(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fashion-MNIST's train images, train labels, test images and test labels, checked."""
    paths = _fashion_paths(data_dir)
    if paths is None:
        raise DatasetError(_fashion_missing(Path(data_dir).expanduser().resolve()))
    arrays = [_read_idx(p, IDX_IMAGES if i % 2 == 0 else IDX_LABELS) for i, p in enumerate(paths)]
    for i in (0, 2):
        (images, labels), (ipath, lpath) = arrays[i : i + 2], paths[i : i + 2]
        if images.shape[1:] != (28, 28):
            problem = f"holds {images.shape[1]}x{images.shape[2]} images, not 28x28"
            raise DatasetError(f"Fashion-MNIST file {ipath} {problem}: {_fashion_fix(ipath)}")
        if len(images) != len(labels):
            problem = f"holds {len(labels)} labels for the {len(images)} images of {ipath.name}"
            raise DatasetError(f"Fashion-MNIST file {lpath} {problem}: {_fashion_fix(lpath)}")
        if len(labels) and labels.max() >= len(FASHION_CLASSES):
            problem = f"holds label {labels.max()}, not one of 0-{len(FASHION_CLASSES) - 1}"
            raise DatasetError(f"Fashion-MNIST file {lpath} {problem}: {_fashion_fix(lpath)}")
    return tuple(arrays)


def _prepare_fashion(data_dir: Path, download: bool) -> None:
    if _fashion_paths(data_dir) is None:
        if not download:
            raise DatasetError(_fashion_missing(data_dir))
        import torchvision

        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)  # an unreachable network fails in seconds, not minutes
        target = data_dir / "FashionMNIST"
        created = next((a for a in [*reversed(data_dir.parents), data_dir, target] if not a.exists()), None)
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            torchvision.datasets.FashionMNIST(str(data_dir), train=True, download=True)
            torchvision.datasets.FashionMNIST(str(data_dir), train=False, download=True)
        except Exception as e:  # URLError, socket timeout, HTTP errors, MD5 mismatch: all mean "no download"
            if created is not None:  # leave nothing behind
                shutil.rmtree(created, ignore_errors=True)
            raise DatasetError(f"{_fashion_missing(data_dir)} ({type(e).__name__})") from None
        finally:
            socket.setdefaulttimeout(old)
    _fashion_arrays(data_dir)  # the files are complete and well formed


def _fashion_mnist(data_dir: str | Path) -> ImageData:
    train_images, train_labels, test_images, test_labels = _fashion_arrays(data_dir)

    def tensors(images, labels):
        x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1).div_(255)  # (N, 1, 28, 28) in [0, 1]
        return x, torch.from_numpy(labels.astype(np.int64))

    x, y = tensors(train_images, train_labels)
    test_x, test_y = tensors(test_images, test_labels)
    train_x, train_y, val_x, val_y = _split(x, y, n_val=len(x) // 12)
    train_x, val_x, test_x = _normalise(train_x, val_x, test_x)
    return ImageData(train_x, train_y, val_x, val_y, test_x, test_y, FASHION_CLASSES)


def _cifar_missing(data_dir: Path) -> str:
    return (
        f"CIFAR-10 is not in {data_dir / CIFAR_DIR} and could not be downloaded: put the python "
        f"version there (extract cifar-10-python.tar.gz into {data_dir}), or use --dataset digits, "
        "which ships with scikit-learn and needs no network"
    )


def prepare(name: str, data_dir: str | Path, download: bool = True) -> None:
    """Make sure dataset `name` can be loaded, downloading it if needed; raise DatasetError if not.

    Runs in the driver before Ray starts, so that trials never download."""
    if name not in IMAGE_DATASETS:
        raise DatasetError(f"unknown dataset {name!r}: choose one of {', '.join(IMAGE_DATASETS)}")
    data_dir = Path(data_dir).expanduser().resolve()
    if name == "fashion_mnist":
        return _prepare_fashion(data_dir, download)
    if name != "cifar10":
        return
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
            raise DatasetError(
                f"CIFAR-10 file {folder / f} is corrupted: delete {folder} and run again "
                "to download it, or copy an intact python-version CIFAR-10 there"
            ) from None


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


def available(name: str, data_dir: str | Path = "data") -> bool:
    """Whether `load_images(name, data_dir)` would work now, without downloading; never raises."""
    if name == "digits":
        return True
    try:
        prepare(name, data_dir, download=False)
    except Exception:
        return False
    return True


def load_images(name: str, data_dir: str | Path = "data", n_train: int | None = None) -> ImageData:
    """Load dataset `name` as CPU tensors; `n_train` keeps the first n training images."""
    if name == "fashion_mnist":  # its loader checks the files as it reads them, once
        data = _fashion_mnist(data_dir)
    else:
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


def class_names(name: str) -> tuple[str, ...]:
    """The class names of dataset `name`, without loading it: digits and palindromes (whose target
    is a digit) '0'..'9', CIFAR-10's and Fashion-MNIST's own names."""
    if name in ("digits", "palindrome"):
        return tuple(str(i) for i in range(10))
    if name == "cifar10":
        return CIFAR_CLASSES
    if name == "fashion_mnist":
        return FASHION_CLASSES
    raise ValueError(f"unknown dataset {name!r}: one of {', '.join(IMAGE_DATASETS)} or palindrome")
