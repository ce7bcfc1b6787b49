#!/usr/bin/env python3
# tidy: long because it is copied into test images as one file: a whole A1111 API stand-in.
"""Demo WebUI: a stand-in for AUTOMATIC1111's stable-diffusion-webui (v1.10) in API-only mode.

It lets the worker (worker-runtime + docker/handler.py) run end to end on a machine with no GPU,
no model and no A1111 checkout. It is started exactly like a real checkout:

    <python> <WEBUI_DIR>/webui.py --api --nowebui --port 3000 --server-name 127.0.0.1 ...

Python standard library only. What it copies from A1111, as measured on A1111 v1.10.1:
- the v1.10 command line: every flag A1111 accepts is accepted, an unknown one ends the process
  with argparse's error (status 2); COMMANDLINE_ARGS from the environment is appended;
- start-up order: "imports" (DEMO_WEBUI_STARTUP_DELAY), the checkpoint list, the model load in a
  background thread, then the port is bound (--port, default 7861; --server-name, or 0.0.0.0 with
  --listen, else all interfaces); a port already taken ends the process with status 3 like uvicorn;
- GET /sdapi/v1/sd-models answers 200 as soon as the port is open; txt2img and img2img wait for
  the model load and run one at a time behind a queue lock;
- A1111's response shapes: {"images": [base64 PNG], "parameters": {...}, "info": "<JSON string>"},
  errors {"error", "detail", "body", "errors"}, 422 {"detail": [...]} for a malformed body,
  {"detail": "Not Found"} (404) for unknown paths; 500 for plain bad input, as A1111 answers it:
  "Invalid encoded image", an unknown options key (KeyError), "Requests not allowed" (http init
  images);
- an unknown sampler is not refused: 200, made with "DPM++ 2M" (an unknown scheduler: Automatic),
  with A1111's "Sampler Scheduler autocorrection" log line;
- null answers: refresh-* and POST options answer JSON null, interrupt answers {};
- options: GET lists every setting (defaults included); POST sets them; a checkpoint that fails
  to load (DEMO_WEBUI_BROKEN_CHECKPOINTS) still answers 200 and the old model stays;
- override_settings apply to one job and are restored afterwards only for keys already in
  config.json (set by POST options, or sd_model_checkpoint once a model loaded), so on a fresh
  WebUI a job's override stays for the following jobs, as in A1111;
- GET /openapi.json lists the routes (FastAPI's own), extension routes included;
- signals: SIGTERM -> graceful shutdown that waits for in-flight requests, then the process ends by
  SIGTERM (a shell reports 143), as uvicorn re-raises it; SIGINT -> graceful, exit 0; a second
  SIGINT exits at once. Before the port is bound SIGTERM kills at once (uvicorn is not running yet).

Images are real PNGs of the requested size (after hires fix, when enabled), batch_size * n_iter of
them, a colour pattern derived from the seed and the prompt: the same request with the same seed
gives the same bytes. Each carries A1111's "parameters" text chunk.

Checkpoints: --ckpt (when the file exists), *.safetensors / *.ckpt under --ckpt-dir and under
<data-dir>/models/Stable-diffusion. With none, sd-models answers [] and generation still works
(with "sd_model_name": null), so the demo needs no model file. "Hashes" are derived from path,
size and modification time (never read the file), and absent with --no-hashing, like A1111's.

Accepted but not simulated: every flag that only matters to a real model or the Gradio UI, and
--api-auth, --tls-*, --subpath, --cors-* (the worker uses none of them).

Environment knobs (all optional):
    DEMO_WEBUI_STARTUP_DELAY       seconds before the port is bound (A1111's imports). Default 0.
    DEMO_WEBUI_MODEL_LOAD_SECONDS  seconds the background model load takes; txt2img/img2img wait
                                   for it, sd-models does not. Default 0.
    DEMO_WEBUI_FAIL_MODEL_LOAD     non-empty: the model load fails; txt2img/img2img answer 500.
    DEMO_WEBUI_SECONDS_PER_STEP    seconds per sampling step (per batch). Default 0. Makes
                                   generation take time, for progress, interrupt and timeouts.
    DEMO_WEBUI_ACCESS_LOG          "0": no uvicorn-style access log line per request.
    DEMO_WEBUI_EXIT_AT_START       a status (1-255): after the start-up delay, exit with it
                                   instead of binding, as A1111 does when an import fails.
    DEMO_WEBUI_IGNORE_SIGTERM      non-empty: SIGTERM is ignored, as by a WebUI stuck in native
                                   code; only SIGKILL stops it. (Both for `cargo xtask bench`.)
    DEMO_WEBUI_BROKEN_CHECKPOINTS  comma-separated checkpoint file names that fail to load: a
                                   switch to one answers 200 and keeps the old model.
    DEMO_WEBUI_CONTROLNET          non-empty: serve the routes of the ControlNet extension
                                   (GET /controlnet/version, /controlnet/model_list, POST
                                   /controlnet/detect), as an installed extension would.
    DEMO_WEBUI_STARTUP_TIME, DEMO_WEBUI_MODEL_LOADED_IN, DEMO_WEBUI_MODEL_LOAD_ERROR,
    DEMO_WEBUI_GENERATION_ERROR    A1111's start-up figures and failures: see "Start-up knobs".
    COMMANDLINE_ARGS               appended to the command line, split like a shell (as A1111).

Endpoints (under /sdapi/v1/): GET sd-models, samplers, schedulers, upscalers,
latent-upscale-modes, sd-vae, hypernetworks, face-restorers, realesrgan-models, prompt-styles,
options, cmd-flags, progress, memory, loras, embeddings, scripts, script-info, extensions;
POST txt2img, img2img, png-info, options, interrupt, skip, refresh-checkpoints, refresh-vae,
refresh-loras, refresh-embeddings, unload-checkpoint, reload-checkpoint. Not simulated (404):
extras, interrogate, create/train.
"""

import argparse
import base64
import binascii
import datetime
import hashlib
import http.server
import json
import os
import random
import shlex
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from urllib.parse import parse_qs, urlsplit

VERSION = "v1.10.1"
DEFAULT_PORT = 7861
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt")
LORA_EXTENSIONS = (".safetensors", ".pt", ".ckpt")
EMBEDDING_EXTENSIONS = (".safetensors", ".pt", ".bin")
# uvicorn's status when the server could not start (e.g. the port is taken).
EXIT_STARTUP_FAILURE = 3

