"""BlogFeedback's protocol parameters: feature scaling, final horizon, stored hyperparameters, sparsities."""

from __future__ import annotations

import json

import numpy as np
import pytest

from proxfed.data import load_blogfeedback
from proxfed.experiments.options import check_sparsities as _check_sparsities
from proxfed.experiments.options import command as _command
from proxfed.experiments.options import read_tuned as _read_tuned
from proxfed.experiments.paper import get_budget, reproduce
from proxfed.experiments.protocols import LOSS_DEFINITIONS, compare_protocols, main, protocol_numbers
from tests.test_loaders import blog_rows, write_blog


@pytest.fixture(scope="module")
def blog_raw():
    gen = np.random.default_rng(7)
    train = blog_rows(gen, [3, 1, 40, 7, 2, 25, 12, 1, 9, 30])
    train = train[gen.permutation(train.shape[0])]
    return train, [blog_rows(gen, s) for s in ([4, 2], [3], [1, 1, 2])]


@pytest.fixture
def blog_dir(tmp_path, blog_raw):
    return write_blog(tmp_path / "blogfeedback", *blog_raw)


def test_scalings_are_fit_on_the_training_part(blog_dir, blog_raw):
    train = blog_raw[0]
    ds = {s: load_blogfeedback(blog_dir, scaling=s, seed=2) for s in ("minmax", "standard", "none")}
    raw = train[ds["none"].meta["train_row"], :-1]
    np.testing.assert_array_equal(ds["none"].X[:, :-1], raw)
    constant = raw.max(axis=0) == raw.min(axis=0)
    std = np.where(constant, 1.0, raw.std(axis=0))
    np.testing.assert_allclose(ds["standard"].X[:, :-1], (raw - raw.mean(axis=0)) / std, atol=1e-12)
    assert np.all(ds["standard"].X[:, :-1][:, constant] == 0)
    np.testing.assert_allclose(ds["standard"].X[:, :-1][:, ~constant].mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(ds["standard"].X[:, :-1][:, ~constant].std(axis=0), 1, atol=1e-12)
    # the test split goes through the training part's map
    test = np.vstack(blog_raw[1])[:, :-1]
    np.testing.assert_allclose(ds["standard"].test.X[:, :-1], (test - raw.mean(axis=0)) / std, atol=1e-12)
    assert [d.meta["scaling"] for d in ds.values()] == ["minmax", "standard", "none"]
    # the older bool spelling is the same dataset
    np.testing.assert_array_equal(load_blogfeedback(blog_dir, scale=False, seed=2).X, ds["none"].X)
    np.testing.assert_array_equal(load_blogfeedback(blog_dir, scale=True, seed=2).X, ds["minmax"].X)


def test_scaling_is_part_of_the_cache_key(blog_dir, tmp_path):
    cache = tmp_path / "cache"
    a = load_blogfeedback(blog_dir, scaling="none", cache_dir=cache)
    b = load_blogfeedback(blog_dir, scaling="minmax", cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2 and a.X.max() > 1 >= b.X[:, :-1].max()


@pytest.mark.parametrize("kwargs, error, words", [
    ({"scaling": "zscore"}, ValueError, "scaling"),
    ({"scaling": "none", "scale": True}, ValueError, "scale"),
    ({"scale": "yes"}, TypeError, "scale"),
])
def test_bad_scaling(blog_dir, kwargs, error, words):
    with pytest.raises(error, match=words):
        load_blogfeedback(blog_dir, **kwargs)


def test_check_sparsities():
    assert _check_sparsities("blogfeedback", None) is None
    assert _check_sparsities("blogfeedback", [0.95, 0.9]) == (0.9, 0.95)
    for bad in ([0.7], [], ["0.9"], [True]):
        with pytest.raises(ValueError, match="--sparsities"):
            _check_sparsities("blogfeedback", bad)


def test_read_tuned(tmp_path):
    path = tmp_path / "tuned.json"
    path.write_text(json.dumps({"proxskip": {"None": {"params": {"gamma": 0.1, "p": 0.2}}},
                                "sparse_proxskip": {"0.9": {"params": {"gamma": 0.3, "p": 0.4}}}}))
    got = _read_tuned(path, ("proxskip", "sparse_proxskip", "final_topk"), (0.9,))
    assert set(got) == {"proxskip", "sparse_proxskip"}  # final_topk is not in the file: it is tuned
    assert got["sparse_proxskip"][0.9]["params"] == {"gamma": 0.3, "p": 0.4}
    assert got["proxskip"][None]["tuned_from"] == str(path)
    with pytest.raises(ValueError, match=r"no sparse_proxskip at sparsities \[0\.8\]"):
        _read_tuned(path, ("sparse_proxskip",), (0.8, 0.9))
    path.write_text(json.dumps({"proxskip": {"None": {"params": {"gamma": "0.1"}}}}))
    with pytest.raises(ValueError, match="finite 'params'"):
        _read_tuned(path, ("proxskip",), (0.9,))
    path.write_text("{not json")
    with pytest.raises(ValueError, match=str(path)):
        _read_tuned(path, ("proxskip",), (0.9,))
    with pytest.raises(FileNotFoundError, match="--tuned"):
        _read_tuned(tmp_path / "missing.json", ("proxskip",), (0.9,))


def test_command_records_the_protocol_options():
    cmd = _command("blogfeedback", get_budget("blogfeedback", "paper"), methods=None, seed=0, alpha=1000.0,
                   appendix_d=False, main=True, pixels="inverted", dtype="float64", scaling="none",
                   communications=10000, tuned="t.json", sparsities=(0.9,))
    assert cmd.endswith("--alpha 1000.0 --scaling none --communications 10000 --tuned t.json --sparsities 0.9")


def test_reproduce_with_protocol_options_and_the_report(blog_dir, tmp_path):
    common = dict(budget="smoke", methods=("proxskip", "sparse_proxskip"), progress=False, echo=lambda m: None,
                  alpha=10.0, sparsities=(0.9,))
    first = tmp_path / "first"
    reproduce("blogfeedback", blog_dir, first, scaling="standard", communications=7, **common)
    run = json.loads((first / "run.json").read_text())
    assert run["scaling"] == "standard" and run["final_communications"] == 7 and run["sparsities"] == [0.9]
    assert "--scaling standard --communications 7 --sparsities 0.9" in run["command"]
    for m, cell in (("proxskip", "dense"), ("sparse_proxskip", "s0900")):
        summary = json.loads((first / "runs" / m / cell / "summary.json").read_text())
        assert summary["key"]["data"]["scaling"] == "standard"
        assert summary["key"]["communications"] == 7 and summary["communications"] == [7.0] * 3
    assert not (first / "runs" / "sparse_proxskip" / "s0800").exists()
    # a longer horizon with the stored hyperparameters: no tuning, new final runs
    messages = []
    second = tmp_path / "second"
    reproduce("blogfeedback", blog_dir, second, scaling="standard", communications=12,
              tuned=first / "tuned.json", **dict(common, echo=messages.append))
    assert not any("evaluating" in m for m in messages) and sum("hyperparameters from" in m for m in messages) == 2
    tuned_first = json.loads((first / "tuned.json").read_text())
    run2 = json.loads((second / "run.json").read_text())
    assert run2["tuned_from"]["tuned"]["sparse_proxskip"]["0.9"]["params"] == \
        tuned_first["sparse_proxskip"]["0.9"]["params"]
    summary = json.loads((second / "runs" / "sparse_proxskip" / "s0900" / "summary.json").read_text())
    assert summary["params"] == tuned_first["sparse_proxskip"]["0.9"]["params"]
    assert summary["communications"] == [12.0] * 3
    # the protocol report reads both back
    numbers = protocol_numbers(second)
    assert numbers["protocol"]["scaling"] == "standard" and numbers["protocol"]["communications"] == 12
    sps = numbers["methods"]["sparse_proxskip"]
    losses = sps["losses"]
    assert set(losses) == set(LOSS_DEFINITIONS)
    n = run2["data"]["n_clients"]
    assert losses["objective_sum"] == pytest.approx(n * losses["objective_mean"])
    assert losses["data_term_mean"] == pytest.approx(losses["data_term"] / n)
    assert losses["data_term"] <= losses["objective_sum"]  # the (alpha/4)||w||^2 terms are >= 0
    assert sps["r2"][0] == pytest.approx(np.mean(summary["metric"]))
    report = compare_protocols({"A": first, "B": second}, tmp_path / "report")
    assert "## A: standard features, α = 10" in report["markdown"] and "Loss definitions" in report["markdown"]
    assert (tmp_path / "report" / "protocols.json").is_file()
    assert main([f"A={first}", "--out", str(tmp_path / "r2")]) == 0
    with pytest.raises(SystemExit):
        main(["nodir", "--out", str(tmp_path / "r3")])
    with pytest.raises(FileNotFoundError, match="run.json"):
        protocol_numbers(tmp_path)


def test_reproduce_makes_no_results_directory_when_the_data_fail_to_load(tmp_path):
    bad = tmp_path / "blogfeedback"
    bad.mkdir()
    (bad / "blogData_train.csv").write_text("1,2,3\n")  # three columns, not 281, and no test files
    out = tmp_path / "out"
    with pytest.raises((ValueError, FileNotFoundError), match="blogfeedback"):
        reproduce("blogfeedback", bad, out, progress=False, echo=lambda m: None)
    assert not out.exists()
    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError, match="afile"):
        reproduce("blogfeedback", bad, tmp_path / "afile", progress=False, echo=lambda m: None)


# -- Table 5's train loss in the history (issue 20's decision: the data term of the output) ----------
@pytest.mark.parametrize("which", ["ridge", "softmax"])
def test_history_train_loss_is_the_output_data_term(which):
    """``with_train_loss`` turns ``loss`` and ``output_norm`` into sum_i (data term of client i) at the output."""
    import proxfed
    from proxfed.algorithms import sparse_proxskip
    from proxfed.experiments.pipeline import with_train_loss
    from tests.test_equivalence import ridge_pair, softmax_pair

    prob, ref = ridge_pair("mixed", alpha=3.0) if which == "ridge" else softmax_pair(alpha=0.1)
    k = max(1, prob.dim // 4)
    res = proxfed.run(sparse_proxskip(0.5 / float(np.max(prob.smoothness())), 0.3, k), prob, 40, seed=[1, 2],
                      every=10)
    hist = with_train_loss(dict(res.history), prob)
    assert hist["train_loss_sum"].shape == hist["loss"].shape == (5, 2)
    for r in range(2):
        w = np.asarray(res.w[r])
        reg = ref.alpha / 4 if which == "ridge" else ref.alpha / 2  # the regularizer inside each f_i
        data = sum(ref.value(i, w) - reg * (w @ w) for i in range(ref.n_clients))
        assert hist["train_loss_sum"][-1, r] == pytest.approx(data, rel=1e-9)
        assert np.count_nonzero(w) <= k and hist["output_norm"][-1, r] == pytest.approx(np.linalg.norm(w))
    # the output is TopK(w̄), so its norm is not that of w̄
    assert not np.allclose(hist["output_norm"][1:], hist["w_norm"][1:])
    stored = {k_: v for k_, v in res.history.items() if k_ != "output_norm"}  # a run stored before output_norm
    assert "train_loss_sum" not in with_train_loss(stored, prob)
