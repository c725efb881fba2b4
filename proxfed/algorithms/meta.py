r"""One engine for the paper's Algorithm 1 ("Meta Sparse-ProxSkip").

Every client ``i`` at iteration ``t`` (stepsize ``gamma``, communication
probability ``p``, shared coin ``theta_t``):

.. code-block:: text

    6   v_i = w_i - gamma (grad f_i(w_i) - h_i)          (gradient at TopK(w_i) if grad_at="pruned")
    7   v_i = local.prox(v_i, gamma)                     (placement "local", every step)
    8   if theta_t:
    9       u_i = uplink.prox(v_i);  v_i = u_i unless uplink_keep_dense     ("uplink")
    10      w_bar = mean_j u_j;  w_i = w_bar
    11      w_i = server.prox(w_bar) before line 12       ("server", server_order="before_h")
    12      h_i = h_i + (p / gamma) (w_i - v_i)
    11'     w_i = server.prox(w_bar) after line 12        ("server", server_order="after_h")
    13  else: w_i = v_i
    19  output: final.prox(mean_i w_i)                    ("final")

The named factories below fix the placements of the paper's variants. Each
builds its TopK placements with ``make_topk(k)`` (default
:class:`~proxfed.prox.TopK`; e.g. ``proxfed_dl.WeightTopK`` restricted to
the prunable weights), one operator per placement.
"""

from __future__ import annotations

import numpy as np

from .. import _backend as B
from .._validation import check_flag
from ..comm import CommModel
from ..prox import L1, ProxOperator, TopK
from .base import (
    Algorithm,
    State,
    check_positive,
    check_probability,
    coin_array,
    comm_runs,
    gradient,
    gradient_step,
    hyper_like,
    latest_upload,
    merge_runs,
    per_run_length,
    select_runs,
    take_runs,
)

__all__ = [
    "Algorithm1",
    "proxskip",
    "final_topk",
    "sparse_proxskip",
    "sparse_proxskip_local",
    "accelerated_server_pruning",
    "asp_modified",
    "sps_modified",
    "randprox_l1",
    "sps_bidirectional",
]


def _check_prox(op, name):
    if op is not None and not isinstance(op, ProxOperator):
        raise TypeError(f"{name} must be a ProxOperator or None, got {type(op).__name__}")
    return op


