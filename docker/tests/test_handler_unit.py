"""docker/handler.py in-process: validation, WebUI error mapping, readiness gate, log hygiene."""

import asyncio
import base64
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest
from conftest import (HANDLER, decode_png_b64, free_port, load_module, serve_on_loopback,
                      start_demo)

handler = load_module("worker_handler", HANDLER)

SMALL = {"steps": 1, "width": 64, "height": 64}
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def run(job_input, job_id="t"):
    return asyncio.run(handler.handler({"id": job_id, "input": job_input}))


@pytest.fixture
def webui_env(monkeypatch, shared_demo):
    monkeypatch.setenv("WEBUI_API_URL", shared_demo.url)
    monkeypatch.delenv("HANDLER_RESULT_DIR", raising=False)
    return shared_demo


# ---- validation: each rejection names the field, and nothing reaches the WebUI --------------


@pytest.mark.parametrize("job_input, message", [
    ("a cat", "input: must be a JSON object"),
    ([1, 2], "input: must be a JSON object"),
    ({"steps": 0}, "steps: must be an integer from 1 to 150, got 0"),
    ({"steps": 151}, "steps: must be an integer from 1 to 150, got 151"),
    ({"steps": 20.5}, "steps: must be an integer"),
    ({"steps": True}, "steps: must be an integer"),
    ({"steps": "20"}, "steps: must be an integer"),
    ({"width": 100}, "width: must be an integer from 64 to 2048, a multiple of 8, got 100"),
    ({"width": 2056}, "width: must be an integer from 64 to 2048"),
    ({"height": 56}, "height: must be an integer from 64 to 2048"),
    ({"batch_size": 9}, "batch_size: must be an integer from 1 to 8"),
    ({"batch_size": 0}, "batch_size: must be an integer from 1 to 8"),
    ({"n_iter": 17}, "n_iter: must be an integer from 1 to 16"),
    ({"cfg_scale": 0.5}, "cfg_scale: must be a number from 1 to 30"),
    ({"cfg_scale": "7"}, "cfg_scale: must be a number from 1 to 30"),
    ({"seed": -2}, "seed: must be an integer from -1 to 4294967295"),
    ({"denoising_strength": 1.5}, "denoising_strength: must be a number from 0 to 1"),
    ({"hr_scale": 5}, "hr_scale: must be a number from 1 to 4"),
    ({"hr_resize_x": 100}, "hr_resize_x: must be an integer from 64 to 2048, a multiple of 8 "
                           "(or 0 for unset)"),
    ({"prompt": 5}, "prompt: must be a string, got 5"),
    ({"enable_hr": "yes"}, "enable_hr: must be true or false"),
    ({"override_settings": []}, "override_settings: must be an object"),
    ({"styles": "a"}, "styles: must be a list of style names"),
    ({"init_images": [PNG_B64]}, "init_images: txt2img takes no init_images"),
    ({"api": "txt2img"}, "api: must be an object"),
    ({"api": {"method": "PUT", "endpoint": "/sdapi/v1/txt2img"}},
     "api.method: must be GET or POST, got 'PUT'"),
    ({"api": {"method": "POST"}}, "api.endpoint: must be a path like \"/sdapi/v1/txt2img\""),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/unload-checkpoint"}},
     "api.endpoint: POST /sdapi/v1/unload-checkpoint is refused: it changes the WebUI for every "
     "later job"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/reload-checkpoint"}}, "is refused"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/server-kill"}}, "is refused"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/server-restart"}}, "is refused"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/train/embedding"}}, "is refused"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/create/hypernetwork"}}, "is refused"),
    ({"api": {"method": "GET", "endpoint": "/internal/ping"}}, "is not allowed"),
    ({"api": {"method": "GET", "endpoint": "/openapi.json"}}, "is not allowed"),
    ({"api": {"method": "GET", "endpoint": "/sdapi/v1/../internal/ping"}}, "must be a plain path"),
    ({"api": {"method": "GET", "endpoint": "/sdapi/v1/options?x=1"}}, "must be a plain path"),
    ({"api": {"method": "GET", "endpoint": "/sdapi/v1/txt2img"}},
     "api.method: /sdapi/v1/txt2img takes POST, not GET"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/sd-models"}},
     "api.method: /sdapi/v1/sd-models takes GET, not POST"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img", "timeout": 5}},
     "unknown field api.timeout: api takes \"method\" and \"endpoint\""),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"}, "paylod": {}},
     "unknown field input.paylod (did you mean payload?)"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"}, "payload": [1]},
     "payload: must be an object"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/txt2img"}, "payload": {"steps": 0}},
     "payload.steps: must be an integer from 1 to 150"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"}, "payload": {"steps": 1}},
     "payload.init_images: img2img needs a non-empty list of base64-encoded images"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
      "payload": {"init_images": ["%%%not base64"]}},
     "payload.init_images[0]: is not valid base64"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
      "payload": {"init_images": [7]}},
     "payload.init_images[0]: must be a base64-encoded image string"),
    ({"api": {"method": "GET", "endpoint": "/sdapi/v1/samplers"}, "payload": {"x": 1}},
     "payload: GET /sdapi/v1/samplers takes no payload, got keys x"),
    ({"api": {"method": "GET", "endpoint": "/sdapi/v1/progress"}, "payload": {"x": 1}},
     "unknown field payload.x: not a field of A1111's progress"),
    ({"api": {"method": "GET", "endpoint": "/sdapi/v1/progress"},
      "payload": {"skip_current_image": "yes"}},
     "payload.skip_current_image: must be true or false"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/options"}},
     "payload: POST /sdapi/v1/options needs the settings to change"),
    ({"api": {"method": "POST", "endpoint": "/sdapi/v1/options"},
      "payload": {"sd_model_checkpoint": 3}},
     "payload.sd_model_checkpoint: must be a checkpoint name"),
])
def test_invalid_input_is_rejected_before_calling_the_webui(monkeypatch, job_input, message):
    # Nothing listens here: a call to the WebUI would come back as refresh_worker.
    monkeypatch.setenv("WEBUI_API_URL", f"http://127.0.0.1:{free_port()}")
    result = run(job_input)
    assert set(result) == {"error"}, result
    assert message in result["error"]


