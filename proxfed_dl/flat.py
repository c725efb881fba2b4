"""A torch model seen through one flat parameter vector (and one flat buffer vector).

The core engine works on stacked client iterates of shape ``(N, P)``; a
:class:`FlatModel` maps a row ``w`` of length ``P`` (all trainable parameters,
flattened in ``named_parameters`` order and concatenated) and a row ``b`` of
BatchNorm running statistics back to the module through
:func:`torch.func.functional_call`, without copying: the parameter tensors are
views of ``w``. The per-client loss-and-gradient function is a pure function of
``(w, b, x, y)``, so it can be mapped over clients with :func:`torch.func.vmap`
or called in a plain loop with the same result.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from .models import BatchNorm2d

__all__ = ["FlatModel"]


class FlatModel:
    """Flatten / unflatten a module's parameters and running statistics, and call it functionally.

    Parameters
    ----------
    module : torch.nn.Module
        The architecture (its own parameter values are only a template). Its
        BatchNorm layers must be :class:`proxfed_dl.BatchNorm2d` (torch's
        BatchNorm updates its buffers in place, which ``torch.func`` forbids).

    Attributes
    ----------
    module : torch.nn.Module
    names, shapes : list
        Parameter names and shapes, in flat order.
    buffer_names, buffer_shapes : list
        Running-statistics names and shapes, in flat order
        (``running_mean`` then ``running_var`` of every BatchNorm).
    dim : int
        ``P``, the number of trainable parameters.
    n_buffers : int
        Length of the flat buffer vector.
    """

    def __init__(self, module: nn.Module):
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        for name, m in module.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, BatchNorm2d):
                raise TypeError(f"layer {name!r} is a torch BatchNorm; use proxfed_dl.BatchNorm2d, whose running "
                                "statistics can be carried per client under torch.func")
        self.module = module
        params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        if not params:
            raise ValueError("the module has no trainable parameters")
        self.names = [n for n, _ in params]
        self.shapes = [tuple(p.shape) for _, p in params]
        self._numels = [p.numel() for _, p in params]
        self._bns = [(n, m) for n, m in module.named_modules() if isinstance(m, BatchNorm2d)]
        self.buffer_names, self.buffer_shapes = [], []
        for n, m in self._bns:
            prefix = f"{n}." if n else ""
            for b in ("running_mean", "running_var"):
                self.buffer_names.append(prefix + b)
                self.buffer_shapes.append(tuple(getattr(m, b).shape))
        self._buffer_numels = [int(torch.Size(s).numel()) for s in self.buffer_shapes]
        self.dim = int(sum(self._numels))
        self.n_buffers = int(sum(self._buffer_numels))
        kinds, owners = [], []
        for n, _ in params:
            owner = module.get_submodule(n.rsplit(".", 1)[0]) if "." in n else module
            kinds.append(isinstance(owner, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and n.endswith("weight"))
            owners.append(("conv" if isinstance(owner, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) else "linear")
                          if kinds[-1] else None)
        self._weight_kinds = kinds
        self._weight_owner = owners

    # -- flat vectors ------------------------------------------------------------------
    def parameters_vector(self, module: nn.Module | None = None) -> torch.Tensor:
        """The trainable parameters of ``module`` (default the template) as one vector (P,).

        Parameters
        ----------
        module : torch.nn.Module, optional
            A module of the same architecture.

        Returns
        -------
        torch.Tensor, shape (P,)
        """
        m = self.module if module is None else module
        named = dict(m.named_parameters())
        return torch.cat([named[n].detach().reshape(-1) for n in self.names])

    def buffers_vector(self, module: nn.Module | None = None) -> torch.Tensor:
        """The BatchNorm running statistics of ``module`` (default the template) as one vector.

        Parameters
        ----------
        module : torch.nn.Module, optional

        Returns
        -------
        torch.Tensor, shape (n_buffers,)
        """
        m = self.module if module is None else module
        named = dict(m.named_buffers())
        if not self.buffer_names:
            p = next(iter(m.parameters()))
            return torch.zeros(0, dtype=p.dtype, device=p.device)
        return torch.cat([named[n].detach().reshape(-1) for n in self.buffer_names])

    def split(self, w) -> tuple:
        """The parameter tensors as views of ``w``: shapes ``w.shape[:-1] + shape_j`` (no copy).

        Parameters
        ----------
        w : torch.Tensor, shape (..., P)

        Returns
        -------
        tuple of torch.Tensor
            In :attr:`names` order.
        """
        lead = tuple(w.shape[:-1])
        out, o = [], 0
        for n, s in zip(self._numels, self.shapes):
            out.append(w[..., o:o + n].reshape(lead + s))
            o += n
        return tuple(out)

    def join(self, parts) -> torch.Tensor:
        """Inverse of :meth:`split`: concatenate per-parameter tensors (..., shape_j) into (..., P).

        Parameters
        ----------
        parts : sequence of torch.Tensor

        Returns
        -------
        torch.Tensor, shape (..., P)
        """
        parts = list(parts)
        lead = tuple(parts[0].shape[: parts[0].ndim - len(self.shapes[0])])
        return torch.cat([p.reshape(lead + (n,)) for p, n in zip(parts, self._numels)], dim=-1)

    def unflatten(self, w) -> dict:
        """``{name: view of w}`` for every parameter; ``w`` has shape (P,).

        Parameters
        ----------
        w : torch.Tensor, shape (P,)

        Returns
        -------
        dict of str to torch.Tensor
        """
        return dict(zip(self.names, self.split(w)))

    def unflatten_buffers(self, b) -> dict:
        """``{name: view of b}`` for every running statistic; ``b`` has shape (n_buffers,).

        Parameters
        ----------
        b : torch.Tensor, shape (n_buffers,)

        Returns
        -------
        dict of str to torch.Tensor
        """
        return dict(zip(self.buffer_names, _split(b, self._buffer_numels, self.buffer_shapes)))

    def load(self, w, b=None, module: nn.Module | None = None) -> nn.Module:
        """Copy the flat vectors into ``module`` (default the template) and return it.

        Parameters
        ----------
        w : torch.Tensor, shape (P,)
        b : torch.Tensor, shape (n_buffers,), optional
        module : torch.nn.Module, optional

        Returns
        -------
        torch.nn.Module
        """
        m = self.module if module is None else module
        named = dict(m.named_parameters())
        with torch.no_grad():
            for n, v in self.unflatten(w).items():
                named[n].copy_(v)
            if b is not None:
                bufs = dict(m.named_buffers())
                for n, v in self.unflatten_buffers(b).items():
                    bufs[n].copy_(v)
        return m

    def prunable_mask(self, device=None) -> torch.Tensor:
        """Boolean (P,): True on weights of convolutions and linear layers, False on biases and BatchNorm.

        Parameters
        ----------
        device : torch.device or str, optional

        Returns
        -------
        torch.Tensor of bool, shape (P,)
        """
        return torch.cat([torch.full((n,), bool(k), dtype=torch.bool, device=device)
                          for n, k in zip(self._numels, self._weight_kinds)])

    def weight_segments(self, kinds=("conv", "linear")) -> list:
        """``[(start, stop), ...]`` of the weight tensors of the given layer kinds in the flat vector.

        The maskable tensors of FLASH (:class:`proxfed.algorithms.Flash`'s
        ``layers``): ``kinds=("conv",)`` for the convolutions only (ResNet18),
        ``("conv", "linear")`` for every convolution and linear weight.

        Parameters
        ----------
        kinds : sequence of {"conv", "linear"}

        Returns
        -------
        list of (int, int)
        """
        bad = set(kinds) - {"conv", "linear"}
        if bad or not kinds:
            raise ValueError(f"kinds must be a non-empty subset of ('conv', 'linear'), got {kinds!r}")
        out, start = [], 0
        for n, owner in zip(self._numels, self._weight_owner):
            if owner in kinds:
                out.append((start, start + n))
            start += n
        if not out:
            raise ValueError(f"the model has no weights of kinds {tuple(kinds)}")
        return out

    # -- functional calls ----------------------------------------------------------------
    def logits(self, w, b, x, train: bool = False):
        """The module's output for images ``x`` with parameters ``w`` and running statistics ``b``.

        Parameters
        ----------
        w : torch.Tensor, shape (P,)
        b : torch.Tensor, shape (n_buffers,)
        x : torch.Tensor, shape (batch, C, H, W)
        train : bool
            Training mode (batch statistics) or evaluation mode (running statistics).

        Returns
        -------
        torch.Tensor, shape (batch, classes)
        """
        with self._mode(train):
            out = functional_call(self.module, {**self.unflatten(w), **self.unflatten_buffers(b)}, (x,))
        self._clear_stats()
        return out

    def loss_and_stats(self, params, b, x, y, autocast_dtype=None):
        """Mean cross-entropy on a batch in training mode, and the updated running statistics.

        A pure function of its arguments, to be differentiated with
        ``torch.func.grad(..., has_aux=True)`` (with respect to the tuple
        ``params``, which gives one gradient tensor per parameter -- cheaper
        than differentiating through views of one flat vector) and mapped
        with ``vmap``.

        Parameters
        ----------
        params : tuple of torch.Tensor
            The parameters in :attr:`names` order (e.g. ``split(w)``).
        b : torch.Tensor, shape (n_buffers,)
        x : torch.Tensor, shape (batch, C, H, W)
        y : torch.Tensor of int64, shape (batch,)
        autocast_dtype : torch.dtype, optional
            Run the forward pass under ``torch.autocast`` with this dtype (e.g. bfloat16).

        Returns
        -------
        loss : torch.Tensor, scalar
        aux : tuple
            ``(new_buffers, loss.detach())``.
        """
        ctx = (torch.autocast(device_type=x.device.type, dtype=autocast_dtype) if autocast_dtype is not None
               else contextlib.nullcontext())
        with self._mode(True), ctx:
            out = functional_call(self.module, {**dict(zip(self.names, params)), **self.unflatten_buffers(b)}, (x,))
        loss = F.cross_entropy(out.to(params[0].dtype), y)
        if self._bns:
            new_b = torch.cat([torch.cat([s.reshape(-1).to(b.dtype) for s in m.new_stats]) for _, m in self._bns])
        else:
            new_b = b
        self._clear_stats()
        return loss, (new_b, loss.detach())

    @contextlib.contextmanager
    def _mode(self, train: bool):
        was = self.module.training
        self.module.train(train)
        try:
            yield
        finally:
            self.module.train(was)

    def _clear_stats(self) -> None:
        for _, m in self._bns:
            m.new_stats = None


def _split(v, numels, shapes):
    out, o = [], 0
    for n, s in zip(numels, shapes):
        out.append(v[o:o + n].view(s))
        o += n
    return out
