"""TorchProblem driven by the unchanged core engine: gradients, minibatches, augmentation, BatchNorm, runs.

* the vectorized (vmap) gradients equal a sequential per-client loop, and both equal plain torch autograd
  with clipping and weight decay;
* minibatches and augmentations are seeded by (seed, run, step, client), a resumed run is the same run;
* one federated round of every Algorithm-1 variant (and the baselines) on tiny random images runs and
  keeps sum_i h_i = 0, or breaks it for ASP and SPS-modified, as in the core;
* the torch-backend engine equals the NumPy engine on a linear model with full-batch gradients;
* BatchNorm running statistics are averaged at communication (or not) and carried in the state;
* CIFAR-10 through the core's reader and partitioner (pickle fixtures) and FEMNIST writers (real data).
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import proxfed  # noqa: E402
import proxfed_dl as D  # noqa: E402
from proxfed import FederatedDataset  # noqa: E402
from proxfed import _backend as B  # noqa: E402
from proxfed import algorithms as A  # noqa: E402
from proxfed.problems import SoftmaxRegression  # noqa: E402
from proxfed_dl.data import BatchSampler, draw_augmentation  # noqa: E402

F64 = torch.float64


def tiny_resnet_problem(n_clients=3, sizes=(9, 14, 6), batch_size=4, dtype=F64, **kw):
    data = D.random_image_clients(n_clients, list(sizes), image_shape=(3, 8, 8), n_classes=4, n_test=10, seed=1)
    return D.TorchProblem(data, lambda: D.resnet18(4, width=2), batch_size=batch_size, dtype=dtype, **kw)


def tiny_cnn_problem(batch_size=5, dtype=F64, **kw):
    data = D.random_image_clients(3, [7, 12, 9], image_shape=(1, 8, 8), n_classes=5, n_test=10, seed=2)
    return D.TorchProblem(data, lambda: D.leaf_cnn(5, hidden=6, image_size=8, channels=(2, 3)),
                          batch_size=batch_size, dtype=dtype, **kw)


def stacked(prob, runs=None, seed=0, noise=0.0):
    w0 = prob.initial_point(seed)
    shape = (prob.n_clients, prob.dim) if runs is None else (runs, prob.n_clients, prob.dim)
    W = w0.expand(shape).clone()
    if noise:
        W = W + noise * torch.randn(shape, dtype=W.dtype, generator=torch.Generator().manual_seed(seed))
    return W


# ---------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [tiny_resnet_problem, tiny_cnn_problem])
def test_vmap_gradients_equal_sequential_loop(make):
    pv = make(augment=True, clip_norm=0.5)
    pl = make(augment=True, clip_norm=0.5, vectorize=False)
    W = stacked(pv, noise=0.01)
    for prob in (pv, pl):
        prob.buffers_tracked = True
    for step in (0, 3):
        gv, gl = pv.grad(W, step), pl.grad(W, step)
        torch.testing.assert_close(gv, gl, rtol=1e-10, atol=1e-12)
        if pv.n_buffers:
            torch.testing.assert_close(pv.buffers, pl.buffers, rtol=1e-10, atol=1e-12)
    # run-batched iterates (R, N, P): run r draws stream r; run 0 equals the unbatched call
    WR = torch.stack([W, W])
    fresh = make(augment=True, clip_norm=0.5)
    fresh.buffers_tracked = True
    g2 = fresh.grad(WR, 5)
    single = make(augment=True, clip_norm=0.5)
    single.buffers_tracked = True
    g1 = single.grad(W, 5)
    assert g2.shape == WR.shape
    torch.testing.assert_close(g2[0], g1, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(g2[0], g2[1])


def test_gradient_equals_torch_autograd_with_clipping_and_weight_decay():
    """clip_grad_norm_ on the minibatch loss, then SGD's weight decay: the paper's training recipe."""
    for clip in (None, 0.05):
        prob = tiny_resnet_problem(weight_decay=1e-2, clip_norm=clip, augment=True)
        prob.buffers_tracked = True
        W = stacked(prob, noise=0.02)
        G = prob.grad(W, step=2)
        X, Y = tiny_resnet_problem(augment=True).minibatch(2)
        for i in range(prob.n_clients):
            model = prob.flat.load(W[i], prob.initial_buffers()[i], D.resnet18(4, width=2).double())
            model.train()
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(X[i]), Y[i]).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            ref = torch.cat([p.grad.reshape(-1) for p in model.parameters()]) + 1e-2 * W[i]
            torch.testing.assert_close(G[i], ref, rtol=1e-9, atol=1e-12)
            if clip is not None:
                assert float(torch.linalg.vector_norm(G[i] - 1e-2 * W[i])) <= clip * (1 + 1e-9)


def test_channels_last_and_bf16_autocast():
    kw = dict(dtype=torch.float32, augment=True)
    base = tiny_resnet_problem(**kw)
    W = stacked(base, noise=0.01)
    base.buffers_tracked = True
    g = base.grad(W, 1)
    cl = tiny_resnet_problem(channels_last=True, **kw)
    cl.buffers_tracked = True
    torch.testing.assert_close(cl.grad(W, 1), g, rtol=1e-4, atol=1e-5)
    # bf16 autocast: the per-client loop is exactly torch.autocast on the module, vmap agrees to ~1 %
    X, Y = base.minibatch(1)
    for vectorize in (False, True):
        bf = tiny_resnet_problem(autocast="bf16", vectorize=vectorize, **kw)
        bf.buffers_tracked = True
        gb = bf.grad(W, 1)
        assert gb.dtype == torch.float32 and torch.isfinite(gb).all()
        for i in range(3):
            model = bf.flat.load(W[i], bf.initial_buffers()[i], D.resnet18(4, width=2))
            model.train()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(X[i])
            torch.nn.functional.cross_entropy(out.float(), Y[i]).backward()
            ref = torch.cat([p.grad.reshape(-1) for p in model.parameters()]) + 1e-4 * W[i]
            rel = float(torch.linalg.vector_norm(gb[i] - ref) / torch.linalg.vector_norm(ref))
            assert rel < (0.05 if vectorize else 1e-6), (vectorize, i, rel)
    # without BatchNorm, bf16 gradients are close to float32 ones
    c32 = tiny_cnn_problem(dtype=torch.float32)
    Wc = stacked(c32, noise=0.01)
    gc = c32.grad(Wc, 0)
    gcb = tiny_cnn_problem(dtype=torch.float32, autocast="bf16").grad(Wc, 0)
    assert float(torch.linalg.vector_norm(gcb - gc) / torch.linalg.vector_norm(gc)) < 0.05
    with pytest.raises(ValueError, match="autocast"):
        tiny_resnet_problem(autocast="fp8")


def test_devices_are_stored_with_their_index(monkeypatch):
    """``cuda`` and ``cuda:0`` are one device: the problem stores the indexed form a tensor reports."""
    from proxfed_dl.devices import normalize_device

    assert normalize_device("cpu") == torch.device("cpu")
    assert normalize_device(torch.device("cuda", 1)) == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    assert normalize_device("cuda") == torch.device("cuda:2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert normalize_device("cuda") == torch.device("cuda:0")
    with pytest.raises(TypeError, match="device"):
        normalize_device(True)
    prob = tiny_cnn_problem()
    assert prob.device == torch.device("cpu")
    with pytest.raises(ValueError, match="is on meta"):
        prob.grad(torch.zeros((3, prob.dim), dtype=F64, device="meta"))


def test_channels_last_falls_back_when_the_convolution_library_fails():
    """A cuDNN failure under vmap with channels-last (seen on an H200 with bf16) retries contiguously, once."""
    kw = dict(dtype=torch.float32)
    ref = tiny_resnet_problem(**kw)
    ref.buffers_tracked = True
    W = stacked(ref, noise=0.01)
    g = ref.grad(W, 1)
    cl = tiny_resnet_problem(channels_last=True, **kw)
    cl.buffers_tracked = True
    real, calls = cl.flat.loss_and_stats, []

    def flaky(*args, **kwargs):
        calls.append(cl.channels_last)
        if cl.channels_last:
            raise RuntimeError("cuDNN error: CUDNN_STATUS_EXECUTION_FAILED")
        return real(*args, **kwargs)

    cl.flat.loss_and_stats = flaky
    with pytest.warns(UserWarning, match="channels-last under vmap failed"):
        gc = cl.grad(W, 1)
    assert cl.channels_last is False and calls[0] is True
    torch.testing.assert_close(gc, g, rtol=1e-4, atol=1e-5)
    # other errors are not swallowed
    other = tiny_resnet_problem(channels_last=True, **kw)
    other.buffers_tracked = True
    other.flat.loss_and_stats = lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch"))
    with pytest.raises(RuntimeError, match="shape mismatch"):
        other.grad(W, 1)


def test_straight_through_gradient_at_topk():
    """grad_at='pruned' (the core engine's option): the gradient at TopK(w) updates the dense w."""
    prob = tiny_cnn_problem()
    alg = D.make_algorithm("sparse_proxskip", prob, 0.1, 0.5, sparsity=0.8, grad_at="pruned")
    W = stacked(prob, noise=0.05)
    state = alg.init(prob, W[0]).replace(w=W)
    new = alg.step(state, prob, False)
    pruned = alg.sparsifier.prox(W)
    expected = W - 0.1 * tiny_cnn_problem().grad(pruned, 0)
    torch.testing.assert_close(new.w, expected, rtol=1e-12, atol=1e-14)
    assert int((pruned[0] != 0).sum()) == alg.sparsifier.k < prob.dim


# ---------------------------------------------------------------------------------------------
# minibatches and augmentation
# ---------------------------------------------------------------------------------------------


def test_minibatches_are_keyed_by_seed_run_step_client():
    prob = tiny_resnet_problem(seed=3)
    x0, y0 = prob.minibatch(4)
    x1, y1 = tiny_resnet_problem(seed=3).minibatch(4)
    torch.testing.assert_close(x0, x1, rtol=0, atol=0)
    assert torch.equal(y0, y1)
    assert not torch.equal(prob.minibatch(5)[0], x0)
    assert not torch.equal(tiny_resnet_problem(seed=4).minibatch(4)[0], x0)
    assert prob.minibatch(4, runs=2)[0].shape == (6, 4, 3, 8, 8)
    torch.testing.assert_close(prob.minibatch(4, runs=2)[0][:3], x0, rtol=0, atol=0)
    # shuffle sampling: one epoch of a client visits each of its rows once
    s = BatchSampler([12], batch_size=4, seed=0)
    rows = np.concatenate([s.indices(0, t, 7, 0) for t in range(3)])
    assert sorted(rows.tolist()) == list(range(12))
    assert not np.array_equal(np.concatenate([s.indices(0, t, 7, 0) for t in range(3, 6)]), rows)
    small = BatchSampler([3], batch_size=5, seed=0)  # fewer rows than the batch: straddles epochs
    assert small.indices(0, 0, 0, 0).shape == (5,)
    u = BatchSampler([10], batch_size=4, seed=0, mode="uniform")
    np.testing.assert_array_equal(u.indices(1, 2, 3, 0), BatchSampler([10], 4, 0, "uniform").indices(1, 2, 3, 0))
    assert len(set(u.indices(1, 2, 3, 0).tolist())) == 4
    with pytest.raises(ValueError, match="sampling"):
        BatchSampler([3], 2, 0, mode="epochs")


def numpy_crop_flip(x, offsets, flips, pad):
    """Plain reference: zero-pad, crop, mirror, one image at a time."""
    out = np.empty_like(x)
    for j in range(x.shape[0]):
        p = np.pad(x[j], ((0, 0), (pad, pad), (pad, pad)))
        oy, ox = offsets[j]
        img = p[:, oy:oy + x.shape[2], ox:ox + x.shape[3]]
        out[j] = img[:, :, ::-1] if flips[j] else img
    return out


def test_augmentation_is_seeded_and_matches_a_plain_reference():
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    offs, flips = draw_augmentation(5, 0, 7, 2, 6, 4)
    offs2, flips2 = draw_augmentation(5, 0, 7, 2, 6, 4)
    np.testing.assert_array_equal(offs, offs2)
    np.testing.assert_array_equal(flips, flips2)
    assert not np.array_equal(draw_augmentation(5, 0, 8, 2, 6, 4)[0], offs)
    assert offs.min() >= 0 and offs.max() <= 8
    y = D.random_crop_flip(x, torch.as_tensor(offs), torch.as_tensor(flips), 4)
    np.testing.assert_array_equal(B.to_numpy(y), numpy_crop_flip(x.numpy(), offs, flips, 4))
    ident = D.random_crop_flip(x, torch.full((6, 2), 4), torch.zeros(6, dtype=torch.bool), 4)
    torch.testing.assert_close(ident, x, rtol=0, atol=0)
    # the problem's training batches are augmented reproducibly; evaluation is not augmented
    a = tiny_resnet_problem(augment=True).minibatch(1)[0]
    b = tiny_resnet_problem(augment=True).minibatch(1)[0]
    plain = tiny_resnet_problem(augment=False).minibatch(1)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, plain)


