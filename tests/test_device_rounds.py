"""Closed-form rounds on the device: Ridge.local_steps, run_rounds and the exact driver on torch (CPU).

torch's CPU build runs the GPU's code path. In float64 the device results equal NumPy's to 1e-9
(relative, as ``assert_allclose`` with ``rtol=1e-9`` and an ``atol`` of 1e-9 times the largest
entry); float32 follows the float64 results to single precision. A round dispatches the same
kernels for 50 and for 200 clients, and ``local_steps`` reads nothing back.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import proxfed
from proxfed import algorithms as A
from proxfed.problems import Ridge
from proxfed.round_runner import last_communications, supports_rounds
from proxfed.runner import initial_models

from .test_device_layout import ridge_problem
from .test_fast_paths import explicit_steps

torch = pytest.importorskip("torch", reason="the device rounds are exercised through torch on the CPU")
from proxfed import kernels  # noqa: E402

R = 5
KS = np.array([3, 5, 4, 6, 2])


def close(got, want, rtol=1e-9):
    """``got`` (any library) equals ``want`` to ``rtol`` relative, entries near 0 to ``rtol`` times the largest."""
    got = np.asarray(proxfed._backend.to_numpy(got), dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    scale = np.nanmax(np.abs(want)) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(scale, 1e-300))


@pytest.fixture(scope="module")
def problem():
    return ridge_problem(30)


def hyper(problem):
    """Per-run stepsizes (some with gamma lam > 1/2, the other branch of Psi) and probabilities."""
    L = float(problem.smoothness().max())
    return np.array([1.0, 0.3, 1.8, 0.7, 1.2]) / L, np.array([0.1, 0.35, 0.6, 0.2, 0.85])


def tensor(a, dtype=torch.float64):
    return torch.asarray(np.array(a), dtype=dtype)


# -- Ridge.local_steps ---------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", [0.5, 0.0])
def test_local_steps_on_the_device_equal_numpy_and_explicit_steps(problem, alpha):
    prob = problem if alpha else Ridge(problem.dataset, alpha=0.0)  # alpha = 0: Psi_k(0) = k gamma
    rng = np.random.default_rng(0)
    W = rng.standard_normal((R, prob.n_clients, prob.dim))
    H = rng.standard_normal(W.shape)
    gam, _ = hyper(prob)
    ks = np.array([3, 0, 11, 1, 25])
    want = prob.local_steps(W, H, gam, ks)
    got = prob.local_steps(tensor(W), tensor(H), gam, ks)
    assert got.dtype == torch.float64 and tuple(got.shape) == W.shape
    close(got, want)
    for r in (0, 1, 3):
        close(got[r], explicit_steps(prob, W[r], H[r], gam[r], int(ks[r])), rtol=1e-9)
    # a single run with one k, and (2, 3) leading run axes
    close(prob.local_steps(tensor(W[0]), tensor(H[0]), gam[0], 7), prob.local_steps(W[0], H[0], gam[0], 7))
    W6 = rng.standard_normal((2, 3, prob.n_clients, prob.dim))
    close(prob.local_steps(tensor(W6), tensor(W6 * 0), 0.5 * gam[0], 4), prob.local_steps(W6, W6 * 0, 0.5 * gam[0], 4))


def test_local_steps_float32_on_the_device(problem):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((R, problem.n_clients, problem.dim))
    H = rng.standard_normal(W.shape)
    gam, _ = hyper(problem)
    want = problem.local_steps(W, H, gam, KS)
    got = problem.local_steps(tensor(W, torch.float32), tensor(H, torch.float32), gam, KS)
    assert got.dtype == torch.float32
    close(got, want, rtol=2e-5)
    with pytest.raises(ValueError, match="k must be"):
        problem.local_steps(tensor(W), tensor(H), gam, -1)


def test_supports_local_steps_on_device_floats_only(problem):
    assert problem.supports_local_steps(torch.zeros(2, dtype=torch.float64))
    assert problem.supports_local_steps(torch.zeros(2, dtype=torch.float32))
    assert not problem.supports_local_steps(torch.zeros(2, dtype=torch.float16))
    assert not problem.supports_local_steps(np.zeros(2, dtype=np.float16))


def local_step_count(prob):
    W = torch.zeros((8, prob.n_clients, prob.dim), dtype=torch.float64)
    gam = np.full(8, 1.0 / float(prob.smoothness().max()))
    prob.local_steps(W, W, gam, np.arange(8) + 1)  # the eigendecomposition, once
    with kernels.count_kernels() as count:
        prob.local_steps(W, W, gam, np.arange(8) + 100)
    return count


def test_local_steps_kernels_do_not_depend_on_n_and_nothing_is_read_back():
    small, large = (local_step_count(ridge_problem(n)) for n in (50, 200))
    assert small.kernels == large.kernels <= 80, (small.ops, large.ops)
    for c in (small, large):
        assert c.host_syncs == c.to_host == 0 and c.from_host <= 1  # the per-run k, once


# -- run_rounds ---------------------------------------------------------------------------------

#: Every rule supports_rounds accepts on ridge (dense local steps, fixed control variates).
MAKERS = {
    "proxskip": lambda g, p: A.proxskip(g, p),
    "final_topk": lambda g, p: A.final_topk(g, p, KS),
    "sparse_proxskip": lambda g, p: A.sparse_proxskip(g, p, KS),
    "accelerated_server_pruning": lambda g, p: A.accelerated_server_pruning(g, p, KS),
    "asp_modified": lambda g, p: A.asp_modified(g, p, KS),
    "sps_modified": lambda g, p: A.sps_modified(g, p, KS),
    "fedavg": lambda g, p: A.fedavg(g, np.rint(1 / p).astype(np.int64)),
    "fedht": lambda g, p: A.fedht(g, np.rint(1 / p).astype(np.int64), KS),
    "scaffold": lambda g, p: A.scaffold(g, np.rint(1 / p).astype(np.int64)),
}
#: Recorded quantities compared (sum_h_norm and consensus_gap are 0 to rounding after a round: no relative check).
HISTORY = ("loss", "loss_dense", "metric", "dist_opt", "mean_h_norm", "w_norm")


def assert_same_run(got, want, rtol=1e-9, bits_rtol=None):
    """The same run: iterates, output and recorded quantities to ``rtol``, counts exactly (bits to
    ``bits_rtol`` where given)."""
    assert got.status == want.status and got.message == want.message
    close(got.state.w, want.state.w, rtol)
    close(got.state.h, want.state.h, rtol)
    close(got.w, want.w, rtol)
    for key in ("iteration", "communications", "bits_up", "bits_down", "upload_nnz"):
        if bits_rtol is None or key in ("iteration", "communications"):
            np.testing.assert_array_equal(got.history[key], want.history[key])
        else:
            close(got.history[key], want.history[key], bits_rtol)
    for key in HISTORY:
        if key in want.history:
            close(got.history[key], want.history[key], rtol)


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_run_rounds_on_the_device_equals_numpy(problem, name):
    gam, ps = hyper(problem)
    gam = np.minimum(gam, 1.0 / float(problem.smoothness().max()))  # every run converges
    alg = MAKERS[name](gam, ps)
    seeds = [11, 12, 13, 14, 15]
    w0 = initial_models(problem, seeds, R)
    assert supports_rounds(alg, problem, w0=tensor(w0))
    want = proxfed.run_rounds(alg, problem, 24, seed=seeds, every=5, w0=w0, split="train")
    got = proxfed.run_rounds(alg, problem, 24, seed=seeds, every=5, w0=tensor(w0), split="train")
    assert isinstance(got.state.w, torch.Tensor) and isinstance(got.history["loss"], np.ndarray)
    assert got.config["array_namespace"].endswith("torch") and want.config["array_namespace"].endswith("numpy")
    assert_same_run(got, want)


def test_run_rounds_float32_on_the_device(problem):
    gam, ps = hyper(problem)
    alg = A.sparse_proxskip(np.minimum(gam, 1.0 / float(problem.smoothness().max())), ps, KS)
    w0 = initial_models(problem, 3, R)
    want = proxfed.run_rounds(alg, problem, 20, seed=3, every=4, w0=w0, split="train")
    got = proxfed.run_rounds(alg, problem, 20, seed=3, every=4, w0=tensor(w0, torch.float32), split="train")
    assert got.state.w.dtype == torch.float32 and got.config["dtype"] == "torch.float32"
    np.testing.assert_array_equal(got.history["communications"], want.history["communications"])
    close(got.history["loss"], want.history["loss"], rtol=1e-4)
    close(got.history["metric"], want.history["metric"], rtol=1e-4)


def test_run_rounds_a_diverging_run_is_frozen_as_on_numpy(problem):
    g = 1.0 / float(problem.smoothness().max())
    alg = A.proxskip(np.array([g, 60 * g, 0.5 * g]), np.array([0.3, 0.3, 0.5]))
    w0 = initial_models(problem, [0, 1, 2], 3)
    want = proxfed.run_rounds(alg, problem, 40, seed=[0, 1, 2], every=3, w0=w0)
    got = proxfed.run_rounds(alg, problem, 40, seed=[0, 1, 2], every=3, w0=tensor(w0))
    assert want.status == "diverged" and got.diverged.tolist() == want.diverged.tolist() == [False, True, False]
    assert_same_run(got, want)
    single = A.proxskip(60 * g, 0.3)
    want = proxfed.run_rounds(single, problem, 40, seed=1, w0=w0[1])
    got = proxfed.run_rounds(single, problem, 40, seed=1, w0=tensor(w0[1]))
    assert got.status == want.status == "diverged" and got.state.t == want.state.t


def round_count(prob, C):
    """What run_rounds dispatches for C rounds of batched Sparse-ProxSkip (records at start and end only)."""
    g = 1.0 / float(prob.smoothness().max())
    alg = A.sparse_proxskip(np.full(8, g), np.linspace(0.1, 0.6, 8), np.arange(8) % 3 + 2)
    w0 = torch.zeros((8, prob.dim), dtype=torch.float64)
    kw = dict(seed=list(range(8)), w0=w0, split=None, reference=None)
    proxfed.run_rounds(alg, prob, 2, every=2, **kw)  # the eigendecomposition and the constants, once
    with kernels.count_kernels() as count:
        proxfed.run_rounds(alg, prob, C, every=C, **kw)
    return count


def test_kernels_per_round_do_not_depend_on_n():
    per_round = []
    for n in (50, 200):
        prob = ridge_problem(n)
        two, six = round_count(prob, 2), round_count(prob, 6)
        per_round.append({f: (getattr(six, f) - getattr(two, f)) / 4 for f in ("kernels", "host_syncs", "to_host")})
    assert per_round[0] == per_round[1], per_round
    # a round: local_steps, then the communication of every run (its bit tallies stay on the device);
    # read back: which runs are finite
    assert per_round[0]["kernels"] <= 130 and per_round[0]["host_syncs"] == 0 and per_round[0]["to_host"] == 1


# -- the exact driver (proxfed.run with communications), tune and the reproductions --------------

@pytest.mark.parametrize("name", ["sparse_proxskip", "sparse_proxskip_local"])
def test_exact_driver_on_the_device_equals_numpy(problem, name):
    """With a closed form the device jumps over stretches without a coin (local_steps on the device)."""
    gam, ps = hyper(problem)
    alg = getattr(A, name)(np.minimum(gam, 1.0 / float(problem.smoothness().max())), ps, KS)
    seeds = [4, 5, 6, 7, 8]
    T = int(last_communications(alg, 15, seed=seeds, runs=R).max())
    w0 = initial_models(problem, seeds, R)
    kw = dict(seed=seeds, every=9, communications=15, split="train")
    want = proxfed.run(alg, problem, T, w0=w0, **kw)
    got = proxfed.run(alg, problem, T, w0=tensor(w0), **kw)
    np.testing.assert_array_equal(got.state.communications, [15] * R)
    assert_same_run(got, want)


def test_tune_runs_the_rounds_on_the_device(problem):
    from proxfed.prox import sparsity_to_k
    from proxfed.tune import tune_method

    k = sparsity_to_k(problem.dim, 0.8)
    kw = dict(communications=6, n_stage1=4, n_stage2=0, seed=1, p_range=(0.2, 1.0), split="train")
    on_numpy = tune_method("sparse_proxskip", problem, [k], **kw)
    on_torch = tune_method("sparse_proxskip", problem, [k], like=torch.empty(0, dtype=torch.float64), **kw)
    assert [r["driver"] for r in on_torch.info["runs"]] == ["run_rounds"]
    close([t["score"] for t in on_torch.trials], [t["score"] for t in on_numpy.trials])
    assert on_torch.best == on_numpy.best


def test_final_runs_use_the_rounds_on_the_device(problem, tmp_path):
    from proxfed.experiments.paper import BUDGETS
    from proxfed.experiments.pipeline import Pipeline as _Pipeline

    budget = BUDGETS["blogfeedback"]["smoke"]
    params = {"gamma": 1.0 / float(problem.smoothness().max()), "p": 0.3}
    out = {}
    for backend in ("numpy", "torch"):
        pipe = _Pipeline("blogfeedback", tmp_path / backend, budget, (), 0, False, lambda *_: None)
        pipe.like = proxfed._backend.array_template(backend)
        cell = tmp_path / backend / "cell"
        hist, summ = pipe.final_run("sparse_proxskip", 0.8, params, problem, cell, 10, split="train")
        assert summ["driver"] == "run_rounds"
        assert json.loads((cell / "config.json").read_text())["array_namespace"].endswith(backend)
        out[backend] = hist, summ
    (h_np, s_np), (h_t, s_t) = out["numpy"], out["torch"]
    close(s_t["metric"], s_np["metric"])
    close(s_t["objective"], s_np["objective"])
    close(h_t["loss"], h_np["loss"])
    assert s_t["iterations"] == s_np["iterations"]


@pytest.mark.data
def test_blogfeedback_rounds_on_the_device_equal_numpy(shared_data, tmp_path):
    """Real data (every 9th BlogFeedback client: its Gram block and row buckets), three seeds.

    ProxSkip and Final-TopK equal NumPy to 1e-9, and their bit counts exactly: feature columns
    zero for a client (six for every client here) stay exactly 0 in both closed forms, as in
    explicit steps (tests/test_zero_columns.py). Sparse-ProxSkip's uploads meet
    exact ties: duplicate feature columns give two coordinates of a client the same magnitude
    in exact arithmetic, at the K-th place, and the last bit decides which is kept (NumPy's
    explicit steps and its closed form disagree there too); the loss and metric agree to 1e-6.
    """
    from proxfed import FederatedDataset
    from proxfed.data import load_blogfeedback

    ds = load_blogfeedback(shared_data / "blogfeedback", cache_dir=tmp_path)
    prob = Ridge(FederatedDataset.from_clients([ds.client(i) for i in range(0, ds.n_clients, 9)]), alpha=1.0)
    L = max(float(np.sum(A_ * A_)) for A_, _ in prob.dataset.clients()) + prob.alpha / 2  # >= the largest L_i
    gam, ps, ks = np.array([1.0, 0.5, 1.0]) / L, np.array([0.2, 0.3, 0.1]), np.array([28, 14, 56])
    w0 = initial_models(prob, [1, 2, 3], 3)
    kw = dict(seed=[1, 2, 3], every=4, split="train")
    for alg in (A.proxskip(gam, ps), A.final_topk(gam, ps, ks)):
        assert_same_run(proxfed.run_rounds(alg, prob, 12, w0=tensor(w0), **kw),
                        proxfed.run_rounds(alg, prob, 12, w0=w0, **kw))
    alg = A.sparse_proxskip(gam, ps, ks)
    got, want = (proxfed.run_rounds(alg, prob, 12, w0=w, **kw) for w in (tensor(w0), w0))
    np.testing.assert_array_equal(got.history["communications"], want.history["communications"])
    close(got.history["loss"], want.history["loss"], rtol=1e-6)
    close(got.history["metric"], want.history["metric"], rtol=1e-6)
