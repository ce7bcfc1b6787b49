"""What a job may ask of the WebUI, checked before the WebUI is called.

Endpoints: read-only GETs and refreshes are allowed, generation and image tools are allowed with
their inputs checked, and whatever changes the server for later jobs (stop/restart/kill,
train/create, unloading or reloading the checkpoint, settings that are paths or server
settings) is refused. Every rejection names the field and says what to fix.
"""

import base64
import binascii
import difflib
import json
import os
import struct

API_PREFIX = "/sdapi/v1/"


class InputError(Exception):
    pass


def log(message):
    print(f"handler: {message}", flush=True)


def env_number(name, default, integer=False):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        log(f"{name}={raw!r} is not a{'n integer' if integer else ' number'}; using {default}")
        return default
    if value <= 0:
        log(f"{name}={raw!r} must be positive; using {default}")
        return default
    return value


def show(value):
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def unknown_keys_error(prefix, keys, known, what):
    """One message for every unknown key, each with the closest known one when there is one."""
    parts = []
    for key in sorted(keys, key=str):
        close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        parts.append(f"{prefix}{show(key) if not isinstance(key, str) else key}{hint}")
    noun = "field" if len(parts) == 1 else "fields"
    return f"unknown {noun} {', '.join(parts)}: {what}"


# --------------------------------------------------------------------------------------------
# Endpoints.
# --------------------------------------------------------------------------------------------

# A1111 v1.10's own routes a job may use, with their methods.
BUILTIN = {
    "txt2img": "POST", "img2img": "POST", "extra-single-image": "POST",
    "extra-batch-images": "POST", "png-info": "POST", "interrogate": "POST",
    "interrupt": "POST", "skip": "POST", "refresh-checkpoints": "POST", "refresh-vae": "POST",
    "refresh-loras": "POST", "refresh-embeddings": "POST",
    "progress": "GET", "cmd-flags": "GET", "samplers": "GET", "schedulers": "GET",
    "upscalers": "GET", "latent-upscale-modes": "GET", "sd-models": "GET", "sd-vae": "GET",
    "hypernetworks": "GET", "face-restorers": "GET", "realesrgan-models": "GET",
    "prompt-styles": "GET", "embeddings": "GET", "memory": "GET", "scripts": "GET",
    "script-info": "GET", "extensions": "GET", "loras": "GET",
}
# options takes both: GET reads, POST changes the job settings below.
BUILTIN_BOTH = {"options"}
SERVER_CHANGING = ("it changes the WebUI for every later job (stop/restart/kill, train/create and "
                   "unloading or reloading the checkpoint are refused)")
REFUSED_PREFIXES = ("server-", "unload-checkpoint", "reload-checkpoint", "create/", "train/",
                    "preprocess")
# Never a job's business, whatever the WebUI serves there.
REFUSED_PATHS = ("/internal/", "/docs", "/redoc", "/openapi.json", "/queue/", "/file=",
                 "/login", "/logout", "/token", "/api/", "/run/", "/startup-events", "/config",
                 "/theme.css", "/reload")
RULES = ("allowed: read-only GETs, POST refresh-*, txt2img, img2img, extra-single-image, "
         "extra-batch-images, png-info, interrogate, interrupt, skip, options (job settings "
         "only), and GET routes of installed extensions")


class Request:
    """One WebUI call a job asks for."""

    def __init__(self, method, path, payload, prefix, name=None):
        self.method = method
        self.path = path          # e.g. /sdapi/v1/txt2img or /controlnet/model_list
        self.name = name          # the A1111 endpoint name, None for an extension route
        self.payload = payload
        self.prefix = prefix      # "" for form (a), "payload." for form (b)

    @property
    def what(self):
        return f"{self.method} {self.path}"

    @property
    def generates(self):
        return self.name in ("txt2img", "img2img")


