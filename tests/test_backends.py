"""The backend matrix: the same runs and gradients on NumPy, array-api-strict and torch (CuPy/CUDA behind ``gpu``).

The array library and device of the result follow the input (``w0`` for
:func:`proxfed.run`, ``W`` for the problems); results agree with NumPy to
~1e-12 in float64 and ~1e-4 in float32. The ``_backend`` helpers are
checked against plain NumPy/SciPy on every backend.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import proxfed
from proxfed import FederatedDataset
from proxfed import _backend as B
from proxfed import algorithms as A
from proxfed.data import make_sparse_regression
from proxfed.problems import Ridge, SoftmaxRegression

from . import reference as ref

xs = pytest.importorskip("array_api_strict")

RTOL64 = 1e-12
RTOL32 = 1e-4


# -- backends ------------------------------------------------------------------------


def _torch():
    return pytest.importorskip("torch")


def _cupy():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device for CuPy")
    except Exception as err:  # CUDA driver or runtime missing
        pytest.skip(f"CuPy cannot reach a CUDA device: {err}")
    return cupy


def _torch_cuda():
    torch = _torch()
    if not torch.cuda.is_available():
        pytest.skip("torch.cuda is not available")
    return torch


def put(backend: str, a, dtype="float64"):
    """Host array ``a`` on ``backend`` (floating arrays converted to ``dtype``)."""
    a = np.asarray(a)
    if a.dtype.kind == "f":
        a = a.astype(dtype)
    if backend == "numpy":
        return a
    if backend == "strict-device1":
        return xs.asarray(a, device=xs.Device("device1"))
    if backend == "strict-no-float64":
        return xs.asarray(a, device=xs.Device("no_float64"))
    if backend == "torch":
        return _torch().asarray(a)
    if backend == "cupy":
        return _cupy().asarray(a)
    if backend == "torch-cuda":
        return _torch_cuda().asarray(a, device="cuda")
    raise ValueError(backend)


def check_same_place(out, like):
    """``out`` is an array of ``like``'s library, on ``like``'s device.

    (NumPy reductions to 0-d give NumPy scalars, which count as NumPy arrays.)
    """
    if isinstance(like, np.ndarray) and isinstance(out, np.generic):
        return
    assert type(out) is type(like), (type(out), type(like))
    assert B.namespace(out) is B.namespace(like) or B.namespace(out).__name__ == B.namespace(like).__name__
    assert str(B.device_of(out)) == str(B.device_of(like)), (B.device_of(out), B.device_of(like))


BACKENDS = [
    "numpy",
    "strict-device1",
    "torch",
    pytest.param("cupy", marks=pytest.mark.gpu),
    pytest.param("torch-cuda", marks=pytest.mark.gpu),
]
NON_NUMPY = BACKENDS[1:]


def assert_close(actual, desired, rtol=RTOL64, scale=None):
    actual = B.to_numpy(actual)
    desired = np.asarray(B.to_numpy(desired), dtype=np.float64)
    if scale is None:
        scale = float(np.max(np.abs(desired))) if desired.size else 0.0
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale)


# -- problems ------------------------------------------------------------------------


def ridge():
    ds = make_sparse_regression(n_clients=6, n_features=5, n_informative=2, mean_client_size=8,
                                n_test=20, n_validation=10, seed=3)
    prob = Ridge(ds, alpha=1.0)
    assert prob._gram_clients.size and prob._buckets  # both layouts
    return prob


def softmax():
    g = np.random.default_rng(0)
    clients = [(g.normal(size=(n, 3)), g.integers(0, 4, size=n)) for n in (1, 3, 4, 7, 12)]
    clients[-1][1][:4] = np.arange(4)
    return SoftmaxRegression(FederatedDataset.from_clients(clients), alpha=0.1)


RUNS = {
    "sparse_proxskip": lambda gamma: A.sparse_proxskip(gamma, 0.3, 3),
    "randprox_l1": lambda gamma: A.randprox_l1(gamma, 0.3, 10.0, 3),
    # round-based rules: masks on the iterates' device, participants and regrowth from host streams
    "fedsparsify_local": lambda gamma: A.fedsparsify_local(gamma, 4, 0.5, 10, clients_per_round=4),
    "random_pruning": lambda gamma: A.random_pruning(gamma, 4, 0.5, 10, clients_per_round=4),
    "jmwst": lambda gamma: A.jmwst(gamma, 4, 0.5, 10, clients_per_round=4, layers=[(0, 5)], stage1_fraction=0.5),
}


def run_on(backend, name, iterations=40, dtype="float64", **kw):
    prob = ridge()
    gamma = 1.0 / float(np.max(prob.smoothness()))
    w0 = put(backend, np.random.default_rng(1).normal(size=prob.dim), dtype)
    res = proxfed.run(RUNS[name](gamma), prob, iterations, w0=w0, seed=7, every=5, **kw)
    return res, w0


# -- whole runs ------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(RUNS))
@pytest.mark.parametrize("backend", NON_NUMPY)
def test_run_matches_numpy(backend, name):
    expected, _ = run_on("numpy", name)
    res, w0 = run_on(backend, name)
    assert res.status == expected.status == "completed"
    for out in (res.w, res.state.w, res.state.h):
        check_same_place(out, w0)
    assert res.w.dtype == w0.dtype and res.state.w.dtype == w0.dtype
    assert_close(res.w, expected.w)
    assert_close(res.state.w, expected.state.w)
    assert_close(res.state.h, expected.state.h)
    np.testing.assert_array_equal(res.state.bits_up, expected.state.bits_up)
    np.testing.assert_array_equal(res.state.communications, expected.state.communications)
    assert set(res.history) == set(expected.history)
    for key in ("loss", "loss_dense", "mean_h_norm", "w_norm", "dist_opt", "metric", "bits_up"):
        assert_close(res.history[key], expected.history[key], scale=np.max(np.abs(expected.history[key])))
    # sum_i h_i is zero up to rounding: compare on the scale of the h_i themselves
    assert_close(res.history["sum_h_norm"], expected.history["sum_h_norm"],
                 scale=np.max(expected.history["mean_h_norm"]) * ridge().n_clients)
    assert res.config["dtype"] == str(w0.dtype)


def test_run_on_numpy_returns_numpy():
    res, _ = run_on("numpy", "sparse_proxskip")
    assert isinstance(res.w, np.ndarray) and isinstance(res.state.w, np.ndarray)
    assert res.w.dtype == np.float64


@pytest.mark.parametrize("name", ["sparse_proxskip", "randprox_l1", "fedsparsify_local", "jmwst"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_run_matches_numpy(backend, name):
    """Per-run hyperparameters (gamma, p, k, lam; local steps) are moved to the iterates' device."""
    prob = ridge()
    gamma = 1.0 / float(np.max(prob.smoothness())) * np.array([1.0, 0.5])
    p, k = np.array([0.3, 0.6]), np.array([2, 4])
    if name == "sparse_proxskip":
        alg = A.sparse_proxskip(gamma, p, k, grad_at="pruned")
    elif name == "randprox_l1":
        alg = A.randprox_l1(gamma, p, np.array([10.0, 3.0]), k)
    elif name == "fedsparsify_local":
        alg = A.fedsparsify_local(gamma, np.array([2, 3]), 0.5, 10, clients_per_round=4)
    else:
        alg = A.jmwst(gamma, np.array([2, 3]), 0.5, 10, clients_per_round=4, layers=[(0, 5)], stage1_fraction=0.5)
    w0_np = np.random.default_rng(2).normal(size=(2, prob.dim))
    expected = proxfed.run(alg, prob, 30, w0=w0_np, seed=[3, 4], every=10)
    w0 = put(backend, w0_np)
    res = proxfed.run(alg, prob, 30, w0=w0, seed=[3, 4], every=10)
    check_same_place(res.w, w0)
    check_same_place(res.state.w, w0)
    assert_close(res.w, expected.w)
    assert_close(res.state.h, expected.state.h)
    np.testing.assert_array_equal(res.state.bits_up, expected.state.bits_up)


