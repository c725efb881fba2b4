"""Plain per-client reference implementations, written from ALGORITHMS.md.

This module is the project's permanent plain reference (DESIGN.md, "Exactness
first"): every fast, batched path of the package is tested against it on small
instances. It deliberately uses only NumPy on the host, one client at a time,
with Python loops, and never calls the package's fast code. Keep it small and
obviously correct rather than fast.

Sections follow ALGORITHMS.md: operators (section 0), objectives (section 8),
Algorithm 1 and its variants (sections 1 to 3), FedAvg / FedHT / FedIHT
(section 4) and SCAFFOLD option II (section 5).
"""

from __future__ import annotations

import numpy as np

BITS_PER_VALUE = 32  # section 0: 32 bits per transmitted non-zero, no index cost, per client


# -- section 0: operators --------------------------------------------------------------


def topk(v, k):
    """Keep the ``k`` entries of largest ``|v_j|``; ties go to the lowest index."""
    v = np.asarray(v, dtype=np.float64)
    keep = np.argsort(-np.abs(v), kind="stable")[:k]
    out = np.zeros_like(v)
    out[keep] = v[keep]
    return out


def topk_mask(v, k):
    """Boolean mask of the entries :func:`topk` keeps."""
    keep = np.argsort(-np.abs(np.asarray(v)), kind="stable")[:k]
    mask = np.zeros(np.shape(v), dtype=bool)
    mask[keep] = True
    return mask


def soft(v, tau):
    """``sign(v) * max(|v| - tau, 0)``."""
    v = np.asarray(v, dtype=np.float64)
    return np.sign(v) * np.maximum(np.abs(v) - tau, 0.0)


def bits(message):
    """Uplink/downlink cost of one message: 32 bits per non-zero value."""
    return BITS_PER_VALUE * int(np.count_nonzero(message))


# -- section 8: objectives -------------------------------------------------------------


class RidgeReference:
    """``f_i(w) = 1/2 ||A_i w - b_i||^2 + (alpha/4) ||w||^2`` for each client."""

    def __init__(self, clients, alpha):
        self.clients = [(np.asarray(A, float), np.asarray(b, float)) for A, b in clients]
        self.alpha = float(alpha)
        self.n_clients = len(self.clients)
        self.dim = self.clients[0][0].shape[1]

    def value(self, i, w):
        A, b = self.clients[i]
        r = A @ w - b
        return 0.5 * (r @ r) + self.alpha / 4 * (w @ w)

    def grad(self, i, w):
        A, b = self.clients[i]
        return A.T @ (A @ w - b) + self.alpha / 2 * w

    def objective(self, w):
        return sum(self.value(i, w) for i in range(self.n_clients)) / self.n_clients

    def full_grad(self, w):
        return sum(self.grad(i, w) for i in range(self.n_clients)) / self.n_clients


class SoftmaxReference:
    """Softmax regression, section 8, with ``w = concat(W.ravel(), c)`` (W is p x C, row-major).

    ``f_i = -(N/n) sum_rows log P[y] + (alpha/2)(||W||^2 + ||c||^2)``.
    """

    def __init__(self, clients, alpha, n_classes):
        self.clients = [(np.asarray(X, float), np.asarray(y, int)) for X, y in clients]
        self.alpha = float(alpha)
        self.n_classes = int(n_classes)
        self.n_clients = len(self.clients)
        self.n_total = sum(X.shape[0] for X, _ in self.clients)
        self.n_inputs = self.clients[0][0].shape[1]
        self.dim = (self.n_inputs + 1) * self.n_classes

    def _split(self, w):
        p, C = self.n_inputs, self.n_classes
        return w[: p * C].reshape(p, C), w[p * C :]

    def _log_probs(self, X, w):
        """Row-wise log-softmax of ``Z = X W + 1 c^T`` (the row max subtracted first)."""
        Wm, c = self._split(w)
        Z = X @ Wm + c
        Z = Z - Z.max(axis=1, keepdims=True)
        return Z - np.log(np.sum(np.exp(Z), axis=1, keepdims=True))

    def value(self, i, w):
        X, y = self.clients[i]
        logP = self._log_probs(X, w)
        scale = self.n_clients / self.n_total
        return -scale * sum(logP[j, y[j]] for j in range(len(y))) + self.alpha / 2 * (w @ w)

    def grad(self, i, w):
        X, y = self.clients[i]
        Wm, c = self._split(w)
        scale = self.n_clients / self.n_total
        P_minus_Y = np.exp(self._log_probs(X, w))
        for j in range(len(y)):
            P_minus_Y[j, y[j]] -= 1.0
        gW = scale * X.T @ P_minus_Y + self.alpha * Wm
        gc = scale * P_minus_Y.sum(axis=0) + self.alpha * c
        return np.concatenate([gW.ravel(), gc])

    def objective(self, w):
        return sum(self.value(i, w) for i in range(self.n_clients)) / self.n_clients

    def full_grad(self, w):
        return sum(self.grad(i, w) for i in range(self.n_clients)) / self.n_clients


