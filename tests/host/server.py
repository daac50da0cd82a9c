"""A real ComfyUI server for the host tests: started headless on the CPU, driven over HTTP and websocket.

The server loads this repository as a custom node pack through an extra_model_paths.yaml
whose ``custom_nodes`` entry is a folder holding a link to the repository, and finds the
tiny models through the same file.
"""

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from . import harness

logger = logging.getLogger(__name__)

PACK_FOLDER_NAME = "faststar"
START_TIMEOUT_S = 240
PROMPT_TIMEOUT_S = 300
# ComfyUI 0.3.64's prompt worker sends execution_error before it stores the prompt's history
# entry (main.py, prompt_worker), so the entry is polled for this long after the last message.
HISTORY_TIMEOUT_S = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_paths_yaml(path: Path, custom_nodes: Path, models: Path) -> None:
    """extra_model_paths.yaml: the pack folder and the tiny models."""
    lines = [
        "faststar_tests:",
        f"    base_path: {models}",
        "    infinitystar: infinitystar",
        "    vae: vae",
        "    text_encoders: text_encoders",
        f"    custom_nodes: {custom_nodes}",
    ]
    path.write_text("\n".join(lines) + "\n")


class ComfyServer:
    """One ComfyUI process on 127.0.0.1 with its own output, input, temp and user folders."""

    def __init__(self, root: Path, work: Path, models: Path):
        self.root = root
        self.work = work
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output_dir = work / "output"
        self.input_dir = work / "input"
        self.log_path = work / "comfyui.log"
        self.process = None

        custom_nodes = work / "custom_nodes"
        for folder in (custom_nodes, self.output_dir, self.input_dir, work / "temp", work / "user"):
            folder.mkdir(parents=True, exist_ok=True)
        link = custom_nodes / PACK_FOLDER_NAME
        if not link.exists():
            link.symlink_to(harness.REPO_ROOT, target_is_directory=True)
        self.paths_yaml = work / "extra_model_paths.yaml"
        write_paths_yaml(self.paths_yaml, custom_nodes, models)

    def command(self) -> list[str]:
        return [
            sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-api-nodes", "--database-url", "sqlite:///:memory:",
            "--extra-model-paths-config", str(self.paths_yaml),
            "--output-directory", str(self.output_dir), "--input-directory", str(self.input_dir),
            "--temp-directory", str(self.work / "temp"), "--user-directory", str(self.work / "user"),
        ]

    def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=harness.host_pythonpath(self.root), PYTHONUNBUFFERED="1")
        log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self.command(), cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} at start:\n{self.log_tail()}")
            try:
                self.get_json("/system_stats")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {START_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # HTTP -------------------------------------------------------------------------------

    def request(self, path: str, body: dict | None = None, method: str | None = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method or ("POST" if data else "GET"),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str):
        status, payload = self.request(path)
        if status != 200:
            raise RuntimeError(f"GET {path} returned {status}: {payload[:500]!r}")
        return json.loads(payload)

    def interrupt(self) -> None:
        self.request("/interrupt", {})

    def view(self, entry: dict) -> bytes:
        query = urllib.parse.urlencode({k: entry[k] for k in ("filename", "subfolder", "type")})
        status, payload = self.request(f"/view?{query}")
        if status != 200:
            raise RuntimeError(f"/view {query} returned {status}")
        return payload

    # Prompts ----------------------------------------------------------------------------

    def run_prompt(self, prompt: dict, extra_data: dict | None = None, timeout: float = PROMPT_TIMEOUT_S,
                   on_message=None) -> dict:
        """Queue an API-format prompt and wait for it; return the messages, history and status.

        on_message(message) is called for each JSON message of this prompt as it arrives.
        """
        import websocket

        client_id = uuid.uuid4().hex
        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={client_id}", timeout=timeout)
        try:
            body = {"prompt": prompt, "client_id": client_id}
            if extra_data:
                body["extra_data"] = extra_data
            status, payload = self.request("/prompt", body)
            answer = json.loads(payload)
            if status != 200:
                return {"queued": False, "status_code": status, "answer": answer}
            prompt_id = answer["prompt_id"]
            messages, previews = self._collect(ws, prompt_id, timeout, on_message)
        finally:
            ws.close()

        history = self.wait_for_history(prompt_id)
        return {"queued": True, "prompt_id": prompt_id, "messages": messages, "previews": previews,
                "history": history, "status": history["status"]["status_str"]}

    def wait_for_history(self, prompt_id: str, timeout: float = HISTORY_TIMEOUT_S) -> dict:
        """Return the /history entry of a finished prompt, polling until the server has stored it."""
        deadline = time.monotonic() + timeout
        while True:
            history = self.get_json(f"/history/{prompt_id}")
            if prompt_id in history:
                return history[prompt_id]
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} has no history entry {timeout} s after it finished:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.2)

    def _collect(self, ws, prompt_id: str, timeout: float, on_message) -> tuple[list[dict], int]:
        messages, previews = [], 0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            frame = ws.recv()
            if isinstance(frame, bytes):
                previews += 1
                continue
            message = json.loads(frame)
            data = message.get("data", {})
            if data.get("prompt_id") not in (None, prompt_id):
                continue
            messages.append(message)
            if on_message is not None:
                on_message(message)
            if message["type"] in ("execution_error", "execution_interrupted"):
                return messages, previews
            if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                return messages, previews
        raise TimeoutError(f"prompt {prompt_id} did not finish within {timeout} s:\n{self.log_tail()}")
