"""Reader for OGB node-property-prediction datasets in their raw CSV layout.

An unpacked OGB download (``ogbn_arxiv/``, ``ogbn_products/``, ``ogbn_papers100M/``)
holds::

    raw/edge.csv.gz            "src,dst" per line, directed, no header
    raw/node-feat.csv.gz       one row of comma-separated floats per node
    raw/node-label.csv.gz      one label per node; empty or "nan" if unlabelled
    raw/num-node-list.csv.gz   node count (optional)
    raw/num-edge-list.csv.gz   edge count (optional, checked if present)
    split/<scheme>/{train,valid,test}.csv.gz   one node id per line

Every file is streamed in blocks of lines and parsed with numpy, so memory holds one
block of text plus node-sized arrays (``indptr`` and the CSC build's counters) and the
splits, never the input. Edges are spilled as binary to a temporary file inside the
output directory for the second pass of the CSC build. Plain ``.csv`` files work too.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from graphsys._progress import progress_bar
from graphsys.errors import InputFormatError
from graphsys.graph.build import build_csc_into, check_edge_ids
from graphsys.graph.csc import index_dtype_for
from graphsys.graph.manifest import Manifest
from graphsys.graph.writer import DatasetWriter

_LAYOUT = (
    "an OGB node-property-prediction directory holds raw/edge.csv.gz, "
    "raw/node-feat.csv.gz, raw/node-label.csv.gz and split/<scheme>/{train,valid,test}"
    ".csv.gz, as unpacked from the OGB download zip"
)
_SPLITS = {"train": "train_idx", "valid": "val_idx", "test": "test_idx"}
#: Bytes of text decompressed per read; chunks never exceed this plus one line.
_BLOCK_BYTES = 8 << 20
#: A "line" longer than this means the file is not line-oriented text.
_MAX_LINE_BYTES = 64 << 20
#: Edges per chunk when re-reading the binary spill file.
_SPILL_EDGES = 1 << 22
_COMMA_TO_SPACE = bytes.maketrans(b",", b" ")


def _find(directory: Path, stem: str, *, required: bool = True) -> Path | None:
    for suffix in (".csv.gz", ".csv"):
        if (directory / f"{stem}{suffix}").is_file():
            return directory / f"{stem}{suffix}"
    if not required:
        return None
    hint = ""
    if (directory / "relations").is_dir():
        hint = " (this looks like a heterogeneous OGB dataset such as ogbn-mag; only " \
               "homogeneous ones are supported)"
    raise InputFormatError(f"{directory / stem}.csv.gz is missing{hint}; {_LAYOUT}")


def _line_chunks(path: Path, chunk_lines: int, progress: bool) -> Iterator[tuple[int, bytes]]:
    """Yield ``(first line number, text of whole lines)`` pieces of at most ``chunk_lines``."""
    with open(path, "rb") as raw, progress_bar(total=os.path.getsize(path), unit="B",
                                               desc=f"reading {path.name}",
                                               enable=progress) as bar:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else raw
        line, pending = 1, b""
        while True:
            try:
                block = stream.read(_BLOCK_BYTES)
            except (OSError, EOFError, zlib.error) as exc:
                raise InputFormatError(
                    f"{path} is corrupt or truncated: reading failed after {line - 1} "
                    f"complete lines ({exc}); download and unpack the dataset again"
                ) from exc
            bar.update(raw.tell() - bar.n)
            if not block:
                if pending:  # a last line without a newline
                    yield line, pending + b"\n"
                return
            data = pending + block
            last, lines = data.rfind(b"\n"), data.count(b"\n")
            if last < 0 and len(data) > _MAX_LINE_BYTES:
                raise InputFormatError(
                    f"{path}: line {line} is longer than {_MAX_LINE_BYTES >> 20} MiB; "
                    "expected comma-separated text"
                )
            if lines <= chunk_lines:  # the usual case: one chunk per block
                cuts = [last] if lines else []
            else:
                ends = np.flatnonzero(np.frombuffer(data, np.uint8) == ord("\n"))
                cuts = ends[chunk_lines - 1 :: chunk_lines].tolist()
                if cuts[-1] != last:
                    cuts.append(last)
            start = 0
            for cut in cuts:
                count = min(chunk_lines, lines)
                yield line, data[start : cut + 1]
                line, start, lines = line + count, cut + 1, lines - count
            pending = data[start:]


def _parse_slow(data: bytes, path: Path, first: int, ncols: int, kind: type,
                empty: bytes | None) -> np.ndarray:
    """Parse line by line, naming the first bad line; the rare path after a fast failure.

    A blank line reads as ``empty`` if given (labels: ``b"nan"``), else is an error.
    """
    rows = []
    for offset, text in enumerate(data.split(b"\n")[:-1]):
        fields = text.split(b",")
        if empty is not None and not text.strip():
            fields = [empty]
        if len(fields) != ncols:
            raise InputFormatError(
                f"{path}: line {first + offset} has {len(fields)} values, expected {ncols}"
            )
        try:
            rows.append([kind(field) for field in fields])
        except ValueError:
            what = "integer" if kind is int else "number"
            expected = ("an integer" if kind is int else "a number") if ncols == 1 \
                else f"{ncols} comma-separated {what}s"
            shown = text[:80].decode("utf-8", "replace")
            raise InputFormatError(
                f"{path}: line {first + offset} should be {expected}, found {shown!r}"
            ) from None
    return np.array(rows, dtype=np.int64 if kind is int else np.float64).reshape(-1, ncols)


def _parse_fast(data: bytes, nlines: int, ncols: int, dtype: type) -> np.ndarray | None:
    """Vectorised parse of plain rows of ``ncols`` fields, or None if the text is not that."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # numpy 1.x fromstring: partial
        warnings.simplefilter("ignore", UserWarning)  # loadtxt: "input contained no data"
        try:
            if dtype is not np.int64:
                # numpy's C loadtxt is ~30% faster than fromstring on floats and checks
                # the column count itself (it skips blank lines: the shape shows them).
                values = np.loadtxt(io.BytesIO(data), delimiter=",", dtype=dtype,
                                    comments=None, ndmin=2)
                return values if values.shape == (nlines, ncols) else None
            # For integers fromstring is ~2x faster, but it splits on any whitespace and so
            # forgets rows: trust it only if every line is exactly ncols non-empty fields.
            if b" " in data or b"\t" in data:
                return None
            buf = np.frombuffer(data, np.uint8)
            seps = np.flatnonzero((buf == ord(",")) | (buf == ord("\n")))
            row = np.array([ord(",")] * (ncols - 1) + [ord("\n")], np.uint8)
            if (seps.size != nlines * ncols or (seps.size and seps[0] == 0)
                    or not np.array_equal(buf[seps].reshape(nlines, ncols),
                                          np.broadcast_to(row, (nlines, ncols)))
                    or np.any(np.diff(seps) == 1)):
                return None
            values = np.fromstring(data.translate(_COMMA_TO_SPACE), dtype=dtype, sep=" ")
        except (ValueError, DeprecationWarning):
            return None
    return values.reshape(nlines, ncols) if values.size == nlines * ncols else None


