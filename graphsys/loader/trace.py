"""Per-stage timing of the loading pipeline, and its Chrome trace (Perfetto JSON).

Each stage of :class:`graphsys.loader.pipeline.PipelinedLoader` records one span per
batch: ``(stage, epoch, batch, start, end)``. :meth:`StageTrace.save` writes them as
Chrome trace events (open the file in ``chrome://tracing`` or ui.perfetto.dev), one row
per stage, and :meth:`StageTrace.summary` says where the time went.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass

from graphsys._atomic import atomic_write_bytes

#: Stages in pipeline order; ``wait`` is the consumer waiting for a batch (a stall).
STAGES = ("sample", "read", "copy", "compute")
WAIT = "wait"


@dataclass(frozen=True)
class Span:
    """One stage's work on one batch, in seconds of ``time.perf_counter``."""

    stage: str
    epoch: int
    batch: int
    start: float
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


class StageTrace:
    """Thread-safe record of stage spans (every stage thread appends to it).

    Args:
        process: the Chrome trace ``pid`` (the rank in a distributed job), so the traces
            of several ranks can be merged into one file.
    """

    def __init__(self, process: int = 0) -> None:
        self.process = int(process)
        self.spans: list[Span] = []
        self._lock = threading.Lock()
        self.origin = time.perf_counter()
        self.epochs: dict[int, tuple[float, float]] = {}  # epoch -> (start, end)

    def add(self, stage: str, epoch: int, batch: int, start: float, end: float) -> None:
        with self._lock:
            self.spans.append(Span(stage, epoch, batch, start, end))

    def mark_epoch(self, epoch: int, start: float, end: float) -> None:
        with self._lock:
            self.epochs[epoch] = (start, end)

    def totals(self, epoch: int | None = None) -> dict[str, float]:
        """Busy seconds of each stage (and of ``wait``), over one epoch or all."""
        out = dict.fromkeys((*STAGES, WAIT), 0.0)
        with self._lock:
            for s in self.spans:
                if epoch is None or s.epoch == epoch:
                    out[s.stage] = out.get(s.stage, 0.0) + s.seconds
        return out

    def wall(self, epoch: int | None = None) -> float:
        """Wall seconds of one epoch's batches, or of every epoch (not what ran between)."""
        with self._lock:
            if epoch is not None and epoch in self.epochs:
                start, end = self.epochs[epoch]
                return end - start
            if epoch is None and self.epochs:
                return sum(end - start for start, end in self.epochs.values())
            spans = [s for s in self.spans if epoch is None or s.epoch == epoch]
        return max(s.end for s in spans) - min(s.start for s in spans) if spans else 0.0

    def chrome_trace(self) -> dict:
        """The spans as Chrome trace events: ``ph: X`` per span, one ``tid`` per stage."""
        names = (*STAGES, WAIT)
        events: list[dict] = [{"name": "process_name", "ph": "M", "pid": self.process,
                               "tid": 0, "args": {"name": f"graphsys rank {self.process}"}}]
        for tid, name in enumerate(names):
            events.append({"name": "thread_name", "ph": "M", "pid": self.process, "tid": tid,
                           "args": {"name": name}})
            events.append({"name": "thread_sort_index", "ph": "M", "pid": self.process,
                           "tid": tid, "args": {"sort_index": tid}})
        with self._lock:
            spans = list(self.spans)
        for s in spans:
            events.append({"name": s.stage, "cat": "stage", "ph": "X", "pid": self.process,
                           "tid": names.index(s.stage),
                           "ts": (s.start - self.origin) * 1e6, "dur": s.seconds * 1e6,
                           "args": {"epoch": s.epoch, "batch": s.batch}})
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"producer": "graphsys", "stages": list(STAGES)}}

    def save(self, path: str | os.PathLike) -> None:
        """Write the Chrome trace JSON to ``path`` (whole or not at all)."""
        atomic_write_bytes(path, json.dumps(self.chrome_trace()).encode())

    def summary(self, epoch: int | None = None) -> str:
        """Where the time went: each stage's busy seconds against the wall clock."""
        totals = self.totals(epoch)
        wall = self.wall(epoch)
        slowest = max(STAGES, key=lambda s: totals[s])
        lines = [f"{'stage':<8} {'busy s':>8} {'of wall':>8}"]
        for stage in (*STAGES, WAIT):
            share = totals[stage] / wall if wall else 0.0
            label = stage if stage != WAIT else "stalled"
            lines.append(f"{label:<8} {totals[stage]:>8.2f} {share:>8.0%}")
        ratio = wall / totals[slowest] if totals[slowest] else float("inf")
        lines.append(f"wall {wall:.2f}s = {ratio:.2f}x the slowest stage ({slowest}); "
                     f"serial would be about {sum(totals[s] for s in STAGES):.2f}s")
        return "\n".join(lines)
