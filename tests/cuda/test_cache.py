from __future__ import annotations

import pytest
import torch
from _gpu_marks import gpu

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


@gpu
@pytest.mark.parametrize("n", [0, 1, 7, 1000])
def test_gpu_cache_kernels_equal_the_cpu_path(n) -> None:
    slot_of, id_of = random_tables(num_nodes=3000, capacity=500)
    ids = torch.randint(0, 3000, (n,), generator=torch.Generator().manual_seed(n))
    assert torch.equal(lookup(slot_of.cuda(), ids.cuda()).cpu(), lookup(slot_of, ids))
    for a, b in zip(split_hits(slot_of.cuda(), ids.cuda()), split_hits(slot_of, ids),
                    strict=True):
        assert torch.equal(a.cpu(), b)
    free = torch.nonzero(slot_of < 0).flatten()[:50]
    slots = torch.randperm(500)[:50]
    fetched = torch.randn(50, 33)
    rows_cpu, rows_gpu = torch.zeros(500, 33), torch.zeros(500, 33, device="cuda")
    scatter_rows(rows_cpu, slots, fetched)
    scatter_rows(rows_gpu, slots.cuda(), fetched.pin_memory())
    assert torch.equal(rows_gpu.cpu(), rows_cpu)
    s_gpu, i_gpu = slot_of.cuda(), id_of.cuda()
    assign_slots(slot_of, id_of, free, slots)
    assign_slots(s_gpu, i_gpu, free.cuda(), slots.cuda())
    assert torch.equal(s_gpu.cpu(), slot_of) and torch.equal(i_gpu.cpu(), id_of)