def _parse(data: bytes, path: Path, first: int, ncols: int, dtype: type, *,
           blank_as_nan: bool = False) -> np.ndarray:
    """Parse whole lines of ``ncols`` comma-separated numbers into a ``[lines, ncols]`` array.

    ``first`` is the line number of the first line, for errors. With ``blank_as_nan``
    (labels), a blank line reads as NaN.
    """
    if b"\r" in data:
        data = data.replace(b"\r", b"")  # Windows line ends
    if blank_as_nan:
        # A blank label line is an unlabelled node; two passes catch runs of them.
        data = (b"\n" + data).replace(b"\n\n", b"\nnan\n").replace(b"\n\n", b"\nnan\n")[1:]
    nlines = data.count(b"\n")
    values = _parse_fast(data, nlines, ncols, dtype)
    if values is None:  # odd text (never in OGB's own files): find and name the bad line
        values = _parse_slow(data, path, first, ncols, int if dtype is np.int64 else float,
                             b"nan" if blank_as_nan else None)
    return values.astype(dtype, copy=False)


def _read_count(path: Path) -> int:
    values = np.concatenate([_parse(d, path, i, 1, np.int64)
                             for i, d in _line_chunks(path, 16, False)] or [np.empty((0, 1))])
    if values.size < 1 or values[0, 0] < 0:
        raise InputFormatError(f"{path} should hold one non-negative count")
    return int(values[0, 0])


