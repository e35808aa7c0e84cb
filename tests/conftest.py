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
    write_tiny_inputs(base, weights_name="tiny")  # models/champ/champ stays missing, as for a new user
    host = InProcessHost(base).start()
    yield host


@pytest.fixture(scope="session")
def http_host(tmp_path_factory):
    """ComfyUI 0.3.75 as an HTTP server (main.py) in a child process; stopped by PID at the end."""
    yield from _http_host(tmp_path_factory, "bundled")


def _http_host(tmp_path_factory, front_end: str):
    from comfy_host import HttpHost, write_tiny_inputs

    host = HttpHost(tmp_path_factory.mktemp(f"comfy-http-{front_end}"), front_end=front_end)
    # Tiny weights under models/champ/tiny: the example workflows' own "champ" stays missing, as for a
    # new user, and tests that run the sampler pick "tiny".
    write_tiny_inputs(host.base, weights_name="tiny")
    host.start()
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="session", params=["bundled", "current"])
def front_end_host(request, tmp_path_factory):
    """The HTTP host with each front end: the bundled comfyui-frontend-package (1.32.9, the same
    server as `http_host`) and the current one (requirements-frontend.txt, its own server)."""
    if request.param == "bundled":
        yield request.getfixturevalue("http_host")
    else:
        yield from _http_host(tmp_path_factory, request.param)


@pytest.fixture(scope="session")
def front_end_page(browser, front_end_host):
    """A page with the app loaded, on `front_end_host`'s front end."""
    from comfy_browser import open_front_end, prepare_settings

    prepare_settings(front_end_host)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = open_front_end(context, front_end_host.url)
    try:
        yield page
    finally:
        context.close()


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
