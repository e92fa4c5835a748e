"""Reader for the Planetoid citation datasets (Cora, CiteSeer, PubMed) in ``ind.*`` form.

The files are Python 2 pickles: ``x``/``y`` (labelled training nodes), ``allx``/``ally``
(all non-test nodes), ``tx``/``ty`` (test nodes), ``graph`` (adjacency dict) and a
text file ``test.index``. The standard split (Yang et al., 2016) is: the first
``len(y)`` nodes train, the next 500 validate, the ``test.index`` nodes test.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np

from graphsys.datasets.safe_pickle import safe_load
from graphsys.errors import InputFormatError
from graphsys.graph.csc import CSCGraph
from graphsys.graph.manifest import Manifest
from graphsys.graph.writer import DatasetWriter

_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph")
NUM_VAL = 500


@dataclass
class NodeClassificationData:
    """An in-memory node-classification dataset, ready for :class:`DatasetWriter`."""

    name: str
    graph: CSCGraph
    features: np.ndarray
    labels: np.ndarray
    train_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    num_classes: int

    def write(
        self,
        out: str | os.PathLike,
        *,
        feature_storage: Literal["raw", "zarr"] = "raw",
        overwrite: bool = False,
        source: dict | None = None,
    ) -> Manifest:
        """Write this dataset to ``out`` atomically."""
        with DatasetWriter(out, name=self.name, overwrite=overwrite, source=source) as writer:
            writer.write_graph(self.graph)
            writer.write_array("features", self.features, storage=feature_storage)
            writer.write_array("labels", self.labels)
            writer.write_array("train_idx", self.train_idx)
            writer.write_array("val_idx", self.val_idx)
            writer.write_array("test_idx", self.test_idx)
            return writer.finish(num_classes=self.num_classes)


#: Planetoid feature matrices are at most a few hundred MB dense (PubMed: 19717 x 500).
_MAX_DENSE_BYTES = 8 << 30


def _dense(matrix: object, path: Path) -> np.ndarray:
    import scipy.sparse as sp

    if sp.issparse(matrix):
        # A crafted matrix (an index past its shape) would make todense() write out of
        # bounds: check every invariant first, with scipy's own full check.
        try:
            if matrix.format not in ("csr", "csc", "coo"):
                raise ValueError(f"unexpected sparse format {matrix.format!r}")
            rows, cols = (int(d) for d in matrix.shape)
            if matrix.format == "coo":
                if matrix.nnz and (matrix.row.min() < 0 or matrix.row.max() >= rows
                                   or matrix.col.min() < 0 or matrix.col.max() >= cols):
                    raise ValueError("an entry lies outside the matrix's shape")
            else:
                matrix.check_format(full_check=True)
        except (ValueError, TypeError, AttributeError) as exc:
            raise InputFormatError(f"{path} holds a damaged sparse matrix ({exc}); use the "
                                   "original Planetoid files") from None
        if rows * cols * 4 > _MAX_DENSE_BYTES:
            raise InputFormatError(f"{path} holds a {rows} x {cols} matrix, "
                                   f"{rows * cols * 4 / 2**30:.0f} GiB dense: not a Planetoid "
                                   "feature matrix; use the original files")
        dtype, dense = matrix.dtype, None
    elif isinstance(matrix, np.ndarray) and matrix.ndim == 2:
        dtype, dense = matrix.dtype, matrix
    else:
        raise InputFormatError(f"{path} should hold a 2-D matrix, found "
                               f"{type(matrix).__name__}"
                               + (f" of {matrix.ndim} dimension(s)"
                                  if isinstance(matrix, np.ndarray) else ""))
    # Only real numbers are features or one-hot labels; strings, objects or complex
    # numbers would fail (or be silently cast) further down.
    if dtype.kind not in "biuf":
        raise InputFormatError(f"{path} holds a matrix of {dtype} values; Planetoid files "
                               "hold numbers: use the original files")
    out = np.asarray(matrix.todense() if dense is None else dense, dtype=np.float32)
    if not np.isfinite(out).all():
        raise InputFormatError(f"{path} holds NaN or infinite values; use the original files")
    return out


def _read_test_index(path: Path) -> np.ndarray:
    try:
        lines = path.read_text().split()
        ids = np.array([int(token) for token in lines], dtype=np.int64)
    except (OSError, ValueError, OverflowError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{path} should hold one node id per line ({exc})") from exc
    if ids.size == 0:
        raise InputFormatError(f"{path} lists no test nodes")
    if np.unique(ids).size != ids.size:
        raise InputFormatError(f"{path} lists a node more than once; use the original file")
    return ids


def _is_node_id(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _edges_from_adjacency(adjacency: object, num_nodes: int, path: Path) -> CSCGraph:
    if not isinstance(adjacency, Mapping):
        raise InputFormatError(f"{path} should hold a dict of adjacency lists")
    src: list[int] = []
    dst: list[int] = []
    for node, neighbours in adjacency.items():
        if not isinstance(neighbours, list | tuple | set):
            raise InputFormatError(f"{path}: node {node!r} has no neighbour list")
        # Node ids are integers: int() would also accept "7", 7.9 or True, silently.
        if not _is_node_id(node) or not all(_is_node_id(v) for v in neighbours):
            raise InputFormatError(f"{path}: node {node!r} or one of its neighbours is not "
                                   "an integer node id; use the original files")
        src.extend([int(node)] * len(neighbours))
        dst.extend(int(v) for v in neighbours)
    try:
        # The files list each undirected link from one or both ends, with repeats and
        # self loops: symmetrise and clean, as DGL and PyG do (Cora: 10556 edges).
        return CSCGraph.from_edges(
            np.array(src, dtype=np.int64), np.array(dst, dtype=np.int64), num_nodes,
            symmetric=True, dedup=True, remove_self_loops=True,
        )
    except InputFormatError as exc:
        raise InputFormatError(f"{path}: {exc}") from exc


def read_planetoid(raw_dir: str | os.PathLike, name: str) -> NodeClassificationData:
    """Read ``raw_dir/ind.<name>.*`` into memory with the standard split.

    Example:
        >>> data = read_planetoid("../shared/data/planetoid", "cora")    # doctest: +SKIP
        >>> data.graph.num_edges(), data.features.shape
        (10556, (2708, 1433))
    """
    raw = Path(raw_dir)
    name = name.lower()
    paths = {part: raw / f"ind.{name}.{part}" for part in (*_PARTS, "test.index")}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise InputFormatError(
            f"Planetoid files missing: {', '.join(missing)}; --raw must be the directory "
            f"holding ind.{name}.{{x,y,tx,ty,allx,ally,graph,test.index}}"
        )
    parts = {part: safe_load(paths[part]) for part in _PARTS}
    allx, tx = _dense(parts["allx"], paths["allx"]), _dense(parts["tx"], paths["tx"])
    ally, ty = _dense(parts["ally"], paths["ally"]), _dense(parts["ty"], paths["ty"])
    x, y = _dense(parts["x"], paths["x"]), _dense(parts["y"], paths["y"])
    num_train = y.shape[0]
    if x.shape[0] != num_train or x.shape[1] != allx.shape[1] or num_train > allx.shape[0]:
        raise InputFormatError(f"{paths['x']} is {x.shape[0]} x {x.shape[1]} and "
                               f"{paths['y']} has {num_train} rows; they should be the first "
                               f"rows of allx ({allx.shape[0]} x {allx.shape[1]}): use the "
                               "original files")
    for key, onehot_part in (("ally", ally), ("ty", ty), ("y", y)):
        if not np.isin(onehot_part, (0.0, 1.0)).all() or (onehot_part.sum(1) > 1).any():
            raise InputFormatError(f"{paths[key]} should hold one-hot label rows (0/1, at "
                                   "most one 1 per row); use the original files")
    if allx.shape[1] != tx.shape[1] or ally.shape[1] != ty.shape[1]:
        raise InputFormatError(f"{raw}: allx/tx or ally/ty disagree in width")
    if allx.shape[0] != ally.shape[0] or tx.shape[0] != ty.shape[0]:
        raise InputFormatError(f"{raw}: feature and label row counts disagree")

    test_index = _read_test_index(paths["test.index"])
    if len(test_index) != tx.shape[0]:
        raise InputFormatError(
            f"{paths['test.index']} lists {len(test_index)} nodes, "
            f"{paths['tx']} has {tx.shape[0]} rows"
        )
    test_sorted = np.sort(test_index)
    # CiteSeer has isolated test nodes absent from the files: give them zero features
    # and no label (-1), at their place in the id range, as the original code does.
    start, stop = allx.shape[0], int(test_sorted[-1]) + 1
    if test_sorted[0] < start:
        raise InputFormatError(f"{paths['test.index']}: test ids overlap the allx nodes")
    num_nodes = stop
    features = np.zeros((num_nodes, allx.shape[1]), dtype=np.float32)
    onehot = np.zeros((num_nodes, ally.shape[1]), dtype=np.float32)
    features[:start], onehot[:start] = allx, ally
    features[test_index], onehot[test_index] = tx, ty
    labels = np.where(onehot.any(axis=1), onehot.argmax(axis=1), -1).astype(np.int64)

    graph = _edges_from_adjacency(parts["graph"], num_nodes, paths["graph"])
    return NodeClassificationData(
        name=name,
        graph=graph,
        features=features,
        labels=labels,
        train_idx=np.arange(num_train, dtype=np.int64),
        val_idx=np.arange(num_train, num_train + NUM_VAL, dtype=np.int64),
        test_idx=test_sorted.astype(np.int64),
        num_classes=int(ally.shape[1]),
    )


def normalize_rows(features: np.ndarray) -> np.ndarray:
    """Each row divided by its sum, rows summing to 0 left at 0, as DGL's
    ``CoraGraphDataset``/``CiteseerGraphDataset`` preprocess their features.

    Computed as DGL does (float32 reciprocals of the row sums, then a product), so the
    values are DGL's bit for bit on binary bag-of-words rows.
    """
    with np.errstate(divide="ignore"):
        inverse = np.reciprocal(features.sum(axis=1, dtype=features.dtype))
    inverse[np.isinf(inverse)] = 0  # an all-zero row (CiteSeer's missing test nodes)
    return features * inverse[:, None]


def prepare_planetoid(
    raw_dir: str | os.PathLike,
    out: str | os.PathLike,
    name: str = "cora",
    *,
    feature_storage: Literal["raw", "zarr"] = "raw",
    overwrite: bool = False,
    row_normalize: bool = False,
) -> Manifest:
    """Read a Planetoid dataset and write it as a graphsys dataset directory at ``out``.

    ``row_normalize`` divides each feature row by its sum before writing (see
    :func:`normalize_rows`), so the features are those DGL's dataset classes give; the
    manifest records it as ``source["row_normalize"]``. Off by default: the files stay
    the raw bag-of-words counts, as earlier datasets were written.
    """
    data = read_planetoid(raw_dir, name)
    source = {"kind": "planetoid", "raw_dir": str(Path(raw_dir).resolve()), "name": name}
    if row_normalize:
        data = replace(data, features=normalize_rows(data.features))
        source["row_normalize"] = True  # absent when off: earlier manifests are unchanged
    return data.write(out, feature_storage=feature_storage, overwrite=overwrite,
                      source=source)
