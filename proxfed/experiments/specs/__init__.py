"""The datasets of the paper's reproductions, one :class:`DatasetSpec` each, registered in :data:`SPECS`.

Adding a dataset: a :class:`DatasetSpec` subclass in its own module here (its
loader, problems, ``alpha`` policy, budgets, tables and diagnostics), one
entry in :data:`SPECS`, its published numbers in
:mod:`proxfed.experiments.published`, and tests.
"""

from __future__ import annotations

from ..budgets import Budget
from .base import DatasetSpec, Loaded
from .blogfeedback import BlogFeedbackSpec
from .femnist import FemnistSpec

__all__ = ["BUDGETS", "DatasetSpec", "EXPERIMENTS", "Loaded", "PAPER_METHODS", "SPECS", "get_budget", "get_spec",
           "with_option"]

#: The registry: dataset name -> its spec (what :func:`~proxfed.experiments.paper.reproduce` accepts).
SPECS = {spec.name: spec for spec in (BlogFeedbackSpec(), FemnistSpec())}

#: ``proxfed reproduce``'s experiments: name -> (dataset, only its Appendix D).
EXPERIMENTS = {**{name: (name, False) for name in SPECS},
               **{f"{name}-appendix-d": (name, True) for name, spec in SPECS.items() if spec.appendix_d}}

#: ``BUDGETS[dataset][name]``: each spec's budgets.
BUDGETS = {name: spec.budgets for name, spec in SPECS.items()}

#: Methods of each reproduction (the paper's tables, plus dense ProxSkip as a reference).
PAPER_METHODS = {name: spec.methods for name, spec in SPECS.items()}


def get_spec(dataset: str) -> DatasetSpec:
    """The spec of ``dataset`` (a ``ValueError`` naming the choices otherwise)."""
    if dataset not in SPECS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {sorted(SPECS)}")
    return SPECS[dataset]


def get_budget(dataset: str, budget) -> Budget:
    """The :class:`~proxfed.experiments.budgets.Budget` named ``budget`` for ``dataset`` (a Budget as is)."""
    if isinstance(budget, Budget):
        return budget
    return get_spec(dataset).budget(budget)


def with_option(flag: str) -> list:
    """The names of the specs whose ``flag`` attribute is true (``"pixels"``: who takes ``--pixels``)."""
    return [name for name, spec in SPECS.items() if getattr(spec, flag)]
