#!/bin/bash
# `make test`: formatting, lints, then every test (unit and end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -q -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
else
    cargo test --workspace --no-fail-fast
fi
echo "== the live master against openapi/cloudmaster.json (schemathesis)"
scripts/conformance.sh
