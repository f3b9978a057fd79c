#!/usr/bin/env python3
"""High-dimensional KSG speed, side by side: cbound against bmi and NPEET on the same data.

For each N and joint dimension D (X and Y D/2 each, correlated Gaussian: y = rho x +
sqrt(1 - rho^2) e per coordinate, rho 0.5) this writes one raw float64 file, then per round
runs, alternating:

- cbound (`ksg_euclid_bench`, a release example of cbound-mi, in its own process): KSG
  algorithm 1, k neighbours, Euclidean norms in X and in Y (the tiled search, and with
  --scalar the scalar scan it replaced), and the max-norm;
- bmi's `KSGEnsembleFirstEstimator(neighborhoods=(k,), standardize=False)` with the
  Euclidean metric (its default) and with the Chebyshev metric;
- NPEET's `mi(x, y, k, base=e)` (max-norm; from `npeet-plus`, NPEET's estimators as
  packaged on PyPI: `npeet` itself is not there).

With --strategies it also runs `ksg_maxnorm_bench` (a second release example) in the same
round, which times the max-norm estimate under `Auto` (the build's choice of k-d tree or brute
force by dimension and size), always brute force, and always the k-d tree (same bits); with
--old-maxnorm BIN it runs another build's `ksg_maxnorm_bench` (the code before) in the same
round too (its default strategy only). --refs picks the Python references (default all three).

Each time is the estimate alone (data already in memory; cbound's is measured inside its
process). Run with a venv that has benchmark-mi and npeet-plus, e.g.

    python3 -m venv /tmp/ref-venv && /tmp/ref-venv/bin/pip install benchmark-mi npeet-plus
    cargo build --release -p cbound-mi --example ksg_euclid_bench --example ksg_maxnorm_bench
    /tmp/ref-venv/bin/python bench/ksg_highdim.py --sizes 5000,10000 --dims 10,32,128

Peak memory at N = 100,000 (cbound only): `--sizes 100000 --dims 10 --no-reference
--rounds 1` under `/usr/bin/time -v` (the script runs cbound under it and prints the peak).
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_BIN = os.environ.get(
    "CBOUND_KSG_BENCH",
    str(Path(os.environ.get("CARGO_TARGET_DIR", HERE.parent / "target"))
        / "release/examples/ksg_euclid_bench"),
)


def data(n, dx, dy, rho, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dx))
    e = rng.standard_normal((n, dy))
    y = math.sqrt(1 - rho * rho) * e
    m = min(dx, dy)
    y[:, :m] += rho * x[:, :m]
    return x, y


def run_cbound(binary, path, n, dx, dy, k, scalar):
    cmd = [binary, path, str(n), str(dx), str(dy), str(k), "1", "1" if scalar else "0"]
    if Path("/usr/bin/time").exists():
        cmd = ["/usr/bin/time", "-v"] + cmd
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    peak = int(rss.group(1)) / 1024 if rss else float("nan")
    return rows, peak


def run_maxnorm(binary, path, n, dx, dy, k, label, strategies="auto,brute,tree"):
    cmd = [binary, path, str(n), str(dx), str(dy), str(k), "1", strategies]
    p = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        if label:
            row["what"] = row["what"].replace("cbound max-norm", f"cbound max-norm {label}")
    return rows


def timed(f):
    t = time.perf_counter()
    v = f()
    return time.perf_counter() - t, float(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="5000,10000")
    ap.add_argument("--dims", default="10,32,128")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--scalar", action="store_true", help="also time the scalar scan before")
    ap.add_argument("--no-reference", action="store_true")
    ap.add_argument("--bin", default=DEFAULT_BIN)
    ap.add_argument("--strategies", action="store_true",
                    help="also time max-norm under Auto / brute force / k-d tree")
    ap.add_argument("--old-maxnorm", default=None,
                    help="another build's ksg_maxnorm_bench, timed in the same round")
    ap.add_argument("--refs", default="bmi euclidean,bmi chebyshev,npeet max-norm")
    a = ap.parse_args()
    if not a.no_reference:
        from bmi.estimators import KSGEnsembleFirstEstimator
        from npeet_plus import estimators as npeet
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in map(int, a.sizes.split(",")):
            for dim in map(int, a.dims.split(",")):
                dx, dy = dim // 2, dim - dim // 2
                x, y = data(n, dx, dy, 0.5, 42)
                path = f"{tmp}/xy.f64"
                with open(path, "wb") as f:
                    f.write(x.astype("<f8").tobytes())
                    f.write(y.astype("<f8").tobytes())
                for r in range(1, a.rounds + 1):
                    rows, peak = run_cbound(a.bin, path, n, dx, dy, a.k, a.scalar)
                    for row in rows:
                        row.update(round=r, n=n, dim=dim, peak_mb=round(peak, 1))
                        table.append(row)
                        print(json.dumps(row), flush=True)
                    extra = []
                    if a.strategies:
                        mb = str(Path(a.bin).with_name("ksg_maxnorm_bench"))
                        extra += run_maxnorm(mb, path, n, dx, dy, a.k, "")
                    if a.old_maxnorm:
                        extra += run_maxnorm(a.old_maxnorm, path, n, dx, dy, a.k, "(before)", "auto")
                    for row in extra:
                        if row["what"] == "cbound max-norm":
                            row["what"] = "cbound max-norm (strategies run)"
                        row.update(round=r, n=n, dim=dim)
                        table.append(row)
                        print(json.dumps(row), flush=True)
                    if a.no_reference:
                        continue
                    refs = {
                        "bmi euclidean": lambda: KSGEnsembleFirstEstimator(
                            neighborhoods=(a.k,), standardize=False
                        ).estimate(x, y),
                        "bmi chebyshev": lambda: KSGEnsembleFirstEstimator(
                            neighborhoods=(a.k,), standardize=False, metric_x="chebyshev"
                        ).estimate(x, y),
                        "npeet max-norm": lambda: npeet.mi(x, y, k=a.k, base=math.e),
                    }
                    wanted = set(a.refs.split(","))
                    for what, f in refs.items():
                        if what not in wanted:
                            continue
                        secs, v = timed(f)
                        row = dict(what=what, round=r, seconds=round(secs, 4), nats=v, n=n, dim=dim)
                        table.append(row)
                        print(json.dumps(row), flush=True)
    # Summary: median seconds per (n, dim, what), and the ratios to cbound.
    print()
    keys = sorted({(t["n"], t["dim"]) for t in table})
    for n, dim in keys:
        med = {}
        for t in table:
            if (t["n"], t["dim"]) == (n, dim) and "seconds" in t:
                med.setdefault(t["what"], []).append(t["seconds"])
        med = {w: float(np.median(s)) for w, s in med.items()}
        ce, cm = med.get("cbound euclidean"), med.get("cbound max-norm")
        parts = [f"N {n} D {dim}:"]
        for w, s in med.items():
            base = ce if "euclid" in w else cm
            if w.startswith("cbound max-norm") and w != "cbound max-norm" and cm:
                parts.append(f"{w} {s:.3f} s ({s / cm:.2f}x cbound max-norm)")
                continue
            ratio = f" ({s / base:.1f}x cbound)" if base and not w.startswith("cbound") else ""
            if w == "cbound euclidean, scalar scan before" and ce:
                ratio = f" ({s / ce:.1f}x the tiled search)"
            parts.append(f"{w} {s:.3f} s{ratio}")
        print("; ".join(parts))


if __name__ == "__main__":
    main()
