"""A seeded store (a recorded run over 300 embedded MNIST digits) and clients over it."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from datasetq import HeapqSampler, Recorder
from datasetq.datasets import EmbeddedMNIST
from datasetq.server.app import create_app
from datasetq.server.settings import Settings
from datasetq.training import MNISTSplit
from tests.store_fixtures import postgres_schema_url

N = 300
FLIPPED = list(range(0, N, 10))


def seed(url: str) -> None:
    labels = EmbeddedMNIST().targets.numpy()[:N].astype(np.int64)
    noisy = labels.copy()
    noisy[FLIPPED] = (noisy[FLIPPED] + 1) % 10
    dataset = MNISTSplit(np.arange(N), noisy)
    config = {"flipped": FLIPPED, "note": "<script>alert(1)</script>"}
    with Recorder(url, run="seeded <b>run</b>", dataset=dataset, config=config) as recorder:
        # Fixed evidence: 2 rejections in a row evict, however few labels are rejected (the
        # store needs evictions within 3 short epochs).
        sampler = HeapqSampler(
            dataset, recorder=recorder, seed=0, evidence=2, evidence_odds=None, chunk_size=20
        )
        rng = np.random.default_rng(0)
        for epoch in range(3):
            drawn = []
            for index in sampler:
                drawn.append(index)
                if len(drawn) == 20:
                    ids = np.array(drawn)
                    hard = np.isin(ids, FLIPPED)
                    losses = np.where(hard, 3.0, 0.3 / (epoch + 1)) + rng.random(len(ids)) / 10
                    preds = np.where(hard, noisy[ids] - 1, noisy[ids]) % 10
                    sampler.update(ids, {"loss": losses, "pred": preds})
                    drawn = []


def seeded_store(kind: str, folder):
    """Yields the URL of a freshly seeded store: a SQLite file, or a PostgreSQL schema."""
    if kind == "sqlite":
        url = f"sqlite:///{folder / 'seeded.db'}"
        seed(url)
        yield url
        return
    schema = postgres_schema_url()
    url = next(schema)
    seed(url)
    yield url
    schema.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def seeded_url(request, tmp_path_factory):
    yield from seeded_store(request.param, tmp_path_factory.mktemp("store"))


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request, tmp_path):
    """A seeded store of its own, for tests that write."""
    yield from seeded_store(request.param, tmp_path)


def query(url: str, sql: str, **params):
    """Rows of a read-only SQL query against the store at ``url``."""
    from sqlalchemy import text

    from datasetq.store.engine import create_store_engine

    engine = create_store_engine(url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(text(sql), params)]
    finally:
        engine.dispose()


def make_client(url: str, **settings) -> TestClient:
    return TestClient(create_app(Settings(db=url, **settings)))


@pytest.fixture(scope="module")
def client(seeded_url):
    with make_client(seeded_url) as test_client:
        yield test_client


@pytest.fixture
def writer(fresh_url):
    with make_client(fresh_url) as test_client:
        yield test_client
