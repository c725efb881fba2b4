"""Command-line interface: ``proxfed demo``, ``reproduce``, ``run``, ``tune``, ``compare`` (also ``python -m proxfed``).

``proxfed reproduce blogfeedback --data-dir DIR [--budget smoke|small|paper] [--out DIR]``,
``proxfed reproduce femnist ...`` (Tables 3, 4, Figure 3 and Appendix D) and
``proxfed reproduce femnist-appendix-d ...`` (only Appendix D) run
:func:`proxfed.experiments.paper.reproduce`.

Failures are one line on stderr: a usage error (a bad option, a missing or
wrong ``--data-dir``, an ``--out`` that cannot be written) is reported with
the subcommand's usage and exit status 2, before any work and before any
directory is made; a failure while working is reported as
``proxfed <command>: error: ...`` with exit status 1, and an output directory
that the command made and left empty is removed. ``proxfed --debug ...``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from .cli_checks import check_out, data_dir_problem, missing_dirs

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``proxfed`` argument parser."""
    parser = argparse.ArgumentParser(prog="proxfed", description="Sparse federated optimization toolkit.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of a failure (default: one line on stderr)")
    parser.add_argument("--threads", type=int, default=None,
                        help="BLAS/OpenMP threads for the command (default: the libraries' own setting)")
    parser.add_argument("--release-memory", action="store_true",
                        help="let the C library return freed memory to the system (default: keep it for reuse, "
                             "see proxfed.memory.keep_freed_memory)")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run every Algorithm-1 variant and FedHT/FedIHT on the synthetic default")
    demo.add_argument("--out", default="proxfed-results/demo", help="results directory (default: %(default)s)")
    demo.add_argument("--sparsity", type=float, default=0.9, help="target sparsity s in [0, 1) (default: %(default)s)")
    demo.add_argument("--iterations", type=int, default=5000, help="local steps per method (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and the coins (default: %(default)s)")
    demo.add_argument("--alpha", type=float, default=10.0,
                      help="ridge regularization, a finite number > 0 (default: %(default)s)")
    demo.add_argument("--methods", nargs="+", default=None,
                      help="methods to run (default: the Algorithm-1 variants and FedHT/FedIHT; also "
                           "fedsparsify_global, fedsparsify_local, random_pruning, pdst, spdst, jmwst)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    from . import extensions
    from .experiments.specs import EXPERIMENTS, SPECS

    rep = sub.add_parser("reproduce", help="reproduce the paper's BlogFeedback or FEMNIST tables and figures")
    made = {name: "only Appendix D" if only_d else SPECS[d].description for name, (d, only_d) in EXPERIMENTS.items()}
    made.update(extensions.EXPERIMENTS)
    rep.add_argument("experiment", choices=tuple(made), help="; ".join(f"{n}: {what}" for n, what in made.items()))
    rep.add_argument("--data-dir", required=True,
                     help="the dataset folder, or a folder containing blogfeedback/ or femnist/")
    rep.add_argument("--budget", choices=("smoke", "quick", "small", "paper"), default="smoke",
                     help="smoke: minutes, checks the pipeline (not a reproduction); quick (BlogFeedback only): "
                          "300 communications, about 25 minutes; small: BlogFeedback 500 communications (about an "
                          "hour), FEMNIST 30 (hours on one core); paper: the protocol (default: %(default)s)")
    rep.add_argument("--driver", choices=("auto", "exact", "run"), default=None,
                     help="how runs are driven (default: the budget's): exact makes every run of every "
                          "method exactly the horizon's communications (methods without a closed-form local "
                          "phase stop each seed at its own last communication instead of running the expected "
                          "number of local steps); run drives all by proxfed.run in expectation")
    rep.add_argument("--out", default=None, help="results directory (default: proxfed-results/<dataset>-<budget>)")
    rep.add_argument("--methods", nargs="+", default=None, help="subset of the methods")
    rep.add_argument("--seed", type=int, default=0, help="seed of the tuning; final runs use seed+1.. (default: 0)")
    rep.add_argument("--alpha", type=_alpha, default=None,
                     help="regularization, or 'validation' (BlogFeedback: chosen on the validation split); "
                          "default: BlogFeedback chosen on the validation split (1 on the UCI files; the "
                          "paper's text says 1e3), FEMNIST chosen on the hold-out or 1/n")
    rep.add_argument("--no-appendix-d", action="store_true", help="femnist: skip the Appendix D diagnostics")
    rep.add_argument("--cache-dir", default=None, help="cache of the parsed dataset (.npz)")
    rep.add_argument("--no-progress", action="store_true", help="hide progress bars")
    rep.add_argument("--backend", choices=("numpy", "torch", "cupy"), default="numpy",
                     help="array library of the runs (blogfeedback, femnist; default: numpy)")
    rep.add_argument("--device", default=None, help="torch: cpu, cuda, cuda:1 ...; cupy: a GPU index")
    rep.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                     help="floating type of the runs (default: float64)")
    rep.add_argument("--jobs", type=int, default=1,
                     help="worker processes for the tuning searches and final runs (numpy backend; each gets "
                          "1/N of the BLAS threads; default: %(default)s)")
    rep.add_argument("--pixels", choices=("inverted", "leaf"), default=None,
                     help="femnist: train on 1 - x, background 0 as in MNIST (inverted, the default), or on "
                          "LEAF's x with its white background (leaf)")
    rep.add_argument("--scaling", choices=("minmax", "standard", "none"), default="minmax",
                     help="blogfeedback: feature scaling over the training part (default: %(default)s)")
    rep.add_argument("--communications", type=int, default=None,
                     help="horizon of the final runs in communications, overriding the budget's (tuning unchanged)")
    rep.add_argument("--tuned", default=None, metavar="FILE",
                     help="take the hyperparameters of the methods in this tuned.json (from an earlier "
                          "reproduction) instead of tuning them")
    rep.add_argument("--sparsities", type=float, nargs="+", default=None,
                     help="subset of the paper's sparsities to tune and run (e.g. 0.9; default: all)")
    from .cli_own import add_parsers

    add_parsers(sub)
    return parser


