"""Opening a dataset directory lazily: arrays are memory-mapped, nothing is read eagerly."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from graphsys.errors import ChecksumError, DatasetError
from graphsys.graph.csc import CSCGraph
from graphsys.graph.manifest import SPLIT_ARRAYS, ArrayEntry, Manifest
from graphsys.graph.zarr_io import metadata_checksum, missing_chunks, open_array

#: Arrays whose bytes are checked against the manifest's SHA-256 when first read: a
#: flipped byte there can keep every id and label in range (a wrong edge, label or split
#: member trains silently), so range checks cannot see it. One pass over the mapped
#: file, paid once per open. Feature values are left to ``graphsys verify``: they are
#: the largest array by far, and a flipped value is noise, not a crash or a wrong label.
CHECKED_AT_READ = ("indptr", "indices", "labels", "train_idx", "val_idx", "test_idx")


class ZarrFeatures:
    """Read-only row access to features stored as a chunked zarr array.

    Indexing with ids (a tensor, array or list) or a slice returns a torch tensor;
    only the chunks holding the asked rows are read and decompressed.
    """

    def __init__(self, path: Path, entry: ArrayEntry) -> None:
        self.path = path
        if entry.meta_sha256 is not None and metadata_checksum(path) != entry.meta_sha256:
            raise ChecksumError(
                f"{path}: its zarr metadata changed since the dataset was written (checksum "
                "mismatch); the dataset is damaged, re-create it with graphsys prepare")
        try:
            self._array = open_array(path)
        except Exception as exc:  # zarr raises JSON, type and validation errors alike
            raise DatasetError(
                f"{path}: the zarr metadata cannot be read ({type(exc).__name__}: {exc}); "
                "the dataset is damaged, re-create it with graphsys prepare") from None
        self.shape = tuple(self._array.shape)
        self.dtype = np.dtype(self._array.dtype)
        if self.shape != entry.shape or self.dtype.name != entry.dtype:
            raise DatasetError(
                f"{path} holds an array of shape {self.shape} and dtype {self.dtype.name}, "
                f"the manifest says {entry.shape} and {entry.dtype}; re-create the dataset"
            )
        missing = missing_chunks(path, self._array)
        if missing:
            raise DatasetError(
                f"{path} lacks {len(missing)} chunk file(s) (first: {missing[0]}); their rows "
                "would read as zeros: the dataset is damaged, re-create it with graphsys prepare"
            )

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(
        self, index: slice | torch.Tensor | np.ndarray | list[int] | int
    ) -> torch.Tensor:
        if isinstance(index, (slice, int)):
            return torch.from_numpy(np.ascontiguousarray(self._read(lambda: self._array[index])))
        ids = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
        ids = ids.astype(np.int64, copy=False)
        if ids.size == 0:
            return torch.from_numpy(np.empty((0, *self.shape[1:]), dtype=self.dtype))
        if ids.min() < 0 or ids.max() >= self.shape[0]:
            raise IndexError(f"feature row ids must be in [0, {self.shape[0]})")
        return torch.from_numpy(np.ascontiguousarray(
            self._read(lambda: self._array.get_orthogonal_selection((ids, slice(None))))))

    def _read(self, read: Callable[[], np.ndarray]) -> np.ndarray:
        try:
            return read()
        except (DatasetError, IndexError):
            raise
        except Exception as exc:  # a truncated or overwritten chunk fails to decompress
            raise DatasetError(f"{self.path}: a chunk cannot be decoded ({type(exc).__name__}: "
                               f"{exc}); the dataset is damaged, re-create it with graphsys "
                               "prepare") from None

    def to_tensor(self) -> torch.Tensor:
        """Decompress every row into memory."""
        return self[:]

    def __repr__(self) -> str:
        return f"ZarrFeatures(shape={self.shape}, dtype={self.dtype.name}, path={str(self.path)!r})"


def _memmap_tensor(root: Path, key: str, entry: ArrayEntry) -> torch.Tensor:
    """Map a raw array file as a tensor, after checking its size against the manifest."""
    path = root / entry.path
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing (array {key!r}); the dataset is incomplete, "
            "re-create it with graphsys prepare"
        )
    size = path.stat().st_size
    if size != entry.nbytes:
        state = "truncated" if size < entry.nbytes else "longer than expected"
        raise DatasetError(
            f"{path} is {state}: {size} bytes on disk, the manifest expects {entry.nbytes} "
            f"({entry.dtype} {entry.shape}); the dataset is damaged, re-create it with "
            "graphsys prepare"
        )
    dtype = np.dtype(entry.dtype).newbyteorder("<")
    if entry.nbytes == 0:
        return torch.from_numpy(np.zeros(entry.shape, dtype=dtype.newbyteorder("=")))
    # Copy-on-write mapping: tensors are writable for torch, the file is never modified.
    array = np.memmap(path, dtype=dtype, mode="c", shape=entry.shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.from_numpy(array)


class Dataset:
    """A node-classification dataset opened from a directory.

    Attributes are opened on first access and memory-mapped; ``load_dataset`` itself
    reads only the manifest and the sizes of the files.

    Example:
        >>> ds = graphsys.load_dataset("data/cora")                # doctest: +SKIP
        >>> ds.graph.num_nodes(), ds.features.shape, ds.num_classes
    """

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root = root
        self.manifest = manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def num_classes(self) -> int:
        return self.manifest.num_classes

    def array(self, key: str, *, checksum: bool = True) -> torch.Tensor:
        """Raw array ``key`` memory-mapped; those in :data:`CHECKED_AT_READ` are checked
        against their SHA-256 first unless ``checksum=False`` (a caller that just did)."""
        entry = self.manifest.arrays[key]
        tensor = _memmap_tensor(self.root, key, entry)
        if checksum and key in CHECKED_AT_READ and entry.nbytes:
            if hashlib.sha256(tensor.numpy()).hexdigest() != entry.sha256:
                raise ChecksumError(
                    f"{self.root / entry.path} (array {key!r}) fails its checksum: its bytes "
                    "changed since the dataset was written; the dataset is damaged, "
                    "re-create it with graphsys prepare")
        return tensor

    _tensor = array

    @cached_property
    def graph(self) -> CSCGraph:
        try:
            # Checksums, then one O(N + E) pass at load: a flipped byte must raise here,
            # not crash a kernel (validate still guards manifests with wrong checksums).
            return CSCGraph(self._tensor("indptr"), self._tensor("indices")).ensure_valid()
        except ValueError as exc:
            raise DatasetError(
                f"{self.root}: the graph arrays are inconsistent ({exc}); the dataset is "
                "damaged, run graphsys verify and re-create it"
            ) from exc

    @cached_property
    def features(self) -> torch.Tensor | ZarrFeatures:
        """A memory-mapped ``[num_nodes, dim]`` tensor, or :class:`ZarrFeatures`."""
        entry = self.manifest.arrays["features"]
        if entry.storage == "zarr":
            path = self.root / entry.path
            if not path.is_dir():
                raise DatasetError(f"{path} is missing; re-create the dataset")
            return ZarrFeatures(path, entry)
        return self._tensor("features")

    @cached_property
    def labels(self) -> torch.Tensor:
        """Class of every node (int64); ``-1`` marks an unlabelled node."""
        return self._tensor("labels")

    @cached_property
    def train_idx(self) -> torch.Tensor:
        return self._tensor("train_idx")

    @cached_property
    def val_idx(self) -> torch.Tensor:
        return self._tensor("val_idx")

    @cached_property
    def test_idx(self) -> torch.Tensor:
        return self._tensor("test_idx")

    # -- DGL's dataset surface: dataset[0] is the graph, with its data in ndata ----------
    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> CSCGraph:
        """The graph (``index`` 0), as DGL datasets return it: ``ndata['feat']`` is this
        dataset's memory-mapped :attr:`features` (or :class:`ZarrFeatures`: rows are read
        only when asked), ``ndata['label']`` its :attr:`labels`, and ``train_mask``/
        ``val_mask``/``test_mask`` boolean masks of its splits. Every call returns the same
        graph object (:attr:`graph`), so data a script adds to ``ndata`` stays.

        Example:
            >>> g = graphsys.load_dataset("data/cora")[0]            # doctest: +SKIP
            >>> g.ndata["feat"].shape, int(g.ndata["train_mask"].sum())
        """
        if isinstance(index, bool) or not isinstance(index, int) or index not in (0, -1):
            raise IndexError(f"a graphsys Dataset holds one graph: use dataset[0], got "
                             f"index {index!r}")
        graph = self.graph
        if not self.__dict__.get("_ndata_filled"):
            ndata = graph.ndata
            ndata.setdefault("feat", self.features)
            ndata.setdefault("label", self.labels)
            for split, key in SPLIT_ARRAYS.items():
                if key in self.manifest.arrays and f"{split}_mask" not in ndata:
                    mask = torch.zeros(graph.num_nodes(), dtype=torch.bool)
                    mask[getattr(self, key).long()] = True
                    ndata[f"{split}_mask"] = mask
            self.__dict__["_ndata_filled"] = True
        return graph

    def check_files(self) -> None:
        """Check every array file exists with the size the manifest expects (no reading),
        and lies inside the dataset directory once symlinks are resolved."""
        inside = self.root.resolve()
        for key, entry in self.manifest.arrays.items():
            real = (self.root / entry.path).resolve()
            if not real.is_relative_to(inside):
                raise DatasetError(f"{self.root / entry.path} (array {key!r}) resolves to "
                                   f"{real}, outside the dataset: a symlink leads out of it; "
                                   "copy the file into the dataset or re-create it")
            if entry.storage == "raw":
                _memmap_tensor(self.root, key, entry)
            elif not (self.root / entry.path).is_dir():
                raise DatasetError(f"{self.root / entry.path} is missing; re-create the dataset")

    def __repr__(self) -> str:
        m = self.manifest
        return (
            f"Dataset(name={m.name!r}, num_nodes={m.num_nodes}, num_edges={m.num_edges}, "
            f"features={m.feature_shape} {m.feature_dtype} ({m.feature_storage}), "
            f"num_classes={m.num_classes}, splits={m.splits})"
        )


def load_dataset(path: str | os.PathLike) -> Dataset:
    """Open the dataset directory at ``path`` lazily.

    Reads the manifest, checks it against itself and every array file's size, and
    returns a :class:`Dataset` whose arrays are memory-mapped on first access. Use
    :func:`graphsys.verify_dataset` to check the bytes against their checksums.

    Raises:
        DatasetError: the directory is not a dataset, or a file is missing, truncated,
            or disagrees with the manifest. The message names the file and the fix.
    """
    root = Path(path)
    manifest = Manifest.read(root)
    dataset = Dataset(root, manifest)
    dataset.check_files()
    return dataset
