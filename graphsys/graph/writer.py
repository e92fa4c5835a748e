"""Writing a dataset directory atomically, in memory or streamed in chunks.

Readers and generators hand arrays (whole, or chunk by chunk) to a
:class:`DatasetWriter`; it hashes bytes as they pass, keeps everything under a
temporary name, and publishes the directory with its manifest only when every array
is complete. A killed process or a full disk leaves no dataset behind.

Example:
    >>> with DatasetWriter("out/toy", name="toy") as writer:        # doctest: +SKIP
    ...     writer.write_graph(graph)
    ...     writer.write_array("features", x)
    ...     writer.write_array("labels", y)
    ...     for key, ids in splits.items(): writer.write_array(key, ids)
    ...     writer.finish(num_classes=3)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from graphsys._atomic import atomic_directory, is_disk_full, no_space_error
from graphsys._version import __version__
from graphsys.errors import DatasetError
from graphsys.graph.checksum import checksum_path
from graphsys.graph.csc import CSCGraph
from graphsys.graph.manifest import REQUIRED_ARRAYS, ArrayEntry, Manifest, Storage

#: Default target size of one zarr chunk of feature rows.
DEFAULT_ZARR_CHUNK_BYTES = 1 << 20


def _little_endian(dtype: np.dtype) -> np.dtype:
    return np.dtype(dtype).newbyteorder("<")


class RawArraySink:
    """Appends rows of a fixed-shape array to a headerless file, hashing as it goes."""

    def __init__(self, path: Path, relpath: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        self.path = path
        self.relpath = relpath
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.rows_written = 0
        self._digest = hashlib.sha256()
        self._handle = open(path, "wb")  # noqa: SIM115 - closed in close()

    def append(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=_little_endian(self.dtype))
        if rows.shape[1:] != self.shape[1:]:
            raise ValueError(
                f"{self.relpath}: rows of shape {rows.shape[1:]} do not match {self.shape[1:]}"
            )
        if self.rows_written + rows.shape[0] > self.shape[0]:
            raise ValueError(f"{self.relpath}: more than {self.shape[0]} rows appended")
        view = memoryview(rows.reshape(-1)).cast("B")
        try:
            self._handle.write(view)
        except OSError as exc:
            if is_disk_full(exc):
                raise no_space_error(self.path, exc) from exc
            raise
        self._digest.update(view)
        self.rows_written += rows.shape[0]

    def close(self) -> ArrayEntry:
        if self.rows_written != self.shape[0]:
            raise DatasetError(
                f"{self.relpath}: {self.rows_written} of {self.shape[0]} rows were written"
            )
        try:
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            if is_disk_full(exc):
                raise no_space_error(self.path, exc) from exc
            raise
        finally:
            self._handle.close()
        return ArrayEntry(self.relpath, self.dtype.name, self.shape, self._digest.hexdigest())

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._handle.close()


class ZarrArraySink:
    """Appends rows to a chunked zarr array compressed with LZ4 (via Blosc).

    Rows are buffered until a whole chunk is ready so each chunk is written once.
    """

    def __init__(
        self, path: Path, relpath: str, dtype: np.dtype, shape: tuple[int, ...], chunk_rows: int
    ) -> None:
        from graphsys.graph.zarr_io import create_lz4_array

        self.path = path
        self.relpath = relpath
        self.dtype = np.dtype(dtype)
        self.shape = tuple(int(s) for s in shape)
        self.chunk_rows = max(1, int(chunk_rows))
        self.rows_written = 0
        self._array = create_lz4_array(path, self.shape, (self.chunk_rows, *self.shape[1:]),
                                       self.dtype)
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0

    def append(self, rows: np.ndarray) -> None:
        # Copy: callers may reuse one buffer for every chunk while rows wait here.
        rows = np.array(rows, dtype=self.dtype, copy=True)
        if rows.shape[1:] != self.shape[1:]:
            raise ValueError(
                f"{self.relpath}: rows of shape {rows.shape[1:]} do not match {self.shape[1:]}"
            )
        if self.rows_written + self._pending_rows + rows.shape[0] > self.shape[0]:
            raise ValueError(f"{self.relpath}: more than {self.shape[0]} rows appended")
        self._pending.append(rows)
        self._pending_rows += rows.shape[0]
        if self._pending_rows >= self.chunk_rows:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        block = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        usable = block.shape[0] if final else block.shape[0] // self.chunk_rows * self.chunk_rows
        start = self.rows_written
        try:
            self._array[start : start + usable] = block[:usable]
        except OSError as exc:
            if is_disk_full(exc):
                raise no_space_error(self.path, exc) from exc
            raise
        self.rows_written += usable
        rest = block[usable:]
        self._pending = [rest] if rest.shape[0] else []
        self._pending_rows = rest.shape[0]

    def close(self) -> ArrayEntry:
        from graphsys.graph.zarr_io import metadata_checksum

        if self._pending_rows:
            self._flush(final=True)
        if self.rows_written != self.shape[0]:
            raise DatasetError(
                f"{self.relpath}: {self.rows_written} of {self.shape[0]} rows were written"
            )
        return ArrayEntry(
            self.relpath,
            self.dtype.name,
            self.shape,
            checksum_path(self.path),
            storage="zarr",
            chunks=(self.chunk_rows, *self.shape[1:]),
            codec="blosc-lz4",
            meta_sha256=metadata_checksum(self.path),
        )

    def abort(self) -> None:
        self._pending = []


class DatasetWriter:
    """Builds a dataset directory under a temporary name; publishes it on :meth:`finish`.

    Args:
        path: where the dataset will appear. Must not exist unless ``overwrite``.
        name: the dataset's name, recorded in the manifest.
        source: free-form provenance (generator parameters, input files).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        name: str,
        overwrite: bool = False,
        source: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = name
        self.overwrite = overwrite
        self.source = dict(source or {})
        self._context: Any = None
        self.root: Path | None = None
        self._entries: dict[str, ArrayEntry] = {}
        self._open: dict[str, RawArraySink | ZarrArraySink] = {}
        self._memmaps: dict[str, tuple[np.memmap, str]] = {}
        self._finished = False

    # -- context ----------------------------------------------------------------------
    def __enter__(self) -> DatasetWriter:
        self._context = atomic_directory(self.path, overwrite=self.overwrite)
        self.root = self._context.__enter__()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool | None:
        if exc_type is None and not self._finished:
            error = DatasetError(
                f"DatasetWriter for {self.path} closed without finish(); nothing was written"
            )
            self._abort_sinks()
            self._context.__exit__(DatasetError, error, None)
            raise error
        if exc_type is not None:
            self._abort_sinks()
        return self._context.__exit__(exc_type, exc, tb)

    def _abort_sinks(self) -> None:
        for sink in self._open.values():
            sink.abort()
        self._open.clear()
        self._memmaps.clear()

    def _require_open(self) -> Path:
        if self.root is None:
            raise RuntimeError("use DatasetWriter as a context manager: with DatasetWriter(...)")
        return self.root

    def _claim(self, key: str) -> None:
        if key in self._entries or key in self._open or key in self._memmaps:
            raise ValueError(f"array {key!r} was already written")

    # -- arrays -----------------------------------------------------------------------
    def array_sink(
        self,
        key: str,
        dtype: np.dtype | str,
        shape: tuple[int, ...],
        *,
        storage: Storage = "raw",
        chunk_rows: int | None = None,
    ) -> RawArraySink | ZarrArraySink:
        """Open a sink to stream array ``key`` row-chunk by row-chunk; see :meth:`close_sink`."""
        root = self._require_open()
        self._claim(key)
        dtype = np.dtype(dtype)
        if storage == "raw":
            sink: RawArraySink | ZarrArraySink = RawArraySink(
                root / f"{key}.bin", f"{key}.bin", dtype, shape
            )
        elif storage == "zarr":
            if chunk_rows is None:
                row_bytes = max(1, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)
                chunk_rows = max(1, DEFAULT_ZARR_CHUNK_BYTES // row_bytes)
            sink = ZarrArraySink(root / f"{key}.zarr", f"{key}.zarr", dtype, shape, chunk_rows)
        else:
            raise ValueError(f"storage must be 'raw' or 'zarr', got {storage!r}")
        self._open[key] = sink
        return sink

    def close_sink(self, key: str) -> None:
        self._entries[key] = self._open.pop(key).close()

    def write_array(
        self, key: str, array: np.ndarray, *, storage: Storage = "raw",
        chunk_rows: int | None = None,
    ) -> None:
        """Write a whole in-memory array."""
        array = np.asarray(array)
        sink = self.array_sink(key, array.dtype, array.shape, storage=storage,
                               chunk_rows=chunk_rows)
        step = max(1, (64 << 20) // max(1, array.itemsize * int(np.prod(array.shape[1:]))))
        for start in range(0, max(1, array.shape[0]), step):
            sink.append(array[start : start + step])
        self.close_sink(key)

    def create_memmap(self, key: str, dtype: np.dtype | str, shape: tuple[int, ...]) -> np.memmap:
        """A writable, zero-filled memory map for arrays filled out of order (CSC builds).

        Its checksum is computed from the file at :meth:`finish`.
        """
        root = self._require_open()
        self._claim(key)
        relpath = f"{key}.bin"
        dtype = _little_endian(np.dtype(dtype))
        with open(root / relpath, "wb") as handle:
            handle.truncate(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        if int(np.prod(shape, dtype=np.int64)) == 0:
            array = np.zeros(shape, dtype)
            self._memmaps[key] = (array, relpath)  # type: ignore[assignment]
            return array  # type: ignore[return-value]
        array = np.memmap(root / relpath, dtype=dtype, mode="r+", shape=shape)
        self._memmaps[key] = (array, relpath)
        return array

    def write_graph(self, graph: CSCGraph) -> None:
        """Write ``indptr`` and ``indices``."""
        self.write_array("indptr", graph.indptr.numpy())
        self.write_array("indices", graph.indices.numpy())

    # -- publish ----------------------------------------------------------------------
    def finish(self, *, num_classes: int) -> Manifest:
        """Check every array is present and consistent, write the manifest, publish."""
        root = self._require_open()
        if self._open:
            raise DatasetError(f"arrays {sorted(self._open)} were opened but not closed")
        for key, (array, relpath) in list(self._memmaps.items()):
            if isinstance(array, np.memmap):
                array.flush()
            self._entries[key] = ArrayEntry(
                relpath, np.dtype(array.dtype).name, tuple(array.shape),
                checksum_path(root / relpath),
            )
            del self._memmaps[key]
        missing = [key for key in REQUIRED_ARRAYS if key not in self._entries]
        if missing:
            raise DatasetError(f"cannot publish {self.path}: arrays {missing} were not written")
        entries = dict(self._entries)
        manifest = Manifest(
            name=self.name,
            num_nodes=entries["indptr"].shape[0] - 1,
            num_edges=entries["indices"].shape[0],
            num_classes=int(num_classes),
            arrays=entries,
            splits={s: entries[f"{s}_idx"].shape[0] for s in ("train", "val", "test")},
            source=self.source,
            created_by=f"graphsys {__version__}",
        )
        manifest.check_consistent(self.path)
        # The manifest is written last: a directory without one is never a dataset.
        (root / "manifest.json").write_text(manifest.dumps())
        self._finished = True
        return manifest
