#!/usr/bin/env bash
# Print the highest GLIBC_x.y symbol version a binary needs, and fail when
# it is above what KubeVirt's builder image has (CentOS Stream 9: glibc
# 2.34), so that the kvpush binary runs inside hack/dockerized.
#
#   contrib/kubevirt/check-glibc.sh target/release/kvpush [MAX]   # MAX default 2.34
#
# Needs objdump or readelf (binutils). A static binary (musl) needs no
# glibc: it passes.
set -euo pipefail

bin=${1:?usage: check-glibc.sh BINARY [MAX_GLIBC_VERSION]}
max=${2:-2.34}
[ -f "$bin" ] || { echo "check-glibc.sh: no file $bin" >&2; exit 2; }

if command -v objdump >/dev/null 2>&1; then
    symbols=$(objdump -T "$bin" 2>/dev/null || true)
elif command -v readelf >/dev/null 2>&1; then
    symbols=$(readelf --dyn-syms -W "$bin" 2>/dev/null || true)
else
    echo "check-glibc.sh: needs objdump or readelf (install binutils)" >&2
    exit 2
fi

# Every GLIBC_x.y[.z] the dynamic symbols name, highest last.
highest=$(grep -oE 'GLIBC_[0-9]+(\.[0-9]+)+' <<<"$symbols" | sed 's/^GLIBC_//' | sort -u -V | tail -n 1 || true)
if [ -z "$highest" ]; then
    echo "$bin needs no versioned glibc symbol (static or not linked against glibc)"
    exit 0
fi
echo "$bin needs GLIBC_$highest (limit GLIBC_$max)"
if [ "$(printf '%s\n%s\n' "$highest" "$max" | sort -V | tail -n 1)" != "$max" ]; then
    echo "check-glibc.sh: $bin needs glibc $highest, above $max: it will not run in KubeVirt's builder (CentOS Stream 9); build it on an older glibc (e.g. in the builder itself, or with cargo zigbuild --target x86_64-unknown-linux-gnu.2.34) or for musl" >&2
    exit 1
fi