# A1111 v1.10.1's flags (flag, kind, default): generated by `cargo xtask codegen` from
# runtime/src/a1111-cmd-flags-v1.10.tsv, the catalog worker-runtime checks extra flags against.
FLAG_CATALOG_TSV = """\
flag	kind	default
-f	store_true	False
--update-all-extensions	store_true	False
--skip-python-version-check	store_true	False
--skip-torch-cuda-test	store_true	False
--reinstall-xformers	store_true	False
--reinstall-torch	store_true	False
--update-check	store_true	False
--test-server	store_true	False
--log-startup	store_true	False
--skip-prepare-environment	store_true	False
--skip-install	store_true	False
--dump-sysinfo	store_true	False
--loglevel	str	None
--do-not-download-clip	store_true	False
--data-dir	path(normalized_filepath)	{script_path}
--models-dir	path(normalized_filepath)	None
--config	path(normalized_filepath)	{script_path}/configs/v1-inference.yaml
--ckpt	path(normalized_filepath)	{script_path}/model.ckpt
--ckpt-dir	path(normalized_filepath)	None
--vae-dir	path(normalized_filepath)	None
--gfpgan-dir	path(normalized_filepath)	./GFPGAN
--gfpgan-model	path(normalized_filepath)	None
--no-half	store_true	False
--no-half-vae	store_true	False
--no-progressbar-hiding	store_true	False
--max-batch-count	int	16
--embeddings-dir	path(normalized_filepath)	{data_dir}/embeddings
--textual-inversion-templates-dir	path(normalized_filepath)	{script_path}/textual_inversion_templates
--hypernetwork-dir	path(normalized_filepath)	{models_path}/hypernetworks
--localizations-dir	path(normalized_filepath)	{script_path}/localizations
--allow-code	store_true	False
--medvram	store_true	False
--medvram-sdxl	store_true	False
--lowvram	store_true	False
--lowram	store_true	False
--always-batch-cond-uncond	store_true	False
--unload-gfpgan	store_true	False
--precision	str choices=full|half|autocast	autocast
--upcast-sampling	store_true	False
--share	store_true	False
--ngrok	str	None
--ngrok-region	str	''
--ngrok-options	json(json.loads)	{}
--enable-insecure-extension-access	store_true	False
--codeformer-models-path	path(normalized_filepath)	{models_path}/Codeformer
--gfpgan-models-path	path(normalized_filepath)	{models_path}/GFPGAN
--esrgan-models-path	path(normalized_filepath)	{models_path}/ESRGAN
--bsrgan-models-path	path(normalized_filepath)	{models_path}/BSRGAN
--realesrgan-models-path	path(normalized_filepath)	{models_path}/RealESRGAN
--dat-models-path	path(normalized_filepath)	{models_path}/DAT
--clip-models-path	path(normalized_filepath)	None
--xformers	store_true	False
--force-enable-xformers	store_true	False
--xformers-flash-attention	store_true	False
--deepdanbooru	store_true	False
--opt-split-attention	store_true	False
--opt-sub-quad-attention	store_true	False
--sub-quad-q-chunk-size	int	1024
--sub-quad-kv-chunk-size	int	None
--sub-quad-chunk-threshold	int	None
--opt-split-attention-invokeai	store_true	False
--opt-split-attention-v1	store_true	False
--opt-sdp-attention	store_true	False
--opt-sdp-no-mem-attention	store_true	False
--disable-opt-split-attention	store_true	False
--disable-nan-check	store_true	False
--use-cpu	str.lower nargs=+	[]
--use-ipex	store_true	False
--disable-model-loading-ram-optimization	store_true	False
--listen	store_true	False
--port	int	None
--show-negative-prompt	store_true	False
--ui-config-file	str	{data_dir}/ui-config.json
--hide-ui-dir-config	store_true	False
--freeze-settings	store_true	False
--freeze-settings-in-sections	str	None
--freeze-specific-settings	str	None
--ui-settings-file	str	{data_dir}/config.json
--gradio-debug	store_true	False
--gradio-auth	str	None
--gradio-auth-path	path(normalized_filepath)	None
--gradio-img2img-tool	str	None
--gradio-inpaint-tool	str	None
--gradio-allowed-path	append str	['{data_dir}']
--opt-channelslast	store_true	False
--styles-file	append str	[]
--autolaunch	store_true	False
--theme	str	None
--use-textbox-seed	store_true	False
--disable-console-progressbars	store_true	False
--enable-console-prompts	store_true	False
--vae-path	path(normalized_filepath)	None
--disable-safe-unpickle	store_true	False
--api	store_true	False
--api-auth	str	None
--api-log	store_true	False
--nowebui	store_true	False
--ui-debug-mode	store_true	False
--device-id	str	None
--administrator	store_true	False
--cors-allow-origins	str	None
--cors-allow-origins-regex	str	None
--tls-keyfile	str	None
--tls-certfile	str	None
--disable-tls-verify	store_false	None
--server-name	str	None
--gradio-queue	store_true	True
--no-gradio-queue	store_true	False
--skip-version-check	store_true	False
--no-hashing	store_true	False
--no-download-sd-model	store_true	False
--subpath	str	None
--add-stop-route	store_true	False
--api-server-stop	store_true	False
--timeout-keep-alive	int	30
--disable-all-extensions	store_true	False
--disable-extra-extensions	store_true	False
--skip-load-model-at-start	store_true	False
--unix-filenames-sanitization	store_true	False
--filenames-max-length	int	128
--no-prompt-history	store_true	False
--lora-dir	path(normalized_filepath)	{models_path}/Lora
--lyco-dir-backcompat	path(normalized_filepath)	{models_path}/LyCORIS
--ldsr-models-path	path	{models_path}/LDSR
--scunet-models-path	path	{models_path}/ScuNET
--swinir-models-path	path	{models_path}/SwinIR
"""


# --------------------------------------------------------------------------------------------
# Command line: built from the catalog above, so the demo and A1111 accept the same flags.
# --------------------------------------------------------------------------------------------


def catalog_rows():
    """(flag, kind, default) for every flag in FLAG_CATALOG_TSV."""
    rows = []
    for line in FLAG_CATALOG_TSV.splitlines()[1:]:
        if line.strip():
            flag, kind, default = line.split("\t")
            rows.append((flag, kind, default))
    return rows


def normalized_filepath(path):
    # A1111's own normalisation for path flags: absolute, not resolved.
    return os.path.abspath(path)


def _catalog_default(text, paths):
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    if text == "[]":
        return []
    if text == "{}":
        return {}
    if text == "''":
        return ""
    try:
        return int(text)
    except ValueError:
        pass
    if text.startswith("['") and text.endswith("']"):
        return [text[2:-2].format(**paths)]
    return text.format(**paths)


def build_parser(paths):
    """A1111 v1.10's parser. `paths` fills the catalog's {script_path}-style defaults."""
    parser = argparse.ArgumentParser()
    for flag, kind, default_text in catalog_rows():
        default = _catalog_default(default_text, paths)
        if kind == "store_true":
            parser.add_argument(flag, action="store_true", default=default)
        elif kind == "store_false":
            parser.add_argument(flag, action="store_false", default=default)
        elif kind == "int":
            parser.add_argument(flag, type=int, default=default)
        elif kind in ("str", "path"):
            parser.add_argument(flag, type=str, default=default)
        elif kind == "path(normalized_filepath)":
            parser.add_argument(flag, type=normalized_filepath, default=default)
        elif kind == "append str":
            parser.add_argument(flag, action="append", type=str, default=default)
        elif kind == "json(json.loads)":
            parser.add_argument(flag, type=json.loads, default=default)
        elif kind.startswith("str choices="):
            choices = kind.split("=", 1)[1].split("|")
            parser.add_argument(flag, type=str, choices=choices, default=default)
        elif kind == "str.lower nargs=+":
            parser.add_argument(flag, type=str.lower, nargs="+", default=default)
        else:
            raise ValueError(f"flag catalog: {flag} has a kind the demo does not know: {kind}")
    return parser


def parse_command_line(argv, environ, script_path):
    """Parse like A1111: COMMANDLINE_ARGS appended, --data-dir/--models-dir read first."""
    argv = list(argv) + shlex.split(environ.get("COMMANDLINE_ARGS", ""))
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--data-dir", type=str, default=script_path)
    pre.add_argument("--models-dir", type=str, default=None)
    pre_args, _ = pre.parse_known_args(argv)
    data_dir = os.path.abspath(pre_args.data_dir)
    models_path = pre_args.models_dir or os.path.join(data_dir, "models")
    paths = {"script_path": script_path, "data_dir": data_dir, "models_path": models_path}
    args = build_parser(paths).parse_args(argv)
    return args, paths


# --------------------------------------------------------------------------------------------
# Errors with A1111's shapes.
# --------------------------------------------------------------------------------------------


class ApiError(Exception):
    """An answer other than 200, shaped like A1111's api_middleware (or FastAPI for 404/405/422)."""

    def __init__(self, status, error="HTTPException", detail="", errors="", body=""):
        super().__init__(errors or detail)
        self.status = status
        self.payload = {"error": error, "detail": detail, "body": body, "errors": errors}

    @classmethod
    def http(cls, status, detail):
        # fastapi.HTTPException: str(e) is "<status>: <detail>" in FastAPI of A1111's era.
        return cls(status, "HTTPException", detail, f"{status}: {detail}")

    @classmethod
    def internal(cls, exc_name, message):
        return cls(500, exc_name, "", message)

    @classmethod
    def plain(cls, status, payload):
        err = cls(status)
        err.payload = payload
        return err


def validation_error(errors):
    """FastAPI's 422 for a body that does not fit the model (pydantic v1 wording)."""
    return ApiError.plain(422, {"detail": errors})


# --------------------------------------------------------------------------------------------
# Checkpoints, LoRAs, embeddings: read from the folders the flags name.
# --------------------------------------------------------------------------------------------


def scan_files(directory, extensions, excluded_suffixes=()):
    if not directory or not os.path.isdir(directory):
        return []
    found = []
    for root, _dirs, files in os.walk(directory, followlinks=True):
        for name in files:
            lower = name.lower()
            if lower.endswith(extensions) and not lower.endswith(excluded_suffixes):
                found.append(os.path.join(root, name))
    return sorted(found)


