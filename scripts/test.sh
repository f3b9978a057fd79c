#!/usr/bin/env bash
# The project's test command (README, and .ci/run calls exactly this): sets up the Python
# environment the integration tests read Parquet with, checks formatting and lints, then runs
# every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
