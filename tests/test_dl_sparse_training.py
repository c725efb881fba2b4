"""FedSparsify and FLASH around torch clients: the core rules on a TorchProblem (masks, scope, layers)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import proxfed  # noqa: E402
import proxfed_dl as D  # noqa: E402
from proxfed.algorithms.rounds import Layers  # noqa: E402
from proxfed.prox import sparsity_to_k  # noqa: E402

from .test_dl_problem import tiny_cnn_problem, tiny_resnet_problem  # noqa: E402


def test_weight_segments_cover_the_weights():
    prob = tiny_resnet_problem()
    flat = prob.flat
    conv = flat.weight_segments(("conv",))
    both = flat.weight_segments()
    mask = flat.prunable_mask().numpy()
    assert Layers(both, prob.dim).maskable.tolist() == mask.tolist()  # conv + linear weights = prunable
    assert len(both) == len(conv) + 1  # ResNet18: one linear layer (the classifier)
    assert 0 < Layers(conv, prob.dim).maskable.sum() < mask.sum()
    with pytest.raises(ValueError):
        flat.weight_segments(("bias",))


@pytest.mark.parametrize("name", D.ROUND_BASED)
def test_every_round_based_rule_drives_torch_clients(name):
    prob = tiny_cnn_problem()
    alg = D.make_algorithm(name, prob, gamma=0.05, p=0.5, sparsity=0.8, rounds=3, clients_per_round=2, seed=1)
    seen = []
    res = proxfed.run(alg, prob, 6, every=1, callbacks=[lambda row, st: seen.append(st) or False])
    assert res.status == "completed" and int(res.state.communications) == 3
    st = res.state
    assert isinstance(st.w, torch.Tensor) and st.w.dtype == torch.float64
    for s in seen:  # masked weights stay exactly zero on every client through local training
        mask = s.extras["client_mask"] if "client_mask" in s.extras else s.extras["mask"]
        assert torch.all(s.w[~mask.expand_as(s.w)] == 0)
    if name in ("fedsparsify_global", "oneshot", "random_pruning"):
        assert int((res.w != 0).sum()) <= sparsity_to_k(prob.dim, alg.sparsity(3))
    elif name != "fedsparsify_local":  # FLASH: density 1 - sparsity over conv + linear weights, the rest dense
        lay = Layers(prob.flat.weight_segments(), prob.dim)
        counts = lay.counts(res.w.numpy() != 0)
        budgets = np.array([sparsity_to_k(int(n), 0.8) for n in lay.sizes])
        assert counts.sum() <= budgets.sum()
        assert np.all(res.w.numpy()[~lay.maskable] != 0)


def test_fedsparsify_scope_weights_keeps_biases_dense():
    prob = tiny_cnn_problem()
    alg = D.make_algorithm("fedsparsify_global", prob, 0.05, 0.5, sparsity=0.9, rounds=2, scope="weights")
    res = proxfed.run(alg, prob, 4, every=2)
    prunable = prob.flat.prunable_mask().numpy()
    w = res.w.numpy()
    assert np.all(w[~prunable] != 0)  # biases: never pruned
    assert (w[prunable] != 0).sum() == sparsity_to_k(int(prunable.sum()), alg.sparsity(2))


def test_round_based_rules_need_rounds_and_refuse_stray_options():
    prob = tiny_cnn_problem()
    with pytest.raises(ValueError, match="rounds"):
        D.make_algorithm("jmwst", prob, 0.05, 0.5)
    with pytest.raises(TypeError):
        D.make_algorithm("sparse_proxskip", prob, 0.05, 0.5, dst_rate=0.1)


def test_flash_masks_resnet18_convolutions_by_default():
    prob = tiny_resnet_problem()
    alg = D.make_algorithm("pdst", prob, 0.05, 0.5, sparsity=0.8, rounds=2)
    conv = Layers(prob.flat.weight_segments(("conv",)), prob.dim)
    assert alg.layers == prob.flat.weight_segments(("conv",))
    st = alg.init(prob, prob.initial_point(0))
    mask = st.extras["level_mask"][-1].numpy()
    assert mask[~conv.maskable].all()  # the classifier, biases and BatchNorm stay dense
    np.testing.assert_array_equal(conv.counts(mask), [sparsity_to_k(int(n), 0.8) for n in conv.sizes])


def test_batchnorm_statistics_average_over_the_round_participants(monkeypatch):
    from proxfed import algorithms as A

    prob = tiny_resnet_problem()
    alg = D.make_algorithm("fedsparsify_global", prob, 0.05, 1.0, sparsity=0.5, rounds=3, clients_per_round=2,
                           seed=3)
    calls = []
    original = prob.average_buffers
    monkeypatch.setattr(prob, "average_buffers", lambda mask=None, weights=None: (
        calls.append(weights), original(mask, weights=weights))[1])
    st = alg.init(prob, prob.initial_point(0))
    for r in (1, 2):
        st = alg.step(st, prob, True)
        part = A.participants(3, r, prob.n_clients, 2)
        np.testing.assert_array_equal(calls[-1], np.where(part, prob.dataset.client_sizes, 0.0))


def test_weighted_buffer_average():
    prob = tiny_resnet_problem()
    prob.buffers_tracked = True
    bufs = torch.arange(3 * prob.n_buffers, dtype=torch.float64).reshape(3, prob.n_buffers)
    prob.set_buffers(bufs)
    prob.average_buffers(weights=np.array([1.0, 0.0, 3.0]))
    want = (1 * bufs[0] + 3 * bufs[2]) / 4
    for i in range(3):
        assert torch.allclose(prob.buffers[i], want)