def _count_lines(path: Path, progress: bool) -> int:
    return sum(d.count(b"\n") for _, d in _line_chunks(path, 1 << 62, progress))


def _write_labels(writer: DatasetWriter, path: Path, n: int, chunk_lines: int,
                  progress: bool) -> int:
    """Stream labels into the writer (``-1`` for unlabelled); return the class count."""
    sink, written, top = writer.array_sink("labels", np.int64, (n,)), 0, -1
    for first, data in _line_chunks(path, chunk_lines, progress):
        values = _parse(data, path, first, 1, np.float64, blank_as_nan=True)[:, 0]
        labelled = ~np.isnan(values)
        good = labelled & (values >= -1) & (values == np.floor(values)) & np.isfinite(values)
        if np.any(labelled & ~good):
            bad = int(np.argmax(labelled & ~good))
            raise InputFormatError(f"{path}: line {first + bad} has label {values[bad]}; "
                                   "labels must be class numbers >= 0, or empty/nan")
        if written + values.size > n:
            raise InputFormatError(f"{path} has more than {n} lines, one per node expected")
        labels = np.where(labelled, values, -1).astype(np.int64)
        top = max(top, int(labels.max(initial=-1)))
        sink.append(labels)
        written += values.size
    if written != n:
        raise InputFormatError(f"{path} has {written} lines, expected one per node ({n})")
    writer.close_sink("labels")
    return top + 1


def _write_features(writer: DatasetWriter, path: Path, n: int, storage: str,
                    chunk_lines: int, progress: bool) -> None:
    sink, written = None, 0
    for first, data in _line_chunks(path, chunk_lines, progress):
        if sink is None:
            dim = data[: data.index(b"\n")].count(b",") + 1
            sink = writer.array_sink("features", np.float32, (n, dim), storage=storage)
        rows = _parse(data, path, first, sink.shape[1], np.float32)
        finite = np.isfinite(rows).all(axis=1)  # also what overflows float32 (1e39)
        if not finite.all():
            bad = int(np.argmin(finite))
            raise InputFormatError(f"{path}: line {first + bad} has a NaN or infinite feature "
                                   "(or one beyond float32's range); features must be finite")
        if written + rows.shape[0] > n:
            raise InputFormatError(f"{path} has more than {n} rows, one per node expected")
        sink.append(rows)
        written += rows.shape[0]
    if sink is None or written != n:
        raise InputFormatError(f"{path} has {written} rows, expected one per node ({n})")
    writer.close_sink("features")


def _read_split(path: Path, n: int, chunk_lines: int) -> np.ndarray:
    parts = []
    for first, data in _line_chunks(path, chunk_lines, False):
        ids = _parse(data, path, first, 1, np.int64)[:, 0]
        bad = (ids < 0) | (ids >= n)
        if bad.any():
            pos = int(np.argmax(bad))
            raise InputFormatError(f"{path}: line {first + pos} has node id {ids[pos]}, "
                                   f"outside [0, {n}); the split does not fit this graph")
        parts.append(ids)
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def _spill_edges(path: Path, spill: Path, n: int, chunk_lines: int, progress: bool) -> int:
    """Parse the edge list once into a binary file of (src, dst) pairs; return its length."""
    count, dtype = 0, index_dtype_for(n)
    with open(spill, "wb") as out:
        for first, data in _line_chunks(path, chunk_lines, progress):
            pairs = _parse(data, path, first, 2, np.int64)
            check_edge_ids(pairs[:, 0], pairs[:, 1], n, first_edge=first - 1,
                           source_name=str(path), line_offset=1)
            # Ids were checked to be in range, so narrowing to the index dtype is exact.
            out.write(memoryview(pairs.astype(dtype)).cast("B"))
            count += pairs.shape[0]
    return count


