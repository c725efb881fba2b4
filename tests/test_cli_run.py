"""``proxfed run``: any method on a tiny synthetic dataset, batched over hyperparameters and seeds, from flags
or a TOML/JSON config file; paper names; the results directory."""

import json
from pathlib import Path

import numpy as np
import pytest

from proxfed import algorithms as A
from proxfed.cli import main
from proxfed.experiments.catalog import METHODS, load_problem, paper_name, resolve_method, theory_defaults
from proxfed.round_runner import run_rounds

TINY_DATA = {"n_clients": 5, "n_features": 8, "n_informative": 2, "n_test": 100, "n_validation": 60}
TINY = ["--data-option"] + [f"{k}={v}" for k, v in TINY_DATA.items()]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_experiment.toml"


@pytest.fixture(scope="module")
def tiny():
    """The tiny problem of ``TINY`` (d = 9; sparsity 0.5 keeps K = 5) and its theory stepsize 1/L."""
    problem, _ = load_problem("synthetic", options=TINY_DATA)
    return problem, theory_defaults(problem)["gamma"]


def _history(path):
    with np.load(path / "history.npz") as h:
        return {k: h[k] for k in h.files}


def _run(argv, out, plot=False):
    """``proxfed run ARGV --out OUT``; its figure only with ``plot`` (matplotlib's text layout takes a second)."""
    assert main(["run", *argv, "--out", str(out), "--no-progress"] + ([] if plot else ["--no-plot"])) == 0
    return json.loads((out / "experiment.json").read_text())


def test_run_batches_hyperparameter_lists_and_seeds(tiny, tmp_path, capsys):
    problem, g = tiny
    out = tmp_path / "out"
    exp = _run([*TINY, "--method", "Sparse-ProxSkip", "FEDHT", "--sparsity", "0.5", "--gamma", repr(g), repr(2 * g),
                "--p", "0.2", "--seed", "1", "2", "3", "--communications", "12", "--records", "4"], out, plot=True)
    printed = capsys.readouterr().out
    assert f"results written to {out}" in printed
    assert list(exp["methods"]) == ["sparse_proxskip", "fedht"]
    runs = exp["methods"]["sparse_proxskip"]["runs"]
    assert [(r["gamma"], r["seed"]) for r in runs] == [(g, 1), (g, 2), (g, 3), (2 * g, 1), (2 * g, 2), (2 * g, 3)]
    assert {(r["p"], r["k"]) for r in runs} == {(0.2, 5)}
    assert {(r["local_steps"], r["k"]) for r in exp["methods"]["fedht"]["runs"]} == {(5, 5)}  # round(1/p) steps
    for m in ("sparse_proxskip", "fedht"):
        h = _history(out / m)
        assert h["metric"].shape == h["bits_up"].shape == (5, 6)  # records x (2 gammas x 3 seeds)
        assert np.all(h["communications"][-1] == 12)
        assert set(json.loads((out / m / "summary.json").read_text())) >= {"status", "metric", "bits_up"}
    # run 4 of the batch (2/L, seed 2) is the single run with those hyperparameters and that seed
    single = run_rounds(A.sparse_proxskip(2 * g, 0.2, 5), problem, 12, seed=[2], every=3)
    h = _history(out / "sparse_proxskip")
    np.testing.assert_allclose(h["metric"][:, 4], single.history["metric"][:, 0], rtol=1e-8)
    np.testing.assert_array_equal(h["bits_up"][:, 4], single.history["bits_up"][:, 0])
    table = (out / "table.md").read_text()
    assert "| Sparse-ProxSkip (γ=" in table and "| FedHT (γ=" in table and "sparse_proxskip" not in table
    assert table.count("| 3 |") == 4  # four groups of three seeds
    assert (out / "figure.png").stat().st_size > 10_000
    assert json.loads((out / "run-config.json").read_text())["method"] == ["sparse_proxskip", "fedht"]


