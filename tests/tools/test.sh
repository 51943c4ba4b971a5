#!/usr/bin/env bash
# make test: every phase CI runs, each timed, with a summary of the times at the end.
# The fast checks run first, one after the other, so a mistake stops the run in minutes. The two long groups
# (the module integration tests and the Molecule scenarios) mostly wait on services, so they run at once, each
# with a lab of its own; their output goes to .build/test-logs/ and is printed when each ends.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
py=${VENV:-.venv}/bin/python
logs=.build/test-logs
mkdir -p "$logs"
started=$SECONDS
summary=""
failed=()

record() { summary+="$(printf '  %-12s %5d s%s' "$1" "$2" "${3:-}")"$'\n'; echo "== phase $1: $2 s${3:-}"; }

phase() {  # phase NAME COMMAND...: run in the foreground; stop at the first failure
  local name=$1 t0=$SECONDS
  shift
  if ! "$@"; then
    record "$name" $((SECONDS - t0)) " FAILED"
    printf '== make test: %d s\n%s' $((SECONDS - started)) "$summary"
    exit 1
  fi
  record "$name" $((SECONDS - t0))
}

together() {  # together NAME COMMAND NAME COMMAND ...: run at once, print each log when it ends
  local -A pids=() starts=()
  while (($#)); do
    local name=$1 command=$2
    shift 2
    starts[$name]=$SECONDS
    bash -c "$command" >"$logs/$name.log" 2>&1 &
    pids[$name]=$!
    echo "== phase $name: started (log $logs/$name.log)"
  done
  while ((${#pids[@]})); do
    local name
    for name in "${!pids[@]}"; do
      if ! kill -0 "${pids[$name]}" 2>/dev/null; then
        local rc=0
        wait "${pids[$name]}" || rc=$?
        echo "== output of $name"
        cat "$logs/$name.log"
        if ((rc)); then
          failed+=("$name")
          record "$name" $((SECONDS - starts[$name])) " FAILED"
        else
          record "$name" $((SECONDS - starts[$name]))
        fi
        unset "pids[$name]"
      fi
    done
    sleep 2
  done
}

phase lint make --no-print-directory lint
phase sanity make --no-print-directory sanity
phase lab-build make --no-print-directory lab-build
phase unit "$py" -m pytest -q tests/unit
phase lab "$py" -m pytest -q tests/lab
together \
  integration "$py -m pytest -q tests/integration/modules" \
  flows "$py -m pytest -q tests/integration --ignore=tests/integration/modules"

printf '== make test: %d s\n%s' $((SECONDS - started)) "$summary"
if ((${#failed[@]})); then
  echo "failed: ${failed[*]}"
  exit 1
fi
