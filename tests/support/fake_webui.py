"""A stand-in WebUI for the launcher's tests: its behaviour is chosen by FAKE_* environment variables.

It records what the launcher gave it (pid, argv, LD_PRELOAD, whether tcmalloc is mapped) in
FAKE_PID_DIR, so tests can assert on the real process afterwards.
"""
import http.server
import os
import signal
import subprocess
import sys
import threading
import time

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


record("webui.pid", str(os.getpid()))
record("webui.pdeathsig", pdeathsig())
record("webui.stdin", os.readlink("/proc/self/fd/0") if os.path.exists("/proc/self/fd/0") else "closed")
record("webui.args", "\n".join(sys.argv[1:]))
record("webui.ld_preload", env("LD_PRELOAD", ""))
record("webui.worker_env", " ".join(sorted(
    k for k in os.environ if k.startswith(("RUNPOD_", "BUCKET_")))))
record("webui.torch_no_weights_only", env("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "unset"))
with open("/proc/self/maps") as maps:
    record("webui.tcmalloc", "yes" if "libtcmalloc" in maps.read() else "no")

if env("FAKE_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(143))

if env("FAKE_ORPHANS"):
    # A grandchild that leaves the process group (setsid) and lives on...
    leaver = subprocess.Popen(["sleep", "1000"], start_new_session=True)
    record("leaver.pid", str(leaver.pid))
    # ...and a double fork whose middle process exits at once: its child becomes an orphan that
    # the launcher (child subreaper) inherits; it exits soon and must be reaped, not left a zombie.
    if os.fork() == 0:
        if os.fork() == 0:
            record("orphan.pid", str(os.getpid()))
            time.sleep(0.3)
            os._exit(0)
        os._exit(0)

if env("FAKE_READ_STDIN"):
    # A child that reads the terminal is stopped by SIGTTIN when it is not in the foreground.
    record("webui.stdin_read", "eof" if sys.stdin.read() == "" else "data")

time.sleep(float(env("FAKE_DELAY", "0.2")))
if env("FAKE_LOG_BYTES"):
    # A chatty start-up, for a log reader that does not keep up.
    line = "x" * 99 + "\n"
    for _ in range(int(env("FAKE_LOG_BYTES")) // len(line)):
        sys.stdout.write(line)
    sys.stdout.flush()
    record("webui.logged", "yes")
while env("FAKE_WAIT_FOR_FILE") and not os.path.exists(env("FAKE_WAIT_FOR_FILE")):
    time.sleep(0.02)

mode = env("FAKE_MODE", "serve")
if mode == "crash":
    sys.exit(int(env("FAKE_EXIT_CODE", "1")))
if mode == "never":
    while True:
        time.sleep(1)

port = int(sys.argv[sys.argv.index("--port") + 1])
unavailable_until = time.monotonic() + float(env("FAKE_503_FOR", "0"))


redirects = [0]


class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if env("FAKE_REDIRECT_TO"):
            redirects[0] += 1
            record("webui.redirects", str(redirects[0]))
            self.send_response(302)
            self.send_header("Location", env("FAKE_REDIRECT_TO"))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        ok = self.path == "/sdapi/v1/sd-models" and time.monotonic() >= unavailable_until
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"[]" if ok else b'{"detail": "starting"}')

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Api)
say(f"fake webui: listening on {port}")
if env("FAKE_DIE_AFTER"):
    def die():
        time.sleep(float(env("FAKE_DIE_AFTER")))
        os._exit(int(env("FAKE_EXIT_CODE", "1")))
    threading.Thread(target=die, daemon=True).start()
server.serve_forever()
