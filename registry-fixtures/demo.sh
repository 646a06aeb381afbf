#!/usr/bin/env bash
# make demo: generate a KubeVirt-shaped workspace, start a real registry on
# loopback, push every target with kvpush, and show what landed (read back
# with skopeo, an independent client). Usage: demo.sh DIR SCALE TAG
set -euo pipefail
dir=${1:-demo}
scale=${2:-64MiB}
tag=${3:-devel}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
bin="$top/target/release"

rm -rf "$dir"
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

echo "== generating a KubeVirt-shaped workspace ($scale of tarballs) in $dir/workspace"
"$bin/kvpush-fixtures" gen-workspace "$dir/workspace" --scale "$scale"

echo "== starting a CNCF distribution registry on loopback"
addr=$("$here/start-registry.sh" plain "$dir/registry")
trap '"$here/stop-registry.sh" "$dir/registry"' EXIT
echo "registry at $addr (storage in $dir/registry)"

echo "== kvpush list"
"$bin/kvpush" list --workspace "$dir/workspace" --registry "$addr/kubevirt" --tag "$tag"

echo "== kvpush all (cold: empty registry)"
time "$bin/kvpush" all --workspace "$dir/workspace" --registry "$addr/kubevirt" --tag "$tag" \
    --digests-dir "$dir/digests"

echo "== kvpush all again (warm: every blob is already there)"
time "$bin/kvpush" all --workspace "$dir/workspace" --registry "$addr/kubevirt" --tag "$tag" >/dev/null

echo "== what landed, read back with skopeo"
curl -fsS "http://$addr/v2/_catalog?n=100"; echo
skopeo inspect --tls-verify=false "docker://$addr/kubevirt/virt-api:$tag" | head -n 20
for f in "$dir"/digests/*.digest; do printf '%s: %s\n' "$(basename "$f")" "$(cat "$f")"; done

echo "== rules_docker parity: push from push-target parts (bazel build //:push-*)"
"$bin/kvpush-fixtures" gen-workspace "$dir/parts-workspace" --scale 16MiB --push-parts >/dev/null
"$bin/kvpush" all --workspace "$dir/parts-workspace" --registry "$addr/kubevirt-parts" --tag "$tag" >/dev/null
for f in "$dir"/parts-workspace/bazel-bin/push-*.digest; do
    target=$(basename "$f" .digest)
    pushed=$(skopeo inspect --raw --tls-verify=false "docker://$addr/kubevirt-parts/${target#push-}:$tag" | sha256sum | cut -d' ' -f1)
    printf '%s: bazel %s, registry sha256:%s\n' "$target" "$(cat "$f")" "$pushed"
    [ "$(cat "$f")" = "sha256:$pushed" ] || { echo "digest differs for $target" >&2; exit 1; }
done
echo "== demo done"
