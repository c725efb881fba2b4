"""The method registry: the one place where method names map to constructors.

Every named method is one :class:`MethodSpec`: its code name, the name the
paper prints, further spellings, a factory with one calling convention
(``factory(**hyperparameters, k=None, **options)``), its hyperparameters
with their search ranges (in the units :mod:`proxfed.tune` uses), whether
it needs the kept entries ``K``, its theory defaults on a problem, and what
it can do (closed-form local phases, round-based horizon). :mod:`proxfed.tune`,
the demo, the paper reproductions, ``proxfed run`` (:mod:`proxfed.experiments.catalog`)
and :func:`proxfed_dl.make_algorithm` all look methods up here.

Adding an Algorithm-1 variant is one factory over :class:`~proxfed.algorithms.Algorithm1`
(placements as data) and one entry in :data:`METHODS`.

Examples
--------
>>> from proxfed.algorithms.registry import get_method
>>> spec = get_method("Sparse-ProxSkip")
>>> spec.name, spec.hyperparameter_names, spec.needs_k
('sparse_proxskip', ('gamma', 'p'), True)
>>> spec.build({"gamma": 0.1, "p": 0.2}, k=5).uplink
TopK(k=5, d=None)
>>> get_method("SPS-local").label
'Sparse-ProxSkip-Local'
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import _backend as B
from ..comm import CommModel
from ..prox import TopK
from . import baselines, fedsparsify, flash, meta
from .base import Algorithm

__all__ = ["Hyperparameter", "MethodSpec", "METHODS", "get_method", "UnknownName", "GAMMA_RANGE", "P_RANGE",
           "LAM_RANGE", "RANDPROX_LAMBDA_FRACTION", "lam_max", "theory_values"]

#: Default wide search range of the stepsize, in units of ``1/L`` (``L = max_i L_i``).
GAMMA_RANGE = (0.05, 3.0)
#: Default wide search range of the communication probability ``p`` (local steps ``1/p`` on a fixed schedule).
P_RANGE = (0.02, 1.0)
#: Default wide search range of RandProx-l1's weight, in units of :func:`lam_max`.
LAM_RANGE = (1e-4, 0.3)
#: RandProx-l1's default weight as a fraction of :func:`lam_max` (a fixed heuristic, not tuned).
RANDPROX_LAMBDA_FRACTION = 0.03


class UnknownName(ValueError):
    """A method or dataset name that is not in the catalog (the message lists the choices)."""


@dataclass(frozen=True)
class Hyperparameter:
    """One hyperparameter of a method and its default wide search range.

    Attributes
    ----------
    name : {"gamma", "p", "local_steps", "lam"}
    low, high : float
        The range in units of ``unit``.
    unit : str
        ``"1/L"`` (stepsize), ``"1"`` (probability), ``"1/p"`` (local steps:
        the integers ``round(1/high_p) .. round(1/low_p)`` of the ``p`` range)
        or ``"lam_max"`` (:func:`lam_max`).
    integer : bool
    """

    name: str
    low: float
    high: float
    unit: str = "1"
    integer: bool = False


GAMMA = Hyperparameter("gamma", *GAMMA_RANGE, unit="1/L")
P = Hyperparameter("p", *P_RANGE)
LOCAL_STEPS = Hyperparameter("local_steps", *P_RANGE, unit="1/p", integer=True)
LAM = Hyperparameter("lam", *LAM_RANGE, unit="lam_max")


def lam_max(problem) -> float:
    """``||grad F(0)||_inf``: the smallest l1 weight whose solution is ``w = 0`` (RandProx-l1's scale)."""
    return float(np.max(np.abs(B.to_numpy(problem.full_grad(np.zeros(problem.dim))))))


def theory_values(problem, p_range=None) -> dict:
    """Theory hyperparameters of a convex problem, for every method.

    ``gamma = 1/L`` and ``p = 1/sqrt(kappa)`` (:func:`proxfed.theory.proxskip_parameters`;
    ``p`` clipped to ``p_range`` when given), ``local_steps = round(1/p)``
    (at least 1) and ``lam = RANDPROX_LAMBDA_FRACTION * lam_max``, plus ``L``,
    ``mu`` and ``kappa``.
    """
    from ..theory import proxskip_parameters

    th = proxskip_parameters(problem)
    p = th["p"] if p_range is None else float(np.clip(th["p"], *p_range))
    return {"gamma": th["gamma"], "p": p, "local_steps": max(1, int(round(1 / p))),
            "lam": RANDPROX_LAMBDA_FRACTION * lam_max(problem), "L": th["L"], "mu": th["mu"], "kappa": th["kappa"]}


def _per_run(values, dtype=float):
    a = np.asarray(values, dtype=dtype)
    return a.item() if a.ndim == 0 else a


def _one_k(k):
    """``k`` as one integer when all its entries are equal (TopK then uses a partial selection)."""
    k_arr = np.asarray(k, dtype=np.int64)
    return int(k_arr.ravel()[0]) if k_arr.ndim == 0 or np.all(k_arr == k_arr.ravel()[0]) else k_arr


@dataclass(frozen=True)
class MethodSpec:
    """One named method.

    Attributes
    ----------
    name : str
        Code name (the factory of :mod:`proxfed.algorithms`, the ``name`` of the built rule).
    label : str
        Paper name, shown in tables and figures.
    factory : callable
        ``factory(**hyperparameters, k=None, **options) -> Algorithm``.
    hyperparameters : tuple of Hyperparameter
        What is tuned (besides ``K``), with the default wide search ranges.
    aliases : tuple of str
        Further spellings accepted by :func:`get_method`.
    table_label : str, optional
        The label of the paper's tables where it differs from ``label``.
    needs_k : bool
        The method prunes to ``K`` kept entries (dense methods ignore the sparsity).
    schedule : {"random", "fixed"}
        Random coins of probability ``p``, or a communication every ``local_steps`` steps.
    round_based : bool
        A round-based sparse-training system (FedSparsify, FLASH): it needs
        the horizon in rounds and one sparsity for all runs.
    closed_form : bool
        Its local phases are dense gradient steps (default options), which
        :func:`proxfed.run_rounds` jumps in closed form on suitable problems.
    tunable : bool
        Searched by :func:`proxfed.tune.tune_method` (the paper's methods).
    demo : {None, "main", "sparse_training"}
        Run by the demo (always, or with ``--methods``).
    family : {"algorithm1", "baseline", "fedsparsify", "flash"}
        The rule it builds: an :class:`~proxfed.algorithms.Algorithm1` variant,
        FedAvg/FedHT/SCAFFOLD, :class:`~proxfed.algorithms.FedSparsify` (option
        ``prunable``) or :class:`~proxfed.algorithms.Flash` (option ``layers``).
    """

    name: str
    label: str
    factory: Callable[..., Algorithm]
    hyperparameters: tuple
    aliases: tuple = ()
    table_label: str | None = None
    needs_k: bool = True
    schedule: str = "random"
    round_based: bool = False
    closed_form: bool = True
    tunable: bool = False
    demo: str | None = None
    family: str = "algorithm1"

    @property
    def hyperparameter_names(self) -> tuple:
        """The names of :attr:`hyperparameters`, e.g. ``("gamma", "p")``."""
        return tuple(h.name for h in self.hyperparameters)

    def accepts(self, option: str) -> bool:
        """Whether :attr:`factory` takes the keyword ``option`` (e.g. ``grad_at``, ``make_topk``)."""
        params = inspect.signature(self.factory).parameters
        return option in params or any(p.kind is p.VAR_KEYWORD for p in params.values())

    def build(self, params: dict, k=None, **options) -> Algorithm:
        """The method from hyperparameters (scalars, or ``(R,)`` arrays for a batched run).

        Parameters
        ----------
        params : dict
            At least :attr:`hyperparameter_names` (others are ignored).
        k : int or (R,) int array, optional
            Kept entries of TopK; required where :attr:`needs_k` (round-based
            methods also take ``dim``, or ``sparsity`` / ``density``, as options).
            An array whose entries are all equal is passed as one integer.
        **options
            Passed on to :attr:`factory`.
        """
        missing = [n for n in self.hyperparameter_names if n not in params]
        if missing:
            raise ValueError(f"{self.name} needs hyperparameters {missing}")
        values = {h.name: _per_run(params[h.name], np.int64 if h.integer else float) for h in self.hyperparameters}
        if k is not None:
            k = _one_k(k)
        elif self.needs_k and not self.round_based:
            raise ValueError(f"{self.name} needs k")
        return self.factory(**values, k=k, **options)

    def theory(self, problem=None, p_range=None, values: dict | None = None) -> dict:
        """The theory hyperparameters of this method (:func:`theory_values`, or the given ``values``)."""
        values = theory_values(problem, p_range) if values is None else values
        return {n: values[n] for n in self.hyperparameter_names}


# ---------------------------------------------------------------------------------------------
# factories with the registry's calling convention
# ---------------------------------------------------------------------------------------------
def _proxskip(gamma, p, k=None, *, schedule="random", comm=CommModel()):
    """:func:`~proxfed.algorithms.proxskip` (dense: ``k`` is ignored)."""
    return meta.proxskip(gamma, p, schedule=schedule, comm=comm)


def _randprox_l1(gamma, p, lam, k=None, *, schedule="random", comm=CommModel(), make_topk=TopK):
    """:func:`~proxfed.algorithms.randprox_l1`."""
    return meta.randprox_l1(gamma, p, lam, k, schedule=schedule, comm=comm, make_topk=make_topk)


def _scaffold(gamma, local_steps, k=None, *, comm=CommModel()):
    """:func:`~proxfed.algorithms.scaffold` (dense: ``k`` is ignored)."""
    return baselines.scaffold(gamma, local_steps, comm=comm)


def _round_based(name: str, core, sparse: bool):
    """A FedSparsify (``sparse``: final sparsity) or FLASH (density) factory over ``k`` and ``dim``."""

    def factory(gamma, local_steps, k=None, *, dim=None, sparsity=None, density=None, rounds=None, **options):
        if rounds is None or (sparsity is None and density is None and (k is None or dim is None)):
            raise ValueError(f"{name} needs rounds, k and dim")
        if sparsity is None and density is None:
            ks = np.unique(np.asarray(k, dtype=np.int64))
            if ks.size != 1:
                raise ValueError(f"{name} takes one sparsity for all runs, got K = {ks.tolist()}")
            density = int(ks[0]) / int(dim)
        if sparse:
            level = sparsity if sparsity is not None else 1.0 - density
        else:
            level = density if density is not None else 1.0 - sparsity
        return core(gamma, local_steps, level, rounds, **options)

    factory.__name__ = factory.__qualname__ = f"_{name}"
    factory.__doc__ = f"{name} with the sparsity from ``k / dim`` (or ``sparsity`` / ``density``)."
    return factory


def _methods(*specs) -> dict:
    return {s.name: s for s in specs}


_A1 = (GAMMA, P)
_FIXED = (GAMMA, LOCAL_STEPS)

#: Every named method: code name -> :class:`MethodSpec` (the order of ``proxfed run``'s listing).
METHODS = _methods(
    MethodSpec("proxskip", "ProxSkip", _proxskip, _A1, table_label="ProxSkip (dense, reference)", needs_k=False,
               tunable=True, demo="main"),
    MethodSpec("final_topk", "Final-TopK", meta.final_topk, _A1, tunable=True, demo="main"),
    MethodSpec("sparse_proxskip", "Sparse-ProxSkip", meta.sparse_proxskip, _A1, aliases=("sps",), tunable=True,
               demo="main"),
    MethodSpec("sparse_proxskip_local", "Sparse-ProxSkip-Local", meta.sparse_proxskip_local, _A1,
               aliases=("sps-local",), closed_form=False, tunable=True, demo="main"),
    MethodSpec("accelerated_server_pruning", "Accelerated-Server-Pruning", meta.accelerated_server_pruning, _A1,
               aliases=("asp",), tunable=True, demo="main"),
    MethodSpec("asp_modified", "ASP-modified", meta.asp_modified, _A1, tunable=True, demo="main"),
    MethodSpec("sps_modified", "SPS-modified", meta.sps_modified, _A1, tunable=True, demo="main"),
    MethodSpec("randprox_l1", "RandProx-l1", _randprox_l1, _A1 + (LAM,), closed_form=False, tunable=True,
               demo="main"),
    MethodSpec("sps_bidirectional", "Sparse-ProxSkip-Bidirectional", meta.sps_bidirectional, _A1,
               aliases=("sps-bidirectional", "sps-bi"), tunable=True),
    MethodSpec("fedavg", "FedAvg", baselines.fedavg, _FIXED, needs_k=False, schedule="fixed", family="baseline"),
    MethodSpec("fedht", "FedHT", baselines.fedht, _FIXED, schedule="fixed", tunable=True, demo="main",
               family="baseline"),
    MethodSpec("fediht", "FedIHT", baselines.fediht, _FIXED, schedule="fixed", closed_form=False, tunable=True,
               demo="main", family="baseline"),
    MethodSpec("scaffold", "SCAFFOLD", _scaffold, _FIXED, needs_k=False, schedule="fixed", family="baseline"),
    *(MethodSpec(name or core.__name__, label, _round_based(name or core.__name__, core, sparse), _FIXED,
                 aliases=aliases, schedule="fixed", round_based=True, closed_form=False, demo=demo,
                 family="fedsparsify" if sparse else "flash")
      for name, label, core, sparse, aliases, demo in (
          (None, "FedSparsify-Global", fedsparsify.fedsparsify_global, True, ("fedsparsify",), "sparse_training"),
          (None, "FedSparsify-Local", fedsparsify.fedsparsify_local, True, (), "sparse_training"),
          (None, "Random-Pruning", fedsparsify.random_pruning, True, (), "sparse_training"),
          ("oneshot", "OneShot", fedsparsify.oneshot_pruning, True, (), None),
          (None, "PDST", flash.pdst, False, (), "sparse_training"),
          (None, "SPDST", flash.spdst, False, (), "sparse_training"),
          (None, "JMWST", flash.jmwst, False, ("flash",), "sparse_training"),
          (None, "hetero-FLASH", flash.hetero_flash, False, (), None),
      )),
)


def _key(name: str) -> str:
    return "-".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def _lookup_table() -> dict:
    table = {}
    for s in METHODS.values():
        for spelling in (s.name, s.label, s.table_label, *s.aliases):
            if spelling:
                table[_key(spelling)] = s.name
    return table


_LOOKUP = _lookup_table()


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of a code name, paper name or alias (case-insensitive; ``-``, ``_``, spaces alike).

    >>> get_method("FEDIHT").name, get_method("randprox-l1").name, get_method("ProxSkip (dense, reference)").name
    ('fediht', 'randprox_l1', 'proxskip')

    Raises
    ------
    UnknownName
        With the closest names and the list of choices.
    """
    code = _LOOKUP.get(_key(name))
    if code is not None:
        return METHODS[code]
    close = difflib.get_close_matches(_key(name), list(_LOOKUP), n=3, cutoff=0.6)
    hint = sorted({_LOOKUP[c] for c in close}, key=list(METHODS).index)
    did = f"did you mean {' or '.join(f'{h} ({METHODS[h].label})' for h in hint)}? " if hint else ""
    raise UnknownName(f"unknown method {name!r}; {did}choose from {', '.join(METHODS)} (or their paper names)")
