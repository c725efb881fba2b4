"""proxfed_dl on a CUDA GPU (``gpu`` marker; skipped without torch.cuda).

The vectorized oracle on the GPU equals the CPU per-client loop, bf16 autocast and channels-last
run and stay close to float32, and a full-size ResNet18 step of the core engine fits and runs.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import proxfed  # noqa: E402
import proxfed_dl as D  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("torch.cuda is not available")
    return torch.device("cuda")


def problem(device, **kw):
    data = D.random_image_clients(4, [12, 20, 9, 16], image_shape=(3, 16, 16), n_classes=10, seed=1)
    prob = D.TorchProblem(data, lambda: D.resnet18(width=8), batch_size=8, device=device, augment=True, **kw)
    prob.buffers_tracked = True
    return prob


def test_cuda_vmap_equals_cpu_loop(cuda):
    cpu = problem("cpu", dtype=torch.float64, vectorize=False)
    gpu = problem(cuda, dtype=torch.float64)
    W = cpu.initial_point(0).expand(4, -1).clone()
    g_cpu = cpu.grad(W, 2)
    g_gpu = gpu.grad(W.to(cuda), 2)
    assert g_gpu.device.type == "cuda"
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(gpu.buffers.cpu(), cpu.buffers, rtol=1e-8, atol=1e-10)


def test_cuda_bf16_channels_last_close_to_float32(cuda):
    ref = problem(cuda)
    W = ref.initial_point(0).expand(4, -1).clone()
    g = ref.grad(W, 1)
    fast = problem(cuda, autocast="bf16", channels_last=True)
    gf = fast.grad(W, 1)
    assert gf.dtype == torch.float32 and torch.isfinite(gf).all()
    cos = torch.nn.functional.cosine_similarity(gf.flatten(), g.flatten(), dim=0)
    assert float(cos) > 0.8  # BatchNorm on random images amplifies bf16 rounding; see the CPU test


def test_full_resnet18_engine_step_on_cuda(cuda):
    data = D.random_image_clients(10, 64, image_shape=(3, 32, 32), n_classes=10, seed=0)
    prob = D.TorchProblem(data, D.resnet18, batch_size=64, device=cuda, augment=True, clip_norm=100.0,
                          autocast="bf16", channels_last=True)
    alg = D.make_algorithm("sparse_proxskip", prob, 0.05, 0.5)
    res = proxfed.run(alg, prob, 2, coins=np.array([False, True]), every=1)
    assert res.status == "completed" and res.state.w.device.type == "cuda"
    assert res.state.w.shape == (10, 11_173_962)
