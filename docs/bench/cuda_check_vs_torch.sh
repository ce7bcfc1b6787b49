#!/usr/bin/env bash
# Reproduces the figures of docs/BENCHMARKS.md, section "GPU: cuda-check vs the Python/torch check".
#
#   docs/bench/cuda_check_vs_torch.sh [WORKER_RUNTIME] [RUNS] [OUT_DIR]
#
# Needs an NVIDIA GPU and python3 with a CUDA build of torch. Records, under OUT_DIR:
#   machine.txt                 date, GPU, driver, Python/torch
#   cuda-check.txt / .json      `worker-runtime cuda-check` without image facts
#   image-facts.json            `worker-runtime facts --python python3`
#   cuda-check-facts.txt/.json  the check reading those facts (IMAGE_FACTS)
#   torch-check.txt             the torch script once (what it prints)
#   bench.json / bench.txt      RUNS alternating runs of each, medians, ratio (bench.py)
#   launcher.log                the launcher with a stand-in WebUI and handler; the handler
#                               prints the launcher's RSS while the WebUI runs
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(realpath "${1:-target/release/worker-runtime}")
runs=${2:-10}
out=${3:-$(mktemp -d)}
mkdir -p "$out"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader 2>&1
  echo "kernel: $(uname -srm)"
  python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)' 2>&1
} > "$out/machine.txt"

"$bin" cuda-check > "$out/cuda-check.txt" 2>&1; echo "exit status: $?" >> "$out/cuda-check.txt"
"$bin" cuda-check --json > "$out/cuda-check.json"

"$bin" facts --python python3 --output "$out/image-facts.json" 2> "$out/facts.log"
echo "exit status: $?" >> "$out/facts.log"
export IMAGE_FACTS="$out/image-facts.json"
"$bin" cuda-check > "$out/cuda-check-facts.txt" 2>&1; echo "exit status: $?" >> "$out/cuda-check-facts.txt"
"$bin" cuda-check --json > "$out/cuda-check-facts.json"

python3 "$here/torch_check.py" > "$out/torch-check.txt" 2>&1; echo "exit status: $?" >> "$out/torch-check.txt"

# The timed runs read the image facts too, as the check does inside the image.
python3 "$here/bench.py" "$bin" "$runs" "$out/bench.json" > "$out/bench.txt" 2>&1

webui=$(mktemp -d)
cp "$here/launcher_rss/webui.py" "$webui/webui.py"
NO_TCMALLOC=1 WEBUI_DIR="$webui" WEBUI_PYTHON=python3 WEBUI_PORT=3917 \
  HANDLER_PATH="$here/launcher_rss/handler.py" HANDLER_PYTHON=python3 HANDLER_START=after-ready \
  timeout 120 "$bin" > "$out/launcher.log" 2>&1
echo "exit status: $?" >> "$out/launcher.log"

for f in machine.txt cuda-check.txt cuda-check-facts.txt facts.log torch-check.txt bench.txt launcher.log; do
  echo "===== $f"; cat "$out/$f"
done
