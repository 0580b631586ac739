"""Launch -> first prediction of a server process, against the floor, interleaved.

    python bench/start_time.py            # the quickstart forest, 12 rounds
    BENCH_START_ROUNDS=20 python bench/start_time.py

``bench/serving.py`` prints the same lines after its load table.

- **floor**: a bare ``python -c`` that imports the model's libraries, unpickles the model and
  predicts one row (what any server of this model must do before its first answer),
  timed from spawn to the line it prints after predicting;
- **nbdeploy**: ``python -m nbdeploy.serving FOLDER`` (what ``serve`` spawns) timed from
  spawn to the first 200 of ``/invocations`` for a one-row JSON request (the client tries
  every 5 ms, a new connection each time);
- its resident memory once it has answered.

This machine's timings swing by ~0.5 s from one start to the next, so rounds alternate the
two and the gap is the median of the per-round differences. Target: gap <= 0.3 s, RSS
<= 250 MB.
"""

from __future__ import annotations

import http.client
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROUNDS = int(os.environ.get("BENCH_START_ROUNDS", "12"))


def floor_time(model_pkl: Path, columns: int) -> float:
    code = (f"import cloudpickle, numpy; m = cloudpickle.load(open({str(model_pkl)!r}, 'rb')); "
            f"m.predict(numpy.zeros((1, {columns}))); print('ok', flush=True)")  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-W", "ignore", "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ok"
    elapsed = time.perf_counter() - t0
    proc.wait()
    return elapsed


def server_time(folder: Path, token: str, body: bytes) -> tuple[float, float]:
    """(seconds to the first prediction, RSS MB then) of one server start."""
    from serving import rss_mb

    (folder / "port").unlink(missing_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "nbdeploy.serving", str(folder)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            try:  # http.client: a new connection costs the client ~1 ms (httpx.post: ~50 ms)
                conn = http.client.HTTPConnection("127.0.0.1", int((folder / "port").read_text()), timeout=30)
                conn.request("POST", "/invocations", body, headers)
                if conn.getresponse().status == 200:
                    break
            except (OSError, ValueError, http.client.HTTPException):
                pass
            time.sleep(0.005)
        return time.perf_counter() - t0, rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)


def compare(folder: Path, token: str, model_pkl: Path, columns: int, body: bytes, rounds: int = ROUNDS) -> None:
    floors, servers, gaps, rss = [], [], [], []
    for r in range(rounds):
        first_floor = r % 2 == 0
        f = floor_time(model_pkl, columns) if first_floor else None
        s, m = server_time(folder, token, body)
        f = f if f is not None else floor_time(model_pkl, columns)
        floors.append(f)
        servers.append(s)
        gaps.append(s - f)
        rss.append(m)
    print(f"\nlaunch -> first prediction, {rounds} interleaved starts (medians)")
    print(f"  floor (import, unpickle, predict one row): {statistics.median(floors):.2f} s")
    print(f"  nbdeploy server process:                   {statistics.median(servers):.2f} s")
    print(f"  gap (median of per-start differences):     {statistics.median(gaps):+.2f} s (target <= 0.3 s)")
    print(f"  server RSS after its first answer:         {statistics.median(rss):.0f} MB (target <= 250 MB)")


def main() -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from serving import quickstart_model

    import nbdeploy

    _tmp, X, _model, body = quickstart_model()
    dep = nbdeploy.serve("cancer/1", name="start")
    folder, token, model_path = dep.path, dep.token, Path(dep.current.model_path)
    dep.stop()
    assert token is not None
    compare(folder, token, model_path / "model.pkl", X.shape[1], body)


if __name__ == "__main__":
    main()