def pseudo_hash(path):
    # Hashing a multi-GB checkpoint takes seconds; the demo never reads the file.
    try:
        st = os.stat(path)
        seed = f"{os.path.abspath(path)}\0{st.st_size}\0{int(st.st_mtime)}"
    except OSError:
        seed = os.path.abspath(path)
    return hashlib.sha256(seed.encode()).hexdigest()


class Checkpoint:
    def __init__(self, filename, base_dir, hashing):
        self.filename = os.path.abspath(filename)
        if base_dir and self.filename.startswith(os.path.abspath(base_dir) + os.sep):
            name = os.path.relpath(self.filename, os.path.abspath(base_dir))
        else:
            name = os.path.basename(self.filename)
        self.name = name
        self.model_name = os.path.splitext(name.replace("/", "_").replace("\\", "_"))[0]
        self.sha256 = pseudo_hash(self.filename) if hashing else None
        self.shorthash = self.sha256[:10] if self.sha256 else None
        self.title = name if self.shorthash is None else f"{name} [{self.shorthash}]"

    def aliases(self):
        names = {self.title, self.name, self.model_name, os.path.splitext(self.name)[0]}
        if self.shorthash:
            names.update({self.shorthash, self.sha256})
        return names

    def api_item(self):
        config = os.path.splitext(self.filename)[0] + ".yaml"
        return {
            "title": self.title,
            "model_name": self.model_name,
            "hash": self.shorthash,
            "sha256": self.sha256,
            "filename": self.filename,
            "config": config if os.path.isfile(config) else None,
        }


class Library:
    """What the WebUI found on disk; refreshed by the refresh-* endpoints."""

    def __init__(self, args, paths):
        self.args = args
        self.paths = paths
        self.lock = threading.Lock()
        self.checkpoints = []
        self.loras = []
        self.embeddings = []
        self.refresh_checkpoints()
        self.refresh_loras()
        self.refresh_embeddings()

    def refresh_checkpoints(self):
        hashing = not self.args.no_hashing
        found = {}
        ckpt = self.args.ckpt
        if ckpt and os.path.isfile(ckpt):
            found[os.path.abspath(ckpt)] = Checkpoint(ckpt, None, hashing)
        elif ckpt and ckpt != os.path.join(self.paths["script_path"], "model.ckpt"):
            print(f"Checkpoint in --ckpt argument not found (Possible it was moved to "
                  f"{self.stable_diffusion_dir()}: {ckpt}", flush=True)
        for base in (self.stable_diffusion_dir(), self.args.ckpt_dir):
            for path in scan_files(base, CHECKPOINT_EXTENSIONS, (".vae.ckpt", ".vae.safetensors")):
                found.setdefault(os.path.abspath(path), Checkpoint(path, base, hashing))
        with self.lock:
            self.checkpoints = list(found.values())

    def stable_diffusion_dir(self):
        return os.path.join(self.paths["models_path"], "Stable-diffusion")

    def refresh_loras(self):
        items = []
        for path in scan_files(self.args.lora_dir, LORA_EXTENSIONS):
            name = os.path.splitext(os.path.basename(path))[0]
            items.append({"name": name, "alias": name, "path": path, "metadata": {}})
        with self.lock:
            self.loras = items

    def refresh_embeddings(self):
        items = [os.path.splitext(os.path.basename(p))[0]
                 for p in scan_files(self.args.embeddings_dir, EMBEDDING_EXTENSIONS)]
        with self.lock:
            self.embeddings = items

    def find_checkpoint(self, name):
        with self.lock:
            for checkpoint in self.checkpoints:
                if name in checkpoint.aliases():
                    return checkpoint
        return None

    def default_checkpoint(self):
        with self.lock:
            if not self.checkpoints:
                return None
            ckpt = self.args.ckpt and os.path.abspath(self.args.ckpt)
            for checkpoint in self.checkpoints:
                if checkpoint.filename == ckpt:
                    return checkpoint
            return self.checkpoints[0]

    def sd_models(self):
        with self.lock:
            return [c.api_item() for c in self.checkpoints]

    def embeddings_api(self):
        with self.lock:
            loaded = {name: {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None,
                             "shape": 768, "vectors": 1} for name in self.embeddings}
        return {"loaded": loaded, "skipped": {}}


# --------------------------------------------------------------------------------------------
# The model: loaded in the background, like A1111 does while uvicorn starts.
# --------------------------------------------------------------------------------------------


class ModelLoader:
    def __init__(self, library, seconds, fail):
        self.library = library
        self.seconds = seconds
        self.fail = fail
        self.lock = threading.Lock()
        self.started = False
        self.done = threading.Event()
        self.error = None
        self.error_kind = "RuntimeError"
        self.current = None
        self.knobs = StartupKnobs({})

    def start_background(self):
        with self.lock:
            if self.started:
                return
            self.started = True
        threading.Thread(target=self._load, name="model-load", daemon=True).start()

    def _load(self):
        started = time.monotonic()
        checkpoint = self.library.default_checkpoint()
        if checkpoint is None:
            print("demo-webui: no checkpoint found; generating with the built-in demo pattern",
                  flush=True)
        else:
            print(f"Loading weights [{checkpoint.shorthash}] from {checkpoint.filename}", flush=True)
        time.sleep(self.seconds)
        if self.knobs.load_error:
            self.knobs.fail_load(self)
        elif self.fail:
            self.error = "demo-webui: model load failed (DEMO_WEBUI_FAIL_MODEL_LOAD is set)"
            print(f"loading stable diffusion model: RuntimeError\n{self.error}", flush=True)
        else:
            self.current = checkpoint
            print(self.knobs.figure_line("Model loaded in", time.monotonic() - started,
                                         "demo: no weights read"), flush=True)
        self.done.set()

    def wait(self):
        """Block until the model is loaded (loading it now with --skip-load-model-at-start)."""
        self.start_background()
        self.done.wait()
        if self.error:
            raise ApiError.internal(self.error_kind, self.error)
        self.knobs.check_generation()
        return self.current

    def switch(self, checkpoint):
        print(f"Loading weights [{checkpoint.shorthash}] from {checkpoint.filename}", flush=True)
        self.current = checkpoint


# --------------------------------------------------------------------------------------------
# Start-up knobs (for the worker's readiness tests): A1111's own figures and failures.
#   DEMO_WEBUI_STARTUP_TIME      the figure of "Startup time: 15.4s (...)." (default: measured)
#   DEMO_WEBUI_MODEL_LOADED_IN   the figure of "Model loaded in 4.3s (...)." (default: measured)
#   DEMO_WEBUI_MODEL_LOAD_ERROR  "module.Type: message": the model load fails with this exception,
#       printed to stderr as A1111's errors.display does; txt2img/img2img answer 500 with it
#       (A1111 retries the load there); reload-checkpoint waits for the load and answers A1111's
#       500 for a missing model ("'NoneType' object has no attribute 'lowvram'").
#   DEMO_WEBUI_GENERATION_ERROR  "Type: message": the model loads, every generation answers 500.
# --------------------------------------------------------------------------------------------


def _exception_knob(environ, name):
    raw = (environ.get(name) or "").strip()
    if not raw:
        return None
    qualified, _, message = raw.partition(": ")
    return qualified.strip(), message.strip()


class StartupKnobs:
    def __init__(self, environ):
        self.environ = environ
        self.load_error = _exception_knob(environ, "DEMO_WEBUI_MODEL_LOAD_ERROR")
        self.generation_error = _exception_knob(environ, "DEMO_WEBUI_GENERATION_ERROR")

    def figure_line(self, prefix, measured, breakdown):
        # A1111's Timer.summary(): "<total>s (<category>: <s>, ...)".
        knob = {"Startup time:": "DEMO_WEBUI_STARTUP_TIME",
                "Model loaded in": "DEMO_WEBUI_MODEL_LOADED_IN"}[prefix]
        raw = (self.environ.get(knob) or "").strip()
        figure = float(raw) if raw else measured
        return f"{prefix} {figure:.1f}s ({breakdown})."

    def print_load_failure(self):
        qualified, message = self.load_error
        short = qualified.rsplit(".", 1)[-1]
        print(f"loading stable diffusion model: {short}\n"
              "Traceback (most recent call last):\n"
              '  File "modules/sd_models.py", line 693, in get_sd_model\n'
              "    load_model()\n"
              f"{qualified}: {message}\n\n"
              "Stable diffusion model failed to load", file=sys.stderr, flush=True)

    def fail_load(self, loader):
        qualified, message = self.load_error
        loader.error_kind, loader.error = qualified.rsplit(".", 1)[-1], message
        self.print_load_failure()

    def check_generation(self):
        if self.generation_error:
            kind, message = self.generation_error
            raise ApiError.internal(kind, message)

    def reload_checkpoint(self, loader):
        loader.start_background()
        loader.done.wait()
        if loader.error:
            if self.load_error:
                self.print_load_failure()  # A1111 loads again on access, and fails again
            raise ApiError.internal("AttributeError", "'NoneType' object has no attribute 'lowvram'")
        return {}


