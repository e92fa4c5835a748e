"""Recomputing a dataset's checksums and checking its arrays' contents, streamed."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from graphsys._progress import progress_bar
from graphsys.errors import DatasetError
from graphsys.graph.checksum import checksum_path, size_on_disk
from graphsys.graph.dataset import load_dataset
from graphsys.graph.manifest import SPLIT_ARRAYS

_CHUNK = 1 << 24  # elements per streamed range check


@dataclass
class VerifyReport:
    """What ``verify_dataset`` found: one line per problem, empty when all is well."""

    path: Path
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def raise_if_failed(self) -> None:
        if self.problems:
            raise DatasetError(
                f"{self.path} failed verification:\n  " + "\n  ".join(self.problems)
                + "\nThe dataset is damaged; re-create it with graphsys prepare."
            )


def _check_range(array: np.ndarray, low: int, high: int) -> tuple[int, int] | None:
    """First (position, value) of ``array`` outside ``[low, high)``, streamed."""
    for start in range(0, array.shape[0], _CHUNK):
        block = np.asarray(array[start : start + _CHUNK])
        bad = (block < low) | (block >= high)
        if bad.any():
            pos = int(np.argmax(bad))
            return start + pos, int(block[pos])
    return None


def verify_dataset(path: str | os.PathLike, *, progress: bool = True) -> VerifyReport:
    """Recompute every array's SHA-256 and check the graph, labels and splits.

    Returns a report rather than raising, so every problem is listed at once.
    Errors that make the dataset unopenable (missing manifest, truncated file) raise
    :class:`DatasetError` straight away.
    """
    dataset = load_dataset(path)
    manifest = dataset.manifest
    report = VerifyReport(Path(path))
    total = sum(size_on_disk(dataset.root / e.path) for e in manifest.arrays.values())
    with progress_bar(total=total, desc="verify", unit="B", enable=progress) as bar:
        for key, entry in manifest.arrays.items():
            actual = checksum_path(dataset.root / entry.path, advance=bar.update)
            if actual != entry.sha256:
                report.problems.append(
                    f"{dataset.root / entry.path}: checksum mismatch (array {key!r}); "
                    "its bytes changed since it was written"
                )
            else:
                report.checked.append(key)
    if not report.ok:
        return report  # contents of corrupt arrays would only add noise

    n = manifest.num_nodes
    # The checksums above matched: map the arrays without hashing them a second time.
    def array(key: str) -> np.ndarray:
        return dataset.array(key, checksum=False).numpy()

    indptr = array("indptr")
    if int(indptr[0]) != 0 or int(indptr[-1]) != manifest.num_edges:
        report.problems.append(f"indptr runs from {int(indptr[0])} to {int(indptr[-1])}, "
                               f"not 0 to num_edges={manifest.num_edges}: graph arrays corrupt")
    for start in range(0, n, _CHUNK):
        block = indptr[start : start + _CHUNK + 1]
        if np.any(block[1:] < block[:-1]):
            report.problems.append(f"indptr decreases near node {start}: graph arrays corrupt")
            break
    bad = _check_range(array("indices"), 0, n)
    if bad:
        report.problems.append(f"indices[{bad[0]}] = {bad[1]} is not a node id (< {n})")
    bad = _check_range(array("labels"), -1, manifest.num_classes)
    if bad:
        report.problems.append(
            f"labels[{bad[0]}] = {bad[1]} is outside [-1, {manifest.num_classes})"
        )
    for split, key in SPLIT_ARRAYS.items():
        bad = _check_range(array(key), 0, n)
        if bad:
            report.problems.append(f"{split} split id {bad[1]} at {bad[0]} is not a node id")
    return report
