"""Atomic checkpoints loaded with ``torch.load(weights_only=True)``.

A checkpoint is a dict of tensors and plain values (no pickled classes), so loading
one never runs code from the file. It records the options that shape the model; a
checkpoint made with different ones is refused with the option that differs.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from graphsys._atomic import atomic_write_bytes
from graphsys.errors import CheckpointError, GraphsysError

FORMAT = "graphsys.checkpoint"
VERSION = 1
#: What every checkpoint holds, and of which type (``torch.load(weights_only=True)``
#: gives back any mix of containers and tensors a file spells out).
REQUIRED = {"identity": dict, "config": dict, "model": dict, "optimizer": dict,
            "next_epoch": int, "history": list}
_FIX = "delete it or resume from another run"


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
    _check_structure(state, path)
    saved = state["identity"]
    for key, want in identity.items():
        if saved.get(key) != want:
            raise CheckpointError(
                f"{path} was made with {key}={saved.get(key)!r}, this run has {key}={want!r}; "
                "use the same options as the run that wrote it, or start a new run in "
                "another directory")
    return state


def _check_structure(state: dict[str, Any], path: Path) -> None:
    """The entries of a loadable checkpoint, their types, and finite weights."""
    for key, kind in REQUIRED.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{path} is damaged: {key!r} is "
                                  f"{type(value).__name__ if key in state else 'missing'}, "
                                  f"not a {kind.__name__}; {_FIX}")
    if state["next_epoch"] != len(state["history"]):
        raise CheckpointError(f"{path} is damaged: next_epoch={state['next_epoch']} but its "
                              f"history holds {len(state['history'])} epochs; {_FIX}")
    if not all(isinstance(m, dict) for m in state["history"]):
        raise CheckpointError(f"{path} is damaged: its history is not a list of epochs; {_FIX}")
    for name, value in state["model"].items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path} is damaged: model entry {name!r} is a "
                                  f"{type(value).__name__}, not a tensor; {_FIX}")
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: model weight {name!r} holds NaN or infinite "
                                  f"values; {_FIX}")


@contextmanager
def restoring(path: str | os.PathLike) -> Iterator[None]:
    """Turn what restoring a loadable but damaged checkpoint raises (a state dict with
    other keys or shapes, an optimizer state of the wrong form, a history entry with
    other fields) into one :class:`CheckpointError` naming the file."""
    try:
        yield
    except GraphsysError:  # already one line naming what to do
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 240 else detail[:237] + "..."
        raise CheckpointError(f"{path} does not restore into this run "
                              f"({type(exc).__name__}: {detail}); {_FIX}") from None


def reorder_legacy_optimizer_state(saved_model: dict[str, Any], optimizer_state: dict[str, Any],
                                   model: torch.nn.Module) -> dict[str, Any]:
    """``optimizer_state`` re-indexed for ``model`` when the checkpoint's parameters were
    registered in another order: graphsys before DGL's key names kept a layer's bias as
    ``<layer>.bias`` after its weights, DGL keeps it in ``fc_self``/``res_fc``.

    An optimizer state is indexed by parameter position. The saved model's keys give the
    old positions (a state dict lists parameters in registration order); a saved key the
    model no longer has is paired with the one new key under the same layer prefix with
    the same shape. Returns the state unchanged when the order already matches, or when
    no unique pairing exists (loading then fails with a message naming the file).
    """
    new_names = [name for name, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    unmatched_new = [n for n in new_names if n not in saved_model]
    old_names = []
    for key, value in saved_model.items():
        if key in params:
            old_names.append(key)
        elif isinstance(value, torch.Tensor) and key not in dict(model.named_buffers()):
            prefix = key.rsplit(".", 1)[0] + "."
            pair = [n for n in unmatched_new
                    if n.startswith(prefix) and params[n].shape == value.shape]
            if len(pair) != 1:
                return optimizer_state
            old_names.append(pair[0])
            unmatched_new.remove(pair[0])
    if old_names == new_names or sorted(old_names) != sorted(new_names):
        return optimizer_state
    new_index = {name: i for i, name in enumerate(new_names)}
    moved = {old: new_index[name] for old, name in enumerate(old_names)}
    groups = optimizer_state.get("param_groups")
    if not isinstance(groups, list) or not isinstance(optimizer_state.get("state"), dict):
        return optimizer_state
    try:
        state = {moved[int(i)]: v for i, v in optimizer_state["state"].items()}
        groups = [{**g, "params": sorted(moved[int(i)] for i in g["params"])} for g in groups]
    except (KeyError, TypeError, ValueError):
        return optimizer_state
    return {**optimizer_state, "state": state, "param_groups": groups}


def check_optimizer_state(optimizer: torch.optim.Optimizer, fresh_groups: list[dict[str, Any]],
                          path: str | os.PathLike) -> None:
    """After ``optimizer.load_state_dict``: every per-parameter tensor has its parameter's
    shape and finite values, and every hyper-parameter the type of ``fresh_groups``'
    (the groups before loading); torch checks neither, so a damaged state failed at the
    first step, or trained NaN weights."""
    for group, fresh in zip(optimizer.param_groups, fresh_groups):
        for key, default in fresh.items():
            if key == "params":
                continue
            value = group.get(key)
            if isinstance(default, bool | type(None)) or not isinstance(default, int | float
                                                                          | tuple):
                continue
            numbers = value if isinstance(value, tuple | list) else (value,)
            if (isinstance(default, tuple) and not isinstance(value, tuple | list)) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                    for v in numbers):
                raise CheckpointError(f"{path} is damaged: optimizer {key}={value!r}; {_FIX}")
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if not isinstance(value, torch.Tensor):
                    continue
                if value.dim() and value.shape != param.shape:
                    raise CheckpointError(f"{path} is damaged: optimizer state {key!r} has "
                                          f"shape {tuple(value.shape)} for a parameter of "
                                          f"shape {tuple(param.shape)}; {_FIX}")
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    raise CheckpointError(f"{path}: optimizer state {key!r} holds NaN or "
                                          f"infinite values; {_FIX}")