# --------------------------------------------------------------------------------------------
# Progress state, as shared.state in A1111.
# --------------------------------------------------------------------------------------------


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.job = ""
        self.job_count = 0
        self.job_no = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.time_start = 0.0
        self.job_timestamp = "0"
        self.interrupted = False
        self.skipped = False

    def begin(self, job, job_count, steps):
        with self.lock:
            self.job = job
            self.job_count = job_count
            self.job_no = 0
            self.sampling_step = 0
            self.sampling_steps = steps
            self.time_start = time.time()
            self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
            self.interrupted = False
            self.skipped = False
            self.stop.clear()

    def end(self):
        with self.lock:
            self.job = ""
            self.job_count = 0
            self.job_no = 0
            self.sampling_step = 0
            self.sampling_steps = 0

    def interrupt(self):
        with self.lock:
            self.interrupted = True
            self.stop.set()

    def skip(self):
        with self.lock:
            self.skipped = True
            self.stop.set()

    def as_dict(self):
        return {
            "skipped": self.skipped,
            "interrupted": self.interrupted,
            "stopping_generation": False,
            "job": self.job,
            "job_count": self.job_count,
            "job_timestamp": self.job_timestamp,
            "job_no": self.job_no,
            "sampling_step": self.sampling_step,
            "sampling_steps": self.sampling_steps,
        }

    def progress(self):
        with self.lock:
            state = self.as_dict()
            if self.job_count == 0:
                return {"progress": 0, "eta_relative": 0, "state": state,
                        "current_image": None, "textinfo": None}
            progress = 0.01 + self.job_no / self.job_count
            if self.sampling_steps > 0:
                progress += self.sampling_step / self.sampling_steps / self.job_count
            elapsed = time.time() - self.time_start
            eta_relative = elapsed / progress - elapsed
            return {"progress": min(progress, 1), "eta_relative": eta_relative, "state": state,
                    "current_image": None, "textinfo": None}


