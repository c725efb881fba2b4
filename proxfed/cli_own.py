"""``proxfed run``, ``proxfed tune`` and ``proxfed compare``: one's own experiments from the command line.

``proxfed run`` runs any methods of :mod:`proxfed.experiments.catalog` on any
dataset, batched over lists of hyperparameters and seeds
(:func:`proxfed.experiments.own.run_experiment`); ``proxfed tune`` runs the
two-stage random search (:func:`proxfed.experiments.own.tune_experiment`);
``proxfed compare DIR...`` puts results directories side by side
(:func:`proxfed.experiments.compare.compare_results`).

``run`` and ``tune`` read their options from the command line and from a
TOML or JSON file (``--config FILE``, see :mod:`proxfed.config_file`); an
option on the command line overrides the file. Every option is checked
before any work (usage errors: one line naming the option, status 2), as by
the other commands of :mod:`proxfed.cli`.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from .config_file import apply_config, from_file, option_name

__all__ = ["COMMANDS", "add_parsers", "prepare", "main_run", "main_tune", "main_compare"]

#: The subcommands of this module.
COMMANDS = ("run", "tune", "compare")

_SHARED = {"dataset": "synthetic", "no_progress": False}
#: Values of the options that are given neither on the command line nor in the config file.
DEFAULTS = {
    "run": {**_SHARED, "records": 100, "backend": "numpy", "dtype": "float64", "seed": [0], "no_plot": False},
    "tune": {**_SHARED, "seed": 0, "communications": 50, "stage1": 16, "stage2": 8, "narrow": 0.25,
             "gamma_range": [0.05, 3.0], "p_range": [0.02, 1.0], "lam_range": [1e-4, 0.3], "holdout": 0.1,
             "driver": "auto"},
}
#: Options of which only one may be given; the command line's choice replaces the file's.
EXCLUSIVE = (("iterations", "communications"), ("sparsity", "k"))


# ---------------------------------------------------------------------------------------------
# option types: one-line messages naming the problem (argparse adds the option)
# ---------------------------------------------------------------------------------------------
def _number(text: str, what: str, ok) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not (math.isfinite(value) and ok(value)):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _integer(text: str, low: int) -> int:
    try:
        value = int(str(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {text!r}")
    return value


def _positive(text):
    """A finite number > 0."""
    return _number(text, "a finite number > 0", lambda v: v > 0)


def _nonnegative(text):
    """A finite number >= 0."""
    return _number(text, "a finite number >= 0", lambda v: v >= 0)


def _finite(text):
    """A finite number."""
    return _number(text, "a finite number", lambda v: True)


def _probability(text):
    """A number in (0, 1]."""
    return _number(text, "a number in (0, 1]", lambda v: 0 < v <= 1)


def _sparsity(text):
    """A number in [0, 1)."""
    return _number(text, "a sparsity in [0, 1)", lambda v: 0 <= v < 1)


def _fraction(text):
    """A number in (0, 1)."""
    return _number(text, "a number in (0, 1)", lambda v: 0 < v < 1)


def _count(text):
    """An integer >= 1."""
    return _integer(text, 1)


def _natural(text):
    """An integer >= 0."""
    return _integer(text, 0)


# ---------------------------------------------------------------------------------------------
# parsers
# ---------------------------------------------------------------------------------------------
def _catalog_help(datasets_only: bool = False, tunable: bool = False) -> str:
    from .experiments.catalog import DATASETS, METHODS
    from .tune import TUNABLE_METHODS

    lines = ["datasets (--dataset):"]
    lines += [f"  {d.name:<14} {d.description}" + (" [--data-dir]" if d.needs_dir else "")
              for d in DATASETS.values() if not (tunable and d.problem == "torch")]
    if not datasets_only:
        lines.append("methods (--method; code name or paper name, case-insensitive):")
        lines += [f"  {m.name:<28} {m.label}" for m in METHODS.values() if not tunable or m.name in TUNABLE_METHODS]
    return "\n".join(lines)


def _data_arguments(p) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML or JSON file of options (the command line overrides it)")
    p.add_argument("--dataset", help="dataset name (default: synthetic); see the list below")
    p.add_argument("--data-dir", help="folder of the real data (blogfeedback, femnist, cifar10)")
    p.add_argument("--data-option", nargs="+", metavar="KEY=VALUE",
                   help="options of the dataset's generator or loader, e.g. n_clients=20 (config file: [data])")
    p.add_argument("--cache-dir", help="cache of the parsed real data (.npz)")
    p.add_argument("--alpha", type=_positive,
                   help="regularization of the objective (default: 10 synthetic, 1e3 blogfeedback, 1/n softmax)")
    p.add_argument("--method", "--methods", dest="method", nargs="+", metavar="NAME", help="methods to run")
    p.add_argument("--sparsity", nargs="+", type=_sparsity, help="sparsities s, K = d - round(s d) (default: 0.9)")
    p.add_argument("--k", nargs="+", type=_count, help="kept entries K (instead of --sparsity)")
    p.add_argument("--communications", type=_count,
                   help="horizon: communications per run (default: run 100, tune 50)")
    p.add_argument("--out", help="results directory (default: proxfed-results/<command>-<dataset>)")
    p.add_argument("--no-progress", action="store_true", default=None, help="hide progress bars")


def add_parsers(sub) -> None:
    """Add the ``run``, ``tune`` and ``compare`` subparsers to ``sub`` (argparse's subparsers action)."""
    form = argparse.RawDescriptionHelpFormatter
    run = sub.add_parser("run", help="run any methods on any dataset, batched over hyperparameters and seeds",
                         description="Run methods on a dataset; every method is one batched run over the\n"
                                     "product of its hyperparameter lists and the seeds.",
                         epilog=_catalog_help(), formatter_class=form)
    _data_arguments(run)
    run.add_argument("--iterations", type=_count, help="horizon: local steps per run (instead of --communications; "
                                                      "default: 100 communications)")
    run.add_argument("--gamma", nargs="+", type=_positive, help="stepsizes (default: 1/L)")
    run.add_argument("--p", nargs="+", type=_probability,
                     help="communication probabilities (default: 1/sqrt(kappa)); fixed-schedule methods take "
                          "round(1/p) local steps")
    run.add_argument("--local-steps", nargs="+", type=_count,
                     help="local steps per round of FedAvg, FedHT, FedIHT, SCAFFOLD, FedSparsify, FLASH "
                          "(default: round(1/p)); random-coin methods use p = 1/E")
    run.add_argument("--lam", nargs="+", type=_nonnegative,
                     help="RandProx-l1's l1 weights (default: 0.03 ||grad F(0)||_inf)")
    run.add_argument("--clients-per-round", type=_count, help="FedSparsify/FLASH participants per round")
    run.add_argument("--seed", nargs="+", type=_natural, help="seeds of the runs (default: 0)")
    run.add_argument("--records", type=_count, help="history records per run (default: 100)")
    run.add_argument("--backend", choices=("numpy", "torch", "cupy"), help="array library (default: numpy)")
    run.add_argument("--device", help="torch: cpu, cuda, cuda:1 ...; cupy: a GPU index; cifar10: the torch device")
    run.add_argument("--dtype", choices=("float64", "float32"), help="floating type (default: float64)")
    run.add_argument("--no-plot", action="store_true", default=None,
                     help="skip figure.png (proxfed compare DIR draws it later)")

    tune = sub.add_parser("tune", help="two-stage random search of a method's hyperparameters",
                          description="Tune gamma and p (or local steps, and RandProx-l1's lam) by the two-stage\n"
                                      "random search of proxfed.tune, on the validation split.",
                          epilog=_catalog_help(tunable=True), formatter_class=form)
    _data_arguments(tune)
    tune.add_argument("--seed", type=_natural, help="seed of the search, coins and hold-out (default: 0)")
    tune.add_argument("--stage1", type=_count, help="stage-1 configurations (default: 16)")
    tune.add_argument("--stage2", type=_natural, help="stage-2 configurations (default: 8)")
    tune.add_argument("--narrow", type=_probability, help="stage-2 box width relative to stage 1 (default: 0.25)")
    tune.add_argument("--gamma-range", nargs=2, type=_positive, metavar=("LO", "HI"),
                      help="gamma range in units of 1/L (default: 0.05 3)")
    tune.add_argument("--p-range", nargs=2, type=_probability, metavar=("LO", "HI"), help="p range (default: 0.02 1)")
    tune.add_argument("--lam-range", nargs=2, type=_positive, metavar=("LO", "HI"),
                      help="lam range in units of ||grad F(0)||_inf (default: 1e-4 0.3)")
    tune.add_argument("--holdout", type=_fraction, help="held-out share of every client's rows when the data "
                                                       "have no validation split (default: 0.1)")
    tune.add_argument("--driver", choices=("auto", "run", "exact", "run_rounds"),
                      help="how the batches are run (proxfed.tune.tune_method; default: auto)")
    tune.add_argument("--max-iterations", type=_count, help="cap on the local steps of a run")

    cmp = sub.add_parser("compare", help="one table and one figure across results directories",
                         description="Compare the runs of results directories (from proxfed run, saved runs, or "
                                     "reproductions: every saved run below a directory).")
    cmp.add_argument("dirs", nargs="+", metavar="DIR", help="results directories")
    cmp.add_argument("--out", help="where compare.md and compare.png go (default: proxfed-results/compare)")
    cmp.add_argument("--threshold", nargs="+", type=_finite, default=(),
                     help="metric values: a column of the uplink bits at which each is first reached")
    cmp.add_argument("--title", default="", help="title of the table and the figure")


# ---------------------------------------------------------------------------------------------
# preparation and checks (usage errors, before any work)
# ---------------------------------------------------------------------------------------------
def prepare(parser, args) -> None:
    """Merge ``--config``, fill the defaults and resolve names; usage errors exit with status 2.

    ``parser`` is the subcommand's parser (its ``error`` prints its usage).
    """
    from .experiments.catalog import UnknownName, resolve_dataset

    if args.command == "compare":
        args.out = args.out or "proxfed-results/compare"
        return
    args.from_file = set()
    args.config_path = args.config
    if args.config:
        apply_config(parser, args, from_file(parser, args.config), args.config, exclusive=EXCLUSIVE)
    for dest, value in DEFAULTS[args.command].items():
        if getattr(args, dest) is None:
            setattr(args, dest, value)
    try:
        args.dataset = resolve_dataset(args.dataset)
    except UnknownName as exc:
        parser.error(f"{option_name(args, 'dataset')} {args.dataset}: {exc}")
    if args.out is None:
        args.out = f"proxfed-results/{args.command}-{args.dataset}"


def _data_options(parser, args) -> dict:
    """``--data-option KEY=VALUE ...`` (and the file's ``[data]``) as a dict, values parsed as JSON."""
    from .experiments.catalog import dataset_options

    opts = dict(getattr(args, "data_file", None) or {})
    in_file = set(opts)
    for item in args.data_option or ():
        key, sep, text = item.partition("=")
        if not sep or not key:
            parser.error(f"--data-option {item}: expected KEY=VALUE")
        in_file.discard(key.strip())
        try:
            opts[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            opts[key.strip()] = text
    allowed = dataset_options(args.dataset)
    for key in opts:
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            name = f"--data-option (in {args.config_path})" if key in in_file else "--data-option"
            parser.error(f"{name} {key}: not an option of {args.dataset}; {hint}"
                         f"choose from {', '.join(sorted(allowed))}")
    return opts


def _methods(parser, args, allowed=None) -> list:
    from .experiments.catalog import UnknownName, resolve_method

    if not args.method:
        parser.error("--method is required (on the command line or in the config file); "
                     "proxfed run --help lists the methods")
    out = []
    for name in args.method:
        try:
            code = resolve_method(name)
        except UnknownName as exc:
            parser.error(f"{option_name(args, 'method')} {name}: {exc}")
        if allowed is not None and code not in allowed:
            parser.error(f"{option_name(args, 'method')} {name}: proxfed tune searches {', '.join(allowed)}")
        if code not in out:
            out.append(code)
    return out


def _check_data(parser, args) -> None:
    from .cli_checks import data_dir_problem
    from .experiments.catalog import DATASETS

    spec = DATASETS[args.dataset]
    if spec.problem == "torch":
        from .extensions import MissingExtension, load

        try:
            load("torch problem")
        except MissingExtension as err:
            parser.error(f"{option_name(args, 'dataset')} {args.dataset} needs {err.requirement}: {err.install} "
                         f"({err.__cause__})")
    if spec.needs_dir and not args.data_dir:
        parser.error(f"--data-dir is required for {args.dataset}")
    if not spec.needs_dir and args.data_dir:
        parser.error(f"{option_name(args, 'data_dir')} does not apply to {args.dataset} (a built-in generator; "
                     "its options are --data-option KEY=VALUE)")
    if spec.needs_dir:
        problem = data_dir_problem(args.dataset, Path(args.data_dir).expanduser())
        if problem:
            parser.error(f"{option_name(args, 'data_dir')} {args.data_dir}: {problem}")


def _load(parser, args, options):
    """The problem; the errors of a built-in generator's options are usage errors."""
    from .experiments.catalog import DATASETS, load_problem

    needs_dir = DATASETS[args.dataset].needs_dir
    try:
        return load_problem(args.dataset, args.data_dir, options, args.alpha, args.cache_dir,
                            getattr(args, "device", None))
    except (TypeError, ValueError) as exc:
        if needs_dir:
            raise
        parser.error(f"{option_name(args, 'data_option')}: {exc}")


def _check_k(parser, args, dim: int) -> None:
    if args.k:
        bad = [k for k in args.k if k > dim]
        if bad:
            parser.error(f"{option_name(args, 'k')} {bad[0]}: larger than the model dimension d = {dim}")


def _progress(args) -> bool:
    return not args.no_progress


def main_run(parser, args) -> int:
    """``proxfed run`` (``parser``: its subparser)."""
    from . import _backend as B
    from .cli_checks import check_out
    from .experiments.catalog import DATASETS, METHODS
    from .experiments.own import run_experiment

    methods = _methods(parser, args)
    _check_data(parser, args)
    options = _data_options(parser, args)
    if args.iterations is None and args.communications is None:
        args.communications = 100
    if args.iterations is not None and args.communications is not None:
        parser.error("--iterations and --communications: give one horizon")
    if args.sparsity and args.k:
        parser.error("--sparsity and --k: give one of them")
    if args.lam and "randprox_l1" not in methods:
        parser.error(f"{option_name(args, 'lam')} applies to randprox_l1 only")
    if args.clients_per_round is not None and not any(METHODS[m].rounds for m in methods):
        parser.error(f"{option_name(args, 'clients_per_round')} applies to FedSparsify and FLASH only")
    several = len(args.k or args.sparsity or ()) > 1
    for m in methods:
        if several and METHODS[m].rounds:
            parser.error(f"{option_name(args, 'k' if args.k else 'sparsity')}: {m} takes one sparsity per run "
                         "(run each sparsity separately)")
    torch_problem = DATASETS[args.dataset].problem == "torch"
    if torch_problem:
        for dest in ("p", "local_steps", "lam", "k", "sparsity"):
            if len(getattr(args, dest) or ()) > 1:
                parser.error(f"{option_name(args, dest)}: {args.dataset} runs take one value (lists of --gamma "
                             "and --seed are batched)")
        if args.backend != "numpy" or args.dtype != "float64":
            parser.error("--backend and --dtype do not apply to cifar10 (torch models; use --device)")
    like = None
    if not torch_problem and (args.backend != "numpy" or args.dtype != "float64" or args.device):
        try:
            like = B.array_template(args.backend, args.device, args.dtype)
        except Exception as exc:  # noqa: BLE001 - an unknown or absent device fails in the library's own way
            parser.error(f"--backend {args.backend} --device {args.device}: {' '.join(str(exc).split())}")
    check_out(parser, args.out)
    problem, info = _load(parser, args, options)
    _check_k(parser, args, problem.dim)
    run_experiment(problem, args.out, methods, info=info, sparsity=args.sparsity, k=args.k, gamma=args.gamma,
                   p=args.p, local_steps=args.local_steps, lam=args.lam, clients_per_round=args.clients_per_round,
                   iterations=args.iterations, communications=args.communications, seeds=args.seed,
                   records=args.records, like=like, plot=not args.no_plot, progress=_progress(args),
                   options=_replay_options(args, methods, options))
    return 0


def _replay_options(args, methods, options) -> dict:
    """The options of this run as a config file (``run-config.json``): ``proxfed run --config`` repeats it."""
    keys = ("dataset", "data_dir", "alpha", "sparsity", "k", "gamma", "p", "local_steps", "lam",
            "clients_per_round", "iterations", "communications", "seed", "records", "backend", "device", "dtype")
    out = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    out["method"] = methods
    if options:
        out["data"] = options
    return out


def main_tune(parser, args) -> int:
    """``proxfed tune`` (``parser``: its subparser)."""
    from .cli_checks import check_out
    from .experiments.catalog import DATASETS
    from .experiments.own import tune_experiment
    from .tune import TUNABLE_METHODS

    methods = _methods(parser, args, allowed=tuple(TUNABLE_METHODS))
    if DATASETS[args.dataset].problem == "torch":
        parser.error(f"{option_name(args, 'dataset')} {args.dataset}: proxfed tune searches the convex problems "
                     "(synthetic, fedprox, blogfeedback, femnist)")
    _check_data(parser, args)
    options = _data_options(parser, args)
    if args.sparsity and args.k:
        parser.error("--sparsity and --k: give one of them")
    for dest in ("gamma_range", "p_range", "lam_range"):
        lo, hi = getattr(args, dest)
        if lo > hi:
            parser.error(f"{option_name(args, dest)} {lo:g} {hi:g}: LO must be <= HI")
    check_out(parser, args.out)
    problem, info = _load(parser, args, options)
    _check_k(parser, args, problem.dim)
    tune_experiment(problem, args.out, methods, info=info, sparsity=args.sparsity, k=args.k,
                    communications=args.communications, n_stage1=args.stage1, n_stage2=args.stage2,
                    narrow=args.narrow, seed=args.seed,
                    gamma_range=tuple(args.gamma_range), p_range=tuple(args.p_range),
                    lam_range=tuple(args.lam_range), holdout=args.holdout, driver=args.driver,
                    max_iterations=args.max_iterations, progress=_progress(args))
    return 0


def main_compare(parser, args) -> int:
    """``proxfed compare DIR...`` (``parser``: its subparser)."""
    from .cli_checks import check_out
    from .experiments.compare import compare_results, find_run_dirs

    for d in args.dirs:
        path = Path(d).expanduser()
        if not path.is_dir():
            parser.error(f"{d}: no such directory")
        if not find_run_dirs(path):
            parser.error(f"{d}: no results in it (no config.json and history.npz of a saved run, a proxfed run "
                         "directory or a reproduction)")
    check_out(parser, args.out)
    compare_results([Path(d).expanduser() for d in args.dirs], args.out, thresholds=tuple(args.threshold),
                    title=args.title)
    return 0
