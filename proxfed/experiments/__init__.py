"""Experiments: the demo on the embedded synthetic default (paper reproductions to come)."""

from .demo import DEMO_METHODS, demo_methods, run_demo, sparsity_to_k

__all__ = ["DEMO_METHODS", "demo_methods", "run_demo", "sparsity_to_k"]
