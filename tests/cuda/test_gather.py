from __future__ import annotations

import numpy as np
import pytest
import torch

from graphsys.cuda import gather_rows
from graphsys.cuda.gather import threads_per_row, word_size

DTYPES = [torch.float32, torch.float16, torch.int64, torch.uint8, torch.int16]
CASES = [(0, 7), (1, 1), (5, 3), (64, 33), (100, 128), (37, 1024)]  # (ids, width)


def table(rows: int, width: int, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(-100, 100, (rows, width), generator=g)
    return values.to(dtype) if dtype != torch.uint8 else (values + 100).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "width"), CASES)
def test_cpu_gather_equals_numpy_indexing(dtype, n, width) -> None:
    src = table(50, width, dtype)
    ids = torch.randint(0, 50, (n,), generator=torch.Generator().manual_seed(n))
    if n > 3:
        ids[1] = ids[0]  # duplicates
    out = gather_rows(src, ids)
    assert out.shape == (n, width) and out.dtype == dtype
    assert np.array_equal(out.numpy(), src.numpy()[ids.numpy()])


def test_gather_into_out_and_other_id_dtypes() -> None:
    src = table(10, 5, torch.float32)
    out = torch.empty(3, 5)
    result = gather_rows(src, torch.tensor([9, 0, 9], dtype=torch.int32), out=out)
    assert result.data_ptr() == out.data_ptr()
    assert torch.equal(out, src[[9, 0, 9]])


def test_gather_rejects_bad_ids() -> None:
    src = table(10, 5, torch.float32)
    with pytest.raises(IndexError, match="10"):
        gather_rows(src, torch.tensor([0, 10]))
    with pytest.raises(IndexError, match="-1"):
        gather_rows(src, torch.tensor([-1]))
    with pytest.raises(TypeError):
        gather_rows(src, torch.tensor([0.0]))
    with pytest.raises(ValueError, match="out must be"):
        gather_rows(src, torch.tensor([0]), out=torch.empty(2, 5))


def test_vector_width_follows_row_size_and_alignment() -> None:
    assert word_size(512, 0, 4096) == 16
    assert word_size(12, 0, 0) == 4  # 3 float32: 4-byte words
    assert word_size(512, 8, 0) == 8  # an unaligned row start narrows the loads
    assert word_size(7, 0, 0) == 1
    assert [threads_per_row(w) for w in (1, 3, 8, 32, 256)] == [1, 4, 8, 32, 32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n", "width"), CASES)
@pytest.mark.parametrize("where", ["cuda", "pinned", "pinned-unaligned"])
def test_gpu_gather_equals_cpu_gather_bitwise(cuda_device, dtype, n, width, where) -> None:
    src = table(50, width, dtype)
    ids = torch.randint(0, 50, (n,), generator=torch.Generator().manual_seed(n))
    expected = gather_rows(src, ids)
    if where == "cuda":
        table_ = src.cuda()
    elif where == "pinned":
        table_ = src.pin_memory()
    else:  # rows starting one element past an aligned address
        big = torch.empty(50 * width + 1, dtype=dtype).pin_memory()
        big[1:] = src.reshape(-1)
        table_ = big[1:].view(50, width)
    out = gather_rows(table_, ids.cuda())
    assert out.is_cuda and torch.equal(out.cpu(), expected)


@pytest.mark.parametrize("check", [True, False])
@pytest.mark.parametrize("shape", [(0, 3), (0,), (0, 0), (5, 0), (5, 3)])
def test_empty_ids_or_sources_give_empty_results(device, check, shape) -> None:
    wheres = ["host"] if device == "cpu" else ["host", "pinned", "device"]
    for where in wheres:
        src = torch.zeros(shape)
        src = src.pin_memory() if where == "pinned" else src.to("cuda") \
            if where == "device" else src
        ids = torch.zeros(0, dtype=torch.int64, device=device)
        out = gather_rows(src, ids, check=check)
        assert out.shape == (0, *shape[1:]) and out.dtype == src.dtype
        assert out.device.type == (device if where == "host" else "cuda")
        given = torch.empty((0, *shape[1:]), device=out.device)
        assert gather_rows(src, ids, out=given, check=check) is given
        if shape[0] == 0:  # ids into an empty table: an error, never an out-of-bounds read
            with pytest.raises(IndexError, match="empty"):
                gather_rows(src, torch.zeros(2, dtype=torch.int64, device=device),
                            check=check)


def test_zero_width_rows_gather(device) -> None:
    src = torch.zeros(5, 0)
    out = gather_rows(src.to(device), torch.tensor([4, 1], device=device))
    assert out.shape == (2, 0)
