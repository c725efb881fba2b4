"""Tuning (proxfed.tune) and the paper reproductions (proxfed.experiments.paper, ``proxfed reproduce``)."""

import json
import math
import re
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import proxfed
from proxfed.cli import build_parser, main
from proxfed.data import make_sparse_regression
from proxfed.experiments import BUDGETS, PAPER_METHODS, PUBLISHED, reproduce, sparsity_to_k
from proxfed.experiments.tables import markdown_table, mean_se, parse_markdown_tables
from proxfed.problems import Ridge
from proxfed.tune import (
    Param,
    SearchSpace,
    diverged_runs,
    holdout_split,
    horizon,
    horizon_groups,
    make_algorithm,
    random_search,
    tune_method,
)


@pytest.fixture(scope="module")
def problem():
    ds = make_sparse_regression(n_clients=10, n_features=30, n_informative=4, n_test=500, n_validation=400, seed=3)
    return Ridge(ds, alpha=10.0)


class LoggingRidge(Ridge):
    """Ridge that records on which splits it was scored."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.scored = []

    def score(self, w, split="test"):
        self.scored.append(split)
        return super().score(w, split)


# -- search spaces and the generic search ---------------------------------------------------------
def test_param_sampling_and_narrowing():
    p = Param("p", 0.01, 1.0)
    assert p.sample(0.0) == 0.01 and p.sample(1.0) == 1.0
    q = p.narrowed(0.1, 0.25)
    assert 0.01 <= q.low < 0.1 < q.high <= 1.0
    assert math.isclose(math.log(q.high / q.low), 0.25 * math.log(100), rel_tol=1e-6)
    edge = p.narrowed(1.0, 0.25)  # clipped to the wide box
    assert edge.high == 1.0 and edge.low > 0.01
    e = Param("local_steps", 1, 50, integer=True)
    values = {e.sample(u) for u in np.linspace(0, 1, 101)}
    assert all(isinstance(v, int) and 1 <= v <= 50 for v in values) and {1, 50} <= values
    with pytest.raises(ValueError):
        Param("x", 0.0, 1.0)
    with pytest.raises(ValueError):
        Param("x", 2.0, 1.0)
    with pytest.raises(ValueError):
        SearchSpace((Param("x", 1, 2), Param("x", 1, 2)))


def test_random_search_generic_resume_and_key(tmp_path):
    space = SearchSpace((Param("x", 1e-3, 1e3), Param("y", 0.1, 10.0)))
    calls = []

    def evaluate(batch):
        calls.append(len(batch))
        return [-(math.log10(c["x"]) - 1) ** 2 - (math.log10(c["y"])) ** 2 if c["x"] < 500 else None
                for _, c in batch]

    path = tmp_path / "s.json"
    a = random_search(evaluate, space, n_stage1=12, n_stage2=6, groups=["g1", "g2"], seed=4, path=path)
    assert calls == [24, 12] and a.evaluated == 36
    doc = json.loads(path.read_text())
    assert doc["complete"] and len(doc["trials"]) == 36
    assert {t["stage"] for t in doc["trials"]} == {1, 2}
    assert doc["best"]["g1"] == a.best["g1"]
    # resumed: nothing evaluated, same result
    b = random_search(evaluate, space, n_stage1=12, n_stage2=6, groups=["g1", "g2"], seed=4, path=path)
    assert calls == [24, 12] and b.evaluated == 0 and b.best == a.best and b.trials == a.trials
    # a different search in the same file is recomputed
    c = random_search(evaluate, space, n_stage1=12, n_stage2=6, groups=["g1", "g2"], seed=4, path=path,
                      key={"other": 1})
    assert c.evaluated == 36
    # failures are recorded, never chosen
    fails = [t for t in c.trials if t["score"] is None]
    assert all(t["status"] == "failed" and t["params"]["x"] >= 500 for t in fails)
    # stage 2 samples lie in the narrowed box around the stage-1 winner
    s1 = [t for t in a.trials if t["stage"] == 1 and t["group"] == "g1" and t["score"] is not None]
    best1 = max(s1, key=lambda t: t["score"])["params"]
    box = space.narrowed(best1, 0.25)
    for t in a.trials:
        if t["stage"] == 2 and t["group"] == "g1":
            assert all(p.low <= t["params"][p.name] <= p.high for p in box.params)


# -- tuning federated methods ---------------------------------------------------------------------
def test_tune_finds_better_than_median_config(problem):
    k = sparsity_to_k(problem.dim, 0.8)
    res = tune_method("sparse_proxskip", problem, [k], communications=10, n_stage1=10, n_stage2=5, seed=1,
                      p_range=(0.1, 1.0), gamma_range=(0.05, 3.0))
    scores = [t["score"] for t in res.trials if t["stage"] == 1 and t["score"] is not None]
    assert len(res.trials) == 15
    best = res.best_score[str(k)]
    assert best == max(t["score"] for t in res.trials if t["score"] is not None)
    assert best > np.median(scores)
    # one batched run per stage
    assert [r["runs"] for r in res.info["runs"]] == [10, 5]


@given(ps=st.lists(st.floats(0.02, 1.0), min_size=1, max_size=12), steps=st.lists(st.integers(1, 30), max_size=4),
       communications=st.integers(1, 50), cap=st.one_of(st.none(), st.integers(1, 400)))
def test_horizon_groups_partition_the_batch_within_a_factor_two(ps, steps, communications, cap):
    configs = [{"p": p} for p in ps] + [{"local_steps": e} for e in steps]
    groups = horizon_groups(configs, communications, cap)
    assert sorted(i for g in groups for i in g) == list(range(len(configs)))
    hz = [min(horizon(c, communications), cap or 10**9) for c in configs]
    for g in groups:
        assert max(hz[i] for i in g) <= 2 * min(hz[i] for i in g)
    starts = [min(hz[i] for i in g) for g in groups]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert horizon_groups(configs, communications, cap, round_based=True) == [list(range(len(configs)))]


def test_tune_scores_do_not_depend_on_the_horizon_groups(problem, monkeypatch):
    """Sub-batches of similar horizons score every configuration as one batch would."""
    k = sparsity_to_k(problem.dim, 0.8)
    kw = dict(communications=6, n_stage1=8, n_stage2=0, seed=3, p_range=(0.1, 1.0), records=3)  # a coarse grid
    grouped = tune_method("sparse_proxskip_local", problem, [k], **kw)
    assert len(grouped.info["runs"]) > 1
    monkeypatch.setattr(proxfed.tune, "horizon_groups", lambda configs, *a, **kw: [list(range(len(configs)))])
    whole = tune_method("sparse_proxskip_local", problem, [k], **kw)
    assert len(whole.info["runs"]) == 1
    assert sum(r["run_steps"] for r in grouped.info["runs"]) < whole.info["runs"][0]["run_steps"]
    np.testing.assert_allclose([t["score"] for t in grouped.trials], [t["score"] for t in whole.trials],
                               rtol=1e-9, atol=1e-12)
    # each score is the run's metric after exactly its horizon, whatever the record grid
    for t in grouped.trials[:3]:
        alg = make_algorithm("sparse_proxskip_local", t["params"], k)
        single = proxfed.run(alg, problem, horizon(t["params"], 6), seed=3, split="validation", every=10**6)
        assert t["score"] == pytest.approx(float(single.history["metric"][-1]), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("method", ["sparse_proxskip", "sparse_proxskip_local"])
def test_tune_on_torch_scores_as_on_numpy(problem, method):
    """``like=`` runs the search on another array library; the scores are the same to rounding."""
    torch = pytest.importorskip("torch")
    k = sparsity_to_k(problem.dim, 0.8)
    kw = dict(communications=5, n_stage1=4, n_stage2=2, seed=1, p_range=(0.2, 1.0))
    on_numpy = tune_method(method, problem, [k], **kw)
    on_torch = tune_method(method, problem, [k], like=torch.empty(0, dtype=torch.float64), **kw)
    np.testing.assert_allclose([t["score"] for t in on_torch.trials], [t["score"] for t in on_numpy.trials],
                               rtol=1e-8, atol=1e-10)
    assert on_torch.best == on_numpy.best


def test_tune_resumes_without_recomputation(problem, tmp_path, monkeypatch):
    k = sparsity_to_k(problem.dim, 0.9)
    kw = dict(communications=8, n_stage1=6, n_stage2=3, seed=2, p_range=(0.2, 1.0), path=tmp_path / "fediht.json")
    first = tune_method("fediht", problem, [k], **kw)
    assert first.evaluated == 9
    doc = json.loads((tmp_path / "fediht.json").read_text())
    assert len(doc["trials"]) == 9 and doc["key"]["method"] == "fediht"
    assert all(isinstance(t["params"]["local_steps"], int) for t in doc["trials"])

    def no_runs(*args, **kwargs):
        raise AssertionError("a resumed search must not run anything")

    monkeypatch.setattr(proxfed.runner, "run", no_runs)
    monkeypatch.setattr(proxfed.round_runner, "run_rounds", no_runs)
    again = tune_method("fediht", problem, [k], **kw)
    assert again.evaluated == 0 and again.best == first.best and again.best_score == first.best_score


def test_an_interrupted_stage_resumes_batch_by_batch(problem, tmp_path, monkeypatch):
    """A stage killed after its first batched run resumes from that batch; the search equals an uninterrupted one."""
    k = sparsity_to_k(problem.dim, 0.8)
    kw = dict(communications=6, n_stage1=8, n_stage2=2, seed=3, p_range=(0.1, 1.0), records=3)
    whole = tune_method("sparse_proxskip_local", problem, [k], **kw, path=tmp_path / "whole.json")
    batches = [r["runs"] for r in whole.info["runs"]]
    assert len(batches) > 2  # stage 1 has several horizon groups, stage 2 at least one
    assert not (tmp_path / "whole.batches.json").exists()  # removed once the search is complete

    path = tmp_path / "cut.json"
    real_run, calls = proxfed.runner.run, []

    def killed_after_one_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(*args, **kwargs)

    monkeypatch.setattr(proxfed.runner, "run", killed_after_one_batch)
    with pytest.raises(KeyboardInterrupt):
        tune_method("sparse_proxskip_local", problem, [k], **kw, path=path)
    monkeypatch.setattr(proxfed.runner, "run", real_run)
    assert not path.exists()  # no stage was complete
    stored = json.loads((tmp_path / "cut.batches.json").read_text())
    assert stored["format"] == "proxfed-search-batches" and len(stored["batches"]) == 1

    resumed = tune_method("sparse_proxskip_local", problem, [k], **kw, path=path)
    assert resumed.trials == whole.trials and resumed.best == whole.best  # bit for bit
    assert [r.get("read_back", False) for r in resumed.info["runs"]] == [True] + [False] * (len(batches) - 1)
    assert [r["runs"] for r in resumed.info["runs"]] == batches
    assert not (tmp_path / "cut.batches.json").exists()

    # a store of another search is ignored (its batches run again)
    (tmp_path / "other.batches.json").write_text(json.dumps({**stored, "key": {"method": "fediht"}}))
    again = tune_method("sparse_proxskip_local", problem, [k], **kw, path=tmp_path / "other.json")
    assert again.trials == whole.trials and not any(r.get("read_back") for r in again.info["runs"])


@pytest.mark.parametrize("driver", ["run", "auto"])
def test_selection_uses_validation_not_test(problem, driver):
    ds = problem.dataset
    # a test split on which the ranking is reversed (targets negated)
    flipped = proxfed.FederatedDataset(ds.X, ds.y, ds.offsets, test=(ds.test.X, -ds.test.y),
                                       validation=ds.validation, name="flipped")
    prob = LoggingRidge(flipped, alpha=10.0)
    k = sparsity_to_k(prob.dim, 0.8)
    res = tune_method("final_topk", prob, [k], communications=6, n_stage1=6, n_stage2=2, seed=0,
                      p_range=(0.2, 1.0), records=10_000, driver=driver)  # a record at every iteration
    assert "validation" in prob.scored and "test" not in prob.scored
    assert {r["driver"] for r in res.info["runs"]} == {"run" if driver == "run" else "run_rounds"}
    # the stored score of the winner is its validation metric, not its test metric
    best = res.best[str(k)]
    alg = make_algorithm("final_topk", best, k)
    if driver == "run":  # scored after the expected number of local steps
        T = math.ceil(6 / best["p"] - 1e-9)
        single = proxfed.run(alg, prob, T, seed=0, split="validation", every=1)
    else:  # scored after exactly 6 communications
        single = proxfed.run_rounds(alg, prob, 6, seed=0, split="validation")
        assert float(single.history["communications"][-1]) == 6
    val = float(single.history["metric"][-1])
    assert res.best_score[str(k)] == pytest.approx(val, rel=1e-7, abs=1e-9)
    assert not np.isclose(res.best_score[str(k)], prob.score(single.w, "test"))
    with pytest.raises(ValueError, match="test"):
        tune_method("final_topk", prob, [k], communications=6, split="test")
    no_val = Ridge(proxfed.FederatedDataset(ds.X, ds.y, ds.offsets, test=ds.test), alpha=10.0)
    with pytest.raises(ValueError, match="validation"):
        tune_method("final_topk", no_val, [k], communications=6)


def test_tune_driver_choice(problem):
    """``auto`` runs closed-form rules by rounds and per-step-prox rules by iterations; bad drivers are refused."""
    k = sparsity_to_k(problem.dim, 0.8)
    kw = dict(communications=5, n_stage1=3, n_stage2=0, seed=0, p_range=(0.2, 1.0))
    sps = tune_method("sparse_proxskip", problem, [k], **kw)
    local = tune_method("sparse_proxskip_local", problem, [k], **kw)
    assert [r["driver"] for r in sps.info["runs"]] == ["run_rounds"]
    assert {r["driver"] for r in local.info["runs"]} == {"run"}
    # every run of the rounds driver made exactly 5 communications: its local steps are its 5th coin + 1
    params = {n: np.array([t["params"][n] for t in sps.trials]) for n in ("gamma", "p")}
    times = proxfed.round_runner.communication_times(make_algorithm("sparse_proxskip", params, k), 5,
                                                     seed=[0] * 3, runs=3)
    assert sps.info["runs"][0]["run_steps"] == int(times[:, -1].sum() + 3)
    with pytest.raises(proxfed.round_runner.NoClosedForm):
        tune_method("sparse_proxskip_local", problem, [k], driver="run_rounds", **kw)
    with pytest.raises(ValueError, match="driver"):
        tune_method("sparse_proxskip", problem, [k], driver="rounds", **kw)


def test_tune_exact_driver_scores_each_run_at_its_own_last_communication(problem):
    k = sparsity_to_k(problem.dim, 0.8)
    kw = dict(communications=5, n_stage1=4, n_stage2=0, seed=1, p_range=(0.1, 1.0))
    local = tune_method("sparse_proxskip_local", problem, [k], driver="exact", **kw)
    sps = tune_method("sparse_proxskip", problem, [k], driver="exact", **kw)
    assert {r["driver"] for r in local.info["runs"]} == {"run_exact"}
    assert [r["driver"] for r in sps.info["runs"]] == ["run_rounds"]  # closed form: the rounds driver
    for t in local.trials:  # each score is a lone run to its own 5th communication, on the validation split
        alg = make_algorithm("sparse_proxskip_local", t["params"], k)
        T = int(proxfed.round_runner.communication_times(alg, 5, seed=1)[0, -1]) + 1
        alone = proxfed.run(alg, problem, T, seed=1, split="validation", every=T)
        assert int(alone.state.communications) == 5
        assert t["score"] == pytest.approx(float(alone.history["metric"][-1]), rel=1e-9, abs=1e-12)
    expected = tune_method("sparse_proxskip_local", problem, [k], driver="run", **kw)
    assert [t["params"] for t in expected.trials] == [t["params"] for t in local.trials]


def test_final_run_exact_driver_makes_exactly_the_horizon_per_seed(problem, tmp_path):
    from proxfed.experiments.pipeline import Pipeline as _Pipeline

    budget = BUDGETS["blogfeedback"]["smoke"].with_driver("exact")
    assert budget.driver == "exact" and BUDGETS["blogfeedback"]["smoke"].driver == "auto"
    with pytest.raises(ValueError, match="driver must be one of"):
        BUDGETS["blogfeedback"]["smoke"].with_driver("exactly")
    pipe = _Pipeline("blogfeedback", tmp_path, budget, (), 0, False, lambda *_: None)
    gamma = 1.0 / float(np.max(problem.smoothness()))
    params = {"gamma": gamma, "p": 0.25}
    hist, summ = pipe.final_run("sparse_proxskip_local", 0.9, params, problem, tmp_path / "cell", 12)
    assert summ["driver"] == "run_exact" and summ["key"]["driver"] == "run_exact"
    np.testing.assert_array_equal(hist["communications"][-1], [12] * budget.seeds)
    k = sparsity_to_k(problem.dim, 0.9)
    for j, seed in enumerate(summ["seeds"]):
        alg = make_algorithm("sparse_proxskip_local", params, k)
        T = int(proxfed.round_runner.communication_times(alg, 12, seed=seed)[0, -1]) + 1
        assert summ["iterations"][j] == T
        alone = proxfed.run(alg, problem, T, seed=[seed], w0=proxfed.runner.initial_models(
            problem, summ["seeds"], len(summ["seeds"]))[j:j + 1], every=T)
        assert summ["metric"][j] == pytest.approx(float(alone.history["metric"][-1][0]), rel=1e-9)
    # read back under the same driver; the default driver is another run
    again, summ2 = pipe.final_run("sparse_proxskip_local", 0.9, params, problem, tmp_path / "cell", 12)
    assert summ2.get("read_back")
    pipe.budget = BUDGETS["blogfeedback"]["smoke"]
    _, expected = pipe.final_run("sparse_proxskip_local", 0.9, params, problem, tmp_path / "cell", 12)
    assert not expected.get("read_back") and expected["driver"] == "run"
    with pytest.raises(ValueError, match="driver must be one of"):
        reproduce("blogfeedback", tmp_path, tmp_path / "out", driver="exactly")


def test_diverged_configurations_are_failures(problem):
    k = sparsity_to_k(problem.dim, 0.8)
    res = tune_method("sparse_proxskip", problem, [k], communications=40, n_stage1=8, n_stage2=2, seed=0,
                      gamma_range=(0.5, 1e3), p_range=(0.2, 1.0))
    status = [t["status"] for t in res.trials]
    assert "diverged" in status and "ok" in status
    assert all(t["score"] is None for t in res.trials if t["status"] == "diverged")
    assert res.best[str(k)] is not None
    assert res.best_score[str(k)] == max(t["score"] for t in res.trials if t["score"] is not None)


def test_diverged_runs_mask(problem):
    L = proxfed.theory.constants(problem)[0]
    alg = make_algorithm("proxskip", {"gamma": np.array([0.5, 1e3, 0.5]) / L, "p": np.full(3, 0.5)})
    res = proxfed.run(alg, problem, 200, seed=[0, 0, 0], every=10)
    assert res.status == "diverged"
    assert diverged_runs(res).tolist() == [False, True, False]


def test_make_algorithm_batches_hyperparameters():
    alg = make_algorithm("randprox_l1", {"gamma": [0.1, 0.2], "p": [0.5, 0.4], "lam": [1.0, 2.0]}, k=[3, 3])
    assert alg.n_runs == 2 and alg.final.k == 3  # equal K collapse to one integer
    alg = make_algorithm("sparse_proxskip", {"gamma": [0.1, 0.2], "p": [0.5, 0.4]}, k=[3, 4])
    assert alg.final.k.tolist() == [3, 4]
    with pytest.raises(ValueError, match="needs k"):
        make_algorithm("fedht", {"gamma": 0.1, "local_steps": 3})
    with pytest.raises(ValueError, match="unknown method"):
        make_algorithm("nope", {})


def test_holdout_split_is_seeded_per_client_and_complete():
    ds = make_sparse_regression(n_clients=12, n_features=5, n_informative=2, seed=0)
    a, b = holdout_split(ds, 0.25, seed=7), holdout_split(ds, 0.25, seed=7)
    assert np.array_equal(a.meta["holdout_rows"], b.meta["holdout_rows"])
    c = holdout_split(ds, 0.25, seed=8)
    assert not np.array_equal(a.meta["holdout_rows"], c.meta["holdout_rows"])
    sizes = ds.client_sizes
    expect = np.minimum(np.floor(0.25 * sizes).astype(int), sizes - 1)
    assert np.array_equal(a.client_sizes, sizes - expect) and a.validation.n_samples == expect.sum()
    assert np.all(a.client_sizes >= 1)
    # held-out rows and kept rows partition the original rows; the test split is untouched
    kept = a.X.shape[0] + a.validation.X.shape[0]
    assert kept == ds.n_samples
    assert np.array_equal(a.validation.X, ds.X[a.meta["holdout_rows"]])
    assert a.test is ds.test
    with pytest.raises(ValueError):
        holdout_split(ds, 1.0)


# -- tables and CLI ---------------------------------------------------------------------------------
def test_tables_and_mean_se():
    assert mean_se([2.0]) == (2.0, 0.0)
    m, se = mean_se([1.0, 3.0])
    assert m == 2.0 and se == pytest.approx(1.0)
    text = "intro\n\n" + markdown_table(["a", "b"], [["x", "1"], ["y", "2"]]) + "\n\nafter\n"
    assert parse_markdown_tables(text) == [(["a", "b"], [["x", "1"], ["y", "2"]])]
    with pytest.raises(ValueError):
        parse_markdown_tables("| a | b |\n|---|---|\n| x |\n")


def test_cli_reproduce_parser(tmp_path, capsys):
    args = build_parser().parse_args(["reproduce", "femnist", "--data-dir", "d", "--budget", "small"])
    assert args.experiment == "femnist" and args.budget == "small" and args.out is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["reproduce", "blogfeedback", "--data-dir", "d", "--budget", "huge"])
    with pytest.raises(SystemExit):
        main(["reproduce", "blogfeedback", "--data-dir", "d", "--methods", "fedavg"])
    assert "unknown methods" in capsys.readouterr().err


def test_budgets_are_consistent():
    for dataset, budgets in BUDGETS.items():
        assert {"smoke", "small", "paper"} <= set(budgets) <= {"smoke", "quick", "small", "paper"}
        for b in budgets.values():
            assert 0 < b.p_range[0] < b.p_range[1] <= 1 and b.seeds >= 1
            if b.tune_sparsities is not None:
                assert set(b.tune_sparsities) <= set(PUBLISHED[dataset]["sparsities"])
    assert "quick" in BUDGETS["blogfeedback"] and BUDGETS["blogfeedback"]["quick"].extra_thresholds
    with pytest.raises(SystemExit):  # femnist has no quick budget: a clear CLI error
        main(["reproduce", "femnist", "--data-dir", ".", "--budget", "quick"])
    assert BUDGETS["blogfeedback"]["paper"].communications == 10_000
    assert BUDGETS["blogfeedback"]["paper"].seeds == BUDGETS["femnist"]["paper"].seeds == 5


@pytest.mark.parametrize("module_name", ["proxfed.tune", "proxfed.experiments.paper",
                                         "proxfed.experiments.published", "proxfed.experiments.tables"])
def test_new_public_names_are_documented(module_name):
    from tests.test_docs_api import test_public_names_are_documented

    test_public_names_are_documented(module_name)


# -- the smoke budgets end to end on the real data -------------------------------------------------
_CELL = re.compile(r"^(-?\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)$")


def check_results_dir(out, dataset, appendix_d=False):
    """The results directory is complete and consistent."""
    budget = BUDGETS[dataset]["smoke"]
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["status"] == "completed" and run_info["budget"]["name"] == "smoke"
    assert run_info["is_reproduction_budget"] is False
    assert run_info["command"] == f"proxfed reproduce {dataset} --data-dir DIR --budget smoke"
    summary = json.loads((out / "summary.json").read_text())
    methods = PAPER_METHODS[dataset]
    sparsities = PUBLISHED[dataset]["sparsities"]
    assert set(summary) == set(methods)
    n_groups = {m: 1 if (m == "proxskip" or budget.tune_sparsities) else len(sparsities) for m in methods}
    for m in methods:
        search = json.loads((out / "tuning" / f"{m}.json").read_text())
        assert search["complete"]
        assert len(search["trials"]) == n_groups[m] * (budget.n_stage1 + budget.n_stage2)
        for s in ([None] if m == "proxskip" else sparsities):
            d = out / "runs" / m / ("dense" if s is None else f"s{round(1000 * s):04d}")
            summ = json.loads((d / "summary.json").read_text())
            with np.load(d / "history.npz") as h:
                assert set(proxfed.runner.HISTORY_KEYS) - {"dist_opt"} <= set(h.files)
                for key in h.files:
                    assert h[key].shape[0] == summ["records"], (m, s, key)
                assert h["metric"].shape == (summ["records"], budget.seeds)
                assert np.allclose(h["metric"][-1], summ["metric"])
                # the history's train loss (Table 5's definition) ends at the table's value
                assert np.allclose(h["train_loss_sum"][-1], summ["train_loss_sum"], rtol=1e-9)
                if summ["driver"] == "run_exact":  # each seed stopped at its own last communication
                    assert h["iteration"][-1] == max(summ["iterations"])
                else:
                    assert np.all(np.broadcast_to(h["iteration"][-1], (budget.seeds,)) == summ["iterations"])
                if summ["driver"] in ("run_rounds", "run_exact"):  # exactly the budget's communications
                    assert np.all(h["communications"][-1] == budget.communications)
            with np.load(d / "final_w.npz") as f:
                w = f["w"]
            assert w.shape[0] == budget.seeds
            if s is not None:
                assert np.all((w != 0).sum(axis=1) <= sparsity_to_k(w.shape[1], s))
            config = json.loads((d / "config.json").read_text())
            if summ["driver"] == "run_rounds":
                assert config["driver"] == "run_rounds" and config["communications"] == budget.communications
            else:
                assert config["iterations"] == max(summ["iterations"])
    # tables parse; every "ours" cell is the mean ± se of the summary
    names = (["table1_r2", "table5_loss", "table2_communication", "orderings"] if dataset == "blogfeedback"
             else ["table4_accuracy", "table3_communication", "orderings"])
    for name in names:
        text = (out / "tables" / f"{name}.md").read_text()
        assert "not** a reproduction" in text
        tables = parse_markdown_tables(text)
        assert len(tables) == 1
    header, rows = parse_markdown_tables((out / "tables" / f"{names[0]}.md").read_text())[0]
    assert len(rows) == len(methods) and len(header) == 1 + 3 * len(sparsities)
    from proxfed.experiments.published import METHOD_LABELS

    for row in rows:
        m = next(k for k, v in METHOD_LABELS.items() if v == row[0])
        for j, s in enumerate(sparsities):
            cell = _CELL.match(row[1 + 3 * j])
            assert cell, row
            vals = summary[m]["None" if m == "proxskip" else str(s)]["metric"]
            mean, se = mean_se(vals)
            assert float(cell.group(1)) == pytest.approx(100 * mean, abs=0.051)
            assert float(cell.group(2)) == pytest.approx(100 * se, abs=0.051)
            paper = PUBLISHED[dataset]["metric"].get(m, {}).get(s)
            if paper is not None:
                assert float(row[2 + 3 * j]) == pytest.approx(100 * paper, abs=0.051)
    comm_rows = parse_markdown_tables((out / "tables" / f"{names[-2]}.md").read_text())[0][1]
    assert len(comm_rows) == len(methods) - 1  # no dense reference
    numbers = json.loads((out / "tables" / "tables.json").read_text())
    assert set(numbers) >= {"metric", "communication", "orderings"}
    fig = "figure2" if dataset == "blogfeedback" else "figure3"
    for s in sparsities:
        png = out / "figures" / f"{fig}_s{round(1000 * s):04d}.png"
        assert png.stat().st_size > 5000
    readme = (out / "README.md").read_text()
    assert "smoke" in readme and "not** a reproduction" in readme
    json.loads((out / "tuned.json").read_text())
    if appendix_d:
        d = out / "appendix_d"
        assert (d / "appendix_d.png").stat().st_size > 5000
        doc = json.loads((d / "appendix_d.json").read_text())
        assert set(doc["final"]) == {"sparse_proxskip", "sps_modified", "accelerated_server_pruning",
                                     "asp_modified"}
        # the zero-sum variants keep sum_i h_i = 0, ASP's sum dominates (already after a few steps)
        fin = doc["final"]
        assert fin["sparse_proxskip"]["sum_h_norm"]["mean"] < 1e-6 * fin["sparse_proxskip"]["mean_h_norm"]["mean"]
        assert fin["asp_modified"]["sum_h_norm"]["mean"] < 1e-6 * fin["asp_modified"]["mean_h_norm"]["mean"]
        assert (fin["accelerated_server_pruning"]["sum_h_norm"]["mean"]
                > fin["accelerated_server_pruning"]["mean_h_norm"]["mean"])
        for m in ("sps_modified", "asp_modified"):
            with np.load(d / m / "history.npz") as h:
                assert h["metric"].shape[1] == budget.seeds
        header, rows = parse_markdown_tables((d / "appendix_d.md").read_text())[0]
        assert len(rows) == 4


def assert_same_numbers(a, b, rtol=1e-6):
    """Nested JSON ``a`` and ``b`` are equal, floats to ``rtol`` or 1e-7 absolute (NaN equal to NaN)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys()
        for k in a:
            assert_same_numbers(a[k], b[k], rtol)
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_numbers(x, y, rtol)
    elif isinstance(a, float) and not isinstance(b, str):
        assert b is not None and math.isclose(a, b, rel_tol=rtol, abs_tol=1e-7) or (math.isnan(a) and math.isnan(b))
    else:
        assert a == b


