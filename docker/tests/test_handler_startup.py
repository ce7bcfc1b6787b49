"""docker/handler.py's start-up: the gate's `waiting` line, and runpod's deployed-mode fitness
checks, run before the gate (memory, disk, network) or turned off (the GPU and torch ones).

No test lets runpod's network check dial out: it is stubbed, never reached (an earlier check
fails), or skipped with RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true.
"""

import json
import os
import socket
import stat

import pytest
from conftest import HANDLER, PYTHON, free_port, load_module

TEST_INPUT = {"input": {"steps": 1, "width": 64, "height": 64}}


@pytest.fixture
def spies(tmp_path):
    """An `nvidia-smi` that claims a GPU and a `torch` package, both recording their use."""
    records = tmp_path / "records"
    records.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\ntouch {records}/nvidia-smi\n"
                   "echo 'NVIDIA-SMI 570.00  Driver Version: 570.00  CUDA Version: 12.8'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    torch = tmp_path / "pkgs" / "torch"
    torch.mkdir(parents=True)
    (torch / "__init__.py").write_text(
        f"open({str(records / 'torch')!r}, 'w').close()\n"
        "class cuda:\n    @staticmethod\n    def is_available():\n        return True\n")
    return {
        "records": records,
        "env": {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(tmp_path / "pkgs")},
    }


def deployed_env(spies, **extra):
    """runpod's deployed mode, with every URL on a closed loopback port."""
    closed = f"http://127.0.0.1:{free_port()}"
    env = {"WEBUI_API_URL": closed, "RUNPOD_WEBHOOK_GET_JOB": f"{closed}/job",
           "RUNPOD_WEBHOOK_PING": f"{closed}/ping", "RUNPOD_POD_ID": "test-worker",
           "RUNPOD_AI_API_KEY": None, "RUNPOD_SKIP_GPU_CHECK": None,
           "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": None, "RUNPOD_LOG_LEVEL": "DEBUG",
           "HANDLER_RESULT_DIR": None}
    env.update(spies["env"])
    env.update(extra)
    return env


def gated(spawn, env, argv=()):
    ours, theirs = socket.socketpair()
    process = spawn([PYTHON, "-u", str(HANDLER), *argv],
                    env=dict(env, WORKER_READY_FD=str(theirs.fileno())),
                    pass_fds=(theirs.fileno(),))
    theirs.close()
    return process, ours


def test_the_handler_says_waiting_at_a_socket_gate_then_serves(spawn, shared_demo):
    env = {"WEBUI_API_URL": shared_demo.url, "RUNPOD_WEBHOOK_GET_JOB": None,
           "RUNPOD_LOG_LEVEL": None, "HANDLER_RESULT_DIR": None}
    process, gate = gated(spawn, env, ["--test_input", json.dumps(TEST_INPUT)])
    assert gate.makefile("rb").readline() == b"waiting\n"
    assert "handler: serving" not in process.output
    gate.sendall(b"ready\n")
    gate.close()
    assert process.wait(60) == 0, process.output
    assert "Job local_test completed successfully" in process.output


def test_deployed_mode_runs_no_gpu_or_torch_check_after_the_gate(spawn, spies):
    process, gate = gated(spawn, deployed_env(spies, RUNPOD_SKIP_AUTO_SYSTEM_CHECKS="true"))
    assert gate.makefile("rb").readline() == b"waiting\n"
    gate.sendall(b"ready\n")
    process.wait_for_line("handler: serving")
    # runpod's own run of the checks, inside serverless.start(), finds nothing left to do...
    process.wait_for_line("No fitness checks registered, skipping.", timeout=60)
    # ...and never asked for the GPU (its GPU test binary) nor imported torch (a CUDA context).
    assert not (spies["records"] / "nvidia-smi").exists(), process.output
    assert not (spies["records"] / "torch").exists(), process.output
    assert "torch is imported" not in process.output


def test_a_failed_check_ends_the_handler_before_the_gate_with_runpods_reason(spawn, spies):
    # Memory is checked first: it fails, so the network check never runs.
    process, gate = gated(spawn, deployed_env(spies, RUNPOD_MIN_MEMORY_GB="1000000"))
    assert process.wait(60) == 1, process.output
    assert "Fitness check failed: _memory_check | RuntimeError: Insufficient memory" \
        in process.output
    assert "handler: serving" not in process.output
    assert not (spies["records"] / "torch").exists(), process.output
    assert not (spies["records"] / "nvidia-smi").exists(), process.output
    gate.close()


def test_checks_run_once_before_the_gate_and_are_not_left_for_runpod(monkeypatch):
    handler = load_module("worker_handler_startup", HANDLER)
    from runpod.serverless.modules import rp_fitness, rp_system_fitness

    ran = []

    async def network():
        ran.append("network")

    monkeypatch.setattr(rp_system_fitness, "_check_memory_availability",
                        lambda: ran.append("memory"))
    monkeypatch.setattr(rp_system_fitness, "_check_disk_space", lambda: ran.append("disk"))
    monkeypatch.setattr(rp_system_fitness, "_check_network_connectivity", network)
    monkeypatch.setitem(rp_fitness._registration_state, "gpu_check", False)
    monkeypatch.setitem(rp_fitness._registration_state, "system_checks", False)
    monkeypatch.setenv("RUNPOD_WEBHOOK_GET_JOB", "http://127.0.0.1:9/job")
    monkeypatch.delenv("RUNPOD_SKIP_AUTO_SYSTEM_CHECKS", raising=False)
    monkeypatch.delenv("RUNPOD_SKIP_GPU_CHECK", raising=False)

    handler.runpod_checks_before_gate()

    assert ran == ["memory", "disk", "network"]
    assert rp_fitness._fitness_checks == []
    assert os.environ["RUNPOD_SKIP_AUTO_SYSTEM_CHECKS"] == "true"
    assert os.environ["RUNPOD_SKIP_GPU_CHECK"] == "true"
