#!/usr/bin/env bash
# ansible-test sanity wants the collection at .../ansible_collections/aks/workload_identity and tests only what
# git tracks there: copy the tracked (and new, not ignored) files into such a tree and run it there.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
venv=${VENV:-$repo/.venv}
# One tree per run, so runs at the same time do not trample each other.
mkdir -p "$repo/.build"
root=$(mktemp -d "$repo/.build/sanity.XXXXXX")
trap 'rm -rf "$root"' EXIT
dest=$root/ansible_collections/aks/workload_identity
mkdir -p "$dest"
cd "$repo"
git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
  [ -e "$f" ] && printf '%s\0' "$f"
done | tar --null -T - -cf - | tar -xf - -C "$dest"
cd "$dest"
git init -q && git add -A
# ansible-test bootstraps pip in each sanity venv with a get-pip script it downloads (ansible/ansible#77304) and
# caches under ~/.ansible/test/cache; on a machine without that host, put a stand-in there first (.ci/run does).
PATH="$venv/bin:$PATH" ansible-test sanity --local --requirements --python 3.11 --color no "$@"
