"""How the dashboard renders a dataset's samples: one typed spec per kind of dataset.

The recorder works a spec out of the dataset it is given (:func:`datasetq.recorder.registry.
describe_dataset`), the store keeps it as JSON with the dataset, and the server renders by it.
No spec names a file: a sample's file is its registered source, resolved under a data root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

__all__ = [
    "CallableRender",
    "EmbeddedMNISTRender",
    "ImageFolderRender",
    "NoRender",
    "RenderSpec",
    "TorchvisionRender",
    "render_from_json",
    "render_to_json",
]


@dataclass(frozen=True)
class EmbeddedMNISTRender:
    """datasetq's embedded MNIST digits (a sample's source is its index there)."""

    kind: Literal["embedded_mnist"] = "embedded_mnist"


@dataclass(frozen=True)
class ImageFolderRender:
    """A torchvision ``ImageFolder``: a sample's source is its path relative to ``root``."""

    root: str
    kind: Literal["image_folder"] = "image_folder"


@dataclass(frozen=True)
class TorchvisionRender:
    """A torchvision dataset class (``torchvision.datasets.*``) with its data under ``root``."""

    dataset_class: str  # "torchvision.datasets.mnist.MNIST"
    root: str
    train: bool | None = None
    split: str | None = None
    kind: Literal["torchvision"] = "torchvision"


@dataclass(frozen=True)
class CallableRender:
    """An importable function ``module:name`` of the sample id that returns a PIL image."""

    target: str
    kind: Literal["callable"] = "callable"


@dataclass(frozen=True)
class NoRender:
    """Samples without an image the server can make."""

    kind: Literal["none"] = "none"


RenderSpec: TypeAlias = (
    EmbeddedMNISTRender | ImageFolderRender | TorchvisionRender | CallableRender | NoRender
)


def render_to_json(spec: RenderSpec) -> dict[str, Any]:
    """The spec as the store keeps it (and as dataset fingerprints have always hashed it)."""
    if isinstance(spec, ImageFolderRender):
        return {"kind": spec.kind, "root": spec.root}
    if isinstance(spec, TorchvisionRender):
        stored: dict[str, Any] = {"kind": spec.kind, "class": spec.dataset_class, "root": spec.root}
        if spec.train is not None:
            stored["train"] = spec.train
        if spec.split is not None:
            stored["split"] = spec.split
        return stored
    if isinstance(spec, CallableRender):
        return {"kind": spec.kind, "target": spec.target}
    return {"kind": spec.kind}


def render_from_json(stored: Any) -> RenderSpec:
    """The spec a stored (or user-given) dict describes.

    Raises:
        ValueError: not a dict, an unknown ``kind``, or a field of the wrong type.
    """
    if not isinstance(stored, dict):
        raise ValueError(f"render should be a dict with a 'kind', but got {stored!r}")
    kind = stored.get("kind")
    try:
        if kind == "embedded_mnist":
            return EmbeddedMNISTRender()
        if kind == "image_folder":
            return ImageFolderRender(root=_text(stored, "root"))
        if kind == "torchvision":
            train, split = stored.get("train"), stored.get("split")
            if train is not None and not isinstance(train, bool):
                raise TypeError("train")
            if split is not None and not isinstance(split, str):
                raise TypeError("split")
            return TorchvisionRender(
                dataset_class=_text(stored, "class"),
                root=_text(stored, "root"),
                train=train,
                split=split,
            )
        if kind == "callable":
            return CallableRender(target=_text(stored, "target"))
        if kind in ("none", None):
            return NoRender()
    except (KeyError, TypeError) as error:
        raise ValueError(f"render of kind {kind!r} has a missing or bad {error}") from None
    raise ValueError(
        f"render kind should be one of embedded_mnist, image_folder, torchvision, callable, "
        f"none, but got {kind!r}"
    )


def _text(stored: dict[str, Any], key: str) -> str:
    value = stored[key]
    if not isinstance(value, str):
        raise TypeError(key)
    return value
