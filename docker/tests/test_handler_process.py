"""docker/handler.py as worker-runtime runs it, on the real runpod SDK: local test mode
(--test_input), runpod's local HTTP API (--rp_serve_api, POST /runsync), the readiness gate."""

import base64
import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import HANDLER, PYTHON, decode_png_b64, free_port, http

TEST_INPUT = json.loads((Path(HANDLER).parent / "test_input.json").read_text())
PNG_MAGIC_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n").decode()[:8]  # "iVBORw0K"


def handler_env(webui_url, **extra):
    env = {"WEBUI_API_URL": webui_url, "RUNPOD_LOG_LEVEL": None, "RUNPOD_DEBUG_LEVEL": None,
           "WORKER_READY_FD": None, "HANDLER_RESULT_DIR": None, "RUNPOD_WEBHOOK_GET_JOB": None}
    env.update(extra)
    return env


def run_local(spawn, webui_url, job, **env):
    process = spawn([PYTHON, "-u", str(HANDLER), "--test_input", json.dumps(job)],
                    env=handler_env(webui_url, **env))
    return process.wait(60), process


def test_local_mode_runs_docker_test_input(spawn, shared_demo, tmp_path):
    code, process = run_local(spawn, shared_demo.url, TEST_INPUT,
                              HANDLER_RESULT_DIR=str(tmp_path))
    assert code == 0, process.output
    out = process.output
    # The handler's lines come in this order, then runpod's.
    assert out.index("handler: imports done") < out.index("handler: serving") < out.index(
        "Job local_test completed successfully")
    result = json.loads((tmp_path / "local_test.json").read_text())
    payload = TEST_INPUT["input"]
    assert decode_png_b64(result["images"][0])[:2] == (payload["width"], payload["height"])
    assert result["info"]["seed"] == payload["seed"]
    # runpod prints the job result; the image data must not be in the logs.
    assert PNG_MAGIC_B64 not in out
    assert "base64 chars>" in out
    # The handler makes INFO runpod's default level: no DEBUG dumps of inputs and outputs.
    assert "DEBUG" not in out


def test_local_mode_form_b(spawn, shared_demo, tmp_path):
    job = {"input": {"api": {"method": "GET", "endpoint": "/sdapi/v1/samplers"}}}
    code, process = run_local(spawn, shared_demo.url, job, HANDLER_RESULT_DIR=str(tmp_path))
    assert code == 0, process.output
    samplers = json.loads((tmp_path / "local_test.json").read_text())
    assert "Euler a" in [s["name"] for s in samplers]


def test_local_mode_validation_error_fails_the_job(spawn, shared_demo):
    code, process = run_local(spawn, shared_demo.url, {"input": {"steps": 500}})
    assert code == 1
    assert "Job local_test failed with error: steps: must be an integer from 1 to 150, got 500" \
        in process.output


def test_local_mode_webui_down_fails_the_job(spawn):
    url = f"http://127.0.0.1:{free_port()}"
    # No WebUI and no gate: the handler polls, then gives up within HANDLER_READY_TIMEOUT.
    code, process = run_local(spawn, url, TEST_INPUT, HANDLER_READY_TIMEOUT="0.5")
    assert code == 1
    assert "did not answer 200 within 0.5s" in process.output
    assert "handler: serving" not in process.output


def test_local_mode_log_level_is_still_the_users_choice(spawn, shared_demo):
    code, process = run_local(spawn, shared_demo.url, {"input": {"steps": 1, "width": 64,
                                                                  "height": 64}},
                              RUNPOD_LOG_LEVEL="DEBUG")
    assert code == 0
    assert "DEBUG  | local_test | Handler output" in process.output
    assert PNG_MAGIC_B64 not in process.output


# ---- the readiness gate, as worker-runtime uses it ---------------------------------------------


def test_gate_ready_then_serves(spawn, shared_demo):
    read_end, write_end = os.pipe()
    process = spawn([PYTHON, "-u", str(HANDLER), "--test_input", json.dumps(TEST_INPUT)],
                    env=handler_env(shared_demo.url, WORKER_READY_FD=str(read_end)),
                    pass_fds=(read_end,))
    os.close(read_end)
    process.wait_for_line("handler: imports done")
    time.sleep(0.3)
    assert "handler: serving" not in process.output  # still at the gate
    os.write(write_end, b"ready\n")
    os.close(write_end)
    assert process.wait(30) == 0, process.output
    assert "Job local_test completed successfully" in process.output


def test_gate_closed_unwritten_exits_without_serving(spawn, shared_demo):
    read_end, write_end = os.pipe()
    process = spawn([PYTHON, "-u", str(HANDLER), "--test_input", json.dumps(TEST_INPUT)],
                    env=handler_env(shared_demo.url, WORKER_READY_FD=str(read_end)),
                    pass_fds=(read_end,))
    os.close(read_end)
    os.close(write_end)
    assert process.wait(30) == 1
    assert ("handler: worker-runtime closed the readiness gate: the WebUI did not become ready"
            in process.output)
    assert "handler: serving" not in process.output


# ---- runpod's local HTTP API ----------------------------------------------------------------


@pytest.fixture
def api_server(spawn, shared_demo):
    port = free_port()
    process = spawn([PYTHON, "-u", str(HANDLER), "--rp_serve_api", "--rp_api_port", str(port),
                     "--rp_api_host", "127.0.0.1"], env=handler_env(shared_demo.url))
    process.wait_for_line("Uvicorn running on")
    return process, f"http://127.0.0.1:{port}"


def test_runsync_both_forms_errors_and_keeps_serving(api_server):
    process, url = api_server
    status, answer = http("POST", f"{url}/runsync", TEST_INPUT)
    assert status == 200 and answer["status"] == "COMPLETED", answer
    output = answer["output"]
    assert decode_png_b64(output["images"][0])[:2] == (64, 64)
    assert isinstance(output["info"], dict)

    status, answer = http("POST", f"{url}/runsync", {"input": {"width": 65}})
    assert answer["status"] == "FAILED"
    assert answer["error"].startswith("width: must be an integer from 64 to 2048")

    job = {"input": {"api": {"method": "GET", "endpoint": "/sdapi/v1/nope"}}}
    assert "is not a route the WebUI serves" in http("POST", f"{url}/runsync", job)[1]["error"]

    job = {"input": {"steps": 1, "width": 64, "height": 64, "sampler_name": "Nope"}}
    answer = http("POST", f"{url}/runsync", job)[1]
    assert answer["error"].startswith("sampler_name: 'Nope' is not a sampler of this WebUI")

    # A1111 answers null here; runpod's local API would answer 500 for a job with no output.
    job = {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/refresh-checkpoints"}}}
    answer = http("POST", f"{url}/runsync", job)[1]
    assert (answer["status"], answer["output"]) == ("COMPLETED", {"ok": True})

    job = {"input": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
                     "payload": {"init_images": [output["images"][0]], "steps": 1,
                                 "width": 64, "height": 128}}}
    answer = http("POST", f"{url}/runsync", job)[1]
    assert answer["status"] == "COMPLETED"
    assert decode_png_b64(answer["output"]["images"][0])[:2] == (64, 128)

    job = {"input": {"api": {"method": "GET", "endpoint": "/sdapi/v1/sd-models"}}}
    answer = http("POST", f"{url}/runsync", job)[1]
    assert (answer["status"], answer["output"]) == ("COMPLETED", [])
    assert PNG_MAGIC_B64 not in process.output
    process.signal(signal.SIGINT)
    assert process.wait(20) == 0
