"""Recording a training run into the store."""

from .recorder import Recorder
from .registry import DatasetDescription, describe_dataset
from .writer import DeliveryReport

__all__ = ["DatasetDescription", "DeliveryReport", "Recorder", "describe_dataset"]
