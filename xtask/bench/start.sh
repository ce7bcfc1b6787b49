#!/usr/bin/env bash
# The reference for `cargo xtask bench`: the bash start.sh the worker shipped before worker-runtime
# (the launcher worker-runtime replaces), written from its text. The flow is that script's and is
# kept on purpose, since it is what the bench measures: sequential, the WebUI in the background with
# `&` and `$!`, the handler in the foreground, then `kill` and `wait`. Nothing checks that the WebUI
# is up (the handler's own wait loop does, see reference_handler.py), nothing notices a WebUI that
# dies, and `wait` hangs for ever on a WebUI that ignores SIGTERM.
#
# Changes for the bench, none of them to the flow:
# - paths, interpreters and the port come from the environment, defaulting to that script's values, so
#   the bench can point both launchers at the same demo WebUI, handler, free port and temp folders;
# - the CUDA test is skipped when CUDA_CHECK=off (the bench machine has no GPU; worker-runtime runs
#   with CUDA_CHECK=off as well);
# - the bench binds the WebUI to loopback with COMMANDLINE_ARGS (A1111 appends it), as
#   worker-runtime's --server-name does, so that both use the same kind of port.

echo "Worker Initiated"

if [ "${CUDA_CHECK:-on}" != off ]; then
    echo "=============================================="
    echo "RUNNING CUDA COMPATIBILITY TESTS"
    echo "=============================================="

    python /cuda_test.py
    CUDA_TEST_EXIT_CODE=$?

    if [ $CUDA_TEST_EXIT_CODE -eq 0 ]; then
        echo "🎉 CUDA compatibility test PASSED - RTX 5090 ready!"
    elif [ $CUDA_TEST_EXIT_CODE -eq 1 ]; then
        echo "⚠ CUDA test passed with warnings - continuing with reduced performance"
    else
        echo "❌ CUDA compatibility test FAILED"
        echo "❌ RTX 5090 may not be properly supported"
        echo "❌ Check the logs above for details"
        echo "⚠ Attempting to continue anyway..."
    fi
fi

echo "=============================================="
echo "STARTING WEBUI API"
echo "=============================================="

TCMALLOC="$(ldconfig -p | grep -Po "libtcmalloc.so.\d" | head -n 1)"
export LD_PRELOAD="${TCMALLOC}"
export PYTHONUNBUFFERED=true

"${WEBUI_PYTHON:-python}" "${WEBUI_DIR:-/stable-diffusion-webui}/webui.py" \
  --xformers \
  --no-half-vae \
  --skip-python-version-check \
  --skip-torch-cuda-test \
  --skip-install \
  --ckpt-dir "${CKPT_DIR:-/runpod-volume/models/checkpoints}" \
  --lora-dir "${LORA_DIR:-/runpod-volume/models/loras}" \
  --embeddings-dir "${EMBEDDINGS_DIR:-/runpod-volume/models/embeddings}" \
  --ckpt "${MODEL_PATH:-/model.safetensors}" \
  --opt-sdp-attention \
  --disable-safe-unpickle \
  --port "${WEBUI_PORT:-3000}" \
  --api \
  --nowebui \
  --skip-version-check \
  --no-hashing \
  --no-download-sd-model &

WEBUI_PID=$!
echo "WebUI API started with PID: $WEBUI_PID"

echo "=============================================="
echo "STARTING RUNPOD HANDLER"
echo "=============================================="

"${HANDLER_PYTHON:-python}" -u "${HANDLER_PATH:-/handler.py}"

echo "RunPod handler exited, stopping WebUI API..."
kill $WEBUI_PID 2>/dev/null || true
wait $WEBUI_PID 2>/dev/null || true
echo "Shutdown complete."
