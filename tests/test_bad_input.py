"""Bad input is refused before any work, without coercion, by an error naming the argument or the file.

Issue 21, item 7. Every case asserts the error type and that the message names the culprit (the
argument, option or file); where a file or directory would be written, that nothing partial is
left. Companions: tests/test_cli_errors.py (the CLI's paths and failures), tests/test_resume.py
(damaged states and state files), tests/test_atomic_save.py (interrupted saves).
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import proxfed
from proxfed import algorithms as A
from proxfed._stored import StoredResultWarning
from proxfed.algorithms.fedsparsify import FedSparsify
from proxfed.algorithms.flash import Flash
from proxfed.cli import main
from proxfed.data import (
    DataFormatError,
    load_blogfeedback,
    load_dataset,
    load_femnist,
    make_fedprox_synthetic,
    make_sparse_regression,
)
from proxfed.prox import L1, TopK, nan_passes_through
from proxfed.problems import Ridge
from proxfed.runner import initial_models
from tests.test_loaders import TEST_NAMES, blog_rows, write_blog, write_blog_zip, write_leaf


@pytest.fixture(scope="module")
def ridge():
    return Ridge(make_sparse_regression(n_clients=4, n_features=5, n_informative=2, n_test=20, n_validation=10,
                                        seed=0), alpha=1.0)


def gamma_of(problem) -> float:
    return 1.0 / float(np.max(problem.smoothness()))


# =============================================================================================
# API: seeds (a), hyperparameters (b), run's arguments (i, l, o) and TopK on NaN (k)
# =============================================================================================

@pytest.mark.parametrize("seed, error", [
    (2.7, TypeError),  # was: seed 2 and a batch of one
    (2.0, TypeError),  # an integral float is still a float
    ("3", TypeError),
    (True, TypeError),
    (b"3", TypeError),
    ([1.5, 2], TypeError),
    ([1, True], TypeError),
    ([[1, 2]], TypeError),
    (np.array([1.0, 2.0]), TypeError),
    (np.array(["1"]), TypeError),
    (-1, ValueError),
    ([3, -1], ValueError),
    ([], ValueError),
    (np.array(3), ValueError),  # a 0-d array: neither an integer nor a sequence
    ({"seed": 1}, TypeError),
])
def test_run_seed_is_an_integer_or_integers(ridge, seed, error):
    alg = A.proxskip(gamma_of(ridge), 0.5)
    with pytest.raises(error, match=r"^seed must be"):
        proxfed.run(alg, ridge, 5, seed=seed)


def test_seed_2_7_no_longer_runs_as_a_batch_of_one(ridge):
    alg = A.proxskip(gamma_of(ridge), 0.5)
    assert proxfed.run(alg, ridge, 3, seed=2).w.shape == (ridge.dim,)
    with pytest.raises(TypeError, match="seed"):
        proxfed.run(alg, ridge, 3, seed=2.7)
    assert proxfed.run(alg, ridge, 3, seed=np.int64(2)).w.shape == (ridge.dim,)  # NumPy integers are integers


@pytest.mark.parametrize("call", [
    lambda pb: proxfed.run(A.proxskip(np.full(3, 0.1), 0.5), pb, 5, seed=[1, 2]),
    lambda pb: initial_models(pb, seed=[1, 2], runs=3),
    lambda pb: A.proxskip(0.1, 0.5).coins(5, seed=[1, 2, 3], runs=2),
], ids=["run", "initial_models", "coins"])
def test_seed_sequence_of_the_wrong_length(ridge, call):
    with pytest.raises(ValueError, match=r"seed .*(one entry per run|has 2 entries)"):
        call(ridge)


@pytest.mark.parametrize("call, name", [
    (lambda: initial_models(_pb(), seed=1.5), "seed"),
    (lambda: make_sparse_regression(seed=1.5), "seed"),
    (lambda: make_fedprox_synthetic(seed="0"), "seed"),
    (lambda: FedSparsify(0.1, 2, 0.5, 3, seed=0.5), "seed"),
    (lambda: proxfed.algorithms.rounds.participants(1.5, 1, 4, 2), "seed"),
], ids=["initial_models", "sparse_regression", "fedprox_synthetic", "fedsparsify", "participants"])
def test_other_seeds_are_integers(call, name):
    with pytest.raises(TypeError, match=f"^{name} must be"):
        call()


def _pb():
    return Ridge(make_sparse_regression(n_clients=3, n_features=4, n_informative=2, seed=0))


HYPER_CASES = [
    # (factory, argument name, bad value, error)
    (lambda v: A.proxskip(v, 0.5), "gamma", "0.01", TypeError),  # was: accepted as 0.01
    (lambda v: A.proxskip(v, 0.5), "gamma", True, TypeError),
    (lambda v: A.proxskip(v, 0.5), "gamma", [0.1, "0.2"], TypeError),
    (lambda v: A.proxskip(v, 0.5), "gamma", np.array(["0.1", "0.2"]), TypeError),
    (lambda v: A.proxskip(v, 0.5), "gamma", np.array([[0.1, 0.2]]), ValueError),
    (lambda v: A.proxskip(v, 0.5), "gamma", None, TypeError),
    (lambda v: A.proxskip(0.1, v), "p", "0.5", TypeError),
    (lambda v: A.proxskip(0.1, v), "p", [True, 0.5], TypeError),
    (lambda v: A.proxskip(0.1, v), "p", 1.5, ValueError),
    (lambda v: A.sparse_proxskip(0.1, 0.5, v), "k", "3", TypeError),
    (lambda v: A.sparse_proxskip(0.1, 0.5, v), "k", True, TypeError),
    (lambda v: A.randprox_l1(0.1, 0.5, v), "lam", "0.1", TypeError),
    (lambda v: A.randprox_l1(0.1, 0.5, v), "lam", False, TypeError),
    (lambda v: L1(v), "lam", [0.1, None], TypeError),
    (lambda v: A.fedavg(v, 5), "gamma", "0.1", TypeError),
    (lambda v: A.fedavg(0.1, v), "local_steps", "5", TypeError),
    (lambda v: A.fedavg(0.1, v), "local_steps", 5.0, TypeError),
    (lambda v: A.fedavg(0.1, v), "local_steps", [5, True], TypeError),
    (lambda v: A.fedavg(0.1, v), "local_steps", 0, ValueError),
    (lambda v: A.scaffold(0.1, 5, server_lr=v), "server_lr", "1", TypeError),
    (lambda v: A.Algorithm1(0.1, 0.5, uplink=TopK(2), uplink_keep_dense=v), "uplink_keep_dense", "no", TypeError),
    (lambda v: A.FedAvg(0.1, 5, 2, server_topk=v), "server_topk", 1, TypeError),
    (lambda v: FedSparsify(0.1, 2, v, 5), "final_sparsity", "0.9", TypeError),
    (lambda v: FedSparsify(0.1, 2, 0.9, 5, start_round=v), "start_round", 2.5, TypeError),
    (lambda v: FedSparsify(0.1, 2, 0.9, 5, exponent=v), "exponent", True, TypeError),
    (lambda v: FedSparsify(0.1, 2, 0.9, 5, vote_fraction=v), "vote_fraction", "0.5", TypeError),
    (lambda v: Flash(0.1, 2, v, 5), "density", "0.5", TypeError),
    (lambda v: Flash(0.1, 2, 0.5, 5, dst_rate=v), "dst_rate", True, TypeError),
    (lambda v: Flash(0.1, 2, 0.5, 5, stage1_fraction=v), "stage1_fraction", "0.2", TypeError),
]


@pytest.mark.parametrize("factory, name, value, error", HYPER_CASES,
                         ids=[f"{c[1]}={c[2]!r}"[:40] for c in HYPER_CASES])
def test_hyperparameters_are_real_numbers(factory, name, value, error):
    with pytest.raises(error, match=f"^{name} must be"):
        factory(value)


@pytest.mark.parametrize("call, name, error", [
    (lambda pb: make_sparse_regression(correlation="0.5"), "correlation", TypeError),
    (lambda pb: make_sparse_regression(noise=True), "noise", TypeError),
    (lambda pb: make_fedprox_synthetic(alpha="1"), "alpha", TypeError),
    (lambda pb: make_fedprox_synthetic(test_fraction=np.nan), "test_fraction", ValueError),
    (lambda pb: Ridge(pb.dataset, alpha="1.0"), "alpha", TypeError),
    (lambda pb: A.proxskip(0.1, 0.5).init(pb, ["0.1"] * pb.dim), "w0", TypeError),
    (lambda pb: A.proxskip(0.1, 0.5).init(pb, [True] * pb.dim), "w0", TypeError),
    (lambda pb: A.proxskip(0.1, 0.5).init(pb, np.ones(pb.dim, bool)), "w0", TypeError),
], ids=["correlation", "noise", "fedprox_alpha", "test_fraction", "ridge_alpha", "w0_strings", "w0_bools",
        "w0_bool_array"])
def test_data_and_model_parameters(ridge, call, name, error):
    with pytest.raises(error, match=f"^{name} must"):
        call(ridge)


@pytest.mark.parametrize("kwargs, name", [
    ({"iterations": 0}, "iterations"),  # was: a crash in a reshape
    ({"iterations": -3}, "iterations"),
    ({"iterations": "10"}, "iterations"),
    ({"iterations": 10.0}, "iterations"),
    ({"every": "5"}, "every"),
    ({"every": True}, "every"),
    ({"communications": "3"}, "communications"),
    ({"communications": 0}, "communications"),
    ({"record_at": [0]}, "record_at"),
    ({"record_at": [2.5]}, "record_at"),  # (TypeError: not truncated to 2)
    ({"split": "holdout"}, "split"),
    ({"reference": "best"}, "reference"),
    ({"coins": np.array([0, 2, 1, 0, 0])}, "coins"),
    ({"coins": np.ones(3, bool)}, "coins"),
    ({"w0": np.zeros(3)}, "w0"),
])
def test_run_arguments(ridge, kwargs, name):
    args = {"iterations": 5, **kwargs}
    error = TypeError if kwargs.get("record_at") == [2.5] else ValueError
    with pytest.raises(error, match=f"^{name}"):
        proxfed.run(A.proxskip(gamma_of(ridge), 0.5), ridge, args.pop("iterations"), **args)


@pytest.mark.parametrize("problem, hint", [
    ("dataset", r"FederatedDataset: wrap it in one, e\.g\. proxfed\.problems\.Ridge\(dataset\)"),
    ("string", r"problem must be a federated problem .* got str"),
    ("array", r"problem must be a federated problem .* got ndarray"),
])
def test_run_on_something_that_is_not_a_problem(ridge, problem, hint):
    bad = {"dataset": ridge.dataset, "string": "ridge", "array": np.zeros((3, 3))}[problem]
    with pytest.raises(TypeError, match=hint):
        proxfed.run(A.proxskip(0.1, 0.5), bad, 5)


@pytest.mark.parametrize("evaluate, batched, error, match", [
    (lambda w: 0.5, True, ValueError, r"evaluate must return one value per run, shape \(2,\), got shape \(\)"),
    (lambda w: np.zeros(3), True, ValueError, r"evaluate must return one value per run"),
    (lambda w: np.zeros(2), False, ValueError, r"evaluate must return a scalar, got shape \(2,\)"),
    (lambda w: "0.5", False, TypeError, r"evaluate must return a real number"),
    (lambda w: None, False, TypeError, r"evaluate must return a real number"),
    (lambda w: np.array(["a", "b"]), True, TypeError, r"evaluate must return real numbers"),
])
def test_evaluate_returns_one_real_per_run(ridge, evaluate, batched, error, match):
    """A scalar for a batch is refused, not broadcast: it would give every run one (wrong) metric."""
    g = gamma_of(ridge)
    alg = A.proxskip(np.full(2, g), 0.5) if batched else A.proxskip(g, 0.5)
    with pytest.raises(error, match=match):
        proxfed.run(alg, ridge, 5, evaluate=evaluate)


def test_evaluate_per_run_is_recorded_per_run(ridge):
    g = gamma_of(ridge)
    res = proxfed.run(A.proxskip(np.full(2, g), 0.5), ridge, 4, every=2, evaluate=lambda w: w[:, 0])
    assert res.history["metric"].shape == (3, 2)


@pytest.mark.parametrize("x, method", [
    (np.array([np.nan, 1.0, 3.0, -5.0]), "prox"),  # was: [0, 0, 0, -5]
    (np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 1.0]]), "prox"),
    (np.array([np.nan, 1.0, 3.0, -5.0]), "mask"),
])
def test_topk_on_nan_raises(x, method):
    with pytest.raises(ValueError, match=r"TopK: x contains NaN"):
        getattr(TopK(2), method)(x)


def test_topk_inside_the_drivers_passes_nan_on():
    x = np.array([[np.nan, 1.0, 3.0, -5.0], [1.0, 4.0, -2.0, 0.5]])
    with nan_passes_through():
        out = TopK(2).prox(x)
    assert np.isnan(out[0, 0]) and np.array_equal(out[1], [0.0, 4.0, -2.0, 0.0])
    np.testing.assert_array_equal(TopK(2).prox(np.array([np.inf, 1.0, 3.0])), [np.inf, 0.0, 3.0])  # inf ranks


@pytest.mark.parametrize("batched", [False, True])
def test_a_diverging_sparse_run_through_topk_still_diverges(ridge, batched):
    """The NaN of a diverging Sparse-ProxSkip run crosses the uplink TopK; the runner stops (or freezes) it."""
    g = gamma_of(ridge)
    gam = np.array([g, 200 * g]) if batched else 200 * g
    res = proxfed.run(A.sparse_proxskip(gam, 1.0, 2), ridge, 300, seed=[0, 1] if batched else 0, every=1)
    assert res.status == "diverged"
    assert np.all(np.isfinite(res.history["loss"])) and np.all(np.isfinite(res.state.w))
    assert res.diverged.tolist() == ([False, True] if batched else True)
    with pytest.raises(ValueError, match="NaN"):  # (outside the runner the same TopK refuses NaN)
        TopK(2).prox(np.full(ridge.dim, np.nan))


# =============================================================================================
# loaders: FEMNIST pixels (c), BlogFeedback zip members (j), cache directory (m), cache header (n)
# =============================================================================================

def _edit_pixel(folder: Path, value):
    path = folder / "train" / "all_data_0_niid_05_keep_0_train_9.json"
    doc = json.loads(path.read_text())
    doc["user_data"][doc["users"][1]]["x"][2][7] = value
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("value, shown", [
    ("0.25", r"pixel 7 = '0\.25' is not a number \(a JSON str\)"),  # was: read as 0.25
    (True, r"pixel 7 = True is not a number \(a JSON bool\)"),  # was: read as 1.0
    (None, r"pixel 7 = None is not a number"),
    ([0.5], r"pixel 7 = \[0\.5\] is not a number"),
    ({"v": 1}, r"pixel 7 = \{'v': 1\} is not a number"),
])
def test_femnist_pixel_must_be_a_json_number(tmp_path, value, shown):
    folder = write_leaf(tmp_path / "femnist")
    path = _edit_pixel(folder, value)
    with pytest.raises(DataFormatError, match=shown) as exc:
        load_femnist(folder, n_writers=None, cache_dir=tmp_path / "cache")
    assert str(path) in str(exc.value) and "sample 2" in str(exc.value)
    assert not (tmp_path / "cache").exists()


@pytest.fixture(scope="module")
def blog_raw():
    gen = np.random.default_rng(1)
    train = blog_rows(gen, [3, 1, 5, 2])
    return train, [blog_rows(gen, s) for s in ([2], [1], [1, 1])]


def _corrupt_deflate(path: Path, member: str):
    """Damage the deflate stream of ``member`` (the zip directory and the sizes stay intact)."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
    raw = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 5, start + 40):
        raw[i] = 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("member", ["blogData_train.csv", TEST_NAMES[1]])
