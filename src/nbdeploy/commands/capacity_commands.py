"""``loadtest``: what a deployment sustains, driven by wrk (:mod:`nbdeploy.capacity`);
``recommend``: replicas and CPUs for a target load (:mod:`nbdeploy.capacity.sizing`);
``package``: a build context to ship it (:mod:`nbdeploy.deployments.package`)."""

from __future__ import annotations

import argparse
from typing import Any

from nbdeploy.commands.table import Command, Context, Loads, arg, number
from nbdeploy.errors import Docs, InvalidInputError, ValidationFailedError

__all__ = ["COMMANDS"]


def _connections(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid connection counts {text[:40]!r}: use e.g. 1,16,64") from None


def _loadtest(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    if args.strict and not args.gate:
        raise InvalidInputError(
            "--strict fails on a gate: give at least one --gate, e.g. --gate 'p99_ms<=50'.", docs=Docs.LOADTEST_GATES
        )
    report = get(args.name).loadtest(
        ctx.load(args.data, "--data", Loads.TABLE), connections=args.connections, duration=args.duration,
        rows_per_request=args.rows, gates=args.gate, record=not args.no_record,
    )  # fmt: skip
    if args.strict and report.passed is False:
        raise ValidationFailedError(f"Load test of {report.ref} failed on {', '.join(report.failed)}.", report)
    return report


def _recommend(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments import get

    return get(args.name).recommend(args.rps, args.p99_ms, utilization=args.utilization)


def _package(args: argparse.Namespace, ctx: Context) -> Any:
    from nbdeploy.deployments.package import package

    return package(args.source, args.to, args.dir, image=args.image, replicas=args.replicas)


COMMANDS = [
    Command("loadtest", "Drive a deployment with wrk at a few loads: throughput, latency, CPU and memory, gated.",
            (arg("name", metavar="NAME", help="deployment name"),
             arg("--connections", type=_connections, default=[1, 16, 64], metavar="N,N",
                 help="connections kept busy, one level each (default 1,16,64)"),
             arg("--duration", default="10s", metavar="TIME", help="how long each level lasts (default 10s)"),
             arg("--data", metavar="EXPR", loads=Loads.TABLE,
                 help="rows to send, taken in turn (default: the model's input example)",
                 cli_help="a CSV or Parquet file of rows to send (default: the model's input example)"),
             arg("--rows", type=int, default=1, metavar="N", help="rows per request (default 1)"),
             arg("--gate", action="append", default=[], metavar="EXPR",
                 help="e.g. p99_ms<=50 or rps>=500 (repeatable; rps is the capacity within the latency gates)"),
             arg("--strict", action="store_true", help="fail the cell (exit 1 on the CLI) when a gate fails"),
             arg("--no-record", action="store_true", help="do not record the figures on the version in MLflow")),
            _loadtest),
    Command("recommend", "Replicas and CPUs for a target load, from the served version's last load test.",
            (arg("name", metavar="NAME", help="deployment name"),
             arg("--rps", type=number, required=True, metavar="N", help="requests per second to sustain"),
             arg("--p99-ms", type=number, required=True, metavar="MS", help="the p99 latency to keep under"),
             arg("--utilization", type=number, default=0.7, metavar="U",
                 help="the share of each CPU to plan for, leaving headroom for bursts (default 0.7)")),
            _recommend),
    Command("package", "Write a build context to ship a deployment or model: Dockerfile, Kubernetes or KubeRay.",
            (arg("source", metavar="NAME|REF", help="a deployment here (its spec and model) or a model reference"),
             arg("--to", required=True, choices=("docker", "k8s", "kuberay"), help="what to write for"),
             arg("dir", metavar="DIR", help="a new or empty folder for the build context"),
             arg("--image", help="the image name the manifests use (default NAME:VERSION)"),
             arg("--replicas", type=int, default=2, metavar="N", help="pods (or Ray replicas) to start with")),
            _package),
]  # fmt: skip
