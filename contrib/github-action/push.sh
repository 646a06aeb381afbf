#!/usr/bin/env bash
# Step 3 of the kvpush GitHub Action: run kvpush with the action's inputs.
#
# kvpush itself appends the step summary to $GITHUB_STEP_SUMMARY and
# `digests={...}` to $GITHUB_OUTPUT (GITHUB_ACTIONS=true); this script adds
# `json=PATH`, the `--output json` document. The password goes to kvpush
# on standard input (--password-stdin) from a shell variable: printf is a
# builtin, so it is on no command line, and kvpush never logs it.
#
# Environment (set by action.yml from its inputs, never interpolated):
#   KVPUSH_BIN               the binary (install.sh or build.sh)
#   INPUT_REGISTRY           required
#   INPUT_TAGS               newline or comma separated; empty: kvpush's default
#   INPUT_TARGETS            whitespace or comma separated; default all
#   INPUT_WORKSPACE          --workspace
#   INPUT_USERNAME, INPUT_PASSWORD   optional, both or neither
#   INPUT_ARCH_BIN           ARCH=PATH, one per line (or comma separated)
#   INPUT_MANIFEST_ARCHES    e.g. amd64,arm64,s390x: run `kvpush manifest`
#   INPUT_CACHE_DIR          --cache-dir
#   INPUT_ARGS               extra flags, split on whitespace (no quoting)
#   RUNNER_TEMP, GITHUB_OUTPUT, GITHUB_STEP_SUMMARY
set -euo pipefail

fail() { printf '::error title=kvpush action::%s\n' "$*"; exit 1; }

# Words of a list given one per line, comma or whitespace separated.
words() { tr ',\n\r\t' '    ' <<<"$1"; }
# Words of extra flags: whitespace separated (commas kept, --arch a,b).
flags() { tr '\n\r\t' '   ' <<<"$1"; }

bin=${KVPUSH_BIN:?KVPUSH_BIN is not set: the install step did not run}
registry=${INPUT_REGISTRY:-}
[ -n "$registry" ] || fail "the registry input is required (e.g. quay.io/kubevirt)"

# Read the password into a shell variable and drop it from the environment
# kvpush inherits.
password=${INPUT_PASSWORD:-}
unset INPUT_PASSWORD
username=${INPUT_USERNAME:-}
if [ -n "$password" ] && [ -z "$username" ]; then
    fail "password is set but username is not: give both, or neither to use docker/login-action's credentials"
fi
if [ -z "$password" ] && [ -n "$username" ]; then
    fail "username is set but password is not: give both, or neither to use docker/login-action's credentials"
fi

argv=()
if [ -n "${INPUT_MANIFEST_ARCHES:-}" ]; then
    [ -z "${INPUT_ARCH_BIN:-}" ] ||
        fail "arch-bin pushes each architecture and then the lists; manifest-arches only lists images already pushed: set one of them"
    argv+=(manifest)
fi
read -ra targets <<<"$(words "${INPUT_TARGETS:-all}")"
((${#targets[@]})) || targets=(all)
argv+=("${targets[@]}" --registry "$registry")
read -ra tags <<<"$(words "${INPUT_TAGS:-}")"
for tag in "${tags[@]}"; do
    argv+=(--tag "$tag")
done
[ -z "${INPUT_WORKSPACE:-}" ] || argv+=(--workspace "$INPUT_WORKSPACE")
read -ra arch_bins <<<"$(words "${INPUT_ARCH_BIN:-}")"
for pair in "${arch_bins[@]}"; do
    argv+=(--arch-bin "$pair")
done
[ -z "${INPUT_MANIFEST_ARCHES:-}" ] || argv+=(--arch "$(words "$INPUT_MANIFEST_ARCHES" | tr -s ' ' ',' | sed 's/^,//; s/,$//')")
[ -z "${INPUT_CACHE_DIR:-}" ] || argv+=(--cache-dir "$INPUT_CACHE_DIR")
read -ra extra <<<"$(flags "${INPUT_ARGS:-}")"
argv+=("${extra[@]}")

json=$(mktemp "${RUNNER_TEMP:?RUNNER_TEMP is not set}/kvpush-XXXXXX.json")
argv+=(--output json)
printf 'json=%s\n' "$json" >>"${GITHUB_OUTPUT:?GITHUB_OUTPUT is not set}"

[ -z "$password" ] || argv+=(--username "$username" --password-stdin)

export GITHUB_ACTIONS=true
printf 'kvpush-action: kvpush %s\n' "${argv[*]}" >&2
status=0
if [ -n "$password" ]; then
    printf '%s\n' "$password" | "$bin" "${argv[@]}" >"$json" || status=$?
else
    "$bin" "${argv[@]}" >"$json" || status=$?
fi
exit "$status"
