"""The request logs' columnar copy (``nbdeploy.deployments.log_columns``): an export that
reads it gives exactly what parsing the logs gives; a forget takes its rows out of the copy
too; a stale, damaged or foreign segment is never used; the converter's process runs beside a
real server, is killed with it, and a converter killed mid-way leaves nothing wrong."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from tests.test_export import _line, served, write_hostile_log

__all__ = ["served"]  # the fixture, shared with test_export


def _features(dep: Any) -> Any:
    from nbdeploy.deployments.export import _features as features

    return features(dep.spec)


def _export(folder: Path, features: Any, out: Path, columns: bool, **options: Any) -> tuple[pd.DataFrame, tuple]:
    from nbdeploy.deployments.export import export_logs

    result = export_logs(folder, features, out, columns=columns, **options)
    counts = (result.requests, result.rows, result.labelled, result.not_logged, result.skipped)
    return result.frame(), counts


def _same_both_ways(folder: Path, features: Any, tmp_path: Path, **options: Any) -> tuple:
    """Export with the copy and without it: the same file, the same counts; those counts."""
    by_copy, counted = _export(folder, features, tmp_path / "copy.parquet", True, **options)
    by_parse, parsed = _export(folder, features, tmp_path / "parse.parquet", False, **options)
    pd.testing.assert_frame_equal(by_copy, by_parse)
    assert counted == parsed
    return counted


def _covered(folder: Path) -> dict[str, int]:
    """Bytes of each log file the copy covers from its first byte on, by file name."""
    from nbdeploy.deployments.log_columns import chain, features_key, segments

    found, features, covered = segments(folder), None, {}
    from nbdeploy.deployments.export import _features as features_of
    from nbdeploy.spec import DeploymentSpec

    features = features_of(DeploymentSpec.load(folder))
    for path in folder.glob("requests*.jsonl*"):
        if not path.is_file():
            continue
        with path.open("rb") as fh:
            info = os.fstat(fh.fileno())
            have = chain(found.get((info.st_dev, info.st_ino), []), fh.fileno(), info.st_size, features_key(features))
            covered[path.name] = have[-1].segment.end if have else 0
    return covered


def _covered_by(folder: Path, features: Any, path: Path) -> int:
    """Bytes of ``path`` its copy covers from its first byte on."""
    from nbdeploy.deployments.log_columns import chain, features_key, segments

    with path.open("rb") as fh:
        info = os.fstat(fh.fileno())
        have = chain(segments(folder).get((info.st_dev, info.st_ino), []), fh.fileno(), info.st_size,
                     features_key(features))  # fmt: skip
    return have[-1].segment.end if have else 0


def _segment_bytes(folder: Path) -> bytes:
    from nbdeploy.log_files import COLUMNS

    return b"".join(p.read_bytes() for p in (folder / COLUMNS).iterdir() if p.is_file())


def test_an_export_from_the_copy_is_the_export_that_parses(
    served: dict[str, Any], cancer: dict[str, Any], tmp_path: Path
) -> None:
    from nbdeploy.deployments.log_converter import convert

    dep = served["dep"]
    dep.stop()
    columns, row = list(cancer["X_test"].columns), cancer["X_test"].iloc[0].tolist()
    write_hostile_log(dep.path, columns, row)
    now = time.time()
    old = {"ts": now - 7200, "answered": now - 7200, "status": 200, "version": 1}
    with (dep.path / "requests.jsonl").open("a") as fh:  # ends the torn line; dated counts before --since
        fh.write("\n" + _line({**old, "id": "old-big", "rows": 300, "inputs": [row] * 100}) + "\n")
        fh.write(_line({**old, "id": "old-short", "rows": 1, "inputs": [row[:3]]}) + "\n")
    sizes = [(dep.path / name).stat().st_size for name in ("requests.jsonl", "requests.jsonl.1")]
    assert convert(dep.path) == (sum(sizes), [])  # every byte of both: they end with whole lines
    covered = _covered(dep.path)
    assert covered["requests.jsonl"] == (dep.path / "requests.jsonl").stat().st_size  # all of it: whole lines
    assert covered["requests.jsonl.1"] > 0
    features = _features(dep)
    everything = _same_both_ways(dep.path, features, tmp_path)
    assert everything[3] == 600 and everything[4] == 6  # dated counts: all of them without --since
    recent = _same_both_ways(dep.path, features, tmp_path, since=now - 3600)
    assert recent[3] == 400 and recent[4] == 5  # the old request's 200 and its short row are before it
    _same_both_ways(dep.path, features, tmp_path, since=now - 3600, labelled=True)
    # appended after the copy was made: parsed, after the rows read from the copy
    with (dep.path / "requests.jsonl").open("a") as fh:
        fh.write(_line({**old, "ts": now, "answered": now, "id": "late", "rows": 1, "inputs": [row]}) + "\n")
        fh.write('{"id": "torn-again", "inp')
    frame, _ = _export(dep.path, features, tmp_path / "late.parquet", True)
    assert frame["request_id"].iloc[-1] == "late"
    _same_both_ways(dep.path, features, tmp_path)
    assert convert(dep.path)[0] > 0 and convert(dep.path)[0] == 0  # the new line once; the torn one waits
    _same_both_ways(dep.path, features, tmp_path)


def test_forget_takes_the_rows_out_of_the_copy(served: dict[str, Any], tmp_path: Path) -> None:
    from nbdeploy.deployments.log_converter import convert
    from nbdeploy.log_files import COLUMNS

    dep = served["dep"]
    dep.stop()
    convert(dep.path)
    gone = served["sent"][1][0]
    assert gone.encode() in _segment_bytes(dep.path)
    live = (dep.path / "requests.jsonl").stat()
    half = dep.path / COLUMNS / f".{live.st_dev}-{live.st_ino}-0-99.arrow.7.tmp"  # a converter killed mid-write
    half.write_bytes((dep.path / "requests.jsonl").read_bytes())
    assert dep.forget([gone])["removed"]["requests"] == 1
    assert gone.encode() not in _segment_bytes(dep.path)  # the swapped file's segments went with it
    assert not half.exists()  # and what a converter left half-written of it
    frame, _ = _export(dep.path, _features(dep), tmp_path / "after.parquet", True)
    assert gone not in set(frame["request_id"]) and len(frame) == sum(len(p) for _, p, _ in served["sent"]) - 40
    convert(dep.path)  # the new file, converted again
    assert _covered(dep.path)["requests.jsonl"] == (dep.path / "requests.jsonl").stat().st_size
    _same_both_ways(dep.path, _features(dep), tmp_path)


def test_a_stale_damaged_or_foreign_segment_is_never_read(served: dict[str, Any], tmp_path: Path) -> None:
    from nbdeploy.deployments.export_schema import Features
    from nbdeploy.deployments.log_columns import segments
    from nbdeploy.deployments.log_converter import convert

    dep = served["dep"]
    dep.stop()
    (dep.path / "requests.jsonl.1").write_bytes((dep.path / "requests.jsonl").read_bytes()[:2000].rsplit(b"\n", 1)[0]
                                                + b"\n")  # fmt: skip
    convert(dep.path)
    features = _features(dep)
    live = os.stat(dep.path / "requests.jsonl")
    rotated = os.stat(dep.path / "requests.jsonl.1")
    [mine] = segments(dep.path)[(live.st_dev, live.st_ino)]
    [other] = segments(dep.path)[(rotated.st_dev, rotated.st_ino)]
    # another file's segment under this file's name (an inode number reused after a rotation)
    foreign = mine.path.with_name(f"{live.st_dev}-{live.st_ino}-0-{other.end}.arrow")
    foreign.write_bytes(other.path.read_bytes())
    _same_both_ways(dep.path, features, tmp_path)
    foreign.unlink()
    # a damaged segment (a disk error, a hand): parsed instead
    data = mine.path.read_bytes()
    mine.path.write_bytes(data[: len(data) // 2])
    _same_both_ways(dep.path, features, tmp_path)
    mine.path.write_bytes(b"\x00" * 64)
    _same_both_ways(dep.path, features, tmp_path)
    # checked, then merged away by the converter before the export reads it: parsed from there
    from nbdeploy.deployments import log_columns

    check = log_columns.read_segment

    def then_gone(segment: Any, fd: int, key: str) -> Any:
        cached = check(segment, fd, key)
        segment.path.unlink()
        return cached

    convert(dep.path)
    log_columns.read_segment = then_gone  # type: ignore[assignment]
    try:
        _same_both_ways(dep.path, features, tmp_path)
    finally:
        log_columns.read_segment = check  # type: ignore[assignment]
    convert(dep.path)
    # a segment of another layout under the same key (an older nbdeploy's): not read
    import pyarrow as pa
    import pyarrow.ipc as ipc

    [mine] = segments(dep.path)[(live.st_dev, live.st_ino)]
    with pa.OSFile(str(mine.path)) as source:
        reader = ipc.open_file(source)
        table, meta = reader.read_all(), reader.schema.metadata
    table = table.drop_columns([table.column_names[-1]])
    with pa.OSFile(str(mine.path), "wb") as sink, ipc.new_file(sink, table.schema.with_metadata(meta)) as writer:
        writer.write_table(table)
    _same_both_ways(dep.path, features, tmp_path)
    convert(dep.path)
    # other features (a version with other inputs served since): the copy is not theirs
    other_features = Features(features.names, features.types, {7: features.names[::-1]})
    _same_both_ways(dep.path, other_features, tmp_path)
    convert(dep.path)  # the damaged segment replaced
    assert _covered(dep.path)["requests.jsonl"] == live.st_size
    _same_both_ways(dep.path, features, tmp_path)


def test_the_copy_follows_appends_rotations_and_merges_small_segments(tmp_path: Path) -> None:
    from nbdeploy.deployments.export_schema import Features
    from nbdeploy.deployments.log_columns import segments
    from nbdeploy.deployments.log_converter import MERGE_RUN, convert_file
    from nbdeploy.log_files import COLUMNS
    from nbdeploy.serving.requestlog import RequestLog

    log = RequestLog(tmp_path / "requests.jsonl", max_bytes=8_000, backups=2)
    features = Features(["a", "b"], ["double", "double"])
    written = 0

    def look() -> None:
        for path in tmp_path.glob("requests.jsonl*"):
            with path.open("rb") as fh:
                info = os.fstat(fh.fileno())
                convert_file(tmp_path, fh.fileno(), info.st_size, features,
                             segments(tmp_path).get((info.st_dev, info.st_ino), []))  # fmt: skip

    for _ in range(40):  # about 11 looks per file: merges, then rotations, the oldest file deleted
        for _ in range(10):
            now = time.time()
            log.append({"ts": now, "answered": now, "status": 200, "id": f"r{written}", "rows": 1,
                        "inputs": [[float(written), 1.0]]})  # fmt: skip
            written += 1
        look()
        by_copy, counted = _export(tmp_path, features, tmp_path / "copy.parquet", True)
        by_parse, parsed = _export(tmp_path, features, tmp_path / "parse.parquet", False)
        pd.testing.assert_frame_equal(by_copy, by_parse)
        assert counted == parsed
    # a piece whose body is damaged (its footer whole) is deleted when a merge reads it, and made again
    from nbdeploy.deployments import log_columns

    for _ in range(MERGE_RUN):
        log.append({"ts": time.time(), "answered": time.time(), "status": 200, "id": f"r{written}", "rows": 1,
                    "inputs": [[float(written), 1.0]]})  # fmt: skip
        written += 1
        look()
    read = log_columns.Cached.table

    def damaged(self: Any) -> Any:
        raise pa.ArrowInvalid("a damaged body")

    log_columns.Cached.table = damaged  # type: ignore[method-assign]
    try:
        log.append({"ts": time.time(), "answered": time.time(), "status": 200, "id": f"r{written}", "rows": 1,
                    "inputs": [[float(written), 1.0]]})  # fmt: skip
        written += 1
        look()
    finally:
        log_columns.Cached.table = read  # type: ignore[method-assign]
    look()
    by_copy, counted = _export(tmp_path, features, tmp_path / "copy.parquet", True)
    by_parse, parsed = _export(tmp_path, features, tmp_path / "parse.parquet", False)
    pd.testing.assert_frame_equal(by_copy, by_parse)
    assert counted == parsed
    live = os.stat(tmp_path / "requests.jsonl")
    assert _covered_by(tmp_path, features, tmp_path / "requests.jsonl") == live.st_size
    assert log.rotations >= 2  # the oldest file was deleted by a rotation: so were its segments
    identities = set()
    for path in tmp_path.glob("requests.jsonl*"):
        info = path.stat()
        identities.add((info.st_dev, info.st_ino))
    found = segments(tmp_path)
    assert set(found) <= identities
    assert all(len(pieces) < MERGE_RUN + 1 for pieces in found.values())  # small ones merged as they came
    assert len(os.listdir(tmp_path / COLUMNS)) == sum(len(p) for p in found.values())
    frame, _ = _export(tmp_path, features, tmp_path / "all.parquet", True)
    kept = [int(i[1:]) for i in frame["request_id"]]
    assert kept == sorted(kept) and kept[-1] == written - 1  # in order, none twice


def _children(pid: int) -> list[Any]:
    import psutil

    return [p for p in psutil.Process(pid).children() if "log_converter" in " ".join(p.cmdline())]


def _wait(check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout:.0f} s: {check}")


def test_a_server_keeps_the_copy_and_its_converter_dies_with_it(
    serving: Any, two_versions: str, name: str, cancer: dict[str, Any], tmp_path: Path, monkeypatch: Any
) -> None:
    import psutil

    monkeypatch.setenv("NBDEPLOY_LOG_COLUMNS_S", "0.5")
    dep = serving(f"{two_versions}/1", name=name)
    pid = dep.pid
    [converter] = _wait(lambda: _children(pid))
    _wait(lambda: os.sched_getscheduler(converter.pid) == os.SCHED_IDLE)  # type: ignore[attr-defined]
    X = cancer["X_test"]
    for start in range(0, 100, 10):
        dep.predict(X.iloc[start : start + 10])
    size = (dep.path / "requests.jsonl").stat().st_size
    _wait(lambda: _covered(dep.path).get("requests.jsonl") == size)
    _same_both_ways(dep.path, _features(dep), tmp_path)
    # its CPU and memory are the deployment's, under a role of its own
    _wait(lambda: ("log copy", converter.pid) in {(p["role"], p["pid"]) for p in dep.snapshot("1m")["processes"]})
    os.kill(pid, signal.SIGKILL)  # the server killed: its converter goes too, at once
    psutil.wait_procs([converter], timeout=10)
    assert not converter.is_running()
    dep.stop()


def test_a_converter_killed_mid_way_leaves_nothing_wrong(served: dict[str, Any], tmp_path: Path) -> None:
    from nbdeploy.log_files import COLUMNS

    dep = served["dep"]
    dep.stop()
    lines = (dep.path / "requests.jsonl").read_bytes().splitlines(keepends=True)
    with (dep.path / "requests.jsonl").open("ab") as fh:  # about 40 MiB: more than one segment
        fh.write(b"".join(lines) * max(1, (40 << 20) // sum(len(x) for x in lines)))
    command = [sys.executable, "-m", "nbdeploy.deployments.log_converter", str(dep.path), "--every", "0.1"]
    for delay in (0.4, 0.9, 1.4):  # while it imports, parses, writes: wherever it is
        converter = subprocess.Popen(command, stderr=subprocess.PIPE)
        time.sleep(delay)
        converter.kill()
        converter.wait(timeout=10)
        (dep.path / COLUMNS).mkdir(exist_ok=True)
        half = dep.path / COLUMNS / ".1-2-0-10.arrow.99.tmp"
        half.write_bytes(b"half a segment")
        os.utime(half, (time.time() - 120, time.time() - 120))  # left a while ago: another converter's is not
        _same_both_ways(dep.path, _features(dep), tmp_path)
    converter = subprocess.Popen(command, stderr=subprocess.PIPE)
    try:
        _wait(lambda: not [n for n in os.listdir(dep.path / COLUMNS) if n.endswith(".tmp")])  # swept at its start
        size = (dep.path / "requests.jsonl").stat().st_size
        _wait(lambda: _covered(dep.path).get("requests.jsonl") == size, timeout=300)
    finally:
        converter.terminate()
        assert converter.wait(timeout=10) == 0
    _same_both_ways(dep.path, _features(dep), tmp_path)


@pytest.mark.parametrize("hostile", ["not a folder", "a spec that does not parse"])
def test_the_converter_of_a_folder_it_cannot_read_converts_nothing(tmp_path: Path, hostile: str) -> None:
    from nbdeploy.deployments.log_converter import convert

    folder = tmp_path / "dep"
    if hostile == "not a folder":
        folder.write_text("x")
    else:
        folder.mkdir()
        (folder / "spec.json").write_text("{not json")
        (folder / "requests.jsonl").write_text('{"id": "a"}\n')
    assert convert(folder) == (0, [])


def test_lines_arrow_and_python_read_apart_give_the_same_rows_however_the_spans_fall(tmp_path: Path) -> None:
    """A line of two objects, ``null`` (alone in a span: pyarrow 25 crashes on it), blank lines,
    a lone surrogate: each read as Python reads it, whichever span or block it falls in."""
    from nbdeploy.deployments.export_rows import arrow_records
    from nbdeploy.deployments.export_schema import Features
    from nbdeploy.deployments.log_converter import convert_file

    features = Features(["a", "b"], ["double", "double"])
    now = time.time()

    def record(i: int) -> str:
        return _line({"ts": now, "answered": now, "status": 200, "id": f"r{i}", "rows": 1, "inputs": [[i, 1.0]]})

    spans = [[record(0), record(1) + " " + record(2)], ["null"], ["", record(3), "  "],
             [record(4), '{"ts": 1, "answered": 1, "status": 200, "id": "x\\ud800", "inputs": [[1, 2]]}'],
             [record(5) + record(6), record(7)]]  # fmt: skip
    log = tmp_path / "requests.jsonl"
    for span in spans:  # converted span by span: each one falls on a path of its own
        with log.open("a") as fh:
            fh.write("\n".join(span) + "\n")
        with log.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            convert_file(tmp_path, fh.fileno(), size, features, [])
    assert arrow_records(b"null\n") is None and arrow_records((record(1) + record(2) + "\n").encode()) is None
    counted = _same_both_ways(tmp_path, features, tmp_path)
    frame, _ = _export(tmp_path, features, tmp_path / "rows.parquet", True)
    assert frame["request_id"].tolist() == ["r0", "r3", "r4", "x?", "r7"] and counted[4] == 3  # 2 lines of 2, null


def test_one_file_that_fails_stops_no_other_and_a_full_disk_stops_the_copy(
    served: dict[str, Any], tmp_path: Path, monkeypatch: Any
) -> None:
    from nbdeploy.deployments import log_converter

    dep = served["dep"]
    dep.stop()
    rotated = dep.path / "requests.jsonl.1"
    rotated.write_bytes((dep.path / "requests.jsonl").read_bytes())
    real = log_converter.convert_file

    def fails_on_the_rotated(folder: Path, fd: int, size: int, features: Any, found: Any) -> int:
        if os.path.samestat(os.fstat(fd), rotated.stat()):
            raise MemoryError("made up")
        return real(folder, fd, size, features, found)

    monkeypatch.setattr(log_converter, "convert_file", fails_on_the_rotated)
    parsed, failed = log_converter.convert(dep.path)
    assert parsed == (dep.path / "requests.jsonl").stat().st_size
    assert failed == ["requests.jsonl.1: MemoryError: made up"]
    assert _covered(dep.path) == {"requests.jsonl": parsed, "requests.jsonl.1": 0}
    _same_both_ways(dep.path, _features(dep), tmp_path)
    monkeypatch.setattr(log_converter, "convert_file", real)
    monkeypatch.setattr(log_converter, "MIN_FREE", 1 << 62)
    parsed, failed = log_converter.convert(dep.path)
    assert parsed == 0 and "free on the disk" in failed[0] and _covered(dep.path)["requests.jsonl.1"] == 0
