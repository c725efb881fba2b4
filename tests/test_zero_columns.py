"""Feature columns that are zero for a client: ridge's closed-form local steps keep them exact.

Where column ``j`` of ``A_i`` is zero, ``H_i = A_i^T A_i + (alpha/2) I`` acts on ``e_j`` as
``alpha/2``: explicit steps follow ``w <- w - gamma ((alpha/2) w - h_j)`` there and keep 0 from
``w = h = 0``. The closed form (NumPy and device) zeroes those rows of the client's eigenbasis,
so it follows the same scalar recursion exactly, instead of leaving ~1e-15 of rounding from an
eigenbasis that mixes ``e_j`` into the degenerate eigenvalue ``alpha/2``; dense uploads then count
the same non-zeros, and bits, as explicit steps (BlogFeedback: columns constant on the training
part, which the loader maps to 0).
"""

from __future__ import annotations

import numpy as np
import pytest

import proxfed
from proxfed import FederatedDataset
from proxfed import algorithms as A
from proxfed.problems import Ridge
from proxfed.problems import ridge as ridge_module

from .test_fast_paths import explicit_steps

D = 14
GLOBAL_ZERO = [2, 9]
#: rows per client: above d (Gram form on NumPy), between d/2 and d (Gram form on the device and in
#: batched NumPy runs), and below d/2 (row buckets), several of each so that every block has a few clients
SIZES = [40, 3, 9, 25, 1, 11, 5, 17, 2, 8, 30, 4, 10, 6, 20, 7]


def zero_column_dataset(seed=0):
    """Clients with columns ``GLOBAL_ZERO`` zero everywhere, and up to three more zero columns each."""
    g = np.random.default_rng(seed)
    clients = []
    for i, n in enumerate(SIZES):
        X = g.normal(size=(n, D))
        X[:, -1] = 1.0  # a bias column, never zero
        own = g.choice(D - 1, size=i % 4, replace=False)
        X[:, GLOBAL_ZERO + list(own)] = 0.0
        clients.append((X, g.normal(size=n) + 2.0))
    return FederatedDataset.from_clients(clients)


def zero_mask(problem) -> np.ndarray:
    """(N, d): whether column ``j`` of client ``i`` is zero."""
    return np.array([~np.any(X != 0, axis=0) for X, _ in problem.dataset.clients()])


@pytest.fixture(scope="module")
def problem():
    return Ridge(zero_column_dataset(), alpha=0.5)


def gamma_of(problem, scale=1.0):
    return scale / float(problem.smoothness().max())


