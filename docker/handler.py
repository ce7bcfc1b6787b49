# tidy: long because the handler is copied into the image as one file; its rules are in sdhandler/.
"""RunPod handler: turns RunPod jobs into calls to the AUTOMATIC1111 WebUI API.

worker-runtime starts it with `<python> -u handler.py <HANDLER_ARGS>`; the arguments are runpod's
own (`--test_input '<json>'` for one local job, `--rp_serve_api --rp_api_port N --rp_api_host
127.0.0.1` for runpod's local HTTP API, nothing on RunPod).

Job input, two forms:
  (a) a txt2img payload, as other A1111 workers take it:
        {"input": {"prompt": "a lighthouse", "steps": 20, "width": 512, "height": 512}}
  (b) an A1111 endpoint a job may use, or an installed extension's route (sdhandler/rules.py
      has the rules: read-only GETs, refreshes, generation and image tools; whatever changes
      the server for later jobs is refused):
        {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
                   "payload": {"init_images": ["<base64>"], "prompt": "..."}}}

Output: the WebUI's answer, with txt2img/img2img's `info` JSON string parsed into an object;
{"ok": true} where A1111 answers null or {}; images as bucket URLs when BUCKET_* is set.
Errors: {"error": "<field>: <what to fix>"} for input the handler rejects before calling the
WebUI; {"error": "webui: ... answered 4xx: <A1111's detail>"} for a request the WebUI refused;
{"error": ..., "refresh_worker": true} only when the worker is broken (the WebUI is unreachable,
past the deadline, reports a CUDA or out-of-memory error, or fails a health check after a 5xx):
RunPod then replaces the worker.

Readiness: worker-runtime starts the handler at once (its imports overlap the WebUI's start-up)
with WORKER_READY_FD=<n>, an inherited socket (or pipe). When its imports are done it writes
`waiting` to it (worker-runtime's start-up report times the imports), then, right before serving,
reads one line from it: `ready` -> serve; end of file (the runtime closed the pipe unwritten: the WebUI failed to
start) -> log it and exit 1. Without WORKER_READY_FD (started by hand, or HANDLER_START=after-ready)
it polls GET <WEBUI_API_URL>/sdapi/v1/sd-models itself until it answers 200.
It logs `handler: serving` right before runpod takes over.

Environment:
  WEBUI_API_URL            the WebUI API (default http://127.0.0.1:3000; set by worker-runtime).
  WORKER_READY_FD          the readiness pipe, see above.
  HANDLER_READY_TIMEOUT    seconds to poll the WebUI when there is no readiness pipe (default 600).
  HANDLER_REQUEST_TIMEOUT  seconds for one WebUI call in total (default 600); then the job fails
                           with refresh_worker.
  HANDLER_MAX_OUTPUT_MB, HANDLER_MAX_PROMPT_CHARS, HANDLER_MAX_PIXELS, HANDLER_ALLOW_IMAGE_URLS,
  BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY, BUCKET_NAME
                           output and input bounds, image URLs, the bucket (README.md).
  HANDLER_RESULT_DIR       if set, each job's result (what the handler returns, images included)
                           is also written to <dir>/<job id>.json; `cargo xtask run-local` reads
                           it, since runpod's local mode only prints the result.
  RUNPOD_SKIP_GPU_CHECK, RUNPOD_SKIP_AUTO_SYSTEM_CHECKS
                           runpod's deployed-mode fitness checks: the handler runs memory, disk
                           and network before the gate and turns the GPU/torch ones off
                           (runpod_checks_before_gate says why); "true" for the second skips all.
  RUNPOD_LOG_LEVEL         runpod's log level; the handler makes INFO the default (runpod's is
                           DEBUG, which prints every job's input and output).
Logs and returned errors never carry image data or secrets: runpod's own log lines (which print
job inputs and results) go through a filter that replaces long base64 runs (MIME-wrapped ones
too), RUNPOD_AI_API_KEY and the bucket credentials.
"""

