from __future__ import annotations

import pytest
import torch

from graphsys.cuda import assign_slots, lookup, scatter_rows, split_hits


def random_tables(num_nodes=40, capacity=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    resident = torch.randperm(num_nodes, generator=g)[: capacity - 2]  # two free slots
    slot_of = torch.full((num_nodes,), -1, dtype=torch.int32)
    id_of = torch.full((capacity,), -1, dtype=torch.int64)
    slots = torch.randperm(capacity, generator=g)[: resident.numel()]
    slot_of[resident] = slots.to(torch.int32)
    id_of[slots] = resident
    return slot_of, id_of


def as_dict(slot_of):
    return {i: int(s) for i, s in enumerate(slot_of.tolist()) if s >= 0}


@pytest.mark.parametrize("n", [0, 1, 7, 100])
def test_lookup_and_split_match_a_dict(n) -> None:
    slot_of, _ = random_tables()
    ref = as_dict(slot_of)
    ids = torch.randint(0, 40, (n,), generator=torch.Generator().manual_seed(n))
    slots = lookup(slot_of, ids)
    assert slots.dtype == torch.int64
    assert slots.tolist() == [ref.get(i, -1) for i in ids.tolist()]
    split = split_hits(slot_of, ids)
    pairs = list(enumerate(ids.tolist()))
    assert split.hit_pos.tolist() == [p for p, i in pairs if i in ref]
    assert split.hit_slots.tolist() == [ref[i] for _, i in pairs if i in ref]
    assert split.miss_pos.tolist() == [p for p, i in pairs if i not in ref]
    assert split.miss_ids.tolist() == [i for _, i in pairs if i not in ref]


def test_scatter_and_assign_keep_the_tables_consistent() -> None:
    slot_of, id_of = random_tables()
    rows = torch.zeros(12, 3)
    ref = as_dict(slot_of)
    new = torch.tensor([i for i in range(40) if i not in ref][:3])
    slots = torch.tensor([0, 5, 11])
    fetched = torch.arange(9.0).view(3, 3)
    scatter_rows(rows, slots, fetched)
    assign_slots(slot_of, id_of, new, slots)
    for slot, node in zip(slots.tolist(), new.tolist(), strict=True):
        for old, s in list(ref.items()):
            if s == slot:
                del ref[old]
        ref[node] = slot
    assert as_dict(slot_of) == ref
    assert {int(id_of[s]): s for s in range(12) if id_of[s] >= 0} == ref
    assert torch.equal(rows[slots], fetched)
    assert torch.equal(rows[[1, 2]], torch.zeros(2, 3))


def test_cache_kernels_reject_bad_input() -> None:
    slot_of, id_of = random_tables()
    with pytest.raises(IndexError):
        lookup(slot_of, torch.tensor([40]))
    with pytest.raises(ValueError, match="do not match"):
        scatter_rows(torch.zeros(12, 3), torch.tensor([0]), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="ids but"):
        assign_slots(slot_of, id_of, torch.tensor([1, 2]), torch.tensor([0]))


@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_gpu_cache_kernels_equal_the_cpu_path(device, n) -> None:
    slot_of, id_of = random_tables(num_nodes=3000, capacity=500)
    ids = torch.randint(0, 3000, (n,), generator=torch.Generator().manual_seed(n))
    assert torch.equal(lookup(slot_of.to(device), ids.to(device)).cpu(), lookup(slot_of, ids))
    for a, b in zip(split_hits(slot_of.to(device), ids.to(device)), split_hits(slot_of, ids),
                    strict=True):
        assert torch.equal(a.cpu(), b)
    free = torch.nonzero(slot_of < 0).flatten()[:50]
    slots = torch.randperm(500, generator=torch.Generator().manual_seed(1))[:50]
    fetched = torch.randn(50, 33)
    rows_cpu, rows_dev = torch.zeros(500, 33), torch.zeros(500, 33, device=device)
    scatter_rows(rows_cpu, slots, fetched)
    scatter_rows(rows_dev, slots.to(device), fetched.pin_memory() if device == "cuda"
                 else fetched)
    assert torch.equal(rows_dev.cpu(), rows_cpu)
    s_dev, i_dev = slot_of.to(device), id_of.to(device)
    assign_slots(slot_of, id_of, free, slots)
    assign_slots(s_dev, i_dev, free.to(device), slots.to(device))
    assert torch.equal(s_dev.cpu(), slot_of) and torch.equal(i_dev.cpu(), id_of)


def bad_tables(device):
    """Bad tables built on ``device`` (``.to`` would make a strided view contiguous)."""
    slot_of, id_of = (t.to(device) for t in random_tables())
    yield slot_of.long(), id_of, TypeError, "slot_of must be torch.int32"
    yield slot_of, id_of.int(), TypeError, "id_of must be torch.int64"
    wide = torch.full((40, 2), -1, dtype=torch.int32, device=device)
    yield wide[:, 0], id_of, ValueError, "slot_of must be contiguous"
    wide_ids = torch.full((12, 2), -1, dtype=torch.int64, device=device)
    yield slot_of, wide_ids[:, 0], ValueError, "id_of must be contiguous"
    yield slot_of.view(4, 10), id_of, ValueError, "slot_of must be 1-D"


@pytest.mark.parametrize("case", range(5))
def test_cache_tables_are_validated_alike_on_every_path(device, case) -> None:
    slot_of, id_of, error, message = list(bad_tables(device))[case]
    assert slot_of.device.type == device and id_of.device.type == device
    ids = torch.tensor([1, 2], device=device)
    calls = [lambda: assign_slots(slot_of, id_of, ids, torch.tensor([0, 1], device=device))]
    if "slot_of" in message:
        calls += [lambda: lookup(slot_of, ids), lambda: split_hits(slot_of, ids)]
    for call in calls:
        with pytest.raises(error, match=message):
            call()


@pytest.mark.parametrize("width", [1, 3, 64])
def test_scatter_with_repeated_slots_keeps_the_last_occurrence(device, width) -> None:
    g = torch.Generator().manual_seed(width)
    slots = torch.randint(0, 20, (200,), generator=g)  # many repeats
    fetched = torch.randn(200, width, generator=g)
    expected = torch.zeros(20, width)
    for i, s in enumerate(slots.tolist()):  # sequential assignment: the last one wins
        expected[s] = fetched[i]
    sources = [fetched] if device == "cpu" else [fetched, fetched.pin_memory(),
                                                fetched.to(device)]
    for source in sources:
        rows = torch.zeros(20, width, device=device)
        scatter_rows(rows, slots.to(device), source)
        assert torch.equal(rows.cpu(), expected)


def test_scatter_takes_pageable_and_non_contiguous_rows(device) -> None:
    fetched = torch.arange(12.0).view(3, 4).t().contiguous().t()[:, :3]  # a strided view
    assert not fetched.is_contiguous()
    rows = torch.zeros(5, 3, device=device)
    scatter_rows(rows, torch.tensor([4, 0, 2]), fetched)
    assert torch.equal(rows.cpu()[[4, 0, 2]], fetched)


def test_scatter_rejects_rows_fetched_to_another_gpu(cuda_device) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two GPUs")
    rows = torch.zeros(4, 2, device="cuda:0")
    with pytest.raises(ValueError, match="cuda:1"):
        scatter_rows(rows, torch.tensor([0]), torch.ones(1, 2, device="cuda:1"))


def test_scatter_rejects_cuda_rows_for_a_host_table(cuda_device) -> None:
    with pytest.raises(ValueError, match="move them"):
        scatter_rows(torch.zeros(4, 2), torch.tensor([0]), torch.ones(1, 2, device="cuda"))