# --------------------------------------------------------------------------------------------
# PNG writing (zlib + struct) and reading of the text chunks.
# --------------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind, data):
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _text_chunk(key, text):
    try:
        return _png_chunk(b"tEXt", key.encode("latin-1") + b"\0" + text.encode("latin-1"))
    except UnicodeEncodeError:
        # PIL writes iTXt (UTF-8) when the text is not Latin-1; so does A1111.
        return _png_chunk(b"iTXt", key.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8"))


def render_png(width, height, fingerprint, infotext):
    """A deterministic RGB picture: a horizontal colour ramp shifted row by row.

    Rows are produced with bytes.translate so a 2048x2048 image takes milliseconds in pure Python.
    """
    digest = hashlib.sha256(fingerprint).digest()
    start, end = digest[0:3], digest[3:6]
    stride = 1 + digest[6] % 7
    ramp = bytearray(width * 3)
    for x in range(width):
        t = x / max(width - 1, 1)
        for c in range(3):
            ramp[x * 3 + c] = int(start[c] + (end[c] - start[c]) * t) & 0xFF
    ramp = bytes(ramp)
    tables = {}
    rows = []
    for y in range(height):
        shift = (y * stride) & 0xFF
        table = tables.get(shift)
        if table is None:
            table = bytes((v + shift) & 0xFF for v in range(256))
            tables[shift] = table
        rows.append(b"\0" + ramp.translate(table))
    raw = b"".join(rows)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"".join([
        PNG_SIGNATURE,
        _png_chunk(b"IHDR", header),
        _text_chunk("parameters", infotext),
        _png_chunk(b"IDAT", zlib.compress(raw, 6)),
        _png_chunk(b"IEND", b""),
    ])


def png_text_chunks(data):
    """{key: text} of a PNG's tEXt/iTXt chunks; None when `data` is not a PNG."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    texts = {}
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"tEXt" and b"\0" in body:
            key, text = body.split(b"\0", 1)
            texts[key.decode("latin-1")] = text.decode("latin-1")
        elif kind == b"iTXt" and b"\0" in body:
            key, rest = body.split(b"\0", 1)
            # compression flag, method, then language and translated keyword (NUL-terminated).
            parts = rest[2:].split(b"\0", 2)
            if len(parts) == 3 and rest[0] == 0:
                texts[key.decode("latin-1")] = parts[2].decode("utf-8", "replace")
        elif kind == b"IEND":
            break
    return texts


IMAGE_MAGIC = (PNG_SIGNATURE, b"\xff\xd8\xff", b"RIFF", b"GIF8", b"BM")


def decode_image(encoding):
    """A1111's decode_base64_to_image, minus PIL: bytes of a recognised image, or 500."""
    if encoding.startswith(("http://", "https://")):
        raise ApiError.http(500, "Requests not allowed")
    if encoding.startswith("data:image/"):
        encoding = encoding.split(";")[1].split(",")[1]
    try:
        data = base64.b64decode(encoding, validate=False)
    except (binascii.Error, ValueError):
        raise ApiError.http(500, "Invalid encoded image") from None
    if not data.startswith(IMAGE_MAGIC):
        raise ApiError.http(500, "Invalid encoded image")
    return data


def parse_infotext(text):
    """A small take on A1111's parse_generation_parameters: prompt, negative prompt, key: value."""
    params = {}
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    if ": " in last and "," in last or last.startswith("Steps: "):
        lines = lines[:-1]
        for part in last.split(", "):
            if ": " in part:
                key, value = part.split(": ", 1)
                params[key.strip()] = value.strip()
    prompt, negative, in_negative = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    params["Prompt"] = "\n".join(prompt)
    params["Negative prompt"] = "\n".join(negative)
    return params


# --------------------------------------------------------------------------------------------
# Samplers, schedulers and the other lists A1111 serves.
# --------------------------------------------------------------------------------------------

SAMPLERS = [
    ("DPM++ 2M", ["k_dpmpp_2m"], {"scheduler": "karras"}),
    ("DPM++ SDE", ["k_dpmpp_sde"], {"scheduler": "karras", "second_order": "True"}),
    ("DPM++ 2M SDE", ["k_dpmpp_2m_sde"], {"scheduler": "exponential"}),
    ("DPM++ 2M SDE Heun", ["k_dpmpp_2m_sde_heun"], {"scheduler": "exponential"}),
    ("DPM++ 2S a", ["k_dpmpp_2s_a"], {"scheduler": "karras", "second_order": "True"}),
    ("DPM++ 3M SDE", ["k_dpmpp_3m_sde"], {"scheduler": "exponential"}),
    ("Euler a", ["k_euler_a", "k_euler_ancestral"], {"uses_ensd": "True"}),
    ("Euler", ["k_euler"], {}),
    ("LMS", ["k_lms"], {}),
    ("Heun", ["k_heun"], {"second_order": "True"}),
    ("DPM2", ["k_dpm_2"], {"scheduler": "karras", "second_order": "True"}),
    ("DPM2 a", ["k_dpm_2_a"], {"scheduler": "karras", "second_order": "True"}),
    ("DPM fast", ["k_dpm_fast"], {"uses_ensd": "True"}),
    ("DPM adaptive", ["k_dpm_ad"], {"uses_ensd": "True"}),
    ("Restart", ["restart"], {"scheduler": "karras", "second_order": "True"}),
    ("DDIM", ["ddim"], {}),
    ("DDIM CFG++", ["ddim_cfgpp"], {}),
    ("PLMS", ["plms"], {}),
    ("UniPC", ["unipc"], {}),
    ("LCM", ["k_lcm"], {}),
]
SAMPLER_NAMES = {name: name for name, _, _ in SAMPLERS}
SAMPLER_NAMES.update({alias: name for name, aliases, _ in SAMPLERS for alias in aliases})

SCHEDULERS = [
    ("automatic", "Automatic", None, -1, False),
    ("uniform", "Uniform", None, -1, True),
    ("karras", "Karras", None, 7.0, False),
    ("exponential", "Exponential", None, -1, False),
    ("polyexponential", "Polyexponential", None, 1.0, False),
    ("sgm_uniform", "SGM Uniform", ["SGMUniform"], -1, True),
    ("kl_optimal", "KL Optimal", None, -1, False),
    ("align_your_steps", "Align Your Steps", None, -1, False),
    ("simple", "Simple", None, -1, True),
    ("normal", "Normal", None, -1, True),
    ("ddim", "DDIM", None, -1, True),
    ("beta", "Beta", None, -1, True),
]

UPSCALERS = [
    {"name": "None", "model_name": None, "model_path": None, "model_url": None, "scale": 4},
    {"name": "Lanczos", "model_name": None, "model_path": None, "model_url": None, "scale": 4},
    {"name": "Nearest", "model_name": None, "model_path": None, "model_url": None, "scale": 4},
    {"name": "ESRGAN_4x", "model_name": "ESRGAN_4x", "model_path": None, "model_url": None,
     "scale": 4},
    {"name": "R-ESRGAN 4x+", "model_name": None, "model_path": None, "model_url": None,
     "scale": 4},
]
LATENT_UPSCALE_MODES = ["Latent", "Latent (antialiased)", "Latent (bicubic)",
                        "Latent (bicubic antialiased)", "Latent (nearest)",
                        "Latent (nearest-exact)"]
SCRIPTS = {
    "txt2img": ["prompt matrix", "prompts from file or textbox", "x/y/z plot"],
    "img2img": ["img2img alternative test", "loopback", "outpainting mk2",
                "poor man's outpainting", "prompt matrix", "prompts from file or textbox",
                "sd upscale", "x/y/z plot"],
}


def resolve_sampler(name, scheduler_name):
    """sd_samplers.get_sampler_and_scheduler: "DPM++ 2M Karras" names both; default Euler."""
    labels = {label: label for _, label, _, _, _ in SCHEDULERS}
    labels.update({key: label for key, label, _, _, _ in SCHEDULERS})
    labels.update({alias: label for _, label, aliases, _, _ in SCHEDULERS for alias in aliases or []})
    scheduler = labels.get(scheduler_name or "", "Automatic")
    name = name or "Euler"
    for candidate, label in labels.items():
        if name.endswith(" " + candidate):
            name = name[: -(len(candidate) + 1)]
            scheduler = label
            break
    sampler = SAMPLER_NAMES.get(name)
    if sampler is None or (scheduler_name and scheduler_name not in labels):
        # A1111 v1.10.1 does not refuse them: it logs and makes the image with another.
        fixed_sampler = sampler or "DPM++ 2M"
        fixed_scheduler = scheduler if scheduler_name in labels or not scheduler_name else "Automatic"
        print(f'Sampler Scheduler autocorrection: "{name}" -> "{fixed_sampler}", '
              f'"{scheduler_name}" -> "{fixed_scheduler}"', flush=True)
        sampler, scheduler = fixed_sampler, fixed_scheduler
    return sampler, scheduler


# --------------------------------------------------------------------------------------------
# Request models: the fields A1111 v1.10 reads, their defaults, and pydantic v1's coercion.
# --------------------------------------------------------------------------------------------

COMMON_FIELDS = {
    "prompt": ("str", ""), "negative_prompt": ("str", ""), "styles": ("list?", None),
    "seed": ("int", -1), "subseed": ("int", -1), "subseed_strength": ("float", 0.0),
    "seed_resize_from_h": ("int", -1), "seed_resize_from_w": ("int", -1),
    "sampler_name": ("str?", None), "scheduler": ("str?", None), "batch_size": ("int", 1),
    "n_iter": ("int", 1), "steps": ("int", 50), "cfg_scale": ("float", 7.0),
    "width": ("int", 512), "height": ("int", 512), "restore_faces": ("bool?", None),
    "tiling": ("bool?", None), "do_not_save_samples": ("bool", False),
    "do_not_save_grid": ("bool", False), "eta": ("float?", None),
    "denoising_strength": ("float?", None), "s_min_uncond": ("float?", None),
    "s_churn": ("float?", None), "s_tmax": ("float?", None), "s_tmin": ("float?", None),
    "s_noise": ("float?", None), "override_settings": ("dict?", None),
    "override_settings_restore_afterwards": ("bool", True), "refiner_checkpoint": ("str?", None),
    "refiner_switch_at": ("float?", None), "disable_extra_networks": ("bool", False),
    "firstpass_image": ("str?", None), "comments": ("dict?", None),
    "sampler_index": ("str", "Euler"), "script_name": ("str?", None), "script_args": ("list", []),
    "send_images": ("bool", True), "save_images": ("bool", False),
    "alwayson_scripts": ("dict", {}), "force_task_id": ("str?", None), "infotext": ("str?", None),
}
TXT2IMG_FIELDS = dict(COMMON_FIELDS, **{
    "enable_hr": ("bool", False), "firstphase_width": ("int", 0), "firstphase_height": ("int", 0),
    "hr_scale": ("float", 2.0), "hr_upscaler": ("str?", None), "hr_second_pass_steps": ("int", 0),
    "hr_resize_x": ("int", 0), "hr_resize_y": ("int", 0), "hr_checkpoint_name": ("str?", None),
    "hr_sampler_name": ("str?", None), "hr_scheduler": ("str?", None), "hr_prompt": ("str", ""),
    "hr_negative_prompt": ("str", ""),
})
IMG2IMG_FIELDS = dict(COMMON_FIELDS, **{
    "init_images": ("list?", None), "resize_mode": ("int", 0), "image_cfg_scale": ("float?", None),
    "mask": ("str?", None), "mask_blur_x": ("int", 4), "mask_blur_y": ("int", 4),
    "mask_blur": ("int?", None), "mask_round": ("bool", True), "inpainting_fill": ("int", 0),
    "inpaint_full_res": ("bool", True), "inpaint_full_res_padding": ("int", 0),
    "inpainting_mask_invert": ("int", 0), "initial_noise_multiplier": ("float?", None),
    "latent_mask": ("str?", None), "include_init_images": ("bool", False),
    "denoising_strength": ("float", 0.75),
})

_TRUE = {"1", "on", "t", "true", "y", "yes"}
_FALSE = {"0", "off", "f", "false", "n", "no"}


def _coerce(kind, value):
    """pydantic v1's lax coercion; returns (value, None) or (None, (msg, type))."""
    if kind == "int":
        if isinstance(value, bool) or isinstance(value, int):
            return int(value), None
        if isinstance(value, float) and value.is_integer():
            return int(value), None
        if isinstance(value, str):
            try:
                return int(value.strip()), None
            except ValueError:
                pass
        return None, ("value is not a valid integer", "type_error.integer")
    if kind == "float":
        if isinstance(value, (int, float)):
            return float(value), None
        if isinstance(value, str):
            try:
                return float(value.strip()), None
            except ValueError:
                pass
        return None, ("value is not a valid float", "type_error.float")
    if kind == "bool":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, int) and value in (0, 1):
            return bool(value), None
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE, None
        return None, ("value could not be parsed to a boolean", "type_error.bool")
    if kind == "str":
        if isinstance(value, str):
            return value, None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value), None
        return None, ("str type expected", "type_error.str")
    if kind == "list":
        if isinstance(value, list):
            return value, None
        return None, ("value is not a valid list", "type_error.list")
    if kind == "dict":
        if isinstance(value, dict):
            return value, None
        return None, ("value is not a valid dict", "type_error.dict")
    raise ValueError(kind)


def parse_model(body, fields):
    """The request model: known fields coerced, defaults filled in, extra fields ignored."""
    if not isinstance(body, dict):
        raise validation_error([{"loc": ["body"], "msg": "value is not a valid dict",
                                 "type": "type_error.dict"}])
    result, errors = {}, []
    for name, (kind, default) in fields.items():
        if name not in body:
            result[name] = json.loads(json.dumps(default))
            continue
        value = body[name]
        optional = kind.endswith("?")
        if value is None:
            if optional:
                result[name] = None
            else:
                errors.append({"loc": ["body", name], "msg": "none is not an allowed value",
                               "type": "type_error.none.not_allowed"})
            continue
        coerced, problem = _coerce(kind.rstrip("?"), value)
        if problem:
            errors.append({"loc": ["body", name], "msg": problem[0], "type": problem[1]})
        else:
            result[name] = coerced
    if errors:
        raise validation_error(errors)
    return result