import time

_STARTED = time.monotonic()

# ruff: noqa: E402 - the import timer above must run first.
import asyncio
import difflib
import json
import os
import re
import sys

# The handler's own modules sit beside it (docker/sdhandler in the repository, /sdhandler in
# the image); a handler loaded by path (tests, the benchmark) finds them too.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


def _install_fast_cpuinfo():
    """Skip py-cpuinfo's probe: runpod calls it at import time only to label debugger output, and
    it starts a second Python process (about 1.2 s of the SDK's 1.8 s import here)."""
    try:
        import cpuinfo
    except ImportError:
        return

    def brand_from_proc():
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("model name"):
                        return {"brand_raw": line.split(":", 1)[1].strip()}
        except OSError:
            pass
        return {"brand_raw": "unknown"}

    cpuinfo.get_cpu_info = brand_from_proc


_install_fast_cpuinfo()

import runpod
from runpod.serverless.modules.rp_logger import RunPodLogger

from sdhandler import outputs, webui
from sdhandler.outputs import OutputError
from sdhandler.redaction import redact
from sdhandler.rules import (API_PREFIX, SAMPLER_FIELDS, SCHEDULER_FIELDS, InputError,
                             env_number, extension_route_allowed, parse_request, show)

GATE_CLOSED_MESSAGE = "worker-runtime closed the readiness gate: the WebUI did not become ready"


def log(message):
    print(f"handler: {message}", flush=True)


def env_seconds(name, default):
    return env_number(name, default)


def webui_url():
    return webui.webui_url()


def _install_log_filter():
    # runpod logs job inputs and results itself (DEBUG by default, and the local mode's result at
    # INFO); every one of those lines goes through RunPodLogger.log.
    original = RunPodLogger.log
    if getattr(original, "redacting", False):
        return

    def log_redacted(self, message, message_level="INFO", job_id=None):
        return original(self, redact(str(message)), message_level, job_id)

    log_redacted.redacting = True
    RunPodLogger.log = log_redacted


_install_log_filter()

if not (os.environ.get("RUNPOD_LOG_LEVEL") or os.environ.get("RUNPOD_DEBUG_LEVEL")):
    # runpod defaults to DEBUG, which prints every job's input and output three times over;
    # INFO keeps its lifecycle lines. Either variable (or --rp_log_level) still chooses.
    RunPodLogger().level = "INFO"


# --------------------------------------------------------------------------------------------
# Calling the WebUI: what a failure means for the job, and for the worker.
# --------------------------------------------------------------------------------------------


class JobFailed(Exception):
    """The job fails; the worker is fine."""


class WorkerBroken(Exception):
    """The job fails and the worker must be replaced (refresh_worker)."""


def request_timeout():
    return env_seconds("HANDLER_REQUEST_TIMEOUT", 600.0)


def judge(message):
    """A WebUI failure that is not plainly the job's: the worker is broken when the error says
    so (CUDA, out of GPU memory) or when it cannot even make a tiny image any more."""
    if webui.FATAL.search(message):
        raise WorkerBroken(message)
    ok, why = webui.healthy(min(request_timeout(), 120.0))
    if not ok:
        raise WorkerBroken(f"{message}; then the health check (a 64x64 1-step txt2img) "
                           f"failed: {why}")
    raise JobFailed(message)


def ask(method, path, payload=None, query=None):
    """The WebUI's decoded answer to one call, or JobFailed / WorkerBroken."""
    what = f"{method} {path}"
    timeout = request_timeout()
    try:
        answer = webui.call(method, path, payload, timeout=timeout, query=query)
    except webui.CallFailed as exc:
        if exc.timed_out:
            raise WorkerBroken(f"webui: {what} did not answer within {timeout:g}s "
                               "(HANDLER_REQUEST_TIMEOUT)") from None
        raise WorkerBroken(f"webui: cannot reach {webui_url()} for {what}: {exc}") from None
    status = answer.status
    if 300 <= status < 400:
        raise JobFailed(f"webui: {what} answered {status}, a redirect to "
                        f"{redact(str(answer.location))[:200]}; redirects are not followed")
    if 400 <= status < 500:
        raise JobFailed(f"webui: {what} answered {status}: {webui.detail(answer)}")
    if status >= 500 or status < 200:
        judge(f"webui: {what} answered {status}: {webui.detail(answer)}")
    if not answer.json:
        judge(f"webui: {what} answered {status} with a body that is not JSON")
    return answer.body