def extension_route_allowed(method, path, routes):
    """None when `method path` may be called on the WebUI that serves `routes` (its route list:
    {path: {methods}}), else why not."""
    methods = routes.get(path)
    if methods is None:
        return (f"{show(path)} is not a route the WebUI serves (GET /openapi.json lists them); "
                f"{RULES}")
    if method not in methods:
        return f"{path} takes {' or '.join(sorted(methods))}, not {method}"
    last = path.rstrip("/").rsplit("/", 1)[-1]
    if method == "GET" or last.startswith("refresh"):
        return None
    return (f"{method} {path} is refused: an extension's POST may change the WebUI for later "
            f"jobs; {RULES}")


def _endpoint(method, endpoint):
    """(path, A1111 endpoint name or None) for an allowed endpoint, else InputError."""
    if not isinstance(endpoint, str) or not endpoint.startswith("/"):
        raise InputError(f"api.endpoint: must be a path like \"/sdapi/v1/txt2img\", got "
                         f"{show(endpoint)}")
    path = endpoint.rstrip("/") or "/"
    if "?" in path or "#" in path or "/../" in path + "/" or "//" in path:
        raise InputError(f"api.endpoint: {show(endpoint)} must be a plain path (no query, '..' "
                         "or '//'); put parameters in payload")
    if path.startswith(REFUSED_PATHS) or path + "/" in REFUSED_PATHS:
        raise InputError(f"api.endpoint: {show(endpoint)} is not allowed; {RULES}")
    if not path.startswith(API_PREFIX):
        return path, None
    name = path[len(API_PREFIX):]
    if name.startswith(REFUSED_PREFIXES):
        raise InputError(f"api.endpoint: {method} {path} is refused: {SERVER_CHANGING}; {RULES}")
    if name in BUILTIN_BOTH:
        return path, name
    if name in BUILTIN:
        if BUILTIN[name] != method:
            raise InputError(f"api.method: {path} takes {BUILTIN[name]}, not {method}")
        return path, name
    # Not one of A1111's: an extension may serve it, checked against the WebUI's route list.
    return path, None


def parse_request(job_input):
    """The Request a job's input asks for, or InputError."""
    if not isinstance(job_input, dict):
        raise InputError('input: must be a JSON object: a txt2img payload, or {"api": '
                         '{"method": ..., "endpoint": ...}, "payload": {...}}')
    if "api" not in job_input:
        if not job_input:
            raise InputError('input: is empty; a txt2img job needs at least a prompt, e.g. '
                             '{"prompt": "a lighthouse", "steps": 20}')
        # init_images gets its own message below: it belongs to img2img.
        unknown = set(job_input) - set(TXT2IMG_FIELDS) - {"init_images"}
        if unknown:
            raise InputError(unknown_keys_error(
                "input.", unknown, list(TXT2IMG_FIELDS) + ["api"],
                "a txt2img job takes A1111's txt2img fields (or use \"api\" and \"payload\")"))
        check_generation(job_input, "", img2img=False)
        return Request("POST", API_PREFIX + "txt2img", job_input, "", "txt2img")

    unexpected = set(job_input) - {"api", "payload"}
    if unexpected:
        raise InputError(unknown_keys_error("input.", unexpected, ["api", "payload"],
                                            'with "api" the input takes only "api" and "payload"'))
    api = job_input["api"]
    if not isinstance(api, dict):
        raise InputError(f'api: must be an object like {{"method": "POST", "endpoint": '
                         f'"/sdapi/v1/txt2img"}}, got {show(api)}')
    unexpected = set(api) - {"method", "endpoint"}
    if unexpected:
        raise InputError(unknown_keys_error("api.", unexpected, ["method", "endpoint"],
                                            'api takes "method" and "endpoint"'))
    method = api.get("method")
    if not isinstance(method, str) or method.upper() not in ("GET", "POST"):
        raise InputError(f"api.method: must be GET or POST, got {show(method)}")
    method = method.upper()
    path, name = _endpoint(method, api.get("endpoint"))

    payload = job_input.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise InputError(f"payload: must be an object, got {show(payload)}")
    request = Request(method, path, payload, "payload.", name)
    if name is not None:
        check_payload(request)
    elif method == "GET":
        check_query(payload)
    return request


