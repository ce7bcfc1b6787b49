"""The demo WebUI behaves like A1111 v1.10 in API-only mode, as far as the worker can tell."""

import base64
import json
import os
import signal
import socket
import threading
import time

import pytest
from conftest import (DEMO_DIR, DEMO_WEBUI, FLAG_CATALOG, PYTHON, WORKER_FLAGS, decode_png_b64,
                      free_port, http, load_module, read_png, start_demo, wait_until)

webui = load_module("demo_webui", DEMO_WEBUI)

# A value each flag kind accepts, for parsing every flag of the catalog at once.
SAMPLE_VALUES = {
    "int": "5", "str": "x", "path": "/tmp/p", "path(normalized_filepath)": "/tmp/p",
    "append str": "x", "json(json.loads)": '{"a": 1}', "str choices=full|half|autocast": "half",
    "str.lower nargs=+": "ALL",
}


def catalog_flags():
    rows = [line.split("\t") for line in FLAG_CATALOG.read_text().splitlines()[1:] if line]
    return [(flag, kind) for flag, kind, _ in rows]


# ---- command line -------------------------------------------------------------------------


def test_every_catalog_flag_is_accepted_with_its_kind():
    argv = []
    for flag, kind in catalog_flags():
        argv.append(flag)
        if kind not in ("store_true", "store_false"):
            argv.append(SAMPLE_VALUES[kind])
    args, _ = webui.parse_command_line(argv, {}, str(DEMO_DIR))
    assert args.port == 5
    assert args.precision == "half"
    assert args.use_cpu == ["all"]
    assert args.ngrok_options == {"a": 1}
    assert args.styles_file == ["x"]
    assert args.ckpt == "/tmp/p"
    assert args.xformers is True
    assert len(vars(args)) == len(catalog_flags())


def test_defaults_follow_a1111_paths_and_commandline_args_env_is_appended():
    args, paths = webui.parse_command_line(
        ["--data-dir", "/data"], {"COMMANDLINE_ARGS": "--port 4000 --lora-dir '/a b'"},
        str(DEMO_DIR))
    assert args.port == 4000
    assert args.lora_dir == "/a b"
    assert args.embeddings_dir == "/data/embeddings"
    assert args.ckpt == os.path.join(str(DEMO_DIR), "model.ckpt")
    assert paths["models_path"] == "/data/models"


def test_unknown_flag_dies_like_argparse(spawn):
    process = spawn([PYTHON, str(DEMO_WEBUI), *WORKER_FLAGS, "--no-such-flag"], cwd=str(DEMO_DIR))
    assert process.wait() == 2
    assert "webui.py: error: unrecognized arguments: --no-such-flag" in process.output
    assert "Uvicorn running" not in process.output


def test_unknown_flag_in_commandline_args_env_dies_too(spawn):
    process = spawn([PYTHON, str(DEMO_WEBUI), "--nowebui"], cwd=str(DEMO_DIR),
                    env={"COMMANDLINE_ARGS": "--bogus 1"})
    assert process.wait() == 2
    assert "unrecognized arguments: --bogus 1" in process.output


def test_bad_knob_values_end_the_process_at_start(spawn):
    process = spawn([PYTHON, str(DEMO_WEBUI), "--nowebui"], cwd=str(DEMO_DIR),
                    env={"DEMO_WEBUI_SECONDS_PER_STEP": "-1"})
    assert process.wait() == 2
    assert "DEMO_WEBUI_SECONDS_PER_STEP='-1' must be a number of seconds" in process.output


def test_port_defaults_to_7861_in_api_only_mode():
    args, _ = webui.parse_command_line(["--nowebui"], {}, str(DEMO_DIR))
    assert args.port is None  # the default is chosen at bind time, like A1111
    assert webui.DEFAULT_PORT == 7861


# ---- start-up, readiness, model load --------------------------------------------------------