_cache = {}


def cached(key, fetch):
    """Lists that do not change while the WebUI runs (samplers, schedulers, routes)."""
    if key not in _cache:
        _cache[key] = fetch()
    return _cache[key]


def extension_routes():
    def fetch():
        try:
            spec = ask("GET", "/openapi.json")
        except JobFailed:
            return {}
        paths = spec.get("paths") if isinstance(spec, dict) else None
        if not isinstance(paths, dict):
            return {}
        return {path: {m.upper() for m in methods if m.upper() in ("GET", "POST")}
                for path, methods in paths.items() if isinstance(methods, dict)}
    return cached("routes", fetch)


def sampler_names():
    def fetch():
        samplers = ask("GET", API_PREFIX + "samplers")
        try:
            schedulers = ask("GET", API_PREFIX + "schedulers")
        except JobFailed:
            schedulers = []  # A WebUI older than schedulers: nothing to check them against.
        sampler_list, sampler_all = [], set()
        for item in samplers if isinstance(samplers, list) else []:
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                sampler_list.append(item["name"])
                sampler_all.add(item["name"])
                sampler_all.update(a for a in item.get("aliases") or [] if isinstance(a, str))
        scheduler_list, scheduler_all = [], set()
        for item in schedulers if isinstance(schedulers, list) else []:
            if isinstance(item, dict):
                names = [item.get("name"), item.get("label"), *(item.get("aliases") or [])]
                names = [n for n in names if isinstance(n, str)]
                if names:
                    scheduler_list.append(item.get("label") or names[0])
                    scheduler_all.update(names)
        return sampler_list, sampler_all, scheduler_list, scheduler_all
    return cached("samplers", fetch)


# What A1111's hires fix takes for "as the first pass".
SAME = {"sampler": "Use same sampler", "scheduler": "Use same scheduler"}


def check_samplers(request):
    """A1111 v1.10 silently replaces an unknown sampler or scheduler with another."""
    payload, prefix = request.payload, request.prefix
    if not any(payload.get(f) for f in SAMPLER_FIELDS + SCHEDULER_FIELDS):
        return
    samplers, sampler_all, schedulers, scheduler_all = sampler_names()
    if not samplers:
        return
    for field in SAMPLER_FIELDS:
        name = payload.get(field)
        # "DPM++ 2M Karras": the older way of naming sampler and scheduler at once.
        if not name or name == SAME["sampler"] or name in sampler_all or any(
                name.endswith(" " + s) and name[:-len(s) - 1] in sampler_all
                for s in scheduler_all):
            continue
        raise JobFailed(f"{prefix}{field}: {show(name)} is not a sampler of this WebUI"
                        f"{did_you_mean(name, samplers)}; valid: {', '.join(samplers)}")
    for field in SCHEDULER_FIELDS:
        name = payload.get(field)
        if not name or name == SAME["scheduler"] or not scheduler_all or name in scheduler_all:
            continue
        raise JobFailed(f"{prefix}{field}: {show(name)} is not a scheduler of this WebUI"
                        f"{did_you_mean(name, schedulers)}; valid: {', '.join(schedulers)}")


def did_you_mean(name, choices):
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def checkpoints():
    """[(sd-models item, every name A1111 accepts for it)]."""
    items = ask("GET", API_PREFIX + "sd-models")
    found = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        title = item.get("title") or ""
        bare = re.sub(r" \[[0-9a-f]+\]$", "", title)
        filename = item.get("filename") or ""
        names = {title, bare, os.path.splitext(bare)[0], item.get("model_name") or "",
                 item.get("hash") or "", item.get("sha256") or "", os.path.basename(filename)}
        names.discard("")
        found.append((item, names))
    return found


