"""
The sparsity path of RandProx-l1
================================

RandProx-l1 soft-thresholds every client after every local step, solving
``min (1/N) Σ_i f_i(w) + λ‖w‖₁``. Runs are an array axis in proxfed: a grid of λ values runs as one
batched run (hyperparameters of shape ``(R,)``), reading the data once per step for all of them.
"""

import matplotlib.pyplot as plt
import numpy as np

import proxfed
from proxfed import algorithms, theory
from proxfed.data import make_sparse_regression
from proxfed.problems import Ridge

problem = Ridge(make_sparse_regression(seed=0), alpha=10.0)
params = theory.proxskip_parameters(problem)
lam_max = float(np.abs(problem.full_grad(np.zeros(problem.dim))).max())  # above it, w* = 0
lams = lam_max * np.logspace(-3, 0, 10)

alg = algorithms.randprox_l1(params["gamma"], params["p"], lam=lams)  # ten runs at once
result = proxfed.run(alg, problem, 4000, seed=0)
nnz = result.history["upload_nnz"][-1]  # mean non-zeros of the clients' last uploads
r2 = result.history["metric"][-1]
for lam, n, r in zip(lams, nnz, r2):
    print(f"lambda = {lam:9.3f}: upload nnz = {n:5.1f}, test R² = {r:.4f}")

# %%
# The non-zeros of what the clients upload (the communication cost per message) and the test R²
# of the averaged model, along the path. The average of differently-sparse client models is
# denser than each of them, which is why the paper prunes it with TopK before evaluating.

fig, ax = plt.subplots(figsize=(6, 4))
ax.semilogx(lams, nnz, "o-", color="C0")
ax.set_xlabel(r"$\lambda$")
ax.set_ylabel("non-zeros per upload (mean over clients)", color="C0")
ax2 = ax.twinx()
ax2.semilogx(lams, r2, "s--", color="C1")
ax2.set_ylabel("test R²", color="C1")
ax.set_title("RandProx-l1 sparsity path (one batched run)")
fig.tight_layout()
