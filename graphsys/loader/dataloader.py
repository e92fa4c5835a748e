"""A drop-in for ``dgl.dataloading.DataLoader`` that samples ahead in a background thread."""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from graphsys.graph.csc import CSCGraph
from graphsys.loader import device_path
from graphsys.loader.gather import gather_rows
from graphsys.loader.streams import Handed, handoff_stream
from graphsys.samplers import _kernels
from graphsys.samplers.block import MiniBatch
from graphsys.samplers.neighbor import NeighborSampler, as_node_ids

#: DGL DataLoader arguments that are accepted for compatibility and have no effect here:
#: sampling is already parallel inside the compiled kernel, in one background thread
#: (which, on the device path, works on its own CUDA stream).
_IGNORED_DGL_ARGS = frozenset({"num_workers", "persistent_workers", "use_prefetch_thread",
                               "use_alternate_streams", "pin_prefetcher",
                               "worker_init_fn", "prefetch_factor"})


def _as_csc(graph: Any) -> CSCGraph:
    if isinstance(graph, CSCGraph):
        return graph
    if hasattr(graph, "graph") and isinstance(graph.graph, CSCGraph):  # a graphsys Dataset
        return graph.graph
    if hasattr(graph, "adj_tensors"):  # a DGLGraph
        from graphsys.graph.interop import from_dgl
        return from_dgl(graph)
    if hasattr(graph, "edge_index"):  # a PyG Data
        from graphsys.graph.interop import from_pyg
        return from_pyg(graph)
    raise TypeError(f"graph must be a graphsys CSCGraph or Dataset, a DGLGraph or a PyG Data, "
                    f"got {type(graph).__name__}")


