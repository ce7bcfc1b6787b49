"""A handler that only waits at worker-runtime's readiness gate, says when it opened, and idles
until it is stopped: the bench drives the WebUI itself, and times the gate from outside."""

import os
import signal
import sys

fd = os.environ.get("WORKER_READY_FD")
if fd:
    with os.fdopen(int(fd)) as gate:
        if gate.readline().strip() != "ready":
            sys.exit("idle-handler: the readiness gate closed")
print("idle-handler: gate open", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    signal.pause()
