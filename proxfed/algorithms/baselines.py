"""Baselines on the same state and accounting: FedAvg, FedHT, FedIHT and SCAFFOLD.

All communicate on a fixed schedule, every ``local_steps`` iterations
(``p = 1/local_steps``), with full participation and deterministic
(full-batch) local gradient steps.
"""

from __future__ import annotations

from .. import _backend as B
from .._validation import check_flag
from ..comm import CommModel
from ..prox import TopK
from .base import (
    FixedSchedule,
    State,
    check_positive,
    coin_array,
    gradient,
    gradient_step,
    hyper_like,
    latest_upload,
    select_runs,
)

__all__ = ["FedAvg", "FedHT", "Scaffold", "fedavg", "fedht", "fediht", "scaffold"]


class FedAvg(FixedSchedule):
    """FedAvg with full-batch local steps (optionally hard-thresholded: FedHT / FedIHT).

    Each iteration ``y_i = y_i - gamma grad f_i(y_i)`` (then ``y_i = TopK(y_i)``
    when ``local_topk``); every ``local_steps`` iterations the clients upload
    ``y_i``, the server forms ``x = mean_i y_i`` (then ``x = TopK(x)`` when
    ``server_topk``) and every client restarts from ``x``. No control
    variates (``h = 0``).

    Parameters
    ----------
    gamma : float or array (R,)
    local_steps : int or array (R,)
    k : int or array (R,), optional
        Kept entries for the server / local TopK and the output.
    server_topk, local_topk : bool
    comm : CommModel
    name : str
    make_topk : callable
        Builds the TopK operator from ``k`` (default :class:`~proxfed.prox.TopK`).
    """

    def __init__(self, gamma, local_steps, k=None, *, server_topk=False, local_topk=False,
                 comm: CommModel = CommModel(), name: str = "fedavg", make_topk=TopK):
        super().__init__(gamma, local_steps, comm)
        check_flag(server_topk, "server_topk"), check_flag(local_topk, "local_topk")
        if (server_topk or local_topk) and k is None:
            raise ValueError("k is required for server or local TopK")
        self.topk = None if k is None else make_topk(k)
        if self.topk is not None and not isinstance(self.topk, TopK):
            raise TypeError(f"make_topk must build a TopK, got {type(self.topk).__name__}")
        self.server_topk = check_flag(server_topk, "server_topk")
        self.local_topk = check_flag(local_topk, "local_topk")
        self.final = self.topk
        self.name = name
        self.n_runs  # validates per-run lengths

    def _hyper(self) -> dict:
        out = super()._hyper()
        if self.topk is not None:
            out["k"] = self.topk.k
        return out

    def can_jump(self, problem, state: State) -> bool:
        """Dense local steps (no local TopK) have a closed form on suitable problems."""
        return not self.local_topk and self._problem_can_jump(problem, state)

    def step(self, state: State, problem, coin) -> State:
        """One local step for every client; average (and prune) where ``coin`` is true."""
        W = state.w
        V = gradient_step(problem, W, hyper_like(self.gamma, W), state)
        if self.local_topk:
            V = self.topk.prox(V, 1.0)
        return self.finish_step(state, problem, coin, V)

    def finish_step(self, state: State, problem, coin, local) -> State:
        """Averaging (and pruning) where ``coin`` is true, given the local iterates ``local``."""
        xp = B.namespace(state.w)
        W, V = state.w, local
        mask = coin_array(coin, state.batch_shape)
        if not mask.any():
            return state.replace(w=V, t=state.t + 1)
        x = self.consensus.mean(V)
        if self.server_topk:
            x = self.topk.prox(x, 1.0)
        acc = self._account(state, mask, [V], [x], problem.dim)
        return state.replace(w=select_runs(mask, xp.broadcast_to(x, W.shape), V), t=state.t + 1,
                             uplink=latest_upload(mask, V, state.uplink), **acc)


class FedHT(FedAvg):
    """FedHT / FedIHT of Tong et al.: FedAvg whose server output is ``TopK(mean_i y_i)``."""


def fedavg(gamma, local_steps, k=None, *, comm=CommModel(), make_topk=TopK) -> FedAvg:
    """FedAvg: ``local_steps`` gradient steps per round, then plain averaging (output ``TopK`` if ``k``)."""
    return FedAvg(gamma, local_steps, k, comm=comm, name="fedavg", make_topk=make_topk)


