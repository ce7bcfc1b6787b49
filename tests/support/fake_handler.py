"""A stand-in RunPod handler for the launcher's tests, driven by FAKE_HANDLER_* variables.

It honours the readiness gate protocol: with WORKER_READY_FD set it reads one line from that
descriptor; `ready` means serve, end of file means the launcher gave up.
"""
import json
import os
import signal
import sys
import time
import urllib.request

env = os.environ.get
record_dir = env("FAKE_PID_DIR", ".")


def record(name, text):
    with open(os.path.join(record_dir, name), "w") as f:
        f.write(text)


def say(text):
    # A log reader that went away must not end the fake: the tests look at the runtime.
    try:
        print(text, flush=True)
    except OSError:
        pass


def pdeathsig():
    import ctypes

    value = ctypes.c_int(-1)
    ctypes.CDLL(None, use_errno=True).prctl(2, ctypes.byref(value), 0, 0, 0)  # PR_GET_PDEATHSIG
    return str(value.value)


record("handler.pid", str(os.getpid()))
record("handler.pdeathsig", pdeathsig())
record("handler.stdin", os.readlink("/proc/self/fd/0") if os.path.exists("/proc/self/fd/0") else "closed")
if env("FAKE_HANDLER_IGNORE_TERM_EARLY"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    record("handler.ignoring", "yes")
if env("FAKE_READ_STDIN"):
    record("handler.stdin_read", "eof" if sys.stdin.read() == "" else "data")
record("handler.api_url", env("WEBUI_API_URL", ""))
record("handler.worker_env", " ".join(sorted(
    k for k in os.environ if k.startswith(("RUNPOD_", "BUCKET_")))))
with open("/proc/self/maps") as maps:
    record("handler.tcmalloc", "yes" if "libtcmalloc" in maps.read() else "no")

# Stands for the SDK import (about 1.7 s for runpod), which the gate lets overlap the WebUI's boot.
time.sleep(float(env("FAKE_HANDLER_IMPORT_SECONDS", "0")))

if env("FAKE_HANDLER_CRASH_AT_IMPORT"):
    say("fake handler: import failed")
    sys.exit(int(env("FAKE_HANDLER_CRASH_AT_IMPORT")))

gate = env("WORKER_READY_FD")
if gate:
    # The gate protocol's optional half: imports done, waiting.
    os.write(int(gate), b"waiting\n")
    with os.fdopen(int(gate)) as pipe:
        line = pipe.readline().strip()
    record("handler.gate", line or "eof")
    if line != "ready":
        say("fake handler: gate closed")
        sys.exit(3)
else:
    record("handler.gate", "none")

stop = []


def on_stop(signum, _frame):
    say(f"fake handler: draining after signal {signum}")
    stop.append(signum)


if env("FAKE_HANDLER_DIE_ON_TERM"):
    pass  # Python's default: SIGTERM ends the process, the job in flight with it
elif env("FAKE_HANDLER_IGNORE_TERM") or env("FAKE_HANDLER_IGNORE_TERM_EARLY"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)

say("fake handler: serving")
if env("FAKE_HANDLER_JOB_STEPS"):
    # One txt2img job in flight, as runpod runs it: a stop signal does not end the request, the
    # handler waits for the WebUI's answer and then exits.
    body = json.dumps({"prompt": "a lighthouse", "steps": int(env("FAKE_HANDLER_JOB_STEPS")),
                       "width": 64, "height": 64}).encode()
    request = urllib.request.Request(env("WEBUI_API_URL") + "/sdapi/v1/txt2img", data=body,
                                     headers={"Content-Type": "application/json"})
    say("fake handler: job started")
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            images = len(json.load(answer)["images"])
        say(f"fake handler: job returned {images} images")
        record("handler.job", f"{images} images")
    except Exception as exc:  # noqa: BLE001 - the test reads what happened
        say(f"fake handler: job failed: {exc}")
        record("handler.job", f"failed: {exc}")
    sys.exit(int(env("FAKE_HANDLER_DRAIN_EXIT", "0")))
if env("FAKE_HANDLER_WAIT_FILE"):
    while not os.path.exists(env("FAKE_HANDLER_WAIT_FILE")):
        time.sleep(0.02)
if env("FAKE_HANDLER_SERVE"):
    while not stop:
        time.sleep(0.02)
    time.sleep(0.2)  # the job in flight finishes
    while env("FAKE_HANDLER_DRAIN_FILE") and not os.path.exists(env("FAKE_HANDLER_DRAIN_FILE")):
        time.sleep(0.02)
    sys.exit(int(env("FAKE_HANDLER_DRAIN_EXIT", "0")))
if env("FAKE_HANDLER_SIGNAL"):
    os.kill(os.getpid(), int(env("FAKE_HANDLER_SIGNAL")))
    time.sleep(5)
sys.exit(int(env("FAKE_HANDLER_EXIT", "0")))
