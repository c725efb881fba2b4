"""FedSparsify and FLASH (proxfed.algorithms.fedsparsify / .flash / .rounds) against plain references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import proxfed
from proxfed import algorithms as A
from proxfed.algorithms.flash import _nested_masks
from proxfed.algorithms.rounds import Layers
from proxfed.data import make_sparse_regression
from proxfed.problems import Ridge
from proxfed.prox import sparsity_to_k


@pytest.fixture(scope="module")
def ridge():
    return Ridge(make_sparse_regression(n_clients=8, n_features=30, seed=1), alpha=10.0)


def _gamma(problem):
    return 0.5 / float(np.max(problem.smoothness()))


class Quadratic:
    """``f_i(w) = 1/2 ||w - c_i||^2``: with gamma = 1 one local step puts client i at ``c_i``."""

    def __init__(self, C, sizes=None):
        self.C = np.asarray(C, float)
        self.n_clients, self.dim = self.C.shape
        self.dataset = type("D", (), {"client_sizes": np.ones(self.n_clients, int) if sizes is None
                                      else np.asarray(sizes)})()

    def grad(self, W):
        return W - self.C


def _rounds(alg, problem, n_rounds, w0=None, check=None):
    """Drive init/step for ``n_rounds`` rounds; ``check(state)`` after every step."""
    state = alg.init(problem, np.zeros(problem.dim) if w0 is None else w0)
    E = int(alg.local_steps())
    for t in range(n_rounds * E):
        state = alg.step(state, problem, (t + 1) % E == 0)
        if check is not None:
            check(state)
    return state


# -- the schedule and the communication column -----------------------------------------------------
def test_schedule_values():
    s = A.fedsparsify_schedule(np.arange(1, 201), 0.9, 200)
    assert s[0] == 0.0 and s[1] > 0  # the first prune happens at the end of round 2
    assert s[-1] == pytest.approx(0.9) and np.all(np.diff(s) >= 0)
    assert A.fedsparsify_schedule(2, 0.9, 200) == pytest.approx(0.9 * (1 - (1 - 1 / 199) ** 3))
    # F = 5: constant over blocks of five rounds; t_0 = 10: s_0 before it
    f = A.fedsparsify_schedule(np.arange(1, 101), 0.8, 100, frequency=5, start_round=10, initial_sparsity=0.1)
    assert np.all(f[:9] == 0.1) and np.all(f[10:14] == f[10]) and f[-1] == pytest.approx(0.8)
    assert np.all(np.diff(f) >= 0)
    assert A.fedsparsify_schedule(1, 0.9, 1) == 0.9  # a single round ends at s_F
    for bad in ({"final_sparsity": 1.0}, {"start_round": 10}, {"rounds": 3, "start_round": 3}, {"exponent": 0},
                {"initial_sparsity": 0.95}):
        kw = {"final_sparsity": 0.9, "rounds": 10, **bad}
        with pytest.raises(ValueError):
            A.fedsparsify_schedule(1, **kw)
    with pytest.raises(ValueError):
        A.fedsparsify_schedule(0, 0.9, 10)


@pytest.mark.parametrize("s_f, published", [(0.0, 6441), (0.8, 2596), (0.9, 2116), (0.99, 1683)])
def test_communication_column_of_the_cifar10_cnn(s_f, published):
    """FedSparsify's Table: d = 1,609,930, 10 clients, 200 rounds (million parameters)."""
    total = A.fedsparsify_communication(1_609_930, 200, 10, lambda t: A.fedsparsify_schedule(t, s_f, 200))
    assert abs(total / 1e6 / published - 1) < 0.002


def test_engine_accounting_adds_up_to_the_column():
    d, n, T = 5000, 6, 12
    rng = np.random.default_rng(0)
    prob = Quadratic(rng.normal(size=(n, d)))
    alg = A.fedsparsify_global(0.5, 2, 0.9, T, clients_per_round=4)
    state = _rounds(alg, prob, T)
    column = A.fedsparsify_communication(d, T, 4, lambda t: A.fedsparsify_schedule(t, 0.9, T))
    assert int(state.values_up.sum()) + int(state.bits_down.sum()) // 32 == column
    assert state.communications == T


