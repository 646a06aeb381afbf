#!/usr/bin/env bash
# Stop a registry started by start-registry.sh.
#
#   stop-registry.sh STATE_DIR
set -euo pipefail
state=${1:?usage: stop-registry.sh STATE_DIR}

if [ -f "$state/watcher.pid" ]; then
    kill "$(cat "$state/watcher.pid")" 2>/dev/null || true
    rm -f "$state/watcher.pid"
fi
if [ ! -f "$state/registry.pid" ]; then
    exit 0
fi
pid=$(cat "$state/registry.pid")
if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -9 "$pid" 2>/dev/null || true
fi
rm -f "$state/registry.pid"
