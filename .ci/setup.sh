#!/usr/bin/env bash
# Installs and starts what the test suite needs on a fresh build machine (Debian 12), idempotently:
# Debian's tcmalloc (the launcher's preload tests read it from the linker cache), and a Docker
# engine for the container tests (.ci/ensure-docker.sh). The Python venv is made by `cargo xtask ci`.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
dpkg -s libgoogle-perftools4 >/dev/null 2>&1 || need+=(libgoogle-perftools4)
command -v cc >/dev/null 2>&1 || need+=(gcc)
if ((${#need[@]})); then
    echo "setup: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

bash .ci/ensure-docker.sh
