r"""FLASH (Babakniya et al., 2023): sparse federated training with a mask consensus.

Density ``delta`` over the maskable coordinates (:class:`~proxfed.algorithms.rounds.Layers`,
e.g. the convolution weights of a network; the rest is always dense); layer
budgets ``k_l = n_l - round((1 - delta) n_l)``. Clients train under a mask
(``y_i <- m_i * (y_i - gamma grad f_i(y_i))``: masked weights stay exactly 0).

* **Client DST** (:func:`dst_step`): every ``dst_every`` local steps of a round
  (not after its last one, so regrown weights train before the upload), in every
  layer, the ``floor(rate * active)`` active weights of smallest ``|w|`` are
  pruned and as many inactive positions (inactive before this step) are
  regrown at random with value 0, so each layer keeps its density exactly;
  with ``redistribute=True`` the regrown total is spread over the layers in
  proportion to their mean ``|w|`` (densities move, the total stays).
  ``rate = dst_rate (1 - (t - 1)/T)`` in round ``t`` (linear decay to 0).
* **PDST**: a fixed random mask with the layer budgets; FedAvg under it.
* **SPDST**: round 1 is FLASH's stage 1: ``ceil(stage1_fraction N)`` clients
  (seeded) run DST with redistribution from a random mask of density
  ``delta`` and upload their per-layer densities (one value per layer); the
  server averages them, rescales them to the budget (clipped at 1, the excess
  spread over the other layers), draws a random mask with those per-layer
  counts and restarts from the initial model under it; then PDST.
* **JMWST**: stage 1 as SPDST; each later round the clients run DST from the
  server mask and upload their weights on their masks; the server averages
  (sample-weighted, zeros included) and, every ``mask_update_every`` rounds,
  sets the mask of every layer to the top-``k_l`` ``|x|`` of the average. The
  average is always re-masked before it is evaluated or sent.
* **hetero-FLASH** (``levels``, e.g. ``(0.5, 0.75, 1.0)``): client ``i`` has
  budget ``levels[client_levels[i]] * delta``; the server keeps one nested
  mask per level (per layer the top ``round(f k_l)`` of the same ranking) and
  sends each client the model under its level's mask.

Masks are chosen on the host (NumPy) and moved back to the iterates' array
library: once per DST step and once per round. Accounting: participants
upload their weights on their masks (stage 1: one density per layer) and
the next round's participants download the model under their level's
mask; a mask is priced (the :class:`~proxfed.comm.CommModel` index model)
with an upload whose mask DST moved, and with a download whose mask the
client does not hold yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import check_positive_int, check_real
from ..comm import CommModel
from ..prox import sparsity_to_k
from .base import State, coin_array, gradient_step, hyper_like, latest_upload, select_runs
from .rounds import MASK_STREAM, Layers, RoundBased, RoundExtras, as_layers

__all__ = [
    "Flash",
    "pdst",
    "spdst",
    "jmwst",
    "hetero_flash",
    "dst_step",
    "layer_budgets",
    "rescale_densities",
]

MODES = ("pdst", "spdst", "jmwst")


def layer_budgets(layers: Layers, density: float) -> np.ndarray:
    """``k_l = n_l - round((1 - density) n_l)`` kept entries of every layer (at least 1)."""
    return np.array([sparsity_to_k(int(n), 1.0 - density) for n in layers.sizes], np.int64)


def _largest_remainder(raw: np.ndarray, total: int, cap: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """Integers ``floor <= c <= cap`` close to ``raw`` with ``sum c = total`` (largest remainders first)."""
    c = np.clip(np.floor(raw).astype(np.int64), floor, cap)
    order = np.argsort(-(raw - np.floor(raw)), kind="stable")
    while c.sum() != total:
        step = 1 if c.sum() < total else -1
        moved = False
        for j in order if step > 0 else order[::-1]:
            if (step > 0 and c[j] < cap[j]) or (step < 0 and c[j] > floor[j]):
                c[j] += step
                moved = True
                if c.sum() == total:
                    break
        if not moved:
            raise ValueError("the counts cannot meet the total within their bounds")
    return c


def rescale_densities(densities, sizes, density: float) -> np.ndarray:
    """Per-layer counts with the shape of ``densities`` and the budget of ``density`` (SPDST).

    The densities are scaled by one factor so that the total count is the
    budget ``sum_l k_l``; layers that would exceed density 1 are clipped at 1
    and the excess goes to the others (in proportion); counts are rounded by
    largest remainders, at least 1 per layer.
    """
    rho = np.asarray(densities, np.float64)
    sizes = np.asarray(sizes, np.int64)
    total = int(sum(sparsity_to_k(int(n), 1.0 - density) for n in sizes))
    if rho.shape != sizes.shape or np.any(rho < 0) or not np.all(np.isfinite(rho)):
        raise ValueError("densities must be finite, non-negative and one per layer")
    if rho.sum() == 0:
        rho = np.ones_like(rho)
    clipped = np.zeros(rho.shape, bool)
    dens = rho.copy()
    for _ in range(len(rho) + 1):
        free = total - sizes[clipped].sum()
        scale = free / max(float((rho[~clipped] * sizes[~clipped]).sum()), 1e-300)
        dens = np.where(clipped, 1.0, rho * scale)
        over = (dens > 1) & ~clipped
        if not over.any():
            break
        clipped |= over
    return _largest_remainder(np.minimum(dens, 1.0) * sizes, total, sizes, np.ones_like(sizes))


def dst_step(w: np.ndarray, mask: np.ndarray, layers: Layers, rate: float, gen: np.random.Generator,
             redistribute: bool = False):
    """One prune-and-regrow step of dynamic sparse training (NumPy, one client).

    Parameters
    ----------
    w : ndarray, shape (d,)
        Weights (zero outside ``mask``).
    mask : ndarray of bool, shape (d,)
    layers : Layers
    rate : float
        Fraction of every layer's active weights pruned (``floor``).
    gen : numpy.random.Generator
        Regrowth positions.
    redistribute : bool
        Spread the regrown total over layers by the mean ``|w|`` of their
        active weights instead of regrowing every layer's own count (the
        pruned total is capped by the inactive positions, so the total stays).

    Returns
    -------
    (w, mask) : new arrays; pruned and regrown positions hold 0.

    Examples
    --------
    >>> lay = Layers.whole(6)
    >>> w = np.array([0.1, -3.0, 0.0, 2.0, 0.0, 0.5]); m = w != 0
    >>> w2, m2 = dst_step(w, m, lay, 0.5, np.random.default_rng(0))
    >>> int(m2.sum()), w2[1], w2[3], bool(m2[0] or m2[5])
    (4, np.float64(-3.0), np.float64(2.0), False)
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate!r}")
    w, mask = np.array(w), np.array(mask, bool)
    pruned, candidates, keep_mean = [], [], []
    for a, b in layers.segments:
        active = np.flatnonzero(mask[a:b]) + a
        inactive = np.flatnonzero(~mask[a:b]) + a
        n = int(math.floor(rate * active.size))
        if not redistribute:
            n = min(n, inactive.size)  # the layer must be able to regrow what it prunes
        order = np.lexsort((active, np.abs(w[active])))  # smallest |w| first, ties to the lowest index
        pruned.append(active[order[:n]])
        candidates.append(inactive)
        keep_mean.append(float(np.abs(w[active]).mean()) if active.size else 0.0)
    counts = np.array([p.size for p in pruned], np.int64)
    n_inactive = sum(c.size for c in candidates)
    if redistribute and counts.sum() > n_inactive:  # prune no more than can be regrown: the total stays
        keep_n = _largest_remainder(counts * (n_inactive / counts.sum()), n_inactive, counts, np.zeros_like(counts))
        pruned = [p[:n] for p, n in zip(pruned, keep_n)]  # each p is ordered smallest |w| first
        counts = keep_n
    if redistribute and counts.sum():
        share = np.asarray(keep_mean)
        share = share / share.sum() if share.sum() > 0 else np.full(len(share), 1.0 / len(share))
        cap = np.array([c.size for c in candidates], np.int64)
        total = int(counts.sum())
        counts = _largest_remainder(share * total, total, cap, np.zeros_like(cap))
    for p, cand, g in zip(pruned, candidates, counts):
        mask[p] = False
        w[p] = 0.0
        grow = gen.choice(cand, int(g), replace=False) if g else np.empty(0, np.int64)
        mask[grow] = True
        w[grow] = 0.0
    return w, mask


