"""Forked workers of the reproductions: balancing, failure handling, and results equal to one process."""

import os
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxfed.experiments._workers import dispatch_order, run_forked


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1e3), max_size=30))
def test_dispatch_order_is_every_task_once_costliest_first(costs):
    order = dispatch_order(costs)
    assert sorted(order) == list(range(len(costs)))
    assert all((costs[a], -a) > (costs[b], -b) for a, b in zip(order, order[1:]))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_run_forked_rejects_bad_jobs(bad):
    with pytest.raises(ValueError, match="jobs"):
        run_forked([lambda: 1], [1.0], bad)


def test_a_free_worker_takes_the_next_task_whatever_the_costs_said(tmp_path):
    """Costs that are wrong (a cell read back costs nothing) leave no worker idle.

    All six tasks are estimated equal, but task 0 waits until tasks 1-5 are done: only a worker
    that is free takes them, so the other worker must run all five (a split made up front would
    queue two of them behind task 0, and task 0 would give up waiting).
    """
    def task(i):
        if i == 0:
            deadline = time.monotonic() + 60
            while not all((tmp_path / f"{j}.done").exists() for j in range(1, 6)):
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.01)
        (tmp_path / f"{i}.done").touch()
        return os.getpid()

    pids = run_forked([lambda i=i: task(i) for i in range(6)], [1] * 6, 2)
    assert sorted(pids) == list(range(6)) and pids[0] is not None
    assert all(pids[i] != pids[0] for i in range(1, 6))  # the other worker ran all five
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()


def test_run_forked_returns_each_tasks_result_and_reports_failures(tmp_path):
    def task(i):
        if i == 2:
            raise RuntimeError("boom")
        (tmp_path / f"{i}.txt").write_text(str(os.getpid()))
        return i * i

    messages = []
    results = run_forked([lambda i=i: task(i) for i in range(5)], [1, 2, 3, 4, 5], 2, echo=messages.append)
    assert results == {0: 0, 1: 1, 3: 9, 4: 16}
    assert len(messages) == 1 and "task 2 failed" in messages[0] and "boom" in messages[0]
    pids = {(tmp_path / f"{i}.txt").read_text() for i in (0, 1, 3, 4)}
    assert len(pids) == 2 and str(os.getpid()) not in pids  # two workers, neither is this process
    assert run_forked([], [], 3) == {}

    def leave(i):
        if i == 0:
            raise SystemExit(3)  # stops its worker: task 1, in the same worker, is not run there
        return i

    messages.clear()
    # task 0's worker stops; the other worker runs tasks 2 and 1
    assert run_forked([lambda i=i: leave(i) for i in range(3)], [2, 1, 2], 2, echo=messages.append) == {1: 1, 2: 2}
    assert len(messages) == 1 and "task 0 failed" in messages[0]
    messages.clear()
    assert run_forked([lambda i=i: leave(i) for i in range(2)], [2, 1], 1, echo=messages.append) == {}
    assert any("task 0 failed" in m for m in messages) and any("no worker was left for tasks [1]" in m
                                                               for m in messages)

    def killed(i):
        if i == 0:
            os._exit(9)  # dies without reporting, as under the OOM killer
        return i

    messages.clear()
    assert run_forked([lambda i=i: killed(i) for i in range(2)], [1, 1], 2, echo=messages.append) == {1: 1}
    assert any("exited with code 9" in m and "[0]" in m for m in messages)
    with pytest.raises(ValueError, match="costs"):
        run_forked([lambda: 1], [], 2)


def test_final_runs_in_workers_equal_one_process(tmp_path):
    from proxfed.data import make_sparse_regression
    from proxfed.experiments.paper import Budget
    from proxfed.experiments.pipeline import Pipeline as _Pipeline
    from proxfed.problems import Ridge

    prob = Ridge(make_sparse_regression(n_clients=5, n_features=8, n_informative=3, seed=2), alpha=1.0)
    b = Budget("t", communications=4, seeds=3, tune_communications=1, n_stage1=1, n_stage2=0, records=4)
    gamma = 0.5 / float(np.max(prob.smoothness()))
    cells = [("sparse_proxskip", 0.8, {"gamma": gamma, "p": 0.4}), ("fediht", 0.9, {"gamma": gamma, "local_steps": 3}),
             ("sparse_proxskip_local", 0.8, {"gamma": gamma, "p": 0.3})]

    def where(root, m, s):
        return root / "runs" / m / str(s)

    solo = _Pipeline("blogfeedback", tmp_path / "solo", b, (), 0, False, lambda *_: None)
    expected = [solo.final_run(m, s, p, prob, where(tmp_path / "solo", m, s), 4)[0] for m, s, p in cells]
    pipe = _Pipeline("blogfeedback", tmp_path / "forked", b, (), 0, False, lambda *_: None)
    fresh = run_forked([lambda c=c: not pipe.final_run(c[0], c[1], c[2], prob, where(tmp_path / "forked", c[0], c[1]),
                                                      4)[1].get("read_back") for c in cells],
                       [1, 1, 1], 2, init=pipe.in_worker)
    assert fresh == {0: True, 1: True, 2: True}
    for (m, s, p), want in zip(cells, expected):
        got, summ = pipe.final_run(m, s, p, prob, where(tmp_path / "forked", m, s), 4)
        assert summ.get("read_back")  # stored by a worker, read back here
        assert set(got) == set(want) and "metric" in want
        for name in set(want) - {"time"}:  # wall-clock seconds differ, nothing else may
            np.testing.assert_array_equal(got[name], want[name])


def test_reproduce_and_cli_validate_jobs(tmp_path, capsys):
    from proxfed.cli import main
    from proxfed.experiments.paper import reproduce

    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="jobs must be a positive integer"):
            reproduce("blogfeedback", tmp_path, tmp_path / "out", jobs=bad)
    with pytest.raises(ValueError, match="backend='numpy'"):
        reproduce("blogfeedback", tmp_path, tmp_path / "out", jobs=2, backend="torch")
    assert not (tmp_path / "out").exists()
    for argv in (["reproduce", "blogfeedback", "--data-dir", str(tmp_path), "--jobs", "0"],
                 ["reproduce", "femnist", "--data-dir", str(tmp_path), "--jobs", "2", "--backend", "torch"],
                 ["reproduce", "cifar10", "--data-dir", str(tmp_path), "--jobs", "2"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "--jobs" in capsys.readouterr().err


def test_workers_share_the_parents_blas_threads(tmp_path):
    from threadpoolctl import threadpool_info, threadpool_limits

    from proxfed.experiments.paper import Budget
    from proxfed.experiments.pipeline import Pipeline as _Pipeline

    b = Budget("t", communications=1, seeds=1, tune_communications=1, n_stage1=1, n_stage2=0)
    pipe = _Pipeline("blogfeedback", tmp_path, b, (), 0, False, lambda *_: None)

    def blas_threads_here():
        return max([lib["num_threads"] for lib in threadpool_info()] or [1])

    with threadpool_limits(4):  # the parent's pools, whatever the machine
        parent = blas_threads_here()
        got = run_forked([blas_threads_here] * 2, [1, 1], 2, init=lambda: pipe.in_worker(2))
    assert got == {0: max(1, parent // 2), 1: max(1, parent // 2)}
    assert pipe.worker == ""  # the parent's pipeline is untouched
