"""The paper's CIFAR-10 experiment (Figure 4): ResNet18 clients, server pruning against client pruning.

``proxfed reproduce cifar10 --data-dir DIR --budget smoke|small|paper`` calls
:func:`reproduce_cifar10`. The protocol (EXPERIMENTS.md, "CIFAR-10"):
N = 10 clients from FedLab's unbalanced Dirichlet split (alpha = 0.3,
sigma = 0.3, :func:`proxfed_dl.cifar10_clients`), full participation, the
CIFAR ResNet18 (:func:`proxfed_dl.resnet18`), minibatch SGD with weight
decay 1e-4 added to the gradient, clipping by norm, random crop (padding
4) + horizontal flip + normalization, a fixed schedule of ``local_steps``
local steps per communication (p = 1/local_steps), 90 % sparsity with TopK
over all trainable parameters, BatchNorm statistics averaged at every
communication, evaluation of the pruned model on the test images.

The paper tunes the local steps in {8, ..., 256}, the batch in {32, 64} and
the clipping value in [10, 200]; :data:`CIFAR10_BUDGETS` fixes one value of
each inside those ranges instead (no search: a ResNet18 search is GPU
work). ``smoke`` checks the pipeline in a minute on a CPU (a width-4
network, a few rounds, a test subset) and is not a reproduction; ``paper``
follows the protocol's 500 rounds with the full-width network.

The results directory holds ``run.json`` (budget, machine, command,
timings), ``cifar10.json`` (histories), ``cifar10.md`` (final numbers) and
``cifar10.png`` (test accuracy, training loss and ``||sum_i h_i||``).
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .data import cifar10_clients
from .devices import normalize_device
from .experiments import FEMNIST_METHODS, run_methods, write_results
from .models import resnet18
from .problem import TorchProblem

__all__ = ["CifarBudget", "CIFAR10_BUDGETS", "CIFAR10_METHODS", "reproduce_cifar10"]

#: Methods of Figure 4's comparison (FedAvg and FedIHT with TopK at evaluation).
CIFAR10_METHODS = FEMNIST_METHODS


@dataclass(frozen=True)
class CifarBudget:
    """Size of a CIFAR-10 reproduction.

    Attributes
    ----------
    name : str
    rounds : int
        Communications per method (the paper: 500).
    local_steps : int
        ``1/p`` (the paper's range: 8 to 256).
    batch_size : int
        (the paper: 32 or 64).
    clip_norm : float
        (the paper: log-uniform in [10, 200]).
    gamma : float
        SGD stepsize.
    width : int
        ResNet18 base width (64 is the standard network, 11.2 M parameters).
    eval_size : int or None
        Training images per client in the recorded training loss (None: all);
        the test accuracy always uses the 10,000 test images.
    records : int
        History records per run.
    """

    name: str
    rounds: int
    local_steps: int
    batch_size: int
    clip_norm: float
    gamma: float
    width: int
    eval_size: int | None
    records: int


#: ``smoke``: minutes on a CPU, checks the pipeline (not a reproduction); ``small``: a reduced network and
#: horizon; ``paper``: the protocol's 500 rounds with the standard ResNet18 (a GPU job).
CIFAR10_BUDGETS = {
    "smoke": CifarBudget("smoke", rounds=3, local_steps=2, batch_size=8, clip_norm=50.0, gamma=0.05, width=4,
                         eval_size=200, records=3),
    "small": CifarBudget("small", rounds=60, local_steps=8, batch_size=32, clip_norm=50.0, gamma=0.05, width=16,
                         eval_size=2000, records=30),
    "paper": CifarBudget("paper", rounds=500, local_steps=16, batch_size=64, clip_norm=50.0, gamma=0.05, width=64,
                         eval_size=None, records=100),
}


def reproduce_cifar10(data_dir, out_dir=None, *, budget="smoke", methods=CIFAR10_METHODS, sparsity: float = 0.9,
                      seed: int = 0, device=None, autocast: str | None = None, channels_last: bool = False,
                      progress: bool = True, echo=print) -> dict:
    """Run the CIFAR-10 comparison (Figure 4) and write its results directory.

    Parameters
    ----------
    data_dir : str or path-like
        The python-pickle batches (``cifar-10-batches-py``), the
        ``.tar.gz``, or a folder containing either (as
        :func:`proxfed.data.read_cifar10`).
    out_dir : str or path-like, optional
        Default ``proxfed-results/cifar10-<budget>``.
    budget : {"smoke", "small", "paper"} or CifarBudget
    methods : sequence of str
        Names for :func:`proxfed_dl.make_algorithm`.
    sparsity : float
    seed : int
        Split, initial model, minibatches and augmentation.
    device : str or torch.device, optional
        Default ``"cuda"`` when available, else ``"cpu"``.
    autocast : {None, "bf16"}
    channels_last : bool
    progress : bool
    echo : callable

    Returns
    -------
    dict
        ``{"config", "rows", "history", "out_dir", "seconds"}``.
    """
    b = CIFAR10_BUDGETS.get(budget) if isinstance(budget, str) else budget
    if not isinstance(b, CifarBudget):
        raise ValueError(f"unknown budget {budget!r}; choose from {sorted(CIFAR10_BUDGETS)}")
    if not 0 < sparsity < 1:
        raise ValueError(f"sparsity must be in (0, 1), got {sparsity!r}")
    from .algorithms import ALGORITHMS

    bad = [m for m in methods if m not in ALGORITHMS]
    if bad:
        raise ValueError(f"unknown methods {bad}; choose from {ALGORITHMS}")
    device = normalize_device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(out_dir if out_dir is not None else f"proxfed-results/cifar10-{b.name}")
    t0 = time.perf_counter()
    data = cifar10_clients(data_dir, n_clients=10, alpha=0.3, sigma=0.3, seed=seed)  # validates the files
    out.mkdir(parents=True, exist_ok=True)
    iterations = b.rounds * b.local_steps
    config = {"dataset": "cifar10", "budget": asdict(b), "is_reproduction_budget": b.name == "paper",
              "n_clients": data.n_clients, "client_sizes": data.client_sizes.tolist(), "n_train": data.n_samples,
              "n_test": int(data.test[0].shape[0]), "sparsity": sparsity, "iterations": iterations,
              "gamma": b.gamma, "local_steps": b.local_steps, "batch_size": b.batch_size, "clip_norm": b.clip_norm,
              "weight_decay": 1e-4, "seed": seed, "every": max(1, iterations // b.records), "schedule": "fixed",
              "device": str(device), "autocast": autocast, "torch_threads": torch.get_num_threads(),
              "machine": {"platform": platform.platform(), "processor": platform.processor(),
                          "python": platform.python_version(), "torch": torch.__version__},
              "command": f"proxfed reproduce cifar10 --data-dir DIR --budget {b.name}",
              "caption": (f"CIFAR-10, 10 clients (unbalanced Dirichlet alpha = 0.3, sigma = 0.3), ResNet18 width "
                          f"{b.width}, augmentation, budget {b.name}"
                          + ("" if b.name == "paper" else " (NOT a reproduction budget)"))}
    echo(f"[cifar10/{b.name}] {data.n_samples} training images over 10 clients, {len(methods)} methods x "
         f"{b.rounds} rounds x {b.local_steps} local steps on {device}")
    (out / "run.json").write_text(json.dumps({**config, "status": "running"}, indent=1))
    rows, histories = run_methods(
        lambda: TorchProblem(data, lambda: resnet18(10, width=b.width), batch_size=b.batch_size,
                             clip_norm=b.clip_norm, weight_decay=1e-4, augment=True, seed=seed, device=device,
                             eval_size=b.eval_size, autocast=autocast, channels_last=channels_last),
        methods, config, progress=progress)
    result = {"config": config, "rows": rows, "history": histories}
    write_results(result, out, "cifar10")
    seconds = time.perf_counter() - t0
    (out / "run.json").write_text(json.dumps({**config, "status": "completed", "seconds": seconds}, indent=1))
    for r in rows:
        echo(f"  {r['label']}: test accuracy {r['test_accuracy']:.3f} (best {r['best_test_accuracy']:.3f}), "
             f"||sum h|| {r['sum_h_norm']:.2e}, {r['wall_s']:.0f} s")
    return {**result, "out_dir": out, "seconds": seconds}