def find_checkpoint(field, name):
    for item, names in checkpoints():
        if name in names:
            return item, names
    # A1111 would answer 500 (options) or silently use another model (override_settings).
    raise JobFailed(f"{field}: {show(name)} is not a checkpoint the WebUI knows; GET "
                    "/sdapi/v1/sd-models lists them (after adding files, POST "
                    "/sdapi/v1/refresh-checkpoints)")


def options():
    answer = ask("GET", API_PREFIX + "options")
    if not isinstance(answer, dict):
        raise WorkerBroken("webui: GET /sdapi/v1/options answered something other than an object")
    return answer


def restore(before):
    """Put back the settings a job overrode. A1111 itself restores only the keys already in its
    config.json; on a fresh WebUI a job's override would stay for every later job."""
    try:
        now = options()
        changed = {key: value for key, value in before.items() if now.get(key) != value}
        if changed:
            ask("POST", API_PREFIX + "options", changed)
            log(f"restored the settings a job overrode: {', '.join(sorted(changed))}")
    except JobFailed as exc:
        # A worker whose settings a job changed for good must not take the next job.
        raise WorkerBroken(f"could not restore the settings the job overrode "
                           f"({', '.join(sorted(before))}): {exc}") from None


# --------------------------------------------------------------------------------------------
# One job.
# --------------------------------------------------------------------------------------------


def run_request(request, job_id):
    """The handler's result for one checked request: the WebUI's answer or an error dict."""
    try:
        result = perform(request)
        if isinstance(result, dict) and "error" not in result:
            result = outputs.deliver(result, job_id)
        elif isinstance(result, list):
            outputs.deliver(result, job_id)
        return result
    except (JobFailed, OutputError) as exc:
        return {"error": str(exc)}
    except WorkerBroken as exc:
        return {"error": str(exc), "refresh_worker": True}


def perform(request):
    if request.name is None:
        why = extension_route_allowed(request.method, request.path, extension_routes())
        if why:
            raise JobFailed(f"api.endpoint: {why}")
    if request.name == "options" and request.method == "POST":
        return set_options(request)
    if request.generates:
        return generate(request)
    get = request.method == "GET"
    answer = ask(request.method, request.path, None if get else request.payload,
                 query=request.payload if get else None)
    # A1111 answers null or {} here; runpod would end such a job with no output at all.
    return {"ok": True} if answer is None or answer == {} else answer


def set_options(request):
    payload, prefix = request.payload, request.prefix
    wanted = None
    if "sd_model_checkpoint" in payload:
        wanted = find_checkpoint(f"{prefix}sd_model_checkpoint", payload["sd_model_checkpoint"])
    ask("POST", request.path, payload)
    # A1111 answers 200 even when the checkpoint failed to load: read back what it uses.
    now = options()
    if wanted is not None and now.get("sd_model_checkpoint") not in wanted[1]:
        raise JobFailed(
            f"{prefix}sd_model_checkpoint: the WebUI did not switch to "
            f"{show(payload['sd_model_checkpoint'])}; it still uses "
            f"{show(now.get('sd_model_checkpoint'))} (loading the checkpoint failed inside "
            "the WebUI; its log says why)")
    return {"ok": True, "options": {key: now.get(key) for key in payload}}