def _nested_masks(scores: np.ndarray, counts: np.ndarray, layers: Layers) -> np.ndarray:
    """Per layer the top ``counts[j, l]`` of ``scores`` (ties to the lowest index): bool ``(J, d)``."""
    out = np.zeros((counts.shape[0], layers.d), bool)
    out[:, ~layers.maskable] = True
    for l, (a, b) in enumerate(layers.segments):
        order = np.lexsort((np.arange(b - a), -scores[a:b])) + a
        for j in range(counts.shape[0]):
            out[j, order[:counts[j, l]]] = True
    return out


@dataclass(frozen=True)
class FlashExtras(RoundExtras):
    """FLASH's ``State.extras``: server model ``x`` (``..., 1, d``), the levels' masks ``level_mask``
    (``..., levels, d``; the last is the server's), each client's mask ``client_mask`` (``..., N, d``),
    mask versions, and the initial model ``w_init`` (``..., 1, d``; not with PDST)."""

    x: Any
    level_mask: Any
    client_mask: Any
    mask_version: Any
    known_version: Any
    w_init: Any = None


class Flash(RoundBased):
    """FLASH's sparse training methods (PDST, SPDST, JMWST, hetero-FLASH); see the module docstring.

    Parameters
    ----------
    gamma : float or array (R,)
    local_steps : int or array (R,)
    density : float
        ``delta`` in (0, 1].
    rounds : int
        ``T`` (rounds, stage 1 included).
    mode : {"pdst", "spdst", "jmwst"}
    layers : Layers or sequence of (start, stop), optional
        Maskable segments (default: the whole vector, one layer).
    dst_rate : float
        Initial prune-and-regrow rate (0.25).
    dst_every : int, optional
        Local steps between DST steps within a round (default ``ceil(E/2)``);
        see :meth:`dst_due`.
    mask_update_every : int
        JMWST: rounds between server mask updates (``r``).
    stage1_fraction : float
        Fraction of the clients that run stage 1 (SPDST and JMWST).
    levels : sequence of float
        Budget fractions of the hetero levels, increasing, the last 1.0.
    client_levels : sequence of int, optional
        Level of every client (default ``i mod len(levels)``).
    clients_per_round : int, optional
    seed : int
        Participants, stage-1 clients, random masks and regrowth.
    weighting : {"samples", "uniform"}
    comm : CommModel
    name : str, optional
    """

    def __init__(self, gamma, local_steps, density, rounds, *, mode: str = "jmwst", layers=None,
                 dst_rate: float = 0.25, dst_every=None, mask_update_every: int = 1, stage1_fraction: float = 0.2,
                 levels=(1.0,), client_levels=None, clients_per_round=None, seed: int = 0,
                 weighting: str = "samples", comm: CommModel = CommModel(), name: str | None = None):
        super().__init__(gamma, local_steps, rounds, clients_per_round=clients_per_round, seed=seed,
                         weighting=weighting, comm=comm)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        density = check_real(density, "density", low=0.0, low_open=True, high=1.0)
        dst_rate = check_real(dst_rate, "dst_rate", low=0.0, high=1.0)
        stage1_fraction = check_real(stage1_fraction, "stage1_fraction", low=0.0, low_open=True, high=1.0)
        check_positive_int(mask_update_every, "mask_update_every")
        lv = np.asarray(levels, np.float64)
        if lv.ndim != 1 or lv.size == 0 or np.any(np.diff(lv) <= 0) or lv[0] <= 0 or lv[-1] != 1.0:
            raise ValueError(f"levels must increase in (0, 1] and end with 1.0, got {levels!r}")
        if lv.size > 1 and mode != "jmwst":
            raise ValueError("hetero levels are a JMWST option (the server masks follow the averaged weights)")
        if dst_every is not None:
            check_positive_int(dst_every, "dst_every", hint=" or None")
        self.dst_every = dst_every
        self.density, self.mode, self.layers = float(density), mode, layers
        self.dst_rate, self.mask_update_every = float(dst_rate), int(mask_update_every)
        self.stage1_fraction, self.levels = float(stage1_fraction), lv
        self.client_levels = None if client_levels is None else np.asarray(client_levels, np.int64)
        if self.client_levels is not None and (self.client_levels.ndim != 1 or np.any(self.client_levels < 0)
                                               or np.any(self.client_levels >= lv.size)):
            raise ValueError(f"client_levels must be level indices in [0, {lv.size}), one per client")
        self.name = name or (mode if lv.size == 1 else "hetero_flash")
        self.n_runs

    def _hyper(self) -> dict:
        layers = self.layers.segments if isinstance(self.layers, Layers) else self.layers
        return {**super()._hyper(), "density": self.density, "mode": self.mode, "dst_rate": self.dst_rate,
                "dst_every": self.dst_every, "mask_update_every": self.mask_update_every,
                "stage1_fraction": self.stage1_fraction, "levels": self.levels.tolist(),
                "layers": None if layers is None else [list(map(int, seg)) for seg in layers],
                "client_levels": None if self.client_levels is None else self.client_levels.tolist()}

    # -- bookkeeping ---------------------------------------------------------------------
    def _layers_for(self, d: int) -> Layers:
        return as_layers(self.layers, d)

    def levels_of(self, n_clients: int) -> np.ndarray:
        """The level index of every client."""
        if self.client_levels is None:
            return np.arange(n_clients) % self.levels.size
        if self.client_levels.size != n_clients:
            raise ValueError(f"client_levels has {self.client_levels.size} entries for {n_clients} clients")
        return self.client_levels

    def level_counts(self, budgets: np.ndarray) -> np.ndarray:
        """Per level and layer the kept counts ``max(1, round(f k_l))``: shape ``(J, n_layers)``."""
        return np.maximum(1, np.rint(self.levels[:, None] * budgets[None, :]).astype(np.int64))

    def stage1_clients(self, n_clients: int, run: int) -> np.ndarray:
        """The clients of stage 1 in run ``run``: ``ceil(stage1_fraction N)`` drawn from ``rng(seed, run, 1, MASK_STREAM)``."""
        m = max(1, math.ceil(self.stage1_fraction * n_clients))
        out = np.zeros(n_clients, bool)
        out[B.rng(self.seed, run, 1, MASK_STREAM).choice(n_clients, m, replace=False)] = True
        return out

    def _participants(self, round_: int, n_clients: int, run: int) -> np.ndarray:
        if round_ == 1 and self.mode != "pdst":
            return self.stage1_clients(n_clients, run)
        return super()._participants(round_, n_clients, run)

    # -- state ---------------------------------------------------------------------------
    def init(self, problem, w0=None, h0=None) -> State:
        """Every client at ``w0`` under its level's random mask with the layer budgets."""
        st = super().init(problem, w0, h0)
        xp = B.namespace(st.w)
        lay = self._layers_for(problem.dim)
        budgets = self.level_counts(layer_budgets(lay, self.density))
        lvl = self.levels_of(problem.n_clients)
        batch = st.batch_shape
        level_masks = np.zeros(batch + (self.levels.size, problem.dim), bool)
        for flat, idx in enumerate(self._runs(batch)):
            scores = B.rng(self.seed, flat, 0, MASK_STREAM).random(problem.dim)
            level_masks[idx] = _nested_masks(scores, budgets, lay)
        lm = B.from_numpy(level_masks, like=st.w)
        client_mask = B.from_numpy(level_masks[..., lvl, :], like=st.w)
        w_init = self.consensus.mean(st.w)
        zeros = xp.zeros_like(st.w)
        extras = FlashExtras(x=xp.where(lm[..., -1:, :], w_init, zeros[..., :1, :]), level_mask=lm,
                             client_mask=client_mask, **self._version_extras(batch, problem.n_clients),
                             w_init=None if self.mode == "pdst" else w_init)
        return st.replace(w=xp.where(client_mask, st.w, zeros), extras=extras.to_extras())

    def mask(self, state: State):
        """The server mask (top level) of shape ``(..., 1, d)``."""
        return state.extras["level_mask"][..., -1:, :]

    # -- the update ----------------------------------------------------------------------
    def _dst_rate(self, round_: int) -> float:
        return self.dst_rate * max(0.0, 1.0 - (round_ - 1) / self.rounds)

    def dst_due(self, t: int, batch: tuple) -> np.ndarray:
        """Whether local step ``t`` (0-based) ends with a DST step, per run.

        With ``E`` local steps per round, local step ``j = t mod E`` of the
        round is followed by a DST step when ``(j + 1)`` is a multiple of
        ``dst_every`` and ``j + 1 < E`` (regrown weights then train before the
        upload); ``dst_every`` defaults to ``ceil(E / 2)`` (one DST step in
        the middle of every round). With ``E = 1`` the step ends the round.
        """
        E = np.broadcast_to(np.asarray(self.n_local, np.int64), batch)
        every = np.maximum(1, -(-E // 2)) if self.dst_every is None else np.broadcast_to(self.dst_every, batch)
        j1 = t % E + 1
        return (j1 % every == 0) & ((j1 < E) | (E == 1))

    def _client_dst(self, state: State, V, problem, rounds_now: np.ndarray):
        """DST steps of the participants whose run is due at this iteration (host)."""
        due = self.dst_due(state.t, rounds_now.shape)
        stage1 = rounds_now == 1 if self.mode != "pdst" else np.zeros(rounds_now.shape, bool)
        active = due & (stage1 | (self.mode == "jmwst"))
        if not active.any():
            return V, state.extras["client_mask"]
        lay = self._layers_for(problem.dim)
        Vn, Mn = np.array(B.to_numpy(V)), np.array(B.to_numpy(state.extras["client_mask"]))
        for flat, idx in enumerate(self._runs(rounds_now.shape)):
            if not active[idx]:
                continue
            r = int(rounds_now[idx])
            part = self._participants(r, problem.n_clients, flat)
            rate = self.dst_rate if stage1[idx] else self._dst_rate(r)
            for i in np.flatnonzero(part):
                gen = B.rng(self.seed, flat, r, int(i), state.t + 1, MASK_STREAM)
                Vn[idx + (i,)], Mn[idx + (i,)] = dst_step(Vn[idx + (i,)], Mn[idx + (i,)], lay, rate, gen,
                                                          redistribute=bool(stage1[idx]))
        return B.from_numpy(Vn, like=V, dtype=V.dtype), B.from_numpy(Mn, like=V)

    def step(self, state: State, problem, coin) -> State:
        """One masked local step (and the due DST steps); the FLASH round update where ``coin`` is true."""
        xp = B.namespace(state.w)
        W, ex = state.w, FlashExtras.from_extras(state.extras)
        V = gradient_step(problem, W, hyper_like(self.gamma, W), state)
        V = xp.where(ex.client_mask, V, xp.zeros_like(V))
        rounds_now = state.communications + 1
        V, client_mask = self._client_dst(state, V, problem, rounds_now)
        on = coin_array(coin, state.batch_shape)
        if not on.any():
            return state.replace(w=V, t=state.t + 1,
                                 extras=replace(ex, client_mask=client_mask).to_extras(state.extras))
        N, d = problem.n_clients, problem.dim
        lay = self._layers_for(d)
        lvl = self.levels_of(N)
        Mn = B.to_numpy(client_mask)
        LM = np.array(B.to_numpy(ex.level_mask))
        X = np.array(B.to_numpy(ex.x))
        part = self.participants_of(rounds_now, N)
        up = np.zeros(part.shape, np.int64)
        up_mask = np.zeros(part.shape, bool)
        LM_old = LM.copy()
        for flat, idx in enumerate(self._runs(rounds_now.shape)):
            if not on[idx]:
                continue
            r = int(rounds_now[idx])
            if r == 1 and self.mode != "pdst":  # stage 1: per-layer densities up, a new random mask down
                dens = (lay.counts(Mn[idx][part[idx]]) / lay.sizes).mean(axis=0)
                counts = self.level_counts(rescale_densities(dens, lay.sizes, self.density))
                scores = B.rng(self.seed, flat, 1, N, MASK_STREAM).random(d)
                LM[idx] = _nested_masks(scores, counts, lay)
                X[idx] = np.where(LM[idx][-1:], B.to_numpy(ex.w_init)[idx], 0.0)
                up[idx] = np.where(part[idx], len(lay), 0)
                continue
            x = B.to_numpy(self.average(V[idx + (Ellipsis,)], part[idx], problem))
            # a client whose DST moved its mask sends the mask with its weights
            up_mask[idx] = np.any(Mn[idx] != LM_old[idx][lvl], axis=-1)
            if self.mode == "jmwst" and r % self.mask_update_every == 0:
                budgets = lay.counts(LM[idx][-1])
                LM[idx] = _nested_masks(np.abs(x[0]), self.level_counts(budgets), lay)
            X[idx] = np.where(LM[idx][-1:], x, 0.0)
            up[idx] = np.where(part[idx], Mn[idx].sum(axis=-1), 0)
        client_masks = LM[..., lvl, :]
        down = client_masks.sum(axis=-1)
        nxt = self.participants_of(rounds_now + 1, N)
        changed = np.any(LM != LM_old, axis=(-2, -1))
        down_mask, versions = self._downlink_versions(state.extras, on, changed, nxt)
        acc = self._tally(state, on, up, part, down, nxt, d, up_mask=up_mask, down_mask=down_mask)
        Xd = B.from_numpy(X, like=V, dtype=V.dtype)
        CM = B.from_numpy(client_masks, like=V)
        new_w = xp.where(CM, xp.broadcast_to(Xd, V.shape), xp.zeros_like(V))
        extras = replace(ex, x=select_runs(on, Xd, ex.x),
                         level_mask=select_runs(on, B.from_numpy(LM, like=V), ex.level_mask),
                         client_mask=select_runs(on, CM, client_mask), **versions)
        return state.replace(w=select_runs(on, new_w, V), t=state.t + 1, uplink=latest_upload(on, V, state.uplink),
                             extras=extras.to_extras(state.extras), **acc)


def pdst(gamma, local_steps, density, rounds, **kwargs) -> Flash:
    """PDST: FedAvg under a fixed random mask with the layer budgets; see :class:`Flash`."""
    return Flash(gamma, local_steps, density, rounds, mode="pdst", **kwargs)


def spdst(gamma, local_steps, density, rounds, **kwargs) -> Flash:
    """SPDST: FLASH's stage 1 (layer densities from DST clients), then PDST; see :class:`Flash`."""
    return Flash(gamma, local_steps, density, rounds, mode="spdst", **kwargs)


def jmwst(gamma, local_steps, density, rounds, **kwargs) -> Flash:
    """JMWST: stage 1, then client DST and server masks from the averaged weights; see :class:`Flash`."""
    return Flash(gamma, local_steps, density, rounds, mode="jmwst", **kwargs)


def hetero_flash(gamma, local_steps, density, rounds, levels=(0.5, 0.75, 1.0), **kwargs) -> Flash:
    """hetero-FLASH: JMWST with client budgets ``levels * density`` and one server mask per level."""
    return Flash(gamma, local_steps, density, rounds, mode="jmwst", levels=levels, **kwargs)
