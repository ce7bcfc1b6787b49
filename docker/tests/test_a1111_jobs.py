"""Jobs on the real A1111, through one worker serving runpod's local HTTP API."""

import base64

import pytest

from a1111_harness import MAIN_MODEL, SECOND_MODEL, requires_a1111
from conftest import read_png

pytestmark = [requires_a1111, pytest.mark.timeout(300)]


def png_of(image_b64):
    return read_png(base64.b64decode(image_b64))


def test_txt2img_not_square_batch_sampler_and_info(served):
    output = served.output({"prompt": "a lighthouse at dawn", "negative_prompt": "blurry",
                            "seed": 7, "steps": 3, "width": 96, "height": 64,
                            "batch_size": 2, "sampler_name": "DPM++ 2M", "cfg_scale": 5})
    assert len(output["images"]) == 2
    for image in output["images"]:
        width, height, texts = png_of(image)
        assert (width, height) == (96, 64)
        # A1111 writes the generation parameters into each PNG.
        assert "Steps: 3, Sampler: DPM++ 2M" in texts.get("parameters", ""), texts
    info = output["info"]
    assert isinstance(info, dict), "the handler parses A1111's info string"
    assert (info["seed"], info["all_seeds"]) == (7, [7, 8])
    assert info["version"].lstrip("v") == "1.10.1"
    assert (info["sampler_name"], info["width"], info["height"]) == ("DPM++ 2M", 96, 64)
    assert info["sd_model_name"] == MAIN_MODEL
    assert info["all_prompts"] == ["a lighthouse at dawn"] * 2


def test_the_same_seed_gives_the_same_image_and_another_seed_another(served):
    job = {"prompt": "a red door", "seed": 11, "steps": 2, "width": 64, "height": 64}
    first = served.output(job)["images"][0]
    assert served.output(job)["images"][0] == first
    assert served.output(dict(job, seed=12))["images"][0] != first


def test_img2img_from_a_generated_image(served):
    source = served.output({"prompt": "a harbour", "seed": 3, "steps": 2,
                            "width": 64, "height": 64})["images"][0]
    output = served.output({"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
                            "payload": {"init_images": [source], "prompt": "watercolour",
                                        "denoising_strength": 0.5, "steps": 2, "seed": 5,
                                        "width": 64, "height": 128}})
    width, height, _ = png_of(output["images"][0])
    assert (width, height) == (64, 128)
    assert output["info"]["denoising_strength"] == 0.5


def test_checkpoint_switch_through_options_is_used_by_later_jobs(served):
    switch = {"api": {"method": "POST", "endpoint": "/sdapi/v1/options"},
              "payload": {"sd_model_checkpoint": f"{SECOND_MODEL}.safetensors"}}
    assert served.job(switch)["status"] == "COMPLETED"
    try:
        options = served.output({"api": {"method": "GET", "endpoint": "/sdapi/v1/options"}})
        assert options["sd_model_checkpoint"] == f"{SECOND_MODEL}.safetensors"
        info = served.output({"prompt": "x", "seed": 1, "steps": 1,
                              "width": 64, "height": 64})["info"]
        assert info["sd_model_name"] == SECOND_MODEL
    finally:
        back = dict(switch, payload={"sd_model_checkpoint": f"{MAIN_MODEL}.safetensors"})
        assert served.job(back)["status"] == "COMPLETED"
    info = served.output({"prompt": "x", "seed": 1, "steps": 1, "width": 64, "height": 64})["info"]
    assert info["sd_model_name"] == MAIN_MODEL


def test_checkpoint_switch_through_override_settings_lasts_one_job(served):
    info = served.output({"prompt": "x", "seed": 1, "steps": 1, "width": 64, "height": 64,
                          "override_settings": {"sd_model_checkpoint": SECOND_MODEL}})["info"]
    assert info["sd_model_name"] == SECOND_MODEL
    info = served.output({"prompt": "x", "seed": 1, "steps": 1, "width": 64, "height": 64})["info"]
    assert info["sd_model_name"] == MAIN_MODEL


def test_model_list_names_both_test_checkpoints(served):
    models = served.output({"api": {"method": "GET", "endpoint": "/sdapi/v1/sd-models"}})
    names = sorted(m["model_name"] for m in models)
    assert names == [MAIN_MODEL, SECOND_MODEL]
    assert all(m["config"] and m["config"].endswith(".yaml") for m in models)

