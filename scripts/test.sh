#!/usr/bin/env bash
# The project's test command (README, and .ci/run calls exactly this): sets up the Python
# environment the integration tests read Parquet with, checks formatting and lints, then runs
# every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --no-build
# The Slurm integration tests (tests/slurm.rs) need a cluster: start a one-node one here
# (packages, munged, slurmctld, slurmd) where that is possible, i.e. as root with apt-get.
# CBOUND_SLURM=required (as CI sets it) makes a missing cluster a failure instead of a skip.
# CBOUND_SLURM=off skips all of that (and the Slurm tests) for a user who only wants the tests.
if [ "${CBOUND_SLURM:-}" = off ]; then
    echo "test.sh: CBOUND_SLURM=off: no Slurm test cluster, Slurm tests skipped" >&2
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    if cluster_env="$(tests/slurm/start.sh | tail -n 1)"; then
        eval "$cluster_env" # export SLURM_CONF=...
        export CBOUND_SLURM="${CBOUND_SLURM:-required}"
    elif [ "${CBOUND_SLURM:-}" = required ]; then
        echo "test.sh: the Slurm test cluster did not start (CBOUND_SLURM=required)" >&2
        exit 1
    else
        echo "test.sh: the Slurm test cluster did not start; Slurm tests will be skipped" >&2
    fi
else
    echo "test.sh: not root with apt-get, so no Slurm test cluster; Slurm tests will be skipped unless one runs (tests/slurm/start.sh)" >&2
fi
cargo fmt --all -- --check
# On CI every build is from scratch, where incremental compilation only writes caches that no
# later build reads.
if [ -n "${CI:-}" ]; then
    export CARGO_INCREMENTAL=0
fi
cargo clippy --workspace --all-targets --locked -- -D warnings
# Unit tests, the binaries and the integration tests; the examples (benchmarks) are compiled
# and linted by clippy above, and linking them once more here would test nothing.
cargo test --workspace --locked --lib --bins --tests
