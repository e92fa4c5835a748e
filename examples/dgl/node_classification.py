"""Mini-batch GraphSAGE node classification, written the way DGL's examples are.

Only the imports below and ``load_data`` name graphsys; the rest is a DGL 2.x script:
``NeighborSampler`` with ``prefetch_node_feats``/``prefetch_labels``, blocks whose
``srcdata['feat']`` and ``dstdata['label']`` the loader fills from ``g.ndata``, and
layer-wise inference over all nodes with ``MultiLayerFullNeighborSampler(1)``. Swap the
imports for ``import dgl`` / ``import dgl.nn as dglnn`` / ``dgl.dataloading`` and rewrite
``load_data`` and it runs under DGL (``bench/dgl_scripts.py`` does exactly that).

    graphsys prepare planetoid --raw data/planetoid --name cora --out data/cora
    python examples/dgl/node_classification.py --dataset data/cora
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

import graphsys as dgl
import graphsys.nn as dglnn
from graphsys.dataloading import DataLoader, MultiLayerFullNeighborSampler, NeighborSampler


def load_data(path: str):
    """The graph (features, labels and split masks in ``g.ndata``) and the class count."""
    dataset = dgl.load_dataset(path)
    return dataset[0], dataset.num_classes


class SAGE(nn.Module):
    def __init__(self, in_size: int, hid_size: int, out_size: int, num_layers: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        sizes = [in_size] + [hid_size] * (num_layers - 1) + [out_size]
        self.layers = nn.ModuleList(dglnn.SAGEConv(a, b, "mean")
                                    for a, b in zip(sizes[:-1], sizes[1:]))
        self.dropout = nn.Dropout(dropout)
        self.hid_size, self.out_size = hid_size, out_size

    def forward(self, blocks, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (layer, block) in enumerate(zip(self.layers, blocks)):
            h = layer(block, h)
            if i != len(self.layers) - 1:
                h = self.dropout(F.relu(h))
        return h

    @torch.no_grad()
    def inference(self, g, device: torch.device, batch_size: int) -> torch.Tensor:
        """Every node's output, one layer at a time over all in-neighbours (exact, and
        each layer's input is read once instead of once per sampled batch)."""
        sampler = MultiLayerFullNeighborSampler(1)
        loader = DataLoader(g, torch.arange(g.num_nodes()).to(g.device), sampler,
                            device=device, batch_size=batch_size, shuffle=False,
                            drop_last=False, num_workers=0)
        feat = g.ndata["feat"]
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            y = torch.empty(g.num_nodes(), self.out_size if last else self.hid_size)
            for input_nodes, output_nodes, blocks in loader:
                h = layer(blocks[0], feat[input_nodes].to(device))
                if not last:
                    h = F.relu(h)
                # Without shuffling, each batch's output nodes are one contiguous range.
                y[output_nodes[0]:output_nodes[-1] + 1] = h.cpu()
            feat = y
        return y


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def evaluate(model: SAGE, loader: DataLoader) -> float:
    model.eval()
    logits, labels = [], []
    with torch.no_grad():
        for _, _, blocks in loader:
            logits.append(model(blocks, blocks[0].srcdata["feat"]))
            labels.append(blocks[-1].dstdata["label"])
    return accuracy(torch.cat(logits), torch.cat(labels))


def train(args: argparse.Namespace, device: torch.device, g, model: SAGE) -> None:
    train_idx = torch.nonzero(g.ndata["train_mask"], as_tuple=True)[0].to(device)
    val_idx = torch.nonzero(g.ndata["val_mask"], as_tuple=True)[0].to(device)
    sampler = NeighborSampler(args.fanouts, prefetch_node_feats=["feat"],
                              prefetch_labels=["label"])
    use_uva = args.mode == "mixed"
    train_loader = DataLoader(g, train_idx, sampler, device=device, batch_size=args.batch_size,
                              shuffle=True, drop_last=False, num_workers=0, use_uva=use_uva)
    val_loader = DataLoader(g, val_idx, sampler, device=device, batch_size=args.batch_size,
                            shuffle=False, drop_last=False, num_workers=0, use_uva=use_uva)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=5e-4)
    for epoch in range(args.epochs):
        start = time.perf_counter()
        model.train()
        total_loss = 0.0
        for it, (input_nodes, output_nodes, blocks) in enumerate(train_loader):
            x = blocks[0].srcdata["feat"]
            y = blocks[-1].dstdata["label"]
            loss = F.cross_entropy(model(blocks, x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total_loss += loss.item()
        acc = evaluate(model, val_loader)
        print(f"Epoch {epoch:05d} | Loss {total_loss / (it + 1):.4f} | Val Acc {acc:.4f} | "
              f"Time {time.perf_counter() - start:.3f}s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="data/cora",
                        help="a graphsys dataset directory (graphsys prepare ...)")
    parser.add_argument("--mode", default="cpu", choices=["cpu", "mixed", "puregpu"],
                        help="cpu: all on CPU; mixed: graph and features in host memory "
                             "read by the GPU (UVA); puregpu: all on the GPU")
    # Defaults for Cora-sized data (DGL's ogbn-products example: batch 1024, lr 1e-3):
    # with 140 training nodes a batch of 1024 is one step per epoch.
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--fanouts", type=lambda s: [int(f) for f in s.split(",")],
                        default=[10, 10, 10], help="per layer, e.g. 10,10,10")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not Path(args.dataset).is_dir():
        parser.error(f"--dataset {args.dataset}: no such dataset directory; make one with "
                     "`graphsys prepare planetoid --raw <dir> --name cora --out "
                     f"{args.dataset}`")
    if args.mode != "cpu" and not torch.cuda.is_available():
        parser.error(f"--mode {args.mode} needs a CUDA GPU; this machine has none (use "
                     "--mode cpu)")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    g, num_classes = load_data(args.dataset)
    g = g.to("cuda" if args.mode == "puregpu" else "cpu")
    device = torch.device("cpu" if args.mode == "cpu" else "cuda")
    model = SAGE(g.ndata["feat"].shape[1], args.hidden, num_classes,
                 num_layers=len(args.fanouts)).to(device)
    print("Training...")
    train(args, device, g, model)
    print("Testing...")
    model.eval()
    pred = model.inference(g, device, 4096)
    test_idx = torch.nonzero(g.ndata["test_mask"], as_tuple=True)[0].cpu()
    acc = accuracy(pred[test_idx], g.ndata["label"][test_idx].cpu())
    print(f"Test Acc {acc:.4f}")
    return {"test_acc": acc}


if __name__ == "__main__":
    main()
