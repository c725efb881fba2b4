"""The clients' images on the device and their minibatch and augmentation streams.

:class:`DeviceImages` stores a problem's client rows once on its device and
draws every (run, client)'s training batch with one ``index_select``; batches
and augmentations come from host streams keyed by ``(seed, run, step or
epoch, client)`` (:mod:`proxfed_dl.data`), so a resumed run sees the same
batches.
"""

from __future__ import annotations

import numpy as np
import torch

from .data import BatchSampler, ImageClients, draw_augmentation, random_crop_flip

__all__ = ["DeviceImages"]


class DeviceImages:
    """The images of some clients of an :class:`~proxfed_dl.ImageClients`, stored once on a device.

    Parameters
    ----------
    data : ImageClients
    clients : numpy.ndarray of int64
        Global indices of the clients held (random streams use them).
    device : torch.device
    dtype : torch.dtype
        Dtype of prepared images.
    batch_size : int or None
        Minibatch size per client; ``None``: full batches.
    seed : int
        Seed of the minibatch and augmentation streams.
    sampling : {"shuffle", "uniform"}
    augment : bool
    crop_padding : int
    eval_size : int, optional
        Rows per client used in evaluation (its first ones; default all).

    Attributes
    ----------
    X, y : torch.Tensor
        The clients' rows, concatenated in client order.
    X_test, y_test : torch.Tensor or None
        The pooled test split.
    offsets : numpy.ndarray of int64, shape (N + 1,)
        Client ``j``'s rows are ``X[offsets[j]:offsets[j + 1]]``.
    """

    def __init__(self, data: ImageClients, clients, device, dtype, *, batch_size, seed, sampling, augment,
                 crop_padding, eval_size):
        self.dataset = data
        self.clients = clients
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.seed = seed
        self.augment = augment
        self.crop_padding = crop_padding
        self.eval_size = eval_size
        sizes = data.client_sizes[clients]
        self.sizes = sizes
        rows = [np.arange(data.offsets[c], data.offsets[c + 1]) for c in clients]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        idx = np.concatenate(rows)
        self.X = torch.as_tensor(np.ascontiguousarray(data.images[idx]), device=device)
        self.y = torch.as_tensor(data.labels[idx], device=device)
        if data.test is not None:
            self.X_test = torch.as_tensor(np.ascontiguousarray(data.test[0]), device=device)
            self.y_test = torch.as_tensor(data.test[1], device=device)
        else:
            self.X_test = self.y_test = None
        self.sampler = None if batch_size is None else BatchSampler(sizes, batch_size, seed, sampling)

    def minibatch(self, step: int, runs: int = 1):
        """Every (run, client)'s training minibatch at ``step``: images (R N, b, C, H, W) and labels (R N, b).

        Parameters
        ----------
        step : int
        runs : int

        Returns
        -------
        x : torch.Tensor
        y : torch.Tensor of int64
        """
        if self.batch_size is None:
            raise ValueError("minibatch needs a batch_size (the problem uses full-batch gradients)")
        b = self.batch_size
        idx = np.empty((runs, self.clients.size, b), np.int64)
        for r in range(runs):
            for j, c in enumerate(self.clients):
                idx[r, j] = self.offsets[j] + self.sampler.indices(r, step, int(c), j)
        rows = torch.as_tensor(idx.reshape(-1), device=self.device)
        x = self.prepare(self.X.index_select(0, rows), step, runs)
        y = self.y.index_select(0, rows)
        M = runs * self.clients.size
        return x.reshape((M, b) + tuple(x.shape[1:])), y.reshape(M, b)

    def prepare(self, x, step, runs, train=True, dtype=None):
        """Images as the model sees them: uint8 to [0, 1], augmented (training batches), normalized.

        Parameters
        ----------
        x : torch.Tensor, shape (n, C, H, W)
            With ``train`` and ``augment``: the ``runs * N * batch_size`` rows
            of a :meth:`minibatch`, in (run, client) order.
        step, runs : int
            Select the augmentation draws.
        train : bool
        dtype : torch.dtype, optional
            Default the problem's.

        Returns
        -------
        torch.Tensor
        """
        dtype = self.dtype if dtype is None else dtype
        x = x.to(dtype) / 255.0 if x.dtype == torch.uint8 else x.to(dtype)
        if train and self.augment:
            n = self.batch_size
            offs, flips = [], []
            for r in range(runs):
                for c in self.clients:
                    o, f = draw_augmentation(self.seed, r, step, int(c), n, self.crop_padding)
                    offs.append(o)
                    flips.append(f)
            x = random_crop_flip(x, torch.as_tensor(np.concatenate(offs)), torch.as_tensor(np.concatenate(flips)),
                                 self.crop_padding)
        return self.normalize(x)

    def normalize(self, x):
        """``(x - mean) / std`` per channel with the data's constants (unchanged when it has none).

        Parameters
        ----------
        x : torch.Tensor, shape (n, C, H, W)

        Returns
        -------
        torch.Tensor
        """
        data = self.dataset
        if data.mean is not None or data.std is not None:
            C = x.shape[1]
            mean = torch.tensor(data.mean or (0.0,) * C, dtype=x.dtype, device=x.device).reshape(1, C, 1, 1)
            std = torch.tensor(data.std or (1.0,) * C, dtype=x.dtype, device=x.device).reshape(1, C, 1, 1)
            x = (x - mean) / std
        return x

    def client_batch(self, step: int, run: int, j: int):
        """Full-batch mode: local client ``j``'s whole data (augmented when asked) and labels.

        Parameters
        ----------
        step, run, j : int

        Returns
        -------
        x : torch.Tensor
        y : torch.Tensor of int64
        """
        lo, hi = self.offsets[j], self.offsets[j + 1]
        x = self.X[lo:hi]
        x = x.to(self.dtype) / 255.0 if x.dtype == torch.uint8 else x.to(self.dtype)
        if self.augment:
            o, f = draw_augmentation(self.seed, run, step, int(self.clients[j]), hi - lo, self.crop_padding)
            x = random_crop_flip(x, torch.as_tensor(o), torch.as_tensor(f), self.crop_padding)
        return self.normalize(x), self.y[lo:hi]

    def eval_rows(self, j: int) -> tuple:
        """``(lo, hi)``: local client ``j``'s evaluation rows of :attr:`X` (its first ``eval_size``).

        Parameters
        ----------
        j : int

        Returns
        -------
        tuple of int
        """
        lo, hi = int(self.offsets[j]), int(self.offsets[j + 1])
        if self.eval_size is not None:
            hi = min(hi, lo + int(self.eval_size))
        return lo, hi

    def eval_split(self):
        """All local clients' evaluation rows, concatenated: images and labels.

        Returns
        -------
        x : torch.Tensor
        y : torch.Tensor of int64
        """
        idx = np.concatenate([np.arange(*self.eval_rows(j)) for j in range(self.clients.size)])
        idx = torch.as_tensor(idx, device=self.device)
        return self.X.index_select(0, idx), self.y.index_select(0, idx)
