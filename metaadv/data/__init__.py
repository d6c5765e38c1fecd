"""Data: the embedded default (mnist5k), sklearn digits, and torchvision data sets."""

from .batches import BatchStream
from .registry import DATASETS, DatasetInfo, Splits, dataset_info, load_dataset, load_splits
from .splits import balanced_split

__all__ = ["DATASETS", "BatchStream", "DatasetInfo", "Splits", "balanced_split", "dataset_info", "load_dataset", "load_splits"]
