"""What both integrations share: per-sample metrics from a batch's losses and logits, the
sampler seen by a framework as a ``DistributedSampler``, and the recorder's lifetime."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sized
from typing import Any

import torch
from torch.utils.data import DistributedSampler

from ..recorder import Recorder
from ..sampler import HeapqSampler
from ..training import margin_and_prediction

__all__ = ["FrameworkShare", "RecorderSpec", "RunRecording", "ending_status", "per_sample_metrics"]


def per_sample_metrics(
    losses: torch.Tensor, logits: torch.Tensor | None = None, targets: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """The metrics :meth:`HeapqSampler.update` takes, detached: ``loss`` per sample, and with
    ``logits`` and ``targets`` the AUM-style ``margin`` and the prediction ``pred``.

    Args:
        losses (Tensor): one loss per sample (``reduction="none"``), shape ``(batch,)``.
        logits (Tensor, optional): the model's outputs, shape ``(batch, classes)``.
        targets (Tensor, optional): the labels the losses were computed against.

    Raises:
        ValueError: ``losses`` is not one value per sample, or only one of ``logits`` and
            ``targets`` is given.
    """
    if not isinstance(losses, torch.Tensor) or losses.dim() != 1:
        shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(
            "losses should be a 1-D tensor of per-sample losses (reduction='none'), "
            f"but got {shape}"
        )
    metrics = {"loss": losses.detach()}
    if (logits is None) != (targets is None):
        raise ValueError("logits and targets should be given together (or neither)")
    if logits is not None and targets is not None:
        metrics.update(margin_and_prediction(logits.detach(), targets.detach()))
    return metrics


class FrameworkShare(DistributedSampler):  # type: ignore[type-arg]
    """A :class:`HeapqSampler` as a framework sees it: a ``DistributedSampler``, so Lightning
    and the Hugging Face ``Trainer`` leave it in place under DDP instead of wrapping it in their
    own (the sampler already yields this rank's share and keeps every rank's state the same).
    """

    def __init__(self, sampler: HeapqSampler) -> None:
        # DistributedSampler.__init__ is skipped on purpose: it would ask torch.distributed
        # for a world the HeapqSampler already knows.
        self.sampler = sampler
        self.num_replicas = sampler.num_replicas
        self.rank = sampler.rank
        self.epoch = max(sampler.epoch, 0)
        self.shuffle = False
        self.drop_last = False

    def __iter__(self) -> Iterator[int]:
        return iter(self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)


RecorderSpec = Recorder | str | None


class RunRecording:
    """The recorder an integration attaches: one the caller opened (and closes), or one opened
    here from a store URL when the dataset is known (and closed by :meth:`close`).

    Raises:
        ValueError: ``recorder`` is neither a Recorder, a store URL nor None, or a URL comes
            without ``run``.
    """

    def __init__(
        self, recorder: RecorderSpec, run: str | None, config: Mapping[str, Any] | None
    ) -> None:
        if not (recorder is None or isinstance(recorder, Recorder | str)):
            raise ValueError(
                "recorder should be a Recorder, a store URL or None, "
                f"but got {type(recorder).__name__}"
            )
        if isinstance(recorder, str) and not run:
            raise ValueError("run should name the run to record when recorder is a store URL")
        self._url = recorder if isinstance(recorder, str) else None
        self._run, self._config = run, config
        self.recorder = recorder if isinstance(recorder, Recorder) else None
        self._owned = False

    def open(self, dataset: Sized) -> Recorder | None:
        """The recorder, opened on ``dataset`` the first time when given as a URL."""
        if self._url is not None and self.recorder is None:
            self.recorder = Recorder(
                self._url, run=self._run or "", dataset=dataset, config=self._config
            ).open()
            self._owned = True
        return self.recorder

    def close(self, status: str) -> None:
        """Ends the run with ``status`` if this object opened its recorder."""
        if self._owned and self.recorder is not None:
            self.recorder.close(status)
        self._owned = False


def ending_status(error: BaseException) -> str:
    """The run's status when training stops on ``error``."""
    return "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