def test_binds_only_after_the_startup_delay_and_sd_models_answers_before_the_model_loads(spawn):
    port = free_port()
    started = time.monotonic()
    demo = start_demo(spawn, port=port, env={"DEMO_WEBUI_STARTUP_DELAY": "0.6",
                                             "DEMO_WEBUI_MODEL_LOAD_SECONDS": "1.5"})
    assert time.monotonic() - started >= 0.6
    status, models = http("GET", f"{demo.url}/sdapi/v1/sd-models", timeout=0.5)
    assert status == 200 and models == []
    before = time.monotonic()
    status, answer = http("POST", f"{demo.url}/sdapi/v1/txt2img",
                          {"steps": 1, "width": 64, "height": 64})
    assert status == 200
    # txt2img waited for the rest of the 1.5 s load.
    assert time.monotonic() - before >= 0.5
    assert len(answer["images"]) == 1


def test_connection_refused_during_the_startup_delay(spawn):
    port = free_port()
    process = spawn([PYTHON, str(DEMO_WEBUI), "--nowebui", "--port", str(port),
                     "--server-name", "127.0.0.1"], cwd=str(DEMO_DIR),
                    env={"DEMO_WEBUI_STARTUP_DELAY": "1"})
    process.wait_for_line("stand-in")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    process.wait_for_line("Uvicorn running")
    socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_failed_model_load_makes_generation_answer_500(spawn):
    demo = start_demo(spawn, env={"DEMO_WEBUI_FAIL_MODEL_LOAD": "1"})
    assert http("GET", f"{demo.url}/sdapi/v1/sd-models")[0] == 200
    status, answer = http("POST", f"{demo.url}/sdapi/v1/txt2img", {"steps": 1})
    assert status == 500
    assert set(answer) == {"error", "detail", "body", "errors"}
    assert answer["error"] == "RuntimeError"
    assert "model load failed" in answer["errors"]


def test_checkpoints_from_ckpt_and_ckpt_dir_are_listed(spawn, tmp_path):
    baked = tmp_path / "model.safetensors"
    baked.write_bytes(b"demo")
    volume = tmp_path / "checkpoints"
    (volume / "sub").mkdir(parents=True)
    (volume / "sub" / "other.ckpt").write_bytes(b"demo")
    (volume / "notes.txt").write_text("not a model")
    (volume / "x.vae.safetensors").write_bytes(b"a VAE, not a checkpoint")
    demo = start_demo(spawn, args=["--ckpt", str(baked), "--ckpt-dir", str(volume)])
    status, models = http("GET", f"{demo.url}/sdapi/v1/sd-models")
    assert status == 200
    assert [(m["title"], m["model_name"], m["hash"]) for m in models] == [
        ("model.safetensors", "model", None),  # --no-hashing: no hash, like A1111
        ("sub/other.ckpt", "sub_other", None),
    ]
    assert models[0]["filename"] == str(baked)
    (volume / "new.safetensors").write_bytes(b"demo")
    assert http("POST", f"{demo.url}/sdapi/v1/refresh-checkpoints")[0] == 200
    assert len(http("GET", f"{demo.url}/sdapi/v1/sd-models")[1]) == 3
    status, options = http("GET", f"{demo.url}/sdapi/v1/options")
    assert options["sd_model_checkpoint"] == "model.safetensors"


def test_loras_and_embeddings_come_from_their_folders(spawn, tmp_path):
    loras, embeddings = tmp_path / "loras", tmp_path / "embeddings"
    loras.mkdir()
    embeddings.mkdir()
    (loras / "style.safetensors").write_bytes(b"x")
    (embeddings / "badhands.pt").write_bytes(b"x")
    demo = start_demo(spawn, args=["--lora-dir", str(loras), "--embeddings-dir", str(embeddings)])
    assert [item["name"] for item in http("GET", f"{demo.url}/sdapi/v1/loras")[1]] == ["style"]
    assert list(http("GET", f"{demo.url}/sdapi/v1/embeddings")[1]["loaded"]) == ["badhands"]
    (loras / "more.safetensors").write_bytes(b"x")
    (embeddings / "more.pt").write_bytes(b"x")
    assert http("POST", f"{demo.url}/sdapi/v1/refresh-loras")[0] == 200
    assert http("POST", f"{demo.url}/sdapi/v1/refresh-embeddings")[0] == 200
    assert len(http("GET", f"{demo.url}/sdapi/v1/loras")[1]) == 2
    assert len(http("GET", f"{demo.url}/sdapi/v1/embeddings")[1]["loaded"]) == 2