def format_number(value):
    return str(int(value)) if float(value).is_integer() else str(value)


# GET /sdapi/v1/options: every setting with its default (A1111 has some 400; these are the ones
# a worker's jobs touch, paths and server settings included).
DEFAULT_OPTIONS = {
    "samples_save": True, "samples_format": "png", "samples_filename_pattern": "",
    "save_images_add_number": True, "grid_save": True, "grid_format": "png",
    "jpeg_quality": 80, "webp_lossless": False, "save_txt": False,
    "outdir_samples": "", "outdir_txt2img_samples": "outputs/txt2img-images",
    "outdir_img2img_samples": "outputs/img2img-images", "outdir_extras_samples":
    "outputs/extras-images", "outdir_grids": "", "outdir_save": "log/images",
    "outdir_init_images": "outputs/init-images", "save_to_dirs": True,
    "directories_filename_pattern": "[date]", "temp_dir": "", "clean_temp_dir_at_start": False,
    "sd_model_checkpoint": None, "sd_checkpoint_hash": None, "sd_checkpoints_limit": 1,
    "sd_checkpoint_cache": 0, "sd_vae": "Automatic", "sd_vae_overrides_per_model_preferences": True,
    "sd_unet": "Automatic", "CLIP_stop_at_last_layers": 1, "eta_noise_seed_delta": 0,
    "eta_ancestral": 1.0, "eta_ddim": 0.0, "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": 0.0,
    "s_noise": 1.0, "s_min_uncond": 0.0, "randn_source": "GPU", "token_merging_ratio": 0.0,
    "img2img_color_correction": False, "img2img_fix_steps": False,
    "initial_noise_multiplier": 1.0, "emphasis": "Original", "face_restoration": False,
    "face_restoration_model": "CodeFormer", "code_former_weight": 0.5,
    "upscaler_for_img2img": None, "show_progress_every_n_steps": 10,
    "live_previews_enable": True, "api_enable_requests": True,
    "api_forbid_local_requests": True, "api_useragent": "",
}

# --------------------------------------------------------------------------------------------
# The application: routes and what they answer.
# --------------------------------------------------------------------------------------------


