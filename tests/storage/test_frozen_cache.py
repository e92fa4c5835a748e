"""Frozen-layer caches: codec error bounds, every tier returns the decoded rows, atomicity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from graphsys.cuda.quant import dequantize, quantize
from graphsys.errors import DatasetError
from graphsys.storage import DeviceCache, TensorStore, make_policy
from graphsys.storage.codecs import Codec, codec_for_stage
from graphsys.storage.frozen import FrozenLayerCache, read_info, write_frozen_cache

EPS = torch.finfo(torch.float32).eps


def _rows(n: int = 300, dim: int = 37, seed: int = 0) -> torch.Tensor:
    """Rows with the shapes codecs must survive: offsets, wide and tiny ranges, ReLU zeros,
    a constant row, negative values, and one row with a single outlier."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=g)
    x[: n // 3] = torch.relu(x[: n // 3])  # post-ReLU rows: minimum 0
    x[n // 3 : n // 2] = x[n // 3 : n // 2] * 1e-3 + 500.0  # large offset, tiny range
    x[n // 2 : n // 2 + 10] *= 1e3
    x[-1] = 3.25  # constant
    x[-2, dim // 2] = 200.0  # one outlier stretches that row's range
    return x


@pytest.mark.parametrize("name", ["fp32", "fp16", "int8", "int4"])
@pytest.mark.parametrize("dim", [1, 37, 64])
def test_codec_error_within_its_stated_bound(name: str, dim: int) -> None:
    codec = Codec(name)
    x = _rows(dim=dim)
    encoded = codec.encode(x)
    assert encoded.dtype == torch.uint8 and encoded.shape == (len(x), codec.row_bytes(dim))
    error = (codec.decode(encoded, dim) - x).abs()
    # The bounds written out independently of Codec.error_bound.
    if name == "fp32":
        bound = torch.zeros_like(x)
    elif name == "fp16":
        bound = torch.clamp(x.abs() * 2.0**-11, min=2.0**-25)
    else:
        levels = 255 if name == "int8" else 15
        span = (x.amax(1, keepdim=True) - x.amin(1, keepdim=True))
        bound = span / levels / 2 + 4 * EPS * x.abs().amax(1, keepdim=True)
    assert bool((error <= bound).all()), float((error - bound).max())
    torch.testing.assert_close(codec.error_bound(x), bound.expand_as(x), rtol=1e-6, atol=0)
    # Integer codecs use their whole range: the error is not trivially zero.
    if name in ("int8", "int4") and dim > 1:
        assert float(error[: len(x) // 3].max()) > bound[: len(x) // 3].max() / 8
    assert float(error[-1].max()) == 0.0  # a constant row decodes exactly


def test_codec_sizes_pack_int4_two_per_byte() -> None:
    assert [Codec(n).row_bytes(64) for n in ("fp32", "fp16", "int8", "int4")] == \
        [256, 128, 72, 40]
    assert Codec("int4").row_bytes(5) == 3 + 8
    # Low nibble = even channel, high nibble = odd channel.
    x = torch.tensor([[0.0, 15.0, 1.0, 2.0]])
    assert Codec("int4").encode(x)[0, :2].tolist() == [0 | 15 << 4, 1 | 2 << 4]


@pytest.mark.parametrize(("name", "bits"), [("int8", 8), ("int4", 4)])
def test_integer_codecs_are_the_cuda_quantiser_in_byte_rows(name: str, bits: int) -> None:
    codec, x = Codec(name), _rows(dim=37)
    q, rows = quantize(x, bits), codec.encode(x)
    code_bytes = codec.code_bytes(37)
    assert torch.equal(rows[:, :code_bytes], q.codes)
    meta = rows[:, code_bytes:].contiguous().view(torch.float32)
    assert torch.equal(meta, torch.stack((q.zero, q.scale), 1))
    assert torch.equal(codec.decode(rows, 37), dequantize(q))
    # Caches written before stored step 1, not 0, for a constant row: it still decodes.
    old = torch.cat((torch.zeros(1, code_bytes, dtype=torch.uint8),
                     torch.tensor([[3.25, 1.0]]).view(torch.uint8)), 1)
    assert bool(codec.decode(old, 37).eq(3.25).all())
    # One row alone, its metadata at an offset float32 cannot view in place.
    assert torch.equal(codec.decode(rows[2:3], 37), dequantize(q)[2:3])


def test_codec_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(ValueError, match="beyond float16"):
        Codec("fp16").encode(torch.tensor([[7e4, 0.0]]))
    with pytest.raises(ValueError, match="NaN or infinity"):
        Codec("int8").encode(torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="unknown"):
        Codec("int2")
    with pytest.raises(ValueError, match="must be uint8"):
        Codec("int8").decode(torch.zeros(2, 10, dtype=torch.uint8), 4)


def test_progressive_policy_gets_stronger_and_repeats_the_last() -> None:
    codecs = ("fp16", "int8", "int4")
    assert [codec_for_stage(codecs, k).name for k in (1, 2, 3, 4)] == \
        ["fp16", "int8", "int4", "int4"]
    assert [codec_for_stage(codecs, k).compression(128) for k in (1, 2, 3)] == \
        sorted(codec_for_stage(codecs, k).compression(128) for k in (1, 2, 3))


def _write(path: Path, x: torch.Tensor, codec: Codec, lz4: bool, batch: int = 70,
           chunk_rows: int = 64) -> None:
    write_frozen_cache(path, ((s, x[s : s + batch]) for s in range(0, len(x), batch)),
                       num_rows=len(x), dim=x.shape[1], codec=codec, lz4=lz4,
                       chunk_rows=chunk_rows, frozen_layers=2)


@pytest.mark.parametrize("lz4", [True, False])
@pytest.mark.parametrize("name", ["fp16", "int8", "int4"])
def test_cache_returns_decoded_rows_from_every_tier(tmp_path: Path, name: str,
                                                    lz4: bool) -> None:
    codec, x = Codec(name), _rows(n=500, dim=24)
    _write(tmp_path / "c", x, codec, lz4)
    expected = codec.decode(codec.encode(x), 24)
    ids = torch.randint(0, 500, (400,), generator=torch.Generator().manual_seed(1))
    whole = 500 * codec.row_bytes(24)
    for budget in (0, whole // 3, whole):  # disk only, host cache + disk, all in RAM
        cache = FrozenLayerCache.open(tmp_path / "c", host_budget=budget)
        assert cache.dtype == torch.float32 and (cache.num_rows, cache.dim) == (500, 24)
        assert torch.equal(cache.read(ids), expected[ids]), budget
        disk = cache.stats.disk_bytes
        assert (disk == 0) if budget == whole else (disk > 0), budget
    info = read_info(tmp_path / "c")
    assert info.frozen_layers == 2 and info.max_abs_error <= info.max_bound
    if lz4:  # disk bytes are the compressed chunks: the whole array once, all chunks read
        cache = FrozenLayerCache.open(tmp_path / "c", host_budget=0)
        cache.read(torch.arange(500))
        assert cache.stats.disk_bytes == cache.disk_nbytes < whole


def test_cache_plugs_into_the_device_cache(tmp_path: Path) -> None:
    codec, x = Codec("int8"), _rows(n=200, dim=16)
    _write(tmp_path / "c", x, codec, lz4=True)
    frozen = FrozenLayerCache.open(tmp_path / "c", host_budget=0)
    device = DeviceCache(frozen, 50 * 16 * 4, make_policy("lru"), device="cpu")
    ids = torch.randint(0, 200, (300,), generator=torch.Generator().manual_seed(2))
    expected = codec.decode(codec.encode(x), 16)
    for part in ids.split(60):
        assert torch.equal(device.read(part), expected[part])
    in_memory = FrozenLayerCache.from_tensor(x, codec)
    assert isinstance(in_memory.encoded, TensorStore)
    assert torch.equal(in_memory.read(ids), expected[ids])


def test_failed_write_leaves_no_cache_and_bad_caches_are_named(tmp_path: Path) -> None:
    x = _rows(n=100, dim=8)

    def batches():
        yield 0, x[:50]
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_frozen_cache(tmp_path / "c", batches(), num_rows=100, dim=8, codec=Codec("int8"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="covered 50 rows"):
        write_frozen_cache(tmp_path / "c", iter([(0, x[:50])]), num_rows=100, dim=8,
                           codec=Codec("int8"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(DatasetError, match="not a frozen-layer cache"):
        FrozenLayerCache.open(tmp_path)
    _write(tmp_path / "c", x, Codec("int4"), lz4=True)
    meta = tmp_path / "c" / "frozen.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": 99}))
    with pytest.raises(DatasetError, match="not a readable frozen-cache"):
        FrozenLayerCache.open(tmp_path / "c")
