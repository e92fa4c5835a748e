"""The stage pipeline: sample -> read features -> copy to device -> compute, overlapped.

:class:`PipelinedLoader` iterates the same batches as the :class:`DataLoader` it wraps
(same seeds, sampler keys and feature stores, so the same losses), but runs each stage
in its own thread with a bounded queue between stages, so an epoch costs about its
slowest stage instead of their sum:

======== ============================ ==================================================
stage    thread                       CUDA stream
======== ============================ ==================================================
sample   ``graphsys-sample``          none (CPU kernel, releases the GIL)
read     ``graphsys-read``            the store's (``DataLoader._fill``: packed segment,
                                      device-cache lookups and prefetch, pinned rows)
copy     ``graphsys-copy``            a side stream; the batch's tensors are recorded on
                                      the compute stream, which waits on an event
compute  the caller's (the loop body) the current stream
======== ============================ ==================================================

``mode="serial"`` runs the stages one after another in the caller's thread (the
baseline the benchmark compares with). Both modes record every stage's span per
batch in a :class:`StageTrace` if one is given.

Example:
    >>> trace = StageTrace()
    >>> for input_nodes, output_nodes, blocks in PipelinedLoader(loader, trace=trace):
    ...     train_step(blocks)                                         # doctest: +SKIP
    >>> trace.save("profile.json"); print(trace.summary())             # doctest: +SKIP
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch

from graphsys.loader.dataloader import DataLoader
from graphsys.loader.trace import WAIT, StageTrace
from graphsys.loader.streams import Handed
from graphsys.samplers.block import MiniBatch

Mode = Literal["pipelined", "serial"]
#: How long a blocked stage waits before checking whether the consumer has stopped.
_POLL_S = 0.1
#: How long the consumer waits for a stage thread to finish after stopping it; a thread
#: stuck in a collective whose peer died is left behind (it is a daemon) rather than
#: hanging the process that must report the failure.
_JOIN_S = 5.0


class _End:
    """Marks the end of a stage's batches (or carries the exception that ended them)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class PipelinedLoader:
    """Iterate ``loader``'s batches with its stages overlapped (see the module docstring).

    Args:
        loader: the :class:`DataLoader` whose batches to yield (its ``features``,
            ``labels``, ``device`` and epoch counter are used as they are).
        mode: ``"pipelined"`` (threads) or ``"serial"`` (one stage after another).
        depth: batches each queue holds between two stages (at least 1).
        trace: where stage spans go (nothing is recorded if None).
        start_batch: skip the first batches of the next epoch (a resumed run).
    """

    def __init__(self, loader: DataLoader, *, mode: Mode = "pipelined", depth: int = 2,
                 trace: StageTrace | None = None, start_batch: int = 0) -> None:
        if mode not in ("pipelined", "serial"):
            raise ValueError(f"mode={mode!r} is unknown; pass 'pipelined' or 'serial'")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
        if start_batch < 0:
            raise ValueError(f"start_batch={start_batch} must be >= 0")
        self.loader = loader
        self.mode = mode
        self.depth = depth
        self.trace = trace
        self.start_batch = int(start_batch)
        self._stream: Any = None

    def __len__(self) -> int:
        return max(len(self.loader) - self.start_batch, 0)

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)

    # -- stages ------------------------------------------------------------------------
    def _record(self, stage: str, epoch: int, index: int, start: float) -> None:
        if self.trace is not None:
            self.trace.add(stage, epoch, index, start, time.perf_counter())

    def _copy(self, batch: MiniBatch) -> tuple[MiniBatch, Any]:
        """The batch on the loader's device, and the CUDA event the compute must wait on."""
        device = self.loader.device
        if device.type != "cuda":
            return (batch if device.type == "cpu" else batch.to(device)), None
        if self._stream is None:
            self._stream = torch.cuda.Stream(device)
        with torch.cuda.stream(self._stream):
            # Rows were pinned by the read stage (DataLoader._fill), so this copy is async.
            moved = batch.to(device, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        return moved, event

    def _ready(self, batch: MiniBatch, event: Any) -> MiniBatch:
        """Make the compute stream wait for the copy; keep the copy's memory alive for it."""
        # Allocated on the side stream: the hand-off marks the batch's memory used by the
        # compute stream, or the allocator could give it to the next copy too early.
        return Handed(batch, event, self.loader.device).receive() if event is not None \
            else batch

    # -- serial ------------------------------------------------------------------------
    def _serial(self, epoch: int) -> Iterator[MiniBatch]:
        loader = self.loader

        def sample(epoch: int, index: int, seeds: Any) -> MiniBatch:
            t0 = time.perf_counter()
            batch = loader._sample(epoch, index, seeds)
            self._record("sample", epoch, index, t0)
            return batch

        for index, batch, pending in loader._sampled_ahead(epoch, self._seed_batches(epoch),
                                                          sample):
            t0 = time.perf_counter()
            batch = loader._fill(epoch, index, batch)
            loader._prefetch_ahead(pending)
            self._record("read", epoch, index, t0)
            t0 = time.perf_counter()
            batch, event = self._copy(batch)
            if event is not None:
                event.synchronize()  # serial: the copy is done before compute starts
            self._record("copy", epoch, index, t0)
            t0 = time.perf_counter()
            yield batch
            self._record("compute", epoch, index, t0)

    def _seed_batches(self, epoch: int) -> Iterator[tuple[int, Any]]:
        batches = self.loader.batch_seeds(epoch)
        return ((i, batches[i]) for i in range(self.start_batch, len(batches)))

    # -- pipelined ---------------------------------------------------------------------
    def _threads(self, epoch: int, stop: threading.Event
                 ) -> tuple[list[threading.Thread], queue.Queue]:
        sampled: queue.Queue = queue.Queue(maxsize=self.depth)
        filled: queue.Queue = queue.Queue(maxsize=self.depth)
        copied: queue.Queue = queue.Queue(maxsize=self.depth)
        loader = self.loader

        def put(q: queue.Queue, item: object) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=_POLL_S)
                    return True
                except queue.Full:
                    continue
            return False

        def get(q: queue.Queue) -> object:
            while not stop.is_set():
                try:
                    return q.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
            return _End()

        def guarded(body: Callable[[], None], out: queue.Queue) -> Callable[[], None]:
            def run() -> None:
                try:
                    body()
                except BaseException as exc:  # handed downstream; the consumer re-raises
                    put(out, _End(exc))
            return run

        def sample() -> None:
            for index, seeds in self._seed_batches(epoch):
                t0 = time.perf_counter()
                batch = loader._sample(epoch, index, seeds)
                self._record("sample", epoch, index, t0)
                if not put(sampled, (index, batch)):
                    return
            put(sampled, _End())

        def incoming() -> Iterator[tuple[int, MiniBatch]]:
            while True:
                item = get(sampled)
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error  # guarded() hands it downstream
                    return
                yield item

        def read() -> None:
            # The read stage looks ``lookahead`` sampled batches ahead, as DataLoader does,
            # so a device cache can prefetch their rows while this batch computes.
            for index, batch, pending in loader._sampled_ahead(
                    epoch, incoming(), lambda epoch, index, sampled_batch: sampled_batch):
                t0 = time.perf_counter()
                batch = loader._fill(epoch, index, batch)
                loader._prefetch_ahead(pending)
                self._record("read", epoch, index, t0)
                if not put(filled, (index, batch)):
                    return
            put(filled, _End())

        def copy() -> None:
            while True:
                item = get(filled)
                if isinstance(item, _End):
                    put(copied, item)
                    return
                index, batch = item
                t0 = time.perf_counter()
                moved = self._copy(batch)
                self._record("copy", epoch, index, t0)
                if not put(copied, (index, *moved)):
                    return

        threads = [threading.Thread(target=guarded(body, out), daemon=True,
                                    name=f"graphsys-{body.__name__}-e{epoch}")
                   for body, out in ((sample, sampled), (read, filled), (copy, copied))]
        return threads, copied

    def _pipelined(self, epoch: int) -> Iterator[MiniBatch]:
        stop = threading.Event()
        threads, copied = self._threads(epoch, stop)
        for thread in threads:
            thread.start()
        try:
            while True:
                t0 = time.perf_counter()
                item = copied.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                index, batch, event = item
                self._record(WAIT, epoch, index, t0)
                batch = self._ready(batch, event)
                t0 = time.perf_counter()
                yield batch
                self._record("compute", epoch, index, t0)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=_JOIN_S)

    def __iter__(self) -> Iterator[MiniBatch]:
        epoch = self.loader.epoch
        self.loader.epoch += 1
        start = time.perf_counter()
        try:
            yield from (self._serial(epoch) if self.mode == "serial" else
                        self._pipelined(epoch))
        finally:
            if self.trace is not None:
                self.trace.mark_epoch(epoch, start, time.perf_counter())
            self.start_batch = 0  # only the first epoch of a resumed run starts late