# ---- generation ---------------------------------------------------------------------------


def test_txt2img_answers_a1111_shapes_with_real_pngs(shared_demo):
    status, answer = http("POST", f"{shared_demo.url}/sdapi/v1/txt2img", {
        "prompt": "a red fox", "negative_prompt": "blur", "seed": 7, "steps": 3,
        "width": 96, "height": 64, "batch_size": 2, "n_iter": 2, "sampler_name": "Euler a",
        "ignored_field": True})
    assert status == 200
    assert set(answer) == {"images", "parameters", "info"}
    assert isinstance(answer["info"], str)
    info = json.loads(answer["info"])
    assert len(answer["images"]) == 4
    assert info["all_seeds"] == [7, 8, 9, 10]
    assert info["sampler_name"] == "Euler a"
    for image in answer["images"]:
        width, height, texts = decode_png_b64(image)
        assert (width, height) == (96, 64)
        assert texts["parameters"].startswith("a red fox\nNegative prompt: blur\nSteps: 3")
    assert answer["parameters"]["prompt"] == "a red fox"
    assert answer["parameters"]["steps"] == 3
    assert answer["parameters"]["cfg_scale"] == 7.0  # defaults filled in, like vars(request)
    assert "ignored_field" not in answer["parameters"]


def test_images_are_deterministic_from_seed_and_prompt(shared_demo):
    def image(prompt, seed):
        body = {"prompt": prompt, "seed": seed, "steps": 1, "width": 64, "height": 64}
        return http("POST", f"{shared_demo.url}/sdapi/v1/txt2img", body)[1]["images"][0]

    assert image("a cat", 1) == image("a cat", 1)
    assert image("a cat", 1) != image("a cat", 2)
    assert image("a cat", 1) != image("a dog", 1)


def test_random_seed_is_reported(shared_demo):
    body = {"seed": -1, "steps": 1, "width": 64, "height": 64}
    info = json.loads(http("POST", f"{shared_demo.url}/sdapi/v1/txt2img", body)[1]["info"])
    assert 0 <= info["seed"] < 2**32
    assert info["all_seeds"] == [info["seed"]]


def test_hires_fix_scales_the_image(shared_demo):
    body = {"steps": 1, "width": 64, "height": 64, "enable_hr": True, "hr_scale": 2}
    answer = http("POST", f"{shared_demo.url}/sdapi/v1/txt2img", body)[1]
    assert decode_png_b64(answer["images"][0])[:2] == (128, 128)


def test_sampler_with_scheduler_suffix_and_alias_are_accepted(shared_demo):
    for name in ("DPM++ 2M Karras", "k_euler_a"):
        body = {"steps": 1, "width": 64, "height": 64, "sampler_name": name}
        assert http("POST", f"{shared_demo.url}/sdapi/v1/txt2img", body)[0] == 200


def test_img2img_uses_the_init_image(shared_demo):
    first = http("POST", f"{shared_demo.url}/sdapi/v1/txt2img",
                 {"seed": 3, "steps": 1, "width": 64, "height": 64})[1]["images"][0]
    body = {"init_images": [first], "seed": 3, "steps": 1, "width": 128, "height": 64,
            "denoising_strength": 0.5}
    status, answer = http("POST", f"{shared_demo.url}/sdapi/v1/img2img", body)
    assert status == 200
    assert decode_png_b64(answer["images"][0])[:2] == (128, 64)
    assert answer["parameters"]["init_images"] is None  # include_init_images defaults to false


