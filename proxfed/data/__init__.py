"""Federated datasets and the embedded synthetic generators."""

from .dataset import FederatedDataset, Split
from .synthetic import make_sparse_regression

__all__ = ["FederatedDataset", "Split", "make_sparse_regression"]
