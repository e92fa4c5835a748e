"""Streaming SHA-256 checksums of arrays on disk (files or zarr directories)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

_BLOCK = 8 << 20

ALGORITHM = "sha256"


def _hash_file(path: Path, digest: hashlib._Hash, advance: Callable[[int], None] | None) -> None:
    with open(path, "rb") as handle:
        while block := handle.read(_BLOCK):
            digest.update(block)
            if advance is not None:
                advance(len(block))


def checksum_path(path: str | os.PathLike, advance: Callable[[int], None] | None = None) -> str:
    """SHA-256 of a file, or of a directory's files in sorted relative-path order.

    For a directory (a zarr store), each file's relative path is hashed before its
    bytes, so a renamed or missing chunk changes the checksum too. ``advance`` is
    called with the number of bytes consumed (for a progress bar).
    """
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            _hash_file(file, digest, advance)
    else:
        _hash_file(path, digest, advance)
    return digest.hexdigest()


def size_on_disk(path: str | os.PathLike) -> int:
    """Bytes of a file, or of all files under a directory."""
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size
