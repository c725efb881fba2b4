"""The options of :func:`~proxfed.experiments.paper.reproduce`: checks shared with the CLI, and the recorded command.

Every check raises a ``ValueError`` naming the option (and its ``--flag``)
before any work; :func:`command` writes the ``proxfed reproduce`` line that
asks for the same results again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from .published import PUBLISHED
from .specs import BUDGETS, SPECS, get_budget
from .specs.femnist import PIXEL_CONVENTIONS

__all__ = ["Checked", "check_options", "check_request", "check_scaling", "check_sparsities", "command",
           "read_tuned"]


def check_options(dataset: str, pixels, jobs, backend: str) -> None:
    """The checks of ``pixels`` (None: the default) and ``jobs`` shared by :func:`~proxfed.experiments.paper.reproduce` and the CLI."""
    if pixels is not None and pixels not in PIXEL_CONVENTIONS:
        raise ValueError(f"pixels must be one of {sorted(PIXEL_CONVENTIONS)}, got {pixels!r}")
    if pixels not in (None, "inverted") and not getattr(SPECS.get(dataset), "pixels", False):
        raise ValueError("pixels applies to FEMNIST only (--pixels)")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer (--jobs), got {jobs!r}")
    if jobs > 1 and backend != "numpy":
        raise ValueError("jobs > 1 (--jobs) forks worker processes, which needs backend='numpy' (--backend numpy)")


def check_scaling(dataset: str, scaling) -> str:
    """``scaling`` checked: one of the loader's, and not the default only where the dataset takes it."""
    from ..data.blogfeedback import SCALINGS

    if scaling not in SCALINGS:
        raise ValueError(f"scaling must be one of {', '.join(SCALINGS)} (--scaling), got {scaling!r}")
    if scaling != "minmax" and not getattr(SPECS.get(dataset), "scaling", False):
        raise ValueError("scaling applies to BlogFeedback only (--scaling)")
    return scaling


def check_sparsities(dataset: str, sparsities):
    """``sparsities`` as a sorted tuple of the paper's values (None: all of them)."""
    if sparsities is None:
        return None
    allowed = tuple(PUBLISHED[dataset]["sparsities"])
    bad = [s for s in sparsities if isinstance(s, bool) or not isinstance(s, (int, float))
           or not any(abs(s - a) < 1e-12 for a in allowed)]
    if bad or not len(sparsities):
        raise ValueError(f"sparsities must be among the paper's {', '.join(f'{a:g}' for a in allowed)} "
                         f"for {dataset} (--sparsities), got {list(sparsities)!r}")
    return tuple(a for a in allowed if any(abs(s - a) < 1e-12 for s in sparsities))


def read_tuned(path, methods, sparsities) -> dict:
    """The hyperparameters of ``methods`` in a stored ``tuned.json`` (only the methods it has).

    Keys are sparsities as floats (None for dense ProxSkip); a method must cover
    every sparsity that is run.
    """
    path = Path(path).expanduser()
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"tuned file not found (--tuned): {path}") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"tuned file {path} cannot be read as JSON (--tuned): {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"tuned file {path} (--tuned) must map methods to sparsities, got {type(raw).__name__}")
    out = {}
    for m in methods:
        if m not in raw:
            continue
        entries = {}
        for s_text, e in raw[m].items():
            if not (isinstance(e, dict) and isinstance(e.get("params"), dict)
                    and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                            for v in e["params"].values())):
                raise ValueError(f"tuned file {path} (--tuned): {m} at {s_text} has no finite 'params'")
            entries[None if s_text == "None" else float(s_text)] = dict(e, tuned_from=str(path))
        need = [None] if m == "proxskip" else list(sparsities or entries)
        missing = [s for s in need if s not in entries]
        if missing:
            raise ValueError(f"tuned file {path} (--tuned) has no {m} at sparsities {missing}")
        out[m] = entries
    return out