class DemoWebUI:
    def __init__(self, args, paths, environ):
        self.args = args
        self.paths = paths
        self.library = Library(args, paths)
        self.loader = ModelLoader(
            self.library,
            knob_seconds(environ, "DEMO_WEBUI_MODEL_LOAD_SECONDS"),
            bool(environ.get("DEMO_WEBUI_FAIL_MODEL_LOAD")),
        )
        self.loader.knobs = StartupKnobs(environ)
        self.seconds_per_step = knob_seconds(environ, "DEMO_WEBUI_SECONDS_PER_STEP")
        self.state = State()
        # A1111 runs generation and model changes one at a time behind this lock.
        self.queue_lock = threading.Lock()
        self.options = json.loads(json.dumps(DEFAULT_OPTIONS))
        # The keys config.json holds: A1111 restores a job's override_settings only for these.
        self.config_keys = set()
        self.broken_checkpoints = {name.strip() for name in
                                   (environ.get("DEMO_WEBUI_BROKEN_CHECKPOINTS") or "").split(",")
                                   if name.strip()}
        default = self.library.default_checkpoint()
        if default:
            # A1111 writes the loaded model into its settings.
            self.options["sd_model_checkpoint"] = default.title
            self.options["sd_checkpoint_hash"] = default.sha256
            self.config_keys.update({"sd_model_checkpoint", "sd_checkpoint_hash"})
        self.in_flight = 0
        self.in_flight_cond = threading.Condition()
        self.routes = {
            ("GET", "sd-models"): lambda q, b: self.library.sd_models(),
            ("GET", "samplers"): lambda q, b: [
                {"name": n, "aliases": a, "options": o} for n, a, o in SAMPLERS],
            ("GET", "schedulers"): lambda q, b: [
                {"name": n, "label": lbl, "aliases": a, "default_rho": rho, "need_inner_model": inner}
                for n, lbl, a, rho, inner in SCHEDULERS],
            ("GET", "upscalers"): lambda q, b: UPSCALERS,
            ("GET", "latent-upscale-modes"): lambda q, b: [{"name": m} for m in LATENT_UPSCALE_MODES],
            ("GET", "sd-vae"): lambda q, b: [],
            ("GET", "hypernetworks"): lambda q, b: [],
            ("GET", "face-restorers"): lambda q, b: [
                {"name": "CodeFormer", "cmd_dir": None}, {"name": "GFPGAN", "cmd_dir": None}],
            ("GET", "realesrgan-models"): lambda q, b: [],
            ("GET", "prompt-styles"): lambda q, b: [],
            ("GET", "options"): lambda q, b: dict(self.options),
            ("POST", "options"): self.set_options,
            ("GET", "cmd-flags"): lambda q, b: vars(self.args),
            ("GET", "progress"): lambda q, b: self.state.progress(),
            ("GET", "memory"): lambda q, b: memory_report(),
            ("GET", "loras"): lambda q, b: list(self.library.loras),
            ("GET", "embeddings"): lambda q, b: self.library.embeddings_api(),
            ("GET", "scripts"): lambda q, b: SCRIPTS,
            ("GET", "script-info"): lambda q, b: [],
            ("GET", "extensions"): lambda q, b: [],
            ("POST", "txt2img"): lambda q, b: self.generate(b, "txt2img"),
            ("POST", "img2img"): lambda q, b: self.generate(b, "img2img"),
            ("POST", "png-info"): self.png_info,
            ("POST", "interrupt"): self.interrupt,
            ("POST", "skip"): self.skip,
            ("POST", "refresh-checkpoints"): self.locked(self.library.refresh_checkpoints),
            ("POST", "refresh-vae"): self.locked(lambda: None),
            ("POST", "refresh-loras"): self.locked(self.library.refresh_loras),
            ("POST", "refresh-embeddings"): self.locked(self.library.refresh_embeddings),
            ("POST", "unload-checkpoint"): lambda q, b: {},
            ("POST", "reload-checkpoint"): lambda q, b: self.loader.knobs.reload_checkpoint(self.loader),
        }
        # Routes of installed extensions, by full path.
        self.extension_routes = {}
        if environ.get("DEMO_WEBUI_CONTROLNET"):
            self.extension_routes.update({
                ("GET", "/controlnet/version"): lambda q, b: {"version": 2},
                ("GET", "/controlnet/model_list"): lambda q, b: {"model_list": []},
                ("POST", "/controlnet/detect"): lambda q, b: {"images": [], "info": "demo"},
            })

    def openapi(self):
        """FastAPI's GET /openapi.json, reduced to what lists the routes."""
        paths = {}
        for method, name in self.routes:
            paths.setdefault(f"/sdapi/v1/{name}", {})[method.lower()] = {"summary": name}
        for method, path in self.extension_routes:
            paths.setdefault(path, {})[method.lower()] = {"summary": path}
        return {"openapi": "3.0.2", "info": {"title": "FastAPI", "version": "0.1.0"},
                "paths": paths}

    def locked(self, action):
        def run(_query, _body):
            with self.queue_lock:
                action()
            return None
        return run

    # -- request bookkeeping for graceful shutdown ---------------------------------------

    def request_started(self):
        with self.in_flight_cond:
            self.in_flight += 1

    def request_finished(self):
        with self.in_flight_cond:
            self.in_flight -= 1
            self.in_flight_cond.notify_all()

    def wait_idle(self):
        with self.in_flight_cond:
            while self.in_flight > 0:
                self.in_flight_cond.wait(0.1)

    # -- dispatch --------------------------------------------------------------------------

    def dispatch(self, method, path, query, raw_body):
        """(status, JSON-able answer) for one request."""
        if method == "GET" and path == "/openapi.json":
            return 200, self.openapi()
        extension = self.extension_routes.get((method, path))
        if extension is not None:
            return 200, extension(query, parse_json_body(raw_body) if method == "POST" else None)
        if any(key[1] == path for key in self.extension_routes):
            raise ApiError.plain(405, {"detail": "Method Not Allowed"})
        if not path.startswith("/sdapi/v1/"):
            raise ApiError.plain(404, {"detail": "Not Found"})
        name = path[len("/sdapi/v1/"):]
        route = self.routes.get((method, name))
        if route is None:
            if any(key[1] == name for key in self.routes):
                raise ApiError.plain(405, {"detail": "Method Not Allowed"})
            raise ApiError.plain(404, {"detail": "Not Found"})
        body = None
        if method == "POST" and name not in ("interrupt", "skip") and not name.startswith(
                ("refresh-", "unload-", "reload-")):
            body = parse_json_body(raw_body)
        return 200, route(query, body)

    # -- endpoints ---------------------------------------------------------------------------

    def set_options(self, _query, body):
        if not isinstance(body, dict):
            raise validation_error([{"loc": ["body"], "msg": "value is not a valid dict",
                                     "type": "type_error.dict"}])
        name = body.get("sd_model_checkpoint")
        if name is not None:
            checkpoint = self.library.find_checkpoint(name)
            if checkpoint is None:
                raise ApiError.internal("RuntimeError", f"model {name!r} not found")
        for key in body:
            if key not in self.options:
                # A1111's opts.set: data_labels[key] raises; the API turns it into a 500.
                raise ApiError.internal("KeyError", repr(key))
        if name is not None:
            body = dict(body)
            del body["sd_model_checkpoint"]
            with self.queue_lock:
                if self._loads(checkpoint):
                    self.loader.switch(checkpoint)
                    self.options["sd_model_checkpoint"] = checkpoint.title
                    self.options["sd_checkpoint_hash"] = checkpoint.sha256
                    self.config_keys.update({"sd_model_checkpoint", "sd_checkpoint_hash"})
        self.options.update(body)
        self.config_keys.update(body)
        return None

    def _loads(self, checkpoint):
        """False, with A1111's log line, for a checkpoint that fails to load: the setting keeps
        its old value and the API still answers 200."""
        if os.path.basename(checkpoint.filename) not in self.broken_checkpoints:
            return True
        print(f"changing setting sd_model_checkpoint to {checkpoint.title}: RuntimeError: "
              f"demo-webui: {checkpoint.filename} cannot be loaded "
              "(DEMO_WEBUI_BROKEN_CHECKPOINTS)", flush=True)
        return False

    def interrupt(self, _query, _body):
        self.state.interrupt()
        return {}

    def skip(self, _query, _body):
        self.state.skip()
        return None

    def png_info(self, _query, body):
        if not isinstance(body, dict) or not isinstance(body.get("image"), str):
            raise validation_error([{"loc": ["body", "image"], "msg": "field required",
                                     "type": "value_error.missing"}])
        data = decode_image(body["image"].strip())
        texts = png_text_chunks(data) or {}
        info = texts.pop("parameters", "")
        return {"info": info, "items": texts, "parameters": parse_infotext(info) if info else {}}

    def generate(self, body, kind):
        params = parse_model(body, TXT2IMG_FIELDS if kind == "txt2img" else IMG2IMG_FIELDS)
        init_digest = b""
        if kind == "img2img":
            if params["init_images"] is None:
                raise ApiError.http(404, "Init image not found")
            digest = hashlib.sha256()
            for encoded in params["init_images"]:
                if not isinstance(encoded, str):
                    raise ApiError.http(500, "Invalid encoded image")
                digest.update(decode_image(encoded))
            if params["mask"]:
                digest.update(decode_image(params["mask"]))
            init_digest = digest.digest()
        if params["script_name"] and params["script_name"].lower() not in SCRIPTS[kind]:
            raise ApiError.http(422, f"Script '{params['script_name']}' not found")
        sampler, scheduler = resolve_sampler(params["sampler_name"] or params["sampler_index"],
                                             params["scheduler"])
        width, height = params["width"], params["height"]
        if kind == "txt2img" and params["enable_hr"]:
            if params["hr_resize_x"] or params["hr_resize_y"]:
                width = params["hr_resize_x"] or width * params["hr_resize_y"] // height
                height = params["hr_resize_y"] or height * params["hr_resize_x"] // params["width"]
            else:
                width = int(width * params["hr_scale"])
                height = int(height * params["hr_scale"])
        # Stable Diffusion works on 8x8 latent cells: the image is the latent times 8.
        width, height = width // 8 * 8, height // 8 * 8
        if not (8 <= width <= 8192 and 8 <= height <= 8192):
            raise ApiError.internal("RuntimeError", f"demo-webui: cannot make a {width}x{height} image")
        steps = params["steps"]
        if steps < 1:
            raise ApiError.internal("ZeroDivisionError", "division by zero")
        batch_size, n_iter = max(params["batch_size"], 1), max(params["n_iter"], 1)

        with self.queue_lock:
            model = self.loader.wait()
            overrides = params["override_settings"] or {}
            for key in overrides:
                if key not in self.options:
                    raise ApiError.internal("KeyError", repr(key))
            # processing.process_images: stored only for keys in config.json.
            stored = {k: self.options[k] for k in overrides if k in self.config_keys}
            try:
                self.options.update(overrides)
                model = self._override_model(params, model)
                return self._generate(kind, params, model, init_digest, sampler, scheduler,
                                      width, height, steps, batch_size, n_iter)
            finally:
                if params["override_settings_restore_afterwards"]:
                    self.options.update(stored)

    def _generate(self, kind, params, model, init_digest, sampler, scheduler, width, height,
                  steps, batch_size, n_iter):
        seed = params["seed"]
        if seed is None or seed == -1:
            seed = int(random.randrange(4294967294))
        subseed = params["subseed"]
        if subseed is None or subseed == -1:
            subseed = int(random.randrange(4294967294))
        total = batch_size * n_iter
        all_seeds = [seed + i for i in range(total)]
        all_subseeds = [subseed + i for i in range(total)]
        prompt, negative = params["prompt"], params["negative_prompt"]
        infotexts, images = [], []
        self.state.begin(f"scripts_{kind}", n_iter, steps)
        try:
            for iteration in range(n_iter):
                if self.state.interrupted:
                    break
                with self.state.lock:
                    self.state.job_no = iteration
                for step in range(steps):
                    if self.state.stop.is_set():
                        break
                    with self.state.lock:
                        self.state.sampling_step = step
                    if self.seconds_per_step:
                        self.state.stop.wait(self.seconds_per_step)
                with self.state.lock:
                    self.state.skipped = False
                    if not self.state.interrupted:
                        self.state.stop.clear()
                for index in range(iteration * batch_size, (iteration + 1) * batch_size):
                    infotext = self._infotext(params, sampler, scheduler, all_seeds[index],
                                              width, height, model, self.clip_skip())
                    infotexts.append(infotext)
                    fingerprint = f"{all_seeds[index]}\0{prompt}\0{negative}".encode() + init_digest
                    png = render_png(width, height, fingerprint, infotext)
                    images.append(base64.b64encode(png).decode("ascii"))
        finally:
            self.state.end()

        info = {
            "prompt": prompt, "all_prompts": [prompt] * len(infotexts),
            "negative_prompt": negative, "all_negative_prompts": [negative] * len(infotexts),
            "seed": seed, "all_seeds": all_seeds[:len(infotexts)],
            "subseed": subseed, "all_subseeds": all_subseeds[:len(infotexts)],
            "subseed_strength": params["subseed_strength"], "width": width, "height": height,
            "sampler_name": sampler, "cfg_scale": params["cfg_scale"], "steps": steps,
            "batch_size": batch_size, "restore_faces": bool(params["restore_faces"]),
            "face_restoration_model": None,
            "sd_model_name": model.model_name if model else None,
            "sd_model_hash": model.shorthash if model else None,
            "sd_vae_name": None, "sd_vae_hash": None,
            "seed_resize_from_w": params["seed_resize_from_w"],
            "seed_resize_from_h": params["seed_resize_from_h"],
            "denoising_strength": params["denoising_strength"],
            "extra_generation_params": {"Schedule type": scheduler},
            "index_of_first_image": 0, "infotexts": infotexts, "styles": params["styles"] or [],
            "job_timestamp": self.state.job_timestamp, "clip_skip": self.clip_skip(),
            "is_using_inpainting_conditioning": False, "version": VERSION,
        }
        if kind == "img2img" and not params["include_init_images"]:
            params["init_images"] = None
            params["mask"] = None
        return {
            "images": images if params["send_images"] else [],
            "parameters": params,
            "info": json.dumps(info),
        }

    def _override_model(self, params, model):
        wanted = (params["override_settings"] or {}).get("sd_model_checkpoint")
        if not wanted:
            return model
        checkpoint = self.library.find_checkpoint(wanted)
        if checkpoint is None:
            fallback = model.title if model else "none"
            print(f"Checkpoint {wanted} not found; loading fallback {fallback}", flush=True)
            return model
        if not self._loads(checkpoint):
            return model
        return checkpoint

    def clip_skip(self):
        value = self.options.get("CLIP_stop_at_last_layers")
        return value if isinstance(value, int) and not isinstance(value, bool) else 1

    @staticmethod
    def _infotext(params, sampler, scheduler, seed, width, height, model, clip_skip):
        fields = [
            f"Steps: {params['steps']}", f"Sampler: {sampler}", f"Schedule type: {scheduler}",
            f"CFG scale: {format_number(params['cfg_scale'])}", f"Seed: {seed}",
            f"Size: {width}x{height}",
        ]
        if model is not None:
            if model.shorthash:
                fields.append(f"Model hash: {model.shorthash}")
            fields.append(f"Model: {model.model_name}")
        if clip_skip > 1:
            fields.append(f"Clip skip: {clip_skip}")
        if params.get("denoising_strength") is not None and params.get("init_images"):
            fields.append(f"Denoising strength: {format_number(params['denoising_strength'])}")
        fields.append(f"Version: {VERSION}")
        text = params["prompt"]
        if params["negative_prompt"]:
            text += f"\nNegative prompt: {params['negative_prompt']}"
        return text + "\n" + ", ".join(fields)


