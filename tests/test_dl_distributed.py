"""torch.distributed: clients sharded over 2 CPU processes (gloo on 127.0.0.1) follow the single-process run.

The processes are started the way ``torchrun`` starts them (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT`` in the environment, ``python -m proxfed_dl.distributed``), on a free port, with a
bounded timeout. The run uses Sparse-ProxSkip on a BatchNorm ResNet so that the sparse uplink
average, the dense evaluation average and the BatchNorm averaging all cross the process boundary.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")

import proxfed  # noqa: E402
from proxfed import _backend as B  # noqa: E402
from proxfed_dl import distributed as PD  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--clients", "5", "--per-client", "10", "--image-size", "16", "--width", "2", "--batch-size", "8",
        "--iterations", "10", "--p", "0.4", "--sparsity", "0.9", "--dtype", "float64", "--seed", "3",
        "--augment", "--every", "5"]
TIMEOUT = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(world: int, out: Path, extra=()) -> list[dict]:
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    cmd = [sys.executable, "-m", "proxfed_dl.distributed", *ARGS, *extra, "--out", str(out)]
    procs = [subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(world)]
    outputs = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=TIMEOUT)
            assert p.returncode == 0, f"rank failed ({p.returncode}):\n{stderr[-3000:]}"
            outputs.append(stdout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return [json.loads(line) for line in outputs[0].splitlines() if line.startswith("{")]


def single_process_run():
    """The same run in this process, with one thread like the ranks (kernels' reduction order)."""
    args = PD.build_parser().parse_args(ARGS)
    prob = PD.build_problem(args, PD.build_data(args))
    alg = PD.build_algorithm(args, prob)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return proxfed.run(alg, prob, args.iterations, seed=args.seed, w0=prob.initial_point(args.seed),
                           every=args.every)
    finally:
        torch.set_num_threads(threads)


def test_shard_blocks():
    assert [PD.shard(5, r, 2).tolist() for r in range(2)] == [[0, 1, 2], [3, 4]]
    assert np.concatenate([PD.shard(10, r, 3) for r in range(3)]).tolist() == list(range(10))
    with pytest.raises(ValueError):
        PD.shard(1, 0, 2)
    with pytest.raises(ValueError):
        PD.shard(4, 2, 2)


def test_two_gloo_processes_follow_the_single_process_trajectory(tmp_path):
    summary = launch(2, tmp_path / "dist.npz")[0]
    assert summary["status"] == "completed" and summary["world_size"] == 2
    calls = summary["consensus_calls"]
    assert calls["sparse"] > 0 and calls["dense"] > 0  # sparse uplinks, dense evaluation averages
    got = np.load(tmp_path / "dist.npz")
    ref = single_process_run()
    assert int(ref.state.communications) == int(got["communications"]) >= 2
    np.testing.assert_allclose(got["w"], B.to_numpy(ref.state.w), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["h"], B.to_numpy(ref.state.h), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(got["buffers"], B.to_numpy(ref.state.extras["buffers"]), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got["output"], B.to_numpy(ref.w), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(got["bits_up"], ref.state.bits_up)
    for key in ("loss", "metric", "sum_h_norm", "mean_h_norm", "consensus_gap", "bits_up", "upload_nnz"):
        np.testing.assert_allclose(got[f"history_{key}"], ref.history[key], rtol=1e-8, atol=1e-10, err_msg=key)


@pytest.mark.slow
def test_torchrun_launch_with_dense_consensus(tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun not found")
    out = tmp_path / "tr.npz"
    cmd = [torchrun, "--nproc-per-node", "2", "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           "-m", "proxfed_dl.distributed", *ARGS, "--consensus", "dense", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = single_process_run()
    np.testing.assert_allclose(np.load(out)["w"], B.to_numpy(ref.state.w), rtol=1e-9, atol=1e-12)