def test_all_field_errors_are_reported_at_once(monkeypatch):
    monkeypatch.setenv("WEBUI_API_URL", f"http://127.0.0.1:{free_port()}")
    error = run({"steps": 0, "width": 7})["error"]
    assert error.startswith("steps: ") and "; width: " in error


def test_long_bad_values_are_shortened_in_errors(monkeypatch):
    monkeypatch.setenv("WEBUI_API_URL", f"http://127.0.0.1:{free_port()}")
    error = run({"prompt": ["x" * 5000]})["error"]
    assert len(error) < 120


# ---- valid input reaches the WebUI; answers come back with info parsed ----------------------


def test_form_a_txt2img(webui_env):
    result = run(dict(SMALL, prompt="a boat", seed=11, batch_size=2))
    assert isinstance(result["info"], dict)
    assert result["info"]["all_seeds"] == [11, 12]
    assert [decode_png_b64(i)[:2] for i in result["images"]] == [(64, 64), (64, 64)]
    assert result["parameters"]["prompt"] == "a boat"


def test_form_b_txt2img_and_img2img(webui_env):
    api = {"method": "post", "endpoint": "/sdapi/v1/txt2img/"}
    first = run({"api": api, "payload": dict(SMALL, seed=5)})
    assert first["info"]["seed"] == 5
    api = {"method": "POST", "endpoint": "/sdapi/v1/img2img"}
    init = "data:image/png;base64," + first["images"][0]
    second = run({"api": api, "payload": dict(SMALL, init_images=[init], width=128)})
    assert decode_png_b64(second["images"][0])[:2] == (128, 64)
    assert isinstance(second["info"], dict)


