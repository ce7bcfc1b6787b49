"""The worker's life on the real A1111: start-up to readiness, one job, teardown; a stop signal
during a job in runpod's deployed mode; the WebUI dying while the worker serves."""

import json
import os
import shlex
import signal

import pytest

from a1111_harness import requires_a1111
from conftest import decode_png_b64, http, processes_with, wait_until

pytestmark = [requires_a1111, pytest.mark.timeout(300)]


def ordered(output, *lines):
    positions = []
    for line in lines:
        assert line in output, f"{line!r} not in the log:\n{output}"
        positions.append(output.index(line))
    assert positions == sorted(positions), f"out of order: {lines}\n{output}"


def test_start_serve_one_job_and_tear_down(start_worker, tmp_path):
    job = {"input": {"prompt": "a lighthouse", "seed": 42, "steps": 2, "width": 64, "height": 64}}
    results = tmp_path / "results"
    worker = start_worker(f"--test_input {shlex.quote(json.dumps(job))}",
                          HANDLER_RESULT_DIR=str(results))
    assert worker.process.wait(300) == 0, worker.process.output
    out = worker.process.output
    ordered(out, "Worker Initiated", "WEBUI_DEVICE=cpu: no GPU check", "STARTING WEBUI API",
            "Startup time:", "handler: serving", "Job local_test completed successfully",
            "RunPod handler exited, stopping WebUI API", "Shutdown complete.")
    # xformers is installed in this environment but must not be asked for on the CPU: with
    # --xformers every generation here would fail in A1111's VAE.
    started = next(line for line in out.splitlines() if "WebUI API started with PID" in line)
    assert started
    assert "No operator found for `memory_efficient_attention_forward`" not in out
    result = json.loads((results / "local_test.json").read_text())
    assert decode_png_b64(result["images"][0])[:2] == (64, 64)
    assert result["info"]["all_seeds"] == [42]
    assert processes_with(worker.marker) == [], "the WebUI and the handler are gone"


