"""The core's update rules, configured for torch models: TopK scope and BatchNorm statistics.

Nothing here re-implements an update rule. :func:`make_algorithm` calls the
factories of the method registry (:mod:`proxfed.algorithms.registry`); :class:`WeightTopK` is a
:class:`proxfed.prox.TopK` restricted to the weights of convolutions and
linear layers (the switch away from "TopK over all trainable parameters");
:func:`track_buffers` adds the BatchNorm running statistics to the run state
and averages them at every communication.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from proxfed import _backend as B
from proxfed.algorithms import Algorithm
from proxfed.algorithms.registry import METHODS
from proxfed.algorithms.rounds import RoundBased
from proxfed.prox import TopK, check_step, sparsity_to_k

__all__ = ["WeightTopK", "track_buffers", "make_algorithm", "ALGORITHMS", "ROUND_BASED"]

#: Names accepted by :func:`make_algorithm` (besides ``"randprox_l1"``): the registry's methods.
ALGORITHMS = tuple(n for n in METHODS if n != "randprox_l1")
#: The round-based sparse-training rules (FedSparsify, FLASH): they need ``rounds``.
ROUND_BASED = tuple(n for n, spec in METHODS.items() if spec.round_based)


class WeightTopK(TopK):
    """TopK over a subset of coordinates (the prunable weights); the other coordinates are kept.

    ``prox(x)`` keeps the ``k`` entries of largest magnitude among the
    coordinates where ``prunable`` is true (ties to the lowest index) and
    leaves every other coordinate unchanged: biases and BatchNorm parameters
    stay dense. It is the Euclidean projection onto
    ``{x : ||x[prunable]||_0 <= k}``.

    Parameters
    ----------
    k : int
        Kept prunable entries.
    prunable : torch.Tensor of bool, shape (P,)
        E.g. :meth:`proxfed_dl.FlatModel.prunable_mask`.
    """

    def __init__(self, k, prunable):
        prunable = torch.as_tensor(prunable, dtype=torch.bool)
        super().__init__(k, d=int(prunable.sum()))
        self.prunable = prunable
        self.n_dense = int(prunable.numel() - prunable.sum())

    def _mask_like(self, x):
        if x.shape[-1] != self.prunable.numel():
            raise ValueError(f"x has {x.shape[-1]} coordinates, the prunable mask {self.prunable.numel()}")
        if self.prunable.device != x.device:
            self.prunable = self.prunable.to(x.device)
        return self.prunable

    def mask(self, x):
        """Boolean mask of the entries :meth:`prox` keeps (all non-prunable ones and the TopK of the rest)."""
        m = self._mask_like(x)
        keep = B.topk_mask(torch.where(m, x, torch.zeros_like(x)), self._k_for(x))
        return ~m | keep

    def prox(self, x, step=1.0):
        """Keep the ``k`` largest-magnitude prunable entries of each row; the others unchanged."""
        check_step(step)
        return torch.where(self.mask(x), x, torch.zeros_like(x))

    def value(self, x):
        """0 if every row has at most ``k`` non-zero prunable entries, else ``inf``."""
        m = self._mask_like(x)
        counts = B.to_numpy(torch.sum((x != 0) & m, dim=-1))
        ok = np.all(counts <= (self.k if isinstance(self.k, int) else self.k.reshape(
            self.k.shape + (1,) * (counts.ndim - 1))))
        return torch.tensor(0.0 if ok else float("inf"), dtype=x.dtype, device=x.device)

    def __repr__(self) -> str:
        return f"WeightTopK(k={self.k!r}, prunable={self.d}, dense={self.n_dense})"


class _BufferTracking:
    """Mixin over a core Algorithm class: running statistics in ``state.extras["buffers"]``."""

    average_buffers = True

    def init(self, problem, w0=None, h0=None):
        """The inner rule's initial state plus the template's running statistics for every client."""
        st = super().init(problem, w0, h0)
        problem.buffers_tracked = True
        bufs = problem.initial_buffers(st.batch_shape)
        problem.set_buffers(bufs)
        return st.replace(extras={**st.extras, "buffers": bufs})

    def step(self, state, problem, coin):
        """The inner rule's step; then average the running statistics of the runs that communicated."""
        problem.buffers_tracked = True
        if "buffers" in state.extras:
            problem.set_buffers(state.extras["buffers"])
        new = super().step(state, problem, coin)
        if self.average_buffers:
            comm = np.asarray(new.communications) > np.asarray(state.communications)
            if comm.any():
                weights = None
                if isinstance(self, RoundBased):  # the round's participants, weighted as the model average
                    part = self.participants_of(np.asarray(state.communications) + 1, problem.n_clients)
                    weights = np.where(part, self._client_weights(problem), 0.0)
                problem.average_buffers(comm if comm.ndim else None, weights=weights)
        bufs = problem.buffers
        if bufs is None:
            bufs = problem.initial_buffers(state.batch_shape)
        return new.replace(extras={**new.extras, "buffers": bufs})

    def config(self) -> dict:
        """The inner rule's configuration with ``average_buffers``."""
        return {**super().config(), "average_buffers": self.average_buffers}


