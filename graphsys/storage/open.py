"""Open a dataset's features as a FeatureStore of the kind asked."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from graphsys.errors import TrainingConfigError
from graphsys.storage.direct import DirectFileStore
from graphsys.storage.memory import MmapStore, TensorStore, ZarrStore

#: Stores a dataset's own feature files can be opened as (``packed`` and ``auto`` are
#: decided by the trainer, which knows the batches).
FILE_STORES = ("memory", "mmap", "direct", "zarr")


def feature_bytes(dataset: Any) -> int:
    """Size of the dataset's feature matrix in bytes."""
    return int(dataset.manifest.arrays["features"].nbytes)


def open_features(dataset: Any, kind: str, *, threads: int = 16,
                  read_buffer: int | None = None) -> Any:
    """The features of a graphsys ``Dataset`` as a store of ``kind`` (see FILE_STORES).

    ``memory`` loads every row into RAM; ``mmap`` maps the raw file; ``direct`` reads
    it with ``O_DIRECT`` through at most ``read_buffer`` bytes at once (default: the
    store's); ``zarr`` reads a zarr-stored dataset chunk by chunk.
    """
    entry = dataset.manifest.arrays["features"]
    if kind not in FILE_STORES:
        raise TrainingConfigError(f"storage {kind!r} is unknown; choose one of "
                                  f"{', '.join(FILE_STORES)}")
    if kind == "memory":
        features = dataset.features
        tensor = features.to_tensor() if hasattr(features, "to_tensor") else \
            torch.from_numpy(np.fromfile(dataset.root / entry.path, dtype=entry.dtype)
                             .reshape(entry.shape))
        return TensorStore(tensor)
    if kind == "zarr":
        if entry.storage != "zarr":
            raise TrainingConfigError(f"{dataset.root} stores features as a raw file; use "
                                      "--storage mmap, direct or packed (or re-prepare it "
                                      "with --storage zarr)")
        return ZarrStore(dataset.features)
    if entry.storage != "raw":
        raise TrainingConfigError(f"{dataset.root} stores features as zarr chunks; --storage "
                                  f"{kind} needs a raw file: use --storage zarr, or re-prepare "
                                  "the dataset with --storage raw")
    path, rows, dim = dataset.root / entry.path, entry.shape[0], entry.shape[1]
    if kind == "mmap":
        return MmapStore(path, rows, dim, entry.dtype)
    extra = {} if read_buffer is None else {"max_buffer": read_buffer}
    return DirectFileStore(path, rows, dim, entry.dtype, threads=threads, **extra)


def disk_source(dataset: Any, read_buffer: int | None = None) -> Any:
    """The dataset's features read from disk without the page cache where possible
    (``read_buffer``: see :func:`open_features`)."""
    kind = "zarr" if dataset.manifest.arrays["features"].storage == "zarr" else "direct"
    return open_features(dataset, kind, read_buffer=read_buffer if kind == "direct" else None)
