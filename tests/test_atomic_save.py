"""Saving is atomic: a run directory (RunResult.save) or a dataset cache (save_dataset) is complete or absent."""

import errno
import json
import os

import numpy as np
import pytest

import proxfed
from proxfed import algorithms, theory
from proxfed.data import load_dataset, make_sparse_regression, save_dataset
from proxfed.problems import Ridge

RUN_FILES = {"config.json", "history.npz", "summary.json", "state.npz"}


@pytest.fixture(scope="module")
def results():
    """Two short runs with different horizons (20 and 40 iterations)."""
    problem = Ridge(make_sparse_regression(n_clients=3, n_features=6, n_informative=2, n_test=20,
                                           n_validation=10, seed=0), alpha=1.0)
    params = theory.proxskip_parameters(problem)
    alg = algorithms.proxskip(params["gamma"], params["p"])
    return proxfed.run(alg, problem, 20, seed=0), proxfed.run(alg, problem, 40, seed=1)


def _snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def _iterations(directory) -> int:
    return json.loads((directory / "config.json").read_text())["iterations"]


def test_save_writes_a_run_and_replaces_an_earlier_one(tmp_path, results):
    first, second = results
    out = first.save(tmp_path / "a" / "run")
    assert out == tmp_path / "a" / "run"
    assert {p.name for p in out.iterdir()} == RUN_FILES
    assert _iterations(out) == 20
    second.save(out)
    assert _iterations(out) == 40 and {p.name for p in out.iterdir()} == RUN_FILES
    assert proxfed.load_state(out / "state.npz").t == 40
    assert os.listdir(tmp_path / "a") == ["run"]  # no temporary or moved-aside directory left


def _raise_disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _truncate_then_raise(*args, **kwargs):
    file = next(a for a in args if isinstance(a, (str, os.PathLike)))  # savez_compressed(file), save_state(s, file)
    with open(file, "wb") as fh:  # a partial file, as a full disk or a kill leaves it
        fh.write(b"PK\x03\x04")
    raise KeyboardInterrupt


@pytest.mark.parametrize("where, failure", [
    ("numpy.savez_compressed", _raise_disk_full),  # history.npz
    ("numpy.savez_compressed", _truncate_then_raise),
    ("proxfed.recording.save_state", _raise_disk_full),  # state.npz, after summary.json
    ("proxfed.recording.save_state", _truncate_then_raise),
])
def test_failed_save_keeps_the_earlier_run(tmp_path, results, monkeypatch, where, failure):
    first, second = results
    out = first.save(tmp_path / "run")
    before = _snapshot(out)
    monkeypatch.setattr(where, failure)
    with pytest.raises((OSError, KeyboardInterrupt)):
        second.save(out)
    assert _snapshot(out) == before
    assert os.listdir(tmp_path) == ["run"]


def test_failed_first_save_leaves_nothing(tmp_path, results, monkeypatch):
    monkeypatch.setattr("proxfed.recording.save_state", _raise_disk_full)
    with pytest.raises(OSError, match="No space"):
        results[0].save(tmp_path / "run")
    assert os.listdir(tmp_path) == []


def test_failed_rename_puts_the_earlier_run_back(tmp_path, results, monkeypatch):
    first, second = results
    out = first.save(tmp_path / "run")
    before = _snapshot(out)
    replace = os.replace

    def fail_on_the_new_run(src, dst):
        if str(src).endswith(".tmp"):
            raise OSError(errno.EIO, "I/O error")
        replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_the_new_run)
    with pytest.raises(OSError, match="I/O error"):
        second.save(out)
    assert _snapshot(out) == before
    assert os.listdir(tmp_path) == ["run"]


def test_save_refuses_a_file_or_a_directory_with_other_files(tmp_path, results):
    (tmp_path / "file").write_text("not a run")
    with pytest.raises(FileExistsError, match="not a directory"):
        results[0].save(tmp_path / "file")
    assert (tmp_path / "file").read_text() == "not a run"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="notes.txt"):
        results[0].save(tmp_path / "mine")
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]
    assert sorted(os.listdir(tmp_path)) == ["file", "mine"]


def test_save_dataset_interrupted_leaves_no_part_file(tmp_path, monkeypatch):
    ds = make_sparse_regression(n_clients=3, n_features=4, n_informative=2, n_test=10, n_validation=5, seed=0)
    path = save_dataset(ds, tmp_path / "ds.npz")
    before = path.read_bytes()

    def write_half_then_interrupt(fh, **arrays):
        fh.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", write_half_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_dataset(make_sparse_regression(n_clients=4, n_features=4, n_informative=2, seed=1), path)
    assert os.listdir(tmp_path) == ["ds.npz"]
    assert path.read_bytes() == before
    assert load_dataset(path).n_clients == 3