@pytest.mark.parametrize("path, body, status, detail", [
    ("img2img", {"steps": 1}, 404, "Init image not found"),
    ("img2img", {"init_images": ["http://127.0.0.1:9/cat.png"], "steps": 1}, 500,
     "Requests not allowed"),
    ("img2img", {"init_images": ["bm90IGFuIGltYWdl"], "steps": 1}, 500, "Invalid encoded image"),
    ("txt2img", {"script_name": "nope"}, 422, "Script 'nope' not found"),
])
def test_a1111_errors_have_its_shape(shared_demo, path, body, status, detail):
    got_status, answer = http("POST", f"{shared_demo.url}/sdapi/v1/{path}", body)
    assert got_status == status
    assert answer["error"] == "HTTPException"
    assert answer["detail"] == detail
    assert set(answer) == {"error", "detail", "body", "errors"}


def test_unknown_sampler_or_scheduler_is_replaced_not_refused(spawn):
    # A1111 v1.10.1: 200, the image made with DPM++ 2M, a log line and nothing else.
    demo = start_demo(spawn)
    body = {"steps": 1, "width": 64, "height": 64, "sampler_name": "No Such Sampler"}
    status, answer = http("POST", f"{demo.url}/sdapi/v1/txt2img", body)
    assert status == 200
    assert json.loads(answer["info"])["sampler_name"] == "DPM++ 2M"
    demo.process.wait_for_line('Sampler Scheduler autocorrection: "No Such Sampler" -> "DPM++ 2M"')
    body = {"steps": 1, "width": 64, "height": 64, "sampler_name": "Euler", "scheduler": "nope"}
    status, answer = http("POST", f"{demo.url}/sdapi/v1/txt2img", body)
    assert status == 200
    assert "Schedule type: Automatic" in json.loads(answer["info"])["infotexts"][0]


def test_bad_input_answers_500_like_a1111(shared_demo):
    status, answer = http("POST", f"{shared_demo.url}/sdapi/v1/img2img",
                          {"init_images": ["bm90IGFuIGltYWdl"], "steps": 1})
    assert (status, answer["detail"]) == (500, "Invalid encoded image")
    status, answer = http("POST", f"{shared_demo.url}/sdapi/v1/options", {"no_such_key": 1})
    assert status == 500
    assert answer == {"error": "KeyError", "detail": "", "body": "", "errors": "'no_such_key'"}
    body = {"steps": 1, "width": 64, "height": 64, "override_settings": {"no_such_key": 1}}
    assert http("POST", f"{shared_demo.url}/sdapi/v1/txt2img", body)[0] == 500


@pytest.mark.parametrize("method, path, answer", [
    ("POST", "refresh-checkpoints", None), ("POST", "refresh-vae", None),
    ("POST", "refresh-loras", None), ("POST", "refresh-embeddings", None),
    ("POST", "interrupt", {}), ("POST", "skip", None),
])
def test_null_and_empty_answers(shared_demo, method, path, answer):
    assert http(method, f"{shared_demo.url}/sdapi/v1/{path}") == (200, answer)


def test_override_settings_stay_on_a_fresh_webui_and_are_restored_once_in_config(spawn):
    # A1111 restores a job's override_settings only for keys already in config.json.
    demo = start_demo(spawn)
    options = f"{demo.url}/sdapi/v1/options"
    body = {"steps": 1, "width": 64, "height": 64,
            "override_settings": {"CLIP_stop_at_last_layers": 2}}
    info = json.loads(http("POST", f"{demo.url}/sdapi/v1/txt2img", body)[1]["info"])
    assert info["clip_skip"] == 2 and "Clip skip: 2" in info["infotexts"][0]
    assert http("GET", options)[1]["CLIP_stop_at_last_layers"] == 2  # it stayed
    assert http("POST", options, {"CLIP_stop_at_last_layers": 1}) == (200, None)
    http("POST", f"{demo.url}/sdapi/v1/txt2img", body)
    assert http("GET", options)[1]["CLIP_stop_at_last_layers"] == 1  # now in config: restored


