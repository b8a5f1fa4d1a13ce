"""The exceptions datasetq raises, under one root class."""

from __future__ import annotations

__all__ = [
    "AllSamplesEvictedError",
    "ConflictError",
    "DatasetqError",
    "InvalidRequestError",
    "NotFoundError",
    "StoreError",
]


class DatasetqError(Exception):
    """Root of every error datasetq raises on purpose."""


class AllSamplesEvictedError(DatasetqError, RuntimeError):
    """Raised when a sampler must draw but every sample has been evicted."""


class StoreError(DatasetqError):
    """The store cannot be used as asked (for example: its schema is behind)."""


class NotFoundError(StoreError, LookupError):
    """What was asked for is not in the store (a run, a sample, a review action)."""


class ConflictError(StoreError):
    """The store cannot do this in its current state (for example: undo an undone action)."""


class InvalidRequestError(StoreError, ValueError):
    """A value the store cannot use: a label outside the classes, a cursor it did not issue."""
