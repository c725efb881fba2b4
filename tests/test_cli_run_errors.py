"""Bad input to ``proxfed run``, ``tune`` and ``compare``: one line naming the option or file, status 2 (usage) or
1 (while working), checked before any work, and no results directory left behind."""

import os
import sys

import pytest

from proxfed.cli import main

from .test_cli_errors import BLOG_NAMES, _usage_error
from .test_cli_run import TINY


def _fails(argv, tmp_path, capsys, command="run"):
    """The usage error's line; nothing was made in ``tmp_path`` but the inputs the test wrote."""
    before = set(os.listdir(tmp_path))
    out = tmp_path / "results" / "out"
    line = _usage_error([command, *argv, "--out", str(out)], capsys, command)
    assert set(os.listdir(tmp_path)) == before
    return line


@pytest.mark.parametrize("argv, expected", [
    (["--method", "sparse_proxskp"], ["--method sparse_proxskp: unknown method", "did you mean",
                                      "sparse_proxskip (Sparse-ProxSkip)", "choose from proxskip"]),
    (["--method", "Sparse-ProxSkip", "Fed-HTT"], ["--method Fed-HTT: unknown method", "fedht (FedHT)"]),
    (["--method", "sps", "--gamma", "abc"], ["argument --gamma: expected a finite number > 0, got 'abc'"]),
    (["--method", "sps", "--gamma", "-0.1"], ["argument --gamma: expected a finite number > 0"]),
    (["--method", "sps", "--gamma", "nan"], ["argument --gamma: expected a finite number > 0"]),
    (["--method", "sps", "--p", "1.5"], ["argument --p: expected a number in (0, 1]"]),
    (["--method", "sps", "--sparsity", "1"], ["argument --sparsity: expected a sparsity in [0, 1)"]),
    (["--method", "sps", "--seed", "1", "x"], ["argument --seed: expected an integer >= 0, got 'x'"]),
    (["--method", "sps", "--local-steps", "0"], ["argument --local-steps: expected an integer >= 1"]),
    (["--method", "sps", "--dataset", "blogg"], ["--dataset blogg: unknown dataset", "did you mean blogfeedback"]),
    (["--method", "sps", "--dataset", "blogfeedback"], ["--data-dir is required for blogfeedback"]),
    (["--method", "sps", "--data-dir", "."], ["--data-dir does not apply to synthetic"]),
    (["--method", "sps", "--data-option", "n_client=3"], ["--data-option n_client: not an option of synthetic",
                                                          "did you mean n_clients"]),
    (["--method", "sps", "--data-option", "n_clients"], ["--data-option n_clients: expected KEY=VALUE"]),
    (["--method", "sps", "--data-option", "n_clients=0"], ["--data-option: n_clients must be an integer >= 1"]),
    (["--method", "sps", *TINY, "--k", "10"], ["--k 10: larger than the model dimension d = 9"]),
    (["--method", "sps", "--iterations", "5", "--communications", "5"], ["--iterations and --communications"]),
    (["--method", "sps", "--sparsity", "0.5", "--k", "3"], ["--sparsity and --k"]),
    (["--method", "sps", "--lam", "0.1"], ["--lam applies to randprox_l1 only"]),
    (["--method", "sps", "--clients-per-round", "2"], ["--clients-per-round applies to FedSparsify and FLASH"]),
    (["--method", "jmwst", "--sparsity", "0.5", "0.8"], ["--sparsity: jmwst takes one sparsity"]),
    (["--method", "sps", "--backend", "cupy"], ["--backend cupy"]),
    ([], ["--method is required"]),
])
def test_run_usage_errors(argv, expected, tmp_path, capsys):
    line = _fails(argv, tmp_path, capsys)
    for text in expected:
        assert text in line, line


