"""A real ComfyUI 0.3.75 host for the tests, in-process and as an HTTP server.

The host tree is extracted by scripts/setup.sh into `.comfyui-host/` (git-ignored). The pack is
put into a temporary BASE directory as `custom_nodes/<PACK_FOLDER>` (a symlink to the repository)
and loaded by ComfyUI's own loader, so it is imported exactly as in production: under a module
name derived from its folder path, with the repository folder not on sys.path.

In-process host: ComfyUI keeps global state (node registry, folder paths, model manager), so one
per test session. It puts the host tree and `comfy/` first on sys.path; from then on the
top-level names `nodes`, `utils`, `server`, `execution`, `folder_paths` are ComfyUI's. Tests
therefore never `import nodes` for the pack: they use `host.pack` (the module ComfyUI loaded).

HTTP host: `main.py` in a child process on 127.0.0.1, port picked without races (our PID must
own the listening socket), stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST_DIR = REPO / ".comfyui-host"
PACK_FOLDER = "champ-comfyui"
# The current front end (requirements-frontend.txt), installed by scripts/setup.sh next to the host;
# the host's own bundled front end is comfyui-frontend-package 1.32.9.
FRONT_END_DIR = REPO / ".comfyui-frontend"
FRONT_ENDS = ("bundled", "current")


def front_end_root(front_end: str) -> Path | None:
    """--front-end-root for a front end name: None = the host's bundled one."""
    if front_end == "bundled":
        return None
    root = FRONT_END_DIR / "comfyui_frontend_package" / "static"
    if not (root / "index.html").is_file():
        raise HostError(f"the current ComfyUI front end is missing at {root}: run scripts/setup.sh")
    return root


def front_end_version(front_end: str) -> str:
    """The comfyui-frontend-package version a front end name stands for (read from its metadata)."""
    import importlib.metadata

    if front_end == "bundled":
        return importlib.metadata.version("comfyui-frontend-package")
    dist = next(FRONT_END_DIR.glob("comfyui_frontend_package-*.dist-info"), None)
    if dist is None:
        raise HostError(f"the current ComfyUI front end is missing in {FRONT_END_DIR}: run scripts/setup.sh")
    return dist.name.split("-")[1].removesuffix(".dist-info")


class HostError(RuntimeError):
    pass


def check_host_tree() -> None:
    if not (HOST_DIR / "main.py").is_file():
        raise HostError(f"ComfyUI test host missing at {HOST_DIR}: run scripts/setup.sh")


