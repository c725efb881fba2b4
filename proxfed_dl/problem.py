"""The stochastic gradient oracle of N torch client models over flat parameter vectors.

:class:`TorchProblem` implements the core's
:class:`~proxfed.problems.FederatedProblem` interface for a neural network
and image clients, with ``stochastic = True``: the core engine
(:mod:`proxfed.algorithms`) calls ``grad(W, step=t)`` with the stacked client
iterates ``W`` of shape ``(N, P)`` (or ``(R, N, P)`` for R batched runs), a
torch tensor, and gets every client's minibatch gradient back. The update
rules, accounting and runner are the core's, unchanged.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import grad as func_grad
from torch.func import vmap

from proxfed import _backend as B, _validation
from proxfed.metrics import accuracy
from proxfed.problems import FederatedProblem

from .data import ImageClients, BatchSampler, draw_augmentation, random_crop_flip
from .devices import normalize_device
from .flat import FlatModel

__all__ = ["TorchProblem"]


class TorchProblem(FederatedProblem):
    """N clients training one torch architecture on their images: minibatch SGD gradients over flat vectors.

    Client ``i``'s objective is
    ``f_i(w) = s_i * mean_{j in client i} CE(model_w(x_j), y_j) + (weight_decay / 2) ||w||^2``
    with ``s_i = 1`` (``weighting="uniform"``) or ``s_i = N n_i / n``
    (``weighting="samples"``, so that ``(1/N) sum_i f_i`` is the mean loss over
    all rows). :meth:`grad` returns, for every client, the gradient of
    ``s_i`` times the mean cross-entropy on a minibatch (training mode:
    augmentation, BatchNorm with batch statistics), clipped to norm
    ``clip_norm`` when given, plus ``weight_decay * w`` -- what
    ``torch.nn.utils.clip_grad_norm_`` followed by ``torch.optim.SGD(weight_decay=...)``
    applies. Minibatches and augmentations come from host streams keyed by
    ``(seed, run, step or epoch, client)``, so a resumed run sees the same
    batches, and every client's batch is one ``index_select`` into images
    stored once on the device.

    BatchNorm running statistics are kept per client inside the problem
    (:attr:`buffers`, shape ``(..., N, n_buffers)``), updated by every
    :meth:`grad` call; wrap the algorithm with :func:`proxfed_dl.track_buffers`
    to average them at every communication and carry them in the run state.
    Evaluation (:meth:`objective`, :meth:`score`) uses the client mean of the
    running statistics.

    Parameters
    ----------
    data : ImageClients
    model : torch.nn.Module or callable
        The architecture, or a zero-argument factory returning it.
        :meth:`initial_point` re-initializes a copy with its
        ``reset_parameters()`` under a seeded torch RNG.
    batch_size : int or None
        Minibatch size per client; ``None``: every client's full data
        (deterministic gradients, computed client by client).
    weight_decay : float
        Added to the gradient as ``weight_decay * w`` (1e-4 in the paper).
    clip_norm : float, optional
        Clip each client's data gradient to this Euclidean norm.
    augment : bool
        Random crop with zero padding ``crop_padding`` and horizontal flip of
        training batches (CIFAR); evaluation is never augmented.
    crop_padding : int
    weighting : {"uniform", "samples"}
    sampling : {"shuffle", "uniform"}
        See :class:`proxfed_dl.data.BatchSampler`.
    seed : int
        Seed of the minibatch and augmentation streams (the runner's seed
        drives the coins and :meth:`initial_point`).
    vectorize : bool
        Compute all clients' gradients in one ``torch.func.vmap`` call (one
        batched kernel per layer) instead of a loop over clients; the results
        agree to rounding.
    chunk_size : int, optional
        ``vmap`` chunk size (bounds memory for many clients).
    autocast : {None, "bf16"}
        Run forward passes under ``torch.autocast`` in bfloat16.
    channels_last : bool
        Feed images in channels-last memory format (faster convolutions on
        recent GPUs).
    dtype : torch.dtype
        Dtype of :meth:`initial_point` (and so of the run).
    device : str or torch.device
    eval_size : int, optional
        Rows per client used by :meth:`value` and :meth:`objective` (its first
        ``eval_size`` rows; default all).
    eval_batch_size : int
        Images per forward pass in evaluation.
    clients : sequence of int, optional
        The global indices of the clients this problem holds (default all);
        used to shard clients across processes (:mod:`proxfed_dl.distributed`).
        Random streams use global indices.
    """

    stochastic = True
    grad_is_fresh = True  # grad returns a new tensor: the engine may update it in place
    metric_name = "accuracy"
    cheap_solution = False

    def __init__(self, data: ImageClients, model, *, batch_size: int | None = 32, weight_decay: float = 1e-4,
                 clip_norm: float | None = None, augment: bool = False, crop_padding: int = 4,
                 weighting: str = "uniform", sampling: str = "shuffle", seed: int = 0, vectorize: bool = True,
                 chunk_size: int | None = None, autocast: str | None = None, channels_last: bool = False,
                 dtype=torch.float32, device="cpu", eval_size: int | None = None, eval_batch_size: int = 512,
                 clients=None):
        if not isinstance(data, ImageClients):
            raise TypeError(f"data must be an ImageClients, got {type(data).__name__}")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) != batch_size
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be finite and >= 0, got {weight_decay!r}")
        if clip_norm is not None and not (math.isfinite(clip_norm) and clip_norm > 0):
            raise ValueError(f"clip_norm must be positive (or None), got {clip_norm!r}")
        if weighting not in ("uniform", "samples"):
            raise ValueError(f"weighting must be 'uniform' or 'samples', got {weighting!r}")
        if autocast not in (None, "bf16"):
            raise ValueError(f"autocast must be None or 'bf16', got {autocast!r}")
        if not torch.empty((), dtype=dtype).is_floating_point():
            raise TypeError(f"dtype must be a floating torch dtype, got {dtype}")
        _validation.check_seed(seed, sequence=False)
        self.dataset = data
        self._solution = None
        self.device = normalize_device(device)
        self.dtype = dtype
        module = model() if callable(model) and not isinstance(model, nn.Module) else model
        if not isinstance(module, nn.Module):
            raise TypeError("model must be a torch.nn.Module or a factory returning one")
        self.flat = FlatModel(module.to(device=self.device, dtype=dtype))
        self.batch_size = None if batch_size is None else int(batch_size)
        self.weight_decay = float(weight_decay)
        self.l2 = self.weight_decay
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.augment = bool(augment)
        self.crop_padding = int(crop_padding)
        self.weighting = weighting
        self.sampling = sampling
        self.seed = int(seed)
        self.vectorize = bool(vectorize)
        self.chunk_size = chunk_size
        self.autocast = autocast
        self.channels_last = bool(channels_last)
        self.eval_size = eval_size
        self.eval_batch_size = int(eval_batch_size)

        N_all = data.n_clients
        self.clients = np.arange(N_all) if clients is None else np.asarray(clients, dtype=np.int64)
        if self.clients.ndim != 1 or self.clients.size == 0 or np.any(self.clients < 0) \
                or np.any(self.clients >= N_all) or np.unique(self.clients).size != self.clients.size:
            raise ValueError(f"clients must be distinct indices in [0, {N_all})")
        sizes_all = data.client_sizes
        self.n_clients_total = N_all
        self._sizes = sizes_all[self.clients]
        if weighting == "uniform":
            scale = np.ones(self.clients.size)
        else:
            scale = N_all * self._sizes / data.n_samples
        self._scale = scale
        # the clients' rows, stored once on the device
        rows = [np.arange(data.offsets[c], data.offsets[c + 1]) for c in self.clients]
        self._local_offsets = np.concatenate([[0], np.cumsum(self._sizes)]).astype(np.int64)
        idx = np.concatenate(rows)
        self._X = torch.as_tensor(np.ascontiguousarray(data.images[idx]), device=self.device)
        self._y = torch.as_tensor(data.labels[idx], device=self.device)
        if data.test is not None:
            self._X_test = torch.as_tensor(np.ascontiguousarray(data.test[0]), device=self.device)
            self._y_test = torch.as_tensor(data.test[1], device=self.device)
        else:
            self._X_test = self._y_test = None
        self._sampler = None if self.batch_size is None else BatchSampler(self._sizes, self.batch_size, self.seed,
                                                                          sampling)
        self._buf = None  # (M, n_buffers) per (run, client), M = R * N
        self._buf_lead = None
        self.buffers_tracked = False
        self._warned = False
        self._reduce = None  # sum over processes (set by proxfed_dl.distributed)
        self.last_loss = None

    # -- sizes -------------------------------------------------------------------------
    @property
    def n_clients(self) -> int:
        """Number of clients N held by this problem."""
        return int(self.clients.size)

    @property
    def dim(self) -> int:
        """Number of trainable parameters P."""
        return self.flat.dim

    @property
    def n_buffers(self) -> int:
        """Length of a client's flat running-statistics vector."""
        return self.flat.n_buffers

    @property
    def client_scale(self) -> np.ndarray:
        """The weights ``s_i`` of the clients' data terms, shape (N,)."""
        return self._scale.copy()

    # -- initial point --------------------------------------------------------------------
    def initial_point(self, seed: int = 0, run: int = 0):
        """A freshly initialized model as a flat torch vector (P,), keyed by ``(seed, run)``.

        The architecture's ``reset_parameters()`` runs under a torch CPU RNG
        seeded from the stream ``(seed, run, INIT_STREAM)``, so the point is
        the same on every device and process.

        Parameters
        ----------
        seed, run : int

        Returns
        -------
        torch.Tensor, shape (P,)
        """
        torch_seed = int(B.rng(seed, run, B.INIT_STREAM).integers(0, 2**62))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            cpu = _cpu_copy(self.flat.module)
            _reset(cpu)
        return self.flat.parameters_vector(cpu).to(device=self.device, dtype=self.dtype)

    def initial_points(self, runs: int, seed=0):
        """``R`` initial points stacked, shape (R, P): run ``r`` uses ``(seed, r)`` or ``(seed[r], 0)``.

        The core runner stacks initial points with NumPy; pass this as ``w0``
        for batched runs to keep them torch tensors.

        Parameters
        ----------
        runs : int
        seed : int or sequence of int

        Returns
        -------
        torch.Tensor, shape (R, P)
        """
        if isinstance(seed, (int, np.integer)):
            keys = [(int(seed), r) for r in range(runs)]
        else:
            keys = [(int(s), 0) for s in seed]
        return torch.stack([self.initial_point(s, r) for s, r in keys])

    def initial_buffers(self, lead=()):
        """The template's running statistics for every client (and run), shape ``lead + (N, n_buffers)``.

        Parameters
        ----------
        lead : tuple of int
            Leading run axes.

        Returns
        -------
        torch.Tensor
        """
        b = self.flat.buffers_vector().to(device=self.device, dtype=self.dtype)
        return b.expand(tuple(lead) + (self.n_clients, b.numel())).clone()

    # -- running statistics ----------------------------------------------------------------
    @property
    def buffers(self):
        """Current per-client running statistics, shape ``(..., N, n_buffers)`` (None before any step)."""
        if self._buf is None:
            return None
        return self._buf.reshape(tuple(self._buf_lead) + (self.n_clients, self.n_buffers))

    def set_buffers(self, buffers) -> None:
        """Replace the per-client running statistics (copied), shape ``(..., N, n_buffers)``.

        Parameters
        ----------
        buffers : torch.Tensor
        """
        if buffers is None:
            self._buf = self._buf_lead = None
            return
        if tuple(buffers.shape[-2:]) != (self.n_clients, self.n_buffers):
            raise ValueError(f"buffers must have shape (..., {self.n_clients}, {self.n_buffers}), "
                             f"got {tuple(buffers.shape)}")
        self._buf_lead = tuple(buffers.shape[:-2])
        self._buf = buffers.detach().reshape(_prod(self._buf_lead) * self.n_clients, self.n_buffers).clone()

    def average_buffers(self, mask=None, weights=None) -> None:
        """Replace every client's running statistics by the client mean, in the runs where ``mask``.

        This is the paper's BatchNorm rule at a communication: the statistics
        are averaged like the weights, without control variates.

        Parameters
        ----------
        mask : array of bool, shape of the run axes, optional
            Default: all runs.
        weights : array, shape ``run axes + (N,)``, optional
            Weights of a weighted mean (e.g. the round's participants' sample
            counts, zero for the others, as the round-based rules average the
            weights); default the plain mean over all clients.
        """
        if self._buf is None or self.n_buffers == 0:
            return
        buf = self.buffers
        if weights is None:
            mean = self._client_mean(buf)
        else:
            if self._reduce is not None:
                raise NotImplementedError("weighted buffer averaging across processes")
            w = np.asarray(weights, np.float64)
            w = w / w.sum(axis=-1, keepdims=True)
            wt = torch.as_tensor(w.reshape(buf.shape[:-1] + (1,)), dtype=buf.dtype, device=buf.device)
            mean = torch.sum(wt * buf, dim=-2, keepdim=True)
        new = mean.expand_as(buf)
        if mask is not None and not np.all(mask):
            m = torch.as_tensor(np.asarray(mask, bool).reshape(np.shape(mask) + (1, 1)), device=buf.device)
            new = torch.where(m, new, buf)
        self._buf = new.reshape(self._buf.shape).clone()

    def mean_buffers(self, lead=()):
        """Client mean of the running statistics for evaluation, shape ``lead + (n_buffers,)``.

        Parameters
        ----------
        lead : tuple of int
            Run axes of the models to evaluate; the template's statistics
            when the problem holds none of that shape.

        Returns
        -------
        torch.Tensor
        """
        lead = tuple(lead)
        if self._buf is not None and (self._buf_lead == lead or (lead == () and self._buf_lead in ((), (1,)))):
            return self._client_mean(self.buffers).reshape(lead + (self.n_buffers,))
        b = self.flat.buffers_vector().to(device=self.device, dtype=self.dtype)
        return b.expand(lead + (b.numel(),))

    def _client_mean(self, x):
        """Mean over the client axis (-2) of all clients, across processes; keeps the axis."""
        total = torch.sum(x, dim=-2, keepdim=True)
        if self._reduce is not None:
            total = self._reduce(total)
        return total / self.n_clients_total

    # -- minibatches -------------------------------------------------------------------------
    def minibatch(self, step: int, runs: int = 1):
        """Every (run, client)'s training minibatch at ``step``: images (R N, b, C, H, W) and labels (R N, b).

        Augmented (when ``augment``), scaled to [0, 1] when stored as ``uint8``,
        and normalized; one ``index_select`` into the stored images.

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
        idx = np.empty((runs, self.n_clients, b), np.int64)
        for r in range(runs):
            for j, c in enumerate(self.clients):
                idx[r, j] = self._local_offsets[j] + self._sampler.indices(r, step, int(c), j)
        rows = torch.as_tensor(idx.reshape(-1), device=self.device)
        x = self._prepare(self._X.index_select(0, rows), step, runs)
        y = self._y.index_select(0, rows)
        M = runs * self.n_clients
        return x.reshape((M, b) + tuple(x.shape[1:])), y.reshape(M, b)

    def _prepare(self, x, step, runs, train=True, dtype=None):
        """uint8 -> [0, 1], augmentation (train), normalization; float of the run's dtype."""
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
        data = self.dataset
        if data.mean is not None or data.std is not None:
            C = x.shape[1]
            mean = torch.tensor(data.mean or (0.0,) * C, dtype=dtype, device=x.device).reshape(1, C, 1, 1)
            std = torch.tensor(data.std or (1.0,) * C, dtype=dtype, device=x.device).reshape(1, C, 1, 1)
            x = (x - mean) / std
        return x

    def _client_batch(self, step, run, j):
        """Full-batch mode: client j's whole data (augmented when asked)."""
        lo, hi = self._local_offsets[j], self._local_offsets[j + 1]
        x = self._X[lo:hi]
        x = x.to(self.dtype) / 255.0 if x.dtype == torch.uint8 else x.to(self.dtype)
        if self.augment:
            o, f = draw_augmentation(self.seed, run, step, int(self.clients[j]), hi - lo, self.crop_padding)
            x = random_crop_flip(x, torch.as_tensor(o), torch.as_tensor(f), self.crop_padding)
        data = self.dataset
        if data.mean is not None or data.std is not None:
            C = x.shape[1]
            mean = torch.tensor(data.mean or (0.0,) * C, dtype=x.dtype, device=x.device).reshape(1, C, 1, 1)
            std = torch.tensor(data.std or (1.0,) * C, dtype=x.dtype, device=x.device).reshape(1, C, 1, 1)
            x = (x - mean) / std
        return x, self._y[lo:hi]

    # -- gradient oracle ---------------------------------------------------------------------
    def _check(self, W, what="W"):
        if not isinstance(W, torch.Tensor):
            raise TypeError(f"{what} must be a torch tensor (the run's w0 decides the array library), "
                            f"got {type(W).__name__}; start from problem.initial_point()")
        if W.ndim < 2 or tuple(W.shape[-2:]) != (self.n_clients, self.dim):
            raise ValueError(f"{what} must have shape (..., {self.n_clients}, {self.dim}), got {tuple(W.shape)}")
        if not W.is_floating_point():
            raise TypeError(f"{what} must be floating, got {W.dtype}")
        if normalize_device(W.device) != self.device:
            raise ValueError(f"{what} is on {W.device} but the problem's data is on {self.device}")

    def _buffers_for(self, lead, dtype):
        if self._buf is None or self._buf_lead != tuple(lead):
            if self._buf is not None and self.n_buffers:
                warnings.warn(f"running statistics of shape {self._buf_lead} do not match runs {tuple(lead)}; "
                              "restarting them from the template", stacklevel=3)
            self.set_buffers(self.initial_buffers(lead))
        return self._buf.to(dtype)

    def grad(self, W, step: int = 0, *, update_buffers: bool = True):
        """Every client's stochastic gradient at ``W``, shape ``(..., N, P)``.

        Parameters
        ----------
        W : torch.Tensor, shape (N, P) or (R, N, P)
            Stacked client parameter vectors (run ``r`` of a batch draws the
            batches of stream ``run = r``).
        step : int
            The iteration; selects the minibatch and augmentation draws.
        update_buffers : bool
            Store the updated BatchNorm running statistics.

        Returns
        -------
        torch.Tensor, same shape, dtype and device as ``W``
        """
        self._check(W)
        if self.n_buffers and not self.buffers_tracked and not self._warned:
            self._warned = True
            warnings.warn("the model has BatchNorm running statistics but the algorithm is not wrapped with "
                          "proxfed_dl.track_buffers: they are never averaged", UserWarning, stacklevel=2)
        lead = tuple(W.shape[:-2])
        R = int(np.prod(lead)) if lead else 1
        N, P = self.n_clients, self.dim
        Wf = W.reshape(R * N, P)
        Bf = self._buffers_for(lead, W.dtype)
        ac = torch.bfloat16 if self.autocast == "bf16" else None
        fn = func_grad(self.flat.loss_and_stats, has_aux=True)
        parts = self.flat.split(Wf)
        if self.batch_size is None:
            outs = []
            for m in range(R * N):
                x, y = self._client_batch(int(step), m // N, m % N)
                outs.append(fn(tuple(q[m] for q in parts), Bf[m], self._layout(x).to(W.dtype), y, ac))
        else:
            X, Y = self.minibatch(int(step), R)
            X = self._layout(X.to(W.dtype))
            if self.vectorize:
                outs = None
                Gp, (newB, losses) = self._vmapped(fn, parts, Bf, X, Y, ac)
                G = self.flat.join(Gp)
            else:
                outs = [fn(tuple(q[m] for q in parts), Bf[m], X[m], Y[m], ac) for m in range(R * N)]
        if outs is not None:
            G = torch.stack([self.flat.join(o[0]) for o in outs])
            newB = torch.stack([o[1][0] for o in outs])
            losses = torch.stack([o[1][1] for o in outs])
        # in place on the fresh gradient (the same roundings); the scale moves to the device once
        G = G.to(W.dtype) if G.dtype != W.dtype else G
        G.mul_(B.device_constant(np.tile(self._scale, R)[:, None], like=W))
        if self.clip_norm is not None:
            norms = torch.linalg.vector_norm(G, dim=-1, keepdim=True)
            G.mul_(torch.clamp(self.clip_norm / (norms + 1e-6), max=1.0))
        if self.weight_decay:
            G.add_(self.weight_decay * Wf)
        if update_buffers and self.n_buffers:
            self._buf = newB.detach().to(self.dtype)
        self.last_loss = losses.detach().reshape(lead + (N,))
        return G.reshape(W.shape)

    def _vmapped(self, fn, parts, Bf, X, Y, ac):
        """``vmap(fn)`` over the stacked clients; a channels-last layout the device's convolution library
        cannot run under ``vmap`` (cuDNN's ``EXECUTION_FAILED`` seen with bf16 autocast) falls back to
        the contiguous layout for the rest of the problem's life, with a warning."""
        call = vmap(fn, in_dims=(0, 0, 0, 0, None), chunk_size=self.chunk_size)
        try:
            return call(parts, Bf, X, Y, ac)
        except RuntimeError as err:
            if not (self.channels_last and "cudnn" in str(err).lower()):
                raise
            warnings.warn(f"channels-last under vmap failed on {self.device} ({str(err).splitlines()[0]}); "
                          "continuing with the contiguous layout", UserWarning, stacklevel=3)
            self.channels_last = False
            return call(parts, Bf, X.contiguous(), Y, ac)

    def _layout(self, x):
        if not self.channels_last:
            return x
        if x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        # (M, b, C, H, W): every (M, b) slice channels-last
        return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)

    # -- evaluation ----------------------------------------------------------------------------
    def _eval_rows(self, j):
        lo, hi = int(self._local_offsets[j]), int(self._local_offsets[j + 1])
        if self.eval_size is not None:
            hi = min(hi, lo + int(self.eval_size))
        return lo, hi

    @torch.no_grad()
    def _per_sample(self, w, b, X, y):
        """Per-sample cross-entropy and predicted class, in evaluation mode, in chunks."""
        losses, preds = [], []
        for lo in range(0, X.shape[0], self.eval_batch_size):
            x = self._prepare(X[lo:lo + self.eval_batch_size], 0, 1, train=False, dtype=w.dtype)
            out = self.flat.logits(w, b, self._layout(x), train=False).to(w.dtype)
            losses.append(F.cross_entropy(out, y[lo:lo + self.eval_batch_size], reduction="none"))
            preds.append(out.argmax(dim=-1))
        return torch.cat(losses), torch.cat(preds)

    @torch.no_grad()
    def _data_values(self, w, b):
        """``s_i * mean loss_i`` of one model on every local client's evaluation rows, shape (N,)."""
        rows = [self._eval_rows(j) for j in range(self.n_clients)]
        idx = torch.as_tensor(np.concatenate([np.arange(lo, hi) for lo, hi in rows]), device=self.device)
        losses, _ = self._per_sample(w, b, self._X.index_select(0, idx), self._y.index_select(0, idx))
        out, o = [], 0
        for j, (lo, hi) in enumerate(rows):
            out.append(losses[o:o + hi - lo].mean() * float(self._scale[j]))
            o += hi - lo
        return torch.stack(out)

    @torch.no_grad()
    def value(self, W):
        """Per-client ``f_i(W[..., i, :])`` on the evaluation rows (evaluation mode), shape ``(..., N)``.

        Client ``i`` is evaluated with its own running statistics.

        Parameters
        ----------
        W : torch.Tensor, shape (..., N, P)

        Returns
        -------
        torch.Tensor, shape (..., N)
        """
        self._check(W)
        lead = tuple(W.shape[:-2])
        Wf = W.reshape(-1, self.n_clients, self.dim)
        if self._buf is not None and self._buf_lead == lead:
            Bf = self._buf.reshape(Wf.shape[0], self.n_clients, self.n_buffers)
        else:
            Bf = self.initial_buffers((Wf.shape[0],))
        out = torch.empty(Wf.shape[:2], dtype=W.dtype, device=W.device)
        for r in range(Wf.shape[0]):
            for j in range(self.n_clients):
                lo, hi = self._eval_rows(j)
                loss, _ = self._per_sample(Wf[r, j], Bf[r, j].to(W.dtype), self._X[lo:hi], self._y[lo:hi])
                out[r, j] = loss.mean() * float(self._scale[j])
        reg = 0.5 * self.weight_decay * torch.sum(W * W, dim=-1)
        return out.reshape(lead + (self.n_clients,)) + reg

    @torch.no_grad()
    def objective(self, w):
        """``F(w) = (1/N) sum_i f_i(w)`` over all clients (all processes), shape ``w.shape[:-1]``.

        Evaluation mode with the client mean of the running statistics; the
        data term uses each client's evaluation rows (``eval_size``).

        Parameters
        ----------
        w : torch.Tensor, shape (P,) or (R, P)

        Returns
        -------
        torch.Tensor
        """
        w = self._as_model(w)
        lead = tuple(w.shape[:-1])
        wf = w.reshape(-1, self.dim)
        buf = self.mean_buffers(lead).reshape(wf.shape[0], self.n_buffers)
        totals = torch.stack([self._data_values(wf[r], buf[r].to(w.dtype)).sum() for r in range(wf.shape[0])])
        if self._reduce is not None:
            totals = self._reduce(totals)
        F_ = totals / self.n_clients_total + 0.5 * self.weight_decay * torch.sum(wf * wf, dim=-1)
        return F_.reshape(lead)

    def full_grad(self, w):  # pragma: no cover - not meaningful for minibatch training
        """Not available: the problem's gradients are stochastic; use :meth:`grad`."""
        raise NotImplementedError("TorchProblem has stochastic gradients only; use grad(W, step)")

    def value_and_grad(self, W):  # pragma: no cover
        """Not available: :meth:`value` evaluates, :meth:`grad` samples; call them separately."""
        raise NotImplementedError("TorchProblem: call value(W) and grad(W, step) separately")

    def smoothness(self):
        """Not defined for a neural network (tune the stepsize instead).

        Raises
        ------
        NotImplementedError
        """
        raise NotImplementedError("a neural network has no smoothness constant here; choose gamma by tuning")

    def strong_convexity(self):
        """Not defined for a neural network.

        Raises
        ------
        NotImplementedError
        """
        raise NotImplementedError("a neural network objective is not strongly convex")

    def solution(self):
        """Not available for a neural network.

        Raises
        ------
        NotImplementedError
        """
        raise NotImplementedError("no reference solution for a neural network")

    def _as_model(self, w):
        if isinstance(w, np.ndarray):
            w = torch.as_tensor(w, device=self.device)
        if not isinstance(w, torch.Tensor) or w.shape[-1] != self.dim or w.ndim > 2:
            raise ValueError(f"w must have shape (P,) or (R, P) with P = {self.dim}")
        return w

    @torch.no_grad()
    def predict(self, w, X):
        """Predicted classes of model ``w`` for images ``X`` (evaluation mode, client-mean statistics).

        Parameters
        ----------
        w : torch.Tensor or numpy.ndarray, shape (P,)
        X : numpy.ndarray or torch.Tensor, shape (n, C, H, W)

        Returns
        -------
        numpy.ndarray of int64, shape (n,)
        """
        w = self._as_model(w)
        X = torch.as_tensor(X, device=self.device)
        y = torch.zeros(X.shape[0], dtype=torch.long, device=self.device)
        _, pred = self._per_sample(w, self.mean_buffers(()).to(w.dtype), X, y)
        return B.to_numpy(pred)

    def has_split(self, split: str) -> bool:
        """Whether :meth:`score` can evaluate on ``split`` ("train" always; "test" when the data has one).

        Parameters
        ----------
        split : str

        Returns
        -------
        bool
        """
        return split == "train" or (split == "test" and self._X_test is not None)

    @torch.no_grad()
    def score(self, w, split: str = "test"):
        """Accuracy of model ``w`` on a split (evaluation mode, client-mean running statistics).

        ``"test"``: the pooled test images (the same on every process);
        ``"train"``: this problem's clients' evaluation rows.

        Parameters
        ----------
        w : torch.Tensor or numpy.ndarray, shape (P,) or (R, P)
        split : {"test", "train"}

        Returns
        -------
        float, or numpy.ndarray of shape (R,)
        """
        if split == "test":
            if self._X_test is None:
                raise ValueError("the data has no test split")
            X, y = self._X_test, self._y_test
        elif split == "train":
            idx = np.concatenate([np.arange(*self._eval_rows(j)) for j in range(self.n_clients)])
            idx = torch.as_tensor(idx, device=self.device)
            X, y = self._X.index_select(0, idx), self._y.index_select(0, idx)
        else:
            raise ValueError(f"split must be 'test' or 'train', got {split!r}")
        w = self._as_model(w)
        lead = tuple(w.shape[:-1])
        wf = w.reshape(-1, self.dim)
        buf = self.mean_buffers(lead).reshape(wf.shape[0], self.n_buffers)
        y_np = B.to_numpy(y)
        accs = [accuracy(y_np, B.to_numpy(self._per_sample(wf[r], buf[r].to(w.dtype), X, y)[1]))
                for r in range(wf.shape[0])]
        return float(accs[0]) if not lead else np.array(accs)

    def export(self, w, module: nn.Module | None = None) -> nn.Module:
        """A module holding model ``w`` and the client-mean running statistics (for inference or saving).

        Parameters
        ----------
        w : torch.Tensor, shape (P,)
        module : torch.nn.Module, optional
            Target of the same architecture (default: a copy of the template).

        Returns
        -------
        torch.nn.Module
        """
        import copy

        m = copy.deepcopy(self.flat.module) if module is None else module
        return self.flat.load(self._as_model(w), self.mean_buffers(()), m)

    def __repr__(self) -> str:
        return (f"TorchProblem(model={type(self.flat.module).__name__}, P={self.dim}, N={self.n_clients}, "
                f"batch_size={self.batch_size}, data={self.dataset.name!r})")


def _prod(shape) -> int:
    return int(np.prod(shape)) if len(shape) else 1


def _cpu_copy(module):
    import copy

    return copy.deepcopy(module).to("cpu")


def _reset(module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