_SUBCLASSES: dict = {}


def track_buffers(algorithm: Algorithm, average: bool = True) -> Algorithm:
    """The same update rule, with the model's BatchNorm running statistics carried in the state.

    Returns an algorithm of a subclass of ``type(algorithm)`` with the same
    attributes whose ``init`` adds ``extras["buffers"]`` (shape
    ``(..., N, n_buffers)``, every client starting from the template's
    statistics) and whose ``step`` runs the original step and then, in every
    run that communicated (its ``communications`` counter went up), replaces
    every client's statistics by the client mean -- averaged like the weights,
    with no control variate (the paper's decision). With ``average=False``
    each client keeps its own statistics (evaluation still uses their mean).
    The statistics are part of the state, so checkpoints, resumed runs and
    the runner's divergence roll-back include them.

    Parameters
    ----------
    algorithm : proxfed.algorithms.Algorithm
    average : bool

    Returns
    -------
    proxfed.algorithms.Algorithm
    """
    if not isinstance(algorithm, Algorithm):
        raise TypeError(f"algorithm must be a proxfed Algorithm, got {type(algorithm).__name__}")
    cls = type(algorithm)
    if issubclass(cls, _BufferTracking):
        cls = next(c for c in cls.__mro__[1:] if not issubclass(c, _BufferTracking))
    sub = _SUBCLASSES.get(cls)
    if sub is None:
        sub = type(f"{cls.__name__}WithBuffers", (_BufferTracking, cls), {"__module__": __name__})
        _SUBCLASSES[cls] = sub
    new = object.__new__(sub)
    new.__dict__.update(algorithm.__dict__)
    new.average_buffers = bool(average)
    return new