def _reproduce_cifar10(parser, args) -> int:
    """``proxfed reproduce cifar10``: :func:`proxfed_dl.reproduce.reproduce_cifar10` (torch needed).

    Found through :mod:`proxfed.extensions` (the core does not import
    ``proxfed_dl``). ``parser`` is the ``reproduce`` subparser (its ``error``
    reports usage errors).
    """
    if args.alpha is not None:
        parser.error("--alpha does not apply to cifar10")
    if args.pixels is not None:
        parser.error("--pixels applies to femnist only")
    if args.jobs != 1:
        parser.error("--jobs applies to blogfeedback and femnist")
    if args.driver is not None:
        parser.error("--driver applies to blogfeedback and femnist")
    from . import extensions

    try:
        known = extensions.load("torch methods", purpose="reproduce cifar10")
        default_methods = extensions.load("reproduce cifar10 methods")
        reproduce_cifar10 = extensions.load("reproduce cifar10")
    except extensions.MissingExtension as err:
        parser.error(str(err))
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    methods = tuple(args.methods) if args.methods else default_methods
    bad = [m for m in methods if m not in known]
    if bad:
        parser.error(f"unknown methods {bad}; choose from {', '.join(known)}")
    _check_paths(parser, args)
    reproduce_cifar10(args.data_dir, args.out, budget=args.budget, methods=methods, seed=args.seed,
                      progress=not args.no_progress)
    return 0


def _alpha(text: str):
    """``--alpha``: a number or the word ``validation``."""
    if text == "validation":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'validation', got {text!r}") from None


