#!/usr/bin/env bash
# Sets up cbound on a fresh machine: a project-local Python environment (.venv) with ONNX
# Runtime and the analysis/test libraries, and a release build of cbound linked into
# .venv/bin, so `. .venv/bin/activate` puts both `cbound` and the right `python3` on PATH.
#
#   scripts/setup.sh              everything
#   scripts/setup.sh --no-build   only the Python environment (the test script builds itself)
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    *) echo "usage: scripts/setup.sh [--no-build]" >&2; exit 2 ;;
  esac
done

# Real data for the default pipelines: Fashion-MNIST from Debian (IDX, gzip; MIT licence).
if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Fashion-MNIST (apt: dataset-fashion-mnist)"
    # Not fatal: only the Fashion-MNIST pipelines need it, and their tests say when it is missing.
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; then
      echo "setup: warning: could not install dataset-fashion-mnist" >&2
    fi
  else
    echo "setup: Fashion-MNIST missing; run: sudo apt-get install dataset-fashion-mnist" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.requirements.installed
if [ ! -f "$stamp" ] || ! cmp -s requirements.txt "$stamp"; then
  echo "setup: installing Python requirements"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
  cp requirements.txt "$stamp"
fi

if [ "$build" = 1 ]; then
  echo "setup: building cbound (release)"
  cargo build --release --locked
  ln -sf ../../target/release/cbound .venv/bin/cbound
fi
echo "setup: done"
