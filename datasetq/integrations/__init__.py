"""datasetq inside training frameworks: :mod:`datasetq.integrations.lightning` (PyTorch
Lightning) and :mod:`datasetq.integrations.transformers` (the Hugging Face ``Trainer``).

Each module imports its framework; ``import datasetq`` imports neither. Install them with the
extras ``datasetq[lightning]`` and ``datasetq[transformers]``.
"""

from __future__ import annotations

from ._common import per_sample_metrics

__all__ = ["per_sample_metrics"]
