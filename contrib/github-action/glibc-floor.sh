#!/usr/bin/env bash
# The glibc floor of a Linux binary: prints the highest GLIBC_x.y symbol
# version it needs, and fails when that is above MAX (default 2.34, the
# glibc of KubeVirt's CentOS Stream 9 builder, where kvpush must run).
# Used by the release workflow on every binary it publishes.
#
# usage: glibc-floor.sh BINARY [MAX]
set -euo pipefail

bin=${1:?usage: glibc-floor.sh BINARY [MAX]}
max=${2:-2.34}
[ -f "$bin" ] || { echo "glibc-floor: $bin: no such file" >&2; exit 2; }

highest=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/^GLIBC_//' | sort -uV | tail -n 1)
if [ -z "$highest" ]; then
    echo "glibc-floor: $bin needs no versioned glibc symbol"
    exit 0
fi
echo "glibc-floor: $bin needs glibc >= $highest (allowed: <= $max)"
if [ "$(printf '%s\n%s\n' "$highest" "$max" | sort -V | tail -n 1)" != "$max" ]; then
    echo "glibc-floor: $bin needs glibc $highest, above $max; these symbols are too new:" >&2
    objdump -T "$bin" | grep -E "GLIBC_$highest([^0-9.]|\$)" | awk '{ print "  " $NF }' | sort -u >&2
    exit 1
fi
