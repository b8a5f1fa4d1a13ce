"""Describes a dataset for the store: labels, class names, and how to render each sample.

The web app renders images from this description; nothing of the dataset is copied into the
database but labels and a short source reference per sample.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from torch.utils.data import Subset

from ..render import (
    CallableRender,
    EmbeddedMNISTRender,
    ImageFolderRender,
    NoRender,
    RenderSpec,
    TorchvisionRender,
    render_from_json,
    render_to_json,
)

__all__ = ["DatasetDescription", "describe_dataset"]


@dataclass
class DatasetDescription:
    name: str
    num_samples: int
    labels: npt.NDArray[np.int64] | None
    class_names: list[str]
    render: RenderSpec
    sources: list[str] | None

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        digest.update(str(self.num_samples).encode())
        digest.update(json.dumps(render_to_json(self.render), sort_keys=True).encode())
        if self.labels is not None:
            digest.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        return digest.hexdigest()


# Classes named after their index when a dataset has no names; beyond this, ask for them.
MAX_CLASSES_WITHOUT_NAMES = 100_000


def describe_dataset(
    dataset: Any,
    *,
    name: str | None = None,
    labels: Any = None,
    class_names: list[str] | None = None,
    render: Callable[[int], Any] | dict[str, Any] | None = None,
) -> DatasetDescription:
    """Works out labels, classes and a render description from common dataset types.

    Understands torchvision datasets with ``root`` (MNIST and friends), ``ImageFolder``,
    datasetq's embedded MNIST and its splits, and ``Subset``/index wrappers around them.
    ``render`` may be an importable function ``f(sample_id) -> PIL.Image``.
    """
    base, positions = _unwrap(dataset)
    num_samples = len(dataset)
    spec, sources = _render_spec(base, positions)
    if render is not None:
        spec = render_from_json(render) if isinstance(render, dict) else _callable_spec(render)
    found_labels = labels if labels is not None else _labels(dataset, base, positions)
    label_array = None if found_labels is None else np.asarray(found_labels, dtype=np.int64)
    if label_array is not None and label_array.shape != (num_samples,):
        raise ValueError(
            f"labels should hold one label per sample ({num_samples}), but got {label_array.shape}"
        )
    classes = class_names if class_names is not None else list(getattr(base, "classes", []) or [])
    if not classes and label_array is not None and len(label_array):
        largest = int(label_array.max())
        if largest >= MAX_CLASSES_WITHOUT_NAMES:
            raise ValueError(
                f"labels go up to {largest}: pass class_names= (the classes, in label order) "
                f"instead of letting the recorder name {largest + 1:,} classes"
            )
        classes = [str(c) for c in range(largest + 1)]
    return DatasetDescription(
        name=name or f"{type(base).__name__}-{num_samples}",
        num_samples=num_samples,
        labels=label_array,
        class_names=[str(c) for c in classes],
        render=spec,
        sources=sources,
    )


def _unwrap(dataset: Any) -> tuple[Any, npt.NDArray[np.int64] | None]:
    """Follows index wrappers and subsets down to the underlying dataset."""
    positions: npt.NDArray[np.int64] | None = None
    current = dataset
    for _ in range(10):
        if isinstance(current, Subset):
            indices = np.asarray(current.indices, dtype=np.int64)
            positions = indices if positions is None else indices[positions]
            current = current.dataset
        elif hasattr(current, "base") and hasattr(current, "__getitem__"):
            current = current.base
        else:
            break
    source_ids = getattr(current, "source_ids", None)
    if source_ids is not None and type(current).__name__ == "MNISTSplit":
        source_ids = np.asarray(source_ids, dtype=np.int64)
        positions = source_ids if positions is None else source_ids[positions]
    return current, positions


def _render_spec(base: Any, positions: Any) -> tuple[RenderSpec, list[str] | None]:
    from torchvision.datasets import ImageFolder

    from ..datasets import EmbeddedMNIST

    if isinstance(base, EmbeddedMNIST) or type(base).__name__ == "MNISTSplit":
        return EmbeddedMNISTRender(), _index_sources(base, positions)
    if isinstance(base, ImageFolder):
        root = Path(base.root).resolve()
        paths = [Path(path).resolve() for path, _ in base.samples]
        relative = [str(p.relative_to(root)) for p in paths]
        if positions is not None:
            relative = [relative[i] for i in positions.tolist()]
        return ImageFolderRender(root=str(root)), relative
    data_root = getattr(base, "root", None)
    if data_root is not None and hasattr(base, "data"):
        train, split = getattr(base, "train", None), getattr(base, "split", None)
        spec = TorchvisionRender(
            dataset_class=f"{type(base).__module__}.{type(base).__qualname__}",
            root=str(Path(data_root).resolve()),
            train=bool(train) if train is not None else None,
            split=str(split) if split is not None else None,
        )
        return spec, _index_sources(base, positions)
    return NoRender(), None


def _index_sources(base: Any, positions: Any) -> list[str] | None:
    if positions is None:
        return None
    return np.asarray(positions).astype(str).tolist()  # type: ignore[no-any-return]


def _callable_spec(function: Callable[[int], Any]) -> RenderSpec:
    module, qualname = getattr(function, "__module__", None), getattr(function, "__qualname__", "")
    if not module or "<" in qualname:
        raise ValueError("render should be an importable module-level function f(sample_id)")
    return CallableRender(target=f"{module}:{qualname}")


def _labels(dataset: Any, base: Any, positions: Any) -> Any:
    for holder in (dataset, base):
        for attribute in ("labels", "targets"):
            values = getattr(holder, attribute, None)
            if values is not None and not callable(values):
                array = np.asarray(values, dtype=np.int64)
                if holder is base and positions is not None and len(array) != len(dataset):
                    if type(base).__name__ == "MNISTSplit":
                        break
                    array = array[positions]
                if len(array) == len(dataset):
                    return array
    return None
