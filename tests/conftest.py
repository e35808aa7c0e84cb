"""Session-wide test set-up: the repository on sys.path, and the shared ComfyUI hosts.

Library tests import `champ_core` absolutely (the repository root is appended to sys.path here).
Host tests get ComfyUI 0.3.75 through session fixtures that start lazily, so a run of library
tests alone never imports ComfyUI (whose top-level `nodes`/`utils` modules would otherwise shadow
names): `comfy_host` (in-process PromptExecutor, one per session: ComfyUI keeps global state),
`http_host` (main.py on 127.0.0.1, one per session) and `browser_page` (one headless Chromium
page on the HTTP host's front end).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def comfy_host(tmp_path_factory):
    """ComfyUI 0.3.75 in this process, with the pack loaded by ComfyUI's own custom-node loader."""
    from comfy_host import InProcessHost, make_base, write_tiny_inputs

    base = make_base(tmp_path_factory.mktemp("comfy-inprocess"))
    write_tiny_inputs(base)
    host = InProcessHost(base).start()
    yield host


@pytest.fixture(scope="session")
def http_host(tmp_path_factory):
    """ComfyUI 0.3.75 as an HTTP server (main.py) in a child process; stopped by PID at the end."""
    from comfy_examples import write_example_inputs
    from comfy_host import HttpHost, write_tiny_inputs

    host = HttpHost(tmp_path_factory.mktemp("comfy-http"))
    write_tiny_inputs(host.base)
    write_example_inputs(host.base / "input")
    host.start()
    try:
        yield host
    finally:
        host.stop()


CHROMIUM = os.environ.get("CHAMP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def browser_page(browser, http_host):
    """One page on the HTTP host's front end, with the app loaded (window.app ready)."""
    from comfy_browser import open_front_end, prepare_settings

    prepare_settings(http_host)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = open_front_end(context, http_host.url)
    try:
        yield page
    finally:
        context.close()
