"""SHA-256 of a pack's metadata files, written last when packing and checked at open.

``rows.bin`` carries a CRC-32 per segment (``segments.crc32``), checked as each segment
is read; the files that say which rows a segment holds and which batches were packed
(``pack.json``, ``ids.bin``, ``hot.bin``, ``batches.bin``, ``segments.crc32``) are
hashed into ``checksums.json``. A flipped id there would otherwise serve another
node's row silently, or end in a ``KeyError`` deep in a read. The files are small
(8 bytes per packed row at most) and read whole at open anyway.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from graphsys._atomic import atomic_write_bytes
from graphsys.errors import ChecksumError, DatasetError

CHECKSUMS_FILE = "checksums.json"
FORMAT = "graphsys.pack-checksums"
#: The files hashed, in the order written.
METADATA = ("pack.json", "ids.bin", "hot.bin", "batches.bin", "segments.crc32")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_pack_checksums(work: Path) -> None:
    """Hash the metadata files of the pack being built in ``work`` (call it last)."""
    digests = {name: _sha256(work / name) for name in METADATA if (work / name).is_file()}
    text = json.dumps({"format": FORMAT, "sha256": digests}, indent=1) + "\n"
    atomic_write_bytes(work / CHECKSUMS_FILE, text.encode())


class PackChecksums:
    """The checksums of a pack at ``path``; packs made before they existed have none,
    and their files are read unchecked."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.digests: dict[str, str] | None = None
        where = self.path / CHECKSUMS_FILE
        if not where.is_file():
            return
        try:
            data = json.loads(where.read_bytes())
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}")
            digests = {str(k): str(v) for k, v in dict(data["sha256"]).items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise DatasetError(f"{where} is unreadable ({type(exc).__name__}: {exc}): the "
                               "pack is damaged; re-pack (graphsys pack --overwrite)") from None
        missing = [name for name in METADATA if name not in digests]
        if missing:
            raise DatasetError(f"{where} lacks the checksums of {missing}: the pack is "
                               "damaged; re-pack (graphsys pack --overwrite)")
        self.digests = digests

    def check(self, name: str, data: bytes | np.ndarray) -> None:
        """Raise :class:`ChecksumError` if ``data`` (file ``name``'s bytes) changed."""
        if self.digests is not None and hashlib.sha256(data).hexdigest() != self.digests[name]:
            raise ChecksumError(f"{self.path / name} fails its checksum ({CHECKSUMS_FILE}): "
                                "the pack is damaged; re-pack (graphsys pack --overwrite)")

    def check_file(self, name: str) -> None:
        path = self.path / name
        if self.digests is not None:
            if not path.is_file():
                raise DatasetError(f"{path} is missing: the pack is damaged; re-pack "
                                   "(graphsys pack --overwrite)")
            self.check(name, path.read_bytes())

    def read(self, name: str, dtype: str) -> np.ndarray:
        """File ``name`` as an array of ``dtype``, checked against its checksum."""
        if self.digests is not None and not (self.path / name).is_file():
            raise DatasetError(f"{self.path / name} is missing: the pack is damaged; "
                               "re-pack (graphsys pack --overwrite)")
        array = np.fromfile(self.path / name, dtype=dtype)
        self.check(name, array)
        return array
