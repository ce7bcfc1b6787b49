"""RunPod handler: turns RunPod jobs into calls to the AUTOMATIC1111 WebUI API.

worker-runtime starts it with `<python> -u handler.py <HANDLER_ARGS>`; the arguments are runpod's
own (`--test_input '<json>'` for one local job, `--rp_serve_api --rp_api_port N --rp_api_host
127.0.0.1` for runpod's local HTTP API, nothing on RunPod).

Job input, two forms:
  (a) a txt2img payload, as other A1111 workers take it:
        {"input": {"prompt": "a lighthouse", "steps": 20, "width": 512, "height": 512}}
  (b) any allow-listed A1111 endpoint:
        {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
                   "payload": {"init_images": ["<base64>"], "prompt": "..."}}}
      allowed: txt2img, img2img (POST); options (GET, POST); sd-models, samplers, schedulers,
      loras, embeddings, progress, memory (GET); interrupt, refresh-checkpoints, refresh-loras,
      refresh-embeddings (POST).

Output: the WebUI's answer, with txt2img/img2img's `info` JSON string parsed into an object.
Errors: {"error": "<field>: <what to fix>"} for input the handler rejects before calling the WebUI;
{"error": "webui: ... answered 4xx: <A1111's detail>"} for a request the WebUI refused;
{"error": ..., "refresh_worker": true} when the WebUI cannot be reached, answers 5xx, or does not
answer in time: RunPod then replaces the worker.

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
  HANDLER_REQUEST_TIMEOUT  seconds to wait for one WebUI answer (default 600); then the job fails
                           with refresh_worker.
  HANDLER_RESULT_DIR       if set, each job's result (what the handler returns, images included)
                           is also written to <dir>/<job id>.json; `cargo xtask run-local` reads
                           it, since runpod's local mode only prints the result.
  RUNPOD_SKIP_GPU_CHECK, RUNPOD_SKIP_AUTO_SYSTEM_CHECKS
                           runpod's deployed-mode fitness checks: the handler runs memory, disk
                           and network before the gate and turns the GPU/torch ones off
                           (runpod_checks_before_gate says why); "true" for the second skips all.
  RUNPOD_LOG_LEVEL         runpod's log level; the handler makes INFO the default (runpod's is
                           DEBUG, which prints every job's input and output).
Logs never carry image data or RUNPOD_AI_API_KEY: runpod's own log lines (which print job inputs
and results) go through a filter that replaces long base64 runs and the key.
"""

import time

_STARTED = time.monotonic()

# ruff: noqa: E402 - the import timer above must run first.
import asyncio
import base64
import binascii
import json
import os
import re
import sys


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

import requests
import runpod
from runpod.serverless.modules.rp_logger import RunPodLogger

DEFAULT_WEBUI_API_URL = "http://127.0.0.1:3000"
API_PREFIX = "/sdapi/v1/"
ALLOWED = {
    "txt2img": {"POST"},
    "img2img": {"POST"},
    "options": {"GET", "POST"},
    "sd-models": {"GET"},
    "samplers": {"GET"},
    "schedulers": {"GET"},
    "loras": {"GET"},
    "embeddings": {"GET"},
    "progress": {"GET"},
    "memory": {"GET"},
    "interrupt": {"POST"},
    "refresh-checkpoints": {"POST"},
    "refresh-loras": {"POST"},
    "refresh-embeddings": {"POST"},
}
GATE_CLOSED_MESSAGE = "worker-runtime closed the readiness gate: the WebUI did not become ready"
CONNECT_TIMEOUT = 10.0


def log(message):
    print(f"handler: {message}", flush=True)


def env_seconds(name, default):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        log(f"{name}={raw!r} is not a number of seconds; using {default}")
        return default
    if value <= 0:
        log(f"{name}={raw!r} must be positive; using {default}")
        return default
    return value


def webui_url():
    return (os.environ.get("WEBUI_API_URL") or DEFAULT_WEBUI_API_URL).rstrip("/")


# --------------------------------------------------------------------------------------------
# Keeping image data and the API key out of the logs.
# --------------------------------------------------------------------------------------------

# 200+ base64 characters in a row: an image (or other binary), never a word someone needs to read.
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")


def redact(text):
    text = _BASE64_RUN.sub(lambda m: f"<{len(m.group(0))} base64 chars>", text)
    key = os.environ.get("RUNPOD_AI_API_KEY", "")
    if len(key) >= 8:
        text = text.replace(key, "<RUNPOD_AI_API_KEY>")
    return text


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
# Input validation: every rejection names the field and says what to fix.
# --------------------------------------------------------------------------------------------


class InputError(Exception):
    pass


