"""Quantized aggregation for the layers in :mod:`graphsys.nn` (Degree-Quant style).

``SAGEConv(..., quantize="int8")`` aggregates neighbour messages from INT8 (or INT4)
rows with the fused kernel of :mod:`graphsys.cuda.quant`:

* a layer whose input is a :class:`~graphsys.cuda.QuantizedRows` (features stored
  INT8, a quarter of the memory and bus traffic) aggregates the codes directly; only
  the destination rows are dequantized, for ``fc_self``;
* a layer whose input is float activations quantizes the messages row-wise on the fly
  and aggregates those.

**Degree-aware protection** (Degree-Quant, Tailor et al. 2021): a node with many
in-edges sums many rounding errors, so the ``protect`` share of destinations with the
highest in-degree in each block is aggregated in float32 from the float32 messages
(ties broken by position, so the choice is deterministic). With INT8-stored input
features there is no float32 copy to fall back to, so the first layer protects nothing.

**Gradients**: :class:`QuantizedAggregate` is straight-through: its backward is the
float32 aggregation's transpose (``grad_src[j] += grad_dst[i] / deg_i``), as if the
forward had not been quantized.
"""

from __future__ import annotations

from typing import Literal

import torch

from graphsys.cuda.quant import QuantizedRows, aggregate, quantize
from graphsys.nn._aggregate import edge_endpoints
from graphsys.samplers.block import Block

Quantize = Literal["int8", "int4"]
BITS = {"int8": 8, "int4": 4}


def check_quantize(quantize: str | None) -> int | None:
    """Bits for a ``quantize`` option (``None`` for float32)."""
    if quantize is None:
        return None
    if quantize not in BITS:
        raise ValueError(f"quantize must be None, 'int8' or 'int4', got {quantize!r}")
    return BITS[quantize]


def protected_destinations(block: Block, protect: float) -> torch.Tensor:
    """Bool mask of the ``ceil(protect * num_dst)`` destinations of highest in-degree."""
    num_dst = block.num_dst_nodes()
    mask = torch.zeros(num_dst, dtype=torch.bool, device=block.indptr.device)
    count = min(num_dst, int(-(-protect * num_dst // 1))) if protect > 0 else 0
    if count:
        order = torch.sort(block.in_degrees(), descending=True, stable=True).indices
        mask[order[:count]] = True
    return mask


def _float_aggregate(block: Block, x: torch.Tensor, mean: bool,
                     dst_mask: torch.Tensor | None = None) -> torch.Tensor:
    src, dst = edge_endpoints(block)
    if dst_mask is not None:
        keep = dst_mask[dst]
        src, dst = src[keep], dst[keep]
    out = x.new_zeros(block.num_dst_nodes(), x.shape[1]).index_add_(0, dst, x[src])
    if mean:
        out = out / block.in_degrees().clamp(min=1).to(x.dtype)[:, None]
    return out


class QuantizedAggregate(torch.autograd.Function):
    """Mean/sum over in-edges from quantized messages; straight-through backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, block: Block, bits: int, mean: bool,
                protected: torch.Tensor | None) -> torch.Tensor:
        q = quantize(x, bits)
        out = aggregate(block.indptr, block.indices, q, "mean" if mean else "sum",
                        check=False)
        if protected is not None and bool(protected.any()):
            exact = _float_aggregate(block, x.detach().float(), mean, protected)
            out = torch.where(protected[:, None], exact, out)
        ctx.block, ctx.mean, ctx.num_src = block, mean, x.shape[0]
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        block = ctx.block
        src, dst = edge_endpoints(block)
        g = grad
        if ctx.mean:
            g = g / block.in_degrees().clamp(min=1).to(g.dtype)[:, None]
        grad_x = g.new_zeros(ctx.num_src, g.shape[1]).index_add_(0, src, g[dst])
        return grad_x, None, None, None, None


def aggregate_neighbours(block: Block, h: torch.Tensor | QuantizedRows, *, bits: int,
                         mean: bool = True, protect: float = 0.0) -> torch.Tensor:
    """Mean (or sum) over each destination's in-edges, reading quantized rows.

    ``h`` is float messages (quantized here, differentiable straight-through) or
    already-quantized rows (no gradient).
    """
    if isinstance(h, QuantizedRows):
        if len(h) != block.num_src_nodes():
            raise ValueError(f"quantized features have {len(h)} rows but the block has "
                             f"{block.num_src_nodes()} source nodes")
        return aggregate(block.indptr, block.indices, h, "mean" if mean else "sum",
                         check=False)
    protected = protected_destinations(block, protect) if protect > 0 else None
    return QuantizedAggregate.apply(h, block, bits, mean, protected)