def _config(tmp_path, text, name="bad.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, expected", [
    ('method = "sps"\ngama = [0.1]\n', ["unknown key 'gama'; did you mean gamma?"]),
    ('method = "sps"\ngamma = "abc"\n', ["gamma: expected a finite number > 0, got 'abc'"]),
    ('method = "sps"\ngamma = [0.1, true]\n', ["gamma: expected a number or a string, got True"]),
    ('method = "sps"\nrecords = [1, 2]\n', ["records: expected one value"]),
    ('method = "sps"\nno-progress = 1\n', ["no-progress: expected true or false"]),
    ('method = "sps"\nbackend = "jax"\n', ["backend: expected one of numpy, torch, cupy, got 'jax'"]),
    ('method = "sps"\ndata = 3\n', ["data: expected a table of dataset options"]),
    ('method = "sps"\ngamma = [0.1\n', ["not valid TOML"]),
])
def test_config_file_errors_name_the_file_and_key(text, expected, tmp_path, capsys):
    path = _config(tmp_path, text)
    line = _fails(["--config", str(path)], tmp_path, capsys)
    assert f"--config {path}: " in line
    for t in expected:
        assert t in line, line


def test_config_values_are_named_with_their_file(tmp_path, capsys):
    path = _config(tmp_path, '{"method": ["sps", "nope"], "data": {"n_clientz": 3}}', "bad.json")
    line = _fails(["--config", str(path)], tmp_path, capsys)
    assert f"--method (in {path}) nope: unknown method" in line
    path.write_text('{"method": "sps", "data": {"n_clientz": 3}}')
    line = _fails(["--config", str(path)], tmp_path, capsys)
    assert f"--data-option (in {path}) n_clientz: not an option of synthetic" in line
    path.write_text("[1, 2]")
    assert "expected a table of options, got a list" in _fails(["--config", str(path)], tmp_path, capsys)


@pytest.mark.parametrize("name, problem", [("missing.toml", "no such file"), ("c.yaml", "expected a .toml or .json")])
def test_config_file_that_cannot_be_read(name, problem, tmp_path, capsys):
    if name.endswith(".yaml"):
        (tmp_path / name).write_text("method: sps\n")
    line = _fails(["--config", str(tmp_path / name), "--method", "sps"], tmp_path, capsys)
    assert f"--config {tmp_path / name}: {problem}" in line


def test_cifar10_without_the_dl_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "proxfed_dl", None)  # as if torch were not installed
    line = _fails(["--dataset", "cifar10", "--data-dir", str(tmp_path), "--method", "sps"], tmp_path, capsys)
    assert "--dataset cifar10 needs torch: pip install 'proxfed[dl]'" in line


def test_tune_usage_errors(tmp_path, capsys):
    line = _fails(["--method", "fedavg"], tmp_path, capsys, "tune")
    assert "--method fedavg: proxfed tune searches proxskip, final_topk" in line
    assert "--stage2" in _fails(["--method", "sps", "--stage2", "-1"], tmp_path, capsys, "tune")
    line = _fails(["--method", "sps", "--gamma-range", "2", "1"], tmp_path, capsys, "tune")
    assert "--gamma-range 2 1: LO must be <= HI" in line
    assert "--dataset cifar10: proxfed tune searches the convex problems" in _fails(
        ["--method", "sps", "--dataset", "cifar10"], tmp_path, capsys, "tune")


def test_compare_on_a_directory_without_results(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no runs here")
    line = _fails([str(tmp_path / "empty")], tmp_path, capsys, "compare")
    assert f"{tmp_path / 'empty'}: no results in it" in line
    assert f"{tmp_path / 'nowhere'}: no such directory" in _fails([str(tmp_path / "nowhere")], tmp_path, capsys,
                                                                    "compare")


def test_runtime_failure_is_one_line_and_leaves_no_out(tmp_path, capsys):
    blog = tmp_path / "blog"
    blog.mkdir()
    for name in BLOG_NAMES:
        (blog / name).write_text("1,2,3\n")  # the right names, the wrong contents: found while loading
    out = tmp_path / "results" / "out"
    argv = ["run", "--dataset", "blogfeedback", "--data-dir", str(blog), "--method", "sps", "--out", str(out)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("proxfed run: error: ") and "blogData_train.csv" in err
    assert sorted(os.listdir(tmp_path)) == ["blog"]
