"""Experiments: the demo on the embedded synthetic default and the paper's reproductions.

:func:`reproduce` (``proxfed reproduce blogfeedback|femnist``) runs the paper's
BlogFeedback and FEMNIST experiments with tuning, tables next to the published
numbers, figures and the Appendix D diagnostics; see :mod:`proxfed.experiments.paper`.
"""

from .demo import DEMO_METHODS, demo_methods, run_demo, sparsity_to_k
from .paper import (
    BUDGETS,
    PAPER_METHODS,
    Budget,
    get_budget,
    reproduce,
    reproduce_appendix_d,
    reproduce_blogfeedback,
    reproduce_femnist,
    ridge_alpha_check,
    softmax_alpha_check,
    softmax_dense_reference,
)
from .published import METHOD_LABELS, ORDERINGS, PUBLISHED

__all__ = [
    "DEMO_METHODS", "demo_methods", "run_demo", "sparsity_to_k",
    "Budget", "BUDGETS", "PAPER_METHODS", "get_budget", "reproduce", "reproduce_blogfeedback",
    "reproduce_femnist", "reproduce_appendix_d", "ridge_alpha_check",
    "softmax_alpha_check",
    "softmax_dense_reference",
    "METHOD_LABELS", "PUBLISHED", "ORDERINGS",
]
