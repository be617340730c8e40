#!/usr/bin/env bash
# Every test of the workspace, the same way for a developer (README) and for CI (.ci/run):
# all test binaries run even when one fails (--no-fail-fast), against Cargo.lock as committed
# (--locked), then the doc tests (which --all-targets leaves out). The integration tests start
# real runc containers: run as root after `bash scripts/test-deps.sh`. With CI set, a test whose
# tools are missing fails instead of skipping.
#
# Usage: bash scripts/test.sh [extra cargo test arguments, e.g. -p nodeguard-policy]
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

status=0
echo "+ cargo test --locked --workspace --all-targets --no-fail-fast $*"
cargo test --locked --workspace --all-targets --no-fail-fast "$@" || status=$?
echo "+ cargo test --locked --workspace --doc --no-fail-fast $*"
cargo test --locked --workspace --doc --no-fail-fast "$@" || status=$?
if [[ $status -ne 0 ]]; then
  echo "scripts/test.sh: some tests failed (see above)" >&2
fi
exit "$status"
