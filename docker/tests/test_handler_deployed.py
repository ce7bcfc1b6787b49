"""docker/handler.py in runpod's deployed mode, as on RunPod: the SDK takes jobs from a job-take
URL and posts each result to a job-done URL (RUNPOD_WEBHOOK_GET_JOB / RUNPOD_WEBHOOK_POST_OUTPUT).
Here both point at a control-plane double on loopback, so a test sees exactly what RunPod would
receive: the output, the error, and whether the worker asked to be replaced (stopPod)."""

import base64
import json
import signal
import urllib.request

import pytest
from conftest import CONTROL_PLANE_WORKER_ID, HANDLER, PYTHON, free_port, png_b64, read_png, start_demo

SMALL = {"steps": 1, "width": 64, "height": 64}
WORKER_ID = CONTROL_PLANE_WORKER_ID


def start_worker(spawn, plane, webui_url, **env):
    full = {"WEBUI_API_URL": webui_url, "WORKER_READY_FD": None, "HANDLER_RESULT_DIR": None,
            "RUNPOD_LOG_LEVEL": None, "RUNPOD_DEBUG_LEVEL": None, "HANDLER_MAX_OUTPUT_MB": None,
            "BUCKET_ENDPOINT_URL": None, "BUCKET_ACCESS_KEY_ID": None,
            "BUCKET_SECRET_ACCESS_KEY": None, "BUCKET_NAME": None}
    full.update(plane.env())
    full.update(env)
    process = spawn([PYTHON, "-u", str(HANDLER)], env=full)
    process.wait_for_line("handler: serving")
    return process


def stop_worker(process):
    process.signal(signal.SIGTERM)
    assert process.wait(30) == 0, process.output


def test_bad_jobs_fail_alone_and_the_worker_stays(spawn, control_plane, fake_proxy):
    demo = start_demo(spawn, env={"DEMO_WEBUI_ACCESS_LOG": "0"})
    worker = start_worker(spawn, control_plane, demo.url, HTTP_PROXY=fake_proxy.url,
                          http_proxy=fake_proxy.url)
    not_an_image = base64.b64encode(b"plain text, not an image").decode()
    # Each of these made A1111 answer 500, and the worker asked RunPod to replace it.
    failing = {
        "bad-image": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
                      "payload": dict(SMALL, init_images=[not_an_image])},
        "url-image": {"api": {"method": "POST", "endpoint": "/sdapi/v1/img2img"},
                      "payload": dict(SMALL, init_images=["http://127.0.0.1:9/a.png"])},
        "bad-option": {"api": {"method": "POST", "endpoint": "/sdapi/v1/options"},
                       "payload": {"outdir_samples": "/runpod-volume"}},
        "sampler": dict(SMALL, sampler_name="No Such Sampler"),
        "typo": {"promt": "a cat"},
        "server-kill": {"api": {"method": "POST", "endpoint": "/sdapi/v1/server-kill"}},
    }
    for job_id, job_input in failing.items():
        posted, _ = control_plane.run(job_id, job_input)
        assert "error" in posted and "stopPod" not in posted, (job_id, posted)
        assert "rpa_TESTKEY" not in json.dumps(posted)
    posted, _ = control_plane.run("typo-check", {"promt": "a cat"})
    assert "did you mean prompt?" in posted["error"]

    # A1111 answers null: the job still has an output.
    posted, _ = control_plane.run("refresh", {"api": {"method": "POST",
                                                      "endpoint": "/sdapi/v1/refresh-checkpoints"}})
    assert posted == {"output": {"ok": True}}
    posted, _ = control_plane.run("upscalers", {"api": {"method": "GET",
                                                        "endpoint": "/sdapi/v1/upscalers"}})
    assert "Lanczos" in [u["name"] for u in posted["output"]]
    # HTTP_PROXY is set for the worker: the WebUI is still reached directly.
    posted, _ = control_plane.run("good", dict(SMALL, prompt="a lighthouse", seed=3))
    assert read_png(base64.b64decode(posted["output"]["images"][0]))[:2] == (64, 64)
    assert fake_proxy.requests == []
    stop_worker(worker)


