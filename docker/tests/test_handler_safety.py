"""docker/handler.py against hostile or careless jobs: no job may recycle, reconfigure or silently
lose the worker, and outputs of any size reach the caller (or a clear error does)."""

import asyncio
import base64
import json
import os
import time

import pytest
from conftest import HANDLER, free_port, load_module, png_b64, start_demo

handler = load_module("worker_handler_safety", HANDLER)

SMALL = {"steps": 1, "width": 64, "height": 64}
TXT2IMG_OK = {"images": [], "parameters": {}, "info": "{}"}


def run(job_input, job_id="t"):
    return asyncio.run(handler.handler({"id": job_id, "input": job_input}))


def api(method, endpoint, payload=None):
    job = {"api": {"method": method, "endpoint": endpoint}}
    if payload is not None:
        job["payload"] = payload
    return job


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("HANDLER_RESULT_DIR", "HANDLER_ALLOW_IMAGE_URLS", "HANDLER_MAX_OUTPUT_MB",
                 "HANDLER_MAX_PIXELS", "HANDLER_MAX_PROMPT_CHARS", "HANDLER_REQUEST_TIMEOUT",
                 "BUCKET_ENDPOINT_URL", "BUCKET_ACCESS_KEY_ID", "BUCKET_SECRET_ACCESS_KEY",
                 "BUCKET_NAME"):
        monkeypatch.delenv(name, raising=False)
    # Lists cached from another test's WebUI must not answer for this one's.
    handler._cache.clear()


@pytest.fixture
def demo_env(monkeypatch, spawn):
    def start(**kwargs):
        demo = start_demo(spawn, **kwargs)
        monkeypatch.setenv("WEBUI_API_URL", demo.url)
        return demo
    return start


@pytest.fixture
def no_webui(monkeypatch):
    # Nothing listens here: a call to the WebUI would come back as refresh_worker.
    monkeypatch.setenv("WEBUI_API_URL", f"http://127.0.0.1:{free_port()}")


# ---- a WebUI 500 is the job's failure unless the worker is really broken --------------------


def test_a_500_from_a_healthy_webui_fails_only_the_job(monkeypatch, fake_server):
    def answer(method, path, body):
        if path == "/sdapi/v1/txt2img" and body.get("prompt") == "boom":
            return 500, {"error": "ValueError", "detail": "", "body": "", "errors": "boom"}, {}
        return 200, TXT2IMG_OK, {}

    webui = fake_server(answer)
    monkeypatch.setenv("WEBUI_API_URL", webui.url)
    result = run(dict(SMALL, prompt="boom"))
    assert result == {"error": "webui: POST /sdapi/v1/txt2img answered 500: boom"}
    # The health check ran: a 64x64 one-step txt2img that saves nothing.
    probe = webui.requests[-1]
    assert probe[:2] == ("POST", "/sdapi/v1/txt2img")
    assert probe[2]["width"] == 64 and probe[2]["steps"] == 1 and probe[2]["save_images"] is False


@pytest.mark.parametrize("message", [
    "CUDA out of memory. Tried to allocate 2.00 GiB",
    "torch.cuda.OutOfMemoryError: CUDA error: an illegal memory access was encountered",
    "RuntimeError: CUDA error: device-side assert triggered",
])
def test_cuda_errors_refresh_the_worker_even_if_it_still_answers(monkeypatch, fake_server,
                                                                  message):
    def answer(method, path, body):
        if body.get("prompt") == "boom":
            return 500, {"error": "RuntimeError", "detail": "", "body": "", "errors": message}, {}
        return 200, TXT2IMG_OK, {}

    monkeypatch.setenv("WEBUI_API_URL", fake_server(answer).url)
    result = run(dict(SMALL, prompt="boom"))
    assert result == {"error": f"webui: POST /sdapi/v1/txt2img answered 500: {message}",
                      "refresh_worker": True}


