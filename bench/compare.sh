#!/usr/bin/env bash
# Side-by-side ONNX Runtime (cbound) vs PyTorch training-step benchmark, alternating runs so
# that both see the same machine load. Usage: bench/compare.sh [rounds] [torch-python]
set -euo pipefail
rounds=${1:-3}
py=${2:-.venv-torch/bin/python}
cargo build --release --example train_bench >/dev/null
for i in $(seq "$rounds"); do
  echo "== round $i (load: $(cut -d' ' -f1-3 /proc/loadavg))"
  ./target/release/examples/train_bench --no-profile | grep -E 'median|peak'
  "$py" bench/torch_reference.py | tail -1
done
