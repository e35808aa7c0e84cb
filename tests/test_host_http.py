"""The pack in ComfyUI 0.3.75 started as a server (main.py), as users run it."""

from __future__ import annotations

import urllib.request

import psutil
import pytest
from comfy_host import PACK_FOLDER, declared_node_ids
from test_host_registration import guidance_prompt

pytestmark = pytest.mark.host


def test_server_is_ours_and_lists_every_node(http_host):
    owners = {c.pid for c in psutil.net_connections(kind="inet")
              if c.status == psutil.CONN_LISTEN and c.laddr.port == http_host.port}
    assert owners == {http_host.process.pid}
    info = http_host.get_json("/object_info")
    assert declared_node_ids() <= set(info)
    layers = info["ChampGuidanceLayers"]
    # Not an output node: the guidance part must not run alone when the rest fails validation.
    assert layers["category"] == "Champ/generation" and layers["output_node"] is False
    assert layers["input"]["optional"]["depth"][1]["tooltip"]


def test_server_log_has_no_import_failure_for_the_pack(http_host):
    log = http_host.log_text()
    pack_path = str(http_host.base / "custom_nodes" / PACK_FOLDER)
    timing = [line for line in log.splitlines() if line.rstrip().endswith(pack_path)]
    assert timing and "IMPORT FAILED" not in timing[0], timing
    assert f"Cannot import {pack_path}" not in log


def test_web_extension_is_served(http_host):
    url = f"{http_host.url}/extensions/{PACK_FOLDER}/champ_guidance_preview.js"
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    assert "registerExtension" in body and "ChampGuidanceLayers" in body


def test_api_prompt_over_http_succeeds_and_bad_input_is_a_400(http_host):
    status, body = http_host.post_json("/prompt", {"prompt": guidance_prompt()})
    assert status == 200, body
    entry = http_host.wait_history(body["prompt_id"])
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"]["5"]["images"][0]["filename"].startswith("champ_frame")

    bad = guidance_prompt()
    bad["3"]["inputs"]["depth_strength"] = -1.0  # below the widget minimum
    status, body = http_host.post_json("/prompt", {"prompt": bad})
    assert status == 400 and "3" in body["node_errors"]
