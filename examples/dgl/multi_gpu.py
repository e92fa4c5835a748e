"""Data-parallel GraphSAGE under ``torchrun``, written the way DGL's multi-GPU example is.

Each process is one rank: ``DataLoader(..., use_ddp=True)`` gives it a disjoint slice of
the training nodes (the same shuffled permutation on every rank each epoch) and
``DistributedDataParallel`` averages the gradients. One process per GPU with NCCL; on a
machine without GPUs the ranks run on the CPU with gloo, so the script is testable
anywhere. Only the imports and ``load_data`` name graphsys.

    torchrun --standalone --nproc_per_node 2 examples/dgl/multi_gpu.py --dataset data/cora
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import graphsys as dgl
import graphsys.nn as dglnn
from graphsys.dataloading import DataLoader, NeighborSampler


def load_data(path: str):
    """The graph (features, labels and split masks in ``g.ndata``) and the class count."""
    dataset = dgl.load_dataset(path)
    return dataset[0], dataset.num_classes


class SAGE(nn.Module):
    def __init__(self, in_size: int, hid_size: int, out_size: int, num_layers: int) -> None:
        super().__init__()
        sizes = [in_size] + [hid_size] * (num_layers - 1) + [out_size]
        self.layers = nn.ModuleList(dglnn.SAGEConv(a, b, "mean")
                                    for a, b in zip(sizes[:-1], sizes[1:]))
        self.dropout = nn.Dropout(0.5)

    def forward(self, blocks, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, h)
            if i != len(self.layers) - 1:
                h = self.dropout(F.relu(h))
        return h


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Accuracy over every rank's slice of ``loader``'s nodes (all-reduced counts)."""
    model.eval()
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for _, _, blocks in loader:
            pred = model(blocks, blocks[0].srcdata["feat"]).argmax(1)
            counts[0] += (pred == blocks[-1].dstdata["label"]).sum()
            counts[1] += pred.numel()
    dist.all_reduce(counts)
    return (counts[0] / counts[1]).item()


def run(args: argparse.Namespace, rank: int, world: int, device: torch.device) -> float:
    g, num_classes = load_data(args.dataset)
    g = g.to(device)
    masks = {name: torch.nonzero(g.ndata[f"{name}_mask"], as_tuple=True)[0]
             for name in ("train", "val", "test")}
    sampler = NeighborSampler(args.fanouts, prefetch_node_feats=["feat"],
                              prefetch_labels=["label"])
    loaders = {name: DataLoader(g, idx, sampler, device=device, batch_size=args.batch_size,
                                shuffle=name == "train", drop_last=False, use_ddp=True,
                                ddp_seed=args.seed)
               for name, idx in masks.items()}
    torch.manual_seed(args.seed)  # every rank starts from the same weights
    model = SAGE(g.ndata["feat"].shape[1], args.hidden, num_classes, len(args.fanouts))
    model = DistributedDataParallel(model.to(device),
                                    device_ids=[device] if device.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        model.train()
        total_loss = torch.zeros((), device=device)
        for it, (input_nodes, output_nodes, blocks) in enumerate(loaders["train"]):
            loss = F.cross_entropy(model(blocks, blocks[0].srcdata["feat"]),
                                   blocks[-1].dstdata["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total_loss += loss.detach()
        val = evaluate(model, loaders["val"], device)
        if rank == 0:
            print(f"Epoch {epoch:05d} | Loss {total_loss.item() / (it + 1):.4f} | "
                  f"Val Acc {val:.4f} | Time {time.perf_counter() - start:.3f}s "
                  f"({world} ranks)")
    return evaluate(model, loaders["test"], device)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="data/cora",
                        help="a graphsys dataset directory (graphsys prepare ...)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64, help="per rank")
    parser.add_argument("--fanouts", type=lambda s: [int(f) for f in s.split(",")],
                        default=[10, 10], help="per layer, e.g. 10,10")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not Path(args.dataset).is_dir():
        parser.error(f"--dataset {args.dataset}: no such dataset directory; make one with "
                     "`graphsys prepare planetoid --raw <dir> --name cora --out "
                     f"{args.dataset}`")
    if "RANK" not in os.environ:
        parser.error("run this script under torchrun, e.g. `torchrun --standalone "
                     "--nproc_per_node 2 examples/dgl/multi_gpu.py`")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    gpus = torch.cuda.is_available()
    dist.init_process_group("nccl" if gpus else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if gpus:
        torch.cuda.set_device(local_rank)
    device = torch.device(f"cuda:{local_rank}" if gpus else "cpu")
    try:
        acc = run(args, rank, world, device)
    finally:
        # The DDP model and the loaders' threads go before the process group does: freed
        # only at interpreter exit, gloo's threads were torn down mid-use (SIGABRT,
        # "terminate called without an active exception") in about 1 run in 10.
        gc.collect()
        dist.destroy_process_group()
    if rank == 0:
        print(f"Test Acc {acc:.4f}")
    return {"test_acc": acc}


if __name__ == "__main__":
    main()
