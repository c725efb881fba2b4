"""Command-line interface: ``proxfed demo`` and ``proxfed reproduce`` (also ``python -m proxfed ...``).

``proxfed reproduce blogfeedback --data-dir DIR [--budget smoke|small|paper] [--out DIR]``,
``proxfed reproduce femnist ...`` (Tables 3, 4, Figure 3 and Appendix D) and
``proxfed reproduce femnist-appendix-d ...`` (only Appendix D) run
:func:`proxfed.experiments.paper.reproduce`.
"""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``proxfed`` argument parser."""
    parser = argparse.ArgumentParser(prog="proxfed", description="Sparse federated optimization toolkit.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
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
    demo.add_argument("--alpha", type=float, default=10.0, help="ridge regularization (default: %(default)s)")
    demo.add_argument("--methods", nargs="+", default=None,
                      help="methods to run (default: the Algorithm-1 variants and FedHT/FedIHT; also "
                           "fedsparsify_global, fedsparsify_local, random_pruning, pdst, spdst, jmwst)")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    rep = sub.add_parser("reproduce", help="reproduce the paper's BlogFeedback or FEMNIST tables and figures")
    rep.add_argument("experiment", choices=("blogfeedback", "femnist", "femnist-appendix-d", "cifar10"),
                     help="blogfeedback: Tables 1, 2, 5 and Figure 2; femnist: Tables 3, 4, Figure 3 and "
                          "Appendix D; femnist-appendix-d: only Appendix D; cifar10: Figure 4 (ResNet18, "
                          "needs the dl extra)")
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
                          "default: 1e3 on BlogFeedback; FEMNIST: chosen on the hold-out or 1/n")
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
    return parser


def _reproduce_cifar10(parser, args) -> int:
    """``proxfed reproduce cifar10``: :func:`proxfed_dl.reproduce.reproduce_cifar10` (torch needed)."""
    if args.alpha is not None:
        parser.error("--alpha does not apply to cifar10")
    if args.pixels is not None:
        parser.error("--pixels applies to femnist only")
    if args.jobs != 1:
        parser.error("--jobs applies to blogfeedback and femnist")
    if args.driver is not None:
        parser.error("--driver applies to blogfeedback and femnist")
    try:
        from proxfed_dl.algorithms import ALGORITHMS
        from proxfed_dl.reproduce import CIFAR10_METHODS, reproduce_cifar10
    except ImportError as err:
        parser.error(f"reproduce cifar10 needs torch (pip install 'proxfed[dl]'): {err}")
    if args.seed < 0:
        parser.error("--seed must be >= 0")
    methods = tuple(args.methods) if args.methods else CIFAR10_METHODS
    bad = [m for m in methods if m not in ALGORITHMS]
    if bad:
        parser.error(f"unknown methods {bad}; choose from {', '.join(ALGORITHMS)}")
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
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    from .memory import keep_freed_memory
    from .threads import blas_threads

    kept = not args.release_memory and keep_freed_memory()
    try:
        with blas_threads(args.threads):
            return _main(parser, args)
    finally:  # a Python caller of main() gets its allocator settings back
        if kept:
            keep_freed_memory(False)


def _main(parser, args) -> int:
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command == "demo":
        from .experiments.demo import DEMO_METHODS, SPARSE_TRAINING_DEMO_METHODS, run_demo

        if args.iterations < 1:
            parser.error("--iterations must be >= 1")
        if not 0 <= args.sparsity < 1:
            parser.error("--sparsity must be in [0, 1)")
        if args.seed < 0:
            parser.error("--seed must be >= 0")
        methods = tuple(args.methods) if args.methods else DEMO_METHODS
        bad = [m for m in methods if m not in DEMO_METHODS + SPARSE_TRAINING_DEMO_METHODS]
        if bad:
            parser.error(f"unknown methods {bad}; choose from {', '.join(DEMO_METHODS + SPARSE_TRAINING_DEMO_METHODS)}")
        run_demo(args.out, sparsity=args.sparsity, iterations=args.iterations, seed=args.seed,
                 alpha=args.alpha, methods=methods, progress=not args.no_progress)
        return 0
    if args.command == "reproduce" and args.experiment == "cifar10":
        return _reproduce_cifar10(parser, args)
    if args.command == "reproduce":
        from .experiments.paper import PAPER_METHODS, reproduce

        dataset = "femnist" if args.experiment.startswith("femnist") else "blogfeedback"
        if args.seed < 0:
            parser.error("--seed must be >= 0")
        if args.alpha is not None and args.alpha != "validation" and not args.alpha > 0:
            parser.error("--alpha must be > 0")
        from .experiments.paper import BUDGETS

        if args.budget not in BUDGETS[dataset]:
            parser.error(f"{dataset} has no {args.budget!r} budget; choose from {', '.join(BUDGETS[dataset])}")
        if args.alpha == "validation" and dataset != "blogfeedback":
            parser.error("--alpha validation is for blogfeedback (FEMNIST chooses alpha on its hold-out by default)")
        if args.pixels is not None and dataset != "femnist":
            parser.error("--pixels applies to femnist only")
        from .experiments.paper import _check_options

        try:
            _check_options(dataset, args.pixels, args.jobs, args.backend)
        except ValueError as exc:
            parser.error(str(exc))
        if args.methods:
            bad = [m for m in args.methods if m not in PAPER_METHODS[dataset]]
            if bad:
                parser.error(f"unknown methods {bad}; choose from {', '.join(PAPER_METHODS[dataset])}")
        only_d = args.experiment == "femnist-appendix-d"
        from ._backend import array_template

        try:
            array_template(args.backend, args.device, args.dtype)
        except ValueError as exc:
            parser.error(str(exc))
        reproduce(dataset, args.data_dir, args.out, budget=args.budget,
                  methods=tuple(args.methods) if args.methods else None, seed=args.seed, alpha=args.alpha,
                  appendix_d=(dataset == "femnist" and not args.no_appendix_d) or only_d, main=not only_d,
                  cache_dir=args.cache_dir, progress=not args.no_progress, backend=args.backend,
                  device=args.device, dtype=args.dtype, pixels=args.pixels or "inverted", jobs=args.jobs,
                  driver=args.driver)
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
