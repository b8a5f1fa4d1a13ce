"""The exceptions datasetq raises, under one root class."""

from __future__ import annotations

__all__ = ["AllSamplesEvictedError", "DatasetqError"]


class DatasetqError(Exception):
    """Root of every error datasetq raises on purpose."""


class AllSamplesEvictedError(DatasetqError, RuntimeError):
    """Raised when a sampler must draw but every sample has been evicted."""
