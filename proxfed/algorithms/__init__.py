"""Federated update rules as pure ``init``/``step`` pairs over an explicit state.

The paper's Algorithm 1 is one engine (:class:`Algorithm1`) with prox
placements; the named variants are factories over it. FedAvg, FedHT,
FedIHT and SCAFFOLD are small rules of their own on the same state and
accounting, and so are the round-based sparse-training systems
FedSparsify (:class:`FedSparsify`) and FLASH (:class:`Flash`), which add
partial participation and masks (:mod:`proxfed.algorithms.rounds`).

Examples
--------
>>> from proxfed.algorithms import sparse_proxskip
>>> alg = sparse_proxskip(gamma=0.1, p=0.2, k=5)
>>> alg.name, alg.uplink
('sparse_proxskip', TopK(k=5, d=None))
"""

from .base import Algorithm, FixedSchedule, State
from .baselines import FedAvg, FedHT, Scaffold, fedavg, fedht, fediht, scaffold
from .fedsparsify import (
    FedSparsify,
    fedsparsify_communication,
    fedsparsify_global,
    fedsparsify_local,
    fedsparsify_schedule,
    oneshot_pruning,
    random_pruning,
)
from .flash import Flash, dst_step, hetero_flash, jmwst, layer_budgets, pdst, rescale_densities, spdst
from .rounds import Layers, participants
from .meta import (
    Algorithm1,
    accelerated_server_pruning,
    asp_modified,
    final_topk,
    proxskip,
    randprox_l1,
    sparse_proxskip,
    sparse_proxskip_local,
    sps_bidirectional,
    sps_modified,
)

__all__ = [
    "Algorithm",
    "FixedSchedule",
    "State",
    "Algorithm1",
    "proxskip",
    "final_topk",
    "sparse_proxskip",
    "sparse_proxskip_local",
    "accelerated_server_pruning",
    "asp_modified",
    "sps_modified",
    "randprox_l1",
    "sps_bidirectional",
    "FedAvg",
    "FedHT",
    "Scaffold",
    "fedavg",
    "fedht",
    "fediht",
    "scaffold",
    "FedSparsify",
    "fedsparsify_schedule",
    "fedsparsify_communication",
    "fedsparsify_global",
    "fedsparsify_local",
    "oneshot_pruning",
    "random_pruning",
    "Flash",
    "pdst",
    "spdst",
    "jmwst",
    "hetero_flash",
    "dst_step",
    "layer_budgets",
    "rescale_densities",
    "Layers",
    "participants",
]
