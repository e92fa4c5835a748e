"""Sub-byte code packing shared by every INT4 format (no graphsys imports).

It sits below all subpackages so that both the CUDA kernels (:mod:`graphsys.cuda.quant`)
and the frozen-layer codecs (:mod:`graphsys.storage.codecs`) use one layout without
either importing the other.
"""

from __future__ import annotations

import torch


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """4-bit codes ``[n, dim]`` (uint8 0..15) two per byte: ``[n, ceil(dim / 2)]``,
    the even channel in the low nibble."""
    if q.shape[1] % 2:
        q = torch.nn.functional.pad(q, (0, 1))
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """The inverse of :func:`pack_nibbles`: uint8 codes ``[n, dim]``."""
    return torch.stack((packed & 15, packed >> 4), 2).reshape(packed.shape[0], -1)[:, :dim]