def test_a1111_500s_for_bad_input_never_reach_the_webui(no_webui):
    not_an_image = base64.b64encode(b"not an image at all").decode()
    cases = [
        (api("POST", "/sdapi/v1/img2img", {"init_images": [not_an_image]}),
         "payload.init_images[0]: is base64 but not an image (PNG, JPEG, WebP, GIF, BMP or "
         "TIFF expected)"),
        (api("POST", "/sdapi/v1/img2img",
             {"init_images": ["data:application/octet-stream;base64," + png_b64()]}),
         "payload.init_images[0]: is not valid base64 (a data:image/...;base64, prefix is fine)"),
        (api("POST", "/sdapi/v1/img2img", {"init_images": [png_b64()], "mask": not_an_image}),
         "payload.mask: is base64 but not an image"),
        (api("POST", "/sdapi/v1/img2img", {"init_images": ["http://169.254.169.254/x.png"]}),
         "payload.init_images[0]: image URLs are refused (set HANDLER_ALLOW_IMAGE_URLS=1 on the "
         "worker to allow them); send the image as base64"),
        (api("POST", "/sdapi/v1/options", {"no_such_key": 1}),
         "payload.no_such_key: not a setting a job may change"),
        (api("POST", "/sdapi/v1/png-info", {"image": not_an_image}),
         "payload.image: is base64 but not an image"),
        (api("POST", "/sdapi/v1/extra-single-image", {"image": "%%%"}),
         "payload.image: is not valid base64"),
        (api("POST", "/sdapi/v1/extra-batch-images",
             {"imageList": [{"data": not_an_image, "name": "a.png"}]}),
         "payload.imageList[0].data: is base64 but not an image"),
        (api("POST", "/sdapi/v1/interrogate", {"image": png_b64(), "model": "blip"}),
         "payload.model: must be \"clip\" or \"deepdanbooru\""),
    ]
    for job, message in cases:
        result = run(job)
        assert set(result) == {"error"}, (job, result)
        assert message in result["error"], (message, result)


def test_image_inputs_pass_as_data_urls_and_mime_wrapped_base64(demo_env):
    demo_env()
    image = png_b64(16, 16)
    wrapped = "\n".join(image[i:i + 76] for i in range(0, len(image), 76))
    for init in ("data:image/png;base64," + image, wrapped):
        result = run(api("POST", "/sdapi/v1/img2img", dict(SMALL, init_images=[init])))
        assert len(result["images"]) == 1, result


def test_image_urls_reach_the_webui_only_when_allowed(demo_env, monkeypatch):
    demo_env()
    monkeypatch.setenv("HANDLER_ALLOW_IMAGE_URLS", "1")
    result = run(api("POST", "/sdapi/v1/img2img",
                     dict(SMALL, init_images=["http://127.0.0.1:9/cat.png"])))
    # A1111 refuses them itself with a 500; the WebUI is healthy, so the worker stays.
    assert result == {"error": "webui: POST /sdapi/v1/img2img answered 500: Requests not allowed"}


# ---- outputs of any size reach the caller --------------------------------------------------


def test_an_answer_over_handler_max_output_mb_is_a_clear_error(demo_env, monkeypatch):
    demo_env()
    monkeypatch.setenv("HANDLER_MAX_OUTPUT_MB", "0.05")
    result = run(dict(SMALL, width=256, height=256, batch_size=4, prompt="big"))
    assert set(result) == {"error"}
    error = result["error"]
    assert error.startswith("output: the result is 0.") and "over HANDLER_MAX_OUTPUT_MB=0.05" \
        in error
    assert "configure a bucket (BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID, " \
           "BUCKET_SECRET_ACCESS_KEY, BUCKET_NAME)" in error


