"""The follower a Ray shadow's actor runs (:mod:`~nbdeploy.serving.ray_follower`): the
accounts are the hub's, so it counts nothing and reads no labels, and it sends the hub the
shadow's records once they are in the log. It imports no Ray: the hub's handle is given."""

from __future__ import annotations

from typing import Any

from nbdeploy.serving import shadow_rows
from nbdeploy.serving.shadow_follower import Follower

__all__ = ["HubFollower"]

_SEND_S = 30.0  # for the hub to take a batch of records (it may be restarting)


class HubFollower(Follower):
    """A follower whose accounts are the hub's: it counts nothing, reads no labels, and sends
    the shadow's records to the hub once they are in the log."""

    def __init__(self, *args: Any, hub: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.hub = hub  # a Serve handle of the deployment's hub

    def count(self, records: list[dict[str, Any]]) -> int:
        return len(records)

    def dropped(self, record: dict[str, Any]) -> None:
        """Written down as a drop's record (as a replica writes one) once the replay is done, and
        sent: in the log, a later replay finds the mirror answered and drops it no second time."""
        self.drops.append(shadow_rows.dropped(record, "the shadow's backlog was full", self.spec))

    def replay(self) -> int:
        self.drops: list[dict[str, Any]] = []
        replayed = super().replay()
        drops = self.drops
        if drops:
            try:
                drops = self._append(drops, [shadow_rows.line(d) for d in drops], set())
            except OSError as exc:  # a full disk: said, and counted at the hub all the same
                print(f"experiment: {len(drops)} drops were not logged: {type(exc).__name__}: {exc}", flush=True)
            self.written(drops)
        return replayed

    def _labels_so_far(self) -> list[dict[str, Any]]:
        return []

    def _new_labels(self) -> list[dict[str, Any]]:
        return []

    def written(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        try:  # in the log already: a hub's restart reads them there
            self.hub.shadow_records.remote(records).result(timeout_s=_SEND_S)
        except Exception as exc:
            print(f"experiment: {len(records)} shadow records not sent to the hub: {type(exc).__name__}", flush=True)
