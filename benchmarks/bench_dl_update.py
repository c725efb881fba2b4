"""The engine's arithmetic on proxfed_dl's flat iterates: unfused expressions against in-place updates.

Around each vmapped gradient of N clients the engine scales the gradient per client, adds the
weight decay and forms the local step ``W - gamma (G - H)`` on ``(N, P)`` tensors. This times
that arithmetic alone, in one process, best of ``--repeat``:

* ``unfused``: ``G = G * scale; G = G + wd * W; W - gamma * (G - H)`` (the code before: four
  temporaries of ``(N, P)``);
* ``in place``: the same operations in the same order on the fresh gradient (``mul_``,
  ``add_``, ``sub_``), which is what :meth:`proxfed_dl.TorchProblem.grad` and
  :func:`proxfed.algorithms.base.gradient_step` now do; the results are equal bit for bit.

P defaults to ResNet18's 11.2 M parameters (the paper's CIFAR-10 model), N = 10 clients, float32::

    python benchmarks/bench_dl_update.py --device cpu
    python benchmarks/bench_dl_update.py --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch


def unfused(W, G, H, scale, wd, gamma):
    G = G * scale
    G = G + wd * W
    return W - gamma * (G - H)


def in_place(W, G, H, scale, wd, gamma):
    G.mul_(scale)
    G.add_(wd * W)
    G.sub_(H)
    return W - G.mul_(gamma)


def best_time(fn, make, repeat, sync):
    best = float("inf")
    for _ in range(repeat):
        args = make()
        sync()
        t0 = time.perf_counter()
        out = fn(*args)
        sync()
        best = min(best, time.perf_counter() - t0)
        del out, args
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--params", type=int, default=11_173_962)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gen = torch.Generator(device="cpu").manual_seed(0)
    shape = (args.clients, args.params)
    base = [torch.randn(shape, generator=gen).to(dev) for _ in range(3)]
    scale = torch.rand((args.clients, 1), generator=gen).to(dev)

    def make():
        return base[0], base[1].clone(), base[2], scale, 1e-4, 0.05

    a = unfused(*make())
    b = in_place(*make())
    assert torch.equal(a, b), "the in-place update must equal the unfused one bit for bit"
    t_unfused = best_time(unfused, make, args.repeat, sync)
    t_in_place = best_time(in_place, make, args.repeat, sync)
    gb = 4 * args.clients * args.params / 1e9
    print(f"(N, P) = {shape}, float32 on {dev} ({gb:.2f} GB per array); best of {args.repeat}\n")
    print("| update | ms | ratio |")
    print("|:---|---:|---:|")
    print(f"| unfused (before) | {1e3 * t_unfused:.1f} | 1.00 |")
    print(f"| in place (now) | {1e3 * t_in_place:.1f} | {t_unfused / t_in_place:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
