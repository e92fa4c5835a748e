"""Lossy row codecs for frozen-layer caches: FP16, and INT8/INT4 per row.

Every codec turns float32 rows ``[n, dim]`` into fixed-width byte rows ``[n, row_bytes]``
(uint8) and back, so any byte-row :class:`FeatureStore` tier can hold encoded rows
and the decoded ones come out the same whatever tier served them.

Stated bounds, element-wise, for a row ``x`` and its decoded ``x'`` (what
:meth:`Codec.error_bound` returns and the tests hold each codec to):

- ``fp32``: exact.
- ``fp16``: ``|x - x'| <= max(|x| * 2**-11, 2**-25)`` (round to nearest; values
  beyond float16's range are refused at encode time).
- ``int8`` / ``int4``: per row, ``step = (max(x) - min(x)) / L`` with ``L = 255`` or
  ``15``; ``|x - x'| <= step / 2`` plus float32 rounding (``4 ulp`` of the row's
  largest magnitude). ``min`` and ``step`` are stored as float32 after the codes
  (8 bytes a row); INT4 packs two codes per byte, even channels in the low nibble.

The integer codecs are :func:`graphsys.cuda.quant.quantize` and
:func:`~graphsys.cuda.quant.dequantize` (the same affine per-row map the quantized
layers aggregate), laid out as byte rows: there is one per-row quantiser. A constant
row stores step 0 (earlier caches stored 1; both decode to the row's value, as its
codes are all 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch

from graphsys.cuda.quant import QuantizedRows, dequantize, quantize

CodecName = Literal["fp32", "fp16", "int8", "int4"]
CODEC_NAMES: tuple[str, ...] = get_args(CodecName)
#: Float16's largest finite value; larger outputs would decode as infinity.
FP16_MAX = 65504.0
_META_BYTES = 8  # float32 row minimum and step


@dataclass(frozen=True)
class Codec:
    """One row codec (see the module docstring for the bounds).

    Example:
        >>> codec = Codec("int8")
        >>> rows = codec.encode(torch.randn(4, 64))      # uint8 [4, 72]
        >>> codec.decode(rows, 64).shape
        torch.Size([4, 64])
    """

    name: CodecName

    def __post_init__(self) -> None:
        if self.name not in CODEC_NAMES:
            raise ValueError(f"codec {self.name!r} is unknown; choose one of "
                             f"{', '.join(CODEC_NAMES)}")

    @property
    def bits(self) -> int:
        return {"fp32": 32, "fp16": 16, "int8": 8, "int4": 4}[self.name]

    @property
    def levels(self) -> int:
        """Largest integer code of an integer codec (255 or 15)."""
        return (1 << self.bits) - 1

    @property
    def is_integer(self) -> bool:
        return self.name in ("int8", "int4")

    def code_bytes(self, dim: int) -> int:
        return (dim * self.bits + 7) // 8

    def row_bytes(self, dim: int) -> int:
        """Bytes of one encoded row of ``dim`` channels (codes plus per-row metadata)."""
        return self.code_bytes(dim) + (_META_BYTES if self.is_integer else 0)

    # -- encode / decode -------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 ``[n, row_bytes(dim)]`` rows of float ``x`` ``[n, dim]`` (on x's device)."""
        if x.dim() != 2:
            raise ValueError(f"encode needs 2-D rows [n, dim], got shape {tuple(x.shape)}")
        x = x.detach().float().contiguous()
        if not bool(torch.isfinite(x).all()):
            raise ValueError("rows to encode contain NaN or infinity; the frozen layer's "
                             "outputs must be finite (lower the learning rate or freeze later)")
        if self.name == "fp32":
            return x.view(torch.uint8).reshape(x.shape[0], -1)
        if self.name == "fp16":
            if x.numel() and float(x.abs().max()) > FP16_MAX:
                raise ValueError(f"rows reach {float(x.abs().max()):.4g}, beyond float16's "
                                 f"{FP16_MAX:g}; use codec int8 or int4 for this layer")
            return x.half().view(torch.uint8).reshape(x.shape[0], -1)
        q = quantize(x, self.bits)  # type: ignore[arg-type]
        meta = torch.stack((q.zero, q.scale), 1).contiguous()
        return torch.cat((q.codes, meta.view(torch.uint8)), 1)

    def decode(self, rows: torch.Tensor, dim: int) -> torch.Tensor:
        """float32 ``[n, dim]`` from encoded uint8 ``rows`` ``[n, row_bytes(dim)]``."""
        if rows.dim() != 2 or rows.shape[1] != self.row_bytes(dim) or rows.dtype != torch.uint8:
            raise ValueError(f"{self.name} rows of {dim} channels must be uint8 "
                             f"[n, {self.row_bytes(dim)}], got {tuple(rows.shape)} {rows.dtype}")
        n = rows.shape[0]
        if self.name == "fp32":
            return rows.contiguous().view(torch.float32).reshape(n, dim)
        if self.name == "fp16":
            return rows.contiguous().view(torch.float16).reshape(n, dim).float()
        code_bytes = self.code_bytes(dim)
        # Copied into fresh storage, not .contiguous(): a one-row slice counts as contiguous
        # yet starts at byte code_bytes, and float32 cannot view it unless that is a
        # multiple of 4.
        meta = rows.new_empty((n, _META_BYTES)).copy_(rows[:, code_bytes:]).view(torch.float32)
        return dequantize(QuantizedRows(rows[:, :code_bytes], meta[:, 1].contiguous(),
                                        meta[:, 0].contiguous(), dim, self.bits))

    def error_bound(self, x: torch.Tensor) -> torch.Tensor:
        """The largest ``|x - decode(encode(x))|`` this codec allows, element-wise."""
        x = x.detach().float()
        if self.name == "fp32":
            return torch.zeros_like(x)
        if self.name == "fp16":
            return torch.clamp(x.abs() * 2.0**-11, min=2.0**-25)
        if x.shape[1] == 0:
            return torch.zeros_like(x)
        # quantize's step: 0 for a constant row, which decodes exactly.
        step = (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) / self.levels
        ulp = torch.finfo(torch.float32).eps * x.abs().amax(1, keepdim=True)
        return (step / 2 + 4 * ulp).expand_as(x)

    def compression(self, dim: int) -> float:
        """FP32 bytes per encoded byte of a row (before any chunk compression)."""
        return 4 * dim / self.row_bytes(dim)


def codec_for_stage(codecs: tuple[str, ...], frozen: int) -> Codec:
    """The codec of the cache made when ``frozen`` layers are frozen (1 = the first).

    Progressive: stage ``k`` takes ``codecs[k - 1]``, the last entry repeating.
    """
    if frozen < 1:
        raise ValueError(f"frozen must be >= 1, got {frozen}")
    if not codecs:
        raise ValueError("codecs is empty; pass one codec per freezing stage, e.g. int8,int4")
    return Codec(codecs[min(frozen, len(codecs)) - 1])  # type: ignore[arg-type]
