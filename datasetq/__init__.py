"""datasetq: loss-based priority sampling that finds bad training samples while a model trains."""

from .dataloader import DataLoader
from .dataset import IndexedDataset, decorate_with_indices, with_indices
from .errors import AllSamplesEvictedError, DatasetqError, StoreError
from .manifest import ManifestDataset
from .recorder import Recorder
from .sampler import HeapqSampler, SamplerListener

__all__ = [
    "AllSamplesEvictedError",
    "DataLoader",
    "DatasetqError",
    "HeapqSampler",
    "IndexedDataset",
    "ManifestDataset",
    "Recorder",
    "SamplerListener",
    "StoreError",
    "decorate_with_indices",
    "with_indices",
]
__version__ = "0.2.0"
