"""``graphsys infer``: every node's output from a trained checkpoint, out of core."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graphsys.errors import CheckpointError
from graphsys.nn.models import build_model
from graphsys.storage.open import disk_source
from graphsys.train.checkpoint import load_checkpoint
from graphsys.train.feature_setup import direct_read_buffer
from graphsys.train.inference import write_outputs
from graphsys.train.trainer import CHECKPOINT_NAME, dataset_content_id, row_normalize


def export_outputs(dataset: Any, checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                   device: str = "cpu", batch_size: int = 4096, budget: int = 256 << 20,
                   progress: bool = True, log: Callable[[str], None] = print) -> Path:
    """Write the last layer's output (logits) of the model in ``checkpoint`` for every
    node of ``dataset`` to the directory ``out`` (see :func:`write_outputs`).

    ``checkpoint`` is a ``checkpoint.pt`` or the run directory holding one; it must have
    been trained on this dataset's contents. Features are read from disk (``O_DIRECT``)
    and hidden layers spill to disk, so RAM holds about one batch plus ``budget / 8`` of
    read buffer whatever the graph's size.
    """
    path = Path(checkpoint)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    state = load_checkpoint(path, identity={"dataset_content": dataset_content_id(dataset)})
    config = state["config"]
    try:
        model = build_model(config["model"], int(dataset.manifest.arrays["features"].shape[1]),
                            int(config["hidden"]), int(dataset.num_classes),
                            num_layers=len(config["fanouts"]), dropout=float(config["dropout"]),
                            num_heads=int(config["num_heads"]))
        model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path} does not hold a model graphsys can rebuild ({exc}); "
                              "pass the checkpoint of a graphsys train run") from None
    model.to(device)
    transform = row_normalize if config.get("feature_norm") == "row" else None
    buffer = direct_read_buffer(budget)
    features = disk_source(dataset, read_buffer=buffer)
    log(f"inference: {config['model']} with {model.num_layers} layers from {path}, every "
        f"node of {dataset.name} ({dataset.graph.num_nodes():,}), hidden layers spilled to "
        f"disk beside {out}")
    try:
        return write_outputs(model, dataset.graph, features, out, batch_size=batch_size,
                             device=device, progress=progress, transform=transform,
                             read_buffer=buffer,
                             meta={"checkpoint": str(path), "dataset": dataset.name,
                                   "model": config["model"], "epochs_trained":
                                   int(state.get("next_epoch", 0))})
    finally:
        close = getattr(features, "close", None)
        if callable(close):
            close()
