"""Round-based rules with partial participation, sample-weighted averaging and masks.

The shared machinery of FedSparsify and FLASH (:mod:`.fedsparsify`,
:mod:`.flash`): a fixed schedule of ``local_steps`` local gradient steps per
round, ``clients_per_round`` participants drawn per round from a keyed
stream, the server model ``x`` kept in the state (``extras["x"]``, shape
``(..., 1, d)``; it is what :meth:`RoundBased.output` evaluates), the
sample-size-weighted average of the participants' models, and the
accounting of messages by their number of transmitted entries (the mask's
cost comes from the :class:`~proxfed.comm.CommModel`'s index model).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import _backend as B
from .._validation import check_positive_int, check_seed
from ..comm import CommModel
from .accounting import add_tallies
from .base import FixedSchedule, State
from .batching import per_run_length

__all__ = ["Layers", "RoundBased", "participants", "PARTICIPATION_STREAM", "MASK_STREAM"]

#: Last RNG-key element of the participant draws ``rng(seed, run, round, PARTICIPATION_STREAM)``.
PARTICIPATION_STREAM = 2
#: Last RNG-key element of random masks, random pruning and regrowth.
MASK_STREAM = 3


def participants(seed: int, round_: int, n_clients: int, clients_per_round: int | None, run: int = 0) -> np.ndarray:
    """The clients taking part in round ``round_`` (1-based): a boolean mask of shape ``(n_clients,)``.

    ``clients_per_round`` clients drawn without replacement from the stream
    ``rng(seed, run, round_, PARTICIPATION_STREAM)``, so the draw of a round
    depends on nothing else (a resumed run sees the same clients; run ``r``
    of a batch uses ``run=r``, a single run ``run=0``); ``None`` means every
    client.

    Examples
    --------
    >>> participants(0, 1, 10, 3).sum(), participants(0, 1, 10, None).all()
    (np.int64(3), np.True_)
    >>> bool((participants(0, 4, 10, 3) == participants(0, 4, 10, 3)).all())
    True
    """
    out = np.zeros(n_clients, bool)
    if clients_per_round is None or clients_per_round >= n_clients:
        out[:] = True
        return out
    pick = B.rng(seed, run, round_, PARTICIPATION_STREAM).choice(n_clients, clients_per_round, replace=False)
    out[pick] = True
    return out


class Layers:
    """Maskable segments of a flat parameter vector: ``[(start, stop), ...]`` in increasing order.

    Coordinates outside every segment are never masked (always active); a
    density or a per-layer budget counts maskable coordinates only.

    Parameters
    ----------
    segments : sequence of (int, int)
        Non-empty, non-overlapping half-open ranges within ``[0, d)``.
    d : int
        Length of the vector.

    Examples
    --------
    >>> lay = Layers([(0, 6), (8, 10)], 12)
    >>> lay.sizes.tolist(), int(lay.maskable.sum())
    ([6, 2], 8)
    """

    def __init__(self, segments, d: int):
        check_positive_int(d, "d")
        segs = [(int(a), int(b)) for a, b in segments]
        if not segs:
            raise ValueError("layers need at least one segment")
        last = 0
        for a, b in segs:
            if not (last <= a < b <= d):
                raise ValueError(f"segments must be non-empty, increasing and within [0, {d}); got {segs}")
            last = b
        self.segments, self.d = segs, int(d)
        self.sizes = np.array([b - a for a, b in segs], np.int64)
        self.maskable = np.zeros(d, bool)
        for a, b in segs:
            self.maskable[a:b] = True

    @classmethod
    def whole(cls, d: int) -> "Layers":
        """One segment covering the whole vector."""
        return cls([(0, d)], d)

    def counts(self, mask: np.ndarray) -> np.ndarray:
        """Active entries per segment of boolean ``mask`` (``(..., d)`` to ``(..., n_layers)``)."""
        return np.stack([mask[..., a:b].sum(axis=-1) for a, b in self.segments], axis=-1)

    def __len__(self) -> int:
        return len(self.segments)

    def __repr__(self) -> str:
        return f"Layers({len(self)} segments, {int(self.sizes.sum())} of {self.d} maskable)"


def as_layers(layers, d: int) -> Layers:
    """``None`` (the whole vector), a :class:`Layers` or a list of segments."""
    if layers is None:
        return Layers.whole(d)
    lay = layers if isinstance(layers, Layers) else Layers(layers, d)
    if lay.d != d:
        raise ValueError(f"layers describe a vector of length {lay.d}, the problem has {d} coordinates")
    return lay


class RoundExtras:
    """Base of a round-based rule's typed view of ``State.extras`` (a frozen dataclass per rule).

    The drivers merge, save and load ``extras`` as a mapping of arrays; a
    rule reads it with :meth:`from_extras` and writes it with
    :meth:`to_extras`, so its keys are the view's field names, in field order.
    None means absent both ways: an optional array (FLASH's ``w_init``, kept
    only by the rules that regrow from it) is a field that may be None.
    """

    @classmethod
    def from_extras(cls, extras: dict):
        """The view of ``extras`` (a field missing there reads as None)."""
        return cls(**{f.name: extras.get(f.name) for f in dataclasses.fields(cls)})

    def to_extras(self, base: dict | None = None) -> dict:
        """``base`` (other keys and their order kept) updated with the fields that are not None."""
        out = dict(base or {})
        out.update((f.name, getattr(self, f.name)) for f in dataclasses.fields(self)
                   if getattr(self, f.name) is not None)
        return out


class RoundBased(FixedSchedule):
    """Base of FedSparsify and FLASH: rounds of local steps, partial participation, a server model.

    Parameters
    ----------
    gamma : float or array (R,)
        Local stepsize.
    local_steps : int or array (R,)
        Local gradient steps per round (the fixed schedule communicates at
        the end of every round).
    rounds : int
        The horizon ``T`` in rounds (schedules depend on it).
    clients_per_round : int, optional
        ``M`` participants per round (default all ``N``), see :func:`participants`.
    seed : int
        Seed of the rule's own randomness (participants, random masks, regrowth).
    weighting : {"samples", "uniform"}
        Server average weighted by the participants' sample counts
        (``problem.dataset.client_sizes``) or uniform.
    comm : CommModel
        Values cost ``comm.value_bits`` each; its index model prices the masks
        where they are sent (see :meth:`_tally`).

    Notes
    -----
    The rule's randomness comes from its own ``seed``, keyed by the run's
    position in the batch: :func:`proxfed.run`'s ``seed`` sets only the
    initial point and is not used by the fixed schedule. Non-participants
    take the local steps too (the clients are one array axis) and their
    work is discarded at the round's end.
    """

    def __init__(self, gamma, local_steps, rounds, *, clients_per_round=None, seed: int = 0,
                 weighting: str = "samples", comm: CommModel = CommModel()):
        super().__init__(gamma, local_steps, comm)
        check_positive_int(rounds, "rounds")
        if clients_per_round is not None:
            check_positive_int(clients_per_round, "clients_per_round", hint=" or None")
        if weighting not in ("samples", "uniform"):
            raise ValueError(f"weighting must be 'samples' or 'uniform', got {weighting!r}")
        self.rounds = int(rounds)
        self.clients_per_round = None if clients_per_round is None else int(clients_per_round)
        self.seed = check_seed(seed, sequence=False)
        self.weighting = weighting

    def _hyper(self) -> dict:
        return {**super()._hyper(), "rounds": self.rounds, "clients_per_round": self.clients_per_round,
                "seed": self.seed, "weighting": self.weighting}

    @property
    def n_runs(self) -> int | None:
        """R if ``gamma`` or ``local_steps`` is a per-run array, else None (the other options are shared)."""
        return per_run_length([self.gamma, self.n_local])

    @property
    def deterministic(self) -> bool:
        """False: participants, masks and regrowth are drawn per run position from the rule's own ``seed``."""
        return False

    # -- rounds and participants ------------------------------------------------------
    @staticmethod
    def _runs(batch: tuple) -> list:
        """Run indices in C order over the batch shape (``[()]`` for a single run)."""
        return list(np.ndindex(*batch)) if batch else [()]

    def participants_of(self, rounds_now: np.ndarray, n_clients: int) -> np.ndarray:
        """Participants of round ``rounds_now[r]`` in every run ``r``: bool of shape ``batch + (N,)``."""
        rounds_now = np.asarray(rounds_now)
        out = np.zeros(rounds_now.shape + (n_clients,), bool)
        for flat, idx in enumerate(self._runs(rounds_now.shape)):
            out[idx] = self._participants(int(rounds_now[idx]), n_clients, flat)
        return out

    def _participants(self, round_: int, n_clients: int, run: int) -> np.ndarray:
        return participants(self.seed, round_, n_clients, self.clients_per_round, run=run)

    # -- server average ---------------------------------------------------------------
    def _client_weights(self, problem) -> np.ndarray:
        if self.weighting == "uniform":
            return np.ones(problem.n_clients)
        return np.asarray(problem.dataset.client_sizes, dtype=np.float64)

    def average(self, V, part: np.ndarray, problem):
        """Weighted mean over the participants ``part`` (``batch + (N,)``) of ``V`` (``..., N, d``): ``(..., 1, d)``."""
        xp = B.namespace(V)
        w = np.where(part, self._client_weights(problem), 0.0)
        w = w / w.sum(axis=-1, keepdims=True)
        wx = B.from_numpy(w[..., None], like=V, dtype=V.dtype)
        # zero-weight clients must not contribute even where their iterates are non-finite
        terms = xp.where(B.from_numpy(part[..., None], like=V), wx * V, xp.zeros_like(V))
        return xp.sum(terms, axis=-2, keepdims=True)

    # -- accounting -------------------------------------------------------------------
    @staticmethod
    def _version_extras(batch: tuple, n_clients: int) -> dict:
        """Mask versions: the server's (``batch + (1, 1)``) and the one each client last received (``batch + (N, 1)``)."""
        return {"mask_version": np.zeros(batch + (1, 1), np.int64),
                "known_version": np.zeros(batch + (n_clients, 1), np.int64)}

    @staticmethod
    def _downlink_versions(extras: dict, coin: np.ndarray, changed: np.ndarray, receivers: np.ndarray):
        """Which receivers need the mask with the model, and the new versions (runs that communicate).

        The server's mask version goes up in every run whose mask ``changed``;
        a receiver gets the mask with the model unless it already holds that
        version (the initial mask, set up with ``w0``, is version 0 and known
        to every client).
        """
        coin = np.asarray(coin, bool)
        version = np.asarray(B.to_numpy(extras["mask_version"])) + (coin & changed)[..., None, None]
        known = np.asarray(B.to_numpy(extras["known_version"]))
        send = receivers & coin[..., None] & (known[..., 0] != version[..., 0])
        known = np.where((receivers & coin[..., None])[..., None], version, known)
        return send, {"mask_version": version, "known_version": known}

    def _tally(self, state: State, coin: np.ndarray, up_counts, up_clients, down_counts, down_clients,
               d: int, up_mask=False, down_mask=False) -> dict:
        """Accounting of one round: entries sent up / down per client (``batch + (N,)`` integer arrays).

        A message costs ``comm.value_bits`` per entry; the index part of
        ``comm`` (bitmap or indices, :class:`~proxfed.comm.CommModel`) is paid
        only by messages that carry a mask the receiver does not hold
        (``up_mask`` / ``down_mask``, broadcastable to ``batch + (N,)``) and
        are not dense. With the default ``CommModel()`` (no index cost) masks
        cost nothing, as indices cost nothing for the other rules.
        """
        state = state.with_host_tallies()  # (a no-op: these rules count on the host)
        shape = state.bits_up.shape
        up_counts = np.broadcast_to(np.asarray(up_counts, np.int64), shape)
        down_counts = np.broadcast_to(np.asarray(down_counts, np.int64), shape)
        up = np.asarray(coin, bool)[..., None] & up_clients
        down = np.asarray(coin, bool)[..., None] & down_clients

        def bits(counts, mask_sent):
            values = self.comm.value_bits * counts
            index = self.comm.bits(counts, d) - values
            return values + np.where(np.asarray(mask_sent, bool) & (counts < d), index, 0)

        # counts from the masks, participants only (not Algorithm._account's nnz of every client's message)
        return add_tallies(state, coin, up, down, bits(up_counts, up_mask), bits(down_counts, down_mask), up_counts)

    # -- output -----------------------------------------------------------------------
    def output(self, state: State):
        """The server model ``extras["x"]`` (already pruned or masked), shape ``(..., d)``."""
        return state.extras["x"][..., 0, :]


def count_true(mask) -> np.ndarray:
    """Number of true entries along the last axis, on the host (int64)."""
    xp = B.namespace(mask)
    ones = xp.astype(mask, B.index_dtype(xp, B.device_of(mask)))
    return B.to_numpy(xp.sum(ones, axis=-1)).astype(np.int64)
