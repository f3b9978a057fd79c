#!/usr/bin/env python3
"""Independent NumPy reference for cbound's trained-critic estimators.

Writes tests/fixtures/critic_objectives.json:
  * `cases`: score matrices S (S[i][j] = T(x_i, y_j), joint pairs on the diagonal) with the
    InfoNCE, NWJ and Donsker-Varadhan (MINE) values of one held-out batch;
  * `critics`: small MLP critics with fixed weights (PyTorch nn.Linear layout, weight [out, in],
    ReLU between layers), data x, y, and the scores NumPy computes for the separable critic
    f(x) . g(y) and the concatenated critic h([x, y]).

Run from the repository root: .venv/bin/python scripts/critic_fixtures.py
Nothing of cbound is imported; the formulas are written out here from the papers.
"""
import json
import numpy as np


def logsumexp(v, axis=None):
    m = np.max(v, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(v - m), axis=axis, keepdims=True))
    return np.squeeze(out, axis=axis) if axis is not None else out.item()


def infonce(s):
    n = s.shape[0]
    return float(np.log(n) + np.mean(np.diag(s) - logsumexp(s, axis=1)))


def off_diag(s):
    n = s.shape[0]
    return s[~np.eye(n, dtype=bool)]


def nwj(s):
    return float(np.mean(np.diag(s)) - np.mean(np.exp(off_diag(s) - 1.0)))


def dv(s):
    off = off_diag(s)
    return float(np.mean(np.diag(s)) - (logsumexp(off) - np.log(off.size)))


def mlp(x, layers):
    h = x
    for k, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if k + 1 < len(layers):
            h = np.maximum(h, 0.0)
    return h


def layers_of(rng, dims):
    return [
        (rng.uniform(-1, 1, (o, i)) / np.sqrt(i), rng.uniform(-1, 1, o) / np.sqrt(i))
        for i, o in zip(dims[:-1], dims[1:])
    ]


def as_json(layers):
    return [{"weight": w.tolist(), "bias": b.tolist()} for w, b in layers]


rng = np.random.default_rng(20261203)
cases = []
for name, s in [
    ("gaussian_8", rng.normal(size=(8, 8))),
    ("diagonal_heavy_6", rng.normal(size=(6, 6)) + 4.0 * np.eye(6)),
    ("wide_range_16", 5.0 * rng.normal(size=(16, 16))),
    ("two_pairs", np.array([[1.0, -0.5], [0.25, 2.0]])),
]:
    cases.append({"name": name, "scores": s.tolist(), "infonce": infonce(s), "nwj": nwj(s), "dv": dv(s)})

n, dx, dy = 6, 2, 3
x = rng.normal(size=(n, dx))
y = rng.normal(size=(n, dy))
f = layers_of(rng, [dx, 5, 4])
g = layers_of(rng, [dy, 5, 4])
h = layers_of(rng, [dx + dy, 7, 1])
sep = mlp(x, f) @ mlp(y, g).T
pairs = np.concatenate([np.repeat(x, n, axis=0), np.tile(y, (n, 1))], axis=1)
cat = mlp(pairs, h).reshape(n, n)
critics = {
    "x": x.tolist(),
    "y": y.tolist(),
    "separable": {"f": as_json(f), "g": as_json(g), "scores": sep.tolist(),
                  "infonce": infonce(sep), "nwj": nwj(sep), "dv": dv(sep)},
    "concat": {"h": as_json(h), "scores": cat.tolist(),
               "infonce": infonce(cat), "nwj": nwj(cat), "dv": dv(cat)},
}
with open("tests/fixtures/critic_objectives.json", "w") as fh:
    json.dump({"generator": "scripts/critic_fixtures.py (NumPy %s)" % np.__version__,
               "cases": cases, "critics": critics}, fh, indent=1)
print("wrote tests/fixtures/critic_objectives.json")