# -- sections 1-3: Algorithm 1 ---------------------------------------------------------


def algorithm1_step(problem, W, H, coin, gamma, p, *, local=None, uplink=None, keep_dense=False,
                    server=None, server_order="before_h", grad_at="dense", sparsifier=None):
    """One iteration of Algorithm 1 (ALGORITHMS.md section 3) for every client.

    ``W``, ``H``: lists of N client vectors. ``local``, ``uplink``, ``server``,
    ``sparsifier``: functions ``v -> v`` or None (e.g. ``lambda v: topk(v, k)``).
    Returns ``(W_new, H_new, uploads, downlink)``; ``uploads`` (list of N
    messages) and ``downlink`` (the broadcast model) are None without a
    communication.
    """
    N = len(W)
    V = []
    for i in range(N):
        point = W[i] if grad_at == "dense" else sparsifier(W[i])
        v = W[i] - gamma * (problem.grad(i, point) - H[i])        # line 6
        if local is not None:
            v = local(v)                                          # line 7
        V.append(v)
    if not coin:
        return V, [h.copy() for h in H], None, None               # line 13
    U = []
    for i in range(N):
        u = V[i] if uplink is None else uplink(V[i])              # line 9
        if uplink is not None and not keep_dense:
            V[i] = u                                              # SPS: overwrite the local copy
        U.append(u)
    w_bar = sum(U) / N                                            # line 10
    w_new = w_bar
    if server is not None and server_order == "before_h":
        w_new = server(w_bar)                                     # line 11 (ASP)
    H_new = [H[i] + (p / gamma) * (w_new - V[i]) for i in range(N)]  # line 12
    if server is not None and server_order == "after_h":
        w_new = server(w_bar)                                     # line 11 after line 12 (ASP-mod)
    return [w_new.copy() for _ in range(N)], H_new, U, w_new


def run_algorithm1(problem, w0, coins, gamma, p, final=None, **options):
    """Run Algorithm 1 over the coin sequence; return the trajectory.

    Returns a list with one dict per iteration (after the step): ``w`` and
    ``h`` (N x d arrays), ``bits_up`` / ``bits_down`` / ``values_up``
    (cumulative per client), ``communications`` and ``output``
    (``final(mean_i w_i)``).
    """
    N = problem.n_clients
    W = [np.array(w0, dtype=float) for _ in range(N)]
    H = [np.zeros_like(W[0]) for _ in range(N)]
    bits_up, bits_down, values_up, comms = np.zeros(N, int), np.zeros(N, int), np.zeros(N, int), 0
    trajectory = []
    for coin in coins:
        W, H, U, down = algorithm1_step(problem, W, H, bool(coin), gamma, p, **options)
        if U is not None:
            comms += 1
            for i in range(N):
                bits_up[i] += bits(U[i])
                values_up[i] += np.count_nonzero(U[i])
                bits_down[i] += bits(down)
        w_mean = sum(W) / N
        trajectory.append({
            "w": np.array(W), "h": np.array(H), "bits_up": bits_up.copy(), "bits_down": bits_down.copy(),
            "values_up": values_up.copy(), "communications": comms,
            "output": w_mean if final is None else final(w_mean),
        })
    return trajectory


def variant_options(name, gamma, k=None, lam=None, grad_at="dense"):
    """The section-3 table: Algorithm 1 options (and the final prox) of each named variant."""
    top = (lambda v: topk(v, k)) if k is not None else None
    opts = {
        "proxskip": dict(),
        "final_topk": dict(final=top),
        "sparse_proxskip": dict(uplink=top, final=top),
        "sps_modified": dict(uplink=top, keep_dense=True, final=top),
        "sparse_proxskip_local": dict(local=top, final=top),
        "accelerated_server_pruning": dict(server=top, server_order="before_h", final=top),
        "asp_modified": dict(server=top, server_order="after_h", final=top),
        "randprox_l1": dict(local=lambda v: soft(v, gamma * lam), final=top),
        "sps_bidirectional": dict(uplink=top, server=top, server_order="after_h", final=top),
    }[name]
    if grad_at == "pruned":
        opts.update(grad_at="pruned", sparsifier=top)
    return opts


