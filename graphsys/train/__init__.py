"""Training: :class:`Trainer`, checkpoints and layer-wise inference."""

from graphsys._lazy import attach

# Public name -> defining module, imported on first use (see graphsys._lazy).
_NAMES = {
    "load_checkpoint": "graphsys.train.checkpoint",
    "save_checkpoint": "graphsys.train.checkpoint",
    "FreezeConfig": "graphsys.train.freezing",
    "FreezingController": "graphsys.train.freezing",
    "LayerFreezer": "graphsys.train.freezing",
    "layerwise_inference": "graphsys.train.inference",
    "EpochMetrics": "graphsys.train.trainer",
    "TrainConfig": "graphsys.train.trainer",
    "TrainResult": "graphsys.train.trainer",
    "Trainer": "graphsys.train.trainer",
}

__getattr__, __dir__ = attach(__name__, _NAMES)

__all__ = ["EpochMetrics", "FreezeConfig", "FreezingController", "LayerFreezer",
           "TrainConfig", "TrainResult", "Trainer", "layerwise_inference",
           "load_checkpoint", "save_checkpoint"]