def fedht(gamma, local_steps, k, *, comm=CommModel(), make_topk=TopK) -> FedHT:
    """FedHT: dense local steps; the server sends ``TopK(mean_i y_i)`` (K values downlink)."""
    return FedHT(gamma, local_steps, k, server_topk=True, comm=comm, name="fedht", make_topk=make_topk)


def fediht(gamma, local_steps, k, *, comm=CommModel(), make_topk=TopK) -> FedHT:
    """FedIHT: ``y_i = TopK(y_i - gamma grad f_i(y_i))`` every local step; server ``TopK(mean_i y_i)``."""
    return FedHT(gamma, local_steps, k, server_topk=True, local_topk=True, comm=comm, name="fediht",
                 make_topk=make_topk)


class Scaffold(FixedSchedule):
    """SCAFFOLD (option II) with full participation.

    Client control variates ``c_i`` and server ``c`` start at 0. Local steps
    ``y_i = y_i - gamma (grad f_i(y_i) - c_i + c)`` from the server model
    ``x``; after ``E = local_steps`` steps:
    ``c_i+ = c_i - c + (x - y_i) / (E gamma)``, clients upload
    ``dy_i = y_i - x`` and ``dc_i = c_i+ - c_i``, and the server sets
    ``x = x + eta mean_i dy_i``, ``c = c + (1/N) sum_i dc_i``. The state's
    ``h`` is ``c_i - c`` (so ``sum_i h_i = 0``); with ``eta = 1`` this equals
    Scaffnew with a fixed schedule.

    Parameters
    ----------
    gamma : float or array (R,)
    local_steps : int or array (R,)
    server_lr : float
        Server stepsize ``eta``.
    comm : CommModel
    """

    name = "scaffold"

    def __init__(self, gamma, local_steps, server_lr: float = 1.0, *, comm: CommModel = CommModel()):
        super().__init__(gamma, local_steps, comm)
        self.server_lr = check_positive(server_lr, "server_lr")
        self.n_runs

    def _hyper(self) -> dict:
        return {**super()._hyper(), "server_lr": self.server_lr}

    def _init_extras(self, problem, W) -> dict:
        xp = B.namespace(W)
        zeros = xp.zeros(W.shape, dtype=W.dtype, device=B.device_of(W))
        return {"c_client": zeros, "c_server": self.consensus.mean(zeros), "x": self.consensus.mean(W)}

    def can_jump(self, problem, state: State) -> bool:
        """Corrected local steps are dense steps with ``h_i = c_i - c`` fixed within a round."""
        return self._problem_can_jump(problem, state)

    def step(self, state: State, problem, coin) -> State:
        """One corrected local step; the SCAFFOLD round update where ``coin`` is true."""
        W, ex = state.w, state.extras
        V = W - hyper_like(self.gamma, W) * (gradient(problem, W, state) - ex["c_client"] + ex["c_server"])
        return self.finish_step(state, problem, coin, V)

    def finish_step(self, state: State, problem, coin, local) -> State:
        """The SCAFFOLD round update where ``coin`` is true, given the corrected local iterates ``local``."""
        xp = B.namespace(state.w)
        W, ex, V = state.w, state.extras, local
        gamma = hyper_like(self.gamma, W)
        c_i, c, x = ex["c_client"], ex["c_server"], ex["x"]
        mask = coin_array(coin, state.batch_shape)
        if not mask.any():
            return state.replace(w=V, t=state.t + 1)
        E = hyper_like(self.n_local * 1.0, W)
        c_new = c_i - c + (x - V) / (E * gamma)
        dy, dc = V - x, c_new - c_i
        x_new = x + self.server_lr * self.consensus.mean(dy)
        c_srv = c + self.consensus.mean(dc)
        acc = self._account(state, mask, [dy, dc], [x_new, c_srv], problem.dim)
        pick = lambda new, old: select_runs(mask, xp.broadcast_to(new, old.shape), old)  # noqa: E731
        c_i = select_runs(mask, c_new, c_i)
        c = pick(c_srv, c)
        x = pick(x_new, x)
        return state.replace(
            w=select_runs(mask, xp.broadcast_to(x, W.shape), V),
            h=c_i - c,
            t=state.t + 1,
            uplink=latest_upload(mask, dy, state.uplink),
            extras={"c_client": c_i, "c_server": c, "x": x},
            **acc,
        )


def scaffold(gamma, local_steps, *, server_lr=1.0, comm=CommModel()) -> Scaffold:
    """SCAFFOLD (option II), full participation; see :class:`Scaffold`."""
    return Scaffold(gamma, local_steps, server_lr, comm=comm)
