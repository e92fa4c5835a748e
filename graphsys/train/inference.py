"""Layer-wise full-neighbour inference, batched so it works on graphs of any size.

Mini-batch inference with all neighbours over L layers touches the L-hop neighbourhood
of every batch, which explodes on large graphs. Computing one layer at a time for all
nodes, each from the previous layer's outputs, costs one pass over the edges per layer
(as in DGL's GraphSAGE example); the last layer runs only for the nodes asked for.

Out of core (``spill_dir``): a hidden layer is written to disk as it is computed (a raw
row-major float32 file, the layout the stores read, written under a temporary name,
fsynced, then renamed) and the next layer reads it with ``O_DIRECT``: each batch's
source rows sorted, deduplicated and merged into runs of whole blocks (the
:class:`~graphsys.storage.direct.DirectFileStore`), so RAM holds a batch, never a layer.
:func:`write_outputs` does the same for the last layer (``graphsys infer``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphsys._atomic import atomic_write_bytes, fsync_dir
from graphsys._progress import progress_bar
from graphsys.errors import DatasetExistsError
from graphsys.graph.csc import CSCGraph
from graphsys.loader.gather import gather_rows
from graphsys.samplers.neighbor import NeighborSampler
from graphsys.storage.direct import DirectFileStore


@torch.no_grad()
def layer_batches(model: Any, layer: int, graph: CSCGraph, h: Any, targets: np.ndarray, *,
                  batch_size: int = 4096, device: torch.device | str = "cpu",
                  progress: bool = False,
                  transform: Callable[[torch.Tensor], torch.Tensor] | None = None
                  ) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, outputs)`` of layer ``layer`` for ``targets`` in batches, all neighbours.

    ``h`` holds every node's input to the layer (a tensor, a store); ``transform`` is
    applied to it. The caller sets the model's mode (eval for inference). Batches come
    in order, so a consumer can stream them to disk (frozen-layer caches do).
    """
    device = torch.device(device)
    sampler = NeighborSampler([-1])
    with progress_bar(total=len(targets), desc=f"inference layer {layer + 1}",
                      unit="node", enable=progress) as bar:
        for start in range(0, len(targets), batch_size):
            seeds = targets[start : start + batch_size]
            block = sampler.sample(graph, seeds, key=0).blocks[0]
            x = gather_rows(h, block.src_nodes).to(device, torch.float32)
            if transform is not None:
                x = transform(x)
            yield start, model.layer_forward(layer, block.to(device), x).cpu()
            bar.update(len(seeds))