def check_query(payload):
    for key, value in payload.items():
        if not isinstance(value, (str, int, float, bool)):
            raise InputError(f"payload.{key}: a GET takes its payload as query parameters: "
                             f"strings, numbers or true/false, got {show(value)}")


def check_payload(request):
    name, payload, method = request.name, request.payload, request.method
    if name in ("txt2img", "img2img"):
        fields = TXT2IMG_FIELDS if name == "txt2img" else IMG2IMG_FIELDS
        unknown = set(payload) - set(fields) - {"init_images"}
        if unknown:
            raise InputError(unknown_keys_error("payload.", unknown, fields,
                                                f"not a field of A1111's {name}"))
        check_generation(payload, "payload.", img2img=name == "img2img")
    elif name == "extra-single-image":
        check_fields(payload, EXTRAS_FIELDS | {"image"}, name)
        check_extras(payload, [("payload.image", payload.get("image"))])
    elif name == "extra-batch-images":
        check_fields(payload, EXTRAS_FIELDS | {"imageList"}, name)
        images = payload.get("imageList")
        if not isinstance(images, list) or not images:
            raise InputError('payload.imageList: needs a non-empty list of {"data": "<base64>", '
                             '"name": "..."}')
        found = []
        for index, item in enumerate(images):
            if not isinstance(item, dict) or set(item) - {"data", "name"}:
                raise InputError(f'payload.imageList[{index}]: must be {{"data": "<base64>", '
                                 f'"name": "..."}}')
            found.append((f"payload.imageList[{index}].data", item.get("data")))
        check_extras(payload, found)
    elif name in ("png-info", "interrogate"):
        allowed = {"image"} | ({"model"} if name == "interrogate" else set())
        check_fields(payload, allowed, name)
        check_image("payload.image", payload.get("image"))
        model = payload.get("model", "clip")
        if name == "interrogate" and model not in ("clip", "deepdanbooru"):
            raise InputError(f"payload.model: must be \"clip\" or \"deepdanbooru\", got "
                             f"{show(model)}")
    elif name == "progress":
        check_fields(payload, {"skip_current_image"}, name)
        if not isinstance(payload.get("skip_current_image", False), bool):
            raise InputError("payload.skip_current_image: must be true or false")
    elif name == "options" and method == "POST":
        if not payload:
            raise InputError("payload: POST /sdapi/v1/options needs the settings to change, "
                             'e.g. {"sd_model_checkpoint": "model.safetensors"}')
        check_settings(payload, "payload.")
    elif name == "options" and method == "GET" and payload:
        raise InputError(f"payload: GET /sdapi/v1/options takes no payload, got keys "
                         f"{', '.join(sorted(payload))}")
    elif name != "options" and payload:
        raise InputError(f"payload: {method} {request.path} takes no payload, got keys "
                         f"{', '.join(sorted(payload))}")


def check_fields(payload, allowed, name):
    unknown = set(payload) - set(allowed)
    if unknown:
        raise InputError(unknown_keys_error("payload.", unknown, sorted(allowed),
                                            f"not a field of A1111's {name}"))


# --------------------------------------------------------------------------------------------
# Settings a job may change (POST options, override_settings): what changes the picture.
# Paths, filename patterns, saving, the API's own switches and memory/server tuning are not.
# --------------------------------------------------------------------------------------------

