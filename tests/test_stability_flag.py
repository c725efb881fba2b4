"""Runs that blow up and stay finite: ``peak_rise`` / ``unstable_runs`` and the reproduction's flag.

A run whose objective grows by orders of magnitude but never overflows has status "completed"
(issue 20: Final-TopK at γ = 2.06/L rose to 10³³ and back). The reproduction records each seed's
rise and marks its table cells.
"""

import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from proxfed.data import make_sparse_regression
from proxfed.experiments.paper import Budget
from proxfed.experiments.pipeline import Pipeline, stability
from proxfed.experiments.report import UNSTABLE_MARK, tables
from proxfed.metrics import BLOWUP_FACTOR, peak_rise, unstable_runs
from proxfed.problems import Ridge

losses = hnp.arrays(np.float64, st.tuples(st.integers(1, 12), st.integers(1, 4)),
                    elements=st.floats(1e-6, 1e12))


@given(loss=losses, scale=st.floats(1e-3, 1e3))
def test_peak_rise_is_the_largest_record_over_the_first(loss, scale):
    rise = peak_rise(loss)
    want = np.array([max(col) / col[0] for col in loss.T])  # plain reference, column by column
    np.testing.assert_allclose(rise, want, rtol=1e-12)
    assert np.all(rise >= 1.0)  # the first record is one of the records
    np.testing.assert_allclose(peak_rise(scale * loss), rise, rtol=1e-9)  # units do not matter
    np.testing.assert_array_equal(unstable_runs(loss), rise > BLOWUP_FACTOR)


def test_peak_rise_edges():
    assert peak_rise([3.0, 2.0, 1.0]) == 1.0  # a decreasing run never rises
    np.testing.assert_array_equal(peak_rise([[2.0], [np.nan], [4.0]]), [2.0])  # NaN records ignored
    assert peak_rise([1.0, np.inf]) == np.inf and unstable_runs([1.0, np.inf])
    assert not unstable_runs([1.0, 9.0]) and unstable_runs([1.0, 9.0], factor=5.0)
    for bad in ([], [[[1.0]]], [0.0, 1.0], [-1.0, 2.0]):
        with pytest.raises(ValueError, match="loss|first record"):
            peak_rise(bad)
    with pytest.raises(ValueError, match="factor"):
        unstable_runs([1.0, 2.0], factor=1.0)


def test_stability_of_a_history():
    hist = {"loss": np.array([[4.0, 4.0, 4.0], [1.0, 400.0, 39.0], [0.5, 3.0, 38.0]])}
    got = stability(hist, [11, 12, 13])
    assert got == {"peak_rise": [1.0, 100.0, 9.75], "unstable_seeds": [12]}
    assert stability({"metric": np.ones(3)}, [1]) == {}  # no loss recorded: nothing to say
    assert stability({"loss": np.zeros((2, 1))}, [1]) == {}  # a start at zero loss: nothing to compare with
    assert stability({"loss": np.array([1.0, np.inf])}, [7]) == {"peak_rise": [np.finfo(float).max],
                                                                "unstable_seeds": [7]}  # JSON has no inf


@pytest.fixture(scope="module")
def problem():
    ds = make_sparse_regression(n_clients=6, n_features=20, n_informative=4, n_test=200, n_validation=100, seed=3)
    return Ridge(ds, alpha=1.0)


def test_a_reproduction_flags_a_finite_blow_up(problem, tmp_path):
    """ProxSkip with γ = 12/L grows ~10³¹-fold in 40 steps and stays finite: completed, yet flagged."""
    b = Budget("t", communications=40, seeds=3, tune_communications=1, n_stage1=1, n_stage2=0, records=40)
    pipe = Pipeline("blogfeedback", tmp_path, b, ("sparse_proxskip", "proxskip"), 0, False, lambda *_: None)
    L = float(np.max(problem.smoothness()))
    said = []
    pipe.say = said.append
    stable, wild = {"gamma": 0.5 / L, "p": 1.0}, {"gamma": 12.0 / L, "p": 1.0}
    pipe.results = {"sparse_proxskip": {}, "proxskip": {}}
    for s in pipe.sparsities:
        hist, summ = pipe.final_run("sparse_proxskip", s, stable, problem, tmp_path / "sps" / str(s), 40)
        pipe.results["sparse_proxskip"][s] = {"history": hist, "summary": summ}
        assert summ["unstable_seeds"] == [] and max(summ["peak_rise"]) <= 1.0 + 1e-12
    hist, summ = pipe.final_run("proxskip", None, wild, problem, tmp_path / "dense", 40)
    pipe.results["proxskip"][None] = {"history": hist, "summary": summ}
    assert summ["status"] == "completed" and np.all(np.isfinite(hist["loss"]))
    assert summ["unstable_seeds"] == summ["seeds"] and min(summ["peak_rise"]) > 1e6
    assert any("UNSTABLE seeds" in m for m in said)
    # stored, and read back with the same flag
    again = pipe.final_run("proxskip", None, wild, problem, tmp_path / "dense", 40)[1]
    assert again.get("read_back") and again["unstable_seeds"] == summ["seeds"]
    # a run stored before the check: its summary has neither field, read back gets both from the history
    stored = json.loads((tmp_path / "dense" / "summary.json").read_text())
    for name in ("peak_rise", "unstable_seeds"):
        del stored[name]
    (tmp_path / "dense" / "summary.json").write_text(json.dumps(stored))
    old = pipe.final_run("proxskip", None, wild, problem, tmp_path / "dense", 40)[1]
    assert old.get("read_back") and old["unstable_seeds"] == summ["seeds"]
    np.testing.assert_allclose(old["peak_rise"], summ["peak_rise"], rtol=1e-12)
    made = tables(pipe)
    metric_md = next(md for name, md in made["markdown"].items() if "final" in md.splitlines()[0])
    flagged = [line for line in metric_md.splitlines() if UNSTABLE_MARK in line and line.startswith("|")]
    assert len(flagged) == 1 and flagged[0].startswith("| ProxSkip")  # the wild run's row only
    assert "some seeds unstable" in metric_md
    entry = made["numbers"]["metric"]["proxskip"]
    assert all(e.get("unstable_seeds") == summ["seeds"] for e in entry.values())
    assert all("unstable_seeds" not in e for e in made["numbers"]["metric"]["sparse_proxskip"].values())
