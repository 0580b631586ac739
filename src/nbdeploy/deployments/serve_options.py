"""The options of ``serve`` that shape a deployment's spec beyond numbers: the transport
(HTTPS or plain HTTP, and where each is allowed), what of the inputs the request log keeps,
and the Ray part. Each check is one sentence for an option that cannot be.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from nbdeploy import config
from nbdeploy.deployments import ray_client
from nbdeploy.deployments import tls as tls_module
from nbdeploy.errors import Docs, InvalidInputError
from nbdeploy.model_entry import read_signature
from nbdeploy.spec import RAY_DEFAULTS, DeploymentSpec, RaySpec, parse_duration

__all__ = ["check_redacted", "check_transport", "ray_spec", "set_privacy", "set_transport"]


def ray_spec(host: str, port: int, replicas: int, replica_cpus: float, attach: bool) -> RaySpec:
    ray_client.require_ray()
    if attach:
        raise InvalidInputError("--attach ties a local server to this kernel; Ray deployments live on their cluster.")
    return RaySpec(replicas=replicas, num_cpus=replica_cpus, http_host=host,
                   http_port=port or RAY_DEFAULTS.http_port, created=time.time())  # fmt: skip


def set_privacy(spec: DeploymentSpec, log_inputs: str, redact: Sequence[str], retention: str | None) -> None:
    spec.log_inputs, spec.redact = log_inputs, list(dict.fromkeys(redact))
    try:
        spec.retention_s = parse_duration(retention, "--retention") if retention else None
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None


def check_redacted(spec: DeploymentSpec) -> None:
    """A column to redact that the model does not take would redact nothing, silently."""
    inputs, _ = read_signature(Path(spec.current.model_path))
    names = [str(c.get("name")) for c in inputs or []]
    unknown = [c for c in spec.redact if c not in names]
    if unknown:
        raise InvalidInputError(
            f"Invalid --redact {unknown[0]!r}: {spec.current.ref} takes no such column (its columns: "
            f"{', '.join(names[:8])}{', …' if len(names) > 8 else ''}).",
            docs=Docs.PRIVATE_LOGS,
        )


def set_transport(spec: DeploymentSpec, tls: bool, cert: str | None, key: str | None, insecure_http: bool) -> None:
    """HTTPS with the user's certificate (checked now), or with one made later in the folder
    (``tls``), or plain HTTP, said in ``status`` when it is off loopback."""
    spec.insecure_http = check_transport(spec.host, spec.target, tls or bool(cert or key), insecure_http)
    if cert or key:
        if not (cert and key):
            raise InvalidInputError(
                "Give --tls-cert and --tls-key together: the certificate and its private key.", docs=Docs.HTTPS
            )
        spec.tls_cert, spec.tls_key = tls_module.check_pair(cert, key, spec.host)


def check_transport(host: str, target: str, secure: bool, insecure_http: bool) -> bool:
    """Whether plain HTTP was asked for off loopback; one sentence for a transport that cannot
    be (TLS on Ray, clear text off loopback without asking)."""
    if secure and target == "ray":
        raise InvalidInputError(
            "--tls is not available with --target ray: Ray's HTTP proxy is shared by every application of the "
            "cluster and takes its certificate when Ray Serve starts. Serve locally with --tls, or put a "
            "TLS-terminating proxy in front of Ray's.",
            docs=Docs.HTTPS,
        )
    if secure and insecure_http:
        raise InvalidInputError("Choose --tls or --insecure-http, not both.", docs=Docs.THREAT_MODEL)
    if not secure and not insecure_http and not config.is_loopback(host):
        raise InvalidInputError(
            f"Serving on {host} sends tokens and rows in clear text to the network: add --tls (a certificate is "
            "made for the deployment), or --insecure-http to accept that (behind a TLS proxy, for example).",
            docs=Docs.THREAT_MODEL,
        )
    return insecure_http and not config.is_loopback(host)
