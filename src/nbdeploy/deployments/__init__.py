"""The kernel's side of serving: start, find, adopt and stop deployments.

One folder per deployment under ``NBDEPLOY_HOME`` holds everything about it:

    NBDEPLOY_HOME/NAME/
        spec.json         what to serve and how (:class:`~nbdeploy.spec.DeploymentSpec`), with
                          the history of served versions, for rollback
        token             the owner token (the kernel's, role admin), owner-only permissions
        tokens.json       other tokens: label, role and SHA-256, never a value (%deploy token)
        tls/              cert.pem and key.pem (owner-only) of serve --tls
        log.key           the key of the keyed hashes of --log-inputs hashed and --redact
        pid, port         written when the server starts; removed when it is stopped
        server.log        the server's stdout and stderr
        requests.jsonl    one line per answered request (rotated by size)
        feedback.jsonl    labels sent to /feedback
        alerts.jsonl      alert events
        experiments.jsonl how experiments ended (promoted, rolled back, promotion refused)
        audit.jsonl       the audit trail: what changed, when and by whom (served, updated, rolled back,
                          experiments started and concluded by hand, alert rules, tokens, forget,
                          stopped; admin calls of other tokens, by the server); events.jsonl of
                          earlier versions is read with it (both read by the model card)
        models/...        (a challenger's copy too, while an experiment runs)
        models/NAME-vN/   local copy of each served model version (its files' checksums and origin in
                          model/.nbdeploy-copy.json) and its training profile
        deployed          (--target ray) the URL, while the Ray applications are deployed
        requests-R.jsonl  (--target ray) the request log of replica R, on the replica's machine
        hub.json          (--target ray) what the monitoring hub keeps across its restarts

Modules, one concern each (none imports a module listed after it):

- :mod:`.events` — ``audit.jsonl``: what changed and who did it, for the audit and the model card
- :mod:`.tls` — the certificate of ``--tls``, and clients that verify by it
- :mod:`.serve_options` — the transport, privacy and Ray options of ``serve``, checked
- :mod:`.processes` — liveness by identity, process-group stops, the folder lock
- :mod:`.views` — the status card and the listing
- :mod:`.models` — local copies of model versions
- :mod:`.http` — HTTP calls to a server, errors as one sentence
- :mod:`.ray_client` — the local Ray cluster and the Ray controller (``serving.ray_ctl``)
- :mod:`.ray_gcs` — why a local head's GCS server aborted, from its log, and whether its raylet registered;
  :mod:`.ray_auth` — the head's token
- :mod:`.watching` — monitoring of a deployment: snapshot, feedback, alerts, the panel
- :mod:`.experiments` — canary and shadow experiments of a deployment
- :mod:`.export` — the request logs to Parquet (:mod:`.export_rows`, :mod:`.export_labels`)
- :mod:`.access`, :mod:`.audit`, :mod:`.forget`, :mod:`.snippet` — tokens, the audit trail,
  erasure and example calls of a deployment
- :mod:`.handle` — :class:`Deployment`, one deployment
- :mod:`.launch` — :func:`serve`: resolve, copy, write the spec, spawn, wait for health
- :mod:`.store` — :func:`get`, :func:`deployments`, :func:`stop`

>>> d = serve("cancer@champion")        # doctest: +SKIP
>>> d.predict(X_test.head())            # doctest: +SKIP
>>> d.stop()                            # doctest: +SKIP
"""

from __future__ import annotations

import sys
import types

from nbdeploy.deployments.handle import Deployment
from nbdeploy.deployments.launch import serve, start
from nbdeploy.deployments.store import deployments, get, stop, stop_all
from nbdeploy.deployments.views import DeploymentList, Status
from nbdeploy.spec import DeploymentSpec

__all__ = [
    "Deployment", "DeploymentList", "DeploymentSpec", "Status", "deployments", "get", "serve", "start", "stop",
    "stop_all",
]  # fmt: skip


class _Package(types.ModuleType):
    """``nbdeploy.deployments()`` lists the deployments (public API since 0.1), and
    ``nbdeploy.deployments`` is also this package: importing a subpackage sets it as an
    attribute of its parent, over the function. Calling the package calls the function."""

    def __call__(self) -> DeploymentList:
        return deployments()


sys.modules[__name__].__class__ = _Package
