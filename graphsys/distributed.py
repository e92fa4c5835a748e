"""Multi-GPU (or multi-process CPU) training under ``torchrun``.

Example (``torchrun --nproc_per_node=4 train.py``)::

    import graphsys
    from graphsys.distributed import ParallelOptions, ParallelTrainer
    from graphsys.train import TrainConfig

    ctx = graphsys.distributed.init()           # NCCL on GPU, gloo on CPU
    trainer = ParallelTrainer(graphsys.load_dataset("data/papers"), TrainConfig(),
                              ctx=ctx, options=ParallelOptions(shared_cache=2 << 30),
                              out_dir="runs/papers")
    trainer.resume_if_restarted()               # after torchrun --max-restarts
    trainer.fit()
    graphsys.distributed.shutdown()

The same job from the command line: ``torchrun --nproc_per_node=4 -m graphsys train
data/papers --shared-cache 2GB --out runs/papers``.
"""

from graphsys.loader.distributed import DistributedDataLoader
from graphsys.storage.shared_cache import SharedDeviceCache
from graphsys.train.distributed import DistContext, RankFailure, init, launched, shutdown
from graphsys.train.parallel import ParallelOptions, ParallelTrainer

__all__ = ["DistContext", "DistributedDataLoader", "ParallelOptions", "ParallelTrainer",
           "RankFailure", "SharedDeviceCache", "init", "launched", "shutdown"]
