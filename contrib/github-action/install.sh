#!/usr/bin/env bash
# Step 1 of the kvpush GitHub Action: get the kvpush binary fast.
#
# Downloads the release asset for this runner (kvpush-linux-x86_64 or
# kvpush-linux-aarch64) and its .sha256, checks the sum, and writes
# `bin=PATH` and `build=false` to $GITHUB_OUTPUT. When no release asset
# fits (another OS or CPU, `version: source`, or the download answers
# 404), writes `build=true` with `cargo-root` and `cargo-key` instead, for
# the cached `cargo install` of build.sh. A checksum mismatch is an error,
# never a reason to fall back.
#
# Environment (set by action.yml from its inputs, never interpolated):
#   KVPUSH_VERSION          `latest`, `vX.Y.Z`, `source`, or empty (the
#                           action's own ref when it is a vX.Y.Z tag, else latest)
#   KVPUSH_ACTION_REF       github.action_ref
#   KVPUSH_ACTION_REPOSITORY github.action_repository (owner/name)
#   KVPUSH_ACTION_PATH      github.action_path (the action's checkout)
#   KVPUSH_DOWNLOAD_BASE    FOR TESTS ONLY: replaces
#                           $GITHUB_SERVER_URL/OWNER/NAME/releases (any URL
#                           curl reads, e.g. file:///tmp/fake/releases)
#   RUNNER_OS, RUNNER_ARCH, RUNNER_TEMP, RUNNER_TOOL_CACHE, GITHUB_OUTPUT
set -euo pipefail

say() { printf 'kvpush-action: %s\n' "$*" >&2; }
fail() { printf '::error title=kvpush action::%s\n' "$*"; exit 1; }
output() { printf '%s=%s\n' "$1" "$2" >>"${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set}"; }
# sha256sum, or macOS's shasum.
sha256() { if command -v sha256sum >/dev/null 2>&1; then sha256sum "$@"; else shasum -a 256 "$@"; fi; }

asset_for_runner() {
    [ "${RUNNER_OS:-}" = Linux ] || return 1
    case "${RUNNER_ARCH:-}" in
        X64) echo kvpush-linux-x86_64 ;;
        ARM64) echo kvpush-linux-aarch64 ;;
        *) return 1 ;;
    esac
}

# The release to download from, or `source`.
resolve_version() {
    local v=${KVPUSH_VERSION:-}
    if [ -z "$v" ]; then
        if [[ ${KVPUSH_ACTION_REF:-} =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]]; then
            v=$KVPUSH_ACTION_REF
        else
            v=latest
        fi
    fi
    case "$v" in
        latest | source) echo "$v" ;;
        v[0-9]*) echo "$v" ;;
        [0-9]*) echo "v$v" ;;
        *) fail "version must be latest, source or a release tag such as v1.2.3, not '$v'" ;;
    esac
}

# Where `cargo install` builds to, and the cache key of that build: the
# action's own sources, so a new action ref means a new build.
plan_build() {
    local src=${KVPUSH_ACTION_PATH:?KVPUSH_ACTION_PATH is not set}
    [ -f "$src/Cargo.toml" ] || fail "no release asset fits this runner and $src has no Cargo.toml to build kvpush from"
    local sum
    sum=$(cd "$src" && find Cargo.toml Cargo.lock src registry-fixtures/Cargo.toml -type f -print0 2>/dev/null |
        LC_ALL=C sort -z | while IFS= read -r -d '' f; do sha256 "$f"; done | sha256 | cut -c1-16)
    local base=${RUNNER_TOOL_CACHE:-${RUNNER_TEMP:?RUNNER_TEMP is not set}}
    output build true
    output cargo-root "$base/kvpush-source/$sum"
    output cargo-key "kvpush-bin-${RUNNER_OS:-os}-${RUNNER_ARCH:-arch}-$sum"
    say "no release binary to use: kvpush will be built from $src (cached by key kvpush-bin-…-$sum)"
}

main() {
    local version asset
    version=$(resolve_version)
    if [ "$version" = source ] || ! asset=$(asset_for_runner); then
        plan_build
        return
    fi
    local base=${KVPUSH_DOWNLOAD_BASE:-}
    if [ -z "$base" ]; then
        [ -n "${KVPUSH_ACTION_REPOSITORY:-}" ] || { say "the action's repository is unknown"; plan_build; return; }
        base="${GITHUB_SERVER_URL:-https://github.com}/$KVPUSH_ACTION_REPOSITORY/releases"
    fi
    local url
    if [ "$version" = latest ]; then
        url="$base/latest/download/$asset"
    else
        url="$base/download/$version/$asset"
    fi

    local dir="${RUNNER_TEMP:?RUNNER_TEMP is not set}/kvpush-bin"
    mkdir -p "$dir"
    say "downloading $url"
    if ! curl -fsSL --retry 3 -o "$dir/kvpush" "$url"; then
        say "no release asset at $url"
        plan_build
        return
    fi
    if ! curl -fsSL --retry 3 -o "$dir/kvpush.sha256" "$url.sha256"; then
        fail "$url has no checksum file $url.sha256: refusing an unchecked binary"
    fi
    local want got
    want=$(awk 'NR == 1 { print $1 }' "$dir/kvpush.sha256")
    got=$(sha256 "$dir/kvpush" | awk '{ print $1 }')
    if ! [[ $want =~ ^[0-9a-f]{64}$ ]]; then
        rm -f "$dir/kvpush"
        fail "$url.sha256 holds no SHA-256 sum"
    fi
    if [ "$want" != "$got" ]; then
        rm -f "$dir/kvpush"
        fail "checksum mismatch for $url: expected sha256 $want, got $got; the download is corrupt or was tampered with"
    fi
    chmod +x "$dir/kvpush"
    say "checksum verified: sha256 $got"
    output build false
    output bin "$dir/kvpush"
}

main "$@"
