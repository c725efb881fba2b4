"""The typed views of the round-based rules' State.extras: keys, order and values as the drivers see them."""

import numpy as np
import pytest

from proxfed import algorithms as A
from proxfed.algorithms.fedsparsify import SparsifyExtras
from proxfed.algorithms.flash import FlashExtras
from proxfed.data import make_sparse_regression
from proxfed.problems import Ridge


@pytest.fixture(scope="module")
def ridge():
    return Ridge(make_sparse_regression(n_clients=6, n_features=20, seed=3), alpha=10.0)


def _steps(alg, problem, n):
    state = alg.init(problem, np.zeros(problem.dim))
    yield state
    E = int(alg.local_steps())
    for t in range(n):
        state = alg.step(state, problem, (t + 1) % E == 0)
        yield state


@pytest.mark.parametrize("make, view, keys", [
    (lambda g: A.fedsparsify_local(g, 2, 0.5, 4, clients_per_round=3), SparsifyExtras,
     ["x", "mask", "mask_version", "known_version"]),
    (lambda g: A.jmwst(g, 2, 0.5, 4, clients_per_round=3), FlashExtras,
     ["x", "level_mask", "client_mask", "mask_version", "known_version", "w_init"]),
    (lambda g: A.pdst(g, 2, 0.5, 4), FlashExtras, ["x", "level_mask", "client_mask", "mask_version",
                                                   "known_version"]),
])
def test_the_views_round_trip(ridge, make, view, keys):
    alg = make(0.5 / float(np.max(ridge.smoothness())))
    for state in _steps(alg, ridge, 8):
        assert list(state.extras) == keys
        ex = view.from_extras(state.extras)
        back = ex.to_extras()
        assert list(back) == keys and all(back[k] is state.extras[k] for k in keys)
        # other keys (e.g. proxfed_dl's buffers) and their order survive a write into the mapping
        merged = ex.to_extras({"buffers": 1, **state.extras})
        assert list(merged) == ["buffers"] + keys
