"""What runpod's deployed mode costs between readiness and the first job, on a GPU machine.

For each handler, worker-runtime starts the demo WebUI (3 s start-up) and the handler in
runpod's deployed mode against a control-plane double on loopback (the network fitness check is
stubbed, everything else runs as in production). Measured: ready (worker-runtime's line) to the
first job-take, and the handler process's GPU memory after its first job (nvidia-smi).

usage: python3 measure.py WORKER_RUNTIME ROUNDS
"""

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent


class Plane:
    def __init__(self):
        self.first_take = None
        self.done = threading.Event()
        self.served = False
        plane = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def reply(self, status, body=b""):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                if "/job-take/" in self.path:
                    if plane.first_take is None:
                        plane.first_take = time.monotonic()
                    if not plane.served:
                        plane.served = True
                        job = {"id": "bench-1", "input": {"api": {"method": "GET", "endpoint": "/sdapi/v1/sd-models"}}}
                        return self.reply(200, json.dumps(job).encode())
                    time.sleep(0.2)
                self.reply(204)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                plane.done.set()
                self.reply(200, b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def gpu_mib(pid):
    try:
        out = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return None
    for line in out.splitlines():
        p, mem = [x.strip() for x in line.split(",")]
        if int(p) == pid:
            return int(mem)
    return 0


def run(runtime, kind, work):
    plane = Plane()
    model = work / "model.safetensors"
    model.write_text("demo placeholder")
    env = dict(os.environ, WEBUI_DIR=str(ROOT / "docker/demo-webui"), WEBUI_PYTHON=sys.executable,
               MODEL_PATH=str(model), CKPT_DIR=str(work), LORA_DIR=str(work), EMBEDDINGS_DIR=str(work),
               WEBUI_PORT=str(7900 + int(time.time()) % 90), WEBUI_READY="api", CUDA_CHECK="warn",
               DEMO_WEBUI_STARTUP_DELAY="3", HANDLER_PYTHON=sys.executable,
               HANDLER_PATH=str(HERE / "stub_network_check.py"),
               RUNPOD_WEBHOOK_GET_JOB=f"{plane.url}/v2/job-take/$ID?gpu=h200",
               RUNPOD_WEBHOOK_POST_OUTPUT=f"{plane.url}/v2/job-done/$RUNPOD_POD_ID/$ID?gpu=h200",
               RUNPOD_POD_ID="bench-worker", RUNPOD_AI_API_KEY="bench", PYTHONUNBUFFERED="1")
    env.pop("RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", None)
    env.pop("RUNPOD_SKIP_GPU_CHECK", None)
    if kind == "usual":
        env.update(HANDLER_ARGS=str(HERE / "usual_handler.py"), HANDLER_START="after-ready")
    else:
        env.update(HANDLER_ARGS=str(ROOT / "docker/handler.py"), HANDLER_START="gate")
    started = time.monotonic()
    proc = subprocess.Popen([runtime], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines, marks = [], {}

    def read():
        for line in proc.stdout:
            lines.append(line.rstrip())
            if "RunPod handler started with PID:" in line:
                marks["pid"] = int(line.split("PID:")[1].split(",")[0])
            if ("readiness gate opened" in line or "WebUI API ready in" in line) and "ready" not in marks:
                marks["ready"] = time.monotonic()

    threading.Thread(target=read, daemon=True).start()
    ok = plane.done.wait(120)
    time.sleep(1.0)
    result = {"handler": kind, "job_done": ok}
    if ok and "ready" in marks and plane.first_take:
        result["ready_s"] = round(marks["ready"] - started, 3)
        result["ready_to_first_take_s"] = round(plane.first_take - marks["ready"], 3)
        result["handler_gpu_mib"] = gpu_mib(marks.get("pid", -1))
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    result["checks"] = [l[-160:] for l in lines if "check" in l.lower() and "CUDA" not in l][:6]
    return result


def main():
    runtime, rounds = sys.argv[1], int(sys.argv[2])
    work = Path(os.environ.get("WORK", "/tmp/deployed-bench"))
    work.mkdir(parents=True, exist_ok=True)
    for r in range(rounds):
        for kind in (("usual", "ours") if r % 2 == 0 else ("ours", "usual")):
            print(json.dumps(run(runtime, kind, work)), flush=True)


if __name__ == "__main__":
    main()