class Algorithm1(Algorithm):
    """The paper's Algorithm 1 with prox placements as options.

    Parameters
    ----------
    gamma : float or array (R,)
        Stepsize ``gamma > 0``.
    p : float or array (R,)
        Communication probability in (0, 1]; with ``schedule="fixed"``,
        ``1/p`` (rounded) is the number of local steps between communications.
    local : ProxOperator, optional
        Applied to every client after every local step (line 7), stepsize gamma.
    uplink : ProxOperator, optional
        Applied to each client's message before it is sent (line 9).
    uplink_keep_dense : bool
        False: the pruned copy overwrites the local iterate and enters the
        control-variate update (Sparse-ProxSkip). True: only the message is
        pruned (SPS-modified).
    server : ProxOperator, optional
        Applied by the server to the average before the downlink (line 11).
    server_order : {"before_h", "after_h"}
        Whether the control-variate update sees the server-pruned model
        (ASP) or the dense average (ASP-modified).
    final : ProxOperator, optional
        Applied to the averaged model at output and at every evaluation.
    sparsifier : TopK, optional
        The TopK used for ``grad_at="pruned"`` (defaults to the first TopK
        among the placements).
    grad_at : {"dense", "pruned"}
        Gradient at ``w_i`` or at ``TopK(w_i)`` (straight-through estimator).
    schedule : {"random", "fixed"}
        Bernoulli(p) coins or communication every ``round(1/p)`` steps.
    comm : CommModel
        Bit accounting.
    name : str
    """

    def __init__(
        self,
        gamma,
        p,
        *,
        local=None,
        uplink=None,
        uplink_keep_dense: bool = False,
        server=None,
        server_order: str = "before_h",
        final=None,
        sparsifier=None,
        grad_at: str = "dense",
        schedule: str = "random",
        comm: CommModel = CommModel(),
        name: str = "algorithm1",
    ):
        self.gamma = check_positive(gamma, "gamma")
        self.p = check_probability(p, "p")
        self.local = _check_prox(local, "local")
        self.uplink = _check_prox(uplink, "uplink")
        self.server = _check_prox(server, "server")
        self.final = _check_prox(final, "final")
        if server_order not in ("before_h", "after_h"):
            raise ValueError(f"server_order must be 'before_h' or 'after_h', got {server_order!r}")
        if grad_at not in ("dense", "pruned"):
            raise ValueError(f"grad_at must be 'dense' or 'pruned', got {grad_at!r}")
        if schedule not in ("random", "fixed"):
            raise ValueError(f"schedule must be 'random' or 'fixed', got {schedule!r}")
        if not isinstance(comm, CommModel):
            raise TypeError("comm must be a CommModel")
        if sparsifier is None and grad_at == "pruned":
            sparsifier = next((op for op in (local, uplink, server, final) if isinstance(op, TopK)), None)
            if sparsifier is None:
                raise ValueError("grad_at='pruned' needs a TopK placement or an explicit sparsifier")
        self.sparsifier = _check_prox(sparsifier, "sparsifier")
        self.uplink_keep_dense = check_flag(uplink_keep_dense, "uplink_keep_dense")
        self.server_order = server_order
        self.grad_at = grad_at
        self.schedule = schedule
        self.comm = comm
        self.name = name
        self.n_runs  # validates that per-run arrays agree

    def _hyper(self) -> dict:
        out = {"gamma": self.gamma, "p": self.p}
        for place in ("local", "uplink", "server", "final"):
            op = getattr(self, place)
            if op is not None:
                out[place] = repr(op)
                for attr in ("k", "lam"):
                    if hasattr(op, attr):
                        out[f"{place}_{attr}"] = getattr(op, attr)
        out.update(uplink_keep_dense=self.uplink_keep_dense, server_order=self.server_order, grad_at=self.grad_at)
        return out

    @property
    def n_runs(self):
        """R if ``gamma``, ``p`` or a placement's ``k`` or ``lam`` is a per-run array, else None."""
        ops = (self.local, self.uplink, self.server, self.final, self.sparsifier)
        return per_run_length([self.gamma, self.p, *(getattr(op, a, None) for op in ops for a in ("k", "lam"))])

    @property
    def keeps_zero_sum(self) -> bool:
        """False where ``sum_i h_i`` drifts by design: a dense copy kept beside a pruned uplink
        (SPS-modified) or a server prox before the control-variate update (ASP)."""
        drift_up = self.uplink is not None and self.uplink_keep_dense
        drift_server = self.server is not None and self.server_order == "before_h"
        return not (drift_up or drift_server)

    def can_jump(self, problem, state: State) -> bool:
        """Local phases have a closed form when local steps are plain dense gradient steps."""
        return self.local is None and self.grad_at == "dense" and self._problem_can_jump(problem, state)

    def step(self, state: State, problem, coin) -> State:
        """One iteration of Algorithm 1 for every client (and run).

        ``coin`` is a bool (all runs) or a bool array of the batch shape.
        """
        W, H = state.w, state.h
        gamma = hyper_like(self.gamma, W)
        if self.grad_at == "dense":
            V = gradient_step(problem, W, gamma, state, H)                 # line 6
        else:
            V = W - gamma * (gradient(problem, self.sparsifier.prox(W, gamma), state) - H)
        if self.local is not None:
            V = self.local.prox(V, gamma)                                   # line 7
        return self.finish_step(state, problem, coin, V)

    def finish_step(self, state: State, problem, coin, local) -> State:
        """Lines 8-13 of an iteration whose lines 6-7 gave ``local`` (see :meth:`Algorithm.finish_step`).

        When only some of a batch of runs communicate, lines 9-12 are computed for those runs only.
        """
        xp = B.namespace(state.w)
        H, V = state.h, local
        mask = coin_array(coin, state.batch_shape)
        if not mask.any():
            return state.replace(w=V, t=state.t + 1)                        # line 13
        runs = comm_runs(mask)
        ops = (self.uplink, self.server)
        if runs is not None:
            restricted = tuple(None if op is None else op.take_runs(runs) for op in ops)
            if any(op is not None and r is None for op, r in zip(ops, restricted)):
                runs = None  # an operator that cannot be restricted to some runs: compute for all
            else:
                ops = restricted
        uplink, server = ops
        V, H = take_runs(V, runs), take_runs(H, runs)
        gamma, p = hyper_like(take_runs(self.gamma, runs), V), hyper_like(take_runs(self.p, runs), V)
        step = gamma / p
        U = V if uplink is None else uplink.prox(V, step)                  # line 9
        V_ref = U if (uplink is not None and not self.uplink_keep_dense) else V
        w_bar = self.consensus.mean(U)                                      # line 10
        w_down = w_bar
        if server is not None and self.server_order == "before_h":
            w_down = server.prox(w_bar, step)                               # line 11
        H_new = H + (p / gamma) * (w_down - V_ref)                          # line 12
        if server is not None and self.server_order == "after_h":
            w_down = server.prox(w_bar, step)                               # line 11'
        W_new = xp.broadcast_to(w_down, V.shape)
        acc = self._account(state, mask, [U], [w_down], problem.dim, runs=runs)
        if runs is None:
            merged = dict(w=select_runs(mask, W_new, local), h=select_runs(mask, H_new, state.h),
                          uplink=latest_upload(mask, U, state.uplink))
        else:
            merged = dict(w=merge_runs(mask, W_new, local), h=merge_runs(mask, H_new, state.h),
                          uplink=merge_runs(mask, U, state.uplink))
        return state.replace(t=state.t + 1, **merged, **acc)