def main(argv=None) -> int:
    """Entry point; returns the exit status (0, 1 for a failure while working, 2 for a usage error).

    Usage errors raise :class:`SystemExit` (status 2) through argparse, after
    printing the subcommand's usage and a one-line message to stderr.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    from .memory import keep_freed_memory
    from .threads import blas_threads

    kept = not args.release_memory and keep_freed_memory()
    try:
        with blas_threads(args.threads):
            return _run(parser, args)
    finally:  # a Python caller of main() gets its allocator settings back
        if kept:
            keep_freed_memory(False)


def _run(parser, args) -> int:
    """:func:`_main`, with a failure as one line on stderr (status 1; 130 when interrupted).

    The directories that the command would create (``--out``, ``--cache-dir``)
    and that it leaves empty when it fails are removed. With ``--debug`` the
    exception propagates with its traceback.
    """
    if args.command == "reproduce" and args.out is None:
        args.out = _default_out(args)
    from .cli_own import COMMANDS, prepare

    if args.command in COMMANDS:  # the config file and the defaults (usage errors before anything is made)
        prepare(_subparser(parser, args.command), args)
    made = [d for out in _output_dirs(args) for d in missing_dirs(Path(out))]
    ok = False
    try:
        status = _main(parser, args)
        ok = status == 0
        return status
    except Exception as exc:
        if args.debug:
            raise
        print(f"{_prog(parser, args)}: error: {_one_line(exc)} (proxfed --debug ... shows the traceback)",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{_prog(parser, args)}: interrupted", file=sys.stderr)
        return 130
    finally:
        if not ok:
            _remove_empty(made)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (its type named unless it is an OSError or a ValueError)."""
    message = " ".join(str(exc).split())
    if isinstance(exc, (OSError, ValueError)) and message:
        return message
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _subparser(parser, name: str) -> argparse.ArgumentParser:
    """The subcommand ``name``'s own parser (its ``error`` prints its usage)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices[name]
    raise KeyError(name)


def _prog(parser, args) -> str:
    return _subparser(parser, args.command).prog if args.command else parser.prog


def _output_dirs(args) -> list:
    """The directories that the command writes into: ``--out`` and ``--cache-dir``."""
    return [d for d in (getattr(args, "out", None), getattr(args, "cache_dir", None)) if d is not None]


def _default_out(args) -> str:
    """``proxfed-results/<dataset>-<budget>``, as :func:`proxfed.experiments.paper.reproduce` would choose."""
    from .experiments.specs import EXPERIMENTS

    dataset = EXPERIMENTS.get(args.experiment, (args.experiment,))[0]
    return f"proxfed-results/{dataset}-{args.budget}"


def _remove_empty(dirs) -> None:
    """Remove those of ``dirs`` (deepest first) that exist and are empty directories."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:  # not there, not empty or not a directory: left alone
            pass


def _check_paths(sub, args) -> None:
    """Usage errors for a ``--data-dir`` without the experiment's files and an ``--out`` that cannot be written."""
    problem = data_dir_problem(args.experiment, Path(args.data_dir).expanduser())
    if problem:
        sub.error(f"--data-dir {args.data_dir}: {problem}")
    check_out(sub, args.out)


def _main(parser, args) -> int:
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command == "demo":
        return _demo(_subparser(parser, "demo"), args)
    if args.command == "reproduce" and args.experiment == "cifar10":  # (the one experiment of proxfed.extensions)
        return _reproduce_cifar10(_subparser(parser, "reproduce"), args)
    if args.command == "reproduce":
        return _reproduce(_subparser(parser, "reproduce"), args)
    if args.command in ("run", "tune", "compare"):
        from . import cli_own

        handler = {"run": cli_own.main_run, "tune": cli_own.main_tune, "compare": cli_own.main_compare}
        return handler[args.command](_subparser(parser, args.command), args)
    parser.print_help()
    return 2


