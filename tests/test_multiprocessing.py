"""graphsys.multiprocessing.shared_tensor: one host buffer that every rank maps, as
DGL's dgl.multiprocessing.shared_tensor (checked with two gloo ranks under torchrun)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from graphsys.multiprocessing import shared_tensor

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")

RANKS_SCRIPT = r'''
import os, sys
import torch
import torch.distributed as dist
import graphsys as dgl
from graphsys.multiprocessing import shared_tensor

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
y = shared_tensor((10, 3))
assert y.shape == (10, 3) and y.dtype == torch.float32 and bool((y == 0).all())
dist.barrier()  # every rank has seen the zeros before any writes
rows = torch.arange(rank, 10, world)
y[rows] = (rows.float() * 10).unsqueeze(1) + torch.arange(3).float()  # this rank's rows
dist.barrier()
expected = (torch.arange(10).float() * 10).unsqueeze(1) + torch.arange(3).float()
assert torch.equal(y, expected), (rank, y)  # every rank sees every rank's writes
ints = dgl.multiprocessing.shared_tensor(4, dtype=torch.int64)
if rank == 0:
    ints += 7
dist.barrier()
assert ints.tolist() == [7, 7, 7, 7]
segment = y._graphsys_segment.name
dist.barrier()
# one file per rank: two ranks printing to one pipe can interleave within a line
with open(os.path.join(sys.argv[1], f"rank{rank}.ok"), "w") as f:
    f.write(segment)
dist.destroy_process_group()
'''


def test_without_a_process_group_it_is_shared_memory() -> None:
    t = shared_tensor((4, 2), dtype=torch.float64)
    assert t.is_shared() and t.dtype == torch.float64 and bool((t == 0).all())
    with pytest.raises(ValueError, match="non-negative"):
        shared_tensor((-1, 2))


@pytest.mark.skipif(not TORCHRUN.is_file(), reason="torchrun not found beside python")
def test_two_ranks_write_one_buffer(tmp_path: Path) -> None:
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(script),
                           str(tmp_path)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    names = {(tmp_path / f"rank{r}.ok").read_text() for r in (0, 1)}  # both ranks passed
    assert len(names) == 1  # one segment for both ranks
    name = names.pop()
    # rank 0 unlinked the name once both had mapped it: nothing left behind
    assert not Path("/dev/shm", name).exists()
    assert "leaked shared_memory" not in proc.stderr
