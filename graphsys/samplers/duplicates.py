"""Seeds that repeat a node, sampled as DGL 2.1's CPU ``NeighborSampler`` samples them.

DGL keeps repeated seeds (measured with its default fused sampler, more than one
thread): ``output_nodes`` are the seeds as given; every copy is a destination node of
its own with its own, independent draw; a block's source nodes start with its
destination nodes as given, repeats included, so the repeats reach every layer; a
source that is a repeated node points at one of its copies. DGL's map is written in
parallel, so which copy varies between runs; here it is always the last.

The samplers take this path only when ``all_distinct`` finds a repeat, and even then
run their usual kernels over all destinations (a draw depends only on the batch key
and the node, so copies first draw alike) and their usual relabelling over the first
copies; the helpers here then re-draw the later copies and put the copies back.
Only the seeds can repeat: every later layer appends distinct new nodes after them,
so all of this costs O(seeds) beyond one gather per edge. Torch only, so the CPU and
GPU samplers share it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

#: ``draw(nodes, key) -> (counts, values)``: one layer's kernel on ``nodes``.
Draw = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]

_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class Copies:
    """Where a batch's seeds repeat nodes (see :meth:`of`)."""

    #: Per seed, how many equal seeds come before it (0: a first copy).
    ranks: torch.Tensor
    #: Per seed, the position of its node's first copy.
    first: torch.Tensor

    @classmethod
    def of(cls, seeds: torch.Tensor) -> Copies:
        """The copies in ``seeds`` (int64, any device)."""
        ordered, order = torch.sort(seeds, stable=True)
        n = seeds.numel()
        position = torch.arange(n, device=seeds.device)
        starts = torch.ones(n, dtype=torch.bool, device=seeds.device)
        starts[1:] = ordered[1:] != ordered[:-1]
        group_start = torch.cummax(torch.where(starts, position, 0), 0).values
        ranks = torch.empty_like(position)
        ranks[order] = position - group_start
        first = torch.empty_like(position)
        first[order] = order[group_start]
        return cls(ranks, first)

    def first_copies(self, dst: torch.Tensor) -> torch.Tensor:
        """``dst`` (the seeds, then distinct new nodes) without the later copies: distinct,
        in order of first appearance, as the usual relabelling needs them."""
        k = self.ranks.numel()
        return torch.cat((dst[:k][self.ranks == 0], dst[k:]))


def copy_key(key: int, rank: int) -> int:
    """The stream key of the ``rank``-th copies (``rank >= 1``), distinct per rank."""
    x = (key * 0x9E3779B97F4A7C15 + rank * 0xC2B2AE3D27D4EB4F) & _MASK64
    x ^= x >> 31
    x = (x * 0xBF58476D1CE4E5B9) & _MASK64
    return (x ^ (x >> 29)) & 0x7FFFFFFFFFFFFFFF


def redraw_copies(dst: torch.Tensor, copies: Copies, counts: torch.Tensor,
                  values: torch.Tensor, key: int, draw: Draw) -> None:
    """Give every later copy among ``dst``'s seeds its own draw, in place in ``values``.

    ``counts``/``values`` are ``draw(dst, key)``: the kernels seed a node's draws by
    ``(key, node)``, so all copies of a node drew alike. Each rank of later copies is
    drawn again with :func:`copy_key` and written over its segments; a node keeps as
    many edges whatever the key, so the segments do not move.
    """
    offsets = torch.cumsum(counts, 0) - counts  # where each destination's segment starts
    for rank in range(1, int(copies.ranks.max()) + 1):
        where = torch.nonzero(copies.ranks == rank).squeeze(1)
        part_counts, part_values = draw(dst[where].contiguous(), copy_key(key, rank))
        shift = offsets[where] - (torch.cumsum(part_counts, 0) - part_counts)
        target = torch.repeat_interleave(shift, part_counts) + \
            torch.arange(part_values.numel(), device=dst.device)
        values[target] = part_values.to(values.dtype)


def restore_copies(dst: torch.Tensor, copies: Copies, src_nodes: torch.Tensor,
                   local: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(src_nodes, local)`` of the usual relabelling over :meth:`Copies.first_copies`,
    turned into ``dst``'s: the source nodes start with ``dst`` as given (repeats kept,
    as DGL keeps them), and an edge from a repeated node points at its last copy."""
    k, n_dst = copies.ranks.numel(), dst.numel()
    device = dst.device
    is_first = copies.ranks == 0
    n_first = int(is_first.sum())
    n_unique = n_first + n_dst - k
    # position[j]: where old local id j goes; first copies, later layers' nodes, the rest.
    position = torch.cat((torch.nonzero(is_first).squeeze(1), torch.arange(k, n_dst, device=device),
                          n_dst + torch.arange(src_nodes.numel() - n_unique, device=device)))
    later = torch.nonzero(~is_first).squeeze(1)
    unique_index = torch.cumsum(is_first, 0) - 1  # a first copy's old local id
    position.scatter_reduce_(0, unique_index[copies.first[later]], later, "amax")
    return torch.cat((dst, src_nodes[n_unique:])), position[local]
