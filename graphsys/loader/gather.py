"""Row gathers from whatever holds node data (tensor, memory map, zarr, numpy)."""

from __future__ import annotations

from typing import Any

import torch


def gather_rows(data: Any, ids: torch.Tensor) -> torch.Tensor:
    """``data[ids]`` as a tensor with a leading ``len(ids)`` dimension, in the order asked.

    Tensors use ``index_select``; anything else is indexed with a numpy array, since a
    one-element torch tensor would index numpy as a scalar and drop the dimension.
    """
    if hasattr(data, "read"):  # a graphsys FeatureStore
        return data.read(ids)
    if isinstance(data, torch.Tensor):
        return data.index_select(0, ids.to(data.device))
    return torch.as_tensor(data[ids.cpu().numpy()])