def make_base(root: Path) -> Path:
    """A ComfyUI base directory whose custom_nodes/ holds the pack (as a symlink to the repo)."""
    root = Path(root)
    for sub in ("custom_nodes", "models/champ", "models/smpl", "models/vae", "models/clip_vision", "input",
                "output", "temp", "user"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    link = root / "custom_nodes" / PACK_FOLDER
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return root


def pack_module_name(base: Path) -> str:
    """The sys.modules name ComfyUI gives the pack (its folder path with '.' replaced)."""
    return os.path.join(str(Path(base) / "custom_nodes"), PACK_FOLDER).replace(".", "_x_")


def declared_node_ids() -> set[str]:
    """Node ids the pack declares, read from the source without importing it."""
    import ast

    ids = set()
    for path in sorted((REPO / "nodes").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if (
                        isinstance(stmt, ast.Assign)
                        and any(isinstance(t, ast.Name) and t.id == "NODE_ID" for t in stmt.targets)
                        and isinstance(stmt.value, ast.Constant)
                    ):
                        ids.add(stmt.value.value)
    return ids


# --------------------------------------------------------------------------------------------
# In-process host


class _LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[str] = []

    def emit(self, record):
        try:
            self.records.append(record.getMessage())
        except Exception:  # noqa: BLE001 - a bad log call must not break the host
            self.records.append(str(record.msg))


class ServerStub:
    """What PromptExecutor needs from PromptServer: client id, last node id, send_sync()."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.messages: list[tuple[str, object]] = []
        self.listeners: list = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))
        for listener in list(self.listeners):
            listener(event, data)


@dataclass
class RunResult:
    prompt_id: str
    success: bool
    messages: list[tuple[str, object]]
    outputs: dict = field(default_factory=dict)
    validation_error: dict | None = None
    node_errors: dict | None = None

    def error(self) -> dict | None:
        for event, data in self.messages:
            if event in ("execution_error", "execution_interrupted"):
                return {"event": event, **data}
        return None


class InProcessHost:
    """ComfyUI in this process. Prompts run on one worker thread, as ComfyUI's own server runs them
    (its prompt_worker thread); that also keeps ComfyUI's asyncio.run() calls away from any event
    loop running in the test thread (Playwright's sync API keeps one there)."""

    def __init__(self, base: Path):
        from concurrent.futures import ThreadPoolExecutor

        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="comfy-prompt-worker")
        self.base = Path(base)
        self.log = _LogCapture()
        self.server = ServerStub()
        self.pack = None
        self.nodes = None  # ComfyUI's nodes module
        self.executor = None
        self.import_failed_builtin: list[str] = []

    def start(self) -> InProcessHost:
        check_host_tree()
        for name in ("nodes", "utils", "server", "execution", "folder_paths"):
            module = sys.modules.get(name)
            if module is not None and not str(getattr(module, "__file__", "") or "").startswith(str(HOST_DIR)):
                raise HostError(f"a module named {name!r} ({module}) was imported before the ComfyUI host started")
        make_base(self.base)
        # The way ComfyUI runs: the host tree first on sys.path, the pack folder NOT on it.
        hidden = [p for p in sys.path if p in ("", ".") or Path(p or ".").resolve() == REPO]
        for p in hidden:
            sys.path.remove(p)
        sys.path.insert(0, str(HOST_DIR))
        root = logging.getLogger()
        root.addHandler(self.log)
        old_level = root.level
        root.setLevel(logging.INFO)
        try:
            from comfy.cli_args import args

            args.cpu = True
            args.base_directory = str(self.base)
            args.disable_auto_launch = True
            import folder_paths  # noqa: F401 - reads args.base_directory at import
            import utils.extra_config  # noqa: F401 - before nodes: comfy/utils.py would shadow the package

            import nodes as comfy_nodes

            self.import_failed_builtin = self._on_worker(
                asyncio.run, comfy_nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False)
            )
            import comfy.utils
            import execution

            self.nodes = comfy_nodes
            self.pack = sys.modules.get(pack_module_name(self.base))
            if self.pack is None:
                raise HostError("ComfyUI did not load the pack:\n" + "\n".join(self.log.records[-40:]))
            comfy.utils.set_progress_bar_global_hook(self._progress_hook)
            self.executor = execution.PromptExecutor(
                self.server, cache_type=execution.CacheType.CLASSIC, cache_args={"lru": 0, "ram": 0}
            )
        finally:
            root.setLevel(old_level)
            # Library tests import champ_core absolutely: give them the repo back, after the host.
            for p in hidden:
                if p not in sys.path:
                    sys.path.append(p)
        return self

    def _execute(self, prompt, prompt_id, outputs):
        # ComfyUI's defaults: torch's own thread count, nodes under torch.inference_mode() (the executor's).
        self.executor.execute(prompt, prompt_id, {}, outputs)

    def _on_worker(self, function, *args):
        return self._worker.submit(function, *args).result()

    def _progress_hook(self, value, total, preview_image, prompt_id=None, node_id=None):
        # Mirrors main.hijack_progress: honour Cancel, then report.
        import comfy.model_management
        from comfy_execution.utils import get_executing_context

        context = get_executing_context()
        if node_id is None and context is not None:
            node_id = context.node_id
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.server.send_sync("progress", {"value": value, "max": total, "node": node_id}, None)

    def import_failures_for_pack(self) -> list[str]:
        link = str(self.base / "custom_nodes" / PACK_FOLDER)
        return [r for r in self.log.records if link in r and ("IMPORT FAILED" in r or "Cannot import" in r)]

    def interrupt(self) -> None:
        self.nodes.interrupt_processing(True)

    def run(self, prompt: dict, outputs: list[str] | None = None) -> RunResult:
        """Validate (as POST /prompt does) and execute an API-format prompt."""
        import copy

        import execution

        prompt = copy.deepcopy(prompt)  # as POST /prompt parses a fresh one (ComfyUI writes into it)
        prompt_id = uuid.uuid4().hex
        valid = self._on_worker(asyncio.run, execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            return RunResult(prompt_id, False, [], validation_error=valid[1], node_errors=valid[3])
        self.server.messages = []
        self._on_worker(self._execute, prompt, prompt_id, outputs if outputs is not None else valid[2])
        return RunResult(
            prompt_id,
            self.executor.success,
            list(self.executor.status_messages),
            outputs=self.executor.history_result["outputs"],
            node_errors=valid[3] or None,
        )

    def cached_output(self, node_id: str):
        """The output values a node produced in the last run (from the executor's output cache)."""
        entry = self.executor.caches.outputs.get(node_id)
        return None if entry is None else entry.outputs if hasattr(entry, "outputs") else entry


# --------------------------------------------------------------------------------------------
# HTTP host

_LAUNCHER = """
import os, runpy, sys
host = sys.argv[1]
sys.argv = [os.path.join(host, "main.py"), *sys.argv[2:]]
sys.path[0] = host
os.chdir(host)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpHost:
    def __init__(self, base: Path, python: str = sys.executable, front_end: str = "bundled"):
        self.base = make_base(Path(base))
        self.python = python
        self.front_end = front_end
        self.front_end_root = front_end_root(front_end)
        self.process: subprocess.Popen | None = None
        self.port: int | None = None
        self.log_path = self.base / "comfyui-server.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0, attempts: int = 4) -> HttpHost:
        import psutil

        check_host_tree()
        # As users start it: no thread settings, the environment's defaults.
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_CURRENT_TEST")}
        last_error = ""
        for _ in range(attempts):
            port = _free_port()
            log_file = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
            cmd = [
                self.python, "-c", _LAUNCHER, str(HOST_DIR), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                "--disable-auto-launch", "--base-directory", str(self.base),
                "--database-url", f"sqlite:///{self.base}/user/comfyui.db",
                *(["--front-end-root", str(self.front_end_root)] if self.front_end_root else []),
            ]
            process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=str(HOST_DIR))
            log_file.close()
            deadline = time.monotonic() + timeout
            owned = False
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    break
                try:
                    conns = psutil.Process(process.pid).net_connections(kind="inet")
                except psutil.Error:
                    conns = []
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in conns):
                    owned = True
                    break
                time.sleep(0.25)
            if owned:
                self.process, self.port = process, port
                self._wait_ready(deadline)
                return self
            last_error = self.log_tail()
            died = process.poll() is not None
            self._kill(process)
            if not (died and "address already in use" in last_error.lower()):
                break  # timed out, or died for another reason than a lost port race: retrying will not help
        raise HostError(f"ComfyUI server did not start; log tail:\n{last_error}")

    def _wait_ready(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                self.get_json("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.process.poll() is not None:
                    raise HostError("ComfyUI server exited:\n" + self.log_tail()) from None
                time.sleep(0.25)
        raise HostError("ComfyUI server did not answer /system_stats:\n" + self.log_tail())

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    @staticmethod
    def _kill(process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            self._kill(self.process)
            self.process = None

    # -- HTTP helpers --
    def get_json(self, path: str, timeout: float = 10.0):
        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return json.loads(response.read())

    def post_json(self, path: str, payload: dict, timeout: float = 10.0):
        request = urllib.request.Request(
            self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"null")

    def wait_history(self, prompt_id: str, timeout: float = 120.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"].get("status_str") in ("success", "error")
            ):
                return entry
            if self.process.poll() is not None:
                raise HostError("ComfyUI server exited:\n" + self.log_tail())
            time.sleep(0.2)
        raise HostError(f"prompt {prompt_id} did not finish in {timeout} s:\n" + self.log_tail())


# --------------------------------------------------------------------------------------------
# Tiny weights in the released layout, and small inputs

PARITY = Path(os.environ.get("CHAMP_PARITY_DIR", REPO / "tests" / "fixtures" / "champ_parity"))
GUIDANCE_TYPES = ("depth", "normal", "semantic_map", "dwpose")


def _fixture_pipeline() -> dict:
    """The parity fixture's pipeline definition (sizes and frame count), read from its config.json."""
    return json.loads((PARITY / "config.json").read_text())["set_definition"]["pipeline"]


# width, height and frame count of the parity fixture's guidance frames (read from the fixture)
TINY_SIZE = (int(_fixture_pipeline()["width"]), int(_fixture_pipeline()["height"]))
TINY_FRAMES = int(_fixture_pipeline()["video_length"])


def write_tiny_weights(models_champ: Path, name: str = "champ") -> dict[str, Path]:
    """Tiny seeded Champ weights laid out as the released files, under `models_champ`:
    <name>/{denoising_unet,reference_unet,motion_module,guidance_encoder_<type>}.pth (plain torch
    state dicts with the released key names), image_encoder/ (transformers) and sd-vae-ft-mse/
    (diffusers). The tensors are the parity fixture's (tests/fixtures/champ_parity)."""
    import shutil

    import torch
    from safetensors.torch import load_file

    champ = Path(models_champ) / name
    champ.mkdir(parents=True, exist_ok=True)
    sources = {
        "denoising_unet": PARITY / "unet" / "denoising_unet.safetensors",
        "reference_unet": PARITY / "unet" / "reference_unet.safetensors",
        "motion_module": PARITY / "unet" / "motion_module.safetensors",
        **{f"guidance_encoder_{t}": PARITY / "pipeline" / f"guidance_encoder_{t}.safetensors" for t in GUIDANCE_TYPES},
    }
    for stem, source in sources.items():
        target = champ / f"{stem}.pth"
        if not target.exists():
            tmp = target.with_suffix(".pth.tmp")
            torch.save(load_file(str(source)), tmp)
            tmp.replace(target)
    out = {name: champ}
    for name, source in (("image_encoder", "image_encoder"), ("sd-vae-ft-mse", "vae")):
        target = Path(models_champ) / name
        if not target.exists():
            shutil.copytree(PARITY / "pipeline" / source, target)
        out[name] = target
    return out


def tiny_guidance_frames(num_frames: int = 8) -> dict:
    """The parity fixture's guidance frames (uint8 (T, 48, 32, 3)) for each guidance type."""
    import numpy as np
    from PIL import Image

    return {
        t: np.array(Image.open(PARITY / "pipeline" / f"guidance_{t}.png").convert("RGB")).reshape(TINY_FRAMES, TINY_SIZE[1], TINY_SIZE[0], 3)[:num_frames]
        for t in GUIDANCE_TYPES
    }


def write_guidance_folder(root: Path, num_frames: int = 8) -> Path:
    """A motion folder in the reference layout (depth/ normal/ semantic_map/ dwpose/) of tiny frames."""
    from PIL import Image

    for layer, frames in tiny_guidance_frames(num_frames).items():
        (root / layer).mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(frames):
            Image.fromarray(frame).save(root / layer / f"{i:04d}.png")
    return root


def write_tiny_inputs(base: Path, weights_name: str = "champ") -> None:
    """Weights into BASE/models/champ/<weights_name>, the reference image and a guidance folder into
    BASE/input."""
    import shutil

    write_tiny_weights(Path(base) / "models" / "champ", weights_name)
    shutil.copy(PARITY / "pipeline" / "reference.png", Path(base) / "input" / "champ_reference.png")
    write_guidance_folder(Path(base) / "input" / "champ_tiny_motion")
