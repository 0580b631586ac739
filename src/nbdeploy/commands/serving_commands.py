"""``serve``, ``list``, ``status``, ``logs``, ``predict``, ``update``, ``rollback``, ``stop``,
``monitor``, ``feedback`` and ``alerts``: the deployment side of the table.

Defaults come from :class:`~nbdeploy.spec.DeploymentSpec`, never typed out here.
"""

from __future__ import annotations

import argparse
from typing import Any

from nbdeploy.commands.table import MAGIC, Command, Context, Loads, arg, number
from nbdeploy.spec import DEFAULT_ALERT_K, DEFAULT_WINDOWS, DEFAULTS, PREDICT_METHODS, RAY_DEFAULTS

__all__ = ["COMMANDS"]

NAME = arg("name", metavar="NAME", help="deployment name")


def _serve(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import serve

    dep = serve(
        args.ref, name=args.name, port=args.port, host=args.host, token=args.token, max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms, max_body_bytes=int(args.max_body_mb * (1 << 20)),
        attach=getattr(args, "attach", False), monitor=not args.no_monitor, alerts=args.alert, webhook=args.webhook,
        alert_k=args.alert_k, windows=args.windows, target=args.target, replicas=args.replicas,
        address=args.address, replica_cpus=args.replica_cpus, tls=args.tls, tls_cert=args.tls_cert,
        tls_key=args.tls_key, insecure_http=args.insecure_http, log_inputs=args.log_inputs, redact=args.redact,
        retention=args.retention, core_hour_price=args.core_hour_price,
    )  # fmt: skip
    notice = dep.token_notice(given=bool(args.token))
    if notice:
        ctx.say(notice)
    return dep.status()


def _list(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import deployments

    return ctx.present(deployments())


def _status(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    return get(args.name).status()


def _logs(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    if args.job:
        from nbdeploy.retraining import RetrainJob

        ctx.say(RetrainJob.of(args.name).logs(args.lines))
        return
    ctx.say(get(args.name).logs(args.lines))


def _predict(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get
    from nbdeploy.errors import InvalidInputError

    dep = get(args.name)
    if args.proba and args.method not in ("predict", "predict_proba"):
        raise InvalidInputError(f"Give --proba or --method {args.method}, not both: --proba is --method predict_proba.")
    method = "predict_proba" if args.proba else args.method
    return dep.predict(ctx.load(args.data, "--data", Loads.TABLE), method=method)


def _update(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    return get(args.name).update(args.ref).status()


def _rollback(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    return get(args.name).rollback().status()


def _stop(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import stop

    if args.job:
        from nbdeploy.errors import InvalidInputError
        from nbdeploy.retraining import RetrainJob

        if args.all or not args.name:
            raise InvalidInputError("--job stops one deployment's retraining job: give its NAME (not --all).")
        stopped = RetrainJob.of(args.name).stop()
        ctx.say(f"Stopped the retraining job of {args.name}." if stopped else f"The retraining job of {args.name} "
                "was not running.")  # fmt: skip
        return
    ctx.say(stop(args.name, all=args.all))


def _monitor(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    dep = get(args.name)
    args.window = args.window or dep.spec.alert_window
    return ctx.watch(dep, args)


def _feedback(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    ids = ctx.load(args.ids, "--ids", Loads.IDS)
    result = get(args.name).feedback(ids, ctx.load(args.target, "--target", Loads.COLUMN))
    ctx.say(f"{result['accepted']} labelled, {len(result['unknown'])} unknown request id(s).")


def _alerts(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get
    from nbdeploy.monitoring.view import render_alerts

    doc = get(args.name).alerts(args.add, clear=args.clear, webhook=args.webhook, k=args.k)
    ctx.say(render_alerts(doc))


_SERVE_ARGS = (
    arg("ref", metavar="REF", help="NAME, NAME/VERSION, NAME@ALIAS, models:/... or runs:/..."),
    arg("--name", help="deployment name (default: the model's name)"),
    arg("--port", type=int, default=DEFAULTS.port,
        help=f"port (default: a free one; for --target ray, the proxy's: {RAY_DEFAULTS.http_port})"),
    arg("--host", default=DEFAULTS.host,
        help=f"address to bind (default {DEFAULTS.host}; others need a token, and --tls or --insecure-http)"),
    arg("--token", help="bearer token clients must send (required off loopback; generated when not given)"),
    arg("--tls", action="store_true", help="serve HTTPS with a certificate made for the deployment"),
    arg("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate of your own (with --tls-key)"),
    arg("--tls-key", metavar="PEM", help="the private key of --tls-cert"),
    arg("--insecure-http", action="store_true", help="allow plain HTTP off loopback (tokens and rows in clear text)"),
    arg("--log-inputs", choices=("full", "hashed", "none"), default=DEFAULTS.log_inputs,
        help="what of the inputs the request log keeps: the values, keyed hashes, or nothing (default full)"),
    arg("--redact", action="append", default=[], metavar="COL", help="log this column as a keyed hash (repeatable)"),
    arg("--retention", metavar="AGE", help="remove logged requests and labels older than AGE, e.g. 30d"),
    arg("--core-hour-price", type=number, metavar="PRICE",
        help="price of one CPU core for an hour, for cost figures in /monitor and alerts such as cost_per_1m>2 "
             "(default: %%config DeployMagics.core_hour_price, or NBDEPLOY_CORE_HOUR_PRICE)"),
    arg("--max-batch", type=int, default=DEFAULTS.max_batch, metavar="ROWS",
        help=f"most rows per predict call (default {DEFAULTS.max_batch})"),
    arg("--max-wait-ms", type=number, default=DEFAULTS.max_wait_ms, metavar="MS",
        help=f"how long to wait to fill a batch (default {DEFAULTS.max_wait_ms:g} ms)"),
    arg("--max-body-mb", type=number, default=DEFAULTS.max_body_bytes / (1 << 20), metavar="MB",
        help=f"request body limit (default {DEFAULTS.max_body_bytes >> 20} MB)"),
    arg("--attach", action="store_true", faces=(MAGIC,), help="stop the server when this kernel exits"),
    arg("--alert", action="append", default=[], metavar="RULE", help="alert rule, e.g. p95_ms>50 (repeatable)"),
    arg("--webhook", metavar="URL", help="POST alert events of these rules to this URL"),
    arg("--alert-k", type=int, default=DEFAULT_ALERT_K, metavar="K",
        help=f"breaches to fire, clean runs to resolve (default {DEFAULT_ALERT_K})"),
    arg("--no-monitor", action="store_true", help="keep no monitoring windows"),
    arg("--windows", default=",".join(DEFAULT_WINDOWS), metavar="W,W",
        help=f"monitoring windows, e.g. 30s,15m (default {','.join(DEFAULT_WINDOWS)}; alerts use the first)"),
    arg("--target", choices=("local", "ray"), default=DEFAULTS.target, help="a local process (default), or Ray Serve"),
    arg("--replicas", type=int, default=RAY_DEFAULTS.replicas, metavar="N",
        help=f"replicas on Ray (--target ray; default {RAY_DEFAULTS.replicas})"),
    arg("--address", metavar="ADDR", help="Ray cluster (default: RAY_ADDRESS, or a local one nbdeploy starts)"),
    arg("--replica-cpus", type=number, default=RAY_DEFAULTS.num_cpus, metavar="CPUS",
        help=f"CPUs each Ray replica reserves (default {RAY_DEFAULTS.num_cpus:g})"),
)  # fmt: skip

COMMANDS = [
    Command("serve", "Start an HTTP server (MLflow scoring protocol) for a model version, locally or on Ray.",
            _SERVE_ARGS, _serve),
    Command("list", "List deployments with their state.", (), _list),
    Command("status", "Show one deployment's state, address and the version it serves.", (NAME,), _status),
    Command("logs", "Print the last lines of a deployment's server log.",
            (NAME, arg("-n", "--lines", type=int, default=50, help="how many lines (default 50)"),
             arg("--job", action="store_true", help="the retraining job's log instead of the server's")), _logs),
    Command("predict", "Send data to a deployment and return its predictions.",
            (NAME, arg("--data", metavar="X", required=True, loads=Loads.TABLE, help="expression for the rows to score",
                       cli_help="the rows to score: a CSV or Parquet file"),
             arg("--proba", action="store_true", help="class probabilities (predict_proba) instead of labels"),
             arg("--method", default="predict", choices=PREDICT_METHODS,
                 help="the model's method that answers (default predict)")), _predict),
    Command("update", "Swap the version a deployment serves, without dropping a request.",
            (NAME, arg("ref", metavar="REF", help="the version to serve now")), _update),
    Command("rollback", "Go back to the version a deployment served before its last update.", (NAME,), _rollback),
    Command("stop", "Stop a deployment (or --all of them) and its retraining job; wait for their processes to end.",
            (arg("name", metavar="NAME", nargs="?", help="deployment name"),
             arg("--all", action="store_true", help="stop every deployment"),
             arg("--job", action="store_true", help="stop only the deployment's retraining job")), _stop),
    Command("monitor", "Show a live panel of a deployment's traffic, latency, errors, drift and alerts.",
            (NAME,
             arg("--interval", type=number, default=2.0, metavar="S", help="seconds between refreshes (default 2)"),
             arg("--window", metavar="W", help="window shown: one of the deployment's (default: its first)"),
             arg("--panel", action="store_true", faces=(MAGIC,), help="open in a JupyterLab side panel"),
             arg("--once", action="store_true", faces=("cli",), help="print one snapshot and exit"),
             arg("--json", action="store_true", faces=("cli",), help="print the /monitor JSON document")), _monitor),
    Command("feedback", "Send true labels for answered requests, for live accuracy.",
            (NAME,
             arg("--ids", required=True, metavar="EXPR", loads=Loads.IDS, help="expression for the request ids",
                 cli_help="a CSV or Parquet file with an 'id' column of request ids (or of that one column)"),
             arg("--target", required=True, metavar="Y", loads=Loads.COLUMN, help="expression for the true labels",
                 cli_help="the labels: a column of the --ids file, or a CSV/Parquet file")), _feedback),
    Command("alerts", "Show, add or clear a deployment's alert rules.",
            (NAME,
             arg("--add", action="append", default=[], metavar="RULE", help="rule to add (repeatable)"),
             arg("--webhook", metavar="URL", help="POST events of the added rules to this URL"),
             arg("--k", type=int, default=DEFAULT_ALERT_K,
                 help=f"breaches to fire, clean runs to resolve (default {DEFAULT_ALERT_K})"),
             arg("--clear", action="store_true", help="remove every rule first")), _alerts),
]  # fmt: skip
