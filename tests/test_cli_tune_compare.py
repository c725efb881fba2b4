"""``proxfed tune`` and ``proxfed compare`` end to end on a tiny synthetic dataset."""

import json
import shlex

import numpy as np
import pytest

from proxfed.cli import main
from proxfed.experiments.catalog import load_problem
from proxfed.experiments.compare import find_run_dirs, read_run_dir

from .test_cli_run import TINY, TINY_DATA


def test_tune_writes_the_best_hyperparameters_and_a_run_command(tmp_path, capsys):
    out = tmp_path / "tune"
    argv = ["tune", *TINY, "--method", "Sparse-ProxSkip", "proxskip", "--sparsity", "0.5", "--communications", "6",
            "--stage1", "3", "--stage2", "2", "--seed", "1", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    doc = json.loads((out / "tuned.json").read_text())
    assert doc["communications"] == 6 and doc["search"]["n_stage1"] == 3
    sps, dense = doc["methods"]["sparse_proxskip"], doc["methods"]["proxskip"]
    assert [e["k"] for e in sps] == [5] and [e["k"] for e in dense] == [None]
    best = sps[0]["params"]
    assert sorted(best) == ["gamma", "p"] and 0 < best["p"] <= 1
    search = json.loads((out / "tuning" / "sparse_proxskip.json").read_text())
    assert len(search["trials"]) == 5 and search["complete"]  # 3 wide + 2 narrow configurations
    assert max(t["score"] for t in search["trials"] if t["score"] is not None) == sps[0]["validation_score"]
    assert f"gamma={best['gamma']:.6g}, p={best['p']:.6g}" in printed and "| Sparse-ProxSkip | 5 |" in printed
    assert sps[0]["command"] in printed and (out / "tuned.md").is_file()
    # the printed command runs the tuned hyperparameters
    command = shlex.split(sps[0]["command"])
    assert command[:2] == ["proxfed", "run"]
    assert main(command[1:] + ["--out", str(tmp_path / "run"), "--no-progress", "--no-plot"]) == 0
    runs = json.loads((tmp_path / "run" / "experiment.json").read_text())["methods"]["sparse_proxskip"]["runs"]
    assert {(r["gamma"], r["p"], r["k"]) for r in runs} == {(best["gamma"], best["p"], 5)}
    # a second call reads the stored searches back
    capsys.readouterr()
    assert main(argv) == 0
    assert "read back" in capsys.readouterr().out
    assert json.loads((out / "tuned.json").read_text())["methods"]["sparse_proxskip"][0]["params"] == best


def test_tune_holds_out_a_validation_split_when_the_data_have_none(tmp_path, capsys):
    out = tmp_path / "tune"
    assert main(["tune", "--dataset", "fedprox", "--data-option", "n_clients=3", "n_features=6", "n_classes=3",
                 "size_log_sigma=0.5", "size_offset=20", "--method", "fedht", "--k", "6", "--communications", "3",
                 "--stage1", "2", "--stage2", "0", "--out", str(out), "--no-progress"]) == 0
    assert "no validation split" in capsys.readouterr().out
    entry = json.loads((out / "tuned.json").read_text())["methods"]["fedht"][0]
    assert sorted(entry["params"]) == ["gamma", "local_steps"] and 0 <= entry["validation_score"] <= 1


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two ``proxfed run`` directories: Sparse-ProxSkip at 50 % and 80 % sparsity, FedHT at 80 %."""
    base = tmp_path_factory.mktemp("runs")
    common = [*TINY, "--communications", "10", "--records", "5", "--seed", "1", "2", "--no-progress", "--no-plot"]
    assert main(["run", *common, "--method", "sps", "--sparsity", "0.5", "--out", str(base / "a")]) == 0
    assert main(["run", *common, "--method", "sps", "fedht", "--sparsity", "0.8", "--out", str(base / "b")]) == 0
    return base


def test_compare_run_directories(two_runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", str(two_runs / "a"), str(two_runs / "b"), str(two_runs / "b" / "fedht"),
                 "--threshold", "0.5", "--title", "tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    table = (out / "compare.md").read_text()
    assert table.startswith("# tiny") and table.strip().endswith(printed.split("\ncompared")[0].strip())
    rows = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r.split(" | ")[0] for r in rows] == ["| Sparse-ProxSkip (K=5)", "| Sparse-ProxSkip (K=2)", "| FedHT"]
    assert "bits to 0.5" in table and str(two_runs / "b" / "fedht") in table  # (listed once)
    for row in rows:
        assert row.split(" | ")[2] == "2"  # two seeds per group
    assert (out / "compare.png").stat().st_size > 10_000
    assert "compared 3 groups of runs from 3 run directories" in printed


def test_compare_reads_a_reproduction_final_run(tmp_path, capsys):
    """The final runs of a reproduction (``runs/<method>/<sparsity>/``), written by its own code."""
    import dataclasses

    from proxfed.experiments.paper import get_budget
    from proxfed.experiments.pipeline import Pipeline as _Pipeline

    problem, _ = load_problem("synthetic", options=TINY_DATA)
    budget = dataclasses.replace(get_budget("blogfeedback", "smoke"), seeds=2, records=4)
    pipe = _Pipeline("blogfeedback", tmp_path / "rep", budget, ("sparse_proxskip",), 0, False, lambda *_: None)
    for s in (0.5, 0.8):
        pipe.final_run("sparse_proxskip", s, {"gamma": 1e-3, "p": 0.2}, problem,
                       tmp_path / "rep" / "runs" / "sparse_proxskip" / str(s), 8)
    assert len(find_run_dirs(tmp_path / "rep")) == 2
    groups = read_run_dir(tmp_path / "rep" / "runs" / "sparse_proxskip" / "0.5")
    assert len(groups) == 1 and groups[0].seeds == [1, 2] and groups[0].params["k"] == 5
    assert groups[0].history["metric"].shape[1] == 2
    assert main(["compare", str(tmp_path / "rep"), "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| Sparse-ProxSkip (K=5) |" in table and "| Sparse-ProxSkip (K=2) |" in table
    final = np.mean(groups[0].history["metric"][-1])
    assert f"{final:.4g}" in table
    capsys.readouterr()