@pytest.mark.slow
def test_engine_accounting_at_the_cifar10_cnn_size():
    d, n, T = 1_609_930, 10, 200
    prob = Quadratic(np.random.default_rng(0).normal(size=(n, d)).astype(np.float32))
    alg = A.fedsparsify_global(0.5, 1, 0.9, T)
    state = _rounds(alg, prob, T, w0=np.zeros(d, np.float32))
    total = (int(state.values_up.sum()) + int(state.bits_down.sum()) // 32) / 1e6
    assert abs(total / 2116 - 1) < 0.002


# -- FedSparsify: masks, no regrowth, voting -------------------------------------------------------
def test_masked_weights_stay_zero_and_no_regrowth(ridge):
    alg = A.fedsparsify_global(_gamma(ridge), 3, 0.8, 10)
    seen = []

    def check(state):
        mask = np.asarray(state.extras["mask"])[0]
        assert np.all(state.w[:, ~mask] == 0)  # exactly zero through local training
        if seen:
            assert not np.any(mask & ~seen[-1])  # never regrows
        seen.append(mask)

    state = _rounds(alg, ridge, 10, check=check)
    for t in range(1, 11):  # exactly K_t entries after round t
        assert seen[3 * t - 1].sum() == sparsity_to_k(ridge.dim, A.fedsparsify_schedule(t, 0.8, 10))
    assert np.count_nonzero(alg.output(state)) <= sparsity_to_k(ridge.dim, 0.8)


def _reference_round(C, mask, k, part, sizes, mode, min_votes):
    """One round of FedSparsify with gamma = 1 on Quadratic(C), plainly, client by client."""
    ys = [np.where(mask, c, 0.0) for c in C]
    idx = np.flatnonzero(part)
    wts = np.asarray(sizes, float)[idx] / np.asarray(sizes, float)[idx].sum()
    if mode == "global":
        x = sum(w * ys[i] for w, i in zip(wts, idx))
        order = sorted(np.flatnonzero(mask), key=lambda j: (-abs(x[j]), j))
        new = np.zeros_like(mask)
        new[order[:k]] = True
    else:
        masks = []
        for i in range(len(C)):
            order = sorted(np.flatnonzero(mask), key=lambda j: (-abs(ys[i][j]), j))
            m = np.zeros_like(mask)
            m[order[:k]] = True
            masks.append(m)
        votes = sum(masks[i].astype(int) for i in idx)
        new = (votes >= min_votes) & mask
        x = sum(w * np.where(masks[i], ys[i], 0.0) for w, i in zip(wts, idx))
    return np.where(new, x, 0.0), new


def test_majority_voting_on_hand_made_masks():
    # four clients, six coordinates; K = 2 per client
    C = np.array([[5.0, 4.0, 0.1, 0.1, 0.1, 0.1],
                  [5.0, 0.1, 4.0, 0.1, 0.1, 0.1],
                  [5.0, 4.0, 0.1, 0.1, 0.1, 0.1],
                  [0.1, 0.1, 4.0, 5.0, 0.1, 0.1]])
    prob = Quadratic(C, sizes=[1, 1, 1, 1])
    alg = A.fedsparsify_local(1.0, 1, 0.5, 2, schedule=lambda t: 4 / 6)  # K = 2 of 6
    state = _rounds(alg, prob, 1)
    # votes: coordinate 0: 3, 1: 2, 2: 2, 3: 1; V(4) = floor(4/2) = 2
    np.testing.assert_array_equal(np.asarray(state.extras["mask"])[0], [True, True, True, False, False, False])
    np.testing.assert_allclose(alg.output(state), [15 / 4, 8 / 4, 8 / 4, 0, 0, 0])  # zeros included
    assert alg.min_votes(4) == 2 and alg.min_votes(5) == 2 and alg.min_votes(1) == 1
    ceil = A.fedsparsify_local(1.0, 1, 0.5, 2, vote_rounding="ceil", vote_fraction=0.75)
    assert ceil.min_votes(4) == 3 and ceil.min_votes(5) == 4
    assert A.fedsparsify_local(1.0, 1, 0.5, 2, vote_fraction=0.29).min_votes(100) == 29  # exact, not 28.999...
    assert np.all(state.upload_nnz == 2)  # every client sends its K values


@pytest.mark.parametrize("mode", ["global", "local"])
@pytest.mark.parametrize("m", [None, 3])
def test_fedsparsify_equals_the_plain_reference(mode, m):
    rng = np.random.default_rng(4)
    N, d, T = 6, 40, 5
    sizes = rng.integers(1, 20, N)
    prob = Quadratic(rng.normal(size=(N, d)), sizes=sizes)
    alg = A.FedSparsify(1.0, 1, 0.9, T, mode=mode, clients_per_round=m, seed=7)
    state = alg.init(prob, np.zeros(d))
    mask = np.ones(d, bool)
    for t in range(1, T + 1):
        state = alg.step(state, prob, True)
        part = A.participants(7, t, N, m)
        s_t = 0.9 * (1 - (1 - (t - 1) / (T - 1)) ** 3)  # the schedule, written out
        k_t = d - int(round(s_t * d))
        x_ref, mask = _reference_round(prob.C, mask, k_t, part, sizes, mode, max(1, int(part.sum()) // 2))
        np.testing.assert_allclose(alg.output(state), x_ref, rtol=1e-13, atol=1e-15)
        np.testing.assert_array_equal(np.asarray(state.extras["mask"])[0], mask)


def test_dense_fedsparsify_and_pdst_are_fedavg(ridge):
    g = _gamma(ridge)
    ref = proxfed.run(A.fedavg(g, 4), ridge, 40, every=4)
    for alg in (A.fedsparsify_global(g, 4, 0.0, 10, weighting="uniform"),
                A.pdst(g, 4, 1.0, 10, weighting="uniform")):
        res = proxfed.run(alg, ridge, 40, every=4)
        np.testing.assert_allclose(res.w, ref.w, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(res.history["bits_up"], ref.history["bits_up"])


def test_batched_runs_equal_single_runs(ridge):
    """Per-run stepsizes; randomness is keyed by the run index, so run 0 equals the single run."""
    g = _gamma(ridge)
    gammas = np.array([g, 0.5 * g, 0.25 * g])
    makers = [(lambda gm: A.fedsparsify_local(gm, 3, 0.8, 6), range(3)),  # no randomness: every run
              (lambda gm: A.fedsparsify_global(gm, 3, 0.8, 6, clients_per_round=5), [0]),
              (lambda gm: A.jmwst(gm, 3, 0.2, 6, clients_per_round=5), [0])]
    for make, runs in makers:
        batched = proxfed.run(make(gammas), ridge, 18, every=3)
        assert batched.w.shape == (3, ridge.dim)
        for r in runs:
            single = proxfed.run(make(float(gammas[r])), ridge, 18, every=3)
            np.testing.assert_allclose(batched.w[r], single.w, rtol=1e-12, atol=1e-14)
            np.testing.assert_array_equal(batched.history["bits_up"][:, r], single.history["bits_up"])


def test_seeded_partial_participation():
    a = [A.participants(3, t, 20, 5) for t in range(1, 30)]
    b = [A.participants(3, t, 20, 5) for t in range(1, 30)]
    assert all((x == y).all() and x.sum() == 5 for x, y in zip(a, b))
    assert len({x.tobytes() for x in a}) > 20  # rounds differ
    assert not (A.participants(3, 1, 20, 5) == A.participants(4, 1, 20, 5)).all()
    assert A.participants(0, 1, 20, None).all()
    rng = np.random.default_rng(0)
    prob = Quadratic(rng.normal(size=(20, 30)))
    alg = A.fedsparsify_global(0.5, 1, 0.5, 8, clients_per_round=5, seed=3)
    state = alg.init(prob, np.zeros(30))
    for t in range(1, 9):
        before = state.bits_up.copy()
        state = alg.step(state, prob, True)
        sent = state.bits_up > before
        np.testing.assert_array_equal(sent, A.participants(3, t, 20, 5))  # only participants upload


# -- FLASH -------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.0, 1.0), st.booleans(), st.floats(0.05, 1.0))
def test_dst_keeps_each_layer_density(seed, rate, redistribute, density):
    rng = np.random.default_rng(seed)
    d = 60
    lay = Layers([(0, 10), (12, 40), (45, 60)], d)
    mask = rng.random(d) < density  # up to dense layers, where fewer positions can be regrown than pruned
    w = np.where(mask, rng.normal(size=d), 0.0)
    w2, m2 = A.dst_step(w, mask, lay, rate, np.random.default_rng(seed), redistribute=redistribute)
    if redistribute:
        assert lay.counts(m2).sum() == lay.counts(mask).sum()
    else:
        np.testing.assert_array_equal(lay.counts(m2), lay.counts(mask))
    assert np.all(w2[~m2] == 0)
    np.testing.assert_array_equal(m2[~lay.maskable], mask[~lay.maskable])  # outside the layers: untouched
    kept = mask & m2
    np.testing.assert_array_equal(w2[kept], w[kept])
    for a, b in lay.segments:  # the pruned ones are the smallest |w| of the layer
        gone = np.flatnonzero(mask[a:b] & ~m2[a:b]) + a
        stay = np.flatnonzero(kept[a:b]) + a
        if gone.size and stay.size:
            assert np.abs(w[gone]).max() <= np.abs(w[stay]).min()
        grown = np.flatnonzero(m2[a:b] & ~mask[a:b]) + a
        assert np.all(w2[grown] == 0)


def test_rescale_densities_meets_the_budget():
    sizes = np.array([100, 1000, 10, 5000])
    counts = A.rescale_densities([0.9, 0.2, 1.0, 0.05], sizes, 0.1)
    assert counts.sum() == A.layer_budgets(Layers([(0, 100), (100, 1100), (1100, 1110), (1110, 6110)], 6110),
                                           0.1).sum()
    assert np.all(counts <= sizes) and np.all(counts >= 1)
    assert counts[2] == 10  # clipped at density 1, the excess spread
    assert counts[0] / 100 > counts[1] / 1000 > counts[3] / 5000


def test_jmwst_server_mask_has_the_layer_budgets(ridge):
    lay = Layers([(0, 10), (10, 25)], ridge.dim)  # the last 6 coordinates stay dense
    alg = A.jmwst(_gamma(ridge), 4, 0.3, 8, layers=lay, stage1_fraction=0.5)
    budgets = A.layer_budgets(lay, 0.3)
    counts = []

    def check(state):
        m = np.asarray(state.extras["level_mask"])[-1]
        counts.append(lay.counts(m))
        assert m[~lay.maskable].all()
        assert np.all(state.w[~np.asarray(state.extras["client_mask"])] == 0)

    state = _rounds(alg, ridge, 8, check=check)
    after_stage1 = counts[4]
    assert after_stage1.sum() == budgets.sum()  # stage 1 moves densities, not the total
    for c in counts[4:]:  # JMWST keeps the budgets of stage 1 exactly
        np.testing.assert_array_equal(c, after_stage1)
    x = alg.output(state)
    assert np.all(lay.counts(x != 0) <= after_stage1)


def test_hetero_flash_levels(ridge):
    lay = Layers.whole(ridge.dim)
    alg = A.hetero_flash(_gamma(ridge), 2, 0.4, 5, layers=lay)
    state = _rounds(alg, ridge, 5)
    lm = np.asarray(state.extras["level_mask"])
    k = A.layer_budgets(lay, 0.4)[0]
    np.testing.assert_array_equal(lm.sum(axis=-1), [round(0.5 * k), round(0.75 * k), k])
    assert not np.any(lm[0] & ~lm[1]) and not np.any(lm[1] & ~lm[2])  # nested
    levels = alg.levels_of(ridge.n_clients)
    cm = np.asarray(state.extras["client_mask"])
    np.testing.assert_array_equal(cm.sum(axis=-1), lm.sum(axis=-1)[levels])
    assert np.all(state.w[~cm] == 0)
    with pytest.raises(ValueError):
        A.Flash(0.1, 2, 0.4, 5, mode="pdst", levels=(0.5, 1.0))


def test_nested_masks_ties_and_dense_coordinates():
    lay = Layers([(1, 5)], 6)
    m = _nested_masks(np.array([9.0, 1.0, 1.0, 3.0, 0.0, 9.0]), np.array([[1], [2]]), lay)
    np.testing.assert_array_equal(m, [[True, False, False, True, False, True],
                                      [True, True, False, True, False, True]])


def test_bad_arguments():
    with pytest.raises(ValueError):
        A.Flash(0.1, 2, 0.0, 5)
    with pytest.raises(ValueError):
        A.Flash(0.1, 2, 0.5, 5, levels=(1.0, 0.5))
    with pytest.raises(ValueError):
        A.FedSparsify(0.1, 2, 0.9, 5, mode="both")
    with pytest.raises(ValueError):
        A.FedSparsify(0.1, 2, 0.9, 5, mode="local", pruning="random")
    with pytest.raises(ValueError):
        A.fedsparsify_global(0.1, 2, 0.9, 5, clients_per_round=0)
    with pytest.raises(ValueError):
        A.oneshot_pruning(0.1, 2, 0.9, 5, fine_tune_rounds=5)
    with pytest.raises(ValueError):
        Layers([(0, 5), (3, 8)], 10)


def test_oneshot_prunes_once_in_the_engine(ridge):
    g = _gamma(ridge)
    counts = []
    _rounds(A.oneshot_pruning(g, 2, 0.8, 6, fine_tune_rounds=2), ridge, 6,
            check=lambda s: counts.append(int(np.asarray(s.extras["mask"]).sum())))
    per_round = counts[1::2]  # after each round's communication
    k = sparsity_to_k(ridge.dim, 0.8)
    assert per_round == [ridge.dim] * 3 + [k] * 3  # dense through round T - f = 4's start, pruned at its end


def test_oneshot_and_random_pruning(ridge):
    g = _gamma(ridge)
    one = _rounds(A.oneshot_pruning(g, 2, 0.8, 6, fine_tune_rounds=2), ridge, 6)
    assert np.asarray(one.extras["mask"]).sum() == sparsity_to_k(ridge.dim, 0.8)
    no_ft = A.oneshot_pruning(g, 2, 0.8, 6)
    assert no_ft.sparsity(5) == 0.0 and no_ft.sparsity(6) == 0.8
    rnd = _rounds(A.random_pruning(g, 2, 0.8, 6, seed=1), ridge, 6)
    mag = _rounds(A.fedsparsify_global(g, 2, 0.8, 6), ridge, 6)
    assert np.asarray(rnd.extras["mask"]).sum() == np.asarray(mag.extras["mask"]).sum()
    assert not (np.asarray(rnd.extras["mask"]) == np.asarray(mag.extras["mask"])).all()


def test_mask_cost_follows_the_index_model():
    """Masks travel as the support of each message: a bitmap index model adds d bits per message."""
    from proxfed.comm import CommModel

    rng = np.random.default_rng(2)
    N, d, T = 5, 50, 4
    prob = Quadratic(rng.normal(size=(N, d)))
    plain = _rounds(A.fedsparsify_local(1.0, 1, 0.8, T), prob, T)
    bitmap = _rounds(A.fedsparsify_local(1.0, 1, 0.8, T, comm=CommModel(index="bitmap")), prob, T)
    kept = [A.FedSparsify(1.0, 1, 0.8, T).kept(t, d) for t in range(1, T + 1)]
    assert kept[0] == d and all(a > b for a, b in zip(kept[1:], kept[2:]))  # round 1 dense, then shrinking
    sparse_rounds = sum(k < d for k in kept)
    # every sparse upload carries the client's own mask; a download carries the mask when it changed
    # (full participation: every client holds the previous one), so once per change of the server mask
    np.testing.assert_array_equal(bitmap.bits_up - plain.bits_up, np.full(N, sparse_rounds * d))
    changes = int(np.asarray(bitmap.extras["mask_version"]).item())
    assert 1 <= changes <= sparse_rounds
    np.testing.assert_array_equal(bitmap.bits_down - plain.bits_down, np.full(N, changes * d))
    np.testing.assert_array_equal(plain.values_up, bitmap.values_up)
    assert plain.values_up.sum() == sum(N * A.FedSparsify(1.0, 1, 0.8, T).kept(t, d) for t in range(1, T + 1))
    # Global uploads sit on the mask the clients received: no mask goes up
    g_plain = _rounds(A.fedsparsify_global(1.0, 1, 0.8, T), prob, T)
    g_bitmap = _rounds(A.fedsparsify_global(1.0, 1, 0.8, T, comm=CommModel(index="bitmap")), prob, T)
    np.testing.assert_array_equal(g_bitmap.bits_up, g_plain.bits_up)
    np.testing.assert_array_equal(g_bitmap.bits_down - g_plain.bits_down, np.full(N, sparse_rounds * d))


def test_a_client_that_missed_a_prune_gets_the_mask_with_its_next_download():
    from proxfed.comm import CommModel

    rng = np.random.default_rng(5)
    N, d, T = 6, 40, 8
    prob = Quadratic(rng.normal(size=(N, d)))
    alg = A.fedsparsify_global(1.0, 1, 0.9, T, clients_per_round=2, seed=2, comm=CommModel(index="bitmap"))
    state = alg.init(prob, np.zeros(d))
    known = np.zeros(N, int)  # mask version each client holds
    version = 0
    for t in range(1, T + 1):
        before = state.bits_down.copy()
        old_mask = np.asarray(state.extras["mask"]).copy()
        state = alg.step(state, prob, True)
        version += int((np.asarray(state.extras["mask"]) != old_mask).any())
        nxt = A.participants(2, t + 1, N, 2)
        count = int(np.asarray(state.extras["mask"]).sum())
        want = np.where(nxt, 32 * count + np.where((known != version) & (count < d), d, 0), 0)
        np.testing.assert_array_equal(state.bits_down - before, want)
        known = np.where(nxt, version, known)


def _top_per_layer(x, lay, budgets):
    """Per layer the top budgets[l] of |x| (ties to the lowest index), the rest of the vector kept: plainly."""
    keep = ~lay.maskable.copy()
    for (a, b), k in zip(lay.segments, budgets):
        for j in sorted(range(a, b), key=lambda j: (-abs(x[j]), j))[:k]:
            keep[j] = True
    return keep


@pytest.mark.parametrize("every", [1, 2])
def test_jmwst_rounds_equal_a_plain_reference(every):
    from proxfed import _backend as B
    from proxfed.algorithms.rounds import MASK_STREAM

    rng = np.random.default_rng(6)
    N, d, E, g = 4, 30, 4, 0.3
    sizes = np.array([3, 1, 2, 5])
    prob = Quadratic(rng.normal(size=(N, d)), sizes=sizes)
    lay = Layers([(0, 12), (12, 26)], d)
    alg = A.jmwst(g, E, 0.5, 6, layers=lay, stage1_fraction=0.5, seed=4, mask_update_every=every, dst_every=1,
                  dst_rate=0.9)
    state = _rounds(alg, prob, 1)  # stage 1
    for r in range(2, 6):
        W = np.asarray(state.w).copy()
        M = np.asarray(state.extras["client_mask"]).copy()
        server = np.asarray(state.extras["level_mask"])[-1]
        for j in range(E):
            t = state.t + j
            W = np.where(M, W - g * (W - prob.C), 0.0)
            if j + 1 < E:  # dst_every = 1: after every local step but the last
                for i in range(N):
                    W[i], M[i] = A.dst_step(W[i], M[i], lay, 0.9 * (1 - (r - 1) / 6),
                                            B.rng(4, 0, r, i, t + 1, MASK_STREAM))
        xbar = (sizes[:, None] * W).sum(axis=0) / sizes.sum()
        new = _top_per_layer(xbar, lay, lay.counts(server)) if r % every == 0 else server
        for j in range(E):
            state = alg.step(state, prob, j == E - 1)
        np.testing.assert_array_equal(np.asarray(state.extras["level_mask"])[-1], new)
        np.testing.assert_allclose(alg.output(state), np.where(new, xbar, 0.0), rtol=1e-13, atol=1e-15)
        if r % every:
            np.testing.assert_array_equal(new, server)  # no update in this round
        assert not np.array_equal(M, np.broadcast_to(server, M.shape))  # DST moved the client masks


def test_flash_downlink_accounting():
    rng = np.random.default_rng(8)
    N, d, T = 5, 40, 4
    prob = Quadratic(rng.normal(size=(N, d)))
    alg = A.pdst(0.5, 2, 0.25, T, clients_per_round=3, seed=1)
    state = alg.init(prob, np.zeros(d))
    k = int(np.asarray(state.extras["level_mask"]).sum())
    assert k == sparsity_to_k(d, 0.75)
    for r in range(1, T + 1):
        before_up, before_down = state.bits_up.copy(), state.bits_down.copy()
        for j in range(2):
            state = alg.step(state, prob, j == 1)
        np.testing.assert_array_equal(state.bits_up - before_up, np.where(A.participants(1, r, N, 3), 32 * k, 0))
        np.testing.assert_array_equal(state.bits_down - before_down,
                                      np.where(A.participants(1, r + 1, N, 3), 32 * k, 0))