def test_the_default_limit_fits_runpods_run_endpoint(monkeypatch, fake_server):
    # Real checkpoints make noisy images that compress badly: 4 of them can pass 10 MB.
    noisy = base64.b64encode(b"\x89PNG\r\n\x1a\n" + os.urandom(2_600_000)).decode()
    answer = {"images": [noisy] * 4, "parameters": {}, "info": "{}"}
    monkeypatch.setenv("WEBUI_API_URL", fake_server(lambda m, p, b: (200, answer, {})).url)
    result = run(dict(SMALL, batch_size=4))
    assert result["error"].startswith("output: the result is 13.9 MB, over "
                                      "HANDLER_MAX_OUTPUT_MB=9 (RunPod drops results over 10 MB "
                                      "on /run, 20 MB on /runsync); ")


def test_a_half_configured_bucket_is_named(demo_env, monkeypatch):
    demo_env()
    monkeypatch.setenv("BUCKET_ENDPOINT_URL", "http://127.0.0.1:9")
    result = run(SMALL)
    assert result == {"error": "bucket: BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY, "
                               "BUCKET_NAME not set; set all of BUCKET_ENDPOINT_URL, "
                               "BUCKET_ACCESS_KEY_ID, BUCKET_SECRET_ACCESS_KEY, BUCKET_NAME to "
                               "upload images, or none of them"}


@pytest.mark.parametrize("job, message", [
    (dict(SMALL, prompt="x" * 20001),
     "prompt: 20001 characters, over HANDLER_MAX_PROMPT_CHARS=20000; shorten it"),
    (dict(SMALL, negative_prompt="x" * 20001), "negative_prompt: 20001 characters"),
    (dict(SMALL, width=2048, height=2048, batch_size=8, n_iter=16),
     "width x height x batch_size x n_iter: 2048x2048 x 128 image(s) = 536.9 Mpx, over "
     "HANDLER_MAX_PIXELS=33554432 (33.6 Mpx); ask for fewer or smaller images"),
    (dict(SMALL, width=1024, height=1024, enable_hr=True, hr_scale=2, batch_size=8, n_iter=2),
     "2048x2048 x 16 image(s)"),
])
def test_bounds_are_checked_before_the_webui_is_called(no_webui, job, message):
    result = run(job)
    assert set(result) == {"error"} and message in result["error"], result


def test_bounds_follow_their_settings(no_webui, monkeypatch):
    monkeypatch.setenv("HANDLER_MAX_PROMPT_CHARS", "10")
    assert "over HANDLER_MAX_PROMPT_CHARS=10" in run(dict(SMALL, prompt="a" * 11))["error"]
    monkeypatch.setenv("HANDLER_MAX_PIXELS", "4096")
    assert "over HANDLER_MAX_PIXELS=4096" in run(dict(SMALL, batch_size=2))["error"]


# ---- no proxy, no redirect, one deadline ---------------------------------------------------


def test_proxy_settings_never_carry_webui_calls(demo_env, monkeypatch, fake_server):
    demo_env()
    proxy = fake_server()
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    result = run(dict(SMALL, prompt="private"))
    assert len(result["images"]) == 1
    assert proxy.requests == []


def test_redirects_are_not_followed(monkeypatch, fake_server):
    elsewhere = fake_server()
    webui = fake_server(lambda method, path, body: (
        302, b"", {"Location": f"{elsewhere.url}/latest/meta-data/"}))
    monkeypatch.setenv("WEBUI_API_URL", webui.url)
    result = run(api("GET", "/sdapi/v1/memory"))
    assert result == {"error": f"webui: GET /sdapi/v1/memory answered 302, a redirect to "
                               f"{elsewhere.url}/latest/meta-data/; redirects are not followed"}
    assert elsewhere.requests == []