def test_a_webui_that_is_gone_makes_runpod_replace_the_worker(spawn, control_plane):
    demo = start_demo(spawn, env={"DEMO_WEBUI_ACCESS_LOG": "0"})
    worker = start_worker(spawn, control_plane, demo.url)
    demo.process.kill()
    posted, _ = control_plane.run("gone", SMALL)
    assert posted["stopPod"] is True
    assert posted["error"] == (f"webui: cannot reach {demo.url} for POST /sdapi/v1/txt2img: "
                               "connection refused")
    stop_worker(worker)


def test_an_answer_too_big_for_runpod_is_a_small_clear_error(spawn, control_plane):
    demo = start_demo(spawn, env={"DEMO_WEBUI_ACCESS_LOG": "0"})
    worker = start_worker(spawn, control_plane, demo.url, HANDLER_MAX_OUTPUT_MB="0.2")
    posted, size = control_plane.run("big", dict(SMALL, width=512, height=512, batch_size=8))
    assert posted["error"].startswith("output: the result is ")
    assert "over HANDLER_MAX_OUTPUT_MB=0.2" in posted["error"]
    assert "stopPod" not in posted and "output" not in posted
    assert size < 2000  # the images were not posted
    stop_worker(worker)


@pytest.fixture
def bucket(spawn):
    """moto's standalone S3 server on loopback, with one bucket."""
    import boto3

    port = free_port()
    server = spawn([PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                   env={"HTTP_PROXY": None, "http_proxy": None})
    server.wait_for_line("Running on")
    settings = {"BUCKET_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                "BUCKET_ACCESS_KEY_ID": "test-access-key", "BUCKET_SECRET_ACCESS_KEY":
                "test-secret-key-0123", "BUCKET_NAME": "worker-images"}
    client = boto3.client("s3", endpoint_url=settings["BUCKET_ENDPOINT_URL"],
                          aws_access_key_id="test-access-key",
                          aws_secret_access_key="test-secret-key-0123", region_name="us-east-1")
    client.create_bucket(Bucket="worker-images")
    return settings, client


def test_with_a_bucket_images_are_uploaded_and_returned_as_urls(spawn, control_plane, bucket):
    settings, client = bucket
    demo = start_demo(spawn, env={"DEMO_WEBUI_ACCESS_LOG": "0"})
    # A limit the images themselves would pass: with a bucket only URLs are posted.
    worker = start_worker(spawn, control_plane, demo.url, HANDLER_MAX_OUTPUT_MB="0.05",
                          **settings)
    job = dict(SMALL, width=256, height=192, batch_size=2, n_iter=2, prompt="a harbour")
    posted, size = control_plane.run("job-1", job)
    assert "error" not in posted, posted
    urls = posted["output"]["images"]
    assert len(urls) == 4 and all(u.startswith(settings["BUCKET_ENDPOINT_URL"]) for u in urls)
    assert posted["output"]["info"]["all_seeds"][:1] == [posted["output"]["info"]["seed"]]
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="worker-images")["Contents"])
    assert keys == ["job-1/0.png", "job-1/1.png", "job-1/2.png", "job-1/3.png"]
    for url in urls:
        with urllib.request.urlopen(url, timeout=10) as answer:
            assert answer.headers["Content-Type"] == "image/png"
            assert read_png(answer.read())[:2] == (256, 192)
    assert settings["BUCKET_SECRET_ACCESS_KEY"] not in worker.output
    stop_worker(worker)


def test_a_bucket_that_refuses_uploads_fails_the_job_not_the_worker(spawn, control_plane, bucket):
    settings, _ = bucket
    demo = start_demo(spawn, env={"DEMO_WEBUI_ACCESS_LOG": "0"})
    worker = start_worker(spawn, control_plane, demo.url,
                          **dict(settings, BUCKET_NAME="no-such-bucket"))
    posted, _ = control_plane.run("job-2", SMALL)
    assert posted["error"].startswith("bucket: uploading job-2/0.png to no-such-bucket at "
                                      f"{settings['BUCKET_ENDPOINT_URL']} failed: ")
    assert "stopPod" not in posted
    assert settings["BUCKET_SECRET_ACCESS_KEY"] not in json.dumps(posted)
    stop_worker(worker)


@pytest.fixture
def fake_proxy(fake_server):
    return fake_server()


def test_png_b64_helper_is_a_real_png():
    assert read_png(base64.b64decode(png_b64(4, 3)))[:2] == (4, 3)
