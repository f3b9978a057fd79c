#!/usr/bin/env python3
"""KSG speed benchmark: `cbound mi -e ksg:k=3` against the naive Python reference.

The target (issue text): KSG with k = 3 on 10,000 x 128 versus 10,000 x 128 at least 50
times faster than NPEET's `mi`, with the same value; times for N = 2k, 5k, 10k, 50k and
the memory peak.

For each N this writes correlated Gaussian data (x ~ N(0, I_128), y = rho x +
sqrt(1 - rho^2) e per coordinate) to Parquet (columns x0..x127, y0..y127), runs

    cbound mi FILE --x 'x*' --y 'y*' -e ksg:k=3 --no-standardise --no-jitter --json

under /usr/bin/time -v (peak RSS = "Maximum resident set size"), then the reference
(ksg_reference.py, same algorithm, same file) for N <= --python-max-n, and prints one
table. Both programs see the same float64 values and use the same strict max-norm
counts, so their estimates should agree to rounding.

Environment: CBOUND_BIN (default /work/main/target/release/cbound). Run with the venv
that has numpy and pyarrow, e.g. .venv/bin/python bench/ksg_bench.py.
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
DEFAULT_BIN = "/work/main/target/release/cbound"
TIME = "/usr/bin/time"


def write_data(path, n, dim, rho, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim))
    y = rho * x + math.sqrt(1.0 - rho * rho) * rng.standard_normal((n, dim))
    cols = {f"x{i}": x[:, i] for i in range(dim)}
    cols.update({f"y{i}": y[:, i] for i in range(dim)})
    pq.write_table(pa.table(cols), path, compression="snappy")


def parse_peak_mb(stderr):
    """Peak RSS in MB from GNU time -v output."""
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    if not rss:
        raise RuntimeError(f"could not parse {TIME} -v output:\n{stderr[-2000:]}")
    return int(rss.group(1)) / 1024.0


def timed(argv):
    """Runs argv under /usr/bin/time -v; returns (stdout, peak MB, wall seconds)."""
    t0 = time.perf_counter()
    proc = subprocess.run([TIME, "-v", *argv], capture_output=True, text=True)
    # time -v rounds the wall clock to 10 ms; measure it here instead.
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout, parse_peak_mb(proc.stderr), wall


def run_cbound(binary, path, k):
    out, mb, wall = timed([
        binary, "mi", str(path), "--x", "x*", "--y", "y*", "-e", f"ksg:k={k}",
        "--no-standardise", "--no-jitter", "--json",
    ])
    rows = [json.loads(line) for line in out.splitlines() if line.strip().startswith("{")]
    if len(rows) != 1 or "nats" not in rows[0]:
        raise RuntimeError(f"unexpected cbound output:\n{out}")
    return rows[0]["nats"], rows[0].get("seconds"), wall, mb


def run_python(path, k):
    out, mb, wall = timed([sys.executable, str(HERE / "ksg_reference.py"), str(path), "--k", str(k)])
    row = json.loads(out.strip().splitlines()[-1])
    return row["nats"], row["seconds"], wall, mb


def fmt(v, spec):
    """format(v, spec), or a dash as wide as the column for a missing value."""
    if v is None:
        return "-".rjust(int(re.match(r">(\d+)", spec).group(1)))
    return format(v, spec)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="2000,5000,10000,50000")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--rho", type=float, default=0.5)
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--python-max-n", type=int, default=10000,
                   help="largest N the (quadratic, single-threaded) reference runs on")
    p.add_argument("--keep", help="write the Parquet files here and keep them")
    args = p.parse_args()

    binary = os.environ.get("CBOUND_BIN", DEFAULT_BIN)
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        sys.exit(f"error: cbound binary {binary} not found or not executable "
                 f"(build it with `cargo build --release` or set CBOUND_BIN)")
    if not os.access(TIME, os.X_OK):
        sys.exit(f"error: {TIME} not found (GNU time; Debian package `time`), needed for the peak RSS")
    sizes = [int(s) for s in args.sizes.split(",")]

    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ksg-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    true_mi = -0.5 * args.dim * math.log(1.0 - args.rho ** 2)
    print(f"# cbound: {binary}")
    print(f"# data: x, y in R^{args.dim}, per-coordinate correlation {args.rho} "
          f"(true MI {true_mi:.3f} nats; KSG underestimates at this dimension), k = {args.k}")
    print(f"# machine: {os.cpu_count()} logical CPUs; times are wall clock of the whole process "
          f"(cbound: read + estimate), 'est' is the estimate alone as each program reports it")
    skipped = [n for n in sizes if n > args.python_max_n]
    if skipped:
        print(f"# python reference skipped for N = {', '.join(map(str, skipped))} "
              f"(O(N^2) single-threaded numpy; would take roughly "
              f"{(max(skipped) / 10000) ** 2:.0f}x its N = 10000 time)")
    header = (f"{'N':>6} {'cbound s':>9} {'est s':>8} {'peak MB':>8} {'python s':>9} {'est s':>8} "
              f"{'py MB':>7} {'ratio':>7} {'cbound nats':>13} {'python nats':>13} {'|diff|':>9}")
    print(header)
    results = []
    try:
        for n in sizes:
            path = workdir / f"ksg_{n}x{args.dim}.parquet"
            write_data(path, n, args.dim, args.rho, args.seed + n)
            c_nats, c_est, c_wall, c_mb = run_cbound(binary, path, args.k)
            py = run_python(path, args.k) if n <= args.python_max_n else None
            ratio = py[1] / c_wall if py else None
            diff = abs(c_nats - py[0]) if py else None
            print(f"{n:>6} {c_wall:>9.2f} {fmt(c_est, '>8.2f')} {c_mb:>8.1f} "
                  f"{fmt(py and py[2], '>9.2f')} {fmt(py and py[1], '>8.2f')} "
                  f"{fmt(py and py[3], '>7.1f')} {fmt(ratio, '>7.1f')} {c_nats:>13.6f} "
                  f"{fmt(py and py[0], '>13.6f')} {fmt(diff, '>9.2e')}", flush=True)
            results.append({"n": n, "cbound_wall_s": c_wall, "cbound_est_s": c_est,
                            "cbound_peak_mb": c_mb, "cbound_nats": c_nats,
                            "python_wall_s": py and py[2], "python_est_s": py and py[1],
                            "python_peak_mb": py and py[3], "python_nats": py and py[0],
                            "ratio": ratio, "abs_diff": diff})
            if not args.keep:
                path.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print("# ratio = python estimate seconds / cbound whole-process seconds (file read and "
          "start-up charged to cbound only)")
    print("# json " + json.dumps(results))


if __name__ == "__main__":
    main()