def show(value):
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(errors, payload, field, low, high, prefix, multiple_of=1, zero_ok=False):
    if field not in payload:
        return
    value = payload[field]
    extra = f", a multiple of {multiple_of}" if multiple_of > 1 else ""
    zero = " (or 0 for unset)" if zero_ok else ""
    if not is_int(value) or not (
        (zero_ok and value == 0) or (low <= value <= high and value % multiple_of == 0)
    ):
        errors.append(f"{prefix}{field}: must be an integer from {low} to {high}{extra}{zero}, "
                      f"got {show(value)}")


def check_number(errors, payload, field, low, high, prefix, nullable=False):
    if field not in payload or (nullable and payload[field] is None):
        return
    value = payload[field]
    if not is_number(value) or not (low <= value <= high):
        errors.append(f"{prefix}{field}: must be a number from {low} to {high}, got {show(value)}")


def check_type(errors, payload, field, kind, prefix, nullable=True):
    if field not in payload or (nullable and payload[field] is None):
        return
    value = payload[field]
    names = {str: "a string", bool: "true or false", dict: "an object", list: "a list"}
    if not isinstance(value, kind):
        errors.append(f"{prefix}{field}: must be {names[kind]}, got {show(value)}")


STRING_FIELDS = ("prompt", "negative_prompt", "sampler_name", "sampler_index", "scheduler",
                 "hr_upscaler", "hr_sampler_name", "hr_scheduler", "hr_prompt",
                 "hr_negative_prompt", "hr_checkpoint_name", "refiner_checkpoint", "script_name",
                 "mask", "force_task_id", "infotext")
BOOL_FIELDS = ("restore_faces", "tiling", "enable_hr", "send_images", "save_images",
               "do_not_save_samples", "do_not_save_grid", "include_init_images",
               "disable_extra_networks", "override_settings_restore_afterwards", "inpaint_full_res",
               "mask_round")
OBJECT_FIELDS = ("override_settings", "alwayson_scripts", "comments")
LIST_FIELDS = ("script_args",)


def check_generation(payload, prefix, img2img):
    """A txt2img/img2img payload: types of the fields A1111 reads, and bounds that keep a job
    inside what one worker can do. Unknown fields pass through: A1111 ignores them."""
    errors = []
    check_int(errors, payload, "steps", 1, 150, prefix)
    check_int(errors, payload, "width", 64, 2048, prefix, multiple_of=8)
    check_int(errors, payload, "height", 64, 2048, prefix, multiple_of=8)
    check_int(errors, payload, "batch_size", 1, 8, prefix)
    check_int(errors, payload, "n_iter", 1, 16, prefix)
    check_int(errors, payload, "seed", -1, 2**32 - 1, prefix)
    check_int(errors, payload, "subseed", -1, 2**32 - 1, prefix)
    check_int(errors, payload, "hr_second_pass_steps", 0, 150, prefix)
    check_int(errors, payload, "hr_resize_x", 64, 2048, prefix, multiple_of=8, zero_ok=True)
    check_int(errors, payload, "hr_resize_y", 64, 2048, prefix, multiple_of=8, zero_ok=True)
    check_number(errors, payload, "cfg_scale", 1, 30, prefix)
    check_number(errors, payload, "denoising_strength", 0, 1, prefix, nullable=True)
    check_number(errors, payload, "subseed_strength", 0, 1, prefix)
    check_number(errors, payload, "hr_scale", 1, 4, prefix)
    for field in STRING_FIELDS:
        check_type(errors, payload, field, str, prefix)
    for field in BOOL_FIELDS:
        check_type(errors, payload, field, bool, prefix)
    for field in OBJECT_FIELDS:
        check_type(errors, payload, field, dict, prefix)
    for field in LIST_FIELDS:
        check_type(errors, payload, field, list, prefix)
    styles = payload.get("styles")
    if styles is not None and (not isinstance(styles, list)
                               or not all(isinstance(s, str) for s in styles)):
        errors.append(f"{prefix}styles: must be a list of style names, got {show(styles)}")
    if img2img:
        errors.extend(check_init_images(payload, prefix))
    elif "init_images" in payload:
        errors.append(f"{prefix}init_images: txt2img takes no init_images; "
                      "send them to /sdapi/v1/img2img")
    return errors


def check_init_images(payload, prefix):
    images = payload.get("init_images")
    if not isinstance(images, list) or not images:
        return [f"{prefix}init_images: img2img needs a non-empty list of base64-encoded images"]
    errors = []
    for index, image in enumerate(images):
        field = f"{prefix}init_images[{index}]"
        if not isinstance(image, str):
            errors.append(f"{field}: must be a base64-encoded image string")
        elif not image.startswith(("http://", "https://")) and not valid_base64(image):
            errors.append(f"{field}: is not valid base64 (a data:image/...;base64, prefix is fine)")
    mask = payload.get("mask")
    if isinstance(mask, str) and mask and not valid_base64(mask):
        errors.append(f"{prefix}mask: is not valid base64")
    return errors