# -- section 4: FedAvg, FedHT, FedIHT --------------------------------------------------


def run_fedavg(problem, w0, gamma, local_steps, iterations, k=None, server_topk=False, local_topk=False):
    """FedAvg (no TopK), FedHT (``server_topk``) or FedIHT (both), one local step per iteration.

    Every ``local_steps`` iterations the clients upload ``y_i``, the server
    forms ``x = mean_i y_i`` (``TopK(x)`` for FedHT/FedIHT) and every client
    restarts from ``x``. Returns the trajectory like :func:`run_algorithm1`
    (``h`` is zero).
    """
    N = problem.n_clients
    x = np.array(w0, dtype=float)
    Y = [x.copy() for _ in range(N)]
    bits_up, bits_down, values_up, comms = np.zeros(N, int), np.zeros(N, int), np.zeros(N, int), 0
    trajectory = []
    for t in range(iterations):
        for i in range(N):
            Y[i] = Y[i] - gamma * problem.grad(i, Y[i])
            if local_topk:
                Y[i] = topk(Y[i], k)
        if (t + 1) % local_steps == 0:
            comms += 1
            for i in range(N):
                bits_up[i] += bits(Y[i])
                values_up[i] += np.count_nonzero(Y[i])
            x = sum(Y) / N
            if server_topk:
                x = topk(x, k)
            for i in range(N):
                bits_down[i] += bits(x)
            Y = [x.copy() for _ in range(N)]
        w_mean = sum(Y) / N
        trajectory.append({
            "w": np.array(Y), "h": np.zeros((N, x.size)), "bits_up": bits_up.copy(), "bits_down": bits_down.copy(),
            "values_up": values_up.copy(), "communications": comms,
            "output": w_mean if k is None else topk(w_mean, k),
        })
    return trajectory


# -- section 5: SCAFFOLD option II -----------------------------------------------------


def run_scaffold(problem, w0, gamma, local_steps, iterations, server_lr=1.0):
    """SCAFFOLD option II with full participation, explicit ``c_i`` and ``c`` (both start at 0).

    Local step ``y_i -= gamma (grad f_i(y_i) - c_i + c)``; after ``E`` steps
    ``c_i+ = c_i - c + (x - y_i)/(E gamma)``, uplink ``dy_i = y_i - x`` and
    ``dc_i = c_i+ - c_i``, server ``x += eta mean_i dy_i`` and
    ``c += (1/N) sum_i dc_i``; downlink ``x`` and ``c``. The trajectory's
    ``h`` is ``c_i - c``.
    """
    N, E = problem.n_clients, local_steps
    x = np.array(w0, dtype=float)
    c = np.zeros_like(x)
    c_i = [np.zeros_like(x) for _ in range(N)]
    Y = [x.copy() for _ in range(N)]
    bits_up, bits_down, values_up, comms = np.zeros(N, int), np.zeros(N, int), np.zeros(N, int), 0
    trajectory = []
    for t in range(iterations):
        for i in range(N):
            Y[i] = Y[i] - gamma * (problem.grad(i, Y[i]) - c_i[i] + c)
        if (t + 1) % E == 0:
            comms += 1
            dy, dc = [], []
            for i in range(N):
                c_plus = c_i[i] - c + (x - Y[i]) / (E * gamma)
                dy.append(Y[i] - x)
                dc.append(c_plus - c_i[i])
                c_i[i] = c_plus
                bits_up[i] += bits(dy[i]) + bits(dc[i])
                values_up[i] += np.count_nonzero(dy[i]) + np.count_nonzero(dc[i])
            x = x + server_lr * sum(dy) / N
            c = c + sum(dc) / N
            for i in range(N):
                bits_down[i] += bits(x) + bits(c)
            Y = [x.copy() for _ in range(N)]
        trajectory.append({
            "w": np.array(Y), "h": np.array([ci - c for ci in c_i]), "bits_up": bits_up.copy(),
            "bits_down": bits_down.copy(), "values_up": values_up.copy(), "communications": comms,
            "output": sum(Y) / N,
        })
    return trajectory
