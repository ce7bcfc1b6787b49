"""Shared helpers: start the demo WebUI and the handler as real processes, read PNGs back.

Every process is started in its own session and killed (whole group) when its test ends, so a
failing test leaves nothing behind. Ports come from the kernel (port 0), so the suite can run in
parallel (pytest -n auto).
"""

import base64
import importlib.util
import json
import os
import queue
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# The real-A1111 harness's fixtures (served, start_worker) for test_a1111_*.py.
pytest_plugins = ["a1111_harness"]

DOCKER_DIR = Path(__file__).resolve().parents[1]
REPO_ROOT = DOCKER_DIR.parent
DEMO_DIR = DOCKER_DIR / "demo-webui"
DEMO_WEBUI = DEMO_DIR / "webui.py"
HANDLER = DOCKER_DIR / "handler.py"
FLAG_CATALOG = REPO_ROOT / "runtime" / "src" / "a1111-cmd-flags-v1.10.tsv"
# The worker-runtime binary: $WORKER_RUNTIME (`cargo xtask ci` sets it), else cargo's debug build
# in $CARGO_TARGET_DIR (relative to the workspace root, as cargo reads it) or target/.
RUNTIME = Path(os.environ.get("WORKER_RUNTIME")
               or REPO_ROOT / (os.environ.get("CARGO_TARGET_DIR") or "target") / "debug" / "worker-runtime")
# The venv running pytest has runpod installed: the handler runs with the same interpreter.
PYTHON = sys.executable
# The WebUI flag set worker-runtime passes (runtime::webui_flags::FLAG_SET), minus the paths the tests choose.
WORKER_FLAGS = ["--xformers", "--no-half-vae", "--skip-python-version-check",
              "--skip-torch-cuda-test", "--skip-install", "--opt-sdp-attention",
              "--disable-safe-unpickle", "--api", "--nowebui", "--skip-version-check",
              "--no-hashing", "--no-download-sd-model"]


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def free_port():
    """A port nothing listens on right now (for servers that cannot be told to take port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def processes_with(marker):
    """PIDs of live processes whose environment holds `marker`: every child of a worker started
    with the marker in its environment inherits it, setsid'd daemons included."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found

class Process:
    """A child process whose output (stdout and stderr merged) is collected line by line."""

    def __init__(self, argv, env=None, cwd=None, pass_fds=()):
        full_env = dict(os.environ)
        for key, value in (env or {}).items():
            # None removes a variable the test runner's environment may hold.
            if value is None:
                full_env.pop(key, None)
            else:
                full_env[key] = value
        self.lines = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, start_new_session=True, pass_fds=pass_fds,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self):
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, needle, timeout=20):
        """The first line containing `needle`; fails the test on timeout or early exit."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if needle in line:
                        return line
                if self.proc.poll() is not None and not self._reader.is_alive():
                    pytest.fail(f"process exited ({self.proc.returncode}) before printing "
                                f"{needle!r}:\n{self.output}")
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no line with {needle!r} within {timeout}s:\n{self.output}")
                self._cond.wait(min(left, 0.2))

    def wait(self, timeout=30):
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"process did not exit within {timeout}s:\n{self.output}")
        self._reader.join(5)
        return code

    def signal(self, signum):
        self.proc.send_signal(signum)

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture
def spawn():
    """spawn(argv, env=..., cwd=...) -> Process; every process is killed when the test ends."""
    started = []

    def start(argv, **kwargs):
        process = Process(argv, **kwargs)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


class Demo:
    def __init__(self, process, port):
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"


def start_demo(spawn, args=(), env=None, port=0):
    """The demo WebUI as worker-runtime starts it (cwd = its folder), once it listens."""
    process = spawn([PYTHON, str(DEMO_WEBUI), *WORKER_FLAGS, "--server-name", "127.0.0.1",
                     "--port", str(port), *args], env=env, cwd=str(DEMO_DIR))
    line = process.wait_for_line("Uvicorn running on")
    bound = int(line.split("http://127.0.0.1:")[1].split()[0])
    return Demo(process, bound)


@pytest.fixture
def demo(spawn):
    return start_demo(spawn, env={"DEMO_WEBUI_ACCESS_LOG": "0"})


@pytest.fixture(scope="module")
def shared_demo():
    """One demo WebUI for a module's tests that only read from it."""
    started = []

    def spawn_once(argv, **kwargs):
        process = Process(argv, **kwargs)
        started.append(process)
        return process

    yield start_demo(spawn_once, env={"DEMO_WEBUI_ACCESS_LOG": "0"})
    for process in started:
        process.kill()


