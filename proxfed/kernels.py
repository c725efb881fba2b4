"""Count what a piece of torch code dispatches: kernels, bytes written and host synchronizations.

A device step is bound by what it launches and writes, not by its FLOPs, long
before the data is large; these counts are measurable on the CPU build of
torch, which runs the same code path as CUDA. Used by the tests (kernels per
iteration independent of N) and by ``benchmarks/bench_gpu.py``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np

from . import _backend as B

__all__ = ["KernelCount", "count_kernels", "HOST_SYNC_OPS"]

#: Operators that make the host wait for the device (a value or a shape read back).
HOST_SYNC_OPS = frozenset({
    "aten._local_scalar_dense", "aten.nonzero", "aten.is_nonzero", "aten.masked_select",
    "aten.equal", "aten.unique", "aten._unique2", "aten.item",
})

#: Metadata-only operators that are not views by schema but launch nothing.
_FREE_OPS = frozenset({"aten.lift_fresh", "aten.empty_like", "aten.empty", "aten.empty_strided",
                       "aten.new_empty", "aten.new_empty_strided", "aten.detach", "aten.alias",
                       "aten._unsafe_view"})


@dataclass
class KernelCount:
    """What :func:`count_kernels` saw.

    Attributes
    ----------
    kernels : int
        Dispatched operators that compute or copy (views and allocations excluded).
    bytes_written : int
        Bytes of every tensor those operators produced or wrote in place.
    host_syncs : int
        Operators that read a device value or data-dependent shape back to the host.
    to_host : int
        Arrays of another library copied to the host by :func:`proxfed._backend.to_numpy`
        (each a synchronization on a GPU).
    from_host : int
        Host arrays moved to the device by :func:`proxfed._backend.from_numpy`.
    ops : dict of str to int
        Kernels per operator name.
    """

    kernels: int = 0
    bytes_written: int = 0
    host_syncs: int = 0
    to_host: int = 0
    from_host: int = 0
    ops: dict = field(default_factory=dict)


#: In-place operators that write only the rows their last argument (the source) holds.
_INDEXED_WRITES = frozenset({"aten.index_copy_", "aten.index_put_", "aten.index_add_", "aten.scatter_",
                             "aten.scatter_add_", "aten.masked_scatter_"})


def _tensors(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)


def _dispatch_mode(count: KernelCount):
    """A TorchDispatchMode that adds what it sees to ``count`` (torch imported here: it is optional)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counting(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket._qualified_op_name.replace("::", ".")
            if name in HOST_SYNC_OPS:
                count.host_syncs += 1
            if func.is_view or name in _FREE_OPS:
                return out
            count.kernels += 1
            count.ops[name] = count.ops.get(name, 0) + 1
            # an indexed write in place writes its source's rows, not the whole target
            written = args[-1] if name in _INDEXED_WRITES else out
            count.bytes_written += sum(t.numel() * t.element_size() for t in _tensors(written))
            return out

    return Counting()


@contextlib.contextmanager
def count_kernels():
    """Context manager counting the torch kernels dispatched inside it.

    >>> import pytest; torch = pytest.importorskip("torch")
    >>> with count_kernels() as c:
    ...     y = torch.ones(4) * 2 + 1
    >>> c.kernels, c.bytes_written
    (3, 48)
    """
    count = KernelCount()
    to_numpy, from_numpy = B.to_numpy, B.from_numpy

    def counted_to_numpy(x):
        if not isinstance(x, np.ndarray) and hasattr(x, "shape"):
            count.to_host += 1
        return to_numpy(x)

    def counted_from_numpy(a, like, dtype=None):
        if not isinstance(like, np.ndarray):
            count.from_host += 1
        return from_numpy(a, like, dtype)

    B.to_numpy, B.from_numpy = counted_to_numpy, counted_from_numpy
    try:
        with _dispatch_mode(count):
            yield count
    finally:
        B.to_numpy, B.from_numpy = to_numpy, from_numpy
