"""Page-locking host tensors so the GPU kernels can read them over the bus (UVA).

``pin_inplace`` registers a tensor's own memory with the CUDA driver
(``cudaHostRegister``), as DGL's ``pin_memory_inplace`` does, instead of
``Tensor.pin_memory()``, which copies: a 53 GB feature table cannot be held twice. If
registration is refused (a memory map of a file, a driver limit) it falls back to the
copy and says so once. Without CUDA it returns the tensor unchanged, so the callers'
CPU path is the same call.
"""

from __future__ import annotations

import logging
import weakref

import torch

log = logging.getLogger(__name__)

#: ``cudaHostRegisterDefault``: portable across devices, not write-combined.
_REGISTER_FLAGS = 0


def _register(tensor: torch.Tensor) -> bool:
    cudart = torch.cuda.cudart()
    nbytes = tensor.untyped_storage().nbytes()
    ptr = tensor.untyped_storage().data_ptr()
    if int(cudart.cudaHostRegister(ptr, nbytes, _REGISTER_FLAGS)) != 0:
        return False
    # Unregister when the tensor goes (its views may outlive it: they then read through
    # torch's copy path, since is_pinned() turns False, never through a stale mapping).
    weakref.finalize(tensor, cudart.cudaHostUnregister, ptr)
    return True


def pin_inplace(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in page-locked host memory: registered in place when possible.

    CUDA tensors and tensors already pinned come back as they are; without CUDA the
    host tensor comes back unchanged (the kernels' CPU twins read it directly).
    """
    if tensor.is_cuda or not torch.cuda.is_available() or tensor.numel() == 0:
        return tensor
    if tensor.is_pinned():
        return tensor
    tensor = tensor.contiguous()
    try:
        if _register(tensor) and tensor.is_pinned():
            return tensor
    except (RuntimeError, AttributeError) as exc:  # old torch without cudart bindings
        log.debug("cudaHostRegister unavailable: %s", exc)
    log.warning("could not page-lock a %d-byte tensor in place; pinning a copy",
                tensor.numel() * tensor.element_size())
    return tensor.pin_memory()
