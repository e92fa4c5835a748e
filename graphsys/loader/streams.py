"""Handing batches made on a side CUDA stream to the training stream.

On the device path the loader's thread samples and gathers on a stream of its own, so
that work overlaps the model's. A batch is handed over with an event recorded after
its last kernel: the consumer's stream waits on the event (no host sync), and every
CUDA tensor of the batch is marked used on the consumer's stream, so the caching
allocator does not give its memory to the side stream while training still reads it.
On CPU (or the plain path) batches pass through untouched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from graphsys.samplers.block import MiniBatch


def batch_tensors(batch: MiniBatch) -> Iterator[torch.Tensor]:
    """Every tensor a batch holds: ids, block structure and block data."""
    yield batch.input_nodes
    yield batch.output_nodes
    for block in batch.blocks:
        yield block.indptr
        yield block.indices
        for data in (block.srcdata, block.dstdata, block.edata):
            yield from data.values()


class Handed:
    """A batch in transit from the side stream, with the event that completes it."""

    def __init__(self, batch: MiniBatch, event: Any, device: torch.device) -> None:
        self.batch = batch
        self.event = event
        self.device = device

    def receive(self) -> MiniBatch:
        """The batch, safe to use on the current stream (waits on the GPU, not the host)."""
        stream = torch.cuda.current_stream(self.device)
        stream.wait_event(self.event)
        for t in batch_tensors(self.batch):
            if t.is_cuda:
                t.record_stream(stream)
        return self.batch


class _Direct:
    """No side stream: batches pass as they are."""

    @staticmethod
    def send(batch: MiniBatch) -> MiniBatch:
        return batch


class _SideStream:
    def __init__(self, stream: torch.cuda.Stream) -> None:
        self.stream = stream

    def send(self, batch: MiniBatch) -> Handed:
        event = torch.cuda.Event()
        event.record(self.stream)
        return Handed(batch, event, self.stream.device)


@contextlib.contextmanager
def handoff_stream(device: torch.device | None) -> Iterator[_Direct | _SideStream]:
    """Run the body on a side stream of ``device`` if it is a GPU; yield the hand-off."""
    if device is None or device.type != "cuda":
        yield _Direct()
        return
    stream = torch.cuda.Stream(device)
    with torch.cuda.device(device), torch.cuda.stream(stream):
        yield _SideStream(stream)
