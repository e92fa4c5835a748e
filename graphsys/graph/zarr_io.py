"""Chunked zarr arrays compressed with LZ4, for zarr 2 and zarr 3 alike."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

#: Metadata files of a zarr array (zarr 3; zarr 2), hashed by :func:`metadata_checksum`.
METADATA_FILES = ("zarr.json", ".zarray", ".zattrs")


def _zarr_major() -> int:
    import zarr

    return int(zarr.__version__.split(".")[0])


def create_lz4_array(
    path: Path, shape: tuple[int, ...], chunks: tuple[int, ...], dtype: np.dtype, *,
    cname: str = "lz4", clevel: int = 5, shuffle: str = "shuffle",
) -> Any:
    """Create an empty zarr array at ``path`` with Blosc-LZ4 and byte shuffle.

    Byte shuffle groups the exponent bytes of floats together, which is what lets LZ4
    find repeats in feature rows. ``cname="lz4hc"`` writes the same LZ4 format with a
    slower, more thorough encoder; ``shuffle="bitshuffle"`` suits byte-coded rows.
    With zarr 3 each chunk ends in a CRC-32C of its compressed bytes, checked as it is
    read: Blosc itself decodes most flipped bytes into wrong values without a word.
    """
    import zarr

    if _zarr_major() >= 3:
        from zarr.codecs import BloscCodec, Crc32cCodec

        return zarr.create_array(
            store=str(path),
            shape=shape,
            chunks=chunks,
            dtype=dtype,
            compressors=(BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle),
                         Crc32cCodec()),
            fill_value=0,
            # Every chunk on disk, even an all-zero one: a missing chunk then means
            # damage (zarr would read it as zeros), which missing_chunks() can see.
            config={"write_empty_chunks": True},
        )
    from numcodecs import Blosc

    modes = {"shuffle": Blosc.SHUFFLE, "bitshuffle": Blosc.BITSHUFFLE, "noshuffle": Blosc.NOSHUFFLE}
    return zarr.open_array(
        str(path), mode="w", shape=shape, chunks=chunks, dtype=dtype,
        compressor=Blosc(cname=cname, clevel=clevel, shuffle=modes[shuffle]), fill_value=0,
        write_empty_chunks=True,
    )


def chunk_file(path: Path, index: tuple[int, ...]) -> Path:
    """The file holding chunk ``index`` of the array at ``path`` (default key encoding)."""
    key = ["c", *map(str, index)] if _zarr_major() >= 3 else [".".join(map(str, index))]
    return Path(path).joinpath(*key)


def metadata_checksum(path: Path) -> str:
    """SHA-256 of the metadata files of the zarr array at ``path`` (not its chunks)."""
    digest = hashlib.sha256()
    for name in METADATA_FILES:
        file = Path(path) / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def open_array(path: Path) -> Any:
    """Open an existing zarr array read-only."""
    import zarr

    return zarr.open_array(str(path), mode="r")


def missing_chunks(path: Path, array: Any) -> list[Path]:
    """Chunk files of ``array`` (at ``path``) that are absent or empty on disk.

    Arrays written by :func:`create_lz4_array` store every chunk, so one that is not
    there was deleted or lost; zarr itself would serve it as fill values (zeros).
    """
    import itertools

    grid = [range(-(-size // chunk)) for size, chunk in zip(array.shape, array.chunks)]
    missing = []
    for index in itertools.product(*grid):
        file = chunk_file(path, index)
        try:
            if file.stat().st_size == 0:
                missing.append(file)
        except OSError:
            missing.append(file)
    return missing
