"""A drop-in for ``dgl.dataloading.DataLoader`` that samples ahead in a background thread."""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch

from graphsys.graph.construct import not_a_graph
from graphsys.graph.csc import CSCGraph
from graphsys.graph.frame import rows_of
from graphsys.loader import device_path
from graphsys.loader.gather import gather_rows
from graphsys.loader.seed_split import global_batch_count, rank_batches
from graphsys.loader.streams import Handed, handoff_stream
from graphsys.samplers.block import EID, MiniBatch
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
        csc = from_dgl(graph)
        for name, value in graph.ndata.items():  # node ids are kept: prefetch reads these
            csc.ndata[name] = value
        return csc
    if hasattr(graph, "edge_index"):  # a PyG Data
        from graphsys.graph.interop import from_pyg
        return from_pyg(graph)
    raw = not_a_graph(graph)
    if raw is not None:
        raise raw
    raise TypeError(f"graph must be a graphsys CSCGraph or Dataset, a DGLGraph or a PyG Data, "
                    f"got {type(graph).__name__}")


def _check_not_per_type(name: str, data: Any) -> None:
    """Refuse DGL's per-node-type dict (``features={'paper': x}``), which would otherwise
    fail the row count check with a misleading count (the number of keys)."""
    if isinstance(data, Mapping):
        types = ", ".join(repr(k) for k in list(data)[:3]) + (", ..." if len(data) > 3 else "")
        raise TypeError(f"{name} is a dict keyed by node type ({types}): per-type {name} "
                        "need a heterogeneous graph, which graphsys does not support yet; pass "
                        f"one tensor or feature store with a row per node ({name}=x)")


def ddp_rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``
    (what ``use_ddp=True`` splits the seeds by)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _either(ours: Any, ours_name: str, dgl: Any, dgl_name: str) -> Any:
    """One of two names for the same argument (ours, DGL's keyword), given at most once."""
    if ours is not None and dgl is not None:
        raise TypeError(f"DataLoader got both {ours_name}= and {dgl_name}= (DGL's name for "
                        "it); pass one")
    if ours is None and dgl is None:
        raise TypeError(f"DataLoader missing {ours_name} (DGL: {dgl_name}=)")
    return ours if ours is not None else dgl


def _prefetches(sampler: Any) -> bool:
    return any(getattr(sampler, name, ()) for name in
               ("prefetch_node_feats", "prefetch_labels", "prefetch_edge_feats"))


