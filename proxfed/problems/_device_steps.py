"""Ridge's closed-form local phase on the device: one eigendecomposition per block, cached.

:meth:`Ridge.local_steps <proxfed.problems.Ridge.local_steps>` on torch and CuPy (the libraries
:meth:`~proxfed.problems.Ridge.supports_local_steps` accepts besides NumPy). The blocks are those of the device layout (:mod:`proxfed.problems._device`):
ridge's Gram block is diagonalized by one batched ``eigh``, each row bucket ``X`` (Nb, rows, d)
by one batched ``svd``, once per device, in float64 (float32 runs use a cast of it, as on
NumPy). A call then costs a fixed number of kernels per block whatever N, R and the per-run
``k``: the factors ``Psi_k(lam)`` of every eigenvalue and run are one elementwise pass over a
flat ``(S + 1, R)`` array, and each block is two batched ``matmul`` (into its eigenbasis and
back) with runs as columns. Nothing is read back; the per-run ``k`` is the one transfer.
"""

from __future__ import annotations

import array_api_compat
import numpy as np

from .. import _backend as B
from ._device import Assembler, runs_first, take_clients

__all__ = ["device_spectral", "device_local_steps"]


def device_spectral(problem, like) -> dict:
    """The eigenbases of the device layout's blocks, on ``like``'s device and in its dtype.

    Returns a dict with ``blocks``: ``(idx, V, Vt, s2, s2 + alpha/2, V^T c)`` per block
    (``V`` (Nb, d, r) and ``Vt`` contiguous, the others (Nb, 1, r)); ``lam``: every
    block's ``s2 + alpha/2`` flattened in block order, then ``alpha/2`` itself, float64 of
    shape (S + 1, 1); ``bounds``: each block's slice of ``lam``; ``lam_range``: its
    smallest and largest entry on the host (read once, here), which decide which
    branches :func:`_psi` needs without a read-back per call.
    """
    xp, dev = B.namespace(like), B.device_of(like)
    f64 = xp.float64
    if like.dtype != f64:  # decomposed in float64 and cast, as the NumPy path does
        base = problem.device_spectra.get(xp.empty(0, dtype=f64, device=dev))
        cast = lambda a: xp.astype(a, like.dtype)  # noqa: E731
        blocks = [(idx,) + tuple(cast(a) for a in rest) for idx, *rest in base["blocks"]]
        return {**base, "blocks": blocks, "logs": {}}
    data = problem.device_layout.get(like)
    half = problem.alpha / 2
    blocks, flat = [], []
    for kind, idx, A, b, _ in data["blocks"]:
        if kind == "gram":  # A = G (Nb, d, d), b = c (Nb, 1, d)
            s2, V = xp.linalg.eigh(A)
            s2, c = xp.clip(s2, min=0.0), b
        else:  # A = X (Nb, rows, d), b = y (Nb, 1, rows): X^T X = V diag(s^2) V^T
            _, s, Vh = xp.linalg.svd(A, full_matrices=False)
            s2, V, c = s * s, xp.matrix_transpose(Vh), xp.matmul(b, A)
        # rows of the client's zero columns exactly 0: the (alpha/2) I part alone acts there (ridge.zero_rows)
        V = xp.where(xp.all(A == 0, axis=-2)[:, :, None], xp.zeros_like(V), V)
        V, Vt = _c_order(V), _c_order(xp.matrix_transpose(V))  # the products read them as they are
        s2 = s2[:, None, :]
        blocks.append((idx, V, Vt, s2, s2 + half, xp.matmul(c, V)))
        flat.append(xp.reshape(s2, (-1,)))
    lam = xp.concat(flat + [xp.zeros(1, dtype=f64, device=dev)]) + half
    sizes = np.cumsum([0] + [int(f.shape[0]) for f in flat])
    extremes = B.to_numpy(xp.stack([xp.min(lam), xp.max(lam)]))
    return {"blocks": blocks, "lam": lam[:, None], "bounds": list(zip(sizes[:-1], sizes[1:])),
            "lam_range": (float(extremes[0]), float(extremes[1])), "inverse": data["inverse"], "logs": {}}


