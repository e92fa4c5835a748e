"""A user script for the multi-process tests: ``graphsys.distributed.init()``, then train.

Run by ``tests/train/test_distributed.py`` under torchrun (or with torchrun's variables
set by hand). It writes, beside the run's checkpoint, what the tests check: each rank's
seeds per epoch and what its shared cache returned for every row id.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch

import graphsys
from graphsys.distributed import ParallelOptions, ParallelTrainer, RankFailure, init, shutdown
from graphsys.train import TrainConfig


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--shared-cache", type=int, default=0, help="bytes per rank")
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--die", default=None,
                        help="RANK,EPOCH,BATCH: that rank kills itself after that batch "
                             "(on the first attempt only, under torchrun --max-restarts)")
    parser.add_argument("--hang", default=None,
                        help="RANK,EPOCH,BATCH: that rank stops answering after that batch")
    args = parser.parse_args()
    ctx = init(device="cpu", timeout_s=args.timeout)
    config = TrainConfig(fanouts=(5, 5), hidden=16, batch_size=args.batch_size,
                         epochs=args.epochs, dropout=0.0, eval_every=0, progress=False,
                         seed=1)
    die = tuple(int(v) for v in args.die.split(",")) if args.die else None
    hang = tuple(int(v) for v in args.hang.split(",")) if args.hang else None

    def on_batch(epoch: int, index: int) -> None:
        if die and ctx.restart_count == 0 and (ctx.rank, epoch, index) == die:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash: no cleanup, no goodbye
        if hang and (ctx.rank, epoch, index) == hang:
            time.sleep(3600)  # alive, connections open, never at the next collective

    trainer = ParallelTrainer(graphsys.load_dataset(args.dataset), config, ctx=ctx,
                              options=ParallelOptions(shared_cache=args.shared_cache,
                                                      checkpoint_every=args.checkpoint_every),
                              out_dir=args.out, log=print, on_batch=on_batch)
    resumed = trainer.resume_if_restarted()
    try:
        trainer.fit()
    except RankFailure as exc:
        print(f"graphsys train: error: {exc}", file=sys.stderr, flush=True)
        return 2
    r = ctx.rank
    seeds = {str(e): np.concatenate(trainer.loader.batch_seeds(e)) for e in range(args.epochs)}
    np.savez(args.out / f"seeds.rank{r}.npz", **seeds)
    report = {"rank": r, "world_size": ctx.world_size, "resumed": resumed,
              "batches": len(trainer.loader)}
    cache = trainer.train_features
    if hasattr(cache, "owner_of"):
        ids = torch.arange(cache.num_rows)
        rows = cache.read(ids)
        source = torch.as_tensor(np.asarray(trainer.dataset.features))
        owner = cache.owner_of(ids)
        report.update(equal=bool(torch.equal(rows, source)),
                      owned=[int((owner == k).sum()) for k in range(ctx.world_size)],
                      uncached=int((owner < 0).sum()), capacity=cache.capacity,
                      counters=cache.shared_counters.as_dict())
    (args.out / f"report.rank{r}.json").write_text(json.dumps(report))
    shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
