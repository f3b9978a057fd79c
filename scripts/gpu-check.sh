#!/usr/bin/env bash
# The GPU check: trains the study's setup (batch 256, MLP 3072-512-512-128 + projector
# 128-512-128, InfoNCE t = 0.1, Adam lr 1e-3) for a fixed number of steps through cbound on
# CUDA, in fp32 and fp16_mixed, and the same model through PyTorch on the same GPU
# (bench/torch_gpu_reference.py: one pass over both views, Adam(fused=True), TF32 off), and
# writes one JSON line per configuration (samples/s, ms/step, peak device memory, final loss)
# plus the ratio cbound / PyTorch per precision, to stdout and to gpu-check.jsonl.
#
# Needs: an NVIDIA GPU and driver, this repository, a Python with PyTorch (CUDA build;
# TORCH_PYTHON, default .venv/bin/python), and onnxruntime-gpu in .venv. Without network: put
# the wheels --preflight lists into a directory and pass CBOUND_WHEELS=DIR; the check installs
# them with `scripts/setup.sh --gpu --no-build`.
#
#   scripts/gpu-check.sh --preflight   check everything, GPU or not; list what is missing
#   scripts/gpu-check.sh [--steps N]   the check itself (default 200 steps)
set -uo pipefail
cd "$(dirname "$0")/.."

preflight=0
steps=200
while [ $# -gt 0 ]; do
  case "$1" in
    --preflight) preflight=1 ;;
    --steps) steps="$2"; shift ;;
    *) echo "usage: scripts/gpu-check.sh [--preflight] [--steps N]" >&2; exit 2 ;;
  esac
  shift
done

ORT_VERSION=1.31.1
# Measured on 2026-12-04 with `pip download onnxruntime-gpu==1.31.1 --no-deps` (CPython 3.11).
ORT_WHEEL_CP311=onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_WHEEL_CP311_BYTES=255560985
# What onnxruntime-gpu 1.31.1's `cuda` and `cudnn` extras require (its METADATA); cuBLAS comes
# with nvidia-cudnn-cu13. Their sizes were not measured here.
NVIDIA_PACKAGES="nvidia-cuda-runtime~=13.0 nvidia-cuda-nvrtc~=13.0 nvidia-cufft~=12.0 nvidia-curand~=10.0 nvidia-cudnn-cu13~=9.0"
# The libraries every CUDA session needs (the `required` ones of crates/onnx/src/cuda_libs.rs;
# cuFFT and NVRTC are loaded only for some operators).
CUDA_LIBS="cu13/lib/libcudart.so.13 cu13/lib/libcublasLt.so.13 cu13/lib/libcublas.so.13 cu13/lib/libcurand.so.10 cudnn/lib/libcudnn.so.9"

missing=0
say() { echo "preflight: $*"; }
miss() { echo "preflight: missing: $*"; missing=$((missing + 1)); }

