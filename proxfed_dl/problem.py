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

import copy
import math
import warnings

import numpy as np
import torch
from torch import nn

from proxfed import _backend as B, _validation
from proxfed.problems import FederatedProblem

from . import evaluation, oracle
from .buffers import RunningStatistics
from .data import ImageClients
from .devices import normalize_device
from .flat import FlatModel
from .oracle import GradientSample
from .streams import DeviceImages

__all__ = ["TorchProblem", "GradientSample"]


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

    The problem is a stochastic gradient oracle (``stochastic = True``, what
    the core reads to pass ``step``): the update rules call ``grad(W, step)``.
    It has no smoothness or strong-convexity constants and no reference
    solution (:meth:`smoothness`, :meth:`strong_convexity`, :meth:`solution`,
    :meth:`full_grad` and :meth:`value_and_grad` raise, saying why): choose
    the stepsize by tuning.

    BatchNorm running statistics are kept per client inside the problem
    (:attr:`buffers`, shape ``(..., N, n_buffers)``). :meth:`grad_sample`
    computes the gradients and the new statistics without changing anything;
    :meth:`commit_statistics` stores them; :meth:`grad`, the engine's oracle,
    does both. Wrap the algorithm with :func:`proxfed_dl.track_buffers`
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
        self.n_clients_total = N_all
        #: the clients' rows stored once on the device, their batch and augmentation streams
        self.images = DeviceImages(data, self.clients, self.device, dtype, batch_size=self.batch_size,
                                   seed=self.seed, sampling=sampling, augment=self.augment,
                                   crop_padding=self.crop_padding, eval_size=eval_size)
        sizes = self.images.sizes
        self._scale = np.ones(self.clients.size) if weighting == "uniform" else N_all * sizes / data.n_samples
        #: the per-client BatchNorm running statistics
        self.statistics = RunningStatistics(
            lambda: self.flat.buffers_vector().to(device=self.device, dtype=self.dtype),
            self.clients.size, N_all, dtype)
        self.buffers_tracked = False
        self._warned = False
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

    @property
    def process_sum(self):
        """Sum of a tensor over processes, or None in a single process.

        :func:`proxfed_dl.distributed.distribute` sets it; :meth:`objective`
        and the client means of the running statistics then cover the
        clients of all processes.
        """
        return self.statistics.process_sum

    @process_sum.setter
    def process_sum(self, fn) -> None:
        self.statistics.process_sum = fn

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
            cpu = copy.deepcopy(self.flat.module).to("cpu")
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

    # -- running statistics (proxfed_dl.buffers) ---------------------------------------------
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
        return self.statistics.initial(lead)

    @property
    def buffers(self):
        """Current per-client running statistics, shape ``(..., N, n_buffers)`` (None before any step)."""
        return self.statistics.current

    def set_buffers(self, buffers) -> None:
        """Replace the per-client running statistics (copied), shape ``(..., N, n_buffers)``.

        Parameters
        ----------
        buffers : torch.Tensor
        """
        self.statistics.set(buffers)

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
        self.statistics.average(mask, weights)

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
        return self.statistics.mean(lead)

    # -- minibatches (proxfed_dl.streams) --------------------------------------------------------
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
        return self.images.minibatch(step, runs)

    def _prepare(self, x, step, runs, train=True, dtype=None):
        """uint8 -> [0, 1], augmentation (train), normalization; float of the run's dtype."""
        return self.images.prepare(x, step, runs, train, dtype)

    # -- gradient oracle ---------------------------------------------------------------------
    def check_iterates(self, W, what="W") -> None:
        """Raise unless ``W`` is a floating torch tensor of shape ``(..., N, P)`` on the problem's device.

        Parameters
        ----------
        W : torch.Tensor
        what : str
            Its name in the message.
        """
        if not isinstance(W, torch.Tensor):
            raise TypeError(f"{what} must be a torch tensor (the run's w0 decides the array library), "
                            f"got {type(W).__name__}; start from problem.initial_point()")
        if W.ndim < 2 or tuple(W.shape[-2:]) != (self.n_clients, self.dim):
            raise ValueError(f"{what} must have shape (..., {self.n_clients}, {self.dim}), got {tuple(W.shape)}")
        if not W.is_floating_point():
            raise TypeError(f"{what} must be floating, got {W.dtype}")
        if normalize_device(W.device) != self.device:
            raise ValueError(f"{what} is on {W.device} but the problem's data is on {self.device}")

    def grad(self, W, step: int = 0):
        """Every client's stochastic gradient at ``W``, shape ``(..., N, P)``; stores the new statistics.

        The oracle the update rules call (``grad(W, step=t)`` for a
        stochastic problem): :meth:`grad_sample` followed by
        :meth:`commit_statistics`.

        Parameters
        ----------
        W : torch.Tensor, shape (N, P) or (R, N, P)
            Stacked client parameter vectors (run ``r`` of a batch draws the
            batches of stream ``run = r``).
        step : int
            The iteration; selects the minibatch and augmentation draws.

        Returns
        -------
        torch.Tensor, same shape, dtype and device as ``W``
        """
        self.check_iterates(W)
        if self.n_buffers and not self.buffers_tracked and not self._warned:
            self._warned = True
            warnings.warn("the model has BatchNorm running statistics but the algorithm is not wrapped with "
                          "proxfed_dl.track_buffers: they are never averaged", UserWarning, stacklevel=2)
        sample = self.grad_sample(W, step)
        self.commit_statistics(sample, stacklevel=3)
        return sample.grad

    # defined in proxfed_dl.oracle: grad_sample computes and changes nothing
    grad_sample = oracle.grad_sample
    layout = oracle.layout

    def commit_statistics(self, sample: GradientSample, stacklevel: int = 2) -> None:
        """Store a sample's BatchNorm running statistics (:attr:`buffers`) and losses (``last_loss``).

        Statistics held for other runs are restarted from the template first,
        with a warning.

        Parameters
        ----------
        sample : GradientSample
        stacklevel : int
            Of that warning, as in :func:`warnings.warn` counted from here (2: the caller).
        """
        self.statistics.commit(sample.buffers, sample.lead, stacklevel=stacklevel + 1)
        self.last_loss = sample.loss

    # -- evaluation: methods defined in proxfed_dl.evaluation -----------------------------------
    value = evaluation.value
    objective = evaluation.objective
    predict = evaluation.predict
    has_split = evaluation.has_split
    score = evaluation.score
    export = evaluation.export

    # -- what a neural network does not have: clear errors where the core's defaults would call them --
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

    def __repr__(self) -> str:
        return (f"TorchProblem(model={type(self.flat.module).__name__}, P={self.dim}, N={self.n_clients}, "
                f"batch_size={self.batch_size}, data={self.dataset.name!r})")


def _reset(module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
        return
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