def test_a_checkpoint_that_fails_to_load_still_answers_200_and_keeps_the_old_model(spawn,
                                                                                   tmp_path):
    for name in ("good.safetensors", "broken.safetensors"):
        (tmp_path / name).write_bytes(b"demo")
    demo = start_demo(spawn, args=["--ckpt-dir", str(tmp_path), "--ckpt",
                                   str(tmp_path / "good.safetensors")],
                      env={"DEMO_WEBUI_BROKEN_CHECKPOINTS": "broken.safetensors"})
    options = f"{demo.url}/sdapi/v1/options"
    assert http("POST", options, {"sd_model_checkpoint": "broken"}) == (200, None)
    demo.process.wait_for_line("changing setting sd_model_checkpoint to broken.safetensors")
    assert http("GET", options)[1]["sd_model_checkpoint"].startswith("good.safetensors")
    body = {"steps": 1, "width": 64, "height": 64,
            "override_settings": {"sd_model_checkpoint": "broken"}}
    status, answer = http("POST", f"{demo.url}/sdapi/v1/txt2img", body)
    assert status == 200 and json.loads(answer["info"])["sd_model_name"] == "good"


def test_openapi_lists_the_routes_and_extension_routes(spawn):
    demo = start_demo(spawn, env={"DEMO_WEBUI_CONTROLNET": "1"})
    paths = http("GET", f"{demo.url}/openapi.json")[1]["paths"]
    assert set(paths["/sdapi/v1/options"]) == {"get", "post"}
    assert set(paths["/controlnet/model_list"]) == {"get"}
    assert http("GET", f"{demo.url}/controlnet/model_list") == (200, {"model_list": []})


def test_malformed_bodies_get_fastapi_422(shared_demo):
    status, answer = http("POST", f"{shared_demo.url}/sdapi/v1/txt2img", b"{not json")
    assert status == 422 and answer["detail"][0]["type"] == "value_error.jsondecode"
    status, answer = http("POST", f"{shared_demo.url}/sdapi/v1/txt2img", {"steps": "many"})
    assert status == 422
    assert answer["detail"] == [{"loc": ["body", "steps"], "msg": "value is not a valid integer",
                                 "type": "type_error.integer"}]


def test_unknown_paths_and_methods(shared_demo):
    assert http("GET", f"{shared_demo.url}/sdapi/v1/nothing") == (404, {"detail": "Not Found"})
    assert http("GET", f"{shared_demo.url}/internal/ping") == (404, {"detail": "Not Found"})
    assert http("GET", f"{shared_demo.url}/sdapi/v1/txt2img") == (
        405, {"detail": "Method Not Allowed"})


@pytest.mark.parametrize("path", [
    "samplers", "schedulers", "options", "cmd-flags", "progress", "memory", "loras",
    "embeddings", "upscalers", "sd-vae", "scripts", "latent-upscale-modes", "hypernetworks",
    "face-restorers", "realesrgan-models", "prompt-styles", "script-info", "extensions"])
def test_get_endpoints_answer(shared_demo, path):
    status, answer = http("GET", f"{shared_demo.url}/sdapi/v1/{path}")
    assert status == 200
    assert isinstance(answer, (list, dict))


def test_catalog_endpoints_have_a1111_fields(shared_demo):
    samplers = http("GET", f"{shared_demo.url}/sdapi/v1/samplers")[1]
    assert {"name", "aliases", "options"} <= set(samplers[0])
    assert "Euler a" in [s["name"] for s in samplers]
    schedulers = http("GET", f"{shared_demo.url}/sdapi/v1/schedulers")[1]
    assert "Karras" in [s["label"] for s in schedulers]
    flags = http("GET", f"{shared_demo.url}/sdapi/v1/cmd-flags")[1]
    assert flags["nowebui"] is True and flags["no_hashing"] is True
    memory = http("GET", f"{shared_demo.url}/sdapi/v1/memory")[1]
    assert memory["ram"]["used"] > 0 and memory["cuda"] == {"error": "unavailable"}
    progress = http("GET", f"{shared_demo.url}/sdapi/v1/progress?skip_current_image=true")[1]
    assert progress["progress"] == 0 and progress["state"]["job_count"] == 0