check() {
  if [ -r /proc/driver/nvidia/version ]; then
    say "ok: NVIDIA driver ($(head -n1 /proc/driver/nvidia/version | cut -c1-80))"
  else
    miss "NVIDIA driver (no /proc/driver/nvidia/version): this machine has no usable NVIDIA GPU"
  fi
  if command -v nvidia-smi >/dev/null 2>&1; then
    say "ok: nvidia-smi ($(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n1))"
  else
    miss "nvidia-smi (comes with the driver; the check reads peak device memory with it)"
  fi
  if [ ! -x .venv/bin/python ]; then
    miss ".venv (run scripts/setup.sh --no-build first)"
    return
  fi
  local pyver sp
  pyver=$(.venv/bin/python -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')
  sp=$(echo .venv/lib/python3*/site-packages)
  if [ -f "$sp/onnxruntime/capi/libonnxruntime_providers_cuda.so" ]; then
    say "ok: onnxruntime-gpu in .venv ($sp/onnxruntime/capi/libonnxruntime_providers_cuda.so)"
  else
    local wheel="onnxruntime_gpu-${ORT_VERSION}-cp${pyver}-cp${pyver}-manylinux_2_28_x86_64.whl"
    local size="size not measured for cp${pyver}"
    [ "$wheel" = "$ORT_WHEEL_CP311" ] && size="$ORT_WHEEL_CP311_BYTES bytes, $((ORT_WHEEL_CP311_BYTES / 1048576)) MiB"
    if [ -n "${CBOUND_WHEELS:-}" ] && [ -f "$CBOUND_WHEELS/$wheel" ]; then
      say "ok: $wheel found in CBOUND_WHEELS=$CBOUND_WHEELS (installed by the check)"
    else
      miss "onnxruntime-gpu in .venv; file: $wheel ($size; pip download onnxruntime-gpu==${ORT_VERSION} --no-deps -d DIR, then CBOUND_WHEELS=DIR)"
    fi
  fi
  local lib libs_missing=0
  for lib in $CUDA_LIBS; do
    if [ -f "$sp/nvidia/$lib" ]; then
      say "ok: $sp/nvidia/$lib"
    else
      miss "$sp/nvidia/$lib"
      libs_missing=1
    fi
  done
  if [ "$libs_missing" = 1 ]; then
    say "the CUDA libraries come from the wheels of: $NVIDIA_PACKAGES (sizes not measured here); pip download 'onnxruntime-gpu[cuda,cudnn]==${ORT_VERSION}' -d DIR fetches them all"
  fi
  local torch_py="${TORCH_PYTHON:-.venv/bin/python}"
  local t
  if t=$("$torch_py" -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null); then
    say "ok: PyTorch $t ($torch_py)"
  else
    miss "PyTorch in $torch_py (set TORCH_PYTHON to a Python with a CUDA build of torch)"
  fi
  if [ -x "${CBOUND_BIN:-target/release/cbound}" ]; then
    say "ok: cbound at ${CBOUND_BIN:-target/release/cbound}"
  else
    say "note: ${CBOUND_BIN:-target/release/cbound} not built yet; the check builds it (cargo build --release)"
  fi
}

check
if [ "$preflight" = 1 ]; then
  say "$missing missing"
  [ "$missing" = 0 ]
  exit
fi

if [ "$missing" != 0 ]; then
  if [ -n "${CBOUND_WHEELS:-}" ] && [ -r /proc/driver/nvidia/version ]; then
    echo "gpu-check: installing onnxruntime-gpu from $CBOUND_WHEELS"
    scripts/setup.sh --gpu --no-build || exit 1
    missing=0
    check
  fi
  [ "$missing" = 0 ] || { echo "gpu-check: $missing missing (see above)" >&2; exit 1; }
fi

set -e
cbound="${CBOUND_BIN:-target/release/cbound}"
[ -x "$cbound" ] || cargo build --release --locked
cbound=$(realpath "$cbound")
py="${TORCH_PYTHON:-.venv/bin/python}"
# cbound runs in a scratch directory, where it would not find .venv's ONNX Runtime by itself;
# the CUDA libraries are found beside this library (nvidia/* in the same site-packages).
CBOUND_ORT_LIB=$(echo "$PWD"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.${ORT_VERSION})
export CBOUND_ORT_LIB
work=$(mktemp -d)
out=gpu-check.jsonl
: > "$out"
batch=256
# One epoch of exactly `steps` training batches plus one held-out batch (the train stage holds
# out round(n * holdout) samples and needs at least one batch of them).
n=$(( (steps + 1) * batch ))
holdout=$(awk -v s="$steps" 'BEGIN { printf "%.12f", 1 / (s + 1) }')

# Peak used device memory while `$@` runs (nvidia-smi, sampled every 100 ms; the whole GPU's
# use, so run nothing else on it).
peak_memory() {
  local log="$work/mem.txt"
  : > "$log"
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 > "$log" 2>/dev/null &
  local smi=$!
  local rc=0
  "$@" || rc=$?
  kill "$smi" 2>/dev/null || true
  wait "$smi" 2>/dev/null || true
  PEAK_MIB=$(sort -n "$log" | tail -n1)
  return $rc
}

for precision in fp32 fp16_mixed; do
  cat > "$work/p.yaml" <<YAML
name: gpu-check
seed: 1
stages:
  mix:
    kind: synthetic
    params: {task: mixture, classes: 10, dim: 3072, n: $n, mc_samples: 1000}
  data:
    kind: load
    inputs: mix
    params: {format: parquet, feature_columns: "x*", label_column: z}
  train:
    kind: train
    inputs: data
    resources: {gpus: 1}
    params:
      model: {encoder: {kind: mlp, hidden: [512, 512], output: 128}, projector: [512, 128]}
      loss: {kind: infonce, temperature: 0.1}
      optimizer: {kind: adam, lr: 0.001}
      epochs: 1
      batch_size: $batch
      holdout: $holdout
      device: cuda
      precision: $precision
YAML
  if ! "$cbound" validate "$work/p.yaml" > "$work/validate.txt" 2>&1; then
    msg=$(tr '\n' ' ' < "$work/validate.txt" | sed 's/"/\\"/g')
    echo "{\"impl\": \"cbound\", \"precision\": \"$precision\", \"status\": \"refused\", \"message\": \"$msg\"}" | tee -a "$out"
    continue
  fi
  (cd "$work" && peak_memory "$cbound" run p.yaml --gpus 1 --progress lines) > "$work/run.txt" 2>&1 \
    || { cat "$work/run.txt" >&2; exit 1; }
  .venv/bin/python - "$work" "$precision" "$batch" "$steps" "$PEAK_MIB" <<'PY' | tee -a "$out"
import json, sys
import pyarrow.parquet as pq
work, precision, batch, steps, peak = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
run = f"{work}/outputs/gpu-check/latest/train/train"
timing = pq.read_table(f"{run}/training_curve.timing.parquet").to_pylist()[-1]
curve = pq.read_table(f"{run}/training_curve.parquet").to_pylist()[-1]
sps = timing["samples_per_s"]
print(json.dumps({
    "impl": "cbound", "precision": precision, "batch": batch, "steps": steps,
    "samples_per_s": sps, "ms_per_step": 1e3 * batch / sps,
    "peak_device_memory_bytes": int(float(peak)) * 1048576 if peak else None,
    "peak_device_memory_source": "nvidia-smi memory.used, whole GPU",
    "final_loss": curve["loss"], "final_loss_is": "mean training loss of the epoch",
    "skipped_steps": curve.get("skipped_steps"), "loss_scale": curve.get("loss_scale"),
    "note": "samples/s of the epoch, including making the views on the CPU",
}))
PY
done

for precision in fp32 fp16_mixed; do
  "$py" bench/torch_gpu_reference.py --steps "$steps" --batch "$batch" --precision "$precision" | tee -a "$out"
done

.venv/bin/python - "$out" <<'PY' | tee -a "$out.ratios"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
for precision in ("fp32", "fp16_mixed"):
    c = [r for r in rows if r["impl"] == "cbound" and r["precision"] == precision and "samples_per_s" in r]
    t = [r for r in rows if r["impl"] == "pytorch" and r["precision"] == precision]
    if c and t:
        print(json.dumps({"ratio": "cbound / pytorch samples_per_s", "precision": precision,
                          "value": c[0]["samples_per_s"] / t[0]["samples_per_s"]}))
    else:
        print(json.dumps({"ratio": "cbound / pytorch samples_per_s", "precision": precision,
                          "value": None, "why": "one side did not run"}))
PY
cat "$out.ratios" >> "$out" && rm -f "$out.ratios"
rm -rf "$work"