def valid_base64(text):
    if text.startswith("data:image/"):
        _, _, text = text.partition(",")
    try:
        return len(base64.b64decode(text, validate=True)) > 0
    except (binascii.Error, ValueError):
        return False


def parse_request(job_input):
    """(method, endpoint name, payload, field prefix) for a job's input, or InputError."""
    if not isinstance(job_input, dict):
        raise InputError('input: must be a JSON object: a txt2img payload, or {"api": '
                         '{"method": ..., "endpoint": ...}, "payload": {...}}')
    if "api" not in job_input:
        errors = check_generation(job_input, "", img2img=False)
        if errors:
            raise InputError("; ".join(errors))
        return "POST", "txt2img", job_input, ""

    unexpected = sorted(set(job_input) - {"api", "payload"})
    if unexpected:
        raise InputError(f"input.{unexpected[0]}: unknown key; with \"api\" the input takes only "
                         "\"api\" and \"payload\"")
    api = job_input["api"]
    if not isinstance(api, dict):
        raise InputError(f'api: must be an object like {{"method": "POST", "endpoint": '
                         f'"/sdapi/v1/txt2img"}}, got {show(api)}')
    unexpected = sorted(set(api) - {"method", "endpoint"})
    if unexpected:
        raise InputError(f"api.{unexpected[0]}: unknown key; api takes \"method\" and \"endpoint\"")
    method = api.get("method")
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise InputError(f"api.method: must be GET or POST, got {show(method)}")
    method = method.upper()
    endpoint = api.get("endpoint")
    allowed = ", ".join(API_PREFIX + name for name in ALLOWED)
    if not isinstance(endpoint, str):
        raise InputError(f"api.endpoint: must be a string, one of {allowed}")
    name = endpoint.rstrip("/")[len(API_PREFIX):] if endpoint.startswith(API_PREFIX) else None
    if name not in ALLOWED:
        raise InputError(f"api.endpoint: {show(endpoint)} is not allowed; use one of {allowed}")
    if method not in ALLOWED[name]:
        takes = " or ".join(sorted(ALLOWED[name]))
        raise InputError(f"api.method: {API_PREFIX}{name} takes {takes}, not {method}")

    payload = job_input.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise InputError(f"payload: must be an object, got {show(payload)}")
    if name in ("txt2img", "img2img"):
        errors = check_generation(payload, "payload.", img2img=name == "img2img")
        if errors:
            raise InputError("; ".join(errors))
    elif name == "progress":
        unexpected = sorted(set(payload) - {"skip_current_image"})
        if unexpected:
            raise InputError(f"payload.{unexpected[0]}: unknown key; progress takes only "
                             "skip_current_image")
        if not isinstance(payload.get("skip_current_image", False), bool):
            raise InputError("payload.skip_current_image: must be true or false")
    elif name == "options" and method == "POST":
        if not payload:
            raise InputError("payload: POST /sdapi/v1/options needs the settings to change, "
                             'e.g. {"sd_model_checkpoint": "model.safetensors"}')
    elif payload:
        raise InputError(f"payload: {method} {API_PREFIX}{name} takes no payload, "
                         f"got keys {', '.join(sorted(payload))}")
    return method, name, payload, "payload."


def checkpoint_field(method, name, payload, prefix):
    """(field, name) when the request names a checkpoint the WebUI must know, else None."""
    if name == "options" and method == "POST" and "sd_model_checkpoint" in payload:
        return f"{prefix}sd_model_checkpoint", payload["sd_model_checkpoint"]
    if name in ("txt2img", "img2img"):
        overrides = payload.get("override_settings") or {}
        if "sd_model_checkpoint" in overrides:
            return (f"{prefix}override_settings.sd_model_checkpoint",
                    overrides["sd_model_checkpoint"])
    return None


# --------------------------------------------------------------------------------------------
# Calling the WebUI.
# --------------------------------------------------------------------------------------------

_session = requests.Session()


