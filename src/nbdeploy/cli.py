"""``nbdeploy`` on the command line, mirroring the magics for terminals and CI.

$ nbdeploy models cancer
$ nbdeploy promote cancer/2 --alias champion
$ nbdeploy serve cancer@champion --port 5050
$ nbdeploy list
$ nbdeploy stop --all
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from nbdeploy._version import __version__
from nbdeploy.errors import NbdeployError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nbdeploy", description="Register, validate and serve models.")
    parser.add_argument("--version", action="version", version=f"nbdeploy {__version__}")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or ./mlflow.db)")
    parser.add_argument("--home", help="deployments folder (default: NBDEPLOY_HOME or ./.nbdeploy)")
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = subs.add_parser("models", help="list registered models, or the versions of one")
    models.add_argument("name", nargs="?", metavar="NAME")
    promote = subs.add_parser("promote", help="point an alias at a model version")
    promote.add_argument("ref", metavar="REF")
    promote.add_argument("--alias", default="champion")
    promote.add_argument("--force", action="store_true", help="promote even if the last validation failed")

    serve = subs.add_parser("serve", help="start a server for a model version (local, or on Ray)")
    serve.add_argument("ref", metavar="REF")
    serve.add_argument("--name")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--token")
    serve.add_argument("--max-batch", type=int, default=1024)
    serve.add_argument("--max-wait-ms", type=float, default=2.0)
    serve.add_argument("--max-body-mb", type=float, default=16.0)
    serve.add_argument("--alert", action="append", default=[], metavar="RULE")
    serve.add_argument("--webhook", metavar="URL")
    serve.add_argument("--alert-k", type=int, default=3)
    serve.add_argument("--no-monitor", action="store_true")
    serve.add_argument("--target", choices=("local", "ray"), default="local")
    serve.add_argument("--replicas", type=int, default=1)
    serve.add_argument("--address", metavar="ADDR")
    serve.add_argument("--replica-cpus", type=float, default=0.5)
    subs.add_parser("list", help="list deployments and their state")
    for name, text in (("status", "show a deployment"), ("rollback", "serve the previous version again")):
        subs.add_parser(name, help=text).add_argument("name", metavar="NAME")
    logs = subs.add_parser("logs", help="print a deployment's server log")
    logs.add_argument("name", metavar="NAME")
    logs.add_argument("-n", "--lines", type=int, default=50)
    update = subs.add_parser("update", help="swap the served version in place")
    update.add_argument("name", metavar="NAME")
    update.add_argument("ref", metavar="REF")
    monitor = subs.add_parser("monitor", help="watch a deployment live (or --once --json for scripts)")
    monitor.add_argument("name", metavar="NAME")
    monitor.add_argument("--interval", type=float, default=2.0)
    monitor.add_argument("--window", default="1m")
    monitor.add_argument("--once", action="store_true", help="print one snapshot and exit")
    monitor.add_argument("--json", action="store_true", help="print the /monitor JSON")
    stop = subs.add_parser("stop", help="stop a deployment, or --all")
    stop.add_argument("name", metavar="NAME", nargs="?")
    stop.add_argument("--all", action="store_true")
    return parser


def _run(args: argparse.Namespace) -> Any:
    from nbdeploy import _deployments as d
    from nbdeploy import registry

    match args.command:
        case "models":
            return registry.models(args.name)
        case "promote":
            return registry.promote(args.ref, alias=args.alias, force=args.force)
        case "serve":
            from nbdeploy._launch import serve

            dep = serve(
                args.ref, name=args.name, port=args.port, host=args.host, token=args.token,
                max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                max_body_bytes=int(args.max_body_mb * (1 << 20)), monitor=not args.no_monitor,
                alerts=args.alert, webhook=args.webhook, alert_k=args.alert_k, target=args.target,
                replicas=args.replicas, address=args.address, replica_cpus=args.replica_cpus,
            )  # fmt: skip
            if dep.spec["require_token"] and not args.token:
                print(f"Bearer token (shown once; kept in {dep.path / 'token'}): {dep.token}")
            return dep.status()
        case "list":
            return d.deployments()
        case "status":
            return d.get(args.name).status()
        case "logs":
            return d.get(args.name).logs(args.lines)
        case "update":
            return d.get(args.name).update(args.ref).status()
        case "rollback":
            return d.get(args.name).rollback().status()
        case "monitor":
            return _monitor(d.get(args.name), args)
        case "stop":
            if args.all == bool(args.name):
                raise SystemExit("nbdeploy: error: give either a deployment NAME or --all")
            if args.all:
                names = d.stop_all()
                return f"Stopped {', '.join(names)}." if names else "No deployment was running."
            d.get(args.name).stop()
            return f"Stopped {args.name}."
    raise AssertionError(args.command)


def _monitor(dep: Any, args: argparse.Namespace) -> str:
    import json
    import time

    from nbdeploy.monitoring.view import render_text

    def once() -> str:
        doc = dep.snapshot(args.window)
        return json.dumps(doc, indent=2) if args.json else render_text(doc, args.window)

    if args.once:
        return once()
    try:
        while True:
            text = once()
            sys.stdout.write("\x1b[2J\x1b[H" + text + f"\n\n(every {args.interval:g} s; Ctrl-C to quit)\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nbdeploy`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    from nbdeploy.config import configure

    configure(tracking_uri=args.tracking_uri, home=args.home)
    try:
        result = _run(args)
    except NbdeployError as exc:
        print(f"nbdeploy: error: {exc}", file=sys.stderr)
        return 1
    print(result if isinstance(result, str) else repr(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