def generate(request):
    payload, prefix = request.payload, request.prefix
    check_samplers(request)
    overrides = payload.get("override_settings") or {}
    wanted = None
    if "sd_model_checkpoint" in overrides:
        wanted = find_checkpoint(f"{prefix}override_settings.sd_model_checkpoint",
                                 overrides["sd_model_checkpoint"])
    before = None
    if overrides:
        current = options()
        before = {key: current.get(key) for key in overrides}
    try:
        answer = ask(request.method, request.path, payload)
    except JobFailed:
        if before is not None:
            restore(before)
        raise
    if before is not None:
        restore(before)
    if not isinstance(answer, dict):
        raise JobFailed(f"webui: {request.what} answered {show(answer)}, not an object")
    if isinstance(answer.get("info"), str):
        try:
            answer["info"] = json.loads(answer["info"])
        except ValueError:
            pass  # Not every script fills info with JSON; then the string is the information.
    used = answer["info"].get("sd_model_name") if isinstance(answer.get("info"), dict) else None
    # A switch that failed inside A1111 still makes images, with the old model.
    if wanted is not None and used is not None and used != wanted[0].get("model_name"):
        raise JobFailed(
            f"{prefix}override_settings.sd_model_checkpoint: the images were made with "
            f"{show(used)}, not {show(overrides['sd_model_checkpoint'])} (loading the "
            "checkpoint failed inside the WebUI; its log says why)")
    return answer


def interrupt_webui():
    """Best effort: stop the WebUI working on a job RunPod has cancelled."""
    try:
        webui.call("POST", API_PREFIX + "interrupt", {}, timeout=5)
    except webui.CallFailed as exc:
        log(f"could not interrupt the WebUI: {exc}")


def save_result(job_id, result):
    directory = os.environ.get("HANDLER_RESULT_DIR")
    if not directory:
        return
    safe_id = re.sub(r"[^A-Za-z0-9._-]", "_", str(job_id)) or "job"
    path = os.path.join(directory, f"{safe_id}.json")
    try:
        os.makedirs(directory, exist_ok=True)
        temporary = f"{path}.tmp{os.getpid()}"
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(result, f)
        os.replace(temporary, path)
    except OSError as exc:
        log(f"could not write the result to {path}: {exc}")


def summary(result):
    if isinstance(result, dict):
        if "error" in result:
            extra = ", refresh_worker" if result.get("refresh_worker") else ""
            return f"error{extra}: {redact(str(result['error']))}"
        if isinstance(result.get("images"), list):
            return f"{len(result['images'])} image(s)"
    return "done"


async def handler(job):
    """runpod's entry point: one job in, its output (or error) out."""
    job_id = job.get("id", "?")
    started = time.monotonic()
    try:
        request = parse_request(job.get("input"))
    except InputError as exc:
        result = {"error": str(exc)}
        what = "rejected"
    else:
        what = request.what
        try:
            # In a thread, so runpod's event loop keeps taking stop signals while the WebUI works.
            result = await asyncio.to_thread(run_request, request, job_id)
        except asyncio.CancelledError:
            log(f"job {job_id}: cancelled during {what}; interrupting the WebUI")
            await asyncio.to_thread(interrupt_webui)
            raise
        except Exception as exc:  # noqa: BLE001 - a handler bug must still answer the caller
            result = {"error": f"handler: {type(exc).__name__}: {exc}"}
    if isinstance(result, dict) and "error" in result:
        # Errors reach the caller: no secret or image data in them, as in the logs.
        result["error"] = redact(result["error"])
    log(f"job {job_id}: {what} -> {summary(result)} in {time.monotonic() - started:.2f}s")
    save_result(job_id, result)
    return result


# --------------------------------------------------------------------------------------------
# Start-up: the readiness gate, or polling the WebUI.
# --------------------------------------------------------------------------------------------


