"""What ``proxfed run`` and ``proxfed tune`` can run: methods (code and paper names) and datasets.

A method is named by its code name (``sparse_proxskip``, the factory in
:mod:`proxfed.algorithms`) or by its paper name (``Sparse-ProxSkip``),
case-insensitively, with ``-``, ``_`` and spaces alike; tables and figures
show paper names (:func:`paper_name`). A dataset is one of the synthetic
generators (built in) or a loader of real data (``--data-dir``), with the
problem the toolkit solves on it (:func:`load_problem`).
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass

from ..algorithms.registry import METHODS as REGISTRY
from ..algorithms.registry import UnknownName, get_method, theory_values

__all__ = [
    "Method", "METHODS", "Dataset", "DATASETS", "paper_name", "resolve_method", "resolve_dataset",
    "hyperparameters", "build_algorithm", "dataset_options", "load_problem", "theory_defaults", "UnknownName",
]


@dataclass(frozen=True)
class Method:
    """One method of the catalog.

    Attributes
    ----------
    name : str
        Code name (the factory of :mod:`proxfed.algorithms`).
    label : str
        Paper name, shown in tables and figures.
    schedule : {"random", "fixed"}
        Random coins of probability ``p``, or a communication every
        ``local_steps`` local steps.
    sparse : bool
        Takes the kept entries ``K`` (TopK); dense methods ignore the sparsity.
    rounds : bool
        A round-based sparse-training system (FedSparsify, FLASH) whose
        schedule needs the horizon in rounds.
    """

    name: str
    label: str
    schedule: str = "random"
    sparse: bool = True
    rounds: bool = False


#: Every method of ``proxfed run``: code name -> :class:`Method` (a view of the registry,
#: :data:`proxfed.algorithms.registry.METHODS`).
METHODS = {n: Method(spec.name, spec.label, spec.schedule, sparse=spec.needs_k, rounds=spec.round_based)
           for n, spec in REGISTRY.items()}


def _key(name: str) -> str:
    return "-".join(str(name).lower().replace("_", " ").replace("-", " ").split())


def resolve_method(name: str) -> str:
    """The code name of a method given by code name, paper name or alias (case-insensitive).

    >>> resolve_method("Sparse-ProxSkip"), resolve_method("FEDIHT"), resolve_method("randprox-l1")
    ('sparse_proxskip', 'fediht', 'randprox_l1')

    Raises
    ------
    UnknownName
        With the closest names and the list of choices (:func:`proxfed.algorithms.registry.get_method`).
    """
    return get_method(name).name


def paper_name(method: str) -> str:
    """The paper name of a method (its code name if it is not in the catalog).

    >>> paper_name("sparse_proxskip"), paper_name("proxskip"), paper_name("mine")
    ('Sparse-ProxSkip', 'ProxSkip', 'mine')
    """
    m = METHODS.get(method)
    return m.label if m is not None else str(method)


def hyperparameters(method: str) -> tuple:
    """The hyperparameters of ``method`` batched by ``proxfed run`` (besides ``K``).

    >>> hyperparameters("sparse_proxskip"), hyperparameters("randprox_l1"), hyperparameters("fedht")
    (('gamma', 'p'), ('gamma', 'p', 'lam'), ('gamma', 'local_steps'))
    """
    return REGISTRY[method].hyperparameter_names


def build_algorithm(method: str, params: dict, k=None, dim: int | None = None, *, rounds: int | None = None,
                    clients_per_round: int | None = None, seed: int = 0):
    """Build a catalog method on a convex problem from hyperparameters (scalars or ``(R,)`` arrays).

    Parameters
    ----------
    method : str
        A code name of :data:`METHODS`.
    params : dict
        :func:`hyperparameters` of the method: ``gamma`` with ``p`` (random
        coins, and ``lam`` for ``randprox_l1``) or ``local_steps`` (fixed schedule).
    k : int or (R,) int array, optional
        Kept entries of TopK; required for sparse methods, ignored by dense ones.
    dim : int, optional
        Model dimension; FedSparsify prunes to sparsity ``1 - k/dim`` and FLASH
        keeps density ``k/dim`` (one value for all runs).
    rounds : int, optional
        Horizon in rounds of FedSparsify and FLASH (their schedules).
    clients_per_round : int, optional
        FedSparsify and FLASH: participants per round (default all).
    seed : int
        FedSparsify and FLASH: their own randomness (participants, masks).

    Returns
    -------
    proxfed.algorithms.Algorithm

    Examples
    --------
    >>> build_algorithm("fedavg", {"gamma": [0.1, 0.2], "local_steps": 5}).n_runs
    2
    """
    spec = REGISTRY[method]
    if not spec.round_based:
        return spec.build(params, k if spec.needs_k else None)
    return spec.build(params, k, dim=dim, rounds=None if rounds is None else int(rounds),
                      clients_per_round=clients_per_round, seed=int(seed))


# ---------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dataset:
    """One dataset of the catalog.

    Attributes
    ----------
    name : str
    description : str
    problem : {"ridge", "softmax", "torch"}
        The objective solved on it.
    needs_dir : bool
        Real data, read from ``--data-dir``.
    """

    name: str
    description: str
    problem: str
    needs_dir: bool = False


#: Every dataset of ``proxfed run`` and ``proxfed tune``.
DATASETS = {d.name: d for d in (
    Dataset("synthetic", "federated sparse linear regression, ridge (make_sparse_regression)", "ridge"),
    Dataset("fedprox", "FedProx's Synthetic(alpha, beta), softmax regression (make_fedprox_synthetic)", "softmax"),
    Dataset("blogfeedback", "BlogFeedback (UCI), ridge, 554 blogs as clients", "ridge", True),
    Dataset("femnist", "FEMNIST (LEAF), softmax regression, writers as clients", "softmax", True),
    Dataset("cifar10", "CIFAR-10, ResNet18 clients (needs the dl extra: pip install 'proxfed[dl]')", "torch", True),
)}

_DATASET_ALIASES = {"sparse-regression": "synthetic", "fedprox-synthetic": "fedprox", "blog": "blogfeedback",
                    "cifar": "cifar10", "cifar-10": "cifar10"}

#: Options of the CIFAR-10 clients' problem (:class:`proxfed_dl.TorchProblem` with a ResNet18).
_CIFAR_MODEL_OPTIONS = {"width": 16, "batch_size": 32, "clip_norm": 50.0, "weight_decay": 1e-4, "augment": True,
                        "eval_size": 2000}
_LOADER_ONLY = ("path", "cache_dir", "download", "url", "sha256", "layout")


def resolve_dataset(name: str) -> str:
    """The catalog name of a dataset (case-insensitive; a few aliases).

    >>> resolve_dataset("BlogFeedback"), resolve_dataset("CIFAR-10")
    ('blogfeedback', 'cifar10')
    """
    key = _key(name)
    table = {**{_key(n): n for n in DATASETS}, **{_key(a): n for a, n in _DATASET_ALIASES.items()}}
    if key in table:
        return table[key]
    close = difflib.get_close_matches(key, list(table), n=2, cutoff=0.6)
    did = f"did you mean {' or '.join(sorted({table[c] for c in close}))}? " if close else ""
    raise UnknownName(f"unknown dataset {name!r}; {did}choose from {', '.join(DATASETS)}")


def _loader(name: str):
    from .. import data

    return {"synthetic": data.make_sparse_regression, "fedprox": data.make_fedprox_synthetic,
            "blogfeedback": data.load_blogfeedback, "femnist": data.load_femnist,
            "cifar10": data.load_cifar10}[name]


def dataset_options(name: str) -> dict:
    """The options of dataset ``name`` (``--data-option KEY=VALUE``) with their defaults.

    The keyword arguments of its generator or loader (and, for CIFAR-10, of
    the clients' network and minibatches), without the file arguments.

    >>> sorted(dataset_options("blogfeedback"))
    ['bias', 'scale', 'scaling', 'seed', 'validation_fraction']
    """
    sig = inspect.signature(_loader(name))
    out = {p.name: p.default for p in sig.parameters.values()
           if p.name not in _LOADER_ONLY and p.default is not inspect.Parameter.empty}
    if name == "femnist":
        out.update(n_writers=100, invert=True)  # the paper's 100 writers, MNIST's convention (as reproduce)
    if name == "cifar10":
        out.update(_CIFAR_MODEL_OPTIONS)
    return out


def load_problem(name: str, data_dir=None, options: dict | None = None, alpha: float | None = None,
                 cache_dir=None, device=None):
    """Load dataset ``name`` and build the problem that ``proxfed run`` solves on it.

    Parameters
    ----------
    name : str
        A key of :data:`DATASETS`.
    data_dir : path-like, optional
        Real data: the dataset's folder (or a folder containing it).
    options : dict, optional
        :func:`dataset_options` to override.
    alpha : float, optional
        Regularization of the convex objectives (default: 10 on the synthetic
        regression, on BlogFeedback the reproductions' choice on the validation
        split (:func:`~proxfed.experiments.paper.choose_ridge_alpha`, 1 on the
        UCI files), ``1/n`` for softmax regression).
    cache_dir : path-like, optional
        Cache of the parsed real data.
    device : str, optional
        CIFAR-10: the torch device (default ``"cuda"`` when available).

    Returns
    -------
    (problem, info) : FederatedProblem and dict
        ``info``: dataset, n_clients, n_train, dim, alpha, metric (the test
        metric's name).
    """
    from ..problems import Ridge, SoftmaxRegression

    spec = DATASETS[name]
    allowed = dataset_options(name)
    opts = dict(options or {})
    unknown = [k for k in opts if k not in allowed]
    if unknown:
        raise UnknownName(f"unknown option {unknown[0]!r} of dataset {name}; choose from {', '.join(sorted(allowed))}")
    if name == "cifar10":
        return _cifar10_problem(data_dir, {**allowed, **opts}, device)
    kwargs = dict(opts)
    if name == "femnist":
        kwargs = {"n_writers": 100, "invert": True, **kwargs}
    if spec.needs_dir:
        from ._common import data_folder

        kwargs["cache_dir"] = cache_dir
        dataset = _loader(name)(data_folder(data_dir, name), **kwargs)
    else:
        dataset = _loader(name)(**kwargs)
    if spec.problem == "ridge":
        if alpha is None and name == "blogfeedback":  # the reproductions' protocol: chosen on validation
            from .paper import choose_ridge_alpha
            from .published import PUBLISHED
            from ..prox import sparsity_to_k

            alpha = choose_ridge_alpha(dataset, [sparsity_to_k(dataset.n_features, s)
                                                 for s in PUBLISHED["blogfeedback"]["sparsities"]])["alpha"]
        alpha = 10.0 if alpha is None else float(alpha)
        problem = Ridge(dataset, alpha=alpha)
        metric = "R²"
    else:
        alpha = 1.0 / dataset.n_samples if alpha is None else float(alpha)
        problem = SoftmaxRegression(dataset, alpha=alpha)
        metric = "accuracy"
    info = {"dataset": name, "name": dataset.name, "options": opts, "n_clients": dataset.n_clients,
            "n_train": dataset.n_samples, "dim": problem.dim, "alpha": alpha, "problem": type(problem).__name__,
            "metric": metric, "has_validation": dataset.validation is not None,
            **({"data_dir": str(data_dir)} if spec.needs_dir else {})}
    return problem, info


def _cifar10_problem(data_dir, opts: dict, device):
    """CIFAR-10 clients (:func:`proxfed_dl.cifar10_clients`) training a ResNet18 (:class:`proxfed_dl.TorchProblem`)."""
    import torch
    from proxfed_dl import TorchProblem, cifar10_clients, resnet18

    model = {k: opts.pop(k) for k in list(_CIFAR_MODEL_OPTIONS)}
    data = cifar10_clients(data_dir, **opts)
    width = int(model.pop("width"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    problem = TorchProblem(data, lambda: resnet18(10, width=width), seed=int(opts.get("seed", 0)), device=device,
                           **model)
    info = {"dataset": "cifar10", "name": "cifar10", "data_dir": str(data_dir), "options": {**opts, **model, "width": width},
            "n_clients": data.n_clients, "n_train": data.n_samples, "dim": problem.dim, "alpha": None,
            "problem": "TorchProblem", "metric": "accuracy", "has_validation": False, "device": str(device)}
    return problem, info


def theory_defaults(problem) -> dict:
    """``gamma = 1/L`` and ``p = 1/sqrt(kappa)`` (local steps ``round(1/p)``) of a convex problem.

    ``lam_max = ||grad F(0)||_inf`` is RandProx-l1's scale (its default
    weight is ``0.03 lam_max``, as in the demo): :func:`proxfed.algorithms.registry.theory_values`.
    """
    return theory_values(problem)
