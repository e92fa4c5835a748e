"""Feature storage: the :class:`FeatureStore` protocol and its tiers."""

from graphsys._lazy import attach

# Public name -> defining module, imported on first use (see graphsys._lazy).
_NAMES = {
    "FeatureStore": "graphsys.storage.base",
    "StoreBase": "graphsys.storage.base",
    "StoreStats": "graphsys.storage.base",
    "TierStats": "graphsys.storage.base",
    "BeladyResult": "graphsys.storage.belady",
    "belady": "graphsys.storage.belady",
    "CODEC_NAMES": "graphsys.storage.codecs",
    "Codec": "graphsys.storage.codecs",
    "CacheCounters": "graphsys.storage.device_cache",
    "DeviceCache": "graphsys.storage.device_cache",
    "DirectFileStore": "graphsys.storage.direct",
    "FrozenLayerCache": "graphsys.storage.frozen",
    "write_frozen_cache": "graphsys.storage.frozen",
    "HostCacheStore": "graphsys.storage.host_cache",
    "default_host_budget": "graphsys.storage.host_cache",
    "hotness_order": "graphsys.storage.host_cache",
    "MmapStore": "graphsys.storage.memory",
    "TensorStore": "graphsys.storage.memory",
    "ZarrStore": "graphsys.storage.memory",
    "PackedStore": "graphsys.storage.packed",
    "PackIndex": "graphsys.storage.packing",
    "pack_features": "graphsys.storage.packing",
    "plan_segments": "graphsys.storage.packing",
    "read_pack_index": "graphsys.storage.packing",
    "EvictionPolicy": "graphsys.storage.policies",
    "POLICY_NAMES": "graphsys.storage.policies",
    "make_policy": "graphsys.storage.policies",
    "TieredStore": "graphsys.storage.tiered",
    "VictimBuffer": "graphsys.storage.victim",
}

__getattr__, __dir__ = attach(__name__, _NAMES)

__all__ = ["CODEC_NAMES", "POLICY_NAMES", "BeladyResult", "CacheCounters", "Codec",
           "DeviceCache", "DirectFileStore", "FrozenLayerCache", "write_frozen_cache",
           "EvictionPolicy", "FeatureStore", "HostCacheStore", "MmapStore", "PackIndex",
           "PackedStore", "StoreBase", "StoreStats", "TensorStore", "TierStats",
           "TieredStore", "VictimBuffer", "ZarrStore", "belady", "default_host_budget",
           "hotness_order", "make_policy",
           "pack_features", "plan_segments", "read_pack_index"]
