"""Feature storage: the :class:`FeatureStore` protocol and its tiers."""

from graphsys.storage.base import FeatureStore, StoreBase, StoreStats, TierStats
from graphsys.storage.direct import DirectFileStore
from graphsys.storage.host_cache import HostCacheStore, default_host_budget, hotness_order
from graphsys.storage.memory import MmapStore, TensorStore, ZarrStore
from graphsys.storage.packed import PackedStore
from graphsys.storage.packing import PackIndex, pack_features, plan_segments, read_pack_index
from graphsys.storage.tiered import TieredStore

__all__ = ["DirectFileStore", "FeatureStore", "HostCacheStore", "MmapStore", "PackIndex",
           "PackedStore", "StoreBase", "StoreStats", "TensorStore", "TierStats",
           "TieredStore", "ZarrStore", "default_host_budget", "hotness_order",
           "pack_features", "plan_segments", "read_pack_index"]
