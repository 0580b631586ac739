"""``nbdeploy`` on the command line, mirroring the magics for terminals and CI.

$ nbdeploy models
$ nbdeploy models cancer
$ nbdeploy promote cancer/2 --alias champion
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nbdeploy._version import __version__
from nbdeploy.errors import NbdeployError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbdeploy", description="Register, validate and serve models.")
    parser.add_argument("--version", action="version", version=f"nbdeploy {__version__}")
    parser.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)"
    )
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = subs.add_parser("models", help="list registered models, or the versions of one")
    models.add_argument("name", nargs="?", metavar="NAME")

    promote = subs.add_parser("promote", help="point an alias at a model version")
    promote.add_argument("ref", metavar="REF")
    promote.add_argument("--alias", default="champion")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbdeploy`` console script; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    from nbdeploy.config import configure

    configure(tracking_uri=args.tracking_uri)
    try:
        if args.command == "models":
            from nbdeploy.registry import models

            print(repr(models(args.name)))
        elif args.command == "promote":
            from nbdeploy.registry import promote

            print(repr(promote(args.ref, alias=args.alias)))
    except NbdeployError as exc:
        print(f"nbdeploy: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
