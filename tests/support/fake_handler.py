"""A stand-in RunPod handler for the launcher's tests, driven by FAKE_HANDLER_* variables.

It honours the readiness gate protocol: with WORKER_READY_FD set it reads one line from that
descriptor; `ready` means serve, end of file means the launcher gave up.
"""
import os
import signal
import sys
import time

env = os.environ.get
record_dir = env("FAKE_PID_DIR", ".")


def record(name, text):
    with open(os.path.join(record_dir, name), "w") as f:
        f.write(text)


record("handler.pid", str(os.getpid()))
record("handler.api_url", env("WEBUI_API_URL", ""))
with open("/proc/self/maps") as maps:
    record("handler.tcmalloc", "yes" if "libtcmalloc" in maps.read() else "no")

# Stands for the SDK import (about 1.7 s for runpod), which the gate lets overlap the WebUI's boot.
time.sleep(float(env("FAKE_HANDLER_IMPORT_SECONDS", "0")))

if env("FAKE_HANDLER_CRASH_AT_IMPORT"):
    print("fake handler: import failed", flush=True)
    sys.exit(int(env("FAKE_HANDLER_CRASH_AT_IMPORT")))

gate = env("WORKER_READY_FD")
if gate:
    # The gate protocol's optional half: imports done, waiting.
    os.write(int(gate), b"waiting\n")
    with os.fdopen(int(gate)) as pipe:
        line = pipe.readline().strip()
    record("handler.gate", line or "eof")
    if line != "ready":
        print("fake handler: gate closed", flush=True)
        sys.exit(3)
else:
    record("handler.gate", "none")

stop = []


def on_stop(signum, _frame):
    print(f"fake handler: draining after signal {signum}", flush=True)
    stop.append(signum)


if env("FAKE_HANDLER_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)

print("fake handler: serving", flush=True)
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