def test_assert_same_numbers_tells_rounding_from_a_difference():
    assert_same_numbers({"a": [1.0, "x", None, {"b": 2.0}]}, {"a": [1.0 + 1e-13, "x", None, {"b": 2.0}]})
    for other in ({"a": [1.001, "x", None, {"b": 2.0}]}, {"a": [1.0, "y", None, {"b": 2.0}]},
                  {"a": [1.0, "x", None]}, {"c": []}):
        with pytest.raises(AssertionError):
            assert_same_numbers({"a": [1.0, "x", None, {"b": 2.0}]}, other)


@pytest.mark.data
@pytest.mark.slow
def test_blogfeedback_smoke_end_to_end(shared_data, tmp_path):
    out = tmp_path / "blogfeedback-smoke"
    messages = []
    res = reproduce("blogfeedback", shared_data, out, budget="smoke", progress=False, echo=messages.append)
    check_results_dir(out, "blogfeedback")
    assert (out / "diagnostics" / "alpha_check.md").is_file()
    assert any("tuning" in m for m in messages) and any("final runs" in m for m in messages)
    assert res["numbers"]["metric"]["sparse_proxskip"]["0.9"]["paper"] == 0.271
    # everything is stored: a second call (on a copy) reads it back instead of computing
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    again = []
    reproduce("blogfeedback", shared_data, copy, budget="smoke", progress=False, echo=again.append,
              methods=("sparse_proxskip",))
    assert any("read back" in m for m in again) and not any("evaluating" in m for m in again)
    # the read-back's wall time is not the runs': the README says so (the first call's does not)
    assert "every search and run was read back" in (copy / "README.md").read_text()
    assert "read back" not in (out / "README.md").read_text().split("alpha =")[0]
    # the final runs' own seconds, per cell and in all, the same when read back
    first, back = (json.loads((d / "run.json").read_text())["final_run_seconds"] for d in (out, copy))
    assert first["total"] > 0
    own = {(f.parent.parent.name, f.parent.name): json.loads(f.read_text())["run_seconds"]
           for f in (out / "runs").glob("*/*/summary.json")}
    assert own and first["total"] == pytest.approx(sum(own.values()))
    assert back["cells"]["sparse_proxskip"] == first["cells"]["sparse_proxskip"]
    assert "Final runs:" in (out / "README.md").read_text()
    # two worker processes give the same tables as one
    forked = tmp_path / "forked"
    forked_messages = []
    reproduce("blogfeedback", shared_data, forked, budget="smoke", progress=False, echo=forked_messages.append,
              jobs=2)
    check_results_dir(forked, "blogfeedback")
    # the main process reads the workers' searches back (their spaces are the main process's)
    assert not any("a different search" in m for m in forked_messages)
    assert sum("configurations read back" in m for m in forked_messages) == 2 * len(PAPER_METHODS["blogfeedback"])
    # the same up to rounding: a worker's BLAS has fewer threads and sums in another order
    chosen = [{m: {s: e["params"] for s, e in v.items()} for m, v in json.loads((d / "tuned.json").read_text()).items()}
              for d in (forked, out)]
    assert_same_numbers(*chosen)  # the same configurations (their scores move with the rounding)
    ours, theirs = (json.loads((d / "tables" / "tables.json").read_text())["metric"] for d in (forked, out))
    assert ours.keys() == theirs.keys()
    for m in ours:  # R² to 1e-4 (0.01 points); a different configuration moves it far more
        for s in ours[m]:
            assert ours[m][s]["mean"] == pytest.approx(theirs[m][s]["mean"], abs=1e-4)
    assert json.loads((forked / "run.json").read_text())["run_steps"] == \
        json.loads((out / "run.json").read_text())["run_steps"]