def _topk(k, make_topk=TopK):
    op = make_topk(k)
    if not isinstance(op, TopK):
        raise TypeError(f"make_topk must build a TopK, got {type(op).__name__}")
    return op


def proxskip(gamma, p, *, schedule="random", comm=CommModel()) -> Algorithm1:
    """Dense ProxSkip / Scaffnew: local gradient steps with control variates, averaging w.p. ``p``.

    ``v_i = w_i - gamma (grad f_i(w_i) - h_i)``; when the coin is 1,
    ``w_i = mean_j v_j`` and ``h_i += (p/gamma)(w_i - v_i)``; otherwise
    ``w_i = v_i``. With ``gamma = 1/L`` and ``p = 1/sqrt(kappa)`` the
    expected communications are ``O(sqrt(kappa) log(1/eps))``.
    """
    return Algorithm1(gamma, p, schedule=schedule, comm=comm, name="proxskip")


def final_topk(gamma, p, k, *, schedule="random", comm=CommModel(),
               make_topk=TopK) -> Algorithm1:
    """Dense ProxSkip with TopK applied only to the output (and every evaluation)."""
    return Algorithm1(gamma, p, final=_topk(k, make_topk), schedule=schedule, comm=comm, name="final_topk")


def sparse_proxskip(gamma, p, k, *, grad_at="dense", schedule="random", comm=CommModel(),
                    make_topk=TopK) -> Algorithm1:
    """Sparse-ProxSkip (SPS): clients prune before uploading and keep the pruned copy.

    At a communication ``v_i = TopK(v_i)``, the server averages these K-sparse
    uploads, and the control variates are updated against the pruned copies,
    which keeps ``sum_i h_i = 0``.
    """
    return Algorithm1(gamma, p, uplink=_topk(k, make_topk), final=_topk(k, make_topk), grad_at=grad_at, schedule=schedule,
                      comm=comm, name="sparse_proxskip")


