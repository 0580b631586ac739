"""nbdeploy's server against an earlier revision of itself: same model, same run, interleaved.

    apt-get install -y wrk
    python bench/serving_ab.py edaf3e9              # this tree against revision edaf3e9
    BENCH_CONNECTIONS=16,64 BENCH_ROUNDS=8 python bench/serving_ab.py edaf3e9

Both servers run at once (each idle while the other is measured), from this checkout and
from a ``git worktree`` of the revision, on the quickstart forest registered once. Each round
runs wrk against each server in turn (the order alternating, so drift in the machine's
speed falls on both), and reads the server's CPU time from /proc before and after: CPU
seconds per 1,000 requests varies far less than requests/s on a shared 2-core box. It
prints each round, then medians and the ratio this/revision, with how many rounds this
tree was the better one (a sign test: equal trees win about half).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import serving
from serving import quickstart_model, wrk

ROOT = Path(__file__).resolve().parents[1]
CONNECTIONS = [int(c) for c in os.environ.get("BENCH_CONNECTIONS", "16,64").split(",")]
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "8"))
SERVE = "import nbdeploy; d = nbdeploy.serve('cancer/1', name='ab'); print(d.url, d.pid, nbdeploy.__file__)"
STOP = "import nbdeploy; nbdeploy.get('ab').stop()"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime, all threads


def start(tree: Path, home: Path) -> dict[str, Any]:
    """Serve cancer/1 with the nbdeploy of ``tree`` (its ``src`` first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "NBDEPLOY_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", SERVE], env=env, capture_output=True, text=True, check=True)
    url, pid, where = out.stdout.split()[-3:]
    if not where.startswith(str(tree)):
        sys.exit(f"{tree} served with the nbdeploy at {where}")
    return {"url": url, "pid": int(pid), "env": env}


def measure(server: dict[str, Any], body: bytes, connections: int) -> tuple[float, float]:
    """(requests/s, CPU s per 1,000 requests) of one wrk run."""
    before = cpu_seconds(server["pid"])
    result = wrk(server["url"], "/invocations", body, connections)
    used = cpu_seconds(server["pid"]) - before
    return result["rps"], used / (result["rps"] * serving.DURATION) * 1000


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    serving.DURATION = int(os.environ.get("BENCH_SECONDS", "6"))
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", sys.argv[1]], capture_output=True,
                         text=True, check=True).stdout.strip()  # fmt: skip
    tmp, _x, _model, body = quickstart_model()
    old_tree = Path(tempfile.mkdtemp(prefix="nbdeploy-ab-")) / rev
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), rev], check=True,
                   capture_output=True)  # fmt: skip
    servers: dict[str, dict[str, Any]] = {}
    try:
        servers = {"this": start(ROOT, tmp / "this"), rev: start(old_tree, tmp / "old")}
        runs: dict[tuple[str, int], list[tuple[float, float]]] = {(n, c): [] for n in servers for c in CONNECTIONS}
        for r in range(ROUNDS):
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]
            for c in CONNECTIONS:
                for label in order:
                    runs[label, c].append(measure(servers[label], body, c))
                shown = ", ".join(f"{n} {runs[n, c][-1][0]:.0f} req/s {runs[n, c][-1][1]:.3f} CPU s/1k"
                                  for n in servers)  # fmt: skip
                print(f"round {r + 1} at {c:>2} connections: {shown}", flush=True)
    finally:
        for server in servers.values():
            subprocess.run([sys.executable, "-c", STOP], env=server["env"], capture_output=True)
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], capture_output=True)
    print(f"\nthis tree against {rev}, {ROUNDS} interleaved rounds of {serving.DURATION} s (medians)")
    for c in CONNECTIONS:
        this, old = runs["this", c], runs[rev, c]
        rps = statistics.median(a for a, _ in this) / statistics.median(a for a, _ in old)
        cpu = statistics.median(b for _, b in this) / statistics.median(b for _, b in old)
        wins = sum(a[1] < b[1] for a, b in zip(this, old, strict=True))
        print(f"{c:>2} connections: requests/s ratio {rps:.3f}, CPU per request ratio {cpu:.3f} "
              f"(this tree used less CPU in {wins} of {ROUNDS} rounds)")  # fmt: skip


if __name__ == "__main__":
    main()
