"""Offline sampling: the input nodes of every batch of chosen epochs, ahead of training.

The sampler is deterministic per (seed, epoch, batch), so the log needs only each
batch's input nodes: training re-samples the same batches and checks them against the
log. A fingerprint of everything that shapes the batches (graph size, seeds, fanouts,
batch size, shuffle, seed, epochs) lets a pack refuse a loader it was not made for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphsys._progress import progress_bar


def loader_fingerprint(loader: Any, epochs: Sequence[int]) -> str:
    """A short hash of everything that decides the batches ``loader`` yields."""
    sampler = loader.sampler
    spec = {"num_nodes": loader.graph.num_nodes(), "num_edges": loader.graph.num_edges(),
            "seeds": hashlib.sha256(loader.seeds.tobytes()).hexdigest(),
            "fanouts": list(sampler.fanouts), "replace": sampler.replace,
            "sampler_seed": sampler.seed, "batch_size": loader.batch_size,
            "shuffle": loader.shuffle, "drop_last": loader.drop_last, "seed": loader.seed,
            "epochs": [int(e) for e in epochs]}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def batch_position(epochs: Sequence[int], batches_per_epoch: int, epoch: int,
                   index: int) -> int:
    """Index, in sampling order, of batch ``index`` of ``epoch`` among ``epochs``."""
    try:
        e = list(epochs).index(int(epoch))
    except ValueError:
        raise KeyError(f"epoch {epoch} was not sampled offline (the log has epochs "
                       f"{list(epochs)}); pack with more epochs") from None
    return e * batches_per_epoch + index


@dataclass
class SamplingLog:
    """Input nodes of each batch, in training order, for ``epochs``."""

    fingerprint: str
    epochs: list[int]
    batches_per_epoch: int
    input_nodes: np.ndarray  # int64, all batches concatenated
    offsets: np.ndarray  # int64 [num_batches + 1]

    @property
    def num_batches(self) -> int:
        return len(self.offsets) - 1

    def batch(self, i: int) -> np.ndarray:
        return self.input_nodes[self.offsets[i] : self.offsets[i + 1]]

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.batch(i) for i in range(self.num_batches))

    def position(self, epoch: int, index: int) -> int:
        """Index in the log of batch ``index`` of ``epoch``."""
        return batch_position(self.epochs, self.batches_per_epoch, epoch, index)


def offline_sample(loader: Any, epochs: Sequence[int] = (0,), *, progress: bool = False,
                   max_batches: int | None = None) -> SamplingLog:
    """Sample ``epochs`` of ``loader`` exactly as iterating it would, keeping input nodes.

    ``max_batches`` keeps only the first batches of each epoch (a presample); the log's
    ``batches_per_epoch`` is then that count.
    """
    epochs = [int(e) for e in epochs]
    if not epochs:
        raise ValueError("epochs is empty: sample at least one epoch")
    per_epoch = len(loader) if max_batches is None else min(len(loader), int(max_batches))
    parts, sizes = [], [0]
    with progress_bar(total=per_epoch * len(epochs), desc="offline sampling",
                      unit="batch", enable=progress) as bar:
        for epoch in epochs:
            for index, seeds in enumerate(loader.batch_seeds(epoch)[:per_epoch]):
                batch = loader.sampler.sample(loader.graph, seeds,
                                              key=loader.batch_key(epoch, index))
                nodes = batch.input_nodes.numpy()
                parts.append(nodes)
                sizes.append(len(nodes))
                bar.update(1)
    offsets = np.cumsum(sizes, dtype=np.int64)
    input_nodes = np.concatenate(parts) if parts else np.empty(0, np.int64)
    return SamplingLog(loader_fingerprint(loader, epochs), epochs, per_epoch,
                       input_nodes.astype(np.int64, copy=False), offsets)
