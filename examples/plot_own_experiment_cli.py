"""
Your own experiment from a config file
======================================

``proxfed run --config own_experiment.toml`` runs client pruning (Sparse-ProxSkip) against server
pruning (FedHT, FedIHT) on a small synthetic federated regression: each method one batched run over
two stepsizes and three seeds. The config file sits beside this example
(``examples/own_experiment.toml``); the command line overrides any of its values.
"""

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from proxfed.cli import main
from proxfed.experiments.compare import group_labels, read_run_dir

here = Path(__file__).resolve().parent if "__file__" in globals() else Path.cwd()
config = here / "own_experiment.toml"
print(config.read_text())

# %%
# Run it (``main`` is the ``proxfed`` command; in a shell:
# ``proxfed run --config own_experiment.toml --out my-results``). The results directory holds
# ``experiment.json``, one batched run per method, ``table.md`` and ``figure.png``.

scratch = tempfile.TemporaryDirectory()
out = Path(scratch.name) / "own-experiment"
status = main(["run", "--config", str(config), "--out", str(out), "--no-progress"])
assert status == 0

# %%
# The saved runs are ordinary :meth:`proxfed.RunResult.save` directories. Here they are read back
# and split into groups (a method at one stepsize, its three seeds), the seed mean plotted against
# the uplink bits per client.

groups = [g for method in ("sparse_proxskip", "fedht", "fediht") for g in read_run_dir(out / method)]
fig, ax = plt.subplots(figsize=(7, 4.2))
for label, g in zip(group_labels(groups), groups):
    bits = g.history["bits_up"].mean(axis=1)
    metric = g.history["metric"].mean(axis=1)
    ax.plot(bits[bits > 0], metric[bits > 0], label=label, lw=1.4)
ax.set_xscale("log")
ax.set_ylim(0.5, 0.95)
ax.set_xlabel("uplink bits per client")
ax.set_ylabel(g.metric)
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
print("final test R² (mean over seeds):", {lab: round(float(np.mean(g.history["metric"][-1])), 4)
                                           for lab, g in zip(group_labels(groups), groups)})
scratch.cleanup()
