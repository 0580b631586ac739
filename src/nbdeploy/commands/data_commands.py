"""``export`` and ``batch``: the data side of the table (what a deployment served, as a file to
train on; a model over a file of rows)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from nbdeploy.commands.table import Command, Context, Loads, arg
from nbdeploy.spec import BATCH_CHUNK_ROWS

__all__ = ["COMMANDS"]


def _export(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    return get(args.name).export(out=args.out, since=args.since, labelled=args.labelled)


def _batch(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.errors import InvalidInputError, require

    require("pyarrow", "batch", "Batch scoring")  # before the modules that import it
    from nbdeploy.deployments.batch import batch
    from nbdeploy.deployments.batch_io import SUFFIXES

    # a file is streamed chunk by chunk, never loaded whole; in a kernel anything else is an expression
    named = Path(args.data)
    if named.suffix.lower() in SUFFIXES:
        if not named.is_file():
            raise InvalidInputError(f"--data {args.data!r} is not a file.")
        data = args.data
    else:
        data = ctx.load(args.data, "--data", Loads.TABLE)
    return batch(args.ref, data, args.out, chunk_rows=args.chunk_rows, workers=args.workers,
                 proba=not args.no_proba, key=args.key, progress=ctx.progress(f"scoring with {args.ref}"),
                 target=args.target, address=args.address)  # fmt: skip


COMMANDS = [
    Command("export", "Write the inputs a deployment answered (with their labels) to a Parquet file.",
            (arg("name", metavar="NAME", help="deployment name"),
             arg("--since", metavar="AGE", help="only requests answered in the last AGE, e.g. 1d, 12h, 30m"),
             arg("--labelled", action="store_true", help="only rows labelled by /feedback, with a 'label' column"),
             arg("--out", metavar="PATH",
                 help="the Parquet file, or a folder for NAME-requests-<time>.parquet (default: here)")), _export),
    Command("batch", "Score a CSV/Parquet file or a DataFrame with a model version, in parallel chunks, to a file.",
            (arg("ref", metavar="REF", help="NAME/VERSION, NAME@ALIAS, models:/... or runs:/..."),
             arg("--data", required=True, metavar="PATH|X",
                 help="a .csv or .parquet file (streamed), or an expression for a DataFrame",
                 cli_help="the rows to score: a .csv or .parquet file (streamed, never read whole)"),
             arg("--out", required=True, metavar="PATH", help="the predictions file: .parquet or .csv"),
             arg("--chunk-rows", type=int, default=BATCH_CHUNK_ROWS, metavar="N",
                 help=f"rows per chunk (default {BATCH_CHUNK_ROWS:,}); memory grows with it, not with the input"),
             arg("--workers", type=int, metavar="N",
                 help="scoring processes (default: one per core; --target ray: actors, one per CPU of the cluster)"),
             arg("--key", metavar="COLUMN", help="an input column copied beside each prediction (e.g. an id)"),
             arg("--no-proba", action="store_true",
                 help="only predictions (by default a classifier's probabilities too)"),
             arg("--target", choices=("local", "ray"), default="local",
                 help="local processes (default), or Ray Data on a cluster"),
             arg("--address", metavar="ADDR",
                 help="Ray cluster for --target ray (default: RAY_ADDRESS, or a local one nbdeploy starts)")), _batch),
]  # fmt: skip