@pytest.mark.parametrize("method, name, check", [
    ("GET", "sd-models", lambda r: isinstance(r, list)),
    ("GET", "samplers", lambda r: "Euler a" in [s["name"] for s in r]),
    ("GET", "schedulers", lambda r: "Karras" in [s["label"] for s in r]),
    ("GET", "loras", lambda r: r == []),
    ("GET", "embeddings", lambda r: set(r) == {"loaded", "skipped"}),
    ("GET", "progress", lambda r: r["progress"] == 0),
    ("GET", "memory", lambda r: "ram" in r),
    ("GET", "options", lambda r: r["samples_format"] == "png"),
    ("GET", "upscalers", lambda r: "Lanczos" in [u["name"] for u in r]),
    ("GET", "sd-vae", lambda r: r == []),
    ("GET", "scripts", lambda r: "x/y/z plot" in r["txt2img"]),
    ("GET", "script-info", lambda r: r == []),
    ("GET", "extensions", lambda r: r == []),
    ("GET", "face-restorers", lambda r: "GFPGAN" in [f["name"] for f in r]),
    ("GET", "hypernetworks", lambda r: r == []),
    ("GET", "latent-upscale-modes", lambda r: "Latent" in [m["name"] for m in r]),
    ("GET", "prompt-styles", lambda r: r == []),
    ("GET", "realesrgan-models", lambda r: r == []),
    ("GET", "cmd-flags", lambda r: r["nowebui"] is True),
    # A1111 answers null or {}: runpod would end the job with no output at all.
    ("POST", "interrupt", lambda r: r == {"ok": True}),
    ("POST", "skip", lambda r: r == {"ok": True}),
    ("POST", "refresh-checkpoints", lambda r: r == {"ok": True}),
    ("POST", "refresh-vae", lambda r: r == {"ok": True}),
    ("POST", "refresh-loras", lambda r: r == {"ok": True}),
    ("POST", "refresh-embeddings", lambda r: r == {"ok": True}),
])
def test_form_b_every_allowed_endpoint(webui_env, method, name, check):
    result = run({"api": {"method": method, "endpoint": f"/sdapi/v1/{name}"}})
    assert check(result), result


def test_form_b_progress_takes_its_query_parameter(webui_env):
    api = {"method": "GET", "endpoint": "/sdapi/v1/progress"}
    assert run({"api": api, "payload": {"skip_current_image": True}})["progress"] == 0


def test_options_post_and_checkpoint_names_are_checked(monkeypatch, spawn, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"demo")
    demo = start_demo(spawn, args=["--ckpt", str(tmp_path / "model.safetensors")])
    monkeypatch.setenv("WEBUI_API_URL", demo.url)
    api = {"method": "POST", "endpoint": "/sdapi/v1/options"}
    assert run({"api": api, "payload": {"CLIP_stop_at_last_layers": 2}}) == {
        "ok": True, "options": {"CLIP_stop_at_last_layers": 2}}
    assert run({"api": api, "payload": {"sd_model_checkpoint": "model"}}) == {
        "ok": True, "options": {"sd_model_checkpoint": "model.safetensors"}}
    # A1111 answers 500 here, which would cost the worker: the handler asks sd-models first.
    result = run({"api": api, "payload": {"sd_model_checkpoint": "missing.safetensors"}})
    assert result == {"error": "payload.sd_model_checkpoint: 'missing.safetensors' is not a "
                               "checkpoint the WebUI knows; GET /sdapi/v1/sd-models lists them "
                               "(after adding files, POST /sdapi/v1/refresh-checkpoints)"}
    result = run(dict(SMALL, override_settings={"sd_model_checkpoint": "missing"}))
    assert result["error"].startswith("override_settings.sd_model_checkpoint: 'missing' is not")
    assert "images" in run(dict(SMALL, override_settings={"sd_model_checkpoint":
                                                          "model.safetensors"}))


# ---- WebUI errors ------------------------------------------------------------------------------


def test_webui_4xx_carries_a1111_detail_and_keeps_the_worker(monkeypatch, spawn):
    demo = start_demo(spawn)
    monkeypatch.setenv("WEBUI_API_URL", demo.url)
    api = {"method": "POST", "endpoint": "/sdapi/v1/txt2img"}
    result = run({"api": api, "payload": dict(SMALL, script_name="nope")})
    assert result == {"error": "webui: POST /sdapi/v1/txt2img answered 422: "
                               "Script 'nope' not found"}


def test_webui_422_lists_the_fields(webui_env):
    # eta is a field the handler passes through; the WebUI's model rejects the type.
    result = run(dict(SMALL, eta="fast"))
    assert result == {"error": "webui: POST /sdapi/v1/txt2img answered 422: "
                               "eta: value is not a valid float"}


