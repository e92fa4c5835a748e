"""Training: :class:`Trainer`, checkpoints and layer-wise inference."""

from graphsys.train.checkpoint import load_checkpoint, save_checkpoint
from graphsys.train.freezing import FreezeConfig, FreezingController, LayerFreezer
from graphsys.train.inference import layerwise_inference
from graphsys.train.trainer import EpochMetrics, TrainConfig, Trainer, TrainResult

__all__ = ["EpochMetrics", "FreezeConfig", "FreezingController", "LayerFreezer",
           "TrainConfig", "TrainResult", "Trainer", "layerwise_inference",
           "load_checkpoint", "save_checkpoint"]
