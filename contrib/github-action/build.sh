#!/usr/bin/env bash
# Step 2 of the kvpush GitHub Action, only when install.sh found no release
# asset: `cargo install --locked` kvpush from the action's own checkout into
# KVPUSH_CARGO_ROOT (which action.yml restores from and saves to the Actions
# cache, so the build happens once per action version and runner kind).
# Writes `bin=PATH` to $GITHUB_OUTPUT.
#
# Environment: KVPUSH_ACTION_PATH (github.action_path), KVPUSH_CARGO_ROOT
# (install.sh's `cargo-root` output), GITHUB_OUTPUT.
set -euo pipefail

say() { printf 'kvpush-action: %s\n' "$*" >&2; }
fail() { printf '::error title=kvpush action::%s\n' "$*"; exit 1; }

root=${KVPUSH_CARGO_ROOT:?KVPUSH_CARGO_ROOT is not set}
src=${KVPUSH_ACTION_PATH:?KVPUSH_ACTION_PATH is not set}

if [ -x "$root/bin/kvpush" ]; then
    say "using the cached build $root/bin/kvpush"
else
    command -v cargo >/dev/null 2>&1 ||
        fail "no release binary fits this runner and cargo is not installed: install a Rust toolchain (>= 1.85) before this step"
    # ISA-L (igzip) is built from source with nasm and autotools.
    if ! command -v nasm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" = 0 ] || sudo=sudo
        say "installing ISA-L's build tools (nasm, autoconf, automake, libtool)"
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq --no-install-recommends nasm autoconf automake libtool make gcc >/dev/null
    fi
    say "building kvpush from $src (cargo install --locked)"
    cargo install --locked --path "$src" --root "$root"
fi
printf 'bin=%s\n' "$root/bin/kvpush" >>"${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set}"
