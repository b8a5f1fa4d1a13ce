"""datasetq in the Hugging Face ``Trainer``: a ``Trainer`` subclass whose train sampler is a
:class:`HeapqSampler`, fed each sample's loss, recorded, and kept in the Trainer's checkpoints.

Example::

    >>> from transformers import TrainingArguments
    >>> from datasetq.integrations.transformers import DatasetqTrainer
    >>> trainer = DatasetqTrainer(
    ...     model=model,  # an image classifier: forward(pixel_values, labels) -> logits
    ...     args=TrainingArguments("out", num_train_epochs=3, save_strategy="epoch"),
    ...     train_dataset=train_set,  # items {"pixel_values": x, "labels": y} or (x, y)
    ...     recorder="sqlite:///datasetq.db",
    ...     run="vit-mnist",
    ... )
    >>> trainer.train()  # trainer.train(resume_from_checkpoint=True) resumes its draws too

Under DDP (``torchrun``) every rank yields its own share (the Trainer's batch sharding is
turned off for this sampler), ``update`` all-gathers every rank's losses, and rank 0 records.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sized
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from ..recorder import Recorder
from ..sampler import HeapqSampler
from ._common import (
    FrameworkShare,
    RecorderSpec,
    RunRecording,
    ending_status,
    per_sample_metrics,
)

__all__ = ["ID_KEY", "SAMPLER_STATE_FILE", "DatasetqTrainer"]

ID_KEY = "datasetq_id"
SAMPLER_STATE_FILE = "datasetq_sampler.pt"


class _TrainItems(Dataset[dict[str, Any]]):
    """Each item as the Trainer's collator wants it, with its id and its current label."""

    def __init__(self, base: Sized, labels: Any) -> None:
        self.base = base
        self.labels = labels  # the recorder's live labels (relabels from the dashboard), or None

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.base[index]  # type: ignore[index]
        if isinstance(item, Mapping):
            row = dict(item)
        elif isinstance(item, tuple) and len(item) == 2:
            row = {"pixel_values": item[0], "labels": item[1]}
        else:
            raise ValueError(
                "train_dataset items should be dicts (with 'labels') or (input, label) pairs, "
                f"but item {index} is a {type(item).__name__}"
            )
        if self.labels is not None:
            row["labels"] = int(self.labels[index])
        row[ID_KEY] = index
        return row


class DatasetqTrainer(Trainer):  # type: ignore[misc]
    r"""A ``transformers.Trainer`` that trains with datasetq's priority sampling.

    Takes the ``Trainer``'s arguments, and:

    Args:
        recorder (Recorder or str, optional): an open :class:`Recorder`, or a store URL for a
            recorder the trainer opens (and closes when ``train`` ends).
        run (str, optional): the run's name, with a store URL.
        config (dict, optional): stored with the run, with a store URL.
        sampler_options (dict, optional): passed to :class:`HeapqSampler` (``seed``, ...).

    The loss is cross-entropy per sample over the model's ``logits`` (a classification
    model); its mean (or sum over ``num_items_in_batch`` under gradient accumulation) trains.
    Checkpoints hold the sampler's state (``datasetq_sampler.pt``); resuming restores it, and
    the Trainer's own skipping of already-seen batches is turned off (the sampler resumes where
    it stopped by itself).
    """

    def __init__(
        self,
        *args: Any,
        recorder: RecorderSpec = None,
        run: str | None = None,
        config: Mapping[str, Any] | None = None,
        sampler_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.train_dataset is None:
            raise ValueError("train_dataset should be given: datasetq samples from it")
        self._recording = RunRecording(recorder, run, config)
        self._sampler_options = dict(sampler_options or {})
        self._base_dataset: Sized = self.train_dataset  # type: ignore[assignment]
        self.sampler: HeapqSampler | None = None
        self.add_callback(_CloseRecorder(self))

    # ------------------------------------------------------------------ data
    def _ensure_sampler(self) -> HeapqSampler:
        if self.sampler is None:
            recorder = self._recording.open(self._base_dataset)
            labels = recorder.labels if recorder is not None else None
            self.train_dataset = _TrainItems(self._base_dataset, labels)
            self.sampler = HeapqSampler(
                self.train_dataset, recorder=recorder, **self._sampler_options
            )
        return self.sampler

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler[int]:
        return FrameworkShare(self._ensure_sampler())

    def get_train_dataloader(self) -> DataLoader[Any]:
        self._ensure_sampler()
        loader: DataLoader[Any] = super().get_train_dataloader()
        # The sampler already yields this rank's share: the batch sharding accelerate adds
        # under DDP would split it again (the Trainer does the same for its own rank-aware
        # sampler).
        batches = getattr(loader, "batch_sampler", None)
        if batches is not None and hasattr(batches, "num_processes"):
            batches.num_processes = 1
            batches.process_index = 0
        return loader

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        columns: list[str] | None = self._signature_columns
        if columns is not None and ID_KEY not in columns:
            columns.append(ID_KEY)

    # ------------------------------------------------------------------ the loss
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        ids = inputs.pop(ID_KEY, None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, Mapping) else outputs[0]
        losses = F.cross_entropy(logits, labels, reduction="none")
        if model.training and ids is not None and self.sampler is not None:
            self.sampler.update(ids, per_sample_metrics(losses, logits, labels))
        if num_items_in_batch is not None:
            loss = losses.sum() / num_items_in_batch
        else:
            loss = losses.mean()
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.sampler is None or not self.is_world_process_zero():
            return
        folder = os.path.join(
            self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}"
        )
        torch.save(self.sampler.state_dict(), os.path.join(folder, SAMPLER_STATE_FILE))

    def train(  # type: ignore[override]
        self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any
    ) -> Any:
        """``Trainer.train``; a resumed checkpoint restores the sampler's state too."""
        if resume_from_checkpoint:
            folder = resume_from_checkpoint
            if folder is True:
                folder = get_last_checkpoint(self.args.output_dir)  # type: ignore[no-untyped-call]
                if folder is None:
                    raise ValueError(f"no checkpoint found in {self.args.output_dir}")
            state_file = os.path.join(str(folder), SAMPLER_STATE_FILE)
            if not os.path.isfile(state_file):
                raise ValueError(
                    f"{folder} holds no {SAMPLER_STATE_FILE}: it was not saved by DatasetqTrainer"
                )
            sampler = self._ensure_sampler()
            sampler.load_state_dict(torch.load(state_file, weights_only=False))
            self.args.ignore_data_skip = True
            resume_from_checkpoint = str(folder)
        try:
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)
        except BaseException as error:
            self._recording.close(ending_status(error))
            raise

    @property
    def recorder(self) -> Recorder | None:
        """The run's recorder (None before training starts, or when not recording)."""
        return self._recording.recorder


class _CloseRecorder(TrainerCallback):  # type: ignore[misc]
    """Closes the recorder the trainer opened when training ends."""

    def __init__(self, trainer: DatasetqTrainer) -> None:
        self.trainer = trainer

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer._recording.close("finished")
