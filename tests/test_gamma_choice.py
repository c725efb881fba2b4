"""The budget's ``gamma_choice_max``: the choice from a stored search under a stepsize cap.

The search is unchanged (same key, read back); only the configuration taken for the final runs
changes, to the best with ``gamma <= gamma_choice_max / L``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from proxfed.experiments.paper import Budget, get_budget, reproduce
from proxfed.search import best_trial
from tests.test_protocols import blog_dir, blog_raw  # noqa: F401 (fixtures)


def _trial(group, gamma, score, status="ok"):
    return {"stage": 1, "group": group, "params": {"gamma": gamma, "p": 0.5}, "score": score, "status": status}


def test_best_trial_restricted_to_the_admissible():
    trials = [_trial("a", 3.0, 0.9), _trial("a", 1.0, 0.5), _trial("a", 1.5, 0.7), _trial("a", 0.5, 0.7),
              _trial("a", 0.1, None, "diverged"), _trial("b", 0.2, 0.99)]
    assert best_trial(trials, "a") == ({"gamma": 3.0, "p": 0.5}, 0.9)
    below2 = lambda c: c["gamma"] <= 2.0  # noqa: E731
    assert best_trial(trials, "a", admissible=below2) == ({"gamma": 1.5, "p": 0.5}, 0.7)  # the earliest of a tie
    assert best_trial(trials, "a", maximize=False, admissible=below2) == ({"gamma": 1.0, "p": 0.5}, 0.5)
    assert best_trial(trials, "a", admissible=lambda c: c["gamma"] < 0.2) == (None, None)  # only a failure
    assert best_trial(trials, "c") == (None, None)


@pytest.mark.parametrize("bad", [0, -1.0, True, "2"])
def test_budget_checks_gamma_choice_max(bad):
    with pytest.raises(ValueError, match="gamma_choice_max"):
        Budget("x", communications=1, seeds=1, tune_communications=1, n_stage1=1, n_stage2=0, gamma_choice_max=bad)


def test_the_paper_budget_caps_blogfeedbacks_choice_at_2_over_L():
    assert get_budget("blogfeedback", "paper").gamma_choice_max == 2.0
    assert get_budget("blogfeedback", "small").gamma_choice_max is None  # its documented numbers stand
    assert get_budget("femnist", "paper").gamma_choice_max is None


def test_a_capped_choice_reads_the_same_search_back(blog_dir, tmp_path):  # noqa: F811
    """Uncapped, then capped at 0.5/L on the same results directory: no configuration is evaluated
    again, the choice is the best stored trial below the cap, and the search's best is recorded."""
    wide = dataclasses.replace(get_budget("blogfeedback", "smoke"), n_stage1=8, n_stage2=4)
    common = dict(methods=("sparse_proxskip",), progress=False, alpha=10.0, sparsities=(0.9,))
    out = tmp_path / "out"
    reproduce("blogfeedback", blog_dir, out, budget=wide, echo=lambda m: None, **common)
    search = json.loads((out / "tuning" / "sparse_proxskip.json").read_text())
    (group,) = search["settings"]["groups"]
    gamma_high = search["space"][0]["high"]
    assert search["space"][0]["name"] == "gamma"
    limit = 0.5 * gamma_high / wide.gamma_range[1]
    best = search["best"][group]
    assert best["gamma"] > limit  # the cap must bite for the test to mean anything

    messages = []
    capped = dataclasses.replace(wide, gamma_choice_max=0.5)
    reproduce("blogfeedback", blog_dir, out, budget=capped, echo=messages.append, **common)
    assert not any("evaluating" in m for m in messages)  # the search was read back
    assert any("is above 0.5/L" in m for m in messages)
    entry = json.loads((out / "tuned.json").read_text())["sparse_proxskip"]["0.9"]
    admissible = [t for t in search["trials"] if t["group"] == group and t["score"] is not None
                  and t["params"]["gamma"] <= limit]
    expected = max(admissible, key=lambda t: t["score"])
    assert entry["params"] == expected["params"] and entry["validation_score"] == expected["score"]
    assert entry["search_best"] == {"params": best, "validation_score": search["best_score"][group]}
    assert entry["gamma_choice_max"] == 0.5
    summary = json.loads((out / "runs" / "sparse_proxskip" / "s0900" / "summary.json").read_text())
    assert summary["params"] == expected["params"]
    assert json.loads((out / "run.json").read_text())["budget"]["gamma_choice_max"] == 0.5
