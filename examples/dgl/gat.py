"""Mini-batch GAT node classification, written the way DGL's ogbn-products GAT example is.

What it exercises beyond ``node_classification.py``: ``GATConv((in, in), ...)`` with a
separate source and destination projection, fed ``(h_src, h_dst)`` where the destination
nodes are the first ``num_dst_nodes()`` source nodes; multi-head outputs flattened
between layers and averaged on the last; ``g.remove_self_loop().add_self_loop()``;
``block.int()``; and layer-wise inference whose batches carry
``blocks[0].srcdata['feat']`` prefetched from ``g.ndata``. Only the imports and
``load_data`` name graphsys.

    python examples/dgl/gat.py --dataset data/cora
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


class GAT(nn.Module):
    def __init__(self, in_feats: int, n_hidden: int, n_classes: int, n_layers: int,
                 num_heads: int, feat_drop: float, attn_drop: float) -> None:
        super().__init__()
        self.n_layers, self.n_hidden, self.n_classes = n_layers, n_hidden, n_classes
        self.num_heads = num_heads
        self.layers = nn.ModuleList()
        for i in range(n_layers):
            width = in_feats if i == 0 else n_hidden * num_heads
            last = i == n_layers - 1
            self.layers.append(dglnn.GATConv(
                (width, width), n_classes if last else n_hidden, num_heads=num_heads,
                feat_drop=feat_drop, attn_drop=attn_drop,
                activation=None if last else F.elu))

    def step(self, i: int, block, h: torch.Tensor) -> torch.Tensor:
        h_dst = h[:block.num_dst_nodes()]
        h = self.layers[i](block, (h, h_dst))
        # Heads are concatenated between layers and averaged on the last, as in GAT.
        return h.mean(1) if i == self.n_layers - 1 else h.flatten(1)

    def forward(self, blocks, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, block in enumerate(blocks):
            h = self.step(i, block, h)
        return h

    @torch.no_grad()
    def inference(self, g, device: torch.device, batch_size: int) -> torch.Tensor:
        """Every node's output, layer by layer over all in-neighbours. The first layer's
        input rows come prefetched in ``srcdata['feat']``; later layers read the
        previous layer's output for the same source nodes."""
        sampler = MultiLayerFullNeighborSampler(1, prefetch_node_feats=["feat"])
        loader = DataLoader(g, torch.arange(g.num_nodes()), sampler, device=device,
                            batch_size=batch_size, shuffle=False, drop_last=False)
        h_all = None
        for i in range(self.n_layers):
            last = i == self.n_layers - 1
            y = torch.zeros(g.num_nodes(), self.n_classes if last else
                            self.n_hidden * self.num_heads)
            for input_nodes, output_nodes, blocks in loader:
                block = blocks[0].int()
                h = block.srcdata["feat"] if i == 0 else h_all[input_nodes].to(device)
                y[output_nodes.long()] = self.step(i, block, h).cpu()
            h_all = y
        return h_all


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return (logits.argmax(1) == labels).float().mean().item()


def run(args: argparse.Namespace, device: torch.device, g, model: GAT) -> float:
    train_idx = torch.nonzero(g.ndata["train_mask"], as_tuple=True)[0]
    sampler = NeighborSampler(args.fanouts, prefetch_node_feats=["feat"],
                              prefetch_labels=["label"])
    loader = DataLoader(g, train_idx, sampler, device=device, batch_size=args.batch_size,
                        shuffle=True, drop_last=False, num_workers=0)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.wd)
    labels = g.ndata["label"]
    best_val, test_at_best = 0.0, 0.0
    for epoch in range(args.epochs):
        start = time.perf_counter()
        model.train()
        for step, (input_nodes, seeds, blocks) in enumerate(loader):
            blocks = [block.int() for block in blocks]
            pred = model(blocks, blocks[0].srcdata["feat"])
            loss = F.cross_entropy(pred, blocks[-1].dstdata["label"])
            opt.zero_grad()
            loss.backward()
            opt.step()
        took = time.perf_counter() - start
        if (epoch + 1) % args.eval_every == 0 or epoch == args.epochs - 1:
            model.eval()
            pred = model.inference(g, device, args.eval_batch_size)
            accs = [accuracy(pred[mask], labels[mask]) for mask in
                    (g.ndata["val_mask"], g.ndata["test_mask"])]
            if accs[0] > best_val:
                best_val, test_at_best = accs
            print(f"Epoch {epoch:05d} | Loss {loss.item():.4f} | Val Acc {accs[0]:.4f} | "
                  f"Test Acc {accs[1]:.4f} | Time {took:.3f}s")
    return test_at_best


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="data/cora",
                        help="a graphsys dataset directory (graphsys prepare ...)")
    parser.add_argument("--gpu", type=int, default=-1, help="GPU index; -1 for the CPU")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--eval-batch-size", type=int, default=4096)
    parser.add_argument("--fanouts", type=lambda s: [int(f) for f in s.split(",")],
                        default=[10, 10], help="per layer, e.g. 10,10")
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--feat-drop", type=float, default=0.6)
    parser.add_argument("--attn-drop", type=float, default=0.6)
    parser.add_argument("--lr", type=float, default=0.005)
    parser.add_argument("--wd", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not Path(args.dataset).is_dir():
        parser.error(f"--dataset {args.dataset}: no such dataset directory; make one with "
                     "`graphsys prepare planetoid --raw <dir> --name cora --out "
                     f"{args.dataset}`")
    if args.gpu >= 0 and not torch.cuda.is_available():
        parser.error(f"--gpu {args.gpu}: this machine has no CUDA GPU (use --gpu -1)")
    return args


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    device = torch.device(f"cuda:{args.gpu}" if args.gpu >= 0 else "cpu")
    g, num_classes = load_data(args.dataset)
    g = g.remove_self_loop().add_self_loop()
    model = GAT(g.ndata["feat"].shape[1], args.hidden, num_classes, len(args.fanouts),
                args.heads, args.feat_drop, args.attn_drop).to(device)
    acc = run(args, device, g, model)
    print(f"Test Acc {acc:.4f} (at the best validation accuracy)")
    return {"test_acc": acc}


if __name__ == "__main__":
    main()
