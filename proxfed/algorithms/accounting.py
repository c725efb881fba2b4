"""Communication accounting of the update rules: a step's messages to per-client bit tallies.

Two ways of counting feed one update of the tallies (:func:`add_tallies`):
:func:`message_tallies` counts the non-zeros of the arrays actually sent
and charges every client of a communicating run (the rules of
:mod:`.meta` and :mod:`.baselines`, full participation, indices priced by
the :class:`~proxfed.comm.CommModel`); the round-based rules
(:class:`.rounds.RoundBased`) know their entry counts from their
masks, charge the round's participants only and price a mask only where
the receiver lacks it, then add their tallies the same way.
"""

from __future__ import annotations

import array_api_compat
import numpy as np

from .. import _backend as B
from .batching import merge_runs

__all__ = ["TALLIES", "add_tallies", "message_tallies", "device_tallies"]

#: The per-client bit tallies of a :class:`~proxfed.algorithms.State` (on the iterates' device during a run).
TALLIES = ("bits_up", "bits_down", "values_up", "upload_nnz")


def add_tallies(state, coin, up, down, bits_up, bits_down, values_up) -> dict:
    """The host tallies of ``state`` after one communication.

    Parameters
    ----------
    state : State
        With NumPy tallies.
    coin : ndarray of bool, batch shape
        The runs that communicate (their ``communications`` go up by one).
    up, down : ndarray of bool, broadcastable to ``batch + (N,)``
        The clients whose upload / download is counted.
    bits_up, bits_down, values_up : ndarray of int, broadcastable to ``batch + (N,)``
        Bits up, bits down and uploaded non-zeros of each client's message.

    Returns
    -------
    dict
        ``communications`` and the :data:`TALLIES`, to ``state.replace`` with.
    """
    return {
        "communications": state.communications + np.asarray(coin, np.int64),
        "bits_up": state.bits_up + np.where(up, bits_up, 0),
        "bits_down": state.bits_down + np.where(down, bits_down, 0),
        "values_up": state.values_up + np.where(up, values_up, 0),
        "upload_nnz": np.where(up, values_up, state.upload_nnz),
    }


def message_tallies(comm, state, coin_mask: np.ndarray, sent_up, sent_down, d: int, runs=None) -> dict:
    """Bit tallies after a communication where ``coin_mask`` (batch shape) is true.

    Parameters
    ----------
    comm : CommModel
        Prices a message by its non-zeros.
    state : State
    coin_mask : ndarray of bool, batch shape
    sent_up : list of arrays (..., N, d)
        The uploaded messages.
    sent_down : list of arrays (..., 1, d) or (..., N, d)
        The broadcast messages.
    d : int
        Model dimension.
    runs : ndarray of int, optional
        The indices of the true entries of a 1-d ``coin_mask`` when the sent
        arrays hold only those runs.

    Returns
    -------
    dict
        As :func:`add_tallies`; on a device the tallies stay there (:func:`device_tallies`).
    """
    if not isinstance(sent_up[0], np.ndarray):
        return device_tallies(comm, state, coin_mask, sent_up, sent_down, d, runs)
    mask = np.asarray(coin_mask, bool)[..., None]
    shape = state.bits_up.shape

    def counts(m):
        c = B.to_numpy(B.nnz(m)).astype(np.int64)
        if runs is None:
            return c
        full = np.zeros(shape[:1] + c.shape[1:], np.int64)
        full[runs] = c
        return full

    counts_up = [counts(m) for m in sent_up]
    nnz_up = sum(counts_up)
    bits_up = sum(comm.bits(c, d) for c in counts_up)
    bits_dn = sum(np.broadcast_to(comm.bits(counts(m), d), shape) for m in sent_down)
    return add_tallies(state, coin_mask, mask, mask, bits_up, bits_dn, nnz_up)


def device_tallies(comm, state, coin_mask, sent_up, sent_down, d: int, runs) -> dict:
    """:func:`message_tallies` for device arrays: the tallies stay on the device (no read-back).

    Host tallies (a fresh or reloaded state) move to the device once; the
    run loops return them to the host (:meth:`State.with_host_tallies
    <proxfed.algorithms.State.with_host_tallies>`).
    """
    like = sent_up[0]
    xp = B.namespace(like)
    coin = np.asarray(coin_mask, bool)
    shape = tuple(state.bits_up.shape)
    nnz_up = sum(B.nnz(m) for m in sent_up)
    added = {"bits_up": sum(comm.bits(B.nnz(m), d) for m in sent_up),
             "bits_down": sum(comm.bits(B.nnz(m), d) for m in sent_down), "values_up": nnz_up}
    on_device = state.with_device_tallies(like)
    old = {n: getattr(on_device, n) for n in TALLIES}
    out = {"communications": state.communications + coin.astype(np.int64)}
    if runs is None and coin.all():
        out.update({n: old[n] + a for n, a in added.items()}, upload_nnz=xp.broadcast_to(nnz_up, shape))
    elif runs is not None and array_api_compat.is_torch_array(like):  # adds into the communicating rows
        r = B.device_constant(np.asarray(runs, np.int64), like=like)
        rows = (len(runs),) + shape[1:]
        out.update({n: old[n].index_add(0, r, a.expand(rows)) for n, a in added.items()},
                   upload_nnz=old["upload_nnz"].index_copy(0, r, nnz_up.expand(rows)))
    else:
        if runs is not None:
            added = {n: merge_runs(coin, a, None) for n, a in added.items()}
            nnz_up = added["values_up"]
        on = B.device_constant(coin[..., None].astype(np.int64), like=like)
        out.update({n: old[n] + on * a for n, a in added.items()},
                   upload_nnz=old["upload_nnz"] + on * (nnz_up - old["upload_nnz"]))
    return out