def test_the_webui_gets_the_cpu_flag_set_without_xformers(start_worker, tmp_path):
    worker = start_worker("--rp_serve_api --rp_api_port 0")
    worker.wait_ready()
    webui = [pid for pid in worker.webui_pids()
             if b"webui.py" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert len(webui) == 1, webui
    argv = open(f"/proc/{webui[0]}/cmdline", "rb").read().decode().split("\0")
    line = " ".join(argv)
    assert "--use-cpu all --no-half --precision full" in line, line
    assert "--xformers" not in argv, line
    assert "--server-name 127.0.0.1" in line, line
    assert worker.stop(signal.SIGTERM) in (0, 143)
    assert "Shutdown complete." in worker.process.output
    wait_until(lambda: processes_with(worker.marker) == [], 10, "every process ending")


def test_sigterm_during_a_job_in_deployed_mode_posts_the_job(start_worker, control_plane):
    worker = start_worker("", **control_plane.env())
    worker.wait_ready()
    # Long enough on the CPU to be in flight when the signal comes.
    control_plane.submit("job-sigterm", {"prompt": "a long job", "seed": 9, "steps": 30,
                                         "width": 256, "height": 256})
    control_plane.wait_taken("job-sigterm", 60)

    def generating():
        status, progress = http("GET", f"{worker.webui_url}/sdapi/v1/progress?skip_current_image=true")
        return status == 200 and progress["state"]["sampling_step"] > 0

    wait_until(generating, 60, "the generation starting")
    worker.process.signal(signal.SIGTERM)
    code = worker.process.wait(120)
    out = worker.process.output
    posted, _ = control_plane.result("job-sigterm", timeout=30)
    output = posted.get("output")
    assert output and output["images"], posted
    assert decode_png_b64(output["images"][0])[:2] == (256, 256)
    assert code == 0, out
    ordered(out, "handler: serving", "Shutdown complete.")
    assert processes_with(worker.marker) == []


def test_webui_killed_while_serving_stops_the_worker_with_83(start_worker):
    worker = start_worker("--rp_serve_api --rp_api_port 0")
    worker.wait_ready()
    webui = [pid for pid in worker.webui_pids()
             if b"webui.py" in open(f"/proc/{pid}/cmdline", "rb").read()]
    assert len(webui) == 1
    os.kill(webui[0], signal.SIGKILL)
    assert worker.process.wait(60) == 83, worker.process.output
    assert "Shutdown complete." in worker.process.output
    wait_until(lambda: processes_with(worker.marker) == [], 10, "every process ending")


def test_after_a_warm_up_the_first_job_pays_no_model_load(start_worker, tmp_path):
    job = {"input": {"prompt": "a lighthouse", "seed": 5, "steps": 2, "width": 64, "height": 64}}
    worker = start_worker(f"--test_input {shlex.quote(json.dumps(job))}",
                          HANDLER_RESULT_DIR=str(tmp_path / "results"), WEBUI_READY="warmup",
                          WEBUI_WARMUP_SIZE="96x64")
    assert worker.process.wait(300) == 0, worker.process.output
    out = worker.process.output
    # The size is read back from the PNG A1111 returned for the warm-up.
    assert "(96x64, 1 step)" in out, out
    # The model is loaded and an image was made before the handler may take a job.
    ordered(out, "Model loaded in", "warm-up image generated", "readiness gate opened",
            "handler: serving", "Job local_test completed successfully")
    report = next(json.loads(line[line.index("{"):]) for line in out.splitlines()
                  if '"event":"startup"' in line.replace(" ", ""))
    assert report["ready"] == "warmup"
    phases = report["phases"]
    assert phases["webui_api"] > 0 and phases["model_load"] is not None and phases["warmup"] > 0
    # A1111's own figures, read from its output.
    assert report["webui"]["startup_time"] > 0 and report["webui"]["model_loaded_in"] > 0


def test_a_corrupt_checkpoint_stops_the_worker_before_any_job(start_worker, tmp_path, control_plane):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\xff" * 64 + b"not a checkpoint")
    empty = tmp_path / "empty-volume"
    empty.mkdir()
    control_plane.submit("never-taken", {"prompt": "x", "steps": 1, "width": 64, "height": 64})
    worker = start_worker("", MODEL_PATH=str(broken), CKPT_DIR=str(empty), WEBUI_READY="model",
                          **control_plane.env())
    assert worker.process.wait(300) == 86, worker.process.output
    out = worker.process.output
    line = next(l for l in out.splitlines() if "could not load its checkpoint" in l)
    assert "HeaderTooLarge" in line, line  # A1111's own reason, on the one line
    assert "handler: serving" not in out
    assert control_plane.taken == set(), "no job may be taken by a worker that cannot serve it"
    assert processes_with(worker.marker) == []


def test_a_missing_tokenizer_stops_the_worker_before_any_job(start_worker, tmp_path):
    empty_hf = tmp_path / "hf"
    empty_hf.mkdir()
    worker = start_worker("--test_input '{\"input\": {\"prompt\": \"x\"}}'", HF_HOME=str(empty_hf))
    assert worker.process.wait(300) == 86, worker.process.output
    line = next(l for l in worker.process.output.splitlines()
                if "could not load its checkpoint" in l)
    assert "Can't load tokenizer" in line, line
    assert "Job local_test" not in worker.process.output
    assert processes_with(worker.marker) == []


def test_a_stop_during_the_warm_up_interrupts_it(start_worker):
    # 512x512 on the CPU: the warm-up is still generating when the signal comes.
    worker = start_worker("", WEBUI_READY="warmup", WEBUI_WARMUP_SIZE="512x512",
                          SHUTDOWN_GRACE="60")
    worker.process.wait_for_line("model loaded (", timeout=120)

    def warming_up():
        status, progress = http("GET", f"{worker.webui_url}/sdapi/v1/progress?skip_current_image=true")
        return status == 200 and progress["state"]["job"] != ""

    # A request still on its way is not interrupted: A1111 clears the flag when a job begins.
    wait_until(warming_up, 60, "the warm-up generation starting")
    worker.process.signal(signal.SIGTERM)
    assert worker.process.wait(90) == 143, worker.process.output
    out = worker.process.output
    # A1111 takes the interrupt before the worker is ready, and ends without the SIGKILL.
    assert "the WebUI accepted the interrupt" in out, out
    assert "at the stop deadline" not in out, out
    assert "readiness gate opened" not in out, out
    wait_until(lambda: processes_with(worker.marker) == [], 10, "every process ending")