def test_run_iterations_horizon_and_exact_communications(tmp_path):
    out = tmp_path / "out"
    exp = _run([*TINY, "--method", "randprox-l1", "proxskip", "--iterations", "40", "--seed", "0", "1"], out)
    assert exp["horizon"] == {"iterations": 40}
    assert (out / "table.md").is_file() and not (out / "figure.png").exists()  # --no-plot
    for m in ("randprox_l1", "proxskip"):
        assert exp["methods"][m]["driver"] == "run"
        assert _history(out / m)["iteration"][-1] == 40
    assert [r["lam"] for r in exp["methods"]["randprox_l1"]["runs"]] == pytest.approx([exp["defaults"]["lam"]] * 2)
    # FedIHT prunes every local step: no closed form, each run stops at its own 7th communication
    exp = _run([*TINY, "--method", "fediht", "--communications", "7", "--local-steps", "3", "4"], tmp_path / "b")
    assert exp["methods"]["fediht"]["driver"] == "run (exact communications)"
    h = _history(tmp_path / "b" / "fediht")
    assert np.all(h["communications"][-1] == 7) and h["metric"].shape[1] == 2


def test_run_fedsparsify_and_flash(tmp_path):
    out = tmp_path / "out"
    exp = _run([*TINY, "--method", "FedSparsify-Global", "jmwst", "--sparsity", "0.5", "--local-steps", "2",
                "--communications", "6", "--clients-per-round", "3", "--seed", "0", "1"], out)
    for m in ("fedsparsify_global", "jmwst"):
        assert exp["methods"][m]["rounds"] == 6 and exp["methods"][m]["status"] == "completed"
        config = json.loads((out / m / "config.json").read_text())
        assert config["algorithm"]["clients_per_round"] == 3 and config["algorithm"]["rounds"] == 6
    assert json.loads((out / "fedsparsify_global" / "config.json").read_text())["algorithm"]["final_sparsity"] == \
        pytest.approx(4 / 9)
    assert "| FedSparsify-Global |" in (out / "table.md").read_text()


@pytest.mark.parametrize("name, code", [
    ("sparse_proxskip", "sparse_proxskip"), ("Sparse-ProxSkip", "sparse_proxskip"), ("SPARSE PROXSKIP", "sparse_proxskip"),
    ("sps", "sparse_proxskip"), ("Final-TopK", "final_topk"), ("RandProx-l1", "randprox_l1"),
    ("Accelerated-Server-Pruning", "accelerated_server_pruning"), ("ASP", "accelerated_server_pruning"),
    ("ProxSkip (dense, reference)", "proxskip"), ("fedIHT", "fediht"), ("FedSparsify-Local", "fedsparsify_local"),
    ("hetero-FLASH", "hetero_flash"), ("SCAFFOLD", "scaffold"),
])
def test_paper_names_and_aliases(name, code):
    assert resolve_method(name) == code


def test_every_method_has_a_paper_name_that_resolves():
    for code, method in METHODS.items():
        assert resolve_method(method.label) == code and paper_name(code) == method.label


def test_aliases_of_one_method_run_once(tmp_path):
    exp = _run([*TINY, "--method", "sparse-proxskip", "SPARSE_PROXSKIP", "Sparse-ProxSkip", "--communications", "2"],
               tmp_path / "out")
    assert list(exp["methods"]) == ["sparse_proxskip"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.is_dir()) == ["sparse_proxskip"]


def _write_config(path: Path, gamma: float) -> Path:
    if path.suffix == ".json":
        doc = {"dataset": "synthetic", "method": ["Sparse-ProxSkip"], "sparsity": 0.5, "gamma": [gamma],
               "p": 0.25, "seed": [4, 5], "communications": 5, "records": 5, "data": TINY_DATA}
        path.write_text(json.dumps(doc))
    else:
        data = "\n".join(f"{k} = {v}" for k, v in TINY_DATA.items())
        path.write_text(f'dataset = "synthetic"\nmethod = ["Sparse-ProxSkip"]\nsparsity = 0.5\ngamma = [{gamma!r}]\n'
                        f"p = 0.25\nseed = [4, 5]\ncommunications = 5\nrecords = 5\n\n[data]\n{data}\n")
    return path


def test_toml_and_json_config_files_give_the_same_runs(tiny, tmp_path):
    _, g = tiny
    toml = _run(["--config", str(_write_config(tmp_path / "c.toml", g))], tmp_path / "t")
    js = _run(["--config", str(_write_config(tmp_path / "c.json", g))], tmp_path / "j")
    assert toml["methods"]["sparse_proxskip"]["runs"] == js["methods"]["sparse_proxskip"]["runs"]
    assert [(r["gamma"], r["seed"], r["k"]) for r in toml["methods"]["sparse_proxskip"]["runs"]] == [(g, 4, 5), (g, 5, 5)]
    assert toml["data"]["options"] == TINY_DATA
    np.testing.assert_array_equal(_history(tmp_path / "t" / "sparse_proxskip")["metric"],
                                  _history(tmp_path / "j" / "sparse_proxskip")["metric"])