class _Stop:
    """Marks the end of the producer's batches (or carries its exception)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class DataLoader:
    """Iterate ``input_nodes, output_nodes, blocks`` over mini-batches of ``seeds``.

    Written like DGL's::

        sampler = graphsys.NeighborSampler([10, 10])
        loader = graphsys.DataLoader(graph, train_idx, sampler, batch_size=1024,
                                     shuffle=True, features=feats, labels=labels)
        for input_nodes, output_nodes, blocks in loader:
            logits = model(blocks, blocks[0].srcdata["feat"])
            loss = F.cross_entropy(logits, blocks[-1].dstdata["label"])

    Args:
        graph: a :class:`CSCGraph` (or a graphsys Dataset, a DGLGraph, a PyG ``Data``).
        seeds: node ids (or a boolean mask) to cover each epoch; must be distinct.
        sampler: a :class:`NeighborSampler` (anything with ``sample(graph, seeds, key=)``).
        batch_size, shuffle, drop_last: as in ``torch.utils.data.DataLoader``.
        device: where yielded blocks and data live (default CPU).
        use_uva: DGL's device path: pin the graph and the feature/label tensors in host
            memory, sample on the GPU (:class:`~graphsys.cuda.GPUNeighborSampler`
            replaces a plain :class:`NeighborSampler`, with the same samples) and gather
            rows by zero-copy UVA reads straight into device memory. On a CPU device
            the same calls run their CPU twins.
        graph_memory: ``'pinned'`` (default with ``use_uva``) or ``'device'``: where
            the device path keeps the graph structure (and, without ``use_uva``,
            the feature tensor). A graph already on a GPU or pinned takes this path too.
        features: rows indexable by node id (tensor, memory-mapped tensor, zarr
            features); fills ``blocks[0].srcdata['feat']``.
        labels: fills ``blocks[-1].dstdata['label']``.
        prefetch: batches prepared ahead of the consumer (bounded queue), at least 1.
        seed: random seed of the shuffle and the sampler's batch keys; by default
            drawn from torch's generator, so ``torch.manual_seed`` makes runs repeatable.

    Epoch ``e`` (counted by iterations, or set with :meth:`set_epoch`) always yields the
    same batches for the same seed, whatever the thread count, so a resumed run
    continues exactly where it stopped.
    """

    def __init__(self, graph: Any, seeds: Any, sampler: NeighborSampler, *,
                 batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 device: torch.device | str | None = None, features: Any = None,
                 labels: Any = None, prefetch: int = 2, seed: int | None = None,
                 use_uva: bool | None = None, graph_memory: str | None = None,
                 **dgl_kwargs: Any) -> None:
        unknown = set(dgl_kwargs) - _IGNORED_DGL_ARGS
        if unknown:
            raise TypeError(f"DataLoader got unexpected argument(s) {sorted(unknown)}")
        if not hasattr(sampler, "sample"):
            raise TypeError(f"sampler must have a sample(graph, seeds) method, e.g. "
                            f"graphsys.NeighborSampler([10, 10]); got {type(sampler).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be an integer >= 1, got {prefetch!r}")
        self.graph = _as_csc(graph)
        num_nodes = self.graph.num_nodes()
        if isinstance(seeds, torch.Tensor):
            seeds = seeds.detach().cpu().numpy()
        if isinstance(seeds, np.ndarray) and seeds.dtype == bool:
            if len(seeds) != num_nodes:
                raise ValueError(f"the boolean seed mask has {len(seeds)} entries but the graph "
                                 f"has {num_nodes} nodes; pass one entry per node")
            seeds = np.flatnonzero(seeds)
        self.seeds = as_node_ids(seeds, num_nodes, "seeds")
        if not _kernels.all_distinct(self.seeds):
            raise ValueError("seeds contain duplicate node ids; pass each node once")
        for name, data in (("features", features), ("labels", labels)):
            if data is not None and len(data) != num_nodes:
                raise ValueError(f"{name} has {len(data)} rows but the graph has {num_nodes} "
                                 "nodes; pass one row per node")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        #: None for the plain path (CPU sampling, host gathers, one copy per batch).
        self.path = device_path.resolve(self.graph, sampler, self.device, use_uva,
                                        graph_memory)
        self.sampler = sampler if self.path is None else \
            device_path.device_sampler(sampler, self.path)
        self.batch_size = batch_size
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.features = features
        self.labels = labels
        self.prefetch = prefetch
        self.seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
        self.epoch = 0
        self._sources: dict[str, tuple[Any, Any]] = {}

    def _source(self, name: str) -> Any:
        """``features``/``labels`` as the device path reads them, prepared once per object
        (the trainer swaps ``features`` for a cache after building the loader)."""
        data = getattr(self, name)
        cached = self._sources.get(name)
        if cached is None or cached[0] is not data:
            cached = (data, device_path.row_source(data, self.path))
            self._sources[name] = cached
        return cached[1]

    def __len__(self) -> int:
        n = len(self.seeds)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration yield the batches of ``epoch``."""
        self.epoch = int(epoch)

    def seed_order(self, epoch: int) -> np.ndarray:
        """The seeds in the order ``epoch`` visits them (a permutation if shuffling)."""
        if not self.shuffle:
            return self.seeds
        return self.seeds[np.random.default_rng([self.seed, epoch]).permutation(len(self.seeds))]

    def batch_seeds(self, epoch: int) -> list[np.ndarray]:
        """The seed ids of each batch of ``epoch`` (shuffled per epoch if asked)."""
        order = self.seed_order(epoch)
        return [order[i : i + self.batch_size] for i in range(0, len(self) * self.batch_size,
                                                              self.batch_size)]

    @staticmethod
    def batch_key(epoch: int, index: int) -> int:
        """The sampler key of batch ``index`` of ``epoch`` (offline sampling reuses it)."""
        return (epoch << 32) + index

    def _sample(self, epoch: int, index: int, seeds: np.ndarray) -> MiniBatch:
        return self.sampler.sample(self.graph, seeds, key=self.batch_key(epoch, index))

    def _fill(self, epoch: int, index: int, batch: MiniBatch) -> MiniBatch:
        if hasattr(self.features, "prepare"):  # a packed store: this batch's segment
            self.features.prepare(epoch, index, batch.input_nodes.cpu())
        if self.path is not None:
            return self._fill_on_device(batch)
        if self.features is not None:
            batch.blocks[0].srcdata["feat"] = gather_rows(self.features, batch.input_nodes)
        if self.labels is not None:
            batch.blocks[-1].dstdata["label"] = gather_rows(self.labels, batch.output_nodes)
        if self.device.type == "cuda":
            for block in batch.blocks:
                block.pin_memory()
        return batch

    def _fill_on_device(self, batch: MiniBatch) -> MiniBatch:
        """The device path's fill: rows gathered straight to the device, no host copy."""
        path = self.path
        if self.features is not None:
            batch.blocks[0].srcdata["feat"] = device_path.gather(
                self._source("features"), batch.input_nodes, path)
        if self.labels is not None:
            batch.blocks[-1].dstdata["label"] = device_path.gather(
                self._source("labels"), batch.output_nodes, path)
        return batch

    def _batches(self, epoch: int) -> Iterator[MiniBatch]:
        """Sampled, filled batches of ``epoch``, in order."""
        for index, batch, pending in self._sampled_ahead(epoch,
                                                         enumerate(self.batch_seeds(epoch))):
            batch = self._fill(epoch, index, batch)
            self._prefetch_ahead(pending)
            yield batch

    def _sampled_ahead(self, epoch: int, seeds: Iterator[tuple[int, np.ndarray]],
                       sample: Callable[[int, int, np.ndarray], MiniBatch] | None = None
                       ) -> Iterator[tuple[int, MiniBatch, deque]]:
        """``(index, batch, pending)`` for ``seeds`` (``(index, seed ids)`` pairs), in order.

        A feature store with ``lookahead = k > 0`` (a :class:`DeviceCache`) needs the
        input nodes of the next ``k`` batches after each read, so batches are sampled
        ``k`` ahead; ``pending`` holds them (pass it to :meth:`_prefetch_ahead`).
        ``sample`` replaces :meth:`_sample` (the pipeline times it).
        """
        sample = sample or self._sample
        lookahead = int(getattr(self.features, "lookahead", 0) or 0)
        pending: deque[tuple[int, MiniBatch]] = deque()
        while True:
            while len(pending) <= lookahead:
                nxt = next(seeds, None)
                if nxt is None:
                    break
                pending.append((nxt[0], sample(epoch, *nxt)))
            if not pending:
                return
            index, batch = pending.popleft()
            yield index, batch, pending

    def _prefetch_ahead(self, pending: deque) -> None:
        """Let a store with a lookahead bring the pending batches' rows on device.

        Called after every read (with an empty window at the epoch's end)."""
        if int(getattr(self.features, "lookahead", 0) or 0):
            self.features.prefetch([b.input_nodes for _, b in pending])

    def _produce(self, epoch: int, out: queue.Queue, stop: threading.Event) -> None:
        def put(item: object) -> bool:
            while not stop.is_set():
                try:
                    out.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            with handoff_stream(self.device if self.path is not None else None) as handoff:
                for batch in self._batches(epoch):
                    if not put(handoff.send(batch)):
                        return
            put(_Stop())
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put(_Stop(exc))

    def __iter__(self) -> Iterator[MiniBatch]:
        epoch = self.epoch
        self.epoch += 1
        out: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        worker = threading.Thread(target=self._produce, args=(epoch, out, stop),
                                  name=f"graphsys-sampler-e{epoch}", daemon=True)
        worker.start()
        try:
            while True:
                item = out.get()
                if isinstance(item, _Stop):
                    if item.error is not None:
                        raise item.error
                    return
                if isinstance(item, Handed):
                    item = item.receive()
                yield item.to(self.device, non_blocking=True) if self.device.type != "cpu" \
                    else item
        finally:
            stop.set()
            worker.join()
