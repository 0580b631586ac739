"""``nbdeploy`` on the command line: the command table (:mod:`nbdeploy.commands`) for
terminals and CI. Every ``%deploy`` subcommand is here with the same options; arguments
that name data take files instead of Python expressions.

$ nbdeploy register model.pkl --name cancer --data train.csv --target label
$ nbdeploy validate cancer/1 --data test.parquet --target label --gate "f1>=0.9" --strict
$ nbdeploy serve cancer@champion --port 5050 --windows 30s,15m
$ nbdeploy predict cancer --data rows.csv
$ nbdeploy stop --all
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nbdeploy._quiet import quiet, stderr
from nbdeploy._version import __version__
from nbdeploy.commands import CLI, COMMANDS, Loads, add_arguments
from nbdeploy.commands.examples import examples_text
from nbdeploy.errors import Docs, InvalidInputError, NbdeployError, ValidationFailedError, with_docs

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The ``nbdeploy`` parser, one subparser per command of the table."""
    top = argparse.ArgumentParser(
        prog="nbdeploy",
        description="Register, validate, promote, serve and monitor models on MLflow (the %deploy magic's commands).",
    )
    top.add_argument("--version", action="version", version=f"nbdeploy {__version__}")
    top.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    top.add_argument("--experiment", help="MLflow experiment for nbdeploy's runs (default: nbdeploy)")
    top.add_argument("--home", help="deployments folder (default: NBDEPLOY_HOME or ./.nbdeploy)")
    subs = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        sub = subs.add_parser(name, help=command.help, description=command.help, epilog=examples_text(name, CLI),
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        add_arguments(sub, command, CLI)
    return top


_READERS = {".csv": "read_csv", ".parquet": "read_parquet", ".pq": "read_parquet"}


def _read_table(path: str, option: str) -> Any:
    """A CSV or Parquet file as a DataFrame; anything else is one sentence naming ``option``."""
    import pandas as pd

    file = Path(path)
    reader = _READERS.get(file.suffix.lower())
    if reader is None:
        raise InvalidInputError(f"{option} {path!r} is neither .csv nor .parquet: give a CSV or Parquet file.")
    if not file.is_file():
        raise InvalidInputError(f"{option} {path!r} is not a file: give a CSV or Parquet file.")
    try:
        table = pd.read_csv(file, index_col=False) if reader == "read_csv" else pd.read_parquet(file)  # no shift
    except ImportError as exc:  # Parquet needs pyarrow (or fastparquet)
        raise InvalidInputError(f"{option} {path!r} needs {exc.name or 'pyarrow'}, which is not installed here: "
                                "pip install 'nbdeploy[batch]'.", docs=Docs.EXTRAS) from None  # fmt: skip
    except Exception as exc:
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise InvalidInputError(f"{option} {path!r} could not be read as a table ({why}).") from None
    if len(table) == 0:
        raise InvalidInputError(f"{option} {path!r} has no rows.")
    if str(table.columns[0]).startswith("Unnamed: 0"):  # pandas' index, written by to_csv(): not a feature
        table = table.drop(columns=table.columns[0])
    return table


class _TerminalContext:
    """How the command handlers see a terminal: files, stdout, a refreshing text view."""

    face = CLI
    source = None

    def __init__(self) -> None:
        self.last_table: Any = None

    def load(self, text: str | None, option: str, kind: str) -> Any:
        if text is None:
            return None
        if kind == Loads.MODEL:
            return _load_model(text)
        if kind == Loads.COLUMN:
            return self._column(text, option)
        table = _read_table(text, option)
        self.last_table = table
        if kind == Loads.IDS:
            if "id" not in table.columns and table.shape[1] != 1:
                raise InvalidInputError(f"{option} {text!r} has no 'id' column: name the request ids' column id.")
            return (table["id"] if "id" in table.columns else table.iloc[:, 0]).astype(str)
        return table

    def _column(self, text: str, option: str) -> Any:
        """A column of the table loaded last (taken out of it: a target is not a feature), or a file."""
        table = self.last_table
        if table is not None and text in table.columns:
            return table.pop(text)
        if table is not None and Path(text).suffix.lower() not in _READERS:
            columns = ", ".join(map(str, list(table.columns)[:8])) + (", ..." if table.shape[1] > 8 else "")
            raise InvalidInputError(f"{option} {text!r} is not a column of the table given ({columns}), nor a file.")
        column = _read_table(text, option)
        if column.shape[1] != 1:
            raise InvalidInputError(f"{option} {text!r} has {column.shape[1]} columns; give a file of one column.")
        return column.iloc[:, 0]

    def say(self, text: str) -> None:
        print(text)

    def progress(self, what: str) -> Any:
        """A line on stderr rewritten in place (on a terminal; nothing in a log file)."""
        err = stderr()  # the terminal's, not the quiet call's
        if not err.isatty():
            return lambda done, total: None

        def update(done: int, total: int | None) -> None:
            shown = f"{done:,} of {total:,} rows ({100 * done / total:.0f} %)" if total else f"{done:,} rows"
            end = "\n" if done == total else ""
            err.write(f"\r{what}: {shown}{end}")
            err.flush()

        return update

    def present(self, result: Any) -> Any:
        return result

    def watch(self, deployment: Any, args: argparse.Namespace) -> str:
        from nbdeploy.monitoring.view import render_text

        def once() -> str:
            doc = deployment.snapshot(args.window)
            return json.dumps(doc, indent=2) if args.json else render_text(doc, args.window)

        if args.once:
            return once()
        if not args.interval > 0:  # the panel's own check, for the terminal's loop
            raise InvalidInputError(f"Invalid interval {args.interval:g}: use a number of seconds above 0.")
        stop = threading.Event()

        def interrupted(signum: int, frame: Any) -> None:
            # Ctrl-C ends the loop even where a library swallows KeyboardInterrupt, or where
            # SIGINT was ignored when the process started (a job started in the background)
            stop.set()
            signal.default_int_handler(signum, frame)

        previous = signal.signal(signal.SIGINT, interrupted)
        try:
            while not stop.is_set():
                text = once()
                clear = "\x1b[2J\x1b[H" if sys.stdout.isatty() else "\n"  # no control codes in a log file
                sys.stdout.write(clear + text + f"\n\n(every {args.interval:g} s; Ctrl-C to quit)\n")
                sys.stdout.flush()
                stop.wait(args.interval)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGINT, previous)
        return ""