# ---------------------------------------------------------------------------------------------
# the core engine on torch clients
# ---------------------------------------------------------------------------------------------

KEEPS_ZERO_SUM = {
    "proxskip": True, "final_topk": True, "sparse_proxskip": True, "sparse_proxskip_local": True,
    "accelerated_server_pruning": False, "asp_modified": True, "sps_modified": False,
}


@pytest.mark.parametrize("name", sorted(KEEPS_ZERO_SUM))
def test_one_round_of_every_algorithm1_variant(name):
    prob = tiny_resnet_problem()
    alg = D.make_algorithm(name, prob, gamma=0.05, p=0.5, sparsity=0.9)
    assert alg.name == name and type(alg).__name__ == "Algorithm1WithBuffers"
    coins = np.array([False, True, False, True])
    res = proxfed.run(alg, prob, 4, coins=coins, every=1)
    assert res.status == "completed"
    st = res.state
    assert isinstance(st.w, torch.Tensor) and st.w.dtype == F64 and st.w.shape == (3, prob.dim)
    assert int(st.communications) == 2 and st.extras["buffers"].shape == (3, prob.n_buffers)
    H = torch.sum(st.h, dim=0)
    scale = float(torch.linalg.vector_norm(st.h, dim=-1).mean())
    assert scale > 0
    ratio = float(torch.linalg.vector_norm(H)) / scale
    if KEEPS_ZERO_SUM[name]:
        assert ratio < 1e-10, ratio
    else:
        assert ratio > 1e-3, ratio
    assert np.allclose(res.history["sum_h_norm"][-1], float(torch.linalg.vector_norm(H)))
    K = D.make_algorithm(name, prob, 0.05, 0.5, sparsity=0.9)
    if name in ("sparse_proxskip", "sps_modified"):
        assert (st.upload_nnz == K.uplink.k).all()
    if name != "proxskip":
        assert int((res.w != 0).sum()) <= K.final.k  # evaluated after TopK
    assert np.all(np.isfinite(res.history["loss"])) and 0 <= res.history["metric"][-1] <= 1


