"""State, hyperparameter validation and accounting shared by all update rules."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any

import array_api_compat
import numpy as np

from .. import _backend as B
from .._validation import check_int, check_real, check_real_array
from ..comm import CommModel
from ..problems.capabilities import (
    has_closed_form_steps,
    has_fused_gradient_step,
    is_stochastic,
    returns_fresh_gradients,
)
from ..prox import Consensus, TopK
from .accounting import TALLIES, message_tallies  # noqa: F401  (TALLIES re-exported)
from .batching import (  # noqa: F401  (re-exported: the rules and drivers import them from here)
    coin_array,
    comm_runs,
    hyper_like,
    latest_upload,
    merge_runs,
    per_run_length,
    select_runs,
    seeds_and_keys,
    take_runs,
)

__all__ = ["State", "Algorithm", "FixedSchedule"]


@dataclass(frozen=True)
class State:
    """Explicit state of a federated update rule.

    Attributes
    ----------
    w : array, shape (..., N, d)
        Client iterates (leading run axis for batched runs).
    h : array, shape (..., N, d)
        Control variates (zeros for rules without them).
    t : int
        Iterations (local steps) done.
    communications : ndarray of int, shape (...)
        Communication rounds done, per run.
    bits_up, bits_down : ndarray of int, shape (..., N)
        Cumulative uplink / downlink bits per client. These and ``values_up``
        and ``upload_nnz`` are NumPy arrays, except between the steps of a run
        on a device, where they stay on the iterates' device
        (:meth:`with_host_tallies`; the run loops return host arrays).
    values_up : ndarray of int, shape (..., N)
        Cumulative number of uploaded non-zero values per client.
    upload_nnz : ndarray of int, shape (..., N)
        Non-zeros of each client's most recent upload (0 before the first).
    uplink : array or None
        Each run's most recent uploaded messages ``(..., N, d)`` (for
        inspection; zeros for a run that has not communicated yet, None
        before any run has).
    extras : dict
        Rule-specific arrays (e.g. SCAFFOLD's control variates).
    seed : int, tuple of int or None
        The seed :func:`proxfed.run` ran this state with (None for a state
        from :meth:`Algorithm.init`); a run resumed from it must use the same.
    stretch : tuple (int, array) or None
        ``(t0, w0)``: where :func:`proxfed.run`, jumping over coin-free
        stretches in closed form, began the stretch that ``w`` lies in (the
        iteration and the client iterates there); None outside one. A run
        resumed from this state continues that stretch from ``(t0, w0)``, as
        the uninterrupted run does, so the two are the same bit for bit.
    """

    w: Any
    h: Any
    t: int = 0
    communications: np.ndarray = field(default_factory=lambda: np.zeros((), np.int64))
    bits_up: np.ndarray | None = None
    bits_down: np.ndarray | None = None
    values_up: np.ndarray | None = None
    upload_nnz: np.ndarray | None = None
    uplink: Any = None
    extras: dict = field(default_factory=dict)
    seed: Any = None
    stretch: Any = None

    @property
    def batch_shape(self) -> tuple:
        """Leading run axes of ``w`` (``()`` for a single run)."""
        return tuple(self.w.shape[:-2])

    def replace(self, **changes) -> "State":
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def with_host_tallies(self) -> "State":
        """This state with its bit tallies as NumPy int64 arrays (they stay on the device during a run)."""
        moved = {n: np.asarray(B.to_numpy(getattr(self, n)), np.int64) for n in TALLIES
                 if getattr(self, n) is not None and not isinstance(getattr(self, n), np.ndarray)}
        return self.replace(**moved) if moved else self

    def with_device_tallies(self, like) -> "State":
        """This state with its bit tallies on the array library and device of ``like`` (host ones moved once)."""
        moved = {n: B.from_numpy(np.asarray(getattr(self, n), np.int64), like=like) for n in TALLIES
                 if isinstance(getattr(self, n), np.ndarray)}
        return self.replace(**moved) if moved else self


def check_positive(value, name: str):
    """A finite positive real scalar or 1-d array (no strings or booleans; see :mod:`proxfed._validation`)."""
    return check_real(value, name, low=0.0, low_open=True, per_run=True)


def check_probability(value, name: str = "p"):
    """A probability in (0, 1], scalar or 1-d array."""
    return check_real(value, name, low=0.0, low_open=True, high=1.0, per_run=True)


def check_count(value, name: str):
    """An integer >= 1, scalar or 1-d array."""
    return check_int(value, name, minimum=1, per_run=True)


class Algorithm:
    """Base of the update rules: ``init``/``step`` over an explicit :class:`State`.

    Subclasses set ``gamma``, ``p`` (communication probability, or
    ``1/local_steps`` for a fixed schedule), ``schedule``, ``final`` (prox
    applied to the averaged model at output) and implement :meth:`step`.
    """

    name = "algorithm"
    gamma: Any = None
    p: Any = None
    schedule: str = "random"
    final = None
    comm: CommModel = CommModel()
    consensus = Consensus()

    # -- hyperparameters -----------------------------------------------------------
    def _hyper(self) -> dict:
        return {"gamma": self.gamma, "p": self.p}

    @property
    def n_runs(self) -> int | None:
        """R if any hyperparameter is a per-run array, else None."""
        final_k = self.final.k if isinstance(self.final, TopK) else None
        return per_run_length([*self._hyper().values(), final_k])

    def config(self) -> dict:
        """Everything needed to rebuild this rule (JSON-serializable)."""
        out = {"name": self.name, "schedule": self.schedule}
        for k, v in self._hyper().items():
            out[k] = v.tolist() if isinstance(v, np.ndarray) else v
        out["comm"] = {"value_bits": self.comm.value_bits, "index": self.comm.index}
        return out

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")
        return f"{self.name}({args})"

    # -- state -----------------------------------------------------------------------
    def init(self, problem, w0=None, h0=None) -> State:
        """Initial state: every client at ``w0``, control variates ``h0`` (default 0).

        Parameters
        ----------
        problem : FederatedProblem
        w0 : array, shape (d,) or (R, d), optional
            Starting model (default zeros, as a NumPy array). Its array
            library and device are those of the whole run.
        h0 : array, shape (..., N, d), optional
            Initial control variates; must sum to zero over clients (to
            rounding), as the zero-sum invariant requires.
        """
        d, N = problem.dim, problem.n_clients
        R = self.n_runs
        if w0 is None:
            w0 = np.zeros((R, d) if R else (d,))
        if not hasattr(w0, "shape"):  # a list of numbers (not strings or booleans, which NumPy would convert)
            w0 = check_real_array(w0, "w0")
        xp = B.namespace(w0)
        if not xp.isdtype(w0.dtype, "real floating"):
            raise TypeError(f"w0 must have a real floating dtype, got {w0.dtype}")
        if w0.ndim not in (1, 2) or w0.shape[-1] != d:
            raise ValueError(f"w0 must have shape ({d},) or (R, {d}), got {tuple(w0.shape)}")
        if R and w0.ndim == 1:
            w0 = xp.broadcast_to(w0, (R, d))
        if R and w0.shape[0] != R:
            raise ValueError(f"w0 has {w0.shape[0]} runs but the hyperparameters have {R}")
        if not bool(xp.all(xp.isfinite(w0))):
            raise ValueError("w0 contains NaN or inf")
        shape = tuple(w0.shape[:-1]) + (N, d)
        W = xp.broadcast_to(w0[..., None, :], shape) * 1  # a fresh, writable array
        if h0 is None:
            H = xp.zeros(shape, dtype=W.dtype, device=B.device_of(W))
        else:
            _check_control_variates(h0, shape, "h0", zero_sum=True)
            H = h0
        batch = shape[:-2]
        zeros = lambda: np.zeros(batch + (N,), np.int64)  # noqa: E731
        return State(
            w=W, h=H, t=0, communications=np.zeros(batch, np.int64),
            bits_up=zeros(), bits_down=zeros(), values_up=zeros(), upload_nnz=zeros(),
            extras=self._init_extras(problem, W),
        )

    def _init_extras(self, problem, W) -> dict:
        return {}

    @property
    def deterministic(self) -> bool:
        """Whether a run's trajectory is a function of its start and hyperparameters alone.

        True for the fixed schedule, which draws no coins from the seed; rules
        with other draws of their own say False. Batched runs of a
        deterministic rule with equal hyperparameters from one start, on a
        problem with exact gradients, are one run repeated, whatever their seeds.
        """
        return self.schedule == "fixed"

    @property
    def keeps_zero_sum(self) -> bool:
        """Whether the rule keeps ``sum_i h_i = 0`` (to rounding); rules that let it drift say False."""
        return True

    def check_state(self, problem, state: State) -> State:
        """Check a state to continue from as :meth:`init` checks its input, before any work.

        ``w`` and ``h`` must be real floating arrays of one shape ``(..., N, d)``
        for the problem's ``N`` and ``d`` (and this rule's number of runs),
        finite, with ``sum_i h_i = 0`` to rounding when the rule keeps that
        invariant (:attr:`keeps_zero_sum`); ``t`` a non-negative integer and
        the accounting integer arrays of the batch shape.

        Parameters
        ----------
        problem : FederatedProblem
        state : State

        Returns
        -------
        State
            ``state``.

        Raises
        ------
        TypeError
            If ``state`` is not a :class:`State` or a field has the wrong type.
        ValueError
            If a shape, a value or the zero-sum invariant is wrong (the field is named).
        """
        if not isinstance(state, State):
            raise TypeError(f"state must be a proxfed State, got {type(state).__name__}")
        N, d = problem.n_clients, problem.dim
        w = state.w
        if not hasattr(w, "shape") or not hasattr(w, "dtype"):
            raise TypeError(f"state.w must be an array, got {type(w).__name__}")
        xp = B.namespace(w)
        if not xp.isdtype(w.dtype, "real floating"):
            raise TypeError(f"state.w must have a real floating dtype, got {w.dtype}")
        shape = tuple(w.shape)
        if len(shape) < 2 or shape[-2:] != (N, d):
            raise ValueError(f"state.w must have shape (..., {N}, {d}) for this problem, got {shape}")
        R = self.n_runs
        if R is not None and shape[:-2] != (R,):
            raise ValueError(f"state.w has batch shape {shape[:-2]} but the hyperparameters have {R} runs")
        if not bool(xp.all(xp.isfinite(w))):
            raise ValueError("state.w contains NaN or inf")
        if not hasattr(state.h, "shape") or B.namespace(state.h) is not xp or state.h.dtype != w.dtype:
            raise TypeError("state.h must be an array of the same library and dtype as state.w")
        _check_control_variates(state.h, shape, "state.h", zero_sum=self.keeps_zero_sum)
        if isinstance(state.t, bool) or not isinstance(state.t, numbers.Integral) or state.t < 0:
            raise ValueError(f"state.t must be a non-negative integer, got {state.t!r}")
        batch = shape[:-2]
        wants = {"communications": batch, "bits_up": batch + (N,), "bits_down": batch + (N,),
                 "values_up": batch + (N,), "upload_nnz": batch + (N,)}
        for name, want in wants.items():
            a = getattr(state, name)
            if not isinstance(a, (np.ndarray, np.integer)) or a.dtype.kind not in "iu" or a.shape != want or \
                    np.any(a < 0):
                raise ValueError(f"state.{name} must be a non-negative integer ndarray of shape {want}, got "
                                 f"{getattr(a, 'dtype', type(a).__name__)} of shape {np.shape(a)}")
        return state

    def step(self, state: State, problem, coin) -> State:  # pragma: no cover - abstract
        """One iteration of every client; communicate where ``coin`` is true."""
        raise NotImplementedError

    def finish_step(self, state: State, problem, coin, local) -> State:
        """The rest of an iteration once the clients' local update ``local`` is known.

        ``step(state, problem, coin)`` is ``finish_step(state, problem, coin,
        V)`` with ``V`` this iteration's local iterates (the gradient step and
        any per-step prox). Rules with :meth:`can_jump` implement it, so that
        :func:`proxfed.run_rounds` can hand over the end of a closed-form
        local phase that already includes the round's last gradient step.
        """
        raise NotImplementedError(f"{self.name} has no finish_step")

    def can_jump(self, problem, state: State) -> bool:
        """Whether :meth:`local_phase` may replace explicit steps (False unless a rule says so)."""
        return False

    def local_phase(self, state: State, problem, k: int) -> State:
        """``k`` local steps without communication at once (``problem.local_steps`` closed form).

        Only valid where :meth:`can_jump` is true: dense local steps
        ``w_i <- w_i - gamma (grad f_i(w_i) - h_i)`` with the control variates fixed.
        """
        if not self.can_jump(problem, state):
            raise ValueError(f"{self.name} cannot jump over local steps on this problem")
        w = problem.local_steps(state.w, state.h, self.gamma, k)
        return state.replace(w=w, t=state.t + int(k))

    @staticmethod
    def _problem_can_jump(problem, state: State) -> bool:
        return (not is_stochastic(problem) and has_closed_form_steps(problem)
                and problem.supports_local_steps(state.w))

    def output(self, state: State):
        """The model to evaluate, ``final.prox(mean_i w_i)``, of shape (..., d)."""
        wbar = self.consensus.mean(state.w)[..., 0, :]
        return wbar if self.final is None else self.final.prox(wbar, 1.0)

    # -- coins -----------------------------------------------------------------------
    def local_steps(self):
        """Steps between communications for the fixed schedule (``round(1/p)``)."""
        return np.maximum(1, np.rint(1.0 / np.asarray(self.p))).astype(np.int64)

    def coins(self, iterations: int, seed=0, runs: int | None = None, start: int = 0) -> np.ndarray:
        """The communication coins from ``theta_start`` to ``theta_{start+iterations-1}``.

        Random schedule: iid Bernoulli(p) from the stream keyed by the seed and
        run index (:func:`proxfed._backend.coin_flips`). Fixed schedule:
        communicate at the end of every block of ``round(1/p)`` steps.

        Parameters
        ----------
        iterations : int
        seed : int or sequence of int
            One seed for all runs (run ``r`` uses stream ``(seed, r)``) or one
            per run (run ``r`` uses stream ``(seed[r], 0)``, so a batched run
            reproduces the corresponding single run).
        runs : int, optional
            Number of batched runs R; the result then has shape (R, iterations).
        start : int
            Index of the first coin (for resuming).
        """
        if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral) or iterations < 0:
            raise ValueError(f"iterations must be a non-negative integer, got {iterations!r}")
        seeds, keys = seeds_and_keys(seed, runs)
        p = np.broadcast_to(np.asarray(self.p, dtype=np.float64), (len(seeds),))
        if self.schedule == "fixed":
            k = np.broadcast_to(self.local_steps(), (len(seeds),))
            t = np.arange(start, start + iterations)
            out = (t[None, :] + 1) % k[:, None] == 0
        else:
            out = np.stack([B.coin_flips(s, float(q), iterations, run=r, start=start) for s, r, q in zip(seeds, keys, p)])
        return out if runs is not None else out[0]

    # -- accounting ------------------------------------------------------------------
    def _account(self, state: State, coin_mask: np.ndarray, sent_up, sent_down, d: int, runs=None) -> dict:
        """Bit tallies after a communication where ``coin_mask`` is true: :func:`.accounting.message_tallies`."""
        return message_tallies(self.comm, state, coin_mask, sent_up, sent_down, d, runs)


class FixedSchedule(Algorithm):
    """Base of the rules that communicate every ``local_steps`` iterations (``p = 1/local_steps``).

    Parameters
    ----------
    gamma : float or array (R,)
        Local stepsize.
    local_steps : int or array (R,)
        Local steps between communications.
    comm : CommModel
        How messages are priced.
    """

    schedule = "fixed"

    def __init__(self, gamma, local_steps, comm: CommModel):
        self.gamma = check_positive(gamma, "gamma")
        self.n_local = check_count(local_steps, "local_steps")
        if not isinstance(comm, CommModel):
            raise TypeError("comm must be a CommModel")
        self.comm = comm

    @property
    def p(self):
        """``1 / local_steps``."""
        return 1.0 / self.n_local

    def local_steps(self):
        """Steps between communications."""
        return self.n_local

    def _hyper(self) -> dict:
        return {"gamma": self.gamma, "local_steps": self.n_local}


def _check_control_variates(h, shape: tuple, name: str, zero_sum: bool) -> None:
    """``h`` of ``shape``, finite, and (``zero_sum``) summing to zero over clients to rounding.

    The tolerance is relative to ``N max |h_i|`` (at least 1): ``1e-8`` in float64,
    ``1000 eps`` in lower precision (rounding accumulates over a long run).
    """
    if not hasattr(h, "shape"):
        raise TypeError(f"{name} must be an array, got {type(h).__name__}")
    if tuple(h.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(h.shape)}")
    xp = B.namespace(h)
    if not bool(xp.all(xp.isfinite(h))):
        raise ValueError(f"{name} contains NaN or inf")
    if not zero_sum:
        return
    total = float(B.to_numpy(xp.max(xp.abs(xp.sum(h, axis=-2)))))
    scale = float(B.to_numpy(xp.max(xp.abs(h)))) * shape[-2]
    rel = max(1e-8, 1e3 * float(xp.finfo(h.dtype).eps))
    if total > rel * max(scale, 1.0):
        raise ValueError(f"{name} must sum to zero over clients (max |sum_i h_i| = {total:.3e}, "
                         f"tolerance {rel * max(scale, 1.0):.1e})")


def gradient(problem, W, state: State):
    """The gradient oracle: ``problem.grad(W)``, or ``problem.grad(W, step=state.t)`` for stochastic problems.

    A problem with ``stochastic = True`` draws its minibatches from streams keyed
    by the iteration (and its own seed, run and client), so a resumed run sees
    the same minibatches.
    """
    if is_stochastic(problem):
        return problem.grad(W, step=state.t)
    return problem.grad(W)


def gradient_step(problem, W, gamma, state: State, H=None):
    """``W - gamma (grad f_i(W) - H)`` (``W - gamma grad f_i(W)`` without ``H``): the problem's own
    (possibly fused) :meth:`~proxfed.problems.FederatedProblem.gradient_step`, or the plain
    expression around :func:`gradient` for stochastic problems and those without one."""
    if is_stochastic(problem) or not has_fused_gradient_step(problem):
        G = gradient(problem, W, state)
        if _fresh_torch_gradient(problem, G, W, H, gamma):  # in place on the fresh gradient: the same
            if H is not None:                                 # roundings, two (N, P) temporaries fewer
                G.sub_(H)
            return W - G.mul_(gamma)
        return W - gamma * (G if H is None else G - H)
    return problem.gradient_step(W, gamma, H)


def _fresh_torch_gradient(problem, G, W, H, gamma) -> bool:
    """Whether ``G`` may be overwritten: a torch gradient the problem returns as a new tensor
    (``grad_is_fresh``), not an alias of ``W`` or ``H``, and a ``gamma`` torch can multiply in place."""
    if not (returns_fresh_gradients(problem) and array_api_compat.is_torch_array(G)):
        return False
    if G is W or G is H or G.requires_grad:
        return False
    if isinstance(gamma, (int, float)):
        return True
    return (array_api_compat.is_torch_array(gamma) and gamma.dtype == G.dtype and gamma.device == G.device
            and tuple(np.broadcast_shapes(tuple(gamma.shape), tuple(G.shape))) == tuple(G.shape))
