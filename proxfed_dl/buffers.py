"""Per-client BatchNorm running statistics of a :class:`~proxfed_dl.TorchProblem`.

The statistics live outside the update rules' state (the core engine knows
nothing of BatchNorm): a :class:`RunningStatistics` holds one flat vector per
(run, client), a gradient sample produces new ones, and
:meth:`RunningStatistics.commit` stores them -- an explicit step, so that
computing a gradient and changing the statistics are two things.
:func:`proxfed_dl.track_buffers` carries them in the run state and averages
them at communications.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["RunningStatistics"]


class RunningStatistics:
    """The running statistics of N clients (and R runs), shape ``(..., N, n_buffers)``.

    Parameters
    ----------
    template : callable
        Returns the architecture's own statistics, shape (n_buffers,), on the
        device and in the dtype of the run: every client's starting point.
    n_clients : int
        Clients held here (this process's).
    n_clients_total : int
        Clients of all processes (the divisor of the client mean).
    dtype : torch.dtype
        Dtype the statistics are stored in.

    Attributes
    ----------
    process_sum : callable or None
        Sum of a tensor over processes (None in a single process); set by
        :func:`proxfed_dl.distributed.distribute`.
    """

    def __init__(self, template, n_clients: int, n_clients_total: int, dtype):
        self.template = template
        self.n_clients = int(n_clients)
        self.n_clients_total = int(n_clients_total)
        self.n_buffers = int(template().numel())
        self.dtype = dtype
        self.flat = None  # (M, n_buffers) per (run, client), M = R * N
        self.lead = None
        self.process_sum = None

    def initial(self, lead=()):
        """The template for every client (and run), shape ``lead + (N, n_buffers)``.

        Parameters
        ----------
        lead : tuple of int

        Returns
        -------
        torch.Tensor
        """
        return self.template().expand(tuple(lead) + (self.n_clients, self.n_buffers)).clone()

    @property
    def current(self):
        """The stored statistics, shape ``lead + (N, n_buffers)`` (None before any step)."""
        if self.flat is None:
            return None
        return self.flat.reshape(tuple(self.lead) + (self.n_clients, self.n_buffers))

    def set(self, buffers) -> None:
        """Replace the statistics (copied); ``None`` forgets them.

        Parameters
        ----------
        buffers : torch.Tensor, shape (..., N, n_buffers), or None
        """
        if buffers is None:
            self.flat = self.lead = None
            return
        if tuple(buffers.shape[-2:]) != (self.n_clients, self.n_buffers):
            raise ValueError(f"buffers must have shape (..., {self.n_clients}, {self.n_buffers}), "
                             f"got {tuple(buffers.shape)}")
        self.lead = tuple(buffers.shape[:-2])
        M = int(np.prod(self.lead)) if self.lead else 1
        self.flat = buffers.detach().reshape(M * self.n_clients, self.n_buffers).clone()

    def for_runs(self, lead, dtype):
        """The statistics a gradient sample of runs ``lead`` starts from, shape (R N, n_buffers).

        The stored ones when their runs match, else the template (nothing is
        stored here; :meth:`commit` restarts the stored ones).

        Parameters
        ----------
        lead : tuple of int
        dtype : torch.dtype

        Returns
        -------
        torch.Tensor
        """
        if self.flat is None or self.lead != tuple(lead):
            M = int(np.prod(lead)) if lead else 1
            return self.initial(lead).reshape(M * self.n_clients, self.n_buffers).to(dtype)
        return self.flat.to(dtype)

    def commit(self, new, lead, stacklevel: int = 2) -> None:
        """Store the statistics a gradient sample of runs ``lead`` produced.

        Stored statistics of other runs are restarted from the template first,
        with a warning.

        Parameters
        ----------
        new : torch.Tensor, shape (R N, n_buffers)
        lead : tuple of int
        stacklevel : int
            Of the warning, as in :func:`warnings.warn` counted from here (2: the caller).
        """
        lead = tuple(lead)
        if self.flat is None or self.lead != lead:
            if self.flat is not None and self.n_buffers:
                warnings.warn(f"running statistics of shape {self.lead} do not match runs {lead}; "
                              "restarting them from the template", stacklevel=stacklevel)
            self.set(self.initial(lead))
        if self.n_buffers:
            self.flat = new.detach().to(self.dtype)

    def client_mean(self, x):
        """Mean over the client axis (-2) of all clients, across processes; keeps the axis.

        Parameters
        ----------
        x : torch.Tensor, shape (..., N, k)

        Returns
        -------
        torch.Tensor, shape (..., 1, k)
        """
        total = torch.sum(x, dim=-2, keepdim=True)
        if self.process_sum is not None:
            total = self.process_sum(total)
        return total / self.n_clients_total

    def average(self, mask=None, weights=None) -> None:
        """Replace every client's statistics by the client mean, in the runs where ``mask``.

        Parameters
        ----------
        mask : array of bool, shape of the run axes, optional
        weights : array, shape ``run axes + (N,)``, optional
            Weights of a weighted mean; default the plain mean over all clients.
        """
        if self.flat is None or self.n_buffers == 0:
            return
        buf = self.current
        if weights is None:
            mean = self.client_mean(buf)
        else:
            if self.process_sum is not None:
                raise NotImplementedError("weighted buffer averaging across processes")
            w = np.asarray(weights, np.float64)
            w = w / w.sum(axis=-1, keepdims=True)
            wt = torch.as_tensor(w.reshape(buf.shape[:-1] + (1,)), dtype=buf.dtype, device=buf.device)
            mean = torch.sum(wt * buf, dim=-2, keepdim=True)
        new = mean.expand_as(buf)
        if mask is not None and not np.all(mask):
            m = torch.as_tensor(np.asarray(mask, bool).reshape(np.shape(mask) + (1, 1)), device=buf.device)
            new = torch.where(m, new, buf)
        self.flat = new.reshape(self.flat.shape).clone()

    def mean(self, lead=()):
        """Client mean of the statistics for evaluation, shape ``lead + (n_buffers,)``.

        Parameters
        ----------
        lead : tuple of int
            Run axes of the models to evaluate; the template when the stored
            statistics have other runs (or none are stored).

        Returns
        -------
        torch.Tensor
        """
        lead = tuple(lead)
        if self.flat is not None and (self.lead == lead or (lead == () and self.lead in ((), (1,)))):
            return self.client_mean(self.current).reshape(lead + (self.n_buffers,))
        return self.template().expand(lead + (self.n_buffers,))

    def per_client(self, lead):
        """Every client's own statistics for evaluation of runs ``lead``, shape (R, N, n_buffers).

        Parameters
        ----------
        lead : tuple of int

        Returns
        -------
        torch.Tensor
        """
        R = int(np.prod(lead)) if lead else 1
        if self.flat is not None and self.lead == tuple(lead):
            return self.flat.reshape(R, self.n_clients, self.n_buffers)
        return self.initial((R,))