def test_flags_override_the_config_file(tiny, tmp_path):
    _, g = tiny
    config = _write_config(tmp_path / "c.toml", g)
    exp = _run(["--config", str(config), "--gamma", repr(g / 2), "--iterations", "30", "--k", "3",
                "--data-option", "n_clients=4"], tmp_path / "out")
    runs = exp["methods"]["sparse_proxskip"]["runs"]
    assert {r["gamma"] for r in runs} == {g / 2} and {r["k"] for r in runs} == {3}  # --k replaces sparsity
    assert {r["p"] for r in runs} == {0.25}  # from the file
    assert exp["horizon"] == {"iterations": 30}  # --iterations replaces the file's communications
    assert exp["data"]["n_clients"] == 4 and exp["data"]["options"]["n_features"] == 8


def test_run_config_json_repeats_the_experiment(tiny, tmp_path):
    _, g = tiny
    _run([*TINY, "--method", "final_topk", "--gamma", repr(g), "--seed", "3", "--communications", "4"], tmp_path / "a")
    _run(["--config", str(tmp_path / "a" / "run-config.json")], tmp_path / "b")
    np.testing.assert_array_equal(_history(tmp_path / "a" / "final_topk")["metric"],
                                  _history(tmp_path / "b" / "final_topk")["metric"])


def test_the_example_config_runs(tmp_path):
    exp = _run(["--config", str(EXAMPLE), "--communications", "3", "--records", "1", "--seed", "1"], tmp_path / "ex")
    assert list(exp["methods"]) == ["sparse_proxskip", "fedht", "fediht"]
    assert exp["data"]["n_clients"] == 20 and exp["data"]["dim"] == 41
    for m in exp["methods"].values():
        assert sorted({r["gamma"] for r in m["runs"]}) == [0.0004, 0.0008] and m["status"] == "completed"
    assert "| FedIHT (γ=0.0008) |" in (tmp_path / "ex" / "table.md").read_text()


def test_run_on_torch_float32(tiny, tmp_path):
    pytest.importorskip("torch")
    exp = _run([*TINY, "--method", "sps", "fediht", "--sparsity", "0.5", "--communications", "5", "--seed", "1", "2",
                "--backend", "torch", "--dtype", "float32"], tmp_path / "out")
    for m in ("sparse_proxskip", "fediht"):
        config = json.loads((tmp_path / "out" / m / "config.json").read_text())
        assert config["array_namespace"].endswith("torch") and config["dtype"] == "torch.float32"
        assert exp["methods"][m]["driver"] == "run (exact communications)"  # (closed forms are NumPy code)
        assert np.all(_history(tmp_path / "out" / m)["communications"][-1] == 5)


@pytest.mark.slow
def test_run_cifar10_with_the_dl_extra(tmp_path):
    """Batched stepsizes and seeds of ResNet18 clients (width 2) on CIFAR-10-format batches of 12 images."""
    pytest.importorskip("torch", reason="cifar10 needs the dl extra")
    from .test_loaders import write_cifar

    data = write_cifar(tmp_path / "cifar-10-batches-py")
    exp = _run(["--dataset", "cifar10", "--data-dir", str(tmp_path), "--method", "Sparse-ProxSkip", "fedavg",
                "--data-option", "n_clients=2", "width=2", "batch_size=4", "eval_size=4", "--gamma", "0.01", "0.02",
                "--seed", "0", "1", "--local-steps", "2", "--communications", "2", "--records", "2",
                "--device", "cpu"], tmp_path / "out")
    assert data.is_dir() and exp["data"]["problem"] == "TorchProblem" and exp["data"]["n_clients"] == 2
    for m in ("sparse_proxskip", "fedavg"):
        h = _history(tmp_path / "out" / m)
        assert h["metric"].shape[1] == 4 and np.all(h["communications"][-1] == 2)
        assert np.all((h["metric"] >= 0) & (h["metric"] <= 1))
    assert {r["local_steps"] for r in exp["methods"]["fedavg"]["runs"]} == {2}
