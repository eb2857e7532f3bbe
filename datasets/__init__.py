"""Data of the studies, resident in device memory: images (CIFAR-10, Fashion-MNIST, scikit-learn
digits), generated palindromes, 2-D toy datasets (scikit-learn's moons, circles, ...), and word-level
Penn Treebank (`datasets.ptb`, token ids; imported where it is used). This is
the project's own `datasets`, not Hugging Face's: `studies` puts the project root first on
`sys.path`, in the driver and in Ray's workers."""

from datasets.images import (
    IMAGE_DATASETS,
    DatasetError,
    ImageData,
    augment,
    available,
    load_images,
)
from datasets.images import class_names as _image_class_names
from datasets.images import prepare as _prepare_images
from datasets.palindrome import palindromes
from datasets.toy import TOY_CLASSES, TOY_DATASETS, ToyData, toy

IS_STUDIES_DATASETS = True  # lets tests and the trainable tell this package from a namesake


def class_names(name: str) -> tuple[str, ...]:
    """The class names of dataset (or task) `name`, without loading it: the toy datasets' two
    classes '0' and '1' (task "toy"), else those of `datasets.images.class_names`."""
    return TOY_CLASSES if name == "toy" or name in TOY_DATASETS else _image_class_names(name)


def prepare(name: str, data_dir, download: bool = True) -> None:
    """Make dataset `name` loadable before Ray starts, downloading it where needed and allowed;
    DatasetError if it cannot be had. "ptb": Penn Treebank (datasets.ptb), else an image dataset."""
    if name == "ptb":
        from datasets import ptb

        return ptb.prepare(data_dir, download)
    return _prepare_images(name, data_dir, download)


__all__ = [
    "IMAGE_DATASETS",
    "TOY_CLASSES",
    "TOY_DATASETS",
    "DatasetError",
    "ImageData",
    "ToyData",
    "augment",
    "available",
    "class_names",
    "load_images",
    "palindromes",
    "prepare",
    "toy",
]
