"""
Prune at the clients, not the server
====================================

Sparse-ProxSkip prunes each client's upload and keeps the pruned copy, which preserves the
zero-sum invariant ``Σ_i h_i = 0``. Accelerated-Server-Pruning (ASP) prunes the average at the
server before the control-variate update, and ``Σ_i h_i`` grows at every communication. The
"modified" variants swap the two behaviours.
"""

import matplotlib.pyplot as plt

import proxfed
from proxfed import algorithms, theory
from proxfed.data import make_sparse_regression
from proxfed.experiments import sparsity_to_k
from proxfed.problems import Ridge

problem = Ridge(make_sparse_regression(seed=0), alpha=10.0)
params = theory.proxskip_parameters(problem)
k = sparsity_to_k(problem.dim, 0.9)
g, p = params["gamma"], params["p"]
methods = {
    "Sparse-ProxSkip": algorithms.sparse_proxskip(g, p, k),
    "SPS-modified": algorithms.sps_modified(g, p, k),
    "ASP": algorithms.accelerated_server_pruning(g, p, k),
    "ASP-modified": algorithms.asp_modified(g, p, k),
}
results = {name: proxfed.run(alg, problem, 4000, seed=0, every=20) for name, alg in methods.items()}

# %%
# Test R² of ``TopK(w̄)`` and the norm of the summed control variates, against communications.

fig, (ax_metric, ax_h) = plt.subplots(1, 2, figsize=(10, 4))
for name, res in results.items():
    h = res.history
    ax_metric.plot(h["communications"], h["metric"], label=name)
    ax_h.semilogy(h["communications"], h["sum_h_norm"] + 1e-16, label=name)
    print(f"{name:16s} final R² = {h['metric'][-1]:.4f}   ||sum h|| = {h['sum_h_norm'][-1]:.2e}")
ax_metric.set_xlabel("communications")
ax_metric.set_ylabel("test R² after TopK")
ax_metric.set_ylim(0.6, 0.9)
ax_h.set_xlabel("communications")
ax_h.set_ylabel(r"$\|\sum_i h_i\|$")
ax_metric.legend()
fig.tight_layout()
