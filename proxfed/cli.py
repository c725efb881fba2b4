"""Command-line interface: ``proxfed demo`` (also ``python -m proxfed demo``)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``proxfed`` argument parser."""
    parser = argparse.ArgumentParser(prog="proxfed", description="Sparse federated optimization toolkit.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    demo = sub.add_parser("demo", help="run every Algorithm-1 variant and FedHT/FedIHT on the synthetic default")
    demo.add_argument("--out", default="proxfed-results/demo", help="results directory (default: %(default)s)")
    demo.add_argument("--sparsity", type=float, default=0.9, help="target sparsity s in [0, 1) (default: %(default)s)")
    demo.add_argument("--iterations", type=int, default=5000, help="local steps per method (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and the coins (default: %(default)s)")
    demo.add_argument("--alpha", type=float, default=10.0, help="ridge regularization (default: %(default)s)")
    demo.add_argument("--methods", nargs="+", default=None, help="subset of methods to run")
    demo.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return parser


def main(argv=None) -> int:
    """Entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command == "demo":
        from .experiments.demo import DEMO_METHODS, run_demo

        if args.iterations < 1:
            parser.error("--iterations must be >= 1")
        if not 0 <= args.sparsity < 1:
            parser.error("--sparsity must be in [0, 1)")
        if args.seed < 0:
            parser.error("--seed must be >= 0")
        methods = tuple(args.methods) if args.methods else DEMO_METHODS
        bad = [m for m in methods if m not in DEMO_METHODS]
        if bad:
            parser.error(f"unknown methods {bad}; choose from {', '.join(DEMO_METHODS)}")
        run_demo(args.out, sparsity=args.sparsity, iterations=args.iterations, seed=args.seed,
                 alpha=args.alpha, methods=methods, progress=not args.no_progress)
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
