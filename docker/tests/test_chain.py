"""The whole chain: worker-runtime runs the demo WebUI and docker/handler.py on one job.

Needs the worker-runtime binary (conftest.RUNTIME: `cargo build -p runtime`, or $WORKER_RUNTIME).
Without it every test here fails and says so: a skip would pass a CI run that never ran them.
"""

import json
import shlex
import uuid

import pytest
from conftest import DEMO_DIR, HANDLER, PYTHON, RUNTIME, decode_png_b64, free_port, processes_with


@pytest.fixture(autouse=True)
def runtime_is_built():
    if not RUNTIME.is_file():
        pytest.fail(f"{RUNTIME} is not built: run `cargo build -p runtime`, or set WORKER_RUNTIME")



def chain_env(tmp_path, handler_args, **extra):
    models = tmp_path / "models"
    for sub in ("checkpoints", "loras", "embeddings"):
        (models / sub).mkdir(parents=True, exist_ok=True)
    (models / "model.safetensors").write_text("demo placeholder")
    env = {
        "WEBUI_DIR": str(DEMO_DIR), "WEBUI_PYTHON": PYTHON, "WEBUI_PORT": str(free_port()),
        "HANDLER_PATH": str(HANDLER), "HANDLER_PYTHON": PYTHON, "HANDLER_ARGS": handler_args,
        "HANDLER_RESULT_DIR": str(tmp_path / "results"), "CUDA_CHECK": "off", "NO_TCMALLOC": "1",
        "MODEL_PATH": str(models / "model.safetensors"), "CKPT_DIR": str(models / "checkpoints"),
        "LORA_DIR": str(models / "loras"), "EMBEDDINGS_DIR": str(models / "embeddings"),
        "CHAIN_TEST_MARKER": f"chain-{uuid.uuid4()}", "WORKER_READY_FD": None,
        "RUNPOD_WEBHOOK_GET_JOB": None, "RUNPOD_LOG_LEVEL": None,
    }
    env.update(extra)
    return env


@pytest.mark.parametrize("handler_start", ["gate", "after-ready"])
def test_job_through_worker_runtime(spawn, tmp_path, handler_start):
    job = {"input": {"prompt": "a harbour", "seed": 3, "steps": 2, "width": 128, "height": 64,
                     "batch_size": 2}}
    env = chain_env(tmp_path, f"--test_input {shlex.quote(json.dumps(job))}",
                    HANDLER_START=handler_start)
    process = spawn([str(RUNTIME)], env=env)
    assert process.wait(60) == 0, process.output
    out = process.output
    # The lifecycle, in order: the handler waited at the gate and served only once it opened.
    for earlier, later in [("STARTING WEBUI API", "Uvicorn running on"),
                           ("Uvicorn running on", "handler: serving"),
                           ("handler: serving", "Job local_test completed successfully"),
                           ("Job local_test completed successfully", "Shutdown complete.")]:
        assert out.index(earlier) < out.index(later), (earlier, later, out)
    result = json.loads((tmp_path / "results" / "local_test.json").read_text())
    assert [decode_png_b64(image)[:2] for image in result["images"]] == [(128, 64), (128, 64)]
    assert result["info"]["all_seeds"] == [3, 4]
    assert "iVBORw0K" not in out  # no image data in the logs
    # Without the gate (after-ready) the handler checks the WebUI itself, and finds it up.
    assert ("WebUI API ready after" in out) == (handler_start == "after-ready")
    assert processes_with(env["CHAIN_TEST_MARKER"]) == []


def test_failed_job_and_webui_failure_through_worker_runtime(spawn, tmp_path):
    env = chain_env(tmp_path, f"--test_input {shlex.quote(json.dumps({'input': {'steps': 0}}))}")
    process = spawn([str(RUNTIME)], env=env)
    assert process.wait(60) == 1
    assert "steps: must be an integer from 1 to 150, got 0" in process.output
    assert processes_with(env["CHAIN_TEST_MARKER"]) == []

    # The WebUI exits at start: the handler at the gate sees the pipe closed and never serves.
    env = chain_env(tmp_path, "--test_input '{\"input\": {}}'",
                    DEMO_WEBUI_STARTUP_DELAY="soon")
    process = spawn([str(RUNTIME)], env=env)
    assert process.wait(60) == 81  # worker-runtime: the WebUI exited before its API was ready
    assert "DEMO_WEBUI_STARTUP_DELAY='soon' must be a number of seconds" in process.output
    assert ("handler: worker-runtime closed the readiness gate: the WebUI did not become ready"
            in process.output)
    assert "handler: serving" not in process.output
    assert processes_with(env["CHAIN_TEST_MARKER"]) == []
