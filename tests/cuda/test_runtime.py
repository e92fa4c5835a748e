"""Launch plumbing: kernels run on their tensors' device and that device's stream."""

from __future__ import annotations

import contextlib

import pytest
import torch

from graphsys.cuda import _runtime, gather_rows, lookup


def test_device_of_names_the_one_gpu_of_the_tensors() -> None:
    with pytest.raises(ValueError, match="no CUDA tensor"):
        _runtime.device_of(torch.zeros(1), torch.zeros(2))
    with pytest.raises(ValueError, match="CUDA device"):
        _runtime.launch(None, 1, 32, (), device="cpu")


def test_device_of_with_gpu_tensors(cuda_device) -> None:
    a = torch.zeros(1, device="cuda:0")
    assert _runtime.device_of(a, torch.zeros(1)) == torch.device("cuda", 0)
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="different GPUs"):
            _runtime.device_of(a, torch.zeros(1, device="cuda:1"))


def test_kernels_run_on_the_current_torch_stream_of_their_device(device) -> None:
    """Work queued on a side stream before the kernel must be visible to it (and the
    kernel's output to work queued after it): both are on torch's current stream."""
    src = torch.arange(4000.0).view(1000, 4)
    ids = torch.arange(999, -1, -1)
    expected = src[ids]
    side = torch.cuda.Stream() if device == "cuda" else None
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        table = torch.zeros(1000, 4, device=device)
        table += src.to(device)  # queued on the side stream
        out = gather_rows(table, ids.to(device))
        out = out * 1  # queued after the kernel
    if side is not None:
        side.synchronize()
    assert torch.equal(out.cpu(), expected)


def test_kernels_launch_on_their_tensors_device_not_the_current_one(cuda_device) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    slot_of = torch.tensor([-1, 2, -1, 0], dtype=torch.int32, device="cuda:1")
    src = torch.arange(12.0, device="cuda:1").view(4, 3)
    with torch.cuda.device(0):
        slots = lookup(slot_of, torch.tensor([3, 0, 1], device="cuda:1"))
        rows = gather_rows(src, torch.tensor([3, 0], device="cuda:1"))
    assert slots.device == torch.device("cuda", 1) and slots.tolist() == [0, -1, 2]
    assert rows.device == torch.device("cuda", 1) and rows.cpu().tolist() == [
        [9.0, 10.0, 11.0], [0.0, 1.0, 2.0]]

