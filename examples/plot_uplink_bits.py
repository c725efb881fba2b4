"""
Uplink bits to reach a target accuracy
======================================

The paper's communication tables count 32 bits per uploaded non-zero value, per client, until a
method first reaches a target metric. Here every Algorithm-1 variant and FedHT/FedIHT on the
synthetic default at 90% sparsity, with the theory parameters.
"""

import matplotlib.pyplot as plt
import numpy as np

import proxfed
from proxfed.data import make_sparse_regression
from proxfed.experiments import demo_methods, sparsity_to_k
from proxfed.problems import Ridge

problem = Ridge(make_sparse_regression(seed=0), alpha=10.0)
k = sparsity_to_k(problem.dim, 0.9)
target = 0.80
bits = {}
for name, alg in demo_methods(problem, k).items():
    h = proxfed.run(alg, problem, 2500, seed=0, every=10).history
    hit = np.flatnonzero(h["metric"] >= target)
    bits[name] = h["bits_up"][hit[0]] if hit.size else np.nan
    print(f"{name:28s} {'never' if np.isnan(bits[name]) else f'{bits[name]:,.0f} bits'}")

# %%
# Methods that never reach the target are marked "never".

names = list(bits)
values = np.array([bits[n] for n in names])
fig, ax = plt.subplots(figsize=(7, 4))
ax.barh(names, np.nan_to_num(values, nan=0.0), color="C0")
for i, v in enumerate(values):
    ax.text(v if np.isfinite(v) else 1, i, " never" if np.isnan(v) else f" {v / 1e3:.1f}k", va="center")
ax.set_xscale("log")
ax.set_xlabel(f"uplink bits per client to first reach test R² ≥ {target}")
ax.set_xlim(1e3, 1e6)
ax.invert_yaxis()
fig.tight_layout()
