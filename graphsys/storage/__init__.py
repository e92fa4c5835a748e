"""Feature storage: the :class:`FeatureStore` protocol and its tiers."""

from graphsys.storage.base import FeatureStore, StoreBase, StoreStats, TierStats
from graphsys.storage.direct import DirectFileStore
from graphsys.storage.memory import MmapStore, TensorStore, ZarrStore

__all__ = ["DirectFileStore", "FeatureStore", "MmapStore", "StoreBase", "StoreStats",
           "TensorStore", "TierStats", "ZarrStore"]