JOB_SETTINGS = frozenset({
    "sd_model_checkpoint", "sd_vae", "sd_unet", "CLIP_stop_at_last_layers",
    "eta_noise_seed_delta", "eta_ancestral", "eta_ddim", "s_churn", "s_tmin", "s_tmax",
    "s_noise", "s_min_uncond", "always_discard_next_to_last_sigma", "sgm_noise_multiplier",
    "uni_pc_variant", "uni_pc_skip_type", "uni_pc_order", "uni_pc_lower_order_final",
    "randn_source", "token_merging_ratio", "token_merging_ratio_img2img",
    "token_merging_ratio_hr", "img2img_color_correction", "img2img_fix_steps",
    "img2img_background_color", "initial_noise_multiplier", "img2img_extra_noise",
    "inpainting_mask_weight", "emphasis", "comma_padding_backtrack",
    "use_old_emphasis_implementation", "use_old_karras_scheduler_sigmas",
    "no_dpmpp_sde_batch_determinism", "use_old_hires_fix_width_height",
    "hires_fix_use_firstpass_conds", "sdxl_crop_top", "sdxl_crop_left",
    "sdxl_refiner_low_aesthetic_score", "sdxl_refiner_high_aesthetic_score", "samples_format",
    "jpeg_quality", "webp_lossless", "face_restoration", "face_restoration_model",
    "code_former_weight", "upscaler_for_img2img", "ESRGAN_tile", "ESRGAN_tile_overlap",
    "DAT_tile", "DAT_tile_overlap", "sd_vae_overrides_per_model_preferences",
    "sd_vae_encode_method", "sd_vae_decode_method", "extra_networks_default_multiplier",
    "sd_lora", "pad_cond_uncond", "pad_cond_uncond_v0",
})


def check_settings(settings, prefix):
    refused = [key for key in settings if key not in JOB_SETTINGS]
    if refused:
        parts = []
        for key in sorted(refused, key=str):
            close = difflib.get_close_matches(str(key), JOB_SETTINGS, n=1, cutoff=0.75)
            parts.append(f"{prefix}{key}" + (f" (did you mean {close[0]}?)" if close else ""))
        raise InputError(
            f"{', '.join(parts)}: not a setting a job may change (paths, saving and server "
            f"settings are refused); a job may change: {', '.join(sorted(JOB_SETTINGS))}")
    checkpoint = settings.get("sd_model_checkpoint")
    if "sd_model_checkpoint" in settings and (not isinstance(checkpoint, str) or not checkpoint):
        raise InputError(f"{prefix}sd_model_checkpoint: must be a checkpoint name (a string)")


# --------------------------------------------------------------------------------------------
# Generation payloads.
# --------------------------------------------------------------------------------------------

COMMON_FIELDS = (
    "prompt", "negative_prompt", "styles", "seed", "subseed", "subseed_strength",
    "seed_resize_from_h", "seed_resize_from_w", "sampler_name", "scheduler", "batch_size",
    "n_iter", "steps", "cfg_scale", "width", "height", "restore_faces", "tiling",
    "do_not_save_samples", "do_not_save_grid", "eta", "denoising_strength", "s_min_uncond",
    "s_churn", "s_tmax", "s_tmin", "s_noise", "override_settings",
    "override_settings_restore_afterwards", "refiner_checkpoint", "refiner_switch_at",
    "disable_extra_networks", "firstpass_image", "comments", "sampler_index", "script_name",
    "script_args", "send_images", "save_images", "alwayson_scripts", "force_task_id",
    "infotext",
)
TXT2IMG_FIELDS = COMMON_FIELDS + (
    "enable_hr", "firstphase_width", "firstphase_height", "hr_scale", "hr_upscaler",
    "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_checkpoint_name",
    "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
)
IMG2IMG_FIELDS = COMMON_FIELDS + (
    "init_images", "resize_mode", "image_cfg_scale", "mask", "mask_blur_x", "mask_blur_y",
    "mask_blur", "mask_round", "inpainting_fill", "inpaint_full_res",
    "inpaint_full_res_padding", "inpainting_mask_invert", "initial_noise_multiplier",
    "latent_mask", "include_init_images",
)
EXTRAS_FIELDS = frozenset({
    "resize_mode", "show_extras_results", "gfpgan_visibility", "codeformer_visibility",
    "codeformer_weight", "upscaling_resize", "upscaling_resize_w", "upscaling_resize_h",
    "upscaling_crop", "upscaler_1", "upscaler_2", "extras_upscaler_2_visibility",
    "upscale_first",
})
STRING_FIELDS = ("prompt", "negative_prompt", "sampler_name", "sampler_index", "scheduler",
                 "hr_upscaler", "hr_sampler_name", "hr_scheduler", "hr_prompt",
                 "hr_negative_prompt", "hr_checkpoint_name", "refiner_checkpoint", "script_name",
                 "mask", "force_task_id", "infotext")
