"""Evaluation of a :class:`~proxfed_dl.TorchProblem`'s models: losses, objective, accuracy, export.

The public functions here are :class:`~proxfed_dl.TorchProblem`'s evaluation
methods (the class binds them: ``value = evaluation.value``), kept apart from
the gradient oracle. They run in evaluation mode (no augmentation, BatchNorm
with running statistics), in chunks of ``eval_batch_size`` images, and read
only the problem's public parts: its :class:`~proxfed_dl.FlatModel`, its
images (:class:`proxfed_dl.streams.DeviceImages`) and running statistics
(:class:`proxfed_dl.buffers.RunningStatistics`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from proxfed import _backend as B
from proxfed.metrics import accuracy

__all__ = ["value", "objective", "predict", "has_split", "score", "export", "as_model", "per_sample"]


def as_model(problem, w):
    """``w`` as a model vector on ``problem``'s device, shape (P,) or (R, P).

    Parameters
    ----------
    problem : TorchProblem
    w : torch.Tensor or numpy.ndarray

    Returns
    -------
    torch.Tensor
    """
    if isinstance(w, np.ndarray):
        w = torch.as_tensor(w, device=problem.device)
    if not isinstance(w, torch.Tensor) or w.shape[-1] != problem.dim or w.ndim > 2:
        raise ValueError(f"w must have shape (P,) or (R, P) with P = {problem.dim}")
    return w


@torch.no_grad()
def per_sample(problem, w, b, X, y):
    """Per-sample cross-entropy and predicted class of model ``w`` with running statistics ``b``.

    Parameters
    ----------
    problem : TorchProblem
    w : torch.Tensor, shape (P,)
    b : torch.Tensor, shape (n_buffers,)
    X : torch.Tensor, shape (n, C, H, W)
        Stored images (prepared here).
    y : torch.Tensor of int64, shape (n,)

    Returns
    -------
    losses : torch.Tensor, shape (n,)
    predictions : torch.Tensor of int64, shape (n,)
    """
    losses, preds = [], []
    size = problem.eval_batch_size
    for lo in range(0, X.shape[0], size):
        x = problem.images.prepare(X[lo:lo + size], 0, 1, train=False, dtype=w.dtype)
        out = problem.flat.logits(w, b, problem.layout(x), train=False).to(w.dtype)
        losses.append(F.cross_entropy(out, y[lo:lo + size], reduction="none"))
        preds.append(out.argmax(dim=-1))
    return torch.cat(losses), torch.cat(preds)


@torch.no_grad()
def value(problem, W):
    """Per-client ``f_i(W[..., i, :])`` on the evaluation rows (evaluation mode), shape ``(..., N)``.

    Client ``i`` is evaluated with its own running statistics.

    Parameters
    ----------
    W : torch.Tensor, shape (..., N, P)

    Returns
    -------
    torch.Tensor, shape (..., N)
    """
    problem.check_iterates(W)
    lead = tuple(W.shape[:-2])
    N = problem.n_clients
    Wf = W.reshape(-1, N, problem.dim)
    Bf = problem.statistics.per_client(lead)
    images, scale = problem.images, problem.client_scale
    out = torch.empty(Wf.shape[:2], dtype=W.dtype, device=W.device)
    for r in range(Wf.shape[0]):
        for j in range(N):
            lo, hi = images.eval_rows(j)
            loss, _ = per_sample(problem, Wf[r, j], Bf[r, j].to(W.dtype), images.X[lo:hi], images.y[lo:hi])
            out[r, j] = loss.mean() * float(scale[j])
    reg = 0.5 * problem.weight_decay * torch.sum(W * W, dim=-1)
    return out.reshape(lead + (N,)) + reg


@torch.no_grad()
def _data_values(problem, w, b):
    """``s_i * mean loss_i`` of one model on every local client's evaluation rows, shape (N,)."""
    rows = [problem.images.eval_rows(j) for j in range(problem.n_clients)]
    losses, _ = per_sample(problem, w, b, *problem.images.eval_split())
    scale = problem.client_scale
    out, o = [], 0
    for j, (lo, hi) in enumerate(rows):
        out.append(losses[o:o + hi - lo].mean() * float(scale[j]))
        o += hi - lo
    return torch.stack(out)


