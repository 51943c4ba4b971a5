#!/usr/bin/env bash
# Build the real Azure Workload Identity mutating webhook (github.com/Azure/azure-workload-identity v1.6.0) to
# tests/lab/.build/bin/azure-wi-webhook with `go build`, from this folder's own module: never mixed with the
# kube-testenv module, since it pins client-go 0.31 / controller-runtime 0.19 (docs/lab.md §5).
# Cold: a few minutes on 2 cores; with warm Go caches: well under a minute; when up to date: nothing.
#
# The main package is ./cmd/lab-webhook, not upstream's cmd/webhook: upstream's main has no flag for the webhook
# port (always :9443), so one lab per machine could run it; ours wires upstream's unchanged pkg/webhook the same
# way and adds --webhook-host/--webhook-port (docs/lab.md §5).
#
# Why a module here rather than `go install github.com/Azure/azure-workload-identity/cmd/webhook@v1.6.0`: the
# module proxy this project reaches refuses monis.app/mlog (403), and `pkg@version` also looks up the module's
# version list for deprecations, which it refuses too. go.mod pins exactly the versions of v1.6.0's own go.mod
# (same build list) and replaces monis.app/mlog with ./mlog, the lab's own implementation of its logging API.
set -euo pipefail

# Pinned in go.mod: v1.6.0 mounts the token at /var/run/secrets/azure/wi/token/, v1.5.x at
# /var/run/secrets/azure/tokens/ (docs/lab.md §5); tests/lab/test_webhook.py asserts the v1.6.0 layout.
module=github.com/Azure/azure-workload-identity

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build_dir="$(cd "$here/.." && pwd)/.build"
out="$build_dir/bin/azure-wi-webhook"
sources=("$here/build.sh" "$here/go.mod" "$here/go.sum" "$here/cmd/lab-webhook/main.go"
    "$here/mlog/go.mod" "$here/mlog/go.sum" "$here/mlog/mlog.go")

start=$SECONDS
finish() { echo "azure-wi-webhook: $1 in $((SECONDS - start))s ($out)" >&2; }

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
exec 9>"$build_dir/azure-wi-webhook.lock"
flock 9
if [[ "${1:-}" != "--force" ]] && up_to_date; then
    finish "built by another process"
    exit 0
fi

# CI may point these at cached folders; otherwise keep everything inside the ignored build folder (shared with
# kube-testenv's build: one module download cache, one build cache).
export GOCACHE="${GOCACHE:-$build_dir/go-cache}"
export GOMODCACHE="${GOMODCACHE:-$build_dir/go-mod}"
export CGO_ENABLED=0
export GOWORK=off  # a go.work of the caller's must not pull this module into another build list

# Build next to the binary and rename, so a concurrent reader never sees a half-written one.
staging="$build_dir/bin/.azure-wi-webhook.$$"
version="$(awk '$1 == "'"$module"'" {print $2; exit}' "$here/go.mod")"
echo "azure-wi-webhook: building ./cmd/lab-webhook with $module $version (GOCACHE=$GOCACHE)" >&2
cd "$here"
# BuildVersion is what upstream's Makefile stamps (-X $(REPO)/pkg/version.BuildVersion=...); the webhook sends it
# in its User-Agent (azure-workload-identity/webhook/<version>).
go build -trimpath -ldflags "-s -w -X $module/pkg/version.BuildVersion=$version" -o "$staging" ./cmd/lab-webhook
mv -f "$staging" "$out"
finish "built"
