"""The README's code blocks run as written (with its placeholders filled in), and a folder of
the user's own PNG files recorded with its snippet shows its images in ``datasetq serve``."""

from __future__ import annotations

import io
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Subset
from torchvision import datasets, transforms

from datasetq import ManifestDataset
from datasetq.cli import main
from datasetq.datasets import EmbeddedMNIST
from datasetq.manifest import read_manifest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def tiny_model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))


def write_png_folder(root: Path, per_class: int = 6) -> None:
    """An ImageFolder of the first embedded digits, three classes, as PNG files."""
    mnist = EmbeddedMNIST()
    counts: dict[int, int] = {}
    for index in range(200):
        image, label = mnist[index]
        if label > 2 or counts.get(label, 0) >= per_class:
            continue
        counts[label] = counts.get(label, 0) + 1
        folder = root / f"class_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"digit_{index}.png")


def run_block(block: str, replacements: dict[str, str], namespace: dict[str, object]) -> None:
    for old, new in replacements.items():
        assert old in block, f"the README block no longer mentions {old!r}"
        block = block.replace(old, new)
    exec(compile(block, str(README), "exec"), namespace)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_the_sampler_block_trains_as_written():
    block = python_blocks()[0]
    digits = EmbeddedMNIST(transform=transforms.ToTensor())
    model = tiny_model()
    namespace: dict[str, object] = {
        "my_dataset": Subset(digits, range(256)),
        "model": model,
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "epochs": 2,
    }
    run_block(block, {}, namespace)
    sampler = namespace["sampler"]
    assert sampler.epoch == 1
    assert int(sampler.visits.sum()) == 2 * 256


def test_own_images_recorded_with_the_readme_show_in_serve_and_round_trip(tmp_path):
    images = tmp_path / "images"
    write_png_folder(images)
    url = f"sqlite:///{tmp_path / 'own.db'}"
    model = tiny_model()
    namespace: dict[str, object] = {
        "model": nn.Sequential(transforms.Grayscale(), model),
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "epochs": 2,
    }
    recording = python_blocks()[1]
    run_block(recording, {"path/to/images": str(images), "sqlite:///datasetq.db": url}, namespace)
    folder = datasets.ImageFolder(str(images), transform=transforms.ToTensor())

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "datasetq", "serve", "--db", url),
            *("--data-root", str(images), "--port", str(port)),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}/api/v1"
        for _ in range(100):
            try:
                runs = httpx.get(f"{base}/runs", timeout=2).json()
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail(f"datasetq serve did not answer: {(tmp_path / 'serve.log').read_text()}")
        (run,) = runs
        for sample_id in (0, len(folder) - 1):
            response = httpx.get(f"{base}/runs/{run['id']}/samples/{sample_id}/image", timeout=5)
            assert response.status_code == 200, response.text
            shown = np.asarray(Image.open(io.BytesIO(response.content)).convert("L"))
            path, _ = folder.samples[sample_id]
            with Image.open(path) as original:
                assert (shown == np.asarray(original.convert("L"))).all()
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.close()

    manifest = tmp_path / "manifest.csv"
    assert main(["export", "--db", url, "--run", "my-images", "-o", str(manifest)]) == 0
    clean = ManifestDataset(folder, manifest)
    _, rows = read_manifest(manifest)
    kept = [r for r in rows if r["keep"]]
    assert len(clean) == len(kept)
    for position, row in enumerate(kept):
        image, label = clean[position]
        direct_image, direct_label = folder[row["sample_id"]]
        assert torch.equal(image, direct_image)
        assert label == direct_label == row["label"]
        assert row["source"] == str(Path(folder.samples[row["sample_id"]][0]).relative_to(images))


def test_a_subset_run_round_trips_onto_the_subset_and_onto_its_dataset(tmp_path):
    from datasetq import HeapqSampler, Recorder, with_indices

    digits = EmbeddedMNIST(transform=transforms.ToTensor())
    subset = Subset(digits, list(range(1000, 1300)))
    url = f"sqlite:///{tmp_path / 'subset.db'}"
    with Recorder(url, run="subset", dataset=subset) as recorder:
        sampler = HeapqSampler(with_indices(subset), recorder=recorder, seed=0)
        ids = list(sampler)
        sampler.update(ids, {"loss": np.full(len(ids), 0.1)})
    manifest = tmp_path / "subset.jsonl"
    assert (
        main(["export", "--db", url, "--run", "subset", "--format", "jsonl", "-o", str(manifest)])
        == 0
    )
    on_subset = ManifestDataset(subset, manifest)
    on_digits = ManifestDataset(digits, manifest)
    assert len(on_subset) == len(on_digits) == 300
    for position in range(300):
        image, label = on_subset[position]
        assert torch.equal(image, subset[position][0])
        assert torch.equal(on_digits[position][0], digits[1000 + position][0])
        assert label == on_digits[position][1] == int(digits.targets[1000 + position])
    with pytest.raises(ValueError, match="Subset"):
        ManifestDataset(Subset(digits, list(range(300))), manifest)
