"""Compiled CPU twin of :func:`headforge.representations.fields.hash_grid.hash_grid_encode` (hash_grid.cpp).

Forward values and gradients w.r.t. the table match the torch path (``tests/test_fields.py`` checks both);
it computes no gradient w.r.t. the points, so :class:`HashGridEncoding` only uses it when the points do not
need one (training a density field, the SDF value pass), and the torch path otherwise (normals, eikonal).
Built on first use by :func:`headforge.extensions.load_extension`; ops in ``torch.ops.headforge_hash``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from headforge.extensions import load_extension

_SOURCE = Path(__file__).with_name("hash_grid.cpp")


def load_kernels() -> None:
    """Compile (first time) and load the kernel; raises :class:`HeadforgeError` if it cannot be built."""
    load_extension("headforge_hash", _SOURCE, "the CPU hash-grid kernel", "set HashGridConfig.backend='torch'")


def _layout_tensors(layout) -> tuple[Tensor, Tensor, Tensor, Tensor, int, int]:
    return (torch.tensor(layout.scales, dtype=torch.float32), torch.tensor(layout.resolutions, dtype=torch.int64),
            torch.tensor(layout.sizes, dtype=torch.int64), torch.tensor(layout.offsets, dtype=torch.int64),
            layout.n_dense, int(math.log2(layout.table_size)))


class _Encode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, table, layout):
        args = _layout_tensors(layout)
        ctx.save_for_backward(x)
        ctx.args, ctx.table_shape = args, table.shape
        return torch.ops.headforge_hash.encode_forward(x, table.detach().contiguous(), *args)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        grad_table = torch.ops.headforge_hash.encode_backward(x, grad_out.contiguous(), ctx.table_shape[0],
                                                              ctx.table_shape[1], *ctx.args)
        return None, grad_table, None


def hash_grid_encode_cpu(x: Tensor, table: Tensor, layout) -> Tensor:
    """Points x [N, 3] in [0, 1]^3 (clamped), float32 CPU, no grad needed; table [E, F] -> [N, L * F]."""
    if x.requires_grad and torch.is_grad_enabled():
        raise ValueError("hash_grid_encode_cpu gives no gradient w.r.t. the points; use hash_grid_encode")
    if x.ndim != 2 or x.shape[-1] != 3:
        raise ValueError(f"hash_grid_encode_cpu expects points [N, 3], got {tuple(x.shape)}")
    if table.shape[0] != layout.total_size:
        raise ValueError(f"hash table has {table.shape[0]} entries, layout needs {layout.total_size}")
    load_kernels()
    return _Encode.apply(x.detach().float().contiguous(), table, layout)