def _c_order(a):
    """``a`` in C order (a copy where it is not; a copy of a view keeps its strides in torch)."""
    if array_api_compat.is_torch_array(a):
        return a.contiguous()
    if array_api_compat.is_cupy_array(a):  # pragma: no cover - needs a GPU
        import cupy

        return cupy.ascontiguousarray(a)
    return a


def _psi(spec: dict, gam: np.ndarray, ks: np.ndarray, like):
    """``Psi_k(lam) = (1 - (1 - gamma lam)^k) / lam`` of every entry of ``spec["lam"]`` and run: (S + 1, R), float64.

    The same expression as the NumPy path's ``_psi`` (``expm1``/``log1p`` where
    ``gamma lam < 1/2``, ``k gamma`` where ``lam = 0``); the ``k``-free logs are kept per
    stepsize vector, and the flags that skip the other branches come from the host.
    """
    xp = B.namespace(like)
    lam = spec["lam"]
    lo, hi = spec["lam_range"]
    key = gam.tobytes()
    if key not in spec["logs"]:  # stepsizes stay fixed over a run: keep only the last ones
        x = B.device_constant(gam, like=lam) * lam
        spec["logs"] = {key: (x, xp.log1p(-xp.clip(x, max=0.5)), x < 0.5)}
    x, log_base, stable = spec["logs"][key]
    k = B.device_constant(ks, like=lam)  # the one transfer of a call (cached when k repeats)
    out = -(xp.expm1(k * log_base) / lam)
    if not float(np.max(gam)) * hi < 0.5:  # x = gamma lam < 1/2 everywhere otherwise (rounding is monotone)
        out = xp.where(stable, out, (1.0 - (1.0 - x) ** k) / lam)
    if not lo > 0:
        out = xp.where(lam == 0, k * B.device_constant(gam, like=lam) * xp.ones_like(x), out)
    return out


def device_local_steps(problem, W, H, gam: np.ndarray, ks: np.ndarray):
    """:meth:`Ridge.local_steps` for iterates of another library: ``W``, ``H`` (..., N, d) on the device,
    ``gam`` and ``ks`` (R,) float64 on the host (validated by the caller)."""
    xp = B.namespace(W)
    spec = problem.device_spectra.get(W)
    N, d = problem.n_clients, problem.dim
    half = problem.alpha / 2
    psi = _psi(spec, gam, ks, W)                                   # (S + 1, R)
    psi_half64 = psi[-1, :]
    psi_half = xp.astype(psi_half64, W.dtype, copy=False)
    keep = 1 - half * psi_half                                     # from the cast psi_half, as on NumPy
    psi_all = xp.astype(psi[:-1, :] - psi_half64, W.dtype, copy=False)
    Wt, lead, R = runs_first(W, N, (d,))
    Ht, _, _ = runs_first(H, N, (d,))
    WH = xp.concat([Wt, Ht], axis=1)                               # (N, 2R, d): one product per block
    out = Assembler(W, N, R, (d,), spec["inverse"])
    for (idx, V, Vt, s2, s2h, e), (lo, hi) in zip(spec["blocks"], spec["bounds"]):
        wh = take_clients(WH, idx)                                 # (Nb, 2R, d)
        w0, h = wh[:, :R, :], wh[:, R:, :]
        zq = xp.matmul(wh, V)                                      # (Nb, 2R, r)
        z, q = zq[:, :R, :], zq[:, R:, :]
        nb, r = V.shape[0], V.shape[2]
        psi_b = xp.permute_dims(xp.reshape(psi_all[int(lo):int(hi), :], (nb, r, R)), (0, 2, 1))
        v_basis = s2h * z - e - q
        coef = psi_half[:, None] * (s2 * z - e) + psi_b * v_basis
        # off the clients' row spaces H_i acts as (alpha/2) I: w0 - psi_half ((alpha/2) w0 - h) there
        block = w0 * keep[:, None] + psi_half[:, None] * h
        out.put(idx, block - xp.matmul(coef, Vt))
    return xp.reshape(out.result(), lead + (N, d))
