#!/usr/bin/env python3
"""The linear probe's algorithm (crates/mi/src/probe.rs) vectorised in NumPy, for timing.

Same steps as cbound's probe: an 80/20 split (here a NumPy permutation, so the split, and
with it the bound, differ from cbound's in the last digits), standardisation with train
statistics, softmax regression (weights (d + 1) x k, bias last) fitted by 300 full-batch Adam
steps (lr 0.05, betas 0.9 / 0.999, eps 1e-8, L2 1e-4 on the weights), held-out
cross-entropy, H(Z) of all labels. Reads the data `probe_bench` writes:

    cargo run --release -p cbound-mi --example probe_bench 1 /tmp/probe
    python bench/probe_numpy.py /tmp/probe [ROUNDS]
"""

import sys
import time

import numpy as np


def fit(u, z, steps=300, l2=1e-4, train_fraction=0.8, seed=0):
    n, d = u.shape
    k = int(z.max()) + 1
    order = np.random.default_rng(seed).permutation(n)
    n_train = round(n * train_fraction)
    tr, te = order[:n_train], order[n_train:]
    mean = u[tr].mean(axis=0)
    sd = u[tr].std(axis=0)
    sd[sd == 0] = 1.0
    xtr = (u[tr] - mean) / sd
    xte = (u[te] - mean) / sd
    ytr, yte = z[tr], z[te]
    onehot = np.eye(k)[ytr]
    w = np.zeros((d, k))
    b = np.zeros(k)
    mw, vw, mb, vb = (np.zeros_like(w), np.zeros_like(w), np.zeros_like(b), np.zeros_like(b))
    lr, b1, b2, eps = 0.05, 0.9, 0.999, 1e-8

    def softmax(x):
        o = x @ w + b
        o -= o.max(axis=1, keepdims=True)
        np.exp(o, out=o)
        o /= o.sum(axis=1, keepdims=True)
        return o

    for step in range(1, steps + 1):
        p = softmax(xtr) - onehot
        gw = xtr.T @ p / n_train + l2 * w
        gb = p.sum(axis=0) / n_train
        c1, c2 = 1 - b1**step, 1 - b2**step
        for g, m, v, t in ((gw, mw, vw, w), (gb, mb, vb, b)):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            t -= lr * (m / c1) / (np.sqrt(v / c2) + eps)
    p = softmax(xte)
    ce = -np.log(np.maximum(p[np.arange(len(yte)), yte], 1e-300)).mean()
    q = np.bincount(z) / n
    q = q[q > 0]
    return -(q * np.log(q)).sum() - ce


def main():
    d = sys.argv[1]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    z = np.fromfile(f"{d}/z.f64", dtype="<f8").astype(np.int64)
    u = np.fromfile(f"{d}/u.f64", dtype="<f8").reshape(len(z), -1)
    for r in range(1, rounds + 1):
        t = time.perf_counter()
        v = fit(u, z)
        print(f"round {r}: numpy {time.perf_counter() - t:.3f} s, bound {v:.6f} nats")


if __name__ == "__main__":
    main()
