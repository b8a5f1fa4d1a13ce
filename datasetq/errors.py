"""The exceptions datasetq raises, under one root class."""

from __future__ import annotations

__all__ = ["AllSamplesEvictedError", "DatasetqError", "StoreError"]


class DatasetqError(Exception):
    """Root of every error datasetq raises on purpose."""


class AllSamplesEvictedError(DatasetqError, RuntimeError):
    """Raised when a sampler must draw but every sample has been evicted."""


class StoreError(DatasetqError):
    """The store cannot be used as asked (for example: its schema is behind)."""
