"""Final runs in stored segments: the same run as one call, and resumed after an interruption."""

import json

import numpy as np
import pytest

import proxfed
import proxfed.experiments.segments as segments
from proxfed.experiments._workers import dispatch_order
from proxfed.data import make_sparse_regression
from proxfed.problems import Ridge
from proxfed.tune import make_algorithm


@pytest.fixture(scope="module")
def problem():
    return Ridge(make_sparse_regression(n_clients=5, n_features=10, n_informative=3, seed=4), alpha=1.0)


def rule(method, problem, runs=3):
    g = 0.5 / float(np.max(problem.smoothness()))
    values = {"gamma": g, "p": 0.3, "local_steps": 3, "lam": 1e-3}
    names = {"sparse_proxskip_local": ("gamma", "p"), "fediht": ("gamma", "local_steps"),
             "randprox_l1": ("gamma", "p", "lam")}[method]
    return make_algorithm(method, {n: np.full(runs, values[n]) for n in names}, 3)


def same_run(got, want):
    assert set(got.history) == set(want.history)
    for name in set(want.history) - {"time"}:  # wall-clock seconds differ, nothing else may
        np.testing.assert_array_equal(got.history[name], want.history[name], err_msg=name)
    np.testing.assert_array_equal(got.w, want.w)
    np.testing.assert_array_equal(got.state.h, want.state.h)
    assert got.status == want.status == "completed"
    assert got.message == want.message  # the whole run's, not its last segment's
    assert np.all(np.diff(got.history["time"]) >= 0)


@pytest.mark.parametrize("method", ["sparse_proxskip_local", "fediht", "randprox_l1"])
def test_segments_give_the_run_of_one_call(problem, tmp_path, method):
    alg, w0, seeds = rule(method, problem), np.zeros((3, problem.dim)), [5, 6, 7]
    want = proxfed.run(alg, problem, 200, seed=seeds, split="test", every=8, w0=w0)
    got = segments.run_in_segments(alg, problem, 200, seeds=seeds, split="test", every=8, w0=w0,
                                   where=tmp_path, key={"k": 1}, say=lambda *_: None)
    same_run(got, want)
    assert got.config["segments"] == 25 and got.config["iterations"] == 200  # segments of 8
    assert got.config["resumed_at"] == 0
    assert not (tmp_path / "partial").exists()  # cleaned up


def test_an_interrupted_run_resumes_where_it_stopped(problem, tmp_path, monkeypatch):
    alg, w0, seeds = rule("sparse_proxskip_local", problem), np.zeros((3, problem.dim)), [5, 6, 7]
    want = proxfed.run(alg, problem, 120, seed=seeds, split="test", every=4, w0=w0)
    calls = []
    real_run = segments.run

    def dies_at_the_fourth_segment(*args, **kwargs):
        calls.append(kwargs.get("state") is not None)
        if len(calls) == 4:
            raise KeyboardInterrupt  # the session ends
        return real_run(*args, **kwargs)

    monkeypatch.setattr(segments, "run", dies_at_the_fourth_segment)
    with pytest.raises(KeyboardInterrupt):
        segments.run_in_segments(alg, problem, 120, seeds=seeds, split="test", every=4, w0=w0, where=tmp_path,
                                 key={"k": 1}, say=lambda *_: None)
    progress = json.loads((tmp_path / "partial" / "progress.json").read_text())
    stored = 3 * segments.segment_length(120, 4)
    assert progress["t"] == stored == 24  # three segments of 8 stored
    # the same key continues it, computing only what is left
    said, counted = [], []
    monkeypatch.setattr(segments, "run", lambda *a, **k: counted.append(a[2]) or real_run(*a, **k))
    got = segments.run_in_segments(alg, problem, 120, seeds=seeds, split="test", every=4, w0=w0, where=tmp_path,
                                   key={"k": 1}, say=said.append)
    assert any(f"resuming at iteration {stored} of 120" in m for m in said)
    assert sum(counted) == 120 - stored
    assert [m.split()[1] for m in said if "stored in" in m] == [str(t) for t in range(stored + 8, 120, 8)]
    assert all(m.endswith(" left)") for m in said if "stored in" in m)  # the time left, at this sitting's pace
    assert got.config["resumed_at"] == stored and got.config["segments"] == (120 - stored) // 8
    same_run(got, want)
    assert not (tmp_path / "partial").exists()


