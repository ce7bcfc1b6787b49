"""The handler as the reference start.sh (xtask/bench/start.sh) runs it (`python -u /handler.py`), for `cargo xtask bench`.

That start.sh never checks that the WebUI is up: existing A1111 RunPod workers do that in the
handler, after its imports and before runpod.serverless.start, with a loop like this one
(runpod-workers/worker-a1111's wait_for_service): GET /sdapi/v1/sd-models every 0.2 s, any answer
counts, no time limit. This file is that handler: it loads docker/handler.py as a module (so its
imports run first, as at the top of an existing worker's handler.py), waits with that loop, then
runs the handler's main().

Why the loop lives here and not in start.sh: a loop in start.sh before `python -u /handler.py` would
start the handler's imports (about 1 s here) only after the WebUI is up, adding them to the
reference's readiness overhead; existing workers overlap them, and so does this file. handler.py's
main() reads worker-runtime's readiness gate; here the gate is a pipe this file fills with `ready`
after its own loop, so the handler goes on to serve at once, on the same code path as under
worker-runtime, without a second check of the WebUI.

Environment: BENCH_HANDLER (the handler to run, docker/handler.py), WEBUI_API_URL (as handler.py).
"""

import importlib.util
import os
import sys
import time

_STARTED = time.monotonic()

handler_path = os.environ["BENCH_HANDLER"]
spec = importlib.util.spec_from_file_location("handler", handler_path)
handler = importlib.util.module_from_spec(spec)
sys.modules["handler"] = handler
spec.loader.exec_module(handler)

import requests  # noqa: E402 - already imported by the handler; named here for the loop below.

LOCAL_URL = (os.environ.get("WEBUI_API_URL") or "http://127.0.0.1:3000").rstrip("/") + "/sdapi/v1"


def wait_for_service(url):
    """Check if the service is ready to receive requests (worker-a1111's loop, unchanged)."""
    retries = 0
    while True:
        try:
            requests.get(url, timeout=120)
            return
        except requests.exceptions.RequestException:
            retries += 1
            # Only log every 15 retries so the logs don't get spammed
            if retries % 15 == 0:
                print("Service not ready yet. Retrying...", flush=True)
        except Exception as err:  # noqa: BLE001 - the original loop catches everything.
            print(f"Error: {err}", flush=True)
        time.sleep(0.2)


if __name__ == "__main__":
    print(f"reference handler: imports done in {time.monotonic() - _STARTED:.2f}s; "
          f"waiting for {LOCAL_URL}/sd-models (every 0.2 s, any answer)", flush=True)
    wait_for_service(url=f"{LOCAL_URL}/sd-models")
    print("reference handler: Automatic1111 API Service is ready. Starting RunPod Serverless...",
          flush=True)
    read_end, write_end = os.pipe()
    os.write(write_end, b"ready\n")
    os.close(write_end)
    os.environ["WORKER_READY_FD"] = str(read_end)
    handler.main()