@pytest.mark.parametrize("name", ["fedavg", "fediht", "scaffold"])
def test_baselines_drive_torch_clients(name):
    prob = tiny_cnn_problem()
    alg = D.make_algorithm(name, prob, gamma=0.05, p=0.5, sparsity=0.9)
    res = proxfed.run(alg, prob, 4, every=2)
    assert res.status == "completed" and int(res.state.communications) == 2
    assert isinstance(res.w, torch.Tensor)
    if name == "fediht":
        assert int((res.state.w[0] != 0).sum()) <= alg.topk.k


def test_weight_scope_and_random_schedule():
    prob = tiny_resnet_problem()
    alg = D.make_algorithm("sparse_proxskip", prob, 0.05, 0.5, sparsity=0.9, scope="weights", schedule="random")
    assert isinstance(alg.uplink, D.WeightTopK) and isinstance(alg.final, D.WeightTopK)
    assert alg.schedule == "random"
    res = proxfed.run(alg, prob, 4, seed=1)
    mask = prob.flat.prunable_mask()
    assert int((res.w[mask] != 0).sum()) <= alg.uplink.k
    with pytest.raises(ValueError, match="scope"):
        D.make_algorithm("sparse_proxskip", prob, 0.05, 0.5, scope="bn")
    with pytest.raises(ValueError, match="unknown algorithm"):
        D.make_algorithm("fedprox", prob, 0.05, 0.5)


