#!/usr/bin/env bash
# Bounded libFuzzer run of every fuzz target, as CI does it:
#
#   fuzz/run.sh [SECONDS_PER_TARGET]     (default 30)
#
# Installs cargo-fuzz from crates.io when it is missing (a few minutes, once). The
# targets are built with AddressSanitizer, cargo-fuzz's default, which wants
# nightly's -Z flags: on a stable toolchain RUSTC_BOOTSTRAP=1 allows them
# (stable ships the sanitizer runtimes). KVPUSH_FUZZ_SANITIZER=none builds
# without. The fuzzers look for panics, hangs, runaway memory and, through
# ASan, memory errors in unsafe dependency code (zlib-rs, tar). The seed
# corpus comes from `kvpush-fixtures fuzz-seeds`; what
# the fuzzers add to it stays in fuzz/corpus/ (ignored by git), and a crash
# is saved in fuzz/artifacts/TARGET/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-30}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz/run.sh: installing cargo-fuzz with cargo install (a few minutes, once)" >&2
    cargo install cargo-fuzz --locked --quiet
fi
if ! rustc --version | grep -q nightly; then
    export RUSTC_BOOTSTRAP=1
fi
sanitizer=(--sanitizer "${KVPUSH_FUZZ_SANITIZER:-address}")
# cc passes the sanitizer on to C code, and ISA-L's configure (isal-sys)
# then fails to link its static test program ("C compiler cannot create
# executables"): ISA-L's C and assembly are built without it.
export CFLAGS="${CFLAGS:-} -fno-sanitize=all"

cargo run -q --manifest-path ../Cargo.toml -p kvpush-fixtures -- fuzz-seeds corpus
for target in tarball manifest deploy_manifest; do
    echo "fuzz/run.sh: $target for ${secs}s" >&2
    cargo fuzz run "${sanitizer[@]}" "$target" "corpus/$target" -- \
        -max_total_time="$secs" -max_len=16384 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
done
echo "fuzz: 3 passed, 0 failed"
