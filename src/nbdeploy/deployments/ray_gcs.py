"""Why the GCS server of a Ray head nbdeploy started aborted, read from the GCS's own log;
and whether the head's raylet has registered.

``ray start --head`` learns that its GCS died only after about 40 s of its client's timeouts;
the GCS writes its fatal line at once. Ray makes its temp, session and log folders writable
by everyone, so the log is read as untrusted: only regular files of this user, opened without
following a symlink or blocking on a FIFO, at most :data:`_READ` bytes of each, and only whole
lines. With Ray's JSON log format nothing matches and the head is waited for as before.
"""

from __future__ import annotations

import os
import re
import stat
import time
from pathlib import Path
from typing import NamedTuple

from nbdeploy._files import open_to_read

__all__ = ["HEAD_WAIT_S", "GcsFailure", "gcs_failure", "registered"]

HEAD_WAIT_S = 180.0  # how long a head nbdeploy starts may take to be up

_LOG_NAME = re.compile(r"gcs_server(?:\.\d+)?\.err")
_FATAL = re.compile(r"\[\S+ \S+ C \d+ \d+\] ")  # Ray's FATAL (spdlog's "critical"): the process aborts after it
_PORT = re.compile(r"Failed to start the grpc server\. The specified port is (\d+)")
_CAUSE = re.compile(r'os_error:"([^"]{1,80})"')  # gRPC's own line before it: "Address already in use"
_CHECK = re.compile(r"Check failed: (.{1,200}?)(?:\.\s|$)")
_READ = 64 << 10
_RAW = 2000  # characters of the fatal line kept for ray.log


class GcsFailure(NamedTuple):
    reason: str  # short, for the user
    line: str  # the GCS's fatal line, for ray.log


def gcs_failure(temp_dir: str) -> GcsFailure | None:
    """The failure of the GCS of the head whose ``--temp-dir`` is ``temp_dir``, if its log has one."""
    try:
        for session in Path(temp_dir).iterdir():
            logs = session / "logs"
            # session_latest is a link to the session itself: read each file once
            if not session.name.startswith("session_") or session.is_symlink() or logs.is_symlink():
                continue
            for log in logs.iterdir():
                failure = _fatal(_read_own(log)) if _LOG_NAME.fullmatch(log.name) else None
                if failure is not None:
                    return failure
    except OSError:  # the folder went away meanwhile (another kernel discarded the head), or is not ours
        return None
    return None


def registered(temp_dir: str, started: object) -> bool:
    """Whether the raylet of the head whose ``--temp-dir`` is ``temp_dir`` has registered:
    ``ray start`` writes ray_current_cluster there then. A driver started before has only
    Ray's 60 s to find that raylet, which a loaded machine has exceeded. A head alive
    :data:`HEAD_WAIT_S` after it ``started`` (a time) has registered (``ray start`` exits
    after 30 s without), whatever its folder, writable by everyone, holds now."""
    aged = isinstance(started, (int, float)) and time.time() - started > HEAD_WAIT_S
    return aged or (Path(temp_dir) / "ray_current_cluster").exists()


def _read_own(path: Path) -> str:
    try:  # a link in its place (ELOOP) or a file gone: this one says nothing, the others may
        fd = open_to_read(path)
    except OSError:
        return ""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            return ""
        return os.read(fd, _READ).decode(errors="replace")
    finally:
        os.close(fd)


def _fatal(text: str) -> GcsFailure | None:
    for line in text.splitlines(keepends=True):
        if not (_FATAL.match(line) and line.endswith("\n")):  # a line still being written is read next time
            continue
        port = _PORT.search(line)
        if port is not None:
            cause = _CAUSE.search(text)
            reason = f"could not listen on port {port.group(1)}" + (f" ({cause.group(1)})" if cause else "")
        else:  # Ray's boilerplate ("you have likely discovered a bug") says nothing: keep what failed
            check = _CHECK.search(line)
            reason = (check.group(1) if check else line.split("] ", 1)[-1]).strip()[:200]
        return GcsFailure(reason, line.strip()[:_RAW])
    return None