@pytest.mark.data
@pytest.mark.slow
def test_femnist_smoke_end_to_end(shared_data, tmp_path):
    out = tmp_path / "femnist-smoke"
    messages = []
    reproduce("femnist", shared_data, out, budget="smoke", progress=False, echo=messages.append)
    assert any("alpha check: dense fits" in m for m in messages)
    check_results_dir(out, "femnist", appendix_d=True)
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["data"]["n_clients"] == 100 and run_info["data"]["n_validation"] > 0
    assert run_info["alpha"]["alpha"] == pytest.approx(1 / run_info["data"]["n_train"])
    assert run_info["data"]["pixels"].startswith("inverted")
    ref = json.loads((out / "diagnostics" / "dense_reference.json").read_text())
    ks = [sparsity_to_k(run_info["data"]["dim"], s) for s in run_info["sparsities"]]
    assert ref["key"]["pixels"] == "inverted" and list(ref["conventions"]) == ["inverted", "leaf"]
    for conv in ref["conventions"].values():
        assert [r["k"] for r in conv["rows"]] == [None] + ks
    # the white background makes the mean image the stiffest direction: L is over 10 times larger
    assert 10 * ref["conventions"]["inverted"]["L_max"] < ref["conventions"]["leaf"]["L_max"]
    rows = parse_markdown_tables((out / "diagnostics" / "dense_reference.md").read_text())[0][1]
    assert len(rows) == 2 * (1 + len(ks)) and rows[0][0] == "inverted (the runs')" and rows[-1][0] == "leaf"
    check = json.loads((out / "diagnostics" / "alpha_check.json").read_text())
    alphas = sorted({1e-3, 1e-4, 1e-5, 1e-6, run_info["alpha"]["alpha"]}, reverse=True)
    assert [r["alpha"] for r in check["rows"]] == [a for a in alphas for _ in range(1 + len(ks))]
    # the runs' alpha is the dense reference of the runs' pixels (not LEAF's: other objective values)
    ours = [r for r in check["rows"] if r["alpha"] == run_info["alpha"]["alpha"]]
    inverted = ref["conventions"]["inverted"]
    assert [(r["objective"], r["train"], r["test"]) for r in ours] == \
        [(r["objective"], r["train"], r["test"]) for r in inverted["rows"]]
    assert {r["grad_norm"] for r in ours} == {inverted["grad_norm"]}
    # L-BFGS from w = 0 only descends, and F(0) = log(62) for every alpha
    assert all(r["objective"] < np.log(62) for r in check["rows"] if r["k"] is None)
    rows = parse_markdown_tables((out / "diagnostics" / "alpha_check.md").read_text())[0][1]
    assert len(rows) == len(check["rows"]) and sum("(the runs')" in r[0] for r in rows) == 1 + len(ks)
    # a second call (on a copy) reads both diagnostics back instead of fitting again
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    again = []
    reproduce("femnist", shared_data, copy, budget="smoke", progress=False, echo=again.append,
              methods=("sparse_proxskip",), appendix_d=False)
    assert any("alpha check read back" in m for m in again)
    assert any("dense reference read back" in m for m in again)
    assert not any("alpha check: dense fits" in m or "L-BFGS" in m for m in again)
    assert (copy / "diagnostics" / "alpha_check.md").read_text() == \
        (out / "diagnostics" / "alpha_check.md").read_text()


