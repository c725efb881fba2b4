"""Clients sharded across processes with ``torch.distributed``; the core engine unchanged.

Every rank holds a contiguous block of clients (:func:`shard`) in its own
:class:`~proxfed_dl.TorchProblem` (built with ``clients=shard(...)``) and runs
the same core update rule on its block, ``W`` of shape ``(N_rank, P)``. Two
pieces make the ranks one federation:

* the algorithm's consensus (the one place where the core mixes clients: the
  server average at a communication, and the client average at every
  evaluation) is replaced by a :class:`DistributedConsensus`, whose ``mean``
  is the sum over all clients of all ranks -- a dense ``all_reduce``, or for
  sparse messages an ``all_gather`` of (index, value) pairs -- divided by the
  total number of clients;
* the coins come from the shared seed (every rank draws the same sequence
  from the same stream, so they communicate at the same steps), minibatches
  from streams keyed by global client indices, and the initial model from the
  same ``(seed, run)``: a sharded run follows the single-process trajectory
  (to floating-point summation order).

The problem's evaluation (loss over all clients, BatchNorm statistics
averaging) reduces across ranks as well, and a runner callback rewrites the
client-mixing history entries (``sum_h_norm``, ``consensus_gap``, bits...)
with global values. Launch with ``torchrun --nproc-per-node K -m
proxfed_dl.distributed ...`` (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

import proxfed
from proxfed import _backend as B
from proxfed.algorithms import Algorithm, State
from proxfed.prox import Consensus

__all__ = ["shard", "DistributedConsensus", "distribute", "run", "gather_state", "main"]


def shard(n_clients: int, rank: int, world_size: int) -> np.ndarray:
    """The contiguous block of clients of ``rank``: sizes differ by at most one, lower ranks larger.

    Parameters
    ----------
    n_clients, rank, world_size : int

    Returns
    -------
    numpy.ndarray of int64
        Global client indices, ascending.

    Examples
    --------
    >>> [shard(5, r, 2).tolist() for r in range(2)]
    [[0, 1, 2], [3, 4]]
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if n_clients < world_size:
        raise ValueError(f"{n_clients} clients cannot be sharded over {world_size} ranks (each needs one)")
    base, extra = divmod(int(n_clients), int(world_size))
    lo = rank * base + min(rank, extra)
    return np.arange(lo, lo + base + (rank < extra), dtype=np.int64)


def _all_reduce_sum(x, group=None):
    out = x.contiguous().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out


def _all_gather_padded(x, group=None):
    """all_gather of 1-d tensors of different lengths: list of per-rank tensors."""
    world = dist.get_world_size(group)
    n = torch.tensor([x.numel()], dtype=torch.int64, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    sizes = [int(s.item()) for s in sizes]
    m = max(sizes)
    padded = torch.zeros(m, dtype=x.dtype, device=x.device)
    padded[: x.numel()] = x
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded, group=group)
    return [p[:s] for p, s in zip(parts, sizes)]


