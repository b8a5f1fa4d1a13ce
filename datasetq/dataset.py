"""Datasets that return their index with each item, as the sampler's feedback loop needs."""

from __future__ import annotations

from typing import Any, TypeVar

from torch.utils.data import Dataset

__all__ = ["IndexedDataset", "decorate_with_indices", "with_indices"]

T = TypeVar("T")


def decorate_with_indices(cls: type[T]) -> type[T]:
    r"""Returns a subclass of a dataset class whose ``__getitem__(i)`` returns ``(i, item)``.

    Args:
        cls (type): a map-style dataset class.

    Example::

        >>> MNIST = decorate_with_indices(torchvision.datasets.MNIST)
        >>> index, (image, target) = MNIST(root, train=True)[0]
    """
    if not isinstance(cls, type):
        raise ValueError(f"cls should be a dataset class, but got {cls!r}")
    parent_getitem = cls.__getitem__  # type: ignore[attr-defined,index]

    def __getitem__(self: Any, index: int) -> tuple[int, Any]:
        return index, parent_getitem(self, index)

    return type(cls.__name__, (cls,), {"__getitem__": __getitem__, "__doc__": cls.__doc__})


class IndexedDataset(Dataset[tuple[int, Any]]):
    r"""Wraps an existing dataset instance so ``dataset[i]`` returns ``(i, base[i])``.

    Args:
        base (Dataset): a map-style dataset with ``__len__``.

    Example::

        >>> dataset = IndexedDataset(torchvision.datasets.ImageFolder(root))
    """

    def __init__(self, base: Any) -> None:
        if not hasattr(base, "__getitem__") or not hasattr(base, "__len__"):
            raise ValueError("base should be a map-style dataset with __getitem__ and __len__")
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.base[index]

    def __getattr__(self, name: str) -> Any:
        # Reached only for attributes IndexedDataset lacks: expose the base's (targets, classes).
        # Never its protocol methods: a forwarded ``__getitems__`` (Subset has one) would let
        # the DataLoader fetch batches from the base, without their indices.
        if name == "base" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.base, name)


def with_indices(dataset: Any) -> IndexedDataset:
    """Wraps a dataset instance so it returns ``(index, item)``; see :class:`IndexedDataset`."""
    return IndexedDataset(dataset)
