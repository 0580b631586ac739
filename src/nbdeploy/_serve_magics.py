"""The serving subcommands of ``%deploy``, mixed into :class:`nbdeploy.magics.DeployMagics`.

Each pair ``_args_<sub>`` / ``_do_<sub>`` declares arguments and calls one core function
of the deployments API (``nbdeploy.serve``, ``nbdeploy.get``, ``nbdeploy.deployments``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

SERVE_SUBCOMMANDS = {
    "serve": "Start an HTTP server (MLflow scoring protocol) for a model version, locally or on Ray.",
    "list": "List deployments with their state.",
    "status": "Show one deployment's state, address and the version it serves.",
    "logs": "Print the last lines of a deployment's server log.",
    "predict": "Send data to a deployment and return its predictions.",
    "update": "Swap the version a deployment serves, without dropping a request.",
    "rollback": "Go back to the version a deployment served before its last update.",
    "stop": "Stop a deployment (or --all of them) and wait for its processes to end.",
    "monitor": "Show a live panel of a deployment's traffic, latency, errors, drift and alerts.",
    "feedback": "Send true labels for answered requests, for live accuracy.",
    "alerts": "Show, add or clear a deployment's alert rules.",
}


class ServeCommands:
    """Argument declarations and handlers for the serving subcommands."""

    _eval: Callable[[str | None, str], Any]  # provided by DeployMagics

    def _args_serve(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("ref", metavar="REF", help="NAME, NAME/VERSION, NAME@ALIAS, models:/... or runs:/...")
        p.add_argument("--name", help="deployment name (default: the model's name)")
        p.add_argument(
            "--port", type=int, default=0, help="port (default: a free one; for --target ray, the proxy's: 8000)"
        )
        p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
        p.add_argument("--token", help="bearer token clients must send (required off loopback; generated)")
        p.add_argument("--max-batch", type=int, default=1024, metavar="ROWS", help="rows per predict call")
        p.add_argument("--max-wait-ms", type=float, default=2.0, metavar="MS", help="wait to fill a batch")
        p.add_argument("--max-body-mb", type=float, default=16.0, metavar="MB", help="request body limit")
        p.add_argument("--attach", action="store_true", help="stop the server when this kernel exits")
        p.add_argument("--alert", action="append", default=[], metavar="RULE", help="alert rule, e.g. p95_ms>50")
        p.add_argument("--webhook", metavar="URL", help="POST alert events of these rules to this URL")
        p.add_argument("--alert-k", type=int, default=3, metavar="K", help="breaches to fire, clean runs to resolve")
        p.add_argument("--no-monitor", action="store_true", help="do not keep monitoring windows")
        p.add_argument("--windows", default="1m,5m,1h", metavar="W,W", help="monitoring windows (alerts use the first)")
        p.add_argument("--target", choices=("local", "ray"), default="local", help="local process, or Ray Serve")
        p.add_argument("--replicas", type=int, default=1, metavar="N", help="replicas on Ray (--target ray)")
        p.add_argument("--address", metavar="ADDR", help="Ray cluster (default: RAY_ADDRESS, or a local one)")
        p.add_argument("--replica-cpus", type=float, default=0.5, metavar="CPUS", help="CPUs per Ray replica")

    def _do_serve(self, args: argparse.Namespace) -> Any:
        from nbdeploy._launch import serve

        dep = serve(
            args.ref,
            name=args.name,
            port=args.port,
            host=args.host,
            token=args.token,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_body_bytes=int(args.max_body_mb * (1 << 20)),
            attach=args.attach,
            monitor=not args.no_monitor,
            alerts=args.alert,
            webhook=args.webhook,
            alert_k=args.alert_k,
            windows=args.windows.split(","),
            target=args.target,
            replicas=args.replicas,
            address=args.address,
            replica_cpus=args.replica_cpus,
        )
        if dep.spec["require_token"] and not args.token:
            print(f"Bearer token (shown once; kept in {dep.path / 'token'}): {dep.token}")
        return dep.status()

    def _args_list(self, p: argparse.ArgumentParser) -> None:
        pass

    def _do_list(self, args: argparse.Namespace) -> Any:
        from nbdeploy._deployments import deployments

        listing = deployments()
        if self._in_notebook():
            from nbdeploy.widgets.deployments import DeploymentsPanel

            return DeploymentsPanel(listing)
        return listing

    def _in_notebook(self) -> bool:
        shell = getattr(self, "shell", None)
        return type(shell).__name__ == "ZMQInteractiveShell"

    def _args_status(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME")

    def _do_status(self, args: argparse.Namespace) -> Any:
        from nbdeploy._deployments import get

        return get(args.name).status()

    def _args_logs(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME")
        p.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default 50)")

    def _do_logs(self, args: argparse.Namespace) -> Any:
        from nbdeploy._deployments import get

        print(get(args.name).logs(args.lines))
        return None

    def _args_predict(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME")
        p.add_argument("--data", metavar="X", required=True, help="expression for the rows to score")

    def _do_predict(self, args: argparse.Namespace) -> Any:
        from nbdeploy._deployments import get

        dep = get(args.name)
        return dep.predict(self._eval(args.data, "--data"))

    def _args_update(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME")
        p.add_argument("ref", metavar="REF")

    def _do_update(self, args: argparse.Namespace) -> Any:
        from nbdeploy._deployments import get

        return get(args.name).update(args.ref).status()

    def _args_rollback(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME")

    def _do_rollback(self, args: argparse.Namespace) -> Any:
        from nbdeploy._deployments import get

        return get(args.name).rollback().status()

    def _args_stop(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME", nargs="?")
        p.add_argument("--all", action="store_true", help="stop every deployment")

    def _do_stop(self, args: argparse.Namespace) -> Any:
        from nbdeploy._deployments import get, stop_all
        from nbdeploy.errors import InvalidInputError

        if args.all == bool(args.name):
            raise InvalidInputError("Give either a deployment NAME or --all to %deploy stop.")
        if args.all:
            names = stop_all()
            print(f"Stopped {', '.join(names)}." if names else "No deployment was running.")
            return None
        dep = get(args.name)
        was = dep.state()
        dep.stop()
        print(f"Stopped {args.name}." if was != "stopped" else f"{args.name} was not running.")
        return None

    def _args_monitor(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME")
        p.add_argument("--interval", type=float, default=2.0, metavar="S", help="seconds between refreshes")
        p.add_argument("--window", default="1m", metavar="W", help="window shown: one of the deployment's")
        p.add_argument("--panel", action="store_true", help="open in a JupyterLab side panel")

    def _do_monitor(self, args: argparse.Namespace) -> Any:
        from nbdeploy._deployments import get

        return get(args.name).monitor(interval=args.interval, window=args.window, panel=args.panel)

    def _args_feedback(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME")
        p.add_argument("--ids", required=True, metavar="EXPR", help="expression for the request ids")
        p.add_argument("--target", required=True, metavar="Y", help="expression for the true labels")

    def _do_feedback(self, args: argparse.Namespace) -> Any:
        from nbdeploy._deployments import get

        dep = get(args.name)
        result = dep.feedback(self._eval(args.ids, "--ids"), self._eval(args.target, "--target"))
        print(f"{result['accepted']} labelled, {len(result['unknown'])} unknown request id(s).")
        return None

    def _args_alerts(self, p: argparse.ArgumentParser) -> None:
        p.add_argument("name", metavar="NAME")
        p.add_argument("--add", action="append", default=[], metavar="RULE", help="rule to add (repeatable)")
        p.add_argument("--webhook", metavar="URL", help="POST events of the added rules to this URL")
        p.add_argument("--k", type=int, default=3, help="breaches to fire, clean runs to resolve")
        p.add_argument("--clear", action="store_true", help="remove every rule first")

    def _do_alerts(self, args: argparse.Namespace) -> Any:
        from nbdeploy._deployments import get
        from nbdeploy.monitoring.view import render_alerts

        doc = get(args.name).alerts(args.add, clear=args.clear, webhook=args.webhook, k=args.k)
        print(render_alerts(doc))
        return None
