"""A restricted unpickler for pickled research datasets (the Planetoid ``ind.*`` files).

``pickle.load`` runs whatever constructor a file names; these files only ever need
numpy arrays, scipy CSR matrices and a few builtin containers, so every other global
is refused before anything is built.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from graphsys.errors import InputFormatError, UnsafePickleError


def _reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct as func
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct as func
    return func


def _scalar() -> Any:
    try:
        from numpy._core.multiarray import scalar as func
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar as func
    return func


def _csr_matrix() -> Any:
    from scipy.sparse import csr_matrix

    return csr_matrix


def _builtin(name: str) -> Any:
    return {"list": list, "dict": dict, "set": set, "tuple": tuple, "int": int,
            "float": float}[name]


# (module, name) -> how to obtain the object. Python 2 pickles say "__builtin__", numpy 1
# pickles "numpy.core", numpy 2 pickles "numpy._core"; old scipy "scipy.sparse.csr".
_ALLOWED = {
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("scipy.sparse.csr", "csr_matrix"): _csr_matrix,
    ("scipy.sparse._csr", "csr_matrix"): _csr_matrix,
    ("scipy.sparse", "csr_matrix"): _csr_matrix,
    # Python 3 protocol-2 pickles spell bytes as _codecs.encode(str, "latin1"): harmless.
    ("_codecs", "encode"): lambda: __import__("codecs").encode,
    ("collections", "defaultdict"): lambda: __import__("collections").defaultdict,
    **{
        (module, name): (lambda n=name: _builtin(n))
        for module in ("__builtin__", "builtins")
        for name in ("list", "dict", "set", "tuple", "int", "float")
    },
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only numpy arrays and dtypes, scipy CSR matrices and builtin containers."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="latin1")  # the Planetoid files come from Python 2
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        factory = _ALLOWED.get((module, name))
        if factory is None:
            raise UnsafePickleError(
                f"{self.source} asks to load {module}.{name}, which is not a type a dataset "
                "file needs; refusing to unpickle it. Use the original dataset files."
            )
        return factory()

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.source} uses persistent ids; refusing to unpickle it")


def safe_load(path: str | os.PathLike) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`.

    Raises:
        UnsafePickleError: the file asks for any other type.
        InputFormatError: the file is truncated or not a pickle.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        try:
            return RestrictedUnpickler(handle, str(path)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
            raise InputFormatError(
                f"{path} is not a readable pickle ({type(exc).__name__}: {exc}); the file "
                "is truncated or corrupt, replace it with the original"
            ) from exc