class DistributedConsensus(Consensus):
    """The consensus prox over the clients of all ranks: ``mean`` is an all-reduce.

    ``mean(x)`` for this rank's client rows ``x`` of shape ``(..., N_rank, d)``
    returns ``(1/N) sum_{all clients} x_i`` of shape ``(..., 1, d)`` on every
    rank, ``N`` the total number of clients. Each rank first sums its own
    clients, then the partial sums are combined:

    * ``"dense"``: ``all_reduce(SUM)`` of the ``d``-vector;
    * ``"sparse"``: every rank sends the (index, value) pairs of its non-zero
      partial sum (``all_gather``) and every rank adds them up in rank order
      -- the sum of sparse messages divided by ``N``, exactly what the dense
      average gives (zeros are averaged in, not skipped);
    * ``"auto"``: sparse when the densest rank's partial sum has fewer than
      ``d/2`` non-zeros (an index costs about as much as a value), decided
      collectively so that all ranks take the same path.

    Parameters
    ----------
    n_clients : int
        Total number of clients over all ranks.
    mode : {"auto", "dense", "sparse"}
    group : torch.distributed.ProcessGroup, optional
    axis : int
        The client axis.
    """

    def __init__(self, n_clients: int, mode: str = "auto", group=None, axis: int = -2):
        super().__init__(axis)
        if mode not in ("auto", "dense", "sparse"):
            raise ValueError(f"mode must be 'auto', 'dense' or 'sparse', got {mode!r}")
        self.n_clients = int(n_clients)
        self.mode = mode
        self.group = group
        self.calls = {"dense": 0, "sparse": 0}

    def __repr__(self) -> str:
        return f"DistributedConsensus(n_clients={self.n_clients}, mode={self.mode!r})"

    def mean(self, x):
        """The mean over all clients of all ranks, shape ``(..., 1, d)`` (a collective call)."""
        local = torch.sum(x, dim=self.axis, keepdim=True)
        mode = self.mode
        if mode == "auto":
            nnz = torch.tensor([int(torch.count_nonzero(local))], dtype=torch.int64, device=local.device)
            dist.all_reduce(nnz, op=dist.ReduceOp.MAX, group=self.group)
            mode = "sparse" if 2 * int(nnz.item()) < local.numel() else "dense"
        self.calls[mode] += 1
        if mode == "dense":
            total = _all_reduce_sum(local, self.group)
        else:
            flat = local.reshape(-1)
            idx = torch.nonzero(flat).reshape(-1)
            idx_parts = _all_gather_padded(idx, self.group)
            val_parts = _all_gather_padded(flat[idx], self.group)
            total = torch.zeros_like(flat)
            for i, v in zip(idx_parts, val_parts):
                total.index_add_(0, i, v)
            total = total.reshape(local.shape)
        return total / self.n_clients


def distribute(algorithm: Algorithm, problem, *, mode: str = "auto", group=None) -> Algorithm:
    """A copy of ``algorithm`` whose consensus averages over all ranks; ``problem`` reduces across ranks.

    ``problem`` must hold this rank's clients (``TorchProblem(...,
    clients=shard(N, rank, world))``); its evaluation and BatchNorm
    averaging then sum over all ranks (set in place).

    Parameters
    ----------
    algorithm : proxfed.algorithms.Algorithm
    problem : TorchProblem
    mode : {"auto", "dense", "sparse"}
        See :class:`DistributedConsensus`.
    group : torch.distributed.ProcessGroup, optional

    Returns
    -------
    proxfed.algorithms.Algorithm
    """
    if not dist.is_initialized():
        raise RuntimeError("torch.distributed is not initialized (call init_process_group, or launch with torchrun)")
    alg = copy.copy(algorithm)
    alg.consensus = DistributedConsensus(problem.n_clients_total, mode=mode, group=group)
    problem.process_sum = lambda t: _all_reduce_sum(t, group)
    return alg


def _global_rows(algorithm, problem, group):
    """A runner callback that replaces the rank-local client statistics of a history row by global ones."""
    N = problem.n_clients_total

    def fix(row, state):
        xp = torch
        w_avg = algorithm.consensus.mean(state.w)
        sum_h = _all_reduce_sum(xp.sum(state.h, dim=-2), group)
        h_norms = _all_reduce_sum(xp.sum(xp.linalg.vector_norm(state.h, dim=-1), dim=-1), group)
        gap = _all_reduce_sum(xp.sum(xp.sum((state.w - w_avg) ** 2, dim=-1), dim=-1), group)
        row["sum_h_norm"] = B.to_numpy(xp.linalg.vector_norm(sum_h, dim=-1)).astype(np.float64)
        row["mean_h_norm"] = B.to_numpy(h_norms / N).astype(np.float64)
        row["consensus_gap"] = B.to_numpy(xp.sqrt(gap / N)).astype(np.float64)
        for key, source in (("bits_up", state.bits_up), ("bits_down", state.bits_down),
                            ("upload_nnz", state.upload_nnz)):
            tot = _all_reduce_sum(torch.as_tensor(np.asarray(B.to_numpy(source), np.float64).sum(axis=-1)), group)
            row[key] = B.to_numpy(tot / N)
            if key != "upload_nnz":
                row[f"{key}_total"] = B.to_numpy(tot)
        return False

    return fix