@pytest.mark.parametrize("backend", BACKENDS)
def test_resumed_run_is_the_same_trajectory(backend):
    """Coins continue at ``state.t``: 25 + 15 iterations = 40 iterations."""
    full, w0 = run_on(backend, "sparse_proxskip", iterations=40)
    prob = ridge()
    alg = RUNS["sparse_proxskip"](1.0 / float(np.max(prob.smoothness())))
    first = proxfed.run(alg, prob, 25, w0=w0, seed=7)
    second = proxfed.run(alg, prob, 15, state=first.state, seed=7)
    check_same_place(second.w, w0)
    assert second.state.t == 40
    assert_close(second.state.w, full.state.w)
    np.testing.assert_array_equal(second.state.bits_up, full.state.bits_up)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["fediht", "scaffold"])
def test_baselines_match_numpy(backend, name):
    prob = ridge()
    gamma = 1.0 / float(np.max(prob.smoothness()))
    alg = A.fediht(gamma, 4, 3) if name == "fediht" else A.scaffold(gamma, 4)
    w0_np = np.random.default_rng(4).normal(size=prob.dim)
    expected = proxfed.run(alg, prob, 24, w0=w0_np, every=6)
    w0 = put(backend, w0_np)
    res = proxfed.run(alg, prob, 24, w0=w0, every=6)
    check_same_place(res.w, w0)
    assert_close(res.state.w, expected.state.w)
    assert_close(res.state.h, expected.state.h, scale=max(1.0, np.max(np.abs(expected.state.h))))


