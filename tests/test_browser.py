"""A real JupyterLab in a real headless Chromium: the monitoring widget renders and updates.

Starts JupyterLab on loopback with a token, opens notebooks/monitoring.ipynb (a copy) with
Playwright driving Debian's /usr/bin/chromium, runs all cells, and reads the widget's DOM.
JupyterLab, its kernels and the deployment are stopped whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, running

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(ROOT / "notebooks" / "monitoring.ipynb", root / "monitoring.ipynb")
    settings = tmp_path / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    # the dark theme (#16): the panel must read on it; the screenshot is kept as a CI artefact
    (settings / "themes.jupyterlab-settings").write_text(json.dumps({"theme": "JupyterLab Dark"}))
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
    }
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--ServerApp.port={port}",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}",
        "--ServerApp.port_retries=0",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with running(cmd, f"{url}/api/status?token={token}", tmp_path / "lab.log", env=env) as proc:
        try:
            yield url, token, root
        finally:
            try:  # stops JupyterLab and its kernels (an attached deployment ends with its kernel)
                httpx.post(f"{url}/api/shutdown", headers={"Authorization": f"token {token}"}, timeout=10)
                proc.wait(30)
            except Exception:
                pass
            import nbdeploy

            try:
                nbdeploy.get("monitoring-demo").stop()
            except nbdeploy.NbdeployError:
                pass


def test_monitoring_widget_renders_and_updates_in_jupyterlab(lab: tuple[str, str, Path]) -> None:
    from playwright.sync_api import sync_playwright

    url, token, _root = lab
    shot = ROOT / "build" / "monitoring-widget-dark.png"
    shot.parent.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/workspaces/nbd-{uuid.uuid4().hex[:8]}/tree/monitoring.ipynb?reset&token={token}")
            panel = page.locator(".jp-NotebookPanel")
            panel.locator(".jp-Cell").first.wait_for(timeout=60_000)
            # "Run All Cells" is a no-op until the kernel is connected: wait for it to be idle, then
            # check that the first code cell was queued, and click again if the click came too early.
            # JupyterLab may first ask which kernel to start (seen on a fresh machine): accept its choice.
            dialog = page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if dialog.count() and dialog.first.is_visible():
                    dialog.first.click()
                elif page.locator('.jp-Notebook-ExecutionIndicator[data-status="idle"]').count():
                    time.sleep(1)  # a kernel dialog can still open right after the indicator shows
                    if not dialog.count():
                        break
                time.sleep(0.25)
            page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=60_000)
            prompt = panel.locator(".jp-CodeCell .jp-InputPrompt").first
            for _attempt in range(3):
                page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
                page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
                deadline = time.monotonic() + 20
                while not re.search(r"\[[\d*]+\]", prompt.inner_text()) and time.monotonic() < deadline:
                    time.sleep(0.25)
                if re.search(r"\[[\d*]+\]", prompt.inner_text()):
                    break

            total = panel.locator('.nbd-mon [data-tile="total"] .value')
            total.wait_for(timeout=180_000)

            def count() -> int:
                text = total.inner_text().strip()
                return int(re.sub(r"\D", "", text) or 0)

            deadline = time.monotonic() + 60
            while count() == 0 and time.monotonic() < deadline:
                time.sleep(0.5)
            first = count()
            time.sleep(4)
            second = count()
            assert second > first > 0, (first, second)

            drifted = panel.locator('.nbd-mon tr[data-feature="mean radius"][data-status="drift"]')
            drifted.wait_for(timeout=90_000)
            assert panel.locator('.nbd-mon [data-status="live"]').count() == 1
            assert panel.locator('.nbd-mon tr[data-feature="mean texture"][data-status="drift"]').count() == 0
            assert page.locator('body[data-jp-theme-light="false"]').count() == 1  # the dark theme is on
            # the alert row's value and the drift table beside it: one snapshot (one read of the DOM)
            html = panel.locator(".nbd-mon").first.inner_html()
            alert = re.search(r'data-rule="psi&gt;0.25" data-value="([^"]+)"', html)
            table = html[html.index('class="nbd-mon-drift"') :].split("</table>", 1)[0]
            psis = [float(v) for v in re.findall(r"</span></td>\s*<td>([\d.]+)</td>", table)]
            assert alert and psis, html[:2000]
            assert abs(float(alert.group(1)) - max(psis)) <= 0.0005, (alert.group(1), max(psis))
            panel.locator(".nbd-mon").first.scroll_into_view_if_needed()
            page.screenshot(path=str(shot), full_page=False)
            print(f"\nscreenshot of the monitoring widget: {shot}")
        except Exception:
            failed = shot.with_name("monitoring-widget-failure.png")
            page.screenshot(path=str(failed), full_page=True)
            print(f"\nscreenshot at failure: {failed}\noutputs in the page:")
            for text in panel.locator(".jp-OutputArea-output").all_inner_texts():
                print("  |", text[:400].replace("\n", "\n  | "))
            raise
        finally:
            browser.close()
