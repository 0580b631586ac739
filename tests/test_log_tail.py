"""LogTail: the lines appended to a log, once each, across rotations and swaps (the shadow
that reads the request log stands on it). Real files, and a real RequestLog rotating and
forgetting while a tail reads."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from nbdeploy.log_files import not_of
from nbdeploy.serving.log_tail import LogTail, json_records
from nbdeploy.serving.requestlog import RequestLog


def _ids(lines: list[bytes]) -> list[str]:
    return [json.loads(line)["id"] for line in lines]


def _append(path: Path, *ids: str) -> None:
    with path.open("ab") as fh:
        fh.write(b"".join(json.dumps({"id": i}).encode() + b"\n" for i in ids))


def _rotate(log: Path) -> None:
    """What RequestLog's rotation does: NAME.k -> NAME.k+1, then NAME -> NAME.1."""
    rotated = sorted(log.parent.glob(log.name + ".*"), key=lambda p: -int(p.suffix[1:]))
    for path in rotated:
        path.rename(log.with_name(f"{log.name}.{int(path.suffix[1:]) + 1}"))
    log.rename(log.with_name(f"{log.name}.1"))


def test_complete_lines_are_read_once_and_a_line_being_written_waits(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    tail = LogTail(log)
    assert tail.read() == []  # no file yet
    _append(log, "a", "b")
    with log.open("ab") as fh:
        fh.write(b'{"id": "c"')  # half a line
    assert _ids(tail.read()) == ["a", "b"]
    assert tail.read() == []
    with log.open("ab") as fh:
        fh.write(b"}\n")
    assert _ids(tail.read()) == ["c"]


def test_a_rotated_file_is_read_to_its_end_then_the_new_one_from_its_start(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    _append(log, "a")
    tail = LogTail(log)
    assert _ids(tail.read()) == ["a"]
    _append(log, "b")
    _rotate(log)
    _append(log, "c", "a")  # a line equal to one of the rotated file is a new line of the new file
    assert _ids(tail.read()) == ["b"]
    assert _ids(tail.read()) == ["c", "a"]


def test_a_tail_behind_two_rotations_reads_the_file_between_them(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    _append(log, "a")
    tail = LogTail(log)
    assert _ids(tail.read()) == ["a"]
    _append(log, "b")
    _rotate(log)
    _append(log, "c")
    _rotate(log)
    _append(log, "d")
    read = []
    while lines := tail.read():
        read += _ids(lines)
    assert read == ["b", "c", "d"]


def test_a_swapped_in_copy_gives_only_the_lines_not_read_before(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    _append(log, "a", "b", "c")
    tail = LogTail(log)
    assert _ids(tail.read()) == ["a", "b", "c"]
    copy = tmp_path / "copy"
    _append(copy, "a", "c", "d")  # "b" forgotten, "d" appended after the filtering
    os.replace(copy, log)
    _append(log, "e")
    assert _ids(tail.read()) == ["d", "e"]


def test_a_copy_rotated_before_the_tail_came_to_it_is_read_before_the_live_file(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    _append(log, "a", "b")
    tail = LogTail(log)
    assert _ids(tail.read()) == ["a", "b"]
    copy = tmp_path / "copy"
    _append(copy, "a", "c")  # a forget took out "b"; "c" was appended to the copy after the swap
    os.replace(copy, log)
    _rotate(log)  # the copy is NAME.1 before the tail looked again
    _append(log, "d")
    assert _ids(tail.read()) + _ids(tail.read()) == ["c", "d"]  # "c" is not lost with the live file taken for the copy


def test_a_torn_line_at_a_rotated_files_end_is_left_behind(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    _append(log, "a")
    with log.open("ab") as fh:
        fh.write(b'{"id": "torn')  # a server killed mid-write
    tail = LogTail(log)
    assert _ids(tail.read()) == ["a"]
    _rotate(log)
    _append(log, "b")
    assert _ids(tail.read()) == ["b"]  # the torn start was not glued to the new file's first line


def test_every_record_of_a_rotating_forgetting_log_is_read_once(tmp_path: Path) -> None:
    """A RequestLog rotating every few KB and a forget taking records out of every file, while
    a tail reads: each record is read once; none is missed but those forgotten first."""
    path = tmp_path / "requests.jsonl"
    log = RequestLog(path, max_bytes=8_000, backups=1000)
    total, forgotten = 6000, {f"r{i}" for i in range(0, 6000, 7)}
    done = threading.Event()
    read: list[str] = []

    def write() -> None:
        for i in range(total):
            log.append({"id": f"r{i}", "pad": "x" * 40})
            if i % 500 == 499:
                log.remove(not_of({f"r{k}" for k in range(i - 499, i + 1)} & forgotten))
        done.set()

    tail = LogTail(path)
    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        read.extend(_ids(tail.read(limit=4096)))
    writer.join()
    while lines := tail.read():
        read.extend(lines and _ids(lines))
    log.close()
    assert len(read) == len(set(read))  # none twice
    missing = {f"r{i}" for i in range(total)} - set(read)
    assert missing <= forgotten  # only a forgotten record may be missed (forgotten before it was read)
    assert log.rotations > 20  # about one every 100 records


def test_pending_counts_what_is_left_of_the_file_read_and_a_file_that_replaced_it(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    tail = LogTail(log)
    assert tail.pending() == 0  # no log yet
    _append(log, "a", "b")
    assert tail.pending() == log.stat().st_size
    tail.read()
    assert tail.pending() == 0
    _append(log, "c")
    _rotate(log)
    _append(log, "d")
    assert tail.pending() == len(b'{"id": "c"}\n') + log.stat().st_size
    assert _ids(tail.read()) == ["c"] and _ids(tail.read()) == ["d"] and tail.pending() == 0


def test_json_records_takes_what_orjson_refuses_from_json_and_skips_damaged_lines() -> None:
    lines = [b'{"id": "a", "inputs": [[NaN, Infinity]]}\n', b'{"id": "b", "n": 123456789012345678901234567890}\n',
             b'{"id": "c", "inp\n', b"[1, 2]\n", b"[" * 100_000 + b"\n", b'{"id": "d"}\n']  # fmt: skip
    records = json_records(lines)
    assert [r["id"] for r in records] == ["a", "b", "d"]
    assert records[0]["inputs"][0][0] != records[0]["inputs"][0][0]  # NaN
    assert records[1]["n"] == float(123456789012345678901234567890)  # as a model would take it: a float


def test_a_line_longer_than_a_read_is_returned_whole_once_read_to_its_end(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    _append(log, "a" * 100, "b")
    tail = LogTail(log)
    got: list[bytes] = []
    while not got:
        got = tail.read(limit=16)
        assert tail.consumed > 0  # no line yet, but bytes taken: the caller reads on
    assert _ids(got) == ["a" * 100]
    assert _ids(tail.read(limit=16)) == ["b"] and tail.read(limit=16) == [] and tail.consumed == 0

