#!/usr/bin/env bash
# Makes a Docker engine usable on a bare CI or build machine where no engine is
# installed or running, no registry is reachable, and bridge networking is not available.
# Idempotent: installs only what is missing, starts dockerd only when `docker info` fails.
#
# Also installs debootstrap: the container tests build their base image with it (no image can be pulled).
set -euo pipefail

log() { echo "ensure-docker: $*" >&2; }

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
    log "engine already running"
    exit 0
fi

# A dockerd that is starting (e.g. a parallel caller) is waited for, not started twice.
if ! pgrep -x dockerd >/dev/null 2>&1; then
    log_file=/var/log/dockerd-ci.log
    log "starting dockerd (no bridge, no iptables; log: $log_file)"
    # The machine has no bridge networking: containers and builds use --network none or host only.
    # setsid + nohup: the daemon outlives this script and the CI step that called it.
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO setsid nohup dockerd --bridge=none --iptables=false --ip-masq=false \
        >"$log_file" 2>&1 </dev/null &
fi

for _ in $(seq 1 120); do
    if docker info >/dev/null 2>&1; then
        log "engine ready"
        exit 0
    fi
    sleep 0.5
done
log "dockerd did not answer within 60 s; last lines of its log:"
tail -n 20 /var/log/dockerd-ci.log >&2 || true
exit 1
