"""Images per second of one federated step on torch clients, against a naive per-client loop, in one run.

Compared, on the same random images, model and clients:

* ``engine (vmap)``: one Sparse-ProxSkip iteration of the core engine (``Algorithm1.step``) on a
  :class:`proxfed_dl.TorchProblem` whose oracle computes every client's gradient in one
  ``torch.func.vmap`` call (plus the engine's arithmetic on the ``(N, P)`` iterates);
* ``engine (loop)``: the same step with the oracle's sequential per-client loop;
* ``oracle (vmap)``: the gradient oracle alone;
* ``naive loop``: what a typical FL simulation does -- for every client, copy its parameters
  into an ``nn.Module``, forward, backward, clip, read the gradient back and update the client's
  flat vector (control variate and weight decay included).

The variants are timed in interleaved rounds (the machine may be shared) and the median is
reported, with the ratio to the naive loop, the FLOPs per image (``torch.utils.flop_counter``) and
the model FLOP utilization against ``--peak-tflops`` (or, without it, against the matmul rate this
machine reaches in the same run). Run::

    python benchmarks/bench_dl.py                       # tiny CPU config
    python benchmarks/bench_dl.py --model resnet18 --width 64 --clients 10 --batch-size 64 \\
        --device cuda --autocast bf16 --channels-last --peak-tflops 989   # H100 bf16 dense peak
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

import proxfed_dl as D
from proxfed import algorithms as A


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=("cnn", "resnet18"), default="cnn")
    ap.add_argument("--width", type=int, default=8, help="ResNet18 width (64 = the paper's)")
    ap.add_argument("--hidden", type=int, default=256, help="CNN dense width (2048 = LEAF's)")
    ap.add_argument("--channels", type=int, nargs=2, default=(8, 16), help="CNN conv channels (32 64 = LEAF's)")
    ap.add_argument("--image-size", type=int, default=None, help="default 28 (cnn) or 32 (resnet18)")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds (median reported)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--autocast", choices=("bf16",), default=None)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's peak for the dtype used")
    return ap.parse_args(argv)


def build(args, vectorize: bool):
    size = args.image_size or (28 if args.model == "cnn" else 32)
    if args.model == "cnn":
        shape, classes = (1, size, size), 62
        model = lambda: D.leaf_cnn(classes, hidden=args.hidden, image_size=size, channels=args.channels)  # noqa: E731
    else:
        shape, classes = (3, size, size), 10
        model = lambda: D.resnet18(classes, width=args.width)  # noqa: E731
    per_client = max(2 * args.batch_size, 8)
    data = D.random_image_clients(args.clients, per_client, image_shape=shape, n_classes=classes, seed=0)
    return D.TorchProblem(data, model, batch_size=args.batch_size, clip_norm=100.0, augment=args.model != "cnn",
                          vectorize=vectorize, autocast=args.autocast, channels_last=args.channels_last,
                          device=args.device)


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def naive_loop(prob, module, W, H, step, gamma=0.01):
    """The per-client loop of a typical simulation: module <- w_i, forward, backward, update w_i."""
    X, Y = prob.minibatch(step)
    params = list(module.parameters())
    out = torch.empty_like(W)
    for i in range(W.shape[0]):
        torch.nn.utils.vector_to_parameters(W[i], params)
        module.zero_grad(set_to_none=True)
        ctx = torch.autocast(device_type=W.device.type, dtype=torch.bfloat16) if prob.autocast else _null()
        x = X[i].contiguous(memory_format=torch.channels_last) if prob.channels_last else X[i]
        with ctx:
            logits = module(x)
        F.cross_entropy(logits.float(), Y[i]).backward()
        torch.nn.utils.clip_grad_norm_(params, prob.clip_norm)
        g = torch.nn.utils.parameters_to_vector([p.grad for p in params])
        out[i] = W[i] - gamma * (g + prob.weight_decay * W[i] - H[i])
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def flops_per_image(prob):
    from torch.utils.flop_counter import FlopCounterMode

    X, Y = prob.minibatch(0)
    module = prob.export(prob.initial_point())
    module.train()
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(module(X[0]), Y[0]).backward()
    return counter.get_total_flops() / X.shape[1]


def matmul_rate(device, dtype=torch.float32, n=2048):
    a = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(3):
        sync(device)
        t = time.perf_counter()
        a @ a
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def main(argv=None):
    args = parse(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", UserWarning)
    pv, pl = build(args, True), build(args, False)
    for prob in (pv, pl):
        prob.buffers_tracked = True
    N, b = args.clients, args.batch_size
    alg = A.sparse_proxskip(0.01, 0.1, max(1, pv.dim // 10))
    w0 = pv.initial_point(0)
    state = alg.init(pv, w0)
    module = pv.export(w0).to(args.device)
    if args.channels_last:
        module = module.to(memory_format=torch.channels_last)
    module.train()
    H = torch.zeros_like(state.w)

    variants = {
        "engine (vmap)": lambda s: alg.step(state.replace(t=s), pv, False),
        "engine (loop)": lambda s: alg.step(state.replace(t=s), pl, False),
        "oracle (vmap)": lambda s: pv.grad(state.w, s),
        "naive loop": lambda s: naive_loop(pv, module, state.w, H, s),
    }
    for fn in variants.values():  # warm-up (vmap tracing, allocator, oneDNN primitives)
        fn(0)
    times = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, fn in variants.items():
            sync(args.device)
            t = time.perf_counter()
            for s in range(args.steps):
                fn(1 + r * args.steps + s)
            sync(args.device)
            times[name].append(time.perf_counter() - t)
    fpi = flops_per_image(pv)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else matmul_rate(args.device)
    peak_label = f"{args.peak_tflops:g} TFLOP/s given" if args.peak_tflops else \
        f"measured fp32 matmul {peak / 1e9:.1f} GFLOP/s"
    images = N * b * args.steps
    naive = statistics.median(times["naive loop"])
    device = torch.cuda.get_device_name() if str(args.device).startswith("cuda") else \
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"model {args.model} (P = {pv.dim:,}), N = {N} clients x batch {b}, {args.steps} steps x {args.rounds} "
          f"rounds, device {device}, torch {torch.__version__}, autocast {args.autocast}, "
          f"channels_last {args.channels_last}")
    print(f"FLOPs per image (forward + backward): {fpi / 1e6:.2f} MFLOP; utilization against {peak_label}\n")
    print("| variant | median s / step | images/s | vs naive loop | achieved GFLOP/s | MFU |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        ips = images / med
        print(f"| {name} | {med / args.steps:.4f} | {ips:,.0f} | {naive / med:.2f}x | {ips * fpi / 1e9:.2f} "
              f"| {ips * fpi / peak:.1%} |")
    spread = {k: (min(v) / args.steps, max(v) / args.steps) for k, v in times.items()}
    print("\nper-step min/max over rounds: " + ", ".join(f"{k} {a:.4f}/{b:.4f}" for k, (a, b) in spread.items()))
    return times


if __name__ == "__main__":
    main()