def test_blogfeedback_corrupt_zip_member(tmp_path, blog_raw, member):
    path = write_blog_zip(tmp_path / "blog.zip", *blog_raw)
    _corrupt_deflate(path, member)
    with zipfile.ZipFile(path) as z, pytest.raises((zlib.error, zipfile.BadZipFile)):
        z.read(member)  # (the raw failure the loader used to let through)
    with pytest.raises(DataFormatError, match=rf"blog\.zip:{member}: corrupt zip member") as exc:
        load_blogfeedback(path, cache_dir=tmp_path / "cache")
    assert str(path) in str(exc.value)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("what", ["file", "below_a_file", "read_only", "read_only_parent"])
def test_cache_dir_is_checked_before_parsing(tmp_path, blog_raw, monkeypatch, what):
    import proxfed.data.blogfeedback as bf

    folder = write_blog(tmp_path / "blog", *blog_raw)
    (tmp_path / "file").write_text("mine")
    locked = tmp_path / "locked"
    locked.mkdir()
    cache = {"file": tmp_path / "file", "below_a_file": tmp_path / "file" / "cache", "read_only": locked,
             "read_only_parent": locked / "cache"}[what]
    access = os.access  # root may write anywhere: the check asks os.access, which is told `locked` is read-only
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: os.fspath(p) != str(locked) and access(p, mode, **kw))
    parsed = []
    monkeypatch.setattr(bf, "parse_csv", lambda *a, **k: parsed.append(a) or np.zeros((0, 281)))
    error = NotADirectoryError if "file" in what else PermissionError
    with pytest.raises(error, match=f"cache_dir {cache}") as exc:
        load_blogfeedback(folder, cache_dir=cache)
    assert parsed == []  # refused before the CSV parse
    assert ("not writable" if "read_only" in what else "file") in str(exc.value)
    assert (tmp_path / "file").read_text() == "mine" and os.listdir(locked) == []


