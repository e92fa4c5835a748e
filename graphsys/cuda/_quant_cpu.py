"""Numba CPU path of the fused quantized aggregation (see :mod:`graphsys.cuda.quant`).

Parallel over destination nodes; each reads its in-edges' code rows and accumulates
``scale_j * q_jc`` in float32 straight into its output row, then adds the sum of the
zero points once: the dequantized rows are never materialised. The operation order
(edges in CSC order, multiply then add, division by the degree last) is the CUDA
kernel's, which is compiled without fused multiply-add for that reason.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(nogil=True, parallel=True, cache=True)
def aggregate(indptr, indices, codes, scale, zero, dim, bits, mean, out):
    """``out[i, c] = sum (or mean) over edges j -> i of (zero_j + scale_j * q_jc)``."""
    n = indptr.shape[0] - 1
    for i in numba.prange(n):
        start = indptr[i]
        end = indptr[i + 1]
        zsum = np.float32(0.0)
        for c in range(dim):
            out[i, c] = np.float32(0.0)
        for e in range(start, end):
            j = indices[e]
            s = scale[j]
            zsum = zsum + zero[j]
            if bits == 8:
                for c in range(dim):
                    out[i, c] = out[i, c] + s * np.float32(codes[j, c])
            else:
                for c in range(dim):
                    byte = codes[j, c >> 1]
                    q = (byte >> 4) if (c & 1) else (byte & 15)
                    out[i, c] = out[i, c] + s * np.float32(q)
        deg = end - start
        for c in range(dim):
            v = out[i, c] + zsum
            if mean and deg > 0:
                v = v / np.float32(deg)
            out[i, c] = v
