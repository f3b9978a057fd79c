#!/usr/bin/env python3
"""Independent NumPy reference for cbound's trained-critic estimators.

Writes tests/fixtures/critic_objectives.json:
  * `cases`: score matrices S (S[i][j] = T(x_i, y_j), joint pairs on the diagonal) with the
    InfoNCE, NWJ and Donsker-Varadhan (MINE) values of one held-out batch;
  * `critics`: small MLP critics with fixed weights (PyTorch nn.Linear layout, weight [out, in],
    ReLU between layers), data x, y, and the scores NumPy computes for the separable critic
    f(x) . g(y) and the concatenated critic h([x, y]);
  * `training`: 25 Adam steps (PyTorch's update, lr 0.01) of a separable and a concatenated
    critic from given initial weights on given batches, for each objective, with the gradients
    written out by hand: every step's loss and the held-out estimate after training.

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
# ---- Training: Adam on each objective, gradients by hand (backpropagation written out) ----

def forward(x, layers):
    """MLP with ReLU between layers; returns the output and the cache for backprop."""
    cache, h = [], x
    for k, (w, b) in enumerate(layers):
        a = h @ w.T + b
        cache.append((h, a))
        h = np.maximum(a, 0.0) if k + 1 < len(layers) else a
    return h, cache


def backward(dout, layers, cache):
    grads = [None] * len(layers)
    d = dout
    for k in reversed(range(len(layers))):
        w, _ = layers[k]
        h, a = cache[k]
        if k + 1 < len(layers):
            d = d * (a > 0)
        grads[k] = (d.T @ h, d.sum(axis=0))
        d = d @ w
    return grads


def scores_and_backward(x, y, nets, arch):
    """Scores S [n, n] and a function mapping dL/dS to the parameter gradients."""
    n = x.shape[0]
    if arch == "separable":
        f, g = nets
        fx, cf = forward(x, f)
        gy, cg = forward(y, g)
        def back(ds):
            return [backward(ds @ gy, f, cf), backward(ds.T @ fx, g, cg)]
        return fx @ gy.T, back
    (h,) = nets
    pairs = np.concatenate([np.repeat(x, n, axis=0), np.tile(y, (n, 1))], axis=1)
    t, ch = forward(pairs, h)
    def back(ds):
        return [backward(ds.reshape(n * n, 1), h, ch)]
    return t.reshape(n, n), back


def loss_and_dscores(s, objective):
    """The loss cbound minimises (the negated objective, InfoNCE without log N) and dL/dS."""
    n = s.shape[0]
    eye = np.eye(n)
    off = 1.0 - eye
    diag = np.mean(np.diag(s))
    if objective == "infonce":
        lse = logsumexp(s, axis=1)
        p = np.exp(s - lse[:, None])
        return float(np.mean(lse) - diag), (p - eye) / n
    if objective == "nwj":
        e = np.exp(s - 1.0) * off
        return float(e.sum() / (n * (n - 1)) - diag), e / (n * (n - 1)) - eye / n
    m = s.max()
    e = np.exp(s - m) * off
    total = e.sum()
    return float(np.log(total) + m - np.log(n * (n - 1)) - diag), e / total - eye / n


def adam(params, grads, state, t, lr, b1=0.9, b2=0.999, eps=1e-8):
    """PyTorch's Adam (no weight decay), in place."""
    out = []
    for p, g, (m, v) in zip(params, grads, state):
        m[:] = b1 * m + (1 - b1) * g
        v[:] = b2 * v + (1 - b2) * g * g
        bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
        out.append(p - lr / bc1 * m / (np.sqrt(v) / np.sqrt(bc2) + eps))
    return out


def flat(nets):
    return [a for layers in nets for wb in layers for a in wb]


def unflat(values, nets):
    it = iter(values)
    return [[(next(it), next(it)) for _ in layers] for layers in nets]


values = {"infonce": infonce, "nwj": nwj, "dv": dv}
n_train, n_test, dx, dy, batch, steps, lr = 48, 32, 2, 3, 8, 25, 0.01
z = rng.normal(size=(n_train + n_test, dx))
xt = z
yt = np.concatenate([0.8 * z + 0.6 * rng.normal(size=z.shape), rng.normal(size=(len(z), 1))], axis=1)
x_train, y_train, x_test, y_test = xt[:n_train], yt[:n_train], xt[n_train:], yt[n_train:]
batches = [rng.permutation(n_train)[:batch].tolist() for _ in range(steps)]
init = {
    "separable": [layers_of(rng, [dx, 6, 4]), layers_of(rng, [dy, 6, 4])],
    "concat": [layers_of(rng, [dx + dy, 6, 1])],
}
runs = []
for arch in ["separable", "concat"]:
    for objective in ["infonce", "nwj", "dv"]:
        nets = [[(w.copy(), b.copy()) for w, b in layers] for layers in init[arch]]
        state = [(np.zeros_like(a), np.zeros_like(a)) for a in flat(nets)]
        losses = []
        for t, idx in enumerate(batches, start=1):
            s, back = scores_and_backward(x_train[idx], y_train[idx], nets, arch)
            l, ds = loss_and_dscores(s, objective)
            losses.append(l)
            grads = [a for layers in back(ds) for wb in layers for a in wb]
            nets = unflat(adam(flat(nets), grads, state, t, lr), nets)
        held = []
        for k in range(n_test // batch):
            rows = slice(k * batch, (k + 1) * batch)
            s, _ = scores_and_backward(x_test[rows], y_test[rows], nets, arch)
            held.append(values[objective](s))
        runs.append({"arch": arch, "objective": objective, "losses": losses,
                     "held_out": held, "estimate": float(np.mean(held))})
training = {
    "x_train": x_train.tolist(), "y_train": y_train.tolist(),
    "x_test": x_test.tolist(), "y_test": y_test.tolist(),
    "batches": batches, "batch": batch, "lr": lr,
    "init": {"separable": {"f": as_json(init["separable"][0]), "g": as_json(init["separable"][1])},
             "concat": {"h": as_json(init["concat"][0])}},
    "runs": runs,
}

with open("tests/fixtures/critic_objectives.json", "w") as fh:
    json.dump({"generator": "scripts/critic_fixtures.py (NumPy %s)" % np.__version__,
               "cases": cases, "critics": critics, "training": training}, fh, indent=1)
print("wrote tests/fixtures/critic_objectives.json")
