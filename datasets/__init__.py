"""Data of the studies, resident in device memory: images (CIFAR-10, Fashion-MNIST, scikit-learn
digits) and generated palindromes. This is the project's own `datasets`, not Hugging Face's:
`studies` puts the project root first on `sys.path`, in the driver and in Ray's workers."""

from datasets.images import (
    IMAGE_DATASETS,
    DatasetError,
    ImageData,
    augment,
    available,
    class_names,
    load_images,
    prepare,
)
from datasets.palindrome import palindromes

IS_STUDIES_DATASETS = True  # lets tests and the trainable tell this package from a namesake

__all__ = [
    "IMAGE_DATASETS",
    "DatasetError",
    "ImageData",
    "augment",
    "available",
    "class_names",
    "load_images",
    "palindromes",
    "prepare",
]