def a1111_detail(response):
    """The most useful message in an A1111 error answer."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()
        return redact(text[:300]) or response.reason or "no details"
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):
            # FastAPI's 422: [{"loc": ["body", "steps"], "msg": "..."}]
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = [str(p) for p in item.get("loc", []) if p != "body"]
                    parts.append(f"{'.'.join(loc) or 'body'}: {item.get('msg', '')}")
            if parts:
                return "; ".join(parts)
        if isinstance(detail, str) and detail:
            return detail
        for key in ("errors", "error"):
            if isinstance(body.get(key), str) and body[key]:
                return body[key]
    return redact(json.dumps(body)[:300])


def call_webui(method, name, payload):
    """The handler's result for one WebUI call: A1111's answer or an error dict."""
    url = f"{webui_url()}{API_PREFIX}{name}"
    timeout = env_seconds("HANDLER_REQUEST_TIMEOUT", 600.0)
    what = f"{method} {API_PREFIX}{name}"
    try:
        if method == "GET":
            params = {k: str(v).lower() for k, v in payload.items()}
            response = _session.get(url, params=params, timeout=(CONNECT_TIMEOUT, timeout))
        else:
            response = _session.post(url, json=payload, timeout=(CONNECT_TIMEOUT, timeout))
    except requests.Timeout:
        return {"error": f"webui: {what} did not answer within {timeout:g}s "
                         "(HANDLER_REQUEST_TIMEOUT)", "refresh_worker": True}
    except requests.ConnectionError as exc:
        reason = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
        return {"error": f"webui: cannot reach {webui_url()} for {what}: {reason}",
                "refresh_worker": True}
    except requests.RequestException as exc:
        return {"error": f"webui: {what} failed: {type(exc).__name__}: {redact(str(exc))[:300]}",
                "refresh_worker": True}

    if 400 <= response.status_code < 500:
        return {"error": f"webui: {what} answered {response.status_code}: {a1111_detail(response)}"}
    if response.status_code >= 300 or response.status_code < 200:
        return {"error": f"webui: {what} answered {response.status_code}: {a1111_detail(response)}",
                "refresh_worker": True}
    try:
        answer = response.json()
    except ValueError:
        return {"error": f"webui: {what} answered {response.status_code} with a body that is not "
                         "JSON", "refresh_worker": True}
    if isinstance(answer, dict) and isinstance(answer.get("info"), str):
        try:
            answer["info"] = json.loads(answer["info"])
        except ValueError:
            pass  # Not every script fills info with JSON; then the string is the information.
    return answer


def checkpoint_names():
    """Every name A1111 accepts for its checkpoints, or None when the WebUI cannot tell."""
    try:
        response = _session.get(f"{webui_url()}{API_PREFIX}sd-models", timeout=(CONNECT_TIMEOUT, 30))
        items = response.json() if response.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None
    if not isinstance(items, list):
        return None
    names = set()
    for item in items:
        if not isinstance(item, dict):
            continue
        title = item.get("title") or ""
        bare = re.sub(r" \[[0-9a-f]+\]$", "", title)
        filename = item.get("filename") or ""
        names.update({title, bare, os.path.splitext(bare)[0], item.get("model_name") or "",
                      item.get("hash") or "", item.get("sha256") or "",
                      os.path.basename(filename)})
    names.discard("")
    return names


def run_request(method, name, payload, prefix):
    """Checks that need the WebUI, then the call itself."""
    wanted = checkpoint_field(method, name, payload, prefix)
    if wanted is not None:
        field, checkpoint = wanted
        if not isinstance(checkpoint, str) or not checkpoint:
            return {"error": f"{field}: must be a checkpoint name (a string)"}
        known = checkpoint_names()
        # A1111 would answer 500 (options) or silently use another model (override_settings).
        if known is not None and checkpoint not in known:
            return {"error": f"{field}: {show(checkpoint)} is not a checkpoint the WebUI knows; "
                             "GET /sdapi/v1/sd-models lists them (after adding files, POST "
                             "/sdapi/v1/refresh-checkpoints)"}
    return call_webui(method, name, payload)


def interrupt_webui():
    """Best effort: stop the WebUI working on a job RunPod has cancelled."""
    try:
        _session.post(f"{webui_url()}{API_PREFIX}interrupt", timeout=(2, 5))
    except requests.RequestException as exc:
        log(f"could not interrupt the WebUI: {type(exc).__name__}")


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
        method, name, payload, prefix = parse_request(job.get("input"))
    except InputError as exc:
        result = {"error": str(exc)}
        what = "rejected"
    else:
        what = f"{method} {API_PREFIX}{name}"
        try:
            # In a thread, so runpod's event loop keeps taking stop signals while the WebUI works.
            result = await asyncio.to_thread(run_request, method, name, payload, prefix)
        except asyncio.CancelledError:
            log(f"job {job_id}: cancelled during {what}; interrupting the WebUI")
            await asyncio.to_thread(interrupt_webui)
            raise
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
            status = _session.get(url, timeout=(2, 10)).status_code
            if status == 200:
                log(f"WebUI API ready after {time.monotonic() - started:.1f}s of polling")
                return
            last = f"answered {status}"
        except requests.RequestException as exc:
            last = type(exc).__name__
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
