"""Lazy package attributes (PEP 562) for the subpackage ``__init__`` modules.

A package that re-exports its public names eagerly makes ``import graphsys.nn`` load
every sibling module, and with them numba and the stores, just to reach one class. With
:func:`attach`, ``from graphsys.storage import PackedStore`` still works, but only the
module defining a name is imported, on first access.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping


def attach(package: str, names: Mapping[str, str], submodules: Iterable[str] = ()
           ) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``.

    Args:
        package: the package's ``__name__``.
        names: public name -> module that defines it (absolute, or relative to
            ``package`` when it starts with a dot).
        submodules: submodule names reachable as attributes after importing the package.
    """
    subs = frozenset(submodules)

    def __getattr__(name: str) -> object:
        if name in names:
            value = getattr(importlib.import_module(names[name], package), name)
        elif name in subs:
            value = importlib.import_module(f"{package}.{name}")
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(sys.modules[package], name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names) | subs)

    return __getattr__, __dir__