def run(algorithm: Algorithm, problem, iterations: int, *, mode: str = "auto", group=None, callbacks=(),
        **kwargs):
    """:func:`proxfed.run` over the clients of all ranks (a collective call on every rank).

    Parameters
    ----------
    algorithm : proxfed.algorithms.Algorithm
    problem : TorchProblem
        This rank's clients (see :func:`shard`).
    iterations : int
    mode : {"auto", "dense", "sparse"}
        Consensus transport, see :class:`DistributedConsensus`.
    group : torch.distributed.ProcessGroup, optional
    callbacks : sequence of callables
        Further runner callbacks (they see the global history rows).
    **kwargs
        Passed to :func:`proxfed.run` (``seed``, ``w0``, ``every``, ...).

    Returns
    -------
    proxfed.RunResult
        With this rank's state; the history holds global values. Use
        :func:`gather_state` for the global state.
    """
    alg = distribute(algorithm, problem, mode=mode, group=group)
    result = proxfed.run(alg, problem, iterations, callbacks=[_global_rows(alg, problem, group), *callbacks],
                         **kwargs)
    result.config["distributed"] = {"world_size": dist.get_world_size(group), "mode": mode,
                                    "consensus_calls": dict(alg.consensus.calls)}
    return result


def gather_state(state: State, group=None) -> State:
    """The global state: every rank's client rows concatenated in rank order (a collective call).

    Parameters
    ----------
    state : State
        This rank's state (client axis ``-2``).
    group : torch.distributed.ProcessGroup, optional

    Returns
    -------
    State
        ``w``, ``h``, the per-client accounting and array extras with all
        clients; the counters of rank 0.
    """
    def cat_clients(x, axis):
        x = torch.as_tensor(x)
        moved = torch.movedim(x, axis, 0).contiguous()
        parts = _all_gather_padded(moved.reshape(-1), group)
        rest = tuple(moved.shape[1:])
        per = int(np.prod(rest)) if rest else 1
        return torch.movedim(torch.cat([p.reshape((p.numel() // per,) + rest) for p in parts]), 0, axis)

    def cat_np(a):
        return B.to_numpy(cat_clients(torch.as_tensor(np.asarray(B.to_numpy(a), np.int64)), -1)).astype(np.int64)

    extras = {k: cat_clients(v, -2) for k, v in state.extras.items()
              if isinstance(v, torch.Tensor) and v.ndim >= 2 and v.shape[-2] == state.w.shape[-2]}
    return state.replace(
        w=cat_clients(state.w, -2), h=cat_clients(state.h, -2), extras=extras,
        bits_up=cat_np(state.bits_up), bits_down=cat_np(state.bits_down), values_up=cat_np(state.values_up),
        upload_nnz=cat_np(state.upload_nnz), uplink=None,
    )


# ---------------------------------------------------------------------------------------------
# command line (torchrun entry point)
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Arguments of :func:`main`."""
    ap = argparse.ArgumentParser(prog="python -m proxfed_dl.distributed",
                                 description="Run a proxfed_dl experiment with clients sharded over torch.distributed "
                                             "ranks (launch with torchrun; a single process runs unsharded).")
    ap.add_argument("--data", choices=("random", "femnist", "cifar10"), default="random")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--clients", type=int, default=4, help="clients (random data) or writers (femnist)")
    ap.add_argument("--per-client", type=int, default=16, help="images per client (random data)")
    ap.add_argument("--image-size", type=int, default=16, help="side of the random images")
    ap.add_argument("--model", choices=("resnet18", "cnn"), default="resnet18")
    ap.add_argument("--width", type=int, default=4, help="ResNet18 width (64 in the paper)")
    ap.add_argument("--hidden", type=int, default=2048, help="CNN dense width")
    ap.add_argument("--method", default="sparse_proxskip")
    ap.add_argument("--gamma", type=float, default=0.05)
    ap.add_argument("--p", type=float, default=0.25)
    ap.add_argument("--schedule", choices=("fixed", "random"), default="random")
    ap.add_argument("--sparsity", type=float, default=0.9)
    ap.add_argument("--iterations", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--clip", type=float, default=None)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK when available, else cpu")
    ap.add_argument("--consensus", choices=("auto", "dense", "sparse"), default="auto")
    ap.add_argument("--every", type=int, default=None)
    ap.add_argument("--out", default=None, help="rank 0 writes the global final state and history here (.npz)")
    return ap


def build_data(args):
    """The :class:`~proxfed_dl.ImageClients` described by parsed arguments."""
    from . import data as D

    if args.data == "random":
        channels = 1 if args.model == "cnn" else 3
        classes = 62 if args.model == "cnn" else 10
        size = 28 if args.model == "cnn" else args.image_size
        return D.random_image_clients(args.clients, args.per_client, image_shape=(channels, size, size),
                                      n_classes=classes, seed=args.seed)
    if args.data == "femnist":
        return D.femnist_clients(args.data_dir, args.clients)
    return D.cifar10_clients(args.data_dir, n_clients=args.clients, seed=args.seed)


def build_problem(args, data, clients=None, device="cpu"):
    """The :class:`~proxfed_dl.TorchProblem` described by parsed arguments, for ``clients`` (default all)."""
    from .models import leaf_cnn, resnet18
    from .problem import TorchProblem

    if args.model == "cnn":
        model = lambda: leaf_cnn(data.n_classes, hidden=args.hidden, image_size=data.image_shape[-1])  # noqa: E731
    else:
        model = lambda: resnet18(data.n_classes, data.image_shape[0], width=args.width)  # noqa: E731
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    return TorchProblem(data, model, batch_size=args.batch_size, weight_decay=args.weight_decay, clip_norm=args.clip,
                        augment=args.augment, seed=args.seed, dtype=dtype, device=device, clients=clients)


def build_algorithm(args, problem):
    """The algorithm described by parsed arguments (:func:`proxfed_dl.make_algorithm`)."""
    from .algorithms import make_algorithm

    return make_algorithm(args.method, problem, args.gamma, args.p, sparsity=args.sparsity, schedule=args.schedule)


def main(argv=None) -> int:
    """Entry point: ``torchrun --nproc-per-node K -m proxfed_dl.distributed [options]``.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
    ``MASTER_PORT`` from the environment (as set by ``torchrun``); with
    ``WORLD_SIZE`` unset or 1 it runs in one process without
    ``torch.distributed``. Rank 0 prints a summary and, with ``--out``,
    writes the global final state and the history to an ``.npz`` file.

    Parameters
    ----------
    argv : list of str, optional

    Returns
    -------
    int
        Exit status.
    """
    args = build_parser().parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = args.device or (f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    if world > 1:
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if str(device).startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=120))
        data = build_data(args)
        problem = build_problem(args, data, clients=shard(data.n_clients, rank, world), device=device)
    else:
        problem = build_problem(args, build_data(args), device=device)
    alg = build_algorithm(args, problem)
    w0 = problem.initial_point(args.seed)
    kw = {"seed": args.seed, "w0": w0, "every": args.every}
    if world > 1:
        res = run(alg, problem, args.iterations, mode=args.consensus, **kw)
        state = gather_state(res.state)
        dist.barrier()
    else:
        res = proxfed.run(alg, problem, args.iterations, **kw)
        state = res.state
    wall = time.perf_counter() - t0
    if rank == 0:
        summary = {"status": res.status, "world_size": world, "wall_s": wall, "loss": float(res.history["loss"][-1]),
                   "communications": int(np.asarray(state.communications).max()),
                   "sum_h_norm": float(res.history["sum_h_norm"][-1]), **res.config.get("distributed", {})}
        print(json.dumps(summary))
        if args.out:
            arrays = {"w": B.to_numpy(state.w), "h": B.to_numpy(state.h), "t": np.asarray(state.t),
                      "communications": np.asarray(state.communications), "bits_up": state.bits_up,
                      "values_up": state.values_up, "output": B.to_numpy(res.w)}
            if "buffers" in state.extras:
                arrays["buffers"] = B.to_numpy(state.extras["buffers"])
            arrays.update({f"history_{k}": v for k, v in res.history.items()})
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.out, **arrays)
    if world > 1:  # tear down together: a rank that leaves while rank 0 still writes can abort it (gloo)
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
