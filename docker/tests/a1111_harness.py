"""Harness for the tests on the real AUTOMATIC1111 (test_a1111_*.py): worker-runtime starts the prepared A1111 (`cargo xtask
a1111`) and docker/handler.py, and jobs go through runpod's local HTTP API or its deployed mode
against a control-plane double on loopback.

`cargo xtask ci` prepares A1111 and runs this folder with A1111_SETTINGS naming a file of the
KEY=value lines `cargo xtask a1111` prints. By hand:

    cargo xtask a1111 > /tmp/a1111.env
    A1111_SETTINGS=/tmp/a1111.env .venv/bin/python -m pytest docker/tests/test_a1111_*.py

Without A1111_SETTINGS these tests are skipped, saying so. The WebUI runs on the CPU
(WEBUI_DEVICE=cpu) with the small test checkpoints, so a 64x64 job takes about a second.
"""

import os
import signal
import uuid
from pathlib import Path

import pytest

from conftest import HANDLER, PYTHON, RUNTIME, Process, free_port, http, processes_with



def read_settings():
    path = os.environ.get("A1111_SETTINGS")
    if not path:
        return None
    settings = {}
    for line in Path(path).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings[key.strip()] = value
    return settings


SETTINGS = read_settings()
requires_a1111 = pytest.mark.skipif(
    SETTINGS is None or not RUNTIME.is_file(),
    reason="the real A1111 is not prepared: set A1111_SETTINGS to the output of `cargo xtask a1111` "
           "and build worker-runtime (cargo xtask ci does both)")

MAIN_MODEL = "test-a"
SECOND_MODEL = "test-b"



class Worker:
    """worker-runtime running the real A1111 and docker/handler.py."""

    def __init__(self, tmp_path, handler_args="", **extra_env):
        data_dir = tmp_path / "webui-data"
        (data_dir / "models").mkdir(parents=True, exist_ok=True)
        approx = Path(SETTINGS["WEBUI_DIR"]) / "models" / "VAE-approx"
        if approx.is_dir():
            target = data_dir / "models" / "VAE-approx"
            target.mkdir(exist_ok=True)
            for item in approx.iterdir():
                (target / item.name).write_bytes(item.read_bytes())
        for sub in ("loras", "embeddings"):
            (tmp_path / sub).mkdir(exist_ok=True)
        self.marker = f"a1111-test-{uuid.uuid4()}"
        self.webui_port = free_port()
        self.webui_url = f"http://127.0.0.1:{self.webui_port}"
        env = dict(SETTINGS)
        env.update({
            "WEBUI_PORT": str(self.webui_port), "WEBUI_DEVICE": "cpu",
            "WEBUI_EXTRA_ARGS": f"--data-dir {data_dir}",
            "LORA_DIR": str(tmp_path / "loras"), "EMBEDDINGS_DIR": str(tmp_path / "embeddings"),
            "HANDLER_PATH": str(HANDLER), "HANDLER_PYTHON": PYTHON, "HANDLER_ARGS": handler_args,
            "SHUTDOWN_GRACE": "5", "A1111_TEST_MARKER": self.marker,
            "WORKER_READY_FD": None, "RUNPOD_WEBHOOK_GET_JOB": None, "RUNPOD_LOG_LEVEL": None,
            "COMMANDLINE_ARGS": None,
        })
        env.update(extra_env)
        self.process = Process([str(RUNTIME)], env=env)

    def wait_ready(self, timeout=240):
        """Until the readiness gate opened and the handler serves."""
        self.process.wait_for_line("handler: serving", timeout=timeout)

    def webui_pids(self):
        return processes_with(self.marker)

    def stop(self, signum=signal.SIGTERM, timeout=60):
        self.process.signal(signum)
        return self.process.wait(timeout)

    def kill(self):
        self.process.kill()
        for pid in processes_with(self.marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def start_worker(tmp_path):
    """start_worker(handler_args, **env) -> Worker; every worker is killed when the test ends."""
    started = []

    def start(handler_args="", **env):
        worker = Worker(tmp_path, handler_args, **env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


class ServedWorker:
    def __init__(self, worker, api_url):
        self.worker = worker
        self.api_url = api_url

    def job(self, job_input, timeout=120):
        """runpod's /runsync answer for one job: {"status", "output" | "error", ...}."""
        status, answer = http("POST", f"{self.api_url}/runsync", {"input": job_input},
                              timeout=timeout)
        assert status == 200, (status, answer)
        return answer

    def output(self, job_input, timeout=120):
        answer = self.job(job_input, timeout)
        assert answer.get("status") == "COMPLETED", answer
        return answer["output"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One worker for a module, serving runpod's local HTTP API (POST /runsync)."""
    if SETTINGS is None or not RUNTIME.is_file():
        pytest.skip("the real A1111 is not prepared")
    port = free_port()
    worker = Worker(tmp_path_factory.mktemp("served"),
                    f"--rp_serve_api --rp_api_port {port} --rp_api_host 127.0.0.1")
    try:
        worker.wait_ready()
        # runpod's API binds after the handler starts serving.
        worker.process.wait_for_line(f"Uvicorn running on http://127.0.0.1:{port}", timeout=60)
        yield ServedWorker(worker, f"http://127.0.0.1:{port}")
    finally:
        worker.kill()
