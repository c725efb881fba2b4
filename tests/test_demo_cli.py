"""The demo and the command-line interface."""

import json
import subprocess
import sys

import numpy as np
import pytest

from proxfed.cli import main
from proxfed.experiments import run_demo, sparsity_to_k


def test_sparsity_to_k_integer_arithmetic():
    # int((1 - s) d) in floating point gives 4866 here (ALGORITHMS.md notation).
    assert sparsity_to_k(48670, 0.9) == 4867
    assert [sparsity_to_k(281, s) for s in (0.8, 0.9, 0.95)] == [56, 28, 14]
    assert [sparsity_to_k(48670, s) for s in (0.8, 0.95, 0.98, 0.99)] == [9734, 2434, 973, 487]
    with pytest.raises(ValueError, match="sparsity"):
        sparsity_to_k(10, 1.0)


def test_run_demo_writes_results(tmp_path):
    methods = ("proxskip", "sparse_proxskip", "accelerated_server_pruning", "fediht")
    out = run_demo(tmp_path / "demo", iterations=400, methods=methods, progress=False, echo=lambda *_: None)
    rows = {r["method"]: r for r in out["rows"]}
    assert set(rows) == set(methods)
    for name in methods:
        for f in ("config.json", "history.npz", "summary.json", "state.npz"):
            assert (tmp_path / "demo" / name / f).is_file()
        assert np.isfinite(rows[name]["metric"])
    # SPS uploads K values per communication, dense methods d values.
    k, d = json.loads((tmp_path / "demo" / "config.json").read_text())["k"], 61
    sps, dense = rows["sparse_proxskip"], rows["proxskip"]
    assert sps["bits_up"] == 32 * k * sps["communications"]
    assert dense["bits_up"] == 32 * d * dense["communications"]
    # zero-sum kept by SPS, violated by ASP
    assert sps["sum_h_norm"] < 1e-6 < rows["accelerated_server_pruning"]["sum_h_norm"]
    assert "| sparse_proxskip |" in (tmp_path / "demo" / "table.md").read_text()
    assert (tmp_path / "demo" / "metric_vs_bits.png").stat().st_size > 1000


def test_cli_demo_and_module_entry(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "a"), "--iterations", "200", "--methods", "proxskip",
                 "--no-progress"]) == 0
    assert "| proxskip |" in capsys.readouterr().out
    proc = subprocess.run(
        [sys.executable, "-m", "proxfed", "demo", "--out", str(tmp_path / "b"), "--iterations", "100",
         "--methods", "fedht", "--no-progress"], capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| fedht |" in proc.stdout


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--iterations", "0"], "--iterations"),
        (["demo", "--sparsity", "1.5"], "--sparsity"),
        (["demo", "--methods", "nope"], "unknown methods"),
        (["demo", "--seed", "-1"], "--seed"),
    ],
)
def test_cli_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_without_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_demo_says_when_it_cannot_plot(tmp_path, monkeypatch):
    import proxfed.experiments.demo as demo

    monkeypatch.setattr(demo, "have_matplotlib", lambda: False)
    said = []
    out = run_demo(tmp_path / "demo", iterations=50, methods=("proxskip",), progress=False, echo=said.append)
    assert out["plot"] is None and not (tmp_path / "demo" / "metric_vs_bits.png").exists()
    assert any("no plot" in s and "matplotlib" in s for s in said)
