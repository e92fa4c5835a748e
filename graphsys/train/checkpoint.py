"""Atomic checkpoints loaded with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain values (no pickled classes), so loading
one never runs code from the file. It records the options that shape the model; a
checkpoint made with different ones is refused with the option that differs.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from graphsys._atomic import atomic_write_bytes
from graphsys.errors import CheckpointError

FORMAT = "graphsys.checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path`` whole or not at all (temporary name, fsync, rename)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, *, identity: dict[str, Any]) -> dict[str, Any]:
    """Read a checkpoint and check that it was made for ``identity``.

    ``identity`` holds the values that must match (model kind, sizes, dataset); any
    difference raises :class:`CheckpointError` naming the option and both values.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; train without --resume "
                              "first, or pass the directory of an earlier run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, or one with pickled objects in it
        raise CheckpointError(f"{path} is not a readable graphsys checkpoint ({exc}); "
                              "delete it or resume from another run") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a graphsys checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}, this "
                              f"graphsys reads version {VERSION}; start a new run")
    saved = state.get("identity", {})
    for key, want in identity.items():
        if saved.get(key) != want:
            raise CheckpointError(
                f"{path} was made with {key}={saved.get(key)!r}, this run has {key}={want!r}; "
                "use the same options as the run that wrote it, or start a new run in "
                "another directory")
    return state