def test_the_dataset_has_global_and_per_client_zero_columns(problem):
    mask = zero_mask(problem)
    assert np.all(mask[:, GLOBAL_ZERO])
    assert mask.sum(axis=1).min() == len(GLOBAL_ZERO) and mask.sum(axis=1).max() == len(GLOBAL_ZERO) + 3
    sizes = problem.dataset.client_sizes
    assert np.any(sizes > D) and np.any((sizes > D / 2) & (sizes <= D)) and np.any(sizes <= D / 2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("lead", [(), (2,), (5,)])  # fewer than 4 runs: two products per block, else one
def test_closed_form_keeps_zero_columns_exactly_zero(problem, lead, dtype):
    mask = zero_mask(problem)
    rng = np.random.default_rng(1)
    W = rng.standard_normal(lead + mask.shape)
    H = rng.standard_normal(W.shape)
    W[..., mask] = 0.0
    H[..., mask] = 0.0
    R = int(np.prod(lead))
    gam = gamma_of(problem) * np.linspace(0.3, 1.9, R)  # gamma lam > 1/2 too: the other branch of Psi
    ks = np.arange(R) * 7 + 3
    got = problem.local_steps(W.astype(dtype), H.astype(dtype), gam if lead else gam[0], ks if lead else ks[0])
    assert got.dtype == dtype
    assert np.all(got[..., mask] == 0)
    assert np.all(got[..., ~mask] != 0)
    Wr, Hr, Gr = (a.reshape((R,) + mask.shape) for a in (W, H, got))
    for r in range(R):
        want = explicit_steps(problem, Wr[r], Hr[r], gam[r], int(ks[r]))
        assert np.all(want[mask] == 0)  # what explicit steps do
        scale = np.abs(want).max()
        tol = 1e-9 if dtype == np.float64 else 1e-4
        np.testing.assert_allclose(Gr[r], want, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("alpha", [0.5, 0.0])
def test_zero_columns_follow_the_scalar_recursion(alpha):
    """From any ``w0``, ``h``: ``a^k w0 + gamma h (1 - a^k) / (1 - a)`` with ``a = 1 - gamma alpha / 2``
    (``w0 + k gamma h`` where ``a = 1``), the other coordinates not involved."""
    prob = Ridge(zero_column_dataset(), alpha=alpha)
    mask = zero_mask(prob)
    rng = np.random.default_rng(2)
    W = rng.standard_normal((3,) + mask.shape)
    H = rng.standard_normal(W.shape)
    gam, ks = gamma_of(prob) * np.array([0.5, 1.0, 1.5]), np.array([4, 0, 13])
    got = prob.local_steps(W, H, gam, ks)
    for r in range(3):
        a = 1 - gam[r] * alpha / 2
        geometric = ks[r] * gam[r] if a == 1 else gam[r] * (1 - a ** ks[r]) / (1 - a)
        want = a ** ks[r] * W[r] + geometric * H[r]
        np.testing.assert_allclose(got[r][mask], want[mask], rtol=1e-13, atol=1e-15)
        explicit = explicit_steps(prob, W[r], H[r], gam[r], int(ks[r]))
        np.testing.assert_allclose(got[r], explicit, rtol=1e-9, atol=1e-9 * np.abs(explicit).max())


def test_other_coordinates_are_those_of_the_plain_eigenbasis(problem, monkeypatch):
    """Zeroing the rows moves the results on the clients' non-zero columns by rounding only."""
    mask = zero_mask(problem)
    rng = np.random.default_rng(3)
    W = rng.standard_normal((5,) + mask.shape)
    H = rng.standard_normal(W.shape)
    gam, ks = gamma_of(problem) * np.array([0.4, 0.8, 1.2, 1.6, 1.9]), np.array([1, 5, 9, 30, 60])
    got = problem.local_steps(W, H, gam, ks)
    monkeypatch.setattr(ridge_module, "zero_rows", lambda V, A: V)  # the eigenbases as LAPACK gives them
    before = Ridge(problem.dataset, alpha=problem.alpha).local_steps(W, H, gam, ks)
    np.testing.assert_allclose(got[..., ~mask], before[..., ~mask], rtol=1e-12, atol=1e-12 * np.abs(before).max())
    np.testing.assert_allclose(got[..., mask], before[..., mask], rtol=1e-12, atol=1e-12 * np.abs(before).max())


# -- bit counts of whole runs --------------------------------------------------------------------

MAKERS = {
    "proxskip": lambda g, p: A.proxskip(g, p),
    "final_topk": lambda g, p: A.final_topk(g, p, 5),
}
COUNTS = ("bits_up", "values_up", "upload_nnz")


def counts_at(result, iterations):
    """The records of ``bits_up`` and ``upload_nnz`` at the given iterations (single run)."""
    it = np.asarray(result.history["iteration"]).ravel()
    at = np.searchsorted(it, iterations)
    assert np.array_equal(it[at], iterations)
    return {key: np.asarray(result.history[key])[at].ravel() for key in ("bits_up", "upload_nnz")}


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_rounds_and_jumps_count_the_bits_of_explicit_steps(problem, name):
    """One run: the histories of run_rounds and run(jumps=True) equal run(jumps=False)'s, bit for bit."""
    alg = MAKERS[name](gamma_of(problem), 0.25)
    C = 12
    rounds = proxfed.run_rounds(alg, problem, C, seed=3, every=1)
    T = int(np.asarray(rounds.history["iteration"]).ravel()[-1])
    explicit = proxfed.run(alg, problem, T, seed=3, every=1, jumps=False)
    jumped = proxfed.run(alg, problem, T, seed=3, every=1, jumps=True)
    iterations = np.asarray(rounds.history["iteration"]).ravel()
    want = counts_at(explicit, iterations)
    for got in (counts_at(rounds, iterations), counts_at(jumped, iterations)):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    for key in COUNTS:
        np.testing.assert_array_equal(getattr(rounds.state, key), getattr(explicit.state, key))
        np.testing.assert_array_equal(getattr(jumped.state, key), getattr(explicit.state, key))
    # the global zero columns are never uploaded; every other coordinate is, after the first round
    d_live = D - len(GLOBAL_ZERO)
    np.testing.assert_array_equal(rounds.state.upload_nnz, d_live)
    assert np.all(np.asarray(rounds.history["upload_nnz"]).ravel()[2:] == d_live)
    # the first round starts from w = h = 0: each client's own zero columns stay 0 too
    first = np.asarray(rounds.history["upload_nnz"]).ravel()[1]
    assert first == pytest.approx(np.mean(D - zero_mask(problem).sum(axis=1)), rel=1e-12)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_batched_runs_count_the_bits_of_explicit_steps(problem, name):
    """Four runs (one product per block) with their own p, each to its own C-th communication."""
    ps = np.array([0.15, 0.3, 0.5, 0.8])
    alg = MAKERS[name](gamma_of(problem) * np.array([1.0, 0.6, 1.4, 0.9]), ps)
    C, seeds = 9, [4, 5, 6, 7]
    rounds = proxfed.run_rounds(alg, problem, C, seed=seeds, every=C)
    for jumps in (True, False):
        plain = proxfed.run(alg, problem, 10_000, seed=seeds, every=10_000, communications=C, jumps=jumps)
        np.testing.assert_array_equal(plain.state.communications, [C] * 4)
        for key in COUNTS:
            np.testing.assert_array_equal(getattr(rounds.state, key), getattr(plain.state, key))


# -- torch (the device path on the CPU) ----------------------------------------------------------

def test_device_closed_form_keeps_zero_columns_exactly_zero(problem):
    torch = pytest.importorskip("torch")
    mask = zero_mask(problem)
    rng = np.random.default_rng(4)
    W = rng.standard_normal((5,) + mask.shape)
    H = rng.standard_normal(W.shape)
    W[..., mask] = 0.0
    H[..., mask] = 0.0
    gam, ks = gamma_of(problem) * np.array([0.4, 0.8, 1.2, 1.6, 1.9]), np.array([1, 5, 9, 30, 0])
    want = problem.local_steps(W, H, gam, ks)
    for dtype in (torch.float64, torch.float32):
        got = problem.local_steps(torch.asarray(W, dtype=dtype), torch.asarray(H, dtype=dtype), gam, ks).numpy()
        assert np.all(got[..., mask] == 0) and np.all(got[..., ~mask] != 0)
        tol = 1e-9 if dtype == torch.float64 else 1e-4
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * np.abs(want).max())
    # from any w0, h: the scalar recursion, as on NumPy
    W, H = rng.standard_normal(W.shape), rng.standard_normal(W.shape)
    want = problem.local_steps(W, H, gam, ks)
    got = problem.local_steps(torch.asarray(W), torch.asarray(H), gam, ks).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(want).max())
    np.testing.assert_allclose(got[..., mask], want[..., mask], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_device_rounds_count_the_bits_of_explicit_steps(problem, name):
    torch = pytest.importorskip("torch")
    ps = np.array([0.2, 0.5, 0.35])
    alg = MAKERS[name](gamma_of(problem) * np.array([1.0, 0.7, 1.3]), ps)
    C, seeds = 8, [1, 2, 3]
    w0 = torch.zeros((3, problem.dim), dtype=torch.float64)
    rounds = proxfed.run_rounds(alg, problem, C, seed=seeds, every=C, w0=w0)
    plain = proxfed.run(alg, problem, 10_000, seed=seeds, every=10_000, communications=C, jumps=False)
    for key in COUNTS:
        np.testing.assert_array_equal(np.asarray(getattr(rounds.state, key)), getattr(plain.state, key))
    np.testing.assert_array_equal(rounds.history["upload_nnz"][-1], D - len(GLOBAL_ZERO))


# -- real data -----------------------------------------------------------------------------------

@pytest.mark.data
def test_blogfeedback_dense_uploads_skip_the_constant_columns(shared_data, tmp_path):
    """BlogFeedback's columns constant on the training part (0 after scaling, for every client) are
    never uploaded by ProxSkip under run_rounds, as with explicit steps: 281 - 4 = 277 non-zeros."""
    from proxfed.data import load_blogfeedback

    ds = load_blogfeedback(shared_data / "blogfeedback", cache_dir=tmp_path)
    constant = ds.meta["constant_columns"]
    assert constant.size and np.all(ds.X[:, constant] == 0)
    prob = Ridge(ds, alpha=1e3)
    alg = A.proxskip(1.0 / float(prob.smoothness().max()), 0.2)
    res = proxfed.run_rounds(alg, prob, 3, seed=1, every=1, split=None)
    live = ds.n_features - constant.size
    np.testing.assert_array_equal(res.state.upload_nnz, live)
    np.testing.assert_array_equal(res.history["upload_nnz"][2:].ravel(), live)
    # as explicit steps, bit for bit (the first uploads, from w = h = 0, have each client's own zero
    # columns at 0 too, and clients whose targets are all 0 upload nothing)
    explicit = proxfed.run(alg, prob, int(np.asarray(res.history["iteration"]).ravel()[-1]), seed=1, every=1,
                           split=None, jumps=False)
    want = counts_at(explicit, np.asarray(res.history["iteration"]).ravel())
    for key, value in counts_at(res, np.asarray(res.history["iteration"]).ravel()).items():
        np.testing.assert_array_equal(value, want[key])
    for key in COUNTS:
        np.testing.assert_array_equal(getattr(res.state, key), getattr(explicit.state, key))
