#!/usr/bin/env bash
# Build the lab's control plane binary (embedded etcd + real kube-apiserver) to tests/lab/.build/bin/kube-testenv.
# Cold: tens of minutes on 2 cores; with warm Go caches: a relink; when up to date: nothing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_dir="$(cd "$here/.." && pwd)/.build"
out="$build_dir/bin/kube-testenv"
sources=("$here/go.mod" "$here/go.sum" "$here/main.go" "$here/build.sh")

start=$SECONDS
finish() { echo "kube-testenv: $1 in $((SECONDS - start))s ($out)" >&2; }

up_to_date() {
    [[ -x "$out" ]] || return 1
    local source
    for source in "${sources[@]}"; do
        [[ "$out" -nt "$source" ]] || return 1
    done
}

# The warm path must stay cheap: no Go invocation at all when the binary is current.
if [[ "${1:-}" != "--force" ]] && up_to_date; then
    finish "up to date"
    exit 0
fi

mkdir -p "$build_dir/bin"
# One build at a time (parallel test workers may all ask for it); the loser re-checks and usually skips.
exec 9>"$build_dir/kube-testenv.lock"
flock 9
if [[ "${1:-}" != "--force" ]] && up_to_date; then
    finish "built by another process"
    exit 0
fi

# CI may point these at cached folders; otherwise keep everything inside the ignored build folder.
export GOCACHE="${GOCACHE:-$build_dir/go-cache}"
export GOMODCACHE="${GOMODCACHE:-$build_dir/go-mod}"
export CGO_ENABLED=0  # as upstream builds kube-apiserver (docs/lab.md §1.4)

# Stamp /version with the real release: without it gitVersion is "v0.0.0-master+$Format:%H$", which the
# Azure Workload Identity webhook fails to parse as semver (docs/lab.md §1.4, §5).
version="$(awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v1\./ {print $2; exit}' "$here/go.mod")"
minor="$(cut -d. -f2 <<<"$version")"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    for kv in "gitVersion=$version" "gitMajor=1" "gitMinor=$minor" "gitTreeState=clean" \
        "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
        ldflags+=" -X $pkg.$kv"
    done
done

echo "kube-testenv: building $version (GOCACHE=$GOCACHE)" >&2
cd "$here"
go build -trimpath -ldflags "$ldflags" -o "$out.tmp" .
mv -f "$out.tmp" "$out"  # atomic: a concurrent reader never sees a half-written binary
finish "built"