def test_webui_5xx_refreshes_the_worker(monkeypatch, spawn):
    demo = start_demo(spawn, env={"DEMO_WEBUI_FAIL_MODEL_LOAD": "1"})
    monkeypatch.setenv("WEBUI_API_URL", demo.url)
    result = run(SMALL)
    assert result["refresh_worker"] is True
    assert result["error"].startswith("webui: POST /sdapi/v1/txt2img answered 500: ")
    assert "model load failed" in result["error"]


def test_refused_connection_refreshes_the_worker(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("WEBUI_API_URL", url)
    result = run(SMALL)
    assert result == {"error": f"webui: cannot reach {url} for POST /sdapi/v1/txt2img: "
                               "connection refused", "refresh_worker": True}


class _Server:
    """A local HTTP server answering with a fixed status and body, after an optional delay."""

    def __init__(self, status=200, body=b"{}", delay=0.0, content_type="application/json"):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self._answer()

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._answer()

            def _answer(self):
                time.sleep(outer.delay)
                self.send_response(outer.status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(outer.body)))
                self.end_headers()
                self.wfile.write(outer.body)

            def log_message(self, *args):
                pass

        self.status, self.body, self.delay = status, body, delay
        self.server, self.url = serve_on_loopback(Handler)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_webui(monkeypatch):
    servers = []

    def make(**kwargs):
        server = _Server(**kwargs)
        servers.append(server)
        monkeypatch.setenv("WEBUI_API_URL", server.url)
        return server

    yield make
    for server in servers:
        server.close()


def test_timeout_refreshes_the_worker(monkeypatch, fake_webui):
    fake_webui(delay=3)
    monkeypatch.setenv("HANDLER_REQUEST_TIMEOUT", "0.3")
    started = time.monotonic()
    result = run(SMALL)
    assert time.monotonic() - started < 2.5
    assert result == {"error": "webui: POST /sdapi/v1/txt2img did not answer within 0.3s "
                               "(HANDLER_REQUEST_TIMEOUT)", "refresh_worker": True}


def test_5xx_without_json_and_2xx_without_json(fake_webui):
    # Every answer is a 502, the health check's too: the worker is broken.
    fake_webui(status=502, body=b"<html>Bad Gateway</html>", content_type="text/html")
    result = run(SMALL)
    assert result == {"error": "webui: POST /sdapi/v1/txt2img answered 502: "
                               "<html>Bad Gateway</html>; then the health check (a 64x64 "
                               "1-step txt2img) failed: answered 502: <html>Bad Gateway</html>",
                      "refresh_worker": True}
    fake_webui(status=200, body=b"not json", content_type="text/plain")
    result = run(SMALL)
    assert result["refresh_worker"] is True and "not JSON" in result["error"]


def test_info_that_is_not_json_is_kept_as_a_string(fake_webui):
    fake_webui(body=json.dumps({"images": [], "parameters": {}, "info": "plain"}).encode())
    assert run(SMALL)["info"] == "plain"


