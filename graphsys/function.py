"""DGL's ``dgl.function``: built-in message and reduce functions for ``update_all``.

``import graphsys.function as fn`` (or ``import graphsys as dgl`` then ``dgl.function``)
gives ``fn.copy_u``, ``fn.copy_e``, ``fn.u_mul_e``, ``fn.u_add_v``, ``fn.u_dot_v`` and
the other ``<u|v|e>_<add|sub|mul|div|dot>_<u|v|e>`` messages, and the reducers
``fn.sum``, ``fn.mean``, ``fn.max``, ``fn.min``. See
:mod:`graphsys.graph.message_passing` for what runs them.
"""

from graphsys.graph.message_passing import (
    BUILTIN_MESSAGES,
    BUILTIN_REDUCERS,
    MessageFunction,
    ReduceFunction,
)

globals().update(BUILTIN_MESSAGES)
globals().update(BUILTIN_REDUCERS)

__all__ = ["MessageFunction", "ReduceFunction", *sorted(BUILTIN_MESSAGES),
           *sorted(BUILTIN_REDUCERS)]