PROMPT_FIELDS = ("prompt", "negative_prompt", "hr_prompt", "hr_negative_prompt")
BOOL_FIELDS = ("restore_faces", "tiling", "enable_hr", "send_images", "save_images",
               "do_not_save_samples", "do_not_save_grid", "include_init_images",
               "disable_extra_networks", "override_settings_restore_afterwards", "inpaint_full_res",
               "mask_round")
OBJECT_FIELDS = ("override_settings", "alwayson_scripts", "comments")
LIST_FIELDS = ("script_args",)
# Sampler and scheduler fields, checked against the WebUI's own lists.
SAMPLER_FIELDS = ("sampler_name", "sampler_index", "hr_sampler_name")
SCHEDULER_FIELDS = ("scheduler", "hr_scheduler")
DEFAULT_MAX_PROMPT_CHARS = 20000
# 32 Mpx: 128 images of 512x512, or 8 of 2048x2048.
DEFAULT_MAX_PIXELS = 128 * 512 * 512


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


def check_generation(payload, prefix, img2img):
    """A txt2img/img2img payload: types of the fields A1111 reads, and bounds that keep a job
    inside what one worker can do and what can be returned."""
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
    if payload.get("override_settings_restore_afterwards") is False:
        errors.append(f"{prefix}override_settings_restore_afterwards: must be true (or left "
                      "out): a job's override_settings never outlive it on a shared worker")
    if img2img:
        errors.extend(check_init_images(payload, prefix))
    elif "init_images" in payload:
        errors.append(f"{prefix}init_images: txt2img takes no init_images; "
                      "send them to /sdapi/v1/img2img")
    if errors:
        raise InputError("; ".join(errors))
    overrides = payload.get("override_settings") or {}
    check_settings(overrides, f"{prefix}override_settings.")
    check_bounds(payload, prefix)


def check_bounds(payload, prefix):
    max_chars = env_number("HANDLER_MAX_PROMPT_CHARS", DEFAULT_MAX_PROMPT_CHARS, integer=True)
    for field in PROMPT_FIELDS:
        value = payload.get(field)
        if isinstance(value, str) and len(value) > max_chars:
            raise InputError(f"{prefix}{field}: {len(value)} characters, over "
                             f"HANDLER_MAX_PROMPT_CHARS={max_chars}; shorten it")
    width, height = payload.get("width", 512), payload.get("height", 512)
    if payload.get("enable_hr"):
        if payload.get("hr_resize_x") or payload.get("hr_resize_y"):
            width = payload.get("hr_resize_x") or width * payload["hr_resize_y"] // height
            height = payload.get("hr_resize_y") or height * payload["hr_resize_x"] // (
                payload.get("width", 512))
        else:
            scale = payload.get("hr_scale", 2.0)
            width, height = int(width * scale), int(height * scale)
    images = payload.get("batch_size", 1) * payload.get("n_iter", 1)
    pixels = width * height * images
    max_pixels = env_number("HANDLER_MAX_PIXELS", DEFAULT_MAX_PIXELS, integer=True)
    if pixels > max_pixels:
        raise InputError(
            f"{prefix}width x height x batch_size x n_iter: {width}x{height} x {images} image(s)"
            f" = {pixels / 1e6:.1f} Mpx, over HANDLER_MAX_PIXELS={max_pixels} "
            f"({max_pixels / 1e6:.1f} Mpx); ask for fewer or smaller images")


def check_init_images(payload, prefix):
    images = payload.get("init_images")
    if not isinstance(images, list) or not images:
        return [f"{prefix}init_images: img2img needs a non-empty list of base64-encoded images"]
    errors = []
    for index, image in enumerate(images):
        try:
            check_image(f"{prefix}init_images[{index}]", image)
        except InputError as err:
            errors.append(str(err))
    for field in ("mask", "latent_mask"):
        if payload.get(field):
            try:
                check_image(f"{prefix}{field}", payload[field])
            except InputError as err:
                errors.append(str(err))
    return errors


