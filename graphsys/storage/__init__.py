"""Feature storage: the :class:`FeatureStore` protocol and its tiers."""

from graphsys.storage.base import FeatureStore, StoreBase, StoreStats, TierStats
from graphsys.storage.belady import BeladyResult, belady
from graphsys.storage.codecs import CODEC_NAMES, Codec
from graphsys.storage.device_cache import CacheCounters, DeviceCache
from graphsys.storage.direct import DirectFileStore
from graphsys.storage.frozen import FrozenLayerCache, write_frozen_cache
from graphsys.storage.host_cache import HostCacheStore, default_host_budget, hotness_order
from graphsys.storage.memory import MmapStore, TensorStore, ZarrStore
from graphsys.storage.packed import PackedStore
from graphsys.storage.packing import PackIndex, pack_features, plan_segments, read_pack_index
from graphsys.storage.policies import POLICY_NAMES, EvictionPolicy, make_policy
from graphsys.storage.tiered import TieredStore
from graphsys.storage.victim import VictimBuffer

__all__ = ["CODEC_NAMES", "POLICY_NAMES", "BeladyResult", "CacheCounters", "Codec",
           "DeviceCache", "DirectFileStore", "FrozenLayerCache", "write_frozen_cache",
           "EvictionPolicy", "FeatureStore", "HostCacheStore", "MmapStore", "PackIndex",
           "PackedStore", "StoreBase", "StoreStats", "TensorStore", "TierStats",
           "TieredStore", "VictimBuffer", "ZarrStore", "belady", "default_host_budget",
           "hotness_order", "make_policy",
           "pack_features", "plan_segments", "read_pack_index"]
