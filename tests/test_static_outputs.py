"""Outputs that read well wherever a notebook is opened (#16 item 3): a notebook that shows
each of nbdeploy's output objects is executed in a real kernel, then

- its outputs are read as GitHub, VS Code or nbval would: no stderr or warning text, every
  line of every text form within 100 columns, no memory address;
- it is turned into static HTML as nbviewer and GitHub do (``nbconvert --to html``) and
  opened in a real Chromium with JavaScript off: every figure of each output's text form is
  on the page as text, and each headline (verdict, state) is visible. A widget (the
  monitoring panel, the deployments list) shows its HTML form there, as where widgets do not
  run (GitHub); nbconvert would otherwise pick the widget's view, which needs JavaScript.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.notebook_outputs import long_lines, memory_addresses, text_of, unclean_outputs

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]

SETUP = """\
%load_ext nbdeploy
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

X, y = load_breast_cancer(return_X_y=True, as_frame=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, random_state=0)
model = RandomForestClassifier(n_estimators=30, random_state=0).fit(X_train, y_train)
challenger = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X_train, y_train)"""


def _cells(name: str) -> list[str]:
    return [
        SETUP,
        f"%deploy register model --name {name} --data X_train --target y_train",
        f"%deploy register challenger --name {name} --data X_train --target y_train",
        f"%deploy models {name}",
        f'%deploy validate {name}/1 --data X_test --target y_test --gate "f1>=0.9" --no-explain',
        f"%deploy promote {name}/1",
        f"%deploy card {name}/1 --no-log",
        f'%deploy serve {name}@champion --name {name} --attach --alert "p95_ms>500"',
        f"%deploy status {name}",
        f"%deploy predict {name} --data X_test.head(20)",
        "%deploy list",
        f"%deploy monitor {name} --interval 60",
        f"%deploy alerts {name}",
        f"%deploy token {name} --add predict --label dashboard --out token.txt",
        f"%deploy token {name} --list",
        f"%deploy audit {name}",
        f"%deploy export {name} --out traffic.parquet",
        f"%deploy batch {name}@champion --data X_test --out scores.parquet --workers 1",
        f"%deploy canary {name} {name}/2 --percent 10",
        f"%deploy experiment {name}",
        f"%deploy conclude {name} --abort",
        f"%deploy stop {name}",
    ]


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    import nbformat
    from nbclient import NotebookClient

    name = f"static-{uuid.uuid4().hex[:8]}"
    folder = tmp_path_factory.mktemp("static")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in _cells(name)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    try:
        NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(folder)}}).execute()
    finally:
        import nbdeploy

        try:  # the cell that stops it may not have run
            nbdeploy.get(name).stop()
        except nbdeploy.NbdeployError:
            pass
    nbformat.write(nb, folder / "outputs.ipynb")
    return nb, folder


def _outputs(nb: Any) -> list[Any]:
    return [out for cell in nb.cells for out in cell.outputs]


def test_the_outputs_read_clean_in_text(executed: tuple[Any, Path]) -> None:
    nb, _ = executed
    for cell in nb.cells:
        assert unclean_outputs(cell.outputs) == [], cell.source
    outputs = _outputs(nb)
    assert len([o for o in outputs if text_of(o, "text/html")]) >= 9  # every object shown has an HTML form
    assert long_lines(outputs) == []
    assert memory_addresses(outputs) == []


# figures in the text forms: decimals, counts with a unit, versions
_FIGURE = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])|\b\d+ (?:rows|gates|%)")


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_the_static_html_shows_every_figure_without_javascript(executed: tuple[Any, Path]) -> None:
    from nbconvert import HTMLExporter
    from playwright.sync_api import sync_playwright

    nb, folder = executed
    from traitlets.config import Config

    priority = HTMLExporter(template_name="lab").config.NbConvertBase.display_data_priority
    config = Config({"NbConvertBase": {"display_data_priority": [m for m in priority if "widget-view" not in m]}})
    body, _ = HTMLExporter(template_name="lab", config=config).from_notebook_node(nb)
    page_file = folder / "outputs.html"
    page_file.write_text(body)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_context(java_script_enabled=False).new_page()
            page.goto(page_file.as_uri())
            present = page.evaluate("document.body.textContent")
            visible = page.inner_text("body")
        finally:
            browser.close()
    present = " ".join(present.split())
    missing = []
    for out in _outputs(nb):
        if not text_of(out, "text/html"):
            continue
        for figure in set(_FIGURE.findall(text_of(out))):
            if figure not in present:
                missing.append((figure, text_of(out)[:120]))
    assert missing == []
    for headline in ("PASSED", "running", "http://127.0.0.1:", "Model card", "canary", "Signature: 30 inputs",
                     "Monitoring ", "values on this snapshot, over 1m", "Deployments"):
        assert headline in visible, headline
    # long parts are collapsed, not gone: a reader opens them without JavaScript
    assert "worst fractal dimension\tdouble" not in visible
    assert "worstfractaldimensiondouble" in present.replace(" ", "")


def test_a_listing_too_wide_to_fit_becomes_a_block_a_row() -> None:
    """(Seen in the whole suite: `%deploy list` of many deployments with a long name.) The name
    and the URL are never cut; when the other columns cannot give enough, each row becomes
    its cells named and wrapped, within 100 columns, nothing lost."""
    from nbdeploy.reprs import fit_columns

    header = ["name", "state", "url", "serving", "version", "pid", "retraining"]
    row = ["a-deployment-name-as-long-as-tests-make-them", "dead, spec.json damaged", "http://127.0.0.1:44073",
           "cancer@champion", "1", "12345", "running: on psi>0.2 (fires after 3 breaches), then canary 10%"]
    other = ["short", "running", "http://127.0.0.1:5000", "m/1", "2", "9", "-"]
    lines = fit_columns(header, [row, other], keep=["url"])
    assert max(map(len, lines)) <= 100
    text = " ".join(" ".join(lines).split())
    assert text.startswith(f"{row[0]}: state dead, spec.json damaged, url http://127.0.0.1:44073, serving")
    assert "retraining running: on psi>0.2 (fires after 3 breaches), then canary 10%" in text
    assert "short: state running, url http://127.0.0.1:5000" in text
    narrow = fit_columns(header, [["m", "running", "http://127.0.0.1:5000", "m/1", "2", "9", "-"]])
    assert narrow[0].startswith("name  state") and len(narrow) == 2  # a table when it fits
