"""Federated datasets: the dataset type, real-data loaders, partitioners and synthetic generators."""

from ._io import DataFormatError
from .blogfeedback import load_blogfeedback
from .cache import load_dataset, save_dataset
from .cifar10 import load_cifar10, read_cifar10
from .dataset import FederatedDataset, Split
from .download import REMOTE_FILES, ChecksumError, default_cache_dir, download_file
from .femnist import load_femnist
from .partition import (
    PartitionError,
    check_partition,
    federate,
    partition_by_key,
    partition_dirichlet,
    partition_iid,
    partition_shards,
    partition_unbalanced_dirichlet,
)
from .report import PartitionReport, client_size_table, partition_report, plot_client_sizes, plot_partition
from .synthetic import make_fedprox_synthetic, make_sparse_regression

__all__ = [
    "FederatedDataset",
    "Split",
    # synthetic generators
    "make_sparse_regression",
    "make_fedprox_synthetic",
    # loaders
    "load_blogfeedback",
    "load_femnist",
    "load_cifar10",
    "read_cifar10",
    # partitioners
    "partition_iid",
    "partition_dirichlet",
    "partition_unbalanced_dirichlet",
    "partition_shards",
    "partition_by_key",
    "check_partition",
    "federate",
    # reports
    "PartitionReport",
    "partition_report",
    "plot_partition",
    "client_size_table",
    "plot_client_sizes",
    # cache and downloads
    "save_dataset",
    "load_dataset",
    "download_file",
    "default_cache_dir",
    "REMOTE_FILES",
    # errors
    "DataFormatError",
    "PartitionError",
    "ChecksumError",
]