def test_options_round_trip_and_unknown_checkpoint_is_500(spawn, tmp_path):
    baked = tmp_path / "model.safetensors"
    baked.write_bytes(b"demo")
    demo = start_demo(spawn, args=["--ckpt", str(baked)])
    assert http("POST", f"{demo.url}/sdapi/v1/options", {"CLIP_stop_at_last_layers": 2}) == (
        200, None)
    assert http("GET", f"{demo.url}/sdapi/v1/options")[1]["CLIP_stop_at_last_layers"] == 2
    status, answer = http("POST", f"{demo.url}/sdapi/v1/options", {"sd_model_checkpoint": "x"})
    assert status == 500
    assert answer["error"] == "RuntimeError" and answer["errors"] == "model 'x' not found"
    status, _ = http("POST", f"{demo.url}/sdapi/v1/options", {"sd_model_checkpoint": "model"})
    assert status == 200


def test_png_info_reads_the_parameters_back(shared_demo):
    image = http("POST", f"{shared_demo.url}/sdapi/v1/txt2img",
                 {"prompt": "tea", "seed": 9, "steps": 2, "width": 64, "height": 64})[1]["images"][0]
    status, answer = http("POST", f"{shared_demo.url}/sdapi/v1/png-info", {"image": image})
    assert status == 200
    assert answer["parameters"]["Prompt"] == "tea"
    assert answer["parameters"]["Seed"] == "9"


def test_big_images_are_fast_enough(shared_demo):
    started = time.monotonic()
    body = {"steps": 1, "width": 2048, "height": 2048}
    answer = http("POST", f"{shared_demo.url}/sdapi/v1/txt2img", body)[1]
    assert decode_png_b64(answer["images"][0])[:2] == (2048, 2048)
    assert time.monotonic() - started < 10


def test_png_writer_handles_non_latin1_text():
    data = webui.render_png(16, 8, b"x", "un chat \u732b")
    assert read_png(data)[:2] == (16, 8)
    assert webui.png_text_chunks(data)["parameters"] == "un chat \u732b"


# ---- one at a time, progress, interrupt ------------------------------------------------------


def test_generation_is_serialized_and_progress_and_interrupt_work(spawn):
    demo = start_demo(spawn, env={"DEMO_WEBUI_SECONDS_PER_STEP": "0.1"})
    results = {}

    def generate(key, steps):
        started = time.monotonic()
        results[key] = (http("POST", f"{demo.url}/sdapi/v1/txt2img",
                             {"steps": steps, "width": 64, "height": 64, "n_iter": 2}),
                        started, time.monotonic())

    def progress():
        return http("GET", f"{demo.url}/sdapi/v1/progress")[1]

    def running():
        now = progress()
        return now["state"]["job_count"] == 2 and 0 < now["progress"] < 1

    first = threading.Thread(target=generate, args=("first", 10))
    first.start()
    wait_until(running, 30, "the first generation's progress")
    second = threading.Thread(target=generate, args=("second", 2))
    second.start()
    first.join()
    second.join()
    # Sent while the first ran, answered after it: the second waited behind the queue lock.
    assert results["second"][1] < results["first"][2] <= results["second"][2]

    stopper = threading.Thread(target=generate, args=("interrupted", 100))
    stopper.start()
    wait_until(running, 30, "the generation to interrupt")
    assert http("POST", f"{demo.url}/sdapi/v1/interrupt") == (200, {})
    stopper.join(60)
    assert not stopper.is_alive(), "the interrupted generation never answered"
    status, answer = results["interrupted"][0]
    assert status == 200
    # Interrupted during the first of 2 iterations: its image is kept, the second never runs.
    assert len(answer["images"]) == 1
    assert len(json.loads(answer["info"])["all_seeds"]) == 1


