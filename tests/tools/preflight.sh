#!/usr/bin/env bash
# What `make site` and `make test` need from the machine, checked before anything is downloaded or built, so a
# missing piece is reported in the first second with the command that fixes it (never after minutes of work).
# Nothing here needs root: the fixes install into the user's home.
set -euo pipefail
cd "$(dirname "$0")/../.."

problems=()
python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
  problems+=("Python 3.11 or newer: sudo apt-get install -y python3 (Debian 12 and Ubuntu 24.04 ship 3.11 and 3.12)")
elif ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  problems+=("Python 3.11 or newer, found $("$python" -V 2>&1): install a newer python3, or set PYTHON=/path/to/python3.11")
fi

for tool in flock tar; do
  command -v "$tool" >/dev/null || problems+=("$tool: sudo apt-get install -y util-linux tar")
done

# Go builds the lab's kube-apiserver and webhook, once; when both binaries are there it is not needed.
bin=tests/lab/.build/bin
if [[ ! -x $bin/kube-testenv || ! -x $bin/azure-wi-webhook ]]; then
  required=$(awk '$1 == "go" { print $2 }' tests/lab/kube/go.mod tests/lab/webhook/go.mod | sort -V | tail -1)
  arch=$(uname -m); arch=${arch/x86_64/amd64}; arch=${arch/aarch64/arm64}
  fix="mkdir -p ~/.local && curl -fsSL https://go.dev/dl/go$required.linux-$arch.tar.gz | tar -C ~/.local -xz && export PATH=~/.local/go/bin:\$PATH"
  if ! command -v go >/dev/null; then
    problems+=("Go $required or newer, to build the lab (about 5 minutes, once): $fix")
  else
    found=$(go env GOVERSION 2>/dev/null); found=${found#go}
    # An older Go fetches the required toolchain itself unless GOTOOLCHAIN=local forbids it.
    if [[ $(printf '%s\n%s\n' "$required" "$found" | sort -V | head -1) != "$required" && $(go env GOTOOLCHAIN) == local ]]; then
      problems+=("Go $required or newer, found $found with GOTOOLCHAIN=local: unset GOTOOLCHAIN, or $fix")
    fi
  fi
  # A cold build fills about 4 GB of Go caches (under ~/.cache/aks-wid-lab unless GOCACHE/GOMODCACHE say otherwise).
  cache=${GOMODCACHE:-$HOME/.cache}
  mkdir -p "$cache" 2>/dev/null || cache=$HOME
  free_kb=$(df -Pk "$cache" | awk 'NR == 2 { print $4 }')
  if (( free_kb < 5 * 1024 * 1024 )); then
    problems+=("5 GB free for the Go caches under $cache, found $((free_kb / 1024)) MB: free some space, or point GOCACHE and GOMODCACHE elsewhere")
  fi
fi

if (( ${#problems[@]} )); then
  echo "Missing prerequisites:" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi
