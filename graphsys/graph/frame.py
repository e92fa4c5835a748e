"""``Frame``: the dict behind DGL's ``g.ndata``/``g.edata`` and a block's ``srcdata``/``dstdata``.

A frame maps names to per-row data: torch tensors, or anything a feature store offers
(``read(ids)``, ``num_rows``, ``dim``, ``dtype``: see :mod:`graphsys.storage.base`), so
memory-mapped, packed or cached features sit behind DGL's own names without being loaded.
Setting an entry checks its row count against the frame's (a cheap shape check, as DGL's
frames do); everything else is a plain ``dict``, so a frame costs nothing per read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def rows_of(value: Any) -> int:
    """Rows of a tensor, array, feature store (``num_rows``) or sized row container."""
    rows = getattr(value, "num_rows", None)
    if rows is not None:
        return int(rows)
    shape = getattr(value, "shape", None)
    if shape is not None and len(shape):
        return int(shape[0])
    if hasattr(value, "__len__"):
        return len(value)
    raise TypeError(f"frame values must be tensors or feature stores (with num_rows), got "
                    f"{type(value).__name__}")


class Frame(dict):
    """A ``dict`` of per-row data whose entries must all have ``num_rows`` rows.

    Args:
        data: initial entries (checked like later ones).
        num_rows: rows every entry must have, or None to skip the check.
        what: the frame's name in error messages (``"ndata"``, ``"srcdata"``, ...).

    ``update`` and ``setdefault`` go through the same check. Example:
        >>> f = Frame(num_rows=3, what="ndata")
        >>> f["x"] = torch.zeros(3, 2)                             # doctest: +SKIP
        >>> f["y"] = torch.zeros(4)                                # doctest: +SKIP
        Traceback (most recent call last):
        ValueError: ndata['y'] has 4 rows, expected 3 (one per node)
    """

    def __init__(self, data: Mapping[str, Any] | Iterable[tuple[str, Any]] | None = None, *,
                 num_rows: int | None = None, what: str = "frame") -> None:
        super().__init__()
        self.num_rows = num_rows
        self.what = what
        if data:
            self.update(data)

    def __setitem__(self, key: str, value: Any) -> None:
        if self.num_rows is not None:
            rows = rows_of(value)
            if rows != self.num_rows:
                unit = {"ndata": "node", "srcdata": "source node", "dstdata": "destination node",
                        "edata": "edge"}.get(self.what, "row")
                raise ValueError(f"{self.what}[{key!r}] has {rows} rows, expected "
                                 f"{self.num_rows} (one per {unit})")
        super().__setitem__(key, value)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # type: ignore[override]
        items = other.items() if isinstance(other, Mapping) else other
        for key, value in items:
            self[key] = value
        for key, value in kwargs.items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def copy(self) -> Frame:
        """A shallow copy (same values), as DGL's graph copies share feature tensors."""
        out = Frame(num_rows=self.num_rows, what=self.what)
        dict.update(out, self)
        return out

    def __reduce__(self) -> tuple:
        return (_rebuild, (dict(self), self.num_rows, self.what))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k!r}: {_describe(v)}" for k, v in self.items())
        return f"Frame({self.what}, num_rows={self.num_rows}, {{{inner}}})"


def _rebuild(data: dict, num_rows: int | None, what: str) -> Frame:
    out = Frame(num_rows=num_rows, what=what)
    dict.update(out, data)
    return out


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None:
        return f"{type(value).__name__}(shape={tuple(shape)}, dtype={dtype})"
    return type(value).__name__


class CastRows:
    """A feature store's rows in another floating dtype, converted as they are read, so
    ``g.half()`` keeps out-of-core features out of core. (A tensor, memory-mapped ones
    included, is cast whole into RAM, as DGL does: scripts use it as a tensor.)
    """

    def __init__(self, store: Any, dtype: Any) -> None:
        self.store, self.dtype = store, dtype
        self.num_rows, self.dim = int(store.num_rows), int(store.dim)
        self.device = getattr(store, "device", None)
        self.stats = getattr(store, "stats", None)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.num_rows, self.dim)

    def __len__(self) -> int:
        return self.num_rows

    def read(self, ids: Any, out: Any = None) -> Any:
        rows = self.store.read(ids).to(self.dtype)
        return rows if out is None else out.copy_(rows)

    def __getitem__(self, ids: Any) -> Any:
        return self.store[ids].to(self.dtype)

    def to(self, device: Any, non_blocking: bool = False) -> CastRows:
        return CastRows(self.store.to(device), self.dtype)

    __iter__ = None

    def __repr__(self) -> str:
        return f"CastRows({self.store!r}, dtype={self.dtype})"


def cast_floating(value: Any, dtype: Any) -> Any:
    """``value`` in ``dtype`` if it holds floating-point rows, else ``value`` itself."""
    current = getattr(value, "dtype", None)
    is_float = getattr(current, "is_floating_point", False)
    if not is_float or current == dtype:
        return value
    if hasattr(value, "to") and hasattr(value, "index_select"):  # a tensor
        return value.to(dtype)
    if isinstance(value, CastRows):
        return CastRows(value.store, dtype) if value.store.dtype != dtype else value.store
    return CastRows(value, dtype)
