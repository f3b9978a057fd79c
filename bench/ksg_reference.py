#!/usr/bin/env python3
"""Naive KSG mutual-information estimate, a stand-in for NPEET's `mi` in the KSG benchmark.

Kraskov-Stoegbauer-Grassberger algorithm 1 with the max-norm, natural log:

    eps_i = distance from point i to its k-th nearest neighbour in the joint (x, y) space
    n_x(i) = #{j != i : ||x_j - x_i||_max < eps_i}   (strict), likewise n_y(i)
    I = psi(k) + psi(N) - mean(psi(n_x + 1) + psi(n_y + 1))

This is what NPEET's `mi(x, y, k=3, base=e)` computes, except that NPEET adds 1e-10 noise
to every value and shrinks the radius by 1e-15; here neither is done, so the result is a
deterministic function of the data and can be compared with cbound bit for bit up to
summation order.

Exact brute force, one block of query rows at a time, so memory stays at a few block x N
arrays whatever N is. Plain numpy: no scipy, digamma is written below.

Usage: ksg_reference.py FILE.parquet [--k 3] [--block 256]
Reads columns x0, x1, ... as X and y0, y1, ... as Y; prints one JSON line
{"nats": ..., "seconds": ..., "read_seconds": ..., "n": ..., "dim_x": ..., "dim_y": ...}.
"seconds" is the estimate alone; reading the file is "read_seconds".
"""

import argparse
import json
import math
import re
import sys
import time

import numpy as np
import pyarrow.parquet as pq


def digamma(x):
    """psi(x) for positive x (scalar or array): recurrence up to x >= 10, then the
    asymptotic series, whose truncation error there is below 1e-16."""
    x = np.array(x, dtype=np.float64, copy=True)
    if np.any(x <= 0):
        raise ValueError("digamma is only implemented for positive arguments")
    acc = np.zeros_like(x)
    # psi(x) = psi(x + 1) - 1/x, applied while any argument is below 10 (at most 10 rounds).
    for _ in range(10):
        small = x < 10.0
        if not small.any():
            break
        acc[small] -= 1.0 / x[small]
        x[small] += 1.0
    inv2 = 1.0 / (x * x)
    series = inv2 * (1.0 / 12 - inv2 * (1.0 / 120 - inv2 * (1.0 / 252 - inv2 * (
        1.0 / 240 - inv2 * (1.0 / 132 - inv2 * (691.0 / 32760 - inv2 / 12))))))
    return acc + np.log(x) - 0.5 / x - series


def max_dist_block(a, b):
    """Max-norm distances between the rows of a (B x d) and of b (N x d), as B x N,
    built one coordinate at a time so no B x N x d array is ever formed."""
    out = np.zeros((a.shape[0], b.shape[0]))
    tmp = np.empty_like(out)
    for c in range(a.shape[1]):
        np.subtract(a[:, c, None], b[None, :, c], out=tmp)
        np.abs(tmp, out=tmp)
        np.maximum(out, tmp, out=out)
    return out


def ksg(x, y, k=3, block=256):
    n = x.shape[0]
    if n < k + 1:
        raise ValueError(f"KSG with k = {k} needs at least {k + 1} samples, got {n}")
    psi_terms = 0.0
    for start in range(0, n, block):
        stop = min(start + block, n)
        rows = np.arange(stop - start)
        dx = max_dist_block(x[start:stop], x)
        dy = max_dist_block(y[start:stop], y)
        # Exclude each point from its own neighbour counts.
        dx[rows, start + rows] = np.inf
        dy[rows, start + rows] = np.inf
        dxy = np.maximum(dx, dy)
        eps = np.partition(dxy, k - 1, axis=1)[:, k - 1]
        nx = (dx < eps[:, None]).sum(axis=1)
        ny = (dy < eps[:, None]).sum(axis=1)
        psi_terms += float(np.sum(digamma(nx + 1.0) + digamma(ny + 1.0)))
    return float(digamma(k) + digamma(n)) - psi_terms / n


def columns(table, prefix):
    pat = re.compile(rf"^{prefix}(\d+)$")
    named = sorted(
        (int(m.group(1)), name) for name in table.column_names if (m := pat.match(name))
    )
    if not named:
        sys.exit(f"error: no columns named {prefix}0, {prefix}1, ... in the file")
    return np.column_stack([table.column(name).to_numpy() for _, name in named]).astype(
        np.float64, copy=False
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("file")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--block", type=int, default=256)
    args = p.parse_args()
    t0 = time.perf_counter()
    table = pq.read_table(args.file)
    x = np.ascontiguousarray(columns(table, "x"))
    y = np.ascontiguousarray(columns(table, "y"))
    del table
    t1 = time.perf_counter()
    nats = ksg(x, y, args.k, args.block)
    t2 = time.perf_counter()
    if not math.isfinite(nats):
        sys.exit(f"error: estimate is {nats}")
    print(json.dumps({
        "nats": nats,
        "seconds": t2 - t1,
        "read_seconds": t1 - t0,
        "n": x.shape[0],
        "dim_x": x.shape[1],
        "dim_y": y.shape[1],
    }))


if __name__ == "__main__":
    main()
