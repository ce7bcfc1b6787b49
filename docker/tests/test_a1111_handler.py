"""The handler's rules on the real A1111, in runpod's deployed mode against a control-plane
double: what A1111 itself answers (its 422s and its 500s for bad input), which settings and
endpoints exist, whether a setting or a checkpoint switch outlives its job. What RunPod would
receive is read from the double: the output, the error, and whether the worker asked to be
replaced (stopPod)."""

import base64
import shutil

import pytest
from a1111_harness import MAIN_MODEL, SECOND_MODEL, SETTINGS, Worker, requires_a1111
from conftest import DOCKER_DIR, ControlPlane, decode_png_b64, load_module

pytestmark = [requires_a1111, pytest.mark.timeout(300)]
RULES = load_module("sdhandler_rules", DOCKER_DIR / "sdhandler" / "rules.py")
SMALL = {"prompt": "x", "seed": 1, "steps": 1, "width": 64, "height": 64}


class DeployedWorker:
    def __init__(self, worker, plane):
        self.worker = worker
        self.plane = plane
        self.count = 0

    def post(self, job_input, timeout=120):
        """What the worker posted to RunPod for this job."""
        self.count += 1
        posted, _ = self.plane.run(f"job-{self.count}", job_input, timeout)
        return posted

    def output(self, job_input):
        posted = self.post(job_input)
        assert "error" not in posted and "stopPod" not in posted, posted
        return posted["output"]

    def error(self, job_input):
        posted = self.post(job_input)
        assert "error" in posted, posted
        assert "stopPod" not in posted, f"a bad job must not recycle the worker: {posted}"
        return posted["error"]


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    if SETTINGS is None:
        pytest.skip("the real A1111 is not prepared")
    tmp = tmp_path_factory.mktemp("deployed")
    # The network volume: the second test checkpoint, and one that cannot load.
    volume = tmp / "checkpoints"
    volume.mkdir()
    extra = SETTINGS["CKPT_DIR"]
    for suffix in (".safetensors", ".yaml"):
        shutil.copy(f"{extra}/{SECOND_MODEL}{suffix}", volume / f"{SECOND_MODEL}{suffix}")
    (volume / "broken.safetensors").write_bytes(b"\xff" * 64 + b"not a checkpoint")
    shutil.copy(f"{extra}/{SECOND_MODEL}.yaml", volume / "broken.yaml")
    plane = ControlPlane()
    worker = Worker(tmp, "", CKPT_DIR=str(volume), HANDLER_ALLOW_IMAGE_URLS="1", **plane.env())
    try:
        worker.wait_ready()
        yield DeployedWorker(worker, plane)
    finally:
        worker.kill()
        plane.close()


def api(method, endpoint, payload=None):
    job = {"api": {"method": method, "endpoint": f"/sdapi/v1/{endpoint}"}}
    if payload is not None:
        job["payload"] = payload
    return job


def test_every_read_only_endpoint_answers(deployed):
    for name, method in sorted(RULES.BUILTIN.items()):
        if method == "GET":
            output = deployed.output(api("GET", name))
            assert output is not None, name
    options = deployed.output(api("GET", "options"))
    assert options["sd_model_checkpoint"].startswith(MAIN_MODEL)


def test_refreshes_and_interrupt_answer_an_object(deployed):
    for name in ("refresh-checkpoints", "refresh-vae", "refresh-loras", "refresh-embeddings",
                 "interrupt", "skip"):
        output = deployed.output(api("POST", name))
        assert isinstance(output, dict), (name, output)


def test_every_setting_a_job_may_change_exists_in_a1111(deployed):
    options = deployed.output(api("GET", "options"))
    missing = sorted(RULES.JOB_SETTINGS - set(options))
    assert missing == [], f"allowed settings A1111 v1.10.1 does not have: {missing}"
    # Set to their current values: A1111 accepts every one of them (an unknown key is a 500).
    same = {key: options[key] for key in RULES.JOB_SETTINGS if key != "sd_model_checkpoint"}
    deployed.output(api("POST", "options", same))


def test_server_and_path_settings_are_refused_before_a1111(deployed):
    for key, value in (("outdir_samples", "/runpod-volume"), ("samples_filename_pattern", "x"),
                       ("temp_dir", "/tmp/x")):
        error = deployed.error(api("POST", "options", {key: value}))
        assert key in error, error


def test_an_unknown_sampler_is_refused_with_a1111s_own_list(deployed):
    error = deployed.error(dict(SMALL, sampler_name="No Such Sampler"))
    # The valid names come from the real WebUI's /samplers.
    assert "Euler a" in error and "DPM++ 2M" in error, error


def test_a1111s_own_error_answers_fail_the_job_not_the_worker(deployed):
    # Handler-side rules let an image URL through here (HANDLER_ALLOW_IMAGE_URLS=1); A1111 v1.10.1
    # refuses it with a 500 ("Requests not allowed"): the health check after it passes, so the
    # worker stays.
    error = deployed.error(api("POST", "img2img",
                               dict(SMALL, init_images=["http://127.0.0.1:9/picture.png"])))
    assert "500" in error, error
    # A1111's 422 for a script it does not have, with its own words.
    error = deployed.error(api("POST", "txt2img", dict(SMALL, script_name="no such script")))
    assert "422" in error and "not found" in error.lower(), error
    # The worker still serves.
    image = deployed.output(SMALL)["images"][0]
    assert decode_png_b64(image)[:2] == (64, 64)


def test_an_override_does_not_outlive_its_job(deployed):
    info = deployed.output(dict(SMALL, override_settings={"CLIP_stop_at_last_layers": 2}))["info"]
    assert info["clip_skip"] == 2
    # A fresh A1111 restores only keys already in its config.json: the handler puts it back.
    assert deployed.output(SMALL)["info"]["clip_skip"] == 1
    assert deployed.output(api("GET", "options"))["CLIP_stop_at_last_layers"] == 1


def test_a_checkpoint_switch_that_fails_inside_a1111_fails_the_job(deployed):
    error = deployed.error(api("POST", "options", {"sd_model_checkpoint": "broken.safetensors"}))
    assert "broken" in error, error
    info = deployed.output(SMALL)["info"]
    assert info["sd_model_name"] == MAIN_MODEL
    # A good switch through override_settings is checked too, and holds for its job only.
    info = deployed.output(dict(SMALL, override_settings={"sd_model_checkpoint": SECOND_MODEL}))["info"]
    assert info["sd_model_name"] == SECOND_MODEL
    assert deployed.output(SMALL)["info"]["sd_model_name"] == MAIN_MODEL


def test_image_inputs_are_checked_before_a1111(deployed):
    not_an_image = base64.b64encode(b"plain text, not an image").decode()
    error = deployed.error(api("POST", "img2img", dict(SMALL, init_images=[not_an_image])))
    assert "init_images" in error, error
