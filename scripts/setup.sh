#!/usr/bin/env bash
# Sets up cbound on a fresh machine: a project-local Python environment (.venv) with ONNX
# Runtime and the analysis/test libraries, and a release build of cbound linked into
# .venv/bin, so `. .venv/bin/activate` puts both `cbound` and the right `python3` on PATH.
#
#   scripts/setup.sh              everything
#   scripts/setup.sh --no-build   only the Python environment (the test script builds itself)
#   scripts/setup.sh --gpu        onnxruntime-gpu==1.31.1 with its CUDA 13 and cuDNN 9 wheels
#                                 (its `cuda` and `cudnn` extras) instead of onnxruntime; cbound
#                                 finds and preloads those libraries itself (no LD_LIBRARY_PATH)
#   CBOUND_WHEELS=DIR             install from the wheels in DIR only, without network
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
gpu=0
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --gpu) gpu=1 ;;
    *) echo "usage: scripts/setup.sh [--no-build] [--gpu]" >&2; exit 2 ;;
  esac
done
pip_from=()
if [ -n "${CBOUND_WHEELS:-}" ]; then
  pip_from=(--no-index --find-links "$CBOUND_WHEELS")
fi

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
if [ "$gpu" = 1 ]; then
  # onnxruntime and onnxruntime-gpu install the same `onnxruntime` package folder: never both.
  reqs=$(mktemp)
  grep -v '^onnxruntime==' requirements.txt > "$reqs"
  echo "setup: installing Python requirements and onnxruntime-gpu==1.31.1 with CUDA and cuDNN"
  # Resolve everything first, so a missing wheel (offline, CBOUND_WHEELS) fails here with
  # pip's message and leaves the working CPU onnxruntime in place.
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${pip_from[@]}" --dry-run \
    -r "$reqs" "onnxruntime-gpu[cuda,cudnn]==1.31.1"
  .venv/bin/python -m pip uninstall --quiet --yes onnxruntime >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${pip_from[@]}" \
    -r "$reqs" "onnxruntime-gpu[cuda,cudnn]==1.31.1"
  rm -f "$reqs" "$stamp"
elif [ ! -f "$stamp" ] || ! cmp -s requirements.txt "$stamp"; then
  echo "setup: installing Python requirements"
  .venv/bin/python -m pip uninstall --quiet --yes onnxruntime-gpu >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "${pip_from[@]}" -r requirements.txt
  cp requirements.txt "$stamp"
fi

if [ "$build" = 1 ]; then
  echo "setup: building cbound (release)"
  cargo build --release --locked
  ln -sf ../../target/release/cbound .venv/bin/cbound
fi
echo "setup: done"
