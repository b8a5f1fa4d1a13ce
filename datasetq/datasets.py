"""Datasets shipped inside the package, so demos and tests need no download."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets import MNIST

__all__ = ["EmbeddedMNIST", "embedded_mnist_dir"]

_IMAGES = "t10k-images-idx3-ubyte.gz"
_LABELS = "t10k-labels-idx1-ubyte.gz"


def embedded_mnist_dir() -> Path:
    """The folder holding the shipped MNIST test-set files."""
    return Path(str(resources.files("datasetq") / "data" / "mnist"))


class EmbeddedMNIST(MNIST):  # type: ignore[misc]
    r"""The MNIST test set (10,000 digits) shipped with datasetq, as a torchvision ``MNIST``.

    torchvision's ``MNIST(root, train=False)`` refuses to load unless the training files exist
    too; this subclass reads only the two shipped files and never downloads.

    Args:
        transform (callable, optional): applied to each PIL image.
        target_transform (callable, optional): applied to each label.

    Example::

        >>> dataset = EmbeddedMNIST(transform=transforms.ToTensor())
        >>> image, label = dataset[0]
    """

    def __init__(
        self,
        transform: Callable[..., Any] | None = None,
        target_transform: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(
            str(embedded_mnist_dir()),
            train=False,
            transform=transform,
            target_transform=target_transform,
        )

    def _check_legacy_exist(self) -> bool:
        return False

    def _check_exists(self) -> bool:
        folder = embedded_mnist_dir()
        return (folder / _IMAGES).is_file() and (folder / _LABELS).is_file()

    def _load_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        folder = embedded_mnist_dir()
        images = _read_idx(folder / _IMAGES, header=16).reshape(-1, 28, 28)
        labels = _read_idx(folder / _LABELS, header=8)
        if len(images) != len(labels):
            raise RuntimeError(
                f"shipped MNIST files disagree: {len(images)} images, {len(labels)} labels"
            )
        return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))

    def download(self) -> None:
        raise RuntimeError("EmbeddedMNIST ships its data and never downloads")

    @property
    def raw_folder(self) -> str:
        return str(embedded_mnist_dir())


def _read_idx(path: Path, header: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    return np.frombuffer(raw, dtype=np.uint8, offset=header)