def make_algorithm(name: str, problem, gamma, p, *, sparsity: float = 0.9, scope: str = "all",
                   grad_at: str = "dense", schedule: str = "fixed", average_buffers: bool = True,
                   lam: float | None = None, rounds: int | None = None, clients_per_round: int | None = None,
                   seed: int = 0, mask_layers=None, **options) -> Algorithm:
    """A core update rule for a :class:`~proxfed_dl.TorchProblem`, by name.

    ``K = P - round(sparsity P)`` entries are kept (``scope="all"``: TopK over
    all trainable parameters flattened together, the paper's choice), or
    ``K = M - round(sparsity M)`` of the ``M`` weights of convolutions and
    linear layers with biases and BatchNorm parameters dense
    (``scope="weights"``, :class:`WeightTopK`). FedAvg, FedHT, FedIHT and
    SCAFFOLD take ``round(1/p)`` local steps (FedAvg evaluated after TopK).
    Models with BatchNorm are wrapped with :func:`track_buffers`.

    Parameters
    ----------
    name : str
        One of :data:`ALGORITHMS` (or ``"randprox_l1"`` with ``lam``).
    problem : TorchProblem
    gamma : float
        Stepsize (learning rate).
    p : float
        Communication probability; ``1/p`` local steps for the fixed schedule.
    sparsity : float
        Fraction of pruned entries in [0, 1).
    scope : {"all", "weights"}
    grad_at : {"dense", "pruned"}
        ``"pruned"``: straight-through estimator (gradient at TopK(w)).
    schedule : {"fixed", "random"}
        Communication every ``1/p`` steps or with probability ``p``.
    average_buffers : bool
        See :func:`track_buffers`.
    lam : float, optional
        l1 weight for ``"randprox_l1"``.
    rounds : int, optional
        The horizon in rounds of the FedSparsify and FLASH rules (:data:`ROUND_BASED`; required there).
    clients_per_round : int, optional
        Their partial participation (default every client).
    seed : int
        Their own randomness (participants, random masks, regrowth).
    mask_layers : sequence of {"conv", "linear"}, optional
        FLASH's maskable tensors (:meth:`~proxfed_dl.FlatModel.weight_segments`);
        default ``("conv",)`` for a :class:`~proxfed_dl.ResNet18` (FLASH's
        choice) and ``("conv", "linear")`` otherwise. FLASH's density is
        ``1 - sparsity`` over them and every other parameter stays dense.
        FedSparsify prunes all trainable parameters (``scope="all"``) or the
        weights only (``scope="weights"``).
    **options
        Passed on to :class:`proxfed.algorithms.FedSparsify` /
        :class:`proxfed.algorithms.Flash` (e.g. ``fine_tune_rounds`` for
        ``"oneshot"``, ``dst_rate``, ``mask_update_every``, ``levels``).

    Returns
    -------
    proxfed.algorithms.Algorithm
    """
    if scope not in ("all", "weights"):
        raise ValueError(f"scope must be 'all' or 'weights', got {scope!r}")
    if name not in ALGORITHMS and name != "randprox_l1":
        raise ValueError(f"unknown algorithm {name!r}; choose one of {ALGORITHMS} or 'randprox_l1'")
    spec = METHODS[name]
    prunable = problem.flat.prunable_mask(problem.device) if scope == "weights" else None
    k = sparsity_to_k(problem.dim if prunable is None else int(prunable.sum()), sparsity)
    steps = max(1, int(round(1.0 / p)))
    if options and not spec.round_based:
        raise TypeError(f"unexpected options for {name}: {sorted(options)}")
    if name == "randprox_l1" and lam is None:
        raise ValueError("randprox_l1 needs lam")
    hyper = {"gamma": gamma, "p": p, "local_steps": steps, "lam": lam}
    hyper = {n: hyper[n] for n in spec.hyperparameter_names}
    if spec.round_based:
        if rounds is None:
            raise ValueError(f"{name} needs rounds (its horizon)")
        kw = {"clients_per_round": clients_per_round, "seed": seed, **options}
        if spec.family == "fedsparsify":
            kw["prunable"] = None if prunable is None else prunable.cpu().numpy()
        else:
            if mask_layers is None:
                from .models import ResNet18

                mask_layers = ("conv",) if isinstance(problem.flat.module, ResNet18) else ("conv", "linear")
            kw["layers"] = problem.flat.weight_segments(tuple(mask_layers))
        alg = spec.factory(**hyper, sparsity=sparsity, rounds=rounds, **kw)
    else:
        kw = {"grad_at": grad_at, "schedule": schedule}
        if prunable is not None:  # TopK over the prunable weights only, biases and BatchNorm dense
            kw["make_topk"] = functools.partial(WeightTopK, prunable=prunable)
        alg = spec.factory(**hyper, k=k, **{o: v for o, v in kw.items() if spec.accepts(o)})
    if problem.n_buffers:
        alg = track_buffers(alg, average=average_buffers)
    return alg
