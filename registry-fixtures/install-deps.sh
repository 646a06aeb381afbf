#!/usr/bin/env bash
# Install what kvpush's tests, demo and bench need on a Debian-like machine:
# the CNCF distribution registry, skopeo (the independent client that checks
# every push), htpasswd and openssl (auth and TLS registry fixtures), GNU
# gzip (the fixture compresses rules_docker's layers with it, not with flate2),
# GNU time and pigz (make bench), and the tools that build ISA-L from the
# source isal-sys vendors (nasm, autoconf, automake, libtool, make), and
# binutils (objdump, for contrib/kubevirt/check-glibc.sh).
# cargo-fuzz is not installed here: only CI's fuzz step needs it, and
# fuzz/run.sh installs it itself.
# Idempotent: installs only what is missing. Needs root (or sudo) for apt.
set -euo pipefail

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
# make bench: GNU time for CPU and peak memory, pigz as the compression yardstick.
[ -x /usr/bin/time ] || need+=(time)
command -v pigz >/dev/null 2>&1 || need+=(pigz)
command -v gzip >/dev/null 2>&1 || need+=(gzip)
# Building kvpush: isal-sys compiles ISA-L (igzip) with autotools and nasm.
command -v nasm >/dev/null 2>&1 || need+=(nasm)
command -v autoreconf >/dev/null 2>&1 || need+=(autoconf)
command -v automake >/dev/null 2>&1 || need+=(automake)
command -v libtoolize >/dev/null 2>&1 || need+=(libtool)
command -v make >/dev/null 2>&1 || need+=(make)
command -v cc >/dev/null 2>&1 || need+=(gcc)
# contrib/kubevirt/check-glibc.sh reads the binary's symbol versions.
command -v objdump >/dev/null 2>&1 || need+=(binutils)

if ((${#need[@]})); then
    echo "install-deps: installing ${need[*]} with apt-get" >&2
    sudo=""
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to install ${need[*]}" >&2; exit 1; }
        sudo=sudo
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found: install a Rust toolchain (rustup, Rust >= 1.85) first" >&2
    exit 1
fi
