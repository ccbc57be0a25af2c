"""A JupyterLab server on a free localhost port, started from the test environment, and headless Chromium."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "browser"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="package")
def lab_server(tmp_path_factory):
    """Serve a scratch copy of the notebooks (so autosave never touches the repository's files)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install it with 'apt-get install chromium' to run browser tests")
    pytest.importorskip("playwright")
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    # no "Would you like to get notified about official Jupyter news?" toast over the outputs in screenshots
    news = root / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false"}')
    port = _free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           "--IdentityProvider.token=", "--ServerApp.password=", f"--ServerApp.root_dir={root}",
           "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=True",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
           # a private workspace and settings folder: no tabs restored from an earlier session
           f"--LabApp.workspaces_dir={root / 'workspaces'}", f"--LabApp.user_settings_dir={root / 'settings'}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"jupyter lab exited: {(root / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            raise RuntimeError("jupyter lab did not start within 60 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="package")
def browser():
    """One headless Chromium for the browser tests (Playwright's sync API allows one driver per thread). Package
    scope: its event loop is closed before the unit tests run, whose widgets look for a running loop."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install it with 'apt-get install chromium' to run browser tests")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        try:
            yield b
        finally:
            b.close()


def new_lab_page(browser):
    """A 1,400 x 1,000 tab that records uncaught page errors in ``page.js_errors``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.js_errors = []
    pg.on("pageerror", lambda e: pg.js_errors.append(str(e)))
    return pg


def shutdown_kernels(base_url: str) -> None:
    """Stop every kernel the server runs (a closed tab leaves its kernel, and its model, in memory)."""
    import json

    try:
        with urllib.request.urlopen(f"{base_url}/api/kernels", timeout=10) as r:
            kernels = json.load(r)
        for k in kernels:
            urllib.request.urlopen(urllib.request.Request(f"{base_url}/api/kernels/{k['id']}", method="DELETE"),
                                   timeout=30).read()
    except OSError:
        pass  # the server is going away anyway


@pytest.fixture
def page(browser, lab_server):
    pg = new_lab_page(browser)
    try:
        yield pg
    finally:
        pg.close()
        shutdown_kernels(lab_server)
