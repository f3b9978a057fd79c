"""Summarise a synthetic samples table: the sample correlation of x0 and y0 and the
Gaussian MI it implies, written to metrics.json for cbound's results table.

Used by pipelines/ground-truth.yaml as an example of the `command` stage. Needs only the
standard library and pyarrow (installed by scripts/setup.sh)."""

import json
import math
import sys

import pyarrow.parquet as pq


def main(samples_path: str, out_dir: str) -> None:
    table = pq.read_table(samples_path)
    x = table.column("x0").to_pylist()
    y = table.column("y0").to_pylist()
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    r = sxy / math.sqrt(sxx * syy)
    metrics = {"rows": n, "corr_x0_y0": r, "gaussian_mi_x0_y0": -0.5 * math.log(1 - r * r)}
    with open(f"{out_dir}/metrics.json", "w") as f:
        json.dump(metrics, f)
    print(json.dumps(metrics))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
