"""The follower a Ray shadow's actor runs (serving/hub_follower.py), on real files and a real
scikit-learn tree: what it sends the hub after a replay that had to give mirrors up, after a
second replay (Ray restarting the actor), and live. The hub's handle is the one thing stood in
for (a recorder of what is sent); the actor, the hub and the replicas are tested end to end in
test_ray.py; this process imports no Ray (the test process never does)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from nbdeploy.monitoring.replay import read_records
from nbdeploy.serving import shadow_follower
from nbdeploy.serving.experiment_book import ExperimentBook
from nbdeploy.serving.hub_follower import HubFollower
from nbdeploy.serving.requestlog import RequestLog
from tests.test_shadow_follower import NAMES, Tree, _champion, _spec


class _Sent:
    """What the follower sends the hub (``shadow_records.remote(records).result()``)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    @property
    def shadow_records(self) -> _Sent:
        return self

    def remote(self, records: list[dict[str, Any]]) -> _Sent:
        self.records += records
        return self

    def result(self, timeout_s: float) -> None:
        return None


def test_drops_are_logged_and_sent_once_and_every_mirror_predicted_once(tmp_path: Path, monkeypatch: Any) -> None:
    sent = _Sent()
    monkeypatch.setattr(shadow_follower, "MAX_PENDING_ROWS", 5)  # a shadow long dead: 20 waiting, 5 kept
    started = time.time() - 60
    log = RequestLog(tmp_path / "requests-r1.jsonl")
    champions = [_champion(i, i / 10 - 1, started + i) for i in range(20)]
    log.append_many(champions)
    feedback = RequestLog(tmp_path / "feedback.jsonl")
    feedback.append({"ts": started + 1, "id": "r3", "labels": [1]})  # the hub reads labels, not the actor

    def follower() -> Any:
        f = HubFollower(Tree(), _spec(started), NAMES, tmp_path, 100, log_name="requests-r1.jsonl", hub=sent)
        f.replay()
        return f

    follower()
    dropped = [r for r in sent.records if r.get("dropped")]
    answered = [r for r in sent.records if not r.get("dropped")]
    assert len(dropped) == 15 and len(answered) == 5 and all(r["status"] == 503 for r in dropped)
    logged = sorted(r["id"] for r in read_records(tmp_path / "requests-r1.jsonl") if r.get("shadow"))
    assert logged == sorted(r["id"] for r in sent.records)  # what was sent is in the log: a hub's restart counts it
    before = len(sent.records)
    live = follower()  # Ray started the actor again: nothing is dropped or predicted twice
    assert len(sent.records) == before
    log.append_many([_champion(i, 0.5, time.time()) for i in range(20, 23)])
    live.look(paced=False)
    assert [r["id"] for r in sent.records[before:]] == ["r20", "r21", "r22"]
    log.close()
    feedback.close()
    # the hub's accounts from what the replica forwards (the champion's records) and what was sent, shadows first
    book = ExperimentBook(_spec(started), NAMES, "classification")
    book.ingest(sent.records)
    book.ingest([r for r in read_records(tmp_path / "requests-r1.jsonl") if not r.get("shadow")])
    counts = book.state()["counts"]["2"]
    assert counts["shadowed"] == 8 and counts["mirror_dropped"] == 15
    assert book.state()["agreement"]["rows"] == 8
    assert "ray" not in sys.modules  # the follower imports no Ray: the test process never joins a cluster
