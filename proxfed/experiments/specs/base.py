"""The protocol of one dataset of the paper's reproductions: :class:`DatasetSpec`.

:func:`~proxfed.experiments.paper.reproduce` knows datasets only through their
spec: it loads the data and builds the problems (:meth:`DatasetSpec.load`),
keys the stored runs, writes the published tables the spec names and the
spec's diagnostics, all without a branch on the dataset's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..budgets import Budget

__all__ = ["DatasetSpec", "Loaded"]


@dataclass
class Loaded:
    """A spec's data and problems for one reproduction (what :meth:`DatasetSpec.load` returns).

    Attributes
    ----------
    dataset : FederatedDataset
        The full training data (with its validation and test splits).
    tune_problem, final_problem : FederatedProblem
        The problem the tuning trains on, and the one of the final runs.
    alpha_info : dict
        The chosen ``alpha`` and how (``alpha``, ``how``, maybe ``score``, ``grid``).
    data_info : dict
        Sizes and conventions recorded in ``run.json``.
    """

    dataset: object
    tune_problem: object
    final_problem: object
    alpha_info: dict
    data_info: dict


class DatasetSpec:
    """One dataset of the paper's reproductions: everything that depends on which dataset it is.

    A new dataset is one subclass in its own module of
    :mod:`proxfed.experiments.specs`, registered in ``SPECS`` there, with its
    published numbers in :mod:`proxfed.experiments.published`.

    Attributes
    ----------
    name : str
        The name of :func:`~proxfed.experiments.paper.reproduce` and of ``proxfed reproduce``.
    methods : tuple of str
        The methods of its tables (``PAPER_METHODS[name]``).
    budgets : dict
        Its named :class:`~proxfed.experiments.budgets.Budget` s (``BUDGETS[name]``).
    metric_label : str
        The test metric's name in messages and figures.
    pixels, scaling : bool
        Whether it takes the ``pixels`` and the ``scaling`` option.
    validation_alpha : bool
        Whether ``alpha="validation"`` is its choice of ``alpha``.
    appendix_d : bool
        Whether it has the Appendix D diagnostics (run by default).
    metric_table, communication_table : (str, str, str)
        File name, the paper's table and what it measures.
    loss_table : str or None
        File name of the train-loss table (None: the paper has none).
    figure : (str, str)
        File name stem and the paper's figure.
    description : str
        What ``proxfed reproduce <name>`` makes (its ``--help``).
    alpha_policy : str
        How it chooses ``alpha`` by default (for the command line's messages).
    """

    name = ""
    description = ""
    alpha_policy = ""
    methods: tuple = ()
    budgets: dict = {}
    metric_label = ""
    pixels = False
    scaling = False
    validation_alpha = False
    appendix_d = False
    metric_table = ("", "", "")
    loss_table: str | None = None
    communication_table = ("", "", "")
    figure = ("", "")

    def budget(self, budget) -> Budget:
        """The budget named ``budget`` (a :class:`~proxfed.experiments.budgets.Budget` is returned as is)."""
        if isinstance(budget, Budget):
            return budget
        if budget not in self.budgets:
            raise ValueError(f"unknown budget {budget!r}; choose from {sorted(self.budgets)}")
        return self.budgets[budget]

    def threshold_label(self, t: float) -> str:
        """A communication table's column label for metric threshold ``t``."""
        return f"≥ {t:g}"

    def load(self, data_dir, *, budget, alpha, seed, cache_dir, pixels, scaling, say) -> Loaded:
        """The data and problems of one reproduction, with ``alpha`` chosen (None: the spec's policy)."""
        raise NotImplementedError

    def key_extras(self, pixels) -> dict:
        """Options of this dataset that enter every stored run's key."""
        return {}

    def diagnostics(self, pipe, loaded: Loaded, *, data_dir, cache_dir, pixels) -> dict:
        """Write ``diagnostics/`` and return its Markdown pages by name (README order)."""
        return {}

    def run_appendix_d(self, pipe, loaded: Loaded, key) -> dict:
        """The Appendix D diagnostics (only where :attr:`appendix_d`)."""
        raise NotImplementedError(f"{self.name} has no Appendix D diagnostics")
