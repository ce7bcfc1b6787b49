#!/usr/bin/env bash
# The real A1111 under worker-runtime on a GPU machine without network: the figures of
# docs/BENCHMARKS.md, section "GPU: the real WebUI, first job after ready".
#
#   docs/bench/real_webui_gpu/run.sh WORKER_RUNTIME A1111_SOURCE_TARBALL WHEEL_DIR ROUNDS OUT_DIR [MODES]
#
# The machine's python3 must hold a CUDA torch; A1111's other packages come as wheels (for that
# Python) from WHEEL_DIR, installed into a private folder. Makes the offline Hugging Face files
# and an SD 1.5-sized checkpoint with random weights (the project's own scripts), then runs
# first_job.py: ROUNDS of MODES (first_job.py's argument; default WEBUI_READY=api and warmup).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
runtime=$(realpath "$1"); tarball=$(realpath "$2"); wheels=$(realpath "$3"); rounds=$4; out=$5
modes=${6:-api,warmup}
work=$(mktemp -d)
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$work/site" "$wheels"/*.whl
tar -C "$work" -xzf "$tarball"
# A1111 imports pillow_avif only to register AVIF images; when its wheel is not carried (it is
# 7.7 MB of a 64 MiB allowance), an empty module stands in: no job here reads or writes AVIF.
if [ ! -d "$work/site/pillow_avif" ]; then
  mkdir -p "$work/site/pillow_avif" && : > "$work/site/pillow_avif/__init__.py"
fi
export PYTHONPATH="$work/site:$work/CLIP"
export HF_HOME="$work/hf" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 "$root/xtask/a1111/hf_clip_cache.py" "$HF_HOME" 2>&1 | tail -1
webui="$work/stable-diffusion-webui"
mkdir -p "$work/models" "$work/volume" "$work/data/models"
cp -r "$webui/models/VAE-approx" "$work/data/models/"
SECONDS=0
python3 "$root/xtask/a1111/test_checkpoint.py" "$webui" "$webui/configs/v1-inference.yaml" 1 "$work/models/sd15.safetensors" 2>&1 | tail -1
echo "checkpoint made in ${SECONDS} s"
cp "$webui/configs/v1-inference.yaml" "$work/models/sd15.yaml"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader
  python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)'
} > "$out/machine.txt"
export WEBUI_DIR="$webui" WEBUI_PYTHON=python3 MODEL_PATH="$work/models/sd15.safetensors"
export CKPT_DIR="$work/volume" LORA_DIR="$work/volume" EMBEDDINGS_DIR="$work/volume"
export CUDA_CHECK=warn WEBUI_EXTRA_ARGS="--data-dir $work/data --disable-nan-check"
LOG_DIR="$out" python3 "$here/first_job.py" "$runtime" "$root/xtask/bench/idle_handler.py" "$rounds" "$modes" | tee "$out/first_job.jsonl"
