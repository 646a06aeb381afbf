#!/usr/bin/env bash
# Start a CNCF distribution registry (docker-registry) on loopback.
#
#   start-registry.sh KIND STATE_DIR [PORT]
#
# KIND: plain | htpasswd | tls | htpasswd-tls | readonly | token (see registry/gen-config.sh).
# Writes STATE_DIR/config.yml, starts `docker-registry serve` in the
# background (log: STATE_DIR/registry.log, both the access log and the app
# log; pid: STATE_DIR/registry.pid), waits until GET /v2/ answers 200 or 401
# and prints "127.0.0.1:PORT" (also in STATE_DIR/addr). Without PORT a free
# port is chosen. Stop it with stop-registry.sh STATE_DIR.
#
# If KVPUSH_REGISTRY_WATCH_PID is set, a watcher kills the registry when that
# process exits (so a crashed test run leaves nothing behind).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
kind=${1:?usage: start-registry.sh KIND STATE_DIR [PORT]}
state=${2:?usage: start-registry.sh KIND STATE_DIR [PORT]}
want_port=${3:-}

if ! command -v docker-registry >/dev/null 2>&1; then
    echo "start-registry.sh: docker-registry not found; install the Debian package 'docker-registry' (apt-get install docker-registry)" >&2
    exit 1
fi
if ! command -v curl >/dev/null 2>&1; then
    echo "start-registry.sh: curl not found; install the Debian package 'curl'" >&2
    exit 1
fi

mkdir -p "$state"
state=$(cd "$state" && pwd)

if [ -f "$state/registry.pid" ] && kill -0 "$(cat "$state/registry.pid")" 2>/dev/null; then
    echo "start-registry.sh: a registry is already running for $state (pid $(cat "$state/registry.pid"))" >&2
    exit 1
fi

port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

pick_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        if ! port_in_use "$p"; then
            echo "$p"
            return 0
        fi
    done
    echo "start-registry.sh: no free loopback port found" >&2
    return 1
}

scheme=http
curl_opts=(-s -o /dev/null -w '%{http_code}' --max-time 2)
case "$kind" in tls | htpasswd-tls) scheme=https ;; esac

attempts=1
[ -z "$want_port" ] && attempts=5
for attempt in $(seq 1 "$attempts"); do
    port=${want_port:-$(pick_port)}
    "$here/registry/gen-config.sh" "$kind" "$state" "$port"
    [ "$scheme" = https ] && curl_opts+=(--cacert "$state/ca.crt")
    : >"$state/registry.log"
    docker-registry serve "$state/config.yml" </dev/null >>"$state/registry.log" 2>&1 &
    pid=$!
    echo "$pid" >"$state/registry.pid"
    ready=""
    for _ in $(seq 1 200); do
        if ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        code=$(curl "${curl_opts[@]}" "$scheme://127.0.0.1:$port/v2/" || true)
        if [ "$code" = 200 ] || [ "$code" = 401 ]; then
            ready=1
            break
        fi
        sleep 0.05
    done
    if [ -n "$ready" ]; then
        break
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$state/registry.pid"
    if grep -q "address already in use" "$state/registry.log" && [ "$attempt" -lt "$attempts" ]; then
        continue
    fi
    echo "start-registry.sh: registry ($kind) did not come up on 127.0.0.1:$port; log follows" >&2
    tail -n 30 "$state/registry.log" >&2
    exit 1
done

if [ -n "${KVPUSH_REGISTRY_WATCH_PID:-}" ]; then
    (
        trap '' HUP
        while kill -0 "$KVPUSH_REGISTRY_WATCH_PID" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do
            sleep 1
        done
        kill "$pid" 2>/dev/null || true
    ) </dev/null >/dev/null 2>&1 &
    echo $! >"$state/watcher.pid"
fi

echo "127.0.0.1:$port" >"$state/addr"
echo "127.0.0.1:$port"