def _frame_entry(frame: Any, name: str, what: str) -> Any:
    if name not in frame:
        raise KeyError(f"the sampler prefetches {what}[{name!r}] but the graph's {what} has "
                       f"{sorted(frame) or 'nothing'}; set g.{what}[{name!r}] (a tensor or a "
                       "feature store) before building the DataLoader")
    return frame[name]


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
        seeds: node ids (or a boolean mask) to cover each epoch. DGL's keyword
            ``indices=`` is the same argument. A repeated id is kept, as DGL keeps it:
            its batch samples each copy on its own (see :meth:`NeighborSampler.sample`).
        sampler: a :class:`NeighborSampler` (anything with ``sample(graph, seeds, key=)``).
            DGL's keyword ``graph_sampler=`` is the same argument. Names the sampler
            prefetches (``prefetch_node_feats``, ``prefetch_labels``,
            ``prefetch_edge_feats``) are gathered from ``graph.ndata``/``graph.edata``
            into ``blocks[0].srcdata``, ``blocks[-1].dstdata`` and each block's
            ``edata``, as DGL does. ``ndata['feat']`` and ``ndata['label']`` take the
            place of ``features=``/``labels=`` when those are not given, so a feature
            store there is read through its tiers (packed segments, device cache
            look-ahead) exactly as ``features=`` would be.
        batch_size, shuffle, drop_last: as in ``torch.utils.data.DataLoader``.
        device: where yielded blocks and data live (default: the sampler's
            ``output_device``, else CPU).
        use_ddp: split the seeds between the ranks of the initialised
            ``torch.distributed`` group (rank 0 of 1 without one): every rank draws the
            same permutation and takes a disjoint slice of each global batch of
            ``batch_size * world_size`` seeds (see :mod:`graphsys.loader.seed_split`),
            so all ranks run the same number of steps and together cover the seeds.
        ddp_seed: the seed of that shared permutation when ``seed`` is not given
            (DGL's default 0, so ranks agree without a shared ``torch.manual_seed``).
        use_uva: DGL's device path: pin the graph and the feature/label tensors in host
            memory, sample on the GPU (:class:`~graphsys.cuda.GPUNeighborSampler`
            replaces a plain :class:`NeighborSampler`, with the same samples) and gather
            rows by zero-copy UVA reads straight into device memory. On a CPU device
            the same calls run their CPU twins.
        graph_memory: ``'pinned'`` (default with ``use_uva``) or ``'device'``: where
            the device path keeps the graph structure (and, without ``use_uva``,
            the feature tensor). A graph already on a GPU or pinned takes this path too.
        features: rows indexable by node id (tensor, memory-mapped tensor, zarr
            features, any graphsys feature store); fills ``blocks[0].srcdata['feat']``.
        labels: fills ``blocks[-1].dstdata['label']``.
        num_workers, persistent_workers, use_prefetch_thread, use_alternate_streams,
        pin_prefetcher, worker_init_fn, prefetch_factor: DGL's, accepted with no effect
            (sampling runs in the compiled kernel's threads, in one background thread).
        prefetch: batches prepared ahead of the consumer (bounded queue), at least 1.
        background: make batches in a background thread, ``prefetch`` ahead, while the
            consumer trains; ``False``: in the consumer's thread, one at a time, as DGL
            does with ``num_workers=0``. ``None`` (default): in the background on a GPU,
            and on the CPU only when the process has more cores than torch's threads.
            With no core to spare, the sampler's threads and torch's OpenMP workers,
            which spin while they wait for work, take the cores from each other: a
            GAT script on 2 cores ran 3-8x slower than with the thread off.
        seed: random seed of the shuffle and the sampler's batch keys; by default
            drawn from torch's generator, so ``torch.manual_seed`` makes runs repeatable.

    Epoch ``e`` (counted by iterations, or set with :meth:`set_epoch`) always yields the
    same batches for the same seed, whatever the thread count, so a resumed run
    continues exactly where it stopped.
    """

    def __init__(self, graph: Any, seeds: Any = None, sampler: NeighborSampler | None = None,
                 *, indices: Any = None, graph_sampler: NeighborSampler | None = None,
                 batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
                 device: torch.device | str | None = None, features: Any = None,
                 labels: Any = None, prefetch: int = 2, seed: int | None = None,
                 use_uva: bool | None = None, graph_memory: str | None = None,
                 use_ddp: bool = False, ddp_seed: int = 0, background: bool | None = None,
                 **dgl_kwargs: Any) -> None:
        unknown = set(dgl_kwargs) - _IGNORED_DGL_ARGS
        if unknown:
            raise TypeError(f"DataLoader got unexpected argument(s) {sorted(unknown)}")
        seeds = _either(seeds, "seeds", indices, "indices")
        sampler = _either(sampler, "sampler", graph_sampler, "graph_sampler")
        if not hasattr(sampler, "sample"):
            raise TypeError(f"sampler must have a sample(graph, seeds) method, e.g. "
                            f"graphsys.NeighborSampler([10, 10]); got {type(sampler).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be an integer >= 1, got {prefetch!r}")
        if isinstance(getattr(graph, "graph", None), CSCGraph) and hasattr(graph, "__getitem__") \
                and _prefetches(sampler):
            graph = graph[0]  # a graphsys Dataset: its graph with feat/label in ndata
        self.graph = _as_csc(graph)
        num_nodes = self.graph.num_nodes()
        if isinstance(seeds, torch.Tensor):
            seeds = seeds.detach().cpu().numpy()
        if isinstance(seeds, np.ndarray) and seeds.dtype == bool:
            if len(seeds) != num_nodes:
                raise ValueError(f"the boolean seed mask has {len(seeds)} entries but the graph "
                                 f"has {num_nodes} nodes; pass one entry per node")
            seeds = np.flatnonzero(seeds)
        # Repeated seeds stay, as in DGL: a batch holding a node twice samples it twice.
        self.seeds = as_node_ids(seeds, num_nodes, "seeds")
        features, labels = self._take_prefetch(sampler, features, labels)
        for name, data in (("features", features), ("labels", labels)):
            _check_not_per_type(name, data)
            if data is not None and rows_of(data) != num_nodes:
                raise ValueError(f"{name} has {rows_of(data)} rows but the graph has "
                                 f"{num_nodes} nodes; pass one row per node")
        if device is None:
            device = getattr(sampler, "output_device", None)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        if self.device.type == "cuda" and not torch.cuda.is_available():
            # Said here, not at the first batch (torch's "Cannot access accelerator device").
            raise ValueError(f"device={str(self.device)!r} but torch sees no CUDA device "
                             f"(torch {torch.__version__}); pass device='cpu', or run on a "
                             "machine with a GPU and a CUDA build of torch")
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
        if background is not None and not isinstance(background, bool):
            raise TypeError(f"background must be True, False or None, got {background!r}")
        self.background = background
        #: ``(rank, world_size)`` with ``use_ddp``, else None (all seeds, one process).
        self.ddp: tuple[int, int] | None = None
        if use_ddp:
            rank, world = ddp_rank_and_world()
            if len(self.seeds) < world:
                raise ValueError(f"{len(self.seeds)} seeds cannot be split over {world} "
                                 "ranks; use fewer processes or more seeds")
            self.ddp = (int(rank), int(world))
            if seed is None:
                seed = int(ddp_seed)
        self.seed = int(torch.randint(0, 2**31 - 1, ()).item()) if seed is None else int(seed)
        self.epoch = 0
        self._sources: dict[str, tuple[Any, Any]] = {}

    def _take_prefetch(self, sampler: Any, features: Any, labels: Any) -> tuple[Any, Any]:
        """Resolve the sampler's ``prefetch_*`` names against the graph's frames.

        ``ndata['feat']`` / ``ndata['label']`` become ``features`` / ``labels`` when those
        are not given (one read path, with every store hook); other names are gathered
        beside them. Returns ``(features, labels)``.
        """
        node_names = tuple(getattr(sampler, "prefetch_node_feats", ()) or ())
        label_names = tuple(getattr(sampler, "prefetch_labels", ()) or ())
        edge_names = tuple(getattr(sampler, "prefetch_edge_feats", ()) or ())
        ndata = self.graph.ndata if node_names or label_names else {}
        if "feat" in node_names and features is None:
            features = _frame_entry(ndata, "feat", "ndata")
        if "label" in label_names and labels is None:
            labels = _frame_entry(ndata, "label", "ndata")
        #: ``(name, data)`` gathered into blocks[0].srcdata / blocks[-1].dstdata / edata.
        self._extra_src = [(n, _frame_entry(ndata, n, "ndata")) for n in node_names
                           if n != "feat"]
        self._extra_dst = [(n, _frame_entry(ndata, n, "ndata")) for n in label_names
                           if n != "label"]
        self._extra_edge = [(n, _frame_entry(self.graph.edata, n, "edata"))
                            for n in edge_names]
        return features, labels

    def _source(self, name: str, data: Any = None) -> Any:
        """``features``/``labels`` (or a prefetched ``data`` under key ``name``) as the
        device path reads them, prepared once per object (the trainer swaps ``features``
        for a cache after building the loader)."""
        data = getattr(self, name) if data is None else data
        cached = self._sources.get(name)
        if cached is None or cached[0] is not data:
            cached = (data, device_path.row_source(data, self.path))
            self._sources[name] = cached
        return cached[1]

    def __len__(self) -> int:
        n = len(self.seeds)
        if self.ddp is not None:
            return global_batch_count(n, self.batch_size, self.ddp[1], self.drop_last)
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
        if self.ddp is not None:  # this rank's slice of each global batch
            return rank_batches(order, self.batch_size, *self.ddp, self.drop_last)
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
        self._fill_prefetched(batch, lambda key, data, ids: gather_rows(data, ids))
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
        self._fill_prefetched(batch, lambda key, data, ids: device_path.gather(
            self._source(key, data), ids, path))
        return batch

    def _fill_prefetched(self, batch: MiniBatch,
                         gather: Callable[[str, Any, torch.Tensor], torch.Tensor]) -> None:
        """The sampler's other ``prefetch_*`` names, read from the graph's frames;
        ``gather(key, data, ids)`` reads rows (``key`` names the source for caching)."""
        if self._extra_src:
            first = batch.blocks[0]
            for name, data in self._extra_src:
                first.srcdata[name] = gather(f"ndata:{name}", data, batch.input_nodes)
        if self._extra_dst:
            last = batch.blocks[-1]
            for name, data in self._extra_dst:
                last.dstdata[name] = gather(f"ndata:{name}", data, batch.output_nodes)
        for name, data in self._extra_edge:
            for block in batch.blocks:
                block.edata[name] = gather(f"edata:{name}", data, block.edata[EID])

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

    def _in_background(self) -> bool:
        """Whether batches are made in a background thread (see ``background``)."""
        if self.background is not None:
            return self.background
        if self.path is not None or self.device.type != "cpu":
            return True
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return cores > torch.get_num_threads()

    def __iter__(self) -> Iterator[MiniBatch]:
        epoch = self.epoch
        self.epoch += 1
        if not self._in_background():
            for batch in self._batches(epoch):
                yield batch.to(self.device) if self.device.type != "cpu" else batch
            return
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


#: DGL's old name for :class:`DataLoader` (``dgl.dataloading.NodeDataLoader``), still in
#: DGL 2.1 and in many of its examples.
NodeDataLoader = DataLoader
