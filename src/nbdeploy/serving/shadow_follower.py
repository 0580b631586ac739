"""A shadow fed from the request log: the process that predicts a shadow's answers and keeps
the experiment's accounts, so that the server does nothing for it per request.

The server logs every request it answers, inputs included, before it answers
(:mod:`~nbdeploy.serving.requestlog`). Every :data:`LOOK_S` this process reads the records
appended since its last look (:class:`~nbdeploy.serving.log_tail.LogTail`), predicts with the
challenger, in one model call, the rows of those the split mirrors, appends the shadow's
records to the same log (one write per batch, under the logs' lock held shared, so a forget's
swap never loses one), and counts both variants' records in an
:class:`~nbdeploy.serving.experiment_book.ExperimentBook`, as a restart replays them; labels
come from the feedback log the same way. Every few looks it writes the book's state and
verdict to ``shadow-state.json`` in the deployment folder, where the server reads them
(``/experiment``, ``/metrics``, the decisions).

Why: a server that sent mirrors to the shadow's process delayed one client's slowest
requests by 12 % and more (``bench/shadow_cost.py``). A look works in slices of half a
millisecond (:mod:`~nbdeploy.serving.pacing`), paused so that its work spreads over most of
the time to the next look (sized from the bytes waiting and what a byte cost the last looks).

At its start it replays the log from the experiment's start: the counts resume, and the
mirrored requests answered before a ``kill -9`` whose shadow record never came are predicted
then. The shadow predicts a request's rows as the log holds them: its first ``log_rows``
rows, as JSON carries them.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from nbdeploy._files import append_private, flocked, write_atomic
from nbdeploy.experiment import CHAMPION, ExperimentSpec
from nbdeploy.log_files import LOGS_LOCK
from nbdeploy.serving import shadow_rows
from nbdeploy.serving.batching import PredictError, predictions
from nbdeploy.serving.experiment_book import ExperimentBook
from nbdeploy.serving.log_tail import READ_BYTES, LogTail, json_records, log_inodes, rotated_lines, still_logged
from nbdeploy.serving.pacing import Pacer
from nbdeploy.serving.routing import Split

__all__ = ["LOG_FILE", "LOOK_S", "STATE_FILE", "Follower"]

LOG_FILE = "requests.jsonl"  # a local server's request log, in its deployment folder
STATE_FILE = "shadow-state.json"
SHADOW_MARK = b'"shadow":true'  # in every shadow record, as this module and the server's write them
PREDICT_ROWS = 2048  # rows per call of the model
MAX_PENDING_ROWS = 100_000  # rows of a replay's unanswered mirrors held at once; past it the oldest are dropped
STEP = 4  # records taken in between two calls of the pacer (about 0.25 ms of work)
FOLD_EVERY = 256  # requests' inputs binned at once (paced): each fold costs 30 numpy calls a variant
PACED_READ_BYTES = 256 << 10  # read at once while paced: reading and splitting 8 MB would be one long slice
LOOK_S = 2.0  # between the starts of two looks: each predicts once, a slice longer than the others
PACED_SHARE = 0.8  # of the time to the next look, over which a look's work is spread
COST_PER_BYTE = 0.3e-6  # seconds of paced work per byte of log, until looks have measured it
LEARN_BYTES = 64 << 10  # a look that read as much measures the cost of a byte (kept within 4x of the above)
STATE_WORK_S, STATE_OVER_S = 0.05, 0.5  # the accounts' summary (drift tests), spread over half a second
MAX_CARRIED = 10_000  # labels whose request was not counted yet, tried again at the next look


class Follower:
    """The shadow of one experiment: ``model`` (a loaded model), reading the log in ``folder``."""

    def __init__(self, model: Any, spec: ExperimentSpec, names: tuple[str, ...], folder: Path, log_rows: int,
                 task: str | None = None, profile: dict[str, Any] | None = None,
                 log_name: str = LOG_FILE) -> None:  # fmt: skip
        self.model, self.spec, self.names, self.folder, self.log_rows = model, spec, names, folder, log_rows
        self.book = ExperimentBook(spec, names, task, profile)
        self.split = Split.of(spec)
        self.log_path = folder / log_name
        self.requests, self.feedback = LogTail(self.log_path), LogTail(folder / "feedback.jsonl")
        self.since = time.time()  # requests answered from now on are the starting server's own
        self.shadowed_since = 0  # of those, the mirrors answered (the server counts what it mirrored)
        self.replayed = 0
        self.read_last = 0  # lines the last look read
        self.pace = Pacer()  # live looks work in slices a client does not feel (nbdeploy.serving.pacing)
        self.cost_per_byte = COST_PER_BYTE  # learned from the looks' CPU time
        self._carried: list[dict[str, Any]] = []  # labels that came before their request was counted

    def mirrored(self, r: dict[str, Any]) -> bool:
        """Whether ``r`` is a champion's answer this shadow is to predict too."""
        answered = r.get("answered")
        return (r.get("variant") == CHAMPION and r.get("status") == 200 and "method" not in r
                and isinstance(r.get("inputs"), list) and not r.get("inputs_private") and r.get("shadow") is not True
                and isinstance(answered, (int, float)) and answered >= self.spec.started
                and self.split.mirrors(str(r.get("id"))))  # fmt: skip

    # -- a restart: the accounts from the log, and the mirrors left unanswered --------------

    def replay(self) -> int:
        """Count the log's records of this experiment (rotated files first), apply its labels,
        and predict the mirrors whose shadow record is missing; the records counted."""
        self.pace.start(paced=False)  # a restart: the accounts are wanted now
        self.requests.open()
        labels = self._labels_so_far()  # before the requests: a label's request is logged before it
        pending: OrderedDict[str, dict[str, Any]] = OrderedDict()
        sources: set[int] = set()  # the files read
        for inode, lines in rotated_lines(self.log_path, self.requests.inode):
            sources.add(inode)
            self._replay(json_records(lines), pending)
        while lines := self.requests.read():
            sources |= self.requests.sources
            self._replay(json_records(lines), pending)
        self._answer(list(pending.values()), sources)
        self._carried = self._label(labels)
        return self.replayed

    def _replay(self, records: list[dict[str, Any]], pending: OrderedDict[str, dict[str, Any]]) -> None:
        self.replayed += self.count(records)
        for r in records:
            rid = str(r.get("id"))
            if r.get("shadow") is True:
                answered = pending.pop(rid, None)
                if answered is not None and answered["answered"] >= self.since:  # this server's, answered before
                    self.shadowed_since += 1
            elif self.mirrored(r):
                pending[rid] = r
        rows = sum(len(r["inputs"]) for r in pending.values())
        while rows > MAX_PENDING_ROWS:  # a shadow long dead: the oldest are given up, and counted
            _, oldest = pending.popitem(last=False)
            rows -= len(oldest["inputs"])
            self.dropped(oldest)
            if oldest["answered"] >= self.since:  # this server's: no longer in flight
                self.shadowed_since += 1

    def _label(self, records: Iterable[dict[str, Any]], carry: bool = True) -> list[dict[str, Any]]:
        """Score the predictions each label's request got; the labels whose request was not
        counted yet (read after them: the next look tries them again, once)."""
        unmatched = []
        for doc in records:
            ts, labels = doc.get("ts"), doc.get("labels")
            late = isinstance(ts, (int, float)) and ts < self.spec.started  # a label of an earlier request
            if "id" in doc and isinstance(labels, list) and not late:
                if not self.book.arms.label(str(doc["id"]), labels) and carry:
                    unmatched.append(doc)
        return unmatched[-MAX_CARRIED:]

    # -- live: what was logged since the last look -------------------------------------------

    def look(self, paced: bool = True) -> int:
        """Take in what the log gained since the last look (``paced=False``: flat out); the records read."""
        read = rows = taken = 0
        cpu = time.thread_time()
        carried, self._carried = self._carried, []
        labels = self._new_labels()  # first: the request of each of them is logged by now, so within the budget
        budget = self.requests.pending()  # what arrives meanwhile waits for the next look
        if paced:
            self.pace.plan(budget * self.cost_per_byte, PACED_SHARE * LOOK_S)
        else:
            self.pace.start(paced=False)
        paced = self.pace.paced
        sources: set[int] = set()  # the files the mirrored requests were read from
        mirrored: list[dict[str, Any]] = []  # predicted once a look (or PREDICT_ROWS): a model call is a long slice
        while taken < budget:
            lines = self.requests.read(min(PACED_READ_BYTES if paced else READ_BYTES, budget - taken))
            if not self.requests.consumed:
                break
            taken += self.requests.consumed
            sources |= self.requests.sources
            for at in range(0, len(lines), STEP):
                # a shadow record here is ours: left unparsed (half the lines)
                theirs = json_records(line for line in lines[at : at + STEP] if SHADOW_MARK not in line)
                records = [r for r in theirs if r.get("shadow") is not True]
                self._ingest(records)
                for r in records:
                    if self.mirrored(r):
                        mirrored.append(r)
                        rows += len(r["inputs"])
            if rows >= PREDICT_ROWS:
                self._answer(mirrored, sources)
                sources, mirrored, rows = set(), [], 0
            read += len(lines)
        self._answer(mirrored, sources)
        self._label(carried, carry=False)  # after both variants' answers: a label scores both
        self._carried = self._label(labels)
        if taken >= LEARN_BYTES:  # CPU time: a wait for the lock or the CPU is no work
            measured = (time.thread_time() - cpu) / taken
            self.cost_per_byte = min(4 * COST_PER_BYTE, max(COST_PER_BYTE / 4, (self.cost_per_byte + measured) / 2))
        self.read_last = read + len(labels)
        return self.read_last

    def _ingest(self, records: list[dict[str, Any]]) -> None:
        """Count ``records`` (a few), then let the pacer pause."""
        self.count(records)
        if self.book.distributions.queued >= FOLD_EVERY:
            self.book.distributions.fold(self.pace)
        self.pace()

    def count(self, records: list[dict[str, Any]]) -> int:
        """Take ``records`` into the accounts; the number counted."""
        return self.book.ingest(records)

    def dropped(self, record: dict[str, Any]) -> None:
        """A replay gave up the mirror of ``record`` (too many waiting): counted."""
        self.book.count(self.spec.label, "mirror_dropped")

    def _labels_so_far(self) -> list[dict[str, Any]]:
        """Every label logged, rotated files first; the feedback log followed from its end on."""
        self.feedback.open()
        labels = [doc for _, lines in rotated_lines(self.folder / "feedback.jsonl", self.feedback.inode)
                  for doc in json_records(lines)]  # fmt: skip
        return labels + self._new_labels()

    def written(self, records: list[dict[str, Any]]) -> None:
        """The shadow's ``records`` are in the log now (where the server reads their accounts)."""

    def _new_labels(self) -> list[dict[str, Any]]:
        labels = []
        while lines := self.feedback.read():
            labels += json_records(lines)
        return labels

    def _answer(self, mirrored: list[dict[str, Any]], sources: set[int]) -> None:
        """Predict ``mirrored`` requests (read from the files ``sources``) a batch at a time;
        log and count the shadow's answers."""
        batch: list[dict[str, Any]] = []
        rows = 0
        for r in mirrored:
            batch.append(r)
            rows += len(r["inputs"])
            if rows >= PREDICT_ROWS:
                self._answer_batch(batch, sources)
                batch, rows = [], 0
        if batch:
            self._answer_batch(batch, sources)

    def _answer_batch(self, batch: list[dict[str, Any]], sources: set[int]) -> None:
        started = time.perf_counter()
        outcomes = self._predict(batch)
        latency_ms = round((time.perf_counter() - started) * 1000, 3)  # the batch's: what the shadow took
        self.pace()
        records: list[dict[str, Any]] = []
        lines: list[bytes] = []
        for r, outcome in zip(batch, outcomes, strict=True):
            records.append(shadow_rows.record(r, outcome, latency_ms, self.spec, self.log_rows))
            lines.append(shadow_rows.line(records[-1]))
            if len(records) % STEP == 0:
                self.pace()
        try:
            records = self._append(records, lines, sources)
        except OSError as exc:  # a full disk: said; the accounts still count them
            print(f"experiment: {len(records)} shadow answers were not logged: {type(exc).__name__}: {exc}", flush=True)
        self.written(records)
        for at in range(0, len(records), STEP):
            self._ingest(records[at : at + STEP])
        self.shadowed_since += sum(1 for r in batch if r["answered"] >= self.since)

    def _predict(self, batch: list[dict[str, Any]]) -> list[list[Any] | BaseException]:
        """Each request's predictions, or the error the shadow raised on it (a batch that
        fails is predicted again one request at a time, as the server's batcher does)."""
        try:
            out = predictions(self.model.call(shadow_rows.frame(batch, list(self.names))))
        except Exception as exc:
            if len(batch) == 1:
                return [PredictError(f"{type(exc).__name__}: {exc}")]
            return [self._predict([r])[0] for r in batch]
        split: list[list[Any] | BaseException] = []
        at = 0
        for r in batch:
            split.append(out[at : at + len(r["inputs"])])
            at += len(r["inputs"])
        return split

    def _append(self, records: list[dict[str, Any]], lines: list[bytes], sources: set[int]) -> list[dict[str, Any]]:
        """Append ``records`` (as ``lines``) to the request log in one write, the logs' lock held shared: a
        forget's swap (which holds it exclusive) never drops what this writes. If a file their
        requests were read from was swapped since (a forget, or the retention task), the
        requests no longer logged get no shadow record: a forgotten request stays forgotten.
        The records written."""
        with flocked(self.folder / LOGS_LOCK, shared=True):
            if not sources <= log_inodes(self.log_path):
                kept = still_logged(self.log_path, {str(r["id"]) for r in records})
                lines = [line for r, line in zip(records, lines, strict=True) if str(r["id"]) in kept]
                records = [r for r in records if str(r["id"]) in kept]
            if not records:
                return records
            append_private(self.log_path, b"".join(lines))  # after a line torn by a crash, on a new line
        return records

    # -- what the server reads -------------------------------------------------------------

    def write_state(self, paced: bool = True) -> None:
        """The accounts and the verdict, to ``shadow-state.json`` (replaced whole, never torn)."""
        if paced:
            self.pace.plan(STATE_WORK_S, STATE_OVER_S)
        else:
            self.pace.start(paced=False)
        doc = {"state": self.book.state(self.pace), "verdict": self.book.verdict(),
               "shadowed_since": self.shadowed_since, "since": self.since, "time": time.time()}  # fmt: skip
        write_atomic(self.folder / STATE_FILE, json.dumps(doc, default=str), private=True)  # ids and predictions
