"""The first job after readiness on a GPU, with WEBUI_READY=api against WEBUI_READY=warmup.

Starts worker-runtime (which starts the real A1111 and a handler that only waits at the
readiness gate), and the moment the gate opens sends a 512x512 20-step txt2img straight to the
WebUI, then a second one (warm), then stops the worker. Prints one JSON object per run: the
start-up report worker-runtime logged, the gate time, both job times, the WebUI's own figures.

usage: python3 first_job.py WORKER_RUNTIME IDLE_HANDLER ROUNDS [MODES]   (settings in the environment)

MODES: comma-separated WEBUI_READY values, each optionally with a warm-up size, run in turn and
in a rotated order each round (default "api,warmup"; e.g. "warmup,warmup@512x512").
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request

JOB = {"prompt": "a lighthouse on a cliff at dawn", "seed": 7, "steps": 20, "width": 512,
       "height": 512, "sampler_name": "Euler a", "send_images": True, "save_images": False}


def post(url, body, timeout=300):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return answer.status, json.loads(answer.read())


def one_run(runtime, handler, mode, port):
    ready, _, size = mode.partition("@")
    env = dict(os.environ, WEBUI_READY=ready, WEBUI_PORT=str(port), HANDLER_PATH=handler,
               HANDLER_PYTHON=sys.executable, PYTHONUNBUFFERED="1")
    if size:
        env["WEBUI_WARMUP_SIZE"] = size
    launched = time.monotonic()
    proc = subprocess.Popen([runtime], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True)
    lines, gate = [], threading.Event()
    marks = {}
    log_dir = os.environ.get("LOG_DIR")
    log = open(os.path.join(log_dir, f"run-{port}-{mode.replace('@', '-')}.log"), "w") if log_dir else None

    def read():
        for line in proc.stdout:
            at = time.monotonic() - launched
            lines.append((at, line.rstrip()))
            if log:
                log.write(f"{at:8.3f} {line}")
                log.flush()
            if "idle-handler: gate open" in line:
                marks["gate"] = at
                gate.set()
        gate.set()  # the worker ended: nothing to wait for

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    result = {"mode": mode}
    try:
        gate.wait(300)
        if "gate" not in marks:
            raise RuntimeError(f"the gate never opened (worker exit status {proc.poll()})")
        url = f"http://127.0.0.1:{port}/sdapi/v1/txt2img"
        for name in ("first_job_s", "second_job_s", "third_job_s"):
            started = time.monotonic()
            status, answer = post(url, JOB)
            result[name] = round(time.monotonic() - started, 3)
            if status != 200 or not answer.get("images"):
                raise RuntimeError(f"txt2img answered {status}")
        result["gate_s"] = round(marks["gate"], 3)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        reader.join(5)
    for _, line in lines:
        if '"event":"startup"' in line.replace(" ", ""):
            result["startup_report"] = json.loads(line[line.index("{"):])
        for marker in ("Startup time:", "Model loaded in", "Warm-up", "warm-up"):
            if marker in line and marker not in result:
                result[marker] = line.strip()[-200:]
    result["exit_status"] = proc.returncode
    if log:
        log.close()
    return result


def main():
    runtime, handler, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    modes = (sys.argv[4] if len(sys.argv) > 4 else "api,warmup").split(",")
    port = 7861
    for round_ in range(rounds):
        shift = round_ % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            port += 1
            try:
                result = one_run(runtime, handler, mode, port)
            except Exception as e:  # noqa: BLE001 -- one failed run is reported, not fatal
                result = {"mode": mode, "error": str(e)}
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