def test_a_stored_segment_of_another_key_or_damaged_is_not_continued(problem, tmp_path, monkeypatch):
    alg, w0, seeds = rule("fediht", problem), np.zeros((3, problem.dim)), [1, 2, 3]
    want = proxfed.run(alg, problem, 60, seed=seeds, split="test", every=3, w0=w0)
    real_run = segments.run
    n = []

    def dies_at_the_third(*a, **k):
        n.append(1)
        if len(n) == 3:
            raise KeyboardInterrupt
        return real_run(*a, **k)

    monkeypatch.setattr(segments, "run", dies_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        segments.run_in_segments(alg, problem, 60, seeds=seeds, split="test", every=3, w0=w0, where=tmp_path,
                                 key={"k": 1}, say=lambda *_: None)
    monkeypatch.setattr(segments, "run", real_run)
    said = []
    other = segments.run_in_segments(alg, problem, 60, seeds=seeds, split="test", every=3, w0=w0, where=tmp_path,
                                     key={"k": 2}, say=said.append)
    assert not any("resuming" in m for m in said)
    assert said[0] == f"    60 iterations in segments of 3, kept in {tmp_path / 'partial'} until done"  # a fresh start
    same_run(other, want)
    # a truncated state file: started over, with a warning from the reader, never a wrong run
    with pytest.raises(KeyboardInterrupt):
        monkeypatch.setattr(segments, "run", dies_at_the_third)
        n.clear()
        segments.run_in_segments(alg, problem, 60, seeds=seeds, split="test", every=3, w0=w0, where=tmp_path,
                                 key={"k": 1}, say=lambda *_: None)
    monkeypatch.setattr(segments, "run", real_run)
    (tmp_path / "partial" / "state.npz").write_bytes(b"not a zip")
    said.clear()
    again = segments.run_in_segments(alg, problem, 60, seeds=seeds, split="test", every=3, w0=w0, where=tmp_path,
                                     key={"k": 1}, say=said.append)
    assert not any("resuming" in m for m in said)
    same_run(again, want)


def test_a_diverging_segment_reruns_in_one_call(problem, tmp_path):
    """A batched run that diverges is frozen at its last finite record, as in one call."""
    L = float(np.max(problem.smoothness()))
    alg = make_algorithm("sparse_proxskip_local", {"gamma": np.array([0.5 / L, 60.0 / L]), "p": np.full(2, 0.3)}, 3)
    w0 = np.zeros((2, problem.dim))
    want = proxfed.run(alg, problem, 400, seed=[1, 2], split="test", every=4, w0=w0)
    assert want.status == "diverged"
    said = []
    got = segments.run_in_segments(alg, problem, 400, seeds=[1, 2], split="test", every=4, w0=w0, where=tmp_path,
                                   key={"k": 1}, say=said.append)
    assert got.status == "diverged" and any("in one call" in m for m in said)
    for name in set(want.history) - {"time"}:
        np.testing.assert_array_equal(got.history[name], want.history[name])
    assert not (tmp_path / "partial").exists()


@pytest.mark.parametrize("method", ["sparse_proxskip_local", "fediht"])  # fediht: one run repeated for the seeds
def test_a_reproductions_final_run_in_segments_equals_one_call(problem, tmp_path, monkeypatch, method):
    import proxfed.experiments.pipeline as pipeline
    from proxfed.experiments.paper import Budget

    b = Budget("t", communications=30, seeds=3, tune_communications=1, n_stage1=1, n_stage2=0, records=10,
               driver="run")
    g = 0.5 / float(np.max(problem.smoothness()))
    params = {"gamma": g, "p": 0.3} if method == "sparse_proxskip_local" else {"gamma": g, "local_steps": 3}
    results = {}
    for label, smallest in (("one call", 10**9), ("segments", 1)):
        monkeypatch.setattr(pipeline, "MIN_SEGMENTED_ITERATIONS", smallest)
        said = []
        pipe = pipeline.Pipeline("blogfeedback", tmp_path / label, b, (method,), 0, False, said.append)
        results[label] = pipe.final_run(method, 0.8, params, problem, tmp_path / label / "run", 30)
        config = json.loads((tmp_path / label / "run" / "config.json").read_text())
        assert ("segments" in config) == (label == "segments")
    (h1, s1), (h2, s2) = results["one call"], results["segments"]
    for name in set(h1) - {"time"}:
        np.testing.assert_array_equal(h2[name], h1[name], err_msg=name)
    for name in ("metric", "objective", "train_loss_sum", "iterations", "communications", "bits_up", "key"):
        assert s2[name] == s1[name]
    assert s1["runs_computed"] == s2["runs_computed"] == (1 if method == "fediht" else 3)
    # the run's own seconds: its clock at the last record, which adds up the segments
    for h, summ in ((h1, s1), (h2, s2)):
        assert summ["run_seconds"] == float(h["time"][-1]) and 0 < summ["run_seconds"] <= summ["seconds"]
    # a summary stored without them gets them when read back
    where = tmp_path / "segments" / "run"
    old = json.loads((where / "summary.json").read_text())
    del old["run_seconds"]
    (where / "summary.json").write_text(json.dumps(old))
    pipe = pipeline.Pipeline("blogfeedback", tmp_path / "segments", b, (method,), 0, False, lambda *_: None)
    _, back = pipe.final_run(method, 0.8, params, problem, where, 30)
    assert back["read_back"] and back["run_seconds"] == float(h2["time"][-1])
    # the entries --jobs compares to order the cells are the stored key's: a stored run needs nothing,
    # the same run under other hyperparameters all of its steps
    T = pipeline.expected_steps(params, 30, b)
    assert segments.remaining_iterations(where, T, pipeline.stored_match(params, 30)) == 0
    assert segments.remaining_iterations(where, T, pipeline.stored_match({**params, "gamma": g / 2}, 30)) == T
    assert segments.remaining_iterations(where, T, pipeline.stored_match(params, 31)) == T


def test_remaining_iterations_orders_cells_by_the_work_left(tmp_path):
    """A stored run needs nothing, a partial one what its segments leave, a damaged partial all of it."""
    stored, partial, damaged, fresh, odd = (tmp_path / n for n in ("stored", "partial", "damaged", "fresh", "odd"))
    key = {"params": {"gamma": 0.5, "p": 0.1}, "communications": 100}
    stored.mkdir()
    (stored / "summary.json").write_text(json.dumps({"key": key}))
    np.savez_compressed(stored / "history.npz", iteration=np.arange(3))
    (partial / "partial").mkdir(parents=True)
    (partial / "partial" / "progress.json").write_text(json.dumps({"key": key, "t": 400}))
    (damaged / "partial").mkdir(parents=True)
    (damaged / "partial" / "progress.json").write_text('{"t": ')
    (odd / "partial").mkdir(parents=True)
    (odd / "partial" / "progress.json").write_text('{"key": {}, "t": Infinity}')  # valid JSON, no integer
    got = [segments.remaining_iterations(w, 1000) for w in (stored, partial, damaged, fresh, odd)]
    assert got == [0, 600, 1000, 1000, 1000]
    assert segments.remaining_iterations(partial, 300) == 0  # never negative
    # the hand-out: damaged, fresh and odd first (ties by index), then the partial, the stored one last
    assert dispatch_order(got) == [2, 3, 4, 1, 0]
    # a run stored under other hyperparameters is recomputed: it counts as not stored
    same, other = key, {**key, "params": {"gamma": 0.25, "p": 0.1}}
    assert [segments.remaining_iterations(stored, 1000, same), segments.remaining_iterations(partial, 1000, same)] \
        == [0, 600]
    assert [segments.remaining_iterations(stored, 1000, other), segments.remaining_iterations(partial, 1000, other)] \
        == [1000, 1000]
    assert segments.remaining_iterations(damaged, 1000, same) == 1000
    # what read_back would recompute counts as not stored: a summary without its history, one that
    # is not an object, a JSON nested past Python's recursion limit
    for name, text in (("lone", json.dumps({"key": key})), ("list", "[]"), ("deep", "[" * 200_000)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(text)
        if name != "lone":
            np.savez_compressed(tmp_path / name / "history.npz", iteration=np.arange(3))
        assert segments.remaining_iterations(tmp_path / name, 1000) == 1000, name
        assert segments.remaining_iterations(tmp_path / name, 1000, same) == 1000, name


def test_time_left_words_for_odd_paces():
    assert segments.time_left(0, float("inf"), 10) == "time left unknown"
    assert segments.time_left(5, -1.0, 10) == "about 0 s left"
    assert segments.time_left(10, 10.0, 0) == "about 0 s left"