def test_pixels_is_validated_before_any_work(tmp_path, capsys):
    with pytest.raises(ValueError, match="pixels must be one of"):
        reproduce("femnist", tmp_path, tmp_path / "out", pixels="white")
    with pytest.raises(ValueError, match="FEMNIST only"):
        reproduce("blogfeedback", tmp_path, tmp_path / "out", pixels="leaf")
    assert not (tmp_path / "out").exists()
    for argv in (["reproduce", "blogfeedback", "--data-dir", str(tmp_path), "--pixels", "leaf"],
                 ["reproduce", "cifar10", "--data-dir", str(tmp_path), "--pixels", "leaf"],
                 ["reproduce", "femnist", "--data-dir", str(tmp_path), "--pixels", "white"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "--pixels" in capsys.readouterr().err


def test_stored_final_runs_are_read_back_only_for_the_same_data_key(tmp_path):
    from proxfed.data import make_sparse_regression
    from proxfed.experiments.paper import Budget
    from proxfed.experiments.pipeline import Pipeline as _Pipeline
    from proxfed.problems import Ridge

    prob = Ridge(make_sparse_regression(n_clients=4, n_features=6, n_informative=2, seed=1), alpha=1.0)
    b = Budget("t", communications=3, seeds=2, tune_communications=1, n_stage1=1, n_stage2=0, records=3)
    messages = []
    pipe = _Pipeline("blogfeedback", tmp_path, b, ("sparse_proxskip",), 0, False, messages.append)
    params = {"gamma": 0.5 / float(np.max(prob.smoothness())), "p": 0.5}
    where = tmp_path / "runs" / "sparse_proxskip" / "s0900"
    pipe.data_key = {"dataset": "x", "alpha": 1.0}
    first, _ = pipe.final_run("sparse_proxskip", 0.9, params, prob, where, 3)
    again, summ = pipe.final_run("sparse_proxskip", 0.9, params, prob, where, 3)
    assert summ.get("read_back") and np.array_equal(first["metric"], again["metric"])
    pipe.data_key = {"dataset": "x", "alpha": 2.0}  # other data or objective, same parameters: recomputed
    _, summ = pipe.final_run("sparse_proxskip", 0.9, params, prob, where, 3)
    assert not summ.get("read_back")
    assert sum("read back" in m for m in messages) == 1


def test_budget_validates_reference_iterations():
    from proxfed.experiments.paper import Budget

    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="reference_iterations"):
            Budget("x", communications=1, seeds=1, tune_communications=1, n_stage1=1, n_stage2=0,
                   reference_iterations=bad)


def test_softmax_dense_reference_is_the_dense_fit_and_its_topk():
    from proxfed.data import make_fedprox_synthetic
    from proxfed.experiments.paper import softmax_dense_reference
    from proxfed.experiments.specs.softmax_checks import dense_fit as _dense_fit
    from proxfed.problems import SoftmaxRegression

    ds = make_fedprox_synthetic(n_clients=6, seed=1, test_fraction=0.3)
    prob = SoftmaxRegression(ds, alpha=0.1)
    ref = softmax_dense_reference(prob, ks=(5, 20), maxiter=300)
    dense, *pruned = ref["rows"]
    assert dense["k"] is None and [r["k"] for r in pruned] == [5, 20]
    assert ref["grad_norm"] < 1e-4  # converged: the dense model minimizes F ...
    assert all(r["objective"] >= dense["objective"] for r in pruned)  # ... so pruning it can only raise F
    np.testing.assert_allclose(dense["test"], prob.score(_dense_fit(prob, 300), "test"))
    assert all(0.0 <= r["test"] <= 1.0 for r in ref["rows"])
    np.testing.assert_allclose(dense["train"], prob.score(_dense_fit(prob, 300), "train"))
    assert all(0.0 <= r["train"] <= 1.0 for r in ref["rows"])


def test_softmax_alpha_check_fits_each_alpha():
    from proxfed.data import make_fedprox_synthetic
    from proxfed.experiments.paper import softmax_alpha_check
    from proxfed.experiments.specs.softmax_checks import dense_fit as _dense_fit
    from proxfed.problems import SoftmaxRegression

    ds = make_fedprox_synthetic(n_clients=6, seed=1, test_fraction=0.3)
    rows = softmax_alpha_check(ds, alphas=(1.0, 1e-3), ks=(5,), maxiter=300)
    assert [(r["alpha"], r["k"]) for r in rows] == [(1.0, None), (1.0, 5), (1e-3, None), (1e-3, 5)]
    for a in (1.0, 1e-3):  # each row is the fit at its own alpha
        prob = SoftmaxRegression(ds, alpha=a, init="zeros")
        w = _dense_fit(prob, 300)
        dense = next(r for r in rows if r["alpha"] == a and r["k"] is None)
        np.testing.assert_allclose([dense["train"], dense["test"], dense["objective"]],
                                   [prob.score(w, "train"), prob.score(w, "test"), prob.objective(w)])
    # weaker regularization fits the training images at least as well
    assert rows[2]["train"] >= rows[0]["train"] and rows[2]["objective"] < rows[0]["objective"]


@pytest.mark.data
@pytest.mark.slow
def test_femnist_smoke_on_torch_matches_numpy(shared_data, tmp_path):
    """The pipeline on torch (CPU) gives the NumPy pipeline's numbers to rounding."""
    pytest.importorskip("torch")
    kw = dict(budget="smoke", methods=("sparse_proxskip",), appendix_d=False, progress=False,
              echo=lambda *_: None)
    a = reproduce("femnist", shared_data, tmp_path / "numpy", **kw)
    b = reproduce("femnist", shared_data, tmp_path / "torch", backend="torch", **kw)
    for s, r in a["summary"]["sparse_proxskip"].items():
        np.testing.assert_allclose(b["summary"]["sparse_proxskip"][s]["metric"], r["metric"], atol=1e-9)
    assert json.loads((tmp_path / "torch" / "run.json").read_text())["backend"]["backend"] == "torch"
    with pytest.raises(ValueError, match="backend"):
        reproduce("femnist", shared_data, tmp_path / "bad", backend="jax", **kw)


# -- BlogFeedback's alpha chosen on the validation split -------------------------------------------
def test_choose_ridge_alpha_is_the_validation_argmax_and_never_reads_test(problem):
    from proxfed.experiments.paper import choose_ridge_alpha, ridge_alpha_check

    ds = problem.dataset
    grid = (100.0, 10.0, 1.0, 0.1)
    out = choose_ridge_alpha(ds, ks=(4, 8), alphas=grid)
    rows = ridge_alpha_check(ds, alphas=grid, ks=(4, 8))
    by_alpha = {a: np.mean([r["validation_r2"] for r in rows if r["alpha"] == a and r["k"] is not None])
                for a in grid}
    assert out["alpha"] == max(by_alpha, key=by_alpha.get)
    assert out["score"] == pytest.approx(by_alpha[out["alpha"]])
    assert set(out["grid"]) == {f"{a:g}" for a in grid}
    # a test split with other targets changes nothing: the choice reads validation only
    flipped = proxfed.FederatedDataset(ds.X, ds.y, ds.offsets, validation=ds.validation,
                                       test=proxfed.data.Split(ds.test.X, -ds.test.y))
    assert choose_ridge_alpha(flipped, ks=(4, 8), alphas=grid)["alpha"] == out["alpha"]


def test_alpha_validation_is_refused_for_femnist(tmp_path):
    with pytest.raises(ValueError, match="validation"):
        reproduce("femnist", tmp_path, tmp_path / "out", alpha="validation")
    with pytest.raises(SystemExit):
        main(["reproduce", "femnist", "--data-dir", str(tmp_path), "--alpha", "validation"])
    with pytest.raises(SystemExit):
        main(["reproduce", "blogfeedback", "--data-dir", str(tmp_path), "--alpha", "lots"])


def test_row_sparsities_label_by_position_when_ks_repeat():
    from proxfed.experiments.specs.femnist import row_sparsities as _row_sparsities

    ks, sparsities = [2, 1, 1], [0.8, 0.9, 0.95]  # a tiny dim: 90% and 95% both keep K = 1
    rows = [{"k": k} for k in (None, *ks)] * 2
    assert _row_sparsities(rows, ks, sparsities) == [None, 0.8, 0.9, 0.95] * 2
    with pytest.raises(ValueError, match="out of the order"):
        _row_sparsities([{"k": None}, {"k": 1}], ks, sparsities)
    with pytest.raises(ValueError, match="out of the order"):
        _row_sparsities(rows[:4] + [{"k": 1}], ks, sparsities)


@pytest.mark.parametrize("dataset, options", [
    ("blogfeedback", dict(budget="small")),
    ("blogfeedback", dict(budget="small", alpha="validation", seed=3, methods=("fedht", "sparse_proxskip"))),
    ("blogfeedback", dict(budget="quick", alpha=1e-5, driver="exact", dtype="float32")),
    ("femnist", dict(budget="small", pixels="leaf", appendix_d=False)),
    ("femnist", dict(budget="smoke", main=False, appendix_d=True)),
])
def test_recorded_command_asks_for_the_same_results(dataset, options):
    from proxfed.experiments.options import command as _command

    budget = BUDGETS[dataset][options["budget"]].with_driver(options.get("driver"))
    cmd = _command(dataset, budget, methods=options.get("methods"), seed=options.get("seed", 0),
                   alpha=options.get("alpha"), appendix_d=options.get("appendix_d", dataset == "femnist"),
                   main=options.get("main", True), pixels=options.get("pixels", "inverted"),
                   dtype=options.get("dtype", "float64"))
    words = cmd.split()
    assert words[:2] == ["proxfed", "reproduce"]
    args = build_parser().parse_args(words[1:])
    assert args.budget == options["budget"] and args.driver == options.get("driver")
    assert (tuple(args.methods) if args.methods else None) == options.get("methods")
    assert args.seed == options.get("seed", 0) and args.alpha == options.get("alpha")
    assert args.dtype == options.get("dtype", "float64")
    assert (args.pixels or "inverted") == options.get("pixels", "inverted")
    assert args.experiment == (dataset if options.get("main", True) else "femnist-appendix-d")
    assert args.no_appendix_d == (dataset == "femnist" and options.get("main", True)
                                  and not options.get("appendix_d", True))


def test_recorded_command_flags_a_custom_budget():
    from dataclasses import replace

    from proxfed.experiments.options import command as _command

    custom = replace(BUDGETS["blogfeedback"]["small"], communications=2000)
    cmd = _command("blogfeedback", custom, methods=None, seed=0, alpha=None, appendix_d=False, main=True,
                   pixels="inverted", dtype="float64")
    assert "custom 'small'" in cmd
    renamed = replace(custom, name="long")  # a name the command line does not know
    assert "custom 'long'" in _command("blogfeedback", renamed, methods=None, seed=0, alpha=None, appendix_d=False,
                                       main=True, pixels="inverted", dtype="float64")