def parse_json_body(raw):
    if not raw:
        raise validation_error([{"loc": ["body"], "msg": "field required",
                                 "type": "value_error.missing"}])
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise validation_error([{"loc": ["body", getattr(exc, "pos", 0)], "msg": str(exc),
                                 "type": "value_error.jsondecode"}]) from None


def memory_report():
    def meminfo():
        values = {}
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                key, rest = line.split(":", 1)
                values[key] = int(rest.split()[0]) * 1024
        return values

    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        total = meminfo()["MemTotal"]
        ram = {"free": total - rss, "used": rss, "total": total}
    except (OSError, ValueError, KeyError) as exc:
        ram = {"error": str(exc)}
    return {"ram": ram, "cuda": {"error": "unavailable"}}


# --------------------------------------------------------------------------------------------
# HTTP: a threaded server; each request is logged like uvicorn's access log.
# --------------------------------------------------------------------------------------------

HTTP_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                422: "Unprocessable Entity", 500: "Internal Server Error"}


class RequestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def version_string(self):
        return "uvicorn"

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")

    def _serve(self, method):
        app = self.server.app
        app.request_started()
        try:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length > 0 else b""
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                status, answer = app.dispatch(method, url.path, query, raw)
            except ApiError as err:
                status, answer = err.status, err.payload
            except Exception as exc:  # noqa: BLE001 - A1111 turns any exception into a 500 answer
                status = 500
                answer = {"error": type(exc).__name__, "detail": "", "body": "", "errors": str(exc)}
                print(f"API error: {method}: {self.path} {answer}", file=sys.stderr, flush=True)
            self._send_json(status, answer)
        finally:
            app.request_finished()

    def _send_json(self, status, answer):
        data = json.dumps(answer).encode("utf-8")
        self.send_response(status, HTTP_REASONS.get(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.server.shutting_down:
            # Like uvicorn during shutdown: finish this answer, keep no connection open.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code="-", size="-"):
        if self.server.access_log:
            host, port = self.client_address[:2]
            status = int(code) if str(code).isdigit() else code
            print(f'INFO:     {host}:{port} - "{self.requestline}" {status} '
                  f'{HTTP_REASONS.get(status, "")}', flush=True)

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        print("WARNING:  " + (format % args), file=sys.stderr, flush=True)


class ApiServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, app, access_log, keep_alive):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.app = app
        self.access_log = access_log
        self.shutting_down = False
        handler = type("Handler", (RequestHandler,), {"timeout": keep_alive})
        super().__init__(address, handler)


# --------------------------------------------------------------------------------------------
# Process lifecycle.
# --------------------------------------------------------------------------------------------


def knob_seconds(environ, name):
    raw = (environ.get(name) or "").strip()
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        value = -1.0
    if not value >= 0:
        print(f"demo-webui: {name}={raw!r} must be a number of seconds (0 or more)",
              file=sys.stderr, flush=True)
        sys.exit(2)
    return value


def _a1111_sigint(signum, frame):
    # A1111's initialize_util.configure_sigint_handler: leave at once, status 0.
    print(f"Interrupted with signal {signum} in {frame}", flush=True)
    os._exit(0)


def bind_address(args):
    if args.server_name:
        return args.server_name
    if args.listen:
        return "0.0.0.0"
    return ""


def main(argv=None, environ=None):
    environ = os.environ if environ is None else environ
    argv = sys.argv[1:] if argv is None else argv
    signal.signal(signal.SIGINT, _a1111_sigint)
    ignore_sigterm = bool(environ.get("DEMO_WEBUI_IGNORE_SIGTERM"))
    if ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    script_path = os.path.dirname(os.path.abspath(__file__))
    started = time.monotonic()
    args, paths = parse_command_line(argv, environ, script_path)
    print(f"demo-webui: A1111 {VERSION} stand-in, arguments: {shlex.join(argv)}", flush=True)

    for knob in ("DEMO_WEBUI_STARTUP_DELAY", "DEMO_WEBUI_MODEL_LOAD_SECONDS",
                 "DEMO_WEBUI_SECONDS_PER_STEP", "DEMO_WEBUI_STARTUP_TIME",
                 "DEMO_WEBUI_MODEL_LOADED_IN"):
        knob_seconds(environ, knob)  # a bad value ends the process now, not mid-request
    time.sleep(knob_seconds(environ, "DEMO_WEBUI_STARTUP_DELAY"))
    exit_at_start = (environ.get("DEMO_WEBUI_EXIT_AT_START") or "").strip()
    if exit_at_start:
        print(f"demo-webui: start-up failed (DEMO_WEBUI_EXIT_AT_START={exit_at_start})", flush=True)
        return int(exit_at_start) if exit_at_start.isdigit() else 1
    app = DemoWebUI(args, paths, environ)
    if not args.skip_load_model_at_start:
        app.loader.start_background()

    port = args.port if args.port is not None else (DEFAULT_PORT if args.nowebui else 7860)
    host = bind_address(args)
    access_log = environ.get("DEMO_WEBUI_ACCESS_LOG", "1") != "0"
    try:
        server = ApiServer((host, port), app, access_log, args.timeout_keep_alive)
    except OSError as exc:
        print(f"ERROR:    [Errno {exc.errno}] error while attempting to bind on address "
              f"({host!r}, {port}): {exc.strerror.lower() if exc.strerror else exc}", flush=True)
        return EXIT_STARTUP_FAILURE

    received = []

    def on_signal(signum, _frame):
        if received and signum == signal.SIGINT:
            # uvicorn: a second Ctrl-C forces the exit.
            os._exit(0)
        received.append(signum)

    if not ignore_sigterm:
        signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    pid = os.getpid()
    print(app.loader.knobs.figure_line("Startup time:", time.monotonic() - started, "demo"),
          flush=True)
    print(f"INFO:     Started server process [{pid}]", flush=True)
    print("INFO:     Waiting for application startup.", flush=True)
    print("INFO:     Application startup complete.", flush=True)
    shown_host = host or "0.0.0.0"
    print(f"INFO:     Uvicorn running on http://{shown_host}:{server.server_address[1]} "
          "(Press CTRL+C to quit)", flush=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="http", daemon=True)
    thread.start()

    while not received:
        time.sleep(0.05)

    print("INFO:     Shutting down", flush=True)
    server.shutting_down = True
    server.shutdown()
    server.server_close()
    print("INFO:     Waiting for application shutdown.", flush=True)
    app.wait_idle()
    print("INFO:     Application shutdown complete.", flush=True)
    print(f"INFO:     Finished server process [{pid}]", flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    if received[0] == signal.SIGTERM:
        # uvicorn re-raises the signal it caught; A1111 leaves SIGTERM at its default.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(pid, signal.SIGTERM)
        time.sleep(1)
        os._exit(128 + signal.SIGTERM)
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
