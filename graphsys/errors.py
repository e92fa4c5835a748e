"""Exceptions raised by graphsys.

Every error names the file or argument at fault and what to do about it, so a user
never has to read a traceback to learn how to recover.
"""

from __future__ import annotations


class GraphsysError(Exception):
    """Base class of all graphsys errors."""


class DatasetError(GraphsysError):
    """A dataset on disk is missing, damaged, or disagrees with its manifest."""


class DatasetExistsError(DatasetError, FileExistsError):
    """The output path of a write already exists."""


class ChecksumError(DatasetError):
    """An array's bytes do not match the checksum recorded in the manifest."""


class InputFormatError(GraphsysError, ValueError):
    """Raw input (an edge list, a Planetoid or OGB file) is malformed."""


class NotAGraphError(GraphsysError, TypeError):
    """Raw edge data (a scipy matrix, an ``edge_index``, a ``(src, dst)`` pair) was passed
    where a graph belongs; the message names the constructor that builds one."""


class UnsafePickleError(InputFormatError):
    """A pickle asked for a type outside the allow-list of the restricted unpickler."""


class CheckpointError(GraphsysError):
    """A checkpoint is unreadable or does not match the model or dataset being trained."""


class ConfigError(GraphsysError, ValueError):
    """An option whose value graphsys cannot use (the message names it and the fix)."""


class TrainingConfigError(ConfigError):
    """Training options that cannot work together or with the dataset."""


class BudgetError(GraphsysError, ValueError):
    """A memory budget too small for the work asked (e.g. smaller than one batch)."""


class TrainingDivergedError(GraphsysError):
    """The loss became NaN or infinite: the run stops and keeps its last good checkpoint."""


class RunExistsError(GraphsysError, FileExistsError):
    """An output directory already holds a training run that a new run would overwrite."""


class DiskSpaceError(GraphsysError, OSError):
    """A file system cannot hold what graphsys would write (checked before writing)."""
