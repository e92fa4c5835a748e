"""Layer-wise full-neighbour inference, batched so it works on graphs of any size.

Mini-batch inference with all neighbours over L layers touches the L-hop neighbourhood
of every batch, which explodes on large graphs. Computing one layer at a time for all
nodes, each from the previous layer's outputs, costs one pass over the edges per layer
(as in DGL's GraphSAGE example); the last layer runs only for the nodes asked for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from graphsys._progress import progress_bar
from graphsys.graph.csc import CSCGraph
from graphsys.loader.gather import gather_rows
from graphsys.samplers.neighbor import NeighborSampler


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


@torch.no_grad()
def layerwise_inference(model: Any, graph: CSCGraph, features: Any, *,
                        nodes: np.ndarray | None = None, batch_size: int = 4096,
                        device: torch.device | str = "cpu", progress: bool = False,
                        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                        first_layer: int = 0) -> torch.Tensor:
    """Outputs of ``model`` for ``nodes`` (all nodes if None), using every neighbour.

    ``model`` must expose ``num_layers`` and ``layer_forward(i, block, h)``. Hidden
    layers are computed for all nodes and kept in host memory (``num_nodes x hidden``
    floats); ``features`` is read in batches, so it may be memory-mapped or zarr.
    ``transform`` is applied to input features only (the first layer's input).
    ``first_layer = k`` starts at layer ``k`` with ``features`` as its input (e.g. a
    frozen-layer cache of layer ``k``'s input); ``transform`` is then not applied.
    """
    was_training = model.training
    model.eval()
    num_nodes = graph.num_nodes()
    all_nodes = np.arange(num_nodes, dtype=np.int64)
    h: Any = features
    try:
        for layer in range(first_layer, model.num_layers):
            last = layer == model.num_layers - 1
            targets = nodes if (last and nodes is not None) else all_nodes
            out: torch.Tensor | None = None
            for start, y in layer_batches(model, layer, graph, h, targets,
                                          batch_size=batch_size, device=device,
                                          progress=progress,
                                          transform=transform if layer == 0 else None):
                if out is None:
                    out = torch.empty((len(targets), *y.shape[1:]), dtype=y.dtype)
                out[start : start + y.shape[0]] = y
            h = out if out is not None else torch.empty((0,))
    finally:
        model.train(was_training)
    return h
