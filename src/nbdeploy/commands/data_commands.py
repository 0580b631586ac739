"""``export``: the data side of the table (what a deployment served, as a file to train on)."""

from __future__ import annotations

import argparse
from typing import Any

from nbdeploy.commands.table import Command, Context, arg

__all__ = ["COMMANDS"]


def _export(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    return get(args.name).export(out=args.out, since=args.since, labelled=args.labelled)


COMMANDS = [
    Command("export", "Write the inputs a deployment answered (with their labels) to a Parquet file.",
            (arg("name", metavar="NAME", help="deployment name"),
             arg("--since", metavar="AGE", help="only requests answered in the last AGE, e.g. 1d, 12h, 30m"),
             arg("--labelled", action="store_true", help="only rows labelled by /feedback, with a 'label' column"),
             arg("--out", metavar="PATH",
                 help="the Parquet file, or a folder for NAME-requests-<time>.parquet (default: here)")), _export),
]  # fmt: skip
