"""proxfed: communication-efficient sparse federated optimization.

ProxSkip/Scaffnew, RandProx and the Sparse-ProxSkip family of
Meinhardt, Yi, Condat and Richtarik, with FedAvg, FedHT, FedIHT and
SCAFFOLD as baselines, over NumPy, CuPy, torch or any Array API library.
"""

__version__ = "0.1.0"

from . import algorithms, comm, metrics, problems, prox, theory
from .algorithms import State
from .comm import CommModel
from .data import FederatedDataset, Split
from .round_runner import run_rounds
from .runner import RunResult, load_state, run
from .memory import keep_freed_memory
from .threads import blas_threads

__all__ = [
    "FederatedDataset",
    "Split",
    "CommModel",
    "State",
    "RunResult",
    "run",
    "run_rounds",
    "load_state",
    "blas_threads",
    "keep_freed_memory",
    "algorithms",
    "comm",
    "metrics",
    "problems",
    "prox",
    "theory",
]