def test_read_only_cache_dir_still_serves_its_entries(tmp_path, blog_raw, monkeypatch):
    folder = write_blog(tmp_path / "blog", *blog_raw)
    ds = load_blogfeedback(folder, cache_dir=tmp_path / "cache")
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: "cache" not in os.fspath(p) and access(p, mode, **kw))
    again = load_blogfeedback(folder, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.X, ds.X)


def _npz_with(path: Path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def _dataset_arrays(ds):
    return {"X": ds.X, "y": ds.y, "offsets": ds.offsets}


@pytest.mark.parametrize("damage, what", [
    (lambda p, a: _npz_with(p, header=np.array("{not json"), **a), r"malformed header \(not JSON"),
    (lambda p, a: _npz_with(p, header=np.array("[1, 2]"), **a), r"malformed header \(expected a JSON object"),
    (lambda p, a: _npz_with(p, header=np.array(["{}", "{}"]), **a), r"malformed header \(expected one JSON string"),
    (lambda p, a: _npz_with(p, header=np.array(3), **a), r"malformed header"),
    (lambda p, a: _npz_with(p, header=np.array('{"format": 1, "meta": [1]}'), **a), r"meta must be an object"),
    (lambda p, a: _npz_with(p, header=np.array('{"format": 99}'), **a), r"format 99, expected 1"),
    (lambda p, a: _npz_with(p, **a), r"no header"),
    (lambda p, a: _npz_with(p, header=np.array('{"format": 1}'), **{**a, "offsets": np.array([0, 2, 99])}),
     r"the arrays do not form a dataset"),
    (lambda p, a: _npz_with(p, header=np.array('{"format": 1}'), **{**a, "test.X": a["X"]}),
     r"only one of test\.X and test\.y"),
    (lambda p, a: p.write_bytes(p.read_bytes()[:100]), r"not a readable \.npz dataset"),
    (lambda p, a: p.write_bytes(b""), r"not a readable \.npz dataset"),
    (lambda p, a: np.save(p.with_suffix(".npy"), a["X"]) or p.with_suffix(".npy").replace(p),
     r"a single \.npy array"),
])
def test_damaged_dataset_cache(tmp_path, blog_raw, damage, what):
    """load_dataset: a DataFormatError naming the file; a loader's cache: a warning, then a fresh parse."""
    folder = write_blog(tmp_path / "blog", *blog_raw)
    ds = load_blogfeedback(folder, cache_dir=tmp_path / "cache")
    (entry,) = (tmp_path / "cache").iterdir()
    damage(entry, _dataset_arrays(ds))
    with pytest.raises(DataFormatError, match=what) as exc:
        load_dataset(entry)
    assert str(entry) in str(exc.value)
    with pytest.warns(UserWarning, match=f"damaged dataset cache.*{entry.name}"):
        again = load_blogfeedback(folder, cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(again.X, ds.X)
    assert load_dataset(entry).n_samples == ds.n_samples  # rewritten whole
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [entry.name]  # no temporary file left


@pytest.mark.parametrize("call, name, error", [
    (lambda d: load_blogfeedback(d, validation_fraction="0.1"), "validation_fraction", TypeError),
    (lambda d: load_blogfeedback(d, validation_fraction=True), "validation_fraction", TypeError),
    (lambda d: load_blogfeedback(d, seed=0.5), "seed", TypeError),
    (lambda d: load_femnist(d, seed="1"), "seed", TypeError),
    (lambda d: load_femnist(d, n_writers="10"), "n_writers", ValueError),
])
def test_loader_arguments(tmp_path, call, name, error):
    with pytest.raises(error, match=f"^{name} must"):
        call(tmp_path)


# =============================================================================================
# stored results: reproduce's final runs (h) and the tuning file
# =============================================================================================

@pytest.fixture
def pipeline(tmp_path):
    from proxfed.experiments.paper import Budget
    from proxfed.experiments.pipeline import Pipeline as _Pipeline

    prob = Ridge(make_sparse_regression(n_clients=4, n_features=6, n_informative=2, seed=1), alpha=1.0)
    b = Budget("t", communications=3, seeds=2, tune_communications=1, n_stage1=1, n_stage2=0, records=3)
    messages = []
    pipe = _Pipeline("blogfeedback", tmp_path, b, ("sparse_proxskip",), 0, False, messages.append)
    pipe.data_key = {"dataset": "x"}
    params = {"gamma": 0.5 / float(np.max(prob.smoothness())), "p": 0.5}
    where = tmp_path / "runs" / "sparse_proxskip" / "s0900"

    def final():
        return pipe.final_run("sparse_proxskip", 0.9, params, prob, where, 3)

    return final, where, messages


def _rewrite_npz(path: Path, drop=(), cut=None):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files if k not in drop}
    if cut is not None:
        arrays = {k: v[:cut] for k, v in arrays.items()}
    np.savez_compressed(path, **arrays)


@pytest.mark.parametrize("damage, problem", [
    (lambda d: (d / "history.npz").write_bytes((d / "history.npz").read_bytes()[:200]), "BadZipFile"),  # truncated
    (lambda d: (d / "history.npz").write_bytes(b""), "damaged stored result"),
    (lambda d: _rewrite_npz(d / "history.npz", drop=("metric",)), r"missing arrays \['metric'\]"),
    (lambda d: _rewrite_npz(d / "history.npz", cut=2), "do not have"),
    (lambda d: (d / "summary.json").write_text('{"key": '), "JSONDecodeError"),
    (lambda d: (d / "summary.json").write_text("[1, 2]"), "expected a dict"),
])
def test_reproduce_recomputes_a_damaged_stored_final_run(pipeline, damage, problem):
    final, where, messages = pipeline
    first, _ = final()
    damage(where)
    with pytest.warns(StoredResultWarning, match=problem) as rec:
        again, summary = final()
    assert any(str(where) in str(w.message) for w in rec)
    assert not summary.get("read_back")
    np.testing.assert_array_equal(again["metric"], first["metric"])
    third, summary = final()  # the recomputed result was stored whole
    assert summary.get("read_back") and np.array_equal(third["metric"], first["metric"])


@pytest.mark.parametrize("damage", [
    lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]),
    lambda p: p.write_bytes(b"\xff\xfe\x00"),
    lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "trials": [{"stage": 1}]})),
    lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "trials": "none"})),
], ids=["truncated", "not_utf8", "malformed_trial", "trials_not_a_list"])
def test_tuning_file_damaged_is_recomputed_with_a_warning(tmp_path, damage):
    from proxfed.tune import Param, SearchSpace, random_search

    space = SearchSpace((Param("x", 0.1, 10.0),))
    calls = []

    def evaluate(batch):
        calls.append(len(batch))
        return [-abs(np.log10(c["x"])) for _, c in batch]

    path = tmp_path / "search.json"
    a = random_search(evaluate, space, n_stage1=4, n_stage2=0, seed=1, path=path)
    damage(path)
    with pytest.warns(StoredResultWarning, match=str(path)):
        b = random_search(evaluate, space, n_stage1=4, n_stage2=0, seed=1, path=path)
    assert calls == [4, 4] and b.best == a.best
    assert json.loads(path.read_text())["complete"]