def _load_model(path: str) -> Any:
    """A fitted estimator saved with pickle or joblib (unpickling runs code: trusted files only)."""
    import joblib

    if not Path(path).is_file():
        raise InvalidInputError(f"MODEL {path!r} is not a file: save the fitted estimator with joblib.dump first.")
    try:
        return joblib.load(path)
    except Exception as exc:
        raise InvalidInputError(f"MODEL {path!r} could not be loaded: {type(exc).__name__}: {exc}.") from None


def _show(result: Any) -> None:
    if result is None or (isinstance(result, str) and not result):
        return
    if isinstance(result, str):
        print(result)
    elif hasattr(result, "tolist"):  # predictions: one JSON list, for scripts
        print(json.dumps(result.tolist()))
    else:
        print(repr(result))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbdeploy`` console script; returns the exit status."""
    args = parser().parse_args(argv)
    from nbdeploy.config import configure

    configure(tracking_uri=args.tracking_uri, experiment=args.experiment, home=args.home)
    try:
        with quiet():  # MLflow's log lines only with NBDEPLOY_LOG_LEVEL=INFO or DEBUG
            _show(COMMANDS[args.command].run(args, _TerminalContext()))
    except ValidationFailedError as exc:
        print(repr(exc.report))
        return _fail(with_docs(exc))
    except NbdeployError as exc:
        return _fail(with_docs(exc))
    except OSError as exc:  # the deployments folder or a file nbdeploy writes
        where = f" {exc.filename}" if exc.filename else ""
        why = exc.strerror or str(exc)
        return _fail(f"Cannot use{where}: {why}; check the path (--home, NBDEPLOY_HOME) and its permissions.")
    return 0


def _fail(sentence: str) -> int:
    print(f"nbdeploy: error: {sentence}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
