#!/usr/bin/env bash
# A nextest setup script: one `sandbox up` (test mode, with its chaos API:
# Toxiproxy-compatible proxies on every link) for every test process of the
# run. Nextest runs each test in a process of its own; without this, each
# suites process would start an in-process mesh of its own. The suites find
# the running sandbox through SERVICE_TEST_TARGET, which nextest hands to
# every test. It stops by itself when nextest ends (`--exit-with`).
#
#   cargo nextest run -p suites --profile sandbox      (.config/nextest.toml)
#
# Each start is appended to target/nextest-sandbox/starts.log (one line per
# run: how many sandboxes a run started is counted there).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
runner="$PPID"
cargo build --quiet --manifest-path "$root/Cargo.toml" -p sandbox --bin sandbox
dir="$target_dir/nextest-sandbox/${NEXTEST_RUN_ID:-$$}"
mkdir -p "$dir"
"$target_dir/debug/sandbox" up --test-mode --chaos-api 127.0.0.1:0 --write-target "$dir/t.toml" --exit-with "$runner" \
  </dev/null >"$dir/sandbox.log" 2>&1 &
sandbox=$!
for _ in $(seq 1 600); do
  if grep -q '^target file:' "$dir/sandbox.log" 2>/dev/null; then
    echo "${NEXTEST_RUN_ID:-$$} pid=$sandbox" >>"$target_dir/nextest-sandbox/starts.log"
    echo "SERVICE_TEST_TARGET=$dir/t.toml" >>"$NEXTEST_ENV"
    echo "sandbox up (pid $sandbox) for this nextest run: $dir/t.toml"
    exit 0
  fi
  if ! kill -0 "$sandbox" 2>/dev/null; then
    echo "error: sandbox up ended before it was ready:" >&2
    cat "$dir/sandbox.log" >&2
    exit 1
  fi
  sleep 0.2
done
echo "error: sandbox up was not ready within 120 s:" >&2
cat "$dir/sandbox.log" >&2
kill "$sandbox" 2>/dev/null || true
exit 1