# =============================================================================================
# CLI: option values (beyond tests/test_cli_errors.py: paths, --alpha, failures)
# =============================================================================================

@pytest.fixture
def blog_dir(tmp_path):
    d = tmp_path / "blog"
    d.mkdir()
    for name in ("blogData_train.csv", "blogData_test-2012.02.01.00_00.csv"):
        (d / name).write_text("1,2,3\n")
    return d


def _usage_line(argv, capsys) -> str:
    """``main(argv)`` must be a usage error (status 2, no traceback): its one message line."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("usage: proxfed")
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("extra, option", [
    (["--sparsity", "1.5"], "--sparsity"),
    (["--sparsity", "-0.1"], "--sparsity"),
    (["--sparsity", "dense"], "--sparsity"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "2.5"], "--seed"),
    (["--iterations", "ten"], "--iterations"),
    (["--iterations", "-5"], "--iterations"),
    (["--methods", "nope"], "unknown methods ['nope']"),
])
def test_cli_demo_bad_values(tmp_path, capsys, extra, option):
    out = tmp_path / "out"
    line = _usage_line(["demo", "--out", str(out)] + extra, capsys)
    assert line.startswith("proxfed demo: error: ") and option in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("extra, option", [
    (["--budget", "huge"], "--budget"),
    (["--backend", "jax"], "--backend"),
    (["--dtype", "float16"], "--dtype"),
    (["--driver", "fast"], "--driver"),
    (["--jobs", "0"], "--jobs"),
    (["--jobs", "two"], "--jobs"),
    (["--seed", "-2"], "--seed"),
    (["--seed", "x"], "--seed"),
    (["--methods", "fedprox"], "unknown methods ['fedprox']"),
    (["--device", "cuda"], "device 'cuda'"),
    (["--jobs", "2", "--backend", "torch"], "--jobs"),
])
def test_cli_reproduce_bad_values(tmp_path, capsys, blog_dir, extra, option):
    out = tmp_path / "results" / "out"
    line = _usage_line(["reproduce", "blogfeedback", "--data-dir", str(blog_dir), "--out", str(out)] + extra,
                       capsys)
    assert line.startswith("proxfed reproduce: error: ") and option in line
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("argv, option", [
    (["--threads", "0", "demo"], "--threads"),
    (["--threads", "many", "demo"], "--threads"),
    (["reproduce", "mnist"], "experiment"),
    (["demo", "--unknown-flag"], "--unknown-flag"),
])
def test_cli_top_level_bad_values(tmp_path, capsys, monkeypatch, argv, option):
    monkeypatch.chdir(tmp_path)
    line = _usage_line(argv, capsys)
    assert option in line
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("cache", ["file", "file/sub"])
def test_cli_cache_dir_that_is_a_file_fails_before_parsing(tmp_path, capsys, blog_dir, cache):
    """A runtime failure (status 1), one line naming the cache directory, before the CSV is read
    (the CSV here has 3 columns: parsing it would fail with another message)."""
    (tmp_path / "file").write_text("mine")
    out = tmp_path / "results" / "out"
    status = main(["reproduce", "blogfeedback", "--data-dir", str(blog_dir), "--out", str(out),
                   "--cache-dir", str(tmp_path / cache), "--no-progress"])
    assert status == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("proxfed reproduce: error: cache_dir ")
    assert str(tmp_path / cache) in err[0] and "281" not in err[0]
    assert not (tmp_path / "results").exists() and (tmp_path / "file").read_text() == "mine"