def test_result_is_written_to_handler_result_dir(webui_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HANDLER_RESULT_DIR", str(tmp_path / "results"))
    result = run(SMALL, job_id="job/1")
    saved = json.loads((tmp_path / "results" / "job_1.json").read_text())
    assert saved == result
    error = run({"steps": 0}, job_id="bad")
    assert json.loads((tmp_path / "results" / "bad.json").read_text()) == error


def test_cancelled_job_interrupts_the_webui(monkeypatch, spawn):
    demo = start_demo(spawn, env={"DEMO_WEBUI_SECONDS_PER_STEP": "0.1"})
    monkeypatch.setenv("WEBUI_API_URL", demo.url)

    async def cancel_soon():
        task = asyncio.create_task(handler.handler({"id": "c", "input": dict(SMALL, steps=150)}))
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(cancel_soon())
    demo.process.wait_for_line('"POST /sdapi/v1/interrupt HTTP/1.1" 200')
    # asyncio.run waits for the request's thread: the WebUI stopped long before its 15 s of steps.
    assert time.monotonic() - started < 5


# ---- readiness ---------------------------------------------------------------------------------


def test_gate_ready_returns_and_closes_the_pipe(monkeypatch):
    read_end, write_end = os.pipe()
    os.write(write_end, b"ready\n")
    monkeypatch.setenv("WORKER_READY_FD", str(read_end))
    handler.wait_at_gate(str(read_end))
    with pytest.raises(OSError):
        os.fstat(read_end)
    assert "WORKER_READY_FD" not in os.environ
    os.close(write_end)


@pytest.mark.parametrize("written, code, message", [
    (b"", 1, "worker-runtime closed the readiness gate: the WebUI did not become ready"),
    (b"go\n", 1, "unexpected line at the readiness gate: b'go'"),
])
def test_gate_closed_or_garbled_exits(capsys, written, code, message):
    read_end, write_end = os.pipe()
    os.write(write_end, written)
    os.close(write_end)
    with pytest.raises(SystemExit) as exit_info:
        handler.wait_at_gate(str(read_end))
    assert exit_info.value.code == code
    assert message in capsys.readouterr().out


@pytest.mark.parametrize("fd_text, message", [
    ("abc", "WORKER_READY_FD='abc' is not a file descriptor number"),
    ("987", "cannot read the readiness gate WORKER_READY_FD=987"),
])
def test_gate_bad_descriptor_exits_2(capsys, fd_text, message):
    with pytest.raises(SystemExit) as exit_info:
        handler.wait_at_gate(fd_text)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().out


def test_without_gate_polls_until_the_webui_answers(monkeypatch, spawn):
    port = free_port()
    monkeypatch.setenv("WEBUI_API_URL", f"http://127.0.0.1:{port}")
    spawn_started = time.monotonic()
    start = threading.Thread(target=lambda: start_demo(
        spawn, port=port, env={"DEMO_WEBUI_STARTUP_DELAY": "0.8"}))
    start.start()
    handler.wait_for_webui()
    assert time.monotonic() - spawn_started >= 0.8
    start.join()


def test_without_gate_gives_up_after_handler_ready_timeout(monkeypatch, capsys):
    monkeypatch.setenv("WEBUI_API_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("HANDLER_READY_TIMEOUT", "0.5")
    started = time.monotonic()
    with pytest.raises(SystemExit) as exit_info:
        handler.wait_for_webui()
    assert exit_info.value.code == 1
    assert 0.5 <= time.monotonic() - started < 3
    assert "did not answer 200 within 0.5s (HANDLER_READY_TIMEOUT)" in capsys.readouterr().out


# ---- logs ---------------------------------------------------------------------------------------


def test_redaction_removes_base64_and_the_api_key(monkeypatch):
    monkeypatch.setenv("RUNPOD_AI_API_KEY", "rpa_SECRETSECRET")
    image = base64.b64encode(os.urandom(600)).decode()
    text = handler.redact(f"images: ['{image}'] key rpa_SECRETSECRET prompt: a cat")
    assert image[:50] not in text and "rpa_SECRETSECRET" not in text
    assert "prompt: a cat" in text and "<800 base64 chars>" in text


def test_runpod_logger_goes_through_the_filter(capsys):
    from runpod.serverless.modules.rp_logger import RunPodLogger

    image = base64.b64encode(os.urandom(300)).decode()
    RunPodLogger().info(f"Job result: {{'images': ['{image}']}}")
    out = capsys.readouterr().out
    assert "Job result" in out and image[:40] not in out


def test_env_seconds_falls_back_on_bad_values(monkeypatch, capsys):
    monkeypatch.setenv("HANDLER_REQUEST_TIMEOUT", "soon")
    assert handler.env_seconds("HANDLER_REQUEST_TIMEOUT", 600.0) == 600.0
    monkeypatch.setenv("HANDLER_REQUEST_TIMEOUT", "-1")
    assert handler.env_seconds("HANDLER_REQUEST_TIMEOUT", 600.0) == 600.0
    monkeypatch.setenv("HANDLER_REQUEST_TIMEOUT", "2.5")
    assert handler.env_seconds("HANDLER_REQUEST_TIMEOUT", 600.0) == 2.5
    assert "HANDLER_REQUEST_TIMEOUT='soon' is not a number" in capsys.readouterr().out


def test_connect_refused_is_distinguished_from_a_closed_socket(monkeypatch):
    # A listener that accepts and closes at once: not "refused", still a broken WebUI.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def accept_and_close():
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                conn.close()
            except OSError:
                pass

    thread = threading.Thread(target=accept_and_close, daemon=True)
    thread.start()
    monkeypatch.setenv("WEBUI_API_URL", f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        result = run(SMALL)
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert result["refresh_worker"] is True
    assert "connection refused" not in result["error"]
