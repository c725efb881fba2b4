"""Federated multinomial logistic (softmax) regression (the paper's FEMNIST objective)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.optimize
import scipy.sparse.linalg

from .. import _backend as B
from ..metrics import accuracy
from ._device import Assembler, device_buckets, runs_first, take_clients
from ._layout import DeviceCache, check_iterates
from .base import FederatedProblem

__all__ = ["SoftmaxRegression"]


class SoftmaxRegression(FederatedProblem):
    r"""Federated softmax regression with intercept.

    The model ``w`` (length ``d = (p + 1) C``) stacks the weight matrix
    ``W`` (``p x C``, row-major) and the intercept ``c`` (``C``). With
    ``Z = X_i W + 1 c^T``, ``P = softmax(Z)`` row-wise and ``Y`` the one-hot
    labels, for ``n`` training rows in total:

    .. math::

        f_i(w) = -\frac{N}{n} \sum_{j \in i} \log P_{j, y_j}
                 + \frac{\alpha}{2}\left(\|W\|^2 + \|c\|^2\right),

    so ``F = (1/N) sum_i f_i`` is the mean cross-entropy over all ``n``
    rows plus ``(alpha/2) ||w||^2``;
    ``grad_W f_i = (N/n) X_i^T (P - Y) + alpha W`` and
    ``grad_c f_i = (N/n) (P - Y)^T 1 + alpha c``;
    ``L_i = (N/n) (1/2) sigma_max([X_i, 1])^2 + alpha`` and ``mu_i = alpha``.
    The intercept is regularized and part of every TopK.

    Parameters
    ----------
    dataset : FederatedDataset
        Integer class labels in ``[0, n_classes)``; no bias column needed.
    alpha : float >= 0
        Regularization.
    n_classes : int, optional
        Number of classes C (default: ``max(y) + 1`` over all splits).
    init : {"uniform", "zeros"}
        The default starting model: ``"uniform"`` draws ``W`` and ``c``
        from ``U(-1/sqrt(p), 1/sqrt(p))`` like torch's ``nn.Linear`` (the
        paper's init); ``"zeros"`` starts at 0.
    """

    metric_name = "accuracy"

    def __init__(self, dataset, alpha: float = 1e-4, n_classes: int | None = None, init: str = "uniform"):
        super().__init__(dataset)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
            raise TypeError(f"alpha must be a real number, got {alpha!r}")
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
        if dataset.y.dtype.kind not in "iu":
            raise TypeError(f"SoftmaxRegression needs integer class labels, got dtype {dataset.y.dtype}")
        labels = [dataset.y] + [s.y for s in (dataset.test, dataset.validation) if s is not None]
        y_max = max(int(lab.max()) for lab in labels if lab.size)
        if min(int(lab.min()) for lab in labels if lab.size) < 0:
            raise ValueError("class labels must be >= 0")
        if n_classes is None:
            n_classes = y_max + 1
        if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
            raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
        if y_max >= n_classes:
            raise ValueError(f"labels go up to {y_max} but n_classes = {n_classes}")
        if init not in ("uniform", "zeros"):
            raise ValueError(f"init must be 'uniform' or 'zeros', got {init!r}")
        self.alpha = float(alpha)
        self.l2 = self.alpha
        self.n_classes = int(n_classes)
        self.init = init
        self._scale = self.n_clients / dataset.n_samples
        #: The device layout per device (:meth:`_to_device`).
        self.device_layout = DeviceCache(self._to_device)

    @property
    def n_inputs(self) -> int:
        """Number of input features p."""
        return self.dataset.n_features

    @property
    def dim(self) -> int:
        """Model dimension ``d = (p + 1) C``."""
        return (self.n_inputs + 1) * self.n_classes

    def unflatten(self, w):
        """Split ``w`` (..., d) into the weight matrix (..., p, C) and intercept (..., C)."""
        xp = B.namespace(w)
        p, C = self.n_inputs, self.n_classes
        return xp.reshape(w[..., : p * C], w.shape[:-1] + (p, C)), w[..., p * C :]

    def _to_device(self, like):
        """The device layout (see :mod:`proxfed.problems._device`): at most ``DEVICE_BUCKETS`` padded row
        buckets with ``X1 = [X, 1]`` (Nb, rows, p + 1) (zero rows for padding, so padding adds
        nothing to a gradient), one-hot labels ``Y`` (Nb, rows, C, 1) and the row mask (Nb, rows, 1)."""
        put = lambda a: B.from_numpy(np.ascontiguousarray(a), like=like)  # noqa: E731
        blocks = []
        buckets = device_buckets(self.dataset, np.arange(self.n_clients))
        for bk in buckets:
            X1 = np.concatenate([bk.X, bk.mask[..., None]], axis=-1)
            onehot = (bk.y[..., None] == np.arange(self.n_classes)) * bk.mask[..., None]
            blocks.append((put(bk.clients), put(X1), put(onehot[..., None].astype(np.float64)),
                           put(bk.mask[..., None])))
        order = np.concatenate([bk.clients for bk in buckets])
        return {"blocks": blocks, "inverse": put(np.argsort(order))}

    def _data_terms(self, W, want_value: bool, want_grad: bool):
        if isinstance(W, np.ndarray) and W.dtype in (np.float32, np.float64):
            return self._data_terms_numpy(W, want_value, want_grad)
        xp = B.namespace(W)
        dev = self.device_layout.get(W)
        N, p1, C = self.n_clients, self.n_inputs + 1, self.n_classes
        # w = [vec(W) (p C), c (C)] is a (p + 1, C) matrix whose last row is the intercept
        Wt, lead, R = runs_first(W, N, (p1, C))                                  # (N, p + 1, R, C)
        Wt = xp.permute_dims(Wt, (0, 2, 1, 3))
        grads = Assembler(W, N, R, (p1, C), dev["inverse"]) if want_grad else None
        values = Assembler(W, N, R, (), dev["inverse"]) if want_value else None
        if grads is not None:
            grads.view = xp.permute_dims(grads.view, (0, 2, 1, 3)) if grads.direct else None
        for idx, X1, onehot, mask in dev["blocks"]:
            nb, rows = X1.shape[0], X1.shape[1]
            Wb = xp.reshape(take_clients(Wt, idx), (nb, p1, R * C))              # runs as columns
            Z = xp.reshape(xp.matmul(X1, Wb), (nb, rows, R, C))
            Z -= xp.max(Z, axis=-1, keepdims=True)
            if want_value:  # -log P[y] = log(sum exp z) - z_y, z shifted by its row max; padding masked
                z_y = xp.sum(xp.matmul(Z, onehot), axis=(1, 3))                  # (Nb, R)
            Z = xp.exp(Z)
            total = xp.sum(Z, axis=-1, keepdims=True)
            if want_value:
                lse = xp.matmul(xp.matrix_transpose(xp.reshape(xp.log(total), (nb, rows, R))), mask)
                values.put(idx, self._scale * (lse[..., 0] - z_y))
            if want_grad:
                Z /= total
                Z -= onehot[..., 0][:, :, None, :]
                Z *= self._scale
                g = xp.matmul(xp.matrix_transpose(X1), xp.reshape(Z, (nb, rows, R * C)))
                g = xp.reshape(g, (nb, p1, R, C))
                if grads.direct:
                    grads.put(idx, g)
                else:
                    grads.parts.append(xp.permute_dims(g, (0, 2, 1, 3)))
        v = None if values is None else xp.reshape(values.result(), lead + (N,))
        g = None if grads is None else xp.reshape(grads.result(), lead + (N, p1 * C))
        return v, g

    def _host_clients(self, dtype) -> list:
        """Each client's rows and labels as contiguous host arrays of ``dtype``."""
        key = np.dtype(dtype).str
        cache = self.__dict__.setdefault("_host_cache", {})
        if key not in cache:
            cache[key] = [(np.ascontiguousarray(X, dtype=dtype), y.astype(np.int64)) for X, y in self.dataset.clients()]
        return cache[key]

    def gradient_step(self, W, gamma, H=None):
        """``W - gamma (grad f_i(W) - H)`` (``H`` None: ``W - gamma grad f_i(W)``), see the base class.

        NumPy: fused per client, while the client's gradient is in cache, so a batch of runs
        streams the ``(R, N, d)`` iterates once per step instead of once per operation;
        equal bit for bit to the unfused expression.
        """
        if not (isinstance(W, np.ndarray) and W.dtype in (np.float32, np.float64)):
            return super().gradient_step(W, gamma, H)
        check_iterates(W, self.n_clients, self.dim)
        if H is not None and tuple(H.shape) != tuple(W.shape):
            raise ValueError(f"H must have the shape of W {tuple(W.shape)}, got {tuple(H.shape)}")
        _, V = self._data_terms_numpy(W, False, True, step=(gamma, H))
        return V

    def _data_terms_numpy(self, W, want_value: bool, want_grad: bool, step=None):
        """NumPy fast path: per client one GEMM over all runs (``X_i @ [W_1 .. W_R]``), no padding.

        With ``step = (gamma, H)`` the gradient slot returns ``W - gamma (grad - H)`` instead, the
        client's full gradient ``g_i + l2 w_i`` formed per client with the same roundings as
        :meth:`grad` (see :meth:`gradient_step`).
        """
        lead, (N, d) = W.shape[:-2], W.shape[-2:]
        R = int(np.prod(lead, dtype=np.int64))
        p, C = self.n_inputs, self.n_classes
        Wr = W.reshape(R, N, d)
        value = np.empty((N, R), dtype=W.dtype) if want_value else None
        grad = np.empty((R, N, d), dtype=W.dtype) if want_grad else None
        if step is not None:
            gamma = np.asarray(step[0], dtype=W.dtype).reshape(-1)
            gamma = gamma.reshape(R, 1) if gamma.size > 1 else W.dtype.type(gamma[0])
            Hr = None if step[1] is None else step[1].reshape(R, N, d)
            g_i = np.empty((R, d), dtype=W.dtype)
        for i, (X, y) in enumerate(self._host_clients(W.dtype)):
            w = Wr[:, i]
            Wm = np.ascontiguousarray(w[:, : p * C].reshape(R, p, C).transpose(1, 0, 2)).reshape(p, R * C)
            Z = (X @ Wm).reshape(-1, R, C)
            Z += w[:, p * C :]
            Z -= Z.max(axis=-1, keepdims=True)
            rows = np.arange(y.size)
            z_y = Z[rows, :, y] if want_value else None
            np.exp(Z, out=Z)
            total = Z.sum(axis=-1, keepdims=True)
            if want_value:  # -log P[y] = log(sum exp) - z_y, with z shifted by the row max
                value[i] = self._scale * np.sum(np.log(total[:, :, 0]) - z_y, axis=0)
            if want_grad:
                Z /= total
                Z[rows, :, y] -= 1.0
                Z *= self._scale
                out = grad[:, i] if step is None else g_i
                out[:, : p * C] = (X.T @ Z.reshape(-1, R * C)).reshape(p, R, C).transpose(1, 0, 2).reshape(R, p * C)
                out[:, p * C :] = Z.sum(axis=0)
                if step is not None:  # the roundings of W - gamma ((g + l2 W) - H), per client
                    g_i += self.l2 * w
                    if Hr is not None:
                        g_i -= Hr[:, i]
                    g_i *= gamma
                    np.subtract(w, g_i, out=grad[:, i])
        v = None if value is None else np.moveaxis(value, -1, 0).reshape(lead + (N,))
        g = None if grad is None else grad.reshape(lead + (N, d))
        return v, g

    def smoothness(self) -> np.ndarray:
        """``L_i = (N/n) (1/2) sigma_max([X_i, 1])^2 + alpha``, shape (N,)."""
        smax = np.array(
            [np.linalg.norm(np.hstack([X, np.ones((X.shape[0], 1))]), 2) for X, _ in self.dataset.clients()]
        )
        return self._scale * 0.5 * smax**2 + self.alpha

    def strong_convexity(self) -> np.ndarray:
        """``mu_i = alpha``, shape (N,)."""
        return np.full(self.n_clients, self.alpha)

    def initial_point(self, seed: int = 0, run: int = 0) -> np.ndarray:
        """torch ``nn.Linear``-style ``U(-1/sqrt(p), 1/sqrt(p))`` (or zeros with ``init="zeros"``)."""
        if self.init == "zeros":
            return np.zeros(self.dim)
        bound = 1.0 / math.sqrt(self.n_inputs)
        return B.rng(seed, run, B.INIT_STREAM).uniform(-bound, bound, self.dim)

    # -- centralized objective on host arrays, for the reference solution -------------
    def _central(self, w):
        X, y = self.dataset.X, self.dataset.y
        n = X.shape[0]
        Wm, c = w[: -self.n_classes].reshape(self.n_inputs, self.n_classes), w[-self.n_classes :]
        Z = X @ Wm + c
        lse = B.logsumexp(Z, axis=1)
        f = float(np.mean(lse - Z[np.arange(n), y])) + 0.5 * self.alpha * float(w @ w)
        P = np.exp(Z - lse[:, None])
        P[np.arange(n), y] -= 1.0
        P /= n
        g = np.concatenate([(X.T @ P).ravel(), P.sum(axis=0)]) + self.alpha * w
        return f, g

    def _central_hessp(self, w, v):
        X = self.dataset.X
        n = X.shape[0]
        C = self.n_classes
        Wm, c = w[:-C].reshape(self.n_inputs, C), w[-C:]
        Vm, vc = v[:-C].reshape(self.n_inputs, C), v[-C:]
        Z = X @ Wm + c
        P = np.exp(Z - B.logsumexp(Z, axis=1)[:, None])
        U = X @ Vm + vc
        PU = P * U
        M = (PU - P * PU.sum(axis=1, keepdims=True)) / n
        return np.concatenate([(X.T @ M).ravel(), M.sum(axis=0)]) + self.alpha * v

    def _newton_polish(self, w, target: float, max_steps: int = 30):
        """Newton steps (Hessian solves by conjugate gradients) until ``||grad F|| <= target``."""
        d = self.dim
        f, g = self._central(w)
        for _ in range(max_steps):
            gnorm = float(np.linalg.norm(g))
            if gnorm <= target:
                break
            hess = scipy.sparse.linalg.LinearOperator((d, d), matvec=lambda v, w=w: self._central_hessp(w, v))
            step, _ = scipy.sparse.linalg.cg(hess, -g, rtol=1e-12, atol=0.0, maxiter=min(d, 500))
            t = 1.0
            while t > 1e-10:  # accept a decrease of F or, at rounding level, of the gradient
                f_new, g_new = self._central(w + t * step)
                if f_new <= f + 1e-4 * t * float(g @ step) or np.linalg.norm(g_new) < gnorm:
                    break
                t /= 2
            w, f, g = w + t * step, f_new, g_new
        return w

    def solution(self, tol: float = 1e-10) -> np.ndarray:
        """Minimizer of ``F`` by SciPy L-BFGS, polished by Newton-CG steps.

        Stops when ``||grad F|| <= tol * max(1, ||grad F(0)||)``; warns if
        that is not reached. Needs ``alpha > 0`` for a unique minimizer.
        """
        if self._solution is not None:
            return self._solution.copy()
        if self.alpha <= 0:
            raise ValueError("the softmax objective has a unique minimizer only for alpha > 0")
        target = tol * max(1.0, float(np.linalg.norm(self._central(np.zeros(self.dim))[1])))
        res = scipy.optimize.minimize(
            self._central, np.zeros(self.dim), jac=True, method="L-BFGS-B",
            options={"maxiter": 20000, "gtol": target / 10, "ftol": 0.0, "maxcor": 30},
        )
        w = self._newton_polish(res.x, target)
        gnorm = float(np.linalg.norm(self._central(w)[1]))
        if gnorm > target:
            warnings.warn(f"softmax solution: gradient norm {gnorm:.3e} above the target {target:.3e}", RuntimeWarning)
        self._solution = w
        return w.copy()

    def predict(self, w, X):
        """Predicted classes ``argmax_c (X W + c)``."""
        w = np.asarray(w)
        Wm, c = w[: -self.n_classes].reshape(self.n_inputs, self.n_classes), w[-self.n_classes :]
        return np.argmax(np.asarray(X) @ Wm + c, axis=1)

    def _metric(self, y, y_pred):
        return accuracy(y, y_pred)
