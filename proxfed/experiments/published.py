"""The paper's published numbers (Meinhardt, Yi, Condat, Richtarik 2024, arXiv 2405.20623).

Values are copied from the paper's Tables 1-5 as listed in the project's
EXPERIMENTS.md: test R^2 and accuracy as fractions, train loss as the
unnormalized sum ``sum_i 1/2 ||A_i w - b_i||^2``, communication as uplink
bits per client (``None`` = the threshold is never reached).
"""

from __future__ import annotations

from ..algorithms.registry import METHODS

__all__ = ["METHOD_LABELS", "PUBLISHED", "ORDERINGS"]

#: Display names of the methods, in the paper's table order (the registry's table labels,
#: :attr:`proxfed.algorithms.registry.MethodSpec.table_label` or ``label``).
METHOD_LABELS = {
    m: (METHODS[m].table_label or METHODS[m].label)
    for m in ("final_topk", "fedht", "fediht", "accelerated_server_pruning", "randprox_l1", "sparse_proxskip_local",
              "sparse_proxskip", "proxskip", "asp_modified", "sps_modified")
}

_BF_SPARSITIES = (0.8, 0.9, 0.95)
_FE_SPARSITIES = (0.8, 0.9, 0.95, 0.98, 0.99)


def _rows(table: dict, sparsities) -> dict:
    return {m: dict(zip(sparsities, vals)) for m, vals in table.items()}


#: ``PUBLISHED[dataset][table]``: method -> sparsity -> value (or threshold -> bits for communication tables).
PUBLISHED = {
    "blogfeedback": {
        "sparsities": _BF_SPARSITIES,
        "metric": _rows({
            "final_topk": (0.264, 0.238, 0.164),
            "fedht": (0.180, 0.219, 0.128),
            "fediht": (0.165, 0.224, 0.123),
            "accelerated_server_pruning": (0.259, 0.204, 0.163),
            "randprox_l1": (0.263, 0.241, 0.188),
            "sparse_proxskip_local": (0.270, 0.268, 0.239),
            "sparse_proxskip": (0.267, 0.271, 0.267),
        }, _BF_SPARSITIES),
        "loss": _rows({
            "final_topk": (2.817e7, 2.877e7, 3.113e7),
            "fedht": (3.056e7, 2.951e7, 3.288e7),
            "fediht": (3.143e7, 2.937e7, 3.267e7),
            "accelerated_server_pruning": (2.872e7, 2.991e7, 3.217e7),
            "randprox_l1": (2.823e7, 2.894e7, 3.073e7),
            "sparse_proxskip_local": (2.818e7, 2.856e7, 2.938e7),
            "sparse_proxskip": (2.810e7, 2.831e7, 2.897e7),
        }, _BF_SPARSITIES),
        "communication": {
            "sparsity": 0.9,
            "reference": "final_topk",
            "thresholds": (0.20, 0.225, 0.25),
            "bits": _rows({
                "final_topk": (1.16e6, 1.44e6, None),
                "fedht": (14.8e6, None, None),
                "fediht": (2.49e6, None, None),
                "accelerated_server_pruning": (0.73e6, None, None),
                "randprox_l1": (0.18e6, 0.25e6, None),
                "sparse_proxskip_local": (0.13e6, 0.21e6, 0.76e6),
                "sparse_proxskip": (0.10e6, 0.14e6, 0.19e6),
            }, (0.20, 0.225, 0.25)),
            "speedup": _rows({
                "final_topk": (1.00, 1.00, None),
                "fedht": (0.08, None, None),
                "fediht": (0.47, None, None),
                "accelerated_server_pruning": (1.59, None, None),
                "randprox_l1": (6.44, 5.76, None),
                "sparse_proxskip_local": (8.90, 6.86, None),
                "sparse_proxskip": (11.6, 10.3, None),
            }, (0.20, 0.225, 0.25)),
        },
    },
    "femnist": {
        "sparsities": _FE_SPARSITIES,
        "metric": _rows({
            "final_topk": (0.847, 0.799, 0.696, 0.401, 0.255),
            "fedht": (0.866, 0.857, 0.847, 0.766, 0.664),
            "fediht": (0.868, 0.856, 0.827, 0.746, 0.654),
            "accelerated_server_pruning": (0.779, 0.775, 0.768, 0.722, 0.647),
            "sparse_proxskip_local": (0.867, 0.861, 0.847, 0.789, 0.729),
            "sparse_proxskip": (0.870, 0.864, 0.853, 0.805, 0.728),
        }, _FE_SPARSITIES),
        "loss": {},
        "communication": {
            "sparsity": 0.9,
            "reference": "fediht",
            "thresholds": (0.80, 0.825, 0.85),
            "bits": _rows({
                "final_topk": (6.0e6, 16.6e6, 92.4e6),
                "fedht": (4.0e6, 8.54e6, 45.7e6),
                "fediht": (0.8e6, 1.61e6, 13.0e6),
                "accelerated_server_pruning": (2.0e6, 3.57e6, None),
                "sparse_proxskip_local": (0.5e6, 0.55e6, 2.52e6),
                "sparse_proxskip": (0.2e6, 0.35e6, 0.65e6),
            }, (0.80, 0.825, 0.85)),
            "speedup": _rows({
                "final_topk": (0.1, 0.1, 0.1),
                "fedht": (0.2, 0.2, 0.3),
                "fediht": (1.0, 1.0, 1.0),
                "accelerated_server_pruning": (0.4, 0.5, None),
                "sparse_proxskip_local": (1.8, 2.9, 5.2),
                "sparse_proxskip": (4.0, 4.6, 19.0),
            }, (0.80, 0.825, 0.85)),
        },
    },
}

#: The orderings a reproduction must show (EXPERIMENTS.md): dataset -> (sparsity, chain).
#: A chain is a list of groups; every method of a group should beat every method of the next
#: group (``>``); methods inside a group are "about equal" (``≈``) and are not compared.
ORDERINGS = {
    "blogfeedback": (0.95, [["sparse_proxskip"], ["sparse_proxskip_local"], ["randprox_l1"],
                            ["final_topk", "accelerated_server_pruning"], ["fedht", "fediht"]]),
    "femnist": (0.99, [["sparse_proxskip", "sparse_proxskip_local"], ["fedht"],
                       ["fediht", "accelerated_server_pruning"], ["final_topk"]]),
}
