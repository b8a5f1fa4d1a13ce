"""Recording a training run into the store."""

from .live_labels import LiveLabels
from .recorder import Recorder
from .registry import DatasetDescription, describe_dataset
from .writer import DeliveryReport

__all__ = ["DatasetDescription", "DeliveryReport", "LiveLabels", "Recorder", "describe_dataset"]
