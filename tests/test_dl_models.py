"""proxfed_dl models and flat parameter vectors: sizes, shapes, functional calls, TopK scopes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import proxfed_dl as D  # noqa: E402
from proxfed import _backend as B  # noqa: E402


def test_resnet18_cifar_parameter_count_and_output_shape():
    model = D.resnet18()
    assert D.count_parameters(model) == 11_173_962  # "11.2 M"
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)  # CIFAR stem
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())  # no max-pool
    bns = [m for m in model.modules() if isinstance(m, D.BatchNorm2d)]
    assert len(bns) == 20
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    flat = D.FlatModel(model)
    assert flat.dim == 11_173_962 and flat.n_buffers == 2 * sum(m.num_features for m in bns)


def test_leaf_cnn_parameter_count_and_output_shape():
    model = D.leaf_cnn()
    assert D.count_parameters(model) == 6_603_710  # LEAF's FEMNIST CNN
    with torch.no_grad():
        assert model(torch.randn(3, 1, 28, 28)).shape == (3, 62)
    small = D.leaf_cnn(hidden=16, channels=(4, 8))
    assert D.count_parameters(small) == (25 * 4 + 4) + (25 * 4 * 8 + 8) + (8 * 49 * 16 + 16) + (16 * 62 + 62)
    with pytest.raises(ValueError, match="multiple of 4"):
        D.leaf_cnn(image_size=30)


def test_flat_model_split_join_load_roundtrip():
    model = D.resnet18(width=4)
    flat = D.FlatModel(model)
    w = flat.parameters_vector()
    b = flat.buffers_vector()
    assert w.shape == (flat.dim,) and b.shape == (flat.n_buffers,)
    parts = flat.split(w)
    assert [tuple(p.shape) for p in parts] == flat.shapes
    assert all(p.data_ptr() >= w.data_ptr() for p in parts)  # views, no copy
    torch.testing.assert_close(flat.join(parts), w, rtol=0, atol=0)
    W = torch.randn(3, flat.dim)
    torch.testing.assert_close(flat.join(flat.split(W)), W, rtol=0, atol=0)
    other = D.resnet18(width=4)
    w2 = torch.randn(flat.dim) * 0.1
    b2 = torch.rand(flat.n_buffers) + 0.5
    flat.load(w2, b2, other)
    torch.testing.assert_close(flat.parameters_vector(other), w2)
    torch.testing.assert_close(flat.buffers_vector(other), b2)
    # the functional call equals the module holding the same values, in both modes
    x = torch.randn(5, 3, 16, 16)
    other.eval()
    torch.testing.assert_close(flat.logits(w2, b2, x, train=False), other(x))
    other.train()
    torch.testing.assert_close(flat.logits(w2, b2, x, train=True), other(x))
    # the training-mode batch norm reports torch's running-statistics update
    ref = torch.nn.BatchNorm2d(3)
    ours = D.BatchNorm2d(3)
    y = torch.randn(6, 3, 4, 4) * 2 + 1
    torch.testing.assert_close(ours(y), ref(y))
    torch.testing.assert_close(ours.new_stats[0], ref.running_mean)
    torch.testing.assert_close(ours.new_stats[1], ref.running_var)


def test_flat_model_rejects_torch_batchnorm():
    with pytest.raises(TypeError, match="proxfed_dl.BatchNorm2d"):
        D.FlatModel(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)))


def test_prunable_mask_and_weight_topk():
    flat = D.FlatModel(D.resnet18(width=4))
    mask = flat.prunable_mask()
    named = dict(flat.module.named_parameters())
    expect = sum(p.numel() for n, p in named.items() if p.ndim > 1)  # conv and linear weights
    assert int(mask.sum()) == expect < flat.dim
    op = D.WeightTopK(50, mask)
    x = torch.randn(2, flat.dim, dtype=torch.float64)
    y = op.prox(x)
    torch.testing.assert_close(y[:, ~mask], x[:, ~mask], rtol=0, atol=0)  # biases and BN kept
    assert (B.to_numpy((y[:, mask] != 0).sum(-1)) == 50).all()
    kept = torch.where(mask, x.abs(), torch.zeros_like(x))
    thr = kept.topk(50, dim=-1).values[:, -1:]
    assert torch.equal((y != 0) & mask, (kept >= thr) & mask)
    assert float(op.value(y)) == 0.0 and float(op.value(x)) == float("inf")
    assert "WeightTopK" in repr(op) and "prunable" in repr(op)
    # TopK over all trainable parameters flattened together (the default) is the core's
    from proxfed.prox import TopK

    z = TopK(50).prox(x)
    assert (B.to_numpy((z != 0).sum(-1)) == 50).all()
    np.testing.assert_array_equal(B.to_numpy(z), B.to_numpy(B.topk(x, 50)))
