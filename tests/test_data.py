"""FederatedDataset validation and the synthetic generator."""

import numpy as np
import pytest

from proxfed import FederatedDataset, Split
from proxfed.data import make_sparse_regression


def test_from_clients_layout():
    ds = FederatedDataset.from_clients([(np.ones((3, 2)), np.arange(3.0)), (2 * np.ones((2, 2)), np.zeros(2))],
                                       test=(np.zeros((4, 2)), np.zeros(4)))
    assert ds.offsets.tolist() == [0, 3, 5]
    assert ds.client_ids.tolist() == [0, 0, 0, 1, 1]
    X1, y1 = ds.client(1)
    assert np.all(X1 == 2) and y1.shape == (2,)
    assert isinstance(ds.test, Split) and ds.test.n_samples == 4
    assert "N=2" in repr(ds)


@pytest.mark.parametrize(
    "clients, exc, message",
    [
        ([], ValueError, "at least one"),
        ([(np.ones((2, 2)), np.ones(2)), (np.ones((2, 3)), np.ones(2))], ValueError, "same number of features"),
        ([(np.ones((0, 2)), np.ones(0))], ValueError, "at least one row"),
        ([(np.array([[np.nan, 1.0]]), np.ones(1))], ValueError, "NaN"),
        ([(np.ones((2, 2)), np.ones(3))], ValueError, "y of client 0"),
        ([(np.ones(2), np.ones(2))], ValueError, "2-d"),
        ([(np.array([["a", "b"]]), np.ones(1))], TypeError, "numeric"),
    ],
)
def test_from_clients_rejects_bad_input(clients, exc, message):
    with pytest.raises(exc, match=message):
        FederatedDataset.from_clients(clients)


def test_bad_offsets_and_split():
    with pytest.raises(ValueError, match="offsets"):
        FederatedDataset(np.ones((3, 2)), np.ones(3), np.array([0, 2]))
    with pytest.raises(ValueError, match="at least one row"):
        FederatedDataset(np.ones((3, 2)), np.ones(3), np.array([0, 3, 3]))
    with pytest.raises(ValueError, match="features"):
        FederatedDataset(np.ones((3, 2)), np.ones(3), np.array([0, 3]), test=(np.ones((2, 5)), np.ones(2)))


def test_synthetic_is_deterministic_and_heterogeneous():
    a = make_sparse_regression(seed=3)
    b = make_sparse_regression(seed=3)
    c = make_sparse_regression(seed=4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    assert not np.array_equal(a.y[:10], c.y[:10])
    assert np.all(a.X[:, -1] == 1.0)  # bias column
    sizes = a.client_sizes
    assert sizes.max() > 4 * np.median(sizes)  # heavy tail
    w_true = a.meta["w_true"]
    assert np.count_nonzero(w_true[:-1]) == 6
    # clients differ in their feature means (heterogeneity)
    means = np.array([X[:, :-1].mean(axis=0) for X, _ in a.clients()])
    assert means.std(axis=0).mean() > 0.2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_clients": 0}, "n_clients"),
        ({"n_informative": 100}, "n_informative"),
        ({"correlation": 1.0}, "correlation"),
        ({"seed": -1}, "seed"),
        ({"mean_client_size": 0.5}, "mean_client_size"),
    ],
)
def test_synthetic_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_sparse_regression(**kwargs)
