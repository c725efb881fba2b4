"""Federated ridge regression (the paper's BlogFeedback objective)."""

from __future__ import annotations

import math

import array_api_compat
import numpy as np
import scipy.linalg

from .. import _backend as B
from ..metrics import r2_score
from ._device import Assembler, device_buckets, runs_first, take_clients
from ._device_steps import device_local_steps, device_spectral
from ._layout import DeviceCache, row_buckets
from .base import FederatedProblem

__all__ = ["Ridge"]


#: Bytes of client rows per chunk, so that ``X^T r`` re-reads ``X`` from the L2 cache.
CHUNK_BYTES = 384 * 1024


def _cache_chunks(X: np.ndarray) -> list:
    """Slices of the client axis of a bucket ``X`` (Nb, rows, d) of about CHUNK_BYTES each."""
    per_client = X.shape[1] * X.shape[2] * 8
    step = max(1, CHUNK_BYTES // per_client)
    return [slice(i, i + step) for i in range(0, X.shape[0], step)]


def _psi(lam, gamma, k, logs=None):
    """``(1 - (1 - gamma lam)^k) / lam`` (``k gamma`` where ``lam = 0``), broadcast to (..., R).

    ``lam`` has shape (..., 1), ``gamma`` and ``k`` shape (R,). Uses ``expm1``/``log1p``
    where ``0 < gamma lam < 1/2`` to avoid cancellation for small ``gamma lam``. ``logs``
    is ``_psi_logs(lam, gamma)``, which does not depend on ``k`` (reused across calls).
    """
    lam = np.asarray(lam, dtype=np.float64)
    x, log_base, stable, all_stable, all_positive = _psi_logs(lam, gamma) if logs is None else logs
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.multiply(k, log_base)
        np.expm1(out, out=out)
        np.divide(out, lam, out=out)
        np.negative(out, out=out)
        if not all_stable:
            out = np.where(stable, out, (1.0 - np.power(1.0 - x, k)) / lam)
    return out if all_positive else np.where(lam == 0, k * gamma * np.ones_like(x), out)


def _psi_logs(lam, gamma):
    """What :func:`_psi` needs that does not depend on ``k``: ``gamma lam``,
    ``log1p(-min(gamma lam, 1/2))``, the mask ``gamma lam < 1/2``, whether it is all true
    and whether every ``lam > 0``."""
    lam = np.asarray(lam, dtype=np.float64)
    x = gamma * lam
    stable = x < 0.5
    return x, np.log1p(-np.minimum(x, 0.5)), stable, bool(stable.all()), bool(np.all(lam > 0))


def zero_rows(V: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``V`` (n, d, r) with row ``j`` of client ``n`` set to 0 where column ``j`` of ``A[n]`` (n, rows, d) is 0.

    Such a coordinate decouples from the others for that client (``H_i = A_i^T A_i + (alpha/2) I``
    acts on it as ``alpha/2``), so explicit steps follow the scalar recursion there and keep it
    exactly 0 from ``w = h = 0``. Exact eigenvectors vanish on it (or are ``e_j``, of eigenvalue 0,
    whose coefficient in the closed form is 0), but ``eigh``/``svd`` mix ``e_j`` into the
    degenerate eigenvalue-0 space and leave rounding noise (~1e-17) on the row: zeroing it
    leaves the ``(alpha/2) I`` part of :meth:`Ridge.local_steps`, the scalar recursion in closed
    form, alone there, exactly. (``A`` is the array the explicit gradient multiplies: ``G`` for
    Gram clients, the padded rows ``X`` for the others.)
    """
    return np.where(np.all(A == 0, axis=-2)[:, :, None], 0.0, V)


def _gram_operand(Wg):
    """The Gram clients' iterates (Ng, d, R) as a C-contiguous copy for ``G @ W``.

    The runs-last view of the iterates is strided (the runs are its slowest axis within a client),
    and NumPy's batched matmul of (d, d) by such (d, R) items runs about 2x slower than on a
    contiguous copy with 5 or 8 runs, copy included (``benchmarks/bench_ridge_layout.py``). The
    products are equal to rounding, not always bit for bit: the kernel may sum in another order.
    """
    return np.ascontiguousarray(Wg)


class Ridge(FederatedProblem):
    r"""Federated ridge regression with unnormalized client sums.

    Client ``i`` holds ``A_i`` (its feature rows, including any bias column
    the data provides) and targets ``b_i``:

    .. math::

        f_i(w) = \tfrac12 \|A_i w - b_i\|^2 + \tfrac{\alpha}{4}\|w\|^2, \qquad
        F(w) = \frac1N \sum_{i=1}^N f_i(w),

    so ``grad f_i(w) = A_i^T (A_i w - b_i) + (alpha/2) w``,
    ``L_i = sigma_max(A_i)^2 + alpha/2`` and ``mu_i = sigma_min(A_i)^2 + alpha/2``
    (``= alpha/2`` when ``A_i`` has fewer rows than columns). The minimizer of
    ``F`` solves ``(A^T A + (N alpha / 2) I) w = A^T b``.

    Clients with more rows than features are stored as Gram matrices, the
    others as zero-padded row buckets; the result does not depend on the
    layout.

    Parameters
    ----------
    dataset : FederatedDataset
        Real-valued targets.
    alpha : float >= 0
        Regularization (the paper uses ``1e3`` on BlogFeedback).

    Examples
    --------
    >>> import numpy as np
    >>> from proxfed import FederatedDataset
    >>> from proxfed.problems import Ridge
    >>> ds = FederatedDataset.from_clients([(np.eye(2), np.ones(2)), (np.ones((1, 2)), 2 * np.ones(1))])
    >>> problem = Ridge(ds, alpha=2.0)
    >>> problem.grad(np.zeros((2, 2)))  # A_i^T (0 - b_i)
    array([[-1., -1.],
           [-2., -2.]])
    """

    metric_name = "r2"
    #: ``solution()`` is one linear solve, cheap enough to compute by default.
    cheap_solution = True

    def __init__(self, dataset, alpha: float = 1.0):
        super().__init__(dataset)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)):
            raise TypeError(f"alpha must be a real number, got {alpha!r}")
        if not (math.isfinite(alpha) and alpha >= 0):
            raise ValueError(f"alpha must be finite and >= 0, got {alpha}")
        if dataset.y.dtype.kind not in "fiu":
            raise TypeError("Ridge needs real-valued targets")
        self.alpha = float(alpha)
        self.l2 = self.alpha / 2
        single = self._layout(dataset.n_features)
        self._gram_clients, self._row_clients = single["gram_clients"], single["row_clients"]
        self._G, self._c, self._half_bb = single["G"], single["c"], single["half_bb"]
        self._buckets, self._inverse = single["buckets"], single["inverse"]
        self._layouts = {"single": single}
        self._host_cache: dict = {}
        #: The device layout per device (:meth:`_to_device`); read by :mod:`._device_steps` too.
        self.device_layout = DeviceCache(self._to_device)
        #: The eigenbases of the device layout's blocks per device and dtype (``device_spectral``).
        self.device_spectra = DeviceCache(self._spectral_to_device)
        self._global = DeviceCache(self._global_gram)

    def _global_gram(self, like):
        """``(A^T A, A^T b, b^T b / 2)`` over all clients (float64 on the host, then ``like``'s)."""
        A, b = self.dataset.X, np.asarray(self.dataset.y, dtype=np.float64)
        host = (A.T @ A, A.T @ b, np.asarray(0.5 * float(b @ b)))
        return tuple(B.from_numpy(a, like=like) for a in host)

    def objective(self, w):
        """``F(w) = (1/N) sum_i f_i(w)`` for one model ``(d,)`` or a batch ``(..., d)``.

        The clients share ``w``, so the data term is the global quadratic
        ``1/2 w^T (A^T A) w - (A^T b)^T w + 1/2 b^T b``: O(d^2) per model
        whatever the number of rows (a history record costs no pass over the data).
        """
        xp = B.namespace(w)
        if w.shape[-1] != self.dim:
            raise ValueError(f"w must have last dimension {self.dim}, got shape {tuple(w.shape)}")
        G, c, half_bb = self._global.get(w)
        data = xp.sum(w * (0.5 * xp.matmul(w, G) - c), axis=-1) + half_bb
        return data / self.n_clients + (self.l2 / 2) * xp.sum(w * w, axis=-1)

    def _layout(self, max_rows: float) -> dict:
        """Clients with more than ``max_rows`` rows in Gram form, the others in row buckets."""
        d = self.dataset.n_features
        sizes = self.dataset.client_sizes
        gram_clients = np.flatnonzero(sizes > max_rows)
        row_clients = np.flatnonzero(sizes <= max_rows)
        G = np.empty((gram_clients.size, d, d))
        c = np.empty((gram_clients.size, d))
        half_bb = np.empty(gram_clients.size)
        for j, i in enumerate(gram_clients):
            A, b = self.dataset.client(int(i))
            G[j] = A.T @ A
            c[j] = A.T @ b
            half_bb[j] = 0.5 * float(b @ b)
        buckets = row_buckets(self.dataset, row_clients)
        order = np.concatenate([gram_clients] + [bk.clients for bk in buckets])
        return {"gram_clients": gram_clients, "row_clients": row_clients, "G": G, "c": c, "half_bb": half_bb,
                "buckets": buckets, "inverse": np.argsort(order)}

    def _host_layout(self, batched: bool, dtype) -> dict:
        """The NumPy layout for one dtype; batched runs put clients with more than d/2 rows in Gram form."""
        key = (batched, np.dtype(dtype).str)
        if key not in self._host_cache:
            lay = self._batched_layout() if batched else self._layouts["single"]
            cast = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
            chunks = [(bk.clients[sl], cast(bk.X[sl]), cast(bk.y[sl, :, None]))
                      for bk in lay["buckets"] for sl in _cache_chunks(bk.X)]
            # clients in block order: each block is a contiguous slice of the permuted iterates
            order = np.concatenate([lay["gram_clients"]] + [idx for idx, _, _ in chunks])
            bounds = np.cumsum([lay["gram_clients"].size] + [idx.size for idx, _, _ in chunks])
            self._host_cache[key] = {
                "gram_clients": lay["gram_clients"], "G": cast(lay["G"]), "c": cast(lay["c"][..., None]),
                "half_bb": cast(lay["half_bb"][:, None]), "order": order,
                "buckets": [(slice(int(lo), int(hi)), X, y) for (_, X, y), lo, hi in zip(chunks, bounds[:-1], bounds[1:])],
            }
        return self._host_cache[key]

    @property
    def dim(self) -> int:
        """Model dimension ``d`` (the number of feature columns)."""
        return self.dataset.n_features

    def _to_device(self, like):
        """The device layout (see :mod:`proxfed.problems._device`): clients with more than ``d/2`` rows
        as Gram blocks ``G`` (Ng, d, d) with ``c = A^T b`` and ``b^T b / 2``, the others in
        at most ``DEVICE_BUCKETS`` padded row buckets ``X`` (Nb, rows, d), ``y`` (Nb, 1, rows)."""
        put = lambda a: B.from_numpy(np.ascontiguousarray(a), like=like)  # noqa: E731
        lay = self._batched_layout()
        blocks = []
        if lay["gram_clients"].size:
            blocks.append(("gram", put(lay["gram_clients"]), put(lay["G"]), put(lay["c"][:, None, :]),
                           put(lay["half_bb"][:, None])))
        buckets = device_buckets(self.dataset, lay["row_clients"])
        for bk in buckets:
            blocks.append(("rows", put(bk.clients), put(bk.X), put(bk.y.astype(np.float64)[:, None, :]), None))
        order = np.concatenate([lay["gram_clients"]] + [bk.clients for bk in buckets])
        return {"blocks": blocks, "inverse": put(np.argsort(order))}

    def _batched_layout(self) -> dict:
        """The layout for batched runs and devices: clients with more than ``d/2`` rows in Gram form."""
        if "batched" not in self._layouts:
            self._layouts["batched"] = self._layout(self.dataset.n_features / 2)
        return self._layouts["batched"]

    def _data_terms(self, W, want_value: bool, want_grad: bool):
        if isinstance(W, np.ndarray) and W.dtype in (np.float32, np.float64):
            return self._data_terms_numpy(W, want_value, want_grad)
        xp = B.namespace(W)
        dev = self.device_layout.get(W)
        N, d = self.n_clients, self.dim
        Wt, lead, R = runs_first(W, N, (d,))
        grads = Assembler(W, N, R, (d,), dev["inverse"]) if want_grad else None
        values = Assembler(W, N, R, (), dev["inverse"]) if want_value else None
        for kind, idx, A, b, half_bb in dev["blocks"]:
            Wb = take_clients(Wt, idx)                                    # (Nb, R, d)
            if kind == "gram":
                g = xp.matmul(Wb, A)                                      # G symmetric: (G w)^T = w^T G
                g -= b
                if want_value:  # w^T G w / 2 - c^T w + b^T b / 2 = w^T (g - c) / 2 + b^T b / 2
                    values.put(idx, 0.5 * xp.sum(Wb * (g - b), axis=-1) + half_bb)
            else:
                r = xp.matmul(Wb, xp.matrix_transpose(A))                 # (Nb, R, rows)
                r -= b
                if want_value:
                    values.put(idx, 0.5 * xp.sum(r * r, axis=-1))
                g = xp.matmul(r, A) if want_grad else None
            if want_grad:
                grads.put(idx, g)
        v = None if values is None else xp.reshape(values.result(), lead + (N,))
        g = None if grads is None else xp.reshape(grads.result(), lead + (N, d))
        return v, g

    def _data_terms_numpy(self, W, want_value: bool, want_grad: bool):
        """NumPy fast path: runs last, so every block is one batched GEMM; results written in place."""
        lead, (N, d) = W.shape[:-2], W.shape[-2:]
        R = int(np.prod(lead, dtype=np.int64))
        lay = self._host_layout(R > 1, W.dtype)
        order = lay["order"]
        Wp = np.moveaxis(W.reshape(R, N, d), 0, -1)[order]  # (N, d, R), clients in block order
        grad_p = np.empty((N, d, R), dtype=W.dtype) if want_grad else None
        value_p = np.empty((N, R), dtype=W.dtype) if want_value else None
        ng = lay["gram_clients"].size
        if ng:
            Wg = _gram_operand(Wp[:ng])
            Gw = np.matmul(lay["G"], Wg)
            if want_value:
                value_p[:ng] = np.einsum("ndr,ndr->nr", Wg, 0.5 * Gw - lay["c"]) + lay["half_bb"]
            if want_grad:
                np.subtract(Gw, lay["c"], out=grad_p[:ng])
        for sl, X, y in lay["buckets"]:
            r = np.matmul(X, Wp[sl])
            r -= y
            if want_grad:
                np.matmul(np.swapaxes(X, 1, 2), r, out=grad_p[sl])  # X is still in cache
            if want_value:
                value_p[sl] = 0.5 * np.einsum("nkr,nkr->nr", r, r)
        grad = value = None
        if want_grad:
            grad = np.empty_like(grad_p)
            grad[order] = grad_p
        if want_value:
            value = np.empty_like(value_p)
            value[order] = value_p
        g = None if grad is None else np.moveaxis(grad, -1, 0).reshape(lead + (N, d))
        v = None if value is None else np.moveaxis(value, -1, 0).reshape(lead + (N,))
        return v, g

    # -- closed-form local phases ---------------------------------------------------------
    def supports_local_steps(self, W) -> bool:
        """Whether :meth:`local_steps` has a closed form for iterates like ``W`` (float32 or float64
        arrays of NumPy, torch or CuPy)."""
        if isinstance(W, np.ndarray):
            return W.dtype in (np.float32, np.float64)
        if not (array_api_compat.is_torch_array(W) or array_api_compat.is_cupy_array(W)):
            return False
        xp = B.namespace(W)
        return W.dtype in (xp.float32, xp.float64)

    def _spectral_to_device(self, like) -> dict:
        """The eigenbases of the device layout's blocks (:func:`~proxfed.problems._device_steps.device_spectral`)."""
        return device_spectral(self, like)

    def _spectral(self, dtype) -> dict:
        """Per-block eigenbases of ``A_i^T A_i``: ``V`` (n, d, r) and ``V^T`` (both contiguous),
        eigenvalues ``s2`` and ``V^T c``; blocks are contiguous slices of the clients in ``order``.

        One block for the Gram clients and one per row bucket (not cut into
        cache chunks: there are few products per call, and their overhead
        dominated with one block per chunk).
        """
        key = ("spectral", np.dtype(dtype).str)
        if key not in self._host_cache:
            lay = self._host_layout(False, np.float64)
            raw = self._layouts["single"]
            blocks = []
            if lay["gram_clients"].size:
                s2, V = np.linalg.eigh(lay["G"])
                blocks.append((lay["gram_clients"], zero_rows(V, lay["G"]), np.maximum(s2, 0.0), lay["c"]))
            for bk in raw["buckets"]:
                X, y = bk.X.astype(np.float64), bk.y.astype(np.float64)[..., None]
                _, sv, Vt = np.linalg.svd(X, full_matrices=False)
                blocks.append((bk.clients, zero_rows(np.swapaxes(Vt, 1, 2), X), sv**2,
                               np.matmul(np.swapaxes(X, 1, 2), y)))
            cast = lambda a: np.ascontiguousarray(a, dtype=dtype)  # noqa: E731
            sizes = [s2.size for _, _, s2, _ in blocks]
            bounds = np.cumsum([0] + [idx.size for idx, _, _, _ in blocks])
            self._host_cache[key] = {
                "blocks": [(slice(int(lo), int(hi)), cast(V), cast(np.swapaxes(V, 1, 2)), cast(s2[..., None]),
                            cast(np.matmul(np.swapaxes(V, 1, 2), c)))
                           for (_, V, s2, c), lo, hi in zip(blocks, bounds[:-1], bounds[1:])],
                "order": np.concatenate([idx for idx, _, _, _ in blocks]),
                "s2": np.concatenate([s2.ravel() for _, _, s2, _ in blocks]),
                "offsets": np.concatenate([[0], np.cumsum(sizes)]),
            }
        return self._host_cache[key]

    def local_steps(self, W, H, gamma, k):
        """``k`` local steps ``w_i <- w_i - gamma (grad f_i(w_i) - h_i)`` at once, in closed form.

        With ``H_i = A_i^T A_i + (alpha/2) I`` the recursion is linear, so
        ``w_k = w_0 - Psi_k(H_i) (grad f_i(w_0) - h_i)`` with
        ``Psi_k(lam) = (1 - (1 - gamma lam)^k) / lam`` (``k gamma`` at ``lam = 0``),
        applied in each client's eigenbasis. Equal to ``k`` explicit steps up to
        rounding; costs about one gradient evaluation whatever ``k``.

        Parameters
        ----------
        W, H : array, shape (..., N, d)
            Client iterates and (fixed) control variates: NumPy, or torch / CuPy
            on their device (:mod:`proxfed.problems._device_steps`: the device
            layout's blocks, each diagonalized once on the device).
        gamma : float or ndarray (R,)
        k : int or integer ndarray (R,), >= 0
            Number of steps (per run), on the host.
        """
        lead, (N, d) = W.shape[:-2], W.shape[-2:]
        R = int(np.prod(lead, dtype=np.int64))
        gam = np.broadcast_to(np.asarray(gamma, dtype=np.float64), (R,))
        ks = np.broadcast_to(np.asarray(k, dtype=np.float64), (R,))
        if np.any(ks < 0) or np.any(ks != np.round(ks)):
            raise ValueError(f"k must be a non-negative integer, got {k!r}")
        if not isinstance(W, np.ndarray):  # the same closed form on the device layout's blocks
            return device_local_steps(self, W, H, np.array(gam), np.array(ks))  # (writable copies)
        half = self.alpha / 2
        psi_half = _psi(np.full(1, half), gam, ks)  # (1, R)
        spec = self._spectral(W.dtype)
        order = spec["order"]
        Wt = np.moveaxis(W.reshape(R, N, d), 0, -1)[order]  # (N, d, R), clients in block order
        Ht = np.moveaxis(H.reshape(R, N, d), 0, -1)[order]
        logs_key = ("psi_logs", half, gam.tobytes())  # stepsizes stay fixed over a run: keep the last ones
        if spec.get("logs_key") != logs_key:
            spec["logs"], spec["logs_key"] = _psi_logs(spec["s2"][:, None] + half, gam), logs_key
        psi_all = (_psi(spec["s2"][:, None] + half, gam, ks, spec["logs"]) - psi_half).astype(W.dtype, copy=False)
        psi_half = psi_half.astype(W.dtype, copy=False)
        keep = (1 - half * psi_half).astype(W.dtype, copy=False)
        out = np.empty((N,) + Wt.shape[1:], dtype=W.dtype)
        for (sl, V, Vt, s2, e), lo, hi in zip(spec["blocks"], spec["offsets"][:-1], spec["offsets"][1:]):
            w0, h = Wt[sl], Ht[sl]
            if R >= 4:  # one GEMM; for few runs two skinny products are faster than one with 2R columns
                zq = np.matmul(Vt, np.concatenate([w0, h], axis=-1))
                z, q = zq[..., :R], zq[..., R:]
            else:
                z, q = np.matmul(Vt, w0), np.matmul(Vt, h)
            v_basis = (s2 + half) * z - e - q
            coef = psi_half * (s2 * z - e) + psi_all[lo:hi].reshape(s2.shape[:2] + (R,)) * v_basis
            # off the clients' row spaces H_i acts as (alpha/2) I: w0 - psi_half ((alpha/2) w0 - h) there
            block = np.multiply(w0, keep, out=out[sl])
            block += psi_half * h
            block -= np.matmul(V, coef)
        result = np.empty_like(out)
        result[order] = out
        return np.moveaxis(result, -1, 0).reshape(W.shape).astype(W.dtype, copy=False)

    def _singular_extremes(self):
        d = self.dim
        smax = np.empty(self.n_clients)
        smin = np.zeros(self.n_clients)
        for i, (A, _) in enumerate(self.dataset.clients()):
            s = np.linalg.svd(A, compute_uv=False)
            smax[i] = s[0]
            smin[i] = s[-1] if A.shape[0] >= d else 0.0
        return smax, smin

    def smoothness(self) -> np.ndarray:
        """``L_i = sigma_max(A_i)^2 + alpha/2``, shape (N,)."""
        if not hasattr(self, "_L"):
            smax, smin = self._singular_extremes()
            self._L, self._mu = smax**2 + self.alpha / 2, smin**2 + self.alpha / 2
        return self._L.copy()

    def strong_convexity(self) -> np.ndarray:
        """``mu_i = sigma_min(A_i)^2 + alpha/2`` (``alpha/2`` when ``n_i < d``), shape (N,)."""
        self.smoothness()
        return self._mu.copy()

    def solution(self) -> np.ndarray:
        """Solve ``(A^T A + (N alpha/2) I) w = A^T b`` (dense, float64)."""
        if self._solution is None:
            A, b = self.dataset.X, self.dataset.y.astype(np.float64)
            H = A.T @ A + (self.n_clients * self.alpha / 2) * np.eye(self.dim)
            try:
                self._solution = scipy.linalg.solve(H, A.T @ b, assume_a="pos")
            except np.linalg.LinAlgError as err:
                raise ValueError("the ridge system is singular; use alpha > 0") from err
        return self._solution.copy()

    def predict(self, w, X):
        """``X @ w``."""
        return np.asarray(X) @ np.asarray(w)

    def _metric(self, y, y_pred):
        return r2_score(y, y_pred)