@torch.no_grad()
def objective(problem, w):
    """``F(w) = (1/N) sum_i f_i(w)`` over all clients (all processes), shape ``w.shape[:-1]``.

    Evaluation mode with the client mean of the running statistics; the
    data term uses each client's evaluation rows (``eval_size``).

    Parameters
    ----------
    w : torch.Tensor, shape (P,) or (R, P)

    Returns
    -------
    torch.Tensor
    """
    w = as_model(problem, w)
    lead = tuple(w.shape[:-1])
    wf = w.reshape(-1, problem.dim)
    buf = problem.mean_buffers(lead).reshape(wf.shape[0], problem.n_buffers)
    totals = torch.stack([_data_values(problem, wf[r], buf[r].to(w.dtype)).sum() for r in range(wf.shape[0])])
    if problem.process_sum is not None:
        totals = problem.process_sum(totals)
    F_ = totals / problem.n_clients_total + 0.5 * problem.weight_decay * torch.sum(wf * wf, dim=-1)
    return F_.reshape(lead)


@torch.no_grad()
def predict(problem, w, X):
    """Predicted classes of model ``w`` for images ``X`` (evaluation mode, client-mean statistics).

    Parameters
    ----------
    w : torch.Tensor or numpy.ndarray, shape (P,)
    X : numpy.ndarray or torch.Tensor, shape (n, C, H, W)

    Returns
    -------
    numpy.ndarray of int64, shape (n,)
    """
    w = as_model(problem, w)
    X = torch.as_tensor(X, device=problem.device)
    y = torch.zeros(X.shape[0], dtype=torch.long, device=problem.device)
    _, pred = per_sample(problem, w, problem.mean_buffers(()).to(w.dtype), X, y)
    return B.to_numpy(pred)


def has_split(problem, split: str) -> bool:
    """Whether :meth:`score` can evaluate on ``split`` ("train" always; "test" when the data has one).

    Parameters
    ----------
    split : str

    Returns
    -------
    bool
    """
    return split == "train" or (split == "test" and problem.images.X_test is not None)


@torch.no_grad()
def score(problem, w, split: str = "test"):
    """Accuracy of model ``w`` on a split (evaluation mode, client-mean running statistics).

    ``"test"``: the pooled test images (the same on every process);
    ``"train"``: this problem's clients' evaluation rows.

    Parameters
    ----------
    w : torch.Tensor or numpy.ndarray, shape (P,) or (R, P)
    split : {"test", "train"}

    Returns
    -------
    float, or numpy.ndarray of shape (R,)
    """
    images = problem.images
    if split == "test":
        if images.X_test is None:
            raise ValueError("the data has no test split")
        X, y = images.X_test, images.y_test
    elif split == "train":
        X, y = images.eval_split()
    else:
        raise ValueError(f"split must be 'test' or 'train', got {split!r}")
    w = as_model(problem, w)
    lead = tuple(w.shape[:-1])
    wf = w.reshape(-1, problem.dim)
    buf = problem.mean_buffers(lead).reshape(wf.shape[0], problem.n_buffers)
    y_np = B.to_numpy(y)
    accs = [accuracy(y_np, B.to_numpy(per_sample(problem, wf[r], buf[r].to(w.dtype), X, y)[1]))
            for r in range(wf.shape[0])]
    return float(accs[0]) if not lead else np.array(accs)


def export(problem, w, module: nn.Module | None = None) -> nn.Module:
    """A module holding model ``w`` and the client-mean running statistics (for inference or saving).

    Parameters
    ----------
    w : torch.Tensor, shape (P,)
    module : torch.nn.Module, optional
        Target of the same architecture (default: a copy of the template).

    Returns
    -------
    torch.nn.Module
    """
    m = copy.deepcopy(problem.flat.module) if module is None else module
    return problem.flat.load(as_model(problem, w), problem.mean_buffers(()), m)