# ---- process lifecycle --------------------------------------------------------------------


def test_port_taken_exits_3(spawn):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = spawn([PYTHON, str(DEMO_WEBUI), "--nowebui", "--port", str(port),
                         "--server-name", "127.0.0.1"], cwd=str(DEMO_DIR))
        assert process.wait() == 3
    assert "address already in use" in process.output


def test_sigterm_finishes_in_flight_requests_then_ends_by_sigterm(spawn):
    demo = start_demo(spawn, env={"DEMO_WEBUI_SECONDS_PER_STEP": "0.2"})
    result = {}

    def generate():
        result["answer"] = http("POST", f"{demo.url}/sdapi/v1/txt2img",
                                {"steps": 5, "width": 64, "height": 64})

    client = threading.Thread(target=generate)
    client.start()
    time.sleep(0.3)
    demo.process.signal(signal.SIGTERM)
    # Printed once the listening socket is closed.
    demo.process.wait_for_line("Waiting for application shutdown")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", demo.port), timeout=1).close()
    client.join(10)
    assert result["answer"][0] == 200 and len(result["answer"][1]["images"]) == 1
    # A shell reports 143; Python reports death by the signal.
    assert demo.process.wait() == -signal.SIGTERM
    assert "Finished server process" in demo.process.output


def test_sigint_exits_0(spawn):
    demo = start_demo(spawn)
    demo.process.signal(signal.SIGINT)
    assert demo.process.wait() == 0
    assert "Finished server process" in demo.process.output


def test_sigint_before_bind_exits_0_and_sigterm_kills(spawn):
    for signum, expected in ((signal.SIGINT, 0), (signal.SIGTERM, -signal.SIGTERM)):
        process = spawn([PYTHON, str(DEMO_WEBUI), "--nowebui", "--port", "0"],
                        cwd=str(DEMO_DIR), env={"DEMO_WEBUI_STARTUP_DELAY": "30"})
        process.wait_for_line("stand-in")
        process.signal(signum)
        assert process.wait(10) == expected


def test_listen_binds_all_interfaces_and_server_name_one(spawn):
    demo = start_demo(spawn)
    line = demo.process.wait_for_line("Uvicorn running")
    assert "http://127.0.0.1:" in line
    process = spawn([PYTHON, str(DEMO_WEBUI), "--nowebui", "--listen", "--port", "0"],
                    cwd=str(DEMO_DIR))
    assert "http://0.0.0.0:" in process.wait_for_line("Uvicorn running")


def test_base64_helpers_accept_data_urls():
    png = webui.render_png(8, 8, b"y", "")
    encoded = "data:image/png;base64," + base64.b64encode(png).decode()
    assert webui.decode_image(encoded) == png


def test_exit_at_start_knob_exits_with_its_status_without_binding(spawn):
    process = spawn([PYTHON, str(DEMO_WEBUI), "--nowebui", "--port", "0"], cwd=str(DEMO_DIR),
                    env={"DEMO_WEBUI_EXIT_AT_START": "7"})
    assert process.wait() == 7
    assert "start-up failed (DEMO_WEBUI_EXIT_AT_START=7)" in process.output
    assert "Uvicorn running" not in process.output


def test_ignore_sigterm_knob_leaves_only_sigkill(spawn):
    demo = start_demo(spawn, env={"DEMO_WEBUI_IGNORE_SIGTERM": "1"})
    demo.process.signal(signal.SIGTERM)
    time.sleep(0.5)
    assert demo.process.proc.poll() is None
    assert http("GET", f"{demo.url}/sdapi/v1/sd-models")[0] == 200
    demo.process.signal(signal.SIGKILL)
    assert demo.process.wait() == -signal.SIGKILL
