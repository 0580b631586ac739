"""One level of a load test, driven by wrk (https://github.com/wg/wrk).

wrk is a C load generator that keeps ``connections`` requests in flight with an event loop
per thread: on two cores it saturates a Python server long before it saturates itself
(``bench/loadtest.py`` measures that). Its Lua hooks give what we need and nothing more:
``init`` formats every request once (the bodies cycle, so the rows are realistic without
building a request per call) and ``done`` prints the totals and latency percentiles as one
JSON line, which :func:`run_level` reads.

The token travels in the script, so the script is written owner-only and removed after.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from typing import Any

from nbdeploy.errors import DeploymentError, Docs, InvalidInputError

__all__ = ["require_wrk", "run_level", "script"]

MISSING = (
    "%deploy loadtest drives the server with wrk, which is not installed here: apt-get install wrk "
    "(Debian, Ubuntu) or brew install wrk (macOS)."
)

_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'NBDEPLOY-WRK {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "mean_us": %.1f, "max_us": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.max, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
"""


def require_wrk() -> str:
    """The path of ``wrk``, or one sentence saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise InvalidInputError(MISSING, docs=Docs.LOADTEST)
    return path


def _long_string(text: str) -> str:
    """``text`` as a Lua long string whose closing bracket it does not contain."""
    level = 0
    while f"]{'=' * level}]" in text + "]":  # a text ending in "]" or "]=" would close it early too
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


def script(bodies: Sequence[str], headers: dict[str, str], path: str = "/invocations") -> str:
    """The Lua script: every request formatted once per thread, taken in turn."""
    head = ", ".join(f"[ {_long_string(k)} ] = {_long_string(v)}" for k, v in headers.items())
    items = ",\n".join(_long_string(b) for b in bodies)
    return (
        f"local bodies = {{\n{items}\n}}\nlocal headers = {{{head}}}\nlocal formatted, i = {{}}, 0\n"
        "init = function(args)\n  for k, body in ipairs(bodies) do\n"
        f'    formatted[k] = wrk.format("POST", {_long_string(path)}, headers, body)\n  end\nend\n'
        "request = function()\n  i = i % #formatted + 1\n  return formatted[i]\nend\n" + _DONE
    )


def run_level(url: str, lua: str, connections: int, seconds: float, timeout_s: float = 10.0) -> dict[str, Any]:
    """Drive ``url`` with ``connections`` open connections for ``seconds`` (whole); wrk's totals:
    ``requests``, ``rps`` (answers with a 2xx or 3xx per second), ``errors`` (refused, reset,
    timed out, or answered 4xx/5xx) and latency ``mean_ms``, ``p50_ms``, ``p90_ms``,
    ``p99_ms``, ``max_ms`` (``None`` when a request timed out: the tail is then unknown)."""
    wrk = require_wrk()
    threads = max(1, min(connections, os.cpu_count() or 1))
    fd, path = tempfile.mkstemp(prefix="nbdeploy-wrk-", suffix=".lua")  # 0600: it holds the token
    try:
        with os.fdopen(fd, "w") as f:
            f.write(lua)
        argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
                "--timeout", f"{timeout_s:g}s", "-s", path, url]  # fmt: skip
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
        except subprocess.TimeoutExpired:
            raise DeploymentError(f"wrk did not finish within {seconds + timeout_s + 30:.0f} s.") from None
    finally:
        os.unlink(path)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("NBDEPLOY-WRK ")), None)
    if out.returncode != 0 or line is None:
        said = (out.stderr or out.stdout).strip().splitlines()
        raise DeploymentError(f"wrk failed (exit {out.returncode}): {said[-1][:300] if said else 'no output'}")
    raw = json.loads(line[len("NBDEPLOY-WRK ") :])
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["status"] + raw["timeout"]
    duration, answered = raw["duration_us"] / 1e6, raw["requests"] - raw["status"]
    attempted = raw["requests"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    # wrk leaves a request that timed out out of its latencies: with any (or no answer at all), unknown
    names = ("mean", "p50", "p90", "p99", "max")
    unknown = raw["timeout"] or not raw["requests"]
    latency = {f"{k}_ms": None if unknown else raw[f"{k}_us"] / 1000 for k in names}
    return {
        "connections": connections,
        "seconds": round(duration, 3),
        "requests": raw["requests"],  # answered, whatever the status
        "answered": answered,  # with a 2xx or 3xx
        "rps": answered / duration if duration > 0 else 0.0,  # answered well, per second
        "errors": errors,
        "timeouts": raw["timeout"],
        "error_rate": errors / attempted if attempted else 0.0,
        **latency,
    }