def test_a_webui_dripping_bytes_cannot_hold_a_job_past_the_deadline(monkeypatch, fake_server):
    def drip(request):
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", "1000000")
        request.end_headers()
        try:
            while True:  # one byte every 0.2 s: every read is quick, the answer never ends
                request.wfile.write(b" ")
                request.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass

    monkeypatch.setenv("WEBUI_API_URL", fake_server(lambda m, p, b: drip).url)
    monkeypatch.setenv("HANDLER_REQUEST_TIMEOUT", "1")
    result = run(api("GET", "/sdapi/v1/memory"))
    assert result == {"error": "webui: GET /sdapi/v1/memory did not answer within 1s "
                               "(HANDLER_REQUEST_TIMEOUT)", "refresh_worker": True}


# ---- settings: an allow-list, and overrides that do not outlive their job --------------------


@pytest.mark.parametrize("job, message", [
    (api("POST", "/sdapi/v1/options", {"outdir_txt2img_samples": "/runpod-volume"}),
     "payload.outdir_txt2img_samples: not a setting a job may change (paths, saving and server "
     "settings are refused); a job may change: CLIP_stop_at_last_layers, "),
    (api("POST", "/sdapi/v1/options", {"temp_dir": "/"}), "payload.temp_dir: not a setting"),
    (api("POST", "/sdapi/v1/options", {"samples_filename_pattern": "../../x"}),
     "payload.samples_filename_pattern: not a setting"),
    (api("POST", "/sdapi/v1/options", {"api_enable_requests": True}),
     "payload.api_enable_requests: not a setting"),
    (dict(SMALL, override_settings={"outdir_samples": "/runpod-volume"}),
     "override_settings.outdir_samples: not a setting a job may change"),
    (dict(SMALL, override_settings={"CLIP_stop_at_last_layer": 2}),
     "override_settings.CLIP_stop_at_last_layer (did you mean CLIP_stop_at_last_layers?)"),
    (dict(SMALL, override_settings={"CLIP_stop_at_last_layers": 2},
          override_settings_restore_afterwards=False),
     "override_settings_restore_afterwards: must be true (or left out)"),
])
def test_path_and_server_settings_are_refused(no_webui, job, message):
    result = run(job)
    assert set(result) == {"error"} and message in result["error"], result


def test_override_settings_do_not_outlive_their_job(demo_env):
    # A fresh WebUI: A1111 itself would keep the override for every later job.
    demo_env()
    result = run(dict(SMALL, override_settings={"CLIP_stop_at_last_layers": 2}))
    assert result["info"]["clip_skip"] == 2
    assert run(api("GET", "/sdapi/v1/options"))["CLIP_stop_at_last_layers"] == 1
    assert run(SMALL)["info"]["clip_skip"] == 1


def test_override_settings_are_restored_after_a_failed_job_too(monkeypatch, fake_server):
    # A WebUI that applies the override, then fails the generation (a NaN, say) and restores
    # nothing, as A1111 does for keys not in its config.json.
    settings = {"CLIP_stop_at_last_layers": 1}

    def answer(method, path, body):
        if path == "/sdapi/v1/options":
            if method == "POST":
                settings.update(body)
                return 200, None, {}
            return 200, settings, {}
        if body.get("override_settings"):
            settings.update(body["override_settings"])
            return 500, {"error": "NansException", "detail": "", "body": "",
                         "errors": "A tensor with NaNs was produced in Unet"}, {}
        return 200, TXT2IMG_OK, {}

    monkeypatch.setenv("WEBUI_API_URL", fake_server(answer).url)
    result = run(dict(SMALL, override_settings={"CLIP_stop_at_last_layers": 2}))
    assert result == {"error": "webui: POST /sdapi/v1/txt2img answered 500: A tensor with NaNs "
                               "was produced in Unet"}
    assert settings == {"CLIP_stop_at_last_layers": 1}


@pytest.fixture
def two_checkpoints(tmp_path, demo_env):
    for name in ("good.safetensors", "broken.safetensors"):
        (tmp_path / name).write_bytes(b"demo")
    return demo_env(args=["--ckpt-dir", str(tmp_path), "--ckpt",
                          str(tmp_path / "good.safetensors")],
                    env={"DEMO_WEBUI_BROKEN_CHECKPOINTS": "broken.safetensors"})