def wait_at_gate(fd_text):
    """Read worker-runtime's one line; exit unless it is `ready`."""
    try:
        fd = int(fd_text)
    except ValueError:
        log(f"WORKER_READY_FD={fd_text!r} is not a file descriptor number")
        sys.exit(2)
    try:
        # Imports done: the start-up report times them (a socket gate; a plain pipe refuses it).
        os.write(fd, b"waiting\n")
    except OSError:
        pass
    line = b""
    try:
        while b"\n" not in line:
            chunk = os.read(fd, 64)
            if not chunk:
                break
            line += chunk
    except OSError as exc:
        log(f"cannot read the readiness gate WORKER_READY_FD={fd}: {exc.strerror or exc}")
        sys.exit(2)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
        # Children (none today) must not take a closed descriptor number for the gate.
        os.environ.pop("WORKER_READY_FD", None)
    first = line.split(b"\n", 1)[0].strip()
    if first == b"ready":
        return
    if not line:
        log(GATE_CLOSED_MESSAGE)
    else:
        log(f"unexpected line at the readiness gate: {first[:40]!r}; expected 'ready'")
    sys.exit(1)


def wait_for_webui():
    """Started without the gate: poll sd-models until 200, within HANDLER_READY_TIMEOUT."""
    url = f"{webui_url()}{API_PREFIX}sd-models"
    timeout = env_seconds("HANDLER_READY_TIMEOUT", 600.0)
    started = time.monotonic()
    next_report = 10.0
    last = "no answer yet"
    while True:
        try:
            status = webui.call("GET", API_PREFIX + "sd-models", timeout=10).status
            if status == 200:
                log(f"WebUI API ready after {time.monotonic() - started:.1f}s of polling")
                return
            last = f"answered {status}"
        except webui.CallFailed as exc:
            last = str(exc)
        elapsed = time.monotonic() - started
        if elapsed >= timeout:
            log(f"the WebUI API at {url} did not answer 200 within {timeout:g}s "
                f"(HANDLER_READY_TIMEOUT); last: {last}")
            sys.exit(1)
        if elapsed >= next_report:
            log(f"waiting for the WebUI API at {url}: {elapsed:.0f}s ({last})")
            next_report += 10.0
        time.sleep(min(0.1, max(timeout - elapsed, 0.01)))


def runpod_checks_before_gate():
    """runpod's deployed-mode fitness checks, run now, while the WebUI starts, instead of
    between the gate and the first job. Run: memory, disk, network (runpod's own functions and
    failure path: report, log, exit 1). Off: the GPU test binary, CUDA version, CUDA init and
    matmul through torch; worker-runtime's GPU check covers them, and the torch ones would leave
    a CUDA context of 600+ MiB in this process. RUNPOD_SKIP_GPU_CHECK=false brings the GPU
    binary back (run here too); RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true skips them all."""
    if not os.environ.get("RUNPOD_WEBHOOK_GET_JOB"):
        return  # runpod's local modes run no checks
    from runpod.serverless.modules import rp_fitness, rp_system_fitness

    skip_all = os.environ.get("RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", "").lower() == "true"
    # runpod registers its own set (with the torch checks) at the first run unless told not to.
    os.environ["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] = "true"
    os.environ.setdefault("RUNPOD_SKIP_GPU_CHECK", "true")
    if not skip_all:
        def _memory_check():
            rp_system_fitness._check_memory_availability()

        def _disk_check():
            rp_system_fitness._check_disk_space()

        async def _network_check():
            await rp_system_fitness._check_network_connectivity()

        for check in (_memory_check, _disk_check, _network_check):
            rp_fitness.register_fitness_check(check)
    started = time.monotonic()
    asyncio.run(rp_fitness.run_fitness_checks())  # a failure exits here, with runpod's report
    # Done: serverless.start() must not run them again after the gate.
    rp_fitness._fitness_checks.clear()
    log(f"runpod start-up checks done in {time.monotonic() - started:.2f}s, before the gate")


def main():
    log(f"imports done in {time.monotonic() - _STARTED:.2f}s; WebUI API {webui_url()}")
    runpod_checks_before_gate()
    try:
        gate = os.environ.get("WORKER_READY_FD")
        if gate:
            wait_at_gate(gate)
        else:
            wait_for_webui()
    except KeyboardInterrupt:
        sys.exit(130)
    if "torch" in sys.modules:
        log("warning: torch is imported in the handler process; it must not touch CUDA here")
    log("serving")
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
