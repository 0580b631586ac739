"""Batch scoring on Ray Data: ``python -m nbdeploy.serving.ray_batch`` with a JSON job on stdin.

Started by :mod:`nbdeploy.deployments.batch_ray` (the kernel never imports Ray). The driver
joins the cluster, reads ``--data`` with Ray Data (``read_parquet`` / ``read_csv``: blocks
read where Ray places them), scores it with a pool of actors that each load the model once
from the object store (so a node without the kernel's files can score), and writes the
answers in input order (``preserve_order``) to one file on the kernel's machine, a row group
a block. It says ``{"done": ROWS}`` on stdout as it writes, then ``{"ok": true, "rows": N}``
or ``{"ok": false, "error": SENTENCE}``.

Each chunk is checked as :mod:`.batch_worker` checks it; Ray Data's blocks carry no position
in the input, so a sentence names the rows of the chunk (and the chunk's first ``--key``
value when there is one), not of the whole file.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pyarrow as pa

__all__ = ["main"]


def _say(doc: dict[str, Any]) -> None:
    sys.__stdout__.write(json.dumps(doc) + "\n")  # type: ignore[union-attr]
    sys.__stdout__.flush()  # type: ignore[union-attr]


def _zip(folder: str) -> bytes:
    """The model's folder, zipped in memory (it travels through the object store)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


class Scorer:
    """A Ray Data actor: the model loaded once, each batch checked and scored."""

    def __init__(self, model_zip: Any, proba: bool, key: str | None, send_key: bool) -> None:
        import ray

        from nbdeploy.serving.loader import load
        from nbdeploy.serving.protocol import Schema

        self.folder = tempfile.mkdtemp(prefix="nbdeploy-ray-batch-")
        try:
            with zipfile.ZipFile(io.BytesIO(ray.get(model_zip))) as archive:  # once per actor, from the object store
                archive.extractall(self.folder)
            self.model = load(self.folder)
        except Exception as exc:
            raise ValueError(f"nbdeploy: the model could not be loaded on a Ray worker: {type(exc).__name__}: "
                             f"{exc}") from None  # fmt: skip
        self.schema = Schema.from_signature(self.model.inputs)
        self.proba, self.key, self.send_key = proba, key, send_key

    def __call__(self, batch: pa.Table) -> pa.Table:
        from nbdeploy.serving.batch_worker import score
        from nbdeploy.serving.protocol import ProtocolError

        keys = batch.column(self.key) if self.key else None
        table = batch if self.send_key or self.key is None else batch.drop_columns([self.key])
        try:
            answers = score(self.model, self.schema, table, self.proba)
        except ProtocolError as exc:
            raise ValueError(f"nbdeploy: {self._where(keys)}{exc.message}") from None
        except Exception as exc:
            raise ValueError(f"nbdeploy: {self._where(keys)}the model failed: {type(exc).__name__}: {exc}") from None
        if keys is not None:
            answers = answers.add_column(0, self.key, keys)
        return answers

    def _where(self, keys: Any) -> str:
        first = f" whose first {self.key} is {keys[0].as_py()!r}" if keys is not None and len(keys) else ""
        return f"in a chunk of --data{first} (rows numbered within the chunk): "


def _dataset(job: dict[str, Any]) -> Any:
    import ray.data
    from pyarrow import csv

    if job["kind"] == "csv":
        # every column read as text, as the kernel named them: Arrow would guess each column's
        # type from the first block only (a later value then fails the whole file, unnamed), the
        # key keeps its zeros (00042), and score() turns numbers written as text into numbers and
        # names the rows that are not; an index column ("") and a trailing comma's are left out
        columns = list(job["columns"])
        options = csv.ConvertOptions(column_types=dict.fromkeys(columns, pa.string()), include_columns=columns)
        return ray.data.read_csv(job["data"], convert_options=options, num_cpus=0.25)
    return ray.data.read_parquet(job["data"], num_cpus=0.25)


def _write(batches: Any, out: str, csv_out: bool) -> int:
    """Answers in order to ``out``, with a ``row`` column from 0; the rows written."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rows, writer, schema = 0, None, None
    try:
        for table in batches:
            if not table.num_rows:
                continue
            table = table.add_column(0, "row", pa.array(range(rows, rows + table.num_rows), pa.int64()))
            if writer is None:
                schema = table.schema
                writer = pcsv.CSVWriter(out, schema) if csv_out else pq.ParquetWriter(out, schema)
            try:  # a later block's all-null or integer column takes the first block's types
                table = table.cast(schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
                raise ValueError(f"nbdeploy: the answers for rows {rows:,}-{rows + table.num_rows - 1:,} cannot be "
                                 f"written with those before them ({exc}).") from None  # fmt: skip
            writer.write_table(table)
            rows += table.num_rows
            _say({"done": rows})
    finally:
        if writer is not None:
            writer.close()
    return rows


def run(job: dict[str, Any]) -> tuple[int, int]:
    import ray
    import ray.data
    from ray.data import DataContext

    ray.init(address=job["address"], log_to_driver=False, configure_logging=False, include_dashboard=False)
    context = DataContext.get_current()
    context.execution_options.preserve_order = True  # the answers in the input's order
    context.enable_progress_bars = False
    workers = job.get("workers") or max(1, int(ray.cluster_resources().get("CPU", 1)))
    model = ray.put(_zip(job["model_path"]))
    # The actors reserve no logical CPU and are spread over the nodes: Ray Data's file listing
    # needs a whole CPU on one node, and actors reserving theirs on small nodes (one CPU each)
    # leave it none: the job would wait forever. The cores are shared by the OS instead.
    scored = _dataset(job).map_batches(
        Scorer, fn_constructor_args=(model, job["proba"], job.get("key"), job["send_key"]), batch_format="pyarrow",
        batch_size=job["chunk_rows"], compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=0,
        scheduling_strategy="SPREAD",
    )  # fmt: skip
    return _write(scored.iter_batches(batch_format="pyarrow", batch_size=None), job["out"], job["csv"]), workers


def _sentence(exc: BaseException) -> str:
    """One sentence for what Ray raised: nbdeploy's own, found in the chain, or the first line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # Ray colours its task names
    # the line "ValueError: nbdeploy: ..." of the actor's traceback (its source lines quote the words too)
    said = re.findall(r"(?m)^(?:\w+\.)*\w+: nbdeploy: (.+)$", text)
    if said:
        return said[-1].strip()
    # else the last "SomeError: why" line: the cause, not the task's header
    causes = re.findall(r"(?m)^(?:\w+\.)*\w*(?:Error|Exception|Invalid): (.+)$", text)
    why = causes[-1].strip() if causes else (text.strip().splitlines() or [type(exc).__name__])[0]
    return f"Ray Data failed: {why[:300]}"


def main() -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.stdout = sys.stderr  # Ray's and the model's prints go to the log; stdout is for answers
    try:
        job = json.loads(sys.stdin.read())
        if job.get("parent"):  # the kernel killed (or the CLI interrupted): the driver goes with it
            from nbdeploy.serving.bodies import die_with

            die_with(int(job["parent"]))
        rows, workers = run(job)
    except Exception as exc:
        _say({"ok": False, "error": _sentence(exc)})
        return 1
    _say({"ok": True, "rows": rows, "workers": workers})
    sys.stderr.flush()
    os._exit(0)  # answered: Ray's shutdown at exit must not keep the kernel waiting


if __name__ == "__main__":
    sys.exit(main())