def _demo(parser, args) -> int:
    """``proxfed demo`` (``parser``: the ``demo`` subparser)."""
    from .experiments.demo import DEMO_METHODS, SPARSE_TRAINING_DEMO_METHODS, run_demo

    if args.iterations < 1:
        parser.error("--iterations must be >= 1")
    if not 0 <= args.sparsity < 1:
        parser.error("--sparsity must be in [0, 1)")
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if not (math.isfinite(args.alpha) and args.alpha > 0):
        parser.error(f"--alpha must be a finite number > 0, got {args.alpha}")
    methods = tuple(args.methods) if args.methods else DEMO_METHODS
    bad = [m for m in methods if m not in DEMO_METHODS + SPARSE_TRAINING_DEMO_METHODS]
    if bad:
        parser.error(f"unknown methods {bad}; choose from {', '.join(DEMO_METHODS + SPARSE_TRAINING_DEMO_METHODS)}")
    check_out(parser, args.out)
    run_demo(args.out, sparsity=args.sparsity, iterations=args.iterations, seed=args.seed,
             alpha=args.alpha, methods=methods, progress=not args.no_progress)
    return 0


def _reproduce(parser, args) -> int:
    """``proxfed reproduce blogfeedback|femnist|femnist-appendix-d`` (``parser``: the ``reproduce`` subparser)."""
    from .experiments.options import check_options, check_sparsities
    from .experiments.paper import BUDGETS, PAPER_METHODS, reproduce
    from .experiments.specs import EXPERIMENTS, SPECS, with_option

    dataset, only_d = EXPERIMENTS[args.experiment]
    spec = SPECS[dataset]
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    if args.alpha is not None and args.alpha != "validation" and not (math.isfinite(args.alpha) and args.alpha > 0):
        parser.error(f"--alpha must be a finite number > 0 or 'validation', got {args.alpha}")
    if args.budget not in BUDGETS[dataset]:
        parser.error(f"{dataset} has no {args.budget!r} budget; choose from {', '.join(BUDGETS[dataset])}")
    if args.alpha == "validation" and not spec.validation_alpha:
        parser.error(f"--alpha validation is for {' and '.join(with_option('validation_alpha'))} "
                     f"({spec.alpha_policy})")
    if args.pixels is not None and not spec.pixels:
        parser.error(f"--pixels applies to {' and '.join(with_option('pixels'))} only")
    if args.scaling != "minmax" and not spec.scaling:
        parser.error(f"--scaling applies to {' and '.join(with_option('scaling'))} only")
    if args.communications is not None and args.communications < 1:
        parser.error(f"--communications must be >= 1, got {args.communications}")
    if args.tuned is not None and not Path(args.tuned).expanduser().is_file():
        parser.error(f"--tuned: no such file: {args.tuned}")
    if args.sparsities is not None:
        try:
            check_sparsities(dataset, args.sparsities)
        except ValueError as exc:
            parser.error(str(exc))
    try:
        check_options(dataset, args.pixels, args.jobs, args.backend)
    except ValueError as exc:
        parser.error(str(exc))
    if args.methods:
        bad = [m for m in args.methods if m not in PAPER_METHODS[dataset]]
        if bad:
            parser.error(f"unknown methods {bad}; choose from {', '.join(PAPER_METHODS[dataset])}")
    from ._backend import array_template

    try:
        array_template(args.backend, args.device, args.dtype)
    except ValueError as exc:
        parser.error(str(exc))
    _check_paths(parser, args)
    reproduce(dataset, args.data_dir, args.out, budget=args.budget,
              methods=tuple(args.methods) if args.methods else None, seed=args.seed, alpha=args.alpha,
              appendix_d=(spec.appendix_d and not args.no_appendix_d) or only_d, main=not only_d,
              cache_dir=args.cache_dir, progress=not args.no_progress, backend=args.backend,
              device=args.device, dtype=args.dtype, pixels=args.pixels or "inverted", jobs=args.jobs,
              driver=args.driver, scaling=args.scaling, communications=args.communications, tuned=args.tuned,
              sparsities=args.sparsities)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
