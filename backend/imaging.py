"""Renders a sample's image from its registered dataset description.

No path from a client is ever used: the route passes a run and a sample id (integers); the
file, if any, comes from the dataset's registration and must resolve, symlinks followed,
inside one of the configured data roots.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from PIL import Image

from datasetq.datasets import EmbeddedMNIST
from datasetq.errors import NotFoundError
from datasetq.render import (
    CallableRender,
    EmbeddedMNISTRender,
    ImageFolderRender,
    RenderSpec,
    TorchvisionRender,
)

from .settings import Settings

MAX_SIDE = 1024


class ImageRenderer:
    """Renders PNGs and keeps the most recent ones in memory, with their ETags."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.roots = [Path(root).resolve() for root in settings.data_roots]
        self._cache: OrderedDict[tuple[int, int, int], tuple[bytes, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._datasets: dict[str, Any] = {}

    def png(
        self, dataset_id: int, render: RenderSpec, sample_id: int, source: str | None, size: int
    ) -> tuple[bytes, str]:
        key = (dataset_id, sample_id, size)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        try:
            image = self._image(render, sample_id, source)
        except (OSError, ValueError, IndexError) as error:  # PIL's UnidentifiedImageError too
            raise NotFoundError(
                f"No image for sample {sample_id}: its file could not be read as an image "
                f"({type(error).__name__})"
            ) from None
        if size:
            image.thumbnail((size, size))
        elif max(image.size) > MAX_SIDE:
            image.thumbnail((MAX_SIDE, MAX_SIDE))
        if image.mode not in ("L", "RGB", "RGBA"):
            image = image.convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        entry = (data, '"' + hashlib.sha1(data, usedforsecurity=False).hexdigest() + '"')
        with self._lock:
            self._cache[key] = entry
            while len(self._cache) > self.settings.image_cache_items:
                self._cache.popitem(last=False)
        return entry

    def _image(self, render: RenderSpec, sample_id: int, source: str | None) -> Image.Image:
        if isinstance(render, EmbeddedMNISTRender):
            mnist = self._dataset("embedded_mnist", EmbeddedMNIST)
            index = int(source) if source is not None else sample_id
            if not 0 <= index < len(mnist.data):
                raise NotFoundError(f"No image for sample {sample_id}")
            return Image.fromarray(mnist.data[index].numpy(), mode="L")
        if isinstance(render, ImageFolderRender):
            root = self._allowed_root(render.root)
            if source is None:
                raise NotFoundError(f"No image for sample {sample_id}")
            path = (root / source).resolve()
            if not path.is_relative_to(root) or not path.is_file():
                raise NotFoundError(f"No image for sample {sample_id}")
            with Image.open(path) as opened:
                opened.load()
                return opened.copy()
        if isinstance(render, TorchvisionRender):
            root = self._allowed_root(render.root)
            dataset = self._torchvision(render, root)
            index = int(source) if source is not None else sample_id
            image = dataset[index][0]
            if not isinstance(image, Image.Image):
                raise NotFoundError(f"No image for sample {sample_id}")
            return image
        if isinstance(render, CallableRender) and self.settings.render_callables:
            module, _, name = render.target.partition(":")
            function = importlib.import_module(module)
            for part in name.split("."):
                function = getattr(function, part)
            image = function(sample_id)  # type: ignore[operator]
            if isinstance(image, Image.Image):
                return image
        raise NotFoundError(f"No image for sample {sample_id}")

    def _allowed_root(self, root: str) -> Path:
        resolved = Path(root).resolve()
        if not self._inside_roots(resolved):
            raise HTTPException(
                status_code=403,
                detail="This dataset's folder is not under a configured data root "
                "(DATASETQ_DATA_ROOTS)",
            )
        return resolved

    def _dataset(self, key: str, factory: Any) -> Any:
        with self._lock:
            if key not in self._datasets:
                self._datasets[key] = factory()
            return self._datasets[key]

    def _torchvision(self, render: TorchvisionRender, root: Path) -> Any:
        module, _, name = render.dataset_class.rpartition(".")
        if not module.startswith("torchvision.datasets"):
            raise NotFoundError("Unsupported dataset class")
        cls = getattr(importlib.import_module(module), name)
        options: dict[str, Any] = {}
        if render.train is not None:
            options["train"] = render.train
        if render.split is not None:
            options["split"] = render.split

        def build() -> Any:
            # torchvision opens its files itself, following links: none may lead out.
            self._refuse_links_out(root)
            return cls(str(root), **options)

        return self._dataset(f"{render.dataset_class}:{root}:{options}", build)

    def _refuse_links_out(self, root: Path) -> None:
        for folder, folders, files in os.walk(root):
            for name in (*folders, *files):
                entry = Path(folder) / name
                if entry.is_symlink() and not self._inside_roots(entry.resolve()):
                    raise HTTPException(
                        status_code=403,
                        detail="This dataset's folder links to files outside the configured "
                        "data roots (DATASETQ_DATA_ROOTS); its images are not served",
                    )

    def _inside_roots(self, path: Path) -> bool:
        return any(path == allowed or path.is_relative_to(allowed) for allowed in self.roots)
