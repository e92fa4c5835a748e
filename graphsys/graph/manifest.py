"""The dataset manifest: what a dataset directory holds, and how to check it.

A dataset directory is ``manifest.json`` plus one file (or zarr directory) per array.
Raw arrays are headerless little-endian row-major files, so they can be memory-mapped
and read with direct I/O at aligned offsets; the manifest gives their dtype and shape.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from graphsys.errors import DatasetError

FORMAT_NAME = "graphsys.dataset"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
DIGEST_FIELD = "manifest_sha256"


def manifest_digest(data: dict[str, Any]) -> str:
    """SHA-256 of a manifest's fields (all but the digest), in canonical JSON."""
    fields = {k: v for k, v in data.items() if k != DIGEST_FIELD}
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()

#: Arrays every dataset has, by key.
REQUIRED_ARRAYS = ("indptr", "indices", "features", "labels", "train_idx", "val_idx", "test_idx")
SPLIT_ARRAYS = {"train": "train_idx", "val": "val_idx", "test": "test_idx"}

Storage = Literal["raw", "zarr"]


@dataclass(frozen=True)
class ArrayEntry:
    """One array of a dataset: where it lives, its dtype and shape, and its checksum."""

    path: str
    dtype: str
    shape: tuple[int, ...]
    sha256: str
    storage: Storage = "raw"
    chunks: tuple[int, ...] | None = None
    codec: str | None = None
    #: SHA-256 of a zarr array's metadata files, checked at open (cheap: a few hundred
    #: bytes); the chunks carry their own CRC-32C, checked as they are read.
    meta_sha256: str | None = None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        if self.chunks is None:
            del data["chunks"], data["codec"]
        else:
            data["chunks"] = list(self.chunks)
        if self.meta_sha256 is None:
            del data["meta_sha256"]
        return data

    @classmethod
    def from_json(cls, key: str, data: dict[str, Any], where: Path) -> ArrayEntry:
        try:
            entry = cls(
                path=str(data["path"]),
                dtype=np.dtype(data["dtype"]).name,
                shape=tuple(int(s) for s in data["shape"]),
                sha256=str(data["sha256"]),
                storage=data.get("storage", "raw"),
                chunks=tuple(data["chunks"]) if data.get("chunks") else None,
                codec=data.get("codec"),
                meta_sha256=None if data.get("meta_sha256") is None
                else str(data["meta_sha256"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"{where}: array {key!r} has a malformed entry ({exc}); "
                "the manifest is damaged, re-create the dataset with graphsys prepare"
            ) from exc
        if entry.storage not in ("raw", "zarr"):
            raise DatasetError(f"{where}: array {key!r} has unknown storage {entry.storage!r}")
        if Path(entry.path).is_absolute() or ".." in Path(entry.path).parts:
            raise DatasetError(f"{where}: array {key!r} points outside the dataset: {entry.path}")
        return entry


@dataclass(frozen=True)
class Manifest:
    """The parsed ``manifest.json`` of a dataset directory."""

    name: str
    num_nodes: int
    num_edges: int
    num_classes: int
    arrays: dict[str, ArrayEntry]
    splits: dict[str, int] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    created_by: str = ""
    format_version: int = FORMAT_VERSION

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return self.arrays["features"].shape

    @property
    def feature_dtype(self) -> str:
        return self.arrays["features"].dtype

    @property
    def feature_storage(self) -> Storage:
        return self.arrays["features"].storage

    def to_json(self) -> dict[str, Any]:
        features = self.arrays["features"]
        return {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "name": self.name,
            "num_nodes": self.num_nodes,
            "num_edges": self.num_edges,
            "num_classes": self.num_classes,
            "features": {
                "shape": list(features.shape),
                "dtype": features.dtype,
                "storage": features.storage,
            },
            "splits": dict(self.splits),
            "byte_order": "little",
            "arrays": {key: entry.to_json() for key, entry in self.arrays.items()},
            "source": self.source,
            "created_by": self.created_by,
        }

    def dumps(self) -> str:
        """The manifest as written: with ``manifest_sha256``, a digest of its own fields,
        so an edit (a dtype that keeps the byte size, a shape) is caught at open."""
        data = self.to_json()
        data[DIGEST_FIELD] = manifest_digest(data)
        return json.dumps(data, indent=2, sort_keys=False) + "\n"

    @classmethod
    def read(cls, root: str | os.PathLike) -> Manifest:
        """Read and check ``root/manifest.json`` against itself (not yet against the files)."""
        where = Path(root) / MANIFEST_NAME
        if not Path(root).is_dir():
            raise DatasetError(
                f"{root} is not a directory; point at a dataset made by graphsys prepare"
            )
        if not where.is_file():
            raise DatasetError(
                f"{where} is missing, so {root} is not a graphsys dataset (or its write was "
                "interrupted); create it with graphsys prepare"
            )
        try:
            data = json.loads(where.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DatasetError(
                f"{where} is not valid JSON ({exc}); the manifest is damaged, re-create "
                "the dataset with graphsys prepare"
            ) from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise DatasetError(f"{where} is not a graphsys dataset manifest")
        # Manifests written before the digest existed have none; any written since must
        # match it.
        if DIGEST_FIELD in data and data[DIGEST_FIELD] != manifest_digest(data):
            raise DatasetError(
                f"{where} was edited after it was written (its {DIGEST_FIELD} does not match "
                "its fields); the dataset cannot be trusted, re-create it with graphsys prepare"
            )
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise DatasetError(
                f"{where} has format version {version}, this graphsys reads version "
                f"{FORMAT_VERSION}; re-create the dataset with this version of graphsys prepare"
            )
        try:
            arrays = {
                key: ArrayEntry.from_json(key, value, where)
                for key, value in dict(data["arrays"]).items()
            }
            manifest = cls(
                name=str(data["name"]),
                num_nodes=int(data["num_nodes"]),
                num_edges=int(data["num_edges"]),
                num_classes=int(data["num_classes"]),
                arrays=arrays,
                splits={str(k): int(v) for k, v in dict(data.get("splits", {})).items()},
                source=dict(data.get("source", {})),
                created_by=str(data.get("created_by", "")),
                format_version=int(version),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"{where} lacks or garbles field {exc}; re-create the dataset with graphsys prepare"
            ) from exc
        manifest.check_consistent(where)
        return manifest

    def check_consistent(self, where: Path | str) -> None:
        """Check that the manifest's counts, shapes and splits agree with each other."""
        missing = [key for key in REQUIRED_ARRAYS if key not in self.arrays]
        if missing:
            raise DatasetError(f"{where}: arrays {missing} are missing from the manifest")
        n, e = self.num_nodes, self.num_edges
        expected = {
            "indptr": (n + 1,),
            "indices": (e,),
            "labels": (n,),
        }
        for key, shape in expected.items():
            if self.arrays[key].shape != shape:
                raise DatasetError(
                    f"{where}: array {key!r} has shape {self.arrays[key].shape} but "
                    f"num_nodes={n}, num_edges={e} require {shape}; the manifest disagrees "
                    "with itself, re-create the dataset"
                )
        features = self.arrays["features"]
        if len(features.shape) != 2 or features.shape[0] != n:
            raise DatasetError(
                f"{where}: features have shape {features.shape}, expected ({n}, dim)"
            )
        for split, key in SPLIT_ARRAYS.items():
            shape = self.arrays[key].shape
            if len(shape) != 1 or (split in self.splits and self.splits[split] != shape[0]):
                raise DatasetError(
                    f"{where}: split {split!r} has size {self.splits.get(split)} but "
                    f"array {key!r} has shape {shape}"
                )
        if self.arrays["indptr"].dtype != "int64":
            raise DatasetError(f"{where}: indptr must be int64, manifest says "
                               f"{self.arrays['indptr'].dtype}")
        if self.arrays["indices"].dtype not in ("int32", "int64"):
            raise DatasetError(f"{where}: indices must be int32 or int64")
