"""The gradient oracle of a :class:`~proxfed_dl.TorchProblem`: every client's minibatch gradient.

:func:`grad_sample` (bound as :meth:`TorchProblem.grad_sample
<proxfed_dl.TorchProblem.grad_sample>`) computes, without changing the
problem, the clients' gradients in training mode -- one ``torch.func.vmap``
call over the stacked clients or a loop, scaled, clipped and with weight
decay -- together with the BatchNorm statistics and losses the forward passes
produce; :meth:`TorchProblem.commit_statistics
<proxfed_dl.TorchProblem.commit_statistics>` stores those.
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np
import torch
from torch.func import grad as func_grad
from torch.func import vmap

from proxfed import _backend as B

__all__ = ["GradientSample", "grad_sample", "layout"]


class GradientSample(NamedTuple):
    """What one minibatch of every (run, client) gives: :meth:`TorchProblem.grad_sample`'s result.

    Attributes
    ----------
    grad : torch.Tensor, shape (..., N, P)
        The clients' stochastic gradients.
    buffers : torch.Tensor, shape (R N, n_buffers)
        The BatchNorm running statistics after the forward passes.
    loss : torch.Tensor, shape (..., N)
        The clients' minibatch losses (detached).
    lead : tuple of int
        The run axes ``W.shape[:-2]``.
    """

    grad: object
    buffers: object
    loss: object
    lead: tuple


def grad_sample(problem, W, step: int = 0) -> GradientSample:
    """The clients' minibatch gradients at ``W`` with the statistics they produce; changes nothing.

    For every client, the gradient of ``s_i`` times the mean cross-entropy
    on its minibatch (training mode), clipped to ``clip_norm``, plus
    ``weight_decay * w``. The forward passes start from the stored running
    statistics of these runs (the template's when none are stored).

    Parameters
    ----------
    W : torch.Tensor, shape (N, P) or (R, N, P)
    step : int

    Returns
    -------
    GradientSample
    """
    problem.check_iterates(W)
    lead = tuple(W.shape[:-2])
    R = int(np.prod(lead)) if lead else 1
    N, P = problem.n_clients, problem.dim
    Wf = W.reshape(R * N, P)
    Bf = problem.statistics.for_runs(lead, W.dtype)
    ac = torch.bfloat16 if problem.autocast == "bf16" else None
    fn = func_grad(problem.flat.loss_and_stats, has_aux=True)
    parts = problem.flat.split(Wf)
    if problem.batch_size is None:
        outs = []
        for m in range(R * N):
            x, y = problem.images.client_batch(int(step), m // N, m % N)
            outs.append(fn(tuple(q[m] for q in parts), Bf[m], problem.layout(x).to(W.dtype), y, ac))
    else:
        X, Y = problem.minibatch(int(step), R)
        X = problem.layout(X.to(W.dtype))
        if problem.vectorize:
            outs = None
            Gp, (newB, losses) = _vmapped(problem, fn, parts, Bf, X, Y, ac)
            G = problem.flat.join(Gp)
        else:
            outs = [fn(tuple(q[m] for q in parts), Bf[m], X[m], Y[m], ac) for m in range(R * N)]
    if outs is not None:
        G = torch.stack([problem.flat.join(o[0]) for o in outs])
        newB = torch.stack([o[1][0] for o in outs])
        losses = torch.stack([o[1][1] for o in outs])
    # in place on the fresh gradient (the same roundings); the scale moves to the device once
    G = G.to(W.dtype) if G.dtype != W.dtype else G
    G.mul_(B.device_constant(np.tile(problem.client_scale, R)[:, None], like=W))
    if problem.clip_norm is not None:
        norms = torch.linalg.vector_norm(G, dim=-1, keepdim=True)
        G.mul_(torch.clamp(problem.clip_norm / (norms + 1e-6), max=1.0))
    if problem.weight_decay:
        G.add_(problem.weight_decay * Wf)
    return GradientSample(G.reshape(W.shape), newB, losses.detach().reshape(lead + (N,)), lead)


def _vmapped(problem, fn, parts, Bf, X, Y, ac):
    """``vmap(fn)`` over the stacked clients; a channels-last layout the device's convolution library
    cannot run under ``vmap`` (cuDNN's ``EXECUTION_FAILED`` seen with bf16 autocast) falls back to
    the contiguous layout for the rest of the problem's life, with a warning."""
    call = vmap(fn, in_dims=(0, 0, 0, 0, None), chunk_size=problem.chunk_size)
    try:
        return call(parts, Bf, X, Y, ac)
    except RuntimeError as err:
        if not (problem.channels_last and "cudnn" in str(err).lower()):
            raise
        warnings.warn(f"channels-last under vmap failed on {problem.device} ({str(err).splitlines()[0]}); "
                      "continuing with the contiguous layout", UserWarning, stacklevel=4)
        problem.channels_last = False
        return call(parts, Bf, X.contiguous(), Y, ac)


def layout(problem, x):
    """``x`` in the memory layout the problem feeds the model (channels-last when asked).

    Parameters
    ----------
    x : torch.Tensor, shape (n, C, H, W) or (M, b, C, H, W)

    Returns
    -------
    torch.Tensor
    """
    if not problem.channels_last:
        return x
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    # (M, b, C, H, W): every (M, b) slice channels-last
    return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