@dataclass(frozen=True)
class Checked:
    """The options of one reproduction, checked and completed (see :func:`check_request`)."""

    budget: object  # the Budget, with the driver asked for
    methods: tuple
    appendix_d: bool
    scaling: str
    sparsities: tuple | None
    final_communications: int
    given: dict  # hyperparameters read from ``tuned`` by method


def check_request(spec, *, budget, methods, alpha, appendix_d, main, pixels, jobs, backend, driver, scaling,
                  communications, tuned, sparsities) -> Checked:
    """Check :func:`~proxfed.experiments.paper.reproduce`'s options for ``spec``'s dataset, in its order."""
    dataset = spec.name
    b = get_budget(dataset, budget).with_driver(driver)  # (validates the driver)
    methods = tuple(spec.methods if methods is None else methods)
    bad = [m for m in methods if m not in spec.methods]
    if bad:
        raise ValueError(f"unknown methods {bad} for {dataset}; choose from {spec.methods}")
    if appendix_d is None:
        appendix_d = spec.appendix_d
    if appendix_d and not spec.appendix_d:
        raise ValueError("the Appendix D diagnostics run on FEMNIST")
    if alpha == "validation":
        if not spec.validation_alpha:
            raise ValueError('alpha="validation" is the BlogFeedback choice; FEMNIST chooses alpha on its '
                             "hold-out from the budget's grid when alpha is None")
    elif alpha is not None and not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha must be a positive number or 'validation', got {alpha!r}")
    check_options(dataset, pixels, jobs, backend)
    scaling = check_scaling(dataset, scaling)
    sparsities = check_sparsities(dataset, sparsities)
    if communications is not None and (isinstance(communications, bool) or not isinstance(communications, int)
                                       or communications < 1):
        raise ValueError(f"communications must be a positive integer, got {communications!r}")
    given = {} if tuned is None else read_tuned(tuned, methods if main else (),
                                                sparsities or PUBLISHED[dataset]["sparsities"])
    return Checked(b, methods, appendix_d, scaling, sparsities,
                   b.communications if communications is None else communications, given)


def command(dataset, budget, *, methods, seed, alpha, appendix_d, main, pixels, dtype, scaling="minmax",
             communications=None, tuned=None, sparsities=None) -> str:
    """The ``proxfed reproduce`` command line that asks for these results again (``DIR``: the data).

    Every option that changes a number is written; where to compute (backend,
    device, jobs) is not. A :class:`Budget` that is not one of :data:`BUDGETS`
    has no command-line name and is noted as such.
    """
    named = BUDGETS.get(dataset, {}).get(budget.name)
    is_named = named is not None and named.with_driver(budget.driver) == budget
    spec = SPECS[dataset]
    parts = ["proxfed reproduce", dataset if main else f"{dataset}-appendix-d", "--data-dir DIR"]
    parts.append(f"--budget {budget.name}" if is_named else f"--budget <custom {budget.name!r}, see budget>")
    if named is not None and budget.driver != named.driver:
        parts.append(f"--driver {budget.driver}")
    if methods is not None:
        parts.append("--methods " + " ".join(methods))
    if seed != 0:
        parts.append(f"--seed {seed}")
    if alpha is not None:
        parts.append(f"--alpha {alpha if alpha == 'validation' else repr(float(alpha))}")
    if spec.appendix_d and main and not appendix_d:
        parts.append("--no-appendix-d")
    if spec.pixels and pixels != "inverted":
        parts.append(f"--pixels {pixels}")
    if scaling != "minmax":
        parts.append(f"--scaling {scaling}")
    if communications is not None:
        parts.append(f"--communications {communications}")
    if tuned is not None:
        parts.append(f"--tuned {tuned}")
    if sparsities is not None:
        parts.append("--sparsities " + " ".join(f"{s:g}" for s in sparsities))
    if dtype != "float64":
        parts.append(f"--dtype {dtype}")
    return " ".join(parts)
