"""datasetq in PyTorch Lightning: a ``Callback`` that puts a :class:`HeapqSampler` in the train
dataloader, feeds it each sample's loss, records the run, and keeps its state in checkpoints.

Example::

    >>> import lightning as L
    >>> from datasetq.integrations.lightning import DatasetqCallback, sample_outputs
    >>> datasetq = DatasetqCallback("sqlite:///datasetq.db", run="mnist", seed=0)
    >>> class Model(L.LightningModule):
    ...     def train_dataloader(self):
    ...         return datasetq.dataloader(train_set, batch_size=64)  # batches: (ids, batch)
    ...     def training_step(self, batch, batch_idx):
    ...         ids, (x, y) = batch
    ...         logits = self(x)
    ...         losses = F.cross_entropy(logits, y, reduction="none")
    ...         return sample_outputs(losses, logits, y)  # {"loss": mean, ...}
    >>> L.Trainer(max_epochs=3, callbacks=[datasetq]).fit(Model())

Under DDP the sampler yields each rank its share (Lightning does not wrap it in a
``DistributedSampler``), ``update`` all-gathers every rank's losses, and rank 0 records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from ..dataset import with_indices
from ..recorder import Recorder
from ..sampler import HeapqSampler
from ._common import (
    FrameworkShare,
    RecorderSpec,
    RunRecording,
    ending_status,
    per_sample_metrics,
)

__all__ = ["METRICS_KEY", "DatasetqCallback", "sample_outputs"]

METRICS_KEY = "datasetq_metrics"


def sample_outputs(
    losses: torch.Tensor, logits: torch.Tensor | None = None, targets: torch.Tensor | None = None
) -> dict[str, Any]:
    """What ``training_step`` returns for :class:`DatasetqCallback`: ``{"loss": losses.mean(),
    "datasetq_metrics": {...}}``, the metrics as :func:`per_sample_metrics` makes them."""
    metrics = per_sample_metrics(losses, logits, targets)
    return {"loss": losses.mean(), METRICS_KEY: metrics}


class DatasetqCallback(pl.Callback):  # type: ignore[misc]
    r"""Priority sampling, recording and checkpointing of a :class:`HeapqSampler` in Lightning.

    Call :meth:`dataloader` from ``train_dataloader()``: it wraps the dataset so batches are
    ``(ids, batch)`` (and labels follow the dashboard's relabels when recording), and installs
    the sampler. Return :func:`sample_outputs` from ``training_step``; the callback passes each
    batch's per-sample metrics to :meth:`HeapqSampler.update`. Dashboard decisions (relabel,
    drop, keep) apply at each epoch's start. The sampler's state is part of Lightning's
    checkpoints, so ``fit(ckpt_path=...)`` resumes with the same draws.

    Args:
        recorder (Recorder or str, optional): an open :class:`Recorder`, or a store URL for a
            recorder this callback opens and closes (rank 0 writes; other ranks record nothing).
        run (str, optional): the run's name, with a store URL.
        config (dict, optional): stored with the run, with a store URL.
        **sampler_options: passed to :class:`HeapqSampler` (``seed``, ``policy``, ...).
    """

    def __init__(
        self,
        recorder: RecorderSpec = None,
        run: str | None = None,
        config: Mapping[str, Any] | None = None,
        **sampler_options: Any,
    ) -> None:
        self._recording = RunRecording(recorder, run, config)
        self._options = sampler_options
        self.sampler: HeapqSampler | None = None
        self._pending_state: dict[str, Any] | None = None

    @property
    def recorder(self) -> Recorder | None:
        """The run's recorder (None before the dataloader is built, or when not recording)."""
        return self._recording.recorder

    @property
    def state_key(self) -> str:
        return "DatasetqCallback"

    # ------------------------------------------------------------------ the dataloader
    def dataloader(self, dataset: Sized, **loader_options: Any) -> DataLoader[Any]:
        """A train ``DataLoader`` over ``dataset`` with the datasetq sampler; batches are
        ``(ids, batch)``. Takes ``DataLoader``'s options except ``sampler`` and ``shuffle``."""
        for name in ("sampler", "batch_sampler", "shuffle"):
            if name in loader_options:
                raise ValueError(f"{name} should not be given: the datasetq sampler decides")
        if self.sampler is None:
            recorder = self._recording.open(dataset)
            served = recorder.wrap(dataset) if recorder is not None else dataset
            self._served = with_indices(served)
            self.sampler = HeapqSampler(self._served, recorder=recorder, **self._options)
            if self._pending_state is not None:
                self.sampler.load_state_dict(self._pending_state)
                self._pending_state = None
        return DataLoader(self._served, sampler=FrameworkShare(self.sampler), **loader_options)

    # ------------------------------------------------------------------ training hooks
    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if self.sampler is None:
            raise RuntimeError(
                "DatasetqCallback has no sampler: return callback.dataloader(dataset, ...) "
                "from train_dataloader()"
            )
        metrics = outputs.get(METRICS_KEY) if isinstance(outputs, Mapping) else None
        if metrics is None:
            raise ValueError(
                "training_step should return sample_outputs(losses, logits, targets) "
                f"(a dict with {METRICS_KEY!r}) for DatasetqCallback"
            )
        self.sampler.update(batch[0], metrics)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._recording.close("finished")

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self._recording.close(ending_status(exception))

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {} if self.sampler is None else {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("sampler")
        if state is None:
            return
        if self.sampler is None:
            self._pending_state = state  # applied when the dataloader builds the sampler
        else:
            self.sampler.load_state_dict(state)