def http(method, url, body=None, timeout=30):
    """(status, decoded JSON or text) for one request; never raises on 4xx/5xx."""
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def read_png(data):
    """(width, height, text chunks) of a PNG, checking what a decoder would: signature, CRCs,
    that IHDR is 8-bit RGB, and that the pixel data inflates to exactly height rows of width."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour) == (8, 2), "expected 8-bit RGB"
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(pixels) == height * (1 + 3 * width)
    texts = {}
    for kind, body in chunks:
        if kind == b"tEXt":
            key, value = body.split(b"\0", 1)
            texts[key.decode("latin-1")] = value.decode("latin-1")
    return width, height, texts


def decode_png_b64(text):
    return read_png(base64.b64decode(text))


def serve_on_loopback(handler_class):
    """(server, base URL) of a threaded HTTP server on 127.0.0.1 serving in the background."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler_class)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


class FakeServer:
    """A loopback HTTP server whose answers a test chooses per request: `answer(method, path,
    body)` returns (status, JSON-able body or bytes, extra headers), or None for a plain 200 {}.
    Every request is recorded as (method, path, body)."""

    def __init__(self, answer=None):
        outer = self
        self.requests = []
        self.answer = answer or (lambda method, path, body: None)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def _serve(self, method):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                outer.requests.append((method, self.path, body))
                result = outer.answer(method, self.path, body)
                if callable(result):
                    result(self)  # the test writes the answer itself (slow or odd answers)
                    return
                status, payload, headers = result or (200, {}, {})
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server, self.url = serve_on_loopback(Handler)

    def paths(self):
        return [(method, path) for method, path, _ in self.requests]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_server():
    """fake_server(answer) -> FakeServer, closed when the test ends."""
    servers = []

    def make(answer=None):
        server = FakeServer(answer)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def png_b64(width=8, height=8):
    """A small real PNG, base64-encoded."""
    raw = b"".join(b"\0" + bytes(3 * width) for _ in range(height))

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return base64.b64encode(png).decode()


# RunPod's control plane, for runpod's deployed mode

CONTROL_PLANE_WORKER_ID = "worker-under-test"


class ControlPlane:
    """RunPod's side of runpod 1.12.0's worker protocol: GET job-take answers the next queued job
    (or 204 after a short long-poll), GET job-stop answers 204, POST job-done records the result
    (JSON in a form-encoded body)."""

    def __init__(self):
        outer = self
        self.jobs = queue.Queue()
        self.results = {}
        self.taken = set()
        self.done = threading.Condition()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                if "/job-take/" in self.path:
                    try:
                        job = outer.jobs.get(timeout=0.5)
                    except queue.Empty:
                        return self._answer(204, b"")
                    with outer.done:
                        outer.taken.add(job["id"])
                        outer.done.notify_all()
                    return self._answer(200, json.dumps(job).encode())
                threading.Event().wait(0.5)
                self._answer(204, b"")

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = urllib.parse.urlsplit(self.path).path
                job_id = path.rsplit("/", 1)[-1]
                with outer.done:
                    outer.results[job_id] = (json.loads(raw), len(raw))
                    outer.done.notify_all()
                self._answer(200, b"{}")

            def _answer(self, status, body):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server, self.url = serve_on_loopback(Handler)

    def env(self):
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.url}/v2/job-take/$ID?gpu=test",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.url}/v2/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
            "RUNPOD_POD_ID": CONTROL_PLANE_WORKER_ID,
            # No test may dial out: runpod's fitness checks include a TCP connect to 8.8.8.8:53.
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
            "RUNPOD_WEBHOOK_PING": None,
            "RUNPOD_AI_API_KEY": "rpa_TESTKEY_0123456789",
        }

    def submit(self, job_id, job_input):
        self.jobs.put({"id": job_id, "input": job_input})

    def wait_taken(self, job_id, timeout=60):
        with self.done:
            if not self.done.wait_for(lambda: job_id in self.taken, timeout):
                pytest.fail(f"job {job_id} was not taken within {timeout}s")

    def result(self, job_id, timeout=60):
        """The body the worker posted for this job, and its size in bytes."""
        with self.done:
            if not self.done.wait_for(lambda: job_id in self.results, timeout):
                pytest.fail(f"no result for {job_id} within {timeout}s")
            return self.results[job_id]

    def run(self, job_id, job_input, timeout=60):
        self.submit(job_id, job_input)
        return self.result(job_id, timeout)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def control_plane():
    plane = ControlPlane()
    yield plane
    plane.close()


def wait_until(predicate, timeout, what):
    """Waits for a condition instead of sleeping for a guess; fails saying what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {timeout}s")