def sps_modified(gamma, p, k, *, grad_at="dense", schedule="random", comm=CommModel(),
                 make_topk=TopK) -> Algorithm1:
    """SPS-modified: clients upload ``TopK(v_i)`` but update ``h_i`` against the dense ``v_i``.

    Violates the zero-sum invariant: ``sum_i h_i`` grows by
    ``(p/gamma) sum_i (TopK(v_i) - v_i)`` at every communication.
    """
    return Algorithm1(gamma, p, uplink=_topk(k, make_topk), uplink_keep_dense=True, final=_topk(k, make_topk), grad_at=grad_at,
                      schedule=schedule, comm=comm, name="sps_modified")


def sparse_proxskip_local(gamma, p, k, *, grad_at="dense", schedule="random", comm=CommModel(),
                          make_topk=TopK) -> Algorithm1:
    """Sparse-ProxSkip-Local: TopK after every local step (RandProx with the cardinality prox)."""
    return Algorithm1(gamma, p, local=_topk(k, make_topk), final=_topk(k, make_topk), grad_at=grad_at, schedule=schedule,
                      comm=comm, name="sparse_proxskip_local")


def accelerated_server_pruning(gamma, p, k, *, grad_at="dense", schedule="random", comm=CommModel(),
                               make_topk=TopK) -> Algorithm1:
    """Accelerated-Server-Pruning (ASP): the server prunes the average before the h-update.

    ``w_i = TopK(mean_j v_j)`` and ``h_i += (p/gamma)(w_i - v_i)``; the sum of
    the control variates drifts by ``-(pN/gamma)(w_bar - TopK(w_bar))``.
    """
    return Algorithm1(gamma, p, server=_topk(k, make_topk), server_order="before_h", final=_topk(k, make_topk), grad_at=grad_at,
                      schedule=schedule, comm=comm, name="accelerated_server_pruning")


def asp_modified(gamma, p, k, *, grad_at="dense", schedule="random", comm=CommModel(),
                 make_topk=TopK) -> Algorithm1:
    """ASP-modified: the h-update uses the dense average, then the server prunes (keeps sum h = 0)."""
    return Algorithm1(gamma, p, server=_topk(k, make_topk), server_order="after_h", final=_topk(k, make_topk), grad_at=grad_at,
                      schedule=schedule, comm=comm, name="asp_modified")


def randprox_l1(gamma, p, lam, k=None, *, schedule="random", comm=CommModel(),
                make_topk=TopK) -> Algorithm1:
    """RandProx-l1: soft-thresholding ``Soft(v_i, gamma * lam)`` after every local step.

    Solves ``min (1/N) sum_i f_i(w) + lam ||w||_1``. With ``k`` given, the
    output (and every evaluation) is additionally pruned with TopK(k), as in
    the paper.
    """
    return Algorithm1(gamma, p, local=L1(lam), final=None if k is None else _topk(k, make_topk), schedule=schedule,
                      comm=comm, name="randprox_l1")


def sps_bidirectional(gamma, p, k, *, grad_at="dense", schedule="random", comm=CommModel(),
                      make_topk=TopK) -> Algorithm1:
    """Sparse-ProxSkip-Bidirectional: K-sparse uploads (SPS) and a K-sparse broadcast (ASP-modified order).

    Not a variant of the paper: its Sparse-ProxSkip (line 9) combined with
    the server prune of ASP-modified (line 11 after line 12), so that both
    directions carry at most ``K`` values. At a communication every client
    sets ``u_i = v_i = TopK(v_i)``, the server averages
    ``w_bar = (1/N) sum_i u_i``, the control variates are updated against
    the dense average, ``h_i += (p/gamma)(w_bar - u_i)`` (so
    ``sum_i h_i = 0`` is kept), and the clients receive ``TopK(w_bar)``.
    """
    return Algorithm1(gamma, p, uplink=_topk(k, make_topk), server=_topk(k, make_topk), server_order="after_h",
                      final=_topk(k, make_topk), grad_at=grad_at, schedule=schedule, comm=comm,
                      name="sps_bidirectional")
