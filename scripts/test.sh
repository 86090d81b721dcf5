#!/bin/bash
# `make test`: formatting, lints, then every test (unit and end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step says how long it took: make test is meant to stay under 30 minutes.
start=$SECONDS
took() { echo "== $1 took $((SECONDS - start)) s"; start=$SECONDS; }
echo "== cargo fmt --check"
cargo fmt --all -- --check
took "cargo fmt"
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
took "cargo clippy"
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
took "tests"
echo "== the live master against openapi/cloudmaster.json (schemathesis)"
scripts/conformance.sh
took "conformance"