class RowFileWriter:
    """Rows appended in order to a raw row-major file, published only when complete.

    Writes go to ``.<name>.partial`` beside ``path``; :meth:`close` fsyncs and renames it,
    so a reader never sees a half-written layer. Also hashes what it writes (sha256).
    """

    def __init__(self, path: Path, num_rows: int, dim: int) -> None:
        self.path, self.num_rows, self.dim = Path(path), int(num_rows), int(dim)
        self.tmp = self.path.with_name(f".{self.path.name}.partial")
        self._handle = open(self.tmp, "wb")
        self.rows = 0
        self.sha256 = hashlib.sha256()

    def write(self, rows: torch.Tensor) -> None:
        data = rows.detach().to("cpu", torch.float32).contiguous().numpy()
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise ValueError(f"rows of shape {tuple(data.shape)} for a file of {self.dim} "
                             "columns")
        self._handle.write(memoryview(data).cast("B"))
        self.sha256.update(memoryview(data).cast("B"))
        self.rows += data.shape[0]

    def close(self) -> Path:
        if self.rows != self.num_rows:
            self.abort()
            raise RuntimeError(f"{self.path}: {self.rows} rows written of {self.num_rows}")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def abort(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        self.tmp.unlink(missing_ok=True)


def _layer_to_file(model: Any, layer: int, graph: CSCGraph, h: Any, targets: np.ndarray,
                   path: Path, **options: Any) -> RowFileWriter:
    writer = RowFileWriter(path, len(targets), model.layer_out_feats(layer))
    try:
        for _, y in layer_batches(model, layer, graph, h, targets, **options):
            writer.write(y)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    return writer


@torch.no_grad()
def layerwise_inference(model: Any, graph: CSCGraph, features: Any, *,
                        nodes: np.ndarray | None = None, batch_size: int = 4096,
                        device: torch.device | str = "cpu", progress: bool = False,
                        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        first_layer: int = 0, spill_dir: str | os.PathLike | None = None,
                        read_buffer: int = 64 << 20) -> torch.Tensor:
    """Outputs of ``model`` for ``nodes`` (all nodes if None), using every neighbour.

    ``model`` must expose ``num_layers`` and ``layer_forward(i, block, h)``. Hidden
    layers are computed for all nodes and kept in host memory (``num_nodes x hidden``
    floats), or with ``spill_dir`` written to a temporary directory there and read back
    by ``O_DIRECT`` in ``read_buffer``-byte reads (removed when done); ``features`` is
    read in batches, so it may be memory-mapped, zarr or on disk.
    ``transform`` is applied to input features only (the first layer's input).
    ``first_layer = k`` starts at layer ``k`` with ``features`` as its input (e.g. a
    frozen-layer cache of layer ``k``'s input); ``transform`` is then not applied.
    """
    spill = Path(tempfile.mkdtemp(prefix=".graphsys-inference-", dir=spill_dir)) \
        if spill_dir is not None else None
    try:
        return _infer(model, graph, features, nodes=nodes, spill=spill, last_to=None,
                      first_layer=first_layer, transform=transform, read_buffer=read_buffer,
                      batch_size=batch_size, device=device, progress=progress)
    finally:
        if spill is not None:
            shutil.rmtree(spill, ignore_errors=True)


def _infer(model: Any, graph: CSCGraph, features: Any, *, nodes: np.ndarray | None,
           spill: Path | None, last_to: Path | None, first_layer: int,
           transform: Callable[[torch.Tensor], torch.Tensor] | None, read_buffer: int,
           **options: Any) -> Any:
    """Layers ``first_layer..`` of ``model``; hidden layers in ``spill`` if given, the last
    one's rows into the file ``last_to`` (then its :class:`RowFileWriter` is returned)."""
    was_training = model.training
    model.eval()
    num_nodes = graph.num_nodes()
    all_nodes = np.arange(num_nodes, dtype=np.int64)
    h: Any = features
    try:
        for layer in range(first_layer, model.num_layers):
            last = layer == model.num_layers - 1
            targets = nodes if (last and nodes is not None) else all_nodes
            step = dict(options, transform=transform if layer == first_layer else None)
            if last and last_to is not None:
                return _layer_to_file(model, layer, graph, h, targets, last_to, **step)
            if spill is not None and not last:
                path = _layer_to_file(model, layer, graph, h, targets,
                                      spill / f"layer-{layer}.bin", **step).path
                _close_spilled(h, features)
                h = DirectFileStore(path, num_nodes, model.layer_out_feats(layer),
                                    np.float32, max_buffer=read_buffer)
                continue
            out: torch.Tensor | None = None
            for start, y in layer_batches(model, layer, graph, h, targets, **step):
                if out is None:
                    out = torch.empty((len(targets), *y.shape[1:]), dtype=y.dtype)
                out[start : start + y.shape[0]] = y
            _close_spilled(h, features)
            h = out if out is not None else torch.empty((0,))
    finally:
        model.train(was_training)
        _close_spilled(h, features)
    return h


def _close_spilled(h: Any, features: Any) -> None:
    """Close a hidden layer's file store (never the caller's ``features``)."""
    if h is not features and isinstance(h, DirectFileStore):
        h.close()


@torch.no_grad()
def write_outputs(model: Any, graph: CSCGraph, features: Any, out: str | os.PathLike, *,
                  batch_size: int = 4096, device: torch.device | str = "cpu",
                  progress: bool = False,
                  transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  read_buffer: int = 64 << 20, meta: dict[str, Any] | None = None) -> Path:
    """Every node's last-layer output, out of core, as the directory ``out``.

    ``out`` holds ``outputs.bin`` (raw row-major float32, ``num_nodes`` rows: the layout
    the stores read) and ``outputs.json`` (shape, dtype, sha256, and ``meta``). Hidden
    layers spill beside it; the directory appears under its name only when complete, and
    an existing ``out`` is never replaced.
    """
    out = Path(out)
    if out.exists():
        raise DatasetExistsError(f"{out} already exists; choose another --out (graphsys "
                                 "never overwrites earlier outputs)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        spill = work / "hidden"
        spill.mkdir()
        writer = _infer(model, graph, features, nodes=None, spill=spill,
                        last_to=work / "outputs.bin", first_layer=0, transform=transform,
                        read_buffer=read_buffer, batch_size=batch_size, device=device,
                        progress=progress)
        shutil.rmtree(spill)
        info = {"format": "graphsys.outputs", "shape": [writer.num_rows, writer.dim],
                "dtype": "float32", "file": "outputs.bin",
                "sha256": writer.sha256.hexdigest(), **(meta or {})}
        atomic_write_bytes(work / "outputs.json", (json.dumps(info, indent=1) + "\n").encode())
        fsync_dir(work)
        os.rename(work, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out
