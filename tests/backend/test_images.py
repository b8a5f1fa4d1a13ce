"""Images: rendered from the registered dataset, cached with ETags; no client path reaches the disk."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision.datasets import ImageFolder

from datasetq import Recorder
from tests.backend.conftest import make_client

BASE = "/api/v1/runs/1/samples"


def test_png_with_etag_nosniff_and_thumbnail(client):
    response = client.get(f"{BASE}/0/image")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-content-type-options"] == "nosniff"
    image = Image.open(io.BytesIO(response.content))
    assert image.size == (28, 28)
    etag = response.headers["etag"]
    again = client.get(f"{BASE}/0/image", headers={"if-none-match": etag})
    assert again.status_code == 304
    assert again.content == b""
    thumb = client.get(f"{BASE}/0/image?size=14")
    assert Image.open(io.BytesIO(thumb.content)).size == (14, 14)
    assert thumb.headers["etag"] != etag


@pytest.mark.parametrize("size", ["-1", "2000", "abc", "1e9"])
def test_bad_sizes_are_422(client, size):
    assert client.get(f"{BASE}/0/image?size={size}").status_code == 422


SECRET = "TOP-SECRET-CONTENT-OUTSIDE-ROOT"

TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "..%252F..%252Fetc%252Fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..\\..\\..\\etc\\passwd",
    "..%5C..%5Cetc%5Cpasswd",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "//proc/self/root/etc/passwd",
    "%2F%2Fproc%2Fself%2Froot%2Fetc%2Fpasswd",
    "/proc/self/environ",
    "1%00.png",
    "1%00",
    "%00",
    "0/../../../../etc/passwd",
    "0%2F..%2F..%2Fsecret.txt",
    "....//....//etc/passwd",
    "..;/..;/etc/passwd",
    "%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
    "%uff0e%uff0e/etc/passwd",
    "file:///etc/passwd",
    "C:\\Windows\\win.ini",
    "\\\\server\\share\\x",
    "0x1",
    "1.0",
    "1e3",
    "~/secret.txt",
    "$HOME",
    "0;ls",
    "0|cat /etc/passwd",
    "%0d%0aX-Injected: 1",
    "0 ",
    "+1",
    "99999999999999999999999",
    "-0",
    "0?size=../../etc/passwd",
    "0/image/../../../etc/passwd",
    "..",
    ".",
    "%2e%2e",
    "symlink",
]


@pytest.fixture
def folder_run(tmp_path):
    """An ImageFolder dataset with a symlink that points outside its root."""
    root = tmp_path / "images"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / label / f"{i}.png")
    outside = tmp_path / "secret.txt"
    outside.write_text(SECRET)
    dataset = ImageFolder(root)
    url = f"sqlite:///{tmp_path / 'folder.db'}"
    with Recorder(url, run="folder", dataset=dataset):
        pass
    # After registration, one sample's file is swapped for a symlink out of the root.
    target = Path(dataset.samples[0][0])
    target.unlink()
    os.symlink(outside, target)
    return url, root


@pytest.mark.parametrize("payload", TRAVERSALS)
def test_traversal_payloads_never_read_outside(folder_run, payload):
    url, root = folder_run
    with make_client(url, data_roots=[root]) as client:
        for path in (
            f"{BASE}/{payload}/image",
            f"{BASE}/1/image?size={payload}",
            f"/api/v1/runs/{payload}/samples/1/image",
        ):
            response = client.get(path)
            assert response.status_code < 500, (path, response.status_code)
            if response.status_code < 400:
                # Lax number parsing ("1.0", "+1") may name a real sample, and a "?" may end
                # the path early: then it is that sample's own image, or its JSON detail.
                kind = response.headers["content-type"]
                assert kind in ("image/png", "application/json"), path
                if kind == "image/png":
                    assert max(Image.open(io.BytesIO(response.content)).size) <= 8
            assert SECRET.encode() not in response.content
            assert b"root:" not in response.content


def test_symlink_out_of_the_root_is_not_followed(folder_run):
    url, root = folder_run
    with make_client(url, data_roots=[root]) as client:
        assert client.get(f"{BASE}/0/image").status_code == 404
        assert client.get(f"{BASE}/1/image").status_code == 200  # a regular file inside


def test_a_dataset_outside_the_configured_roots_is_not_read(folder_run, tmp_path):
    url, _ = folder_run
    elsewhere = tmp_path / "other-root"
    elsewhere.mkdir()
    with make_client(url, data_roots=[elsewhere]) as client:
        response = client.get(f"{BASE}/1/image")
        assert response.status_code == 403
        assert "DATASETQ_DATA_ROOTS" in response.json()["detail"]
    assert len(TRAVERSALS) >= 40


def mnist_root(folder: Path, links_to: Path | None) -> Path:
    """A torchvision MNIST root (the embedded test digits); its raw files are symlinks into
    ``links_to`` when given, else regular files."""
    import gzip

    from datasetq.datasets import embedded_mnist_dir

    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"")  # must exist for MNIST(train=False); never read
    for packed in sorted(embedded_mnist_dir().glob("t10k-*.gz")):
        name = packed.name.removesuffix(".gz")
        data = gzip.decompress(packed.read_bytes())
        if links_to is None:
            (raw / name).write_bytes(data)
        else:
            links_to.mkdir(exist_ok=True)
            (links_to / name).write_bytes(data)
            os.symlink(links_to / name, raw / name)
    return folder


@pytest.mark.parametrize("linked", [False, True])
def test_a_torchvision_dataset_whose_files_link_out_of_the_root_is_not_read(tmp_path, linked):
    """torchvision opens the files itself and would follow a link out of the root."""
    from torchvision.datasets import MNIST

    root = mnist_root(tmp_path / "tv", tmp_path / "outside" if linked else None)
    url = f"sqlite:///{tmp_path / 'tv.db'}"
    with Recorder(url, run="tv", dataset=MNIST(str(root), train=False)):
        pass
    with make_client(url, data_roots=[root]) as client:
        response = client.get(f"{BASE}/0/image")
    if linked:
        assert response.status_code == 403
        assert "links to files outside" in response.json()["detail"]
    else:
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/png"


def test_a_file_that_is_not_an_image_is_a_404_that_says_so(folder_run):
    url, root = folder_run
    (root / "dog" / "0.png").write_bytes(b"this is not a PNG")  # sample 3: dog/0.png
    with make_client(url, data_roots=[root]) as client:
        broken = client.get(f"{BASE}/3/image")
        fine = client.get(f"{BASE}/4/image")
    assert broken.status_code == 404
    assert "could not be read as an image" in broken.json()["detail"]
    assert fine.status_code == 200