def test_batched_runs_share_the_data_and_keep_their_own_streams():
    prob = tiny_cnn_problem()
    alg = A.sparse_proxskip(np.array([0.05, 0.1]), 0.5, 20)
    w0 = prob.initial_points(2, seed=0)
    res = proxfed.run(alg, prob, 4, w0=w0, every=2)
    assert res.state.w.shape == (2, 3, prob.dim) and res.history["loss"].shape == (3, 2)
    single = proxfed.run(A.sparse_proxskip(0.05, 0.5, 20), tiny_cnn_problem(), 4, w0=w0[0], every=2)
    torch.testing.assert_close(res.state.w[0], single.state.w, rtol=1e-12, atol=1e-14)
    assert isinstance(prob.score(res.w), np.ndarray) and prob.score(res.w).shape == (2,)


def test_torch_engine_equals_numpy_engine_on_a_linear_model():
    """Softmax regression as a torch Linear layer with full-batch gradients and weight decay = alpha.

    The core's SoftmaxRegression stores W (p x C) then c; torch's Linear stores weight (C x p) then
    bias: the runs agree after that permutation.
    """
    g = np.random.default_rng(0)
    p, C = 6, 3
    clients = [(g.normal(size=(n, p)) + g.normal(size=p), g.integers(0, C, n)) for n in (5, 9, 14, 7)]
    clients[2][1][:C] = np.arange(C)
    ds = FederatedDataset.from_clients(clients)
    alpha = 0.05
    ref = SoftmaxRegression(ds, alpha=alpha, n_classes=C, init="zeros")
    data = D.ImageClients(ds.X.reshape(-1, 1, 1, p), ds.y, ds.offsets, n_classes=C)
    model = lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(p, C))  # noqa: E731
    prob = D.TorchProblem(data, model, batch_size=None, weight_decay=alpha, weighting="samples", dtype=F64)
    assert prob.dim == ref.dim
    perm = np.concatenate([(np.arange(p)[None, :] * C + np.arange(C)[:, None]).ravel(), p * C + np.arange(C)])
    w0 = g.normal(size=ref.dim) * 0.3
    W = np.broadcast_to(w0, (4, ref.dim)).copy() + g.normal(size=(4, ref.dim)) * 0.1
    # the oracle itself
    np.testing.assert_allclose(B.to_numpy(prob.grad(torch.as_tensor(W[:, perm]), 0)), ref.grad(W)[:, perm],
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(B.to_numpy(prob.value(torch.as_tensor(W[:, perm]))), ref.value(W), rtol=1e-12)
    # whole runs: Sparse-ProxSkip (random coins) and ASP
    gamma = 1.0 / float(np.max(ref.smoothness()))
    for alg in (A.sparse_proxskip(gamma, 0.3, 7), A.accelerated_server_pruning(gamma, 0.3, 7)):
        r_np = proxfed.run(alg, ref, 40, w0=w0, seed=5, every=10, reference=None)
        r_t = proxfed.run(alg, prob, 40, w0=torch.as_tensor(w0[perm]), seed=5, every=10)
        assert isinstance(r_t.state.w, torch.Tensor)
        for a, b in ((r_t.state.w, r_np.state.w), (r_t.state.h, r_np.state.h), (r_t.w, r_np.w)):
            np.testing.assert_allclose(B.to_numpy(a), np.asarray(b)[..., perm], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(r_t.history["loss"], r_np.history["loss"], rtol=1e-11)
        np.testing.assert_allclose(r_t.history["sum_h_norm"], r_np.history["sum_h_norm"], rtol=1e-8, atol=1e-12)
        np.testing.assert_array_equal(r_t.history["bits_up"], r_np.history["bits_up"])


# ---------------------------------------------------------------------------------------------
# BatchNorm running statistics
# ---------------------------------------------------------------------------------------------


def test_batchnorm_statistics_averaged_at_communication():
    prob = tiny_resnet_problem()
    alg = D.make_algorithm("sparse_proxskip", prob, 0.05, 0.5)
    state = alg.init(prob, prob.initial_point())
    s1 = alg.step(state, prob, False)
    b1 = s1.extras["buffers"]
    assert not torch.allclose(b1[0], b1[1])  # local steps: each client its own statistics
    # the statistics a communication step produces before averaging, from an identical problem
    twin = tiny_resnet_problem()
    twin.buffers_tracked = True
    twin.set_buffers(b1)
    twin.grad(alg.sparsifier.prox(s1.w) if alg.grad_at == "pruned" else s1.w, step=1)
    s2 = alg.step(s1, prob, True)
    b2 = s2.extras["buffers"]
    torch.testing.assert_close(b2, twin.buffers.mean(dim=0, keepdim=True).expand_as(b2), rtol=1e-12, atol=1e-14)
    # evaluation uses the client mean
    torch.testing.assert_close(prob.mean_buffers(), b2[0], rtol=1e-12, atol=1e-14)
    # switched off: every client keeps its own statistics
    keep = D.make_algorithm("sparse_proxskip", prob, 0.05, 0.5, average_buffers=False)
    assert keep.config()["average_buffers"] is False
    s2k = keep.step(s1, prob, True)
    assert not torch.allclose(s2k.extras["buffers"][0], s2k.extras["buffers"][1])
    torch.testing.assert_close(s2k.w, s2.w, rtol=0, atol=0)  # the weights do not depend on the switch
    # an unwrapped rule warns that nothing averages the statistics
    bare = tiny_resnet_problem()
    with pytest.warns(UserWarning, match="track_buffers"):
        bare.grad(stacked(bare), 0)


def test_resumed_run_is_the_same_run():
    """Minibatches keyed by the step and statistics in the state: 3 + 3 iterations equal 6."""
    alg = D.make_algorithm("sparse_proxskip", tiny_resnet_problem(), 0.05, 0.5, schedule="random")
    full = proxfed.run(alg, tiny_resnet_problem(augment=True), 6, seed=2, every=3)
    prob = tiny_resnet_problem(augment=True)
    half = proxfed.run(alg, prob, 3, seed=2, every=3)
    rest = proxfed.run(alg, tiny_resnet_problem(augment=True), 3, seed=2, state=half.state, every=3)
    torch.testing.assert_close(rest.state.w, full.state.w, rtol=0, atol=0)
    torch.testing.assert_close(rest.state.extras["buffers"], full.state.extras["buffers"], rtol=0, atol=0)
    np.testing.assert_array_equal(rest.state.communications, full.state.communications)


def test_checkpoint_with_buffers_roundtrip(tmp_path):
    prob = tiny_resnet_problem()
    alg = D.make_algorithm("accelerated_server_pruning", prob, 0.05, 0.5)
    res = proxfed.run(alg, prob, 2, every=1)
    res.save(tmp_path / "run")
    st = proxfed.load_state(tmp_path / "run" / "state.npz", like=res.state.w)
    torch.testing.assert_close(st.extras["buffers"], res.state.extras["buffers"])
    torch.testing.assert_close(st.w, res.state.w)


# ---------------------------------------------------------------------------------------------
# evaluation and errors
# ---------------------------------------------------------------------------------------------


def test_evaluation_and_bad_input():
    prob = tiny_resnet_problem(eval_size=4)
    w = prob.initial_point(0)
    assert isinstance(prob.objective(w), torch.Tensor) and prob.objective(w).shape == ()
    assert prob.objective(torch.stack([w, w])).shape == (2,)
    acc = prob.score(w)
    assert isinstance(acc, float) and 0 <= acc <= 1
    assert prob.score(w, "train") >= 0 and prob.has_split("test") and not prob.has_split("validation")
    pred = prob.predict(w, prob.dataset.test[0])
    assert pred.shape == (10,)
    module = prob.export(w)
    module.eval()
    x = prob._prepare(torch.as_tensor(prob.dataset.test[0]), 0, 1, train=False)
    np.testing.assert_array_equal(B.to_numpy(module(x).argmax(-1)), pred)
    # initial points: keyed by (seed, run), the same on every call
    torch.testing.assert_close(prob.initial_point(3, 1), tiny_resnet_problem().initial_point(3, 1), rtol=0, atol=0)
    assert not torch.equal(prob.initial_point(3, 1), prob.initial_point(3, 0))
    with pytest.raises(TypeError, match="torch tensor"):
        prob.grad(np.zeros((3, prob.dim)), 0)
    with pytest.raises(ValueError, match="shape"):
        prob.grad(torch.zeros(2, prob.dim, dtype=F64), 0)
    with pytest.raises(NotImplementedError, match="tuning"):
        prob.smoothness()
    with pytest.raises(ValueError, match="batch_size"):
        tiny_resnet_problem(batch_size=0)
    with pytest.raises(ValueError, match="weighting"):
        tiny_resnet_problem(weighting="size")
    with pytest.raises(ValueError, match="clients"):
        tiny_resnet_problem(clients=[0, 0])
    with pytest.raises(ValueError, match="offsets"):
        D.ImageClients(np.zeros((4, 1, 2, 2)), np.zeros(4, int), [0, 4, 4])
    with pytest.raises(ValueError, match="labels"):
        D.ImageClients(np.zeros((4, 1, 2, 2)), np.zeros(3, int), [0, 4])


# ---------------------------------------------------------------------------------------------
# data: CIFAR-10 fixtures in the pickle format, FEMNIST writers
# ---------------------------------------------------------------------------------------------

LABEL_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar(folder, n=40, seed=0):
    """The python-pickle batches (protocol 2 dicts with bytes keys, as the original)."""
    gen = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        batch = {b"batch_label": b"batch %d" % i, b"labels": gen.integers(0, 10, n).tolist(),
                 b"data": gen.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"filenames": [b"img_%d.png" % j for j in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"num_cases_per_batch": n, b"label_names": LABEL_NAMES, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


def test_cifar10_clients_follow_the_core_loader(tmp_path):
    from proxfed.data import load_cifar10

    folder = write_cifar(tmp_path / "cifar-10-batches-py")
    data = D.cifar10_clients(folder)  # N = 10, alpha = 0.3, sigma = 0.3 (the paper's split)
    ds = load_cifar10(folder, n_clients=10, alpha=0.3, sigma=0.3, seed=0)
    assert data.n_clients == 10 and data.images.dtype == np.uint8 and data.image_shape == (3, 32, 32)
    np.testing.assert_array_equal(data.offsets, ds.offsets)
    np.testing.assert_array_equal(data.labels, ds.y)
    np.testing.assert_array_equal(data.images.reshape(data.n_samples, -1) / 255.0, ds.X)
    assert data.test[0].shape == (40, 3, 32, 32) and data.mean == D.CIFAR10_MEAN
    prob = D.TorchProblem(data, lambda: D.resnet18(width=2), batch_size=4, augment=True)
    alg = D.make_algorithm("sparse_proxskip", prob, 0.05, 0.5)
    res = proxfed.run(alg, prob, 2, every=1)
    assert res.status == "completed" and res.state.w.dtype == torch.float32
    assert res.state.extras["buffers"].shape == (10, prob.n_buffers)


@pytest.mark.data
def test_femnist_writers_are_natural_clients(shared_data):
    data = D.femnist_clients(shared_data / "femnist", 10)
    assert data.n_clients == 10 and data.image_shape == (1, 28, 28) and data.n_classes == 62
    assert data.images.dtype == np.float32 and 0 <= data.images.min() and data.images.max() <= 1
    prob = D.TorchProblem(data, lambda: D.leaf_cnn(hidden=32, channels=(4, 8)), batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = proxfed.run(D.make_algorithm("sparse_proxskip", prob, 0.05, 0.5), prob, 2, every=1)
    assert res.status == "completed" and 0 <= res.history["metric"][-1] <= 1


def test_reproduce_cifar10_smoke_on_pickle_fixtures(tmp_path):
    """``proxfed reproduce cifar10`` end to end on files in the exact CIFAR-10 format (no real CIFAR offline)."""
    import json

    from proxfed.cli import main
    from proxfed.experiments.tables import parse_markdown_tables
    from proxfed_dl.reproduce import CIFAR10_BUDGETS, CIFAR10_METHODS

    folder = write_cifar(tmp_path / "cifar-10-batches-py", n=30)
    out = tmp_path / "res"
    assert main(["reproduce", "cifar10", "--data-dir", str(folder), "--budget", "smoke", "--out", str(out),
                 "--methods", "sparse_proxskip", "accelerated_server_pruning", "--no-progress"]) == 0
    run = json.loads((out / "run.json").read_text())
    b = CIFAR10_BUDGETS["smoke"]
    assert run["status"] == "completed" and run["budget"]["name"] == "smoke" and not run["is_reproduction_budget"]
    assert run["n_clients"] == 10 and sum(run["client_sizes"]) == 150
    res = json.loads((out / "cifar10.json").read_text())
    assert [r["method"] for r in res["rows"]] == ["sparse_proxskip", "accelerated_server_pruning"]
    for r in res["rows"]:
        h = res["history"][r["method"]]
        assert h["iteration"][-1] == b.rounds * b.local_steps and r["communications"] == b.rounds
        assert 0 <= r["test_accuracy"] <= 1
    by = {r["method"]: r for r in res["rows"]}
    assert by["sparse_proxskip"]["sum_h_norm"] < 1e-3 * by["accelerated_server_pruning"]["sum_h_norm"]
    header, rows = parse_markdown_tables((out / "cifar10.md").read_text())[0]
    assert len(rows) == 2 and header[0] == "method" and all(len(r) == len(header) for r in rows)
    assert (out / "cifar10.png").stat().st_size > 0
    assert set(CIFAR10_METHODS) >= {"sparse_proxskip", "accelerated_server_pruning"}
    with pytest.raises(SystemExit):
        main(["reproduce", "cifar10", "--data-dir", str(folder), "--alpha", "1"])
    with pytest.raises(SystemExit) as exc:  # a usage error, before any work
        main(["reproduce", "cifar10", "--data-dir", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert not (tmp_path / "x").exists()  # nothing written for bad input