@pytest.mark.parametrize("backend", ["torch", pytest.param("cupy", marks=pytest.mark.gpu),
                                     pytest.param("torch-cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_run_rounds_matches_numpy(backend, dtype):
    """Closed-form rounds on the device (per-run gamma, p and k): NumPy's to 1e-9, float32 to 1e-4."""
    prob = ridge()
    L = float(np.max(prob.smoothness()))
    alg = A.sparse_proxskip(np.array([1.0, 0.5, 1.0]) / L, np.array([0.2, 0.5, 0.9]), np.array([2, 3, 4]))
    w0_np = np.random.default_rng(5).normal(size=(3, prob.dim))
    expected = proxfed.run_rounds(alg, prob, 15, w0=w0_np, seed=[1, 2, 3], every=5)
    w0 = put(backend, w0_np, dtype)
    res = proxfed.run_rounds(alg, prob, 15, w0=w0, seed=[1, 2, 3], every=5)
    check_same_place(res.state.w, w0)
    assert res.state.w.dtype == w0.dtype
    rtol = 1e-9 if dtype == "float64" else RTOL32
    assert_close(res.state.w, expected.state.w, rtol=rtol)
    for key in ("loss", "metric"):
        assert_close(res.history[key], expected.history[key], rtol=rtol)
    np.testing.assert_array_equal(res.history["iteration"], expected.history["iteration"])
    if dtype == "float64":
        np.testing.assert_array_equal(res.state.bits_up, expected.state.bits_up)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("which", ["ridge", "softmax"])
def test_problem_grads_match_numpy(backend, which):
    prob = ridge() if which == "ridge" else softmax()
    W_np = np.random.default_rng(3).normal(size=(2, prob.n_clients, prob.dim))
    W = put(backend, W_np)
    v_np, g_np = prob.value_and_grad(W_np)
    for out, want in [(prob.value(W), v_np), (prob.grad(W), g_np), (prob.value_and_grad(W)[0], v_np),
                      (prob.value_and_grad(W)[1], g_np), (prob.objective(W[0, 0, :]), prob.objective(W_np[0, 0])),
                      (prob.full_grad(W[:, 0, :]), prob.full_grad(W_np[:, 0]))]:
        check_same_place(out, W)
        assert out.dtype == W.dtype
        assert_close(out, want)


def test_softmax_grads_match_reference_on_strict_device():
    prob = softmax()
    rp = ref.SoftmaxReference(list(prob.dataset.clients()), prob.alpha, prob.n_classes)
    W_np = np.random.default_rng(9).normal(size=(prob.n_clients, prob.dim))
    g = prob.grad(put("strict-device1", W_np))
    assert_close(g, [rp.grad(i, W_np[i]) for i in range(prob.n_clients)])


# -- float32 on a device without float64 --------------------------------------------


@pytest.mark.parametrize("name", sorted(RUNS))
def test_float32_run_on_no_float64_device(name):
    expected, _ = run_on("numpy", name)
    res, w0 = run_on("strict-no-float64", name, dtype="float32")
    assert res.status == "completed"
    assert w0.dtype == xs.float32
    for out in (res.w, res.state.w, res.state.h):
        check_same_place(out, w0)
        assert out.dtype == xs.float32
    assert_close(res.state.w, expected.state.w, rtol=RTOL32)
    assert_close(res.w, expected.w, rtol=RTOL32)
    np.testing.assert_array_equal(res.state.communications, expected.state.communications)
    assert_close(res.history["loss"], expected.history["loss"], rtol=RTOL32)


@pytest.mark.parametrize("backend", ["strict-no-float64", "torch"])
@pytest.mark.parametrize("which", ["ridge", "softmax"])
def test_float32_grads(backend, which):
    prob = ridge() if which == "ridge" else softmax()
    W_np = np.random.default_rng(3).normal(size=(prob.n_clients, prob.dim))
    W = put(backend, W_np, "float32")
    v, g = prob.value_and_grad(W)
    check_same_place(g, W)
    assert g.dtype == W.dtype and v.dtype == W.dtype
    v64, g64 = prob.value_and_grad(W_np)
    assert_close(v, v64, rtol=RTOL32)
    assert_close(g, g64, rtol=RTOL32)


# -- _backend helpers ------------------------------------------------------------------

HOST_BACKENDS = ["numpy", "strict-device1", "torch"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_to_numpy_from_numpy_roundtrip(backend):
    a = np.arange(6.0).reshape(2, 3)
    x = put(backend, a)
    np.testing.assert_array_equal(B.to_numpy(x), a)
    y = B.from_numpy(a + 1, like=x)
    check_same_place(y, x)
    assert y.dtype == x.dtype
    idx = B.from_numpy(np.array([0, 2]), like=x)
    assert str(B.device_of(idx)) == str(B.device_of(x))
    assert B.namespace(idx).isdtype(idx.dtype, "integral")


tie_rows = hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=7),
                      elements=st.integers(-3, 3).map(float))


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@given(x=tie_rows, data=st.data())
def test_topk_mask_exactly_k_lowest_index_ties(backend, x, data):
    d = x.shape[-1]
    k = data.draw(st.integers(1, d))
    m = B.to_numpy(B.topk_mask(put(backend, x), k))
    assert m.dtype == bool
    np.testing.assert_array_equal(m.sum(axis=-1), k)
    np.testing.assert_array_equal(m, np.array([ref.topk_mask(row, k) for row in x]))
    t = B.topk(put(backend, x), k)
    np.testing.assert_array_equal(B.to_numpy(t), np.array([ref.topk(row, k) for row in x]))


@given(zeros=st.floats(0.0, 0.95), k=st.integers(1, 40), seed=st.integers(0, 2**16),
       dtype=st.sampled_from(["float64", "float32", "float16"]), negative=st.booleans())
def test_top_scores_mask_on_numpy_either_selection_equals_the_reference(zeros, k, seed, dtype, negative):
    """NumPy picks its k-th largest two exact ways (low-end ties or not); both give the reference mask."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 6, size=(9, 40)).astype(dtype)  # ties everywhere, not only at the minimum
    a[rng.random(a.shape) < zeros] = 0.0
    if negative:  # scores, not magnitudes: the low end is -1, as where a coordinate is ranked last
        a[a == 0] = -1.0
    for view in (a, np.asfortranarray(a), a[:, ::-1]):
        want = np.array([np.isin(np.arange(40), np.argsort(-row, kind="stable")[:k]) for row in view])
        np.testing.assert_array_equal(B.top_scores_mask(view, k), want)


def test_low_end_ties_sees_the_zeros_of_sparse_magnitudes():
    rng = np.random.default_rng(0)
    dense = rng.random((8, 554, 281))
    sparse = dense * (rng.random(dense.shape) < 0.25)
    assert B._low_end_ties(dense) < 0.01 and 0.7 < B._low_end_ties(sparse) < 0.8  # the two selections
    for a in (dense, sparse, sparse.transpose(1, 0, 2)):  # a non-contiguous view too
        np.testing.assert_array_equal(B._kth_largest(a, 28, np), np.sort(a, axis=-1)[..., -28:-27])
    assert B._low_end_ties(sparse.transpose(1, 0, 2)) > 0.7
    assert B._low_end_ties(np.zeros((0, 5))) == 0.0 and B._low_end_ties(np.zeros((2, 0, 5))) == 0.0
    assert B._low_end_ties(np.array([0.0, 0.0, 1.0])) == 2 / 3  # one row


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@given(x=tie_rows, data=st.data())
def test_topk_mask_per_row_k(backend, x, data):
    rows, d = x.shape
    k = np.array(data.draw(st.lists(st.integers(1, d), min_size=rows, max_size=rows)))
    m = B.to_numpy(B.topk_mask(put(backend, x), k))
    np.testing.assert_array_equal(m.sum(axis=-1), k)
    np.testing.assert_array_equal(m, np.array([ref.topk_mask(row, kr) for row, kr in zip(x, k)]))


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_mask_per_run_k_on_batched_iterates(backend):
    x = np.random.default_rng(0).integers(-2, 3, size=(3, 4, 6)).astype(float)
    k = np.array([1, 3, 6])
    m = B.to_numpy(B.topk_mask(put(backend, x), k[:, None]))
    for r in range(3):
        for i in range(4):
            np.testing.assert_array_equal(m[r, i], ref.topk_mask(x[r, i], k[r]))
    # the same through the TopK operator
    out = proxfed.prox.TopK(k).prox(put(backend, x), 1.0)
    check_same_place(out, put(backend, x))
    np.testing.assert_array_equal(B.to_numpy(out), np.where(m, x, 0.0))


@pytest.mark.parametrize("backend", BACKENDS)
def test_topk_edge_cases(backend):
    x = put(backend, np.array([[0.0, -2.0, 2.0, 1.0], [5.0, 5.0, -5.0, 5.0]]))
    np.testing.assert_array_equal(B.to_numpy(B.topk_mask(x, 4)), np.ones((2, 4), bool))
    np.testing.assert_array_equal(B.to_numpy(B.topk_mask(x, 1)), [[False, True, False, False],
                                                                   [True, False, False, False]])
    # by magnitude, not signed value
    np.testing.assert_array_equal(B.to_numpy(B.topk(x, 2)), [[0.0, -2.0, 2.0, 0.0], [5.0, 5.0, 0.0, 0.0]])
    for bad in (0, 5):
        with pytest.raises(ValueError):
            B.topk_mask(x, bad)
    with pytest.raises(ValueError):
        B.topk_mask(x, np.array([1, 0]))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("sizes", [[2, 1, 3], [0, 2, 0, 4, 0]], ids=["nonempty", "with_empty"])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_segment_sum_vs_loop(backend, sizes, axis):
    n = sum(sizes)
    shape = [3, 3]
    shape[axis] = n
    v = np.random.default_rng(1).normal(size=shape)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    out = B.segment_sum(put(backend, v), offsets, axis=axis)
    check_same_place(out, put(backend, v))
    want = np.stack([np.sum(np.take(v, np.arange(lo, hi), axis=axis), axis=axis)
                     for lo, hi in zip(offsets[:-1], offsets[1:])], axis=axis % 2)
    assert_close(out, want)
    for bad in ([1, n], [0, n - 1], [0, n + 1], [0, 2, 1, n]):
        with pytest.raises(ValueError):
            B.segment_sum(put(backend, v), bad, axis=axis)


@pytest.mark.parametrize("backend", HOST_BACKENDS)
@given(x=hnp.arrays(np.float64, (3, 5), elements=st.floats(-1e3, 1e3)))
def test_logsumexp_vs_scipy(backend, x):
    for axis in (0, 1, -1):
        for keepdims in (False, True):
            want = scipy.special.logsumexp(x, axis=axis, keepdims=keepdims)
            out = B.logsumexp(put(backend, x), axis=axis, keepdims=keepdims)
            assert tuple(out.shape) == want.shape
            np.testing.assert_allclose(B.to_numpy(out), want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logsumexp_large_values_on_device(backend):
    x = np.array([[1000.0, 1000.0, -1000.0], [-1e308, 0.0, -np.inf]])
    out = B.logsumexp(put(backend, x), axis=-1)
    check_same_place(out, put(backend, x))
    np.testing.assert_allclose(B.to_numpy(out), [1000.0 + np.log(2.0), 0.0])


@pytest.mark.parametrize("backend", HOST_BACKENDS)
def test_logsumexp_neg_inf_rows_like_scipy(backend):
    """A row of -inf (an empty sum) gives -inf, silently, as scipy.special.logsumexp does.

    The project's pytest configuration turns RuntimeWarnings from proxfed into errors.
    """
    x = np.array([[-np.inf, -np.inf, -np.inf], [-np.inf, 0.0, np.log(3.0)]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        want = scipy.special.logsumexp(x, axis=-1)
        got = B.to_numpy(B.logsumexp(put(backend, x), axis=-1))
    np.testing.assert_allclose(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
def test_soft_threshold_and_nnz(backend):
    x = np.array([[3.0, -0.5, -2.0, 0.0], [0.2, 1.0, -1.0, 4.0]])
    out = B.soft_threshold(put(backend, x), 0.5)
    check_same_place(out, put(backend, x))
    np.testing.assert_array_equal(B.to_numpy(out), ref.soft(x, 0.5))
    np.testing.assert_array_equal(B.to_numpy(B.nnz(put(backend, x))), [3, 4])
    np.testing.assert_array_equal(B.to_numpy(B.nnz(out)), [2, 3])


@given(x=hnp.arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 9)),
                   elements=st.floats(-1e30, 1e30) | st.sampled_from([0.0, -0.0, 1.5, -1.5])),
       data=st.data(), dtype=st.sampled_from(["float64", "float32"]))
def test_soft_threshold_equals_the_reference_bit_for_bit(x, data, dtype):
    """``x - clip(x, -tau, tau)`` gives exactly ``sign(x) * max(|x| - tau, 0)`` (up to the sign of zero)."""
    per_row = data.draw(st.lists(st.floats(0.0, 1e30) | st.just(1.5), min_size=len(x), max_size=len(x)))
    x = x.astype(dtype)
    for tau in (np.array(per_row, dtype=dtype)[:, None], per_row[0]):  # per run, and one Python float
        want = np.sign(x) * np.maximum(np.abs(x) - tau, 0)
        got = B.soft_threshold(x, tau)
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(got, want)


@given(seed=st.integers(0, 2**32), p=st.floats(0.01, 1.0), n=st.integers(0, 60), start=st.integers(0, 40),
       run=st.integers(0, 5))
def test_coin_flips_deterministic_and_resumable(seed, p, n, start, run):
    a = B.coin_flips(seed, p, n, run=run)
    np.testing.assert_array_equal(a, B.coin_flips(seed, p, n, run=run))
    assert a.dtype == bool and a.shape == (n,)
    # independent of where the sequence is entered (resuming)
    np.testing.assert_array_equal(B.coin_flips(seed, p, n, run=run, start=start),
                                  B.coin_flips(seed, p, start + n, run=run)[start:])
    # common random numbers: a larger p communicates at least whenever a smaller one does
    more = B.coin_flips(seed, min(1.0, 2 * p), n, run=run)
    assert np.all(more[a])


def test_coin_flips_statistics_and_validation():
    c = B.coin_flips(0, 0.3, 20000)
    assert abs(c.mean() - 0.3) < 0.02
    assert B.coin_flips(0, 1.0, 50).all()
    assert not np.array_equal(B.coin_flips(0, 0.5, 64, run=0), B.coin_flips(0, 0.5, 64, run=1))
    assert not np.array_equal(B.coin_flips(0, 0.5, 64), B.coin_flips(1, 0.5, 64))
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            B.coin_flips(0, bad, 10)
    with pytest.raises(ValueError):
        B.coin_flips(0, 0.5, 10, start=-1)


def test_algorithm_coins_are_the_backend_coins():
    alg = A.proxskip(0.1, 0.4)
    np.testing.assert_array_equal(alg.coins(30, seed=5), B.coin_flips(5, 0.4, 30))
    np.testing.assert_array_equal(alg.coins(10, seed=5, start=20), B.coin_flips(5, 0.4, 30)[20:])
    batched = A.proxskip(0.1, np.array([0.4, 0.7]))
    np.testing.assert_array_equal(batched.coins(30, seed=5, runs=2)[1], B.coin_flips(5, 0.7, 30, run=1))
    np.testing.assert_array_equal(batched.coins(30, seed=[8, 9], runs=2)[1], B.coin_flips(9, 0.7, 30, run=0))


def test_rng_keyed_streams():
    a = B.rng(3, 1, 2).random(8)
    np.testing.assert_array_equal(a, B.rng(3, 1, 2).random(8))  # same key, same stream
    for other in [(3, 2, 1), (3, 1, 3), (4, 1, 2), (3, 1)]:
        assert not np.array_equal(a, B.rng(*other).random(8)), other
    # a stream does not depend on what was drawn from another one before
    g = B.rng(3, 0, 0)
    g.random(1000)
    np.testing.assert_array_equal(B.rng(3, 1, 2).random(8), a)
    assert B.COIN_STREAM != B.INIT_STREAM
    with pytest.raises(ValueError, match="seed"):
        B.rng(-1)
    for bad_seed in (True, 1.5, "3"):  # not integers: refused, not converted
        with pytest.raises(TypeError, match="seed"):
            B.rng(bad_seed)
    with pytest.raises(ValueError):
        B.rng(0, -1)
