"""The model card (issue #12, item 6): one page with the version's description, intended
use, data, lineage, validation, explanations and its whole history, logged to MLflow."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from mlflow import MlflowClient
from sklearn.tree import DecisionTreeClassifier

import nbdeploy
from nbdeploy.cards import card
from nbdeploy.deployments.events import EVENTS, for_model


def events_in_order(text: str, expected: list[str]) -> list[str]:
    """The history rows of a card's text form, checked to contain ``expected`` in order."""
    history = text.split("## History", 1)[1]
    rows = [line.split(" | ")[1] for line in history.splitlines() if re.match(r"\| \d{4}-", line)]
    it = iter(rows)
    missing = [e for e in expected if not any(r == e for r in it)]
    assert not missing, f"{missing} not in order in {rows}"
    return rows


def test_a_card_tells_the_whole_history_in_order(
    ip: Any, cancer: dict[str, Any], name: str, serving: Any, tracking_uri: str, tmp_path: Path
) -> None:
    X, y = cancer["X_test"], cancer["y_test"]
    nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"],
                      intended_use="Second opinion for triage; never a diagnosis.")  # fmt: skip
    nbdeploy.validate(f"{name}/1", X, y, gates=["f1>=0.9"], explain_rows=50)
    nbdeploy.promote(f"{name}/1")
    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(cancer["X_train"], cancer["y_train"])
    nbdeploy.register(stump, name, cancer["X_train"], cancer["y_train"], description="A one-split stump.")
    for _ in range(2):  # validated twice, failing its baseline gate both times
        nbdeploy.validate(f"{name}/2", X, y, gates=["f1>=baseline"], explain_rows=50)
    nbdeploy.promote(f"{name}/2", force=True)
    dep = serving(f"{name}/1", name=name)
    dep.update(f"{name}/2")
    dep.rollback()
    dep.shadow(f"{name}/2")
    dep.conclude(abort=True)
    dep.stop()

    two = card(f"{name}/2", out=tmp_path)
    text = two.markdown  # the text form (repr) is the same Markdown, with rows cut at 100 columns
    assert max(map(len, repr(two).splitlines())) <= 100 and repr(two).startswith(f"# Model card: {name}/2")
    assert text.startswith(f"# Model card: {name}/2") and "A one-split stump." in text
    events_in_order(text, ["registered", "validated", "validated", "promoted", "updated",
                           "rolled back (away from this version)", "shadow started (as challenger)",
                           "experiment aborted by hand (as challenger)"])  # fmt: skip
    assert "forced: its last validation failed on f1 >= baseline" in text
    assert f"deployment {name} (was {name}/1)" in text and "Not stated: add it with %deploy card" in text
    assert "Latest validation: FAILED" in text and "Permutation importance (increase in log loss" in text

    one = ip.run_line_magic("deploy", f"card {name}/1")
    rows = events_in_order(one.markdown, ["registered", "validated", "promoted", "served",
                                       "updated (away from this version)", "rolled back", "shadow started",
                                       "experiment aborted by hand", "stopped"])  # fmt: skip
    assert "promoted (forced" not in " ".join(rows)
    assert "Second opinion for triage; never a diagnosis." in one.markdown

    c = MlflowClient(tracking_uri)
    version = c.get_model_version(name, "2")
    assert version.tags["nbdeploy.card"] == two.uri == f"runs:/{version.run_id}/card/model_card.html"
    assert f"- Model card: `{two.uri}`" in version.description and version.description.startswith("A one-split")
    page = Path(c.download_artifacts(version.run_id, "card/model_card.html")).read_text(encoding="utf-8")
    assert '<meta charset="utf-8">' in page.lower() or "charset=utf-8" in page.lower()
    ElementTree.fromstring(f"<root>{two._repr_html_()}</root>")
    assert not re.search(r"<script|https?://", two._repr_html_())
    assert (tmp_path / "model_card.md").read_text(encoding="utf-8") == two.markdown

    again = ip.run_line_magic("deploy", f"card {name}/2 --intended-use 'Research only.' --no-log")
    assert "Research only." in again.markdown and again.uri is None
    long = "x" * 6000  # longer than MLflow keeps: cut, with the validation summary and the card line kept whole
    card(f"{name}/2", description=long)
    described = c.get_model_version(name, "2").description
    assert len(described) <= 5000 and "<!-- nbdeploy:validation -->" in described
    assert described.rstrip().endswith(f"- Model card: `{two.uri}`")
    nbdeploy.validate(f"{name}/2", X, y, explain_rows=50)  # a new validation keeps naming the card
    assert f"- Model card: `{two.uri}`" in c.get_model_version(name, "2").description


def test_damaged_event_files_and_foreign_tags_do_not_break_the_card(
    cancer: dict[str, Any], name: str, serving: Any, tracking_uri: str
) -> None:
    nbdeploy.register(cancer["model"], name, cancer["X_train"])
    dep = serving(f"{name}/1", name=name)
    with open(dep.path / EVENTS, "ab") as f:
        f.write(b'{"ts": "yesterday", "event": "x"}\n\xff\xfe torn\n[1, 2]\n{"ts": Infinity, "event": "x"}\n'
                b'{"ts": 1e20, "event": "x", "model": "%s/1"}\n{"ts": 5, "model": "%s/1"}\n{"event": "served"'
                % (name.encode(), name.encode()))
    MlflowClient(tracking_uri).set_model_version_tag(name, "1", "nbdeploy.event.not-a-time.validated", "?")
    events = for_model(f"{name}/1")
    assert [e["event"] for e in events] == ["served"]
    text = card(f"{name}/1", log=False).markdown
    assert "Never validated: run %deploy validate" in text and "No training-data profile" not in text
    events_in_order(text, ["registered", "served"])


def test_the_cli_writes_the_card(cancer: dict[str, Any], name: str, tracking_uri: str, tmp_path: Path) -> None:
    nbdeploy.register(cancer["model"], name, cancer["X_train"], cancer["y_train"])
    cli = [sys.executable, "-m", "nbdeploy.cli", "--tracking-uri", tracking_uri, "card", f"{name}/1",
           "--out", str(tmp_path), "--no-log"]  # fmt: skip
    done = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"# Model card: {name}/1") and (tmp_path / "model_card.html").exists()
    missing = subprocess.run([*cli[:5], "card", f"{name}/9"], capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().count("\n") == 0  # one sentence


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__]))