def test_a_failed_checkpoint_switch_fails_the_job(two_checkpoints):
    result = run(api("POST", "/sdapi/v1/options", {"sd_model_checkpoint": "broken"}))
    assert result == {"error": "payload.sd_model_checkpoint: the WebUI did not switch to "
                               "'broken'; it still uses 'good.safetensors' (loading the "
                               "checkpoint failed inside the WebUI; its log says why)"}
    result = run(dict(SMALL, override_settings={"sd_model_checkpoint": "broken"}))
    assert result == {"error": "override_settings.sd_model_checkpoint: the images were made "
                               "with 'good', not 'broken' (loading the checkpoint failed inside "
                               "the WebUI; its log says why)"}
    result = run(dict(SMALL, override_settings={"sd_model_checkpoint": "good"}))
    assert result["info"]["sd_model_name"] == "good"


# ---- samplers and schedulers ----------------------------------------------------------------


def test_unknown_sampler_or_scheduler_is_refused_with_the_valid_names(demo_env):
    demo_env()
    error = run(dict(SMALL, sampler_name="Euler A"))["error"]
    assert error.startswith("sampler_name: 'Euler A' is not a sampler of this WebUI (did you "
                            "mean Euler a?); valid: DPM++ 2M, DPM++ SDE, ")
    error = run(dict(SMALL, sampler_name="Euler", scheduler="karas"))["error"]
    assert error.startswith("scheduler: 'karas' is not a scheduler of this WebUI (did you mean "
                            "Karras?); valid: Automatic, Uniform, Karras")
    error = run(dict(SMALL, enable_hr=True, hr_sampler_name="Nope"))["error"]
    assert error.startswith("hr_sampler_name: 'Nope' is not a sampler")
    for good in ({"sampler_name": "DPM++ 2M Karras"}, {"sampler_name": "k_euler_a"},
                 {"sampler_name": "Euler", "scheduler": "karras"},
                 {"enable_hr": True, "hr_scale": 1, "hr_sampler_name": "Use same sampler",
                  "hr_scheduler": "Use same scheduler"}):
        result = run(dict(SMALL, **good))
        assert "error" not in result and len(result["images"]) == 1, (good, result)


# ---- every job answers an object; unknown input is named ------------------------------------


@pytest.mark.parametrize("job_input, message", [
    ({}, 'input: is empty; a txt2img job needs at least a prompt, e.g. {"prompt": '),
    ({"promt": "a cat"}, "unknown field input.promt (did you mean prompt?): a txt2img job "
                         "takes A1111's txt2img fields"),
    ({"prompt": "a cat", "stpes": 20, "widht": 512},
     "unknown fields input.stpes (did you mean steps?), input.widht (did you mean width?)"),
    (api("POST", "/sdapi/v1/txt2img", {"prompt": "a", "negativ_prompt": "b"}),
     "unknown field payload.negativ_prompt (did you mean negative_prompt?)"),
    (api("POST", "/sdapi/v1/img2img", {"init_images": [png_b64()], "denoise": 0.5}),
     "unknown field payload.denoise"),
])
def test_unknown_input_is_named_with_the_closest_field(no_webui, job_input, message):
    result = run(job_input)
    assert set(result) == {"error"} and message in result["error"], result


# ---- secrets and image data -------------------------------------------------------------------