def check_extras(payload, images):
    for field, image in images:
        check_image(field, image)
    errors = []
    check_number(errors, payload, "upscaling_resize", 1, 8, "payload.")
    check_int(errors, payload, "upscaling_resize_w", 64, 8192, "payload.")
    check_int(errors, payload, "upscaling_resize_h", 64, 8192, "payload.")
    if errors:
        raise InputError("; ".join(errors))
    max_pixels = env_number("HANDLER_MAX_PIXELS", DEFAULT_MAX_PIXELS, integer=True)
    total = 0
    for _field, image in images:
        size = image_size(decode_image(image)) if isinstance(image, str) and not is_url(
            image) else None
        if size is None:
            continue
        if payload.get("resize_mode") == 1:
            total += payload.get("upscaling_resize_w", 512) * payload.get("upscaling_resize_h", 512)
        else:
            scale = payload.get("upscaling_resize", 2)
            total += int(size[0] * scale) * int(size[1] * scale)
    if total > max_pixels:
        raise InputError(f"payload: the upscaled image(s) would be {total / 1e6:.1f} Mpx, over "
                         f"HANDLER_MAX_PIXELS={max_pixels}; upscale less or send fewer images")


# --------------------------------------------------------------------------------------------
# Image inputs: decoded and recognised before the WebUI sees them (A1111 answers 500 for an
# image it cannot open, which would look like a broken worker).
# --------------------------------------------------------------------------------------------

IMAGE_KINDS = "PNG, JPEG, WebP, GIF, BMP or TIFF"


def is_url(text):
    return text.startswith(("http://", "https://"))


def decode_image(text):
    """The bytes of a base64 image (a data:image/...;base64, prefix and line breaks are fine,
    as A1111 reads them), or None when it is not base64."""
    if text.startswith("data:image/"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            return None
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return None


def image_kind(data):
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"BM") and len(data) > 26:
        return "bmp"
    if data.startswith((b"II*\0", b"MM\0*")):
        return "tiff"
    return None


def image_size(data):
    """(width, height) from the image's header, or None when the format keeps it elsewhere."""
    kind = image_kind(data)
    try:
        if kind == "png" and data[12:16] == b"IHDR":
            return struct.unpack(">II", data[16:24])
        if kind == "gif":
            return struct.unpack("<HH", data[6:10])
        if kind == "bmp":
            width, height = struct.unpack("<ii", data[18:26])
            return width, abs(height)
        if kind == "webp":
            chunk = data[12:16]
            if chunk == b"VP8X":
                return (int.from_bytes(data[24:27], "little") + 1,
                        int.from_bytes(data[27:30], "little") + 1)
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 ":
                width, height = struct.unpack("<HH", data[26:30])
                return width & 0x3FFF, height & 0x3FFF
        if kind == "jpeg":
            pos = 2
            while pos + 9 < len(data):
                if data[pos] != 0xFF:
                    return None
                marker = data[pos + 1]
                length = int.from_bytes(data[pos + 2:pos + 4], "big")
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
                    return width, height
                pos += 2 + length
    except struct.error:
        return None
    return None


def check_image(field, value):
    if not isinstance(value, str) or not value:
        raise InputError(f"{field}: must be a base64-encoded image string")
    if is_url(value):
        if os.environ.get("HANDLER_ALLOW_IMAGE_URLS") == "1":
            return
        raise InputError(f"{field}: image URLs are refused (set HANDLER_ALLOW_IMAGE_URLS=1 on "
                         "the worker to allow them); send the image as base64")
    data = decode_image(value)
    if data is None:
        raise InputError(f"{field}: is not valid base64 (a data:image/...;base64, prefix is fine)")
    if image_kind(data) is None:
        raise InputError(f"{field}: is base64 but not an image ({IMAGE_KINDS} expected)")
