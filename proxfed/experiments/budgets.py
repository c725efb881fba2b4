"""The budgets of the paper's reproductions: how much work :func:`~proxfed.experiments.paper.reproduce` does.

Each dataset's named budgets live in its spec (:mod:`proxfed.experiments.specs`);
``BUDGETS`` and ``get_budget`` there (and in :mod:`proxfed.experiments.paper`) look them up.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Budget", "CHOICE_ONLY", "DRIVERS", "REPORT_ONLY"]

#: Budget fields that change only what is reported, not any run (not part of the stored runs' key).
REPORT_ONLY = ("extra_thresholds", "reference_iterations")
#: Budget fields that change which configuration of a stored search is chosen, not the search
#: (not part of the searches' key; the final runs' keys hold the chosen hyperparameters).
CHOICE_ONLY = ("gamma_choice_max",)

#: The budgets' run drivers (:attr:`Budget.driver`).
DRIVERS = ("auto", "exact", "run")


@dataclass(frozen=True)
class Budget:
    """How much work a reproduction does: horizons, seeds and search sizes.

    Attributes
    ----------
    name : str
    communications : int
        Horizon of the final runs, in communications.
    seeds : int
        Final runs per method and sparsity (batched).
    tune_communications : int
        Horizon of every tuning run, in communications.
    n_stage1, n_stage2 : int
        Configurations of the wide and the narrow search stage.
    narrow : float
        Width of the narrow box relative to the wide one (log space).
    gamma_range : (float, float)
        Stepsizes searched, in units of ``1/L`` (``L = max_i L_i``).
    p_range : (float, float)
        Communication probabilities searched (local steps ``1/p`` for FedHT/FedIHT).
    lam_range : (float, float)
        RandProx-l1 weights searched, in units of ``lam_max = ||grad F(0)||_inf``.
    records : int
        History records of a final run.
    tune_records : int
        History records of a tuning run.
    tune_sparsities : tuple of float or None
        Sparsities that are tuned (None: all); the others reuse the nearest.
    max_iterations : int or None
        Cap on the local steps of any run by :func:`proxfed.run` (runs by
        :func:`proxfed.run_rounds` make exactly the horizon's communications).
    alpha_grid : tuple of float or None
        FEMNIST: values of ``alpha`` compared on the hold-out (None: ``1/n``).
    alpha_iterations : int
        L-BFGS iterations of each dense fit in the ``alpha`` comparison.
    holdout_fraction : float
        FEMNIST: share of each writer's training images held out for validation.
    extra_thresholds : tuple of float or None
        Additional metric thresholds for a second communication table (a short
        budget may reach none of the paper's); they do not change any run.
    reference_iterations : int
        FEMNIST: L-BFGS iterations of each dense centralized fit on the full
        training set: the two of ``diagnostics/dense_reference.md`` (the
        paper's 85.4% reference, under both pixel conventions) and the
        ``len(FEMNIST_CHECK_ALPHAS)`` more of ``diagnostics/alpha_check.md``
        (each alpha but the runs'); it changes no run.
    gamma_choice_max : float or None
        Largest stepsize the choice may take, in units of ``1/L``: each method
        and sparsity gets the best configuration of its search with
        ``gamma <= gamma_choice_max / L`` (None: the search's best). The search
        is unchanged. ``2`` keeps every client's local gradient step
        non-expansive (``|1 - gamma L_i| <= 1``); beyond it, a stretch of local
        steps without communication grows the stiffest client's error
        geometrically, which a search at a short horizon rarely sees but a long
        final run does (BlogFeedback, issue 20: ``gamma = 2.06/L``, the best of
        Final-TopK's search at 95% after 10^3 communications, blew up in 4 of 5
        seeds over 10^4).
    driver : {"auto", "exact", "run"}
        ``"auto"``: runs of methods with a closed-form local phase (ridge,
        dense local steps) go through :func:`proxfed.run_rounds` and make
        exactly the horizon's communications; the others go through
        :func:`proxfed.run` for the expected number of local steps.
        ``"exact"``: as ``"auto"``, but the others stop each seed at its own
        last communication of the horizon (:func:`proxfed.run` with
        ``communications``), so every run of every method makes exactly the
        horizon's communications (tuning runs too).
        ``"run"``: every run through :func:`proxfed.run` for the expected
        number of local steps (how the ``quick`` results were made).
    """

    name: str
    communications: int
    seeds: int
    tune_communications: int
    n_stage1: int
    n_stage2: int
    narrow: float = 0.25
    gamma_range: tuple = (0.05, 3.0)
    p_range: tuple = (0.02, 1.0)
    lam_range: tuple = (1e-4, 0.3)
    records: int = 200
    tune_records: int = 50
    tune_sparsities: tuple | None = None
    max_iterations: int | None = None
    alpha_grid: tuple | None = None
    alpha_iterations: int = 200
    holdout_fraction: float = 0.1
    extra_thresholds: tuple | None = None
    driver: str = "auto"
    reference_iterations: int = 500
    gamma_choice_max: float | None = None

    def with_driver(self, driver: str | None) -> "Budget":
        """This budget with another ``driver`` (None: unchanged); its runs are new ones."""
        from dataclasses import replace

        return self if driver is None or driver == self.driver else replace(self, driver=driver)

    def __post_init__(self):
        if self.driver not in DRIVERS:
            raise ValueError(f"driver must be one of {', '.join(map(repr, DRIVERS))}, got {self.driver!r}")
        if isinstance(self.reference_iterations, bool) or not isinstance(self.reference_iterations, int) \
                or self.reference_iterations < 1:
            raise ValueError(f"reference_iterations must be a positive integer, got {self.reference_iterations!r}")
        cap = self.gamma_choice_max
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float)) or not cap > 0):
            raise ValueError(f"gamma_choice_max must be a positive number or None, got {cap!r}")