def test_errors_returned_to_the_caller_are_redacted(monkeypatch, fake_server):
    monkeypatch.setenv("RUNPOD_AI_API_KEY", "rpa_SECRETSECRET")
    monkeypatch.setenv("BUCKET_SECRET_ACCESS_KEY", "bucket-SECRET-value")
    blob = base64.b64encode(os.urandom(600)).decode()
    detail = f"bad request rpa_SECRETSECRET bucket-SECRET-value {blob}"
    webui = fake_server(lambda m, p, b: (
        400, {"error": "HTTPException", "detail": detail, "body": "", "errors": ""}, {}))
    monkeypatch.setenv("WEBUI_API_URL", webui.url)
    error = run(api("GET", "/sdapi/v1/memory"))["error"]
    assert error == ("webui: GET /sdapi/v1/memory answered 400: bad request "
                     "<RUNPOD_AI_API_KEY> <BUCKET_SECRET_ACCESS_KEY> <800 base64 chars>")


def test_mime_wrapped_base64_is_redacted(monkeypatch):
    image = base64.encodebytes(os.urandom(3000)).decode()  # 76-column lines
    for text in (f"init: {image} end", f"init: {image!r} end", repr({"init_images": [image]})):
        out = handler.redact(text)
        assert "base64 chars>" in out and image.splitlines()[3] not in out, out


def test_runpod_debug_lines_carry_no_wrapped_base64(capsys):
    from runpod.serverless.modules.rp_logger import RunPodLogger

    image = base64.encodebytes(os.urandom(3000)).decode()
    logger = RunPodLogger()
    level = logger.level
    logger.level = "DEBUG"
    try:
        logger.debug(f"Handler output: {{'input': {{'init_images': [{image!r}]}}}}")
    finally:
        logger.level = level
    out = capsys.readouterr().out
    assert "Handler output" in out and image.splitlines()[2] not in out


# ---- endpoints: A1111's harmless ones, and installed extensions' -----------------------------


def test_extension_routes_follow_the_same_rules(demo_env):
    demo_env(env={"DEMO_WEBUI_CONTROLNET": "1"})
    assert run(api("GET", "/controlnet/model_list")) == {"model_list": []}
    assert run(api("GET", "/controlnet/version")) == {"version": 2}
    result = run(api("POST", "/controlnet/detect", {"controlnet_module": "canny"}))
    assert result["error"].startswith("api.endpoint: POST /controlnet/detect is refused: an "
                                      "extension's POST may change the WebUI for later jobs")
    result = run(api("GET", "/controlnet/nothing"))
    assert result["error"].startswith("api.endpoint: '/controlnet/nothing' is not a route the "
                                      "WebUI serves")
    assert "refresh_worker" not in result


def test_png_info_with_a_real_image(demo_env):
    demo_env()
    image = run(dict(SMALL, prompt="tea", seed=9))["images"][0]
    result = run(api("POST", "/sdapi/v1/png-info", {"image": image}))
    assert result["parameters"]["Prompt"] == "tea"


def test_every_result_saved_is_what_the_caller_gets(demo_env, monkeypatch, tmp_path):
    demo_env()
    monkeypatch.setenv("HANDLER_RESULT_DIR", str(tmp_path))
    result = run(api("POST", "/sdapi/v1/refresh-checkpoints"), job_id="r")
    assert result == {"ok": True}
    assert json.loads((tmp_path / "r.json").read_text()) == {"ok": True}


def test_a_worker_that_cannot_restore_overridden_settings_is_replaced(monkeypatch, fake_server):
    settings = {"CLIP_stop_at_last_layers": 1}

    def answer(method, path, body):
        if path == "/sdapi/v1/options":
            if method == "POST":
                return 403, {"detail": "settings are frozen"}, {}
            return 200, settings, {}
        settings.update(body.get("override_settings") or {})
        return 200, TXT2IMG_OK, {}

    monkeypatch.setenv("WEBUI_API_URL", fake_server(answer).url)
    result = run(dict(SMALL, override_settings={"CLIP_stop_at_last_layers": 2}))
    assert result == {"error": "could not restore the settings the job overrode "
                               "(CLIP_stop_at_last_layers): webui: POST /sdapi/v1/options "
                               "answered 403: settings are frozen", "refresh_worker": True}
