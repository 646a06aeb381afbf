#!/usr/bin/env bash
# Drop-in replacement for KubeVirt's hack/bazel-push-images.sh, on any
# branch: rules_docker (container_push / docker_push), rules_oci (oci_push)
# or rules_img (image_push) era, or a BUILD.bazel mixing them.
#
# Copy it over hack/bazel-push-images.sh; `make push` (run inside
# hack/dockerized) then does ONE `bazel build` of what the push targets need
# and ONE kvpush run, instead of one `bazel run` per target and tag.
#
# Same inputs as the original: PUSH_TARGETS, DOCKER_PREFIX, DOCKER_TAG,
# DOCKER_TAG_ALT, IMAGE_PREFIX, IMAGE_PREFIX_ALT, ARCHITECTURE (or
# BUILD_ARCH), DIGESTS_DIR (and hack/common.sh, hack/config.sh when they
# exist). Same outputs: the images at the same references, and in
# ${DIGESTS_DIR}/${ARCHITECTURE} the files the era's script left there.
#
# kvpush is taken from $KVPUSH, else _out/kvpush in the tree (where
# hack/dockerized's rsync brings it into the builder), else PATH. Extra
# kvpush flags: $KVPUSH_FLAGS (e.g. "--jobs 8 --insecure").
set -euo pipefail

# KubeVirt's own settings (docker_prefix, docker_tag, ARCHITECTURE,
# DIGESTS_DIR...), as the original sources them.
for f in hack/common.sh hack/config.sh; do
    # shellcheck disable=SC1090
    if [ -f "$f" ]; then source "$f"; fi
done

docker_prefix=${docker_prefix:-${DOCKER_PREFIX:-kubevirt}}
docker_tag=${docker_tag:-${DOCKER_TAG:-latest}}
docker_tag_alt=${docker_tag_alt:-${DOCKER_TAG_ALT:-}}
image_prefix=${image_prefix:-${IMAGE_PREFIX:-}}
image_prefix_alt=${image_prefix_alt:-${IMAGE_PREFIX_ALT:-}}
ARCHITECTURE=${ARCHITECTURE:-${BUILD_ARCH:-$(uname -m)}}
ARCHITECTURE=${ARCHITECTURE#crossbuild-}
DIGESTS_DIR=${DIGESTS_DIR:-_out/digests}

if [ -n "${KVPUSH:-}" ]; then
    kvpush=$KVPUSH
elif [ -x _out/kvpush ]; then
    kvpush=$PWD/_out/kvpush
else
    kvpush=kvpush
fi
# shellcheck disable=SC2206
kvpush_flags=(${KVPUSH_FLAGS:-})

build_file=BUILD.bazel
[ -f "$build_file" ] || build_file=BUILD
if [ ! -f "$build_file" ]; then
    echo "bazel-push-images.sh: no BUILD.bazel in $PWD: run it from the root of the KubeVirt checkout" >&2
    exit 1
fi

# The era(s) of the branch, from its push rules.
eras=()
grep -Eq '^[[:space:]]*(container_push|docker_push)\(' "$build_file" && eras+=(rules_docker)
grep -Eq '^[[:space:]]*oci_push\(' "$build_file" && eras+=(rules_oci)
grep -Eq '^[[:space:]]*image_push\(' "$build_file" && eras+=(rules_img)
if [ ${#eras[@]} -eq 0 ]; then
    echo "bazel-push-images.sh: $build_file has no container_push, docker_push, oci_push or image_push target" >&2
    exit 1
fi
echo "bazel-push-images.sh: ${eras[*]} push targets in $build_file" >&2

# The original's default list is the branch's push targets; kvpush reads
# them from BUILD.bazel (`all`). On architectures where some do not build
# (rules_img era: s390x), set PUSH_TARGETS as KubeVirt's script did.
# shellcheck disable=SC2206
push_targets=(${PUSH_TARGETS:-all})

# ONE bazel build of what kvpush reads for these targets, each by its rule:
# rules_docker the //:push-X parts and image tarballs, rules_oci the
# oci_image layouts, rules_img the //:push-X deploy manifests.
mapfile -t build_args < <("$kvpush" bazel-targets --workspace "$PWD" "${push_targets[@]}")
defines=()
if [ "${eras[0]}" = rules_docker ]; then
    # rules_docker stamps these into the bundle tarball's tags, as
    # `bazel run` did.
    defines=(--define "container_prefix=${docker_prefix}" --define "image_prefix=${image_prefix}"
        --define "container_tag=${docker_tag}")
fi
bazel build --config="${ARCHITECTURE}" "${defines[@]}" "${build_args[@]}"

# ONE kvpush run: every target, every tag, IMAGE_PREFIX_ALT at DOCKER_TAG,
# and DIGESTS_DIR/ARCHITECTURE refilled as the original did.
rm -rf "${DIGESTS_DIR:?}/${ARCHITECTURE}"
mkdir -p "${DIGESTS_DIR}/${ARCHITECTURE}"
PUSH_TARGETS="${push_targets[*]}" \
    DOCKER_PREFIX="$docker_prefix" \
    DOCKER_TAG="$docker_tag" \
    DOCKER_TAG_ALT="$docker_tag_alt" \
    IMAGE_PREFIX="$image_prefix" \
    IMAGE_PREFIX_ALT="$image_prefix_alt" \
    ARCHITECTURE="$ARCHITECTURE" \
    DIGESTS_DIR="$DIGESTS_DIR" \
    "$kvpush" --workspace "$PWD" "${kvpush_flags[@]}"