def _resolve_root(raw_dir: str | os.PathLike) -> Path:
    path = Path(raw_dir)
    if not path.is_dir():
        raise InputFormatError(f"{path} is not a directory; {_LAYOUT}")
    if not (path / "raw").is_dir() and path.name == "raw":
        return path.parent  # pointed at DIR/raw rather than DIR
    return path


def _split_dir(root: Path, split: str | None) -> Path:
    base = root / "split"
    schemes = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
    if not schemes:
        raise InputFormatError(f"{base} has no split scheme directory; {_LAYOUT}")
    if split is None:
        if len(schemes) > 1:
            raise InputFormatError(f"{base} holds split schemes {schemes}; pass split= "
                                   "(--split) to choose one of them")
        split = schemes[0]
    if split not in schemes:
        raise InputFormatError(f"{base / split} is missing; choose one of {schemes}")
    return base / split


def prepare_ogb(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    split: str | None = None,
    undirected: bool = False,
    feature_storage: Literal["raw", "zarr"] = "raw",
    overwrite: bool = False,
    progress: bool = True,
    chunk_lines: int = 1_000_000,
) -> Manifest:
    """Convert an unpacked OGB node-property-prediction dataset into a graphsys dataset.

    Args:
        raw_dir: the dataset root holding ``raw/`` and ``split/`` (``DIR/raw`` works too).
        out: the dataset directory to create; nothing appears there unless all succeeds.
        name: dataset name; defaults to the root's name with ``_`` as ``-``.
        split: the scheme under ``split/``; may be omitted when there is only one.
        undirected: add the reverse of every edge (duplicates are kept).
        feature_storage: ``"raw"`` (memory-mappable) or ``"zarr"`` (LZ4-compressed).
        chunk_lines: most lines parsed at once (bounds memory with the block size).

    Returns:
        The manifest of the written dataset.

    Raises:
        InputFormatError: a file is missing, corrupt, or malformed; the message names it
            (and the line, where there is one).
        DatasetExistsError: ``out`` exists and ``overwrite`` is false.
    """
    if chunk_lines < 1:
        raise ValueError(f"chunk_lines must be >= 1, got {chunk_lines}")
    root = _resolve_root(raw_dir)
    raw = root / "raw"
    edges, feats = _find(raw, "edge"), _find(raw, "node-feat")
    labels = _find(raw, "node-label")
    split_dir = _split_dir(root, split)
    split_files = {key: _find(split_dir, stem) for stem, key in _SPLITS.items()}
    source = {"kind": "ogb", "raw_dir": os.path.abspath(root), "split": split_dir.name,
              "undirected": undirected}
    name = name or root.resolve().name.replace("_", "-")
    with DatasetWriter(out, name=name, overwrite=overwrite, source=source) as writer:
        num_path = _find(raw, "num-node-list", required=False)
        n = _read_count(num_path) if num_path else _count_lines(labels, progress)
        num_classes = _write_labels(writer, labels, n, chunk_lines, progress)
        for key, path in split_files.items():  # small and cheap: fail fast on them
            writer.write_array(key, _read_split(path, n, chunk_lines))
        _write_features(writer, feats, n, feature_storage, chunk_lines, progress)
        spill = writer.root / "edges.spill.tmp"
        try:
            num_input = _spill_edges(edges, spill, n, chunk_lines, progress)
            count_path = _find(raw, "num-edge-list", required=False)
            expected = _read_count(count_path) if count_path else num_input
            if expected != num_input:
                raise InputFormatError(
                    f"{edges} has {num_input} edges but {count_path} says {expected}; "
                    "the files disagree, download and unpack the dataset again")

            def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
                dtype = index_dtype_for(n)
                with open(spill, "rb") as handle:
                    while block := handle.read(2 * _SPILL_EDGES * dtype.itemsize):
                        pairs = np.frombuffer(block, dtype).reshape(-1, 2)
                        yield pairs[:, 0], pairs[:, 1]

            build_csc_into(writer, chunks, n, symmetric=undirected, progress=progress,
                           source_name=str(edges), line_offset=1)
        finally:
            spill.unlink(missing_ok=True)  # never published, even when the build fails
        return writer.finish(num_classes=num_classes)
