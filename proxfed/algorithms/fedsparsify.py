r"""FedSparsify (Stripelis et al., 2022): progressive magnitude pruning with no regrowth.

Round ``t = 1, ..., T`` with participants ``S_t`` (``M`` of ``N``):

.. code-block:: text

    every client i in S_t: from the server model x (mask m), local_steps steps
        y_i <- m * (y_i - gamma grad f_i(y_i))              (masked weights stay exactly 0)
    Global:  x = sum_{i in S_t} n_i y_i / sum n_i;   m <- TopK_{K_t}(x) within m;   x = m * x
    Local:   m_i = TopK_{K_t}(y_i) within m;  u_i = m_i * y_i  (uploaded: values + mask)
             votes_j = sum_{i in S_t} m_ij;  keep_j = votes_j >= V(M) and m_j
             x = keep * (sum_{i in S_t} n_i u_i / sum n_i)  (zeros included);  m <- keep

``K_t = P - round(s_t P)`` over the ``P`` prunable coordinates with
``s_t = fedsparsify_schedule(t, ...)``; ``m`` only ever loses entries (no
regrowth). Messages are counted by transmitted entries: the participants
upload their models on the mask (Global) or their ``K_t`` kept values
(Local), and the next round's participants download the new server model.
Masks are priced by the :class:`~proxfed.comm.CommModel`'s index model
(``"bitmap"``, ``"log2d"`` or ``"min"``) where they are sent: with every
Local upload, and with a download whose mask the client does not hold yet
(the mask changed since it last took part); Global uploads sit on the mask
the client received and carry none. The paper-compatible default (values
only) gives FedSparsify's communication column (:func:`fedsparsify_communication`).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import check_int, check_positive_int, check_real
from ..comm import CommModel
from ..prox import sparsity_to_k
from .base import State, coin_array, gradient_step, hyper_like, latest_upload, select_runs
from .rounds import MASK_STREAM, RoundBased, RoundExtras, count_true

__all__ = [
    "fedsparsify_schedule",
    "fedsparsify_communication",
    "FedSparsify",
    "fedsparsify_global",
    "fedsparsify_local",
    "oneshot_pruning",
    "random_pruning",
]


def fedsparsify_schedule(round, final_sparsity, rounds, initial_sparsity=0.0, start_round=1, frequency=1,
                         exponent=3):
    r"""FedSparsify's progressive sparsity ``s_t`` after round ``t`` (the paper's equation 1).

    .. math::

        s_t = s_F + (s_0 - s_F)\left(1 - \frac{t' - t_0}{T - t_0}\right)^n,
        \qquad t' = F \lfloor t / F \rfloor,

    for ``t >= t_0`` (``t' `` clipped to ``[t_0, T]``), and ``s_0`` before
    ``t_0``. With the defaults ``s_t = s_F (1 - (1 - (t-1)/(T-1))^3)``:
    ``s_1 = 0``, so the first prune happens at the end of round 2, and
    ``s_T = s_F`` (also for a single round, ``T = t_0 = 1``).

    Parameters
    ----------
    round : int or array of int
        ``t`` (1-based).
    final_sparsity : float
        ``s_F`` in [0, 1).
    rounds : int
        ``T``.
    initial_sparsity : float
        ``s_0`` in [0, s_F].
    start_round : int
        ``t_0`` in [1, T).
    frequency : int
        ``F``: the sparsity changes every ``F`` rounds.
    exponent : float
        ``n > 0``.

    Returns
    -------
    float or ndarray

    Examples
    --------
    >>> [round(fedsparsify_schedule(t, 0.9, 200), 4) for t in (1, 2, 100, 200)]
    [0.0, 0.0135, 0.7858, 0.9]
    """
    if not 0 <= final_sparsity < 1:
        raise ValueError(f"final_sparsity must be in [0, 1), got {final_sparsity!r}")
    if not 0 <= initial_sparsity <= final_sparsity:
        raise ValueError(f"initial_sparsity must be in [0, final_sparsity], got {initial_sparsity!r}")
    for name, v in (("rounds", rounds), ("start_round", start_round), ("frequency", frequency)):
        check_positive_int(v, name)
    if start_round > rounds or (start_round == rounds and rounds > 1):
        raise ValueError(f"start_round must be < rounds (or both 1), got {start_round} >= {rounds}")
    if not exponent > 0:
        raise ValueError(f"exponent must be > 0, got {exponent!r}")
    t = np.asarray(round)
    if t.dtype.kind not in "iu" or np.any(t < 1):
        raise ValueError(f"round must be a positive integer (or an integer array), got {round!r}")
    tp = np.clip(frequency * (t // frequency), start_round, rounds)
    span = max(rounds - start_round, 1)  # T = t_0 = 1: a single round ends at s_F
    decay = np.where(tp >= rounds, 0.0, (1 - (tp - start_round) / span)) ** exponent
    # written from s_0 so that s is exactly s_0 at t_0 and exactly s_F at T (no rounding either side)
    s = np.where(decay == 0, final_sparsity, initial_sparsity + (final_sparsity - initial_sparsity) * (1 - decay))
    s = np.where(t < start_round, initial_sparsity, s)
    return float(s) if s.ndim == 0 else s


def fedsparsify_communication(dim: int, rounds: int, clients_per_round: int, schedule) -> int:
    """FedSparsify's communication-cost column: ``sum_t M [nnz(w^(t-1)) + nnz(w^(t))]`` parameters.

    ``nnz(w^(t)) = dim - round(s_t dim)`` with ``s_t = schedule(t)`` and
    ``w^(0)`` dense. :class:`FedSparsify`'s accounting (values only) adds up
    to the same number: the participants of round ``t`` upload their models
    on the mask of ``w^(t-1)`` and the next round's participants download
    ``w^(t)``.

    Examples
    --------
    >>> fedsparsify_communication(1000, 10, 2, lambda t: 0.0)
    40000
    """
    nnz = [dim] + [sparsity_to_k(dim, float(schedule(t))) for t in range(1, rounds + 1)]
    return int(sum(clients_per_round * (nnz[t - 1] + nnz[t]) for t in range(1, rounds + 1)))


@dataclass(frozen=True)
class SparsifyExtras(RoundExtras):
    """FedSparsify's ``State.extras``: server model ``x`` and mask ``mask`` (``..., 1, d``), mask versions."""

    x: Any
    mask: Any
    mask_version: Any
    known_version: Any


class FedSparsify(RoundBased):
    """FedSparsify-Global or -Local (majority voting), and its OneShot and Random-pruning baselines.

    See the module docstring for the update rule.

    Parameters
    ----------
    gamma : float or array (R,)
        Local stepsize.
    local_steps : int or array (R,)
        Local gradient steps per round (full-batch convex problems: an epoch
        is one step; minibatch problems: steps of one minibatch).
    final_sparsity : float
        ``s_F`` in [0, 1).
    rounds : int
        ``T``.
    mode : {"global", "local"}
        Server pruning of the average, or client pruning with majority voting.
    pruning : {"magnitude", "random"}
        Which mask entries a prune removes: the smallest ``|x|`` (one global
        threshold over all prunable coordinates, zeros included) or a random
        subset (stream ``rng(seed, run, round, MASK_STREAM)``). Local mode is magnitude only.
    schedule : callable, optional
        ``schedule(t) -> s_t``; default :func:`fedsparsify_schedule` with the
        parameters below.
    initial_sparsity, start_round, frequency, exponent
        Passed to :func:`fedsparsify_schedule`.
    clients_per_round : int, optional
        ``M`` (default every client).
    vote_fraction : float
        Local mode: a coordinate is kept when at least ``V(M)`` of the ``M``
        participants keep it, ``V(M) = max(1, floor(vote_fraction M))``
        (``vote_rounding="floor"``, the original code's ``>= floor(M/2)``;
        the ``max(1, .)`` only matters for ``M = 1``) or ``ceil``.
    vote_rounding : {"floor", "ceil"}
    prunable : array of bool, shape (d,), optional
        Coordinates subject to pruning (default all; e.g. a network's
        weights without biases).
    seed : int
        Participants and random pruning.
    weighting : {"samples", "uniform"}
    comm : CommModel
    name : str, optional
    """

    def __init__(self, gamma, local_steps, final_sparsity, rounds, *, mode: str = "global",
                 pruning: str = "magnitude", schedule=None, initial_sparsity=0.0, start_round=1, frequency=1,
                 exponent=3, clients_per_round=None, vote_fraction: float = 0.5, vote_rounding: str = "floor",
                 prunable=None, seed: int = 0, weighting: str = "samples", comm: CommModel = CommModel(),
                 name: str | None = None):
        super().__init__(gamma, local_steps, rounds, clients_per_round=clients_per_round, seed=seed,
                         weighting=weighting, comm=comm)
        if mode not in ("global", "local"):
            raise ValueError(f"mode must be 'global' or 'local', got {mode!r}")
        if pruning not in ("magnitude", "random"):
            raise ValueError(f"pruning must be 'magnitude' or 'random', got {pruning!r}")
        if mode == "local" and pruning != "magnitude":
            raise ValueError("FedSparsify-Local prunes by magnitude")
        vote_fraction = check_real(vote_fraction, "vote_fraction", low=0.0, low_open=True, high=1.0)
        if vote_rounding not in ("floor", "ceil"):
            raise ValueError(f"vote_rounding must be 'floor' or 'ceil', got {vote_rounding!r}")
        self.final_sparsity = check_real(final_sparsity, "final_sparsity", low=0.0, high=1.0, high_open=True)
        self.schedule_params = {"initial_sparsity": check_real(initial_sparsity, "initial_sparsity", low=0.0),
                                "start_round": check_int(start_round, "start_round", minimum=1),
                                "frequency": check_int(frequency, "frequency", minimum=1),
                                "exponent": check_real(exponent, "exponent", low=0.0, low_open=True)}
        if schedule is None:
            fedsparsify_schedule(1, self.final_sparsity, self.rounds, **self.schedule_params)  # validates
            self._schedule = None
        elif callable(schedule):
            self._schedule = schedule
        else:
            raise TypeError("schedule must be a callable round -> sparsity or None")
        self.mode, self.pruning = mode, pruning
        self.vote_fraction, self.vote_rounding = float(vote_fraction), vote_rounding
        self.prunable = None if prunable is None else np.asarray(B.to_numpy(prunable), bool)
        self._prunable_dev = None
        self.name = name or f"fedsparsify_{mode}"
        self.n_runs

    def _hyper(self) -> dict:
        # a custom schedule is written out as its values, so that the configuration rebuilds the rule
        sched = ({"sparsity_schedule": [self.sparsity(t) for t in range(1, self.rounds + 1)]} if self._schedule
                 else self.schedule_params)
        return {**super()._hyper(), "final_sparsity": self.final_sparsity, "mode": self.mode,
                "pruning": self.pruning, **sched, "vote_fraction": self.vote_fraction,
                "vote_rounding": self.vote_rounding,
                "prunable": None if self.prunable is None else int(self.prunable.sum())}

    # -- schedule and counts -----------------------------------------------------------------
    def sparsity(self, round_) -> float:
        """``s_t`` after round ``round_``."""
        if self._schedule is not None:
            s = float(self._schedule(int(round_)))
            if not 0 <= s < 1:
                raise ValueError(f"schedule({round_}) = {s} is not in [0, 1)")
            return s
        return fedsparsify_schedule(int(round_), self.final_sparsity, self.rounds, **self.schedule_params)

    def kept(self, round_, n_prunable: int) -> int:
        """``K_t = P - round(s_t P)``: prunable entries kept after round ``round_``."""
        return sparsity_to_k(n_prunable, self.sparsity(round_))

    def min_votes(self, m: int) -> int:
        """``V(M)``: votes needed to keep a coordinate when ``M`` clients take part."""
        exact = Fraction(repr(self.vote_fraction)) * int(m)  # 0.29 * 100 is 28.999... in floating point
        v = math.floor(exact) if self.vote_rounding == "floor" else math.ceil(exact)
        return max(1, int(v))

    # -- state ---------------------------------------------------------------------------------
    def _prunable(self, like, d: int):
        if self.prunable is None:
            return None
        if self.prunable.shape != (d,):
            raise ValueError(f"prunable must have shape ({d},), got {self.prunable.shape}")
        if self._prunable_dev is None or B.device_of(self._prunable_dev) != B.device_of(like) or \
                B.namespace(self._prunable_dev) is not B.namespace(like):
            self._prunable_dev = B.from_numpy(self.prunable, like=like)
        return self._prunable_dev

    def _init_extras(self, problem, W) -> dict:
        xp = B.namespace(W)
        self._prunable(W, problem.dim)
        x = self.consensus.mean(W)
        return SparsifyExtras(x=x, mask=xp.ones(x.shape, dtype=xp.bool, device=B.device_of(W)),
                              **self._version_extras(tuple(W.shape[:-2]), problem.n_clients)).to_extras()

    def _prune(self, x, mask, k: np.ndarray, rounds_now: np.ndarray):
        """Mask entries kept after pruning ``x`` to ``k`` (per run) prunable entries within ``mask``."""
        xp = B.namespace(x)
        prunable = self._prunable(x, x.shape[-1])
        eligible = mask if prunable is None else mask & prunable
        if self.pruning == "magnitude":
            score = xp.abs(x)
        else:
            u = np.stack([B.rng(self.seed, flat, int(rounds_now[idx]), MASK_STREAM).random(x.shape[-2:])
                          for flat, idx in enumerate(self._runs(rounds_now.shape))])
            score = B.from_numpy(u.reshape(x.shape), like=x, dtype=x.dtype)
        score = xp.where(eligible, score, -xp.ones_like(score))
        kk = int(k.flat[0]) if np.all(k == k.flat[0]) else k.reshape(k.shape + (1,) * (x.ndim - 1 - k.ndim))
        keep = B.top_scores_mask(score, kk) & eligible
        return keep if prunable is None else keep | (mask & ~prunable)

    def step(self, state: State, problem, coin) -> State:
        """One masked local step; the FedSparsify round update where ``coin`` is true."""
        xp = B.namespace(state.w)
        W, ex = state.w, SparsifyExtras.from_extras(state.extras)
        mask = ex.mask
        V = gradient_step(problem, W, hyper_like(self.gamma, W), state)
        V = xp.where(mask, V, xp.zeros_like(V))
        on = coin_array(coin, state.batch_shape)
        if not on.any():
            return state.replace(w=V, t=state.t + 1)
        N, d = problem.n_clients, problem.dim
        rounds_now = state.communications + 1
        part = self.participants_of(rounds_now, N)
        n_prunable = d if self.prunable is None else int(self.prunable.sum())
        k = np.vectorize(lambda t: self.kept(t, n_prunable), otypes=[np.int64])(rounds_now)
        if self.mode == "global":
            x = self.average(V, part, problem)
            new_mask = self._prune(x, mask, k, rounds_now)
            up_counts, sent = count_true(mask), V  # on the mask the clients received: no mask goes up
        else:
            client_masks = self._prune(V, xp.broadcast_to(mask, V.shape), k[..., None] * np.ones(N, np.int64),
                                       rounds_now)
            U = xp.where(client_masks, V, xp.zeros_like(V))
            part_dev = B.from_numpy(part[..., None], like=V)
            votes = xp.sum(xp.astype(client_masks & part_dev, B.index_dtype(xp, B.device_of(V))), axis=-2,
                           keepdims=True)
            need = np.vectorize(self.min_votes, otypes=[np.int64])(part.sum(axis=-1))
            need_dev = B.from_numpy(need.reshape(need.shape + (1, 1)), like=votes, dtype=votes.dtype)
            new_mask = (votes >= need_dev) & mask
            prunable = self._prunable(V, d)
            if prunable is not None:
                new_mask = new_mask | (mask & ~prunable)
            x = self.average(U, part, problem)
            up_counts, sent = count_true(client_masks), U  # values and the client's own mask
        x = xp.where(new_mask, x, xp.zeros_like(x))
        nxt = self.participants_of(rounds_now + 1, N)
        changed = count_true(new_mask)[..., 0] != count_true(mask)[..., 0]  # masks only shrink
        down_mask, versions = self._downlink_versions(state.extras, on, changed, nxt)
        acc = self._tally(state, on, up_counts, part, count_true(new_mask), nxt, d,
                          up_mask=self.mode == "local", down_mask=down_mask)
        new_w = select_runs(on, xp.broadcast_to(x, W.shape), V)
        extras = SparsifyExtras(x=select_runs(on, x, ex.x), mask=select_runs(on, new_mask, mask), **versions)
        return state.replace(w=new_w, t=state.t + 1, uplink=latest_upload(on, sent, state.uplink),
                             extras=extras.to_extras(), **acc)


def fedsparsify_global(gamma, local_steps, final_sparsity, rounds, **kwargs) -> FedSparsify:
    """FedSparsify-Global: the server prunes the sample-weighted average to ``s_t``; see :class:`FedSparsify`."""
    return FedSparsify(gamma, local_steps, final_sparsity, rounds, mode="global", **kwargs)


def fedsparsify_local(gamma, local_steps, final_sparsity, rounds, **kwargs) -> FedSparsify:
    """FedSparsify-Local: clients prune to ``s_t``, the server keeps majority-voted coordinates."""
    return FedSparsify(gamma, local_steps, final_sparsity, rounds, mode="local", **kwargs)


def oneshot_pruning(gamma, local_steps, final_sparsity, rounds, *, fine_tune_rounds: int = 0,
                    **kwargs) -> FedSparsify:
    """OneShot baseline: dense FedAvg, one magnitude prune to ``s_F`` after round ``T - fine_tune_rounds``.

    With ``fine_tune_rounds = 0`` the model is pruned at the end of the last
    round (no fine-tuning); otherwise the remaining rounds train under the mask.
    """
    if isinstance(fine_tune_rounds, bool) or not isinstance(fine_tune_rounds, numbers.Integral) or \
            not 0 <= fine_tune_rounds < rounds:
        raise ValueError(f"fine_tune_rounds must be an integer in [0, rounds), got {fine_tune_rounds!r}")
    at = rounds - int(fine_tune_rounds)
    s_f = float(final_sparsity)
    name = "oneshot" if not fine_tune_rounds else "oneshot_finetune"
    return FedSparsify(gamma, local_steps, s_f, rounds, mode="global", schedule=lambda t: s_f if t >= at else 0.0,
                       name=kwargs.pop("name", name), **kwargs)


def random_pruning(gamma, local_steps, final_sparsity, rounds, **kwargs) -> FedSparsify:
    """Random-pruning baseline: FedSparsify-Global's schedule, removing random mask entries."""
    return FedSparsify(gamma, local_steps, final_sparsity, rounds, mode="global", pruning="random",
                       name=kwargs.pop("name", "random_pruning"), **kwargs)
